// `llm bench tokenizer`: GPT-2 encoding throughput in MB/s (10^6 bytes) on one thread and on all
// threads, for Tiny Shakespeare and War and Peace by default.

import ArgumentParser
import Dispatch
import LLM
#if canImport(Glibc)
import Glibc
#endif

struct BenchTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Measure GPT-2 tokenizer throughput (MB/s) on one thread and on all threads.")

    @Argument(help: "Text files to encode.")
    var files: [String] = ["../shared/data/tinyshakespeare.txt", "../shared/data/warpeace.txt"]

    @OptionGroup var vocab: VocabOption

    @Option(help: "Timed runs per measurement (the median and the best are printed).")
    var runs: Int = 15

    @OptionGroup var threads: ThreadsOption

    func run() throws {
        let tokenizer = try vocab.load()
        let cores = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let threadCount = threads.count
        print("tokenizer: \(vocab.value), \(runs) runs each, \(threadCount) threads for the parallel rows (\(cores) cores online)")
        print("file                          MB    tokens   1 thread MB/s (median/best)  1 thread, CPU time   \(threadCount) threads MB/s (median/best)")
        for path in files {
            let bytes = try readFileBytes(path)
            let text = try checkedUTF8(bytes, source: path, lossy: false)
            let (single, ids) = text.withUnsafeBufferPointer { buffer in
                measure(runs) { tokenizer.encode(utf8: buffer) }
            }
            // On a shared machine the thread's own CPU time leaves out time spent preempted.
            let (singleCPU, _) = text.withUnsafeBufferPointer { buffer in
                measure(runs, clock: threadCPUSeconds) { tokenizer.encode(utf8: buffer) }
            }
            let (parallel, parallelIds) = text.withUnsafeBufferPointer { buffer in
                measure(runs) { tokenizer.encodeParallel(utf8: buffer, threads: threadCount) }
            }
            if parallelIds != ids { throw LLMError("\(path): \(threadCount)-thread ids differ from 1-thread ids") }
            let mb = Double(text.count) / 1e6
            let name = path.split(separator: "/").last.map(String.init) ?? path
            print(BenchTokenizer.pad(name, 24) + BenchTokenizer.pad(String(BenchTokenizer.format2(mb)), 8, left: true) + BenchTokenizer.pad(String(ids.count), 10, left: true)
                  + BenchTokenizer.pad("\(BenchTokenizer.format1(mb / single.median)) / \(BenchTokenizer.format1(mb / single.best))", 30, left: true)
                  + BenchTokenizer.pad("\(BenchTokenizer.format1(mb / singleCPU.median)) / \(BenchTokenizer.format1(mb / singleCPU.best))", 21, left: true)
                  + BenchTokenizer.pad("\(BenchTokenizer.format1(mb / parallel.median)) / \(BenchTokenizer.format1(mb / parallel.best))", 34, left: true))
        }
    }

    /// Runs `body` once to warm up, then `runs` times; returns the median and best seconds.
    func measure(_ runs: Int, clock: () -> Double = monotonicSeconds,
                 _ body: () -> [Int32]) -> ((median: Double, best: Double), [Int32]) {
        var result = body()
        var times: [Double] = []
        for _ in 0..<max(1, runs) {
            let t0 = clock()
            result = body()
            times.append(clock() - t0)
        }
        times.sort()
        return ((times[times.count / 2], times[0]), result)
    }
}

// MARK: - Timing and formatting (no Foundation)

extension BenchTokenizer {
    static func format1(_ x: Double) -> String { BenchTokenizer.formatFixed(x, 1) }
    static func format2(_ x: Double) -> String { BenchTokenizer.formatFixed(x, 2) }

    /// Fixed-point formatting without Foundation.
    static func formatFixed(_ x: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let v = (abs(x) * scale).rounded()
        let whole = Int(v / scale)
        var frac = String(Int(v - Double(whole) * scale))
        while frac.count < digits { frac = "0" + frac }
        return (x < 0 ? "-" : "") + String(whole) + (digits > 0 ? "." + frac : "")
    }

    static func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
        if s.count >= width { return s }
        let fill = String(repeating: " ", count: width - s.count)
        return left ? fill + s : s + fill
    }
}
