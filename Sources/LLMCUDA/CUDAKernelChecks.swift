// Bit-level checks of a fused kernel against the kernels it stands for, run by `llm cuda-selftest`:
// the model chooses between them by speed (matmul.fastest), so they must give the same bits.

import LLM

extension CUDAModel {
    /// gelu_backward_bias against gelu_backward followed by bias_backward, on pseudo-random values of
    /// three shapes: (B*T, 4C), the fc layer's; (1000, 4C), whose last row block is short; (20000,
    /// 4C), at the cap of 256 row blocks, the last of them empty. The GELU input gradient and the
    /// bias after the sums must be the same bits. Own buffers, freed after.
    public func checkGeluBiasKernel() throws -> (row: String, ok: Bool) {
        var state: UInt64 = 0x9e3779b97f4a7c15
        func uniform(_ scale: Float) -> Float {  // xorshift64, in [-scale, scale)
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
        let OC = 4 * config.channels
        var results: [String] = []
        var ok = true
        for N in [batchSize * sequenceLength, 1000, 20000] {
            let count = N * OC
            let inp = try device.allocate(bytes: count * E, what: "check: GELU input")
            let dout = try device.allocate(bytes: count * E, what: "check: gradient")
            let dinp = try device.allocate(bytes: 2 * count * E, what: "check: input gradients")
            let bias = try device.allocate(bytes: 2 * OC * E, what: "check: bias gradients")
            defer { [inp, dout, dinp, bias].forEach(device.free) }
            try uploadFloatX(inp, (0 ..< count).map { _ in uniform(4) })
            try uploadFloatX(dout, (0 ..< count).map { _ in uniform(1) })
            let bias0 = (0 ..< OC).map { _ in uniform(0.5) }
            try uploadFloatX(bias, bias0 + bias0)
            let dinp2 = elements(dinp, count), bias2 = elements(bias, OC)
            // The two kernels (dinp2 from a copy of dout, as the model works in place), then the one.
            try device.copy(dinp2, dout, bytes: count * E)
            try launch1D("gelu_backward", count: count / pack, [.ptr(dinp2), .ptr(inp), .ptr(dinp2), .i64(Int64(count))])
            try columnSums("bias_backward", space: mainColumnSums, dbias: bias2, N: N, OC: OC, [.ptr(dinp2)])
            try columnSums("gelu_backward_bias", space: mainColumnSums, dbias: bias, N: N, OC: OC,
                           [.ptr(dinp), .ptr(inp), .ptr(dout)])
            let d = try downloadFloatX(dinp, count: 2 * count), b = try downloadFloatX(bias, count: 2 * OC)
            let sameInput = (0 ..< count).allSatisfy { d[$0].bitPattern == d[count + $0].bitPattern }
            let sameBias = (0 ..< OC).allSatisfy { b[$0].bitPattern == b[OC + $0].bitPattern }
            let moved = (0 ..< OC).contains { b[$0] != bias0[$0] }  // the sums were added at all
            ok = ok && sameInput && sameBias && moved
            results.append("(\(N), \(OC)) " + (sameInput && sameBias && moved ? "bit-identical" : "DIFFER"))
        }
        return ("\(precision.rawValue) gelu_backward_bias vs gelu_backward + bias_backward: "
                + results.joined(separator: ", ") + "  " + (ok ? "PASS" : "FAIL"), ok)
    }
}
