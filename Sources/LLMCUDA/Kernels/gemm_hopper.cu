// Our own bf16 GEMM for Hopper (sm_90a), for the two products whose GELU epilogue cuBLASLt runs at
// ~490 TFLOP/s where its plain products reach ~700: out (M, N) = A (M, K) . B (N, K)^T, row-major,
// both operands K-major. TMA loads tiles into a ring of shared-memory stages, warpgroup MMAs
// (wgmma) read them from there, and the grid is persistent: one block per SM walks the tiles, a
// producer warp loading, two consumer warpgroups taking the tiles in turns, so one's epilogue (the
// GELU and its second (M, N) stream) runs while the other's products keep the tensor cores busy.
// Status: correct against cuBLASLt (cuda-selftest); the plain product runs level with cuBLASLt's,
// the GELU forward ~4 % ahead (the model, which times both, uses it for d12's fc forward), the
// GELU backward behind at d12 (docs/gpu-performance.md, eleventh and twelfth rounds).
#include "common.cuh"
#include "gelu.cuh"
#include "hopper.cuh"

#define GEMM_BM 128          // rows of A (and out) per consumer's tile
#define GEMM_BK 64           // K per stage: 64 bf16 = one 128-byte swizzle row
// Rows of B (columns of out) per tile, BN (128 or 192), is each kernel's own (-DGEMM_BN_PLAIN,
// _GELU, _DGELU, from the host, like the stages). From it: a stage of the ring (A's tile, then
// B's: 32 or 40 KB), a 64-row half of a tile in bf16 (16 or 24 KB), the fp32 accumulators a
// thread holds per half (64 or 96).
template <int BN> __device__ constexpr unsigned stageBytes() { return (GEMM_BM + BN) * GEMM_BK * 2; }
template <int BN> __device__ constexpr unsigned halfBytes() { return 64 * BN * 2; }
template <int BN> __device__ constexpr int fragment() { return BN / 2; }
#define GEMM_THREADS 384     // warpgroup 0: the producer (one thread works); 1 and 2: consumers
#ifndef GEMM_PRODUCER_REGS   // registers a thread: 2 x 232 + 40 = 3 x 168, what __launch_bounds__ gives
#define GEMM_PRODUCER_REGS 40
#endif
#ifndef GEMM_CONSUMER_REGS
#define GEMM_CONSUMER_REGS 232
#endif
#ifndef GEMM_CLUSTER
#define GEMM_CLUSTER 2       // blocks per cluster, sharing B tiles (1, 2 or 4; the host passes the same)
#endif

// The epilogues: out = product; out = GELU(product + bias) with aux = product + bias (the GELU
// input, kept for the backward); out = product * GELU'(aux).
#define GEMM_PLAIN 0
#define GEMM_GELU 1
#define GEMM_DGELU 2

#ifdef HOPPER_WGMMA
#define GEMM_HOPPER 1
#endif

#ifdef GEMM_HOPPER
#define GEMM_CLUSTER_DIMS __cluster_dims__(GEMM_CLUSTER, 1, 1)
#else
#define GEMM_CLUSTER_DIMS
#endif

#ifdef GEMM_HOPPER

// MARK: - Clusters (PTX)

// This block's rank in its cluster, and a barrier of every thread of every block of the cluster.
__device__ __forceinline__ unsigned clusterRank() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ void clusterSync() {
    asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
}
// Arrive on the barrier at the same shared address in block `rank` of the cluster (this one
// included). The default (CTA-scope) release: what it orders are the warpgroup MMAs' reads of a
// stage, done before the arrival; a .release.cluster arrive costs a MEMBAR.ALL.GPU, which waits
// for the epilogue's stores too (measured: half the rate).
__device__ __forceinline__ void barrierArriveCluster(unsigned bar, unsigned rank) {
    asm volatile("{\n"
                 ".reg .b32 remote;\n"
                 "mapa.shared::cluster.u32 remote, %0, %1;\n"
                 "mbarrier.arrive.shared::cluster.b64 _, [remote];\n"
                 "}\n" :: "r"(bar), "r"(rank) : "memory");
}
// tmaLoad into the same shared address of every block in `mask`, each counting the bytes on its own
// barrier at `bar`.
__device__ __forceinline__ void tmaLoadMulticast(unsigned dst, const TensorMap* map, unsigned bar, int x, int y,
                                                 unsigned short mask) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
                 " [%0], [%1, {%3, %4}], [%2], %5;"
                 :: "r"(dst), "l"((unsigned long long)map), "r"(bar), "r"(x), "r"(y), "h"(mask) : "memory");
}

