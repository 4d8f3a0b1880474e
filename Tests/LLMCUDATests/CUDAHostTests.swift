// Host-side logic of the CUDA backend (no GPU needed): embedded kernels, cache keys, library
// search; NVRTC compiles when the library is found; GPU parity when a driver and GPU are there.

import Foundation
import Testing
import LLM
@testable import LLMCUDA

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

@Test func everyKernelFileIsEmbedded() throws {
    let onDisk = try FileManager.default.contentsOfDirectory(atPath: repoRoot + "/Sources/LLMCUDA/Kernels")
        .filter { $0.hasSuffix(".cu") || $0.hasSuffix(".cuh") }.sorted()
    #expect(EmbeddedKernels.files.map(\.name) == onDisk)
    for (name, source) in EmbeddedKernels.files {
        let text = try String(contentsOfFile: repoRoot + "/Sources/LLMCUDA/Kernels/" + name, encoding: .utf8)
        #expect(source == text, "\(name) embedded differs from the file")
    }
    #expect(KernelSources.modules.count == onDisk.filter { $0.hasSuffix(".cu") }.count)
    #expect(KernelSources.headers.map(\.name) == ["common.cuh", "flash.cuh", "gelu.cuh", "hopper.cuh"])
}

@Test func launchParametersKeepTensorMapsAligned() {
    // A pointer, a tensor map, an int, another map: 8-byte slots, maps at multiples of 64 (of 128 bytes).
    let map = TensorMap()
    let layout = KernelArgument.slotOffsets([.ptr(0), .tensorMap(map), .i32(1), .tensorMap(map), .f32(0)])
    #expect(layout.offsets == [0, 128, 256, 384, 512])
    #expect(layout.total == 520)
    let small = KernelArgument.slotOffsets([.i32(1), .i64(2)])
    #expect(small.offsets == [0, 8] && small.total == 16)
    #expect(KernelArgument.slotOffsets([]).total == 0)
}

@Test func hopperGEMMShapesAndSharedMemory() {
    // Whole tiles of (128 x cluster) x width x 64 only: d12's fc shapes at every width, not a
    // ragged B*T; d24's 4C = 4096 is whole tiles of 128 columns but not of 192.
    let m = 128 * HopperGEMM.cluster
    for e in [HopperGEMM.Epilogue.plain, .gelu, .geluGradient] {
        #expect(HopperGEMM.fits(e, M: 65536, N: 3072, K: 768) == (65536 % m == 0))
        #expect(HopperGEMM.fits(e, M: 32768, N: 4096, K: 1024) == (HopperGEMM.tileN(e) == 128))
        #expect(!HopperGEMM.fits(e, M: 1000, N: 3072, K: 768))
        #expect(!HopperGEMM.fits(e, M: 65536, N: 3072, K: 700))
        #expect(!HopperGEMM.fits(e, M: 0, N: 3072, K: 768))
        // Every kernel's shared memory (with its static 1 KB) fits the H100's 227 KB per block,
        // and six stages would not, so the count was chosen to fit.
        #expect(HopperGEMM.sharedBytes(e) + 1024 <= 227 * 1024)
        #expect(HopperGEMM.sharedBytes(e, stages: 6) + 1024 > 227 * 1024)
        // A stage holds A's 128 rows and B's tile-width rows of 64 bf16.
        #expect(HopperGEMM.stageBytes(e) == (128 + HopperGEMM.tileN(e)) * 128)
    }
    // The default widths: 192 for the plain product, 128 for the GELU epilogues.
    if environmentValue("LLM_HOPPER_BN") == nil {
        #expect(HopperGEMM.tileWidths == [192, 128, 128])
        #expect(HopperGEMM.sharedBytes(.gelu) == HopperGEMM.sharedBytes(.geluGradient))
    }
}

