// Flash attention (flash_attention.cu) against the scalar kernels (attention.cu) on random data,
// with the time of each: the GPU check of the tensor-core path, which the tiny fixture model
// (head size 16) never reaches. Used by `llm cuda-selftest`.

import LLM

/// Relative L2 errors of the flash path against the scalar one, both paths' times, and whether
/// two flash runs gave the same bytes.
public struct AttentionParity {
    public var out: Float = 0, lseMaxDiff: Float = 0, dq: Float = 0, dk: Float = 0, dv: Float = 0
    public var flashForwardMs: Float = 0, flashBackwardMs: Float = 0
    public var scalarForwardMs: Float = 0, scalarBackwardMs: Float = 0
    /// out, lse and dqkv of the flash path bit-identical between the first and the last of the timed
    /// runs (each run's outputs zeroed first).
    public var deterministic = false
}

extension CUDAModel {
    /// Runs the scalar path and then the flash path on the same random qkv (B, T, 3C) and dout
    /// (B, T, C); the model's own weights and activations are untouched. Times are medians over
    /// `repeats` launches (backward includes the dout . out row sums).
    public func attentionParity(B: Int, T: Int, repeats: Int = 7, seed: UInt64 = 1) throws -> AttentionParity {
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
        let qkvHost = (0 ..< B * T * 3 * C).map { _ in bf16FromFloat(1.4 * normal()) }
        let doutHost = (0 ..< B * T * C).map { _ in bf16FromFloat(normal()) }
        var buffers: [CUdeviceptr] = []
        defer { buffers.forEach { device.free($0) } }
        func allocate(_ bytes: Int) throws -> CUdeviceptr {
            let p = try device.allocate(bytes: bytes, what: "attention parity")
            buffers.append(p)
            return p
        }
        let qkvIn = try allocate(B * T * 3 * C * 2), dout = try allocate(B * T * C * 2)  // (B, T, 3C), (B, T, C)
        let dsum = try allocate(B * NH * T * 4)                                           // (B, NH, T)
        let out = try allocate(B * T * C * 2), lse = try allocate(B * NH * T * 4)         // (B, T, C), (B, NH, T)
        let dqkv = try allocate(B * T * 3 * C * 2)                                        // (B, T, 3C)
        let dS = storedDS ? try allocate(CUDAModel.flashDSBytes(B: B, T: T, NH: NH)) : 0  // the model's choice of backward
        try device.upload(qkvIn, qkvHost)
        try device.upload(dout, doutHost)
        let start = try device.makeEvent(), end = try device.makeEvent()

        struct Run { var out: [UInt16], lse: [Float], dqkv: [UInt16], forwardMs: Float, backwardMs: Float, same: Bool }
        /// One path, `repeats` times; outputs zeroed before each run, so the first and last runs'
        /// bytes agree only if the kernels write the same every time.
        func runPath(flash: Bool) throws -> Run {
            let saved = useFlashAttention
            defer { useFlashAttention = saved }
            useFlashAttention = flash
            var forward: [Float] = [], backward: [Float] = []
            var first: (out: [UInt16], lse: [Float], dqkv: [UInt16])?
            var same = true
            for i in 0 ..< repeats {
                try device.zero(out, bytes: B * T * C * 2)
                try device.zero(lse, bytes: B * NH * T * 4)
                try device.zero(dqkv, bytes: B * T * 3 * C * 2)
                try device.record(start)
                try attentionForward(out: out, lse: lse, qkv: qkvIn, B: B, T: T)
                try device.record(end)
                forward.append(try device.elapsedMilliseconds(start, end))
                try device.record(start)
                try attentionBackward(dqkv: dqkv, dout: dout, qkv: qkvIn, out: out, lse: lse, dsum: dsum, dS: dS, B: B, T: T)
                try device.record(end)
                backward.append(try device.elapsedMilliseconds(start, end))
                if i == 0 || i == repeats - 1 {
                    let now = (out: try device.download(out, count: B * T * C, as: UInt16.self, fill: 0),
                               lse: try device.download(lse, count: B * NH * T, as: Float.self, fill: 0),
                               dqkv: try device.download(dqkv, count: B * T * 3 * C, as: UInt16.self, fill: 0))
                    if let f = first {
                        same = f.out == now.out && f.dqkv == now.dqkv && f.lse.map(\.bitPattern) == now.lse.map(\.bitPattern)
                    } else {
                        first = now
                    }
                }
            }
            let f = first!
            return Run(out: f.out, lse: f.lse, dqkv: f.dqkv,
                       forwardMs: forward.sorted()[repeats / 2], backwardMs: backward.sorted()[repeats / 2], same: same)
        }
        let reference = try runPath(flash: false), flash = try runPath(flash: true)
        let referenceOut = reference.out.map(floatFromBF16), referenceDqkv = reference.dqkv.map(floatFromBF16)

        /// ||a - b|| / ||b|| of out, and of the q, k and v parts of dqkv (column c of the 3C row).
        func relative(_ a: [UInt16], _ b: [Float]) -> Float {
            var d2 = 0.0, r2 = 0.0
            for i in b.indices {
                let d = Double(floatFromBF16(a[i]) - b[i])
                d2 += d * d
                r2 += Double(b[i]) * Double(b[i])
            }
            return Float((d2 / max(r2, 1e-30)).squareRoot())
        }
        func relativeParts(_ a: [UInt16], _ b: [Float]) -> (q: Float, k: Float, v: Float) {
            var d2 = [0.0, 0.0, 0.0], r2 = [0.0, 0.0, 0.0]
            for row in 0 ..< b.count / (3 * C) {
                for part in 0 ..< 3 {
                    var dd = 0.0, rr = 0.0
                    for i in row * 3 * C + part * C ..< row * 3 * C + (part + 1) * C {
                        let d = Double(floatFromBF16(a[i]) - b[i])
                        dd += d * d
                        rr += Double(b[i]) * Double(b[i])
                    }
                    d2[part] += dd
                    r2[part] += rr
                }
            }
            func r(_ p: Int) -> Float { Float((d2[p] / max(r2[p], 1e-30)).squareRoot()) }
            return (r(0), r(1), r(2))
        }
        var r = AttentionParity()
        r.out = relative(flash.out, referenceOut)
        r.lseMaxDiff = zip(flash.lse, reference.lse).map { abs($0 - $1) }.max() ?? 0
        (r.dq, r.dk, r.dv) = relativeParts(flash.dqkv, referenceDqkv)
        r.flashForwardMs = flash.forwardMs; r.flashBackwardMs = flash.backwardMs
        r.scalarForwardMs = reference.forwardMs; r.scalarBackwardMs = reference.backwardMs
        r.deterministic = flash.same
        return r
    }
}
