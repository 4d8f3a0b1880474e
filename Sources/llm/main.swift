// The `llm` command line: train, sample, check, prepare, eval, bench, plot.

import ArgumentParser
import LLM
#if canImport(Glibc)
import Glibc
#endif

struct LLMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llm",
        abstract: "Train GPT-2 from scratch in Swift, on the CPU or an NVIDIA GPU; llm.c-compatible files.",
        subcommands: [Train.self, Sample.self, Eval.self, CheckCommand.self, Prepare.self, PlotCommand.self, Bench.self,
                      KernelsCommand.self, CUDASelfTestCommand.self, CompareDevicesCommand.self])
}

/// `llm bench ...`: benchmarks print figures; tests never time anything.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks: training steps, matrix multiplies, the tokenizer.",
        subcommands: [BenchTrain.self, BenchMatmul.self, BenchTokenizer.self])
}

/// Runs a command's work; an LLMError becomes one line on stderr ("error: FILE: what is wrong")
/// and exit status 1.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as LLMError {
        fputs("error: \(e.message)\n", stderr)
        throw ExitCode.failure
    }
}

LLMCommand.main()