@Test func hopperAttentionSharedMemory() {
    // Two items' Q (128 x 64 bf16) and per stage a K and a V tile of the same size, plus alignment
    // slack, 8 bytes per barrier and the two Q buffers' item numbers (4 bytes each); with the
    // kernel's static 1 KB within the H100's 227 KB per block.
    let stages = CUDAModel.hopperAttentionStages
    #expect((2 ... 5).contains(stages))
    #expect(CUDAModel.hopperAttentionSharedBytes == 1024 + 16384 * (2 + 2 * stages) + 8 * (4 + 3 * stages) + 2 * 4)
    #expect(CUDAModel.hopperAttentionSharedBytes + 1024 <= 227 * 1024)
    // The key/value kernel: two items' K and V, its stages of Q, dO (64 x 64 bf16 each) and 64 lse
    // and D floats, each stage a multiple of 1024 bytes (the swizzle's alignment), the barriers and
    // the two items' numbers; the count goes to the kernel as -DFB_STAGES.
    let kv = CUDAModel.hopperKeyValueStages
    #expect(CUDAModel.hopperKeyValueSharedBytes == 1024 + 4 * 16384 + kv * 17408 + 8 * (4 + 2 * kv) + 2 * 4)
    #expect(KernelSources.options(arch: "sm_90a", precision: .bf16).contains("-DFB_STAGES=\(kv)"))
    #expect(17408 % 1024 == 0 && 17408 >= 2 * 8192 + 2 * 256)
    #expect(CUDAModel.hopperKeyValueSharedBytes + 1024 <= 227 * 1024)
}

@Test func matmulChoicesFileKeepsAlgorithmsAndWays() {
    let algo = (0 ..< 64).map { UInt8($0 * 3 % 256) }
    let algorithms = ["0 4096x32768x1024 NN align 16 16 16 16 16": algo]
    let ways = ["bf16 4096x32768x1024 NN dgelu": 1, "bf16 3072x65536x768 NN dgelu": 0]
    let text = MatmulEngine.formatChoices(algorithms: algorithms, ways: ways)
    // Algorithms first, then the ways, each sorted: the file is the same bits for the same choices.
    #expect(text.split(separator: "\n").map { String($0.prefix(4)) } == ["0 40", "way ", "way "])
    #expect(text.hasSuffix("way bf16 3072x65536x768 NN dgelu 0\nway bf16 4096x32768x1024 NN dgelu 1\n"))
    let back = MatmulEngine.parseChoices(text)
    #expect(back.algorithms == algorithms)
    #expect(back.ways == ways)
    // Lines that do not parse are dropped (retuned), not fatal: a short algorithm, a way that is not
    // a non-negative index, no space at all.
    let damaged = MatmulEngine.parseChoices(text + "k 0a0b\nway k x\nway k -1\nnospace\n")
    #expect(damaged.algorithms == algorithms)
    #expect(damaged.ways == ways)
    // Saving over a file that another engine wrote since keeps its shapes; ours win where both chose.
    let other = [UInt8](repeating: 7, count: 64)
    let theirs = MatmulEngine.formatChoices(algorithms: ["1 768x768x65536 NT +=": other],
                                            ways: ["bf16 4096x32768x1024 NN dgelu": 0, "fp32 x": 1])
    let merged = MatmulEngine.parseChoices(MatmulEngine.mergedChoices(theirs, algorithms: algorithms, ways: ways))
    #expect(merged.algorithms == ["1 768x768x65536 NT +=": other, "0 4096x32768x1024 NN align 16 16 16 16 16": algo])
    #expect(merged.ways == ["bf16 4096x32768x1024 NN dgelu": 1, "bf16 3072x65536x768 NN dgelu": 0, "fp32 x": 1])
}

@Test func cacheKeyDependsOnEverythingThatMakesTheCubin() {
    let o = KernelSources.options(arch: "sm_90", precision: .bf16)
    let k = KernelSources.cacheKey(module: "a.cu", source: "x", options: o, arch: "sm_90")
    #expect(k.count == 16)
    #expect(k == KernelSources.cacheKey(module: "a.cu", source: "x", options: o, arch: "sm_90"))
    #expect(k != KernelSources.cacheKey(module: "a.cu", source: "y", options: o, arch: "sm_90"))
    #expect(k != KernelSources.cacheKey(module: "b.cu", source: "x", options: o, arch: "sm_90"))
    #expect(k != KernelSources.cacheKey(module: "a.cu", source: "x", options: o, arch: "sm_80"))
    let o32 = KernelSources.options(arch: "sm_90", precision: .fp32)
    #expect(k != KernelSources.cacheKey(module: "a.cu", source: "x", options: o32, arch: "sm_90"))
    // fp32 mode is the exact one: no fast math there.
    #expect(!o32.contains("--use_fast_math") && o.contains("--use_fast_math"))
}

@Test func cacheDirectoriesAreCreated() throws {
    let base = NSTemporaryDirectory() + "llm-cuda-test-\(getpid())"
    KernelCache.makeDirectories(base + "/a/b/c")
    var isDir: ObjCBool = false
    #expect(FileManager.default.fileExists(atPath: base + "/a/b/c", isDirectory: &isDir) && isDir.boolValue)
    try FileManager.default.removeItem(atPath: base)
}

