// Cached generation on the CPU: each new token runs the layers for its one position and attends
// over the keys and values kept from earlier positions, instead of a forward over the sequence.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LLM

// MARK: - State

/// The per-layer key/value cache and one position's activations, in one allocation planned at
/// `beginGeneration`. The activations are overwritten layer after layer: a step keeps nothing
/// but the new position's keys and values.
final class CPUGenerationState {
    let maxTokens: Int
    let memory: UnsafeMutablePointer<Float>
    let keys: UnsafeMutablePointer<Float>      // (L, maxTokens, C)
    let values: UnsafeMutablePointer<Float>    // (L, maxTokens, C)
    let residual: UnsafeMutablePointer<Float>  // (C) the residual stream of the new position
    let normed: UnsafeMutablePointer<Float>    // (C) ln1, ln2, lnf in turn
    let qkv: UnsafeMutablePointer<Float>       // (3C)
    let atty: UnsafeMutablePointer<Float>      // (C)
    let projection: UnsafeMutablePointer<Float>  // (C) attproj / fcproj output before the residual add
    let fch: UnsafeMutablePointer<Float>       // (4C)
    let fchGelu: UnsafeMutablePointer<Float>   // (4C)
    let scores: UnsafeMutablePointer<Float>    // (NH, maxTokens) one attention row per head
    let logits: UnsafeMutablePointer<Float>    // (V)
    let stats: UnsafeMutablePointer<Float>     // (2) layernorm mean and rstd, unused but written
    /// Tokens cached so far: the next step writes position `position`.
    var position = 0

    init(_ c: GPT2Config, maxTokens: Int) {
        let C = c.channels, L = c.numLayers, NH = c.numHeads, V = c.vocabSize
        self.maxTokens = maxTokens
        let sizes = [L * maxTokens * C, L * maxTokens * C, C, C, 3 * C, C, C, 4 * C, 4 * C,
                     NH * maxTokens, V, 2]
        memory = allocateFloats(sizes.reduce(0, +))
        var views: [UnsafeMutablePointer<Float>] = []
        var p = memory
        for s in sizes { views.append(p); p += s }
        keys = views[0]; values = views[1]; residual = views[2]; normed = views[3]; qkv = views[4]
        atty = views[5]; projection = views[6]; fch = views[7]; fchGelu = views[8]; scores = views[9]
        logits = views[10]; stats = views[11]
    }

    deinit { free(memory) }
}

// MARK: - CachedGeneration

extension CPUModel: CachedGeneration {
    public func beginGeneration(maxTokens: Int) throws {
        try validateGenerationLength(maxTokens, maxSeqLen: config.maxSeqLen)
        // A cache at least as long is reused: starting over only rewinds the position.
        if let state = generationState, state.maxTokens >= maxTokens {
            state.position = 0
            return
        }
        generationState = CPUGenerationState(config, maxTokens: maxTokens)
    }

    public func generationStep(token: Int32) throws -> [Float] {
        guard let s = generationState else { throw LLMError("generation: beginGeneration was not called") }
        try validateGenerationStep(token: token, position: s.position, maxTokens: s.maxTokens, vocabSize: config.vocabSize)
        let C = config.channels, L = config.numLayers, NH = config.numHeads, V = config.vocabSize
        let maxT = s.maxTokens, pos = s.position
        let p = params
        var id = token
        withUnsafePointer(to: &id) { encoderForward(s.residual, $0, p.wte, p.wpe + pos * C, 1, 1, C) }
        for l in 0 ..< L {
            let keys = s.keys + l * maxT * C      // (maxTokens, C)
            let values = s.values + l * maxT * C  // (maxTokens, C)
            layerNormForward(s.normed, s.stats, s.stats + 1, s.residual, p.ln1w + l * C, p.ln1b + l * C, 1, 1, C)
            matvecForward(s.qkv, s.normed, p.qkvw + l * 3 * C * C, p.qkvb + l * 3 * C, C, 3 * C)
            (keys + pos * C).update(from: s.qkv + C, count: C)
            (values + pos * C).update(from: s.qkv + 2 * C, count: C)
            attentionStep(s.atty, s.scores, s.qkv, keys, values, pos, maxT, C, NH)
            matvecForward(s.projection, s.atty, p.attprojw + l * C * C, p.attprojb + l * C, C, C)
            residualForward(s.residual, s.residual, s.projection, C)
            layerNormForward(s.normed, s.stats, s.stats + 1, s.residual, p.ln2w + l * C, p.ln2b + l * C, 1, 1, C)
            matvecForward(s.fch, s.normed, p.fcw + l * 4 * C * C, p.fcb + l * 4 * C, C, 4 * C)
            geluForward(s.fchGelu, s.fch, 4 * C)
            matvecForward(s.projection, s.fchGelu, p.fcprojw + l * C * 4 * C, p.fcprojb + l * C, 4 * C, C)
            residualForward(s.residual, s.residual, s.projection, C)
        }
        layerNormForward(s.normed, s.stats, s.stats + 1, s.residual, p.lnfw, p.lnfb, 1, 1, C)
        // Only the V real rows of wte: the padded rows' logits are never read.
        matvecForward(s.logits, s.normed, p.wte, nil, C, V)
        s.position += 1
        return Array(UnsafeBufferPointer(start: s.logits, count: V))
    }
}

