// Helpers shared by the CPU tests: fixture paths, the tiny reference, max-difference reports.

import Foundation
import LLM
@testable import LLMCPU

/// Tests/Fixtures, found from this file's path so tests run from any working directory.
func fixturePath(_ name: String, file: String = #filePath) -> String {
    var url = URL(fileURLWithPath: file)
    while url.lastPathComponent != "Tests" && url.path != "/" { url.deleteLastPathComponent() }
    return url.appendingPathComponent("Fixtures").appendingPathComponent(name).path
}

/// The 10 AdamW losses and settings of tiny_steps.json.
func tinyStepLosses() throws -> [Float] {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("tiny_steps.json")))
    let json = try JSONSerialization.jsonObject(with: data) as! [String: Any]
    return (json["losses_10_steps"] as! [NSNumber]).map { $0.floatValue }
}

/// The largest |a[i] - b[i]|.
func maxAbsDiff<A: Collection, B: Collection>(_ a: A, _ b: B) -> Double
where A.Element: BinaryFloatingPoint, B.Element: BinaryFloatingPoint {
    precondition(a.count == b.count)
    var m = 0.0
    for (x, y) in zip(a, b) { m = max(m, abs(Double(x) - Double(y))) }
    return m
}

/// A deterministic source of test numbers (xorshift64*), uniform in [-1, 1).
struct TestRandom {
    var state: UInt64
    init(_ seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt32 {
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        return UInt32(truncatingIfNeeded: (state &* 0x2545_F491_4F6C_DD1D) >> 32)
    }
    mutating func uniform() -> Float { Float(next() >> 8) / 16_777_216 * 2 - 1 }
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] { (0 ..< n).map { _ in uniform() * scale } }
}

/// A float buffer with a stable pointer, for calling the pointer-based layer functions.
final class Buf {
    let p: UnsafeMutablePointer<Float>
    let count: Int
    init(_ values: [Float]) {
        count = values.count
        p = .allocate(capacity: max(count, 1))
        p.initialize(from: values, count: count)
    }
    convenience init(zeros n: Int) { self.init([Float](repeating: 0, count: n)) }
    var array: [Float] { Array(UnsafeBufferPointer(start: p, count: count)) }
    deinit { p.deallocate() }
}

/// Central-difference gradient of f at x (double precision, so it is an oracle for fp32 code).
func numericalGradient(_ x: [Double], h: Double = 1e-6, _ f: ([Double]) -> Double) -> [Double] {
    var x = x
    var g = [Double](repeating: 0, count: x.count)
    for i in 0 ..< x.count {
        let saved = x[i]
        x[i] = saved + h
        let up = f(x)
        x[i] = saved - h
        let down = f(x)
        x[i] = saved
        g[i] = (up - down) / (2 * h)
    }
    return g
}

/// max |ours - ref| scaled by the size of ref (at least 1), the one number each check reports.
func scaledMaxDiff(_ ours: [Float], _ ref: [Double]) -> Double {
    let scale = max(1, ref.map { abs($0) }.max() ?? 0)
    return maxAbsDiff(ours, ref) / scale
}

func doubles(_ a: [Float]) -> [Double] { a.map(Double.init) }
