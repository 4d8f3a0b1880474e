// parallelFor: the `#pragma omp parallel for` of llm.swift, over Dispatch's thread pool (static
// contiguous chunks), and parallelForDynamic, its `schedule(dynamic)`.

import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public enum CPUThreads {
    /// Threads the CPU backend uses; `--threads` sets it. Defaults to the online core count.
    public nonisolated(unsafe) static var count: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
}

/// Runs body(i) for i in 0..<n, split into CPUThreads.count contiguous chunks.
@inline(__always)
public func parallelFor(_ n: Int, _ body: (Int) -> Void) {
    parallelForChunks(n) { range in for i in range { body(i) } }
}

/// Runs body(range) over n items split into at most CPUThreads.count contiguous ranges;
/// use this form when each item is small and the per-call closure cost would show.
public func parallelForChunks(_ n: Int, _ body: (Range<Int>) -> Void) {
    let threads = min(CPUThreads.count, n)
    if threads <= 1 {
        if n > 0 { body(0 ..< n) }
        return
    }
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: threads) { k in
            let lo = n * k / threads, hi = n * (k + 1) / threads
            if lo < hi { body(lo ..< hi) }
        }
    }
}

/// Runs body(i) for i in 0..<n on CPUThreads.count threads that claim items in order, one at a
/// time, from a shared counter: a thread slowed by another process on its core simply claims
/// fewer. Use it when items are many, independent and equal, and each is worth far more than an
/// atomic increment (a few tens of microseconds or more).
public func parallelForDynamic(_ n: Int, _ body: (Int) -> Void) {
    let threads = min(CPUThreads.count, n)
    if threads <= 1 {
        for i in 0 ..< n { body(i) }
        return
    }
    let next = Atomic<Int>(0)
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            while true {
                let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                if i >= n { break }
                body(i)
            }
        }
    }
}
