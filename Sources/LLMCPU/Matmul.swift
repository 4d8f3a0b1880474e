// Matmul: y = x·Wᵀ + b and its backward, the CPU's hot path. The forward broadcasts weight rows
// in place against a packed inpᵀ (6 × 64 tiles); both backward products share one packed, blocked
// SIMD16 GEMM (8 × 48 tiles) whose strided operands supply the transposes.
//
// Floors for GPT-2 124M at B=4, T=64 (BT = 256), 2·BT·C·OC FLOPs per product, 190 GFLOP per step
// over the three products of all 49 matmuls. Peak (`measurePeakFLOPs`): 232 GFLOP/s on this
// machine's 2 Zen 4 cores (one 512-bit FMA per cycle each), 354 on 2 Emerald Rapids cores, so
// 0.82 s (0.54 s) per step at 100%. Bytes: the weights, 0.49 GB in fp32, are read by the
// forward and dinp and read and written by dweight, about 2 GB per step: 0.08 s at the 26 GB/s
// one core streams. Compute-bound, so the aim is the FMA rate: the kernels reach 99% of peak
// with their operands in L1, the products 85-90% of one core's peak in place.

import CPUFeatures
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Public API

/// out (BT, OC) = inp (BT, C) · weight (OC, C)ᵀ + bias (OC); bias may be nil (the LM head).
public func matmulForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                          _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                          _ BT: Int, _ C: Int, _ OC: Int) {
    if BT <= 0 || OC <= 0 { return }
    if C <= 0 {
        for bt in 0 ..< BT { for o in 0 ..< OC { out[bt * OC + o] = bias?[o] ?? 0 } }
        return
    }
    // Blocks of 256 rows keep the packed inpᵀ block in L2 however large BT is; the weight is
    // streamed once per block, which at 256 rows is 16 FMA cycles per weight float.
    var r0 = 0
    while r0 < BT {
        let rows = min(forwardRowBlock, BT - r0)
        forwardWeightInPlace(out + r0 * OC, inp + r0 * C, weight, bias, rows, C, OC)
        r0 += rows
    }
}

/// dinp (BT, C) += dout (BT, OC) · weight (OC, C); dweight (OC, C) += doutᵀ · inp; dbias (OC) += Σ_bt dout.
/// dbias may be nil. Backward ACCUMULATES (+=) into dinp, dweight and dbias.
public func matmulBackward(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>,
                           _ dbias: UnsafeMutablePointer<Float>?, _ dout: UnsafePointer<Float>,
                           _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                           _ BT: Int, _ C: Int, _ OC: Int) {
    matmulBackwardInput(dinp, dout, weight, BT, C, OC)
    matmulBackwardWeight(dweight, dbias, dout, inp, BT, C, OC)
}

/// dinp (BT, C) += dout (BT, OC) · weight (OC, C). The first half of `matmulBackward`, public so
/// `llm bench matmul` can time each product alone.
public func matmulBackwardInput(_ dinp: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
                                _ weight: UnsafePointer<Float>, _ BT: Int, _ C: Int, _ OC: Int) {
    // M = BT, N = C, K = OC; both operands row-major.
    gemm(BT, C, OC,
         Operand(dout, rowStride: OC, colStride: 1),
         Operand(weight, rowStride: C, colStride: 1),
         dinp, C, accumulate: true, bias: nil)
}

/// dweight (OC, C) += dout (BT, OC)ᵀ · inp (BT, C); dbias (OC) += Σ_bt dout (when not nil).
public func matmulBackwardWeight(_ dweight: UnsafeMutablePointer<Float>, _ dbias: UnsafeMutablePointer<Float>?,
                                 _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                                 _ BT: Int, _ C: Int, _ OC: Int) {
    // M = OC, N = C, K = BT; A(m, k) = dout[k, m], so A is dout read column-wise.
    gemm(OC, C, BT,
         Operand(dout, rowStride: 1, colStride: OC),
         Operand(inp, rowStride: C, colStride: 1),
         dweight, C, accumulate: true, bias: nil)
    if let dbias { biasBackward(dbias, dout, BT, OC) }
}

// MARK: - Scalar references (test oracles)

/// The plain triple loop of `matmulForward`, in Double, for tests.
public func matmulForwardReference(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                   _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                                   _ BT: Int, _ C: Int, _ OC: Int) {
    for bt in 0 ..< BT {
        for o in 0 ..< OC {
            var sum = Double(bias?[o] ?? 0)
            for i in 0 ..< C { sum += Double(inp[bt * C + i]) * Double(weight[o * C + i]) }
            out[bt * OC + o] = Float(sum)
        }
    }
}

/// The plain loops of `matmulBackward` (accumulating), in Double, for tests.
public func matmulBackwardReference(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>,
                                    _ dbias: UnsafeMutablePointer<Float>?, _ dout: UnsafePointer<Float>,
                                    _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                                    _ BT: Int, _ C: Int, _ OC: Int) {
    for bt in 0 ..< BT {
        for i in 0 ..< C {
            var sum = 0.0
            for o in 0 ..< OC { sum += Double(dout[bt * OC + o]) * Double(weight[o * C + i]) }
            dinp[bt * C + i] += Float(sum)
        }
    }
    for o in 0 ..< OC {
        for i in 0 ..< C {
            var sum = 0.0
            for bt in 0 ..< BT { sum += Double(dout[bt * OC + o]) * Double(inp[bt * C + i]) }
            dweight[o * C + i] += Float(sum)
        }
        if let dbias {
            var sum = 0.0
            for bt in 0 ..< BT { sum += Double(dout[bt * OC + o]) }
            dbias[o] += Float(sum)
        }
    }
}

