// The host side of our own Hopper GEMM (Kernels/gemm_hopper.cu): TMA descriptors of its operands,
// the persistent launch, and the choice of where it runs (sm_90 in bf16, shapes in whole tiles).

import LLM

/// out (M, N) = A (M, K) . B (N, K)^T, row-major, with a plain, GELU or GELU-gradient epilogue, on
/// TMA and warpgroup MMAs. For the fc layer's two products, where cuBLASLt's GELU epilogues are slow.
final class HopperGEMM {
    enum Epilogue {
        /// out = A . B^T
        case plain
        /// out = GELU(A . B^T + bias), aux = A . B^T + bias (the GELU input, kept for the backward)
        case gelu
        /// out = (A . B^T) * GELU'(aux)
        case geluGradient

        /// Its place in the per-kernel settings (tileWidths, stageCounts).
        var index: Int {
            switch self {
            case .plain: return 0
            case .gelu: return 1
            case .geluGradient: return 2
            }
        }

        /// Its kernel in gemm_hopper.cu.
        var kernel: String {
            switch self {
            case .plain: return "gemm_hopper_plain"
            case .gelu: return "gemm_hopper_gelu"
            case .geluGradient: return "gemm_hopper_dgelu"
            }
        }
    }

    let kernels: KernelLibrary
    /// Clusters of each kernel the GPU holds at once (its SMs come in groups, GPCs, and a cluster's
    /// blocks must share one): the persistent grid is at most that many, as a cluster that had to
    /// wait for a place would start its share of the tiles only when another has done all of its.
    private var residentClusters: [String: Int] = [:]

    // gemm_hopper.cu's tile (GEMM_BM x the kernel's width) and its K step (GEMM_BK).
    static let tileM = 128, tileK = 64

    /// Each kernel's tile width (-DGEMM_BN_PLAIN, _GELU, _DGELU), 128 or 192: $LLM_HOPPER_BN, one
    /// width for all three or three separated by commas; by default 192 for the plain product
    /// (wider tiles need fewer of the L2's bytes per product: S12-2, 96 % of the tensor pipe against
    /// 81 % at 128) and 128 for the GELU epilogues, whose arithmetic needs the registers that 192
    /// columns of accumulators take (S12-2: GELU 378 TFLOP/s at 192, 497 at 128).
    static let tileWidths: [Int] = {
        let asked = (environmentValue("LLM_HOPPER_BN") ?? "").split(separator: ",").compactMap { Int($0) }
        if asked.count == 1, [128, 192].contains(asked[0]) { return [asked[0], asked[0], asked[0]] }
        if asked.count == 3, asked.allSatisfy({ [128, 192].contains($0) }) { return asked }
        return [192, 128, 128]
    }()
    static func tileN(_ e: Epilogue) -> Int { tileWidths[e.index] }
    static func stageBytes(_ e: Epilogue) -> Int { (tileM + tileN(e)) * tileK * 2 }

    /// Blocks per cluster sharing each B tile by multicast ($LLM_HOPPER_CLUSTER: 1, 2 or 4; default
    /// 2); the kernels are compiled with the same number (-DGEMM_CLUSTER).
    static let cluster: Int = {
        if let v = environmentValue("LLM_HOPPER_CLUSTER"), let n = Int(v), [1, 2, 4].contains(n) { return n }
        return 2
    }()

    /// Each kernel's stages of the ring (-DGEMM_STAGES_PLAIN, _GELU, _DGELU): $LLM_HOPPER_STAGES
    /// (2 to 6) or 4, at most what fits in 227 KB beside the epilogue's buffers.
    static let stageCounts: [Int] = [Epilogue.plain, .gelu, .geluGradient].map { e in
        var k = 4
        if let v = environmentValue("LLM_HOPPER_STAGES"), let n = Int(v), (2 ... 6).contains(n) { k = n }
        while k > 2 && sharedBytes(e, stages: k) + 1024 > 227 * 1024 { k -= 1 }  // + the kernel's static 1 KB
        return k
    }
    static func stages(_ e: Epilogue) -> Int { stageCounts[e.index] }

    /// Dynamic shared memory of a kernel (gemm_hopper.cu): alignment slack, the ring's stages, per
    /// consumer a 64-row half of a tile for the plain epilogue (two for the others), the barriers,
    /// 2 x tileN bias values.
    static func sharedBytes(_ e: Epilogue, stages k: Int? = nil) -> Int {
        let k = k ?? stages(e), n = tileN(e)
        return 1024 + k * stageBytes(e) + 2 * 64 * n * 2 * (e == .plain ? 1 : 2) + 8 * (2 * k + 6) + 2 * n * 2
    }

    /// nil where it cannot run: not an sm_90 GPU, not bf16, a driver without TMA descriptors, too
    /// little shared memory, or $LLM_HOPPER_GEMM=0.
    init?(kernels: KernelLibrary) {
        let device = kernels.device
        guard kernels.precision == .bf16, device.arch == "sm_90", environmentValue("LLM_HOPPER_GEMM") != "0",
              device.driver.cuTensorMapEncodeTiled != nil,
              device.maxSharedMemoryPerBlock >= HopperGEMM.sharedBytes(.geluGradient) else { return nil }
        self.kernels = kernels
    }

