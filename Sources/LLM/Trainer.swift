// The one training loop: data, gradient accumulation, schedule, clipping, evaluation, sampling
// and logging, written once for every backend (llm.c keeps two copies, CPU and GPU).

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Options

public struct TrainingOptions {
    public var B = 4
    public var T = 64
    /// Tokens per optimizer step; a multiple of B*T (gradient accumulation). nil = B*T.
    public var totalBatchTokens: Int? = nil
    /// Optimizer steps; nil = one epoch of the training data.
    public var steps: Int? = nil
    public var learningRate: Float = 3e-4
    public var schedule: LearningRateSchedule.Kind = .cosine
    public var warmupSteps = 0
    /// The rate decays to learningRate * finalLearningRateFraction.
    public var finalLearningRateFraction: Float = 1
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    public var epsilon: Float = 1e-8
    public var weightDecay: Float = 0
    public var decayAllTensors = false
    /// Clip the global gradient norm to this (0 = no clipping).
    public var gradClip: Float = 1
    public var valEvery = 20
    public var valSteps = 20
    public var sampleEvery = 20
    public var sampleTokens = 64
    public var sampleSeed: UInt64 = 1337
    /// Train repeatedly on the first validation batch (llm.c's -a 1), to debug a model.
    public var overfitSingleBatch = false
    /// Skip an update whose loss / grad-norm z-score (over the last 128 steps) exceeds this; 0 = off.
    public var skipLossZ: Double = 0
    public var skipNormZ: Double = 0
    /// With `checkpoints` set: save a checkpoint every N steps (0 = only at the end) and at the end.
    public var checkpointEvery = 0
    public var checkpointPrecision: CheckpointFile.Precision = .fp32

    public init() {}
}

// MARK: - Hooks

/// What the loop reports; the CLI prints it and writes main.log.
public protocol TrainingObserver: AnyObject {
    func trainStep(_ s: TrainStepReport)
    func validation(step: Int, loss: Float)
    func sample(step: Int, text: String)
    func message(_ text: String)
}

public struct TrainStepReport {
    public var step: Int             // 0-based
    public var steps: Int
    public var loss: Float
    public var lossZ: Double         // z-score against the last 128 steps (NaN while filling)
    public var gradNorm: Float
    public var normZ: Double
    public var learningRate: Float
    public var milliseconds: Double
    public var tokensPerSecond: Double
    public var mfuPercent: Double?   // GPU only
    public var skipped: Bool
    public var etaSeconds: Double
}

/// Thrown when the loop stops early on request (`stopAfterStep`).
public struct TrainingStopped: Error {
    public let step: Int
}

// MARK: - Trainer

public final class Trainer {
    public let model: GPT2Backend
    public let options: TrainingOptions
    public let train: DataLoader
    public let val: DataLoader?
    public let gradAccumSteps: Int
    public let steps: Int
    public let schedule: LearningRateSchedule
    /// Outlier detectors for the loss and the gradient norm (saved in training checkpoints).
    public var lossDetector = OutlierDetector()
    public var normDetector = OutlierDetector()
    /// Decodes tokens for samples; nil prints token ids.
    public var decode: (([Int32]) -> String)?
    public var eotToken: Int32 = 50256
    public weak var observer: TrainingObserver?
    /// The step the loop starts at (after a resume).
    public var startStep = 0
    /// Stop with `TrainingStopped` once this step's update is done (tests use it as a kill).
    public var stopAfterStep: Int?
    /// Where checkpoints go (model_, state_, DONE_ files); nil = no checkpoints.
    public var checkpoints: CheckpointDirectory?
    /// Called at each evaluation point (step % valEvery == 0 and the last step) after val loss.
    public var evaluate: ((Int) throws -> Void)?

    public init(model: GPT2Backend, train: DataLoader, val: DataLoader?, options: TrainingOptions) throws {
        self.model = model
        self.train = train
        self.val = val
        self.options = options
        let bt = options.B * options.T
        let total = options.totalBatchTokens ?? bt
        if total <= 0 || total % bt != 0 {
            throw LLMError("--total-batch \(total) must be a positive multiple of batch x seq-len = \(bt)")
        }
        gradAccumSteps = total / bt
        let epochSteps = max(1, train.batchesPerEpoch / gradAccumSteps)
        steps = options.steps ?? epochSteps
        if steps < 0 { throw LLMError("--steps \(steps) must be >= 0") }
        schedule = LearningRateSchedule(kind: options.schedule, learningRate: options.learningRate,
                                        warmupSteps: options.warmupSteps, totalSteps: steps,
                                        finalFraction: options.finalLearningRateFraction)
        try schedule.validate(flag: "--lr")
    }

    // MARK: Evaluation

    /// Mean loss over `valSteps` batches from the start of the validation data.
    public func validationLoss() throws -> Float? {
        guard let val else { return nil }
        val.reset()
        let n = min(options.valSteps, val.batchesPerEpoch)
        if n <= 0 { return nil }
        var sum: Float = 0
        for _ in 0 ..< n {
            try val.nextBatch()
            sum += try model.forward(inputs: val.inputs, targets: val.targets, B: options.B, T: options.T)
        }
        return sum / Float(n)
    }

