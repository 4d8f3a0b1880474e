// LayerNorm over the channels of each (b, t) row: biased variance, eps 1e-5, as GPT-2 and llm.c.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Forward

/// out = (inp - mean)·rstd·weight + bias per row; caches mean and rstd for the backward.
public func layerNormForward(_ out: UnsafeMutablePointer<Float>,   // (B, T, C)
                             _ mean: UnsafeMutablePointer<Float>,  // (B, T)
                             _ rstd: UnsafeMutablePointer<Float>,  // (B, T)
                             _ inp: UnsafePointer<Float>,          // (B, T, C)
                             _ weight: UnsafePointer<Float>,       // (C)
                             _ bias: UnsafePointer<Float>,         // (C)
                             _ B: Int, _ T: Int, _ C: Int) {
    parallelForChunks(B * T) { rows in
        for bt in rows {
            let x = inp + bt * C
            let o = out + bt * C
            var acc = Vec16()
            var i = 0
            while i + 16 <= C { acc += load16(x + i); i += 16 }
            var s = acc.sum()
            while i < C { s += x[i]; i += 1 }
            let m = s / Float(C)
            let mv = Vec16(repeating: m)
            acc = Vec16()
            i = 0
            while i + 16 <= C { let d = load16(x + i) - mv; acc += d * d; i += 16 }
            var v = acc.sum()
            while i < C { let d = x[i] - m; v += d * d; i += 1 }
            let r = 1 / sqrtf(v / Float(C) + 1e-5)
            let rv = Vec16(repeating: r)
            i = 0
            while i + 16 <= C {
                store16(o + i, (load16(x + i) - mv) * rv * load16(weight + i) + load16(bias + i))
                i += 16
            }
            while i < C { o[i] = (x[i] - m) * r * weight[i] + bias[i]; i += 1 }
            mean[bt] = m
            rstd[bt] = r
        }
    }
}

// MARK: - Backward

/// dinp += rstd·(dnorm - mean(dnorm) - norm·mean(dnorm·norm)) with dnorm = weight·dout;
/// dweight += Σ norm·dout; dbias += Σ dout. Rows split across threads for dinp, then channels
/// for dweight/dbias, so every thread writes its own elements and the sums are deterministic.
public func layerNormBackward(_ dinp: UnsafeMutablePointer<Float>,     // (B, T, C)
                              _ dweight: UnsafeMutablePointer<Float>,  // (C)
                              _ dbias: UnsafeMutablePointer<Float>,    // (C)
                              _ dout: UnsafePointer<Float>,            // (B, T, C)
                              _ inp: UnsafePointer<Float>,             // (B, T, C)
                              _ weight: UnsafePointer<Float>,          // (C)
                              _ mean: UnsafePointer<Float>,            // (B, T)
                              _ rstd: UnsafePointer<Float>,            // (B, T)
                              _ B: Int, _ T: Int, _ C: Int) {
    parallelForChunks(B * T) { rows in
        for bt in rows {
            let x = inp + bt * C, d = dout + bt * C, dx = dinp + bt * C
            let m = mean[bt], r = rstd[bt]
            let mv = Vec16(repeating: m), rv = Vec16(repeating: r)
            var accD = Vec16(), accDN = Vec16()
            var i = 0
            while i + 16 <= C {
                let norm = (load16(x + i) - mv) * rv
                let dnorm = load16(weight + i) * load16(d + i)
                accD += dnorm
                accDN += dnorm * norm
                i += 16
            }
            var sumD = accD.sum(), sumDN = accDN.sum()
            while i < C {
                let norm = (x[i] - m) * r
                let dnorm = weight[i] * d[i]
                sumD += dnorm
                sumDN += dnorm * norm
                i += 1
            }
            let meanD = sumD / Float(C), meanDN = sumDN / Float(C)
            let meanDv = Vec16(repeating: meanD), meanDNv = Vec16(repeating: meanDN)
            i = 0
            while i + 16 <= C {
                let norm = (load16(x + i) - mv) * rv
                let dnorm = load16(weight + i) * load16(d + i)
                store16(dx + i, load16(dx + i) + rv * (dnorm - meanDv - norm * meanDNv))
                i += 16
            }
            while i < C {
                let norm = (x[i] - m) * r
                let dnorm = weight[i] * d[i]
                dx[i] += r * (dnorm - meanD - norm * meanDN)
                i += 1
            }
        }
    }
    let blocks = (C + 15) / 16
    parallelForChunks(blocks) { blockRange in
        let c0 = blockRange.lowerBound * 16, c1 = min(C, blockRange.upperBound * 16)
        var c = c0
        while c + 16 <= c1 {
            var accW = Vec16(), accB = Vec16()
            for bt in 0 ..< B * T {
                let dv = load16(dout + bt * C + c)
                let norm = (load16(inp + bt * C + c) - Vec16(repeating: mean[bt])) * Vec16(repeating: rstd[bt])
                accW += norm * dv
                accB += dv
            }
            store16(dweight + c, load16(dweight + c) + accW)
            store16(dbias + c, load16(dbias + c) + accB)
            c += 16
        }
        while c < c1 {
            var sw: Float = 0, sb: Float = 0
            for bt in 0 ..< B * T {
                let dv = dout[bt * C + c]
                sw += (inp[bt * C + c] - mean[bt]) * rstd[bt] * dv
                sb += dv
            }
            dweight[c] += sw
            dbias[c] += sb
            c += 1
        }
    }
}
