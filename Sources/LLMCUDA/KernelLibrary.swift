// The embedded CUDA kernels: compiled by NVRTC for one architecture and precision, cached on disk
// (keyed by source hash, options and architecture) so a second start compiles nothing, then loaded.

#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import LLM

// MARK: - Precision

/// The activation/parameter type of the GPU model.
public enum GPUPrecision: String, CaseIterable {
    case bf16, fp32
    public var elementBytes: Int { self == .bf16 ? 2 : 4 }
    var define: String { self == .bf16 ? "-DLLM_BF16" : "-DLLM_FP32" }
}

// MARK: - Sources and options

public enum KernelSources {
    /// Compiled kernel files (.cu); the .cuh files are headers they include.
    public static var modules: [(name: String, source: String)] { EmbeddedKernels.files.filter { $0.name.hasSuffix(".cu") } }
    public static var headers: [(name: String, source: String)] { EmbeddedKernels.files.filter { $0.name.hasSuffix(".cuh") } }

    /// NVRTC options. fp32 mode leaves out fast math so it can match the CPU to 1e-4.
    public static func options(arch: String, precision: GPUPrecision) -> [String] {
        var o = ["--gpu-architecture=\(arch)", "--std=c++17", precision.define]
        if precision == .bf16 { o.append("--use_fast_math") }
        // $LLM_KERNEL_DEFINES: more -D options (NAME or NAME=VALUE, separated by spaces or commas),
        // for timing kernel variants without a rebuild; part of the cache key like every option.
        for d in (environmentValue("LLM_KERNEL_DEFINES") ?? "").split(whereSeparator: { $0 == " " || $0 == "," }) {
            o.append("-D" + d)
        }
        // The Hopper GEMM's tile width, cluster size and stages are the host's too (HopperGEMM), and
        // so are the Hopper attention kernels' stages (they size their shared memory).
        o.append("-DFH_STAGES=\(CUDAModel.hopperAttentionStages)")
        o.append("-DFB_STAGES=\(CUDAModel.hopperKeyValueStages)")
        o.append("-DCOLUMN_SUM_GROUP=\(CUDAModel.columnSumGroup)")  // it sizes the bias sums' counters
        o.append("-DGEMM_CLUSTER=\(HopperGEMM.cluster)")
        for (e, name) in [(HopperGEMM.Epilogue.plain, "PLAIN"), (.gelu, "GELU"), (.geluGradient, "DGELU")] {
            o.append("-DGEMM_BN_\(name)=\(HopperGEMM.tileN(e))")
            o.append("-DGEMM_STAGES_\(name)=\(HopperGEMM.stages(e))")
        }
        return o
    }

    /// 64-bit FNV-1a of everything that decides a module's cubin.
    public static func cacheKey(module: String, source: String, options: [String], arch: String) -> String {
        var h: UInt64 = 0xcbf29ce484222325
        func mix(_ s: String) {
            for byte in s.utf8 { h = (h ^ UInt64(byte)) &* 0x100000001b3 }
            h = (h ^ 0xff) &* 0x100000001b3  // separator, so "ab"+"c" differs from "a"+"bc"
        }
        mix(module); mix(source)
        for header in headers { mix(header.name); mix(header.source) }
        options.forEach(mix)
        mix(arch)
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Compiles one module with NVRTC; throws on error, returns the log (warnings) with the cubin.
    public static func compile(module: String, source: String, arch: String, precision: GPUPrecision) throws -> CompiledKernel {
        try NVRTC.get().compile(name: module, source: source, headers: headers,
                                options: options(arch: arch, precision: precision))
    }
}

// MARK: - Disk cache

public enum KernelCache {
    /// $LLM_KERNEL_CACHE, else $XDG_CACHE_HOME/llm-swift/kernels, else ~/.cache/llm-swift/kernels.
    public static func directory() -> String {
        if let d = environmentValue("LLM_KERNEL_CACHE") { return d }
        if let x = environmentValue("XDG_CACHE_HOME") { return x + "/llm-swift/kernels" }
        if let home = environmentValue("HOME") { return home + "/.cache/llm-swift/kernels" }
        return "/tmp/llm-swift-kernels"
    }

    /// mkdir -p
    static func makeDirectories(_ path: String) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            mkdir(prefix, 0o755)
        }
    }

    /// The cubin of `module` for (arch, precision): from the cache if there, else compiled and stored.
    /// Returns the cubin and whether it was compiled now.
    static func cubin(module: String, source: String, arch: String, precision: GPUPrecision) throws -> ([UInt8], Bool) {
        let options = KernelSources.options(arch: arch, precision: precision)
        let key = KernelSources.cacheKey(module: module, source: source, options: options, arch: arch)
        let dir = directory()
        let base = module.split(separator: ".").first.map(String.init) ?? module
        let path = "\(dir)/\(base)-\(arch)-\(precision.rawValue)-\(key).cubin"
        if fileExists(path), let bytes = try? readFileBytes(path), !bytes.isEmpty { return (bytes, false) }
        let compiled = try KernelSources.compile(module: module, source: source, arch: arch, precision: precision)
        makeDirectories(dir)
        try? writeFileAtomically(path, compiled.cubin)  // a read-only cache only costs a recompile
        return (compiled.cubin, true)
    }
}

