// Tests for the packed SIMD matmul: each product against the scalar reference on small, odd and
// tiny-model shapes, with the accumulate (+=) semantics and a nil bias checked.

import Dispatch
import Testing
@testable import LLMCPU

/// A buffer of uniform values in [-1, 1) from a seeded xorshift stream.
private func randomArray(_ count: Int, seed: UInt64) -> [Float] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0 ..< count).map { _ in
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return Float(state >> 40) / Float(1 << 23) - 1
    }
}

/// max |a - b| / max(1, max |b|): the error relative to the magnitude of the reference.
private func relativeMaxDiff(_ a: [Float], _ b: [Float]) -> Float {
    var diff: Float = 0, scale: Float = 1
    for i in a.indices {
        diff = max(diff, abs(a[i] - b[i]))
        scale = max(scale, abs(b[i]))
    }
    return diff / scale
}

/// (BT, C, OC): odd sizes that hit every edge of the 8 × 48 tile and the cache blocks, and the
/// tiny test model's shapes.
private let shapes: [(Int, Int, Int)] = [
    (1, 1, 1), (7, 5, 3), (9, 17, 49), (8, 48, 48), (13, 33, 97), (17, 300, 50), (31, 257, 95),
    (128, 64, 512), (128, 64, 192), (128, 256, 64), (40, 520, 790), (600, 20, 30),
]

@Test func matmulForwardMatchesReference() {
    for (index, (BT, C, OC)) in shapes.enumerated() {
        let inp = randomArray(BT * C, seed: UInt64(index) + 1)
        let weight = randomArray(OC * C, seed: UInt64(index) + 100)
        let bias = randomArray(OC, seed: UInt64(index) + 200)
        for withBias in [true, false] {
            // Garbage in out: the forward must overwrite it, not add to it.
            var out = randomArray(BT * OC, seed: 7), ref = [Float](repeating: 0, count: BT * OC)
            bias.withUnsafeBufferPointer { b in
                let biasPointer = withBias ? b.baseAddress : nil
                matmulForward(&out, inp, weight, biasPointer, BT, C, OC)
                matmulForwardReference(&ref, inp, weight, biasPointer, BT, C, OC)
            }
            let diff = relativeMaxDiff(out, ref)
            #expect(diff < 1e-5, "forward BT=\(BT) C=\(C) OC=\(OC) bias=\(withBias): \(diff)")
        }
    }
}

@Test func matmulBackwardMatchesReferenceAndAccumulates() {
    for (index, (BT, C, OC)) in shapes.enumerated() {
        let inp = randomArray(BT * C, seed: UInt64(index) + 1)
        let weight = randomArray(OC * C, seed: UInt64(index) + 100)
        let dout = randomArray(BT * OC, seed: UInt64(index) + 300)
        // Start every gradient from non-zero values: backward must add to them.
        let dinp0 = randomArray(BT * C, seed: 11), dweight0 = randomArray(OC * C, seed: 12)
        let dbias0 = randomArray(OC, seed: 13)
        var dinp = dinp0, dweight = dweight0, dbias = dbias0
        var dinpRef = dinp0, dweightRef = dweight0, dbiasRef = dbias0
        matmulBackward(&dinp, &dweight, &dbias, dout, inp, weight, BT, C, OC)
        matmulBackwardReference(&dinpRef, &dweightRef, &dbiasRef, dout, inp, weight, BT, C, OC)
        let shape = "BT=\(BT) C=\(C) OC=\(OC)"
        #expect(relativeMaxDiff(dinp, dinpRef) < 1e-5, "dinp \(shape)")
        #expect(relativeMaxDiff(dweight, dweightRef) < 1e-5, "dweight \(shape)")
        #expect(relativeMaxDiff(dbias, dbiasRef) < 1e-5, "dbias \(shape)")

        // A second call adds the same gradient again: the result is the start plus twice it.
        matmulBackward(&dinp, &dweight, &dbias, dout, inp, weight, BT, C, OC)
        let twice = { (start: [Float], once: [Float]) in zip(start, once).map { s, o in s + 2 * (o - s) } }
        #expect(relativeMaxDiff(dinp, twice(dinp0, dinpRef)) < 1e-5, "dinp twice \(shape)")
        #expect(relativeMaxDiff(dweight, twice(dweight0, dweightRef)) < 1e-5, "dweight twice \(shape)")
        #expect(relativeMaxDiff(dbias, twice(dbias0, dbiasRef)) < 1e-5, "dbias twice \(shape)")
    }
}

