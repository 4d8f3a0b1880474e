// Cached generation on the CPU: the key/value cache must give the full forward's logits at every
// position, and so the same sampled tokens as recomputing the sequence for every token.

import Foundation
import LLM
import Testing
@testable import LLMCPU

struct GenerationTests {
    /// The first n tokens of Tiny Shakespeare (uint16 little-endian, no header), mapped into the
    /// tiny model's 500-token vocabulary.
    func tinyTokens(_ n: Int) throws -> [Int32] {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("tinyshakespeare.gpt2.u16")))
        return (0 ..< n).map { k in Int32((Int(data[2 * k]) | Int(data[2 * k + 1]) << 8) % 500) }
    }

    @Test func matvecMatchesScalarMatmul() {
        var rng = TestRandom(7)
        for (K, OC) in [(64, 192), (37, 13), (768, 50), (16, 3)] {
            let inp = Buf(rng.floats(K)), weight = Buf(rng.floats(OC * K)), bias = Buf(rng.floats(OC))
            let out = Buf(zeros: OC), expected = Buf(zeros: OC)
            matvecForward(out.p, inp.p, weight.p, bias.p, K, OC)
            matmulForwardReference(expected.p, inp.p, weight.p, bias.p, 1, K, OC)
            #expect(maxAbsDiff(out.array, expected.array) < 1e-5 * Double(K).squareRoot(), "K=\(K) OC=\(OC)")
            matvecForward(out.p, inp.p, weight.p, nil, K, OC)
            matmulForwardReference(expected.p, inp.p, weight.p, nil, 1, K, OC)
            #expect(maxAbsDiff(out.array, expected.array) < 1e-5 * Double(K).squareRoot(), "K=\(K) OC=\(OC) no bias")
        }
    }

    @Test func cachedLogitsEqualFullForwardOfEachPrefix() throws {
        let tokens = try tinyTokens(40)
        let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 1, T: tokens.count)
        try model.beginGeneration(maxTokens: tokens.count)
        var worst = 0.0
        for t in 0 ..< tokens.count {
            let cached = try model.generationStep(token: tokens[t])
            let prefix = Array(tokens[0 ... t])
            _ = try model.forward(inputs: prefix, targets: nil, B: 1, T: prefix.count)
            let full = model.logits(b: 0, t: t)
            #expect(cached.count == model.config.vocabSize)
            worst = max(worst, maxAbsDiff(cached, full))
        }
        #expect(worst < 1e-5, "largest logit difference \(worst)")
    }

    @Test func beginGenerationStartsOver() throws {
        let tokens = try tinyTokens(12)
        let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 1, T: 16)
        try model.beginGeneration(maxTokens: 16)
        var first: [Float] = []
        for t in tokens { first = try model.generationStep(token: t) }
        // A shorter plan reuses the cache; the earlier tokens must be forgotten.
        try model.beginGeneration(maxTokens: 12)
        var again: [Float] = []
        for t in tokens { again = try model.generationStep(token: t) }
        #expect(first == again)
    }

    @Test func stepsPastThePlanAreRefused() throws {
        let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 1, T: 4)
        try model.beginGeneration(maxTokens: 2)
        _ = try model.generationStep(token: 1)
        _ = try model.generationStep(token: 2)
        #expect(throws: LLMError.self) { _ = try model.generationStep(token: 3) }
        #expect(throws: LLMError.self) { try model.beginGeneration(maxTokens: model.config.maxSeqLen + 1) }
        try model.beginGeneration(maxTokens: 2)
        #expect(throws: LLMError.self) { _ = try model.generationStep(token: Int32(model.config.vocabSize)) }
    }

    @Test(arguments: [(Float(1), 0), (Float(0.8), 40)])
    func generatorGivesTheSameTokensWithAndWithoutCache(temperature: Float, topK: Int) throws {
        let prompt: [Int32] = [0] + (try tinyTokens(5))
        let count = 50
        let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 1, T: prompt.count + count)
        let cached = Generator(model: model, useCache: true)
        let recompute = Generator(model: model, useCache: false)
        #expect(cached.usesCache && !recompute.usesCache)
        for seed: UInt64 in [1337, 42] {
            let a = try cached.generate(prompt: prompt, count: count, temperature: temperature, topK: topK, seed: seed)
            let b = try recompute.generate(prompt: prompt, count: count, temperature: temperature, topK: topK, seed: seed)
            #expect(a.count == count)
            #expect(a == b, "seed \(seed)")
        }
    }
}
