// `llm cuda-selftest`: the GPU model against PyTorch's reference files (tiny model: logits, loss,
// every gradient, 10 AdamW losses) in fp32 and bf16, the classifier in row chunks against one chunk,
// a determinism run, and step timings.

#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Dispatch
import LLM
import LLMCUDA

struct CUDASelfTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cuda-selftest",
        abstract: "Check the CUDA backend against the reference files, then time training steps.")

    @Option(name: .long, help: "Folder with tiny.bin, tiny_debug_state.bin, tiny_steps.json, tinyshakespeare.gpt2.u16.")
    var fixtures = "Tests/Fixtures"

    @Option(name: .long, help: "fp32, bf16 or both.")
    var precision = "both"

    @Flag(name: .customLong("parity"), inversion: .prefixedNo,
          help: "Check the tiny model against the PyTorch reference files (--no-parity: only the other checks, e.g. to profile one kernel).")
    var checkParity = true

    @Option(name: .long, help: "Batch of the flash-attention check against the scalar kernels (d12 heads, bf16); 0 skips it.")
    var attentionBatch = 4

    @Option(name: .long, help: "Batch of the d12 check of the classifier in chunks (16384 rows) against one chunk (bf16, T = 1024); 0 skips it.")
    var classifierBatch = 32

    @Option(name: .long, help: "Rows of the check of our Hopper GEMM against cuBLASLt (d12's fc shapes, bf16, sm_90 only); 0 skips it.")
    var gemmRows = 8192

    @Option(name: .long, help: "Rows of the Hopper GEMM's timing against cuBLASLt (B*T; d12 at B=64 is 65536); 0 skips it.")
    var gemmTimingRows = 65536

    @Option(name: .long, help: "Steps of the determinism run (two runs, d12 shape, bf16); 0 skips it.")
    var determinismSteps = 20

    @Option(name: .long, help: "Micro-batch B of the determinism run and the timing (T = 1024, d12 shape).")
    var batch = 8

    @Option(name: .long, help: "Timed training steps at d12 with --bench-batch; 0 skips timing.")
    var benchSteps = 6

    @Option(name: .long, help: "Micro-batch B of the timing run.")
    var benchBatch = 16

    func run() throws {
        if let why = CUDABackend.unavailableReason() { throw LLMError(why) }
        var failures: [String] = []
        var table: [String] = []
        let precisions: [GPUPrecision] = precision == "both" ? [.fp32, .bf16] : [GPUPrecision(rawValue: precision)].compactMap { $0 }
        if precisions.isEmpty { throw LLMError("--precision \(precision): expected fp32, bf16 or both") }
        for p in precisions where checkParity {
            let (rows, bad) = try parity(p)
            table += rows
            failures += bad
        }
        if attentionBatch > 0 && precisions.contains(.bf16) {
            let (rows, bad) = try attentionCheck()
            table += rows
            failures += bad
        }
        if classifierBatch > 0 && precisions.contains(.bf16) {
            let (row, ok) = try classifierCheck()
            table.append(row)
            if !ok { failures.append("classifier chunks d12") }
        }
        if gemmRows > 0 && precisions.contains(.bf16) {
            let config = try GPT2Config.fromDescriptor("d12")
            let model = try CUDAModel(config: config, parameters: randomParameters(config), B: 1, T: 1024, precision: .bf16)
            if let rows = try model.checkHopperGEMM(rows: gemmRows, timingRows: gemmTimingRows) {
                table += rows.map(\.row)
                failures += rows.filter { !$0.ok }.map { _ in "hopper gemm" }
            } else {
                table.append("hopper gemm: not used on this GPU (sm_90 in bf16 only, or LLM_HOPPER_GEMM=0)")
            }
        }
        if determinismSteps > 0 {
            let (row, ok) = try determinism()
            table.append(row)
            if !ok { failures.append("determinism") }
        }
        if benchSteps > 0 { table += try bench() }
        print("\n==== summary ====")
        table.forEach { print($0) }
        print(failures.isEmpty ? "cuda-selftest: all checks passed" : "cuda-selftest: FAILED: \(failures.joined(separator: ", "))")
        if !failures.isEmpty { throw ExitCode(1) }
    }

    // MARK: Parity with the PyTorch reference

    func parity(_ p: GPUPrecision) throws -> (rows: [String], failures: [String]) {
        let (config, _, params) = try CheckpointFile.read(fixtures + "/tiny.bin")
        let state = try DebugState(path: fixtures + "/tiny_debug_state.bin", config: config)
        let steps = try ReferenceSteps(path: fixtures + "/tiny_steps.json")
        let start = now()
        // One chunk of classifier rows: logits(b:t:) needs every row's logits. Recompute 1: the
        // reference the other settings are compared with below.
        let model = try CUDAModel(config: config, parameters: params, B: state.B, T: state.T, precision: p,
                                  recompute: 1, classifierRows: state.B * state.T)
        print("[\(p)] \(model.deviceDescription), GELU epilogues \(model.fusedGELU ? "on" : "off"), kernels: \(model.kernels.compiledModules) modules compiled, "
              + "load \(fmt(model.kernels.loadSeconds)) s, model ready in \(fmt(now() - start)) s")
        let V = config.vocabSize, B = state.B, T = state.T
        let loss = try model.forward(inputs: state.inputs, targets: state.targets, B: B, T: T)
        var logitsMax: Float = 0
        for b in 0 ..< B {
            for t in 0 ..< T {
                let row = model.logits(b: b, t: t)
                for v in 0 ..< V { logitsMax = max(logitsMax, abs(row[v] - state.logits[(b * T + t) * V + v])) }
            }
        }
        model.zeroGradients()
        try model.backward(microSteps: 1)
        let grads = try model.readGradients()
        let layout = ParameterLayout(config)
        // llm.c test_gpt2.cu's per-tensor bf16 tolerances (plus 0.079 * |ref|).
        let llmcTol: [Float] = [5e-1, 4e-3, 1e-1, 4e-2, 5e-2, 3.5e-2, 2e-2, 3e-2, 5e-2, 3e-2, 3e-2, 3e-2, 2e-2, 1e-2, 1e-1, 2e-2]
        var worstRel: Float = 0, worstName = ""
        var elementFails = 0
        var gradLines: [String] = []
        for t in ParameterTensor.allCases {
            var diff2 = 0.0, ref2 = 0.0
            var fails = 0
            for i in layout.range(t) {
                let d = Double(grads[i] - state.gradients[i])
                diff2 += d * d
                ref2 += Double(state.gradients[i]) * Double(state.gradients[i])
                if abs(grads[i] - state.gradients[i]) > llmcTol[t.rawValue] + 0.079 * abs(state.gradients[i]) { fails += 1 }
            }
            let rel = Float((diff2 / max(ref2, 1e-30)).squareRoot())
            gradLines.append("\(t.name) \(sci(rel))" + (fails > 0 ? " (\(fails) elements over llm.c tol)" : ""))
            if rel > worstRel { worstRel = rel; worstName = t.name }
            elementFails += fails
        }
        // Recompute 0 and 2 (activations kept, layernorms recomputed too) against 1:
        // the same deterministic kernels in another order, so bit-identical loss and gradients.
        // Except 0 with the GELU epilogue: its fcproj dweight then reads the epilogue's GELU of the
        // fp32 sum, where recompute 1 reads gelu_forward of the bf16-rounded fch.
        // And recompute 1 with the weight gradients on the main stream instead of the side stream:
        // the same kernels in the same order on each stream, so bit-identical too.
        var recomputeSame = true
        for (r, side) in [(0, true), (2, true), (1, false)] {
            let other = try CUDAModel(config: config, parameters: params, B: B, T: T, precision: p, recompute: r,
                                      classifierRows: B * T)
            other.device.sideStreamEnabled = side
            let l = try other.forward(inputs: state.inputs, targets: state.targets, B: B, T: T)
            other.zeroGradients()
            try other.backward(microSteps: 1)
            let otherGrads = try other.readGradients()
            let same = l.bitPattern == loss.bitPattern && zip(otherGrads, grads).allSatisfy { $0.bitPattern == $1.bitPattern }
            var d2 = 0.0, r2 = 0.0
            for (x, y) in zip(otherGrads, grads) { d2 += Double(x - y) * Double(x - y); r2 += Double(y) * Double(y) }
            let rel = Float((d2 / max(r2, 1e-30)).squareRoot())
            let ok = same || (r == 0 && model.fusedGELU && rel < 1e-2)
            print("[\(p)] recompute \(r)\(side ? "" : ", one stream,") vs 1: loss and gradients "
                  + (same ? "bit-identical" : "differ, all-grad rel. \(sci(rel))")
                  + (ok ? "" : " FAIL"))
            recomputeSame = recomputeSame && ok
        }
        let (geluBiasRow, geluBiasOK) = try model.checkGeluBiasKernel()
        print("[\(p)] " + geluBiasRow)
        let (stagedRow, stagedOK) = try model.checkStagedClassifier()
        print("[\(p)] " + stagedRow)
        let (chunkRows, chunksOK) = try classifierChunks(p, config: config, params: params, state: state,
                                                         loss: loss, grads: grads)
        // Gradient accumulation: the batch as two micro-batches of B/2 gives the same gradients.
        model.zeroGradients()
        let half = B / 2 * T
        for k in 0 ..< 2 {
            try model.trainingForward(inputs: Array(state.inputs[k * half ..< (k + 1) * half]),
                                          targets: Array(state.targets[k * half ..< (k + 1) * half]), B: B / 2, T: T,
                                          microSteps: 2)
            try model.backward(microSteps: 2)
        }
        let accumulated = try model.readGradients()
        var accD2 = 0.0, accR2 = 0.0
        for i in accumulated.indices {
            accD2 += Double(accumulated[i] - state.gradients[i]) * Double(accumulated[i] - state.gradients[i])
            accR2 += Double(state.gradients[i]) * Double(state.gradients[i])
        }
        let accRel = Float((accD2 / accR2).squareRoot())
        print("[\(p)] loss \(loss) (ref \(state.loss)), logits max |diff| \(sci(logitsMax)), "
              + "2 micro-steps of B/2: all-grad rel. error \(sci(accRel))")
        print("[\(p)] grad rel. error: " + gradLines.joined(separator: ", "))

        // 10 AdamW steps on the same batch, as tiny_steps.json.
        try model.writeParameters(params)
        let n = layout.count
        try model.writeOptimizerState(m: [Float](repeating: 0, count: n), v: [Float](repeating: 0, count: n))
        var lossDiff: Float = 0
        var losses: [Float] = []
        for step in 0 ..< steps.losses.count {
            model.zeroGradients()
            let l = try model.trainingForwardLoss(inputs: state.inputs, targets: state.targets, B: B, T: T, microSteps: 1)
            losses.append(l)
            lossDiff = max(lossDiff, abs(l - steps.losses[step]))
            try model.backward(microSteps: 1)
            try model.update(AdamWSettings(learningRate: steps.lr, beta1: steps.beta1, beta2: steps.beta2, epsilon: steps.eps,
                                           weightDecay: steps.weightDecay, decayAllTensors: true, t: step + 1))
        }
        print("[\(p)] 10 losses: " + losses.map { fmt6($0) }.joined(separator: " "))
        print("[\(p)] reference: " + steps.losses.map { fmt6($0) }.joined(separator: " "))

        var failures: [String] = []
        let lossErr = abs(loss - state.loss)
        if p == .fp32 {
            if logitsMax > 1e-4 { failures.append("fp32 logits") }
            if lossErr > 1e-4 { failures.append("fp32 loss") }
            if worstRel > 1e-4 { failures.append("fp32 grads (\(worstName))") }
            if lossDiff > 1e-4 { failures.append("fp32 10 losses") }
            if accRel > 1e-4 { failures.append("fp32 micro-step accumulation") }
            if !recomputeSame { failures.append("fp32 recompute 0/2 or one stream vs 1") }
            if !chunksOK { failures.append("fp32 classifier chunks") }
            if !geluBiasOK { failures.append("fp32 gelu_backward_bias") }
            if !stagedOK { failures.append("fp32 classifier_loss_backward_staged") }
        } else {
            if logitsMax > 25 { failures.append("bf16 logits") }
            if lossErr > 0.05 { failures.append("bf16 loss") }
            if elementFails > 0 { failures.append("bf16 grads (\(elementFails) elements)") }
            if lossDiff > 0.05 { failures.append("bf16 10 losses") }
            if accRel > 2e-2 { failures.append("bf16 micro-step accumulation") }
            if !recomputeSame { failures.append("bf16 recompute 0/2 or one stream vs 1") }
            if !chunksOK { failures.append("bf16 classifier chunks") }
            if !geluBiasOK { failures.append("bf16 gelu_backward_bias") }
            if !stagedOK { failures.append("bf16 classifier_loss_backward_staged") }
        }
        let row = "\(p.rawValue) tiny: logits max \(sci(logitsMax)), loss diff \(sci(lossErr)), "
            + "worst grad rel \(sci(worstRel)) (\(worstName)), llm.c grad tol fails \(elementFails), "
            + "10-step loss max diff \(sci(lossDiff)), 2-micro-step grads rel \(sci(accRel)), "
            + "recompute 0/1/2 \(recomputeSame ? "agree" : "differ"), "
            + "classifier in chunks of \(chunkRows) rows \(chunksOK ? "agrees" : "differs"), "
            + "gelu_backward_bias \(geluBiasOK ? "bit-identical" : "differs"), "
            + "staged classifier \(stagedOK ? "agrees" : "differs")  \(failures.isEmpty ? "PASS" : "FAIL")"
        return ([row], failures)
    }

    // MARK: Classifier in chunks

    /// The tiny model's classifier in 4 chunks (the last one short) against one chunk (`loss`,
    /// `grads`, from forward + backward): trainingForward, which runs the LM-head backward chunk by
    /// chunk (dwte summed in fp32 in bf16 mode), and a plain forward whose backward recomputes each
    /// chunk's logits. Only the matmul algorithms (other row counts) and dwte's summation order
    /// differ, so loss and gradients agree to rounding. Also: a backward with other micro-steps than
    /// its trainingForward must throw.
    func classifierChunks(_ p: GPUPrecision, config: GPT2Config, params: [Float], state: DebugState,
                          loss: Float, grads: [Float]) throws -> (rows: Int, ok: Bool) {
        let B = state.B, T = state.T
        let rows = max(1, B * T * 5 / 16)  // 128 rows: 40, 40, 40, 8
        let chunks = (B * T + rows - 1) / rows
        let tolerance: Float = p == .fp32 ? 1e-5 : 1e-2
        let model = try CUDAModel(config: config, parameters: params, B: B, T: T, precision: p, classifierRows: rows)
        let seeds = try model.readRandomState()  // as the reference model's: the same stochastic rounding
        var ok = true
        for training in [true, false] {
            try model.writeRandomState(seeds)
            model.zeroGradients()
            let l = training
                ? try model.trainingForwardLoss(inputs: state.inputs, targets: state.targets, B: B, T: T, microSteps: 1)
                : try model.forward(inputs: state.inputs, targets: state.targets, B: B, T: T)
            try model.backward(microSteps: 1)
            let d = gradientDifference(try model.readGradients(), grads, config: config)
            let same = l.bitPattern == loss.bitPattern && d.all == 0
            let lossRel = abs(l - loss) / max(abs(loss), 1e-30)
            let pass = lossRel < tolerance && d.all < tolerance && d.worst < 5 * tolerance
            ok = ok && pass
            let sum = p == .bf16 ? (model.dwteInFP32 ? ", dwte summed in fp32" : ", dwte summed in bf16 (fallback)") : ""
            print("[\(p)] classifier in \(chunks) chunks of \(rows) rows\(sum), "
                  + (training ? "trainingForward + backward" : "forward + backward (logits recomputed)")
                  + " vs 1 chunk: " + (same ? "bit-identical" : "loss rel. diff \(sci(lossRel)), all-grad rel. \(sci(d.all)), "
                                       + "worst tensor \(d.worstName) \(sci(d.worst))")
                  + (pass ? "" : " FAIL"))
        }
        try model.trainingForward(inputs: state.inputs, targets: state.targets, B: B, T: T, microSteps: 2)
        let mismatchThrows = (try? model.backward(microSteps: 1)) == nil
        print("[\(p)] backward(microSteps: 1) after trainingForward(microSteps: 2): "
              + (mismatchThrows ? "throws" : "did not throw FAIL"))
        return (rows, ok && mismatchThrows)
    }

    /// d12 (bf16, random weights, tinyshakespeare batch): trainingForward + backward with the
    /// classifier in chunks (LLM_CLASSIFIER_ROWS or 16384 rows; from B = 25 on, dwte's fp32 sum
    /// lives in the (B, T, 4C) scratch) against one chunk of all B*T rows.
    func classifierCheck() throws -> (String, Bool) {
        let T = 1024, B = classifierBatch
        let config = try GPT2Config.fromDescriptor("d12")
        let params = randomParameters(config)
        let (x, y) = batchAt(try tokens(), 0, B: B, T: T)
        var results: [(loss: Float, grads: [Float])] = []
        var chunkRows = 0, fp32Sum = true
        for rows in [B * T, nil] {
            let model = try CUDAModel(config: config, parameters: params, B: B, T: T, precision: .bf16, classifierRows: rows)
            model.zeroGradients()
            let loss = try model.trainingForwardLoss(inputs: x, targets: y, B: B, T: T, microSteps: 1)
            try model.backward(microSteps: 1)
            results.append((loss, try model.readGradients()))
            chunkRows = model.classifierRows
            fp32Sum = model.dwteInFP32
        }
        let d = gradientDifference(results[1].grads, results[0].grads, config: config)
        let lossRel = abs(results[1].loss - results[0].loss) / abs(results[0].loss)
        let ok = lossRel < 1e-2 && d.all < 1e-2 && d.worst < 5e-2
        let row = "classifier d12 bf16 B=\(B) T=\(T), \((B * T + chunkRows - 1) / chunkRows) chunks of \(chunkRows) rows "
            + "(dwte summed in \(fp32Sum ? "fp32" : "bf16, fallback")) vs 1 chunk: "
            + "loss \(fmt6(results[1].loss)) vs \(fmt6(results[0].loss)) (rel. diff \(sci(lossRel))), "
            + "all-grad rel. \(sci(d.all)), worst tensor \(d.worstName) \(sci(d.worst))  " + (ok ? "PASS" : "FAIL")
        print("[classifier] " + row)
        return (row, ok)
    }

    /// Relative L2 difference of `a` against the reference `b` over all parameters, and the largest per tensor.
    func gradientDifference(_ a: [Float], _ b: [Float], config: GPT2Config) -> (all: Float, worst: Float, worstName: String) {
        let layout = ParameterLayout(config)
        var d2All = 0.0, r2All = 0.0
        var worst: Float = 0, worstName = ""
        for t in ParameterTensor.allCases {
            var d2 = 0.0, r2 = 0.0
            for i in layout.range(t) {
                let d = Double(a[i]) - Double(b[i])
                d2 += d * d
                r2 += Double(b[i]) * Double(b[i])
            }
            d2All += d2
            r2All += r2
            let rel = Float((d2 / max(r2, 1e-30)).squareRoot())
            if !worst.isNaN && !(rel <= worst) { worst = rel; worstName = t.name }  // the first NaN stays the worst
        }
        return (Float((d2All / max(r2All, 1e-30)).squareRoot()), worst, worstName)
    }

    // MARK: Flash attention

    /// The tensor-core attention (head size 64) against the scalar kernels, at a full and a ragged T:
    /// errors, median times, and run-to-run bit identity of out, lse and dqkv.
    func attentionCheck() throws -> (rows: [String], failures: [String]) {
        let model = try d12Model(B: attentionBatch, T: 1024, precision: .bf16)
        var rows: [String] = [], failures: [String] = []
        // At T = 1024 on sm_90 both kinds of kernels: on wgmma (flash_hopper.cu) and on mma.sync.
        let hopper = model.useHopperAttention
        defer { model.useHopperAttention = hopper }
        for (T, useHopper) in hopper ? [(1024, true), (1024, false), (200, false)] : [(1024, false), (200, false)] {
            model.useHopperAttention = useHopper
            let r = try model.attentionParity(B: attentionBatch, T: T)
            let ok = max(r.out, r.dq, r.dk, r.dv) < 2e-2 && r.lseMaxDiff < 1e-2 && r.deterministic
            let errors: String = "rel. error out \(sci(r.out)), dq \(sci(r.dq)), dk \(sci(r.dk)), dv \(sci(r.dv)), "
                + "lse max |diff| \(sci(r.lseMaxDiff))"
            let forward: String = "forward \(format4(r.flashForwardMs)) ms (scalar \(format4(r.scalarForwardMs)))"
            let backward: String = "backward \(format4(r.flashBackwardMs)) ms (scalar \(format4(r.scalarBackwardMs)))"
            let kind = useHopper ? " (on wgmma)" : ""
            let row = "flash attention\(kind) B=\(attentionBatch) NH=12 T=\(T) vs scalar: \(errors); \(forward), \(backward); "
                + "runs \(r.deterministic ? "bit-identical" : "DIFFER")  " + (ok ? "PASS" : "FAIL")
            print("[attention] " + row)
            rows.append(row)
            if !ok { failures.append("flash attention\(kind) T=\(T)") }
        }
        return (rows, failures)
    }

    /// Milliseconds with 4 decimals (a few microseconds matter at small B).
    func format4(_ x: Float) -> String {
        let scaled = Int((Double(x) * 10000).rounded())
        let frac = String(scaled % 10000)
        return "\(scaled / 10000)." + String(repeating: "0", count: 4 - frac.count) + frac
    }

    // MARK: Determinism

    func d12Model(B: Int, T: Int, precision: GPUPrecision) throws -> CUDAModel {
        let config = try GPT2Config.fromDescriptor("d12")
        return try CUDAModel(config: config, parameters: randomParameters(config), B: B, T: T, precision: precision)
    }

    func determinism() throws -> (String, Bool) {
        let T = 1024, B = batch
        let data = try tokens()
        // Runs 1 and 2 as training runs them; run 3 with the weight gradients on the main stream,
        // which must not change a bit either (the side stream only reorders across streams).
        var runs: [[Float]] = []
        for run in 0 ..< 3 {
            let model = try d12Model(B: B, T: T, precision: .bf16)
            if run == 2 { model.device.sideStreamEnabled = false }
            var losses: [Float] = []
            for step in 0 ..< determinismSteps {
                let (x, y) = batchAt(data, step, B: B, T: T)
                model.zeroGradients()
                let l = try model.trainingForwardLoss(inputs: x, targets: y, B: B, T: T, microSteps: 1)
                try model.backward(microSteps: 1)
                let norm = try model.gradientNorm()
                try model.update(AdamWSettings(learningRate: 6e-4, weightDecay: 0.1, t: step + 1,
                                               gradScale: norm > 1 ? 1 / norm : 1))
                losses.append(l)
            }
            print("[determinism] run \(run + 1)\(run == 2 ? " (one stream)" : ""): " + losses.map { fmt6($0) }.joined(separator: " "))
            runs.append(losses)
        }
        let same = runs.dropFirst().allSatisfy { zip(runs[0], $0).allSatisfy { $0.bitPattern == $1.bitPattern } }
        return ("determinism d12 bf16 B=\(B) T=\(T), \(determinismSteps) steps x3 (one on one stream): "
                + (same ? "bit-identical PASS" : "DIFFERENT FAIL") + ", loss \(fmt6(runs[0][0])) -> \(fmt6(runs[0].last!))", same)
    }

    // MARK: Timing

    func bench() throws -> [String] {
        let T = 1024, B = benchBatch
        let data = try tokens()
        let model = try d12Model(B: B, T: T, precision: .bf16)
        let config = model.config
        var times: [Double] = []
        var fwd: [Double] = [], bwd: [Double] = [], upd: [Double] = []
        for step in 0 ..< benchSteps + 1 {
            let (x, y) = batchAt(data, step, B: B, T: T)
            let t0 = now()
            model.zeroGradients()
            try model.trainingForward(inputs: x, targets: y, B: B, T: T, microSteps: 1)
            let t1 = now()
            try model.backward(microSteps: 1)
            let t2 = now()
            let norm = try model.gradientNorm()
            try model.update(AdamWSettings(learningRate: 6e-4, weightDecay: 0.1, t: step + 1, gradScale: norm > 1 ? 1 / norm : 1))
            let t3 = now()
            if step > 0 { times.append(t3 - t0); fwd.append(t1 - t0); bwd.append(t2 - t1); upd.append(t3 - t2) }
        }
        let ms = median(times) * 1000
        let tokensPerStep = Double(B * T)
        let N = Double(ParameterLayout(config).count)
        let flops = (6 * N + 6 * Double(config.numLayers * config.channels * T)) * tokensPerStep
        let mfu = flops / median(times) / (model.peakFLOPs ?? 989.4e12) * 100
        let mem = try model.device.memoryInfo()
        return ["bench d12 bf16 B=\(B) T=\(T): \(fmt(ms)) ms/step (fwd incl. classifier bwd \(fmt(median(fwd) * 1000)), bwd \(fmt(median(bwd) * 1000)), "
                + "norm+update \(fmt(median(upd) * 1000))), \(Int(tokensPerStep / median(times))) tok/s, MFU \(fmt(mfu))%, "
                + "device memory used \((mem.total - mem.free) >> 20) MiB (\(model.memorySummary))"]
    }

    // MARK: Helpers

    func tokens() throws -> [Int32] {
        let bytes = try readFileBytes(fixtures + "/tinyshakespeare.gpt2.u16")
        return stride(from: 0, to: bytes.count - 1, by: 2).map { Int32(UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8) }
    }

    func batchAt(_ data: [Int32], _ step: Int, B: Int, T: Int) -> ([Int32], [Int32]) {
        let n = B * T
        let start = (step * n) % (data.count - n - 1)
        return (Array(data[start ..< start + n]), Array(data[start + 1 ..< start + n + 1]))
    }

    /// GPT-2-like init (normal 0.02, LN weights 1, biases 0) from a fixed xorshift stream.
    func randomParameters(_ config: GPT2Config) -> [Float] {
        let layout = ParameterLayout(config)
        var p = [Float](repeating: 0, count: layout.count)
        var s: UInt64 = 42
        func uniform() -> Double {
            s ^= s >> 12; s ^= s << 25; s ^= s >> 27
            return (Double((s &* 0x2545F4914F6CDD1D) >> 11) + 0.5) / Double(1 << 53)
        }
        for t in ParameterTensor.allCases {
            let r = layout.range(t)
            switch t {
            case .ln1w, .ln2w, .lnfw: for i in r { p[i] = 1 }
            case .wte, .wpe, .qkvw, .attprojw, .fcw, .fcprojw:
                let std = (t == .attprojw || t == .fcprojw) ? 0.02 / (2 * Double(config.numLayers)).squareRoot() : 0.02
                let end = t == .wte ? r.lowerBound + config.vocabSize * config.channels : r.upperBound
                for i in r.lowerBound ..< end {
                    p[i] = Float(std * (-2 * log(uniform())).squareRoot() * cos(2 * Double.pi * uniform()))
                }
            default: break
            }
        }
        return p
    }
}

