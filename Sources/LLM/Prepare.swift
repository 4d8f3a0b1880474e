// Data preparation: text files or JSON Lines documents -> llm.c token shards (magic 20240520,
// uint16), EOT before every document, a validation split, fixed-size shards, atomic writes.

import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Options

/// How a text file is cut into documents (JSON Lines files always hold one document per line).
public enum DocumentSplit: String, CaseIterable, Sendable {
    /// The whole file is one document.
    case file
    /// A document ends after each "\n\n" (kept), as llm.c's tinyshakespeare.py does.
    case blankLine = "blank-line"
    /// Documents are separated by the literal text "<|endoftext|>" (dropped); empty ones are skipped.
    case endOfText = "eot"
}

public struct PrepareOptions: Sendable {
    /// Output files are `<directory>/<name>_val_000000.bin`, `<name>_train_000001.bin`, ...
    public var outputDirectory: String
    public var name: String
    /// Tokens per shard (llm.c's fineweb.py uses 10^8).
    public var shardSize: Int = 100_000_000
    /// The first `valTokens` tokens form the validation shard; nil = one shard, as llm.c does. If the
    /// whole input fits in that, 10% of it (at least one token) is val and the rest train.
    public var valTokens: Int? = nil
    /// Write `<name>_val.bin` and `<name>_train.bin` (one file each), like llm.c's tinyshakespeare.py.
    public var singleFiles = false
    public var split: DocumentSplit = .file
    /// Replace invalid UTF-8 by U+FFFD instead of stopping with an error.
    public var lossy = false
    public var threads = 1
    /// Print a progress line (carriage return, stderr) while working.
    public var showProgress = true
    /// Input is read in blocks of this many bytes, cut at document (or safe line) ends, so memory
    /// stays bounded for inputs of any size.
    public var readBlockBytes = 32 << 20

    public init(outputDirectory: String, name: String) {
        self.outputDirectory = outputDirectory
        self.name = name
    }
}

public struct PrepareSummary: Sendable {
    public var documents = 0
    public var inputBytes = 0
    public var valTokens = 0
    public var trainTokens = 0
    public var files: [String] = []
    public var seconds = 0.0
}

// MARK: - Pipeline

/// Tokenizes `inputs` (text files, or `.jsonl` files with a "text" field) into shards.
public func prepareShards(inputs: [String], tokenizer: Tokenizer, options: PrepareOptions) throws -> PrepareSummary {
    if inputs.isEmpty { throw LLMError("prepare: no input files") }
    if tokenizer.vocabSize > 65536 {
        throw LLMError("prepare: the vocabulary has \(tokenizer.vocabSize) ids, which do not fit llm.c's uint16 shards")
    }
    let start = ProgressLine.now()
    let writer = ShardWriter(options: options)
    var summary = PrepareSummary()
    var progress = ProgressLine(enabled: options.showProgress, start: start)
    for path in inputs {
        guard let size = fileSize(path) else { throw LLMError("\(path): cannot open (no such file)") }
        if size == 0 { throw LLMError("\(path): empty input") }
        let stream = try DocumentStream(path: path, split: options.split, lossy: options.lossy,
                                        blockBytes: options.readBlockBytes)
        var documentsInFile = 0
        while let batch = try stream.next() {
            let ids = encodeDocuments(batch, tokenizer: tokenizer, threads: options.threads)
            for doc in ids {
                try writer.append(doc, source: path)
            }
            let newDocuments = batch.ranges.count - (batch.continuesDocument ? 1 : 0)
            documentsInFile += newDocuments
            summary.documents += newDocuments
            summary.inputBytes += batch.textBytes
            progress.update(bytes: summary.inputBytes, tokens: writer.totalTokens, files: writer.files.count)
        }
        if documentsInFile == 0 { throw LLMError("\(path): no documents") }
    }
    try writer.finish()
    progress.finish(bytes: summary.inputBytes, tokens: writer.totalTokens, files: writer.files.count)
    summary.valTokens = writer.valCount
    summary.trainTokens = writer.totalTokens - writer.valCount
    summary.files = writer.files
    summary.seconds = ProgressLine.now() - start
    return summary
}