// MARK: - Loaded kernels

public struct CUDAFunction {
    let handle: CUhandle
    public let name: String
}

/// One kernel argument: pointers, 32/64-bit integers and floats, passed by value; or a TMA
/// descriptor (a `__grid_constant__` CUtensorMap parameter, 128 bytes).
public enum KernelArgument {
    case ptr(CUdeviceptr), i32(Int32), i64(Int64), u32(UInt32), f32(Float), tensorMap(TensorMap)

    /// Bytes the argument's value takes in the launch's parameter buffer (64-byte slots for maps).
    var slotBytes: Int { if case .tensorMap = self { return 128 } else { return 8 } }

    /// Where each argument's value goes in one parameter buffer (each at a multiple of its slot,
    /// so a tensor map's 128 bytes are 64-byte aligned), and the buffer's size.
    static func slotOffsets(_ args: [KernelArgument]) -> (offsets: [Int], total: Int) {
        var offsets: [Int] = []
        var total = 0
        for a in args {
            total = (total + a.slotBytes - 1) / a.slotBytes * a.slotBytes
            offsets.append(total)
            total += a.slotBytes
        }
        return (offsets, total)
    }
}

/// A CUtensorMap: 128 opaque bytes from cuTensorMapEncodeTiled describing a 2-D global tensor and
/// the box one TMA copy moves.
public struct TensorMap {
    public var words = [UInt64](repeating: 0, count: 16)
}

public final class KernelLibrary {
    public let device: CUDADevice
    public let precision: GPUPrecision
    public private(set) var compiledModules = 0
    public private(set) var loadSeconds = 0.0
    var modules: [(name: String, handle: CUhandle)] = []
    var functions: [String: CUDAFunction] = [:]
    var sharedLimitSet: [String: Int] = [:]
    private var tensorMaps: [TensorMapKey: TensorMap] = [:]
    private struct TensorMapKey: Hashable { let address: CUdeviceptr, rows: Int, cols: Int, boxRows: Int }

