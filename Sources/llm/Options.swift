// The option families that several `llm` commands share, one `ParsableArguments` group each, so a
// flag has one help text and one range check everywhere (a bad value is an error naming the flag).

import ArgumentParser
import LLM
import LLMCPU

// MARK: - Per-command defaults

/// A command's default `--model`; nil makes the flag required. The flag means the same in every
/// command, but `llm train`'s quick default run wants a smaller model than a benchmark.
protocol ModelDefault {
    static var model: String? { get }
}

/// A command's default `--batch` and `--seq-len`.
protocol ShapeDefaults {
    static var batch: Int { get }
    static var seqLen: Int { get }
}

/// For the commands that have no sensible default model (sample, eval).
enum RequiredModel: ModelDefault {
    static let model: String? = nil
}

// MARK: - Model

/// `--model`: a checkpoint file (read as it is) or a descriptor such as `d12` (a fresh GPT-2).
struct ModelOption<Default: ModelDefault>: ParsableArguments {
    @Option var value: String

    init() {
        let help = ArgumentHelp("A checkpoint file (llm.c v3 fp32 or v5 bf16) or a descriptor d2, d4, d6, d12, d24, d36, d48 (a fresh GPT-2 init).")
        // The one flag is either defaulted or required, as the command's `Default` says.
        _value = Default.model.map { Option(wrappedValue: $0, name: .customLong("model"), help: help) }
            ?? Option(name: .customLong("model"), help: help)
    }

    /// A missing file or an unknown descriptor fails before any work starts.
    func validate() throws {
        if fileExists(value) { return }
        if value.hasSuffix(".bin") || value.contains("/") { throw ValidationError("--model \(value): no such file") }
        do {
            _ = try GPT2Config.fromDescriptor(value)
        } catch let e as LLMError {
            throw ValidationError(e.message)
        }
    }

    /// The parameters from the checkpoint, or a GPT-2 init from `seed` for a descriptor.
    func load(seed: UInt64) throws -> (config: GPT2Config, parameters: [Float], source: String) {
        if fileExists(value) {
            let (config, precision, params) = try CheckpointFile.read(value)
            return (config, params, "\(value) (\(precision == .fp32 ? "fp32" : "bf16") checkpoint)")
        }
        let config = try GPT2Config.fromDescriptor(value)
        return (config, gpt2InitialParameters(config, seed: seed), "\(value), GPT-2 init with seed \(seed)")
    }
}

// MARK: - Batch shape

/// `--batch` and `--seq-len` of the commands that train on (B, T) batches.
struct ShapeOptions<Defaults: ShapeDefaults>: ParsableArguments {
    @Option(name: .customLong("batch"), help: "Micro-batch size B.")
    var batch: Int = Defaults.batch
    @Option(name: .customLong("seq-len"), help: "Sequence length T (at most the model's maximum).")
    var seqLen: Int = Defaults.seqLen

    func validate() throws {
        if batch <= 0 { throw ValidationError("--batch \(batch) must be > 0") }
        if seqLen <= 0 { throw ValidationError("--seq-len \(seqLen) must be > 0") }
    }

    /// The model's maximum is known only once it is loaded.
    func check(_ config: GPT2Config) throws {
        if seqLen > config.maxSeqLen {
            throw LLMError("--seq-len \(seqLen) is longer than the model's maximum \(config.maxSeqLen)")
        }
    }
}

// MARK: - Device, precision, threads

/// `--device` of the commands that run on whichever backend is found.
struct DeviceOption: ParsableArguments {
    @Option(name: .customLong("device"), help: "auto (CUDA when a driver and a GPU are found, else the CPU), cpu or cuda.")
    var value: DeviceChoice = .auto
}

/// `--precision` of a GPU model (the CPU is always fp32).
struct PrecisionOption: ParsableArguments {
    @Option(name: .customLong("precision"), help: "GPU precision: bf16 (llm.c's mixed precision) or fp32.")
    var value: PrecisionChoice = .bf16
}

/// `--threads` of the CPU backend's parallel loops.
struct ThreadsOption: ParsableArguments {
    @Option(name: .customLong("threads"), help: "CPU threads (default: all cores).")
    var value: Int?

    func validate() throws {
        if let value, value <= 0 { throw ValidationError("--threads \(value) must be > 0") }
    }

    /// Sets the thread count for everything the command runs on the CPU.
    func apply() {
        if let value { CPUThreads.count = value }
    }

    /// For the commands that hand a thread count to the tokenizer instead.
    var count: Int { value ?? CPUThreads.count }
}

// MARK: - Vocabulary

/// `--vocab`: the GPT-2 tokenizer's files, in any of the forms `Tokenizer.gpt2(path:)` reads.
struct VocabOption: ParsableArguments {
    @Option(name: .customLong("vocab"), help: "GPT-2 vocabulary: gpt2.tiktoken, encoder.json (vocab.bpe beside it) or an llm.c tokenizer .bin.")
    var value: String = "data/gpt2.tiktoken"

    func load() throws -> Tokenizer { try Tokenizer.gpt2(path: value) }
}

/// `--recompute`, shared by the commands that build a GPU model for training (llm.c's `-r`).
struct RecomputeOption: ParsableArguments {
    @Option(name: .customLong("recompute"), help: "GPU memory for speed: 0 keeps every activation (default; GPT-2 124M at B=64 T=1024 needs 22 GiB); 1 recomputes GELU in the backward (llm.c's default; -4.5 GiB there, ~2 % slower); 2 also the layernorms.")
    var value: Int = 0

    func validate() throws {
        if !(0 ... 2).contains(value) { throw ValidationError("--recompute \(value) must be 0, 1 or 2") }
    }
}
