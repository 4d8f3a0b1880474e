// Tests of `llm prepare`'s library code: llm.c's Tiny Shakespeare shards byte for byte, generic
// shards (EOT per document, val split, shard size), the HellaSwag eval file, and input errors.

import Foundation
import Testing
@testable import LLM

// MARK: - Helpers

enum PrepareTestData {
    /// SHA-256 (FIPS 180-4), small and slow, enough to check a few files.
    static func sha256Hex(_ message: [UInt8]) -> String {
        var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
        let k: [UInt32] = [
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
            0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
            0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
            0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
            0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
            0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
            0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]
        var data = message
        let bitLength = UInt64(message.count) * 8
        data.append(0x80)
        while data.count % 64 != 56 { data.append(0) }
        for i in (0..<8).reversed() { data.append(UInt8(truncatingIfNeeded: bitLength >> (8 * UInt64(i)))) }
        func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
        var w = [UInt32](repeating: 0, count: 64)
        for chunk in stride(from: 0, to: data.count, by: 64) {
            for i in 0..<16 {
                w[i] = UInt32(data[chunk + 4 * i]) << 24 | UInt32(data[chunk + 4 * i + 1]) << 16
                    | UInt32(data[chunk + 4 * i + 2]) << 8 | UInt32(data[chunk + 4 * i + 3])
            }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
            for i in 0..<64 {
                let t1 = hh &+ (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) &+ ((e & f) ^ (~e & g)) &+ k[i] &+ w[i]
                let t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) &+ ((a & b) ^ (a & c) ^ (b & c))
                (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
            }
            for (i, v) in [a, b, c, d, e, f, g, hh].enumerated() { h[i] = h[i] &+ v }
        }
        return h.map { v in
            let s = String(v, radix: 16)
            return String(repeating: "0", count: 8 - s.count) + s
        }.joined()
    }

    static func writeText(_ path: String, _ text: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    static func quietOptions(_ dir: String, _ name: String) -> PrepareOptions {
        var o = PrepareOptions(outputDirectory: dir, name: name)
        o.showProgress = false
        return o
    }
}

// MARK: - Tiny Shakespeare, as llm.c makes it

@Test func sha256OfKnownStrings() {
    #expect(PrepareTestData.sha256Hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(PrepareTestData.sha256Hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
}

@Test func tinyShakespeareRecipeMatchesLLMCByteForByte() throws {
    let dir = TokenizerTestData.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let summary = try prepareTinyShakespeare(input: TokenizerTestData.repositoryRoot + "/data/tinyshakespeare.txt", outputDirectory: dir,
                                             tokenizer: TokenizerTestData.gpt2Tokenizer, threads: 2, showProgress: false)
    // llm.c's tinyshakespeare.py prints these counts; the hashes come from an independent encoding
    // with the `regex` module and GPT-2's merge list (Scripts/reference-gpt2-encode.py).
    #expect(summary.documents == 7222)
    #expect(summary.valTokens == 32768)
    #expect(summary.trainTokens == 305_260)
    let val = try TokenShard.read(dir + "/tiny_shakespeare_val.bin")
    let train = try TokenShard.read(dir + "/tiny_shakespeare_train.bin")
    #expect(val.count == 32768 && train.count == 305_260)
    #expect((val + train).filter { $0 == 50256 }.count == 7222)
    #expect(val.first == 50256)
    #expect(PrepareTestData.sha256Hex(try readFileBytes(dir + "/tiny_shakespeare_val.bin"))
            == "fe99db720dc7c83e694806d4e047a952909411da1daccde4ccc2e55f40882a62")
    #expect(PrepareTestData.sha256Hex(try readFileBytes(dir + "/tiny_shakespeare_train.bin"))
            == "8a70606be574040c26d225694f5f9759973b419852d22f7fe5c118e1b359dcc8")
    // The in-memory form for a training run gives the same tokens.
    let inMemory = try tinyShakespeareTokens(try readFileBytes(TokenizerTestData.repositoryRoot + "/data/tinyshakespeare.txt"),
                                             source: "tinyshakespeare.txt", tokenizer: TokenizerTestData.gpt2Tokenizer)
    #expect(inMemory.val == val && inMemory.train == train)
    let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".tmp") }
    #expect(leftovers.isEmpty)
}

