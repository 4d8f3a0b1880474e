// The z-score of a new value against the last 128 (llm.c's outlier detector): the training loop keeps
// one for the loss and one for the gradient norm and skips an update whose z-score is too high.
//
// API:
//   var lossDetector = OutlierDetector()
//   let z = lossDetector.update(Double(loss))     // NaN while the window is filling
//   if OutlierDetector.isOutlier(z, threshold: skipLossZ) { skip this update }
//   detector.snapshot / OutlierDetector(snapshot:) // exact state as [Double], for the state file
//
// Behaviour, as llm.c: the first 128 values only fill the window and return NaN; from the 129th on,
// the oldest value is replaced by the new one and z = (x - mean) / std over the window *including*
// x, with the population variance sum(x^2)/n - mean^2 from running sums. std 0 gives z = 0.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct OutlierDetector: Equatable {
    public static let windowSize = 128

    var window: [Double]   // (windowSize) ring buffer
    var count = 0          // values in the window, up to windowSize
    var next = 0           // the slot the next value replaces once the window is full
    var sum = 0.0
    var sumOfSquares = 0.0

    public init() {
        window = [Double](repeating: 0, count: Self.windowSize)
    }

    /// Adds `value` and returns its z-score against the window (NaN until the window is full).
    public mutating func update(_ value: Double) -> Double {
        let n = Self.windowSize
        if count < n {
            window[count] = value
            sum += value
            sumOfSquares += value * value
            count += 1
            return .nan
        }
        // The running sums are updated by subtract-then-add, in llm.c's order, so z-scores (and so
        // skipped steps) agree with its run to the last bit.
        let old = window[next]
        sum -= old
        sumOfSquares -= old * old
        window[next] = value
        sum += value
        sumOfSquares += value * value
        next = (next + 1) % n
        let mean = sum / Double(n)
        let variance = sumOfSquares / Double(n) - mean * mean
        // Rounding can leave a tiny negative variance for a constant window: treat it as 0, not NaN.
        // (A NaN in the window still gives NaN, as in llm.c.)
        if variance <= 0 { return 0 }
        let std = sqrt(variance)
        if std == 0 { return 0 }
        return (value - mean) / std
    }

    /// Whether an update should be skipped: a threshold of 0 (or less) turns the check off, and a
    /// NaN z-score (window still filling) never skips.
    public static func isOutlier(_ z: Double, threshold: Double) -> Bool {
        threshold > 0 && z > threshold
    }

    // MARK: - Saving and restoring

    /// The whole state as doubles: count, next, sum, sumOfSquares, then the window.
    public var snapshot: [Double] {
        [Double(count), Double(next), sum, sumOfSquares] + window
    }

    public static var snapshotCount: Int { 4 + windowSize }

    /// Restores a detector from `snapshot`; `source` names the file in the error for a bad one.
    public init(snapshot: [Double], source: String = "outlier detector") throws {
        let n = Self.windowSize
        guard snapshot.count == Self.snapshotCount,
              let count = Int(exactly: snapshot[0]), let next = Int(exactly: snapshot[1]),
              (0 ... n).contains(count), (0 ..< n).contains(next) else {
            throw LLMError("\(source): outlier detector state is malformed (\(snapshot.count) values)")
        }
        self.count = count
        self.next = next
        sum = snapshot[2]
        sumOfSquares = snapshot[3]
        window = Array(snapshot[4...])
    }
}
