// Kill and resume: a run stopped after a checkpoint and resumed from it prints the same losses,
// bit for bit, as a run that was never interrupted; damaged checkpoints are refused.

import Foundation
import Testing
@testable import LLM
@testable import LLMCPU

struct SimulatedKill: Error {}

/// Stops the run (as a kill would) once `killAfterStep` has been reported.
final class LossRecorder: TrainingObserver {
    var losses: [Int: Float] = [:]
    var killAfterStep: Int?
    var skipped: [Int] = []
    func trainStep(_ s: TrainStepReport) {
        losses[s.step] = s.loss
        if s.skipped { skipped.append(s.step) }
    }
    func validation(step: Int, loss: Float) {}
    func sample(step: Int, text: String) {}
    func message(_ text: String) {}
}

@Suite struct ResumeTests {
    let config = GPT2Config(maxSeqLen: 64, vocabSize: 500, paddedVocabSize: 512, numLayers: 2, numHeads: 4, channels: 64)

    func tokens() -> [UInt16] {
        var r = TestRandom(7)
        return (0 ..< 4000).map { _ in UInt16(r.next() % 500) }
    }

    func makeTrainer(dir: String, steps: Int, precision: CheckpointFile.Precision = .fp32) throws -> (Trainer, LossRecorder) {
        let model = try CPUModel(config: config, parameters: gpt2InitialParameters(config, seed: 42), B: 2, T: 16)
        let loader = try DataLoader(sources: [.memory(name: "random", tokens: tokens())], B: 2, T: 16,
                                    vocabSize: 500, shuffle: true, seed: 42)
        var o = TrainingOptions()
        o.B = 2; o.T = 16; o.totalBatchTokens = 64; o.steps = steps
        o.learningRate = 1e-3; o.warmupSteps = 3; o.finalLearningRateFraction = 0.1; o.weightDecay = 0.1
        o.valEvery = 0; o.sampleEvery = 0
        o.checkpointEvery = 5
        o.checkpointPrecision = precision
        let trainer = try Trainer(model: model, train: loader, val: nil, options: o)
        trainer.checkpoints = try CheckpointDirectory(dir, keepLast: 2)
        let recorder = LossRecorder()
        trainer.observer = recorder
        return (trainer, recorder)
    }

    /// fp32 model files; and bf16 model files with the fp32 master weights in the state file (the
    /// GPU's default), which must resume just as exactly.
    @Test(arguments: [CheckpointFile.Precision.fp32, .bf16])
    func killAndResumeIsBitIdentical(precision: CheckpointFile.Precision) throws {
        let straightDir = temporaryTestDirectory(), resumedDir = temporaryTestDirectory()
        let (straight, straightLosses) = try makeTrainer(dir: straightDir, steps: 20, precision: precision)
        try straight.run()
        #expect(straightLosses.losses.count == 20)

        // First run: killed during step 12, after the checkpoint of step 10 was written.
        let (first, _) = try makeTrainer(dir: resumedDir, steps: 20, precision: precision)
        first.stopAfterStep = 12
        #expect(throws: TrainingStopped.self) { try first.run() }
        // A fresh process: new model and loader, resumed from the newest complete checkpoint.
        let (second, resumedLosses) = try makeTrainer(dir: resumedDir, steps: 20, precision: precision)
        let checkpoint = try #require(try CheckpointDirectory(resumedDir).latestComplete(config: config))
        #expect(checkpoint.step == 10)
        try second.resume(from: checkpoint)
        try second.run()
        for step in 10 ..< 20 {
            #expect(resumedLosses.losses[step]?.bitPattern == straightLosses.losses[step]?.bitPattern, "step \(step)")
        }
        #expect(try second.model.readParameters() == straight.model.readParameters())
        // Rotation kept the last two complete checkpoints.
        #expect(try CheckpointDirectory(resumedDir).completeSteps() == [15, 20])
    }

    @Test func resumeRefusesAnotherShape() throws {
        let dir = temporaryTestDirectory()
        let (first, _) = try makeTrainer(dir: dir, steps: 5)
        try first.run()
        let checkpoint = try #require(try CheckpointDirectory(dir).latestComplete(config: config))
        let model = try CPUModel(config: config, parameters: gpt2InitialParameters(config), B: 4, T: 8)
        let loader = try DataLoader(sources: [.memory(name: "random", tokens: tokens())], B: 4, T: 8,
                                    vocabSize: 500, shuffle: true)
        var o = TrainingOptions()
        o.B = 4; o.T = 8; o.steps = 5
        let other = try Trainer(model: model, train: loader, val: nil, options: o)
        #expect(throws: LLMError.self) { try other.resume(from: checkpoint) }
    }

    /// An update skipped as an outlier leaves every weight exactly as it was.
    @Test func skippedUpdateLeavesWeightsUntouched() throws {
        let dir = temporaryTestDirectory()
        let (trainer, recorder) = try makeTrainer(dir: dir, steps: 1)
        // A full window of identical losses far below the first real one makes its z-score huge.
        for _ in 0 ..< OutlierDetector.windowSize { _ = trainer.lossDetector.update(0.5) }
        var o = trainer.options
        o.skipLossZ = 3
        let skipping = try Trainer(model: trainer.model, train: trainer.train, val: nil, options: o)
        skipping.lossDetector = trainer.lossDetector
        skipping.observer = recorder
        let before = try trainer.model.readParameters()
        try skipping.run()
        #expect(recorder.skipped == [0])
        #expect(try trainer.model.readParameters() == before)
    }
}

func temporaryTestDirectory() -> String {
    let dir = FileManager.default.temporaryDirectory.path + "/llm-swift-cpu-\(UInt32.random(in: 0 ... .max))"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}
