// The `llm` commands' shared option groups: each command keeps its flags and defaults, and a value
// out of range is a parse error that names the flag. Only parsing runs here, no model.

import ArgumentParser
import Testing
@testable import llm

// MARK: - Helpers

/// The message `parse` fails with, or nil when it parses.
private func parseError<C: ParsableCommand>(_ command: C.Type, _ arguments: [String]) -> String? {
    do {
        _ = try command.parse(arguments)
        return nil
    } catch {
        return command.message(for: error)
    }
}

/// The `--flag` names in the OPTIONS section of a command's help, in order.
private func helpFlags<C: ParsableCommand>(_ command: C.Type) -> [String] {
    let lines = command.helpMessage(columns: 200).split(separator: "\n")
    return lines.drop { $0 != "OPTIONS:" }.compactMap { line in
        let trimmed = line.drop { $0 == " " }
        guard line.hasPrefix("  --"), let name = trimmed.split(separator: " ").first else { return nil }
        return String(name)
    }
}

// MARK: - Flags and defaults

// The flags each command listed before the options were grouped (`llm <command> --help`).
@Test func everyCommandKeepsItsFlags() {
    #expect(helpFlags(Train.self) == [
        "--train", "--val", "--model", "--text", "--vocab", "--batch", "--seq-len", "--total-batch", "--steps",
        "--lr", "--lr-schedule", "--warmup", "--final-lr-fraction", "--weight-decay", "--beta2", "--grad-clip",
        "--skip-loss-z", "--skip-norm-z", "--val-every", "--val-steps", "--sample-every", "--sample-tokens",
        "--hellaswag", "--hellaswag-limit", "--seed", "--threads", "--device", "--precision", "--recompute",
        "--output", "--checkpoint-every", "--keep", "--keep-every", "--checkpoint-precision", "--resume",
        "--overfit"])
    #expect(helpFlags(BenchTrain.self) == [
        "--model", "--batch", "--seq-len", "--total-batch", "--steps", "--warmup-steps", "--device",
        "--precision", "--recompute", "--threads", "--profile", "--timeline"])
    #expect(helpFlags(Sample.self) == [
        "--model", "--prompt", "--tokens", "--temperature", "--top-k", "--seed", "--vocab", "--device",
        "--precision", "--threads", "--no-cache"])
    #expect(helpFlags(EvalHellaSwag.self) == [
        "--model", "--file", "--batch", "--seq-len", "--limit", "--device", "--threads"])
    #expect(helpFlags(CompareDevicesCommand.self) == [
        "--model", "--batch", "--seq-len", "--steps", "--tokens", "--precision", "--tolerance", "--lr"])
    #expect(helpFlags(BenchTokenizer.self) == ["--vocab", "--runs", "--threads"])
    #expect(helpFlags(PrepareText.self) == [
        "--out", "--name", "--shard-size", "--val-tokens", "--split", "--vocab", "--lossy", "--threads", "--quiet"])
    #expect(helpFlags(BenchMatmul.self) == ["--threads", "--bt", "--repeats", "--warmup", "--only"])
}

@Test func eachCommandKeepsItsDefaults() throws {
    let train = try Train.parse([])
    #expect(train.model.value == "d2" && train.shape.batch == 8 && train.shape.seqLen == 64)
    #expect(train.device.value == .auto && train.precision.value == .bf16 && train.threads.value == nil)
    let bench = try BenchTrain.parse([])
    #expect(bench.model.value == "d12" && bench.shape.batch == 4 && bench.shape.seqLen == 64)
    #expect(bench.device.value == .auto && bench.precision.value == .bf16)
    let compare = try CompareDevicesCommand.parse([])
    #expect(compare.model.value == "d12" && compare.shape.batch == 4 && compare.shape.seqLen == 64)
    #expect(compare.precision.value == .bf16)
    let sample = try Sample.parse(["--model", "d6", "--threads", "3", "--device", "cpu", "--precision", "fp32"])
    #expect(sample.model.value == "d6" && sample.threads.value == 3)
    #expect(sample.device.value == .cpu && sample.precision.value == .fp32)
    let eval = try EvalHellaSwag.parse(["--model", "d2"])
    let vocabularies = [train.vocab.value, sample.vocab.value, try BenchTokenizer.parse([]).vocab.value,
                        try PrepareText.parse(["in.txt"]).common.vocab.value]
    #expect(vocabularies == Array(repeating: "data/gpt2.tiktoken", count: 4))
    #expect(eval.shapeDefaultsUnchanged)
}

