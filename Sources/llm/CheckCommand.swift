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

    @Option(help: "Backend to check: cpu or cuda.")
    var device: DeviceChoice = .cpu
    @Option(help: "GPU precision: fp32 (exact checks, no TF32) or bf16 (llm.c's mixed precision).")
    var precision: PrecisionChoice = .fp32
    @OptionGroup var recompute: RecomputeOption

    @Option(help: "Tolerance on the max abs difference of logits (default 1e-4; 0.05 for cuda bf16).")
    var logitsTolerance: Float?
    @Option(help: "Tolerance on the loss difference (default 1e-5; 0.05 for cuda bf16, llm.c's GPU test).")
    var lossTolerance: Float?
    @Option(help: "Tolerance on ||ours - ref|| / ||ref|| of each parameter gradient (default 1e-4; 0.02 for cuda bf16).")
    var gradientTolerance: Float?
    @Option(help: "Tolerance on each AdamW step loss (default 1e-4; 0.01 for cuda bf16).")
    var stepTolerance: Float?

    func run() throws {
        do {
            let file = try CheckpointFile.read(model)
            let debugState = try DebugState(path: state, config: file.config)
            let steps = try losses.map { try readParitySteps($0) }
            let backend = try makeBackend(device == .auto ? .cpu : device, config: file.config, parameters: file.parameters,
                                          B: debugState.B, T: debugState.T, precision: precision, recompute: recompute.value, log: { print($0) })
            let mixed = device == .cuda && precision == .bf16
            print("model \(model): \(file.config)")
            print("state \(state): B=\(debugState.B) T=\(debugState.T), device \(backend.deviceDescription)")
            let tolerances = ParityTolerances(logitsMaxAbs: logitsTolerance ?? (mixed ? 0.05 : 1e-4),
                                              lossAbs: lossTolerance ?? (mixed ? 0.05 : 1e-5),
                                              gradientRelativeNorm: gradientTolerance ?? (mixed ? 0.02 : 1e-4),
                                              stepLossAbs: stepTolerance ?? (mixed ? 0.01 : 1e-4))
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
