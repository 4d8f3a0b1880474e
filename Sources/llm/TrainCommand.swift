// `llm train`: llm.c's training run with long flag names; with no flags, a small GPT-2 on the
// bundled Tiny Shakespeare that shows the validation loss falling within a few minutes.

import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import LLM
import LLMCPU

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a GPT-2 (llm.c's train_gpt2 with long flag names).",
        discussion: """
        With no flags: a small GPT-2 (d2: 2 layers, 128 channels, GPT-2 vocabulary) trains for 300 \
        steps on the bundled data/tinyshakespeare.txt, tokenized at start-up and split as llm.c's recipe does \
        (first 32,768 tokens for validation), printing the validation loss and a sample as it goes.

        GPT-2 124M as llm.c trains it (its -b 64 -t 1024 -d 524288 -c 0.1 -l 0.0006 -q 0.0 -u 700
        -v 250 -h 1 -n 5000 -y 1 -e d12), on prepared FineWeb shards:
          llm train --train 'fineweb10B/fineweb_train_*.bin' --val 'fineweb10B/fineweb_val_*.bin' \\
            --model d12 --batch 64 --seq-len 1024 --total-batch 524288 --weight-decay 0.1 \\
            --lr 0.0006 --final-lr-fraction 0 --warmup 700 --val-every 250 --val-steps 20 \\
            --hellaswag out/hellaswag/hellaswag_val.bin --sample-every 20000 --sample-tokens 144 \\
            --output log124M --checkpoint-every 5000 --resume
        """)

    // MARK: Data and model
    @Option(help: "Training token shards (glob, comma-separated globs allowed). Default: the bundled Tiny Shakespeare text.")
    var train: String?
    @Option(help: "Validation token shards (glob). Default: the validation split of the bundled text, or none with --train.")
    var val: String?
    @OptionGroup var model: ModelOption<Defaults>
    @Option(help: "Text to train on when --train is not given (tokenized at start-up).")
    var text: String = "data/tinyshakespeare.txt"
    @OptionGroup var vocab: VocabOption

    // MARK: Batch and steps
    @OptionGroup var shape: ShapeOptions<Defaults>
    @Option(name: .customLong("total-batch"), help: "Tokens per optimizer step; a multiple of B*T (gradient accumulation). Default B*T.")
    var totalBatch: Int?
    @Option(help: "Optimizer steps. Default: one epoch of the training data (300 for the bundled default run).")
    var steps: Int?

    // MARK: Optimizer
    @Option(help: "Peak learning rate.")
    var lr: Float = 1e-3
    @Option(name: .customLong("lr-schedule"), help: "cosine, linear, constant or wsd.")
    var lrSchedule: String = "cosine"
    @Option(help: "Warmup steps (linear from lr/warmup to lr).")
    var warmup: Int = 0
    @Option(name: .customLong("final-lr-fraction"), help: "The schedule decays to lr * this.")
    var finalLRFraction: Float = 0.1
    @Option(name: .customLong("weight-decay"), help: "AdamW weight decay, on the 2-D weight matrices only.")
    var weightDecay: Float = 0
    @Option(help: "AdamW beta2.")
    var beta2: Float = 0.95
    @Option(name: .customLong("grad-clip"), help: "Clip the global gradient norm to this (0 = off).")
    var gradClip: Float = 1
    @Option(name: .customLong("skip-loss-z"), help: "Skip an update whose loss z-score exceeds this (0 = off).")
    var skipLossZ: Double = 0
    @Option(name: .customLong("skip-norm-z"), help: "Skip an update whose grad-norm z-score exceeds this (0 = off).")
    var skipNormZ: Double = 0

    // MARK: Evaluation and sampling
    @Option(name: .customLong("val-every"), help: "Validation loss every N steps and at the end (0 = never).")
    var valEvery: Int = 50
    @Option(name: .customLong("val-steps"), help: "Batches per validation.")
    var valSteps: Int = 10
    @Option(name: .customLong("sample-every"), help: "Print a sample every N steps and at the end (0 = never).")
    var sampleEvery: Int = 100
    @Option(name: .customLong("sample-tokens"), help: "Tokens per sample.")
    var sampleTokens: Int = 64
    @Option(help: "llm.c HellaSwag eval file (from `llm prepare hellaswag`): accuracy at every validation point.")
    var hellaswag: String?
    @Option(name: .customLong("hellaswag-limit"), help: "Score only the first N HellaSwag examples (0 = all).")
    var hellaswagLimit: Int = 0

    // MARK: Run
    @Option(help: "Seed of the GPT-2 init (descriptor models) and of the data shuffling.")
    var seed: UInt64 = 42
    @OptionGroup var threads: ThreadsOption
    @OptionGroup var device: DeviceOption
    @OptionGroup var precision: PrecisionOption
    @OptionGroup var recompute: RecomputeOption
    @Option(help: "Output directory: main.log and checkpoints (model_<step>.bin, state_<step>.bin, DONE_<step>), one at the end at least.")
    var output: String?
    @Option(name: .customLong("checkpoint-every"), help: "Also save a checkpoint every N steps (0 = only at the end).")
    var checkpointEvery: Int = 0
    @Option(help: "Keep only the last K checkpoints (0 = keep all).")
    var keep: Int = 0
    @Option(name: .customLong("keep-every"), help: "Never delete checkpoints of steps that are multiples of M.")
    var keepEvery: Int = 0
    @Option(name: .customLong("checkpoint-precision"), help: "Model file precision: fp32 (llm.c v3) or bf16 (v5; fp32 master weights go into the state file). Default: fp32 on the CPU, bf16 on a GPU.")
    var checkpointPrecision: PrecisionChoice?
    @Flag(help: "Continue from the newest complete checkpoint in --output, if there is one.")
    var resume = false
    @Flag(help: "Train on the first validation batch over and over (debugging a model).")
    var overfit = false

    func validate() throws {
        if let steps, steps < 0 { throw ValidationError("--steps \(steps) must be >= 0") }
        if valSteps <= 0 { throw ValidationError("--val-steps \(valSteps) must be > 0") }
        if valEvery < 0 || sampleEvery < 0 || sampleTokens < 0 {
            throw ValidationError("--val-every, --sample-every and --sample-tokens must be >= 0")
        }
        if !(lr >= 0 && lr < 10) { throw ValidationError("--lr \(lr) is out of range [0, 10)") }
        if checkpointEvery < 0 || keep < 0 || keepEvery < 0 {
            throw ValidationError("--checkpoint-every, --keep and --keep-every must be >= 0")
        }
        if resume && output == nil { throw ValidationError("--resume needs --output, the folder holding the checkpoints") }
    }

    func run() throws {
        try reportingErrors(runTraining)
    }

    func runTraining() throws {
        threads.apply()
        let out = ConsoleOutput()
        let batch = shape.batch, seqLen = shape.seqLen

        // Model
        let (config, parameters, source) = try model.load(seed: seed)
        try shape.check(config)
        out.print("model: \(source): \(config), \(ParameterLayout(config).unpaddedCount) parameters")
        if sampleTokens >= config.maxSeqLen {
            throw LLMError("--sample-tokens \(sampleTokens) must be below the model's context of \(config.maxSeqLen) tokens")
        }

        // Data
        let trainSources: [TokenSource], valSources: [TokenSource]?
        var tokenizer: Tokenizer? = try? vocab.load()
        if let train {
            trainSources = try expandGlob(train).map { .file($0) }
            valSources = try val.map { try expandGlob($0).map { .file($0) } }
        } else {
            guard let tok = tokenizer else {
                throw LLMError("\(vocab.value): the GPT-2 vocabulary is needed to tokenize \(text) (or pass --train shards)")
            }
            let t0 = monotonicSeconds()
            // As llm.c's tinyshakespeare.py: EOT before every "\n\n" section, first 32,768 tokens = val.
            let split = try tinyShakespeareTokens(readFileBytes(text), source: text, tokenizer: tok,
                                                  threads: CPUThreads.count)
            out.print("data: \(text) " + format("tokenized in %.2f s: %ld train and %ld validation tokens",
                                                monotonicSeconds() - t0, split.train.count, split.val.count))
            trainSources = [.memory(name: text + " (train split)", tokens: split.train)]
            valSources = [.memory(name: text + " (validation split)", tokens: split.val)]
            tokenizer = tok
        }
        let trainLoader = try DataLoader(sources: trainSources, B: batch, T: seqLen, vocabSize: config.vocabSize,
                                         shuffle: true, seed: seed)
        var valLoader: DataLoader? = nil
        if let valSources, valEvery > 0 {
            do {
                valLoader = try DataLoader(sources: valSources, B: batch, T: seqLen, vocabSize: config.vocabSize,
                                           shuffle: false)
            } catch let e as LLMError where val == nil {
                // The bundled text's 32,768 validation tokens hold no batch of B*T > 32,767.
                out.print("validation off: \(e.message)")
            }
        }

        // Backend
        let backend = try makeBackend(device.value, config: config, parameters: parameters, B: batch, T: seqLen,
                                      precision: precision.value, recompute: recompute.value, log: out.print)
        out.print("device: \(backend.deviceDescription)")

        var o = TrainingOptions()
        o.B = batch; o.T = seqLen; o.totalBatchTokens = totalBatch
        o.steps = steps ?? (train == nil ? 300 : nil)
        o.learningRate = lr
        guard let kind = LearningRateSchedule.Kind(rawValue: lrSchedule) else {
            throw LLMError("--lr-schedule \(lrSchedule): unknown; expected one of \(LearningRateSchedule.Kind.allNames)")
        }
        o.schedule = kind; o.warmupSteps = warmup; o.finalLearningRateFraction = finalLRFraction
        o.beta2 = beta2; o.weightDecay = weightDecay; o.gradClip = gradClip
        o.skipLossZ = skipLossZ; o.skipNormZ = skipNormZ
        o.valEvery = valEvery; o.valSteps = valSteps; o.sampleEvery = sampleEvery; o.sampleTokens = sampleTokens
        o.overfitSingleBatch = overfit

        o.checkpointEvery = checkpointEvery
        let onGPU = !(backend is CPUModel)
        o.checkpointPrecision = (checkpointPrecision ?? (onGPU ? .bf16 : .fp32)) == .bf16 ? .bf16 : .fp32

        let trainer = try Trainer(model: backend, train: trainLoader, val: valLoader, options: o)
        if let tok = tokenizer { trainer.decode = { tok.decodeString($0) }; trainer.eotToken = Int32(tok.eotToken) }
        var resumedAt: Int? = nil
        if let output {
            let checkpoints = try CheckpointDirectory(output, keepLast: keep, keepEvery: keepEvery)
            trainer.checkpoints = checkpoints
            if resume, let c = try checkpoints.latestComplete(config: config) {
                for note in c.notes { out.print(note) }
                try trainer.resume(from: c)
                resumedAt = c.step
                out.print("resumed from \(c.modelPath) at step \(c.step)")
            } else if resume {
                out.print("no complete checkpoint in \(output): starting from step 0")
            }
            out.log = try TrainingLog(path: joinPath(output, "main.log"), resumingAt: resumedAt)
        }
        if let hellaswag {
            var examples = try EvalFile.read(hellaswag, vocabSize: config.vocabSize)
            if hellaswagLimit > 0 { examples = Array(examples.prefix(hellaswagLimit)) }
            if batch < 4 { throw LLMError("--hellaswag needs --batch >= 4 (4 rows per example)") }
            trainer.evaluate = { step in
                let r = try evaluateMultipleChoice(examples, model: backend, B: batch, T: seqLen)
                out.print(format("HellaSwag: %ld/%ld = %.4f", r.correct, r.total, r.accuracy)
                          + (r.skipped > 0 ? format(" (%ld longer than T skipped)", r.skipped) : ""))
                out.log?.evaluation(step: step, accuracy: Float(r.accuracy))
            }
        }
        trainer.observer = out
        out.print(format("batch %ld x %ld, %ld micro-steps per step (%ld tokens), %ld steps, lr %.2e ",
                         batch, seqLen, trainer.gradAccumSteps, batch * seqLen * trainer.gradAccumSteps,
                         trainer.steps, Double(lr)) + lrSchedule + format(", warmup %ld", warmup))
        try trainer.run()
        if let line = out.summary() { out.print(line) }
    }
}