// MARK: - Generic shards

@Test func shardsHoldEOTBeforeEveryDocumentAcrossShardBoundaries() throws {
    let dir = TokenizerTestData.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let docs = (0..<40).map { "Document \($0): the quick brown fox, number \($0 * 37), jumps.\n" }
    try PrepareTestData.writeText(dir + "/docs.jsonl", docs.map { JSONValue.object(["text": .string($0)]).description }.joined(separator: "\n") + "\n\n")
    var options = PrepareTestData.quietOptions(dir, "docs")
    options.shardSize = 100
    options.valTokens = 64
    options.threads = 3
    let summary = try prepareShards(inputs: [dir + "/docs.jsonl"], tokenizer: TokenizerTestData.gpt2Tokenizer, options: options)
    let expected = docs.flatMap { [Int32(50256)] + TokenizerTestData.gpt2Tokenizer.encode($0) }.map { UInt16($0) }
    #expect(summary.documents == 40)
    #expect(summary.valTokens == 64 && summary.trainTokens == expected.count - 64)
    let val = try TokenShard.read(dir + "/docs_val_000000.bin")
    #expect(val.count == 64)
    let trainFiles = summary.files.dropFirst()
    #expect(trainFiles.first == dir + "/docs_train_000001.bin" && trainFiles.count == (expected.count - 64 + 99) / 100)
    let shards = try trainFiles.map { try TokenShard.read($0) }
    #expect(shards.dropLast().allSatisfy { $0.count == 100 })  // every shard but the last is full
    let all = val + shards.flatMap { $0 }
    #expect(all == expected)
    // The thread count never changes the tokens.
    options.threads = 1
    options.name = "one"
    _ = try prepareShards(inputs: [dir + "/docs.jsonl"], tokenizer: TokenizerTestData.gpt2Tokenizer, options: options)
    #expect(try TokenShard.read(dir + "/one_train_000001.bin") == TokenShard.read(dir + "/docs_train_000001.bin"))
}

@Test func smallInputIsSplitTenPercentValAndTextSplitModes() throws {
    let dir = TokenizerTestData.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let text = "First part.\n\nSecond part<|endoftext|>third part\n\n"
    try PrepareTestData.writeText(dir + "/a.txt", text)
    let expectedBlank = ["First part.\n\n", "Second part<|endoftext|>third part\n\n", ""]
        .flatMap { [Int32(50256)] + TokenizerTestData.gpt2Tokenizer.encode($0) }.map { UInt16($0) }
    var options = PrepareTestData.quietOptions(dir, "blank")
    options.split = .blankLine
    let s = try prepareShards(inputs: [dir + "/a.txt"], tokenizer: TokenizerTestData.gpt2Tokenizer, options: options)
    #expect(s.documents == 3)
    #expect(s.valTokens == expectedBlank.count / 10 && s.valTokens + s.trainTokens == expectedBlank.count)
    #expect(try TokenShard.read(dir + "/blank_val_000000.bin") + TokenShard.read(dir + "/blank_train_000001.bin") == expectedBlank)

    options.split = .endOfText
    options.name = "eot"
    _ = try prepareShards(inputs: [dir + "/a.txt"], tokenizer: TokenizerTestData.gpt2Tokenizer, options: options)
    let expectedEOT = ["First part.\n\nSecond part", "third part\n\n"]
        .flatMap { [Int32(50256)] + TokenizerTestData.gpt2Tokenizer.encode($0) }.map { UInt16($0) }
    #expect(try TokenShard.read(dir + "/eot_val_000000.bin") + TokenShard.read(dir + "/eot_train_000001.bin") == expectedEOT)
}

