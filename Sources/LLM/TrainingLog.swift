// llm.c's `main.log` (one line per event, readable by its plotting notebook), a reader that parses it
// back for `llm plot`, and the console line of a training step with its throughput and ETA.
//
// API:
//   let log = try TrainingLog(path: "out/main.log", resumingAt: nil)   // truncates the file
//   let log = try TrainingLog(path: "out/main.log", resumingAt: 100)   // keeps lines of steps < 100, appends
//   log.train(step:, loss:, learningRate:, gradNorm:)  -> "s:%d trl:%.4f lr:%.6f norm:%.2f"
//   log.validation(step:, loss:)                       -> "s:%d tel:%.4f"
//   log.evaluation(step:, accuracy:)                   -> "s:%d eval:%.4f"   (HellaSwag, a fraction)
//   let records = try TrainingLog.read("out/main.log") // .train, .validation, .evaluation series
//   var meter = ThroughputMeter(totalSteps: N); meter.record(step:, seconds:, tokens:)
//   print(consoleLine(step: step + 1, totalSteps: N, loss:, lossZ:, gradNorm:, gradNormZ:, learningRate:,
//                     milliseconds:, mfuPercent: nil /* CPU */, tokensPerSecond:, etaSeconds:))
//   mfuPercent(config:, sequenceLength: T, tokensPerSecond:, peakFlops: 989e12)  // llm.c's MFU formula
//   progressLine(label: "hellaswag", done: 500, total: 10042, elapsedSeconds: 12)  // for prepare/eval
// Steps in main.log are the loop's 0-based step, as llm.c writes them; the console shows step + 1.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Writing main.log

public final class TrainingLog {
    public let path: String
    var file: UnsafeMutablePointer<FILE>?

    /// Opens `path` for a new run (truncated) or, with `resumingAt: step`, for a resumed one: lines
    /// of steps >= step (logged by the interrupted run after its checkpoint) are dropped, since the
    /// resumed run logs those steps again, then new lines are appended.
    public init(path: String, resumingAt resumeStep: Int? = nil) throws {
        self.path = path
        if let resumeStep, fileExists(path) {
            let text = String(decoding: try readFileBytes(path), as: UTF8.self)
            var kept: [UInt8] = []
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                if let entry = Self.parse(line), entry.step >= resumeStep { continue }
                kept += Array(line.utf8) + [10]
            }
            try writeFileAtomically(path, kept)
        }
        guard let f = fopen(path, resumeStep == nil ? "w" : "a") else {
            throw LLMError("\(path): cannot open the log (\(String(cString: strerror(errno))))")
        }
        file = f
    }

    deinit { close() }

    public func close() {
        if let f = file { fclose(f); file = nil }
    }

    /// Appends one line and flushes it, so the log is current if the run dies.
    func append(_ line: String) {
        guard let f = file else { return }
        fputs(line + "\n", f)
        fflush(f)
    }

    public func train(step: Int, loss: Float, learningRate: Float, gradNorm: Float) {
        append(format("s:%ld trl:%.4f lr:%.6f norm:%.2f", step, loss, learningRate, gradNorm))
    }

    public func validation(step: Int, loss: Float) {
        append(format("s:%ld tel:%.4f", step, loss))
    }

    public func evaluation(step: Int, accuracy: Float) {
        append(format("s:%ld eval:%.4f", step, accuracy))
    }
}

// MARK: - Reading main.log

/// The series of a main.log: (step, value) pairs in step order.
public struct TrainingLogRecords: Equatable {
    public var train: [(step: Int, loss: Double)] = []
    public var learningRate: [(step: Int, value: Double)] = []
    public var gradNorm: [(step: Int, value: Double)] = []
    public var validation: [(step: Int, loss: Double)] = []
    public var evaluation: [(step: Int, accuracy: Double)] = []

    public init() {}

    public var isEmpty: Bool { train.isEmpty && validation.isEmpty && evaluation.isEmpty }

    public static func == (a: TrainingLogRecords, b: TrainingLogRecords) -> Bool {
        func same(_ x: [(step: Int, loss: Double)], _ y: [(step: Int, loss: Double)]) -> Bool {
            x.count == y.count && zip(x, y).allSatisfy { $0.step == $1.step && $0.loss == $1.loss }
        }
        func same(_ x: [(step: Int, value: Double)], _ y: [(step: Int, value: Double)]) -> Bool {
            x.count == y.count && zip(x, y).allSatisfy { $0.step == $1.step && $0.value == $1.value }
        }
        return same(a.train, b.train) && same(a.learningRate, b.learningRate) && same(a.gradNorm, b.gradNorm)
            && same(a.validation, b.validation)
            && a.evaluation.count == b.evaluation.count
            && zip(a.evaluation, b.evaluation).allSatisfy { $0.step == $1.step && $0.accuracy == $1.accuracy }
    }
}

extension TrainingLog {
    /// One parsed line: its step and key/value pairs ("trl" -> 3.28, "lr" -> 0.0006, ...).
    struct Entry {
        var step: Int
        var values: [(key: Substring, value: Double)]
    }

    /// Parses "s:12 trl:3.2812 lr:0.000600 norm:1.23"; nil for a line that is not of this form.
    static func parse(_ line: Substring) -> Entry? {
        var step: Int? = nil
        var values: [(key: Substring, value: Double)] = []
        for field in line.split(separator: " ", omittingEmptySubsequences: true) {
            guard let colon = field.firstIndex(of: ":") else { return nil }
            let key = field[field.startIndex ..< colon]
            let text = field[field.index(after: colon)...]
            if key == "s" {
                guard let s = Int(text) else { return nil }
                step = s
            } else {
                guard let value = Double(text) else { return nil }
                values.append((key, value))
            }
        }
        guard let step else { return nil }
        return Entry(step: step, values: values)
    }

