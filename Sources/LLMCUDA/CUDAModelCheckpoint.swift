// Exact resume on the GPU: the bf16 weights the kernels use and the fp32 master weights are
// saved and restored separately, as llm.c's checkpoints keep them.

import LLM

extension CUDAModel {
    /// bf16 mode: the stochastically rounded bf16 parameters, widened; fp32 mode: the parameters.
    public func readWorkingParameters() throws -> [Float] {
        fromDeviceOrder(try downloadFloatX(params, count: deviceCount))
    }

    public func writeParameters(working: [Float], master masterWeights: [Float]) throws {
        let n = layout.count
        if working.count != n || masterWeights.count != n {
            throw LLMError("cuda model: \(working.count) working and \(masterWeights.count) master parameters given, expected \(n)")
        }
        if precision == .bf16 { try device.upload(master, toDeviceOrder(masterWeights)) }
        try uploadFloatX(params, toDeviceOrder(precision == .bf16 ? working : masterWeights))
    }
}
