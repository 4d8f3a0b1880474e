// A plain SIMD16 matmul so the CPU model builds and runs until the blocked, packed one (Matmul.swift)
// lands; same names and contract. Delete this file when Matmul.swift merges.

/// out (BT, OC) = inp (BT, C) · weight (OC, C)ᵀ + bias (OC); bias may be nil (the LM head).
public func matmulForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                          _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                          _ BT: Int, _ C: Int, _ OC: Int) {
    // Threads split the output features; each weight row is read once and reused for all rows of inp.
    parallelForChunks(OC) { features in
        for o in features {
            let w = weight + o * C
            let b0: Float = bias?[o] ?? 0
            for bt in 0 ..< BT {
                out[bt * OC + o] = b0 + dot(inp + bt * C, w, C)
            }
        }
    }
}

/// dinp (BT, C) += dout·weight; dweight (OC, C) += doutᵀ·inp; dbias (OC) += Σ dout (dbias may be nil). Accumulates.
public func matmulBackward(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>,
                           _ dbias: UnsafeMutablePointer<Float>?, _ dout: UnsafePointer<Float>,
                           _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                           _ BT: Int, _ C: Int, _ OC: Int) {
    parallelForChunks(BT) { rows in
        for bt in rows {
            let d = dout + bt * OC
            let dx = dinp + bt * C
            for o in 0 ..< OC { axpy(dx, d[o], weight + o * C, C) }
        }
    }
    parallelForChunks(OC) { features in
        for o in features {
            let dw = dweight + o * C
            var sum: Float = 0
            for bt in 0 ..< BT {
                let g = dout[bt * OC + o]
                sum += g
                axpy(dw, g, inp + bt * C, C)
            }
            if let dbias { dbias[o] += sum }
        }
    }
}