extension Train {
    /// The default run is the small one the discussion above describes.
    enum Defaults: ModelDefault, ShapeDefaults {
        static let model: String? = "d2"
        static let batch = 8
        static let seqLen = 64
    }
}

/// Prints the loop's reports as llm.c's console lines and mirrors them into main.log.
final class ConsoleOutput: TrainingObserver {
    var log: TrainingLog?

    func print(_ s: String) { Swift.print(s); fflush(stdout) }

    func trainStep(_ r: TrainStepReport) {
        stepMilliseconds.append(r.milliseconds)
        print(consoleLine(step: r.step + 1, totalSteps: r.steps, loss: r.loss, lossZ: r.lossZ, gradNorm: r.gradNorm,
                          gradNormZ: r.normZ, learningRate: r.learningRate, milliseconds: r.milliseconds,
                          mfuPercent: r.mfuPercent, tokensPerSecond: r.tokensPerSecond, etaSeconds: r.etaSeconds)
              + (r.skipped ? " | update skipped" : ""))
        log?.train(step: r.step, loss: r.loss, learningRate: r.learningRate, gradNorm: r.gradNorm)
    }
    func validation(step: Int, loss: Float) {
        print(format("val loss %.6f", Double(loss)))
        log?.validation(step: step, loss: loss)
    }
    func sample(step: Int, text: String) {
        print("---\n\(text)\n---")
    }
    func message(_ text: String) { print(text) }

    var stepMilliseconds: [Double] = []
    /// "total average iteration time" as llm.c prints it at the end (the first step excluded).
    func summary() -> String? {
        let timed = stepMilliseconds.dropFirst()
        if timed.isEmpty { return nil }
        return format("total average iteration time: %f ms", timed.reduce(0, +) / Double(timed.count))
    }
}
