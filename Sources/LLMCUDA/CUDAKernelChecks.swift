// Bit-level checks of a fused kernel against the kernels it stands for, run by `llm cuda-selftest`:
// the model chooses between them by speed (matmul.fastest), so they must give the same bits.

#if canImport(Glibc)
import Glibc
#endif
import LLM

/// Pseudo-random check inputs: xorshift64, each value uniform in [-scale, scale).
struct CheckValues {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func uniform(_ scale: Float) -> Float {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
}

extension CUDAModel {
    /// gelu_backward_bias against gelu_backward followed by bias_backward, on pseudo-random values of
    /// three shapes: (B*T, 4C), the fc layer's; (1000, 4C), whose last row block is short; (20000,
    /// 4C), at the cap of 256 row blocks, the last of them empty. The GELU input gradient and the
    /// bias after the sums must be the same bits. Own buffers, freed after.
    public func checkGeluBiasKernel() throws -> (row: String, ok: Bool) {
        var random = CheckValues(seed: 0x9e3779b97f4a7c15)
        func uniform(_ scale: Float) -> Float { random.uniform(scale) }
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

extension CUDAModel {
    /// The Hopper GEMM against cuBLASLt on the fc layer's shapes (this model's C; `rows` tokens):
    /// the plain product, fc's forward with bias and GELU (out and the kept GELU input), fcproj's
    /// dinp with GELU's gradient. The two sum in different orders, so the outputs agree to bf16's
    /// rounding: relative L2 difference under 1e-2 and no element off by more than 5 % of the
    /// largest. Then each product's time at `timingRows` (interleaved runs, the best mean of 3 x 10).
    /// nil where the GEMM does not run. Own buffers, freed after.
    public func checkHopperGEMM(rows M: Int, timingRows: Int) throws -> [(row: String, ok: Bool)]? {
        guard let h = hopper else { return nil }
        let C = config.channels, N4 = 4 * C
        var random = CheckValues(seed: 0x2545f4914f6cdd1d)
        func uniform(_ scale: Float) -> Float { random.uniform(scale) }
        var results: [(String, Bool)] = []
        for (rows, timing) in [(M, false), (timingRows, true)] where rows > 0 {  // 0 rows: that part skipped
            let inp = try device.allocate(bytes: rows * C * E, what: "check: input")
            let w = try device.allocate(bytes: N4 * C * E, what: "check: fc weight")
            let wp = try device.allocate(bytes: C * N4 * E, what: "check: fcproj weight")
            let bias = try device.allocate(bytes: N4 * E, what: "check: bias")
            let outs = try device.allocate(bytes: 6 * rows * N4 * E, what: "check: outputs")
            defer { [inp, w, wp, bias, outs].forEach(device.free) }
            let o = (0 ..< 6).map { elements(outs, $0 * rows * N4) }  // ref, ours: out, aux, dinp
            try uploadFloatX(inp, (0 ..< rows * C).map { _ in uniform(1) })
            try uploadFloatX(w, (0 ..< N4 * C).map { _ in uniform(0.08) })
            try uploadFloatX(wp, (0 ..< C * N4).map { _ in uniform(0.08) })
            try uploadFloatX(bias, (0 ..< N4).map { _ in uniform(0.5) })
            let fc = MatmulShape(m: N4, n: rows, k: C, transA: true, transB: false, bias: true, accumulate: false,
                                 epilogue: .geluKeepInput)
            let plain = MatmulShape(m: N4, n: rows, k: C, transA: true, transB: false, bias: false, accumulate: false)
            let dinp = MatmulShape(m: N4, n: rows, k: C, transA: false, transB: false, bias: false, accumulate: false,
                                   epilogue: .geluGradient)
            // (name, epilogue, cuBLASLt, ours): dinp takes the input as its gradient and the
            // reference's GELU input.
            let products: [(String, HopperGEMM.Epilogue, () throws -> Void, () throws -> Void)] = [
                ("plain", .plain, { try self.matmul.run(plain, d: o[0], a: w, b: inp) },
                 { try h.run(.plain, out: o[1], a: inp, b: w, M: rows, N: N4, K: C) }),
                ("bias+gelu", .gelu, { try self.matmul.run(fc, d: o[0], a: w, b: inp, bias: bias, aux: o[2]) },
                 { try h.run(.gelu, out: o[1], a: inp, b: w, bias: bias, aux: o[3], M: rows, N: N4, K: C) }),
                ("dgelu", .geluGradient, { try self.matmul.run(dinp, d: o[4], a: wp, b: inp, aux: o[2]) },
                 {
                     try h.transpose(self.weightT, wp, rows: C, cols: N4)
                     try h.run(.geluGradient, out: o[5], a: inp, b: self.weightT, aux: o[2], M: rows, N: N4, K: C)
                 }),
            ]
            for (name, epilogue, reference, ours) in products {
                if timing {
                    try device.synchronize()
                    let start = try device.makeEvent(), end = try device.makeEvent()
                    defer { device.destroyEvent(start); device.destroyEvent(end) }
                    var best: [Float] = [.infinity, .infinity]
                    try reference(); try ours()
                    for _ in 0 ..< 3 {
                        for (k, body) in [reference, ours].enumerated() {
                            best[k] = min(best[k], try matmul.averageMilliseconds(start, end, runs: 10, body))
                        }
                    }
                    let flops = 2.0 * Double(rows) * Double(N4) * Double(C)
                    let tf = best.map { flops / (Double($0) * 1e-3) / 1e12 }
                    let clusters = try h.clustersAtOnce(epilogue)
                    let row = "hopper gemm \(name) \(rows)x\(N4)x\(C) (\(clusters) clusters of \(HopperGEMM.cluster), tiles 128x\(HopperGEMM.tileN(epilogue)), \(HopperGEMM.stages(epilogue)) stages): cuBLASLt \(format("%.4f", Double(best[0]))) ms "
                        + "(\(format("%.0f", tf[0])) TFLOP/s), ours \(format("%.4f", Double(best[1]))) ms "
                        + "(\(format("%.0f", tf[1])) TFLOP/s)"
                    print("[hopper] " + row)
                    results.append((row, true))
                    continue
                }
                try reference()
                try ours()
                let pairs: [(Int, Int, String)] = epilogue == .gelu ? [(0, 1, "out"), (2, 3, "aux")]
                    : epilogue == .geluGradient ? [(4, 5, "dinp")] : [(0, 1, "out")]
                for (r, u, what) in pairs {
                    let ref = try downloadFloatX(o[r], count: rows * N4), got = try downloadFloatX(o[u], count: rows * N4)
                    var d2 = 0.0, r2 = 0.0, worst: Float = 0, largest: Float = 0
                    for i in 0 ..< ref.count {
                        let d = got[i] - ref[i]
                        d2 += Double(d * d); r2 += Double(ref[i] * ref[i])
                        worst = max(worst, abs(d)); largest = max(largest, abs(ref[i]))
                    }
                    let rel = (d2 / max(r2, 1e-30)).squareRoot()
                    let ok = rel < 1e-2 && worst <= 0.05 * largest && got.allSatisfy { $0.isFinite }
                    let row = "hopper gemm \(name) \(what) \(rows)x\(N4)x\(C) vs cuBLASLt: rel. L2 "
                        + format("%.2e", rel) + ", max diff " + format("%.3g", Double(worst)) + " of max "
                        + format("%.3g", Double(largest)) + "  " + (ok ? "PASS" : "FAIL")
                    print("[hopper] " + row)
                    results.append((row, ok))
                }
            }
        }
        return results
    }
}

extension CUDAModel {
    /// classifier_loss_backward_staged (the row in shared memory) against classifier_loss_backward
    /// (the row read twice through the L2) on pseudo-random logits of GPT-2's vocabulary (300 rows of
    /// 50304, the first 50257 real, the padding holding garbage): losses, log-sum-exps and dlogits must
    /// be the same bits, and the losses and a sample of the gradients must agree with float64 sums
    /// of the same inputs (softmax - onehot, scaled). Own buffers, freed after.
    public func checkStagedClassifier() throws -> (row: String, ok: Bool) {
        let N = 300, V = 50257, Vp = 50304, threads = classifierThreads(V)
        guard Vp * E + CUDAModel.classifierStaticShared <= device.maxSharedMemoryPerBlock else {
            return ("\(precision.rawValue) classifier_loss_backward_staged: a row does not fit this GPU's shared memory (not used)", true)
        }
        var random = CheckValues(seed: 0x2545f4914f6cdd1d)
        let count = N * Vp
        let logits = try device.allocate(bytes: 2 * count * E, what: "check: logits")
        let stats = try device.allocate(bytes: 4 * N * 4, what: "check: losses and lse")
        let targets = try device.allocate(bytes: N * 4, what: "check: targets")
        defer { [logits, stats, targets].forEach(device.free) }
        try uploadFloatX(logits, (0 ..< count).map { _ in random.uniform(8) })
        let x = try downloadFloatX(logits, count: count)  // as rounded to floatX
        try device.copy(elements(logits, count), logits, bytes: count * E)
        let t: [Int32] = (0 ..< N).map { _ in Int32(abs(random.uniform(1)) * Float(V - 1)) }
        try device.upload(targets, t)
        let dloss = 1.0 / Float(N)
        for (k, kernel) in ["classifier_loss_backward", "classifier_loss_backward_staged"].enumerated() {
            try launch(kernel, grid: (N, 1, 1), block: (threads, 1, 1), shared: k == 1 ? Vp * E : 0,
                       [.ptr(elements(logits, k * count)), .ptr(stats + UInt64(8 * k * N)),
                        .ptr(stats + UInt64(8 * k * N + 4 * N)), .ptr(targets), .f32(dloss), .i32(Int32(V)), .i32(Int32(Vp))])
        }
        let g = try downloadFloatX(logits, count: 2 * count)
        let s = try device.download(stats, count: 4 * N, as: Float.self, fill: 0)
        let same = (0 ..< count).allSatisfy { g[$0].bitPattern == g[count + $0].bitPattern }
            && (0 ..< 2 * N).allSatisfy { s[$0].bitPattern == s[2 * N + $0].bitPattern }
        // Against float64: every row's loss; 64 gradients a row (the target's among them), 0 in the padding.
        var lossError = 0.0, gradientOK = true, paddingZero = true
        for r in 0 ..< N {
            let row = x[(r * Vp) ..< (r * Vp + V)]
            let m = Double(row.max()!)
            let lse = m + log(row.reduce(0.0) { $0 + exp(Double($1) - m) })
            let target = Int(t[r])
            lossError = max(lossError, abs(Double(s[r]) - (lse - Double(x[r * Vp + target]))))
            for c in (0 ..< 63).map({ $0 * 797 % V }) + [target] {
                let want = (exp(Double(x[r * Vp + c]) - lse) - (c == target ? 1 : 0)) * Double(dloss)
                if abs(Double(g[r * Vp + c]) - want) > abs(want) / 128 + 1e-9 { gradientOK = false }
            }
            paddingZero = paddingZero && (V ..< Vp).allSatisfy { g[r * Vp + $0] == 0 }
        }
        let ok = same && lossError < 1e-3 && gradientOK && paddingZero
        return ("\(precision.rawValue) classifier_loss_backward_staged vs classifier_loss_backward (\(N) x \(Vp)): "
                + (same ? "bit-identical" : "DIFFER") + ", losses within \(format("%.1e", lossError)) of float64, gradients "
                + (gradientOK && paddingZero ? "agree" : "DIFFER") + "  " + (ok ? "PASS" : "FAIL"), ok)
    }
}
