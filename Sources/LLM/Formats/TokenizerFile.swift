// llm.c's tokenizer file (magic 20240328): a 1024-byte header, then for each id a uint8 length and
// that many bytes. Version 1 has no end-of-text slot (it is 50256); version 2 stores it in slot 3.

extension Tokenizer {
    public static let llmcMagic: Int32 = 20240328

    /// Writes version 2 atomically. Every token must be 1...255 bytes long.
    public func writeLLMCFile(_ path: String) throws {
        var header = [Int32](repeating: 0, count: llmcHeaderInts)
        header[0] = Tokenizer.llmcMagic
        header[1] = 2
        header[2] = Int32(vocabSize)
        header[3] = eotToken
        var body: [UInt8] = []
        body.reserveCapacity(tokenData.count + vocabSize)
        for id in 0..<vocabSize {
            let t = tokenBytes(Int32(id))
            if t.isEmpty || t.count > 255 {
                throw LLMError("\(path): token \(id) is \(t.count) bytes; the llm.c tokenizer file needs 1...255")
            }
            body.append(UInt8(t.count))
            body += t
        }
        let w = try AtomicFileWriter(path: path)
        do {
            try w.write(header.map { $0.littleEndian })
            try w.write(body)
            try w.commit()
        } catch {
            w.abandon()
            throw error
        }
    }

    /// Reads version 1 or 2. Ranks are the ids, so the result encodes as well as decodes.
    public static func readLLMCFile(_ path: String) throws -> Tokenizer {
        let bytes = try readFileBytes(path)
        if bytes.count < llmcHeaderBytes {
            throw LLMError("\(path): \(bytes.count) bytes, too short for the 1024-byte header of a tokenizer file")
        }
        let (magic, version, count, eotSlot) = bytes.withUnsafeBytes {
            (readInt32LE($0, 0), readInt32LE($0, 1), readInt32LE($0, 2), readInt32LE($0, 3))
        }
        if magic != llmcMagic {
            throw LLMError("\(path): bad magic \(magic), expected \(llmcMagic) (an llm.c tokenizer file)")
        }
        let eot: Int
        switch version {
        case 1:
            if count != 50257 { throw LLMError("\(path): version 1 tokenizer with \(count) tokens; version 1 must have 50257") }
            eot = 50256
        case 2:
            eot = Int(eotSlot)
        default:
            throw LLMError("\(path): unsupported tokenizer version \(version), expected 1 or 2")
        }
        if count <= 0 { throw LLMError("\(path): vocabulary size \(count) must be positive") }
        var tokens: [[UInt8]] = []
        tokens.reserveCapacity(Int(count))
        var at = llmcHeaderBytes
        for id in 0..<Int(count) {
            guard at < bytes.count else { throw LLMError("\(path): truncated at token \(id) of \(count)") }
            let len = Int(bytes[at])
            if len == 0 { throw LLMError("\(path): token \(id) has length 0") }
            guard at + 1 + len <= bytes.count else { throw LLMError("\(path): truncated inside token \(id) of \(count)") }
            tokens.append(Array(bytes[(at + 1)..<(at + 1 + len)]))
            at += 1 + len
        }
        if at != bytes.count { throw LLMError("\(path): \(bytes.count - at) trailing bytes after \(count) tokens") }
        return try Tokenizer(tokens: tokens, eotToken: eot, source: path)
    }
}
