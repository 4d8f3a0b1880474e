// Causal multi-head self-attention on the fused qkv rows [q(C) | k(C) | v(C)], head h at h·hs.
// Forward keeps only the softmax probabilities `att`; the backward needs nothing else and is
// O(T²) per head: datt·att and one row sum replace llm.c's O(T³) softmax Jacobian.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Forward

/// For each (b, t, h): att[t2] = softmax_{t2 <= t}(q_t·k_t2 / √hs) (running max starting at
/// -10000, entries t2 > t set to 0); out[b, t, h·hs ..< (h+1)·hs] = Σ att[t2]·v_t2.
public func attentionForward(_ out: UnsafeMutablePointer<Float>,  // (B, T, C)
                             _ att: UnsafeMutablePointer<Float>,  // (B, NH, T, T)
                             _ inp: UnsafePointer<Float>,         // (B, T, 3C)
                             _ B: Int, _ T: Int, _ C: Int, _ NH: Int) {
    let hs = C / NH
    let scale = 1 / sqrtf(Float(hs))
    let C3 = 3 * C
    // Rows ordered (b, h, t): contiguous chunks then cover whole heads and balance the causal work.
    parallelForChunks(B * NH * T) { rows in
        for row in rows {
            let t = row % T, h = (row / T) % NH, b = row / (T * NH)
            let q = inp + b * T * C3 + t * C3 + h * hs
            let a = att + ((b * NH + h) * T + t) * T
            attentionRow(out + b * T * C + t * C + h * hs, a, q, inp + b * T * C3 + C + h * hs,
                         inp + b * T * C3 + 2 * C + h * hs, C3, t + 1, hs, scale)
            for t2 in (t + 1) ..< T { a[t2] = 0 }
        }
    }
}

/// One query against n keys and values (rows `stride` apart): a[0 ..< n] = softmax(q·k / √hs) with
/// the running max starting at -10000, o (hs) = Σ a[t2]·v_t2. The training forward and the cached
/// generation step both call it, so the two agree to the bit.
@inline(__always)
func attentionRow(_ o: UnsafeMutablePointer<Float>,     // (hs)
                  _ a: UnsafeMutablePointer<Float>,     // (n)
                  _ q: UnsafePointer<Float>,            // (hs)
                  _ keys: UnsafePointer<Float>,         // (n, stride), hs used
                  _ values: UnsafePointer<Float>,       // (n, stride), hs used
                  _ stride: Int, _ n: Int, _ hs: Int, _ scale: Float) {
    var maxval: Float = -10000
    for t2 in 0 ..< n {
        let s = dot(q, keys + t2 * stride, hs) * scale
        if s > maxval { maxval = s }
        a[t2] = s
    }
    var sum: Float = 0
    for t2 in 0 ..< n {
        let e = expf(a[t2] - maxval)
        sum += e
        a[t2] = e
    }
    let inv: Float = sum == 0 ? 0 : 1 / sum
    for t2 in 0 ..< n { a[t2] *= inv }
    var i = 0
    while i + 16 <= hs {
        var acc = Vec16()
        for t2 in 0 ..< n { acc += Vec16(repeating: a[t2]) * load16(values + t2 * stride + i) }
        store16(o + i, acc)
        i += 16
    }
    while i < hs {
        var s: Float = 0
        for t2 in 0 ..< n { s += a[t2] * values[t2 * stride + i] }
        o[i] = s
        i += 1
    }
}

// MARK: - Backward

/// dinp (dq, dk, dv) += the gradient of the forward above. Threads take whole (b, h) pairs, which
/// own disjoint columns of dinp, so the accumulation over t needs no locks.
/// Per row t: datt[t2] = dout_t·v_t2; dv_t2 += att[t2]·dout_t;
/// dpreatt[t2] = att[t2]·(datt[t2] - Σ_t3 att[t3]·datt[t3]); dq_t += dpreatt·k_t2/√hs; dk_t2 += dpreatt·q_t/√hs.
public func attentionBackward(_ dinp: UnsafeMutablePointer<Float>,  // (B, T, 3C)
                              _ dout: UnsafePointer<Float>,         // (B, T, C)
                              _ inp: UnsafePointer<Float>,          // (B, T, 3C)
                              _ att: UnsafePointer<Float>,          // (B, NH, T, T)
                              _ B: Int, _ T: Int, _ C: Int, _ NH: Int) {
    let hs = C / NH
    let scale = 1 / sqrtf(Float(hs))
    let C3 = 3 * C
    parallelForChunks(B * NH) { pairs in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: T) { scratch in
            let datt = scratch.baseAddress!  // (T) one row of d(att)
            for pair in pairs {
                let b = pair / NH, h = pair % NH
                let base = inp + b * T * C3 + h * hs
                let dbase = dinp + b * T * C3 + h * hs
                for t in 0 ..< T {
                    let a = att + ((b * NH + h) * T + t) * T
                    let d = dout + b * T * C + t * C + h * hs
                    var rowSum: Float = 0
                    for t2 in 0 ... t {
                        let v = base + t2 * C3 + 2 * C
                        let g = dot(d, v, hs)
                        datt[t2] = g
                        rowSum += a[t2] * g
                        axpy(dbase + t2 * C3 + 2 * C, a[t2], d, hs)
                    }
                    let q = base + t * C3
                    let dq = dbase + t * C3
                    for t2 in 0 ... t {
                        let dpre = a[t2] * (datt[t2] - rowSum) * scale
                        axpy(dq, dpre, base + t2 * C3 + C, hs)
                        axpy(dbase + t2 * C3 + C, dpre, q, hs)
                    }
                }
            }
        }
    }
}
