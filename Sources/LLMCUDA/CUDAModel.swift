// GPT-2 on one NVIDIA GPU, llm.c's precision policy: bf16 (or fp32) parameters, activations and
// gradients, fp32 master weights and AdamW moments, cuBLASLt matmuls with fp32 accumulation.
// Memory is planned once for (B, T): parameters, gradients, optimizer state, activations.

#if canImport(Glibc)
import Glibc
#endif
import LLM

// MARK: - Availability

public enum CUDABackend {
    /// nil when a GPU, its driver and cuBLASLt are usable; otherwise one line saying why not.
    public static func unavailableReason() -> String? {
        switch CUDADriver.shared {
        case .failure(let e): return e.message
        case .success(let d):
            do {
                if try d.deviceCount() == 0 { return "cuda: the driver found no GPU" }
            } catch { return "\(error)" }
        }
        if case .failure(let e) = CuBLASLt.shared { return e.message }
        return nil
    }

    public static func isAvailable() -> Bool { unavailableReason() == nil }
}

// MARK: - Model

public final class CUDAModel: GPT2Backend {
    public let config: GPT2Config
    public let batchSize: Int
    public let sequenceLength: Int
    public let precision: GPUPrecision
    public let device: CUDADevice
    public let kernels: KernelLibrary
    let matmul: MatmulEngine
    /// Our own GEMM for the two products with GELU epilogues (HopperGEMM.swift), where it runs (sm_90,
    /// bf16, with the epilogues on); each use is timed against cuBLASLt once and the faster kept.
    let hopper: HopperGEMM?
    let layout: ParameterLayout
    let E: Int  // bytes per floatX element
    var pack: Int { 16 / E }  // elements per 16-byte pack (PACK in common.cuh)
    /// Tensor-core flash attention (flash_attention.cu: bf16, head size 64); off, the scalar kernels
    /// of attention.cu, which are also its reference in `attentionParity`. Off when $LLM_ATTENTION is "scalar".
    public var useFlashAttention: Bool
    /// The flash forward and key/value backward on Hopper's warpgroup MMAs (flash_hopper.cu) where
    /// they run: sm_90, bf16, a driver with TMA descriptors, T a multiple of 128 (the backward also
    /// with the stored dS). Off with $LLM_FLASH_HOPPER=0, the forward alone with "forward"; settable
    /// so the self-test can time both kinds of kernels in one process.
    public var useHopperAttention: Bool
    var useHopperAttentionBackward: Bool
    /// The flash backward's dq from the dS that the key/value kernel stores (attDS), not recomputed.
    let storedDS: Bool
    /// Where the attention backward writes dqkv: in logitsBuffer after dS (free from the classifier's
    /// backward to the next forward's classifier), apart from scratchBT4C, so the attention backward
    /// need not wait for fc's weight and bias gradients on the side stream, which read scratchBT4C,
    /// and runs beside them (d12 B=64, S16-3: 880.55 -> 863.45 ms a step, the same bits and peak
    /// memory); or in scratchBT4C as before ($LLM_DQKV=shared).
    let dqkvApart: Bool
    /// What the backward recomputes instead of keeping from the forward (llm.c's `-r`): 0 nothing;
    /// 1 GELU: its output lives in the (B, T, 4C) backward scratch, one layer at a time, and is
    /// recomputed from fch before the fcproj backward; 2 also both layernorm outputs (one (B, T, C)
    /// buffer, recomputed from the kept residual). The kernels are deterministic, so 1 and 2 give
    /// bit-identical results, and 0 too without `fusedGELU` (the epilogue's GELU is of the fp32 sum).
    public let recompute: Int
    /// Rows of logits computed at a time (CUDAClassifier.swift): the logits buffer holds this many
    /// rows of Vp, not B*T of them. $LLM_CLASSIFIER_ROWS overrides the default, for experiments.
    /// 16384 rows (1.57 GiB of bf16 logits at GPT-2's vocabulary) rather than 8192: each chunk reads
    /// and writes dwte's fp32 sum once (2 x 147 MiB), and half as many chunks save 3-4 ms per d12
    /// step for +0.74 GiB (docs/gpu-performance.md, ninth and tenth rounds).
    public let classifierRows: Int
    static let defaultClassifierRows = 16384
    /// The training pass's loss kernel with each row staged in shared memory
    /// (classifier_loss_backward_staged: the row read from memory once, whatever the L2 keeps) where
    /// two rows fit an SM (sm_80 on); off with $LLM_CLASSIFIER_STAGED=0. Same bits either way.
    public var stagedClassifier: Bool
    /// GELU in cuBLASLt epilogues instead of separate kernels: in the fc matmul (its input kept as
    /// fch) and its gradient in the fcproj dinp matmul. bf16 only (fp32 stays the exact path);
    /// $LLM_EPILOGUES=0 turns it off for timing; it turns itself off, with one line on stderr, if
    /// cuBLASLt has no algorithm for a shape.
    public var fusedGELU: Bool
    /// The LM head's dwte over several classifier chunks summed in fp32 (bf16 in, fp32 out: one
    /// rounding into the bf16 gradient); off, each chunk's product rounds into it. Turns itself off,
    /// with one line on stderr, if cuBLASLt has no algorithm for the fp32 output.
    public var dwteInFP32 = true

    // Parameters, gradients and optimizer state share one padded layout: each of the 16 tensors
    // starts at a 128-element boundary so that every cuBLASLt operand is well aligned.
    let deviceOffsets: [Int]
    let deviceCount: Int
    let params: CUdeviceptr      // (deviceCount) floatX
    let grads: CUdeviceptr       // (deviceCount) floatX
    let master: CUdeviceptr      // (deviceCount) fp32, bf16 mode only (0 in fp32 mode)
    let adamM: CUdeviceptr       // (deviceCount) fp32
    let adamV: CUdeviceptr       // (deviceCount) fp32

    // Activations (floatX unless noted), one allocation, L-stacked where per layer.
    let activations: CUdeviceptr
    let encoded: CUdeviceptr     // (B, T, C)
    let ln1: CUdeviceptr         // (L, B, T, C); (B, T, C) with recompute 2, shared by ln1 and ln2
    let ln1Mean: CUdeviceptr     // (L, B, T) fp32
    let ln1Rstd: CUdeviceptr     // (L, B, T) fp32
    let qkv: CUdeviceptr         // (L, B, T, 3C)
    let atty: CUdeviceptr        // (L, B, T, C)
    let attLse: CUdeviceptr      // (L, B, NH, T) fp32: log-sum-exp per attention row
    let residual2: CUdeviceptr   // (L, B, T, C)
    let ln2: CUdeviceptr         // (L, B, T, C); ln1's buffer with recompute 2
    let ln2Mean: CUdeviceptr     // (L, B, T) fp32
    let ln2Rstd: CUdeviceptr     // (L, B, T) fp32
    let fch: CUdeviceptr         // (L, B, T, 4C) before GELU
    let fchGelu: CUdeviceptr     // (L, B, T, 4C); scratchBT4C with recompute >= 1
    let residual3: CUdeviceptr   // (L, B, T, C)
    let lnf: CUdeviceptr         // (B, T, C)
    let lnfMean: CUdeviceptr     // (B, T) fp32
    let lnfRstd: CUdeviceptr     // (B, T) fp32
    let logitsBuffer: CUdeviceptr  // (min(classifierRows, B*T), Vp): one chunk's logits, then its dlogits in place
    let losses: CUdeviceptr      // (B, T) fp32
    let logitsLse: CUdeviceptr   // (B, T) fp32: log-sum-exp of each logits row, for the classifier backward
    // Backward scratch, reused by every layer.
    let dresidual: CUdeviceptr   // (B, T, C)
    let scratchBTC: CUdeviceptr  // (B, T, C)
    let scratchBT4C: CUdeviceptr // (B, T, 4C), also dwteSum (and dqkv with $LLM_DQKV=shared)
    let dqkv: CUdeviceptr        // (B, T, 3C): the attention backward's output, in logitsBuffer after dS
    let attDsum: CUdeviceptr     // (B, NH, T) fp32
    let weightT: CUdeviceptr     // (4C, C): fcproj's weight transposed, the Hopper GEMM's B for fc's dinp; 0 without it
    /// (B, NH, pairs, 64 x 64) bf16: the flash backward's dS (flashDSBytes), in logitsBuffer, or 0.
    var attDS: CUdeviceptr { storedDS ? logitsBuffer : 0 }
    let dwteSum: CUdeviceptr     // (Vp, C) fp32, bf16 only: the LM head's dwte summed over the classifier's
                                 // chunks; scratchBT4C where that is large enough (free then), else its own
    let partials: CUdeviceptr    // fp32 per-block partial sums
    let partialFloats: Int
    let reductionCounters: CUdeviceptr  // (reductionCounterCount) uint32, zero between launches:
                                        // layernorm_backward's (lnBackwardCounters), the column sums', the attention's
    let reductionCounterCount: Int
    /// (4) uint32 in reductionCounters, the Hopper attention kernels' item counts (flash_hopper.cu's
    /// claimItem): the forward's 2, then the key/value backward's.
    let attentionSchedule: CUdeviceptr
    /// Whether those kernels claim their items as they go (default) or take every gridDim.x-th
    /// (`LLM_ATTENTION_ORDER=stride`, the order before session 17, for timing).
    let claimAttentionItems = environmentValue("LLM_ATTENTION_ORDER") != "stride"
    /// The bias-gradient kernels' partials and counters (in partials and reductionCounters): one
    /// set for the side stream's bias_backward, one for the main stream's gelu_backward_bias (and
    /// the timing of the ways that use them), as the two may run at once.
    let sideColumnSums: ColumnSumSpace
    let mainColumnSums: ColumnSumSpace
    /// (4C) floatX, in partials: the bias gradient that `matmul.fastest`'s timing runs add into,
    /// as only the chosen way's last run may change the real one.
    let timingBias: CUdeviceptr
    let tokens: CUdeviceptr      // (B, T) int32 inputs
    let targetsBuffer: CUdeviceptr  // (B, T) int32
    let buckets: CUdeviceptr     // 3 * B * T + 1 int32: wte-gradient buckets for the encoder backward
    public let activationBytes: Int
    public let parameterBytes: Int

