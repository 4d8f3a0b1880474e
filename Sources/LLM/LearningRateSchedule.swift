// Learning-rate schedules of llm.c's GPU trainer: cosine (default), linear, constant and wsd
// (warmup-stable-decay), with linear warmup and a final fraction of the peak rate.
//
// API:
//   let schedule = try LearningRateSchedule(name: "cosine", learningRate: 6e-4, warmupSteps: 700,
//                                           totalSteps: 5000, finalFraction: 0.0)
//   schedule.learningRate(atStep: step)   // step is 0-based; totalSteps is N (the number of updates)
//   LearningRateSchedule.Kind.allNames    // "cosine, linear, constant, wsd" for help texts
//
// With u = warmupSteps, N = totalSteps, lr = peak, min = lr * finalFraction:
//   warmup (step < u; not for constant):  lr * (step + 1) / u
//   cosine:    min + 0.5 * (1 + cos(pi * (step - u) / (N - u))) * (lr - min)
//   linear:    lr - (step - u) / (N - u) * (lr - min)
//   constant:  lr at every step (no warmup, as llm.c)
//   wsd:       lr until d = floor(0.8 N), then min + (1 - sqrt((step - d) / (N - d))) * (lr - min)
// The arithmetic is in Float in llm.c's order, so the rates match its logs bit for bit. Where llm.c
// would divide by zero or assert (N <= u, step past N) the decay fraction is clamped to [0, 1].

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct LearningRateSchedule: Equatable, CustomStringConvertible {
    public enum Kind: String, CaseIterable {
        case cosine, linear, constant, wsd

        public static var allNames: String { allCases.map(\.rawValue).joined(separator: ", ") }
    }

    public var kind: Kind
    public var learningRate: Float   // peak rate, reached at the end of warmup
    public var warmupSteps: Int      // u
    public var totalSteps: Int       // N
    public var finalFraction: Float  // q: the rate ends at learningRate * q

    public init(kind: Kind = .cosine, learningRate: Float, warmupSteps: Int = 0, totalSteps: Int,
                finalFraction: Float = 1.0) {
        self.kind = kind
        self.learningRate = learningRate
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.finalFraction = finalFraction
    }

    /// A schedule by name; `flag` names the option in the error for an unknown name or bad numbers.
    public init(name: String, learningRate: Float, warmupSteps: Int = 0, totalSteps: Int,
                finalFraction: Float = 1.0, flag: String = "--lr-schedule") throws {
        guard let kind = Kind(rawValue: name.lowercased()) else {
            throw LLMError("\(flag) \(name): unknown learning-rate schedule; expected one of \(Kind.allNames)")
        }
        self.init(kind: kind, learningRate: learningRate, warmupSteps: warmupSteps, totalSteps: totalSteps,
                  finalFraction: finalFraction)
        try validate(flag: flag)
    }

    /// Rejects numbers no schedule can use (negative warmup or steps, a fraction outside [0, 1]).
    public func validate(flag: String = "--lr-schedule") throws {
        if !learningRate.isFinite || learningRate < 0 {
            throw LLMError("\(flag): learning rate \(learningRate) must be a finite number >= 0")
        }
        if warmupSteps < 0 { throw LLMError("\(flag): warmup steps \(warmupSteps) must be >= 0") }
        if totalSteps < 0 { throw LLMError("\(flag): total steps \(totalSteps) must be >= 0") }
        if !(finalFraction >= 0 && finalFraction <= 1) {
            throw LLMError("\(flag): final learning-rate fraction \(finalFraction) must be in [0, 1]")
        }
    }

    public var description: String {
        "\(kind.rawValue) lr \(learningRate) warmup \(warmupSteps) steps \(totalSteps) final fraction \(finalFraction)"
    }

    // MARK: - The rate at a step

    /// The learning rate for the update of 0-based `step`.
    public func learningRate(atStep step: Int) -> Float {
        let lr = learningRate
        let u = warmupSteps, N = totalSteps
        if kind == .constant { return lr }
        if step < u { return lr * Float(step + 1) / Float(u) }
        let minLR = lr * finalFraction
        switch kind {
        case .constant:
            return lr
        case .cosine:
            let ratio = Self.fraction(step - u, of: N - u)
            // llm.c: cosf(M_PI * ratio), the product taken in double.
            let coefficient = 0.5 * (1 + cosf(Float(Double.pi * Double(ratio))))
            return minLR + coefficient * (lr - minLR)
        case .linear:
            let ratio = Self.fraction(step - u, of: N - u)
            return lr - ratio * (lr - minLR)
        case .wsd:
            let decayStart = Int(0.8 * Float(N))
            if step < decayStart { return lr }
            let ratio = Self.fraction(step - decayStart, of: N - decayStart)
            return minLR + (1 - sqrtf(ratio)) * (lr - minLR)
        }
    }

    /// `done / span` in Float, clamped to [0, 1]; an empty span counts as finished.
    static func fraction(_ done: Int, of span: Int) -> Float {
        if span <= 0 { return 1 }
        return min(max(Float(done) / Float(span), 0), 1)
    }
}
