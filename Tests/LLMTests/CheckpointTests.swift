// The training-state file and the checkpoint folder: round trips, refusal of damaged or mismatched
// files, fall-back over an unfinished save, and rotation.

import Foundation
import Testing
@testable import LLM

/// A tiny GPT-2: N = 128*8 + 8*8 + 1 layer of small tensors.
private let tinyConfig = GPT2Config(maxSeqLen: 8, vocabSize: 10, paddedVocabSize: 128, numLayers: 1,
                                    numHeads: 2, channels: 8)

/// A state with every part filled by values that depend on `seed`, so two states differ.
private func sampleState(step: Int, seed: Float = 1, master: Bool = true) -> TrainingState {
    let n = ParameterLayout(tinyConfig).count
    var s = TrainingState(step: step, config: tinyConfig,
                          m: (0 ..< n).map { Float($0) * 0.001 * seed },
                          v: (0 ..< n).map { Float($0 % 97) * 1e-6 * seed },
                          masterWeights: master ? (0 ..< n).map { sin(Float($0) * seed) } : nil)
    s.batchSize = 4
    s.sequenceLength = 8
    s.randomStates = [0x1234_5678_9abc_def0, 13_371_337, UInt64(step)]
    s.loaderShardIndex = 2
    s.loaderSampleIndex = 41 + step
    s.shuffleRandomState = (0 ..< 625).map { UInt32($0 * 7 + step) }
    s.shardOrder = [2, 0, 1]
    s.sampleOrder = (0 ..< 50).map { Int32((37 * $0 + step) % 50) }
    var detector = OutlierDetector()
    for i in 0 ..< 130 { _ = detector.update(Double(i) * 0.1) }
    s.outlierDetectors = detector.snapshot + OutlierDetector().snapshot
    return s
}

private func parameters(seed: Float) -> [Float] {
    (0 ..< ParameterLayout(tinyConfig).count).map { cos(Float($0) * 0.37 + seed) * 0.02 }
}

/// Runs `body` and returns the LLMError message it throws (nil if it does not throw).
private func errorMessage(_ body: () throws -> Void) -> String? {
    do { try body() } catch let e as LLMError { return e.message } catch { return "\(error)" }
    return nil
}

private func flipByte(_ path: String, at offset: Int) throws {
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    data[offset] ^= 0x40
    try data.write(to: URL(fileURLWithPath: path))
}

// MARK: - State file

@Test func trainingStateRoundTrip() throws {
    let dir = TestDirectory()
    for master in [true, false] {
        let state = sampleState(step: 123, master: master)
        try state.write(dir.file("state.bin"))
        let back = try TrainingState.read(dir.file("state.bin"), config: tinyConfig)
        #expect(back == state)
        let detectors = try OutlierDetector(snapshot: Array(back.outlierDetectors[0 ..< OutlierDetector.snapshotCount]))
        #expect(detectors.snapshot == Array(state.outlierDetectors[0 ..< OutlierDetector.snapshotCount]))
    }
    #expect(!FileManager.default.fileExists(atPath: dir.file("state.bin.tmp")))
}

@Test func truncatedStateIsRefused() throws {
    let dir = TestDirectory()
    let path = dir.file("state_00000010.bin")
    try sampleState(step: 10).write(path)
    let size = try #require(fileSize(path))
    for keep in [size - 1, size - 1000, 2000, 100] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let cut = dir.file("cut.bin")
        try data.prefix(keep).write(to: URL(fileURLWithPath: cut))
        let message = try #require(errorMessage { _ = try TrainingState.read(cut) })
        #expect(message.hasPrefix(cut + ": "))
        #expect(message.contains("truncated"))
    }
}

