// AdamW with decoupled weight decay, bias-corrected moments and a 1-based step, as llm.c.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// IEEE square root as LLVM's intrinsic. Float.squareRoot() goes through libm's sqrtf (errno on
/// negatives), which stops LLVM from vectorizing the loop; the intrinsic becomes vsqrtps.
@_silgen_name("llvm.sqrt.f32") func ieeeSquareRoot(_ x: Float) -> Float

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
    let inverse1 = 1 / correction1, inverse2 = 1 / correction2
    let block = 1 << 14
    // A plain element loop that LLVM vectorizes (no reduction, the intrinsic sqrt); SIMD16's
    // squareRoot() would fall back to 16 scalar sqrtf calls.
    parallelForChunks((N + block - 1) / block) { blocks in
        let lo = blocks.lowerBound * block, hi = min(N, blocks.upperBound * block)
        for i in lo ..< hi {
            let g = grads[i] * gradScale
            let mi = beta1 * m[i] + (1 - beta1) * g
            let vi = beta2 * v[i] + (1 - beta2) * g * g
            let mhat = mi * inverse1, vhat = vi * inverse2
            let p = params[i]
            params[i] = p - learningRate * (mhat / (ieeeSquareRoot(vhat) + epsilon) + weightDecay * p)
            m[i] = mi
            v[i] = vi
        }
    }
}
