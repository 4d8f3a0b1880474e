// GPU time per kernel over a stretch of work: a CUDA event before and after every kernel launch
// and matmul on the device's main stream (with a profiler attached, the side stream's work queues
// there too: see CUDADevice.onSideStream), summed by name (`llm bench train --profile`). Free-running
// clocks and the real launch order, unlike a profiler that replays each kernel alone.

import LLM

public struct KernelTime {
    public var name: String
    public var calls: Int
    public var milliseconds: Double
}

public final class KernelProfiler {
    let device: CUDADevice
    var events: [CUhandle] = []  // created on demand, reused by later stretches
    var used = 0
    var marks: [(name: String, start: Int, end: Int)] = []

    public init(device: CUDADevice) { self.device = device }

    func nextEvent() throws -> Int {
        if used == events.count { events.append(try device.makeEvent()) }
        try device.record(events[used])
        used += 1
        return used - 1
    }

    /// Records the start of `name`; pass the result to `end`.
    func begin(_ name: String) throws -> (String, Int) { (name, try nextEvent()) }

    func end(_ started: (String, Int)) throws {
        marks.append((started.0, started.1, try nextEvent()))
    }

    /// Waits for the work, then returns the time per name (largest first), the GPU idle time before
    /// each name (the host had not launched it yet; largest first), the sum of all kernel times and
    /// the span from the first start to the last end, and forgets the marks.
    public func report() throws -> (kernels: [KernelTime], idleBefore: [KernelTime], busyMs: Double, spanMs: Double) {
        defer { marks = []; used = 0 }
        guard let first = marks.first, let last = marks.last else { return ([], [], 0, 0) }
        var byName: [String: KernelTime] = [:], idle: [String: KernelTime] = [:]
        var busy = 0.0
        for (i, m) in marks.enumerated() {
            let ms = Double(try device.elapsedMilliseconds(events[m.start], events[m.end]))
            busy += ms
            byName[m.name, default: KernelTime(name: m.name, calls: 0, milliseconds: 0)].calls += 1
            byName[m.name]!.milliseconds += ms
            if i > 0 {
                let gap = Double(try device.elapsedMilliseconds(events[marks[i - 1].end], events[m.start]))
                idle[m.name, default: KernelTime(name: m.name, calls: 0, milliseconds: 0)].calls += 1
                idle[m.name]!.milliseconds += gap
            }
        }
        let span = Double(try device.elapsedMilliseconds(events[first.start], events[last.end]))
        func largestFirst(_ d: [String: KernelTime]) -> [KernelTime] { d.values.sorted { $0.milliseconds > $1.milliseconds } }
        return (largestFirst(byName), largestFirst(idle), busy, span)
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
