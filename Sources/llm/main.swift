// The `llm` command line: train, sample, check, prepare, bench.

import ArgumentParser
import LLM

struct LLMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llm",
        abstract: "Train GPT-2 from scratch in Swift, on the CPU or an NVIDIA GPU; llm.c-compatible files.",
        subcommands: [KernelsCommand.self, CUDASelfTestCommand.self])
}

LLMCommand.main()