@Test func matmulBackwardWithoutBias() {
    let (BT, C, OC) = (13, 33, 97)
    let inp = randomArray(BT * C, seed: 1), weight = randomArray(OC * C, seed: 2)
    let dout = randomArray(BT * OC, seed: 3)
    var dinp = [Float](repeating: 0, count: BT * C), dweight = [Float](repeating: 0, count: OC * C)
    var dinpRef = dinp, dweightRef = dweight
    matmulBackward(&dinp, &dweight, nil, dout, inp, weight, BT, C, OC)
    matmulBackwardReference(&dinpRef, &dweightRef, nil, dout, inp, weight, BT, C, OC)
    #expect(relativeMaxDiff(dinp, dinpRef) < 1e-5)
    #expect(relativeMaxDiff(dweight, dweightRef) < 1e-5)
}

/// The reference itself on a 2 × 2 case worked by hand, so the oracle is not just self-consistent.
@Test func matmulReferenceByHand() {
    // inp = [[1, 2], [3, 4]], weight = [[5, 6], [7, 8]], bias = [1, -1]
    // out = inp · weightᵀ + bias = [[17+1, 23-1], [39+1, 53-1]]
    let inp: [Float] = [1, 2, 3, 4], weight: [Float] = [5, 6, 7, 8], bias: [Float] = [1, -1]
    var out = [Float](repeating: 0, count: 4), fast = out
    matmulForwardReference(&out, inp, weight, bias, 2, 2, 2)
    matmulForward(&fast, inp, weight, bias, 2, 2, 2)
    #expect(out == [18, 22, 40, 52])
    #expect(fast == [18, 22, 40, 52])
    // dout = [[1, 0], [0, 1]]: dinp = dout · weight = weight, dweight = doutᵀ · inp = inp, dbias = [1, 1]
    let dout: [Float] = [1, 0, 0, 1]
    var dinp = [Float](repeating: 0, count: 4), dweight = dinp, dbias: [Float] = [0, 0]
    matmulBackward(&dinp, &dweight, &dbias, dout, inp, weight, 2, 2, 2)
    #expect(dinp == weight)
    #expect(dweight == inp)
    #expect(dbias == [1, 1])
}

/// The generic GEMM with both operands read through non-unit strides (a path no public call
/// takes on its hot loop, but the driver accepts it).
@Test func gemmWithTransposedOperands() {
    let (M, N, K) = (19, 53, 37)
    let a = randomArray(K * M, seed: 31), b = randomArray(N * K, seed: 32) // aᵀ (K, M), bᵀ (N, K)
    var c = randomArray(M * N, seed: 33)
    var ref = c
    for i in 0 ..< M {
        for j in 0 ..< N {
            var sum = 0.0
            for k in 0 ..< K { sum += Double(a[k * M + i]) * Double(b[j * K + k]) }
            ref[i * N + j] += Float(sum)
        }
    }
    a.withUnsafeBufferPointer { ap in
        b.withUnsafeBufferPointer { bp in
            gemm(M, N, K, Operand(ap.baseAddress!, rowStride: 1, colStride: M),
                 Operand(bp.baseAddress!, rowStride: 1, colStride: K), &c, N, accumulate: true, bias: nil)
        }
    }
    #expect(relativeMaxDiff(c, ref) < 1e-5)
}

