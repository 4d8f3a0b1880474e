// GPT-2 in fp32 on the CPU: memory planned once, the layer sequence of llm.c's train_gpt2.c,
// and the GPT2Backend protocol the training loop drives.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LLM

// MARK: - Memory

/// Zeroed floats from calloc: pages are mapped lazily, so a model only used for sampling never
/// touches the memory of its gradients or optimizer state.
func allocateFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    guard let raw = calloc(max(count, 1), MemoryLayout<Float>.stride) else {
        fatalError("out of memory allocating \(count) floats")
    }
    return raw.bindMemory(to: Float.self, capacity: max(count, 1))
}

/// Views of the 16 parameter tensors (or their gradients) in one flat buffer, checkpoint order.
struct ParameterViews {
    let wte: UnsafeMutablePointer<Float>       // (Vp, C)
    let wpe: UnsafeMutablePointer<Float>       // (maxT, C)
    let ln1w: UnsafeMutablePointer<Float>      // (L, C)
    let ln1b: UnsafeMutablePointer<Float>      // (L, C)
    let qkvw: UnsafeMutablePointer<Float>      // (L, 3C, C)
    let qkvb: UnsafeMutablePointer<Float>      // (L, 3C)
    let attprojw: UnsafeMutablePointer<Float>  // (L, C, C)
    let attprojb: UnsafeMutablePointer<Float>  // (L, C)
    let ln2w: UnsafeMutablePointer<Float>      // (L, C)
    let ln2b: UnsafeMutablePointer<Float>      // (L, C)
    let fcw: UnsafeMutablePointer<Float>       // (L, 4C, C)
    let fcb: UnsafeMutablePointer<Float>       // (L, 4C)
    let fcprojw: UnsafeMutablePointer<Float>   // (L, C, 4C)
    let fcprojb: UnsafeMutablePointer<Float>   // (L, C)
    let lnfw: UnsafeMutablePointer<Float>      // (C)
    let lnfb: UnsafeMutablePointer<Float>      // (C)

    init(_ base: UnsafeMutablePointer<Float>, _ layout: ParameterLayout) {
        func at(_ t: ParameterTensor) -> UnsafeMutablePointer<Float> { base + layout.offset(t) }
        wte = at(.wte); wpe = at(.wpe); ln1w = at(.ln1w); ln1b = at(.ln1b)
        qkvw = at(.qkvw); qkvb = at(.qkvb); attprojw = at(.attprojw); attprojb = at(.attprojb)
        ln2w = at(.ln2w); ln2b = at(.ln2b); fcw = at(.fcw); fcb = at(.fcb)
        fcprojw = at(.fcprojw); fcprojb = at(.fcprojb); lnfw = at(.lnfw); lnfb = at(.lnfb)
    }
}

/// The activations of one forward pass, in one allocation. Each tensor's region is sized for the
/// planned (B, T); a smaller forward (B', T') lays its tensors out compactly at the start of each
/// region, so per-layer views use the current shape's strides.
struct ActivationPlan {
    let regionSizes: [Int]
    let regionOffsets: [Int]
    let total: Int

    // Region order; per-layer tensors are stacked (L, ...).
    enum Region: Int, CaseIterable {
        case encoded     // (B, T, C)
        case ln1         // (L, B, T, C)
        case ln1Mean     // (L, B, T)
        case ln1Rstd     // (L, B, T)
        case qkv         // (L, B, T, 3C)
        case atty        // (L, B, T, C)
        case att         // (L, B, NH, T, T)
        case residual2   // (L, B, T, C)
        case ln2         // (L, B, T, C)
        case ln2Mean     // (L, B, T)
        case ln2Rstd     // (L, B, T)
        case fch         // (L, B, T, 4C)
        case fchGelu     // (L, B, T, 4C)
        case residual3   // (L, B, T, C)
        case lnf         // (B, T, C)
        case lnfMean     // (B, T)
        case lnfRstd     // (B, T)
        case logits      // (B, T, Vp)
        case lse         // (B, T) log-sum-exp of each logits row
        case losses      // (B, T)
        case projection  // (B, T, C) output of attproj / fcproj before the residual add, reused by every layer
    }

