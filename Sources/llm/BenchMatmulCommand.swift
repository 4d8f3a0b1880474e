// `llm bench matmul`: times the CPU matmul on the GPT-2 124M shapes (forward and both backward
// products) against the measured peak; the floor of each is its FLOPs over that peak.

import ArgumentParser
import LLM
import LLMCPU

struct BenchMatmul: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matmul",
        abstract: "Time the CPU matmul on the GPT-2 124M shapes: ms, GFLOP/s and fraction of peak.")

    @OptionGroup var threads: ThreadsOption

    @Option(help: "Rows of the input, B*T (GPT-2 124M at B=4, T=64 gives 256).")
    var bt: Int = 256

    @Option(help: "Timed repeats per product; the median is printed.")
    var repeats: Int = 10

    @Option(help: "Untimed warm-up runs per product.")
    var warmup: Int = 2

    @Option(help: "Only the shapes whose name contains this (qkv, attproj, fc, fcproj, lm).")
    var only: String?

    @Option(help: ArgumentHelp("Cache block sizes MC,KC,NC (tuning).", visibility: .hidden))
    var blocks: String?

    @Option(help: ArgumentHelp("K block of the forward (tuning).", visibility: .hidden))
    var forwardKC: Int?

    @Option(help: ArgumentHelp("GEMM loop order: 0 auto, 1 panels outer, 2 strips outer (tuning).",
                               visibility: .hidden))
    var loopOrder: Int?

    @Option(help: ArgumentHelp("Read a row-major A in place (1) or pack it (0) (tuning).", visibility: .hidden))
    var aInPlace: Int?

    @Option(help: ArgumentHelp("GEMM split: 0 auto, 1 N, 2 M (tuning).", visibility: .hidden))
    var split: Int?

    @Option(help: ArgumentHelp("Work items per thread in the dynamic schedules (tuning).", visibility: .hidden))
    var chunksPerThread: Int?

    @Flag(help: ArgumentHelp("Time with the process CPU clock (tuning on a busy machine, one thread).",
                             visibility: .hidden))
    var cpuClock = false

    mutating func run() throws {
        threads.apply()
        if let blocks {
            let sizes = blocks.split(separator: ",").compactMap { Int($0) }
            guard sizes.count == 3, sizes.allSatisfy({ $0 > 0 }) else {
                throw ValidationError("--blocks: expected MC,KC,NC, three positive integers")
            }
            matmulMC = sizes[0]; matmulKC = sizes[1]; matmulNC = sizes[2]
        }
        if let forwardKC { matmulForwardKC = forwardKC }
        if let loopOrder { matmulLoopOrder = loopOrder }
        if let chunksPerThread { matmulChunksPerThread = chunksPerThread }
        if let split { matmulSplit = split }
        if let aInPlace { matmulRowMajorAInPlace = aInPlace != 0 }
        let BT = bt
        let peak = measurePeakFLOPs()
        print("peak fp32 (FMA loop): \(fmt(peak.allThreads, 1)) GFLOP/s with \(peak.threads) thread(s), "
              + "\(fmt(peak.oneThread, 1)) on one")
        if peak.oneThread < 10 {
            // addingProduct must round once; without FMA in the target it becomes a libm fmaf
            // call per lane, about 100x slower.
            print("warning: this build has no hardware FMA; build with -Xcc -march=native "
                  + "(or -Xcc -march=x86-64-v3) for speed")
        }
        print("BT=\(BT), threads=\(CPUThreads.count), median of \(repeats) after \(warmup) warm-up, "
              + "blocks MC=\(matmulMC) KC=\(matmulKC) NC=\(matmulNC)")
        print("")
        // (name, C, OC, uses per training step: once per layer of the 12, or once).
        let shapes: [(String, Int, Int, Int)] = [
            ("qkv", 768, 2304, 12), ("attproj", 768, 768, 12), ("fc", 768, 3072, 12),
            ("fcproj", 3072, 768, 12), ("lm head", 768, 50304, 1),
        ]
        print(pad("shape", 9) + pad("C", 6) + pad("OC", 7) + pad("product", 9)
              + pad("ms", 9) + pad("GFLOP/s", 9) + pad("peak", 7) + "floor ms")
        var count = 0, totalMs = 0.0, totalFLOPs = 0.0, stepMs = 0.0, stepFLOPs = 0.0
        for (name, C, OC, uses) in shapes where only.map({ name.hasPrefix($0) }) ?? true {
            let inp = randomBuffer(BT * C), weight = randomBuffer(OC * C), bias = randomBuffer(OC)
            let out = randomBuffer(BT * OC), dout = randomBuffer(BT * OC)
            let dinp = randomBuffer(BT * C), dweight = randomBuffer(OC * C)
            defer { for p in [inp, weight, bias, out, dout, dinp, dweight] { p.deallocate() } }
            let flops = 2.0 * Double(BT) * Double(C) * Double(OC)
            let products: [(String, () -> Void)] = [
                ("forward", { matmulForward(out, inp, weight, bias, BT, C, OC) }),
                ("dinp", { matmulBackwardInput(dinp, dout, weight, BT, C, OC) }),
                ("dweight", { matmulBackwardWeight(dweight, nil, dout, inp, BT, C, OC) }),
            ]
            for (product, body) in products {
                let ms = medianMs(body)
                let gflops = flops / (ms * 1e-3) / 1e9
                count += 1; totalMs += ms; totalFLOPs += flops
                stepMs += Double(uses) * ms; stepFLOPs += Double(uses) * flops
                print(pad(name, 9) + pad("\(C)", 6) + pad("\(OC)", 7) + pad(product, 9)
                      + pad(fmt(ms, 2), 9) + pad(fmt(gflops, 1), 9)
                      + pad(fmt(100 * gflops / peak.allThreads, 0) + "%", 7)
                      + fmt(flops / (peak.allThreads * 1e9) * 1e3, 2))
            }
        }
        if count == 0 { return }
        let gflops = totalFLOPs / (totalMs * 1e-3) / 1e9
        let stepRate = stepFLOPs / (stepMs * 1e-3) / 1e9
        print("")
        print("these \(count) products: \(fmt(totalMs, 1)) ms, \(fmt(gflops, 1)) GFLOP/s, "
              + "\(fmt(100 * gflops / peak.allThreads, 0))% of peak")
        print("as in one training step (layer shapes x12, LM head x1): \(fmt(stepMs, 1)) ms for "
              + "\(fmt(stepFLOPs / 1e9, 1)) GFLOP, \(fmt(stepRate, 1)) GFLOP/s, "
              + "\(fmt(100 * stepRate / peak.allThreads, 0))% of peak (floor "
              + "\(fmt(stepFLOPs / (peak.allThreads * 1e9) * 1e3, 1)) ms)")
    }

    func now() -> Double { cpuClock ? processCPUSeconds() : monotonicSeconds() }

    func medianMs(_ body: () -> Void) -> Double {
        for _ in 0 ..< warmup { body() }
        var times: [Double] = []
        for _ in 0 ..< max(1, repeats) {
            let t0 = now()
            body()
            times.append((now() - t0) * 1e3)
        }
        times.sort()
        return times[times.count / 2]
    }
}

/// A buffer of uniform values in [-1, 1) from a fixed xorshift stream.
private func randomBuffer(_ count: Int) -> UnsafeMutablePointer<Float> {
    let p = UnsafeMutablePointer<Float>.allocate(capacity: count)
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15 &+ UInt64(count)
    for i in 0 ..< count {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        p[i] = Float(state >> 40) / Float(1 << 23) - 1
    }
    return p
}

private func fmt(_ x: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0 ..< decimals { scale *= 10 }
    let r = (x * scale).rounded() / scale
    if decimals == 0 { return String(Int(r)) }
    let whole = Int(r.magnitude)
    let frac = Int(((r.magnitude - Double(whole)) * scale).rounded())
    var fs = String(frac)
    while fs.count < decimals { fs = "0" + fs }
    return (r < 0 ? "-" : "") + "\(whole).\(fs)"
}

private func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}
