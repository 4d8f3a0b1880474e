// llm.c debug state (magic 20240327, version 2): a batch, PyTorch's logits, loss and gradients.

public struct DebugState {
    public static let magic: Int32 = 20240327
    public let B: Int
    public let T: Int
    public let inputs: [Int32]     // (B, T)
    public let targets: [Int32]    // (B, T)
    public let logits: [Float]     // (B, T, V), unpadded
    public let loss: Float
    public let gradients: [Float]  // (N), checkpoint order, wte padded to Vp rows

    /// Reads a debug state made for a model of `config`; every size is checked against the file.
    public init(path: String, config: GPT2Config) throws {
        let bytes = try readFileBytes(path)
        if bytes.count < llmcHeaderBytes {
            throw LLMError("\(path): \(bytes.count) bytes, too short for the 1024-byte header of a debug state")
        }
        let (b, t) = try bytes.withUnsafeBytes { raw -> (Int, Int) in
            let magic = readInt32LE(raw, 0), version = readInt32LE(raw, 1)
            if magic != DebugState.magic {
                throw LLMError("\(path): bad magic \(magic), expected \(DebugState.magic) (an llm.c debug state)")
            }
            if version != 2 { throw LLMError("\(path): unsupported debug state version \(version), expected 2") }
            return (Int(readInt32LE(raw, 2)), Int(readInt32LE(raw, 3)))
        }
        if b <= 0 || t <= 0 || t > config.maxSeqLen {
            throw LLMError("\(path): batch B=\(b) T=\(t) does not fit the model (maxT \(config.maxSeqLen))")
        }
        let V = config.vocabSize, N = ParameterLayout(config).count
        let expected = llmcHeaderBytes + 4 * (2 * b * t + b * t * V + 1 + N)
        if bytes.count != expected {
            throw LLMError("\(path): \(bytes.count) bytes, but B=\(b) T=\(t) with \(config) needs \(expected)"
                           + (bytes.count < expected ? " (truncated or made for another model)" : " (made for another model)"))
        }
        B = b
        T = t
        var offset = llmcHeaderBytes
        func take<E>(_ count: Int, _ type: E.Type) -> [E] {
            let out = bytes.withUnsafeBytes { raw in
                (0 ..< count).map { raw.loadUnaligned(fromByteOffset: offset + 4 * $0, as: E.self) }
            }
            offset += 4 * count
            return out
        }
        inputs = take(b * t, Int32.self)
        targets = take(b * t, Int32.self)
        logits = take(b * t * V, Float.self)
        loss = take(1, Float.self)[0]
        gradients = take(N, Float.self)
        for (i, x) in (inputs + targets).enumerated() where x < 0 || Int(x) >= V {
            throw LLMError("\(path): token \(x) at position \(i % (b * t)) is outside the vocabulary (size \(V))")
        }
    }
}