    /// Reads a main.log. Unknown keys and malformed lines are skipped; when a step repeats (a run
    /// resumed by a tool that appended without trimming), the later line replaces the series from
    /// that step on, so each series stays in step order.
    public static func read(_ path: String) throws -> TrainingLogRecords {
        let text = String(decoding: try readFileBytes(path), as: UTF8.self)
        var records = TrainingLogRecords()
        func add(_ series: inout [(step: Int, value: Double)], _ step: Int, _ value: Double) {
            while let last = series.last, last.step >= step { series.removeLast() }
            series.append((step, value))
        }
        var train: [(step: Int, value: Double)] = []
        var validation: [(step: Int, value: Double)] = []
        var evaluation: [(step: Int, value: Double)] = []
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            guard let entry = parse(line) else { continue }
            for (key, value) in entry.values {
                switch key {
                case "trl": add(&train, entry.step, value)
                case "lr": add(&records.learningRate, entry.step, value)
                case "norm": add(&records.gradNorm, entry.step, value)
                case "tel": add(&validation, entry.step, value)
                case "eval": add(&evaluation, entry.step, value)
                default: continue
                }
            }
        }
        records.train = train.map { ($0.step, $0.value) }
        records.validation = validation.map { ($0.step, $0.value) }
        records.evaluation = evaluation.map { ($0.step, $0.value) }
        return records
    }
}

// MARK: - Console line

/// llm.c's step line, `step %4d/%d | loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms |
/// %.1f%% bf16 MFU | %.0f tok/s`, then `| ETA ...` when known. `step` is 1-based here, as printed.
/// `mfuPercent` nil (the CPU) leaves the MFU field out; `precisionLabel` names its precision.
public func consoleLine(step: Int, totalSteps: Int, loss: Float, lossZ: Double, gradNorm: Float,
                        gradNormZ: Double, learningRate: Float, milliseconds: Double, mfuPercent: Double?,
                        tokensPerSecond: Double, etaSeconds: Double? = nil,
                        precisionLabel: String = "bf16") -> String {
    var line = format("step %4ld/%ld | loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms | ",
                      step, totalSteps, loss, lossZ, gradNorm, gradNormZ, learningRate, milliseconds)
    if let mfuPercent { line += format("%.1f%% ", mfuPercent) + precisionLabel + " MFU | " }
    line += format("%.0f tok/s", tokensPerSecond)
    if let etaSeconds { line += " | ETA " + formatDuration(etaSeconds) }
    return line
}

// MARK: - Throughput and ETA

/// Tokens per second as llm.c smooths them (an EMA with decay 0.95, bias-corrected; step 0 is a
/// warm-up and not counted), the mean step time, and an ETA from it.
public struct ThroughputMeter {
    public var totalSteps: Int
    public private(set) var tokensPerSecond = 0.0      // bias-corrected EMA
    public private(set) var averageSeconds = 0.0       // mean step time, step 0 excluded
    var ema: Float = 0
    var timedSteps = 0
    var timedSeconds = 0.0

    public init(totalSteps: Int) { self.totalSteps = totalSteps }

    /// Records 0-based `step` that took `seconds` for `tokens` tokens.
    public mutating func record(step: Int, seconds: Double, tokens: Int) {
        let rate = Float(Double(tokens) / seconds)
        if step == 0 {
            // llm.c prints step 0's raw rate without folding it into the average.
            tokensPerSecond = Double(rate)
            averageSeconds = seconds
            return
        }
        timedSteps += 1
        timedSeconds += seconds
        averageSeconds = timedSeconds / Double(timedSteps)
        ema = 0.95 * ema + 0.05 * rate
        tokensPerSecond = Double(ema / (1 - powf(0.95, Float(step))))
    }

    /// Seconds left after 0-based `step` is done, at the mean step time.
    public func etaSeconds(afterStep step: Int) -> Double {
        Double(max(totalSteps - step - 1, 0)) * averageSeconds
    }
}

// MARK: - MFU and progress

/// Model FLOPs utilisation in percent, llm.c's way: (6 N + 6 L C T) FLOPs per token (N with the
/// padded vocabulary; the second term is attention) times tokens per second, over the device peak.
public func mfuPercent(config: GPT2Config, sequenceLength T: Int, tokensPerSecond: Double, peakFlops: Double) -> Double {
    let N = Double(ParameterLayout(config).count)
    let attention = 6 * Double(config.numLayers) * Double(config.channels) * Double(T)
    return 100 * (6 * N + attention) * tokensPerSecond / peakFlops
}

/// A progress line for long work (`llm prepare`, `llm eval`):
/// "hellaswag 500/10042 (5.0%) | 12s | ETA 3m50s"; the ETA assumes the rate so far.
public func progressLine(label: String, done: Int, total: Int, elapsedSeconds: Double) -> String {
    var line = label + format(" %ld/%ld", done, total)
    if total > 0 { line += format(" (%.1f%%)", 100 * Double(done) / Double(total)) }
    line += " | " + formatDuration(elapsedSeconds)
    if done > 0 && total >= done {
        line += " | ETA " + formatDuration(elapsedSeconds / Double(done) * Double(total - done))
    }
    return line
}
