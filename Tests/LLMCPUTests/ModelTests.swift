// The CPU model as a whole: bf16 checkpoints, smaller forward shapes, gradient accumulation,
// the weight-decay rule, descriptor init, and that the parity check catches a wrong reference.

import Foundation
import LLM
import Testing
@testable import LLMCPU

@Suite struct ModelTests {
    /// tiny_bf16.bin holds round-to-nearest-even bf16 of every fp32 weight of tiny.bin.
    @Test func bf16CheckpointMatchesFP32Weights() throws {
        let fp32 = try CheckpointFile.read(fixturePath("tiny.bin"))
        let bf16 = try CPUModel.load(path: fixturePath("tiny_bf16.bin"), B: 1, T: 8)
        #expect(bf16.config == fp32.config)
        let p = try bf16.readParameters()
        var mismatches = 0
        for i in 0 ..< p.count where p[i] != floatFromBF16(bf16FromFloat(fp32.parameters[i])) { mismatches += 1 }
        #expect(mismatches == 0)
        #expect(maxAbsDiff(p, fp32.parameters) <= Double(fp32.parameters.map { abs($0) }.max()!) / 256)
    }

    /// Attention is causal, so a forward of (1, 5) gives the first rows of a (4, 32) forward.
    @Test func smallerForwardShapeGivesSameLogits() throws {
        let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 4, T: 32)
        let state = try DebugState(path: fixturePath("tiny_debug_state.bin"), config: model.config)
        _ = try model.forward(inputs: state.inputs, targets: state.targets, B: 4, T: 32)
        let full = (0 ..< 5).map { model.logits(b: 0, t: $0) }
        let loss = try model.forward(inputs: Array(state.inputs[0 ..< 5]), targets: nil, B: 1, T: 5)
        #expect(loss.isNaN)
        for t in 0 ..< 5 { #expect(maxAbsDiff(model.logits(b: 0, t: t), full[t]) < 1e-5) }
        #expect(throws: LLMError.self) { try model.forward(inputs: [Int32](repeating: 0, count: 33), targets: nil, B: 1, T: 33) }
        #expect(throws: LLMError.self) { try model.forward(inputs: [500], targets: nil, B: 1, T: 1) }
    }

    /// Two backward passes with microSteps 2 accumulate the same gradient as one with microSteps 1
    /// (those two after trainingForward, a plain forward on the CPU, whose losses trainingLosses()
    /// keeps), and gradientNorm is the L2 norm of what readGradients returns.
    @Test func backwardAccumulatesMicroSteps() throws {
        let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 4, T: 32)
        let state = try DebugState(path: fixturePath("tiny_debug_state.bin"), config: model.config)
        let loss = try model.forward(inputs: state.inputs, targets: state.targets, B: 4, T: 32)
        model.zeroGradients()
        try model.backward(microSteps: 1)
        let once = try model.readGradients()
        model.zeroGradients()
        for _ in 0 ..< 2 {
            try model.trainingForward(inputs: state.inputs, targets: state.targets, B: 4, T: 32, microSteps: 2)
            try model.backward(microSteps: 2)
        }
        let twice = try model.readGradients()
        #expect(maxAbsDiff(once, twice) < 1e-7)
        let norm = once.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        #expect(abs(Double(try model.gradientNorm()) - norm) < 1e-5 * norm)
        // Each trainingForward's loss is the plain forward's; zeroGradients starts a new list.
        #expect(try model.trainingLosses() == [loss, loss])
        model.zeroGradients()
        #expect(try model.trainingLosses().isEmpty)
    }

    /// With zero gradients AdamW only decays: every tensor with decayAllTensors (llm.c's CPU rule),
    /// the matrices only without it (its GPU rule).
    @Test func weightDecayRule() throws {
        for all in [true, false] {
            let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 1, T: 4)
            let before = try model.readParameters()
            model.zeroGradients()
            try model.update(AdamWSettings(learningRate: 0.1, weightDecay: 0.5, decayAllTensors: all, t: 1))
            let after = try model.readParameters()
            let layout = ParameterLayout(model.config)
            for tensor in ParameterTensor.allCases {
                let factor: Float = all || tensor.isMatrix ? 1 - 0.1 * 0.5 : 1
                let r = layout.range(tensor)
                let expected = before[r].map { $0 * factor }
                #expect(maxAbsDiff(after[r], expected) < 1e-7, "\(tensor.name) decayAll=\(all)")
            }
        }
    }

    /// A model built from the GPT-2 init (seed 42, the reference's) passes the same parity check as
    /// tiny.bin itself: the descriptor path and the checkpoint path give the same network.
    @Test func initialisedModelMatchesReference() throws {
        let config = try CheckpointFile.readHeader(fixturePath("tiny.bin")).config
        let model = try CPUModel(config: config, parameters: gpt2InitialParameters(config, seed: 42), B: 4, T: 32)
        let state = try DebugState(path: fixturePath("tiny_debug_state.bin"), config: config)
        let report = try runParityCheck(backend: model, state: state)
        #expect(report.passed, "\(report.lines.joined(separator: "\n"))")
    }

    /// A descriptor-sized model (d2: GPT-2 vocabulary) starts near the uniform loss ln(V).
    @Test func descriptorModelStartsNearUniformLoss() throws {
        let config = try GPT2Config.fromDescriptor("d2", maxSeqLen: 64)
        let model = try CPUModel(config: config, parameters: gpt2InitialParameters(config, seed: 42), B: 1, T: 16)
        let tokens = (0 ..< 17).map { Int32($0 * 2957 % 50257) }
        let loss = try model.forward(inputs: Array(tokens[0 ..< 16]), targets: Array(tokens[1...]), B: 1, T: 16)
        #expect(abs(loss - log(50257)) < 0.1)
    }
}