    /// Element counts of each region for a (B, T) batch.
    static func sizes(_ c: GPT2Config, B: Int, T: Int) -> [Int] {
        let C = c.channels, L = c.numLayers, NH = c.numHeads, BT = B * T
        return Region.allCases.map { r -> Int in
            switch r {
            case .encoded, .lnf, .projection: return BT * C
            case .ln1, .atty, .residual2, .ln2, .residual3: return L * BT * C
            case .ln1Mean, .ln1Rstd, .ln2Mean, .ln2Rstd: return L * BT
            case .qkv: return L * BT * 3 * C
            case .att: return L * B * NH * T * T
            case .fch, .fchGelu: return L * BT * 4 * C
            case .lnfMean, .lnfRstd, .lse, .losses: return BT
            case .logits: return BT * c.paddedVocabSize
            }
        }
    }

    init(_ c: GPT2Config, B: Int, T: Int) {
        regionSizes = ActivationPlan.sizes(c, B: B, T: T)
        var offsets: [Int] = []
        var total = 0
        for s in regionSizes { offsets.append(total); total += s }
        regionOffsets = offsets
        self.total = total
    }
}

// MARK: - Model

public final class CPUModel: GPT2Backend {
    public let config: GPT2Config
    public let batchSize: Int
    public let sequenceLength: Int
    public var deviceDescription: String { "cpu (\(CPUThreads.count) threads)" }

    let layout: ParameterLayout
    let parameterCount: Int                    // N
    let parameterMemory: UnsafeMutablePointer<Float>  // (N)
    let gradientMemory: UnsafeMutablePointer<Float>   // (N)
    let momentMemory: UnsafeMutablePointer<Float>     // (2N): m, then v
    let activationMemory: UnsafeMutablePointer<Float> // ActivationPlan.total
    let activationGradMemory: UnsafeMutablePointer<Float>
    let activationGradCount: Int
    let tokenMemory: UnsafeMutablePointer<Int32>      // (2, B, T): inputs, then targets
    let params: ParameterViews
    let grads: ParameterViews
    let plan: ActivationPlan

    // Activation gradients: only what one layer's backward needs at a time, reused by every layer.
    let dresidual: UnsafeMutablePointer<Float>  // (B, T, C) gradient of the residual stream
    let dsmall: UnsafeMutablePointer<Float>     // (B, T, C) dlnf, dln2, datty, dln1 in turn
    let dqkv: UnsafeMutablePointer<Float>       // (B, T, 3C)
    let dfch: UnsafeMutablePointer<Float>       // (B, T, 4C)
    let dfchGelu: UnsafeMutablePointer<Float>   // (B, T, 4C)
    let dlogits: UnsafeMutablePointer<Float>    // (B, T, Vp)

    // The last forward's shape.
    var currentB = 0
    var currentT = 0
    var haveTargets = false
    var meanLoss: Float = .nan
    /// Mean losses of the trainingForward calls since zeroGradients(), for trainingLosses().
    var microStepLosses: [Float] = []
    /// Key/value cache of cached generation (CPUGeneration.swift), made by beginGeneration.
    var generationState: CPUGenerationState?

    /// A model with the given parameters (N floats, checkpoint order) and activations planned for (B, T).
    public init(config: GPT2Config, parameters: [Float], B: Int, T: Int) throws {
        try config.validate(source: "model")
        let layout = ParameterLayout(config)
        if parameters.count != layout.count {
            throw LLMError("model: have \(parameters.count) parameters, \(config) needs \(layout.count)")
        }
        if B <= 0 || T <= 0 || T > config.maxSeqLen {
            throw LLMError("model: batch B=\(B) T=\(T) does not fit (T must be 1...\(config.maxSeqLen))")
        }
        self.config = config
        self.layout = layout
        batchSize = B
        sequenceLength = T
        let N = layout.count
        parameterCount = N
        let parameterMemory = allocateFloats(N)
        parameters.withUnsafeBufferPointer { parameterMemory.update(from: $0.baseAddress!, count: N) }
        self.parameterMemory = parameterMemory
        gradientMemory = allocateFloats(N)
        momentMemory = allocateFloats(2 * N)
        plan = ActivationPlan(config, B: B, T: T)
        activationMemory = allocateFloats(plan.total)
        let C = config.channels, BT = B * T
        let gradSizes = [BT * C, BT * C, BT * 3 * C, BT * 4 * C, BT * 4 * C, BT * config.paddedVocabSize]
        activationGradCount = gradSizes.reduce(0, +)
        activationGradMemory = allocateFloats(activationGradCount)
        var p = activationGradMemory
        dresidual = p; p += gradSizes[0]
        dsmall = p; p += gradSizes[1]
        dqkv = p; p += gradSizes[2]
        dfch = p; p += gradSizes[3]
        dfchGelu = p; p += gradSizes[4]
        dlogits = p
        tokenMemory = UnsafeMutablePointer<Int32>.allocate(capacity: 2 * BT)
        tokenMemory.initialize(repeating: 0, count: 2 * BT)
        params = ParameterViews(parameterMemory, layout)
        grads = ParameterViews(gradientMemory, layout)
    }

