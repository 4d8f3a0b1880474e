// printf formatting through vsnprintf, as our console and main.log lines use it.

import Testing
@testable import LLM

@Test func formatFixedAndExponent() {
    #expect(format("%7.6f", Float(3.28125)) == "3.281250")
    #expect(format("%.4f", 10.98765) == "10.9877")
    #expect(format("%.2e", Float(6e-4)) == "6.00e-04")
    #expect(format("%+.2f", -0.126) == "-0.13")
    #expect(format("%+.2f", 1.5) == "+1.50")
    #expect(format("%4d/%d", Int32(7), Int32(5000)) == "   7/5000")
    #expect(format("%ld", 1234567890123) == "1234567890123")
    #expect(format("%6.4f", Float.nan) == "   nan")
    #expect(format("%.1f%%", 41.25) == "41.2%")  // round-half-even on the binary value, as C
    #expect(format("no args") == "no args")
}

@Test func formatLongOutput() {
    let s = format("%0300d|tail", Int32(5))
    #expect(s.count == 305)
    #expect(s.hasSuffix("5|tail"))
}

@Test func durations() {
    #expect(formatDuration(0) == "0s")
    #expect(formatDuration(59.4) == "59s")
    #expect(formatDuration(187) == "3m07s")
    #expect(formatDuration(2 * 3600 + 5 * 60 + 30) == "2h05m")
    #expect(formatDuration(3 * 86400 + 4 * 3600) == "3d04h")
    #expect(formatDuration(.infinity) == "?")
}