// MARK: - Blocking

/// Register tile: MR rows × NR columns of C live in 24 zmm accumulators (8 × 3 SIMD16).
let MR = 8
let NR = 48
/// Cache blocks of the backward GEMM. A KC × NR strip of packed B (48 KiB) serves every MR-row
/// panel of the MC × KC A block (256 KiB, L2); the KC × NC packed B block (768 KiB) sits in
/// L2/L3; a tile of C is read and written once per KC of the K loop. On this machine MC from 32
/// to 512 and KC from 128 to 768 all measured within the noise (±3%) on the GPT-2 shapes.
public nonisolated(unsafe) var matmulKC = 256
public nonisolated(unsafe) var matmulMC = 256
public nonisolated(unsafe) var matmulNC = 768

/// A matrix read through strides: element (i, j) is at base[i * rowStride + j * colStride].
struct Operand {
    let base: UnsafePointer<Float>
    let rowStride: Int
    let colStride: Int
    init(_ base: UnsafePointer<Float>, rowStride: Int, colStride: Int) {
        self.base = base; self.rowStride = rowStride; self.colStride = colStride
    }
}

// MARK: - Scratch

/// A packing buffer. Calls take buffers from a locked pool and give them back, so the steady
/// state allocates nothing and concurrent calls never share one.
final class MatmulScratch {
    let buffer: UnsafeMutablePointer<Float>
    let capacity: Int
    init(capacity: Int) {
        self.capacity = capacity
        buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: capacity)
    }
    deinit { buffer.deallocate() }
}

private let scratchLock: UnsafeMutablePointer<pthread_mutex_t> = {
    let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    pthread_mutex_init(lock, nil)
    return lock
}()
nonisolated(unsafe) private var scratchPool: [MatmulScratch] = []

/// A buffer of at least `count` floats: the smallest free one that fits, else a new one (the
/// pool keeps every buffer given back, so after the first calls every request finds one).
private func takeScratch(_ count: Int) -> MatmulScratch {
    pthread_mutex_lock(scratchLock)
    defer { pthread_mutex_unlock(scratchLock) }
    var best = -1
    for i in scratchPool.indices where scratchPool[i].capacity >= count {
        if best < 0 || scratchPool[i].capacity < scratchPool[best].capacity { best = i }
    }
    if best >= 0 { return scratchPool.remove(at: best) }
    return MatmulScratch(capacity: count)
}

private func giveScratch(_ scratch: MatmulScratch) {
    pthread_mutex_lock(scratchLock)
    scratchPool.append(scratch)
    pthread_mutex_unlock(scratchLock)
}

// MARK: - GEMM driver

/// Loop order of the two innermost loops: 0 picks (panels outer when the threads split M),
/// 1 forces panels outer, 2 forces strips outer. A tuning knob.
public nonisolated(unsafe) var matmulLoopOrder = 0
/// Reads a row-major A in place (true) or packs it like any other (false). A tuning knob.
public nonisolated(unsafe) var matmulRowMajorAInPlace = true
/// Which dimension the threads split: 0 picks, 1 forces N, 2 forces M. A tuning knob.
public nonisolated(unsafe) var matmulSplit = 0
/// Work items per thread for the dynamic schedules (more: better balance on a shared machine;
/// fewer: less re-reading of the shared operand). A tuning knob.
public nonisolated(unsafe) var matmulChunksPerThread = 4

