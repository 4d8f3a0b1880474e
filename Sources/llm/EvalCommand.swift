// `llm eval hellaswag`: multiple-choice accuracy of a model on llm.c's eval file.

import ArgumentParser
import LLM
import LLMCPU
#if canImport(Glibc)
import Glibc
#endif

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a model.", subcommands: [EvalHellaSwag.self])
}

struct EvalHellaSwag: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hellaswag",
        abstract: "HellaSwag accuracy (llm.c's acc_norm: the completion with the lowest mean token loss wins).",
        discussion: "Make the eval file once with `llm prepare hellaswag`. A descriptor's random weights score about 25 %.")

    @OptionGroup var model: ModelOption<RequiredModel>
    @Option(help: "llm.c eval file (magic 20240522).")
    var file: String = "out/hellaswag/hellaswag_val.bin"
    @Option(help: "Rows per forward pass: 4 per example (a multiple of 4).")
    var batch: Int = 16
    @Option(name: .customLong("seq-len"), help: "Sequence length; examples longer than this are skipped and counted.")
    var seqLen: Int = 256
    @Option(help: "Evaluate only the first N examples (0 = all).")
    var limit: Int = 0
    @OptionGroup var device: DeviceOption
    @OptionGroup var threads: ThreadsOption

    func validate() throws {
        if batch < 4 || batch % 4 != 0 { throw ValidationError("--batch \(batch) must be a positive multiple of 4") }
        if seqLen <= 1 { throw ValidationError("--seq-len \(seqLen) must be > 1") }
        if limit < 0 { throw ValidationError("--limit \(limit) must be >= 0") }
    }

    func run() throws {
        try reportingErrors(evaluate)
    }

    func evaluate() throws {
        threads.apply()
        let (config, parameters, source) = try model.load(seed: 42)
        var examples = try EvalFile.read(file, vocabSize: config.vocabSize)
        if limit > 0 { examples = Array(examples.prefix(limit)) }
        let T = min(seqLen, config.maxSeqLen)
        let backend = try makeBackend(device.value, config: config, parameters: parameters, B: batch, T: T, precision: .bf16,
                                      log: { print($0) })
        print("model: \(source) on \(backend.deviceDescription); \(examples.count) examples from \(file), B=\(batch) T=\(T)")
        let t0 = monotonicSeconds()
        var lastPrint = 0.0
        let result = try evaluateMultipleChoice(examples, model: backend, B: batch, T: T) { done, total in
            let now = monotonicSeconds()
            if now - lastPrint > 1 || done == total {
                lastPrint = now
                fputs("\r" + progressLine(label: "hellaswag", done: done, total: total, elapsedSeconds: now - t0), stderr)
            }
        }
        fputs("\n", stderr)
        print(format("hellaswag: %ld/%ld correct = %.4f", result.correct, result.total, result.accuracy)
              + (result.skipped > 0 ? format(" (%ld examples longer than T = %ld skipped)", result.skipped, T) : ""))
    }
}
