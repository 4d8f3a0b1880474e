// Choosing the backend at run time: the CUDA driver if one is found, else the CPU.

import ArgumentParser
import LLM
import LLMCPU
import LLMCUDA

enum DeviceChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, cpu, cuda
}

enum PrecisionChoice: String, ExpressibleByArgument, CaseIterable {
    case bf16, fp32
}

/// Builds the backend for `device`; `auto` takes CUDA when a driver and GPU are found, else the
/// CPU, and says why in one line.
func makeBackend(_ device: DeviceChoice, config: GPT2Config, parameters: [Float], B: Int, T: Int,
                 precision: PrecisionChoice, recompute: Int = 0, log: (String) -> Void) throws -> GPT2Backend {
    switch device {
    case .cpu:
        return try CPUModel(config: config, parameters: parameters, B: B, T: T)
    case .auto:
        if let reason = CUDABackend.unavailableReason() {
            log("device: no usable GPU (\(reason)); using the CPU")
            return try CPUModel(config: config, parameters: parameters, B: B, T: T)
        }
        return try makeCUDA(config: config, parameters: parameters, B: B, T: T, precision: precision,
                            recompute: recompute, log: log)
    case .cuda:
        if let reason = CUDABackend.unavailableReason() { throw LLMError("--device cuda: \(reason)") }
        return try makeCUDA(config: config, parameters: parameters, B: B, T: T, precision: precision,
                            recompute: recompute, log: log)
    }
}

func makeCUDA(config: GPT2Config, parameters: [Float], B: Int, T: Int, precision: PrecisionChoice,
              recompute: Int = 0, log: (String) -> Void) throws -> GPT2Backend {
    let model = try CUDAModel(config: config, parameters: parameters, B: B, T: T,
                              precision: precision == .bf16 ? .bf16 : .fp32, recompute: recompute)
    log("gpu memory: \(model.memorySummary)")
    return model
}
