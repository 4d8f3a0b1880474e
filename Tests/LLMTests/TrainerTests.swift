// The training loop's bookkeeping, on a stand-in backend: accumulation, clipping, schedule,
// evaluation points and sampling.

import Testing
@testable import LLM

final class RecordingObserver: TrainingObserver {
    var steps: [TrainStepReport] = []
    var validations: [(Int, Float)] = []
    var samples: [(Int, String)] = []
    func trainStep(_ s: TrainStepReport) { steps.append(s) }
    func validation(step: Int, loss: Float) { validations.append((step, loss)) }
    func sample(step: Int, text: String) { samples.append((step, text)) }
    func message(_ text: String) {}
}

@Suite struct TrainerTests {
    func loader(B: Int, T: Int, n: Int = 200) throws -> DataLoader {
        try DataLoader(sources: [.memory(name: "mem", tokens: (0 ..< n).map { UInt16($0 % 50) })], B: B, T: T,
                       vocabSize: 60, shuffle: false)
    }

    @Test func loopAccumulatesClipsAndEvaluates() throws {
        let model = MockBackend(config: mockConfig, B: 2, T: 4)
        var o = TrainingOptions()
        o.B = 2; o.T = 4; o.totalBatchTokens = 24; o.steps = 6
        o.learningRate = 0.5
        o.schedule = .linear; o.warmupSteps = 6
        o.valEvery = 3; o.valSteps = 2; o.sampleEvery = 4; o.sampleTokens = 3
        o.gradClip = 1
        let trainer = try Trainer(model: model, train: loader(B: 2, T: 4), val: loader(B: 2, T: 4), options: o)
        let obs = RecordingObserver()
        trainer.observer = obs
        trainer.decode = { $0.map(String.init).joined(separator: ",") }
        let losses = try trainer.run()
        #expect(trainer.gradAccumSteps == 3)
        #expect(losses.count == 6 && obs.steps.count == 6)
        // Each micro-step's forward is a training forward told the accumulation (validation is not).
        #expect(model.trainingForwards == [Int](repeating: 3, count: 18))
        // Every step's gradient is 1 per parameter (3 micro-steps of 1/3): norm sqrt(N), clipped to 1.
        let n = Float(ParameterLayout(mockConfig).count)
        #expect(abs(obs.steps[0].gradNorm - n.squareRoot()) < 1e-2)
        #expect(model.updates.map(\.t) == [1, 2, 3, 4, 5, 6])
        #expect(abs(model.updates[0].gradScale - 1 / n.squareRoot()) < 1e-6)
        let expectedRates: [Float] = (0 ..< 6).map { (step: Int) -> Float in 0.5 * Float(step + 1) / 6 }
        #expect(model.updates.map(\.learningRate) == expectedRates)
        #expect(obs.validations.map(\.0) == [0, 3, 6])
        #expect(obs.samples.map(\.0) == [4, 6])
        // The mock's logits pick (last token + 1): EOT 50256 % 60 = 36, so 37, 38, 39.
        #expect(obs.samples[0].1 == "37,38,39")
    }

    /// A step's loss is the mean of its micro-steps' forward losses (read after the micro-steps,
    /// from trainingLosses()), summed in order in Float as the trainer always did.
    @Test func stepLossIsTheMeanOfItsMicroSteps() throws {
        let model = MockBackend(config: mockConfig, B: 2, T: 4)
        model.lossOf = { i, t in Float(i % 5) + Float(t % 7) * 0.25 }
        var o = TrainingOptions()
        o.B = 2; o.T = 4; o.totalBatchTokens = 24; o.steps = 4
        o.valEvery = 0; o.sampleEvery = 0
        let trainer = try Trainer(model: model, train: loader(B: 2, T: 4), val: nil, options: o)
        let losses = try trainer.run()
        let batches = try loader(B: 2, T: 4)
        var expected: [Float] = []
        for _ in 0 ..< 4 {
            var sum: Float = 0
            for _ in 0 ..< 3 {
                try batches.nextBatch()
                var batchSum: Float = 0
                for j in 0 ..< 8 { batchSum += model.lossOf(batches.inputs[j], batches.targets[j]) }
                sum += batchSum / 8
            }
            expected.append(sum / 3)
        }
        #expect(losses == expected)
        #expect(Set(losses).count == 4)  // the batches differ, so a stale or misordered loss would show
    }

    @Test func totalBatchMustDivide() throws {
        let model = MockBackend(config: mockConfig, B: 2, T: 4)
        var o = TrainingOptions()
        o.B = 2; o.T = 4; o.totalBatchTokens = 20
        #expect(throws: LLMError.self) { _ = try Trainer(model: model, train: loader(B: 2, T: 4), val: nil, options: o) }
    }

    @Test func oneEpochByDefault() throws {
        let model = MockBackend(config: mockConfig, B: 2, T: 4)
        var o = TrainingOptions()
        o.B = 2; o.T = 4
        let trainer = try Trainer(model: model, train: loader(B: 2, T: 4, n: 81), val: nil, options: o)
        #expect(trainer.steps == 10)
    }
}
