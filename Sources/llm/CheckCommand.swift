// `llm check`: parity of a backend with a PyTorch reference (llm.c debug state, optional step losses).

import ArgumentParser
import LLM
import LLMCPU

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Compare logits, loss, gradients and AdamW step losses with a PyTorch reference; exit 1 on any failure.")

    @Option(help: "llm.c checkpoint (v3 fp32 or v5 bf16) of the reference model.")
    var model: String

    @Option(help: "llm.c debug state (magic 20240327) made from that model: batch, logits, loss, gradients.")
    var state: String

    @Option(help: "JSON with \"losses_10_steps\" (and optionally \"adamw\" settings) to check AdamW steps on the batch.")
    var losses: String?

    @Option(help: "Backend to check: cpu (cuda comes with the CUDA backend).")
    var device: String = "cpu"

    @Option(help: "Tolerance on the max abs difference of logits.")
    var logitsTolerance: Float = 1e-4
    @Option(help: "Tolerance on the loss difference.")
    var lossTolerance: Float = 1e-5
    @Option(help: "Tolerance on ||ours - ref|| / ||ref|| of each parameter gradient.")
    var gradientTolerance: Float = 1e-4
    @Option(help: "Tolerance on each AdamW step loss.")
    var stepTolerance: Float = 1e-4

    func run() throws {
        do {
            let file = try CheckpointFile.read(model)
            let debugState = try DebugState(path: state, config: file.config)
            let steps = try losses.map { try readParitySteps($0) }
            let backend: GPT2Backend
            switch device {
            case "cpu":
                backend = try CPUModel(config: file.config, parameters: file.parameters, B: debugState.B, T: debugState.T)
            default:
                throw LLMError("--device \(device): only cpu can be checked so far")
            }
            print("model \(model): \(file.config)")
            print("state \(state): B=\(debugState.B) T=\(debugState.T), device \(backend.deviceDescription)")
            let tolerances = ParityTolerances(logitsMaxAbs: logitsTolerance, lossAbs: lossTolerance,
                                              gradientRelativeNorm: gradientTolerance, stepLossAbs: stepTolerance)
            let report = try runParityCheck(backend: backend, state: debugState, referenceLosses: steps?.losses,
                                            adamW: steps?.adamW ?? AdamWSettings(learningRate: 1e-4, beta1: 0.9,
                                                beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01, decayAllTensors: true),
                                            tolerances: tolerances)
            for line in report.lines { print(line) }
            if !report.passed { throw ExitCode(1) }
        } catch let error as LLMError {
            print("error: \(error.message)")
            throw ExitCode(1)
        }
    }
}