@Test func smallReadBlocksGiveTheSameShardsInEveryMode() throws {
    let dir = TokenizerTestData.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var rng = TokenizerTestRNG(state: 99)
    let pieces = ["word", " ", "\n", "\n\n", "\n\n\n", "<|endoftext|>", "é", "😀", "'s", "  ", "x\ny", "42"]
    var text = ""
    for _ in 0..<3000 { text += pieces.randomElement(using: &rng)! }
    text += "\n\n"  // a trailing blank line gives a final lone EOT in blank-line mode
    try PrepareTestData.writeText(dir + "/t.txt", text)
    let docs = (0..<300).map { i in "doc \(i) " + String(repeating: pieces[i % pieces.count], count: i % 7) }
    try PrepareTestData.writeText(dir + "/d.jsonl", docs.map { JSONValue.object(["text": .string($0)]).description }.joined(separator: "\n\n"))
    for (input, mode) in [("t.txt", DocumentSplit.file), ("t.txt", .blankLine), ("t.txt", .endOfText), ("d.jsonl", .file)] {
        var reference: [UInt16]? = nil
        var documents: Int? = nil
        for block in [1 << 20, 64, 7] {
            var options = PrepareTestData.quietOptions(dir, "\(mode.rawValue)_\(block)")
            options.split = mode
            options.readBlockBytes = block
            options.valTokens = 10
            options.threads = 2
            let s = try prepareShards(inputs: [dir + "/" + input], tokenizer: TokenizerTestData.gpt2Tokenizer, options: options)
            let tokens = try s.files.flatMap { try TokenShard.read($0) }
            if reference == nil { reference = tokens; documents = s.documents }
            let same = tokens == reference!  // (not printed: thousands of ids)
            #expect(same, "\(input) \(mode) block \(block)")
            #expect(s.documents == documents!, "\(input) \(mode) block \(block)")
            #expect(tokens.filter { $0 == 50256 }.count == s.documents)
        }
        if input == "t.txt" && mode == .file {
            let same = reference! == [50256] + TokenizerTestData.gpt2Tokenizer.encode(text).map { UInt16($0) }
            #expect(same)
        }
        if input == "t.txt" && mode == .blankLine {
            #expect(reference!.last == 50256)
        }
    }
}

// MARK: - Errors