    // Page-locked host memory the stream copies from or into without the host waiting (a Swift
    // array may move or go away before the copy runs). Two sets of each staging buffer, used in
    // turn: the host fills one while the other's upload, queued one forward earlier, may still be
    // pending; before it fills a set it waits for that set's previous upload (PinnedHostBuffer).
    let tokenStaging: [PinnedHostBuffer<Int32>]   // 2 x (2, B, T): inputs, then targets
    let bucketStaging: [PinnedHostBuffer<Int32>]  // 2 x (3 * B * T + 1): encoder-backward bucket tables
    /// The training micro-steps' per-row losses on their way to the host (CUDATrainingLosses.swift).
    let microStepLosses: MicroStepLosses
    /// (V) int32 host scratch of the bucket table: per-token counts, then each bucket's next free slot.
    let bucketScratch: UnsafeMutablePointer<Int32>

    // State of the last forward.
    var lastB = 0, lastT = 0
    /// The tokenStaging set holding the last forward's inputs (the bucket table is built from them).
    var lastTokenStaging = 1
    var lastBucketStaging = 1
    /// The bucket table of the last forward's inputs is queued into `buckets`, with this many buckets.
    var bucketsQueued = false
    var bucketCount = 0
    var haveTargets = false
    var classifierState = ClassifierState.empty
    /// Per-row losses of the last plain forward with targets (downloaded by it).
    var hostLosses: [Float] = []
    /// The last forward was a trainingForward: its per-row losses are in microStepLosses' last slot.
    var lastForwardWasTraining = false
    /// xorshift state for the stochastic-rounding seeds (llm.c: 13371337 + rank).
    var rngState: UInt64 = 13371337
    /// Key/value cache of cached generation (CUDAGeneration.swift), made by beginGeneration.
    var generationState: CUDAGenerationState?
    /// layerNormBackward's kernel for rows of C channels and how many of its blocks an SM holds.
    var layerNormBackwardKernel: (C: Int, function: CUDAFunction, perSM: Int)?

    static let lnBackwardBlocks = 512
    /// layernorm_backward's blocks whose partials its first stage sums together: 16 of 512 blocks
    /// give 32 group sums, so the last block reads 16 + 32 rows of partials, not 512.
    static let lnBackwardGroupBlocks = 16
    static let lnBackwardCounters = 1 + (lnBackwardBlocks + lnBackwardGroupBlocks - 1) / lnBackwardGroupBlocks
    static let normBlocks = 512
    static let maxBiasRowBlocks = 256  // at most columnSumGroup^2
    /// Row blocks whose partials a column-sum kernel adds in its first stage (-DCOLUMN_SUM_GROUP,
    /// common.cuh's addColumnSums), and the counters a column block then uses: one per group and
    /// one for the groups.
    static let columnSumGroup = 16
    static var columnSumCounters: Int { 1 + columnSumGroup }

    /// Partials (maxBiasRowBlocks, 4C) fp32 and counters (columnSumCounters per column block) of a
    /// column-sum kernel; `columnBlocks`: how many column blocks the counters serve.
    struct ColumnSumSpace { let partials: CUdeviceptr; let counters: CUdeviceptr; let columnBlocks: Int }

