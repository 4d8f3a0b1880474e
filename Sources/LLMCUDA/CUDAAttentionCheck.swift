// Flash attention (flash_attention.cu) against the scalar kernels (attention.cu) on random data,
// with the time of each: the GPU check of the tensor-core path, which the tiny fixture model
// (head size 16) never reaches. Used by `llm cuda-selftest`.

import LLM

/// Relative L2 errors of the flash path against the scalar one, and both paths' times.
public struct AttentionParity {
    public var out: Float = 0, lseMaxDiff: Float = 0, dq: Float = 0, dk: Float = 0, dv: Float = 0
    public var flashForwardMs: Float = 0, flashBackwardMs: Float = 0
    public var scalarForwardMs: Float = 0, scalarBackwardMs: Float = 0
}

extension CUDAModel {
    /// Runs both attention paths on the same random qkv (B, T, 3C) and dout (B, T, C); the model's
    /// own weights and activations are untouched. Times are medians over `repeats` launches
    /// (backward includes the dout . out row sums).
    public func attentionParity(B: Int, T: Int, repeats: Int = 5, seed: UInt64 = 1) throws -> AttentionParity {
        if precision != .bf16 || config.headSize != 64 {
            throw LLMError("attention parity: needs bf16 and head size 64 (have \(precision.rawValue), \(config.headSize))")
        }
        let C = config.channels, NH = config.numHeads
        var rng = seed
        func normal() -> Float {  // sum of 4 uniforms, scaled to unit variance: enough for a test input
            var s: Float = 0
            for _ in 0 ..< 4 {
                rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27
                s += Float((rng &* 0x2545F4914F6CDD1D) >> 40) / Float(1 << 24) - 0.5
            }
            return s * Float(3).squareRoot()
        }
        // Scores of std ~2 make the softmax peaked enough to test the running maximum.
        let qkvHost = (0 ..< B * T * 3 * C).map { _ in 1.4 * normal() }
        let doutHost = (0 ..< B * T * C).map { _ in normal() }
        var buffers: [CUdeviceptr] = []
        defer { buffers.forEach { device.free($0) } }
        func allocate(_ bytes: Int) throws -> CUdeviceptr {
            let p = try device.allocate(bytes: bytes, what: "attention parity")
            buffers.append(p)
            return p
        }
        let qkvIn = try allocate(B * T * 3 * C * 2), dout = try allocate(B * T * C * 2)  // (B, T, 3C), (B, T, C)
        let dsum = try allocate(B * NH * T * 4)                                           // (B, NH, T)
        try device.upload(qkvIn, qkvHost.map(bf16FromFloat))
        try device.upload(dout, doutHost.map(bf16FromFloat))
        let start = try device.makeEvent(), end = try device.makeEvent()

        struct Result { var out: [Float], lse: [Float], dqkv: [Float], forwardMs: Float, backwardMs: Float }
        func runPath(flash: Bool) throws -> Result {
            let saved = useFlashAttention
            defer { useFlashAttention = saved }
            useFlashAttention = flash
            let out = try allocate(B * T * C * 2), lse = try allocate(B * NH * T * 4), dqkv = try allocate(B * T * 3 * C * 2)
            var forward: [Float] = [], backward: [Float] = []
            for _ in 0 ..< repeats {
                try device.record(start)
                try attentionForward(out: out, lse: lse, qkv: qkvIn, B: B, T: T)
                try device.record(end)
                forward.append(try device.elapsedMilliseconds(start, end))
                try device.record(start)
                try attentionBackward(dqkv: dqkv, dout: dout, qkv: qkvIn, out: out, lse: lse, dsum: dsum, B: B, T: T)
                try device.record(end)
                backward.append(try device.elapsedMilliseconds(start, end))
            }
            return Result(out: try downloadFloatX(out, count: B * T * C),
                          lse: try device.download(lse, count: B * NH * T, as: Float.self, fill: 0),
                          dqkv: try downloadFloatX(dqkv, count: B * T * 3 * C),
                          forwardMs: forward.sorted()[repeats / 2], backwardMs: backward.sorted()[repeats / 2])
        }
        let reference = try runPath(flash: false)
        let flash = try runPath(flash: true)

        /// ||a - b|| / ||b|| over the elements where `part` holds (index in the flat array).
        func relative(_ a: [Float], _ b: [Float], _ part: (Int) -> Bool = { _ in true }) -> Float {
            var d2 = 0.0, r2 = 0.0
            for i in b.indices where part(i) {
                d2 += Double(a[i] - b[i]) * Double(a[i] - b[i])
                r2 += Double(b[i]) * Double(b[i])
            }
            return Float((d2 / max(r2, 1e-30)).squareRoot())
        }
        var r = AttentionParity()
        r.out = relative(flash.out, reference.out)
        r.lseMaxDiff = zip(flash.lse, reference.lse).map { abs($0 - $1) }.max() ?? 0
        r.dq = relative(flash.dqkv, reference.dqkv) { $0 % (3 * C) < C }
        r.dk = relative(flash.dqkv, reference.dqkv) { let c = $0 % (3 * C); return c >= C && c < 2 * C }
        r.dv = relative(flash.dqkv, reference.dqkv) { $0 % (3 * C) >= 2 * C }
        r.flashForwardMs = flash.forwardMs; r.flashBackwardMs = flash.backwardMs
        r.scalarForwardMs = reference.forwardMs; r.scalarBackwardMs = reference.backwardMs
        return r
    }
}
