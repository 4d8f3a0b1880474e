// llm.c's outlier detector: NaN while the 128-value window fills, then a population z-score.

import Testing
@testable import LLM

@Test func outlierDetectorFillsThenScores() {
    var d = OutlierDetector()
    // Values 0..127 fill the window: NaN each time.
    for i in 0 ..< 128 { #expect(d.update(Double(i)).isNaN) }
    // The 129th value (128) replaces 0: window = 1...128, mean 64.5,
    // population variance (128^2 - 1) / 12 = 1365.25, std 36.9492...
    let z = d.update(128)
    let expected = (128 - 64.5) / 1365.25.squareRoot()
    #expect(abs(z - expected) < 1e-12)
    // Next replaces 1 with 64.5 + 0: window {2...128, 0}; check against a direct computation.
    let z2 = d.update(0)
    let window = Array(2 ... 128).map(Double.init) + [0]
    let mean = window.reduce(0, +) / 128
    let variance = window.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 128
    #expect(abs(z2 - (0 - mean) / variance.squareRoot()) < 1e-9)
}

@Test func outlierDetectorConstantWindowGivesZero() {
    // 2.0 sums exactly: variance is exactly 0, so z is 0, not NaN.
    var d = OutlierDetector()
    for _ in 0 ..< 128 { _ = d.update(2) }
    #expect(d.update(2) == 0)
    // 3.7 does not: the running sums (llm.c's method) leave a rounding-sized std; z stays ~0.
    var e = OutlierDetector()
    for _ in 0 ..< 128 { _ = e.update(3.7) }
    let z = e.update(3.7)
    #expect(!z.isNaN && abs(z) < 1e-6)
}

@Test func outlierSkipRule() {
    #expect(OutlierDetector.isOutlier(5.1, threshold: 5))
    #expect(!OutlierDetector.isOutlier(4.9, threshold: 5))
    #expect(!OutlierDetector.isOutlier(.nan, threshold: 5))    // window still filling
    #expect(!OutlierDetector.isOutlier(100, threshold: 0))     // 0 = off
}

@Test func outlierDetectorSnapshotRoundTrip() throws {
    var a = OutlierDetector()
    for i in 0 ..< 200 { _ = a.update(Double(i % 17) * 0.3) }
    var b = try OutlierDetector(snapshot: a.snapshot)
    #expect(a == b)
    for i in 0 ..< 50 {
        let x = Double(i) * 1.1
        #expect(a.update(x) == b.update(x))
    }
    #expect(throws: LLMError.self) { _ = try OutlierDetector(snapshot: [1, 2, 3]) }
}
