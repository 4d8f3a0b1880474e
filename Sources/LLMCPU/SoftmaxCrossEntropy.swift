// Softmax over the real vocabulary (the first V of Vp columns) fused with cross-entropy.
// No probabilities tensor: the forward keeps each row's log-sum-exp, the backward recomputes
// softmax from the logits and writes dlogits directly.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Forward

/// losses[b,t] = logsumexp(logits[b,t,:V]) - logits[b,t,target]; lse[b,t] keeps the log-sum-exp.
/// The max starts at -10000, as llm.c's softmax.
public func softmaxCrossEntropyForward(_ losses: UnsafeMutablePointer<Float>,  // (B, T)
                                       _ lse: UnsafeMutablePointer<Float>,     // (B, T)
                                       _ logits: UnsafePointer<Float>,         // (B, T, Vp)
                                       _ targets: UnsafePointer<Int32>,        // (B, T)
                                       _ B: Int, _ T: Int, _ V: Int, _ Vp: Int) {
    parallelForChunks(B * T) { rows in
        for bt in rows {
            let x = logits + bt * Vp
            var maxv = Vec16(repeating: -10000)
            var i = 0
            while i + 16 <= V {
                let v = load16(x + i)
                maxv.replace(with: v, where: v .> maxv)
                i += 16
            }
            var m = maxv.max()
            while i < V { if x[i] > m { m = x[i] }; i += 1 }
            let mv = Vec16(repeating: m)
            var acc = Vec16()
            i = 0
            while i + 16 <= V { acc += vexp(load16(x + i) - mv); i += 16 }
            var s = acc.sum()
            while i < V { s += expf(x[i] - m); i += 1 }
            let l = m + logf(s)
            lse[bt] = l
            losses[bt] = l - x[Int(targets[bt])]
        }
    }
}

// MARK: - Backward

/// dlogits[b,t,i] = (softmax_i - [i == target])·dloss for i < V, and 0 for the pad columns.
/// Writes (does not accumulate): dlogits is the first activation gradient of the backward pass.
public func softmaxCrossEntropyBackward(_ dlogits: UnsafeMutablePointer<Float>,  // (B, T, Vp)
                                        _ logits: UnsafePointer<Float>,          // (B, T, Vp)
                                        _ lse: UnsafePointer<Float>,             // (B, T)
                                        _ targets: UnsafePointer<Int32>,         // (B, T)
                                        _ dloss: Float,
                                        _ B: Int, _ T: Int, _ V: Int, _ Vp: Int) {
    parallelForChunks(B * T) { rows in
        for bt in rows {
            let x = logits + bt * Vp, dx = dlogits + bt * Vp
            let l = lse[bt]
            let lv = Vec16(repeating: l), dv = Vec16(repeating: dloss)
            var i = 0
            while i + 16 <= V { store16(dx + i, vexp(load16(x + i) - lv) * dv); i += 16 }
            while i < V { dx[i] = expf(x[i] - l) * dloss; i += 1 }
            while i < Vp { dx[i] = 0; i += 1 }
            dx[Int(targets[bt])] -= dloss
        }
    }
}