/// c (M, N) (=|+=) a (M, K) · b (K, N) [+ bias (N) when not accumulating]. The threads split the
/// larger of M and N into chunks of whole register tiles, each chunk run by the blocked loops.
/// Where no chunk would pack what another chunk packs too, there are several chunks per thread,
/// claimed dynamically, so a core shared with another process does not hold the others back.
func gemm(_ M: Int, _ N: Int, _ K: Int, _ a: Operand, _ b: Operand,
          _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool, bias: UnsafePointer<Float>?) {
    if M <= 0 || N <= 0 { return }
    if K <= 0 {
        if !accumulate {
            for i in 0 ..< M { for j in 0 ..< N { c[i * ldc + j] = bias?[j] ?? 0 } }
        }
        return
    }
    let KC = matmulKC, MC = matmulMC, NC = matmulNC
    let mTiles = (M + MR - 1) / MR, nTiles = (N + NR - 1) / NR
    let aInPlace = a.colStride == 1 && matmulRowMajorAInPlace
    let aCount = (MC + MR - 1) / MR * MR * KC, bCount = (NC + NR - 1) / NR * NR * KC
    let threads = max(1, CPUThreads.count)
    let perThread = max(1, matmulChunksPerThread)
    // Split the larger dimension. (For dinp that is M, BT = 256 rows against C = 768 columns,
    // and each thread packs all of the weight; splitting N instead packs nothing twice, but
    // measured no faster on 2 threads and slower on one: the second pack reads from L3.)
    let splitN = matmulSplit == 1 || (matmulSplit == 0 && nTiles >= mTiles)
    let panelsOuter = matmulLoopOrder == 0 ? !splitN : matmulLoopOrder == 1

    if splitN {
        // Column chunks pack disjoint parts of b; a is packed per chunk unless read in place.
        let chunks = min(nTiles, aInPlace ? threads * perThread : threads)
        parallelForDynamic(chunks) { ch in
            let lo = nTiles * ch / chunks, hi = nTiles * (ch + 1) / chunks
            let scratch = takeScratch(aCount + bCount)
            gemmBlocked(0, M, lo * NR, min(N, hi * NR), K, a, b, c, ldc, accumulate, bias,
                        scratch.buffer, nil, MC, KC, NC, panelsOuter: panelsOuter, aInPlace: aInPlace)
            giveScratch(scratch)
        }
    } else if K <= KC && N <= NC {
        // All of b is one block (dweight: K = BT): pack it once for every chunk of rows.
        let shared = takeScratch(nTiles * NR * K)
        let sharedB = shared.buffer
        parallelForChunks(nTiles) { strips in
            let j0 = strips.lowerBound * NR, j1 = min(N, strips.upperBound * NR)
            packB(sharedB + j0 * K, b, 0, K, j0, j1 - j0)
        }
        let packedB = UnsafePointer(shared.buffer)
        let chunks = min(mTiles, threads * perThread)
        parallelForDynamic(chunks) { ch in
            let lo = mTiles * ch / chunks, hi = mTiles * (ch + 1) / chunks
            let scratch = takeScratch(aCount)
            gemmBlocked(lo * MR, min(M, hi * MR), 0, N, K, a, b, c, ldc, accumulate, bias,
                        scratch.buffer, packedB, MC, KC, NC, panelsOuter: panelsOuter, aInPlace: aInPlace)
            giveScratch(scratch)
        }
        giveScratch(shared)
    } else {
        // Row chunks would each pack all of b again: one chunk per thread.
        let chunks = min(mTiles, threads)
        parallelFor(chunks) { ch in
            let lo = mTiles * ch / chunks, hi = mTiles * (ch + 1) / chunks
            let scratch = takeScratch(aCount + bCount)
            gemmBlocked(lo * MR, min(M, hi * MR), 0, N, K, a, b, c, ldc, accumulate, bias,
                        scratch.buffer, nil, MC, KC, NC, panelsOuter: panelsOuter, aInPlace: aInPlace)
            giveScratch(scratch)
        }
    }
}

/// The blocked loops on rows m0..<m1 and columns n0..<n1 of c, one thread.
///
/// A row-major a (dinp's dout) is not packed: the kernel broadcasts from 8 of its rows in place,
/// so the threads splitting N do not each copy all of it. Other layouts are packed per MC × KC
/// block. With M split (dweight: OC rows), the panel loop is outer: one A panel stays in L1
/// while the row of C tiles it feeds is walked in memory order; with N split, the strip loop is
/// outer: one B strip serves every panel.
private func gemmBlocked(_ m0: Int, _ m1: Int, _ n0: Int, _ n1: Int, _ K: Int,
                         _ a: Operand, _ b: Operand, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                         _ accumulate: Bool, _ bias: UnsafePointer<Float>?,
                         _ scratch: UnsafeMutablePointer<Float>, _ prepackedB: UnsafePointer<Float>?,
                         _ MC: Int, _ KC: Int, _ NC: Int, panelsOuter: Bool, aInPlace: Bool) {
    let packedA = scratch // (MC, KC) in MR-row panels
    // (KC, NC) in NR-column strips; when prepacked, all of b (K ≤ KC, N ≤ NC).
    let packedB = prepackedB.map { UnsafeMutablePointer(mutating: $0) }
        ?? scratch + (MC + MR - 1) / MR * MR * KC
    var jc = n0
    while jc < n1 {
        let nc = min(NC, n1 - jc)
        var pc = 0
        while pc < K {
            let kc = min(KC, K - pc)
            // Only the first K block may overwrite c (and add the bias); later ones add to it.
            let overwrite = !accumulate && pc == 0
            if prepackedB == nil { packB(packedB, b, pc, kc, jc, nc) }
            var ic = m0
            while ic < m1 {
                let mc = min(MC, m1 - ic)
                if !aInPlace { packA(packedA, a, ic, mc, pc, kc) }

                @inline(__always) func tile(_ ir: Int, _ jr: Int) {
                    let mr = min(MR, mc - ir), nr = min(NR, nc - jr)
                    let stripB = UnsafePointer(packedB + jr * kc)
                    let biasStrip = bias.map { $0 + jc + jr }
                    let tileC = c + (ic + ir) * ldc + jc + jr
                    if aInPlace && mr == MR {
                        let rows = a.base + (ic + ir) * a.rowStride + pc
                        if nr == NR {
                            kernel8x48Rows(kc, rows, a.rowStride, stripB, tileC, ldc, overwrite, biasStrip)
                        } else {
                            kernelEdge(kc, rows, a.rowStride, 1, stripB, tileC, ldc, mr, nr, overwrite, biasStrip)
                        }
                        return
                    }
                    var panel = UnsafePointer(packedA + ir * kc)
                    if aInPlace {
                        // The last rows of a: fewer than 8, so pack them zero-padded.
                        packA(packedA, a, ic + ir, mr, pc, kc)
                        panel = UnsafePointer(packedA)
                    }
                    if mr == MR && nr == NR {
                        kernel8x48Packed(kc, panel, stripB, tileC, ldc, overwrite, biasStrip)
                    } else {
                        kernelEdge(kc, panel, 1, MR, stripB, tileC, ldc, mr, nr, overwrite, biasStrip)
                    }
                }

                if panelsOuter {
                    var ir = 0
                    while ir < mc {
                        var jr = 0
                        while jr < nc { tile(ir, jr); jr += NR }
                        ir += MR
                    }
                } else {
                    var jr = 0
                    while jr < nc {
                        var ir = 0
                        while ir < mc { tile(ir, jr); ir += MR }
                        jr += NR
                    }
                }
                ic += mc
            }
            pc += kc
        }
        jc += nc
    }
}