// MARK: - Warpgroup MMA

// d (64 x 192, fp32, the accumulator fragment) (+)= A (64 x 16) . B (192 x 16)^T, both from shared memory.
__device__ __forceinline__ void wgmma192(float* d, unsigned long long a, unsigned long long b, int accumulate) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %98, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, "
        "%96, %97, p, 1, 1, 0, 0;\n"
        "}\n"
        : WGMMA_ACC8(d, 0), WGMMA_ACC8(d, 8), WGMMA_ACC8(d, 16), WGMMA_ACC8(d, 24),
          WGMMA_ACC8(d, 32), WGMMA_ACC8(d, 40), WGMMA_ACC8(d, 48), WGMMA_ACC8(d, 56),
          WGMMA_ACC8(d, 64), WGMMA_ACC8(d, 72), WGMMA_ACC8(d, 80), WGMMA_ACC8(d, 88)
        : "l"(a), "l"(b), "r"(accumulate));
}

// One k16 step of a 64-row half: the instruction of the tile's width.
template <int BN>
__device__ __forceinline__ void wgmmaTile(float* d, unsigned long long a, unsigned long long b, int accumulate) {
    if constexpr (BN == 192) wgmma192(d, a, b, accumulate);
    else wgmma128(d, a, b, accumulate);
}

// Byte offset of element (r, c) in a TMA box of 64 columns with the 128-byte swizzle: rows of 128
// bytes whose 16-byte chunks q sit at q ^ (r % 8); `boxBytes` apart for columns 64 and on.
__device__ __forceinline__ unsigned swizzled(int r, int c, int boxBytes) {
    return (c / 64) * boxBytes + r * 128 + ((((c % 64) >> 3) ^ (r & 7)) << 4) + (c & 7) * 2;
}

// The block's dynamic shared memory. The epilogues reach it through C++ pointers, not asm, so the
// compiler may interleave one column group's loads, arithmetic and stores with the next's (asm
// volatile accesses kept each group's chain in order: ~4 values in flight a warp).
extern __shared__ unsigned char sharedRaw[];
__device__ __forceinline__ unsigned char* sharedPointer(unsigned address) {
    return sharedRaw + (address - sharedAddress(sharedRaw));
}

// The epilogue of one 64-row half of a consumer's tile, into shared memory for TMA stores: plain
// and GELU into `staging` (out's 64 x BN at 0, GELU aux's a half further; boxes of 64 x 64), DGELU
// in place over the aux tile it reads (boxes of 128 x 64). The fragment of m64nBN: value
// 4j + 2e + h of a thread is row 16 warp + lane/4 + 8e, column 8j + 2 (lane % 4) + h. Each warp's
// 4-byte writes cover 8 rows x 16 bytes, 8 different chunks: no bank conflicts. `bias[j]`: GELU's
// bias of columns 8j + 2 (lane % 4) and the next, as a bf16 pair.
template <int EPI, int BN>
__device__ __forceinline__ void epilogueHalf(const float* acc, int half, unsigned char* staging, const unsigned* bias,
                                             unsigned char* auxTile) {
    const int warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
    auto row = [&](int e) { return 16 * warp + lane / 4 + 8 * e; };  // in the half
    auto column = [&](int j) { return 8 * j + 2 * (lane % 4); };     // in the tile
    if constexpr (EPI == GEMM_DGELU) {
        // In two rounds of half the column groups: every aux pair of the round first, then the
        // products over them (reads before writes, and registers for the values in flight).
#pragma unroll
        for (int round = 0; round < 2; round++) {
            constexpr int groups = BN / 16;
            unsigned x[groups][2];
#pragma unroll
            for (int g = 0; g < groups; g++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    x[g][e] = *(const unsigned*)(auxTile + swizzled(64 * half + row(e), column(round * groups + g), 2 * 8192));
#pragma unroll
            for (int g = 0; g < groups; g++) {
                const int j = round * groups + g;
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float v0 = acc[4 * j + 2 * e], v1 = acc[4 * j + 2 * e + 1];
                    *(unsigned*)(auxTile + swizzled(64 * half + row(e), column(j), 2 * 8192)) =
                        packBF16(v0 * geluDerivativeFast(__uint_as_float(x[g][e] << 16)),
                                 v1 * geluDerivativeFast(__uint_as_float(x[g][e] & 0xffff0000u)));
                }
            }
        }
    } else {
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float v0 = acc[4 * j + 2 * e], v1 = acc[4 * j + 2 * e + 1];
                const unsigned at = swizzled(row(e), column(j), 8192);
                if constexpr (EPI == GEMM_PLAIN) {
                    // asm: in order, as there is no arithmetic to interleave (C++ stores let the
                    // compiler hoist the addresses and spill).
                    asm volatile("st.shared.b32 [%0], %1;" :: "r"(sharedAddress(staging) + at), "r"(packBF16(v0, v1)));
                } else {
                    v0 += __uint_as_float(bias[j] << 16);
                    v1 += __uint_as_float(bias[j] & 0xffff0000u);
                    *(unsigned*)(staging + at + halfBytes<BN>()) = packBF16(v0, v1);
                    *(unsigned*)(staging + at) = packBF16(geluFast(v0), geluFast(v1));
                }
            }
        }
    }
}

