// The data loader: llm.c's batch layout, shuffling, epochs, and exact resume.

import Testing
@testable import LLM

@Suite struct DataLoaderTests {
    func shard(_ dir: String, _ name: String, _ n: Int, base: Int) throws -> String {
        let path = dir + "/" + name
        try TokenShard.write(path, tokens: (0 ..< n).map { UInt16(base + $0) })
        return path
    }

    @Test func sequentialBatchesFollowLlmcLayout() throws {
        let dir = temporaryDirectory()
        let p = try shard(dir, "a.bin", 100, base: 0)
        let loader = try DataLoader(sources: [.file(p)], B: 2, T: 4, vocabSize: 50257, shuffle: false)
        #expect(loader.batchesPerEpoch == 12)  // (100 - 1) / 8
        try loader.nextBatch()
        #expect(loader.inputs == [0, 1, 2, 3, 4, 5, 6, 7])
        #expect(loader.targets == [1, 2, 3, 4, 5, 6, 7, 8])
        try loader.nextBatch()
        #expect(loader.inputs.first == 8)
        for _ in 0 ..< 10 { try loader.nextBatch() }
        #expect(loader.inputs.first == 88)
        try loader.nextBatch()  // wraps to a new epoch
        #expect(loader.inputs.first == 0)
        #expect(loader.epoch == 1)
    }

    @Test func ranksReadInterleavedSlices() throws {
        let dir = temporaryDirectory()
        let p = try shard(dir, "a.bin", 100, base: 0)
        let r1 = try DataLoader(sources: [.file(p)], B: 1, T: 4, vocabSize: 50257, rank: 1, processCount: 2, shuffle: false)
        try r1.nextBatch()
        #expect(r1.inputs == [4, 5, 6, 7])
        try r1.nextBatch()
        #expect(r1.inputs == [12, 13, 14, 15])
    }

    @Test func shufflingVisitsEveryBatchOncePerEpoch() throws {
        let dir = temporaryDirectory()
        let a = try shard(dir, "a.bin", 81, base: 0), b = try shard(dir, "b.bin", 41, base: 1000)
        let loader = try DataLoader(sources: [.file(a), .file(b)], B: 1, T: 8, vocabSize: 50257, shuffle: true)
        #expect(loader.batchesPerEpoch == 15)
        var firsts: [Int32] = []
        for _ in 0 ..< 15 { try loader.nextBatch(); firsts.append(loader.inputs[0]) }
        let fromA: [Int32] = (0 ..< 10).map { Int32($0 * 8) }
        let fromB: [Int32] = (0 ..< 5).map { Int32(1000 + $0 * 8) }
        let expected = fromA + fromB
        #expect(firsts.sorted() == expected)
        #expect(firsts != expected)
    }

    @Test func resumeContinuesExactly() throws {
        let dir = temporaryDirectory()
        let a = try shard(dir, "a.bin", 161, base: 0), b = try shard(dir, "b.bin", 81, base: 2000)
        let sources: [TokenSource] = [.file(a), .file(b)]
        let straight = try DataLoader(sources: sources, B: 2, T: 4, vocabSize: 50257, shuffle: true)
        var expected: [[Int32]] = []
        for _ in 0 ..< 70 { try straight.nextBatch(); expected.append(straight.inputs) }

        let first = try DataLoader(sources: sources, B: 2, T: 4, vocabSize: 50257, shuffle: true)
        for _ in 0 ..< 23 { try first.nextBatch() }
        let saved = first.position
        let second = try DataLoader(sources: sources, B: 2, T: 4, vocabSize: 50257, shuffle: true)
        try second.restore(saved)
        for i in 23 ..< 70 {
            try second.nextBatch()
            #expect(second.inputs == expected[i], "batch \(i)")
        }
    }

    @Test func badInputsAreNamed() throws {
        let dir = temporaryDirectory()
        let small = try shard(dir, "small.bin", 5, base: 0)
        #expect(throws: LLMError.self) {
            _ = try DataLoader(sources: [.file(small)], B: 2, T: 4, vocabSize: 50257, shuffle: false)
        }
        let big = try shard(dir, "big.bin", 100, base: 60000)
        let loader = try DataLoader(sources: [.file(big)], B: 2, T: 4, vocabSize: 50257, shuffle: false)
        do { try loader.nextBatch(); Issue.record("no error") } catch let e as LLMError {
            #expect(e.message.contains("big.bin") && e.message.contains("outside the vocabulary"))
        }
        #expect(throws: LLMError.self) { _ = try expandGlob(dir + "/nothing_*.bin") }
        #expect(try expandGlob(dir + "/*.bin") == [big, small])
    }
}
