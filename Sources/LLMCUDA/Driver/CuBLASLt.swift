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
/// The algorithm: cuBLASLt's heuristic proposes up to 8; the first time a shape runs, each is timed
/// on the real operands and the fastest kept (on an H100, 1-13 % faster than the heuristic's first
/// choice for 14 of d12's 16 shapes). The choice (its place in the heuristic's list) is written to
/// the kernel cache, `matmul-<GPU>-cublasLt<version>.txt`, and later runs on the machine take it
/// from there: the same algorithms, so the same bits run to run and across a resume.
/// $LLM_MATMUL_TUNE=0 keeps the heuristic's first choice; =verbose prints each shape's timings.
public final class MatmulEngine {
    let lt: CuBLASLt
    let device: CUDADevice
    let handle: OpaquePointer
    let dataType: CudaDataType
    let workspace: CUdeviceptr
    let workspaceBytes = 32 << 20
    struct Plan { let desc: OpaquePointer; let a: OpaquePointer; let b: OpaquePointer; let d: OpaquePointer; var algo: [UInt8] }
    var plans: [MatmulShape: Plan] = [:]
    let tune = getenv("LLM_MATMUL_TUNE").map { String(cString: $0) } != "0"
    /// Chosen places in the heuristic's list, by `choiceKey`, from and to `choicesPath`.
    var choices: [String: Int] = [:]
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
        let gpu = String(device.name.map { $0.isLetter || $0.isNumber ? $0 : "-" })
        choicesPath = KernelCache.directory() + "/matmul-\(gpu)-cublasLt\(lt.getVersion?() ?? 0).txt"
        if tune, let bytes = try? readFileBytes(choicesPath) {
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                guard let space = line.lastIndex(of: " "), let i = Int(line[line.index(after: space)...]) else { continue }
                choices[String(line[..<space])] = i
            }
        }
    }

    /// Everything that decides the heuristic's list for a shape.
    func choiceKey(_ s: MatmulShape) -> String {
        "\(dataType.rawValue) \(s.profileName) align \(s.alignA) \(s.alignB) \(s.alignD) \(s.alignBias) \(s.alignAux)"
    }

    deinit {
        device.free(workspace)
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
        let wanted: Int32 = tune ? 8 : 1
        var result = [UInt8](repeating: 0, count: heuristicResultBytes * Int(wanted))
        var found: Int32 = 0
        try lt.check(lt.algoGetHeuristic(handle, desc, a, b, d, d, pref, wanted, &result, &found),
                     "cublasLtMatmulAlgoGetHeuristic(\(s))")
        if found == 0 { throw LLMError("cublasLt: no algorithm for matmul \(s)") }
        let list = (0 ..< Int(found)).map { Array(result[$0 * heuristicResultBytes ..< $0 * heuristicResultBytes + 64]) }
        var p = Plan(desc: desc!, a: a, b: b, d: d, algo: list[0])
        if let i = choices[choiceKey(s)], i < list.count {
            p.algo = list[i]
        } else if list.count > 1 {
            p.algo = try fastestAlgorithm(list, s, p, d: dD, a: dA, b: dB)
        }
        plans[s] = p
        return p
    }

    /// Times each candidate algorithm of a new shape on its real operands (D is written: the
    /// products that accumulate get a scratch D), remembers the fastest's place in the list in the
    /// choices file, and returns it.
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
        let start = try device.makeEvent(), end = try device.makeEvent()
        var alpha: Float = 1, beta: Float = s.accumulate ? 1 : 0
        var times: [Float] = []
        for algo in list {
            func once() -> Bool {  // an algorithm that fails here is simply not chosen
                algo.withUnsafeBytes { buf in
                    lt.matmul(handle, plan.desc, &alpha, a, plan.a, b, plan.b, &beta, target, plan.d, target, plan.d,
                              buf.baseAddress, workspace, workspaceBytes, device.stream) == 0
                }
            }
            guard once() else { times.append(.infinity); continue }  // also the warm-up
            try device.record(start)
            for _ in 0 ..< 3 { _ = once() }
            try device.record(end)
            times.append(try device.elapsedMilliseconds(start, end) / 3)
        }
        let best = times.indices.min { times[$0] < times[$1] }!
        choices[choiceKey(s)] = best
        let text = choices.keys.sorted().map { "\($0) \(choices[$0]!)\n" }.joined()
        KernelCache.makeDirectories(KernelCache.directory())
        try? writeFileAtomically(choicesPath, Array(text.utf8))  // a read-only cache only costs a retune
        if getenv("LLM_MATMUL_TUNE").map({ String(cString: $0) }) == "verbose" {
            fputs("matmul tune " + s.profileName + format(": heuristic's first %.4f ms, best (#%ld of %ld) %.4f ms\n",
                                                          Double(times[0]), best, list.count, Double(times[best])), stderr)
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
                try lt.check(lt.matmul(handle, p.desc, &alpha, a, p.a, b, p.b, &beta, d, p.d, d, p.d,
                                       algo.baseAddress, workspace, workspaceBytes, device.stream),
                             "cublasLtMatmul(m \(s.m) n \(s.n) k \(s.k))")
            }
        }
    }
}