    /// $LLM_HOPPER_GEMM=force: always this GEMM where it fits (no timing against cuBLASLt).
    static var forced: Bool { environmentValue("LLM_HOPPER_GEMM") == "force" }

    /// Whether the shape is whole tiles of the epilogue's kernel, M whole clusters of them (the
    /// kernel has no partial tiles).
    static func fits(_ e: Epilogue, M: Int, N: Int, K: Int) -> Bool {
        M > 0 && N > 0 && K > 0 && M % (tileM * cluster) == 0 && N % tileN(e) == 0 && K % tileK == 0
    }

    /// Queues out (M, N) = A (M, K) . B (N, K)^T with `epilogue` on the device's stream; bias (N)
    /// for `.gelu`, aux (M, N) written by `.gelu` and read by `.geluGradient`.
    func run(_ epilogue: Epilogue, out: CUdeviceptr, a: CUdeviceptr, b: CUdeviceptr, bias: CUdeviceptr = 0,
             aux: CUdeviceptr = 0, M: Int, N: Int, K: Int) throws {
        let cluster = HopperGEMM.cluster, tileN = HopperGEMM.tileN(epilogue)
        guard HopperGEMM.fits(epilogue, M: M, N: N, K: K) else {
            throw LLMError("hopper gemm: \(M) x \(N) x \(K) is not whole tiles of \(128 * cluster) x \(tileN) x 64")
        }
        let mapA = try kernels.tensorMap(a, rows: M, cols: K, boxRows: HopperGEMM.tileM)
        let mapB = try kernels.tensorMap(b, rows: N, cols: K, boxRows: tileN / cluster)  // a block's share
        let groups = (M / HopperGEMM.tileM / cluster) * (N / tileN)  // a cluster's tiles at a time
        let shared = HopperGEMM.sharedBytes(epilogue)
        let grid = (min(groups, try clustersAtOnce(epilogue)) * cluster, 1, 1)
        let dims: [KernelArgument] = [.i32(Int32(M)), .i32(Int32(N)), .i32(Int32(K))]
        let f = try kernels.function(epilogue.kernel)
        switch epilogue {
        case .plain:
            let mapOut = try kernels.tensorMap(out, rows: M, cols: N, boxRows: 64)
            try kernels.launch(f, grid: grid, block: (384, 1, 1), shared: shared,
                               [.tensorMap(mapA), .tensorMap(mapB), .tensorMap(mapOut)] + dims)
        case .gelu:
            let mapOut = try kernels.tensorMap(out, rows: M, cols: N, boxRows: 64)
            let mapAux = try kernels.tensorMap(aux, rows: M, cols: N, boxRows: 64)
            try kernels.launch(f, grid: grid, block: (384, 1, 1), shared: shared,
                               [.ptr(bias), .tensorMap(mapA), .tensorMap(mapB), .tensorMap(mapOut), .tensorMap(mapAux)] + dims)
        case .geluGradient:
            let mapOut = try kernels.tensorMap(out, rows: M, cols: N, boxRows: HopperGEMM.tileM)  // a consumer's tile
            let mapAux = try kernels.tensorMap(aux, rows: M, cols: N, boxRows: HopperGEMM.tileM)
            try kernels.launch(f, grid: grid, block: (384, 1, 1), shared: shared,
                               [.tensorMap(mapA), .tensorMap(mapB), .tensorMap(mapOut), .tensorMap(mapAux)] + dims)
        }
    }

    /// How many clusters of the epilogue's kernel fit on the GPU at once (the driver's count where it
    /// has cuOccupancyMaxActiveClusters, else one block per SM).
    func clustersAtOnce(_ epilogue: Epilogue) throws -> Int {
        let name = epilogue.kernel, shared = HopperGEMM.sharedBytes(epilogue)
        if let n = residentClusters[name] { return n }
        let device = kernels.device, f = try kernels.function(name)
        var n = device.multiprocessorCount / HopperGEMM.cluster
        if let query = device.driver.cuOccupancyMaxActiveClusters {
            try kernels.allowSharedMemory(f, shared)
            // CUlaunchConfig: grid (3 x u32), block (3 x u32), shared bytes (u32), stream, attributes, count.
            var config = [UInt8](repeating: 0, count: 56)
            let words: [UInt32] = [UInt32(n * HopperGEMM.cluster), 1, 1, 384, 1, 1, UInt32(shared)]
            config.withUnsafeMutableBytes { c in
                for (i, w) in words.enumerated() { c.storeBytes(of: w, toByteOffset: 4 * i, as: UInt32.self) }
            }
            var count: Int32 = 0
            let r = config.withUnsafeBytes { query(&count, f.handle, $0.baseAddress!) }
            try device.driver.check(r, "cuOccupancyMaxActiveClusters(\(name))")
            if count > 0 { n = min(n, Int(count)) }
        }
        residentClusters[name] = n
        return n
    }

    /// out (cols, rows) = in (rows, cols)^T: a weight used as (OC, K) turned K-major for B.
    func transpose(_ out: CUdeviceptr, _ inp: CUdeviceptr, rows: Int, cols: Int) throws {
        try kernels.launch(kernels.function("transpose_matrix"), grid: ((cols + 31) / 32, (rows + 31) / 32, 1),
                           block: (32, 8, 1), [.ptr(out), .ptr(inp), .i32(Int32(rows)), .i32(Int32(cols))])
    }
}