// MARK: - The kernel

// Shared memory (dynamic, rounded up to a 1024-byte boundary): the ring's stages (A's tile, then
// B's), then per consumer the epilogue's buffer (plain: the staging of a 64-row half's out; GELU:
// of its out and aux; DGELU: its (BM, BN) aux tile, boxes of 64 columns with the 128-byte swizzle,
// overwritten with the result), then the barriers: full[s] (the producer's expect + TMA bytes from
// every block of the cluster), empty[s] (one arrival per consumer warp of every block of the
// cluster), auxFull[c], auxEmpty[c], turn[c]; then each consumer's BN values of the bias.
//
// A cluster of GEMM_CLUSTER blocks takes GEMM_CLUSTER tiles of one column of tiles at a time, on
// neighbouring rows: they need the same B rows, so each block loads BN / GEMM_CLUSTER of them and
// multicasts them to all, and the L2 sends each B tile out once instead of GEMM_CLUSTER times. The
// L2's output is what bounds this kernel (S12-1, ncu: 81 % of its cycles busy with 128 x 128 tiles
// at 81 % of the tensor pipe; cuBLASLt's 128 x 160 tiles need fewer bytes per product), so tiles
// are as wide as the registers allow (192: 96 accumulators a thread per half) and the wider of the
// two operand tiles is the one shared.
template <int EPI, int STAGES, int BN>
__device__ __forceinline__ void gemmHopper(const floatX* bias, const TensorMap* mapA, const TensorMap* mapB,
                                           const TensorMap* mapOut, const TensorMap* mapAux, int M, int N, int K) {
    const unsigned raw = sharedAddress(sharedRaw);
    const unsigned sRing = (raw + 1023) & ~1023u;
    auto sA = [&](int s) { return sRing + s * stageBytes<BN>(); };
    auto sB = [&](int s) { return sRing + s * stageBytes<BN>() + (GEMM_BM * GEMM_BK * 2); };
    constexpr unsigned epilogueBytes = EPI == GEMM_PLAIN ? halfBytes<BN>() : 2 * halfBytes<BN>();
    const unsigned sEpilogue = sRing + STAGES * stageBytes<BN>();
    const unsigned bars = sEpilogue + 2 * epilogueBytes;
    auto full = [&](int s) { return bars + 8 * s; };
    auto empty = [&](int s) { return bars + 8 * (STAGES + s); };
    auto auxFull = [&](int c) { return bars + 8 * (2 * STAGES + c); };
    auto auxEmpty = [&](int c) { return bars + 8 * (2 * STAGES + 2 + c); };
    auto turn = [&](int c) { return bars + 8 * (2 * STAGES + 4 + c); };
    const unsigned sBias = bars + 8 * (2 * STAGES + 6);  // 2 x BN bf16: each consumer's tile of the bias

    const unsigned rank = clusterRank();
    const int groupsN = N / BN, groups = (M / (GEMM_BM * GEMM_CLUSTER)) * groupsN, kBlocks = K / GEMM_BK;
    const int cluster = blockIdx.x / GEMM_CLUSTER, clusters = gridDim.x / GEMM_CLUSTER;
    const int warpgroup = threadIdx.x / 128, t = threadIdx.x % 128;
    // This block's tile of the cluster's group g.
    auto tileRow = [&](int g) { return ((g / groupsN) * GEMM_CLUSTER + (int)rank) * GEMM_BM; };
    auto tileColumn = [&](int g) { return (g % groupsN) * BN; };
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) { barrierInit(full(s), 1); barrierInit(empty(s), 4 * GEMM_CLUSTER); }
        for (int c = 0; c < 2; c++) {
            barrierInit(auxFull(c), 1); barrierInit(auxEmpty(c), 1); barrierInit(turn(c), 128);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    clusterSync();  // every block's barriers exist before any block's copies or arrivals reach them

    if (warpgroup == 0) {
        // The producer needs few registers: give them to the consumers' accumulators and epilogues.
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" :: "n"(GEMM_PRODUCER_REGS) : "memory");
        // The producer: every tile's K blocks in order into the ring; the consumers' tiles alternate,
        // so does the ring's use.
        if (t == 0) {
            constexpr int rowsB = BN / GEMM_CLUSTER;  // this block's share of the B tile
            unsigned long long it = 0;
            for (int g = cluster; g < groups; g += clusters) {
                const int m0 = tileRow(g), n0 = tileColumn(g);
                for (int kb = 0; kb < kBlocks; kb++, it++) {
                    const int s = (int)(it % STAGES);
                    // Free in every block of the cluster: our B rows land in all of them.
                    barrierWait(empty(s), (unsigned)((it / STAGES) & 1) ^ 1);
                    barrierExpect(full(s), stageBytes<BN>());
                    tmaLoad(sA(s), mapA, full(s), kb * GEMM_BK, m0);
                    tmaLoadMulticast(sB(s) + rank * rowsB * 128, mapB, full(s), kb * GEMM_BK, n0 + rank * rowsB,
                                     (unsigned short)((1 << GEMM_CLUSTER) - 1));
                }
            }
        } else if (EPI == GEMM_DGELU && t == 32) {
            // The aux tiles, from a thread of their own: waiting for a consumer's buffer must not
            // hold up the ring.
            for (int g = cluster, i = 0; g < groups; g += clusters, i++) {
                const int m0 = tileRow(g), n0 = tileColumn(g);
                const int c = i & 1;
                barrierWait(auxEmpty(c), ((i >> 1) & 1) ^ 1);
                barrierExpect(auxFull(c), 2 * halfBytes<BN>());
                for (int b = 0; b < BN / 64; b++)
                    tmaLoadOnce(sEpilogue + c * epilogueBytes + b * 2 * 8192, mapAux, auxFull(c), n0 + 64 * b, m0);
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" :: "n"(GEMM_CONSUMER_REGS) : "memory");
        // A consumer: the tiles i with i % 2 == its index, each (BM, BN) as two 64-row halves. Their
        // products take turns (turn[c]: the other's tile's last stage is in), so one's epilogue runs
        // beside the other's products, and no consumer waits on a stage two uses of the ring ahead
        // (a barrier's parity tells only one phase from the next).
        const int consumer = warpgroup - 1, lane = t % 32;
        float acc0[fragment<BN>()], acc1[fragment<BN>()];
        unsigned long long it = 0;
        // Hands stage s back to the producers of every block of the cluster: one arrival per warp,
        // after the warp's products that read it are done.
        auto release = [&](int s) {
            __syncwarp();
            if (lane == 0) {
                for (int r = 0; r < GEMM_CLUSTER; r++) barrierArriveCluster(empty(s), r);
            }
        };
        for (int g = cluster, i = 0; g < groups; g += clusters, i++, it += kBlocks) {
            if ((i & 1) != consumer) continue;
            const int m0 = tileRow(g), n0 = tileColumn(g);
            const int turns = (i + 1) / 2;  // the other consumer's tiles before this one
            if (turns > 0) barrierWait(turn(consumer), (turns - 1) & 1);
            for (int kb = 0; kb < kBlocks; kb++) {
                const unsigned long long k = it + kb;
                const int s = (int)(k % STAGES);
                barrierWait(full(s), (unsigned)((k / STAGES) & 1));
                fenceRegisters<fragment<BN>()>(acc0); fenceRegisters<fragment<BN>()>(acc1);
                wgmmaFence();
#pragma unroll
                for (int k16 = 0; k16 < GEMM_BK / 16; k16++) {
                    const unsigned a = sA(s) + 32 * k16, b = sB(s) + 32 * k16;
                    const int accumulate = (kb > 0 || k16 > 0) ? 1 : 0;
                    wgmmaTile<BN>(acc0, smemDescriptor(a), smemDescriptor(b), accumulate);
                    wgmmaTile<BN>(acc1, smemDescriptor(a + 64 * 128), smemDescriptor(b), accumulate);
                }
                wgmmaCommit();
                fenceRegisters<fragment<BN>()>(acc0); fenceRegisters<fragment<BN>()>(acc1);
                if (kb > 0) {  // the previous stage's products are done: hand its slot back
                    wgmmaWait<1>();
                    release((int)((k - 1) % STAGES));
                }
            }
            barrierArrive(turn(1 - consumer));  // every stage of this tile is in: the other may go on
            wgmmaWait<0>();
            fenceRegisters<fragment<BN>()>(acc0); fenceRegisters<fragment<BN>()>(acc1);
            release((int)((it + kBlocks - 1) % STAGES));

            const unsigned buffer = sEpilogue + consumer * epilogueBytes, biasTile = sBias + consumer * 2 * BN;
            if (EPI == GEMM_DGELU) {
                barrierWait(auxFull(consumer), (i >> 1) & 1);
                epilogueHalf<EPI, BN>(acc0, 0, nullptr, nullptr, sharedPointer(buffer));
                epilogueHalf<EPI, BN>(acc1, 1, nullptr, nullptr, sharedPointer(buffer));
                fenceAsyncShared();
                warpgroupSync(consumer);
                if (t == 0) {  // the tile out, then its buffer back to the producer once read
                    for (int b = 0; b < BN / 64; b++) tmaStore(mapOut, buffer + b * 2 * 8192, n0 + 64 * b, m0);
                    bulkCommit();
                    bulkWaitRead();
                    barrierArrive(auxEmpty(consumer));
                }
            } else {
                unsigned biasPairs[BN / 8];  // GELU: this thread's columns of the tile's bias
                if (EPI == GEMM_GELU) {  // the tile's BN bias values through shared memory (the
                    // previous tile's were read before its epilogue's barriers)
                    if (t < BN / 2) {
                        const unsigned b = *(const unsigned*)(bias + n0 + 2 * t);
                        asm volatile("st.shared.b32 [%0], %1;" :: "r"(biasTile + 4 * t), "r"(b) : "memory");
                    }
                    warpgroupSync(consumer);
#pragma unroll
                    for (int j = 0; j < BN / 8; j++)
                        biasPairs[j] = *(const unsigned*)(sharedPointer(biasTile) + 2 * (8 * j + 2 * (lane % 4)));
                }
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    if (t == 0) bulkWaitRead();  // the staging's previous stores have read it
                    warpgroupSync(consumer);
                    epilogueHalf<EPI, BN>(half == 0 ? acc0 : acc1, half, sharedPointer(buffer), biasPairs, nullptr);
                    fenceAsyncShared();
                    warpgroupSync(consumer);
                    if (t == 0) {
                        const int y = m0 + 64 * half;
                        for (int b = 0; b < BN / 64; b++) {
                            tmaStore(mapOut, buffer + b * 8192, n0 + 64 * b, y);
                            if (EPI == GEMM_GELU) tmaStore(mapAux, buffer + halfBytes<BN>() + b * 8192, n0 + 64 * b, y);
                        }
                        bulkCommit();
                    }
                }
            }
        }
        if (t == 0) bulkWait();  // the last stores are done before the block ends
    }
    clusterSync();  // no block leaves while another may still multicast into it or arrive on its barriers
}

#endif  // GEMM_HOPPER

// MARK: - Entry points

// out (M, N) = A (M, K) . B (N, K)^T through mapOut (boxes of 64 x 64); M multiple of 128
// GEMM_CLUSTER, N of the tile's width, K of 64; grid: whole clusters, at most one block per SM;
// dynamic shared memory: HopperGEMM.sharedBytes. Each kernel's tile width and stages come from the
// host (HopperGEMM.tileN, .stages): the plain product's tiles are as wide as its registers allow;
// the GELU epilogues keep narrower ones, whose accumulators leave registers for their arithmetic.
#ifndef GEMM_BN_PLAIN
#define GEMM_BN_PLAIN 192
#endif
#ifndef GEMM_BN_GELU
#define GEMM_BN_GELU 128
#endif
#ifndef GEMM_BN_DGELU
#define GEMM_BN_DGELU 128
#endif
#ifndef GEMM_STAGES_PLAIN
#define GEMM_STAGES_PLAIN 4
#endif
#ifndef GEMM_STAGES_GELU
#define GEMM_STAGES_GELU 4
#endif
#ifndef GEMM_STAGES_DGELU
#define GEMM_STAGES_DGELU 4
#endif

extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 1) GEMM_CLUSTER_DIMS
gemm_hopper_plain(const __grid_constant__ TensorMap mapA, const __grid_constant__ TensorMap mapB,
                  const __grid_constant__ TensorMap mapOut, int M, int N, int K) {
#ifdef GEMM_HOPPER
    gemmHopper<GEMM_PLAIN, GEMM_STAGES_PLAIN, GEMM_BN_PLAIN>(nullptr, &mapA, &mapB, &mapOut, nullptr, M, N, K);
#else
    __trap();  // only built for sm_90a in bf16; the host never launches it elsewhere
#endif
}

