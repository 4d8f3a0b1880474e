// Cached generation on the GPU: each new token runs the layers for its one position (cuBLASLt
// with N = 1) and attends over the keys and values kept from earlier positions (generation.cu).

#if canImport(Glibc)
import Glibc
#endif
import LLM

// MARK: - State

/// The per-layer key/value cache (floatX, as the qkv activation it is copied from) and one
/// position's activations, in one device allocation planned at `beginGeneration`.
final class CUDAGenerationState {
    let device: CUDADevice
    let maxTokens: Int
    let memory: CUdeviceptr
    let keys: CUdeviceptr        // (L, maxTokens, C) floatX
    let values: CUdeviceptr      // (L, maxTokens, C) floatX
    let residual: CUdeviceptr    // (C) floatX, the residual stream of the new position
    let normed: CUdeviceptr      // (C) floatX: ln1, ln2, lnf in turn
    let qkv: CUdeviceptr         // (3C) floatX
    let atty: CUdeviceptr        // (C) floatX
    let projection: CUdeviceptr  // (C) floatX: attproj / fcproj output before the residual add
    let fch: CUdeviceptr         // (4C) floatX
    let fchGelu: CUdeviceptr     // (4C) floatX
    let logits: CUdeviceptr      // (Vp) floatX
    let stats: CUdeviceptr       // (2) fp32 layernorm mean and rstd, written and unused
    let token: CUdeviceptr       // (1) int32
    /// Tokens cached so far: the next step writes position `position`.
    var position = 0

    init(_ c: GPT2Config, device: CUDADevice, elementBytes E: Int, maxTokens: Int) throws {
        let C = c.channels, L = c.numLayers
        self.device = device
        self.maxTokens = maxTokens
        // Bytes of each view, rounded to 256 so every cuBLASLt operand is well aligned.
        let sizes = [L * maxTokens * C * E, L * maxTokens * C * E, C * E, C * E, 3 * C * E, C * E, C * E,
                     4 * C * E, 4 * C * E, c.paddedVocabSize * E, 2 * 4, 4].map { ($0 + 255) / 256 * 256 }
        memory = try device.allocate(bytes: sizes.reduce(0, +), what: "key/value cache")
        var views: [CUdeviceptr] = []
        var at = memory
        for s in sizes { views.append(at); at += UInt64(s) }
        keys = views[0]; values = views[1]; residual = views[2]; normed = views[3]; qkv = views[4]
        atty = views[5]; projection = views[6]; fch = views[7]; fchGelu = views[8]; logits = views[9]
        stats = views[10]; token = views[11]
    }

    deinit { device.free(memory) }
}

// MARK: - CachedGeneration

extension CUDAModel: CachedGeneration {
    public func beginGeneration(maxTokens: Int) throws {
        try validateGenerationLength(maxTokens, maxSeqLen: config.maxSeqLen)
        // A cache at least as long is reused: starting over only rewinds the position.
        if let state = generationState, state.maxTokens >= maxTokens {
            state.position = 0
            return
        }
        generationState = nil  // free the old cache before allocating the new one
        generationState = try CUDAGenerationState(config, device: device, elementBytes: E, maxTokens: maxTokens)
    }

    public func generationStep(token: Int32) throws -> [Float] {
        guard let s = generationState else { throw LLMError("generation: beginGeneration was not called") }
        try validateGenerationStep(token: token, position: s.position, maxTokens: s.maxTokens, vocabSize: config.vocabSize)
        let C = config.channels, L = config.numLayers, NH = config.numHeads, hs = config.headSize
        let V = config.vocabSize, Vp = config.paddedVocabSize
        let maxT = s.maxTokens, pos = s.position
        let mean = s.stats, rstd = floats(s.stats, 1)
        try device.upload(s.token, [token])
        // T = 1 with wpe moved to row pos: the encoder adds the position's embedding.
        try launch1D("encoder_forward", count: C,
                     [.ptr(s.residual), .ptr(s.token), .ptr(tensor(params, .wte)),
                      .ptr(elements(tensor(params, .wpe), pos * C)), .i32(1), .i32(1), .i32(Int32(C))])
        // Threads of the attention block: whole warps and whole heads.
        let attBlock = max(hs, 256)
        let attShared = (hs + pos + 1 + attBlock + 32) * 4
        for l in 0 ..< L {
            func p(_ t: ParameterTensor) -> CUdeviceptr { tensor(params, t, layer: l) }
            try layerNormForward(s.normed, mean, rstd, s.residual, p(.ln1w), p(.ln1b), N: 1, C: C)
            try matmulForward(s.qkv, s.normed, p(.qkvw), p(.qkvb), N: 1, K: C, OC: 3 * C)
            try launch("attention_generation", grid: (NH, 1, 1), block: (attBlock, 1, 1), shared: attShared,
                       [.ptr(s.atty), .ptr(elements(s.keys, l * maxT * C)), .ptr(elements(s.values, l * maxT * C)),
                        .ptr(s.qkv), .i32(Int32(pos)), .i32(Int32(NH)), .i32(Int32(hs))])
            try matmulForward(s.projection, s.atty, p(.attprojw), p(.attprojb), N: 1, K: C, OC: C)
            try launch1D("residual_forward", count: C, [.ptr(s.residual), .ptr(s.residual), .ptr(s.projection), .i64(Int64(C))])
            try layerNormForward(s.normed, mean, rstd, s.residual, p(.ln2w), p(.ln2b), N: 1, C: C)
            try matmulForward(s.fch, s.normed, p(.fcw), p(.fcb), N: 1, K: C, OC: 4 * C)
            try launch1D("gelu_forward", count: 4 * C, [.ptr(s.fchGelu), .ptr(s.fch), .i64(Int64(4 * C))])
            try matmulForward(s.projection, s.fchGelu, p(.fcprojw), p(.fcprojb), N: 1, K: 4 * C, OC: C)
            try launch1D("residual_forward", count: C, [.ptr(s.residual), .ptr(s.residual), .ptr(s.projection), .i64(Int64(C))])
        }
        try layerNormForward(s.normed, mean, rstd, s.residual, tensor(params, .lnfw), tensor(params, .lnfb), N: 1, C: C)
        // Vp rows as the full forward (aligned operands); the padded logits are not read back.
        try matmulForward(s.logits, s.normed, tensor(params, .wte), nil, N: 1, K: C, OC: Vp)
        s.position += 1
        return try downloadFloatX(s.logits, count: V)  // the download waits for the stream
    }
}
