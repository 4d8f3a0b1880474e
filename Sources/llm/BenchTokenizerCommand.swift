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

    @Option(help: "Vocabulary: gpt2.tiktoken, encoder.json or an llm.c tokenizer .bin.")
    var vocab: String = "data/gpt2.tiktoken"

    @Option(help: "Timed runs per measurement (the median and the best are printed).")
    var runs: Int = 15

    @Option(help: "Threads for the parallel measurement (default: all online cores).")
    var threads: Int?

    func run() throws {
        let tokenizer = try Tokenizer.gpt2(path: vocab)
        let cores = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let threadCount = threads ?? cores
        print("tokenizer: \(vocab), \(runs) runs each, \(threadCount) threads for the parallel rows (\(cores) cores online)")
        print("file                              MB     tokens   1 thread MB/s (median/best)   \(threadCount) threads MB/s (median/best)")
        for path in files {
            let bytes = try readFileBytes(path)
            let text = try checkedUTF8(bytes, source: path, lossy: false)
            let (single, ids) = text.withUnsafeBufferPointer { buffer in
                measure(runs) { tokenizer.encode(utf8: buffer) }
            }
            let (parallel, parallelIds) = text.withUnsafeBufferPointer { buffer in
                measure(runs) { tokenizer.encodeParallel(utf8: buffer, threads: threadCount) }
            }
            if parallelIds != ids { throw LLMError("\(path): \(threadCount)-thread ids differ from 1-thread ids") }
            let mb = Double(text.count) / 1e6
            let name = path.split(separator: "/").last.map(String.init) ?? path
            print(pad(name, 30) + pad(String(format2(mb)), 8, left: true) + pad(String(ids.count), 11, left: true)
                  + pad("\(format1(mb / single.median)) / \(format1(mb / single.best))", 30, left: true)
                  + pad("\(format1(mb / parallel.median)) / \(format1(mb / parallel.best))", 34, left: true))
        }
    }

    /// Runs `body` once to warm up, then `runs` times; returns the median and best seconds.
    func measure(_ runs: Int, _ body: () -> [Int32]) -> ((median: Double, best: Double), [Int32]) {
        var result = body()
        var times: [Double] = []
        for _ in 0..<max(1, runs) {
            let t0 = monotonicSeconds()
            result = body()
            times.append(monotonicSeconds() - t0)
        }
        times.sort()
        return ((times[times.count / 2], times[0]), result)
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func format1(_ x: Double) -> String { formatFixed(x, 1) }
func format2(_ x: Double) -> String { formatFixed(x, 2) }

/// Fixed-point formatting without Foundation.
func formatFixed(_ x: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let v = (abs(x) * scale).rounded()
    let whole = Int(v / scale)
    var frac = String(Int(v - Double(whole) * scale))
    while frac.count < digits { frac = "0" + frac }
    return (x < 0 ? "-" : "") + String(whole) + (digits > 0 ? "." + frac : "")
}

func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
    if s.count >= width { return s }
    let fill = String(repeating: " ", count: width - s.count)
    return left ? fill + s : s + fill
}