// out = GELU(A . B^T + bias) through mapOut, aux = A . B^T + bias (the GELU input) through mapAux
// (both boxes of 64 x 64); bias (N).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 1) GEMM_CLUSTER_DIMS
gemm_hopper_gelu(const floatX* bias, const __grid_constant__ TensorMap mapA, const __grid_constant__ TensorMap mapB,
                 const __grid_constant__ TensorMap mapOut, const __grid_constant__ TensorMap mapAux, int M, int N, int K) {
#ifdef GEMM_HOPPER
    gemmHopper<GEMM_GELU, GEMM_STAGES_GELU, GEMM_BN_GELU>(bias, &mapA, &mapB, &mapOut, &mapAux, M, N, K);
#else
    __trap();
#endif
}

// out = (A . B^T) * GELU'(aux), aux (M, N) the GELU input read through mapAux, out written through
// mapOut (both boxes of 64 columns x 128 rows).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 1) GEMM_CLUSTER_DIMS
gemm_hopper_dgelu(const __grid_constant__ TensorMap mapA, const __grid_constant__ TensorMap mapB,
                  const __grid_constant__ TensorMap mapOut, const __grid_constant__ TensorMap mapAux, int M, int N, int K) {
#ifdef GEMM_HOPPER
    gemmHopper<GEMM_DGELU, GEMM_STAGES_DGELU, GEMM_BN_DGELU>(nullptr, &mapA, &mapB, &mapOut, &mapAux, M, N, K);
#else
    __trap();
#endif
}

// out (cols, rows) = in (rows, cols)^T, through 32 x 32 tiles of shared memory; block (32, 8).
// Gives the DGELU product its B operand K-major: fcproj's weight (C, 4C) as (4C, C).
extern "C" __global__ void transpose_matrix(floatX* out, const floatX* in, int rows, int cols) {
    __shared__ floatX tile[32][33];
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int y = threadIdx.y; y < 32; y += 8) {
        const int r = r0 + y, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[y][threadIdx.x] = in[(long long)r * cols + c];
    }
    __syncthreads();
    for (int y = threadIdx.y; y < 32; y += 8) {
        const int c = c0 + y, r = r0 + threadIdx.x;
        if (r < rows && c < cols) out[(long long)c * rows + r] = tile[threadIdx.x][y];
    }
}