/// Several cache blocks in every dimension (small block sizes), several threads, both loop
/// orders, A packed or read in place.
@Test func matmulSmallBlocksAndThreads() {
    let saved = (matmulMC, matmulKC, matmulNC, matmulForwardKC, CPUThreads.count)
    let savedOrder = (matmulLoopOrder, matmulRowMajorAInPlace, matmulChunksPerThread)
    defer {
        (matmulMC, matmulKC, matmulNC, matmulForwardKC, CPUThreads.count) = saved
        (matmulLoopOrder, matmulRowMajorAInPlace, matmulChunksPerThread) = savedOrder
    }
    let (BT, C, OC) = (70, 150, 230)
    let inp = randomArray(BT * C, seed: 21), weight = randomArray(OC * C, seed: 22)
    let bias = randomArray(OC, seed: 23), dout = randomArray(BT * OC, seed: 24)
    var outRef = [Float](repeating: 0, count: BT * OC)
    var dinpRef = [Float](repeating: 0, count: BT * C), dweightRef = [Float](repeating: 0, count: OC * C)
    matmulForwardReference(&outRef, inp, weight, bias, BT, C, OC)
    matmulBackwardReference(&dinpRef, &dweightRef, nil, dout, inp, weight, BT, C, OC)
    for (mc, kc, nc, threads, order, inPlace) in [(16, 40, 96, 3, 1, true), (24, 64, 48, 2, 2, false),
                                                  (256, 256, 768, 4, 0, true), (8, 300, 500, 1, 1, false)] {
        matmulMC = mc; matmulKC = kc; matmulNC = nc; matmulForwardKC = kc; CPUThreads.count = threads
        matmulLoopOrder = order; matmulRowMajorAInPlace = inPlace; matmulChunksPerThread = mc % 3 + 1
        var out = [Float](repeating: 0, count: BT * OC)
        var dinp = [Float](repeating: 0, count: BT * C), dweight = [Float](repeating: 0, count: OC * C)
        matmulForward(&out, inp, weight, bias, BT, C, OC)
        matmulBackward(&dinp, &dweight, nil, dout, inp, weight, BT, C, OC)
        let blocks = "MC=\(mc) KC=\(kc) NC=\(nc) threads=\(threads) order=\(order) inPlace=\(inPlace)"
        #expect(relativeMaxDiff(out, outRef) < 1e-5, "forward \(blocks)")
        #expect(relativeMaxDiff(dinp, dinpRef) < 1e-5, "dinp \(blocks)")
        #expect(relativeMaxDiff(dweight, dweightRef) < 1e-5, "dweight \(blocks)")
    }
}

/// Calls from several threads at once share the scratch pool: each must still get its own buffers.
@Test func matmulConcurrentCalls() {
    let (BT, C, OC) = (64, 96, 200)
    let inp = randomArray(BT * C, seed: 41), weight = randomArray(OC * C, seed: 42)
    let bias = randomArray(OC, seed: 43), dout = randomArray(BT * OC, seed: 44)
    var outRef = [Float](repeating: 0, count: BT * OC)
    var dinpRef = [Float](repeating: 0, count: BT * C), dweightRef = [Float](repeating: 0, count: OC * C)
    matmulForwardReference(&outRef, inp, weight, bias, BT, C, OC)
    matmulBackwardReference(&dinpRef, &dweightRef, nil, dout, inp, weight, BT, C, OC)
    let callers = 6
    let outs = UnsafeMutablePointer<Float>.allocate(capacity: callers * BT * OC)
    let dinps = UnsafeMutablePointer<Float>.allocate(capacity: callers * BT * C)
    let dweights = UnsafeMutablePointer<Float>.allocate(capacity: callers * OC * C)
    defer { outs.deallocate(); dinps.deallocate(); dweights.deallocate() }
    dinps.initialize(repeating: 0, count: callers * BT * C)
    dweights.initialize(repeating: 0, count: callers * OC * C)
    DispatchQueue.concurrentPerform(iterations: callers) { i in
        for _ in 0 ..< 3 { matmulForward(outs + i * BT * OC, inp, weight, bias, BT, C, OC) }
        matmulBackward(dinps + i * BT * C, dweights + i * OC * C, nil, dout, inp, weight, BT, C, OC)
    }
    for i in 0 ..< callers {
        let out = Array(UnsafeBufferPointer(start: outs + i * BT * OC, count: BT * OC))
        let dinp = Array(UnsafeBufferPointer(start: dinps + i * BT * C, count: BT * C))
        let dweight = Array(UnsafeBufferPointer(start: dweights + i * OC * C, count: OC * C))
        #expect(relativeMaxDiff(out, outRef) < 1e-5, "forward, caller \(i)")
        #expect(relativeMaxDiff(dinp, dinpRef) < 1e-5, "dinp, caller \(i)")
        #expect(relativeMaxDiff(dweight, dweightRef) < 1e-5, "dweight, caller \(i)")
    }
}