@Test func prepareErrorsNameTheFileAndLine() throws {
    let dir = TokenizerTestData.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    func expectError(_ inputs: [String], _ prefix: String, lossy: Bool = false) {
        var options = PrepareTestData.quietOptions(dir, "x")
        options.lossy = lossy
        do {
            _ = try prepareShards(inputs: inputs, tokenizer: TokenizerTestData.gpt2Tokenizer, options: options)
            Issue.record("expected an error starting \(prefix)")
        } catch let e as LLMError {
            #expect(e.message.hasPrefix(prefix), "\(e.message)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
    try PrepareTestData.writeText(dir + "/empty.txt", "")
    expectError([dir + "/empty.txt"], dir + "/empty.txt: empty input")
    try PrepareTestData.writeText(dir + "/blank.jsonl", "\n  \n")
    expectError([dir + "/blank.jsonl"], dir + "/blank.jsonl: no documents")
    try PrepareTestData.writeText(dir + "/bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n")
    expectError([dir + "/bad.jsonl"], dir + "/bad.jsonl:2: expected a JSON object with a \"text\" string")
    try PrepareTestData.writeText(dir + "/broken.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": \"ok\"\n")
    expectError([dir + "/broken.jsonl"], dir + "/broken.jsonl:3: JSON")
    try Data([0x61, 0x0A, 0x62, 0xC3, 0x28, 0x0A]).write(to: URL(fileURLWithPath: dir + "/utf8.txt"))
    expectError([dir + "/utf8.txt"], dir + "/utf8.txt:2: invalid UTF-8")
    expectError([dir + "/missing.txt"], dir + "/missing.txt: cannot open")
    expectError([], "prepare: no input files")
    // A lone EOT (one empty document) cannot be split into val and train.
    try PrepareTestData.writeText(dir + "/one.jsonl", "{\"text\": \"\"}\n")
    expectError([dir + "/one.jsonl"], "x: only 1 token(s)")
    // With --lossy the bad byte becomes U+FFFD and the run succeeds.
    var options = PrepareTestData.quietOptions(dir, "lossy")
    options.lossy = true
    let s = try prepareShards(inputs: [dir + "/utf8.txt"], tokenizer: TokenizerTestData.gpt2Tokenizer, options: options)
    #expect(s.valTokens + s.trainTokens == 1 + TokenizerTestData.gpt2Tokenizer.encode("a\nb\u{FFFD}(\n").count)
}

@Test func tokenIdsThatDoNotFitUInt16AreAnError() throws {
    let writer = ShardWriter(options: PrepareTestData.quietOptions("/nonexistent", "x"))
    do {
        try writer.append([50256, 70000], source: "big.txt")
        Issue.record("expected an error")
    } catch let e as LLMError {
        #expect(e.message == "big.txt: token id 70000 (token 1) does not fit llm.c's uint16 shards")
    }
    // A vocabulary larger than uint16 is refused before any work.
    var tokens = (0..<256).map { [UInt8($0)] }
    for i in 0..<(65536 - 256 + 1) { tokens.append([UInt8(i & 0xFF), UInt8((i >> 8) & 0xFF), 0x41]) }
    let big = try Tokenizer(tokens: tokens, eotToken: tokens.count - 1, source: "big-vocab")
    #expect(big.vocabSize == 65537)
    #expect(throws: LLMError.self) {
        try prepareShards(inputs: ["/nonexistent.txt"], tokenizer: big, options: PrepareTestData.quietOptions("/tmp", "x"))
    }
}

// MARK: - HellaSwag and the eval file

extension PrepareTestData {
    static let handMadeHellaSwag: [HellaSwagTask] = [
        HellaSwagTask(context: "Roof shingle removal: A man is sitting on a roof. he", label: 3,
                      endings: ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                                "is holding a rubik's cube.", "starts pulling up roofing on a roof."]),
        HellaSwagTask(context: "Baking cookies: She mixes the dough. She", label: 0,
                      endings: ["puts the tray in the oven.", "swims.", "reads a book about Ünïcode 😀.", "sleeps"]),
    ]
}

@Test func hellaSwagBothFormatsGiveTheSameEvalFile() throws {
    let dir = TokenizerTestData.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let text = PrepareTestData.handMadeHellaSwag.map { t in ([t.context, String(t.label)] + t.endings).joined(separator: "\n") }.joined(separator: "\n") + "\n"
    try PrepareTestData.writeText(dir + "/hs.txt", text)
    let jsonl = PrepareTestData.handMadeHellaSwag.enumerated().map { (i, t) in
        JSONValue.object(["ind": .number(Double(i)), "ctx": .string(t.context), "label": .number(Double(t.label)),
                          "endings": .array(t.endings.map { .string($0) }), "split": .string("val")]).description
    }.joined(separator: "\n")
    try PrepareTestData.writeText(dir + "/hs.jsonl", jsonl)
    #expect(try readHellaSwag(dir + "/hs.txt") == PrepareTestData.handMadeHellaSwag)
    #expect(try readHellaSwag(dir + "/hs.jsonl") == PrepareTestData.handMadeHellaSwag)
    #expect(try prepareHellaSwag(input: dir + "/hs.txt", output: dir + "/a.bin", tokenizer: TokenizerTestData.gpt2Tokenizer) == 2)
    try prepareHellaSwag(input: dir + "/hs.jsonl", output: dir + "/b.bin", tokenizer: TokenizerTestData.gpt2Tokenizer)
    let a = try readFileBytes(dir + "/a.bin")
    #expect(a == (try readFileBytes(dir + "/b.bin")))

    // The layout, word by word, as llm.c's write_evalfile lays it out.
    let examples = try EvalFile.read(dir + "/a.bin", vocabSize: 50257)
    #expect(examples.count == 2)
    var expectedWords: [UInt16] = []
    var longest = 0
    for (i, t) in PrepareTestData.handMadeHellaSwag.enumerated() {
        let ctx = TokenizerTestData.gpt2Tokenizer.encode(t.context)
        let endings = t.endings.map { TokenizerTestData.gpt2Tokenizer.encode(" " + $0) }
        #expect(examples[i] == EvalExample(label: t.label, context: ctx, completions: endings))
        var words: [UInt16] = [65535, 0, UInt16(i), UInt16(t.label), 4, UInt16(ctx.count)] + ctx.map { UInt16($0) }
        for e in endings { words += [UInt16(e.count)] + e.map { UInt16($0) } }
        words[1] = UInt16(2 * words.count)
        longest = max(longest, 2 * words.count)
        expectedWords += words
    }
    let header = a.withUnsafeBytes { raw in (0..<4).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self) } }
    #expect(header == [20240522, 1, 2, Int32(longest)])
    let words = a.withUnsafeBytes { raw in (0..<((a.count - 1024) / 2)).map { raw.loadUnaligned(fromByteOffset: 1024 + 2 * $0, as: UInt16.self) } }
    #expect(words == expectedWords)
}

