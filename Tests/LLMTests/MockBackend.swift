// A stand-in backend whose per-token loss is a known function of the tokens, for testing the
// loop, evaluation and sampling without a real model.

@testable import LLM

final class MockBackend: GPT2Backend {
    let config: GPT2Config
    let batchSize: Int
    let sequenceLength: Int
    var deviceDescription: String { "mock" }
    var parameters: [Float]
    var gradients: [Float]
    var m: [Float], v: [Float]
    var losses: [Float] = []
    var lastInputs: [Int32] = []
    var updates: [AdamWSettings] = []
    /// microSteps of each trainingForward call.
    var trainingForwards: [Int] = []
    /// Losses of the trainingForward calls since zeroGradients().
    var microStepLosses: [Float] = []
    /// loss of predicting `target` after `input`: defined by the test.
    var lossOf: (_ input: Int32, _ target: Int32) -> Float = { _, t in Float(t % 7) }

    init(config: GPT2Config, B: Int, T: Int) {
        self.config = config
        batchSize = B
        sequenceLength = T
        let n = ParameterLayout(config).count
        parameters = [Float](repeating: 0, count: n)
        gradients = parameters
        m = parameters
        v = parameters
    }

    func forward(inputs: [Int32], targets: [Int32]?, B: Int, T: Int) throws -> Float {
        precondition(B <= batchSize && T <= sequenceLength && inputs.count == B * T)
        lastInputs = inputs
        guard let targets else { return .nan }
        losses = (0 ..< B * T).map { lossOf(inputs[$0], targets[$0]) }
        return losses.reduce(0, +) / Float(B * T)
    }
    func trainingForward(inputs: [Int32], targets: [Int32], B: Int, T: Int, microSteps: Int) throws {
        trainingForwards.append(microSteps)
        microStepLosses.append(try forward(inputs: inputs, targets: targets, B: B, T: T))
    }
    func trainingLosses() throws -> [Float] { microStepLosses }
    func lastLosses() -> [Float] { losses }
    /// Logits favour (last input + 1) mod V, so sampling is predictable (B = 1 when sampling).
    func logits(b: Int, t: Int) -> [Float] {
        var l = [Float](repeating: 0, count: config.vocabSize)
        let last = lastInputs[lastInputs.count - 1]
        l[Int(last + 1) % config.vocabSize] = 100
        return l
    }
    func zeroGradients() {
        microStepLosses = []
        for i in gradients.indices { gradients[i] = 0 }
    }
    func backward(microSteps: Int) throws { for i in gradients.indices { gradients[i] += 1 / Float(microSteps) } }
    func gradientNorm() throws -> Float { (gradients.map { $0 * $0 }.reduce(0, +)).squareRoot() }
    func update(_ s: AdamWSettings) throws {
        updates.append(s)
        for i in parameters.indices { parameters[i] -= s.learningRate * gradients[i] * s.gradScale }
    }
    func readParameters() throws -> [Float] { parameters }
    func writeParameters(_ p: [Float]) throws { parameters = p }
    func readOptimizerState() throws -> (m: [Float], v: [Float]) { (m, v) }
    func writeOptimizerState(m: [Float], v: [Float]) throws { self.m = m; self.v = v }
    func readGradients() throws -> [Float] { gradients }
}

let mockConfig = GPT2Config(maxSeqLen: 16, vocabSize: 60, paddedVocabSize: 128, numLayers: 1, numHeads: 1, channels: 4)