/// llm.c's `dev/data/tinyshakespeare.py`, exactly: EOT before the text and after every "\n\n",
/// the first 32,768 tokens to `tiny_shakespeare_val.bin`, the rest to `tiny_shakespeare_train.bin`.
public func prepareTinyShakespeare(input: String, outputDirectory: String, tokenizer: Tokenizer,
                                   threads: Int = 1, showProgress: Bool = true) throws -> PrepareSummary {
    var options = PrepareOptions(outputDirectory: outputDirectory, name: "tiny_shakespeare")
    options.split = .blankLine
    options.valTokens = 32768
    options.shardSize = Int(Int32.max) - 1
    options.singleFiles = true
    options.threads = threads
    options.showProgress = showProgress
    return try prepareShards(inputs: [input], tokenizer: tokenizer, options: options)
}

/// The same tokens as `prepareTinyShakespeare`, in memory, for a training run that starts from
/// the bundled text: (val = the first 32,768 tokens, train = the rest).
public func tinyShakespeareTokens(_ bytes: [UInt8], source: String, tokenizer: Tokenizer,
                                  threads: Int = 1) throws -> (val: [UInt16], train: [UInt16]) {
    if bytes.isEmpty { throw LLMError("\(source): empty input") }
    let text = try checkedUTF8(bytes, source: source, lossy: false)
    var all: [UInt16] = []
    let batch = DocumentBatch(text: text, ranges: splitDocuments(text, .blankLine, final: true).ranges, textBytes: text.count)
    for doc in encodeDocuments(batch, tokenizer: tokenizer, threads: threads) {
        all += doc.map { UInt16(truncatingIfNeeded: $0) }
    }
    let valCount = 32768
    if all.count <= valCount { throw LLMError("\(source): \(all.count) tokens, fewer than the 32,768 val tokens plus one") }
    return (Array(all[..<valCount]), Array(all[valCount...]))
}

/// [EOT] + ids for each document, in order. Small documents are spread over threads; a large one
/// is cut at safe line ends (`encodeParallel`), so the ids never depend on the thread count.
func encodeDocuments(_ batch: DocumentBatch, tokenizer: Tokenizer, threads: Int) -> [[Int32]] {
    let count = batch.ranges.count
    var results = [[Int32]](repeating: [], count: count)
    batch.text.withUnsafeBufferPointer { all in
        let base = all.baseAddress
        func slice(_ r: Range<Int>) -> UnsafeBufferPointer<UInt8> {
            UnsafeBufferPointer(start: base.map { $0 + r.lowerBound }, count: r.count)
        }
        if threads <= 1 || count == 1 {
            let encoder = tokenizer.makeEncoder(expectedBytes: batch.textBytes)
            for (i, r) in batch.ranges.enumerated() {
                let ids = threads > 1 ? tokenizer.encodeParallel(utf8: slice(r), threads: threads)
                                      : encoder.encodeValid(utf8: slice(r))
                results[i] = (i == 0 && batch.continuesDocument) ? ids : [tokenizer.eotToken] + ids
            }
            return
        }
        // Contiguous groups of about equal bytes, one per thread.
        let total = max(1, batch.ranges.reduce(0) { $0 + $1.count })
        var bounds = [0]
        var acc = 0
        for (i, r) in batch.ranges.enumerated() {
            acc += r.count
            if acc * threads >= total * bounds.count && i + 1 < count { bounds.append(i + 1) }
        }
        bounds.append(count)
        results.withUnsafeMutableBufferPointer { out in
            let out = out
            DispatchQueue.concurrentPerform(iterations: bounds.count - 1) { g in
                let encoder = tokenizer.makeEncoder(expectedBytes: batch.textBytes / (bounds.count - 1))
                for i in bounds[g]..<bounds[g + 1] {
                    let ids = encoder.encodeValid(utf8: slice(batch.ranges[i]))
                    out[i] = (i == 0 && batch.continuesDocument) ? ids : [tokenizer.eotToken] + ids
                }
            }
        }
    }
    return results
}

// MARK: - Shards

/// Streams tokens into the val shard, then train shards of `shardSize`. The val shard stays in
/// memory until a train token arrives, so an input smaller than it can still be split 10/90.
final class ShardWriter {
    let options: PrepareOptions
    let valTarget: Int
    var val: [UInt16] = []
    var valWritten = false
    var train: [UInt16] = []
    var trainIndex = 1
    var totalTokens = 0
    var files: [String] = []

