// Readers for GPT-2's vocabulary as published: tiktoken's `gpt2.tiktoken` (base64 token, rank per
// line) and OpenAI's `encoder.json` + `vocab.bpe`. Errors name the file and line.

// MARK: - gpt2.tiktoken

extension Tokenizer {
    /// Reads `BASE64 RANK` lines; ranks must be 0..<N, each once. `<|endoftext|>` is added as id N.
    public static func fromTiktoken(_ path: String) throws -> Tokenizer {
        let bytes = try readFileBytes(path)
        var tokens: [[UInt8]?] = []
        var line = 0
        var i = 0
        let n = bytes.count
        while i < n {
            line += 1
            var end = i
            while end < n && bytes[end] != 0x0A { end += 1 }
            var lineEnd = end
            if lineEnd > i && bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            defer { i = end + 1 }
            if lineEnd == i { continue }  // blank line
            guard let space = bytes[i..<lineEnd].firstIndex(of: 0x20) else {
                throw LLMError("\(path):\(line): missing rank (expected 'BASE64 RANK')")
            }
            guard let token = decodeBase64(bytes[i..<space]), !token.isEmpty else {
                throw LLMError("\(path):\(line): invalid base64 token '\(String(decoding: bytes[i..<space], as: UTF8.self))'")
            }
            let rankText = bytes[(space + 1)..<lineEnd]
            guard !rankText.isEmpty, rankText.count < 10, rankText.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                throw LLMError("\(path):\(line): invalid rank '\(String(decoding: rankText, as: UTF8.self))' (expected a non-negative integer)")
            }
            let rank = rankText.reduce(0) { $0 * 10 + Int($1 - 0x30) }
            if rank >= 1 << 24 { throw LLMError("\(path):\(line): rank \(rank) is implausibly large") }
            if rank >= tokens.count { tokens += [[UInt8]?](repeating: nil, count: rank + 1 - tokens.count) }
            if tokens[rank] != nil { throw LLMError("\(path):\(line): rank \(rank) appears twice") }
            tokens[rank] = token
        }
        if tokens.isEmpty { throw LLMError("\(path): no tokens (empty vocabulary file)") }
        if let gap = tokens.firstIndex(where: { $0 == nil }) {
            throw LLMError("\(path): rank \(gap) is missing (ranks must be 0..\(tokens.count - 1), each once)")
        }
        var all = tokens.map { $0! }
        all.append(Array(endOfTextText.utf8))
        return try Tokenizer(tokens: all, eotToken: all.count - 1, source: path)
    }

    /// Standard base64 with padding; nil for anything malformed.
    static func decodeBase64(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        if text.count % 4 != 0 { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4 * 3)
        var acc: UInt32 = 0, bits = 0, padding = 0
        for c in text {
            let v: UInt32
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = UInt32(c - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt32(c - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "+"): v = 62
            case UInt8(ascii: "/"): v = 63
            case UInt8(ascii: "="): padding += 1; continue
            default: return nil
            }
            if padding > 0 { return nil }  // data after '='
            acc = acc << 6 | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        if padding > 2 { return nil }
        return out
    }
}

// MARK: - encoder.json + vocab.bpe

extension Tokenizer {
    /// GPT-2's reversible byte -> printable character map: printable Latin-1 bytes map to
    /// themselves, the other 68 bytes to U+0100 onwards in byte order.
    static func byteToUnicode() -> [UInt32] {
        var map = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable { map[b] = UInt32(b) } else { map[b] = next; next += 1 }
        }
        return map
    }

    /// encoder.json holds token -> id in the byte-to-unicode spelling; vocab.bpe holds the merges
    /// in rank order. Each merge must produce the id 256 + its index, which checks the two agree.
    public static func fromEncoderJSON(encoderPath: String, mergesPath: String) throws -> Tokenizer {
        let json = try JSONValue.parse(bytes: readFileBytes(encoderPath))
        guard let entries = json.objectValue else { throw LLMError("\(encoderPath): expected a JSON object of token -> id") }
        var unicodeToByte = [UInt32: UInt8]()
        for (b, u) in byteToUnicode().enumerated() { unicodeToByte[u] = UInt8(b) }
        func tokenBytes(_ spelled: Substring, _ whereFound: String) throws -> [UInt8] {
            var out: [UInt8] = []
            for s in spelled.unicodeScalars {
                guard let b = unicodeToByte[s.value] else {
                    throw LLMError("\(whereFound): character U+\(String(s.value, radix: 16, uppercase: true)) in '\(spelled)' is not in GPT-2's byte alphabet")
                }
                out.append(b)
            }
            return out
        }
        var tokens = [[UInt8]?](repeating: nil, count: entries.count)
        var byBytes = [[UInt8]: Int]()
        var eot = -1
        for (key, value) in entries {
            guard let id = value.intValue, id >= 0, id < entries.count else {
                throw LLMError("\(encoderPath): token '\(key)' has id \(value), not in 0..<\(entries.count)")
            }
            if tokens[id] != nil { throw LLMError("\(encoderPath): id \(id) is used twice") }
            if key == endOfTextText {
                eot = id
                tokens[id] = Array(key.utf8)
                continue
            }
            let b = try tokenBytes(Substring(key), encoderPath)
            tokens[id] = b
            byBytes[b] = id
        }
        if eot < 0 { throw LLMError("\(encoderPath): no \(endOfTextText) entry") }
        if let gap = tokens.firstIndex(where: { $0 == nil }) { throw LLMError("\(encoderPath): id \(gap) is missing") }

        let merges = try readFileBytes(mergesPath)
        var line = 0, mergeIndex = 0
        for rawLine in merges.split(separator: 0x0A, omittingEmptySubsequences: false) {
            line += 1
            let text = String(decoding: rawLine, as: UTF8.self)
            if text.hasPrefix("#version") || text.isEmpty { continue }
            let parts = text.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw LLMError("\(mergesPath):\(line): expected two tokens separated by one space, got '\(text)'")
            }
            let merged = try tokenBytes(parts[0], "\(mergesPath):\(line)") + tokenBytes(parts[1], "\(mergesPath):\(line)")
            let expected = 256 + mergeIndex
            guard let id = byBytes[merged] else {
                throw LLMError("\(mergesPath):\(line): merge '\(text)' makes a token that is not in \(encoderPath)")
            }
            if id != expected {
                throw LLMError("\(mergesPath):\(line): merge '\(text)' has id \(id) in \(encoderPath), expected \(expected) (merge order = rank)")
            }
            mergeIndex += 1
        }
        if mergeIndex + 256 != tokens.count - 1 {
            throw LLMError("\(mergesPath): \(mergeIndex) merges + 256 bytes != \(tokens.count - 1) ordinary tokens in \(encoderPath)")
        }
        return try Tokenizer(tokens: tokens.map { $0! }, eotToken: eot, source: encoderPath)
    }
}
