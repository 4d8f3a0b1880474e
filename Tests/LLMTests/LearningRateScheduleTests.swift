// Each schedule's rate at chosen steps against the formulas of llm.c's schedulers, worked by hand.

import Testing
@testable import LLM

/// Relative closeness for Float rates computed in a different order than the hand math.
private func close(_ a: Float, _ b: Double, _ tolerance: Double = 2e-6) -> Bool {
    abs(Double(a) - b) <= tolerance * max(abs(b), 1e-12)
}

@Test func cosineScheduleValues() throws {
    // lr 6e-4, warmup 10, N 110, final fraction 0.1 -> min 6e-5, decay span 100.
    let s = try LearningRateSchedule(name: "cosine", learningRate: 6e-4, warmupSteps: 10, totalSteps: 110,
                                     finalFraction: 0.1)
    #expect(close(s.learningRate(atStep: 0), 6e-5))          // 6e-4 * 1/10
    #expect(close(s.learningRate(atStep: 4), 3e-4))          // 6e-4 * 5/10
    #expect(close(s.learningRate(atStep: 9), 6e-4))          // end of warmup: the peak
    #expect(close(s.learningRate(atStep: 10), 6e-4))         // cos(0) = 1
    #expect(close(s.learningRate(atStep: 60), 3.3e-4))       // half-way: (6e-4 + 6e-5) / 2
    #expect(close(s.learningRate(atStep: 110), 6e-5))        // cos(pi) = -1: the floor
    // step 35: ratio 0.25, coefficient 0.5 * (1 + cos(pi/4)) = 0.853553390593...
    #expect(close(s.learningRate(atStep: 35), 6e-5 + 0.8535533905932737 * 5.4e-4))
    // Monotone after warmup.
    var previous = Float.infinity
    for step in 10 ... 110 {
        let r = s.learningRate(atStep: step)
        #expect(r <= previous)
        previous = r
    }
}

@Test func linearScheduleValues() throws {
    // lr 1e-3, warmup 4, N 104, final 0 -> falls by 1e-5 per step after warmup.
    let s = try LearningRateSchedule(name: "linear", learningRate: 1e-3, warmupSteps: 4, totalSteps: 104,
                                     finalFraction: 0)
    #expect(close(s.learningRate(atStep: 1), 5e-4))          // 1e-3 * 2/4
    #expect(close(s.learningRate(atStep: 4), 1e-3))
    #expect(close(s.learningRate(atStep: 29), 7.5e-4))       // 1e-3 - 25/100 * 1e-3
    #expect(close(s.learningRate(atStep: 54), 5e-4))
    #expect(s.learningRate(atStep: 104) == 0)
}

@Test func constantScheduleHasNoWarmup() throws {
    let s = try LearningRateSchedule(name: "constant", learningRate: 3e-4, warmupSteps: 100, totalSteps: 1000,
                                     finalFraction: 0.0)
    for step in [0, 1, 99, 500, 1000] { #expect(s.learningRate(atStep: step) == 3e-4) }
}

@Test func wsdScheduleValues() throws {
    // lr 2e-3, warmup 10, N 1000, final 0.1: stable until d = 800, then a square-root decay over 200.
    let s = try LearningRateSchedule(name: "wsd", learningRate: 2e-3, warmupSteps: 10, totalSteps: 1000,
                                     finalFraction: 0.1)
    #expect(close(s.learningRate(atStep: 0), 2e-4))
    #expect(close(s.learningRate(atStep: 10), 2e-3))
    #expect(s.learningRate(atStep: 799) == 2e-3)
    #expect(close(s.learningRate(atStep: 800), 2e-3))         // sqrt(0) = 0: still the peak
    #expect(close(s.learningRate(atStep: 850), 2e-4 + 0.5 * 1.8e-3))  // sqrt(50/200) = 0.5
    #expect(close(s.learningRate(atStep: 818), 2e-4 + (1 - 0.3) * 1.8e-3)) // sqrt(18/200) = 0.3
    #expect(close(s.learningRate(atStep: 1000), 2e-4))
    // d = floor(0.8 * N): N = 7 gives d = 5.
    let t = LearningRateSchedule(kind: .wsd, learningRate: 1, totalSteps: 7, finalFraction: 0)
    #expect(t.learningRate(atStep: 4) == 1)
    #expect(close(t.learningRate(atStep: 6), 1 - 0.5.squareRoot()))  // sqrt(1/2)
}

@Test func scheduleEdgeCasesDoNotProduceNaN() throws {
    // Warmup as long as the run: llm.c would divide 0 by 0 at step N; we give the floor instead.
    let s = LearningRateSchedule(kind: .cosine, learningRate: 1e-3, warmupSteps: 10, totalSteps: 10,
                                 finalFraction: 0.5)
    #expect(close(s.learningRate(atStep: 9), 1e-3))
    #expect(close(s.learningRate(atStep: 10), 5e-4))
    // Past N the rate stays at the floor.
    let l = LearningRateSchedule(kind: .linear, learningRate: 1e-3, totalSteps: 10, finalFraction: 0.25)
    #expect(close(l.learningRate(atStep: 50), 2.5e-4))
}

@Test func unknownScheduleNameIsAClearError() {
    #expect(throws: LLMError("--lr-schedule cosin: unknown learning-rate schedule; expected one of cosine, linear, constant, wsd")) {
        _ = try LearningRateSchedule(name: "cosin", learningRate: 1e-3, totalSteps: 10)
    }
    #expect(throws: LLMError.self) {
        _ = try LearningRateSchedule(name: "cosine", learningRate: 1e-3, totalSteps: 10, finalFraction: 1.5)
    }
    #expect((try? LearningRateSchedule(name: "WSD", learningRate: 1e-3, totalSteps: 10))?.kind == .wsd)
}
