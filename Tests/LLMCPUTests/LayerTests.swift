// Each CPU layer against its double-precision reference: forwards directly, backwards through
// central finite differences, on small random shapes that exercise both SIMD blocks and scalar tails.

import Foundation
import LLM
import Testing
@testable import LLMCPU

@Suite struct LayerTests {
    @Test func layerNormForwardAndBackward() {
        let B = 2, T = 3, C = 35, rows = B * T
        var rng = TestRandom(1)
        let x = rng.floats(rows * C, scale: 2), w = rng.floats(C), b = rng.floats(C), dout = rng.floats(rows * C)
        let out = Buf(zeros: rows * C), mean = Buf(zeros: rows), rstd = Buf(zeros: rows)
        let xb = Buf(x), wb = Buf(w), bb = Buf(b), db = Buf(dout)
        layerNormForward(out.p, mean.p, rstd.p, xb.p, wb.p, bb.p, B, T, C)
        let ref = Reference.layerNorm(doubles(x), doubles(w), doubles(b), rows: rows, C: C)
        #expect(scaledMaxDiff(out.array, ref) < 1e-5)

        // Backward accumulates: start from ones and take them off afterwards.
        let dx = Buf([Float](repeating: 1, count: rows * C))
        let dw = Buf([Float](repeating: 1, count: C)), dbias = Buf([Float](repeating: 1, count: C))
        layerNormBackward(dx.p, dw.p, dbias.p, db.p, xb.p, wb.p, mean.p, rstd.p, B, T, C)
        let gx = numericalGradient(doubles(x)) { Reference.weighted(Reference.layerNorm($0, doubles(w), doubles(b), rows: rows, C: C), dout) }
        let gw = numericalGradient(doubles(w)) { Reference.weighted(Reference.layerNorm(doubles(x), $0, doubles(b), rows: rows, C: C), dout) }
        let gb = numericalGradient(doubles(b)) { Reference.weighted(Reference.layerNorm(doubles(x), doubles(w), $0, rows: rows, C: C), dout) }
        let dxDiff = scaledMaxDiff(dx.array.map { $0 - 1 }, gx)
        let dwDiff = scaledMaxDiff(dw.array.map { $0 - 1 }, gw)
        let dbDiff = scaledMaxDiff(dbias.array.map { $0 - 1 }, gb)
        print("layernorm backward vs finite differences: dinp \(dxDiff) dweight \(dwDiff) dbias \(dbDiff)")
        #expect(dxDiff < 1e-4)
        #expect(dwDiff < 1e-4)
        #expect(dbDiff < 1e-4)
    }

    @Test func geluForwardAndBackward() {
        let N = 203  // 12 SIMD blocks and a tail of 11
        var rng = TestRandom(2)
        let x = rng.floats(N, scale: 6), dout = rng.floats(N)
        let out = Buf(zeros: N), xb = Buf(x), db = Buf(dout)
        geluForward(out.p, xb.p, N)
        #expect(scaledMaxDiff(out.array, Reference.gelu(doubles(x))) < 1e-6)
        let dx = Buf([Float](repeating: 1, count: N))
        geluBackward(dx.p, xb.p, db.p, N)
        let g = numericalGradient(doubles(x)) { Reference.weighted(Reference.gelu($0), dout) }
        let diff = scaledMaxDiff(dx.array.map { $0 - 1 }, g)
        print("gelu backward vs finite differences: \(diff)")
        #expect(diff < 1e-5)
    }

    @Test(arguments: [(B: 2, NH: 2, C: 36), (B: 1, NH: 2, C: 64)])
    func attentionForwardAndBackward(shape: (B: Int, NH: Int, C: Int)) {
        let B = shape.B, T = 6, C = shape.C, NH = shape.NH
        var rng = TestRandom(3)
        let qkv = rng.floats(B * T * 3 * C), dout = rng.floats(B * T * C)
        let out = Buf(zeros: B * T * C), att = Buf(zeros: B * NH * T * T), qb = Buf(qkv), db = Buf(dout)
        attentionForward(out.p, att.p, qb.p, B, T, C, NH)
        let ref = Reference.attention(doubles(qkv), B: B, T: T, C: C, NH: NH)
        #expect(scaledMaxDiff(out.array, ref.out) < 1e-5)
        #expect(scaledMaxDiff(att.array, ref.att) < 1e-6)  // masked entries are exactly 0 in both

        let dq = Buf([Float](repeating: 1, count: B * T * 3 * C))
        attentionBackward(dq.p, db.p, qb.p, att.p, B, T, C, NH)
        let g = numericalGradient(doubles(qkv)) { Reference.weighted(Reference.attention($0, B: B, T: T, C: C, NH: NH).out, dout) }
        let diff = scaledMaxDiff(dq.array.map { $0 - 1 }, g)
        print("attention backward (C=\(C), NH=\(NH)) vs finite differences: \(diff)")
        #expect(diff < 1e-4)
    }

