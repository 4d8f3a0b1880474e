// AdamW with decoupled weight decay, bias-corrected moments and a 1-based step, as llm.c.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// For each i: g = grads[i]·gradScale; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
/// params[i] -= lr·(m̂/(√v̂ + eps) + weightDecay·params[i]) with m̂ = m/(1-β1^t), v̂ = v/(1-β2^t).
public func adamWUpdate(_ params: UnsafeMutablePointer<Float>,  // (N)
                        _ m: UnsafeMutablePointer<Float>,       // (N)
                        _ v: UnsafeMutablePointer<Float>,       // (N)
                        _ grads: UnsafePointer<Float>,          // (N)
                        _ N: Int, learningRate: Float, beta1: Float, beta2: Float, epsilon: Float,
                        weightDecay: Float, t: Int, gradScale: Float = 1) {
    let correction1 = 1 - powf(beta1, Float(t))
    let correction2 = 1 - powf(beta2, Float(t))
    let block = 1 << 14
    parallelForChunks((N + block - 1) / block) { blocks in
        var i = blocks.lowerBound * block
        let end = min(N, blocks.upperBound * block)
        let b1 = Vec16(repeating: beta1), b2 = Vec16(repeating: beta2)
        let ob1 = Vec16(repeating: 1 - beta1), ob2 = Vec16(repeating: 1 - beta2)
        let c1 = Vec16(repeating: correction1), c2 = Vec16(repeating: correction2)
        let lr = Vec16(repeating: learningRate), wd = Vec16(repeating: weightDecay)
        let eps = Vec16(repeating: epsilon), gs = Vec16(repeating: gradScale)
        while i + 16 <= end {
            let g = load16(grads + i) * gs
            let mi = b1 * load16(m + i) + ob1 * g
            let vi = b2 * load16(v + i) + ob2 * g * g
            let mhat = mi / c1, vhat = vi / c2
            let p = load16(params + i)
            store16(params + i, p - lr * (mhat / (vhat.squareRoot() + eps) + wd * p))
            store16(m + i, mi)
            store16(v + i, vi)
            i += 16
        }
        while i < end {
            let g = grads[i] * gradScale
            let mi = beta1 * m[i] + (1 - beta1) * g
            let vi = beta2 * v[i] + (1 - beta2) * g * g
            let mhat = mi / correction1, vhat = vi / correction2
            params[i] -= learningRate * (mhat / (sqrtf(vhat) + epsilon) + weightDecay * params[i])
            m[i] = mi
            v[i] = vi
            i += 1
        }
    }
}
