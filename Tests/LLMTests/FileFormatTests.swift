// llm.c file formats: round trips, the reference files, and every malformed-file case.

import Foundation
import Testing
@testable import LLM

@Suite struct CheckpointTests {
    let tinyConfig = GPT2Config(maxSeqLen: 64, vocabSize: 500, paddedVocabSize: 512, numLayers: 2, numHeads: 4, channels: 64)

    @Test func readsReferenceCheckpoints() throws {
        let (config, precision, params) = try CheckpointFile.read(fixture("tiny.bin"))
        #expect(config == tinyConfig)
        #expect(precision == .fp32)
        let layout = ParameterLayout(config)
        #expect(params.count == layout.count)
        // Pad rows of wte are zero; layernorm weights of a fresh GPT-2 are one.
        let wte = layout.range(.wte)
        #expect(params[wte].suffix((512 - 500) * 64).allSatisfy { $0 == 0 })
        #expect(params[layout.range(.lnfw)].allSatisfy { $0 == 1 })

        let (config16, precision16, params16) = try CheckpointFile.read(fixture("tiny_bf16.bin"))
        #expect(config16 == tinyConfig)
        #expect(precision16 == .bf16)
        // The bf16 file holds round-to-nearest-even of the fp32 weights.
        for i in 0 ..< params.count {
            #expect(bf16FromFloat(params[i]) == bf16FromFloat(params16[i]) && floatFromBF16(bf16FromFloat(params[i])) == params16[i])
            if floatFromBF16(bf16FromFloat(params[i])) != params16[i] { break }
        }
    }

    @Test func roundTripBothVersions() throws {
        let dir = temporaryDirectory()
        let (config, _, params) = try CheckpointFile.read(fixture("tiny.bin"))
        try CheckpointFile.write(dir + "/a.bin", config: config, parameters: params, precision: .fp32)
        #expect(try readFileBytes(dir + "/a.bin") == readFileBytes(fixture("tiny.bin")))
        try CheckpointFile.write(dir + "/b.bin", config: config, parameters: params, precision: .bf16)
        #expect(try readFileBytes(dir + "/b.bin") == readFileBytes(fixture("tiny_bf16.bin")))
        #expect(!fileExists(dir + "/a.bin.tmp"))
    }

    func expectError(_ bytes: [UInt8], contains: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let path = temporaryDirectory() + "/bad.bin"
        writeBytes(path, bytes)
        do {
            _ = try CheckpointFile.read(path)
            Issue.record("no error for a file that should fail with '\(contains)'", sourceLocation: sourceLocation)
        } catch let e as LLMError {
            #expect(e.message.contains(path), sourceLocation: sourceLocation)
            #expect(e.message.contains(contains), "\(e.message)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func malformedCheckpointsAreRefused() throws {
        let good = try readFileBytes(fixture("tiny.bin"))
        func patched(_ slot: Int, _ value: Int32) -> [UInt8] {
            var b = good
            withUnsafeBytes(of: value.littleEndian) { for i in 0 ..< 4 { b[slot * 4 + i] = $0[i] } }
            return b
        }
        expectError(Array(good.prefix(100)), contains: "too short")
        expectError(patched(0, 1234), contains: "bad magic 1234")
        expectError(patched(1, 4), contains: "version 4")
        expectError(Array(good.dropLast(4)), contains: "truncated")
        expectError(good + [0, 0, 0, 0], contains: "trailing")
        expectError(patched(5, 3), contains: "not divisible")          // 64 channels, 3 heads
        expectError(patched(7, 100), contains: "padded vocab")         // Vp < V
        expectError(patched(4, 0), contains: "layer count")
        expectError(patched(2, 64 * 2), contains: "needs")              // maxT disagrees with the size
        expectError(patched(1, 5), contains: "needs")                    // a v3 payload under a v5 header
    }

    @Test func missingFileIsNamed() {
        #expect(throws: LLMError("/nonexistent/model.bin: no such file")) {
            _ = try CheckpointFile.read("/nonexistent/model.bin")
        }
    }
}

@Suite struct TokenShardTests {
    @Test func roundTripAndValidation() throws {
        let dir = temporaryDirectory()
        let tokens: [UInt16] = (0 ..< 1000).map { UInt16($0 * 37 % 50257) }
        try TokenShard.write(dir + "/s.bin", tokens: tokens)
        #expect(try TokenShard.read(dir + "/s.bin") == tokens)
        let bytes = try readFileBytes(dir + "/s.bin")
        #expect(bytes.count == 1024 + 2000)

        func fails(_ b: [UInt8], _ text: String, vocab: Int? = nil) {
            let p = dir + "/bad.bin"
            writeBytes(p, b)
            do { _ = try TokenShard.read(p, vocabSize: vocab); Issue.record("no error: \(text)") } catch let e as LLMError {
                #expect(e.message.hasPrefix(p + ":"))
                #expect(e.message.contains(text), "\(e.message)")
            } catch { Issue.record("\(error)") }
        }
        fails(Array(bytes.prefix(10)), "too short")
        var badMagic = bytes; badMagic[0] = 1
        fails(badMagic, "bad magic")
        var v2 = bytes; v2[4] = 2
        fails(v2, "version 2")
        fails(Array(bytes.dropLast(2)), "truncated")
        fails(bytes + [1, 2], "trailing")
        fails(bytes, "outside the vocabulary", vocab: 100)
    }
}

@Suite struct DebugStateTests {
    @Test func readsReference() throws {
        let (config, _, _) = try CheckpointFile.read(fixture("tiny.bin"))
        let state = try DebugState(path: fixture("tiny_debug_state.bin"), config: config)
        #expect(state.B == 4 && state.T == 32)
        #expect(abs(state.loss - 6.252352714538574) < 1e-6)
        #expect(state.gradients.count == ParameterLayout(config).count)
    }

    @Test func wrongModelIsRefused() throws {
        let other = GPT2Config(maxSeqLen: 64, vocabSize: 500, paddedVocabSize: 512, numLayers: 3, numHeads: 4, channels: 64)
        #expect(throws: LLMError.self) { _ = try DebugState(path: fixture("tiny_debug_state.bin"), config: other) }
        let bytes = try readFileBytes(fixture("tiny_debug_state.bin"))
        let p = temporaryDirectory() + "/d.bin"
        writeBytes(p, Array(bytes.dropLast(8)))
        let (config, _, _) = try CheckpointFile.read(fixture("tiny.bin"))
        do { _ = try DebugState(path: p, config: config); Issue.record("no error") } catch let e as LLMError {
            #expect(e.message.contains("truncated"))
        }
    }
}

@Suite struct ConfigTests {
    @Test func gpt2SmallLayout() throws {
        let c = try GPT2Config.fromDescriptor("d12")
        let layout = ParameterLayout(c)
        // Figures of llm.c's reference table for GPT-2 124M.
        #expect(layout.count == 124_475_904)
        #expect(layout.offset(.qkvw) == 39_438_336)
        #expect(layout.offset(.fcprojb) == 124_465_152)
        #expect(layout.unpaddedCount == 124_439_808)
        #expect(c.paddedVocabSize == 50304)
        #expect(throws: LLMError.self) { _ = try GPT2Config.fromDescriptor("d13") }
    }
}