@Test func flippedByteInStateIsRefused() throws {
    let dir = TestDirectory()
    let path = dir.file("state_00000010.bin")
    let size = try { try sampleState(step: 10).write(path); return try #require(fileSize(path)) }()
    // One byte in each region: a header count, the config, m, master weights, the shuffle words, the trailer.
    for offset in [2 * 4, 4 * 13, 1024 + 5, 1024 + 9000, size - 300, size - 3] {
        try sampleState(step: 10).write(path)
        try flipByte(path, at: offset)
        let message = try #require(errorMessage { _ = try TrainingState.read(path) })
        #expect(message.hasPrefix(path + ": "))
        #expect(message.contains("damaged") || message.contains("truncated"))
    }
}

@Test func mismatchedStateIsRefused() throws {
    let dir = TestDirectory()
    let path = dir.file("state.bin")
    try sampleState(step: 1).write(path)
    var other = tinyConfig
    other.channels = 16
    let message = try #require(errorMessage { _ = try TrainingState.read(path, config: other) })
    #expect(message.contains("written for") && message.contains("C=8") && message.contains("C=16"))

    // Wrong N on writing: optimizer state of another size.
    var bad = sampleState(step: 1)
    bad.m.removeLast(); bad.v.removeLast(); bad.masterWeights!.removeLast()
    #expect(throws: LLMError.self) { try bad.write(path) }

    // llm.c's own state file is recognised and refused by name.
    var header = [Int32](repeating: 0, count: 256)
    header[0] = 20240527
    header[1] = 1
    try writeFileAtomically(dir.file("llmc.bin"), header.withUnsafeBytes { Array($0) } + [UInt8](repeating: 0, count: 64))
    let llmc = try #require(errorMessage { _ = try TrainingState.read(dir.file("llmc.bin")) })
    #expect(llmc.contains("llm.c's training state"))
}

@Test func checksumIsTheSameInAnyPieces() {
    let bytes: [UInt8] = (0 ..< 1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    var whole = Checksum64()
    whole.update(bytes)
    for split in [[1], [31, 32, 33], [5, 5, 5, 100, 7], [999]] {
        var pieces = Checksum64()
        var start = 0
        for n in split { pieces.update(Array(bytes[start ..< start + n])); start += n }
        pieces.update(Array(bytes[start...]))
        #expect(pieces.finalize() == whole.finalize())
    }
    // Any single changed byte changes it, and so does a different length with the same zero padding.
    for i in [0, 31, 32, 500, 999] {
        var changed = bytes
        changed[i] ^= 1
        var c = Checksum64()
        c.update(changed)
        #expect(c.finalize() != whole.finalize())
    }
    var a = Checksum64(), b = Checksum64()
    a.update([1, 2, 3])
    b.update([1, 2, 3, 0])
    #expect(a.finalize() != b.finalize())
}

// MARK: - Checkpoint folder

@Test func checkpointRoundTripAndLatest() throws {
    let dir = TestDirectory()
    let checkpoints = try CheckpointDirectory(dir.file("run/checkpoints"))  // created, parents too
    #expect(try checkpoints.latestComplete() == nil)
    for step in [10, 20, 30] {
        try checkpoints.save(state: sampleState(step: step, seed: Float(step)), parameters: parameters(seed: Float(step)),
                             precision: .fp32)
    }
    #expect(try checkpoints.completeSteps() == [10, 20, 30])
    let latest = try #require(try checkpoints.latestComplete(config: tinyConfig))
    #expect(latest.step == 30)
    #expect(latest.modelPath == dir.file("run/checkpoints/model_00000030.bin"))
    var expected = sampleState(step: 30, seed: 30)
    expected.modelChecksum = latest.state.modelChecksum
    #expect(latest.state == expected)
    #expect(latest.state.modelChecksum != 0)
    #expect(try CheckpointFile.read(latest.modelPath).parameters == parameters(seed: 30))
    #expect(try latest.readParameters() == expected.masterWeights!)
    // The model file is llm.c's format: its reader's header check passes.
    #expect(try CheckpointFile.readHeader(latest.modelPath).config == tinyConfig)
}

@Test func missingDoneMarkerFallsBackToThePreviousCheckpoint() throws {
    let dir = TestDirectory()
    let checkpoints = try CheckpointDirectory(dir.path)
    for step in [10, 20] {
        try checkpoints.save(state: sampleState(step: step), parameters: parameters(seed: 1), precision: .bf16)
    }
    // A kill after the model and state were written but before DONE_00000020.
    try removeFile(checkpoints.donePath(step: 20))
    try writeFileAtomically(dir.file("model_00000030.bin.tmp"), [1, 2, 3])  // a kill mid-write
    #expect(try checkpoints.latestComplete(config: tinyConfig)?.step == 10)

    // A marker whose files were removed (e.g. by hand) is skipped, with a note.
    try checkpoints.save(state: sampleState(step: 40), parameters: parameters(seed: 1), precision: .bf16)
    try removeFile(checkpoints.statePath(step: 40))
    let c = try #require(try checkpoints.latestComplete(config: tinyConfig))
    #expect(c.step == 10)
    #expect(c.notes.count == 1 && c.notes[0].contains("state_00000040.bin"))
}

@Test func damagedCheckpointIsRefusedNamingTheFile() throws {
    let dir = TestDirectory()
    let checkpoints = try CheckpointDirectory(dir.path)
    for step in [10, 20] {
        try checkpoints.save(state: sampleState(step: step), parameters: parameters(seed: 1), precision: .fp32)
    }
    // A flipped byte in the model file: caught by the checksum kept in the state.
    try flipByte(checkpoints.modelPath(step: 20), at: 1024 + 77)
    var message = try #require(errorMessage { _ = try checkpoints.latestComplete(config: tinyConfig) })
    #expect(message.hasPrefix(checkpoints.modelPath(step: 20)))
    #expect(message.contains("damaged") && message.contains("DONE_00000020"))

    // A truncated state file.
    try checkpoints.save(state: sampleState(step: 30), parameters: parameters(seed: 1), precision: .fp32)
    try FileHandle(forWritingAtPath: checkpoints.statePath(step: 30))!.truncate(atOffset: 3000)
    message = try #require(errorMessage { _ = try checkpoints.latestComplete(config: tinyConfig) })
    #expect(message.hasPrefix(checkpoints.statePath(step: 30)) && message.contains("truncated"))

    // A run with another model shape is refused too.
    try checkpoints.save(state: sampleState(step: 40), parameters: parameters(seed: 1), precision: .fp32)
    var other = tinyConfig
    other.numLayers = 2
    message = try #require(errorMessage { _ = try checkpoints.latestComplete(config: other) })
    #expect(message.hasPrefix(checkpoints.statePath(step: 40)) && message.contains("written for"))
}

@Test func rotationKeepsLastKAndEveryMth() throws {
    let dir = TestDirectory()
    let checkpoints = try CheckpointDirectory(dir.path, keepLast: 2, keepEvery: 4)
    #expect(checkpoints.stepsToKeep([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == [4, 8, 9, 10])
    // A leftover of an interrupted save before the run resumed: removed by the next rotation.
    try writeFileAtomically(dir.file("model_00000003.bin"), [0])
    try writeFileAtomically(dir.file("state_00000003.bin.tmp"), [0])
    for step in 1 ... 10 {
        try checkpoints.save(state: sampleState(step: step, master: false), parameters: parameters(seed: 1),
                             precision: .bf16)
    }
    #expect(try checkpoints.completeSteps() == [4, 8, 9, 10])
    let expected = [4, 8, 9, 10].flatMap { s in
        [format("DONE_%08ld", s), format("model_%08ld.bin", s), format("state_%08ld.bin", s)]
    }.sorted()
    #expect(try listDirectory(dir.path) == expected)

    // keepLast 0 keeps everything (and deletes nothing).
    let all = try CheckpointDirectory(dir.file("all"))
    for step in 1 ... 4 {
        try all.save(state: sampleState(step: step, master: false), parameters: parameters(seed: 1), precision: .bf16)
    }
    #expect(try all.completeSteps() == [1, 2, 3, 4])
    #expect(throws: LLMError.self) { _ = try CheckpointDirectory(dir.path, keepLast: -1) }
}

@Test func savingAStepAgainReplacesIt() throws {
    let dir = TestDirectory()
    let checkpoints = try CheckpointDirectory(dir.path)
    try checkpoints.save(state: sampleState(step: 5, seed: 1), parameters: parameters(seed: 1), precision: .fp32)
    try checkpoints.save(state: sampleState(step: 5, seed: 2), parameters: parameters(seed: 2), precision: .fp32)
    let c = try #require(try checkpoints.latestComplete(config: tinyConfig))
    #expect(c.state.m == sampleState(step: 5, seed: 2).m)
    #expect(try CheckpointFile.read(c.modelPath).parameters == parameters(seed: 2))
}

@Test func directoryHelpers() throws {
    let dir = TestDirectory()
    try makeDirectories(dir.file("a/b/c/"))
    #expect(isDirectory(dir.file("a/b/c")))
    try makeDirectories(dir.file("a/b"))  // exists: fine
    try writeFileAtomically(dir.file("a/x"), [1])
    #expect(throws: LLMError.self) { try makeDirectories(dir.file("a/x")) }
    #expect(try listDirectory(dir.file("a")) == ["b", "x"])
    try removeFile(dir.file("a/x"))
    try removeFile(dir.file("a/x"))  // already gone: fine
    #expect(try listDirectory(dir.file("a")) == ["b"])
    #expect(throws: LLMError.self) { _ = try listDirectory(dir.file("nope")) }
    #expect(CheckpointDirectory.step(of: "DONE_00000120", prefix: "DONE_", suffix: "") == 120)
    #expect(CheckpointDirectory.step(of: "DONE_x", prefix: "DONE_", suffix: "") == nil)
    #expect(CheckpointDirectory.step(of: "model_00000120.bin.tmp", prefix: "model_", suffix: ".bin") == nil)
}
