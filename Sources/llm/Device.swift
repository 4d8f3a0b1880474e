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

/// `--recompute`, shared by the commands that build a GPU model for training (llm.c's `-r`).
struct RecomputeOption: ParsableArguments {
    @Option(name: .customLong("recompute"), help: "GPU memory for speed: 0 keeps every activation (default; GPT-2 124M at B=64 T=1024 needs 22 GiB); 1 recomputes GELU in the backward (llm.c's default; -4.5 GiB there, ~2 % slower); 2 also the layernorms.")
    var value: Int = 0

    func validate() throws {
        if !(0 ... 2).contains(value) { throw ValidationError("--recompute \(value) must be 0, 1 or 2") }
    }
}

/// Parameters from a checkpoint file, or a fresh GPT-2 from a descriptor such as `d12`.
func loadModelParameters(_ model: String, seed: UInt64) throws -> (config: GPT2Config, parameters: [Float], source: String) {
    if fileExists(model) {
        let (config, precision, params) = try CheckpointFile.read(model)
        return (config, params, "\(model) (\(precision == .fp32 ? "fp32" : "bf16") checkpoint)")
    }
    if model.hasSuffix(".bin") || model.contains("/") { throw LLMError("--model \(model): no such file") }
    let config = try GPT2Config.fromDescriptor(model)
    return (config, gpt2InitialParameters(config, seed: seed), "\(model), GPT-2 init with seed \(seed)")
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