@Test func hellaSwagAndEvalFileErrors() throws {
    let dir = TokenizerTestData.temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try PrepareTestData.writeText(dir + "/five.txt", "ctx\n1\na\nb\nc\n")
    #expect { try readHellaSwag(dir + "/five.txt") } throws: { ($0 as? LLMError)?.message.contains("not a multiple of 6") == true }
    try PrepareTestData.writeText(dir + "/label.txt", "ctx\n7\na\nb\nc\nd\n")
    #expect { try readHellaSwag(dir + "/label.txt") } throws: { ($0 as? LLMError)?.message.hasPrefix(dir + "/label.txt:2: label '7'") == true }
    try PrepareTestData.writeText(dir + "/e.jsonl", "{\"ctx\": \"c\", \"label\": 0, \"endings\": [\"a\", \"b\"]}\n")
    #expect { try readHellaSwag(dir + "/e.jsonl") } throws: { ($0 as? LLMError)?.message.hasPrefix(dir + "/e.jsonl:1: \"endings\"") == true }

    let ok = [EvalExample(label: 1, context: [1, 2, 3], completions: [[4], [5, 6], [7], [8, 9, 10]])]
    try EvalFile.write(dir + "/ok.bin", examples: ok)
    #expect(try EvalFile.read(dir + "/ok.bin") == ok)
    let bytes = try readFileBytes(dir + "/ok.bin")
    func expectBad(_ mutate: (inout [UInt8]) -> Void, _ fragment: String) throws {
        var b = bytes
        mutate(&b)
        try Data(b).write(to: URL(fileURLWithPath: dir + "/bad.bin"))
        #expect { try EvalFile.read(dir + "/bad.bin") } throws: { ($0 as? LLMError)?.message.contains(fragment) == true }
    }
    try expectBad({ $0[0] = 0 }, "bad magic")
    try expectBad({ $0[1024] = 0 }, "65535 marker")
    try expectBad({ $0[1028] = 5 }, "says it is example 5")
    try expectBad({ $0.removeLast(2) }, "truncated")
    try expectBad({ $0 += [0, 0] }, "trailing bytes")
    try expectBad({ $0[12] = 99 }, "longest example")
    try expectBad({ $0[1030] = 4 }, "label 4 but 4 completions")
    #expect(throws: LLMError.self) { try EvalFile.read(dir + "/ok.bin", vocabSize: 5) }
    #expect(throws: LLMError.self) {
        try EvalFile.write(dir + "/x.bin", examples: [EvalExample(label: 0, context: [70000], completions: [[1]])])
    }
}