    /// Loads an llm.c checkpoint (v3 fp32 or v5 bf16) and plans activations for (B, T).
    public static func load(path: String, B: Int, T: Int) throws -> CPUModel {
        let file = try CheckpointFile.read(path)
        return try CPUModel(config: file.config, parameters: file.parameters, B: B, T: T)
    }

    deinit {
        free(parameterMemory)
        free(gradientMemory)
        free(momentMemory)
        free(activationMemory)
        free(activationGradMemory)
        tokenMemory.deallocate()
    }

    /// Bytes this model allocated (touched lazily), for memory reports.
    public var allocatedBytes: Int {
        4 * (4 * parameterCount + plan.total + activationGradCount) + 8 * batchSize * sequenceLength
    }

    @inline(__always) func region(_ r: ActivationPlan.Region) -> UnsafeMutablePointer<Float> {
        activationMemory + plan.regionOffsets[r.rawValue]
    }

    /// Layer l's activations for the current (B, T): each region holds the (L, ...) stack laid out
    /// compactly for this shape. The forward and backward passes read the same views.
    struct LayerActivations {
        let residual: UnsafeMutablePointer<Float>   // (B, T, C) the layer's input
        let ln1: UnsafeMutablePointer<Float>        // (B, T, C)
        let ln1Mean: UnsafeMutablePointer<Float>    // (B, T)
        let ln1Rstd: UnsafeMutablePointer<Float>    // (B, T)
        let qkv: UnsafeMutablePointer<Float>        // (B, T, 3C)
        let atty: UnsafeMutablePointer<Float>       // (B, T, C)
        let att: UnsafeMutablePointer<Float>        // (B, NH, T, T)
        let residual2: UnsafeMutablePointer<Float>  // (B, T, C)
        let ln2: UnsafeMutablePointer<Float>        // (B, T, C)
        let ln2Mean: UnsafeMutablePointer<Float>    // (B, T)
        let ln2Rstd: UnsafeMutablePointer<Float>    // (B, T)
        let fch: UnsafeMutablePointer<Float>        // (B, T, 4C)
        let fchGelu: UnsafeMutablePointer<Float>    // (B, T, 4C)
        let residual3: UnsafeMutablePointer<Float>  // (B, T, C) the layer's output
    }

    @inline(__always) func layerActivations(_ l: Int, B: Int, T: Int) -> LayerActivations {
        let BT = B * T, C = config.channels, NH = config.numHeads
        return LayerActivations(
            residual: l == 0 ? region(.encoded) : region(.residual3) + (l - 1) * BT * C,
            ln1: region(.ln1) + l * BT * C, ln1Mean: region(.ln1Mean) + l * BT, ln1Rstd: region(.ln1Rstd) + l * BT,
            qkv: region(.qkv) + l * BT * 3 * C, atty: region(.atty) + l * BT * C,
            att: region(.att) + l * B * NH * T * T, residual2: region(.residual2) + l * BT * C,
            ln2: region(.ln2) + l * BT * C, ln2Mean: region(.ln2Mean) + l * BT, ln2Rstd: region(.ln2Rstd) + l * BT,
            fch: region(.fch) + l * BT * 4 * C, fchGelu: region(.fchGelu) + l * BT * 4 * C,
            residual3: region(.residual3) + l * BT * C)
    }

    // MARK: Forward

