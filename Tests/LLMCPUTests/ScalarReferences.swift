// Plain double-precision forward passes of each layer: the oracles for the SIMD fp32 kernels,
// directly for the forwards and through finite differences for the backwards.

import Foundation

enum Reference {
    static func layerNorm(_ x: [Double], _ w: [Double], _ b: [Double], rows: Int, C: Int) -> [Double] {
        var out = [Double](repeating: 0, count: rows * C)
        for r in 0 ..< rows {
            let row = x[r * C ..< (r + 1) * C]
            let mean = row.reduce(0, +) / Double(C)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(C)
            let rstd = 1 / (variance + 1e-5).squareRoot()
            for c in 0 ..< C { out[r * C + c] = (x[r * C + c] - mean) * rstd * w[c] + b[c] }
        }
        return out
    }

    static func gelu(_ x: [Double]) -> [Double] {
        x.map { 0.5 * $0 * (1 + tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) }
    }

    /// Causal attention on qkv rows (B, T, 3C) -> (B, T, C); also the probabilities (B, NH, T, T).
    static func attention(_ qkv: [Double], B: Int, T: Int, C: Int, NH: Int) -> (out: [Double], att: [Double]) {
        let hs = C / NH, scale = 1 / Double(hs).squareRoot()
        var out = [Double](repeating: 0, count: B * T * C)
        var att = [Double](repeating: 0, count: B * NH * T * T)
        for b in 0 ..< B {
            for h in 0 ..< NH {
                for t in 0 ..< T {
                    var scores = [Double](repeating: 0, count: t + 1)
                    for t2 in 0 ... t {
                        var s = 0.0
                        for i in 0 ..< hs {
                            s += qkv[(b * T + t) * 3 * C + h * hs + i] * qkv[(b * T + t2) * 3 * C + C + h * hs + i]
                        }
                        scores[t2] = s * scale
                    }
                    let m = scores.max()!
                    let e = scores.map { exp($0 - m) }
                    let sum = e.reduce(0, +)
                    for t2 in 0 ... t {
                        let a = e[t2] / sum
                        att[((b * NH + h) * T + t) * T + t2] = a
                        for i in 0 ..< hs {
                            out[(b * T + t) * C + h * hs + i] += a * qkv[(b * T + t2) * 3 * C + 2 * C + h * hs + i]
                        }
                    }
                }
            }
        }
        return (out, att)
    }

    /// Per-row cross-entropy of softmax over the first V of Vp logits.
    static func crossEntropy(_ logits: [Double], _ targets: [Int32], rows: Int, V: Int, Vp: Int) -> [Double] {
        (0 ..< rows).map { r in
            let x = logits[r * Vp ..< r * Vp + V]
            let m = x.max()!
            let lse = m + log(x.map { exp($0 - m) }.reduce(0, +))
            return lse - logits[r * Vp + Int(targets[r])]
        }
    }

    static func encoder(_ tokens: [Int32], _ wte: [Double], _ wpe: [Double], B: Int, T: Int, C: Int) -> [Double] {
        var out = [Double](repeating: 0, count: B * T * C)
        for b in 0 ..< B {
            for t in 0 ..< T {
                for c in 0 ..< C {
                    out[(b * T + t) * C + c] = wte[Int(tokens[b * T + t]) * C + c] + wpe[t * C + c]
                }
            }
        }
        return out
    }

    /// Σ weights[i]·out[i]: a scalar loss whose gradient with respect to out is `weights`.
    static func weighted(_ out: [Double], _ weights: [Float]) -> Double {
        zip(out, weights).reduce(0) { $0 + $1.0 * Double($1.1) }
    }
}
