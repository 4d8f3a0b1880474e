// `llm compare-devices`: the same GPT-2 (same init seed, same batch) on the CPU and on CUDA; prints
// the forward loss and the losses after each of the first AdamW steps on both, and their max diff.

import ArgumentParser
import LLM
import LLMCPU
import LLMCUDA

struct CompareDevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "compare-devices",
        abstract: "Train the same model on CPU and CUDA for a few steps and compare the losses.",
        discussion: "Also runs CUDA with a second stochastic-rounding seed, to show bf16's own run-to-run spread.")
    @OptionGroup var model: ModelOption<Defaults>
    @OptionGroup var shape: ShapeOptions<Defaults>
    @Option(help: "AdamW steps after the first forward pass.")
    var steps = 5
    @Option(help: "Raw uint16 token file (no header) for the batch.")
    var tokens = "Tests/Fixtures/tinyshakespeare.gpt2.u16"
    @OptionGroup var precision: PrecisionOption
    @Option(help: "Largest allowed loss difference.")
    var tolerance: Float = 1e-2
    @Option(help: "Learning rate (llm.c's GPU test uses 1e-4).")
    var lr: Float = 1e-4

    func run() throws {
        let batch = shape.batch, seqLen = shape.seqLen
        let (config, params, _) = try model.load(seed: 42)
        try shape.check(config)
        let bytes = try readFileBytes(tokens)
        let n = batch * seqLen
        if bytes.count < 2 * (n + 1) { throw LLMError("\(tokens): \(bytes.count / 2) tokens, fewer than the \(n + 1) one batch needs") }
        let data = (0 ... n).map { Int32(UInt16(bytes[2 * $0]) | UInt16(bytes[2 * $0 + 1]) << 8) }
        let x = Array(data[0 ..< n]), y = Array(data[1 ... n])
        var results: [[Float]] = []
        for device in ["cpu", "cuda", "cuda-seed2"] {
            let backend: GPT2Backend = device == "cpu"
                ? try CPUModel(config: config, parameters: params, B: batch, T: seqLen)
                : try CUDAModel(config: config, parameters: params, B: batch, T: seqLen,
                                precision: precision.value == .fp32 ? .fp32 : .bf16)
            if device == "cuda-seed2" { try backend.writeRandomState([987654321]) }  // other rounding noise
            var losses: [Float] = []
            for step in 0 ... steps {
                let loss = try backend.forward(inputs: x, targets: y, B: batch, T: seqLen)
                losses.append(loss)
                if step == steps { break }
                backend.zeroGradients()
                try backend.backward(microSteps: 1)
                let norm = try backend.gradientNorm()
                try backend.update(AdamWSettings(learningRate: lr, weightDecay: 0.1, t: step + 1,
                                                 gradScale: norm > 1 ? 1 / norm : 1))
            }
            print("\(device) \(backend.deviceDescription): " + losses.map { "\($0)" }.joined(separator: " "))
            results.append(losses)
        }
        let diff = zip(results[0], results[1]).map { abs($0 - $1) }.max() ?? .infinity
        let noise = zip(results[1], results[2]).map { abs($0 - $1) }.max() ?? .infinity
        print("cuda vs cuda with another stochastic-rounding seed: max loss diff \(noise)")
        let ok = diff <= tolerance
        print("compare-devices \(model.value) B=\(batch) T=\(seqLen) \(precision.value): forward loss cpu \(results[0][0]) cuda \(results[1][0]); "
              + "max loss diff over forward + \(steps) steps \(diff) (tol \(tolerance)) \(ok ? "PASS" : "FAIL")")
        if !ok { throw ExitCode(1) }
    }

    /// llm.c's GPU test shape on GPT-2 124M.
    enum Defaults: ModelDefault, ShapeDefaults {
        static let model: String? = "d12"
        static let batch = 4
        static let seqLen = 64
    }
}