@Test func versionedLibrariesNewestFirst() throws {
    let dir = NSTemporaryDirectory() + "llm-cuda-libs-\(getpid())"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    for name in ["libnvrtc.so.12", "libnvrtc.so.13", "libnvrtc.so.13.0.88", "libnvrtc-builtins.so.13.0",
                 "libnvrtc.alt.so.13", "libnvrtc.so"] {
        _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: Data())
    }
    #expect(versionedLibraries(in: dir, stem: "libnvrtc.so.") == ["libnvrtc.so.13.0.88", "libnvrtc.so.13", "libnvrtc.so.12"])
}

@Test func missingLibraryIsOneClearError() {
    do {
        _ = try DynamicLibrary.open(names: ["libllm-no-such-library.so.1"], stem: "libllm-no-such-library.so.",
                                    what: "test")
        Issue.record("opened a library that does not exist")
    } catch let e as LLMError {
        #expect(e.message.hasPrefix("test: no libllm-no-such-library.so.1 found in CUDA_HOME"))
        #expect(!e.message.contains("\n"))
    } catch {
        Issue.record("unexpected error \(error)")
    }
}

@Test func flashBackwardDSBufferHoldsEveryCausalTilePair() {
    // One 64 x 64 bf16 tile (8 KiB) per (key tile, query tile) pair with key tile <= query tile.
    #expect(CUDAModel.flashDSBytes(B: 1, T: 64, NH: 1) == 8192)
    #expect(CUDAModel.flashDSBytes(B: 1, T: 65, NH: 1) == 3 * 8192)         // 2 tiles: 3 pairs
    #expect(CUDAModel.flashDSBytes(B: 2, T: 1024, NH: 12) == 2 * 12 * 136 * 8192)  // 16 tiles: 136 pairs
    // d12 at B=64, T=1024: 855.6 MB, within one chunk of 16384 rows of the padded vocabulary
    // (1648.4 MB), so the logits buffer holds it without growing (it grew from 8192 rows' 824.2 MB).
    #expect(CUDAModel.flashDSBytes(B: 64, T: 1024, NH: 12) == 855_638_016)
}

@Test func pointerAlignmentForCuBLASLt() {
    #expect(pointerAlignment(0) == 256)
    #expect(pointerAlignment(0x7f00_0000_0000) == 256)
    #expect(pointerAlignment(0x7f00_0000_0180) == 128)
    #expect(pointerAlignment(0x7f00_0000_0002) == 2)
}

@Test func matmulAlgorithmBytesRoundTripThroughHex() {
    // The kernel cache keeps each chosen cuBLASLt algorithm as the hex of its 64 opaque bytes.
    let bytes = (0 ..< algoBytes).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 250) }
    let hex = hexFromBytes(bytes)
    #expect(hex.count == 2 * algoBytes)
    #expect(hex.hasPrefix("fa1f44"))  // 250, 287 mod 256 = 31, 324 mod 256 = 68
    #expect(bytesFromHex(hex) == bytes)
    #expect(bytesFromHex("0") == nil)      // odd length
    #expect(bytesFromHex("0g") == nil)     // not a hex digit
    #expect(bytesFromHex("FF") == nil)     // the file is written in lower case; anything else is retuned
    #expect(bytesFromHex("") == [])
}

@Test func unavailableReasonIsOneLine() {
    if let why = CUDABackend.unavailableReason() {
        #expect(!why.isEmpty && !why.contains("\n"))
        #expect(!CUDABackend.isAvailable())
    }
}

// MARK: - With NVRTC (CI's compile-kernels script covers every arch and precision)

let nvrtcFound: Bool = { if case .success = NVRTC.shared { return true } else { return false } }()

@Test(.enabled(if: nvrtcFound, "NVRTC not found (set LD_LIBRARY_PATH to the wheel's nvidia/cu13/lib)"))
func nvrtcCompilesTheKernelsWithoutWarnings() throws {
    for m in KernelSources.modules where m.name != "attention.cu" {  // attention is the slow one; CI compiles it
        let out = try KernelSources.compile(module: m.name, source: m.source, arch: "sm_90", precision: .bf16)
        #expect(!out.cubin.isEmpty)
        #expect(out.log.isEmpty, "\(m.name): \(out.log)")
    }
}

// MARK: - Encoder-backward buckets