    /// Generates `sampleTokens` tokens after an EOT with llm.c's xorshift sampler (seed 1337 at
    /// each call, so samples are comparable across steps and with llm.c).
    public func sample() throws -> [Int32] {
        try Generator(model: model).generate(prompt: [eotToken], count: options.sampleTokens, seed: options.sampleSeed)
    }

    // MARK: The loop

    /// Runs steps startStep ..< steps, evaluating at the end as llm.c does (steps + 1 iterations,
    /// the last one only evaluates). Returns the train losses of the steps run.
    @discardableResult
    public func run() throws -> [Float] {
        let o = options
        var losses: [Float] = []
        var meter = ThroughputMeter(totalSteps: steps)
        let tokensPerStep = o.B * o.T * gradAccumSteps
        for step in startStep ... steps {
            let last = step == steps
            if val != nil && o.valEvery > 0 && (step % o.valEvery == 0 || last) {
                if let loss = try validationLoss() { observer?.validation(step: step, loss: loss) }
            }
            if o.valEvery > 0 && ((step > 0 && step % o.valEvery == 0) || last) { try evaluate?(step) }
            if o.sampleEvery > 0 && ((step > 0 && step % o.sampleEvery == 0) || last) {
                let generated = try sample()
                let text = decode?(generated) ?? generated.map(String.init).joined(separator: " ")
                observer?.sample(step: step, text: text)
            }
            if let checkpoints, step > startStep, last || (o.checkpointEvery > 0 && step % o.checkpointEvery == 0) {
                try saveCheckpoint(step: step, to: checkpoints, precision: o.checkpointPrecision)
                observer?.message("saved checkpoint " + checkpoints.modelPath(step: step))
            }
            if last { break }

            let t0 = monotonicSeconds()
            model.zeroGradients()
            // No loss is read inside the micro-steps, so a GPU backend never waits for the host:
            // the host queues each micro-step's work while the GPU still runs the one before.
            for _ in 0 ..< gradAccumSteps {
                let loader = o.overfitSingleBatch ? (val ?? train) : train
                if o.overfitSingleBatch { loader.reset() }
                try loader.nextBatch()
                try model.trainingForward(inputs: loader.inputs, targets: loader.targets, B: o.B, T: o.T,
                                          microSteps: gradAccumSteps)
                try model.backward(microSteps: gradAccumSteps)
            }
            let lr = schedule.learningRate(atStep: step)
            let norm = try model.gradientNorm()
            let microStepLosses = try model.trainingLosses()  // the norm has waited for the device already
            if microStepLosses.count != gradAccumSteps {
                throw LLMError("\(model.deviceDescription): \(microStepLosses.count) micro-step losses, expected \(gradAccumSteps)")
            }
            var lossSum: Float = 0
            for l in microStepLosses { lossSum += l }
            let loss = lossSum / Float(gradAccumSteps)
            let lossZ = lossDetector.update(Double(loss)), normZ = normDetector.update(Double(norm))
            let outlier = OutlierDetector.isOutlier(lossZ, threshold: o.skipLossZ)
                || OutlierDetector.isOutlier(normZ, threshold: o.skipNormZ)
            if outlier {
                observer?.message(format("step %d: loss z-score %.2f, grad-norm z-score %.2f: update skipped",
                                         Int32(step + 1), lossZ, normZ))
            }
            let skipped = try outlier || applyUpdate(step: step, loss: loss, norm: norm, lr: lr)
            let seconds = monotonicSeconds() - t0
            losses.append(loss)

            meter.record(step: step, seconds: seconds, tokens: tokensPerStep)
            let mfu = model.peakFLOPs.map {
                mfuPercent(config: model.config, sequenceLength: o.T, tokensPerSecond: Double(tokensPerStep) / seconds,
                           peakFlops: $0)
            }
            observer?.trainStep(TrainStepReport(
                step: step, steps: steps, loss: loss, lossZ: lossZ, gradNorm: norm, normZ: normZ, learningRate: lr,
                milliseconds: seconds * 1000, tokensPerSecond: meter.tokensPerSecond, mfuPercent: mfu,
                skipped: skipped, etaSeconds: meter.etaSeconds(afterStep: step)))
            if let stop = stopAfterStep, step >= stop { throw TrainingStopped(step: step) }
        }
        return losses
    }

    /// Clips and applies AdamW; returns true (skipped) when the loss or norm is not finite.
    func applyUpdate(step: Int, loss: Float, norm: Float, lr: Float) throws -> Bool {
        if !loss.isFinite || !norm.isFinite {
            observer?.message("step \(step + 1): loss \(loss), grad norm \(norm) is not finite; update skipped")
            return true
        }
        let o = options
        let scale: Float = (o.gradClip > 0 && norm > o.gradClip) ? o.gradClip / norm : 1
        try model.update(AdamWSettings(learningRate: lr, beta1: o.beta1, beta2: o.beta2, epsilon: o.epsilon,
                                       weightDecay: o.weightDecay, decayAllTensors: o.decayAllTensors,
                                       t: step + 1, gradScale: scale))
        return false
    }
}