@Test func sampleAndEvalNeedAModel() {
    #expect(parseError(Sample.self, [])?.contains("--model") == true)
    #expect(parseError(EvalHellaSwag.self, [])?.contains("--model") == true)
}

// MARK: - Range checks

@Test func outOfRangeValuesNameTheirFlag() {
    // The same error from every command that has the flag ("sample" and "eval" need a --model).
    let train = Train.self, bench = BenchTrain.self, compare = CompareDevicesCommand.self
    let cases: [([String], String, [any ParsableCommand.Type])] = [
        (["--batch", "0"], "--batch 0 must be > 0", [train, bench, compare]),
        (["--seq-len=-1"], "--seq-len -1 must be > 0", [train, bench, compare]),
        (["--model", "d5"], "--model d5: not a checkpoint file or a known descriptor", [train, bench, compare]),
        (["--model", "no/such.bin"], "--model no/such.bin: no such file", [train, bench, compare]),
        (["--threads=-2"], "--threads -2 must be > 0", [train, bench, BenchMatmul.self]),
        (["--device", "foo"], "The value 'foo' is invalid for '--device <device>'", [train, bench]),
        (["--precision", "fp8"], "The value 'fp8' is invalid for '--precision <precision>'", [train, bench, compare]),
    ]
    for (arguments, message, commands) in cases {
        for command in commands {
            #expect(parseError(command, arguments)?.hasPrefix(message) == true, "\(command) \(arguments)")
        }
        if arguments[0] != "--batch" && arguments[0] != "--seq-len=-1" {
            for command in [Sample.self, EvalHellaSwag.self] as [any ParsableCommand.Type]
            where !(command == EvalHellaSwag.self && arguments[0] == "--precision") {
                #expect(parseError(command, ["--model", "d2"] + arguments)?.hasPrefix(message) == true,
                        "\(command) \(arguments)")
            }
        }
    }
    #expect(parseError(train, ["--threads", "0"]) == "--threads 0 must be > 0")
    #expect(parseError(BenchTokenizer.self, ["--threads", "0"]) == "--threads 0 must be > 0")
    #expect(parseError(PrepareText.self, ["in.txt", "--threads", "0"]) == "--threads 0 must be > 0")
    #expect(parseError(train, ["--recompute", "3"]) == "--recompute 3 must be 0, 1 or 2")
}

@Test func goodValuesParse() {
    #expect(parseError(Train.self, ["--model", "d12", "--batch", "64", "--seq-len", "1024", "--threads", "1"]) == nil)
    #expect(parseError(BenchTrain.self, ["--model", "gpt2:d24", "--device", "cuda", "--precision", "fp32"]) == nil)
    // A checkpoint file is a model too (compare-devices took only descriptors before).
    #expect(parseError(CompareDevicesCommand.self, ["--model", fixture("tiny.bin")]) == nil)
}

private func fixture(_ name: String) -> String {
    var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(2)  // llmTests/OptionTests.swift
    return parts.joined(separator: "/") + "/Fixtures/" + name
}

private extension EvalHellaSwag {
    /// Eval's --batch and --seq-len mean rows of 4 and a cut-off length, so they stay its own.
    var shapeDefaultsUnchanged: Bool { batch == 16 && seqLen == 256 && device.value == .auto }
}
