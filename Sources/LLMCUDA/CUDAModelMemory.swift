// Device memory in use, for `llm bench train`'s peak-memory figure.

import LLM

extension CUDAModel {
    /// Total minus free device memory now (cuMemGetInfo): our allocations, the CUDA context and
    /// cuBLASLt's workspace, as nvidia-smi would count them.
    public func deviceMemoryInUse() throws -> Int? {
        let info = try device.memoryInfo()
        return info.total - info.free
    }
}
