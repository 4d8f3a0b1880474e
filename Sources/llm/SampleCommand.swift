// `llm sample`: generate text from a checkpoint, with the backend's key/value cache.

import ArgumentParser
import LLM
import LLMCPU
#if canImport(Glibc)
import Glibc
#endif

struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a model (a checkpoint file or a descriptor).",
        discussion: "Temperature 1 with no top-k draws exactly as llm.c's sampler (xorshift seeded with --seed, sample_mult on the softmax).")

    @OptionGroup var model: ModelOption<RequiredModel>
    @Option(help: "Text to continue; the sample starts after an end-of-text token either way.")
    var prompt: String = ""
    @Option(help: "Tokens to generate.")
    var tokens: Int = 64
    @Option(help: "Softmax temperature (> 0).")
    var temperature: Float = 1
    @Option(name: .customLong("top-k"), help: "Sample among the K most likely tokens only (0 = all).")
    var topK: Int = 0
    @Option(help: "Seed of the sampler's xorshift generator (llm.c uses 1337).")
    var seed: UInt64 = 1337
    @OptionGroup var vocab: VocabOption
    @OptionGroup var device: DeviceOption
    @OptionGroup var precision: PrecisionOption
    @OptionGroup var threads: ThreadsOption
    @Flag(name: .customLong("no-cache"), help: "Recompute the whole sequence for every token, as llm.c does (for comparison).")
    var noCache = false

    func validate() throws {
        if tokens <= 0 { throw ValidationError("--tokens \(tokens) must be > 0") }
        if !(temperature > 0) { throw ValidationError("--temperature \(temperature) must be > 0") }
        if topK < 0 { throw ValidationError("--top-k \(topK) must be >= 0") }
    }

    func run() throws {
        try reportingErrors(generate)
    }

    func generate() throws {
        threads.apply()
        let tokenizer = try vocab.load()
        let (config, parameters, source) = try model.load(seed: 42)
        let promptIds = [tokenizer.eotToken] + tokenizer.encode(prompt)
        let T = min(config.maxSeqLen, promptIds.count + tokens)
        if promptIds.count + tokens > config.maxSeqLen && !noCache {
            throw LLMError("--tokens \(tokens): the prompt (\(promptIds.count) tokens with EOT) plus the sample exceed the model's context of \(config.maxSeqLen)")
        }
        let backend = try makeBackend(device.value, config: config, parameters: parameters, B: 1, T: T, precision: precision.value,
                                      log: { FileHandleStderr.print($0) })
        let generator = Generator(model: backend, useCache: !noCache)
        FileHandleStderr.print("model: \(source) on \(backend.deviceDescription), "
                               + (generator.usesCache ? "key/value cache" : "full recompute per token"))
        Swift.print(prompt, terminator: "")
        fflush(stdout)
        let t0 = monotonicSeconds()
        var pending: [UInt8] = []
        _ = try generator.generate(prompt: promptIds, count: tokens, temperature: temperature, topK: topK, seed: seed) { id in
            // Print whole UTF-8 characters as they complete.
            pending += tokenizer.tokenBytes(id)
            if let text = String(validatingUTF8: pending.map { CChar(bitPattern: $0) } + [0]) {
                Swift.print(text, terminator: "")
                fflush(stdout)
                pending = []
            }
        }
        if !pending.isEmpty { Swift.print(String(decoding: pending, as: UTF8.self), terminator: "") }
        let seconds = monotonicSeconds() - t0
        Swift.print("")
        FileHandleStderr.print(format("%ld tokens in %.2f s: %.1f tokens/s", tokens, seconds, Double(tokens) / seconds))
    }
}

/// Status lines go to stderr so stdout holds only the generated text.
enum FileHandleStderr {
    static func print(_ s: String) {
        fputs(s + "\n", stderr)
    }
}