    public func forward(inputs: [Int32], targets: [Int32]?, B: Int, T: Int) throws -> Float {
        if B <= 0 || T <= 0 || B > batchSize || T > sequenceLength {
            throw LLMError("forward: batch B=\(B) T=\(T) exceeds the planned B=\(batchSize) T=\(sequenceLength)")
        }
        let BT = B * T, V = config.vocabSize
        if inputs.count != BT { throw LLMError("forward: \(inputs.count) inputs, expected B*T = \(BT)") }
        if let targets, targets.count != BT {
            throw LLMError("forward: \(targets.count) targets, expected B*T = \(BT)")
        }
        for (i, x) in inputs.enumerated() where x < 0 || Int(x) >= V {
            throw LLMError("forward: input token \(x) at position \(i) is outside the vocabulary (size \(V))")
        }
        if let targets {
            for (i, x) in targets.enumerated() where x < 0 || Int(x) >= V {
                throw LLMError("forward: target token \(x) at position \(i) is outside the vocabulary (size \(V))")
            }
        }
        inputs.withUnsafeBufferPointer { tokenMemory.update(from: $0.baseAddress!, count: BT) }
        if let targets { targets.withUnsafeBufferPointer { (tokenMemory + BT).update(from: $0.baseAddress!, count: BT) } }
        currentB = B
        currentT = T
        haveTargets = targets != nil
        runForward()
        if haveTargets {
            let losses = region(.losses)
            var sum: Float = 0
            for i in 0 ..< BT { sum += losses[i] }
            meanLoss = sum / Float(BT)
        } else {
            meanLoss = .nan
        }
        return meanLoss
    }

    func runForward() {
        let B = currentB, T = currentT, BT = B * T
        let C = config.channels, L = config.numLayers, NH = config.numHeads
        let V = config.vocabSize, Vp = config.paddedVocabSize
        let p = params
        let inputs = UnsafePointer(tokenMemory), targets = UnsafePointer(tokenMemory + BT)
        let encoded = region(.encoded)   // (B, T, C)
        let projection = region(.projection)  // (B, T, C)
        encoderForward(encoded, inputs, p.wte, p.wpe, B, T, C)
        for l in 0 ..< L {
            let a = layerActivations(l, B: B, T: T)
            let (residual, ln1, ln1Mean, ln1Rstd, qkv, atty, att) = (a.residual, a.ln1, a.ln1Mean, a.ln1Rstd, a.qkv, a.atty, a.att)
            let (residual2, ln2, ln2Mean, ln2Rstd, fch, fchGelu, residual3) = (a.residual2, a.ln2, a.ln2Mean, a.ln2Rstd, a.fch, a.fchGelu, a.residual3)

            layerNormForward(ln1, ln1Mean, ln1Rstd, residual, p.ln1w + l * C, p.ln1b + l * C, B, T, C)
            matmulForward(qkv, ln1, p.qkvw + l * 3 * C * C, p.qkvb + l * 3 * C, BT, C, 3 * C)
            attentionForward(atty, att, qkv, B, T, C, NH)
            matmulForward(projection, atty, p.attprojw + l * C * C, p.attprojb + l * C, BT, C, C)
            residualForward(residual2, residual, projection, BT * C)
            layerNormForward(ln2, ln2Mean, ln2Rstd, residual2, p.ln2w + l * C, p.ln2b + l * C, B, T, C)
            matmulForward(fch, ln2, p.fcw + l * 4 * C * C, p.fcb + l * 4 * C, BT, C, 4 * C)
            geluForward(fchGelu, fch, BT * 4 * C)
            matmulForward(projection, fchGelu, p.fcprojw + l * C * 4 * C, p.fcprojb + l * C, BT, 4 * C, C)
            residualForward(residual3, residual2, projection, BT * C)
        }
        let last = region(.residual3) + (L - 1) * BT * C  // (B, T, C)
        let lnf = region(.lnf)                             // (B, T, C)
        layerNormForward(lnf, region(.lnfMean), region(.lnfRstd), last, p.lnfw, p.lnfb, B, T, C)
        let logits = region(.logits)                       // (B, T, Vp)
        matmulForward(logits, lnf, p.wte, nil, BT, C, Vp)
        if haveTargets {
            softmaxCrossEntropyForward(region(.losses), region(.lse), logits, targets, B, T, V, Vp)
        }
    }

