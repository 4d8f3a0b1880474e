// GELU, tanh approximation (GPT-2's): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), and its backward.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let geluScale: Float = 0.7978845608028654  // √(2/π)
let geluCubic: Float = 0.044715

// MARK: - Forward

public func geluForward(_ out: UnsafeMutablePointer<Float>,  // (N)
                        _ inp: UnsafePointer<Float>,         // (N)
                        _ N: Int) {
    parallelForChunks((N + 4095) / 4096) { blocks in
        var i = blocks.lowerBound * 4096
        let end = min(N, blocks.upperBound * 4096)
        let half = Vec16(repeating: 0.5), one = Vec16(repeating: 1)
        let s = Vec16(repeating: geluScale), k = Vec16(repeating: geluCubic)
        while i + 16 <= end {
            let x = load16(inp + i)
            let u = s * (x + k * x * x * x)
            store16(out + i, half * x * (one + vtanh(u)))
            i += 16
        }
        while i < end { out[i] = geluScalar(inp[i]); i += 1 }
    }
}

@inline(__always) func geluScalar(_ x: Float) -> Float {
    0.5 * x * (1 + tanhf(geluScale * (x + geluCubic * x * x * x)))
}

// MARK: - Backward

/// dinp += gelu'(inp)·dout, with gelu' = 0.5(1 + tanh u) + 0.5·x·(1 - tanh²u)·√(2/π)(1 + 3·0.044715·x²).
public func geluBackward(_ dinp: UnsafeMutablePointer<Float>,  // (N)
                         _ inp: UnsafePointer<Float>,          // (N)
                         _ dout: UnsafePointer<Float>,         // (N)
                         _ N: Int) {
    parallelForChunks((N + 4095) / 4096) { blocks in
        var i = blocks.lowerBound * 4096
        let end = min(N, blocks.upperBound * 4096)
        let half = Vec16(repeating: 0.5), one = Vec16(repeating: 1)
        let s = Vec16(repeating: geluScale), k = Vec16(repeating: geluCubic), k3 = Vec16(repeating: 3 * geluCubic)
        while i + 16 <= end {
            let x = load16(inp + i)
            let x2 = x * x
            let th = vtanh(s * (x + k * x2 * x))
            let sech2 = one - th * th
            let grad = half * (one + th) + half * x * sech2 * s * (one + k3 * x2)
            store16(dinp + i, load16(dinp + i) + grad * load16(dout + i))
            i += 16
        }
        while i < end {
            let x = inp[i]
            let th = tanhf(geluScale * (x + geluCubic * x * x * x))
            let grad = 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * geluScale * (1 + 3 * geluCubic * x * x)
            dinp[i] += grad * dout[i]
            i += 1
        }
    }
}