// MARK: - Packing

/// Packs a (i0..<i0+mc, k0..<k0+kc) into MR-row panels: panel p holds element (p*MR + r, k)
/// at [p*MR*kc + k*MR + r], rows past mc zero, so the kernel broadcasts one A value at a time.
@inline(__always)
private func packA(_ dst: UnsafeMutablePointer<Float>, _ a: Operand, _ i0: Int, _ mc: Int, _ k0: Int, _ kc: Int) {
    if a.rowStride == 1 {
        // Column-major source (dweight's dout read as doutᵀ): walk it k row by k row, so each
        // row's mc floats stream in order from memory, handing every 8 of them to their panel.
        for k in 0 ..< kc {
            let src = a.base + (k0 + k) * a.colStride + i0
            var p = 0
            while p < mc {
                let out = dst + p * kc + k * MR
                if mc - p >= MR {
                    UnsafeMutableRawPointer(out).storeBytes(
                        of: UnsafeRawPointer(src + p).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
                } else {
                    let rows = mc - p
                    for r in 0 ..< MR { out[r] = r < rows ? src[p + r] : 0 }
                }
                p += MR
            }
        }
        return
    }
    var p = 0
    while p < mc {
        let rows = min(MR, mc - p)
        let panel = dst + p * kc
        for r in 0 ..< MR {
            if r < rows {
                let src = a.base + (i0 + p + r) * a.rowStride + k0 * a.colStride
                let cs = a.colStride
                for k in 0 ..< kc { panel[k * MR + r] = src[k * cs] }
            } else {
                for k in 0 ..< kc { panel[k * MR + r] = 0 }
            }
        }
        p += MR
    }
}

/// Packs b (k0..<k0+kc, j0..<j0+nc) into NR-column strips: strip s holds element (k, s*NR + j)
/// at [s*NR*kc + k*NR + j], columns past nc zero, so the kernel loads three SIMD16 per k.
@inline(__always)
private func packB(_ dst: UnsafeMutablePointer<Float>, _ b: Operand, _ k0: Int, _ kc: Int, _ j0: Int, _ nc: Int) {
    if b.colStride == 1 {
        // Row-major source (dinp's weight, dweight's inp): walk it row by row so each row's nc
        // floats stream in order from memory, spreading every 48 of them to their strip.
        for k in 0 ..< kc {
            let src = b.base + (k0 + k) * b.rowStride + j0
            var s = 0
            while s < nc {
                let out = dst + s * kc + k * NR
                if nc - s >= NR {
                    storeVec(out, loadVec(src + s))
                    storeVec(out + 16, loadVec(src + s + 16))
                    storeVec(out + 32, loadVec(src + s + 32))
                } else {
                    let cols = nc - s
                    for j in 0 ..< NR { out[j] = j < cols ? src[s + j] : 0 }
                }
                s += NR
            }
        }
        return
    }
    // Any other layout, element by element (no caller uses this on a hot path).
    var s = 0
    while s < nc {
        let cols = min(NR, nc - s)
        let strip = dst + s * kc
        for k in 0 ..< kc {
            for j in 0 ..< NR {
                strip[k * NR + j] = j < cols ? b.base[(k0 + k) * b.rowStride + (j0 + s + j) * b.colStride] : 0
            }
        }
        s += NR
    }
}

// MARK: - Kernels

@inline(__always) func loadVec(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}
@inline(__always) func loadVec(_ p: UnsafeMutablePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}
@inline(__always) func storeVec(_ p: UnsafeMutablePointer<Float>, _ v: SIMD16<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
}

/// c (8, 48) (=|+=) A (8, kc) · stripB (kc, 48) [+ bias], A(r, k) at panelA[r*rowStride + k*kStride]:
/// 24 SIMD16 accumulators, 24 FMAs per k for 3 vector loads and 8 broadcasts. `multiplyAdd`
/// emits vfmadd231ps where the build has FMA: Swift never fuses `a * b + c` itself.
@inline(__always)
func kernel8x48(_ kc: Int, _ panelA: UnsafePointer<Float>, _ rowStride: Int, _ kStride: Int,
                _ stripB: UnsafePointer<Float>,
                _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ overwrite: Bool, _ bias: UnsafePointer<Float>?) {
    if !wideVectorRegisters {  // a compile-time constant: one branch is compiled away
        kernel8x48Narrow(kc, panelA, rowStride, kStride, stripB, c, ldc, overwrite, bias)
        return
    }
    var c00 = SIMD16<Float>(), c01 = SIMD16<Float>(), c02 = SIMD16<Float>()
    var c10 = SIMD16<Float>(), c11 = SIMD16<Float>(), c12 = SIMD16<Float>()
    var c20 = SIMD16<Float>(), c21 = SIMD16<Float>(), c22 = SIMD16<Float>()
    var c30 = SIMD16<Float>(), c31 = SIMD16<Float>(), c32 = SIMD16<Float>()
    var c40 = SIMD16<Float>(), c41 = SIMD16<Float>(), c42 = SIMD16<Float>()
    var c50 = SIMD16<Float>(), c51 = SIMD16<Float>(), c52 = SIMD16<Float>()
    var c60 = SIMD16<Float>(), c61 = SIMD16<Float>(), c62 = SIMD16<Float>()
    var c70 = SIMD16<Float>(), c71 = SIMD16<Float>(), c72 = SIMD16<Float>()
    let a0 = panelA, a1 = a0 + rowStride, a2 = a0 + 2 * rowStride, a3 = a0 + 3 * rowStride
    let a4 = a0 + 4 * rowStride, a5 = a0 + 5 * rowStride, a6 = a0 + 6 * rowStride, a7 = a0 + 7 * rowStride
    var b = stripB, ak = 0
    for _ in 0 ..< kc {
        let b0 = loadVec(b), b1 = loadVec(b + 16), b2 = loadVec(b + 32)
        var x = SIMD16<Float>(repeating: a0[ak])
        c00 = multiplyAdd(c00, x, b0); c01 = multiplyAdd(c01, x, b1); c02 = multiplyAdd(c02, x, b2)
        x = SIMD16<Float>(repeating: a1[ak])
        c10 = multiplyAdd(c10, x, b0); c11 = multiplyAdd(c11, x, b1); c12 = multiplyAdd(c12, x, b2)
        x = SIMD16<Float>(repeating: a2[ak])
        c20 = multiplyAdd(c20, x, b0); c21 = multiplyAdd(c21, x, b1); c22 = multiplyAdd(c22, x, b2)
        x = SIMD16<Float>(repeating: a3[ak])
        c30 = multiplyAdd(c30, x, b0); c31 = multiplyAdd(c31, x, b1); c32 = multiplyAdd(c32, x, b2)
        x = SIMD16<Float>(repeating: a4[ak])
        c40 = multiplyAdd(c40, x, b0); c41 = multiplyAdd(c41, x, b1); c42 = multiplyAdd(c42, x, b2)
        x = SIMD16<Float>(repeating: a5[ak])
        c50 = multiplyAdd(c50, x, b0); c51 = multiplyAdd(c51, x, b1); c52 = multiplyAdd(c52, x, b2)
        x = SIMD16<Float>(repeating: a6[ak])
        c60 = multiplyAdd(c60, x, b0); c61 = multiplyAdd(c61, x, b1); c62 = multiplyAdd(c62, x, b2)
        x = SIMD16<Float>(repeating: a7[ak])
        c70 = multiplyAdd(c70, x, b0); c71 = multiplyAdd(c71, x, b1); c72 = multiplyAdd(c72, x, b2)
        ak += kStride; b += NR
    }
    // Epilogue: one row of three vectors at a time.
    @inline(__always) func put(_ row: UnsafeMutablePointer<Float>, _ v0: SIMD16<Float>, _ v1: SIMD16<Float>, _ v2: SIMD16<Float>) {
        if !overwrite {
            storeVec(row, loadVec(row) + v0); storeVec(row + 16, loadVec(row + 16) + v1)
            storeVec(row + 32, loadVec(row + 32) + v2)
        } else if let bias {
            storeVec(row, loadVec(bias) + v0); storeVec(row + 16, loadVec(bias + 16) + v1)
            storeVec(row + 32, loadVec(bias + 32) + v2)
        } else {
            storeVec(row, v0); storeVec(row + 16, v1); storeVec(row + 32, v2)
        }
    }
    put(c, c00, c01, c02)
    put(c + ldc, c10, c11, c12)
    put(c + 2 * ldc, c20, c21, c22)
    put(c + 3 * ldc, c30, c31, c32)
    put(c + 4 * ldc, c40, c41, c42)
    put(c + 5 * ldc, c50, c51, c52)
    put(c + 6 * ldc, c60, c61, c62)
    put(c + 7 * ldc, c70, c71, c72)
}

/// 32 registers of 512 bits (AVX-512) hold the 24 SIMD16 accumulators of the 8 x 48 kernel.
let wideVectorRegisters = LLM_VECTOR_BITS >= 512

/// The same 8 x 48 tile for CPUs with 16 vector registers (AVX2, or SSE on a baseline x86-64
/// build), where 24 SIMD16 accumulators would spill on every k: 16-column blocks, 4 rows per pass
/// with 256-bit vectors (8 ymm accumulators) or 2 rows with 128-bit ones (8 xmm). A and B are
/// re-read from L1 once per pass instead of once per tile.
@inline(__always)
func kernel8x48Narrow(_ kc: Int, _ panelA: UnsafePointer<Float>, _ rowStride: Int, _ kStride: Int,
                      _ stripB: UnsafePointer<Float>,
                      _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ overwrite: Bool, _ bias: UnsafePointer<Float>?) {
    @inline(__always) func put(_ row: UnsafeMutablePointer<Float>, _ v: SIMD16<Float>, _ biasBlock: UnsafePointer<Float>?) {
        if !overwrite {
            storeVec(row, loadVec(row) + v)
        } else if let biasBlock {
            storeVec(row, loadVec(biasBlock) + v)
        } else {
            storeVec(row, v)
        }
    }
    for col in stride(from: 0, to: NR, by: 16) {
        let biasBlock = bias.map { $0 + col }
        if LLM_VECTOR_BITS >= 256 {
            for r0 in stride(from: 0, to: MR, by: 4) {
                let a0 = panelA + r0 * rowStride, a1 = a0 + rowStride, a2 = a1 + rowStride, a3 = a2 + rowStride
                var c0 = SIMD16<Float>(), c1 = SIMD16<Float>(), c2 = SIMD16<Float>(), c3 = SIMD16<Float>()
                var b = stripB + col, ak = 0
                for _ in 0 ..< kc {
                    let bv = loadVec(b)
                    c0 = multiplyAdd(c0, SIMD16(repeating: a0[ak]), bv)
                    c1 = multiplyAdd(c1, SIMD16(repeating: a1[ak]), bv)
                    c2 = multiplyAdd(c2, SIMD16(repeating: a2[ak]), bv)
                    c3 = multiplyAdd(c3, SIMD16(repeating: a3[ak]), bv)
                    ak += kStride; b += NR
                }
                let row = c + r0 * ldc + col
                put(row, c0, biasBlock); put(row + ldc, c1, biasBlock)
                put(row + 2 * ldc, c2, biasBlock); put(row + 3 * ldc, c3, biasBlock)
            }
        } else {
            for r0 in stride(from: 0, to: MR, by: 2) {
                let a0 = panelA + r0 * rowStride, a1 = a0 + rowStride
                var c0 = SIMD16<Float>(), c1 = SIMD16<Float>()
                var b = stripB + col, ak = 0
                for _ in 0 ..< kc {
                    let bv = loadVec(b)
                    c0 = multiplyAdd(c0, SIMD16(repeating: a0[ak]), bv)
                    c1 = multiplyAdd(c1, SIMD16(repeating: a1[ak]), bv)
                    ak += kStride; b += NR
                }
                let row = c + r0 * ldc + col
                put(row, c0, biasBlock); put(row + ldc, c1, biasBlock)
            }
        }
    }
}

/// The kernel on a packed A panel ([k*8 + r]).
@inline(never)
func kernel8x48Packed(_ kc: Int, _ panelA: UnsafePointer<Float>, _ stripB: UnsafePointer<Float>,
                      _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ overwrite: Bool, _ bias: UnsafePointer<Float>?) {
    kernel8x48(kc, panelA, 1, MR, stripB, c, ldc, overwrite, bias)
}

/// The kernel on 8 rows of a row-major A read in place (row r at rows + r*lda).
@inline(never)
func kernel8x48Rows(_ kc: Int, _ rows: UnsafePointer<Float>, _ lda: Int, _ stripB: UnsafePointer<Float>,
                    _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ overwrite: Bool, _ bias: UnsafePointer<Float>?) {
    kernel8x48(kc, rows, lda, 1, stripB, c, ldc, overwrite, bias)
}

/// A partial tile (mr < 8 or nr < 48 at the matrix edge): the full kernel into a stack tile
/// (packing zero-padded the missing rows and columns), then only the valid part goes to c.
private func kernelEdge(_ kc: Int, _ panelA: UnsafePointer<Float>, _ rowStride: Int, _ kStride: Int,
                        _ stripB: UnsafePointer<Float>,
                        _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ mr: Int, _ nr: Int,
                        _ overwrite: Bool, _ bias: UnsafePointer<Float>?) {
    withUnsafeTemporaryAllocation(of: Float.self, capacity: MR * NR) { tile in
        let t = tile.baseAddress!
        if kStride == MR && rowStride == 1 {
            kernel8x48Packed(kc, panelA, stripB, t, NR, true, nil)
        } else {
            kernel8x48Rows(kc, panelA, rowStride, stripB, t, NR, true, nil)
        }
        for r in 0 ..< mr {
            let row = c + r * ldc, src = t + r * NR
            for j in 0 ..< nr {
                row[j] = (overwrite ? (bias?[j] ?? 0) : row[j]) + src[j]
            }
        }
    }
}

// MARK: - Forward: the weight read in place

/// The forward computes outᵀ (OC, BT) = weight (OC, C) · inpᵀ in 6 × 64 tiles: the kernel
/// broadcasts weight values straight from 6 consecutive rows (one contiguous stream from memory,
/// never packed), against a packed inpᵀ shared by the threads. Packing the weight instead (the
/// GEMM's B operand) would transpose all OC × C of it on every call, 20-40% of the forward
/// time, while transposing the 6 × 64 output tiles costs about 3%.
let FR = 6
let FM = 64
/// Rows of inp per pass of the forward (4 strips).
let forwardRowBlock = 4 * FM
/// Outputs per group of panels written to out together: 8 panels, 48 floats, 3 cache lines.
let FG = 48
/// K block of the forward: the packed inpᵀ block (KC × BT, 768 KiB at BT = 256) sits in L2,
/// the weight panel (6 × KC) in L1; each output tile is written once per K block.
public nonisolated(unsafe) var matmulForwardKC = 768

private func forwardWeightInPlace(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                  _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                                  _ BT: Int, _ C: Int, _ OC: Int) {
    let KC = max(1, min(C, matmulForwardKC))
    let strips = (BT + FM - 1) / FM
    let scratch = takeScratch(strips * FM * KC)
    defer { giveScratch(scratch) }
    let packed = scratch.buffer // (strips, KC, FM): inpᵀ in 64-row strips
    // Groups of 8 panels (48 outputs: whole cache lines of out when OC is a multiple of 16),
    // claimed dynamically in chunks: nothing is packed per chunk.
    let groups = (OC + FG - 1) / FG
    let chunks = min(groups, max(1, CPUThreads.count) * max(1, matmulChunksPerThread) * 4)
    let rowsPadded = strips * FM
    var pc = 0
    while pc < C {
        let kc = min(KC, C - pc), k0 = pc
        let first = pc == 0
        parallelFor(strips) { s in
            packInputTransposed(packed + s * FM * kc, inp, s * FM, min(FM, BT - s * FM), C, k0, kc)
        }
        parallelForDynamic(chunks) { ch in
            let lo = groups * ch / chunks, hi = groups * (ch + 1) / chunks
            withUnsafeTemporaryAllocation(of: Float.self, capacity: FR * FM + FR * kc + rowsPadded * FG) { temp in
                let tile = temp.baseAddress!            // (FR, FM) one output tile, transposed
                let edgePanel = tile + FR * FM           // (FR, kc) the last weight rows, zero-padded
                let groupRows = edgePanel + FR * kc      // (rowsPadded, FG) a group's outputs, row-major
                for g in lo ..< hi {
                    let g0 = g * FG, width = min(FG, OC - g0)
                    var n0 = g0
                    while n0 < g0 + width {
                        let rows = min(FR, OC - n0)
                        var panel = weight + n0 * C + k0, lda = C
                        if rows < FR {
                            // Past OC there are no weight rows to read: copy and pad with zeros.
                            for r in 0 ..< FR {
                                for k in 0 ..< kc { edgePanel[r * kc + k] = r < rows ? panel[r * C + k] : 0 }
                            }
                            panel = UnsafePointer(edgePanel); lda = kc
                        }
                        for s in 0 ..< strips {
                            kernel6x64(kc, panel, lda, packed + s * FM * kc, tile)
                            // Transpose the tile into the group buffer (L1/L2, not out in memory).
                            let dst = groupRows + s * FM * FG + (n0 - g0)
                            for m in 0 ..< FM {
                                for r in 0 ..< FR { dst[m * FG + r] = tile[r * FM + m] }
                            }
                        }
                        n0 += FR
                    }
                    // Out gets whole rows of 48: three vector stores, whole lines in flight.
                    for m in 0 ..< BT {
                        let row = out + m * OC + g0, src = groupRows + m * FG
                        if width == FG {
                            if first {
                                if let bias {
                                    let b = bias + g0
                                    storeVec(row, loadVec(src) + loadVec(b))
                                    storeVec(row + 16, loadVec(src + 16) + loadVec(b + 16))
                                    storeVec(row + 32, loadVec(src + 32) + loadVec(b + 32))
                                } else {
                                    storeVec(row, loadVec(src)); storeVec(row + 16, loadVec(src + 16))
                                    storeVec(row + 32, loadVec(src + 32))
                                }
                            } else {
                                storeVec(row, loadVec(row) + loadVec(src))
                                storeVec(row + 16, loadVec(row + 16) + loadVec(src + 16))
                                storeVec(row + 32, loadVec(row + 32) + loadVec(src + 32))
                            }
                        } else {
                            for j in 0 ..< width {
                                row[j] = (first ? (bias?[g0 + j] ?? 0) : row[j]) + src[j]
                            }
                        }
                    }
                }
            }
        }
        pc += kc
    }
}

/// Packs inp (m0..<m0+ms, k0..<k0+kc) transposed: element (k, l) at [k*FM + l], rows past ms zero.
/// In slabs of 128 k: each source row is read as a 512-byte run (so the prefetcher follows it)
/// while the slab's destination (128 rows of 64 floats, 32 KiB) stays in L1/L2.
private func packInputTransposed(_ dst: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                 _ m0: Int, _ ms: Int, _ C: Int, _ k0: Int, _ kc: Int) {
    let slab = 128
    var kb = 0
    while kb < kc {
        let kn = min(slab, kc - kb)
        for l in 0 ..< FM {
            let out = dst + kb * FM + l
            if l < ms {
                let src = inp + (m0 + l) * C + k0 + kb
                for k in 0 ..< kn { out[k &* FM] = src[k] }
            } else {
                for k in 0 ..< kn { out[k &* FM] = 0 }
            }
        }
        kb += slab
    }
}

/// tile (6, 64) = panel (6 rows, stride lda, kc columns) · stripB (kc, 64): 24 SIMD16
/// accumulators, 24 FMAs per k for 4 vector loads and 6 broadcasts.
@inline(never)
func kernel6x64(_ kc: Int, _ panel: UnsafePointer<Float>, _ lda: Int, _ stripB: UnsafePointer<Float>,
                _ tile: UnsafeMutablePointer<Float>) {
    var c00 = SIMD16<Float>(), c01 = SIMD16<Float>(), c02 = SIMD16<Float>(), c03 = SIMD16<Float>()
    var c10 = SIMD16<Float>(), c11 = SIMD16<Float>(), c12 = SIMD16<Float>(), c13 = SIMD16<Float>()
    var c20 = SIMD16<Float>(), c21 = SIMD16<Float>(), c22 = SIMD16<Float>(), c23 = SIMD16<Float>()
    var c30 = SIMD16<Float>(), c31 = SIMD16<Float>(), c32 = SIMD16<Float>(), c33 = SIMD16<Float>()
    var c40 = SIMD16<Float>(), c41 = SIMD16<Float>(), c42 = SIMD16<Float>(), c43 = SIMD16<Float>()
    var c50 = SIMD16<Float>(), c51 = SIMD16<Float>(), c52 = SIMD16<Float>(), c53 = SIMD16<Float>()
    let a0 = panel, a1 = panel + lda, a2 = panel + 2 * lda
    let a3 = panel + 3 * lda, a4 = panel + 4 * lda, a5 = panel + 5 * lda
    var b = stripB
    for k in 0 ..< kc {
        let b0 = loadVec(b), b1 = loadVec(b + 16), b2 = loadVec(b + 32), b3 = loadVec(b + 48)
        var x = SIMD16<Float>(repeating: a0[k])
        c00 = multiplyAdd(c00, x, b0); c01 = multiplyAdd(c01, x, b1)
        c02 = multiplyAdd(c02, x, b2); c03 = multiplyAdd(c03, x, b3)
        x = SIMD16<Float>(repeating: a1[k])
        c10 = multiplyAdd(c10, x, b0); c11 = multiplyAdd(c11, x, b1)
        c12 = multiplyAdd(c12, x, b2); c13 = multiplyAdd(c13, x, b3)
        x = SIMD16<Float>(repeating: a2[k])
        c20 = multiplyAdd(c20, x, b0); c21 = multiplyAdd(c21, x, b1)
        c22 = multiplyAdd(c22, x, b2); c23 = multiplyAdd(c23, x, b3)
        x = SIMD16<Float>(repeating: a3[k])
        c30 = multiplyAdd(c30, x, b0); c31 = multiplyAdd(c31, x, b1)
        c32 = multiplyAdd(c32, x, b2); c33 = multiplyAdd(c33, x, b3)
        x = SIMD16<Float>(repeating: a4[k])
        c40 = multiplyAdd(c40, x, b0); c41 = multiplyAdd(c41, x, b1)
        c42 = multiplyAdd(c42, x, b2); c43 = multiplyAdd(c43, x, b3)
        x = SIMD16<Float>(repeating: a5[k])
        c50 = multiplyAdd(c50, x, b0); c51 = multiplyAdd(c51, x, b1)
        c52 = multiplyAdd(c52, x, b2); c53 = multiplyAdd(c53, x, b3)
        b += FM
    }
    @inline(__always) func put(_ row: UnsafeMutablePointer<Float>, _ v0: SIMD16<Float>, _ v1: SIMD16<Float>,
                               _ v2: SIMD16<Float>, _ v3: SIMD16<Float>) {
        storeVec(row, v0); storeVec(row + 16, v1); storeVec(row + 32, v2); storeVec(row + 48, v3)
    }
    put(tile, c00, c01, c02, c03)
    put(tile + FM, c10, c11, c12, c13)
    put(tile + 2 * FM, c20, c21, c22, c23)
    put(tile + 3 * FM, c30, c31, c32, c33)
    put(tile + 4 * FM, c40, c41, c42, c43)
    put(tile + 5 * FM, c50, c51, c52, c53)
}

// MARK: - Bias backward

/// dbias (OC) += Σ_bt dout (BT, OC), threads over column chunks, SIMD16 down each chunk.
func biasBackward(_ dbias: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ BT: Int, _ OC: Int) {
    let chunks = (OC + 255) / 256
    parallelFor(chunks) { ch in
        let o0 = ch * 256, o1 = min(OC, o0 + 256)
        var o = o0
        while o + 16 <= o1 {
            var sum = SIMD16<Float>()
            for bt in 0 ..< BT { sum += loadVec(dout + bt * OC + o) }
            storeVec(dbias + o, loadVec(dbias + o) + sum)
            o += 16
        }
        while o < o1 {
            var sum: Float = 0
            for bt in 0 ..< BT { sum += dout[bt * OC + o] }
            dbias[o] += sum
            o += 1
        }
    }
}