/// The bucket table the encoder backward reads, built in place by CUDAModel.encoderBuckets, against
/// a plain reference: for each distinct token in ascending order, its positions in ascending order.
@Test func encoderBucketsGroupPositionsByToken() {
    var rng = SystemRandomNumberGenerator()
    for (N, V) in [(1, 5), (64, 7), (4096, 50257), (3000, 300)] {
        let inputs = (0 ..< N).map { _ in Int32.random(in: 0 ..< Int32(V), using: &rng) }
        var reference: [Int32: [Int32]] = [:]
        for (position, token) in inputs.enumerated() { reference[token, default: []].append(Int32(position)) }
        let tokens = reference.keys.sorted()
        var expected = tokens
        var start: Int32 = 0
        for t in tokens { expected.append(start); start += Int32(reference[t]!.count) }
        expected.append(Int32(N))
        for t in tokens { expected += reference[t]! }

        var table = [Int32](repeating: -1, count: 3 * N + 1)
        var scratch = [Int32](repeating: 7, count: V)  // stale values from an earlier table
        let n = table.withUnsafeMutableBufferPointer { t in
            scratch.withUnsafeMutableBufferPointer { s in
                inputs.withUnsafeBufferPointer { CUDAModel.encoderBuckets(t.baseAddress!, scratch: s.baseAddress!,
                                                                          inputs: $0.baseAddress!, N: N, V: V) }
            }
        }
        #expect(n == tokens.count)
        #expect(Array(table[0 ..< 2 * n + 1 + N]) == expected, "N=\(N) V=\(V)")
    }
}

// MARK: - With a GPU

@Test(.enabled(if: CUDABackend.isAvailable(), "no CUDA driver or GPU"))
func tinyModelMatchesPyTorchInFP32() throws {
    let fixtures = repoRoot + "/Tests/Fixtures"
    let (config, _, params) = try CheckpointFile.read(fixtures + "/tiny.bin")
    let state = try DebugState(path: fixtures + "/tiny_debug_state.bin", config: config)
    let model = try CUDAModel(config: config, parameters: params, B: state.B, T: state.T, precision: .fp32)
    let loss = try model.forward(inputs: state.inputs, targets: state.targets, B: state.B, T: state.T)
    #expect(abs(loss - state.loss) < 1e-4)
    model.zeroGradients()
    try model.backward(microSteps: 1)
    let grads = try model.readGradients()
    var d2 = 0.0, r2 = 0.0
    for i in grads.indices {
        d2 += Double(grads[i] - state.gradients[i]) * Double(grads[i] - state.gradients[i])
        r2 += Double(state.gradients[i]) * Double(state.gradients[i])
    }
    #expect((d2 / r2).squareRoot() < 1e-4)
}

@Test(.enabled(if: CUDABackend.isAvailable(), "no CUDA driver or GPU"))
func flashAttentionMatchesTheScalarKernels() throws {
    // Head size 64 (the tensor-core path), a T that is not a multiple of the 64-row tiles.
    let config = GPT2Config(maxSeqLen: 256, vocabSize: 512, paddedVocabSize: 512, numLayers: 1, numHeads: 2, channels: 128)
    let model = try CUDAModel(config: config, parameters: [Float](repeating: 0.01, count: ParameterLayout(config).count),
                              B: 2, T: 256, precision: .bf16)
    for T in [256, 200] {
        let r = try model.attentionParity(B: 2, T: T, repeats: 1)
        // bf16 rounding of P and dS in the tensor-core products: errors of a few 1e-3.
        #expect(max(r.out, r.dq, r.dk, r.dv) < 2e-2)
        #expect(r.lseMaxDiff < 1e-2)
    }
}

@Test func columnSumCountersMatchTheKernels() throws {
    // The bias sums' group size goes to the kernels as -DCOLUMN_SUM_GROUP; the host allocates a
    // counter per group and one for the groups per column block, for at most group^2 row blocks,
    // as addColumnSums (common.cuh) counts them.
    let common = try #require(KernelSources.headers.first { $0.name == "common.cuh" }?.source)
    #expect(common.contains("#define COLUMN_SUM_COUNTERS (1 + COLUMN_SUM_GROUP)"))
    let group = CUDAModel.columnSumGroup
    #expect(KernelSources.options(arch: "sm_90a", precision: .bf16).contains("-DCOLUMN_SUM_GROUP=\(group)"))
    #expect(KernelSources.options(arch: "sm_80", precision: .fp32).contains("-DCOLUMN_SUM_GROUP=\(group)"))
    #expect(CUDAModel.columnSumCounters == 1 + group)
    #expect(CUDAModel.maxBiasRowBlocks <= group * group)
}
