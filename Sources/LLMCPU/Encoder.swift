// Token + position embedding: the first layer of GPT-2, and its backward into wte and wpe.

// MARK: - Forward

/// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
public func encoderForward(_ out: UnsafeMutablePointer<Float>,  // (B, T, C)
                           _ inp: UnsafePointer<Int32>,         // (B, T) token ids
                           _ wte: UnsafePointer<Float>,         // (Vp, C)
                           _ wpe: UnsafePointer<Float>,         // (maxT, C)
                           _ B: Int, _ T: Int, _ C: Int) {
    parallelForChunks(B * T) { rows in
        for bt in rows {
            let t = bt % T
            let o = out + bt * C
            let e = wte + Int(inp[bt]) * C
            let p = wpe + t * C
            var i = 0
            while i + 16 <= C { store16(o + i, load16(e + i) + load16(p + i)); i += 16 }
            while i < C { o[i] = e[i] + p[i]; i += 1 }
        }
    }
}

// MARK: - Backward

/// dwte[inp[b,t],:] += dout[b,t,:]; dwpe[t,:] += dout[b,t,:]. A token can repeat, so threads split
/// the channels rather than the rows: no two threads ever touch the same gradient element.
public func encoderBackward(_ dwte: UnsafeMutablePointer<Float>,  // (Vp, C)
                            _ dwpe: UnsafeMutablePointer<Float>,  // (maxT, C)
                            _ dout: UnsafePointer<Float>,         // (B, T, C)
                            _ inp: UnsafePointer<Int32>,          // (B, T)
                            _ B: Int, _ T: Int, _ C: Int) {
    let blocks = (C + 15) / 16
    parallelForChunks(blocks) { blockRange in
        let c0 = blockRange.lowerBound * 16, c1 = min(C, blockRange.upperBound * 16)
        for bt in 0 ..< B * T {
            let t = bt % T
            let d = dout + bt * C
            let we = dwte + Int(inp[bt]) * C
            let wp = dwpe + t * C
            for c in c0 ..< c1 {
                we[c] += d[c]
                wp[c] += d[c]
            }
        }
    }
}