// MARK: - Layers for one position

/// out (C) = attention of the query in qkv over keys/values 0...pos (the new position's key and
/// value already in place): `attentionRow`, which `attentionForward` calls for its row pos too,
/// so the two agree to the bit given the same inputs.
func attentionStep(_ out: UnsafeMutablePointer<Float>,     // (C)
                   _ scores: UnsafeMutablePointer<Float>,  // (NH, maxT)
                   _ qkv: UnsafePointer<Float>,            // (3C) the new position's q | k | v
                   _ keys: UnsafePointer<Float>,           // (maxT, C)
                   _ values: UnsafePointer<Float>,         // (maxT, C)
                   _ pos: Int, _ maxT: Int, _ C: Int, _ NH: Int) {
    let hs = C / NH
    let scale = 1 / sqrtf(Float(hs))
    // Below a few hundred positions a head is too little work to hand to another thread.
    let heads = (pos + 1) * hs >= 16384 ? NH : 1
    parallelForChunks(heads) { chunk in
        let range = heads == NH ? chunk : 0 ..< NH
        for h in range {
            let q = qkv + h * hs
            let a = scores + h * maxT
            attentionRow(out + h * hs, a, q, keys + h * hs, values + h * hs, C, pos + 1, hs, scale)
        }
    }
}

/// out (OC) = weight (OC, K) · inp (K) + bias (OC): `matmulForward` for one row. One row makes
/// it memory-bound (each weight is read once and used once), so the weights are streamed in
/// place, four rows at a time against the same loads of inp, with no packing and no 64-row tile
/// of which 63 rows would be padding.
public func matvecForward(_ out: UnsafeMutablePointer<Float>,  // (OC)
                          _ inp: UnsafePointer<Float>,         // (K)
                          _ weight: UnsafePointer<Float>,      // (OC, K)
                          _ bias: UnsafePointer<Float>?,       // (OC)
                          _ K: Int, _ OC: Int) {
    let quads = (OC + 3) / 4
    // Chunks of at least 64 rows: below that a thread costs more than it saves.
    let chunks = max(1, min(quads, OC * K / (64 * 1024)))
    parallelForChunks(chunks) { range in
        let lo = quads * range.lowerBound / chunks * 4, hi = min(OC, quads * range.upperBound / chunks * 4)
        var o = lo
        while o + 4 <= hi {
            let w0 = weight + o * K, w1 = w0 + K, w2 = w1 + K, w3 = w2 + K
            var a0 = Vec16(), a1 = Vec16(), a2 = Vec16(), a3 = Vec16()
            var i = 0
            while i + 16 <= K {
                let x = load16(inp + i)
                a0 += x * load16(w0 + i)
                a1 += x * load16(w1 + i)
                a2 += x * load16(w2 + i)
                a3 += x * load16(w3 + i)
                i += 16
            }
            var s0 = a0.sum(), s1 = a1.sum(), s2 = a2.sum(), s3 = a3.sum()
            while i < K {
                let x = inp[i]
                s0 += x * w0[i]; s1 += x * w1[i]; s2 += x * w2[i]; s3 += x * w3[i]
                i += 1
            }
            if let bias { s0 += bias[o]; s1 += bias[o + 1]; s2 += bias[o + 2]; s3 += bias[o + 3] }
            out[o] = s0; out[o + 1] = s1; out[o + 2] = s2; out[o + 3] = s3
            o += 4
        }
        while o < hi {
            out[o] = dot(inp, weight + o * K, K) + (bias?[o] ?? 0)
            o += 1
        }
    }
}