/// The reference AdamW run of tiny_steps.json (read without Foundation: a few keys by name).
struct ReferenceSteps {
    var losses: [Float] = []
    var lr: Float = 0, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0

    init(path: String) throws {
        let text = String(decoding: try readFileBytes(path), as: UTF8.self)
        func number(_ key: String) -> Float? {
            guard let r = text.firstRange(of: "\"\(key)\":") else { return nil }
            let rest = text[r.upperBound...].drop { $0 == " " || $0 == "\n" }
            return Float(String(rest.prefix { "0123456789.eE+-".contains($0) }))
        }
        guard let r = text.firstRange(of: "\"losses_10_steps\":"),
              let open = text[r.upperBound...].firstIndex(of: "["),
              let close = text[open...].firstIndex(of: "]") else {
            throw LLMError("\(path): no losses_10_steps list")
        }
        losses = text[text.index(after: open) ..< close].split(separator: ",").compactMap {
            Float(String($0.filter { !$0.isWhitespace }))
        }
        guard let lr = number("lr") else { throw LLMError("\(path): no lr") }
        self.lr = lr
        beta1 = number("beta1") ?? beta1
        beta2 = number("beta2") ?? beta2
        eps = number("eps") ?? eps
        weightDecay = number("weight_decay") ?? 0
        if losses.isEmpty { throw LLMError("\(path): empty losses_10_steps") }
    }
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
func median(_ xs: [Double]) -> Double { xs.isEmpty ? .nan : xs.sorted()[xs.count / 2] }
func fmt(_ x: Double) -> String {
    let r = (x * 100).rounded() / 100
    return "\(r)"
}
func fmt6(_ x: Float) -> String {
    let s = "\((Double(x) * 1e6).rounded() / 1e6)"
    return s
}
func sci(_ x: Float) -> String {
    if x == 0 { return "0" }
    if !x.isFinite { return "\(x)" }
    var e = 0
    var m = Double(x)
    while abs(m) >= 10 { m /= 10; e += 1 }
    while abs(m) < 1 { m *= 10; e -= 1 }
    return "\((m * 100).rounded() / 100)e\(e)"
}
