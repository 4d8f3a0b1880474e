// Exactness tests of the GPT-2 tokenizer against ids tiktoken produced (Tests/Fixtures), and its
// error handling, special token, decoding and multi-threaded splitting.

import Foundation
import Testing
@testable import LLM

/// Shared by the tokenizer and prepare tests; namespaced so other test files can use the same names.
enum TokenizerTestData {
    /// Repository root, found from this file's path (Tests/LLMTests/TokenizerTests.swift).
    static let repositoryRoot: String = {
        var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }()

    static func fixturePath(_ name: String) -> String { TokenizerTestData.repositoryRoot + "/Tests/Fixtures/" + name }

    /// One tokenizer for all tests: loading it in a debug build takes a moment.
    static let gpt2Tokenizer: Tokenizer = try! Tokenizer.gpt2(path: TokenizerTestData.repositoryRoot + "/data/gpt2.tiktoken")

    static func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "llm-tokenizer-tests-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

// MARK: - Exactness

@Test func tokenizerMatchesAll437TiktokenCases() throws {
    let lines = try String(contentsOfFile: TokenizerTestData.fixturePath("gpt2-tokenizer-cases.jsonl"), encoding: .utf8)
        .split(separator: "\n")
    #expect(lines.count == 437)
    #expect(try tokenizerMismatches(lines, checkDecode: true) == 0)
}

/// Encodes the `text` of each JSON line and compares with its `ids`; records every mismatch and
/// returns how many there were. With `checkDecode`, decoding must give the text's bytes back.
func tokenizerMismatches<S: StringProtocol>(_ lines: [S], checkDecode: Bool = false) throws -> Int {
    var failures = 0
    for (i, line) in lines.enumerated() {
        let record = try JSONValue.parse(String(line))
        let text = try #require(record["text"]?.stringValue)
        let expected = try #require(record["ids"]?.arrayValue).map { Int32($0.intValue!) }
        let got = TokenizerTestData.gpt2Tokenizer.encode(text)
        if got != expected {
            failures += 1
            Issue.record("case \(i + 1) \(text.debugDescription): got \(got), expected \(expected)")
        }
        if checkDecode { #expect(try TokenizerTestData.gpt2Tokenizer.decode(got) == Array(text.utf8)) }
    }
    return failures
}

@Test func tokenizerEncodesTinyShakespeareExactly() throws {
    let text = try [UInt8](Data(contentsOf: URL(fileURLWithPath: TokenizerTestData.repositoryRoot + "/data/tinyshakespeare.txt")))
    let expectedData = try Data(contentsOf: URL(fileURLWithPath: TokenizerTestData.fixturePath("tinyshakespeare.gpt2.u16")))
    let expected = expectedData.withUnsafeBytes { raw in
        (0..<(raw.count / 2)).map { Int32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
    }
    #expect(expected.count == 338_025)
    let ids = try TokenizerTestData.gpt2Tokenizer.encode(bytes: text, source: "tinyshakespeare.txt")
    #expect(ids.count == expected.count)
    #expect(ids == expected)
    #expect(try TokenizerTestData.gpt2Tokenizer.decode(ids) == text)
    // Several threads cut the text at line ends and must give the very same ids.
    let parallel = text.withUnsafeBufferPointer { TokenizerTestData.gpt2Tokenizer.encodeParallel(utf8: $0, threads: 7) }
    #expect(parallel == expected)
}

@Test func tokenizerKnownValues() throws {
    #expect(TokenizerTestData.gpt2Tokenizer.vocabSize == 50257)
    #expect(TokenizerTestData.gpt2Tokenizer.eotToken == 50256)
    #expect(TokenizerTestData.gpt2Tokenizer.encode("Hello world") == [15496, 995])
    #expect(TokenizerTestData.gpt2Tokenizer.encode(" the") == [262])
    #expect(TokenizerTestData.gpt2Tokenizer.encode("") == [])
    #expect(TokenizerTestData.gpt2Tokenizer.encodeWithSpecial("") == [])
}

// MARK: - Special token

@Test func endOfTextIsSpecialOnlyWhenAsked() throws {
    let text = "a<|endoftext|>b<|endoftext|><|endoftext|>"
    #expect(TokenizerTestData.gpt2Tokenizer.encode("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29])
    #expect(TokenizerTestData.gpt2Tokenizer.encode("<|endoftext|>", allowSpecial: true) == [50256])
    let a = TokenizerTestData.gpt2Tokenizer.encode("a"), b = TokenizerTestData.gpt2Tokenizer.encode("b")
    #expect(TokenizerTestData.gpt2Tokenizer.encodeWithSpecial(text) == a + [50256] + b + [50256, 50256])
    #expect(TokenizerTestData.gpt2Tokenizer.decodeString(TokenizerTestData.gpt2Tokenizer.encodeWithSpecial(text)) == text)
    #expect(TokenizerTestData.gpt2Tokenizer.encode(text, allowSpecial: false) == TokenizerTestData.gpt2Tokenizer.encode(text))
}

// MARK: - Round trip

/// A seeded xorshift generator so the property test is reproducible.
struct TokenizerTestRNG: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
}

@Test func decodeOfEncodeIsIdentityOnRandomUnicode() throws {
    var rng = TokenizerTestRNG(state: 20240520)
    // Mix the ranges the scanner treats differently: ASCII, spaces, Latin-1, combining marks,
    // CJK, astral (emoji, letters), and every kind of whitespace.
    let pools: [ClosedRange<UInt32>] = [0x20...0x7E, 0x00...0x1F, 0x80...0xFF, 0x300...0x36F, 0x370...0x3FF,
                                        0x4E00...0x4E80, 0x1F300...0x1F64F, 0x10400...0x1044F, 0xFFF0...0xFFFD]
    let spaces: [UInt32] = [0x20, 0x20, 0x20, 0x0A, 0x09, 0x0D, 0xA0, 0x85, 0x2028, 0x3000, 0x1680]
    for _ in 0..<300 {
        var s = String.UnicodeScalarView()
        let length = Int.random(in: 0...60, using: &rng)
        for _ in 0..<length {
            let v: UInt32
            switch Int.random(in: 0..<10, using: &rng) {
            case 0...3: v = UInt32.random(in: 0x61...0x7A, using: &rng)
            case 4...5: v = spaces.randomElement(using: &rng)!
            case 6: v = [0x27, 0x73, 0x74, 0x6C, 0x6C].randomElement(using: &rng)!  // ' s t l l: contractions
            default: v = UInt32.random(in: pools.randomElement(using: &rng)!, using: &rng)
            }
            if let u = Unicode.Scalar(v) { s.append(u) }
        }
        let text = String(s)
        let ids = TokenizerTestData.gpt2Tokenizer.encode(text)
        #expect(try TokenizerTestData.gpt2Tokenizer.decode(ids) == Array(text.utf8), "\(text.debugDescription)")
        #expect(ids.allSatisfy { $0 >= 0 && $0 < 50256 })
    }
}

@Test func multiThreadedIdsEqualSingleThreaded() throws {
    // Text with many kinds of line ends so every cut rule is exercised.
    var rng = TokenizerTestRNG(state: 7)
    var text = ""
    let words = ["the", "  spaces", "\n", "\n\n", " \n", "don't", "ÉCOLE", "数字", "123", " x", "\t", "—", "é\n", "'ll"]
    for _ in 0..<20000 { text += words.randomElement(using: &rng)! }
    let bytes = Array(text.utf8)
    let one = TokenizerTestData.gpt2Tokenizer.encode(text)
    for threads in [2, 3, 8, 33] {
        let many = bytes.withUnsafeBufferPointer { TokenizerTestData.gpt2Tokenizer.encodeParallel(utf8: $0, threads: threads) }
        #expect(many == one, "threads \(threads)")
    }
}

// MARK: - Errors

@Test func invalidUTF8IsAnErrorNamingTheLineOrReplacedWhenLossy() throws {
    let bytes: [UInt8] = Array("first line\nsecond ".utf8) + [0xFF, 0x41] + Array("\n".utf8)
    do {
        _ = try TokenizerTestData.gpt2Tokenizer.encode(bytes: bytes, source: "input.txt")
        Issue.record("expected an error")
    } catch let e as LLMError {
        #expect(e.message.hasPrefix("input.txt:2: invalid UTF-8"))
    }
    let lossy = try TokenizerTestData.gpt2Tokenizer.encode(bytes: bytes, source: "input.txt", lossy: true)
    #expect(TokenizerTestData.gpt2Tokenizer.decodeString(lossy) == "first line\nsecond \u{FFFD}A\n")
    // Overlong forms, surrogates and code points past U+10FFFF are all invalid.
    for bad: [UInt8] in [[0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82], [0x80]] {
        #expect(bad.withUnsafeBufferPointer { firstInvalidUTF8($0) } == 0)
    }
    #expect(Array("aé😀€".utf8).withUnsafeBufferPointer { firstInvalidUTF8($0) } == nil)
    // The buffer APIs never read past a character cut at the end; they encode U+FFFD instead.
    let cut: [UInt8] = Array("word ".utf8) + [0xE2, 0x82]
    let ids = cut.withUnsafeBufferPointer { TokenizerTestData.gpt2Tokenizer.encode(utf8: $0) }
    #expect(ids == TokenizerTestData.gpt2Tokenizer.encode("word \u{FFFD}"))
    #expect(cut.withUnsafeBufferPointer { TokenizerTestData.gpt2Tokenizer.encodeWithSpecial(utf8: $0) } == ids)
}

@Test func badVocabularyLinesAreErrorsNamingFileAndLine() throws {
    let dir = TokenizerTestData.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    func expectError(_ content: String, _ prefix: String) {
        let path = dir + "/vocab.tiktoken"
        _ = FileManager.default.createFile(atPath: path, contents: Data(content.utf8))
        do {
            _ = try Tokenizer.fromTiktoken(path)
            Issue.record("expected an error for \(content.debugDescription)")
        } catch let e as LLMError {
            #expect(e.message.hasPrefix(path + prefix), "\(e.message)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
    expectError("IQ== 0\nIg==\n", ":2: missing rank")
    expectError("IQ== 0\nIg== x\n", ":2: invalid rank")
    expectError("IQ== 0\n!!!! 1\n", ":2: invalid base64")
    expectError("IQ== 0\nIg== 0\n", ":2: rank 0 appears twice")
    expectError("IQ== 0\nIg== 2\n", ": rank 1 is missing")
    expectError("", ": no tokens")
    // A well-formed file without all 256 single bytes cannot encode everything.
    expectError("IQ== 0\nIg== 1\n", ": no token for the single byte")
}

@Test func decodeRejectsIdsOutsideTheVocabulary() {
    #expect(throws: LLMError.self) { try TokenizerTestData.gpt2Tokenizer.decode([50257]) }
    #expect(throws: LLMError.self) { try TokenizerTestData.gpt2Tokenizer.decode([-1]) }
    #expect(TokenizerTestData.gpt2Tokenizer.decodeString([15496, 50257]) == "Hello\u{FFFD}")
}

// MARK: - Other vocabulary files

@Test func llmcTokenizerFileRoundTrips() throws {
    let dir = TokenizerTestData.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/gpt2_tokenizer.bin"
    try TokenizerTestData.gpt2Tokenizer.writeLLMCFile(path)
    let bytes = try readFileBytes(path)
    let header = bytes.withUnsafeBytes { raw in (0..<4).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self) } }
    #expect(header == [20240328, 2, 50257, 50256])
    let back = try Tokenizer.readLLMCFile(path)
    #expect(back.vocabSize == 50257 && back.eotToken == 50256)
    for id in [0, 1, 255, 256, 15496, 50255, 50256] as [Int32] {
        #expect(back.tokenBytes(id) == TokenizerTestData.gpt2Tokenizer.tokenBytes(id))
    }
    let sample = "Hello world, it's 2024!\n\n  Ünïcödé  "
    #expect(back.encode(sample) == TokenizerTestData.gpt2Tokenizer.encode(sample))
    // Version 1 (no EOT slot) reads with EOT = 50256.
    var v1 = bytes
    v1[4] = 1; v1[12] = 0; v1[13] = 0
    try Data(v1).write(to: URL(fileURLWithPath: dir + "/v1.bin"))
    #expect(try Tokenizer.readLLMCFile(dir + "/v1.bin").eotToken == 50256)
    // Bad magic and truncation are errors naming the file.
    var bad = bytes
    bad[0] = 0
    try Data(bad).write(to: URL(fileURLWithPath: dir + "/bad.bin"))
    #expect(throws: LLMError.self) { try Tokenizer.readLLMCFile(dir + "/bad.bin") }
    try Data(bytes.prefix(5000)).write(to: URL(fileURLWithPath: dir + "/short.bin"))
    #expect(throws: LLMError.self) { try Tokenizer.readLLMCFile(dir + "/short.bin") }
}

@Test func encoderJSONAndVocabBPEGiveTheSameTokenizer() throws {
    // The shared data folder has OpenAI's original files; the repository carries only
    // gpt2.tiktoken, so this check runs where ../shared is present.
    let shared = TokenizerTestData.repositoryRoot + "/../shared/data/"
    guard FileManager.default.fileExists(atPath: shared + "encoder.json") else { return }
    let other = try Tokenizer.gpt2(path: shared + "encoder.json")
    #expect(other.vocabSize == TokenizerTestData.gpt2Tokenizer.vocabSize && other.eotToken == TokenizerTestData.gpt2Tokenizer.eotToken)
    for id in 0..<Int32(other.vocabSize) where other.tokenBytes(id) != TokenizerTestData.gpt2Tokenizer.tokenBytes(id) {
        Issue.record("token \(id) differs")
        break
    }
}

@Test func encoderJSONErrorsNameTheFile() throws {
    let dir = TokenizerTestData.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    // A two-byte alphabet cannot hold GPT-2's 256 single bytes; first check merge-line errors.
    var encoder: [String: Int] = [:]
    let map = Tokenizer.byteToUnicode()
    for b in 0..<256 { encoder[String(Character(Unicode.Scalar(map[b])!))] = b }
    encoder["ab"] = 256
    encoder["<|endoftext|>"] = 257
    let json = try JSONSerialization.data(withJSONObject: encoder)
    try json.write(to: URL(fileURLWithPath: dir + "/encoder.json"))
    try Data("#version: 0.2\na b\n".utf8).write(to: URL(fileURLWithPath: dir + "/vocab.bpe"))
    let ok = try Tokenizer.gpt2(path: dir + "/encoder.json")
    #expect(ok.encode("abab") == [256, 256])
    try Data("#version: 0.2\na c\n".utf8).write(to: URL(fileURLWithPath: dir + "/vocab.bpe"))
    #expect {
        try Tokenizer.gpt2(path: dir + "/encoder.json")
    } throws: { ($0 as? LLMError)?.message.hasPrefix(dir + "/vocab.bpe:2: merge 'a c'") == true }
    try Data("#version: 0.2\nab\n".utf8).write(to: URL(fileURLWithPath: dir + "/vocab.bpe"))
    #expect {
        try Tokenizer.gpt2(path: dir + "/encoder.json")
    } throws: { ($0 as? LLMError)?.message.hasPrefix(dir + "/vocab.bpe:2: expected two tokens") == true }
}
