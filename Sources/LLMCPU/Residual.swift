// Residual connection: out = a + b, and its backward, which hands dout to both inputs.

public func residualForward(_ out: UnsafeMutablePointer<Float>,  // (N)
                            _ inp1: UnsafePointer<Float>,        // (N)
                            _ inp2: UnsafePointer<Float>,        // (N)
                            _ N: Int) {
    parallelForChunks((N + 4095) / 4096) { blocks in
        var i = blocks.lowerBound * 4096
        let end = min(N, blocks.upperBound * 4096)
        while i + 16 <= end { store16(out + i, load16(inp1 + i) + load16(inp2 + i)); i += 16 }
        while i < end { out[i] = inp1[i] + inp2[i]; i += 1 }
    }
}

/// dinp1 += dout; dinp2 += dout.
public func residualBackward(_ dinp1: UnsafeMutablePointer<Float>,  // (N)
                             _ dinp2: UnsafeMutablePointer<Float>,  // (N)
                             _ dout: UnsafePointer<Float>,          // (N)
                             _ N: Int) {
    parallelForChunks((N + 4095) / 4096) { blocks in
        var i = blocks.lowerBound * 4096
        let end = min(N, blocks.upperBound * 4096)
        while i + 16 <= end {
            let d = load16(dout + i)
            store16(dinp1 + i, load16(dinp1 + i) + d)
            store16(dinp2 + i, load16(dinp2 + i) + d)
            i += 16
        }
        while i < end { dinp1[i] += dout[i]; dinp2[i] += dout[i]; i += 1 }
    }
}
