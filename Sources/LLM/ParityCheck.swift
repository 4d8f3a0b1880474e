// Parity of any backend with a PyTorch reference (llm.c debug state + optional AdamW step losses):
// logits, loss, every parameter gradient, and the losses of a few optimizer steps on one batch.

// MARK: - Tolerances and report

public struct ParityTolerances: Equatable {
    public var logitsMaxAbs: Float = 1e-4
    public var lossAbs: Float = 1e-5
    /// ||ours - ref|| / ||ref|| per parameter tensor.
    public var gradientRelativeNorm: Float = 1e-4
    public var stepLossAbs: Float = 1e-4

    public init(logitsMaxAbs: Float = 1e-4, lossAbs: Float = 1e-5, gradientRelativeNorm: Float = 1e-4,
                stepLossAbs: Float = 1e-4) {
        self.logitsMaxAbs = logitsMaxAbs
        self.lossAbs = lossAbs
        self.gradientRelativeNorm = gradientRelativeNorm
        self.stepLossAbs = stepLossAbs
    }
}

public struct ParityReport {
    public struct TensorDiff {
        public let name: String
        public let relativeNorm: Double  // ||ours - ref|| / ||ref|| (absolute norm when ref is 0)
        public let maxAbsDiff: Float
        public let passed: Bool
    }

    public struct StepLoss {
        public let step: Int
        public let ours: Float
        public let reference: Float
        public var diff: Float { abs(ours - reference) }
        public let passed: Bool
    }

    public let tolerances: ParityTolerances
    public let logitsMaxAbsDiff: Float
    public let loss: Float
    public let referenceLoss: Float
    public var lossDiff: Float { abs(loss - referenceLoss) }
    public let gradients: [TensorDiff]
    public let stepLosses: [StepLoss]

    public var logitsPassed: Bool { logitsMaxAbsDiff <= tolerances.logitsMaxAbs }
    public var lossPassed: Bool { lossDiff <= tolerances.lossAbs }
    public var passed: Bool {
        logitsPassed && lossPassed && gradients.allSatisfy(\.passed) && stepLosses.allSatisfy(\.passed)
    }

    /// One line per check, ending with the verdict.
    public var lines: [String] {
        func mark(_ ok: Bool) -> String { ok ? "ok  " : "FAIL" }
        var out: [String] = []
        out.append("\(mark(logitsPassed)) logits   max abs diff \(sci(Double(logitsMaxAbsDiff))) (tol \(sci(Double(tolerances.logitsMaxAbs))))")
        out.append("\(mark(lossPassed)) loss     ours \(format("%.7f", loss)) ref \(format("%.7f", referenceLoss)) diff \(sci(Double(lossDiff))) (tol \(sci(Double(tolerances.lossAbs))))")
        for g in gradients {
            let name = g.name.paddedTo(8)
            out.append("\(mark(g.passed)) grad \(name) rel norm \(sci(g.relativeNorm)) max abs diff \(sci(Double(g.maxAbsDiff))) (tol \(sci(Double(tolerances.gradientRelativeNorm))))")
        }
        for s in stepLosses {
            out.append("\(mark(s.passed)) step \(s.step)   loss ours \(format("%.7f", s.ours)) ref \(format("%.7f", s.reference)) diff \(sci(Double(s.diff))) (tol \(sci(Double(tolerances.stepLossAbs))))")
        }
        out.append(passed ? "parity: PASS" : "parity: FAIL")
        return out
    }
}

// MARK: - The check

