// The GPT-2 byte-level BPE tokenizer: loading (gpt2.tiktoken, encoder.json + vocab.bpe, llm.c's
// tokenizer file), encoding with GPT-2's pre-tokenization pattern, and decoding ids to bytes.
//
// Public API:
//   let tok = try Tokenizer.gpt2(path: "data/gpt2.tiktoken")   // or encoder.json, or an llm.c .bin
//   tok.encode("Hello world")                  -> [15496, 995] as [Int32]; "<|endoftext|>" is plain text
//   tok.encode(text, allowSpecial: true)       -> "<|endoftext|>" becomes tok.eotToken (50256)
//   tok.encodeWithSpecial(text)                -> the same as allowSpecial: true
//   try tok.encode(bytes: fileBytes, source: path, lossy: false)  -> validates UTF-8, errors name file:line
//   tok.encodeParallel(utf8: buffer, threads: 8) -> the same ids as one thread, split at safe line ends
//   try tok.decode(ids) -> [UInt8];  tok.decodeString(ids) -> String (invalid UTF-8 becomes U+FFFD)
//   tok.vocabSize (50257), tok.eotToken (50256), tok.tokenBytes(id)
//   try tok.writeLLMCFile(path) / Tokenizer.readLLMCFile(path)   (TokenizerFile.swift)
//   tok.makeEncoder() -> a TokenEncoder with its own word cache, for one thread's bulk work.