    /// `parameters`: N fp32 values in checkpoint order (these become the master weights).
    /// `classifierRows`: nil takes $LLM_CLASSIFIER_ROWS, else 16384.
    public init(config: GPT2Config, parameters: [Float], B: Int, T: Int, precision: GPUPrecision = .bf16,
                recompute: Int = 0, classifierRows: Int? = nil, deviceOrdinal: Int = 0) throws {
        try config.validate(source: "cuda model")
        if !(0 ... 2).contains(recompute) {
            throw LLMError("cuda model: recompute \(recompute) is not 0 (none), 1 (GELU) or 2 (GELU and layernorms)")
        }
        self.recompute = recompute
        var rows = CUDAModel.defaultClassifierRows
        if let r = classifierRows {
            rows = r
        } else if let text = environmentValue("LLM_CLASSIFIER_ROWS") {
            guard let r = Int(text) else { throw LLMError("LLM_CLASSIFIER_ROWS: '\(text)' is not a number of rows") }
            rows = r
        }
        if rows < 1 { throw LLMError("cuda model: classifier rows \(rows) must be at least 1") }
        self.classifierRows = rows
        if B <= 0 || T <= 0 || T > config.maxSeqLen {
            throw LLMError("cuda model: batch B=\(B) T=\(T) does not fit (maxT \(config.maxSeqLen))")
        }
        let hs = config.headSize
        if ![16, 32, 64, 128].contains(hs) {
            throw LLMError("cuda model: head size \(hs) not supported by the attention kernels (16, 32, 64 or 128)")
        }
        if config.channels % 8 != 0 {  // rows move in 16-byte packs of 8 (bf16) or 4 (fp32) elements
            throw LLMError("cuda model: channels \(config.channels) not a multiple of 8")
        }
        self.config = config
        batchSize = B
        sequenceLength = T
        self.precision = precision
        layout = ParameterLayout(config)
        if parameters.count != layout.count {
            throw LLMError("cuda model: \(parameters.count) parameters given, \(config) has \(layout.count)")
        }
        E = precision.elementBytes
        // LLM_ATTENTION=scalar keeps the old kernels, for timing them against the flash ones.
        let scalarAttention = environmentValue("LLM_ATTENTION") == "scalar"
        useFlashAttention = precision == .bf16 && hs == 64 && !scalarAttention
        // LLM_FLASH_DQ=0 keeps the query kernel (dq from recomputed scores) instead of dq from the dS
        // that the key/value kernel stores: no dS buffer, for timing one against the other.
        storedDS = useFlashAttention && environmentValue("LLM_FLASH_DQ") != "0"
        fusedGELU = precision == .bf16 && environmentValue("LLM_EPILOGUES") != "0"
        device = try CUDADevice(ordinal: deviceOrdinal)
        kernels = try KernelLibrary(device: device, precision: precision)
        matmul = try MatmulEngine(device: device, bf16: precision == .bf16)
        hopper = fusedGELU ? HopperGEMM(kernels: kernels) : nil
        useHopperAttention = useFlashAttention && device.arch == "sm_90" && device.driver.cuTensorMapEncodeTiled != nil
            && environmentValue("LLM_FLASH_HOPPER") != "0"
        useHopperAttentionBackward = storedDS && environmentValue("LLM_FLASH_HOPPER") != "forward"
        dqkvApart = environmentValue("LLM_DQKV") != "shared"
        // LLM_SIDE_STREAM=0 queues the backward's weight and bias gradients on the one stream too
        // (same results; for timing the overlap).
        device.sideStreamEnabled = environmentValue("LLM_SIDE_STREAM") != "0"
        stagedClassifier = environmentValue("LLM_CLASSIFIER_STAGED") != "0" && device.computeCapability.major >= 8
            && 2 * (config.paddedVocabSize * E + CUDAModel.classifierStaticShared + device.reservedSharedMemoryPerBlock)
                <= device.maxSharedMemoryPerMultiprocessor

        var offsets: [Int] = []
        var total = 0
        for size in layout.sizes {
            offsets.append(total)
            total = (total + size + 127) / 128 * 128
        }
        deviceOffsets = offsets
        deviceCount = total
        params = try device.allocate(bytes: total * E, what: "parameters")
        grads = try device.allocate(bytes: total * E, what: "gradients")
        master = precision == .bf16 ? try device.allocate(bytes: total * 4, what: "master weights") : 0
        adamM = try device.allocate(bytes: total * 4, what: "AdamW m")
        adamV = try device.allocate(bytes: total * 4, what: "AdamW v")
        parameterBytes = total * (2 * E + 8 + (precision == .bf16 ? 4 : 0))

        // Activations: sizes in bytes, each rounded to 256 so every view is aligned.
        let L = config.numLayers, C = config.channels, NH = config.numHeads, Vp = config.paddedVocabSize
        let BT = B * T
        let x = E, f = 4
        let Lln = recompute >= 2 ? 1 : L, Lgelu = recompute >= 1 ? 0 : L  // layers kept of ln1/ln2, fchGelu
        // dwte's fp32 sum over the classifier chunks (bf16, more than one chunk) lives in scratchBT4C,
        // unused from the last layer's forward to the first layer's backward, unless that is too small.
        let dwteSumOwn = precision == .bf16 && rows < BT && BT * 4 * C * x < Vp * C * f
        let dsBytes = storedDS ? (CUDAModel.flashDSBytes(B: B, T: T, NH: NH) + 255) / 256 * 256 : 0
        let plan: [Int] = [
            BT * C * x,                      // encoded
            Lln * BT * C * x, L * BT * f, L * BT * f,  // ln1, mean, rstd
            L * BT * 3 * C * x,              // qkv
            L * BT * C * x,                  // atty
            L * B * NH * T * f,              // attLse
            L * BT * C * x,                  // residual2
            (recompute >= 2 ? 0 : L) * BT * C * x, L * BT * f, L * BT * f,  // ln2, mean, rstd
            L * BT * 4 * C * x,              // fch
            Lgelu * BT * 4 * C * x,          // fchGelu
            L * BT * C * x,                  // residual3
            BT * C * x, BT * f, BT * f,      // lnf, mean, rstd
            // logits, one chunk of rows; also the flash backward's dS, as the classifier is done
            // (on the same stream) before the layers' backward starts and the next forward
            // recomputes the logits: at d12 B=64 T=1024 only 31 MB more instead of 0.8 GiB.
            // After dS, dqkv (B, T, 3C) where the backward keeps it apart from scratchBT4C.
            max(min(rows, BT) * Vp * x, dsBytes + (dqkvApart ? BT * 3 * C * x : 0)),
            BT * f,                          // losses
            BT * C * x, BT * C * x, BT * 4 * C * x,  // dresidual, scratchBTC, scratchBT4C
            B * NH * T * f,                  // attDsum
            dwteSumOwn ? Vp * C * f : 0,     // dwteSum
            hopper != nil ? 4 * C * C * x : 0,  // weightT
        ]
        let aligned = plan.map { ($0 + 255) / 256 * 256 }
        activationBytes = aligned.reduce(0, +)
        activations = try device.allocate(bytes: activationBytes, what: "activations")
        try device.zero(activations, bytes: activationBytes)
        var views: [CUdeviceptr] = []
        var at = activations
        for a in aligned { views.append(at); at += UInt64(a) }
        encoded = views[0]; ln1 = views[1]; ln1Mean = views[2]; ln1Rstd = views[3]; qkv = views[4]
        atty = views[5]; attLse = views[6]; residual2 = views[7]; ln2 = recompute >= 2 ? views[1] : views[8]
        ln2Mean = views[9]; ln2Rstd = views[10]; fch = views[11]; residual3 = views[13]; lnf = views[14]
        lnfMean = views[15]; lnfRstd = views[16]; logitsBuffer = views[17]; losses = views[18]
        dresidual = views[19]; scratchBTC = views[20]; scratchBT4C = views[21]; attDsum = views[22]
        fchGelu = recompute >= 1 ? scratchBT4C : views[12]
        dwteSum = precision == .bf16 ? (dwteSumOwn ? views[23] : scratchBT4C) : 0
        weightT = hopper != nil ? views[24] : 0
        dqkv = dqkvApart ? logitsBuffer + UInt64(dsBytes) : scratchBT4C

        // layernorm_backward's partials, then the side and main streams' column sums, then the
        // timing bias: apart, as layernorm_backward and the bias sums run at once when the bias sums
        // are on the side stream. The gradient norm uses the start (none of them runs then).
        let lnPartialFloats = (CUDAModel.lnBackwardBlocks + CUDAModel.lnBackwardCounters - 1) * 2 * C
        let columnSumFloats = CUDAModel.maxBiasRowBlocks * 4 * C
        partialFloats = max(lnPartialFloats + 2 * columnSumFloats + 4 * C, CUDAModel.normBlocks + 1)
        partials = try device.allocate(bytes: partialFloats * 4, what: "reduction partials")
        // Enough column blocks of 32 packs for the widest bias (4C) at the smallest pack (4, fp32).
        let columnBlocks = (4 * C + 127) / 128
        let columnSumCounterCount = columnBlocks * CUDAModel.columnSumCounters
        reductionCounterCount = CUDAModel.lnBackwardCounters + 2 * columnSumCounterCount + 4
        reductionCounters = try device.allocate(bytes: reductionCounterCount * 4, what: "reduction counters")
        try device.zero(reductionCounters, bytes: reductionCounterCount * 4)
        let sums = partials + UInt64(4 * lnPartialFloats), counters = reductionCounters + UInt64(4 * CUDAModel.lnBackwardCounters)
        sideColumnSums = ColumnSumSpace(partials: sums, counters: counters, columnBlocks: columnBlocks)
        mainColumnSums = ColumnSumSpace(partials: sums + UInt64(4 * columnSumFloats),
                                        counters: counters + UInt64(4 * columnSumCounterCount), columnBlocks: columnBlocks)
        timingBias = sums + UInt64(4 * 2 * columnSumFloats)
        attentionSchedule = reductionCounters + UInt64(4 * (reductionCounterCount - 4))
        tokens = try device.allocate(bytes: BT * 4, what: "input tokens")
        targetsBuffer = try device.allocate(bytes: BT * 4, what: "target tokens")
        buckets = try device.allocate(bytes: (3 * BT + 1) * 4, what: "encoder buckets")
        logitsLse = try device.allocate(bytes: BT * 4, what: "logits log-sum-exp")
        let dev = device
        tokenStaging = try (0 ..< 2).map { _ in try PinnedHostBuffer(device: dev, count: 2 * BT, what: "input and target tokens") }
        bucketStaging = try (0 ..< 2).map { _ in try PinnedHostBuffer(device: dev, count: 3 * BT + 1, what: "encoder buckets") }
        microStepLosses = MicroStepLosses(device: dev, rowsPerSlot: BT)
        bucketScratch = .allocate(capacity: config.vocabSize)

        try device.zero(adamM, bytes: total * 4)
        try device.zero(adamV, bytes: total * 4)
        try device.zero(grads, bytes: total * E)
        try writeParameters(parameters)
    }

    deinit {
        _ = try? device.synchronize()  // nothing queued may still use the memory freed here
        bucketScratch.deallocate()
        for p in [params, grads, master, adamM, adamV, activations, partials, reductionCounters, tokens, targetsBuffer, buckets,
                  logitsLse] {
            device.free(p)
        }
    }

    public var deviceDescription: String { "cuda: \(device.name) (\(precision.rawValue))" }

    /// Dense bf16 tensor-core peak (fp32 accumulate) for MFU, as llm.c's table; nil for unknown
    /// GPUs and in fp32 mode (no tensor cores there).
    public var peakFLOPs: Double? {
        guard precision == .bf16 else { return nil }
        if device.name.contains("H100") || device.name.contains("H200") { return 989.4e12 }
        if device.name.contains("A100") { return 312e12 }
        return nil
    }

    // MARK: Views

    @inline(__always) func elements(_ base: CUdeviceptr, _ n: Int) -> CUdeviceptr { base + UInt64(n * E) }
    @inline(__always) func floats(_ base: CUdeviceptr, _ n: Int) -> CUdeviceptr { base + UInt64(n * 4) }

    /// Layer `l`'s layernorm and GELU outputs (B, T, C) and (B, T, 4C): one shared buffer for every
    /// layer when the backward recomputes them.
    func ln1Layer(_ l: Int) -> CUdeviceptr { recompute >= 2 ? ln1 : elements(ln1, l * batchSize * sequenceLength * config.channels) }
    func ln2Layer(_ l: Int) -> CUdeviceptr { recompute >= 2 ? ln2 : elements(ln2, l * batchSize * sequenceLength * config.channels) }
    func geluLayer(_ l: Int) -> CUdeviceptr {
        recompute >= 1 ? fchGelu : elements(fchGelu, l * batchSize * sequenceLength * 4 * config.channels)
    }

    /// Layer `l`'s slice of a parameter (or gradient) tensor; whole tensor for the non-layer ones.
    func tensor(_ base: CUdeviceptr, _ t: ParameterTensor, layer l: Int = 0) -> CUdeviceptr {
        let perLayer = t.isPerLayer ? layout.size(t) / config.numLayers : 0
        return elements(base, deviceOffsets[t.rawValue] + l * perLayer)
    }

    // MARK: Host layout conversion

