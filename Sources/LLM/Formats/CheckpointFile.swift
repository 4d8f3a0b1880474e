// llm.c model checkpoints (magic 20240326): v3 = fp32 tensors, v5 = bf16 tensors, padded vocab.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum CheckpointFile {
    public static let magic: Int32 = 20240326

    public enum Precision: Int32 { case fp32 = 3, bf16 = 5 }

    /// Reads and validates the 1024-byte header; checks the file size against the config.
    public static func readHeader(_ path: String) throws -> (config: GPT2Config, precision: Precision) {
        guard let size = fileSize(path) else { throw LLMError("\(path): no such file") }
        if size < llmcHeaderBytes {
            throw LLMError("\(path): \(size) bytes, too short for the 1024-byte header of an llm.c checkpoint")
        }
        guard let f = fopen(path, "rb") else { throw LLMError("\(path): cannot open") }
        defer { fclose(f) }
        var header = [Int32](repeating: 0, count: llmcHeaderInts)
        try header.withUnsafeMutableBytes {
            try readExactly(f, $0.baseAddress!, count: llmcHeaderBytes, offset: 0, path: path)
        }
        header = header.map { Int32(littleEndian: $0) }
        if header[0] != magic {
            throw LLMError("\(path): bad magic \(header[0]), expected \(magic) (an llm.c checkpoint)")
        }
        guard let precision = Precision(rawValue: header[1]) else {
            throw LLMError("\(path): unsupported checkpoint version \(header[1]), expected 3 (fp32) or 5 (bf16)")
        }
        let config = GPT2Config(maxSeqLen: Int(header[2]), vocabSize: Int(header[3]),
                                paddedVocabSize: Int(header[7]), numLayers: Int(header[4]),
                                numHeads: Int(header[5]), channels: Int(header[6]))
        try config.validate(source: path)
        let n = ParameterLayout(config).count
        let expected = llmcHeaderBytes + n * (precision == .fp32 ? 4 : 2)
        if size != expected {
            throw LLMError("\(path): file is \(size) bytes but its header (\(config)) needs \(expected) "
                           + (size < expected ? "(truncated)" : "(trailing bytes)"))
        }
        return (config, precision)
    }

    /// Loads all parameters as fp32 (bf16 files are widened exactly).
    public static func read(_ path: String) throws -> (config: GPT2Config, precision: Precision, parameters: [Float]) {
        let (config, precision) = try readHeader(path)
        let n = ParameterLayout(config).count
        guard let f = fopen(path, "rb") else { throw LLMError("\(path): cannot open") }
        defer { fclose(f) }
        var params = [Float](repeating: 0, count: n)
        switch precision {
        case .fp32:
            try params.withUnsafeMutableBytes {
                try readExactly(f, $0.baseAddress!, count: n * 4, offset: llmcHeaderBytes, path: path)
            }
            #if _endian(big)
            params = params.map { Float(bitPattern: UInt32(littleEndian: $0.bitPattern)) }
            #endif
        case .bf16:
            var half = [UInt16](repeating: 0, count: n)
            try half.withUnsafeMutableBytes {
                try readExactly(f, $0.baseAddress!, count: n * 2, offset: llmcHeaderBytes, path: path)
            }
            for i in 0 ..< n { params[i] = floatFromBF16(UInt16(littleEndian: half[i])) }
        }
        return (config, precision, params)
    }

    public static func header(_ config: GPT2Config, _ precision: Precision) -> [Int32] {
        var h = [Int32](repeating: 0, count: llmcHeaderInts)
        h[0] = magic
        h[1] = precision.rawValue
        h.replaceSubrange(2 ..< 8, with: config.headerSlots)
        return h
    }

    /// Writes parameters (fp32, N elements) as v3 or v5, atomically.
    public static func write(_ path: String, config: GPT2Config, parameters: UnsafeBufferPointer<Float>,
                             precision: Precision) throws {
        let n = ParameterLayout(config).count
        if parameters.count != n {
            throw LLMError("\(path): have \(parameters.count) parameters, the config needs \(n)")
        }
        let w = try AtomicFileWriter(path: path)
        do {
            try w.write(header(config, precision))
            switch precision {
            case .fp32:
                try w.write(UnsafeRawBufferPointer(parameters))
            case .bf16:
                let chunk = 1 << 20
                var half = [UInt16](repeating: 0, count: chunk)
                var i = 0
                while i < n {
                    let m = min(chunk, n - i)
                    for j in 0 ..< m { half[j] = bf16FromFloat(parameters[i + j]) }
                    try half.withUnsafeBytes { try w.write(UnsafeRawBufferPointer(rebasing: $0[0 ..< m * 2])) }
                    i += m
                }
            }
            try w.commit()
        } catch {
            w.abandon()
            throw error
        }
    }

    public static func write(_ path: String, config: GPT2Config, parameters: [Float], precision: Precision) throws {
        try parameters.withUnsafeBufferPointer {
            try write(path, config: config, parameters: $0, precision: precision)
        }
    }
}