import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public final class Tokenizer: @unchecked Sendable {
    /// Number of ids, the special token included (50,257 for GPT-2).
    public let vocabSize: Int
    /// `<|endoftext|>`, the one special token (50,256 for GPT-2).
    public let eotToken: Int32
    public static let endOfTextText = "<|endoftext|>"

    /// Bytes of every id (the special token's text included): tokenData[tokenOffsets[i]..<tokenOffsets[i+1]].
    let tokenOffsets: [Int]  // (vocabSize + 1,)
    let tokenData: [UInt8]
    /// Mergeable tokens' bytes -> rank (= id). The rank is also the merge priority.
    let ranks: ByteKeyTable
    let classes = CharacterClassTable.shared

    // MARK: - Construction

    /// `tokens[id]` holds the bytes of each id; `eotToken` names the special one, which is never
    /// produced by merges. Errors (duplicate or empty tokens, missing single bytes) name `source`.
    public init(tokens: [[UInt8]], eotToken: Int, source: String) throws {
        if tokens.isEmpty { throw LLMError("\(source): empty vocabulary") }
        if eotToken < 0 || eotToken >= tokens.count {
            throw LLMError("\(source): end-of-text id \(eotToken) is outside the vocabulary (size \(tokens.count))")
        }
        vocabSize = tokens.count
        self.eotToken = Int32(eotToken)
        var offsets = [Int](repeating: 0, count: tokens.count + 1)
        var data: [UInt8] = []
        data.reserveCapacity(tokens.count * 8)
        for (i, t) in tokens.enumerated() {
            data += t
            offsets[i + 1] = data.count
        }
        tokenOffsets = offsets
        tokenData = data
        var bits = 4
        while (1 << bits) < 2 * tokens.count + 2 { bits += 1 }
        var table = ByteKeyTable(capacityPowerOfTwo: bits + 1)
        var seenSingleBytes = [Bool](repeating: false, count: 256)
        for (id, t) in tokens.enumerated() where id != eotToken {
            if t.isEmpty {
                table.deallocate()
                throw LLMError("\(source): token \(id) is empty")
            }
            let duplicate = t.withUnsafeBufferPointer { b -> Bool in
                if table.find(b.baseAddress!, b.count) >= 0 { return true }
                table.insert(b.baseAddress!, b.count, Int32(id))
                return false
            }
            if duplicate {
                table.deallocate()
                throw LLMError("\(source): token \(id) repeats the bytes of an earlier token")
            }
            if t.count == 1 { seenSingleBytes[Int(t[0])] = true }
        }
        if let missing = seenSingleBytes.firstIndex(of: false) {
            table.deallocate()
            throw LLMError("\(source): no token for the single byte \(missing), so some text cannot be encoded")
        }
        ranks = table
    }

    deinit { ranks.deallocate() }

    /// GPT-2's tokenizer from `gpt2.tiktoken` (base64 token, rank per line), an llm.c tokenizer
    /// file (`.bin`), or `encoder.json` (with `vocab.bpe` beside it, or a folder holding both).
    public static func gpt2(path: String = "data/gpt2.tiktoken") throws -> Tokenizer {
        if path.hasSuffix(".bin") { return try readLLMCFile(path) }
        if path.hasSuffix("encoder.json") {
            let folder = path.count > "encoder.json".count ? String(path.dropLast("encoder.json".count)) : ""
            return try fromEncoderJSON(encoderPath: path, mergesPath: folder + "vocab.bpe")
        }
        var st = stat()
        if stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
            let folder = path.hasSuffix("/") ? path : path + "/"
            if fileExists(folder + "gpt2.tiktoken") { return try fromTiktoken(folder + "gpt2.tiktoken") }
            return try fromEncoderJSON(encoderPath: folder + "encoder.json", mergesPath: folder + "vocab.bpe")
        }
        return try fromTiktoken(path)
    }

    public func makeEncoder() -> TokenEncoder { TokenEncoder(self) }

    // MARK: - Encoding

    /// Ordinary text: the literal "<|endoftext|>" is encoded as text, never as the special id.
    public func encode(_ text: String) -> [Int32] {
        var text = text
        return text.withUTF8 { makeEncoder().encode(utf8: $0) }
    }

    /// With `allowSpecial`, each literal "<|endoftext|>" becomes `eotToken`.
    public func encode(_ text: String, allowSpecial: Bool) -> [Int32] {
        if !allowSpecial { return encode(text) }
        var text = text
        return text.withUTF8 { encodeWithSpecial(utf8: $0) }
    }

    public func encodeWithSpecial(_ text: String) -> [Int32] { encode(text, allowSpecial: true) }

    /// Valid UTF-8 (the caller checked) with "<|endoftext|>" as the special token.
    public func encodeWithSpecial(utf8 text: UnsafeBufferPointer<UInt8>) -> [Int32] {
        guard let p = text.baseAddress, text.count > 0 else { return [] }
        let encoder = makeEncoder()
        var out = TokenIdBuffer(capacity: text.count / 3 + 16)
        defer { out.deallocate() }
        let marker = Array(Tokenizer.endOfTextText.utf8)
        let n = text.count, m = marker.count
        var start = 0, i = 0
        while i + m <= n {
            if p[i] == marker[0] && memcmp(p + i, marker, m) == 0 {
                encoder.encode(p + start, i - start, &out)
                out.append(eotToken)
                i += m
                start = i
            } else {
                i += 1
            }
        }
        encoder.encode(p + start, n - start, &out)
        return out.toArray()
    }

    /// Valid UTF-8 (the caller checked; see `validateUTF8`) as ordinary text.
    public func encode(utf8 text: UnsafeBufferPointer<UInt8>) -> [Int32] {
        makeEncoder().encode(utf8: text)
    }

    /// Bytes from a file: invalid UTF-8 is an error naming `source` and the line, or with `lossy`
    /// is replaced by U+FFFD first.
    public func encode(bytes: [UInt8], source: String, lossy: Bool = false, allowSpecial: Bool = false) throws -> [Int32] {
        let text = try checkedUTF8(bytes, source: source, lossy: lossy)
        return text.withUnsafeBufferPointer { allowSpecial ? encodeWithSpecial(utf8: $0) : encode(utf8: $0) }
    }

    /// The ids of ordinary text using `threads` threads. The text is cut only just after a "\n"
    /// that sits between two non-space ASCII characters; there the pattern always ends a piece,
    /// so the ids equal those of one thread.
    public func encodeParallel(utf8 text: UnsafeBufferPointer<UInt8>, threads: Int) -> [Int32] {
        let n = text.count
        guard let p = text.baseAddress, threads > 1, n >= 1 << 14 else { return encode(utf8: text) }
        var cuts = [0]
        for k in 1..<threads {
            if let cut = Tokenizer.safeCut(p, n, from: max(k * n / threads, cuts.last! + 1)), cut < n {
                cuts.append(cut)
            }
        }
        cuts.append(n)
        let chunks = cuts.count - 1
        let results = UnsafeMutableBufferPointer<[Int32]>.allocate(capacity: chunks)
        results.initialize(repeating: [])
        defer { results.deinitialize(); results.deallocate() }
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let chunk = UnsafeBufferPointer(start: p + cuts[c], count: cuts[c + 1] - cuts[c])
            results[c] = self.makeEncoder().encode(utf8: chunk)
        }
        var all: [Int32] = []
        all.reserveCapacity(results.reduce(0) { $0 + $1.count })
        for r in results { all += r }
        return all
    }

    /// The first q >= from where text may be cut without changing the ids, or nil.
    static func safeCut(_ p: UnsafePointer<UInt8>, _ n: Int, from: Int) -> Int? {
        @inline(__always) func isPlainASCII(_ b: UInt8) -> Bool {
            b < 0x80 && b != 0x20 && !(b >= 0x09 && b <= 0x0D)
        }
        var q = max(from, 2)
        while q < n {
            if p[q - 1] == 0x0A && isPlainASCII(p[q]) && isPlainASCII(p[q - 2]) { return q }
            q += 1
        }
        return nil
    }

    // MARK: - Decoding

    /// The bytes of one id.
    public func tokenBytes(_ id: Int32) -> ArraySlice<UInt8> {
        tokenData[tokenOffsets[Int(id)]..<tokenOffsets[Int(id) + 1]]
    }

    /// The bytes of `ids` (may be partial UTF-8 when cut mid-character); an id outside the
    /// vocabulary is an error.
    public func decode<S: Sequence>(_ ids: S) throws -> [UInt8] where S.Element: BinaryInteger {
        var out: [UInt8] = []
        for id in ids {
            guard id >= 0 && id < vocabSize else {
                throw LLMError("decode: token id \(id) is outside the vocabulary (size \(vocabSize))")
            }
            out += tokenData[tokenOffsets[Int(id)]..<tokenOffsets[Int(id) + 1]]
        }
        return out
    }

    /// The text of `ids`; invalid UTF-8 (a character cut between ids) and unknown ids become U+FFFD.
    public func decodeString<S: Sequence>(_ ids: S) -> String where S.Element: BinaryInteger {
        var out: [UInt8] = []
        for id in ids {
            if id >= 0 && id < vocabSize {
                out += tokenData[tokenOffsets[Int(id)]..<tokenOffsets[Int(id) + 1]]
            } else {
                out += [0xEF, 0xBF, 0xBD]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

// MARK: - UTF-8 validation

/// The byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and values past
/// U+10FFFF are invalid), or nil when all of it is valid.
public func firstInvalidUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
    guard let p = bytes.baseAddress else { return nil }
    let n = bytes.count
    var i = 0
    while i < n {
        // Eight ASCII bytes at a time.
        if i + 8 <= n && UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
            i += 8
            continue
        }
        let b0 = p[i]
        if b0 < 0x80 { i += 1; continue }
        @inline(__always) func cont(_ k: Int) -> Bool { i + k < n && p[i + k] & 0xC0 == 0x80 }
        if b0 >= 0xC2 && b0 <= 0xDF {
            if !cont(1) { return i }
            i += 2
        } else if b0 >= 0xE0 && b0 <= 0xEF {
            if !cont(1) || !cont(2) { return i }
            let b1 = p[i + 1]
            if (b0 == 0xE0 && b1 < 0xA0) || (b0 == 0xED && b1 >= 0xA0) { return i }
            i += 3
        } else if b0 >= 0xF0 && b0 <= 0xF4 {
            if !cont(1) || !cont(2) || !cont(3) { return i }
            let b1 = p[i + 1]
            if (b0 == 0xF0 && b1 < 0x90) || (b0 == 0xF4 && b1 >= 0x90) { return i }
            i += 4
        } else {
            return i
        }
    }
    return nil
}

/// `bytes` when valid UTF-8; else an error naming `source`, line and column, or with `lossy` the
/// bytes with each invalid sequence replaced by U+FFFD.
public func checkedUTF8(_ bytes: [UInt8], source: String, lossy: Bool) throws -> [UInt8] {
    guard let bad = bytes.withUnsafeBufferPointer({ firstInvalidUTF8($0) }) else { return bytes }
    if lossy { return Array(String(decoding: bytes, as: UTF8.self).utf8) }
    var line = 1, lineStart = 0
    for i in 0..<bad where bytes[i] == 0x0A { line += 1; lineStart = i + 1 }
    throw LLMError("\(source):\(line): invalid UTF-8 (byte 0x\(String(bytes[bad], radix: 16)) at column \(bad - lineStart + 1), "
                   + "offset \(bad)); fix the file or pass --lossy to replace it with U+FFFD")
}
