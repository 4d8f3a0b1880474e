// Input for `llm prepare`: a file read in blocks and cut into batches of whole documents (JSON
// Lines, blank-line sections, "<|endoftext|>"-separated texts, or one document per file), so
// memory stays bounded however large the input is. Errors name the file and line.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Batches

/// Documents as byte ranges of one buffer of valid UTF-8.
struct DocumentBatch {
    var text: [UInt8]
    var ranges: [Range<Int>]
    /// Input bytes this batch covers (for the progress line).
    var textBytes: Int
    /// The first range continues the previous batch's document, so it gets no EOT.
    var continuesDocument = false
}

/// Documents of `text` under `split`, and how many bytes they consume (through the last
/// separator). Unless `final`, a trailing piece with no separator after it is left for later.
func splitDocuments(_ text: [UInt8], _ split: DocumentSplit, final: Bool) -> (ranges: [Range<Int>], consumed: Int) {
    let n = text.count
    var ranges: [Range<Int>] = []
    switch split {
    case .file:
        if n > 0 { ranges = [0..<n] }
        return (ranges, n)
    case .blankLine:
        // Non-overlapping "\n\n" from the left, as Python's str.replace finds them; the text's
        // last piece is a document even when empty (a lone EOT), as in llm.c.
        var start = 0, i = 0
        while i + 1 < n {
            if text[i] == 0x0A && text[i + 1] == 0x0A {
                ranges.append(start..<(i + 2))
                i += 2
                start = i
            } else {
                i += 1
            }
        }
        if final { ranges.append(start..<n); start = n }
        return (ranges, start)
    case .endOfText:
        let marker = Array(Tokenizer.endOfTextText.utf8)
        var start = 0, i = 0
        while i + marker.count <= n {
            if text[i] == marker[0] && text[i..<(i + marker.count)].elementsEqual(marker) {
                if i > start { ranges.append(start..<i) }
                i += marker.count
                start = i
            } else {
                i += 1
            }
        }
        if final {
            if n > start { ranges.append(start..<n) }
            start = n
        }
        return (ranges, start)
    }
}

// MARK: - Stream

/// Owns its file and buffer until the last batch, or until dropped after an error.
final class DocumentStream {
    let path: String
    let split: DocumentSplit
    let isJSONLines: Bool
    let lossy: Bool
    let blockBytes: Int
    let file: UnsafeMutablePointer<FILE>
    let block: UnsafeMutablePointer<UInt8>  // (blockBytes,) read buffer
    var carry: [UInt8] = []
    var endOfFile = false
    var finished = false
    /// Line number of carry[0], for error messages.
    var lineBase = 1
    var atFileStart = true

    init(path: String, split: DocumentSplit, lossy: Bool, blockBytes: Int) throws {
        guard let f = fopen(path, "rb") else {
            throw LLMError("\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        self.path = path
        self.split = split
        self.isJSONLines = path.hasSuffix(".jsonl")
        self.lossy = lossy
        // No bigger than the file: small inputs need no 32 MB buffer.
        self.blockBytes = max(1, min(blockBytes, (fileSize(path) ?? blockBytes) + 1))
        self.file = f
        self.block = .allocate(capacity: self.blockBytes)
    }

    deinit {
        fclose(file)
        block.deallocate()
    }

    /// The next batch, or nil after the last one.
    func next() throws -> DocumentBatch? {
        while !finished {
            if !endOfFile {
                let got = fread(block, 1, blockBytes, file)
                carry.append(contentsOf: UnsafeBufferPointer(start: block, count: got))
                if got < blockBytes {
                    if ferror(file) != 0 { throw LLMError("\(path): read error") }
                    endOfFile = true
                }
            }
            let cut = endOfFile ? carry.count : lastCut()
            if cut == 0 && !endOfFile { continue }  // no document end yet: read more
            let portion = Array(carry[..<cut])
            carry.removeFirst(cut)
            if endOfFile && carry.isEmpty { finished = true }
            let batch = try makeBatch(portion, final: finished)
            if !batch.ranges.isEmpty || finished { return batch }
        }
        return nil
    }

    /// End of the last whole document in `carry` (0 if none), found the way the full-file split
    /// would find it, so the documents do not depend on the block size.
    func lastCut() -> Int {
        let n = carry.count
        if isJSONLines {
            var i = n
            while i > 0 && carry[i - 1] != 0x0A { i -= 1 }
            return i
        }
        switch split {
        case .blankLine, .endOfText:
            return splitDocuments(carry, split, final: false).consumed
        case .file:
            // One document: cut where the pattern always ends a piece (as `encodeParallel` does).
            return carry.withUnsafeBufferPointer { p -> Int in
                var q = n - 1
                while q >= 2 {
                    if p[q - 1] == 0x0A && isPlainASCII(p[q]) && isPlainASCII(p[q - 2]) { return q }
                    q -= 1
                }
                return 0
            }
        }
    }

    func makeBatch(_ raw: [UInt8], final: Bool) throws -> DocumentBatch {
        let text: [UInt8]
        if let bad = raw.withUnsafeBufferPointer({ firstInvalidUTF8($0) }), !lossy {
            var line = lineBase, column = 1
            for i in 0..<bad { if raw[i] == 0x0A { line += 1; column = 1 } else { column += 1 } }
            throw LLMError("\(path):\(line): invalid UTF-8 (byte 0x\(String(raw[bad], radix: 16)) at column \(column)); "
                           + "fix the file or pass --lossy to replace it with U+FFFD")
        } else {
            text = try checkedUTF8(raw, source: path, lossy: true)
        }
        let firstLine = lineBase
        for b in raw where b == 0x0A { lineBase += 1 }
        defer { atFileStart = false }
        if isJSONLines { return try jsonLines(text, firstLine: firstLine, bytes: raw.count) }
        let ranges = splitDocuments(text, split, final: final).ranges
        return DocumentBatch(text: text, ranges: ranges, textBytes: raw.count,
                             continuesDocument: split == .file && !atFileStart && !ranges.isEmpty)
    }

    /// One document per non-blank line: the "text" string of a JSON object.
    func jsonLines(_ bytes: [UInt8], firstLine: Int, bytes rawCount: Int) throws -> DocumentBatch {
        var text: [UInt8] = [], ranges: [Range<Int>] = []
        var line = firstLine - 1, start = 0
        let n = bytes.count
        while start < n {
            line += 1
            var end = start
            while end < n && bytes[end] != 0x0A { end += 1 }
            defer { start = end + 1 }
            if bytes[start..<end].allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
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
        }
        return DocumentBatch(text: text, ranges: ranges, textBytes: rawCount)
    }
}

@inline(__always) private func isPlainASCII(_ b: UInt8) -> Bool {
    b < 0x80 && b != 0x20 && !(b >= 0x09 && b <= 0x0D)
}
