// The CUDA driver API (libcuda.so.1) through dlopen: devices, the primary context, memory,
// modules, launches, streams and events. Every call's status becomes an LLMError naming the call.

import LLM

public typealias CUresult = Int32
public typealias CUdeviceptr = UInt64
public typealias CUhandle = OpaquePointer  // CUcontext, CUmodule, CUfunction, CUstream, CUevent

// MARK: - Function types

typealias FnInit = @convention(c) (UInt32) -> CUresult
typealias FnIntOut = @convention(c) (UnsafeMutablePointer<Int32>) -> CUresult
typealias FnDeviceGet = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> CUresult
typealias FnDeviceGetName = @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> CUresult
typealias FnDeviceGetAttribute = @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> CUresult
typealias FnPrimaryCtxRetain = @convention(c) (UnsafeMutablePointer<CUhandle?>, Int32) -> CUresult
typealias FnHandleIn = @convention(c) (CUhandle?) -> CUresult
typealias FnVoid = @convention(c) () -> CUresult
typealias FnMemAlloc = @convention(c) (UnsafeMutablePointer<CUdeviceptr>, Int) -> CUresult
typealias FnMemFree = @convention(c) (CUdeviceptr) -> CUresult
typealias FnMemHostAlloc = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int, UInt32) -> CUresult
typealias FnMemFreeHost = @convention(c) (UnsafeMutableRawPointer?) -> CUresult
typealias FnMemcpyHtoD = @convention(c) (CUdeviceptr, UnsafeRawPointer, Int, CUhandle?) -> CUresult
typealias FnMemcpyDtoH = @convention(c) (UnsafeMutableRawPointer, CUdeviceptr, Int, CUhandle?) -> CUresult
typealias FnMemcpyDtoD = @convention(c) (CUdeviceptr, CUdeviceptr, Int, CUhandle?) -> CUresult
typealias FnMemsetD8 = @convention(c) (CUdeviceptr, UInt8, Int, CUhandle?) -> CUresult
typealias FnMemGetInfo = @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> CUresult
typealias FnModuleLoadData = @convention(c) (UnsafeMutablePointer<CUhandle?>, UnsafeRawPointer) -> CUresult
typealias FnModuleGetFunction = @convention(c) (UnsafeMutablePointer<CUhandle?>, CUhandle?, UnsafePointer<CChar>) -> CUresult
typealias FnFuncSetAttribute = @convention(c) (CUhandle?, Int32, Int32) -> CUresult
typealias FnOccupancy = @convention(c) (UnsafeMutablePointer<Int32>, CUhandle?, Int32, Int) -> CUresult
typealias FnLaunchKernel = @convention(c) (CUhandle?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                                           CUhandle?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                           UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> CUresult
typealias FnCreateWithFlags = @convention(c) (UnsafeMutablePointer<CUhandle?>, UInt32) -> CUresult
typealias FnEventRecord = @convention(c) (CUhandle?, CUhandle?) -> CUresult
typealias FnStreamWaitEvent = @convention(c) (CUhandle?, CUhandle?, UInt32) -> CUresult
typealias FnEventElapsed = @convention(c) (UnsafeMutablePointer<Float>, CUhandle?, CUhandle?) -> CUresult
typealias FnGetErrorText = @convention(c) (CUresult, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> CUresult
// cuOccupancyMaxActiveClusters(numClusters, func, config: a CUlaunchConfig)
typealias FnMaxActiveClusters = @convention(c) (UnsafeMutablePointer<Int32>, CUhandle?, UnsafeRawPointer) -> CUresult
// cuTensorMapEncodeTiled(map, dataType, rank, globalAddress, globalDim, globalStrides, boxDim,
// elementStrides, interleave, swizzle, l2Promotion, oobFill)
typealias FnTensorMapEncodeTiled = @convention(c) (UnsafeMutableRawPointer, Int32, UInt32, UnsafeMutableRawPointer?,
                                                   UnsafePointer<UInt64>, UnsafePointer<UInt64>, UnsafePointer<UInt32>,
                                                   UnsafePointer<UInt32>, Int32, Int32, Int32, Int32) -> CUresult

/// Device attributes used here (CUdevice_attribute values).
public enum CUDeviceAttribute: Int32 {
    case multiprocessorCount = 16
    case computeCapabilityMajor = 75
    case computeCapabilityMinor = 76
    case maxSharedMemoryPerMultiprocessor = 81
    case maxSharedMemoryPerBlockOptin = 97
    case reservedSharedMemoryPerBlock = 111
}

// MARK: - Driver

public final class CUDADriver {
    public let library: DynamicLibrary
    let cuInit: FnInit
    let cuDriverGetVersion: FnIntOut
    let cuDeviceGetCount: FnIntOut
    let cuDeviceGet: FnDeviceGet
    let cuDeviceGetName: FnDeviceGetName
    let cuDeviceGetAttribute: FnDeviceGetAttribute
    let cuDevicePrimaryCtxRetain: FnPrimaryCtxRetain
    let cuCtxSetCurrent: FnHandleIn
    let cuCtxSynchronize: FnVoid
    let cuMemAlloc: FnMemAlloc
    let cuMemFree: FnMemFree
    let cuMemHostAlloc: FnMemHostAlloc
    let cuMemFreeHost: FnMemFreeHost
    let cuMemcpyHtoDAsync: FnMemcpyHtoD
    let cuMemcpyDtoHAsync: FnMemcpyDtoH
    let cuMemcpyDtoDAsync: FnMemcpyDtoD
    let cuMemsetD8Async: FnMemsetD8
    let cuMemGetInfo: FnMemGetInfo
    let cuModuleLoadData: FnModuleLoadData
    let cuModuleGetFunction: FnModuleGetFunction
    let cuFuncSetAttribute: FnFuncSetAttribute
    let cuOccupancyMaxActiveBlocksPerMultiprocessor: FnOccupancy
    let cuLaunchKernel: FnLaunchKernel
    let cuStreamCreate: FnCreateWithFlags
    let cuStreamSynchronize: FnHandleIn
    let cuStreamWaitEvent: FnStreamWaitEvent
    let cuEventCreate: FnCreateWithFlags
    let cuEventRecord: FnEventRecord
    let cuEventSynchronize: FnHandleIn
    let cuEventDestroy: FnHandleIn
    let cuEventElapsedTime: FnEventElapsed
    let cuGetErrorName: FnGetErrorText
    let cuGetErrorString: FnGetErrorText
    /// TMA descriptors and cluster occupancy (CUDA 12 drivers; nil before): only the Hopper GEMM
    /// needs them.
    let cuTensorMapEncodeTiled: FnTensorMapEncodeTiled?
    let cuOccupancyMaxActiveClusters: FnMaxActiveClusters?

    init(library l: DynamicLibrary) throws {
        library = l
        cuInit = try l.symbol("cuInit")
        cuDriverGetVersion = try l.symbol("cuDriverGetVersion")
        cuDeviceGetCount = try l.symbol("cuDeviceGetCount")
        cuDeviceGet = try l.symbol("cuDeviceGet")
        cuDeviceGetName = try l.symbol("cuDeviceGetName")
        cuDeviceGetAttribute = try l.symbol("cuDeviceGetAttribute")
        cuDevicePrimaryCtxRetain = try l.symbol("cuDevicePrimaryCtxRetain")
        cuCtxSetCurrent = try l.symbol("cuCtxSetCurrent")
        cuCtxSynchronize = try l.symbol("cuCtxSynchronize")
        cuMemAlloc = try l.symbol("cuMemAlloc_v2")
        cuMemFree = try l.symbol("cuMemFree_v2")
        cuMemHostAlloc = try l.symbol("cuMemHostAlloc")
        cuMemFreeHost = try l.symbol("cuMemFreeHost")
        cuMemcpyHtoDAsync = try l.symbol("cuMemcpyHtoDAsync_v2")
        cuMemcpyDtoHAsync = try l.symbol("cuMemcpyDtoHAsync_v2")
        cuMemcpyDtoDAsync = try l.symbol("cuMemcpyDtoDAsync_v2")
        cuMemsetD8Async = try l.symbol("cuMemsetD8Async")
        cuMemGetInfo = try l.symbol("cuMemGetInfo_v2")
        cuModuleLoadData = try l.symbol("cuModuleLoadData")
        cuModuleGetFunction = try l.symbol("cuModuleGetFunction")
        cuFuncSetAttribute = try l.symbol("cuFuncSetAttribute")
        cuOccupancyMaxActiveBlocksPerMultiprocessor = try l.symbol("cuOccupancyMaxActiveBlocksPerMultiprocessor")
        cuLaunchKernel = try l.symbol("cuLaunchKernel")
        cuStreamCreate = try l.symbol("cuStreamCreate")
        cuStreamSynchronize = try l.symbol("cuStreamSynchronize")
        cuStreamWaitEvent = try l.symbol("cuStreamWaitEvent")
        cuEventCreate = try l.symbol("cuEventCreate")
        cuEventRecord = try l.symbol("cuEventRecord")
        cuEventSynchronize = try l.symbol("cuEventSynchronize")
        cuEventDestroy = try l.symbol("cuEventDestroy_v2")
        cuEventElapsedTime = try l.symbol("cuEventElapsedTime")
        cuGetErrorName = try l.symbol("cuGetErrorName")
        cuGetErrorString = try l.symbol("cuGetErrorString")
        cuTensorMapEncodeTiled = try? l.symbol("cuTensorMapEncodeTiled")
        cuOccupancyMaxActiveClusters = try? l.symbol("cuOccupancyMaxActiveClusters")
    }

    /// The driver, loaded and initialised once per process (or the reason it is not there).
    public static let shared: Result<CUDADriver, LLMError> = {
        do {
            let lib = try DynamicLibrary.open(names: ["libcuda.so.1", "libcuda.so"], stem: "libcuda.so.",
                                              what: "cuda driver")
            let d = try CUDADriver(library: lib)
            try d.check(d.cuInit(0), "cuInit")
            return .success(d)
        } catch let e as LLMError {
            return .failure(e)
        } catch {
            return .failure(LLMError("cuda driver: \(error)"))
        }
    }()

    public static func get() throws -> CUDADriver { try shared.get() }

    /// Throws an error naming `call` and the driver's own name and text for `result`.
    @inline(__always) public func check(_ result: CUresult, _ call: @autoclosure () -> String) throws {
        if result != 0 { throw LLMError("cuda: \(call()) failed: \(errorText(result))") }
    }

    public func errorText(_ result: CUresult) -> String {
        var name: UnsafePointer<CChar>? = nil
        var text: UnsafePointer<CChar>? = nil
        _ = cuGetErrorName(result, &name)
        _ = cuGetErrorString(result, &text)
        let n = name.map { String(cString: $0) } ?? "CUDA error \(result)"
        return text.map { "\(n) (\(String(cString: $0)))" } ?? n
    }

    public func driverVersion() throws -> Int {
        var v: Int32 = 0
        try check(cuDriverGetVersion(&v), "cuDriverGetVersion")
        return Int(v)
    }

    public func deviceCount() throws -> Int {
        var n: Int32 = 0
        try check(cuDeviceGetCount(&n), "cuDeviceGetCount")
        return Int(n)
    }
}

// MARK: - Device and context

/// One GPU with its primary context made current, the stream all work goes to, and a side stream
/// for work off the critical path (`onSideStream`).
public final class CUDADevice {
    public let driver: CUDADriver
    public let ordinal: Int
    public let name: String
    public let computeCapability: (major: Int, minor: Int)
    public let multiprocessorCount: Int
    public let maxSharedMemoryPerBlock: Int
    /// Shared memory of one SM, and what the driver keeps of it for each resident block: the blocks
    /// an SM can hold at once by their shared memory.
    public let maxSharedMemoryPerMultiprocessor: Int
    public let reservedSharedMemoryPerBlock: Int
    let context: CUhandle
    /// The stream work is queued on: the main stream, or the side stream inside `onSideStream`.
    public var stream: CUhandle { onSide ? sideStream : mainStream }
    public let mainStream: CUhandle
    let sideStream: CUhandle
    /// Whether `onSideStream` uses the side stream (else its work queues on the main stream).
    public var sideStreamEnabled = false
    public private(set) var onSide = false
    private let forkEvent: CUhandle
    private var sideCount = 0      // side works queued so far; the last one's number
    private var waitedThrough = 0  // the main stream waits for every side work up to this number
    private var pendingSide: [(number: Int, event: CUhandle)] = []  // recorded after side work, oldest first, not yet waited for
    private var freeSideEvents: [CUhandle] = []
    /// When set, every kernel launch and matmul on the stream is timed (KernelProfiler.swift).
    public var profiler: KernelProfiler?

    public init(ordinal: Int = 0) throws {
        let d = try CUDADriver.get()
        driver = d
        self.ordinal = ordinal
        let count = try d.deviceCount()
        if count == 0 { throw LLMError("cuda: the driver found no GPU") }
        if ordinal >= count { throw LLMError("cuda: device \(ordinal) requested, but only \(count) found") }
        var dev: Int32 = 0
        try d.check(d.cuDeviceGet(&dev, Int32(ordinal)), "cuDeviceGet(\(ordinal))")
        var buf = [CChar](repeating: 0, count: 256)
        try d.check(d.cuDeviceGetName(&buf, 255, dev), "cuDeviceGetName")
        name = String(cString: buf)
        func attr(_ a: CUDeviceAttribute) throws -> Int {
            var v: Int32 = 0
            try d.check(d.cuDeviceGetAttribute(&v, a.rawValue, dev), "cuDeviceGetAttribute(\(a))")
            return Int(v)
        }
        computeCapability = (try attr(.computeCapabilityMajor), try attr(.computeCapabilityMinor))
        multiprocessorCount = try attr(.multiprocessorCount)
        maxSharedMemoryPerBlock = try attr(.maxSharedMemoryPerBlockOptin)
        maxSharedMemoryPerMultiprocessor = try attr(.maxSharedMemoryPerMultiprocessor)
        reservedSharedMemoryPerBlock = (try? attr(.reservedSharedMemoryPerBlock)) ?? 1024
        var ctx: CUhandle? = nil
        try d.check(d.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain")
        context = ctx!
        try d.check(d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        var s: CUhandle? = nil, side: CUhandle? = nil
        try d.check(d.cuStreamCreate(&s, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate")
        try d.check(d.cuStreamCreate(&side, 1), "cuStreamCreate (side)")
        mainStream = s!
        sideStream = side!
        var e: CUhandle? = nil
        try d.check(d.cuEventCreate(&e, 2 /* CU_EVENT_DISABLE_TIMING */), "cuEventCreate")
        forkEvent = e!
    }

    /// "sm_90" for an H100.
    public var arch: String { "sm_\(computeCapability.major)\(computeCapability.minor)" }

    /// Waits until all work queued on both streams is done.
    public func synchronize() throws {
        try driver.check(driver.cuStreamSynchronize(mainStream), "cuStreamSynchronize")
        try driver.check(driver.cuStreamSynchronize(sideStream), "cuStreamSynchronize (side)")
    }

    // MARK: Side stream

    /// Work queued on the side stream by `onSideStream`; `wait(for:)` makes the main stream wait for it.
    /// Known by its number, not its event: events are reused once waited for, so a handle kept after
    /// its wait must not name later work.
    public struct SideWork { fileprivate let number: Int }  // 0: ran on the main stream, nothing to wait for

    /// Queues the work `body` launches on the side stream, after everything queued on the main
    /// stream so far, so that it overlaps what the main stream does next. The caller must
    /// `wait(for:)` the result before the main stream overwrites anything the work reads or reads
    /// anything it writes. Without `sideStreamEnabled`, with a profiler attached that times one
    /// stream, or nested, `body` runs on the current stream and the result needs no wait.
    public func onSideStream(_ body: () throws -> Void) throws -> SideWork {
        guard sideStreamEnabled, profiler?.bothStreams ?? true, !onSide else {
            try body()
            return SideWork(number: 0)
        }
        try driver.check(driver.cuEventRecord(forkEvent, mainStream), "cuEventRecord (fork)")
        try driver.check(driver.cuStreamWaitEvent(sideStream, forkEvent, 0), "cuStreamWaitEvent (side after main)")
        onSide = true
        defer { onSide = false }
        try body()
        let done = try freeSideEvents.popLast() ?? makeEvent(timing: false)
        try driver.check(driver.cuEventRecord(done, sideStream), "cuEventRecord (side)")
        sideCount += 1
        pendingSide.append((sideCount, done))
        return SideWork(number: sideCount)
    }

    /// Work queued on the main stream from now on waits until `work` is done.
    public func wait(for work: SideWork) throws {
        guard work.number > waitedThrough, let i = pendingSide.firstIndex(where: { $0.number == work.number }) else {
            return  // none, or waited for already
        }
        try driver.check(driver.cuStreamWaitEvent(mainStream, pendingSide[i].event, 0), "cuStreamWaitEvent (main after side)")
        // The side stream runs in order: the work recorded before this one is done too.
        freeSideEvents += pendingSide[...i].map(\.event)
        pendingSide.removeFirst(i + 1)
        waitedThrough = work.number
    }

    /// Work queued on the main stream from now on waits until all side work queued so far is done.
    public func joinSideStream() throws {
        if let last = pendingSide.last { try wait(for: SideWork(number: last.number)) }
    }

    /// (free, total) bytes of device memory.
    public func memoryInfo() throws -> (free: Int, total: Int) {
        var free = 0, total = 0
        try driver.check(driver.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }

    // MARK: Memory

    public func allocate(bytes: Int, what: String) throws -> CUdeviceptr {
        var p: CUdeviceptr = 0
        try driver.check(driver.cuMemAlloc(&p, max(bytes, 256)), "cuMemAlloc(\(bytes) bytes for \(what))")
        return p
    }

    public func free(_ p: CUdeviceptr) {
        if p != 0 { _ = driver.cuMemFree(p) }
    }

    /// Copies host memory to the device and waits for the copy (and all work queued before it):
    /// `src` may be any memory, freed as soon as this returns. The training step's copies go
    /// through `PinnedHostBuffer` instead, which does not wait.
    public func upload(_ dst: CUdeviceptr, _ src: UnsafeRawPointer, bytes: Int) throws {
        if bytes == 0 { return }
        try driver.check(driver.cuMemcpyHtoDAsync(dst, src, bytes, stream), "cuMemcpyHtoDAsync(\(bytes) bytes)")
        try synchronize()  // the host buffer may go away after we return
    }

    public func upload<T>(_ dst: CUdeviceptr, _ array: [T]) throws {
        try array.withUnsafeBytes { try upload(dst, $0.baseAddress!, bytes: $0.count) }
    }

    /// Copies device memory to the host after all work queued before it; waits until it is there.
    public func download(_ dst: UnsafeMutableRawPointer, _ src: CUdeviceptr, bytes: Int) throws {
        if bytes == 0 { return }
        try driver.check(driver.cuMemcpyDtoHAsync(dst, src, bytes, stream), "cuMemcpyDtoHAsync(\(bytes) bytes)")
        try synchronize()
    }

    public func download<T>(_ src: CUdeviceptr, count: Int, as: T.Type, fill: T) throws -> [T] {
        var out = [T](repeating: fill, count: count)
        try out.withUnsafeMutableBytes { try download($0.baseAddress!, src, bytes: $0.count) }
        return out
    }

    public func copy(_ dst: CUdeviceptr, _ src: CUdeviceptr, bytes: Int) throws {
        try driver.check(driver.cuMemcpyDtoDAsync(dst, src, bytes, stream), "cuMemcpyDtoDAsync(\(bytes) bytes)")
    }

    public func zero(_ p: CUdeviceptr, bytes: Int) throws {
        if bytes == 0 { return }
        try profiled("memset") {
            try driver.check(driver.cuMemsetD8Async(p, 0, bytes, stream), "cuMemsetD8Async(\(bytes) bytes)")
        }
    }

    // MARK: Timing

    /// `timing` false: an event only waited for (CU_EVENT_DISABLE_TIMING, cheaper to record).
    public func makeEvent(timing: Bool = true) throws -> CUhandle {
        var e: CUhandle? = nil
        try driver.check(driver.cuEventCreate(&e, timing ? 0 : 2), "cuEventCreate")
        return e!
    }

    /// Frees an event of makeEvent (queued work that records it may still be running).
    public func destroyEvent(_ e: CUhandle) { _ = driver.cuEventDestroy(e) }

    public func record(_ e: CUhandle) throws {
        try driver.check(driver.cuEventRecord(e, stream), "cuEventRecord")
    }

    public func elapsedMilliseconds(_ start: CUhandle, _ end: CUhandle) throws -> Float {
        try driver.check(driver.cuEventSynchronize(end), "cuEventSynchronize")
        var ms: Float = 0
        try driver.check(driver.cuEventElapsedTime(&ms, start, end), "cuEventElapsedTime")
        return ms
    }
}

// MARK: - Page-locked host memory

/// `count` elements of page-locked host memory (cuMemHostAlloc) that the stream copies from or
/// into without the host waiting: the copy engine reads or writes it directly, some time after
/// the copy is queued. So a copy's host memory cannot be a Swift array (it may move or go away);
/// it is one of these, and `copied`, recorded on the stream after every copy queued from or into
/// the buffer, tells the host when that copy is done. The rule for its users: call
/// `waitForCopies()` before writing the buffer (an upload queued earlier may not have read it yet)
/// and before reading what a download put there.
public final class PinnedHostBuffer<Element> {
    let device: CUDADevice
    public let pointer: UnsafeMutablePointer<Element>
    public let count: Int
    /// What the buffer holds, for error messages ("input tokens").
    let what: String
    /// Recorded after each copy queued from or into the buffer. Copies on the one stream run in
    /// order, so once it has completed, every earlier copy of the buffer has too; before the first
    /// record it stands for no work, and waiting for it returns at once.
    let copied: CUhandle

    public init(device: CUDADevice, count: Int, what: String) throws {
        self.device = device
        self.count = count
        self.what = what
        let d = device.driver
        let bytes = max(count * MemoryLayout<Element>.stride, 16)
        var raw: UnsafeMutableRawPointer? = nil
        try d.check(d.cuMemHostAlloc(&raw, bytes, 0), "cuMemHostAlloc(\(bytes) bytes for \(what))")
        guard let raw else { throw LLMError("cuda: cuMemHostAlloc(\(bytes) bytes for \(what)) returned no memory") }
        pointer = raw.bindMemory(to: Element.self, capacity: count)
        do {
            copied = try device.makeEvent(timing: false)
        } catch {
            _ = d.cuMemFreeHost(raw)
            throw error
        }
    }

    deinit {
        // The copy engine must be done with the memory before it is unpinned and freed.
        _ = device.driver.cuEventSynchronize(copied)
        _ = device.driver.cuMemFreeHost(UnsafeMutableRawPointer(pointer))
        _ = device.driver.cuEventDestroy(copied)
    }

    /// Waits until every copy queued from or into the buffer is done (at once when none is pending).
    public func waitForCopies() throws {
        let d = device.driver
        try d.check(d.cuEventSynchronize(copied), "cuEventSynchronize (copies of the \(what))")
    }

    /// Queues dst[0 ..< n] = self[from ..< from + n] on the stream and returns without waiting.
    /// The host must not write those elements again before `waitForCopies()`.
    public func upload(to dst: CUdeviceptr, from: Int = 0, count n: Int) throws {
        if n == 0 { return }
        precondition(from >= 0 && from + n <= count, "pinned \(what): upload of [\(from), \(from + n)) outside \(count)")
        let d = device.driver, bytes = n * MemoryLayout<Element>.stride
        try d.check(d.cuMemcpyHtoDAsync(dst, pointer + from, bytes, device.stream),
                    "cuMemcpyHtoDAsync(\(bytes) bytes of \(what))")
        try device.record(copied)
    }

    /// Queues self[at ..< at + n] = src[0 ..< n] on the stream, after the work queued before it, and
    /// returns without waiting. The host reads those elements only after `waitForCopies()`.
    public func download(from src: CUdeviceptr, at: Int = 0, count n: Int) throws {
        if n == 0 { return }
        precondition(at >= 0 && at + n <= count, "pinned \(what): download into [\(at), \(at + n)) outside \(count)")
        let d = device.driver, bytes = n * MemoryLayout<Element>.stride
        try d.check(d.cuMemcpyDtoHAsync(UnsafeMutableRawPointer(pointer + at), src, bytes, device.stream),
                    "cuMemcpyDtoHAsync(\(bytes) bytes of \(what))")
        try device.record(copied)
    }
}
