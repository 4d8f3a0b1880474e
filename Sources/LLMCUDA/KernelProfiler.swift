// GPU time per kernel over a stretch of work: a CUDA event before and after every kernel launch
// and matmul, summed by name (`llm bench train --profile`). Free-running clocks and the real launch
// order, unlike a profiler that replays each kernel alone. By default the side stream's work queues
// on the main stream (see CUDADevice.onSideStream), so that each mark times one kernel alone; with
// `bothStreams` (`--timeline`) both streams run as in training, a kernel's mark runs from when its
// stream could start it (the work before it on that stream done, any wait for the other satisfied)
// to its end, and the report adds how long the main stream waited and how much the two overlapped.

import LLM

public struct KernelTime {
    public var name: String
    public var calls: Int
    public var milliseconds: Double
}

/// `KernelProfiler.report`'s figures for the two streams (with `bothStreams`).
public struct StreamTimes {
    public var mainBusyMs = 0.0, sideBusyMs = 0.0
    /// Time with a kernel of either stream running, and with kernels of both.
    public var eitherMs = 0.0, bothMs = 0.0
}

public final class KernelProfiler {
    let device: CUDADevice
    /// Both streams as in training (a timeline) rather than every kernel on the main stream.
    public let bothStreams: Bool
    var events: [CUhandle] = []  // created on demand, reused by later stretches
    var used = 0
    var marks: [(name: String, start: Int, end: Int, side: Bool)] = []

    public init(device: CUDADevice, bothStreams: Bool = false) {
        self.device = device
        self.bothStreams = bothStreams
    }

    func nextEvent() throws -> Int {
        if used == events.count { events.append(try device.makeEvent()) }
        try device.record(events[used])
        used += 1
        return used - 1
    }

    /// Records the start of `name`; pass the result to `end`.
    func begin(_ name: String) throws -> (String, Int) { (name, try nextEvent()) }

    func end(_ started: (String, Int)) throws {
        marks.append((started.0, started.1, try nextEvent(), device.onSide))
    }

    /// Waits for the work, then returns the time per name (largest first), the GPU idle time before
    /// each name on the main stream (the host had not launched it yet, or, with `bothStreams`, it
    /// waited for the side stream; largest first), the sum of all kernel times, the span from the
    /// first start to the last end, and with `bothStreams` the two streams' figures; forgets the marks.
    public func report() throws -> (kernels: [KernelTime], idleBefore: [KernelTime], busyMs: Double, spanMs: Double,
                                    streams: StreamTimes?) {
        defer { marks = []; used = 0 }
        guard let first = marks.first else { return ([], [], 0, 0, nil) }
        // Every event's time from the first one (events of both streams compare on one clock).
        var at = [Double](repeating: 0, count: used)
        for i in 0 ..< used { at[i] = Double(try device.elapsedMilliseconds(events[first.start], events[i])) }
        var byName: [String: KernelTime] = [:], idle: [String: KernelTime] = [:]
        var busy = 0.0, streams = StreamTimes()
        var lastMainEnd: Double? = nil  // the previous main-stream mark's end
        for m in marks {
            let ms = at[m.end] - at[m.start]
            busy += ms
            byName[m.name, default: KernelTime(name: m.name, calls: 0, milliseconds: 0)].calls += 1
            byName[m.name]!.milliseconds += ms
            if m.side {
                streams.sideBusyMs += ms
                continue
            }
            streams.mainBusyMs += ms
            if let previous = lastMainEnd {
                idle[m.name, default: KernelTime(name: m.name, calls: 0, milliseconds: 0)].calls += 1
                idle[m.name]!.milliseconds += at[m.start] - previous
            }
            lastMainEnd = at[m.end]
        }
        // The union of the marks' intervals: time with either stream's kernel running.
        var from = -Double.infinity, to = -Double.infinity
        for (s, e) in marks.map({ (at[$0.start], at[$0.end]) }).sorted(by: { $0.0 < $1.0 }) {
            if s > to {
                if to > from { streams.eitherMs += to - from }
                (from, to) = (s, e)
            } else {
                to = max(to, e)
            }
        }
        if to > from { streams.eitherMs += to - from }
        streams.bothMs = busy - streams.eitherMs
        let span = (marks.map { at[$0.end] }.max() ?? 0) - at[first.start]
        func largestFirst(_ d: [String: KernelTime]) -> [KernelTime] { d.values.sorted { $0.milliseconds > $1.milliseconds } }
        return (largestFirst(byName), largestFirst(idle), busy, span, bothStreams ? streams : nil)
    }
}

extension CUDADevice {
    /// Runs `body` with a mark around it when a profiler is attached.
    @inline(__always) func profiled<T>(_ name: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
        guard let p = profiler else { return try body() }
        let started = try p.begin(name())
        let r = try body()
        try p.end(started)
        return r
    }
}
