// `llm bench train`: median time of whole training steps (forward, backward, AdamW) on random
// tokens, with tokens/s, the fraction of peak (CPU: measured FMA peak; GPU: llm.c's MFU) and memory.

import ArgumentParser
import LLM
import LLMCPU
import LLMCUDA
#if canImport(Glibc)
import Glibc
#endif

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Time training steps of a GPT-2 (median ms/step after warm-up, tokens/s, fraction of peak, peak memory).",
        discussion: """
        CPU, llm.c's setting: llm bench train --model d12 --batch 4 --seq-len 64
        GPU, GPT-2 124M recipe: llm bench train --device cuda --model d12 --batch 64 --seq-len 1024 --total-batch 524288 --steps 20
        FLOPs per token follow llm.c's MFU formula, 6N + 6LCT (N with the padded vocabulary).
        """)

    @OptionGroup var model: ModelOption<Defaults>
    @OptionGroup var shape: ShapeOptions<Defaults>
    @Option(name: .customLong("total-batch"), help: "Tokens per optimizer step (a multiple of B*T). Default B*T.")
    var totalBatch: Int?
    @Option(help: "Timed steps (after the warm-up).")
    var steps: Int = 10
    @Option(name: .customLong("warmup-steps"), help: "Untimed steps first (kernel compilation, caches, page faults).")
    var warmupSteps: Int = 2
    @OptionGroup var device: DeviceOption
    @OptionGroup var precision: PrecisionOption
    @OptionGroup var recompute: RecomputeOption
    @OptionGroup var threads: ThreadsOption
    @Flag(help: "GPU: after the timed steps, run one more with every kernel and matmul timed (CUDA events) and print the time per kernel.")
    var profile = false
    @Flag(help: "GPU: like --profile, but with the side stream on as in training: also prints how long the main stream waited (for the side stream or the host) and how long the two streams overlapped.")
    var timeline = false

    func validate() throws {
        if steps <= 0 { throw ValidationError("--steps \(steps) must be > 0") }
        if warmupSteps < 0 { throw ValidationError("--warmup-steps \(warmupSteps) must be >= 0") }
    }

    func run() throws {
        try reportingErrors(bench)
    }

    func bench() throws {
        threads.apply()
        let startup = monotonicSeconds()
        let batch = shape.batch, seqLen = shape.seqLen
        let (config, parameters, source) = try model.load(seed: 42)
        try shape.check(config)
        let total = totalBatch ?? batch * seqLen
        if total % (batch * seqLen) != 0 {
            throw LLMError("--total-batch \(total) must be a multiple of batch x seq-len = \(batch * seqLen)")
        }
        let accum = total / (batch * seqLen)
        // Random tokens, enough for every micro-step without repeating a batch.
        var rng = XorShift(seed: 1337)
        let needed = (warmupSteps + steps) * accum * batch * seqLen + 1
        let tokens = (0 ..< needed).map { _ in UInt16(rng.nextUInt32() % UInt32(config.vocabSize)) }
        let loader = try DataLoader(sources: [.memory(name: "random tokens", tokens: tokens)], B: batch, T: seqLen,
                                    vocabSize: config.vocabSize, shuffle: false)
        let backend = try makeBackend(device.value, config: config, parameters: parameters, B: batch, T: seqLen,
                                      precision: precision.value, recompute: recompute.value, log: { print($0) })
        let onCPU = backend is CPUModel
        print("model: \(source), \(ParameterLayout(config).unpaddedCount) parameters; device: \(backend.deviceDescription)")
        print(format("batch %ld x %ld, %ld micro-steps, %ld tokens per step; %ld warm-up + %ld timed steps",
                     batch, seqLen, accum, total, warmupSteps, steps))

        var times: [Double] = []
        var peakDeviceMemory = 0
        var firstStepSeconds = 0.0
        func trainingStep(_ step: Int) throws -> Float {
            backend.zeroGradients()
            for _ in 0 ..< accum {
                try loader.nextBatch()
                try backend.trainingForward(inputs: loader.inputs, targets: loader.targets, B: batch, T: seqLen,
                                            microSteps: accum)
                try backend.backward(microSteps: accum)
            }
            let norm = try backend.gradientNorm()
            var loss: Float = 0
            for l in try backend.trainingLosses() { loss += l }
            // update returns when the update is done (the CUDA model synchronises), as in training
            try backend.update(AdamWSettings(learningRate: 1e-4, weightDecay: 0.1, t: step + 1,
                                             gradScale: norm > 1 ? 1 / norm : 1))
            return loss
        }
        for step in 0 ..< warmupSteps + steps {
            let t0 = monotonicSeconds()
            let loss = try trainingStep(step)
            let seconds = monotonicSeconds() - t0
            if step == 0 { firstStepSeconds = monotonicSeconds() - startup }
            if let used = try backend.deviceMemoryInUse() { peakDeviceMemory = max(peakDeviceMemory, used) }
            print(format("step %2ld: loss %.4f, %.1f ms", step + 1, Double(loss) / Double(accum), seconds * 1000)
                  + (step < warmupSteps ? " (warm-up)" : ""))
            if step >= warmupSteps { times.append(seconds) }
        }
        let median = times.sorted()[times.count / 2]
        let tokensPerSecond = Double(total) / median
        let N = Double(ParameterLayout(config).count)
        let flopsPerStep = (6 * N + 6 * Double(config.numLayers * config.channels * seqLen)) * Double(total)
        var rows: [(String, String)] = [
            ("model", "\(model.value) (\(config.numLayers) layers, C=\(config.channels))"),
            ("device", backend.deviceDescription),
            ("tokens per step", "\(total)"),
            ("median ms/step", format("%.1f", median * 1000)),
            ("min / max ms/step", format("%.1f / %.1f", times.min()! * 1000, times.max()! * 1000)),
            ("tokens/s", format("%.0f", tokensPerSecond)),
            ("achieved GFLOP/s", format("%.1f", flopsPerStep / median / 1e9)),
            ("start to first step done", format("%.1f s", firstStepSeconds)),
        ]
        if onCPU {
            let peak = measurePeakFLOPs()
            rows.append(("measured fp32 peak", format("%.0f GFLOP/s (%ld threads)", peak.allThreads, peak.threads)))
            rows.append(("fraction of peak", format("%.1f %%", 100 * flopsPerStep / median / 1e9 / peak.allThreads)))
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            rows.append(("peak memory (RSS)", format("%.2f GiB", Double(usage.ru_maxrss) * 1024 / Double(1 << 30))))
        } else {
            if let peak = backend.peakFLOPs {
                rows.append(("MFU (llm.c formula)", format("%.1f %%", 100 * flopsPerStep / median / peak)))
            }
            rows.append(("peak GPU memory in use", format("%.2f GiB", Double(peakDeviceMemory) / Double(1 << 30))))
        }
        if profile || timeline, let cuda = backend as? CUDAModel {
            if profile { try printProfile(cuda, bothStreams: false) { _ = try trainingStep(warmupSteps + steps) } }
            if timeline { try printProfile(cuda, bothStreams: true) { _ = try trainingStep(warmupSteps + steps + 1) } }
        }
        print("")
        for (k, v) in rows { print(k.padding(24) + v) }
    }

    /// GPT-2 124M's shapes, small enough in B for the CPU (llm.c's test setting).
    enum Defaults: ModelDefault, ShapeDefaults {
        static let model: String? = "d12"
        static let batch = 4
        static let seqLen = 64
    }

    /// One step with every launch timed: the kernels by total time, then the sum against the span;
    /// with `bothStreams` (a timeline) the two streams' busy, waiting and overlapping time.
    func printProfile(_ model: CUDAModel, bothStreams: Bool, _ step: () throws -> Void) throws {
        let profiler = KernelProfiler(device: model.device, bothStreams: bothStreams)
        model.device.profiler = profiler
        defer { model.device.profiler = nil }
        let t0 = monotonicSeconds()
        try step()
        let wall = (monotonicSeconds() - t0) * 1000
        let (kernels, idle, busy, span, streams) = try profiler.report()
        print("")
        print((bothStreams ? "kernel (one step, both streams)" : "kernel (one profiled step)").padding(44)
              + "calls  total ms    ms/call   share")
        for k in kernels {
            print(k.name.padding(44) + format("%5ld %9.2f %10.4f %6.1f %%", k.calls, k.milliseconds,
                                               k.milliseconds / Double(k.calls), 100 * k.milliseconds / busy))
        }
        func largest(_ n: Int) -> String {
            idle.prefix(n).map { $0.name + format(" %.2f ms", $0.milliseconds) }.joined(separator: ", ")
        }
        if let t = streams {  // the two streams' kernels overlap, so their sum exceeds the span
            print(format("sum of kernel times %.1f ms (both streams); first start to last end %.1f ms; "
                         + "step on the host clock %.1f ms (events add a little)", busy, span, wall))
            print(format("main stream busy %.1f ms, side stream %.1f; a kernel of either running %.1f ms, of both %.1f "
                         + "(overlap); main stream waiting %.1f ms of the span", t.mainBusyMs, t.sideBusyMs, t.eitherMs,
                         t.bothMs, span - t.mainBusyMs))
            print("main stream waiting before (largest):  " + largest(8))
        } else {
            print(format("sum of kernel times %.1f ms; first start to last end %.1f ms (%.1f ms between kernels); "
                         + "step on the host clock %.1f ms (events add a little)", busy, span, span - busy, wall))
            print("GPU idle before (largest):  " + largest(6))
        }
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}
