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
    let start = monotonicTime()
    let writer = ShardWriter(options: options)
    var summary = PrepareSummary()
    var progress = ProgressLine(enabled: options.showProgress, start: start)
    for path in inputs {
        let raw = try readFileBytes(path)
        if raw.isEmpty { throw LLMError("\(path): empty input") }
        let bytes = try checkedUTF8(raw, source: path, lossy: options.lossy)
        let batches = try documentBatches(bytes, path: path, split: options.split)
        for batch in batches {
            let ids = encodeDocuments(batch, tokenizer: tokenizer, threads: options.threads)
            for doc in ids {
                try writer.append(doc, source: path)
            }
            summary.documents += batch.ranges.count
            summary.inputBytes += batch.textBytes
            progress.update(bytes: summary.inputBytes, tokens: writer.totalTokens, files: writer.files.count)
        }
    }
    try writer.finish()
    progress.finish(bytes: summary.inputBytes, tokens: writer.totalTokens, files: writer.files.count)
    summary.valTokens = writer.valCount
    summary.trainTokens = writer.totalTokens - writer.valCount
    summary.files = writer.files
    summary.seconds = monotonicTime() - start
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

/// The tokens `prepareShards` would write for one text file, kept in memory: [EOT] + ids per
/// document. The default `llm train` run uses this to train on bundled text with no files.
public func tokenizeDocuments(path: String, tokenizer: Tokenizer, split: DocumentSplit,
                              threads: Int = 1) throws -> [UInt16] {
    let raw = try readFileBytes(path)
    if raw.isEmpty { throw LLMError("\(path): empty input") }
    let bytes = try checkedUTF8(raw, source: path, lossy: false)
    var tokens: [UInt16] = []
    for batch in try documentBatches(bytes, path: path, split: split) {
        for doc in encodeDocuments(batch, tokenizer: tokenizer, threads: threads) {
            for id in doc {
                guard id >= 0 && id < 65536 else { throw LLMError("\(path): token id \(id) does not fit uint16") }
                tokens.append(UInt16(id))
            }
        }
    }
    return tokens
}

// MARK: - Documents

/// Documents as byte ranges of one text buffer, at most about 16 MB of text per batch.
struct DocumentBatch {
    var text: [UInt8]
    var ranges: [Range<Int>]
    var textBytes: Int
}

let batchBytes = 16 << 20

func documentBatches(_ bytes: [UInt8], path: String, split: DocumentSplit) throws -> [DocumentBatch] {
    if path.hasSuffix(".jsonl") { return try jsonLinesBatches(bytes, path: path) }
    var ranges: [Range<Int>] = []
    let n = bytes.count
    switch split {
    case .file:
        ranges = [0..<n]
    case .blankLine:
        // Non-overlapping "\n\n" from the left, as Python's str.replace finds them; a text ending in
        // "\n\n" ends with an empty document (a lone EOT), as in llm.c.
        var start = 0, i = 0
        while i + 1 < n {
            if bytes[i] == 0x0A && bytes[i + 1] == 0x0A {
                ranges.append(start..<(i + 2))
                i += 2
                start = i
            } else {
                i += 1
            }
        }
        ranges.append(start..<n)
    case .endOfText:
        let marker = Array(Tokenizer.endOfTextText.utf8)
        var start = 0, i = 0
        while i + marker.count <= n {
            if bytes[i] == marker[0] && bytes[i..<(i + marker.count)].elementsEqual(marker) {
                if i > start { ranges.append(start..<i) }
                i += marker.count
                start = i
            } else {
                i += 1
            }
        }
        if n > start { ranges.append(start..<n) }
    }
    // Group whole documents into batches; ranges stay relative to the one shared buffer.
    var batches: [DocumentBatch] = []
    var current: [Range<Int>] = [], currentBytes = 0
    for r in ranges {
        current.append(r)
        currentBytes += r.count
        if currentBytes >= batchBytes {
            batches.append(DocumentBatch(text: bytes, ranges: current, textBytes: currentBytes))
            current = []; currentBytes = 0
        }
    }
    if !current.isEmpty || batches.isEmpty {
        batches.append(DocumentBatch(text: bytes, ranges: current, textBytes: currentBytes))
    }
    return batches
}

/// One document per non-blank line: the "text" string of a JSON object.
func jsonLinesBatches(_ bytes: [UInt8], path: String) throws -> [DocumentBatch] {
    var batches: [DocumentBatch] = []
    var text: [UInt8] = [], ranges: [Range<Int>] = []
    var line = 0, start = 0
    let n = bytes.count
    while start < n {
        line += 1
        var end = start
        while end < n && bytes[end] != 0x0A { end += 1 }
        defer { start = end + 1 }
        let isBlank = bytes[start..<end].allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }
        if isBlank { continue }
        let value: JSONValue
        do {
            value = try bytes[start..<end].withUnsafeBytes { try JSONValue.parse(bytes: $0) }
        } catch let e as LLMError {
            throw LLMError("\(path):\(line): \(e.message)")
        }
        guard let doc = value["text"]?.stringValue else {
            throw LLMError("\(path):\(line): expected a JSON object with a \"text\" string")
        }
        let from = text.count
        text += doc.utf8
        ranges.append(from..<text.count)
        if text.count >= batchBytes {
            batches.append(DocumentBatch(text: text, ranges: ranges, textBytes: text.count))
            text = []; ranges = []
        }
    }
    if ranges.isEmpty && batches.isEmpty { throw LLMError("\(path): no documents (only blank lines)") }
    if !ranges.isEmpty { batches.append(DocumentBatch(text: text, ranges: ranges, textBytes: text.count)) }
    return batches
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
            let encoder = tokenizer.makeEncoder()
            for (i, r) in batch.ranges.enumerated() {
                let ids = threads > 1 ? tokenizer.encodeParallel(utf8: slice(r), threads: threads)
                                      : encoder.encode(utf8: slice(r))
                results[i] = [tokenizer.eotToken] + ids
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
                let encoder = tokenizer.makeEncoder()
                for i in bounds[g]..<bounds[g + 1] {
                    out[i] = [tokenizer.eotToken] + encoder.encode(utf8: slice(batch.ranges[i]))
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

func monotonicTime() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

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
        let now = monotonicTime()
        if now - last < 0.25 { return }
        last = now
        show(bytes: bytes, tokens: tokens, files: files, end: "")
    }

    func finish(bytes: Int, tokens: Int, files: Int) {
        if enabled { show(bytes: bytes, tokens: tokens, files: files, end: "\n") }
    }

    func show(bytes: Int, tokens: Int, files: Int, end: String) {
        let seconds = max(monotonicTime() - start, 1e-9)
        let mb = Double(bytes) / 1e6
        let line = "\rprepare: \(fixed(mb, 1)) MB, \(tokens) tokens, \(fixed(mb / seconds, 1)) MB/s, \(files) files written" + end
        fputs(line, stderr)
        fflush(stderr)
    }
}

/// Fixed-point text of x without Foundation.
func fixed(_ x: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let v = (abs(x) * scale).rounded()
    let whole = (v / scale).rounded(.down)
    var frac = String(Int(v - whole * scale))
    while frac.count < digits { frac = "0" + frac }
    return (x < 0 ? "-" : "") + String(Int(whole)) + (digits > 0 ? "." + frac : "")
}
