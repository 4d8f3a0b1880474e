// Peak fp32 rate of this machine, measured: a register-only SIMD16 FMA loop on every thread and on
// one. Benchmarks divide by it to print the fraction of peak.

#if canImport(Glibc)
import Glibc
#endif
import LLM

/// Measured peak fp32 rates in GFLOP/s (an FMA counts as 2 FLOPs).
public struct PeakFLOPs {
    public let allThreads: Double
    public let oneThread: Double
    public let threads: Int
}

/// Runs `iterations` steps of 16 independent SIMD16 FMA chains (enough to cover FMA latency on
/// two 512-bit pipes) and returns a value that depends on all of them so nothing is optimized away.
@inline(never)
func fmaLoop(_ iterations: Int, _ seed: Float) -> Float {
    let m = SIMD16<Float>(repeating: 0.999_999), d = SIMD16<Float>(repeating: 1e-7)
    var a0 = SIMD16<Float>(repeating: seed), a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3
    var a4 = a0 + 4, a5 = a0 + 5, a6 = a0 + 6, a7 = a0 + 7
    var a8 = a0 + 8, a9 = a0 + 9, a10 = a0 + 10, a11 = a0 + 11
    var a12 = a0 + 12, a13 = a0 + 13, a14 = a0 + 14, a15 = a0 + 15
    for _ in 0 ..< iterations {
        a0 = multiplyAdd(a0, m, d); a1 = multiplyAdd(a1, m, d); a2 = multiplyAdd(a2, m, d)
        a3 = multiplyAdd(a3, m, d); a4 = multiplyAdd(a4, m, d); a5 = multiplyAdd(a5, m, d)
        a6 = multiplyAdd(a6, m, d); a7 = multiplyAdd(a7, m, d); a8 = multiplyAdd(a8, m, d)
        a9 = multiplyAdd(a9, m, d); a10 = multiplyAdd(a10, m, d); a11 = multiplyAdd(a11, m, d)
        a12 = multiplyAdd(a12, m, d); a13 = multiplyAdd(a13, m, d); a14 = multiplyAdd(a14, m, d)
        a15 = multiplyAdd(a15, m, d)
    }
    let s = (a0 + a1 + a2 + a3) + (a4 + a5 + a6 + a7) + (a8 + a9 + a10 + a11) + (a12 + a13 + a14 + a15)
    return s.sum()
}

/// FLOPs per fmaLoop iteration: 16 FMAs of 16 lanes, 2 FLOPs each.
let fmaLoopFLOPs = 16.0 * 16.0 * 2.0

/// Measures the peak with `threads` threads (CPUThreads.count by default) and with one: the sum
/// of each thread's FLOPs over its own CPU time, best of `repeats` runs of about `seconds` seconds,
/// so a busy moment on a shared machine does not lower it. More threads than online cores count
/// as the cores (each thread's CPU-time rate would otherwise add a core that is not there).
public func measurePeakFLOPs(threads: Int = CPUThreads.count, seconds: Double = 0.1, repeats: Int = 5) -> PeakFLOPs {
    // Calibrate the iteration count on one thread.
    var iterations = 1 << 16
    while true {
        let t0 = threadCPUSeconds()
        _ = fmaLoop(iterations, 1)
        if threadCPUSeconds() - t0 > seconds / 4 || iterations > 1 << 30 { break }
        iterations *= 2
    }
    let n = iterations * 4
    func rate(_ threadCount: Int) -> Double {
        var best = 0.0
        let saved = CPUThreads.count
        CPUThreads.count = threadCount
        defer { CPUThreads.count = saved }
        let seconds = UnsafeMutablePointer<Double>.allocate(capacity: threadCount)
        defer { seconds.deallocate() }
        for _ in 0 ..< repeats {
            // Each thread times itself on its own CPU clock, so another process sharing the
            // cores lowers the count of runs, not the rate: this is what the cores can do.
            parallelFor(threadCount) { t in
                let t0 = threadCPUSeconds()
                let r = fmaLoop(n, Float(t))
                seconds[t] = threadCPUSeconds() - t0
                if r == .infinity { print(r) } // keep the result alive
            }
            var total = 0.0
            for t in 0 ..< threadCount { total += Double(n) * fmaLoopFLOPs / seconds[t] / 1e9 }
            best = max(best, total)
        }
        return best
    }
    let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    let all = rate(min(threads, cores))
    let one = rate(1)
    return PeakFLOPs(allThreads: all, oneThread: one, threads: threads)
}
