// cuBLASLt (libcublasLt.so) through dlopen: the matmuls of the model, bf16 or fp32 in/out with
// fp32 accumulation, optional epilogues (bias, GELU with its input kept, GELU gradient), one
// cached descriptor set and algorithm per shape.

#if canImport(Glibc)
import Glibc
#endif
import LLM

// MARK: - C types and enum values (cublasLt.h, library_types.h)

typealias FnLtCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32
typealias FnLtDestroy = @convention(c) (OpaquePointer?) -> Int32
typealias FnLtDescCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, Int32, Int32) -> Int32
typealias FnLtSetAttribute = @convention(c) (OpaquePointer?, Int32, UnsafeRawPointer, Int) -> Int32
typealias FnLtLayoutCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, Int32, UInt64, UInt64, Int64) -> Int32
typealias FnLtHeuristic = @convention(c) (OpaquePointer?, OpaquePointer?, OpaquePointer?, OpaquePointer?,
                                          OpaquePointer?, OpaquePointer?, OpaquePointer?, Int32,
                                          UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> Int32
typealias FnLtMatmul = @convention(c) (OpaquePointer?, OpaquePointer?, UnsafeRawPointer, CUdeviceptr,
                                       OpaquePointer?, CUdeviceptr, OpaquePointer?, UnsafeRawPointer,
                                       CUdeviceptr, OpaquePointer?, CUdeviceptr, OpaquePointer?,
                                       UnsafeRawPointer?, CUdeviceptr, Int, OpaquePointer?) -> Int32
typealias FnLtStatusString = @convention(c) (Int32) -> UnsafePointer<CChar>?
typealias FnLtAlgoCheck = @convention(c) (OpaquePointer?, OpaquePointer?, OpaquePointer?, OpaquePointer?, OpaquePointer?,
                                          OpaquePointer?, UnsafeRawPointer, UnsafeMutableRawPointer) -> Int32
/// cublasLtMatmulAlgoCapGetAttribute and cublasLtMatmulAlgoConfigGetAttribute: (algo, attribute, buf, size, written).
typealias FnLtAlgoGetAttribute = @convention(c) (UnsafeRawPointer, Int32, UnsafeMutableRawPointer, Int,
                                                 UnsafeMutablePointer<Int>?) -> Int32
typealias FnLtAlgoSetAttribute = @convention(c) (UnsafeMutableRawPointer, Int32, UnsafeRawPointer, Int) -> Int32

enum CudaDataType: Int32 { case r32F = 0, r16BF = 14 }
let CUBLAS_COMPUTE_32F: Int32 = 68
let CUBLASLT_MATMUL_DESC_TRANSA: Int32 = 3
let CUBLASLT_MATMUL_DESC_TRANSB: Int32 = 4
let CUBLASLT_MATMUL_DESC_EPILOGUE: Int32 = 7
let CUBLASLT_MATMUL_DESC_BIAS_POINTER: Int32 = 8
let CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: Int32 = 11
let CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: Int32 = 12
let CUBLASLT_EPILOGUE_DEFAULT: UInt32 = 1
let CUBLASLT_EPILOGUE_BIAS: UInt32 = 4
let CUBLASLT_EPILOGUE_GELU_AUX: UInt32 = 32 | 128
let CUBLASLT_EPILOGUE_DGELU: UInt32 = 64 | 128
let CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: Int32 = 1
let CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: Int32 = 5  // then B 6, C 7, D 8
/// sizeof(cublasLtMatmulHeuristicResult_t): algo (8 x uint64), workspaceSize, state, wavesCount, reserved[4].
let heuristicResultBytes = 96
/// sizeof(cublasLtMatmulAlgo_t): opaque, and meant to be kept and reused with the same cuBLASLt version.
let algoBytes = 64
/// cublasLtMatmulAlgoConfigAttributes_t, with the size of each value (uint32 or int32; the last two uint16).
enum AlgoConfig: Int32, CaseIterable {
    case id = 0, tile, splitK, reductionScheme, ctaSwizzling, customOption, stages, innerShape, clusterShape
    var bytes: Int { self == .innerShape || self == .clusterShape ? 2 : 4 }
}
/// cublasLtMatmulAlgoCapAttributes_t (4-byte values).
let CUBLASLT_ALGO_CAP_SPLITK_SUPPORT: Int32 = 0
let CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK: Int32 = 1
let CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT: Int32 = 2
let CUBLASLT_ALGO_CAP_TILE_IDS: Int32 = 6          // uint32 array
let CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX: Int32 = 7
let CUBLASLT_ALGO_CAP_STAGES_IDS: Int32 = 13       // uint32 array
/// Split-K partial products summed in the compute type (fp32) in the workspace: one rounding, as without a split.
let CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE: UInt32 = 2

// MARK: - Library

public final class CuBLASLt {
    public let library: DynamicLibrary
    let create: FnLtCreate
    let destroy: FnLtDestroy
    let descCreate: FnLtDescCreate
    let descSetAttribute: FnLtSetAttribute
    let layoutCreate: FnLtLayoutCreate
    let preferenceCreate: FnLtCreate
    let preferenceSetAttribute: FnLtSetAttribute
    let algoGetHeuristic: FnLtHeuristic
    let matmul: FnLtMatmul
    let statusString: FnLtStatusString?
    let getVersion: (@convention(c) () -> Int)?
    let algoCheck: FnLtAlgoCheck
    let algoCapGetAttribute: FnLtAlgoGetAttribute
    let algoConfigGetAttribute: FnLtAlgoGetAttribute
    let algoConfigSetAttribute: FnLtAlgoSetAttribute

    init(library l: DynamicLibrary) throws {
        library = l
        create = try l.symbol("cublasLtCreate")
        destroy = try l.symbol("cublasLtDestroy")
        descCreate = try l.symbol("cublasLtMatmulDescCreate")
        descSetAttribute = try l.symbol("cublasLtMatmulDescSetAttribute")
        layoutCreate = try l.symbol("cublasLtMatrixLayoutCreate")
        preferenceCreate = try l.symbol("cublasLtMatmulPreferenceCreate")
        preferenceSetAttribute = try l.symbol("cublasLtMatmulPreferenceSetAttribute")
        algoGetHeuristic = try l.symbol("cublasLtMatmulAlgoGetHeuristic")
        matmul = try l.symbol("cublasLtMatmul")
        statusString = try? l.symbol("cublasLtGetStatusString")
        getVersion = try? l.symbol("cublasLtGetVersion")
        algoCheck = try l.symbol("cublasLtMatmulAlgoCheck")
        algoCapGetAttribute = try l.symbol("cublasLtMatmulAlgoCapGetAttribute")
        algoConfigGetAttribute = try l.symbol("cublasLtMatmulAlgoConfigGetAttribute")
        algoConfigSetAttribute = try l.symbol("cublasLtMatmulAlgoConfigSetAttribute")
    }

    /// A 4-byte capability of an algorithm (0 where cuBLASLt does not answer).
    func capability(_ algo: [UInt8], _ attribute: Int32) -> UInt32 {
        var value: UInt32 = 0
        let r = algo.withUnsafeBytes { a in withUnsafeMutableBytes(of: &value) { algoCapGetAttribute(a.baseAddress!, attribute, $0.baseAddress!, 4, nil) } }
        return r == 0 ? value : 0
    }

    /// An array capability of an algorithm (its tile or stages ids; empty where cuBLASLt does not answer).
    func capabilities(_ algo: [UInt8], _ attribute: Int32) -> [UInt32] {
        var written = 0
        let r = algo.withUnsafeBytes { a -> Int32 in
            var none: UInt32 = 0
            return withUnsafeMutableBytes(of: &none) { algoCapGetAttribute(a.baseAddress!, attribute, $0.baseAddress!, 0, &written) }
        }
        guard r == 0, written >= 4 else { return [] }
        var values = [UInt32](repeating: 0, count: written / 4)
        let r2 = algo.withUnsafeBytes { a in
            values.withUnsafeMutableBytes { algoCapGetAttribute(a.baseAddress!, attribute, $0.baseAddress!, written, nil) }
        }
        return r2 == 0 ? values : []
    }

    /// One configuration attribute of an algorithm (0 where cuBLASLt does not answer).
    func config(_ algo: [UInt8], _ attribute: AlgoConfig) -> UInt32 {
        var value: UInt32 = 0
        let r = algo.withUnsafeBytes { a in
            withUnsafeMutableBytes(of: &value) {
                algoConfigGetAttribute(a.baseAddress!, attribute.rawValue, $0.baseAddress!, attribute.bytes, nil)
            }
        }
        return r == 0 ? value : 0  // little-endian: a uint16 lands in the low half
    }

    /// `algo` with one configuration attribute changed, or nil where cuBLASLt refuses the value.
    func configured(_ algo: [UInt8], _ attribute: AlgoConfig, _ value: UInt32) -> [UInt8]? {
        var out = algo, v = value
        let r = out.withUnsafeMutableBytes { a in
            withUnsafeBytes(of: &v) { algoConfigSetAttribute(a.baseAddress!, attribute.rawValue, $0.baseAddress!, attribute.bytes) }
        }
        return r == 0 ? out : nil
    }

    /// "algo 66 tile 20 stages 8 split 1 swizzle 0 custom 0 cluster 2": what the verbose tuning prints.
    func describe(_ algo: [UInt8]) -> String {
        "algo \(config(algo, .id)) tile \(config(algo, .tile)) stages \(config(algo, .stages)) split \(config(algo, .splitK))"
            + " swizzle \(config(algo, .ctaSwizzling)) custom \(config(algo, .customOption)) cluster \(config(algo, .clusterShape))"
    }

    public static let shared: Result<CuBLASLt, LLMError> = {
        do {
            let lib = try DynamicLibrary.open(names: ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"],
                                              stem: "libcublasLt.so.", what: "cublasLt")
            return .success(try CuBLASLt(library: lib))
        } catch let e as LLMError {
            return .failure(e)
        } catch {
            return .failure(LLMError("cublasLt: \(error)"))
        }
    }()

    func check(_ r: Int32, _ call: @autoclosure () -> String) throws {
        if r != 0 {
            let text = statusString?(r).map { String(cString: $0) } ?? "status \(r)"
            throw LLMError("cublasLt: \(call()) failed: \(text)")
        }
    }
}

// MARK: - Matmul

/// What the matmul does to its result on the way out (cuBLASLt epilogues).
public enum MatmulEpilogue: Hashable {
    case none
    /// D = gelu(result (+ bias)); aux (m x n, leading dimension m) gets the GELU input.
    case geluKeepInput
    /// D = result * gelu'(aux), aux the GELU input kept by `geluKeepInput`.
    case geluGradient
}

/// One matmul problem in cuBLAS's column-major terms: D (m x n) = alpha op(A) op(B) + beta D,
/// A is (m x k) after op, B (k x n) after op; `bias` (m) is added to every column of D.
public struct MatmulShape: Hashable {
    public var m: Int, n: Int, k: Int
    public var transA: Bool, transB: Bool
    public var bias: Bool
    public var accumulate: Bool   // beta = 1
    public var epilogue: MatmulEpilogue = .none
    /// D (and C) in fp32 whatever the engine's type: bf16 products summed into an fp32 scratch
    /// (the LM head's dwte over row chunks) round only once, when the sum is added to the gradient.
    public var fp32Output = false
    /// Alignments (bytes, power of two up to 256) of the A, B, D and bias pointers: the
    /// algorithm chosen for one alignment may fail on a less aligned view.
    var alignA = 256, alignB = 256, alignD = 256, alignBias = 256, alignAux = 256
}

extension MatmulShape {
    /// "768x65536x3072 NN dgelu": m x n x k, whether A and B are transposed, the epilogue.
    var profileName: String {
        let ops = (transA ? "T" : "N") + (transB ? "T" : "N")
        let tail: String
        switch epilogue {
        case .none: tail = bias ? " bias" : ""
        case .geluKeepInput: tail = " bias+gelu"
        case .geluGradient: tail = " dgelu"
        }
        return "\(m)x\(n)x\(k) \(ops)" + tail + (fp32Output ? " fp32" : "") + (accumulate ? " +=" : "")
    }
}

@inline(__always) func pointerAlignment(_ p: CUdeviceptr) -> Int {
    p == 0 ? 256 : min(256, 1 << p.trailingZeroBitCount)
}

/// A cuBLASLt handle with its workspace and the descriptors and algorithm chosen for each shape.
///
/// The algorithm: the first time a shape runs, the candidates (`candidates`: cuBLASLt's heuristic
/// list and variants of its best proposals) are timed on the real operands and the fastest kept.
/// The chosen algorithm (its opaque bytes, which cuBLASLt lets a program keep and reuse with the same
/// library version) is written to the kernel cache, `matmul-algorithms-<GPU>-cublasLt<version>.txt`,
/// and later runs on the machine take it from there: the same algorithms, so the same bits run to
/// run and across a resume. $LLM_MATMUL_TUNE=0 keeps the heuristic's first choice; =wide also times
/// every tile x stages x cluster shape of the heuristic's algorithm ids for every shape (about a
/// minute at d12, so not the default), which the weight gradients' shapes get anyway (`wideSearch`;
/// =narrow: not even those); =verbose (or wide,verbose) prints each shape's timings,
/// =verbose,every also every candidate's.
public final class MatmulEngine {
    let lt: CuBLASLt
    let device: CUDADevice
    let handle: OpaquePointer
    let dataType: CudaDataType
    let workspace: CUdeviceptr
    let sideWorkspace: CUdeviceptr  // for matmuls on the side stream, which may run beside one on the main stream
    let workspaceBytes = 32 << 20
    struct Plan { let desc: OpaquePointer; let a: OpaquePointer; let b: OpaquePointer; let d: OpaquePointer; var algo: [UInt8] }
    var plans: [MatmulShape: Plan] = [:]
    let tune = environmentValue("LLM_MATMUL_TUNE") != "0"
    let verbose = environmentValue("LLM_MATMUL_TUNE")?.contains("verbose") ?? false
    /// Also every tile, stages and cluster shape cuBLASLt accepts for the heuristic's algorithm ids.
    let wide = environmentValue("LLM_MATMUL_TUNE")?.contains("wide") ?? false
    let narrow = environmentValue("LLM_MATMUL_TUNE")?.contains("narrow") ?? false
    /// Whether shape s gets the wide search: every shape with =wide; by default the weight gradients'
    /// (dW += inp^T dout: NT, accumulating, bf16 out), whose outputs are a few hundred tiles or
    /// fewer, where split-K variants the heuristic does not propose can win. d12, A B B A x 2, 10-step
    /// benches: 894.6 -> 884.05 ms a step against =narrow (S15-7), 871.65 -> 869.45 for =wide against
    /// the old default on a faster H100 (S15-6), every pair; in the profile qkv's 768x2304x65536 NT +=
    /// 0.386 -> 0.354 ms a call, the other three level (faster alone, not at the power cap). A cold
    /// start takes 11 s more (S15-7: 15.9 -> 27.0 s).
    func wideSearch(_ s: MatmulShape) -> Bool {
        wide || (!narrow && s.accumulate && !s.transA && s.transB && !s.fp32Output && s.epilogue == .none)
    }
    /// =verbose,every: also every candidate's time, fastest first.
    let listEvery = environmentValue("LLM_MATMUL_TUNE")?.contains("every") ?? false
    /// Chosen algorithms, by `choiceKey`, from and to `choicesPath`.
    var choices: [String: [UInt8]] = [:]
    /// `fastest`'s choices (the index of the way chosen), by its key; in the same file.
    var ways: [String: Int] = [:]
    let choicesPath: String

    /// `bf16`: bf16 in/out; else fp32 in/out. Both accumulate in fp32 (CUBLAS_COMPUTE_32F, no TF32).
    public init(device: CUDADevice, bf16: Bool) throws {
        lt = try CuBLASLt.shared.get()
        self.device = device
        dataType = bf16 ? .r16BF : .r32F
        var h: OpaquePointer? = nil
        try lt.check(lt.create(&h), "cublasLtCreate")
        handle = h!
        workspace = try device.allocate(bytes: workspaceBytes, what: "cublasLt workspace")
        sideWorkspace = try device.allocate(bytes: workspaceBytes, what: "cublasLt side-stream workspace")
        let gpu = String(device.name.map { $0.isLetter || $0.isNumber ? $0 : "-" })
        choicesPath = KernelCache.directory() + "/matmul-algorithms-\(gpu)-cublasLt\(lt.getVersion?() ?? 0).txt"
        if tune, let bytes = try? readFileBytes(choicesPath) {
            (choices, ways) = MatmulEngine.parseChoices(String(decoding: bytes, as: UTF8.self))
        }
    }

    /// The choices file: "<key> <128 hex digits>" per chosen algorithm, "way <key> <index>" per
    /// `fastest` choice, sorted. A line that does not parse is dropped (that shape is retuned).
    static func parseChoices(_ text: String) -> (algorithms: [String: [UInt8]], ways: [String: Int]) {
        var algorithms: [String: [UInt8]] = [:], ways: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            guard let space = line.lastIndex(of: " ") else { continue }
            let key = String(line[..<space]), value = line[line.index(after: space)...]
            if key.hasPrefix("way ") {
                if let index = Int(value), index >= 0 { ways[String(key.dropFirst(4))] = index }
            } else if let algo = bytesFromHex(value), algo.count == algoBytes {
                algorithms[key] = algo
            }
        }
        return (algorithms, ways)
    }
    static func formatChoices(algorithms: [String: [UInt8]], ways: [String: Int]) -> String {
        algorithms.keys.sorted().map { "\($0) \(hexFromBytes(algorithms[$0]!))\n" }.joined()
            + ways.keys.sorted().map { "way \($0) \(ways[$0]!)\n" }.joined()
    }

    /// Writes every choice to the choices file (atomically; a read-only cache only costs a retune),
    /// over what the file holds now: another engine (the self-test's bf16 and fp32 models, another
    /// process) may have added shapes since this one read it, and they stay.
    func saveChoices() {
        let now = (try? readFileBytes(choicesPath)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        KernelCache.makeDirectories(KernelCache.directory())
        try? writeFileAtomically(choicesPath, Array(MatmulEngine.mergedChoices(now, algorithms: choices, ways: ways).utf8))
    }

    /// The choices file's text `file` with these choices added (where both have a key, these win).
    static func mergedChoices(_ file: String, algorithms: [String: [UInt8]], ways: [String: Int]) -> String {
        var (a, w) = parseChoices(file)
        a.merge(algorithms) { _, ours in ours }
        w.merge(ways) { _, ours in ours }
        return formatChoices(algorithms: a, ways: w)
    }

    /// Runs the fastest of several ways to compute the same outputs from the same inputs (each a
    /// closure that queues its work on the device's stream) and returns its index. Which is fastest
    /// is timed once (a warm-up and 5 runs each, nothing else running) and kept in the choices file
    /// under `key`, so that later runs make the same choice and give the same bits; the chosen way
    /// runs last, so the outputs are its own. A way's argument is true on that last run only: one
    /// that adds into an output must add somewhere else before. Untuned, the first way.
    @discardableResult
    public func fastest(_ key: String, _ options: [(_ final: Bool) throws -> Void]) throws -> Int {
        if let kept = ways[key], options.indices.contains(kept) {
            try options[kept](true)
            return kept
        }
        guard tune, options.count > 1 else {
            try options[0](true)
            return 0
        }
        try device.synchronize()
        let start = try device.makeEvent(), end = try device.makeEvent()
        defer { device.destroyEvent(start); device.destroyEvent(end) }
        var times: [Float] = []
        for option in options {
            try option(false)  // the warm-up
            times.append(try averageMilliseconds(start, end, runs: 5) { try option(false) })
        }
        let best = times.indices.min { times[$0] < times[$1] }!
        ways[key] = best
        saveChoices()
        if verbose {
            fputs("matmul tune \(key): " + times.map { format("%.4f", Double($0)) }.joined(separator: " / ")
                  + " ms, way \(best) chosen\n", stderr)
        }
        try options[best](true)
        return best
    }

    /// The mean time of `runs` runs of `body` (work queued on the device's stream), between the
    /// events start and end; waits for them.
    func averageMilliseconds(_ start: CUhandle, _ end: CUhandle, runs: Int, _ body: () throws -> Void) throws -> Float {
        try device.record(start)
        for _ in 0 ..< runs { try body() }
        try device.record(end)
        return try device.elapsedMilliseconds(start, end) / Float(runs)
    }

    /// Everything that decides which algorithms can run a shape.
    func choiceKey(_ s: MatmulShape) -> String {
        "\(dataType.rawValue) \(s.profileName) align \(s.alignA) \(s.alignB) \(s.alignD) \(s.alignBias) \(s.alignAux)"
    }

    deinit {
        device.free(workspace)
        device.free(sideWorkspace)
        _ = lt.destroy(handle)  // descriptors are small and live as long as the process
    }

    /// The descriptors and algorithm of shape `s`, made on its first use (with its operands, on
    /// which a new shape's candidate algorithms are timed).
    func plan(_ s: MatmulShape, d dD: CUdeviceptr, a dA: CUdeviceptr, b dB: CUdeviceptr, bias: CUdeviceptr,
              aux: CUdeviceptr) throws -> Plan {
        if let p = plans[s] { return p }
        var desc: OpaquePointer? = nil
        try lt.check(lt.descCreate(&desc, CUBLAS_COMPUTE_32F, CudaDataType.r32F.rawValue), "cublasLtMatmulDescCreate")
        var ta: Int32 = s.transA ? 1 : 0, tb: Int32 = s.transB ? 1 : 0
        var epilogue: UInt32
        switch s.epilogue {
        case .none: epilogue = s.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT
        case .geluKeepInput: epilogue = CUBLASLT_EPILOGUE_GELU_AUX | (s.bias ? CUBLASLT_EPILOGUE_BIAS : 0)
        case .geluGradient: epilogue = CUBLASLT_EPILOGUE_DGELU
        }
        try lt.check(lt.descSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, 4), "cublasLtMatmulDescSetAttribute(TRANSA)")
        try lt.check(lt.descSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, 4), "cublasLtMatmulDescSetAttribute(TRANSB)")
        try lt.check(lt.descSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, 4),
                     "cublasLtMatmulDescSetAttribute(EPILOGUE)")
        func layout(_ rows: Int, _ cols: Int, _ type: CudaDataType) throws -> OpaquePointer {
            var l: OpaquePointer? = nil
            try lt.check(lt.layoutCreate(&l, type.rawValue, UInt64(rows), UInt64(cols), Int64(rows)),
                         "cublasLtMatrixLayoutCreate(\(rows)x\(cols))")
            return l!
        }
        // Stored (before op) shapes, column-major with the leading dimension = rows.
        let a = try s.transA ? layout(s.k, s.m, dataType) : layout(s.m, s.k, dataType)
        let b = try s.transB ? layout(s.n, s.k, dataType) : layout(s.k, s.n, dataType)
        let d = try layout(s.m, s.n, s.fp32Output ? .r32F : dataType)
        var pref: OpaquePointer? = nil
        try lt.check(lt.preferenceCreate(&pref), "cublasLtMatmulPreferenceCreate")
        var ws = workspaceBytes
        try lt.check(lt.preferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, 8),
                     "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)")
        for (i, align) in [s.alignA, s.alignB, s.alignD, s.alignD].enumerated() {
            var v = UInt32(align)
            try lt.check(lt.preferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES + Int32(i), &v, 4),
                         "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)")
        }
        if s.bias {  // the heuristic reads the pointer alignments from the descriptor
            var ptr = bias
            try lt.check(lt.descSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptr, 8),
                         "cublasLtMatmulDescSetAttribute(BIAS_POINTER)")
        }
        if s.epilogue == .geluKeepInput || s.epilogue == .geluGradient {
            var ld = Int64(s.m)
            try lt.check(lt.descSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, 8),
                         "cublasLtMatmulDescSetAttribute(EPILOGUE_AUX_LD)")
            var ptr = aux
            try lt.check(lt.descSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &ptr, 8),
                         "cublasLtMatmulDescSetAttribute(EPILOGUE_AUX_POINTER)")
        }
        var p = Plan(desc: desc!, a: a, b: b, d: d, algo: [])
        if tune, let kept = choices[choiceKey(s)], fits(kept, p) {  // chosen on an earlier run: no heuristic, no timing
            p.algo = kept
            plans[s] = p
            return p
        }
        let wanted: Int32 = tune ? 32 : 1
        var result = [UInt8](repeating: 0, count: heuristicResultBytes * Int(wanted))
        var found: Int32 = 0
        try lt.check(lt.algoGetHeuristic(handle, desc, a, b, d, d, pref, wanted, &result, &found),
                     "cublasLtMatmulAlgoGetHeuristic(\(s))")
        if found == 0 { throw LLMError("cublasLt: no algorithm for matmul \(s)") }
        let list = (0 ..< Int(found)).map { Array(result[$0 * heuristicResultBytes ..< $0 * heuristicResultBytes + algoBytes]) }
        p.algo = tune ? try fastestAlgorithm(candidates(list, p, wide: wideSearch(s)), s, p, d: dD, a: dA, b: dB) : list[0]
        plans[s] = p
        return p
    }

    /// Whether cuBLASLt accepts `algo` for the plan's problem within our workspace.
    func fits(_ algo: [UInt8], _ p: Plan) -> Bool {
        var result = [UInt8](repeating: 0, count: heuristicResultBytes)
        let r = algo.withUnsafeBytes { lt.algoCheck(handle, p.desc, p.a, p.b, p.d, p.d, $0.baseAddress!, &result) }
        let needed = result.withUnsafeBytes { $0.load(fromByteOffset: algoBytes, as: Int.self) }
        return r == 0 && needed <= workspaceBytes
    }

    /// What a new shape's timing chooses from: the heuristic's list (up to 32; its order is its
    /// guess of their speed), then variants of its first 8 that the heuristic does not propose
    /// itself: split-K in 2, 3 or 4 parts with fp32 partials (more blocks where the output has few
    /// tiles, as in the weight gradients), the other CTA swizzling, each of the algorithm's custom
    /// options. Each variant is kept only where cublasLtMatmulAlgoCheck accepts it.
    func candidates(_ heuristic: [[UInt8]], _ p: Plan, wide: Bool) -> [[UInt8]] {
        var out = heuristic
        var seen = Set(heuristic.map { lt.describe($0) })
        for base in heuristic.prefix(8) {
            var variants = lt.config(base, .splitK) <= 1 ? splitVariants(base, [2, 3, 4]) : []
            if lt.capability(base, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT) != 0 {
                variants.append(lt.configured(base, .ctaSwizzling, lt.config(base, .ctaSwizzling) == 0 ? 1 : 0))
            }
            variants += customOptionVariants(base)
            for case let v? in variants where fits(v, p) && seen.insert(lt.describe(v)).inserted { out.append(v) }
        }
        if wide {
            // The heuristic proposes a few tile and stage counts per algorithm id; the kernels that
            // cuBLASLt has for a shape are many more (tiles x stages x cluster shapes). Each id's
            // first proposal is the base whose other settings the variants keep.
            var ids = Set<UInt32>()
            for base in heuristic where ids.insert(lt.config(base, .id)).inserted {
                let tiles = lt.capabilities(base, CUBLASLT_ALGO_CAP_TILE_IDS)
                let stages = lt.capabilities(base, CUBLASLT_ALGO_CAP_STAGES_IDS)
                // cublasLtClusterShape_t: 0 auto, 2 1x1x1, 3 2x1x1, 4 4x1x1, 5 1x2x1, 6 2x2x1; 1 is undefined.
                let clusters: [UInt32] = lt.config(base, .clusterShape) == 0 ? [0] : [0, 2, 3, 4, 5, 6]
                for tile in tiles.isEmpty ? [lt.config(base, .tile)] : tiles {
                    for stage in stages.isEmpty ? [lt.config(base, .stages)] : stages {
                        for cluster in clusters {
                            guard let t = lt.configured(base, .tile, tile), let st = lt.configured(t, .stages, stage),
                                  let v = cluster == lt.config(base, .clusterShape) ? st : lt.configured(st, .clusterShape, cluster),
                                  seen.insert(lt.describe(v)).inserted, fits(v, p) else { continue }
                            out.append(v)
                        }
                    }
                }
            }
        }
        return out
    }

    /// The settings one step from `base` that cuBLASLt accepts for the plan: each other custom
    /// option (the kernel's variants for one tile: in S9-1 options 4-7 ran up to 12 % faster,
    /// isolated, on the weight gradients and the LM head), cluster shape (cublasLtClusterShape_t
    /// 2 ... 10: 1x1x1 to 4x4x1) and split-K in 1 ... 8 parts (fp32 partials).
    func neighbours(_ base: [UInt8], _ p: Plan) -> [[UInt8]] {
        var out = customOptionVariants(base)
        if lt.config(base, .clusterShape) != 0 {  // 0: the kernel chooses (no cluster setting to change)
            for shape: UInt32 in 2 ... 10 where shape != lt.config(base, .clusterShape) {
                out.append(lt.configured(base, .clusterShape, shape))
            }
        }
        out += splitVariants(base, Array(1 ... 8).filter { $0 != max(1, lt.config(base, .splitK)) })
        return out.compactMap { $0 }.filter { fits($0, p) }
    }

    /// `base` with each other custom option its algorithm has (nil where cuBLASLt refuses one).
    func customOptionVariants(_ base: [UInt8]) -> [[UInt8]?] {
        let current = lt.config(base, .customOption)
        return (0 ... lt.capability(base, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX)).filter { $0 != current }.map {
            lt.configured(base, .customOption, $0)
        }
    }

    /// `base` split in each of `parts` (1: not split; more: fp32 partials summed in the workspace),
    /// where its algorithm can split; nil where cuBLASLt refuses one.
    func splitVariants(_ base: [UInt8], _ parts: [UInt32]) -> [[UInt8]?] {
        guard lt.capability(base, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT) != 0,
              lt.capability(base, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK) & CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE != 0
        else { return [] }
        return parts.map { n in
            lt.configured(base, .splitK, n).flatMap {
                lt.configured($0, .reductionScheme, n == 1 ? 0 : CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE)
            }
        }
    }

    /// Times each candidate algorithm of a new shape on its real operands (D is written: the
    /// products that accumulate get a scratch D): all of them twice (a wide search, hundreds of
    /// candidates: once, then the best 16 twice more), then the neighbours of the fastest (two
    /// steps of a local search), then the six fastest in interleaved rounds (one noisy pair of runs
    /// should not decide). Remembers the fastest in the choices file and returns it.
    func fastestAlgorithm(_ list: [[UInt8]], _ s: MatmulShape, _ plan: Plan, d: CUdeviceptr, a: CUdeviceptr,
                          b: CUdeviceptr) throws -> [UInt8] {
        var target = d, scratch: CUdeviceptr = 0
        if s.accumulate {
            let bytes = s.m * s.n * (dataType == .r16BF && !s.fp32Output ? 2 : 4)
            scratch = try device.allocate(bytes: bytes, what: "matmul tuning")
            try device.zero(scratch, bytes: bytes)
            target = scratch
        }
        defer { device.free(scratch) }
        // Nothing else may run while the candidates are timed (work on the other stream would).
        try device.synchronize()
        let start = try device.makeEvent(), end = try device.makeEvent()
        defer { device.destroyEvent(start); device.destroyEvent(end) }
        var alpha: Float = 1, beta: Float = s.accumulate ? 1 : 0
        func time(_ algo: [UInt8], runs: Int) throws -> Float {
            func once() -> Bool {  // an algorithm that fails here is simply not chosen
                algo.withUnsafeBytes { buf in
                    lt.matmul(handle, plan.desc, &alpha, a, plan.a, b, plan.b, &beta, target, plan.d, target, plan.d,
                              buf.baseAddress, workspace, workspaceBytes, device.stream) == 0
                }
            }
            guard once() else { return .infinity }  // also the warm-up
            return try averageMilliseconds(start, end, runs: runs) { _ = once() }
        }
        var list = list
        let wide = wideSearch(s)
        var times = try list.map { try time($0, runs: wide ? 1 : 2) }
        if wide {  // the best 16 of one run each get two more
            for i in times.indices.sorted(by: { times[$0] < times[$1] }).prefix(16) where times[i].isFinite {
                times[i] = try time(list[i], runs: 2)
            }
        }
        // Two steps of a local search around the four fastest: their neighbours (one setting
        // changed), which neither the heuristic nor the tile search proposes; then the neighbours
        // of the four fastest after that.
        var seen = Set(list.map { lt.describe($0) })
        for _ in 0 ..< 2 {
            for i in times.indices.sorted(by: { times[$0] < times[$1] }).prefix(4) where times[i].isFinite {
                for v in neighbours(list[i], plan) where seen.insert(lt.describe(v)).inserted {
                    list.append(v)
                    times.append(try time(v, runs: 2))
                }
            }
        }
        // The six fastest again in five interleaved rounds (a round times each of them once, 3
        // runs), and each one's median round decides: the GPU's clock drifts while it is timed (a
        // cold GPU starts at its top clock, a training step runs at its power cap, S9-1), so
        // finalists timed one after another were not timed alike.
        let finalists = Array(times.indices.sorted { times[$0] < times[$1] }.prefix(6))
        var rounds = [[Float]](repeating: [], count: finalists.count)
        for _ in 0 ..< 5 {
            for (j, i) in finalists.enumerated() where times[i].isFinite {
                rounds[j].append(try time(list[i], runs: 3))
            }
        }
        for (j, i) in finalists.enumerated() where !rounds[j].isEmpty {
            times[i] = rounds[j].sorted()[rounds[j].count / 2]
        }
        let best = finalists.min { times[$0] < times[$1] }!
        choices[choiceKey(s)] = list[best]
        saveChoices()
        if listEvery {
            for i in times.indices.sorted(by: { times[$0] < times[$1] }) {
                fputs("matmul tune " + s.profileName + format("   %.4f ms  #%ld: ", Double(times[i]), i)
                      + lt.describe(list[i]) + "\n", stderr)
            }
        }
        if verbose {  // the first 8 of the heuristic's list were the whole search before the variants
            let firstEight = times.prefix(8).min()!
            fputs("matmul tune " + s.profileName
                  + format(": heuristic's first %.4f ms, best of its first 8 %.4f, best of all %ld %.4f ms (#%ld: ",
                           Double(times[0]), Double(firstEight), list.count, Double(times[best]), best)
                  + lt.describe(list[best]) + ")\n", stderr)
        }
        return list[best]
    }

    /// D = op(A) op(B) (+ bias) (+ D if accumulate), then the shape's epilogue, on the device's
    /// stream. `aux`: the GELU input, (m x n) like D.
    public func run(_ shape: MatmulShape, d: CUdeviceptr, a: CUdeviceptr, b: CUdeviceptr, bias: CUdeviceptr = 0,
                    aux: CUdeviceptr = 0) throws {
        var s = shape
        s.alignA = pointerAlignment(a)
        s.alignB = pointerAlignment(b)
        s.alignD = pointerAlignment(d)
        s.alignBias = pointerAlignment(bias)
        s.alignAux = pointerAlignment(aux)
        let p = try plan(s, d: d, a: a, b: b, bias: bias, aux: aux)
        if s.bias {
            var ptr = bias
            try lt.check(lt.descSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptr, 8),
                         "cublasLtMatmulDescSetAttribute(BIAS_POINTER)")
        }
        if s.epilogue == .geluKeepInput || s.epilogue == .geluGradient {
            var ptr = aux
            try lt.check(lt.descSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &ptr, 8),
                         "cublasLtMatmulDescSetAttribute(EPILOGUE_AUX_POINTER)")
        }
        var alpha: Float = 1, beta: Float = s.accumulate ? 1 : 0
        try device.profiled("matmul \(s.profileName)") {
            try p.algo.withUnsafeBytes { algo in
                try lt.check(lt.matmul(handle, p.desc, &alpha, a, p.a, b, p.b, &beta, d, p.d, d, p.d, algo.baseAddress,
                                       device.onSide ? sideWorkspace : workspace, workspaceBytes, device.stream),
                             "cublasLtMatmul(m \(s.m) n \(s.n) k \(s.k))")
            }
        }
    }
}

// MARK: - Hex

func hexFromBytes(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef")
    return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
}

/// The bytes of an even-length string of hex digits, or nil.
func bytesFromHex<S: StringProtocol>(_ text: S) -> [UInt8]? {
    let values = text.utf8.map { c -> Int in
        switch c {
        case UInt8(ascii: "0") ... UInt8(ascii: "9"): return Int(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a") ... UInt8(ascii: "f"): return Int(c - UInt8(ascii: "a")) + 10
        default: return -1
        }
    }
    guard values.count % 2 == 0, !values.contains(-1) else { return nil }
    return stride(from: 0, to: values.count, by: 2).map { UInt8(values[$0] << 4 | values[$0 + 1]) }
}
