// llm.c's multiple-choice eval file (magic 20240522, version 1), as used for HellaSwag: a 1024-byte
// header, then per example a uint16 stream: 65535, example bytes, index, label, completion count,
// context length, context tokens, then per completion its length and tokens.

// MARK: - Example

public struct EvalExample: Equatable {
    /// Index of the correct completion.
    public var label: Int
    public var context: [Int32]
    public var completions: [[Int32]]

    public init(label: Int, context: [Int32], completions: [[Int32]]) {
        self.label = label
        self.context = context
        self.completions = completions
    }
}

// MARK: - File

public enum EvalFile {
    public static let magic: Int32 = 20240522
    public static let version: Int32 = 1
    static let startOfExample: UInt16 = 65535

    /// The uint16 stream of one example; errors name `path` and the example.
    static func stream(_ e: EvalExample, index: Int, path: String) throws -> [UInt16] {
        func narrow(_ v: Int, _ what: String) throws -> UInt16 {
            guard v >= 0 && v < 65535 else {
                throw LLMError("\(path): example \(index): \(what) \(v) does not fit the eval file's uint16 (< 65535)")
            }
            return UInt16(v)
        }
        if e.label < 0 || e.label >= e.completions.count {
            throw LLMError("\(path): example \(index): label \(e.label) but \(e.completions.count) completions")
        }
        var s: [UInt16] = [startOfExample, 0, try narrow(index, "index"), UInt16(e.label),
                           try narrow(e.completions.count, "completion count"), try narrow(e.context.count, "context length")]
        for t in e.context { s.append(try narrow(Int(t), "token")) }
        for c in e.completions {
            s.append(try narrow(c.count, "completion length"))
            for t in c { s.append(try narrow(Int(t), "token")) }
        }
        s[1] = try narrow(2 * s.count, "example size in bytes")
        return s
    }

    /// Writes all examples atomically.
    public static func write(_ path: String, examples: [EvalExample]) throws {
        if examples.count >= 65536 { throw LLMError("\(path): \(examples.count) examples; the format holds < 65,536") }
        var body: [UInt16] = []
        var longest = 0
        for (i, e) in examples.enumerated() {
            let s = try stream(e, index: i, path: path)
            longest = max(longest, 2 * s.count)
            body += s
        }
        var header = [Int32](repeating: 0, count: llmcHeaderInts)
        header[0] = magic
        header[1] = version
        header[2] = Int32(examples.count)
        header[3] = Int32(longest)
        let w = try AtomicFileWriter(path: path)
        do {
            try w.write(header.map { $0.littleEndian })
            try w.write(body.map { $0.littleEndian })
            try w.commit()
        } catch {
            w.abandon()
            throw error
        }
    }

    /// Reads and checks every field: markers, sizes, indices, labels, the longest-example slot and
    /// that nothing trails the last example. `vocabSize` also checks the token ids.
    public static func read(_ path: String, vocabSize: Int? = nil) throws -> [EvalExample] {
        let bytes = try readFileBytes(path)
        if bytes.count < llmcHeaderBytes {
            throw LLMError("\(path): \(bytes.count) bytes, too short for the 1024-byte header of an eval file")
        }
        if (bytes.count - llmcHeaderBytes) % 2 != 0 { throw LLMError("\(path): odd number of bytes after the header") }
        let (m, v, count, longest) = bytes.withUnsafeBytes {
            (readInt32LE($0, 0), readInt32LE($0, 1), Int(readInt32LE($0, 2)), Int(readInt32LE($0, 3)))
        }
        if m != magic { throw LLMError("\(path): bad magic \(m), expected \(magic) (an llm.c eval file)") }
        if v != version { throw LLMError("\(path): unsupported eval file version \(v), expected \(version)") }
        if count < 0 { throw LLMError("\(path): negative example count \(count)") }
        let words: [UInt16] = bytes.withUnsafeBytes { raw in
            (0..<((bytes.count - llmcHeaderBytes) / 2)).map {
                UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: llmcHeaderBytes + 2 * $0, as: UInt16.self))
            }
        }
        var examples: [EvalExample] = []
        examples.reserveCapacity(count)
        var at = 0
        var seenLongest = 0
        for index in 0..<count {
            func word() throws -> Int {
                guard at < words.count else { throw LLMError("\(path): truncated inside example \(index) of \(count)") }
                at += 1
                return Int(words[at - 1])
            }
            let start = at
            if try word() != Int(startOfExample) {
                throw LLMError("\(path): example \(index) does not start with the 65535 marker (at byte \(llmcHeaderBytes + 2 * start))")
            }
            let size = try word()
            let storedIndex = try word()
            if storedIndex != index { throw LLMError("\(path): example \(index) says it is example \(storedIndex)") }
            let label = try word()
            let completions = try word()
            if label >= completions {
                throw LLMError("\(path): example \(index): label \(label) but \(completions) completions")
            }
            let contextLength = try word()
            var context: [Int32] = []
            for _ in 0..<contextLength { context.append(Int32(try word())) }
            var endings: [[Int32]] = []
            for _ in 0..<completions {
                let n = try word()
                var c: [Int32] = []
                for _ in 0..<n { c.append(Int32(try word())) }
                endings.append(c)
            }
            if size != 2 * (at - start) {
                throw LLMError("\(path): example \(index) says it is \(size) bytes but its fields take \(2 * (at - start))")
            }
            if let V = vocabSize, let bad = (context + endings.flatMap { $0 }).first(where: { Int($0) >= V }) {
                throw LLMError("\(path): example \(index): token \(bad) is outside the vocabulary (size \(V))")
            }
            seenLongest = max(seenLongest, size)
            examples.append(EvalExample(label: label, context: context, completions: endings))
        }
        if at != words.count { throw LLMError("\(path): \(2 * (words.count - at)) trailing bytes after \(count) examples") }
        if seenLongest != longest {
            throw LLMError("\(path): header says the longest example is \(longest) bytes, but it is \(seenLongest)")
        }
        return examples
    }
}