    @Test func softmaxCrossEntropyForwardAndBackward() {
        let B = 2, T = 3, V = 37, Vp = 48, rows = B * T
        var rng = TestRandom(4)
        var logits = rng.floats(rows * Vp, scale: 4)
        for r in 0 ..< rows { for i in V ..< Vp { logits[r * Vp + i] = 100 } }  // pad columns must be ignored
        let targets: [Int32] = [0, 36, 5, 5, 17, 2]
        let losses = Buf(zeros: rows), lse = Buf(zeros: rows), lb = Buf(logits)
        let tp = UnsafeMutablePointer<Int32>.allocate(capacity: rows)
        defer { tp.deallocate() }
        tp.initialize(from: targets, count: rows)
        softmaxCrossEntropyForward(losses.p, lse.p, lb.p, tp, B, T, V, Vp)
        let ref = Reference.crossEntropy(doubles(logits), targets, rows: rows, V: V, Vp: Vp)
        #expect(scaledMaxDiff(losses.array, ref) < 1e-5)

        let dloss: Float = 1 / Float(rows)
        let dlogits = Buf([Float](repeating: 7, count: rows * Vp))  // written, not accumulated
        softmaxCrossEntropyBackward(dlogits.p, lb.p, lse.p, tp, dloss, B, T, V, Vp)
        let g = numericalGradient(doubles(logits)) {
            Reference.crossEntropy($0, targets, rows: rows, V: V, Vp: Vp).reduce(0, +) * Double(dloss)
        }
        let diff = scaledMaxDiff(dlogits.array, g)
        print("softmax + cross-entropy backward vs finite differences: \(diff)")
        #expect(diff < 1e-6)
        for r in 0 ..< rows { for i in V ..< Vp { #expect(dlogits.p[r * Vp + i] == 0) } }
    }

    @Test func encoderForwardAndBackward() {
        let B = 2, T = 4, C = 20, Vp = 6
        var rng = TestRandom(5)
        let wte = rng.floats(Vp * C), wpe = rng.floats(T * C), dout = rng.floats(B * T * C)
        let tokens: [Int32] = [1, 3, 1, 0, 5, 1, 3, 2]  // repeats, to check accumulation
        let tp = UnsafeMutablePointer<Int32>.allocate(capacity: B * T)
        defer { tp.deallocate() }
        tp.initialize(from: tokens, count: B * T)
        let out = Buf(zeros: B * T * C), eb = Buf(wte), pb = Buf(wpe), db = Buf(dout)
        encoderForward(out.p, tp, eb.p, pb.p, B, T, C)
        #expect(scaledMaxDiff(out.array, Reference.encoder(tokens, doubles(wte), doubles(wpe), B: B, T: T, C: C)) < 1e-6)
        let dwte = Buf(zeros: Vp * C), dwpe = Buf(zeros: T * C)
        encoderBackward(dwte.p, dwpe.p, db.p, tp, B, T, C)
        let ge = numericalGradient(doubles(wte)) { Reference.weighted(Reference.encoder(tokens, $0, doubles(wpe), B: B, T: T, C: C), dout) }
        let gp = numericalGradient(doubles(wpe)) { Reference.weighted(Reference.encoder(tokens, doubles(wte), $0, B: B, T: T, C: C), dout) }
        #expect(scaledMaxDiff(dwte.array, ge) < 1e-5)
        #expect(scaledMaxDiff(dwpe.array, gp) < 1e-5)
    }

    @Test func residualForwardAndBackward() {
        let N = 37
        var rng = TestRandom(6)
        let a = rng.floats(N), b = rng.floats(N), d = rng.floats(N)
        let out = Buf(zeros: N), ab = Buf(a), bb = Buf(b), db = Buf(d)
        residualForward(out.p, ab.p, bb.p, N)
        #expect(out.array == zip(a, b).map { $0 + $1 })
        let da = Buf([Float](repeating: 1, count: N)), dbb = Buf(zeros: N)
        residualBackward(da.p, dbb.p, db.p, N)
        #expect(da.array == d.map { $0 + 1 })
        #expect(dbb.array == d)
    }

    /// AdamW against the formula evaluated in double precision, with clipping's gradScale.
    @Test func adamWMatchesFormula() {
        let N = 53
        var rng = TestRandom(7)
        let p0 = rng.floats(N), g = rng.floats(N), m0 = rng.floats(N, scale: 0.1), v0 = rng.floats(N).map { abs($0) * 0.01 }
        let p = Buf(p0), m = Buf(m0), v = Buf(v0), gb = Buf(g)
        let lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, t = 3, scale = 0.5
        adamWUpdate(p.p, m.p, v.p, gb.p, N, learningRate: Float(lr), beta1: Float(b1), beta2: Float(b2),
                    epsilon: Float(eps), weightDecay: Float(wd), t: t, gradScale: Float(scale))
        var pr = [Double](), mr = [Double](), vr = [Double]()
        for i in 0 ..< N {
            let gi = Double(g[i]) * scale
            let mi = b1 * Double(m0[i]) + (1 - b1) * gi
            let vi = b2 * Double(v0[i]) + (1 - b2) * gi * gi
            let mhat = mi / (1 - pow(b1, Double(t))), vhat = vi / (1 - pow(b2, Double(t)))
            pr.append(Double(p0[i]) - lr * (mhat / (vhat.squareRoot() + eps) + wd * Double(p0[i])))
            mr.append(mi)
            vr.append(vi)
        }
        #expect(maxAbsDiff(p.array, pr) < 1e-6)
        #expect(maxAbsDiff(m.array, mr) < 1e-7)
        #expect(maxAbsDiff(v.array, vr) < 1e-7)
    }

    /// The 16-lane exp used by softmax and GELU: within 3 ulp of exp, 0 where expf underflows.
    @Test func vectorExpAccuracy() {
        var worst = 0.0
        var x: Float = -87
        while x < 88 {
            var v = Vec16()
            for i in 0 ..< 16 { v[i] = x + Float(i) * 0.0137 }
            let e = vexp(v)
            for i in 0 ..< 16 {
                let ref = exp(Double(v[i]))
                worst = max(worst, abs(Double(e[i]) - ref) / ref)
            }
            x += 0.219
        }
        print("vexp worst relative error: \(worst)")
        #expect(worst < 3.6e-7)
        #expect(vexp(Vec16(repeating: -10000))[0] == 0)
        #expect(vexp(Vec16(repeating: 0))[0] == 1)
    }
}
