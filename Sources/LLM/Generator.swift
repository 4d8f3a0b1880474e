// Text generation: feeds a prompt, then samples token by token with llm.c's xorshift sampler,

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
// through the backend's key/value cache when it has one, else by recomputing the sequence.

public final class Generator {
    public let model: GPT2Backend
    public let useCache: Bool
    var tokens: [Int32] = []
    /// Longest context: the model's maxT, and the backend's planned T when recomputing.
    public let window: Int

    public init(model: GPT2Backend, useCache: Bool = true) {
        self.model = model
        self.useCache = useCache && model is CachedGeneration
        window = self.useCache ? model.config.maxSeqLen : min(model.sequenceLength, model.config.maxSeqLen)
    }

    public var usesCache: Bool { useCache }

    func begin() throws {
        tokens = []
        if useCache, let cached = model as? CachedGeneration { try cached.beginGeneration(maxTokens: window) }
    }

    /// Appends a token; returns the logits for the next one.
    func step(_ token: Int32) throws -> [Float] {
        tokens.append(token)
        if useCache, let cached = model as? CachedGeneration {
            if tokens.count > window { throw LLMError("generation: \(tokens.count) tokens exceed the model's context of \(window)") }
            return try cached.generationStep(token: token)
        }
        let context = Array(tokens.suffix(window))
        _ = try model.forward(inputs: context, targets: nil, B: 1, T: context.count)
        return model.logits(b: 0, t: context.count - 1)
    }

    /// Generates `count` tokens after `prompt` (which starts with EOT as llm.c's samples do, or
    /// any tokens); temperature 1 and no top-k sample exactly as llm.c's CPU sampler.
    public func generate(prompt: [Int32], count: Int, temperature: Float = 1, topK: Int = 0, seed: UInt64 = 1337,
                         onToken: ((Int32) -> Void)? = nil) throws -> [Int32] {
        if prompt.isEmpty { throw LLMError("generation: the prompt must hold at least one token") }
        if useCache && prompt.count + count > window {
            throw LLMError("generation: prompt \(prompt.count) + \(count) tokens exceed the model's context of \(window)")
        }
        try begin()
        var rng = XorShift(seed: seed)
        var logits: [Float] = []
        for t in prompt { logits = try step(t) }
        var out: [Int32] = []
        let V = model.config.vocabSize
        for _ in 0 ..< count {
            let coin = rng.nextFloat()
            let next: Int
            if temperature == 1 && topK == 0 {
                next = sampleLikeLlmc(logits, V, coin: coin)
            } else {
                next = sampleSoftmax(Array(logits.prefix(V)), coin: coin, temperature: temperature, topK: topK)
            }
            out.append(Int32(next))
            onToken?(Int32(next))
            if out.count < count { logits = try step(Int32(next)) }
        }
        return out
    }
}

/// llm.c's CPU sampling: softmax with the max taken from -10000, then `sampleMult` on the cdf.
public func sampleLikeLlmc(_ logits: [Float], _ V: Int, coin: Float) -> Int {
    var probs = [Float](repeating: 0, count: V)
    var maxv: Float = -10000
    for i in 0 ..< V where logits[i] > maxv { maxv = logits[i] }
    var sum: Float = 0
    for i in 0 ..< V { probs[i] = expf(logits[i] - maxv); sum += probs[i] }
    for i in 0 ..< V { probs[i] /= sum }
    return probs.withUnsafeBufferPointer { sampleMult($0.baseAddress!, V, coin: coin) }
}
