// printf-style number formatting without Foundation: `format("%7.6f", loss)` goes through libc's
// vsnprintf, so our console and log lines print digit for digit what llm.c's printf prints.
//
// API:
//   format(_ spec: String, _ args: CVarArg...) -> String
//       C format string. Float arguments are widened to double (as C varargs are), so "%f"/"%e" take
//       Float or Double. Use "%d" with Int32 and "%ld" with Int (Swift's Int is 64-bit).
//   formatDuration(_ seconds: Double) -> String
//       "45s", "3m07s", "2h05m", "3d04h": short, for ETAs and progress lines.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - printf

/// A C format string applied to `args` with vsnprintf.
public func format(_ spec: String, _ args: CVarArg...) -> String {
    formatArray(spec, args)
}

/// The array form of `format`, for callers that build the argument list.
public func formatArray(_ spec: String, _ args: [CVarArg]) -> String {
    // Most lines fit on the stack buffer; a longer one is measured by the first call and
    // formatted again (a va_list cannot be reused, so each attempt builds its own).
    var small = [CChar](repeating: 0, count: 256)
    let needed = withVaList(args) { va in
        small.withUnsafeMutableBufferPointer { vsnprintf($0.baseAddress, $0.count, spec, va) }
    }
    if needed < 0 { return "" }
    if Int(needed) < small.count { return String(cString: small) }
    var large = [CChar](repeating: 0, count: Int(needed) + 1)
    _ = withVaList(args) { va in
        large.withUnsafeMutableBufferPointer { vsnprintf($0.baseAddress, $0.count, spec, va) }
    }
    return String(cString: large)
}

// MARK: - Durations

/// A short human duration: seconds under a minute, then minutes+seconds, hours+minutes, days+hours.
public func formatDuration(_ seconds: Double) -> String {
    if !seconds.isFinite || seconds < 0 { return "?" }
    let s = Int(seconds.rounded())
    if s < 60 { return "\(s)s" }
    if s < 3600 { return format("%ldm%02lds", s / 60, s % 60) }
    if s < 86400 { return format("%ldh%02ldm", s / 3600, (s % 3600) / 60) }
    return format("%ldd%02ldh", s / 86400, (s % 86400) / 3600)
}
