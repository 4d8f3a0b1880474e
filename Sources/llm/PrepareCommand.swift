// `llm prepare`: text or JSON Lines -> llm.c token shards, and the named recipes
// `tinyshakespeare` (llm.c's tiny_shakespeare_{val,train}.bin) and `hellaswag` (eval file).

import ArgumentParser
import LLM
#if canImport(Glibc)
import Glibc
#endif

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Tokenize text into llm.c token shards (uint16, EOT before every document).",
        subcommands: [PrepareText.self, PrepareTinyShakespeare.self, PrepareHellaSwag.self],
        defaultSubcommand: PrepareText.self)
}

struct CommonPrepareOptions: ParsableArguments {
    @OptionGroup var vocab: VocabOption

    @Flag(help: "Replace invalid UTF-8 with U+FFFD instead of stopping with an error.")
    var lossy = false

    @OptionGroup var threads: ThreadsOption

    @Flag(help: "No progress line.")
    var quiet = false
}

// MARK: - Helpers

extension Prepare {
    /// Creates `path` and its parents; errors name the folder.
    static func makeDirectories(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw LLMError("\(current): cannot create folder (\(String(cString: strerror(errno))))")
            }
        }
    }

    static func printSummary(_ s: PrepareSummary) {
        let rate = Double(s.inputBytes) / 1e6 / max(s.seconds, 1e-9)
        print("\(s.documents) documents, \(s.inputBytes) bytes -> val \(s.valTokens) + train \(s.trainTokens) tokens "
              + "in \(BenchTokenizer.formatFixed(s.seconds, 2)) s (\(BenchTokenizer.formatFixed(rate, 1)) MB/s)")
        for f in s.files { print("  wrote \(f)") }
    }
}

struct PrepareText: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "text",
        abstract: "Text files (or .jsonl with a \"text\" field per line) into <name>_val_000000.bin, <name>_train_000001.bin, ...")

    @Argument(help: "Input files: text, or .jsonl (one JSON object with a \"text\" string per line).")
    var inputs: [String]

    @Option(help: "Output folder.")
    var out: String = "out/data"

    @Option(help: "Shard name prefix (default: the first input's name without extension).")
    var name: String?

    @Option(help: "Tokens per shard.")
    var shardSize: Int = 100_000_000

    @Option(help: "Tokens in the val shard (default: one shard; 10% when the input is smaller than that).")
    var valTokens: Int?

    @Option(help: "How a text file is cut into documents: file, blank-line (after each \"\\n\\n\") or eot (\"<|endoftext|>\" separators).")
    var split: String = "file"

    @OptionGroup var common: CommonPrepareOptions

    func run() throws {
        guard let mode = DocumentSplit(rawValue: split) else {
            throw LLMError("--split: '\(split)' is not one of file, blank-line, eot")
        }
        if shardSize < 1 || shardSize >= Int(Int32.max) { throw LLMError("--shard-size: \(shardSize) must be in 1..<2^31") }
        let tokenizer = try common.vocab.load()
        let base = inputs[0].split(separator: "/").last.map(String.init) ?? "data"
        let stem = base.split(separator: ".").first.map(String.init) ?? base
        var options = PrepareOptions(outputDirectory: out, name: name ?? stem)
        options.shardSize = shardSize
        options.valTokens = valTokens
        options.split = mode
        options.lossy = common.lossy
        options.threads = common.threads.count
        options.showProgress = !common.quiet
        try Prepare.makeDirectories(out)
        Prepare.printSummary(try prepareShards(inputs: inputs, tokenizer: tokenizer, options: options))
    }
}

struct PrepareTinyShakespeare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tinyshakespeare",
        abstract: "llm.c's tiny_shakespeare_val.bin (32,768 tokens) and tiny_shakespeare_train.bin, byte for byte.")

    @Option(help: "The Tiny Shakespeare text.")
    var input: String = "data/tinyshakespeare.txt"

    @Option(help: "Output folder.")
    var out: String = "out/tinyshakespeare"

    @OptionGroup var common: CommonPrepareOptions

    func run() throws {
        let tokenizer = try common.vocab.load()
        try Prepare.makeDirectories(out)
        Prepare.printSummary(try prepareTinyShakespeare(input: input, outputDirectory: out, tokenizer: tokenizer,
                                                threads: common.threads.count, showProgress: !common.quiet))
    }
}

struct PrepareHellaSwag: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hellaswag",
        abstract: "HellaSwag validation into llm.c's eval file (original .jsonl, or the 6-lines-per-task text variant).")

    @Option(help: "hellaswag_val.jsonl (original release) or the text variant (context, label, 4 endings per task).")
    var input: String = "../shared/data/hellaswag_val_full.txt"

    @Option(help: "Output eval file.")
    var out: String = "out/hellaswag/hellaswag_val.bin"

    @OptionGroup var common: CommonPrepareOptions

    func run() throws {
        let tokenizer = try common.vocab.load()
        if let slash = out.lastIndex(of: "/") { try Prepare.makeDirectories(String(out[..<slash])) }
        let t0 = monotonicSeconds()
        let n = try prepareHellaSwag(input: input, output: out, tokenizer: tokenizer, lossy: common.lossy)
        print("\(n) examples from \(input) -> \(out) in \(BenchTokenizer.formatFixed(monotonicSeconds() - t0, 2)) s")
    }
}