/// Runs the reference batch through `backend` (whose parameters must be the reference model's):
/// forward, logits and loss; backward (one micro-step) and every gradient; then, when
/// `referenceLosses` is given, that many AdamW steps on the same batch, comparing each step's loss
/// before its update (losses[0] is the loss of the unchanged model). The backend's parameters
/// change when steps run.
public func runParityCheck(backend: GPT2Backend, state: DebugState, referenceLosses: [Float]? = nil,
                           adamW: AdamWSettings = AdamWSettings(learningRate: 1e-4, beta1: 0.9, beta2: 0.999,
                                                                epsilon: 1e-8, weightDecay: 0.01,
                                                                decayAllTensors: true),
                           tolerances: ParityTolerances = ParityTolerances()) throws -> ParityReport {
    let config = backend.config
    let B = state.B, T = state.T, V = config.vocabSize
    if B > backend.batchSize || T > backend.sequenceLength {
        throw LLMError("parity: the debug state's B=\(B) T=\(T) exceeds the backend's planned B=\(backend.batchSize) T=\(backend.sequenceLength)")
    }
    let loss = try backend.forward(inputs: state.inputs, targets: state.targets, B: B, T: T)

    var logitsMax: Float = 0
    for b in 0 ..< B {
        for t in 0 ..< T {
            let ours = backend.logits(b: b, t: t)
            let base = (b * T + t) * V
            for i in 0 ..< V {
                let d = abs(ours[i] - state.logits[base + i])
                if !(d <= logitsMax) { logitsMax = d.isNaN ? .infinity : max(logitsMax, d) }
            }
        }
    }

    backend.zeroGradients()
    try backend.backward(microSteps: 1)
    let grads = try backend.readGradients()
    let layout = ParameterLayout(config)
    var diffs: [ParityReport.TensorDiff] = []
    for tensor in ParameterTensor.allCases {
        var diffSq = 0.0, refSq = 0.0
        var maxAbs: Float = 0
        for i in layout.range(tensor) {
            let r = state.gradients[i], o = grads[i]
            let d = o - r
            diffSq += Double(d) * Double(d)
            refSq += Double(r) * Double(r)
            let a = abs(d)
            if !(a <= maxAbs) { maxAbs = a.isNaN ? .infinity : max(maxAbs, a) }
        }
        var rel = refSq > 0 ? (diffSq / refSq).squareRoot() : diffSq.squareRoot()
        if rel.isNaN { rel = .infinity }
        diffs.append(.init(name: tensor.name, relativeNorm: rel, maxAbsDiff: maxAbs,
                           passed: rel <= Double(tolerances.gradientRelativeNorm)))
    }

    var steps: [ParityReport.StepLoss] = []
    if let referenceLosses {
        var settings = adamW
        for (step, reference) in referenceLosses.enumerated() {
            let ours: Float
            if step == 0 {
                ours = loss  // gradients of this forward are already in place
            } else {
                ours = try backend.forward(inputs: state.inputs, targets: state.targets, B: B, T: T)
                backend.zeroGradients()
                try backend.backward(microSteps: 1)
            }
            steps.append(.init(step: step, ours: ours, reference: reference,
                               passed: abs(ours - reference) <= tolerances.stepLossAbs))
            if step + 1 < referenceLosses.count {
                settings.t = step + 1
                try backend.update(settings)
            }
        }
    }
    return ParityReport(tolerances: tolerances, logitsMaxAbsDiff: logitsMax, loss: loss, referenceLoss: state.loss,
                        gradients: diffs, stepLosses: steps)
}

// MARK: - Reference step losses

/// The reference losses and AdamW settings of a steps file such as tiny_steps.json:
/// `losses_10_steps` (losses[0] before the first update) and an optional `adamw` object
/// (lr, beta1, beta2, eps, weight_decay). Missing settings take llm.c's test_gpt2.c values;
/// weight decay applies to every tensor, as train_gpt2.c's CPU update.
public func readParitySteps(_ path: String) throws -> (losses: [Float], adamW: AdamWSettings) {
    let json = try JSONValue.parse(bytes: try readFileBytes(path))
    guard let array = (json["losses_10_steps"] ?? json["losses"])?.arrayValue else {
        throw LLMError("\(path): no \"losses_10_steps\" array")
    }
    var losses: [Float] = []
    for (i, v) in array.enumerated() {
        guard let d = v.doubleValue else { throw LLMError("\(path): losses_10_steps[\(i)] is not a number") }
        losses.append(Float(d))
    }
    var s = AdamWSettings(learningRate: 1e-4, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01,
                          decayAllTensors: true)
    if let a = json["adamw"] {
        func number(_ key: String) throws -> Float? {
            guard let v = a[key] else { return nil }
            guard let d = v.doubleValue else { throw LLMError("\(path): adamw.\(key) is not a number") }
            return Float(d)
        }
        s.learningRate = try number("lr") ?? s.learningRate
        s.beta1 = try number("beta1") ?? s.beta1
        s.beta2 = try number("beta2") ?? s.beta2
        s.epsilon = try number("eps") ?? s.epsilon
        s.weightDecay = try number("weight_decay") ?? s.weightDecay
    }
    return (losses, s)
}

// MARK: - Formatting

fileprivate func sci(_ x: Double) -> String { format("%.3e", x) }

fileprivate extension String {
    func paddedTo(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