    /// Every activation of a forward is kept here, so a training forward is a plain one whose loss
    /// is remembered.
    public func trainingForward(inputs: [Int32], targets: [Int32], B: Int, T: Int, microSteps: Int) throws {
        microStepLosses.append(try forward(inputs: inputs, targets: targets, B: B, T: T))
    }

    public func trainingLosses() throws -> [Float] { microStepLosses }

    public func lastLosses() -> [Float] {
        guard haveTargets else { return [] }
        return Array(UnsafeBufferPointer(start: region(.losses), count: currentB * currentT))
    }

    public func logits(b: Int, t: Int) -> [Float] {
        precondition(b >= 0 && b < currentB && t >= 0 && t < currentT, "logits(b:t:) outside the last forward")
        let row = region(.logits) + (b * currentT + t) * config.paddedVocabSize
        return Array(UnsafeBufferPointer(start: row, count: config.vocabSize))
    }

    // MARK: Backward

    public func zeroGradients() {
        microStepLosses.removeAll(keepingCapacity: true)
        let N = parameterCount, g = gradientMemory
        parallelForChunks((N + 65535) / 65536) { blocks in
            let lo = blocks.lowerBound * 65536, hi = min(N, blocks.upperBound * 65536)
            memset(g + lo, 0, 4 * (hi - lo))
        }
    }

    public func backward(microSteps: Int) throws {
        guard haveTargets else { throw LLMError("backward: the last forward had no targets") }
        if microSteps < 1 { throw LLMError("backward: microSteps must be >= 1, got \(microSteps)") }
        let B = currentB, T = currentT, BT = B * T
        let C = config.channels, L = config.numLayers, NH = config.numHeads
        let V = config.vocabSize, Vp = config.paddedVocabSize
        let p = params, g = grads
        let inputs = UnsafePointer(tokenMemory), targets = UnsafePointer(tokenMemory + BT)
        let dloss = 1 / Float(BT * microSteps)

        // Head: loss -> logits -> lnf -> last residual.
        let logits = region(.logits)
        softmaxCrossEntropyBackward(dlogits, logits, region(.lse), targets, dloss, B, T, V, Vp)
        let lnf = region(.lnf)
        clear(dsmall, BT * C)
        matmulBackward(dsmall, g.wte, nil, dlogits, lnf, p.wte, BT, C, Vp)
        let last = region(.residual3) + (L - 1) * BT * C
        clear(dresidual, BT * C)
        layerNormBackward(dresidual, g.lnfw, g.lnfb, dsmall, last, p.lnfw, region(.lnfMean), region(.lnfRstd), B, T, C)

        // Layers in reverse. dresidual holds d(residual3[l]) on entry and d(residual3[l-1]) on exit:
        // the residual adds pass it through unchanged and the two layernorms add into it.
        for l in stride(from: L - 1, through: 0, by: -1) {
            let a = layerActivations(l, B: B, T: T)
            let (residual, ln1, ln1Mean, ln1Rstd, qkv, atty, att) = (a.residual, a.ln1, a.ln1Mean, a.ln1Rstd, a.qkv, a.atty, a.att)
            let (residual2, ln2, ln2Mean, ln2Rstd, fch, fchGelu) = (a.residual2, a.ln2, a.ln2Mean, a.ln2Rstd, a.fch, a.fchGelu)

            // MLP: residual3 = residual2 + fcproj(gelu(fc(ln2(residual2)))).
            clear(dfchGelu, BT * 4 * C)
            matmulBackward(dfchGelu, g.fcprojw + l * C * 4 * C, g.fcprojb + l * C, dresidual, fchGelu,
                           p.fcprojw + l * C * 4 * C, BT, 4 * C, C)
            clear(dfch, BT * 4 * C)
            geluBackward(dfch, fch, dfchGelu, BT * 4 * C)
            clear(dsmall, BT * C)
            matmulBackward(dsmall, g.fcw + l * 4 * C * C, g.fcb + l * 4 * C, dfch, ln2, p.fcw + l * 4 * C * C,
                           BT, C, 4 * C)
            layerNormBackward(dresidual, g.ln2w + l * C, g.ln2b + l * C, dsmall, residual2, p.ln2w + l * C,
                              ln2Mean, ln2Rstd, B, T, C)

            // Attention: residual2 = residual + attproj(attention(qkv(ln1(residual)))).
            clear(dsmall, BT * C)
            matmulBackward(dsmall, g.attprojw + l * C * C, g.attprojb + l * C, dresidual, atty,
                           p.attprojw + l * C * C, BT, C, C)
            clear(dqkv, BT * 3 * C)
            attentionBackward(dqkv, dsmall, qkv, att, B, T, C, NH)
            clear(dsmall, BT * C)
            matmulBackward(dsmall, g.qkvw + l * 3 * C * C, g.qkvb + l * 3 * C, dqkv, ln1, p.qkvw + l * 3 * C * C,
                           BT, C, 3 * C)
            layerNormBackward(dresidual, g.ln1w + l * C, g.ln1b + l * C, dsmall, residual, p.ln1w + l * C,
                              ln1Mean, ln1Rstd, B, T, C)
        }
        encoderBackward(g.wte, g.wpe, dresidual, inputs, B, T, C)
    }