    func toDeviceOrder(_ values: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: deviceCount)
        for (i, r) in layout.sizes.enumerated() {
            let src = layout.offsets[i], dst = deviceOffsets[i]
            for j in 0 ..< r { out[dst + j] = values[src + j] }
        }
        return out
    }

    func fromDeviceOrder(_ values: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: layout.count)
        for (i, r) in layout.sizes.enumerated() {
            let src = deviceOffsets[i], dst = layout.offsets[i]
            for j in 0 ..< r { out[dst + j] = values[src + j] }
        }
        return out
    }

    func downloadFloatX(_ p: CUdeviceptr, count: Int) throws -> [Float] {
        if precision == .fp32 { return try device.download(p, count: count, as: Float.self, fill: 0) }
        let half = try device.download(p, count: count, as: UInt16.self, fill: 0)
        return half.map(floatFromBF16)
    }

    func uploadFloatX(_ p: CUdeviceptr, _ values: [Float]) throws {
        if precision == .fp32 { try device.upload(p, values) } else { try device.upload(p, values.map(bf16FromFloat)) }
    }

    // MARK: Launch helpers

    func launch(_ name: String, grid: (Int, Int, Int), block: (Int, Int, Int), shared: Int = 0,
                _ args: [KernelArgument]) throws {
        try kernels.launch(kernels.function(name), grid: grid, block: block, shared: shared, args)
    }

    func launch1D(_ name: String, count: Int, block: Int = 256, _ args: [KernelArgument]) throws {
        try launch(name, grid: ((count + block - 1) / block, 1, 1), block: (block, 1, 1), args)
    }

    // MARK: Attention

    /// out (B, T, C) = causal softmax(q k^T / sqrt(HS)) v per head; lse (B, NH, T) fp32 row statistics.
    /// Flash kernels on tensor cores when `useFlashAttention`, else the scalar kernels (exact fp32 path).
    func attentionForward(out: CUdeviceptr, lse: CUdeviceptr, qkv: CUdeviceptr, B: Int, T: Int) throws {
        let NH = config.numHeads, hs = config.headSize
        let args: [KernelArgument] = [.ptr(out), .ptr(lse), .ptr(qkv), .i32(Int32(T)), .i32(Int32(NH))]
        if let persistent = hopperAttentionGrid(B: B, T: T) {
            // One block an SM walks the (128 query rows, head) items; producer + 2 consumers.
            let map = try kernels.tensorMap(qkv, rows: B * T, cols: 3 * config.channels, boxRows: 64)
            try launch("flash_attention_forward_hopper", grid: persistent,
                       block: (384, 1, 1), shared: CUDAModel.hopperAttentionSharedBytes,
                       [.ptr(out), .ptr(lse), .tensorMap(map), .i32(Int32(B)), .i32(Int32(T)), .i32(Int32(NH)),
                        .ptr(claimAttentionItems ? attentionSchedule : 0)])
        } else if useFlashAttention {  // 64 queries per block: 4 warps of 16; shared q + 2 x (k, v) tiles
            try launch("flash_attention_forward", grid: ((T + 63) / 64, NH, B), block: (128, 1, 1),
                       shared: 5 * CUDAModel.flashTileBytes, args)
        } else {  // 64 rows per block, two threads per row
            try launch("attention_forward_hs\(hs)", grid: ((T + 63) / 64, NH, B), block: (128, 1, 1),
                       shared: 2 * 64 * hs * 4, args)
        }
    }

    /// The persistent grid of flash_hopper.cu's kernels (one block an SM, at most one per item of
    /// 128 rows of a head) where attention at length T runs on them, else nil: the forward's and the
    /// key/value backward's one condition.
    func hopperAttentionGrid(B: Int, T: Int) -> (Int, Int, Int)? {
        guard useFlashAttention && useHopperAttention && T % 128 == 0 else { return nil }
        return (min((T / 128) * B * config.numHeads, device.multiprocessorCount), 1, 1)
    }

    /// Stages of K and V tiles in flight in flash_attention_forward_hopper (-DFH_STAGES):
    /// $LLM_FLASH_HOPPER_STAGES (2 to 5; 6 do not fit beside two Q tiles) or 5 (S15-5, B=64: 0.3196,
    /// 0.3200 ms against 0.3210, 0.3221 with 4; S13-3: 4 against 3, 0.323 against 0.332 ms; S13-2, 2
    /// stages: the next tile's scores waited for their K tile, 0.51 ms).
    static let hopperAttentionStages: Int = {
        if let v = environmentValue("LLM_FLASH_HOPPER_STAGES"), let n = Int(v), (2 ... 5).contains(n) { return n }
        return 5
    }()
    /// Its dynamic shared memory: alignment slack, two items' Q (128, 64), the stages of K and V
    /// (128, 64) each, the barriers, the two Q buffers' item numbers.
    static var hopperAttentionSharedBytes: Int {
        1024 + 2 * 16384 + hopperAttentionStages * 2 * 16384 + 8 * (4 + 3 * hopperAttentionStages) + 8
    }

    /// Stages of query tiles in flight in flash_attention_backward_key_value_hopper (-DFB_STAGES):
    /// 4 (S13-8: 3 and 6 were slower).
    static let hopperKeyValueStages = 4
    /// Its dynamic shared memory: alignment slack, two items' K and V (128, 64), the stages of a
    /// query tile (Q and dO (64, 64), 64 lse and 64 D floats: 17408 bytes, FB_STAGE, to keep the
    /// next stage 1024-aligned), the barriers (two items' full and empty, each stage's), the two
    /// items' numbers.
    static var hopperKeyValueSharedBytes: Int {
        1024 + 4 * 16384 + hopperKeyValueStages * 17408 + 8 * (4 + 2 * hopperKeyValueStages) + 8
    }

    /// Bytes of the flash backward's dS: each head's causal (key tile, query tile) pairs of 64 x 64 bf16.
    static func flashDSBytes(B: Int, T: Int, NH: Int) -> Int {
        let tiles = (T + 63) / 64
        return B * NH * (tiles * (tiles + 1) / 2) * 64 * 64 * 2
    }

    /// dqkv (B, T, 3C) from dout (B, T, C); overwrites dsum (B, NH, T) with rowsum(dout * out) per head.
    /// dS: flashDSBytes of scratch for the flash kernels' dS, or 0 to recompute the scores for dq.
    func attentionBackward(dqkv: CUdeviceptr, dout: CUdeviceptr, qkv: CUdeviceptr, out: CUdeviceptr, lse: CUdeviceptr,
                           dsum: CUdeviceptr, dS: CUdeviceptr, B: Int, T: Int) throws {
        let NH = config.numHeads, hs = config.headSize
        let grid = ((T + 63) / 64, NH, B)
        if useFlashAttention && dS != 0 {
            // D first; then the key/value kernel, which also stores dS; then dq = dS k from it: 5
            // products in all, where the query kernel would recompute s and dp (7).
            try launch("flash_attention_backward_rowsum", grid: ((B * T * NH + 15) / 16, 1, 1), block: (128, 1, 1),
                       [.ptr(dsum), .ptr(out), .ptr(dout), .i32(Int32(B)), .i32(Int32(T)), .i32(Int32(NH))])
            if useHopperAttentionBackward, let persistent = hopperAttentionGrid(B: B, T: T) {
                // As the forward: items of 128 keys of one head.
                let C = config.channels
                let mapQKV = try kernels.tensorMap(qkv, rows: B * T, cols: 3 * C, boxRows: 64)
                let mapDout = try kernels.tensorMap(dout, rows: B * T, cols: C, boxRows: 64)
                try launch("flash_attention_backward_key_value_hopper", grid: persistent,
                           block: (384, 1, 1), shared: CUDAModel.hopperKeyValueSharedBytes,
                           [.ptr(dqkv), .ptr(dS), .tensorMap(mapQKV), .tensorMap(mapDout), .ptr(lse), .ptr(dsum),
                            .i32(Int32(B)), .i32(Int32(T)), .i32(Int32(NH)),
                            .ptr(claimAttentionItems ? attentionSchedule + 8 : 0)])
            } else {
                try launch("flash_attention_backward_key_value_ds", grid: grid, block: (128, 1, 1),
                           shared: 6 * CUDAModel.flashTileBytes + 2 * 2 * 64 * 4,
                           [.ptr(dqkv), .ptr(dS), .ptr(qkv), .ptr(dout), .ptr(lse), .ptr(dsum), .i32(Int32(T)), .i32(Int32(NH))])
            }
            try launch("flash_attention_backward_dq", grid: grid, block: (128, 1, 1), shared: 2 * CUDAModel.flashTileBytes,
                       [.ptr(dqkv), .ptr(dS), .ptr(qkv), .i32(Int32(T)), .i32(Int32(NH))])
        } else if useFlashAttention {  // the query kernel also writes dsum, which the key/value kernel reads
            // Query kernel: 3 x (k, v) tiles (q and dout in the third until loaded) + D of its 64 rows.
            try launch("flash_attention_backward_query", grid: grid, block: (128, 1, 1),
                       shared: 6 * CUDAModel.flashTileBytes + 64 * 4,
                       [.ptr(dqkv), .ptr(dsum), .ptr(qkv), .ptr(out), .ptr(dout), .ptr(lse), .i32(Int32(T)), .i32(Int32(NH))])
            // Key/value kernel: k, v and 2 x (q, dout) tiles + lse and D of each q and dout buffer.
            try launch("flash_attention_backward_key_value", grid: grid, block: (128, 1, 1),
                       shared: 6 * CUDAModel.flashTileBytes + 2 * 2 * 64 * 4,
                       [.ptr(dqkv), .ptr(qkv), .ptr(dout), .ptr(lse), .ptr(dsum), .i32(Int32(T)), .i32(Int32(NH))])
        } else {
            try launch1D("attention_backward_rowsum", count: B * NH * T,
                         [.ptr(dsum), .ptr(dout), .ptr(out), .i32(Int32(B)), .i32(Int32(T)), .i32(Int32(NH)), .i32(Int32(hs))])
            let args: [KernelArgument] = [.ptr(dqkv), .ptr(qkv), .ptr(dout), .ptr(lse), .ptr(dsum), .i32(Int32(T)), .i32(Int32(NH))]
            try launch("attention_backward_query_hs\(hs)", grid: grid, block: (128, 1, 1), shared: 2 * 64 * hs * 4, args)
            try launch("attention_backward_key_value_hs\(hs)", grid: grid, block: (128, 1, 1),
                       shared: (2 * 64 * (hs + 2) + 2 * 64 * hs + 2 * 64) * 4, args)
        }
    }

    /// One (64, 64) bf16 tile of flash_attention.cu in shared memory, rows padded to 72 elements.
    static let flashTileBytes = 64 * 72 * 2

    /// out (N, OC) = inp (N, K) . weight (OC, K)^T (+ bias (OC)), row-major.
    func matmulForward(_ out: CUdeviceptr, _ inp: CUdeviceptr, _ weight: CUdeviceptr, _ bias: CUdeviceptr?,
                       N: Int, K: Int, OC: Int) throws {
        try matmul.run(MatmulShape(m: OC, n: N, k: K, transA: true, transB: false, bias: bias != nil, accumulate: false),
                       d: out, a: weight, b: inp, bias: bias ?? 0)
    }

    /// fch (N, 4C) = inp (N, C) . weight (4C, C)^T + bias; gelu (N, 4C) = GELU(fch). One matmul with
    /// the GELU epilogue when `fusedGELU` (GELU of the fp32 sum, before rounding), else matmul + kernel.
    func fcForward(fch: CUdeviceptr, gelu: CUdeviceptr, inp: CUdeviceptr, weight: CUdeviceptr, bias: CUdeviceptr,
                   N: Int, C: Int) throws {
        if fusedGELU {
            do {
                let shape = MatmulShape(m: 4 * C, n: N, k: C, transA: true, transB: false, bias: true,
                                        accumulate: false, epilogue: .geluKeepInput)
                func cuBLASLt() throws { try matmul.run(shape, d: gelu, a: weight, b: inp, bias: bias, aux: fch) }
                guard let h = hopper, HopperGEMM.fits(.gelu, M: N, N: 4 * C, K: C) else { return try cuBLASLt() }
                func ours() throws { try h.run(.gelu, out: gelu, a: inp, b: weight, bias: bias, aux: fch, M: N, N: 4 * C, K: C) }
                if HopperGEMM.forced { return try ours() }
                try matmul.fastest("bf16 " + shape.profileName + " or hopper", [{ _ in try cuBLASLt() }, { _ in try ours() }])
                return
            } catch let e as LLMError {
                fusedGELU = false
                fputs("cuda model: GELU epilogues off (\(e.message))\n", stderr)
            }
        }
        try matmulForward(fch, inp, weight, bias, N: N, K: C, OC: 4 * C)
        try launch1D("gelu_forward", count: N * 4 * C / pack, [.ptr(gelu), .ptr(fch), .i64(Int64(N * 4 * C))])
    }

    /// dinp (N, K) = dout (N, OC) . weight (OC, K); dweight (OC, K) += dout^T . inp; dbias (OC) += column sums.
    /// dweight and dbias are off the backward's critical path: they go to the device's side stream,
    /// where they overlap the work queued after them (dinp first), and `side` is what the caller
    /// must `device.wait(for:)` before the main stream overwrites dout or inp. They come first, so
    /// dinp may be inp's own buffer (the recomputed GELU output): then it is waited for here. With
    /// `geluInput` (N, K), the GELU input whose output was inp, dinp becomes the gradient of that
    /// input; with `geluBias` (K) too, the bias gradient of the layer that made geluInput, the way
    /// that applies GELU's backward in a kernel of its own also adds dinp's column sums to it
    /// (gelu_backward_bias), which saves that layer's bias_backward a pass over dinp: `biasDone`
    /// says whether it did. The same kernels run in the same order on each stream with or without
    /// the side stream, and the bias sums in the same order in either kernel: the same bits.
    @discardableResult
    func matmulBackward(dinp: CUdeviceptr, dweight: CUdeviceptr, dbias: CUdeviceptr?, dout: CUdeviceptr,
                        inp: CUdeviceptr, weight: CUdeviceptr, N: Int, K: Int, OC: Int,
                        geluInput: CUdeviceptr? = nil, geluBias: CUdeviceptr? = nil) throws
        -> (side: CUDADevice.SideWork, biasDone: Bool) {
        let weightGradients = try device.onSideStream {
            try matmul.run(MatmulShape(m: K, n: OC, k: N, transA: false, transB: true, bias: false, accumulate: true),
                           d: dweight, a: inp, b: dout)
            guard let dbias = dbias else { return }
            try columnSums("bias_backward", space: sideColumnSums, dbias: dbias, N: N, OC: OC, [.ptr(dout)])
        }
        if dinp == inp { try device.wait(for: weightGradients) }
        let dinpShape = MatmulShape(m: K, n: N, k: OC, transA: false, transB: false, bias: false, accumulate: false)
        // The plain way: the product, then (with geluInput) GELU's backward over it, adding the
        // column sums to `bias` if given.
        func plainInputGradient(bias: CUdeviceptr?) throws {
            try matmul.run(dinpShape, d: dinp, a: weight, b: dout)
            guard let g = geluInput else { return }
            if let bias {
                try columnSums("gelu_backward_bias", space: mainColumnSums, dbias: bias, N: N, OC: K,
                               [.ptr(dinp), .ptr(g), .ptr(dinp)])
            } else {
                try launch1D("gelu_backward", count: N * K / pack, [.ptr(dinp), .ptr(g), .ptr(dinp), .i64(Int64(N * K))])
            }
        }
        if let g = geluInput, fusedGELU {
            var fused = dinpShape
            fused.epilogue = .geluGradient
            do {
                // The DGELU epilogue saves gelu_backward's pass over dinp, but cuBLASLt's kernels
                // with it are not fast for every shape (H100, run S7-7: d24's 0.83 ms against 0.60
                // for the plain way; d12's 0.62 against 0.78), and the plain way's GELU kernel also
                // takes geluBias's sums, which the epilogue leaves to a bias_backward: the faster
                // way, timed with its bias sums (into timingBias: only the final run's count), is
                // chosen once per shape and kept with the matmul choices. Either way dinp is the
                // GELU input's gradient.
                // The epilogue ways leave geluBias to a bias_backward; timed with it (into timingBias).
                func timingBiasSums(_ final: Bool) throws {
                    if !final, geluBias != nil {
                        try columnSums("bias_backward", space: mainColumnSums, dbias: timingBias, N: N, OC: K, [.ptr(dinp)])
                    }
                }
                var ways: [(_ final: Bool) throws -> Void] = [
                    { final in
                        try self.matmul.run(fused, d: dinp, a: weight, b: dout, aux: g)
                        try timingBiasSums(final)
                    },
                    { final in try plainInputGradient(bias: geluBias.map { final ? $0 : self.timingBias }) },
                ]
                var key = "bf16 " + fused.profileName + (geluBias == nil ? "" : " bias")
                // Our Hopper GEMM with the same epilogue (B is the weight (OC, K) turned (K, OC)) only
                // where $LLM_HOPPER_GEMM=force: timed alone it won the choice on some H100s (S13-12,
                // S14-10), but in steps it ran 0.67-0.70 ms a call against cuBLASLt's 0.62-0.63, and
                // forcing it where cuBLASLt had won cost 5.9 ms a d12 step (S14-1).
                if let h = hopper, HopperGEMM.forced, HopperGEMM.fits(.geluGradient, M: N, N: K, K: OC),
                   K * OC <= 4 * config.channels * config.channels {
                    ways = [{ final in
                        try h.transpose(self.weightT, weight, rows: OC, cols: K)
                        try h.run(.geluGradient, out: dinp, a: dout, b: self.weightT, aux: g, M: N, N: K, K: OC)
                        try timingBiasSums(final)
                    }]
                    key += " hopper"
                }
                let way = try matmul.fastest(key, ways)
                return (weightGradients, geluBias != nil && ways.count > 1 && way == 1)
            } catch let e as LLMError {
                fusedGELU = false
                fputs("cuda model: GELU epilogues off (\(e.message))\n", stderr)
            }
        }
        try plainInputGradient(bias: geluBias)
        return (weightGradients, geluBias != nil && geluInput != nil)
    }

    /// dbias (OC) += column sums of an (N, OC) matrix, by `kernel` (bias_backward or
    /// gelu_backward_bias: addColumnSums in common.cuh) with the partials and counters of `space`;
    /// `args` are the kernel's own, between (dbias, partial, counters) and (N, OC, rowsPerBlock).
    func columnSums(_ kernel: String, space: ColumnSumSpace, dbias: CUdeviceptr, N: Int, OC: Int,
                    _ args: [KernelArgument]) throws {
        // Enough blocks to keep every SM streaming (each reads 32 packs of ~N/256 rows).
        let rowBlocks = min(CUDAModel.maxBiasRowBlocks, (N + 63) / 64)
        let rowsPerBlock = (N + rowBlocks - 1) / rowBlocks
        let columnBlocks = (OC + 32 * pack - 1) / (32 * pack)
        if columnBlocks > space.columnBlocks {
            throw LLMError("cuda model: a bias of \(OC) columns needs more reduction counters than allocated")
        }
        try launch(kernel, grid: (columnBlocks, rowBlocks, 1), block: (32, 8, 1),
                   [.ptr(dbias), .ptr(space.partials), .ptr(space.counters)] + args
                   + [.i32(Int32(N)), .i32(Int32(OC)), .i32(Int32(rowsPerBlock))])
    }

    func layerNormForward(_ out: CUdeviceptr, _ mean: CUdeviceptr, _ rstd: CUdeviceptr, _ inp: CUdeviceptr,
                          _ weight: CUdeviceptr, _ bias: CUdeviceptr, N: Int, C: Int) throws {
        try residualLayerNormForward(residual: nil, out, mean, rstd, inp, nil, weight, bias, N: N, C: C)
    }

    /// With b: residual (N, C) = a + b, then out (N, C) = layernorm(residual); without: out =
    /// layernorm(a). One kernel (one warp per row in registers) up to 2048 channels; wider rows
    /// take the residual and layernorm kernels in turn.
    func residualLayerNormForward(residual: CUdeviceptr?, _ out: CUdeviceptr, _ mean: CUdeviceptr, _ rstd: CUdeviceptr,
                                  _ a: CUdeviceptr, _ b: CUdeviceptr?, _ weight: CUdeviceptr, _ bias: CUdeviceptr,
                                  N: Int, C: Int) throws {
        let warpsPerBlock = 8
        let grid = ((N + warpsPerBlock - 1) / warpsPerBlock, 1, 1), block = (32 * warpsPerBlock, 1, 1)
        if C <= 2048 && C % pack == 0 {  // the row in registers: the smaller instantiation where it fits
            return try launch(C <= 1024 ? "residual_layernorm_forward_1024" : "residual_layernorm_forward_2048",
                              grid: grid, block: block,
                              [.ptr(residual ?? 0), .ptr(out), .ptr(mean), .ptr(rstd), .ptr(a), .ptr(b ?? 0), .ptr(weight),
                               .ptr(bias), .i32(Int32(N)), .i32(Int32(C))])
        }
        var inp = a
        if let b, let residual {
            try launch1D("residual_forward", count: (N * C + pack - 1) / pack, [.ptr(residual), .ptr(a), .ptr(b), .i64(Int64(N * C))])
            inp = residual
        }
        try launch("layernorm_forward", grid: grid, block: block,
                   [.ptr(out), .ptr(mean), .ptr(rstd), .ptr(inp), .ptr(weight), .ptr(bias), .i32(Int32(N)), .i32(Int32(C))])
    }

    /// dinp (N, C) += LayerNorm backward of dout (= with `overwrite`: dinp is not read); dweight,
    /// dbias (C) += their sums over rows.
    func layerNormBackward(dinp: CUdeviceptr, dweight: CUdeviceptr, dbias: CUdeviceptr, dout: CUdeviceptr,
                           inp: CUdeviceptr, weight: CUdeviceptr, mean: CUdeviceptr, rstd: CUdeviceptr,
                           N: Int, C: Int, overwrite: Bool = false) throws {
        // 8 warps per block; at most 512 blocks, and no more than fit on the GPU at once: each block's
        // sums take 2C floats per warp of shared memory, so an H100 holds 3 blocks per SM at C=1024,
        // where 512 blocks would make a second, mostly empty wave (d24's layernorm backward ran
        // 0.168 ms a call, no faster than d12's with 1.5x the bytes). A kernel with the row in
        // registers where one fits C and costs no resident blocks: H100, S8-4, d24 0.1195 ms a call
        // against 0.1270 (3 blocks per SM either way), but at d12 the 1024 kernel took 0.1719
        // against 0.1687 (its 80 registers a thread allow 3 blocks, the shared memory at C=768 4),
        // hence one for 768 in 64 registers.
        let warps = 8, shared = warps * 2 * C * 4
        if layerNormBackwardKernel?.C != C {  // chosen once per width: the driver's answer does not change
            let loop = try kernels.function("layernorm_backward")
            var function = loop
            var perSM = try kernels.blocksPerMultiprocessor(loop, threads: 32 * warps, shared: shared)
            for (width, name) in [(768, "layernorm_backward_768"), (1024, "layernorm_backward_1024")] where C <= width {
                let rows = try kernels.function(name)
                let rowsPerSM = try kernels.blocksPerMultiprocessor(rows, threads: 32 * warps, shared: shared)
                if rowsPerSM >= perSM {
                    (function, perSM) = (rows, rowsPerSM)
                    break
                }
            }
            layerNormBackwardKernel = (C, function, perSM)
        }
        let (_, function, perSM) = layerNormBackwardKernel!
        let blocks = min(CUDAModel.lnBackwardBlocks, device.multiprocessorCount * perSM, (N + warps - 1) / warps)
        try kernels.launch(function, grid: (blocks, 1, 1), block: (32 * warps, 1, 1), shared: shared,
                   [.ptr(dinp), .ptr(dweight), .ptr(dbias), .ptr(partials), .ptr(reductionCounters), .ptr(dout),
                    .ptr(inp), .ptr(weight), .ptr(mean), .ptr(rstd), .i32(Int32(N)), .i32(Int32(C)),
                    .i32(Int32(CUDAModel.lnBackwardGroupBlocks)), .i32(overwrite ? 1 : 0)])
    }

    func nextSeed() -> UInt32 {
        rngState ^= rngState >> 12
        rngState ^= rngState << 25
        rngState ^= rngState >> 27
        return UInt32(truncatingIfNeeded: (rngState &* 0x2545F4914F6CDD1D) >> 32)
    }

    // MARK: Forward

    /// Logits and losses chunk by chunk (CUDAClassifier.swift): after it the logits buffer holds every
    /// row's logits when B*T <= classifierRows, else only the last chunk's.
    public func forward(inputs: [Int32], targets: [Int32]?, B: Int, T: Int) throws -> Float {
        try forwardLayers(inputs: inputs, targets: targets, B: B, T: T)
        let N = B * T
        for chunk in classifierChunks(N) { try classifierForward(chunk, losses: targets != nil) }
        classifierState = N <= classifierRows ? .allLogits : .lastChunk
        guard targets != nil else {
            hostLosses = []
            try device.synchronize()
            return .nan
        }
        return try downloadMeanLoss(N)
    }

    /// Everything of the forward up to the final layernorm's output lnf (B, T, C); the classifier
    /// follows in chunks.
    func forwardLayers(inputs: [Int32], targets: [Int32]?, B: Int, T: Int) throws {
        if B <= 0 || T <= 0 || B > batchSize || T > sequenceLength {
            throw LLMError("cuda model: forward with B=\(B) T=\(T), planned for B<=\(batchSize) T<=\(sequenceLength)")
        }
        let N = B * T, V = config.vocabSize
        if inputs.count != N || (targets != nil && targets!.count != N) {
            throw LLMError("cuda model: forward needs \(N) inputs and targets, got \(inputs.count) and \(targets?.count ?? 0)")
        }
        // Before anything is queued: a bad token would index outside wte, or outside a logits row.
        for (kind, tokens) in [("input", inputs), ("target", targets ?? [])] {
            if let i = tokens.firstIndex(where: { $0 < 0 || Int($0) >= V }) {
                throw LLMError("cuda model: \(kind) token \(tokens[i]) at position \(i) is outside the vocabulary (size \(V))")
            }
        }
        lastB = B; lastT = T
        classifierState = .empty  // until the classifier of this forward has run
        haveTargets = targets != nil
        lastForwardWasTraining = false
        hostLosses = []
        try uploadTokens(inputs, targets)

        let C = config.channels, L = config.numLayers, NH = config.numHeads
        let BTmax = batchSize * sequenceLength  // per-layer stride of the stacked activations
        let NHT = batchSize * NH * sequenceLength
        try launch1D("encoder_forward", count: N * C / pack,
                     [.ptr(encoded), .ptr(tokens), .ptr(tensor(params, .wte)), .ptr(tensor(params, .wpe)),
                      .i32(Int32(B)), .i32(Int32(T)), .i32(Int32(C))])
        // Each residual add runs in one kernel with the layernorm that reads its result: residual2
        // with ln2, residual3 with the next layer's ln1 (or lnf after the last layer).
        try layerNormForward(ln1Layer(0), ln1Mean, ln1Rstd, encoded, tensor(params, .ln1w), tensor(params, .ln1b), N: N, C: C)
        for l in 0 ..< L {
            let residual = l == 0 ? encoded : elements(residual3, (l - 1) * BTmax * C)
            let ln1l = ln1Layer(l), qkvl = elements(qkv, l * BTmax * 3 * C)
            let attyl = elements(atty, l * BTmax * C), lsel = floats(attLse, l * NHT)
            let res2l = elements(residual2, l * BTmax * C), ln2l = ln2Layer(l)
            let fchl = elements(fch, l * BTmax * 4 * C), geluL = geluLayer(l)
            let res3l = elements(residual3, l * BTmax * C)
            try matmulForward(qkvl, ln1l, tensor(params, .qkvw, layer: l), tensor(params, .qkvb, layer: l),
                              N: N, K: C, OC: 3 * C)
            try attentionForward(out: attyl, lse: lsel, qkv: qkvl, B: B, T: T)
            try matmulForward(scratchBTC, attyl, tensor(params, .attprojw, layer: l),
                              tensor(params, .attprojb, layer: l), N: N, K: C, OC: C)
            try residualLayerNormForward(residual: res2l, ln2l, floats(ln2Mean, l * BTmax), floats(ln2Rstd, l * BTmax),
                                         residual, scratchBTC, tensor(params, .ln2w, layer: l),
                                         tensor(params, .ln2b, layer: l), N: N, C: C)
            try fcForward(fch: fchl, gelu: geluL, inp: ln2l, weight: tensor(params, .fcw, layer: l),
                          bias: tensor(params, .fcb, layer: l), N: N, C: C)
            try matmulForward(scratchBTC, geluL, tensor(params, .fcprojw, layer: l),
                              tensor(params, .fcprojb, layer: l), N: N, K: 4 * C, OC: C)
            if l + 1 < L {  // ln1 of the next layer (with recompute 2 it shares the buffer ln2 just left)
                try residualLayerNormForward(residual: res3l, ln1Layer(l + 1), floats(ln1Mean, (l + 1) * BTmax),
                                             floats(ln1Rstd, (l + 1) * BTmax), res2l, scratchBTC,
                                             tensor(params, .ln1w, layer: l + 1), tensor(params, .ln1b, layer: l + 1),
                                             N: N, C: C)
            } else {
                try residualLayerNormForward(residual: res3l, lnf, lnfMean, lnfRstd, res2l, scratchBTC,
                                             tensor(params, .lnfw), tensor(params, .lnfb), N: N, C: C)
            }
        }
    }

    /// Copies the tokens into the next pinned staging set and queues their uploads into `tokens` and
    /// `targetsBuffer`, without waiting for the GPU. The device buffers are safe to overwrite: the
    /// copies run on the stream after every kernel queued before, the last forward's and backward's
    /// included. The staging set is safe to overwrite once its own previous upload is done: that one
    /// was queued by the forward before last, so the host waits at most until the GPU begins that
    /// forward, with the rest of it and the whole last micro-step still queued behind it.
    func uploadTokens(_ inputs: [Int32], _ targets: [Int32]?) throws {
        let set = 1 - lastTokenStaging
        let staging = tokenStaging[set]
        try staging.waitForCopies()
        let N = inputs.count, targetsAt = batchSize * sequenceLength  // (2, B, T): targets in the second half
        inputs.withUnsafeBufferPointer { staging.pointer.update(from: $0.baseAddress!, count: N) }
        try staging.upload(to: tokens, count: N)
        if let targets {
            targets.withUnsafeBufferPointer { (staging.pointer + targetsAt).update(from: $0.baseAddress!, count: N) }
            try staging.upload(to: targetsBuffer, from: targetsAt, count: N)
        }
        lastTokenStaging = set  // its inputs stay there until the forward after next: the bucket table reads them
        bucketsQueued = false
    }

    /// Downloads the per-row losses of the last forward (waits for the GPU); their mean.
    func downloadMeanLoss(_ N: Int) throws -> Float {
        hostLosses = try device.download(losses, count: N, as: Float.self, fill: 0)
        return hostLosses.withUnsafeBufferPointer { meanLoss($0) }
    }

    /// After a trainingForward, its micro-step's losses from their pinned slot (waits for their copy;
    /// [] should that wait fail, as for a forward without targets).
    public func lastLosses() -> [Float] {
        if lastForwardWasTraining { return ((try? microStepLosses.lastRows()) ?? nil) ?? [] }
        return hostLosses
    }

    /// The mean loss of each trainingForward since zeroGradients(), in order. Waits for the copies of
    /// the losses not summed yet; gradientNorm() has summed them all while it waited anyway.
    public func trainingLosses() throws -> [Float] {
        try microStepLosses.meansSinceReset()
    }

    /// Only after a plain `forward` of at most `classifierRows` rows (sampling, parity checks): the
    /// buffer keeps one chunk of logits, and a backward turns it into gradients. Stops the program otherwise.
    public func logits(b: Int, t: Int) -> [Float] {
        precondition(classifierState == .allLogits,
                     "cuda model: logits(b:t:) needs a plain forward of at most \(classifierRows) rows (classifierRows) "
                     + "before any backward; the last forward had \(lastB * lastT) rows")
        precondition(b >= 0 && b < lastB && t >= 0 && t < lastT, "cuda model: logits(b:t:) outside the last forward")
        let Vp = config.paddedVocabSize
        let row = elements(logitsBuffer, (b * lastT + t) * Vp)
        let all = (try? downloadFloatX(row, count: Vp)) ?? []
        return Array(all.prefix(config.vocabSize))
    }

    // MARK: Backward

    public func zeroGradients() {
        try? device.zero(grads, bytes: deviceCount * E)
        microStepLosses.reset()
    }

    public func backward(microSteps: Int) throws {
        if !haveTargets { throw LLMError("cuda model: backward needs a forward with targets first") }
        let B = lastB, T = lastT, N = B * T
        let C = config.channels, L = config.numLayers, NH = config.numHeads
        let BTmax = batchSize * sequenceLength
        let NHT = batchSize * NH * sequenceLength

        // Classifier and LM head (no bias): dlnf (B, T, C) into scratchBTC, dwte += dlogits^T . lnf;
        // already done by trainingForward, else here from the kept or recomputed logits.
        try classifierBackwardOfLastForward(microSteps: microSteps)
        // dresidual starts as lnf's input gradient (written, not added: no memset of it first).
        try layerNormBackward(dinp: dresidual, dweight: tensor(grads, .lnfw), dbias: tensor(grads, .lnfb),
                              dout: scratchBTC, inp: elements(residual3, (L - 1) * BTmax * C),
                              weight: tensor(params, .lnfw), mean: lnfMean, rstd: lnfRstd, N: N, C: C, overwrite: true)
        // Each matmul's weight and bias gradients run on the side stream (matmulBackward); the main
        // stream waits for them before it overwrites what they read. Only dresidual, scratchBT4C
        // (dout of fc, and the recomputed GELU output), dqkv (dout of qkv) and the recomputed
        // layernorm outputs are overwritten while a layer's side work may still read them;
        // scratchBTC is main-only.
        var fcSideAbove: CUDADevice.SideWork? = nil  // the layer above's fc gradients (read scratchBT4C)
        var qkvSide: CUDADevice.SideWork? = nil  // the layer above's qkv gradients (read dqkv, ln1)
        for l in stride(from: L - 1, through: 0, by: -1) {
            let residual = l == 0 ? encoded : elements(residual3, (l - 1) * BTmax * C)
            let ln1l = ln1Layer(l), qkvl = elements(qkv, l * BTmax * 3 * C)
            let attyl = elements(atty, l * BTmax * C), lsel = floats(attLse, l * NHT)
            let res2l = elements(residual2, l * BTmax * C), ln2l = ln2Layer(l)
            let fchl = elements(fch, l * BTmax * 4 * C), geluL = geluLayer(l)
            func p(_ t: ParameterTensor) -> CUdeviceptr { tensor(params, t, layer: l) }
            func g(_ t: ParameterTensor) -> CUdeviceptr { tensor(grads, t, layer: l) }

            // Before scratchBT4C and the recomputed layernorms are written again: the layer above's
            // fc side work reads scratchBT4C; its qkv side work reads ln1, which ln2's recompute
            // overwrites, and with dqkv in scratchBT4C that too (the side stream runs in order, so
            // qkv's wait covers fc's).
            if let w = dqkvApart && recompute < 2 ? fcSideAbove : qkvSide { try device.wait(for: w) }
            // MLP: residual3 = residual2 + fcproj(gelu(fc(ln2))). With recompute >= 1 geluL is
            // scratchBT4C itself: matmulBackward reads it for dweight before dinp overwrites it.
            if recompute >= 1 {
                try launch1D("gelu_forward", count: N * 4 * C / pack, [.ptr(geluL), .ptr(fchl), .i64(Int64(N * 4 * C))])
            }
            // fc's bias gradient is summed here if fcproj's dinp takes the GELU kernel (gelu_backward_bias).
            let (fcprojSide, fcBiasDone) = try matmulBackward(dinp: scratchBT4C, dweight: g(.fcprojw), dbias: g(.fcprojb),
                                                              dout: dresidual, inp: geluL, weight: p(.fcprojw), N: N,
                                                              K: 4 * C, OC: C, geluInput: fchl, geluBias: g(.fcb))
            if recompute >= 2 {  // ln2 again from the kept residual2 (mean and rstd rewritten with the same values)
                try layerNormForward(ln2l, floats(ln2Mean, l * BTmax), floats(ln2Rstd, l * BTmax), res2l,
                                     p(.ln2w), p(.ln2b), N: N, C: C)
            }
            let fcSide = try matmulBackward(dinp: scratchBTC, dweight: g(.fcw), dbias: fcBiasDone ? nil : g(.fcb),
                                            dout: scratchBT4C, inp: ln2l, weight: p(.fcw), N: N, K: C, OC: 4 * C).side
            try device.wait(for: fcprojSide)  // it reads dresidual
            try layerNormBackward(dinp: dresidual, dweight: g(.ln2w), dbias: g(.ln2b), dout: scratchBTC, inp: res2l,
                                  weight: p(.ln2w), mean: floats(ln2Mean, l * BTmax), rstd: floats(ln2Rstd, l * BTmax),
                                  N: N, C: C)
            // Attention: residual2 = residual + attproj(attention(qkv(ln1)))
            let attprojSide = try matmulBackward(dinp: scratchBTC, dweight: g(.attprojw), dbias: g(.attprojb),
                                                 dout: dresidual, inp: attyl, weight: p(.attprojw), N: N, K: C, OC: C).side
            if dqkvApart {  // the attention backward may run beside fc's side work
                if let w = qkvSide { try device.wait(for: w) }  // the layer above's reads dqkv
            } else {
                try device.wait(for: fcSide)  // it reads scratchBT4C, which becomes dqkv
            }
            try attentionBackward(dqkv: dqkv, dout: scratchBTC, qkv: qkvl, out: attyl, lse: lsel, dsum: attDsum, dS: attDS,
                                  B: B, T: T)
            if recompute >= 2 {
                try device.wait(for: fcSide)  // it reads ln2, the buffer ln1 is recomputed into
                try layerNormForward(ln1l, floats(ln1Mean, l * BTmax), floats(ln1Rstd, l * BTmax), residual,
                                     p(.ln1w), p(.ln1b), N: N, C: C)
            }
            qkvSide = try matmulBackward(dinp: scratchBTC, dweight: g(.qkvw), dbias: g(.qkvb), dout: dqkv,
                                         inp: ln1l, weight: p(.qkvw), N: N, K: C, OC: 3 * C).side
            fcSideAbove = fcSide
            try device.wait(for: attprojSide)  // it reads dresidual
            try layerNormBackward(dinp: dresidual, dweight: g(.ln1w), dbias: g(.ln1b), dout: scratchBTC, inp: residual,
                                  weight: p(.ln1w), mean: floats(ln1Mean, l * BTmax), rstd: floats(ln1Rstd, l * BTmax),
                                  N: N, C: C)
        }
        try device.joinSideStream()  // whatever comes next (the next forward, the optimizer) sees every gradient
        try encoderBackward(B: B, T: T, C: C)
        // No wait for the GPU here: whatever reads its results on the host (gradientNorm,
        // readGradients, trainingLosses) waits for them itself, and the next micro-step's forward
        // queues behind this backward on the stream.
    }

    /// dwpe += sum over the batch; dwte rows += sums per distinct token, from the bucket table of
    /// the last forward's inputs (queued by trainingForward; after a plain forward, queued here).
    func encoderBackward(B: Int, T: Int, C: Int) throws {
        try launch1D("encoder_backward_wpe", count: T * C,
                     [.ptr(tensor(grads, .wpe)), .ptr(dresidual), .i32(Int32(B)), .i32(Int32(T)), .i32(Int32(C)),
                      .u32(nextSeed())])
        if !bucketsQueued { try queueEncoderBuckets() }
        let n = bucketCount
        try launch("encoder_backward_wte", grid: (n, 1, 1), block: (min(256, (C / pack + 31) / 32 * 32), 1, 1),
                   [.ptr(tensor(grads, .wte)), .ptr(dresidual), .ptr(buckets), .ptr(buckets + UInt64(4 * n)),
                    .ptr(buckets + UInt64(4 * (2 * n + 1))), .i32(Int32(C)), .u32(nextSeed())])
    }

    /// Builds the last forward's bucket table (encoderBuckets) into the next pinned bucket staging
    /// buffer and queues its upload into `buckets`, without waiting. The inputs are read from the
    /// last forward's token staging set, which no copy writes (the device only reads it) and no
    /// forward refills before the one after next. `buckets` is safe to overwrite: the upload runs
    /// after the backward queued before it, the only reader of the previous table.
    func queueEncoderBuckets() throws {
        let N = lastB * lastT
        let set = 1 - lastBucketStaging
        let staging = bucketStaging[set]
        try staging.waitForCopies()  // its upload of the table before last may still be reading it
        let n = CUDAModel.encoderBuckets(staging.pointer, scratch: bucketScratch,
                                         inputs: tokenStaging[lastTokenStaging].pointer, N: N, V: config.vocabSize)
        try staging.upload(to: buckets, count: 2 * n + 1 + N)
        lastBucketStaging = set
        bucketCount = n
        bucketsQueued = true
    }

    /// The encoder backward's table of the positions of each distinct token, a counting sort of the
    /// N inputs (each 0 <= x < V): table = bucket tokens (n, ascending), bucket starts (n + 1, the
    /// last one N), positions (N, ascending within each bucket), 2n + 1 + N int32 in all; returns n.
    /// scratch (V) holds each token's count, then the next free position of its bucket.
    static func encoderBuckets(_ table: UnsafeMutablePointer<Int32>, scratch: UnsafeMutablePointer<Int32>,
                               inputs: UnsafePointer<Int32>, N: Int, V: Int) -> Int {
        scratch.update(repeating: 0, count: V)
        var n = 0
        for i in 0 ..< N {
            let x = Int(inputs[i])
            if scratch[x] == 0 { n += 1 }
            scratch[x] += 1
        }
        let bucketTokens = table, starts = table + n, positions = table + (2 * n + 1)
        var bucket = 0
        var running: Int32 = 0
        for v in 0 ..< V where scratch[v] > 0 {
            bucketTokens[bucket] = Int32(v)
            starts[bucket] = running
            let count = scratch[v]
            scratch[v] = running
            running += count
            bucket += 1
        }
        starts[n] = Int32(N)
        for i in 0 ..< N {
            let x = Int(inputs[i])
            positions[Int(scratch[x])] = Int32(i)
            scratch[x] += 1
        }
        return n
    }

    // MARK: Update

    public func gradientNorm() throws -> Float {
        let blocks = CUDAModel.normBlocks
        try launch("norm_squared_partial", grid: (blocks, 1, 1), block: (512, 1, 1),
                   [.ptr(partials), .ptr(grads), .i64(Int64(deviceCount))])
        let out = floats(partials, blocks)
        try launch("sum_partials", grid: (1, 1, 1), block: (1024, 1, 1), [.ptr(out), .ptr(partials), .i32(Int32(blocks))])
        // The host would wait for the GPU below anyway: first it sums the micro-steps' losses, each as
        // soon as its copy is done, while the GPU still runs the later micro-steps.
        try microStepLosses.sumAll()
        let sq = try device.download(out, count: 1, as: Float.self, fill: 0)[0]
        return sq.squareRoot()
    }

    public func update(_ s: AdamWSettings) throws {
        let b1 = Float(1 - pow(Double(s.beta1), Double(s.t)))
        let b2 = Float(1 - pow(Double(s.beta2), Double(s.t)))
        for t in ParameterTensor.allCases {
            let n = layout.size(t)
            let off = deviceOffsets[t.rawValue]
            let wd = (s.decayAllTensors || t.isMatrix) ? s.weightDecay : 0
            try launch1D("adamw_update", count: n,
                         [.ptr(elements(params, off)), .ptr(master == 0 ? 0 : floats(master, off)),
                          .ptr(elements(grads, off)), .ptr(floats(adamM, off)), .ptr(floats(adamV, off)),
                          .i64(Int64(n)), .f32(s.learningRate), .f32(s.beta1), .f32(s.beta2), .f32(b1), .f32(b2),
                          .f32(s.epsilon), .f32(wd), .f32(s.gradScale), .u32(nextSeed())])
        }
        try device.synchronize()
    }

    // MARK: State in and out

    public func readParameters() throws -> [Float] {
        if precision == .bf16 {
            return fromDeviceOrder(try device.download(master, count: deviceCount, as: Float.self, fill: 0))
        }
        return fromDeviceOrder(try downloadFloatX(params, count: deviceCount))
    }

    public func writeParameters(_ parameters: [Float]) throws {
        if parameters.count != layout.count {
            throw LLMError("cuda model: \(parameters.count) parameters given, expected \(layout.count)")
        }
        let ordered = toDeviceOrder(parameters)
        if precision == .bf16 { try device.upload(master, ordered) }
        try uploadFloatX(params, ordered)
    }

    public func readOptimizerState() throws -> (m: [Float], v: [Float]) {
        (fromDeviceOrder(try device.download(adamM, count: deviceCount, as: Float.self, fill: 0)),
         fromDeviceOrder(try device.download(adamV, count: deviceCount, as: Float.self, fill: 0)))
    }

    public func writeOptimizerState(m: [Float], v: [Float]) throws {
        if m.count != layout.count || v.count != layout.count {
            throw LLMError("cuda model: optimizer state needs \(layout.count) values each, got \(m.count) and \(v.count)")
        }
        try device.upload(adamM, toDeviceOrder(m))
        try device.upload(adamV, toDeviceOrder(v))
    }

    public func readGradients() throws -> [Float] {
        fromDeviceOrder(try downloadFloatX(grads, count: deviceCount))
    }

    /// The stochastic-rounding seed generator, saved in training checkpoints for exact resume.
    public func readRandomState() throws -> [UInt64] { [rngState] }

    public func writeRandomState(_ state: [UInt64]) throws {
        guard state.count == 1, state[0] != 0 else {
            throw LLMError("cuda model: random state needs one non-zero xorshift state, got \(state)")
        }
        rngState = state[0]
    }

    /// "parameters+grads+AdamW 1899 MiB, activations 20823 MiB (recompute 0; logits in chunks of 16384
    /// of 65536 rows: 1572 MiB), ..." for the start-up message.
    public var memorySummary: String {
        func mib(_ b: Int) -> String { "\(b >> 20) MiB" }
        let logitsRows = min(classifierRows, batchSize * sequenceLength)
        return "parameters+grads+AdamW \(mib(parameterBytes)), activations \(mib(activationBytes)) (recompute \(recompute); "
            + "logits in chunks of \(logitsRows) of \(batchSize * sequenceLength) rows: \(mib(logitsRows * config.paddedVocabSize * E))), "
            + "GELU in cuBLASLt epilogues \(fusedGELU ? "on" : "off")"
    }
}
