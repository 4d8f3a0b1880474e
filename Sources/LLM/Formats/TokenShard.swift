// llm.c token shards (magic 20240520, version 1): a 1024-byte header, then uint16 GPT-2 token ids.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum TokenShard {
    public static let magic: Int32 = 20240520
    public static let version: Int32 = 1

    /// Reads and checks the header against the file size; returns the token count.
    public static func readHeader(_ path: String) throws -> Int {
        guard let size = fileSize(path) else { throw LLMError("\(path): no such file") }
        if size < llmcHeaderBytes {
            throw LLMError("\(path): \(size) bytes, too short for the 1024-byte header of a token shard")
        }
        guard let f = fopen(path, "rb") else { throw LLMError("\(path): cannot open") }
        defer { fclose(f) }
        var header = [Int32](repeating: 0, count: 3)
        try header.withUnsafeMutableBytes { try readExactly(f, $0.baseAddress!, count: 12, offset: 0, path: path) }
        header = header.map { Int32(littleEndian: $0) }
        if header[0] != magic {
            throw LLMError("\(path): bad magic \(header[0]), expected \(magic) (an llm.c token shard)")
        }
        if header[1] != version {
            throw LLMError("\(path): unsupported token shard version \(header[1]), expected \(version) (uint16 tokens)")
        }
        let ntok = Int(header[2])
        if ntok < 0 { throw LLMError("\(path): negative token count \(ntok)") }
        let expected = llmcHeaderBytes + 2 * ntok
        if size != expected {
            throw LLMError("\(path): header says \(ntok) tokens (\(expected) bytes) but the file is \(size) bytes"
                           + (size < expected ? " (truncated)" : " (trailing bytes)"))
        }
        return ntok
    }

    /// Reads all tokens; with `vocabSize`, ids >= vocabSize are an error naming the position.
    public static func read(_ path: String, vocabSize: Int? = nil) throws -> [UInt16] {
        let ntok = try readHeader(path)
        guard let f = fopen(path, "rb") else { throw LLMError("\(path): cannot open") }
        defer { fclose(f) }
        var tokens = [UInt16](repeating: 0, count: ntok)
        try tokens.withUnsafeMutableBytes {
            try readExactly(f, $0.baseAddress!, count: 2 * ntok, offset: llmcHeaderBytes, path: path)
        }
        #if _endian(big)
        tokens = tokens.map { UInt16(littleEndian: $0) }
        #endif
        if let V = vocabSize { try checkTokens(tokens, vocabSize: V, path: path) }
        return tokens
    }

    public static func checkTokens(_ tokens: [UInt16], vocabSize: Int, path: String) throws {
        for (i, t) in tokens.enumerated() where Int(t) >= vocabSize {
            throw LLMError("\(path): token \(t) at position \(i) is outside the vocabulary (size \(vocabSize))")
        }
    }

    /// Writes a shard atomically (temporary name, then rename).
    public static func write(_ path: String, tokens: UnsafeBufferPointer<UInt16>) throws {
        if tokens.count >= Int(Int32.max) {
            throw LLMError("\(path): \(tokens.count) tokens do not fit a shard's int32 count")
        }
        var header = [Int32](repeating: 0, count: llmcHeaderInts)
        header[0] = magic
        header[1] = version
        header[2] = Int32(tokens.count)
        let w = try AtomicFileWriter(path: path)
        do {
            try w.write(header)
            try w.write(UnsafeRawBufferPointer(tokens))
            try w.commit()
        } catch {
            w.abandon()
            throw error
        }
    }

    public static func write(_ path: String, tokens: [UInt16]) throws {
        try tokens.withUnsafeBufferPointer { try write(path, tokens: $0) }
    }
}