    init(options: PrepareOptions) {
        self.options = options
        valTarget = options.valTokens ?? options.shardSize
    }

    var valCount: Int { val.count }

    func path(_ split: String, _ index: Int) -> String {
        if options.singleFiles { return "\(options.outputDirectory)/\(options.name)_\(split).bin" }
        var digits = String(index)
        while digits.count < 6 { digits = "0" + digits }
        return "\(options.outputDirectory)/\(options.name)_\(split)_\(digits).bin"
    }

    func append(_ ids: [Int32], source: String) throws {
        for (position, id) in ids.enumerated() {
            guard id >= 0 && id < 65536 else {
                throw LLMError("\(source): token id \(id) (token \(totalTokens + position)) does not fit llm.c's uint16 shards")
            }
        }
        var i = 0
        while i < ids.count {
            if val.count < valTarget && train.isEmpty && !valWritten {
                let take = min(ids.count - i, valTarget - val.count)
                for k in i..<(i + take) { val.append(UInt16(ids[k])) }
                i += take
                continue
            }
            if !valWritten { try writeVal() }
            let take = min(ids.count - i, options.shardSize - train.count)
            for k in i..<(i + take) { train.append(UInt16(ids[k])) }
            i += take
            if train.count == options.shardSize {
                if options.singleFiles && i < ids.count {
                    throw LLMError("\(options.name): train tokens exceed one file of \(options.shardSize)")
                }
                try flushTrain()
            }
        }
        totalTokens += ids.count
    }

    func writeVal() throws {
        let p = path("val", 0)
        try TokenShard.write(p, tokens: val)
        files.append(p)
        valWritten = true
    }

    func flushTrain() throws {
        let p = path("train", trainIndex)
        try TokenShard.write(p, tokens: train)
        files.append(p)
        trainIndex += 1
        train.removeAll(keepingCapacity: true)
    }

    func finish() throws {
        if !valWritten {
            // Everything fit in the val shard: keep 10% for val so there is something to train on.
            if val.count < 2 { throw LLMError("\(options.name): only \(val.count) token(s), too few to split into val and train") }
            let all = val
            let valCount = options.valTokens.map { min($0, all.count - 1) } ?? max(1, all.count / 10)
            val = Array(all[..<valCount])
            try writeVal()
            train = Array(all[valCount...])
        }
        if !train.isEmpty { try flushTrain() }
    }
}

// MARK: - Progress

/// "\r12.3 MB, 3,101,234 tokens, 45.6 MB/s, 2 files" on stderr, at most four times a second.
struct ProgressLine {
    let enabled: Bool
    let start: Double
    var last = 0.0

    init(enabled: Bool, start: Double) {
        self.enabled = enabled
        self.start = start
    }

    mutating func update(bytes: Int, tokens: Int, files: Int) {
        guard enabled else { return }
        let now = ProgressLine.now()
        if now - last < 0.25 { return }
        last = now
        show(bytes: bytes, tokens: tokens, files: files, end: "")
    }

    func finish(bytes: Int, tokens: Int, files: Int) {
        if enabled { show(bytes: bytes, tokens: tokens, files: files, end: "\n") }
    }

    func show(bytes: Int, tokens: Int, files: Int, end: String) {
        let seconds = max(ProgressLine.now() - start, 1e-9)
        let mb = Double(bytes) / 1e6
        let line = "\rprepare: \(ProgressLine.fixed(mb, 1)) MB, \(tokens) tokens, "
            + "\(ProgressLine.fixed(mb / seconds, 1)) MB/s, \(files) files written" + end
        fputs(line, stderr)
        fflush(stderr)
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Fixed-point text of x without Foundation.
    static func fixed(_ x: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let v = (abs(x) * scale).rounded()
        let whole = (v / scale).rounded(.down)
        var frac = String(Int(v - whole * scale))
        while frac.count < digits { frac = "0" + frac }
        return (x < 0 ? "-" : "") + String(Int(whole)) + (digits > 0 ? "." + frac : "")
    }
}