    func clear(_ p: UnsafeMutablePointer<Float>, _ count: Int) {
        memset(p, 0, 4 * count)
    }

    public func gradientNorm() throws -> Float {
        let N = parameterCount, g = UnsafePointer(gradientMemory)
        let block = 1 << 16
        let blocks = (N + block - 1) / block
        var partial = [Double](repeating: 0, count: blocks)
        partial.withUnsafeMutableBufferPointer { out in
            let o = out.baseAddress!
            parallelFor(blocks) { k in
                var i = k * block
                let end = min(N, i + block)
                var acc = Vec16()
                while i + 16 <= end { let x = load16(g + i); acc += x * x; i += 16 }
                var s = Double(acc.sum())
                while i < end { s += Double(g[i]) * Double(g[i]); i += 1 }
                o[k] = s
            }
        }
        return Float(partial.reduce(0, +).squareRoot())
    }

    // MARK: Update

    public func update(_ s: AdamWSettings) throws {
        if s.t < 1 { throw LLMError("update: AdamW step t must be >= 1 (1-based), got \(s.t)") }
        let N = parameterCount
        for tensor in ParameterTensor.allCases {
            let o = layout.offset(tensor), n = layout.size(tensor)
            let decay = s.decayAllTensors || tensor.isMatrix ? s.weightDecay : 0
            adamWUpdate(parameterMemory + o, momentMemory + o, momentMemory + N + o, gradientMemory + o, n,
                        learningRate: s.learningRate, beta1: s.beta1, beta2: s.beta2, epsilon: s.epsilon,
                        weightDecay: decay, t: s.t, gradScale: s.gradScale)
        }
    }

    // MARK: State in and out

    public func readParameters() throws -> [Float] {
        Array(UnsafeBufferPointer(start: parameterMemory, count: parameterCount))
    }

    public func writeParameters(_ parameters: [Float]) throws {
        if parameters.count != parameterCount {
            throw LLMError("writeParameters: \(parameters.count) values, the model has \(parameterCount)")
        }
        parameters.withUnsafeBufferPointer { parameterMemory.update(from: $0.baseAddress!, count: parameterCount) }
    }

    public func readOptimizerState() throws -> (m: [Float], v: [Float]) {
        (Array(UnsafeBufferPointer(start: momentMemory, count: parameterCount)),
         Array(UnsafeBufferPointer(start: momentMemory + parameterCount, count: parameterCount)))
    }

    public func writeOptimizerState(m: [Float], v: [Float]) throws {
        if m.count != parameterCount || v.count != parameterCount {
            throw LLMError("writeOptimizerState: m has \(m.count) and v \(v.count) values, the model has \(parameterCount)")
        }
        m.withUnsafeBufferPointer { momentMemory.update(from: $0.baseAddress!, count: parameterCount) }
        v.withUnsafeBufferPointer { (momentMemory + parameterCount).update(from: $0.baseAddress!, count: parameterCount) }
    }

    public func readGradients() throws -> [Float] {
        Array(UnsafeBufferPointer(start: gradientMemory, count: parameterCount))
    }
}