    /// Loads every module for the device's architecture (compiling in parallel what the cache lacks).
    public init(device: CUDADevice, precision: GPUPrecision) throws {
        self.device = device
        self.precision = precision
        let start = DispatchTime.now().uptimeNanoseconds
        let modules = KernelSources.modules
        // sm_90 (H100, H200) compiles as sm_90a: the same code, plus the Hopper-only instructions
        // (wgmma, TMA) of the kernels guarded by __CUDA_ARCH_FEAT_SM90_ALL (gemm_hopper.cu).
        let arch = device.arch == "sm_90" ? "sm_90a" : device.arch
        var results = [Result<([UInt8], Bool), Error>?](repeating: nil, count: modules.count)
        let lock = PthreadMutex()
        DispatchQueue.concurrentPerform(iterations: modules.count) { i in
            let r = Result { try KernelCache.cubin(module: modules[i].name, source: modules[i].source, arch: arch,
                                                   precision: precision) }
            lock.withLock { results[i] = r }
        }
        let d = device.driver
        for (i, module) in modules.enumerated() {
            let (cubin, compiled) = try results[i]!.get()
            if compiled { compiledModules += 1 }
            var mod: CUhandle? = nil
            try cubin.withUnsafeBytes { try d.check(d.cuModuleLoadData(&mod, $0.baseAddress!), "cuModuleLoadData(\(module.name))") }
            self.modules.append((module.name, mod!))
        }
        loadSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// The kernel `name` from whichever module defines it (looked up once).
    public func function(_ name: String) throws -> CUDAFunction {
        if let f = functions[name] { return f }
        let d = device.driver
        for (_, module) in modules {
            var f: CUhandle? = nil
            let r = d.cuModuleGetFunction(&f, module, name)
            if r == 500 { continue }  // CUDA_ERROR_NOT_FOUND: another module has it
            try d.check(r, "cuModuleGetFunction(\(name))")
            let fn = CUDAFunction(handle: f!, name: name)
            functions[name] = fn
            return fn
        }
        throw LLMError("cuda: no kernel named \(name) in the embedded sources")
    }

    /// The TMA descriptor of a (rows, cols) bf16 row-major matrix at p, copied in boxes of 64 columns
    /// (128 bytes, the 128-byte swizzle the warpgroup MMAs read) by `boxRows` rows; made once per
    /// address, shape and box. For the Hopper kernels (gemm_hopper.cu, flash_hopper.cu).
    func tensorMap(_ p: CUdeviceptr, rows: Int, cols: Int, boxRows: Int) throws -> TensorMap {
        let key = TensorMapKey(address: p, rows: rows, cols: cols, boxRows: boxRows)
        if let m = tensorMaps[key] { return m }
        guard let encode = device.driver.cuTensorMapEncodeTiled else {
            throw LLMError("tensor map: the CUDA driver has no cuTensorMapEncodeTiled (TMA needs CUDA 12 or later)")
        }
        var map = TensorMap()
        let dims: [UInt64] = [UInt64(cols), UInt64(rows)], strides: [UInt64] = [UInt64(cols * 2)]
        let box: [UInt32] = [64, UInt32(boxRows)], elementStrides: [UInt32] = [1, 1]
        let r = map.words.withUnsafeMutableBytes { m in
            encode(m.baseAddress!, 9 /* BFLOAT16 */, 2, UnsafeMutableRawPointer(bitPattern: UInt(p)), dims, strides,
                   box, elementStrides, 0 /* no interleave */, 3 /* SWIZZLE_128B */, 3 /* L2 256B */, 0)
        }
        try device.driver.check(r, "cuTensorMapEncodeTiled(\(rows) x \(cols) bf16, box 64 x \(boxRows))")
        tensorMaps[key] = map
        return map
    }

    /// Raises `f`'s limit of dynamic shared memory above the 48 KB default to `shared` bytes, once.
    func allowSharedMemory(_ f: CUDAFunction, _ shared: Int) throws {
        if shared > 48 * 1024, (sharedLimitSet[f.name] ?? 0) < shared {
            try device.driver.check(device.driver.cuFuncSetAttribute(f.handle, 8 /* MAX_DYNAMIC_SHARED_SIZE_BYTES */,
                                                                     Int32(shared)),
                                    "cuFuncSetAttribute(\(f.name), \(shared) bytes of shared memory)")
            sharedLimitSet[f.name] = shared
        }
    }

    /// How many blocks of `f` (`threads` each, `shared` bytes of dynamic shared memory) one SM holds
    /// at once, as the driver counts registers, shared memory and threads (at least 1).
    public func blocksPerMultiprocessor(_ f: CUDAFunction, threads: Int, shared: Int) throws -> Int {
        try allowSharedMemory(f, shared)
        var blocks: Int32 = 0
        try device.driver.check(device.driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, f.handle, Int32(threads),
                                                                                          shared),
                                "cuOccupancyMaxActiveBlocksPerMultiprocessor(\(f.name))")
        return max(1, Int(blocks))
    }

    /// Launches `f` on the device's stream. `shared` bytes of dynamic shared memory (raised above
    /// the 48 KB default for the function on first use).
    public func launch(_ f: CUDAFunction, grid: (Int, Int, Int), block: (Int, Int, Int), shared: Int = 0,
                       _ args: [KernelArgument]) throws {
        let d = device.driver
        try allowSharedMemory(f, shared)
        if grid.0 <= 0 || grid.1 <= 0 || grid.2 <= 0 { return }  // nothing to do (empty tensor)
        // Each value in a slot of its own (8 bytes, or 128 at a 64-byte boundary for a tensor map),
        // the driver reading them through one pointer per argument.
        let (offsets, total) = KernelArgument.slotOffsets(args)
        try withUnsafeTemporaryAllocation(byteCount: max(total, 8), alignment: 64) { buffer in
            try withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer?.self, capacity: max(args.count, 1)) { ptrs in
                let base = buffer.baseAddress!
                base.initializeMemory(as: UInt8.self, repeating: 0, count: max(total, 8))
                for (i, a) in args.enumerated() {
                    let raw = base + offsets[i]
                    switch a {
                    case .ptr(let p): raw.storeBytes(of: p, as: UInt64.self)
                    case .i64(let v): raw.storeBytes(of: v, as: Int64.self)
                    case .i32(let v): raw.storeBytes(of: v, as: Int32.self)
                    case .u32(let v): raw.storeBytes(of: v, as: UInt32.self)
                    case .f32(let v): raw.storeBytes(of: v, as: Float.self)
                    case .tensorMap(let m):
                        for (k, w) in m.words.enumerated() { (raw + 8 * k).storeBytes(of: w, as: UInt64.self) }
                    }
                    ptrs[i] = raw
                }
                try device.profiled(f.name) {
                    try d.check(d.cuLaunchKernel(f.handle, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2),
                                                 UInt32(block.0), UInt32(block.1), UInt32(block.2), UInt32(shared),
                                                 device.stream, ptrs.baseAddress, nil),
                                "cuLaunchKernel(\(f.name), grid \(grid), block \(block), shared \(shared))")
                }
            }
        }
    }
}

/// A pthread mutex (no Foundation in this target).
final class PthreadMutex {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}
