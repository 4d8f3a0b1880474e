// The one small protocol a backend (CPU, CUDA) implements; the training loop in LLM drives it.

/// AdamW hyper-parameters for one update. `t` is 1-based (step + 1), as in llm.c.
public struct AdamWSettings: Equatable {
    public var learningRate: Float
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    public var epsilon: Float = 1e-8
    public var weightDecay: Float = 0
    /// true: decay every tensor (llm.c's CPU rule); false: only the 2-D matrices (its GPU rule).
    public var decayAllTensors: Bool = false
    public var t: Int = 1
    /// Multiplies every gradient before the moments (1/norm when clipping), as llm.c's GPU update.
    public var gradScale: Float = 1

    public init(learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.95, epsilon: Float = 1e-8,
                weightDecay: Float = 0, decayAllTensors: Bool = false, t: Int = 1, gradScale: Float = 1) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.decayAllTensors = decayAllTensors
        self.t = t
        self.gradScale = gradScale
    }
}

/// A GPT-2 on some device: parameters, gradients, optimizer state and activations it owns.
/// Activations are planned once for the (B, T) given at creation; forward may be called with
/// any B' <= B and T' <= T (sampling and evaluation use smaller shapes).
public protocol GPT2Backend: AnyObject {
    var config: GPT2Config { get }
    /// Planned micro-batch shape.
    var batchSize: Int { get }
    var sequenceLength: Int { get }
    /// "cpu (2 threads)", "cuda: NVIDIA H100 80GB HBM3 (bf16)", ...
    var deviceDescription: String { get }

    /// Forward pass. inputs (B, T) token ids; with targets also the per-token losses and the
    /// mean loss, which is returned (NaN without targets).
    func forward(inputs: [Int32], targets: [Int32]?, B: Int, T: Int) throws -> Float
    /// Forward for a micro-step that `backward(microSteps:)` will follow, with the same
    /// `microSteps`: a backend may already run parts of the backward here (the CUDA model does
    /// the classifier and LM head in row chunks, so it never keeps all the logits).
    /// `logits(b:t:)` need not work after it. Gradients accumulate from here on, so
    /// `zeroGradients()` comes before it, not between it and `backward`. It returns no loss: a GPU
    /// only queues the work, and waiting for the loss would leave the GPU idle until the host
    /// queued the backward; `trainingLosses()` gives the losses later.
    func trainingForward(inputs: [Int32], targets: [Int32], B: Int, T: Int, microSteps: Int) throws
    /// The mean loss (as `forward` returns it) of each `trainingForward` since the last
    /// `zeroGradients()`, in order. May wait for the device; after `gradientNorm()` it need not.
    func trainingLosses() throws -> [Float]
    /// Per-token losses (B, T) of the last forward or trainingForward with targets.
    func lastLosses() -> [Float]
    /// Logits (V, unpadded) of row (b, t) of the last forward.
    func logits(b: Int, t: Int) -> [Float]

    /// Zeroes parameter gradients and forgets the `trainingLosses()` (start of an optimizer step).
    func zeroGradients()
    /// Backward of the last forward with targets; accumulates (+=) into parameter gradients with
    /// dloss = 1 / (B * T * microSteps), so `microSteps` forward/backward pairs average.
    func backward(microSteps: Int) throws
    /// Global L2 norm of the parameter gradients.
    func gradientNorm() throws -> Float
    /// One AdamW update of all parameters with the current gradients.
    func update(_ settings: AdamWSettings) throws

    /// All N parameters as fp32 in checkpoint order (the master weights where kept).
    func readParameters() throws -> [Float]
    func writeParameters(_ parameters: [Float]) throws
    /// AdamW first and second moments, N each (zeros before the first update).
    func readOptimizerState() throws -> (m: [Float], v: [Float])
    func writeOptimizerState(m: [Float], v: [Float]) throws
    /// Parameter gradients, N fp32, checkpoint order (for parity checks).
    func readGradients() throws -> [Float]

    /// Peak FLOP/s of the device for MFU (llm.c's table for GPUs); nil where MFU means nothing.
    var peakFLOPs: Double? { get }

    /// Random-generator states the backend owns (the GPU's stochastic-rounding seeds), saved in
    /// training checkpoints so a resumed run rounds exactly as the uninterrupted one.
    func readRandomState() throws -> [UInt64]
    func writeRandomState(_ state: [UInt64]) throws

    /// Device memory in use now (a GPU's total minus free), for benchmarks; nil on the CPU.
    func deviceMemoryInUse() throws -> Int?

    /// The parameters the forward pass computes with, widened to fp32: on a bf16 GPU these are the
    /// stochastically rounded bf16 values, not the fp32 master weights. Checkpoints store them, so
    /// a resumed run computes with exactly the same weights.
    func readWorkingParameters() throws -> [Float]
    /// Restores working parameters and fp32 master weights separately (exact resume).
    func writeParameters(working: [Float], master: [Float]) throws
}

/// A backend that can generate with a key/value cache: each new token costs one position's work
/// instead of a forward pass over the whole sequence.
public protocol CachedGeneration: AnyObject {
    /// Forgets earlier tokens; sequences up to `maxTokens` (<= maxT) will follow.
    func beginGeneration(maxTokens: Int) throws
    /// Appends `token` at the next position; returns the V logits predicting the token after it.
    func generationStep(token: Int32) throws -> [Float]
}

/// The check of every `beginGeneration`: a cache of 1 ... maxT positions.
public func validateGenerationLength(_ maxTokens: Int, maxSeqLen: Int) throws {
    if maxTokens < 1 || maxTokens > maxSeqLen {
        throw LLMError("generation: maxTokens \(maxTokens) must be 1...\(maxSeqLen)")
    }
}

/// The checks every `CachedGeneration` step makes before it touches its cache.
public func validateGenerationStep(token: Int32, position: Int, maxTokens: Int, vocabSize: Int) throws {
    if position >= maxTokens {
        throw LLMError("generation: position \(position) is past the \(maxTokens) tokens planned")
    }
    if token < 0 || Int(token) >= vocabSize {
        throw LLMError("generation: token \(token) is outside the vocabulary (size \(vocabSize))")
    }
}

extension GPT2Backend {
    /// trainingForward, then its loss, waiting for the device: for checks of one micro-step, not
    /// for the training loop.
    public func trainingForwardLoss(inputs: [Int32], targets: [Int32], B: Int, T: Int, microSteps: Int) throws -> Float {
        try trainingForward(inputs: inputs, targets: targets, B: B, T: T, microSteps: microSteps)
        guard let loss = try trainingLosses().last else {
            throw LLMError("\(deviceDescription): no training loss after trainingForward")
        }
        return loss
    }
    public var peakFLOPs: Double? { nil }
    public func readRandomState() throws -> [UInt64] { [] }
    public func writeRandomState(_ state: [UInt64]) throws {}
    public func deviceMemoryInUse() throws -> Int? { nil }
    /// Backends without master weights compute with their fp32 parameters.
    public func readWorkingParameters() throws -> [Float] { try readParameters() }
    public func writeParameters(working: [Float], master: [Float]) throws { try writeParameters(master) }
}