/// `llm check` runs runParityCheck; a reference that disagrees with the model must fail it.
@Suite struct ParityCheckCatchesErrors {
    func tinyState(perturbing offset: Int?, by delta: Float) throws -> DebugState {
        var bytes = try Data(contentsOf: URL(fileURLWithPath: fixturePath("tiny_debug_state.bin")))
        if let offset {
            let value = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: Float.self) } + delta
            withUnsafeBytes(of: value) { bytes.replaceSubrange(offset ..< offset + 4, with: $0) }
        }
        let path = NSTemporaryDirectory() + "llm-parity-\(UUID().uuidString).bin"
        try bytes.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let config = try CheckpointFile.readHeader(fixturePath("tiny.bin")).config
        return try DebugState(path: path, config: config)
    }

    @Test func perturbedGradientFails() throws {
        let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 4, T: 32)
        let config = model.config, layout = ParameterLayout(config)
        let (B, T, V) = (4, 32, config.vocabSize)
        // One element of the reference's fcw gradient, moved by 1 % of that tensor's largest entry.
        let gradientsStart = 1024 + 4 * (2 * B * T + B * T * V + 1)
        let index = layout.offset(.fcw) + 1234
        let clean = try tinyState(perturbing: nil, by: 0)
        let scale = clean.gradients[layout.range(.fcw)].map { abs($0) }.max()!
        let state = try tinyState(perturbing: gradientsStart + 4 * index, by: 0.05 * scale)
        let report = try runParityCheck(backend: model, state: state)
        #expect(!report.passed)
        #expect(report.gradients.filter { !$0.passed }.map(\.name) == ["fcw"])
        #expect(report.logitsPassed && report.lossPassed)
    }

    @Test func perturbedWeightFails() throws {
        let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 4, T: 32)
        var p = try model.readParameters()
        p[ParameterLayout(model.config).offset(.attprojw) + 77] += 0.01
        try model.writeParameters(p)
        let state = try DebugState(path: fixturePath("tiny_debug_state.bin"), config: model.config)
        let report = try runParityCheck(backend: model, state: state, referenceLosses: try tinyStepLosses())
        #expect(!report.passed)
    }

    @Test func perturbedStepLossFails() throws {
        let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 4, T: 32)
        let state = try DebugState(path: fixturePath("tiny_debug_state.bin"), config: model.config)
        var losses = try tinyStepLosses()
        losses[7] += 3e-4
        let report = try runParityCheck(backend: model, state: state, referenceLosses: losses)
        #expect(!report.passed)
        #expect(report.stepLosses.filter { !$0.passed }.map(\.step) == [7])
    }

    @Test func stepsFileIsRead() throws {
        let (losses, adamW) = try readParitySteps(fixturePath("tiny_steps.json"))
        #expect(losses == (try tinyStepLosses()))
        #expect(adamW.learningRate == 1e-4 && adamW.beta2 == 0.999 && adamW.weightDecay == 0.01 && adamW.decayAllTensors)
    }
}
