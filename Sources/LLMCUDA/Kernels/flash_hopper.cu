// Causal flash attention on Hopper (sm_90a, bf16, head size 64, T a multiple of 128): the forward
// and the backward's key/value kernel on warpgroup MMAs (wgmma) over tiles that TMA loads, with
// the contracts of flash_attention_forward and flash_attention_backward_key_value_ds
// (flash_attention.cu): qkv (B, T, 3C) in, out (B, T, C), lse (B, NH, T) in natural log; dk, dv
// and the stored dS, which flash_attention.cu's row-sum and dq kernels complete.
//
// Why another forward: the mma.sync kernel is latency-bound (a warp's products, softmax and next
// products in one chain, 16 warps an SM to hide it). Here a producer warp streams K and V tiles
// into a ring of shared-memory stages, and two consumer warpgroups of 64 query rows each issue
// their products asynchronously: the scores of the next key tile are on the tensor cores while
// the softmax of this one runs, and one warpgroup's softmax runs beside the other's
// products. The grid is persistent (one block an SM) over items of 128 query rows of one head,
// in groups of heads whose K and V stay in the L2, longest first in a group, each taken by the
// first block free (claimItem). Measured in a d12
// step (S13-12, B=64): forward 0.400 ms a call against the mma.sync one's 0.555 (S12-12),
// key/value 0.759 against 1.075; the step 931.9 -> 893.55 ms with both (S13-4, another
// machine: 922.05 -> 906.35 with the forward alone -> 881.9). docs/gpu-performance.md, thirteenth round.
//
// Shapes per item and key tile of 128: S (64, 128) = Q (64, 64) K^T per consumer, 4 m64n128k16
// products with both operands in shared memory (K-major, 128-byte swizzle, as the GEMM's); P in
// bf16 from S's registers (the accumulator's layout is the A operand's), O (64, 64) += P V, 8
// m64n64k16 products with P from registers and V N-major in shared memory (V's rows are keys).
#include "common.cuh"
#include "hopper.cuh"
#include "flash.cuh"

#define FH_ROWS 128              // query rows per item: two consumers of 64
#define FH_KEYS 128              // keys per streamed tile
#define FH_THREADS 384           // warpgroup 0: the producer (one thread works); 1 and 2: consumers
#define FH_TILE 16384            // bytes of one (128, 64) bf16 tile
#ifndef FH_STAGES
#define FH_STAGES 5              // K and V tiles in flight (the host passes its own: they size shared memory)
#endif
#ifndef FH_GROUP
#define FH_GROUP 64              // heads whose items are walked together (their K and V in the L2)
#endif
#define FH_LOG2E 1.4426950408889634f

#ifdef HOPPER_WGMMA

// Descriptor of an N-major B operand (V: 128-byte rows of 64 channels, one row per key, as TMA
// writes it with the 128-byte swizzle): 8-key groups 1024 bytes apart. With 64 columns the
// operand is one swizzle atom wide, so both offsets name the 8-key step.
__device__ __forceinline__ unsigned long long smemDescriptorNMajor(unsigned addr) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | (64ull << 16) | (64ull << 32) | (1ull << 62);
}

// d (64 x 64, fp32) += A (64 x 16 bf16: this thread's 4 pairs of the fragment) . B (16 x 64, N-major in shared memory).
__device__ __forceinline__ void wgmma64RegisterA(float* d, const unsigned* a, unsigned long long b) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n"
        "}\n"
        : WGMMA_ACC8(d, 0), WGMMA_ACC8(d, 8), WGMMA_ACC8(d, 16), WGMMA_ACC8(d, 24)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

// d (64 x 64, fp32) (+)= A (64 x 16) . B (64 x 16)^T, both K-major in shared memory.
__device__ __forceinline__ void wgmma64(float* d, unsigned long long a, unsigned long long b, int accumulate) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1, 0, 0;\n"
        "}\n"
        : WGMMA_ACC8(d, 0), WGMMA_ACC8(d, 8), WGMMA_ACC8(d, 16), WGMMA_ACC8(d, 24)
        : "l"(a), "l"(b), "r"(accumulate));
}

// bytes (multiple of 16) from global src to shared dst, counted on `bar` (a 1-D bulk copy).
__device__ __forceinline__ void bulkLoad(unsigned dst, const void* src, unsigned bytes, unsigned bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 :: "r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}

// Keeps N registers of bf16 pairs alive (unchanged) until here: an in-flight product reads them.
template <int N>
__device__ __forceinline__ void fencePairs(unsigned* p) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+r"(p[i]) :: "memory");
}

// Item `item` of the persistent kernels: in groups of FH_GROUP heads (a group's K and V, or Q and
// dO, 256 KB a head at T = 1024, stay in the L2 while its tiles are read 1 to `tiles` times), and
// in a group by `tile` 0, 1, .. (the caller's order: the most work first), then head. (All heads'
// tile 0 before any head's tile 1 read K and V from memory for every query tile: 0.9 GB at d12,
// B = 64, most of the forward's time before, S13-2 against S13-3.)
__device__ __forceinline__ void itemOf(int item, int tiles, int heads, int NH, int& tile, int& b, int& h) {
    const int group = item / (FH_GROUP * tiles), first = group * FH_GROUP;
    const int size = min(FH_GROUP, heads - first), r = item - first * tiles;
    tile = r / size;
    const int head = first + r % size;
    b = head / NH;
    h = head % NH;
}

// Which block takes which item: in itemOf's order, a block's first item is blockIdx.x and each
// next one the first no block has claimed yet (a count in global memory), not the one gridDim.x
// further on. Items differ in length (1 to 8 tiles of 128): with the fixed stride the block with
// the longest list had ~5.5 % more tiles than the average (d12, B = 64, either kernel), and a block
// that started late (its SM still busy with the side stream's work) would end late. S17-1, B = 64:
// the forward 0.3338 -> 0.3221 ms, the backward 1.1498 -> 1.1340; d12 steps -4.5 to -5.9 ms. No result
// depends on which block computes an item: each item's outputs are its own. The producer thread
// claims; the last block to finish puts the two counts back to 0 for the next launch (launches on
// the one stream run one after another). schedule: 2 uint32, zero before the launch; null for the
// fixed stride (the host's LLM_ATTENTION_ORDER=stride, for timing).
__device__ __forceinline__ int claimItem(unsigned* schedule, int items, int previous) {
    const int item = (int)gridDim.x + (schedule ? (int)atomicAdd(schedule, 1u) : previous);
    return item < items ? item : -1;
}
// After the block's last (failed) claim.
__device__ __forceinline__ void releaseSchedule(unsigned* schedule) {
    if (!schedule) return;
    __threadfence();
    if (atomicAdd(schedule + 1, 1u) == gridDim.x - 1) {  // every block has made its last claim
        atomicExch(schedule, 0u);
        atomicExch(schedule + 1, 0u);
    }
}

// s (64 x 128) = the consumer's 64 query rows . the key tile^T, issued and committed (not waited for).
__device__ __forceinline__ void issueScores(float* s, unsigned qTile, unsigned kTile) {
    wgmmaFence();
#pragma unroll
    for (int k16 = 0; k16 < 4; k16++)
        wgmma128(s, smemDescriptor(qTile + 32 * k16), smemDescriptor(kTile + 32 * k16), k16 > 0 ? 1 : 0);
    wgmmaCommit();
}

// o (64 x 64) += P (64 x 128, bf16 pairs) . the value tile, issued and committed: STEPS k16 steps
// of 16 keys (8; 4 for the first consumer's diagonal tile, whose keys 64 and on are all masked).
// (Skipping steps on a condition inside the unrolled loop made ptxas serialize every wgmma.)
template <int STEPS = 8>
__device__ __forceinline__ void issueValues(float* o, const unsigned* p, unsigned vTile) {
    wgmmaFence();
#pragma unroll
    for (int k = 0; k < STEPS; k++) wgmma64RegisterA(o, p + 4 * k, smemDescriptorNMajor(vTile + 2048 * k));
    wgmmaCommit();
}

// The online softmax of one tile of raw scores s (the m64n128 fragment: value 4j + 2e + h of a
// thread is row 16 warp + lane / 4 + 8e of the consumer's 64, key 8j + 2 (lane % 4) + h of the
// tile): P = exp2(s * scale - max * scale) as bf16 pairs into p (pair i = values 2i, 2i + 1:
// the A fragment of k16 step i / 4), the running maximum and this thread's partial row sums
// updated; returns through `rescale` the factor the rows' O must be multiplied by. DIAGONAL:
// keys past a row (`row0` = the row of e = 0 in the item's 128) are masked.
template <bool DIAGONAL>
__device__ __forceinline__ void softmaxTile(unsigned* p, float* s, float (&rowMax)[2], float (&rowSum)[2],
                                            float (&rescale)[2], int row0) {
    const float scale = 0.125f * FH_LOG2E;
    const int key0 = 2 * (threadIdx.x % 4);
    float tileMax[2] = {NEG_INFINITY, NEG_INFINITY};
#pragma unroll
    for (int j = 0; j < 16; j++)
#pragma unroll
        for (int e = 0; e < 2; e++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float& v = s[4 * j + 2 * e + h];
                if (DIAGONAL && 8 * j + key0 + h > row0 + 8 * e) v = NEG_INFINITY;
                tileMax[e] = fmaxf(tileMax[e], v);
            }
    float shift[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        tileMax[e] = fmaxf(tileMax[e], __shfl_xor_sync(0xffffffffU, tileMax[e], 1));
        tileMax[e] = fmaxf(tileMax[e], __shfl_xor_sync(0xffffffffU, tileMax[e], 2));
        const float newMax = fmaxf(rowMax[e], tileMax[e]);  // finite: key 0 is in every row's first tile
        rescale[e] = exp2f((rowMax[e] - newMax) * scale);
        rowMax[e] = newMax;
        shift[e] = newMax * scale;
    }
    float sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < 16; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const float v0 = exp2f(fmaf(s[4 * j + 2 * e], scale, -shift[e]));
            const float v1 = exp2f(fmaf(s[4 * j + 2 * e + 1], scale, -shift[e]));
            sum[e] += v0 + v1;
            p[2 * j + e] = packBF16(v0, v1);
        }
#pragma unroll
    for (int e = 0; e < 2; e++) rowSum[e] = rowSum[e] * rescale[e] + sum[e];
}

__device__ __forceinline__ void rescaleRows(float* o, const float (&rescale)[2]) {
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            o[4 * j + 2 * e] *= rescale[e];
            o[4 * j + 2 * e + 1] *= rescale[e];
        }
}

#endif  // HOPPER_WGMMA

// out = softmax(q k^T / 8, causal) v and lse per row, for T a multiple of 128 and head size 64.
// mapQKV: qkv as (B T, 3C) bf16, boxes of 64 columns x 64 rows, 128-byte swizzle. Grid: at most
// one block per SM (persistent), block 384; dynamic shared memory 1024 + 2 x 16384 (Q of two items)
// + FH_STAGES x 32768 (K, V) + barriers + 2 item numbers: CUDAModel.hopperAttentionSharedBytes.
// schedule: claimItem's 2 counts, zero before the launch (and after it).
extern "C" __global__ void __launch_bounds__(FH_THREADS, 1)
flash_attention_forward_hopper(floatX* out, float* lse, const __grid_constant__ TensorMap mapQKV, int B, int T, int NH,
                               unsigned* schedule) {
#ifdef HOPPER_WGMMA
    extern __shared__ unsigned char fhShared[];
    const unsigned base = (sharedAddress(fhShared) + 1023) & ~1023u;
    // Q double-buffered by item (each (128, 64): the two consumers' rows), so that the producer
    // loads the next item's Q and first key tiles while this item's last ones are worked on, not
    // once this item's last product has read Q (S15-1: 0.3262 -> 0.3217 ms at B=64).
    auto sQ = [&](int q) { return base + q * FH_TILE; };
    auto sK = [&](int s) { return base + 2 * FH_TILE + s * 2 * FH_TILE; };
    auto sV = [&](int s) { return sK(s) + FH_TILE; };
    const unsigned bars = base + 2 * FH_TILE + FH_STAGES * 2 * FH_TILE;
    auto qFull = [&](int q) { return bars + 8 * q; };
    auto qEmpty = [&](int q) { return bars + 16 + 8 * q; };
    auto kFull = [&](int s) { return bars + 32 + 8 * s; };
    auto vFull = [&](int s) { return bars + 32 + 8 * (FH_STAGES + s); };
    auto kvEmpty = [&](int s) { return bars + 32 + 8 * (2 * FH_STAGES + s); };
    // The item of each Q buffer (claimItem's), -1 for none left: written by the producer before
    // qFull's arrival, read by the consumers after its wait.
    volatile int* itemSlot = (volatile int*)(fhShared + (bars + 8 * (4 + 3 * FH_STAGES) - sharedAddress(fhShared)));

    const int tiles = T / FH_ROWS, heads = B * NH, items = tiles * heads, C = NH * 64;
    // The query tiles with the most keys (the last) first.
    auto decode = [&](int item, int& qt, int& b, int& h) {
        itemOf(item, tiles, heads, NH, qt, b, h);
        qt = tiles - 1 - qt;
    };
    const int warpgroup = threadIdx.x / 128, t = threadIdx.x % 128;
    if (threadIdx.x == 0) {
        for (int q = 0; q < 2; q++) {
            barrierInit(qFull(q), 1);
            barrierInit(qEmpty(q), 8);  // one arrival per consumer warp
        }
        for (int s = 0; s < FH_STAGES; s++) { barrierInit(kFull(s), 1); barrierInit(vFull(s), 1); barrierInit(kvEmpty(s), 8); }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    if (warpgroup == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;" ::: "memory");
        if (t == 0) {  // the producer: each item's Q, then its key tiles 0..qt, K and V on barriers of their own
            unsigned it = 0;
            for (int item = blockIdx.x, j = 0;; item = claimItem(schedule, items, item), j++) {
                const int qb = j % 2;
                barrierWait(qEmpty(qb), ((j / 2) & 1) ^ 1);
                itemSlot[qb] = item;
                if (item < 0) {
                    barrierArrive(qFull(qb));
                    break;
                }
                int qt, b, h;
                decode(item, qt, b, h);
                const int row0 = b * T + qt * FH_ROWS;
                barrierExpect(qFull(qb), FH_TILE);
                tmaLoad(sQ(qb), &mapQKV, qFull(qb), h * 64, row0);
                tmaLoad(sQ(qb) + FH_TILE / 2, &mapQKV, qFull(qb), h * 64, row0 + 64);
                for (int kt = 0; kt <= qt; kt++, it++) {
                    const int s = (int)(it % FH_STAGES);
                    const int key0 = b * T + kt * FH_KEYS;
                    barrierWait(kvEmpty(s), ((it / FH_STAGES) & 1) ^ 1);
                    barrierExpect(kFull(s), FH_TILE);
                    tmaLoad(sK(s), &mapQKV, kFull(s), C + h * 64, key0);
                    tmaLoad(sK(s) + FH_TILE / 2, &mapQKV, kFull(s), C + h * 64, key0 + 64);
                    barrierExpect(vFull(s), FH_TILE);
                    tmaLoad(sV(s), &mapQKV, vFull(s), 2 * C + h * 64, key0);
                    tmaLoad(sV(s) + FH_TILE / 2, &mapQKV, vFull(s), 2 * C + h * 64, key0 + 64);
                }
            }
            releaseSchedule(schedule);
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;" ::: "memory");
        const int consumer = warpgroup - 1, warp = t / 32, lane = t % 32;
        const int rowInItem = 64 * consumer + 16 * warp + lane / 4;  // e = 0's row; e = 1's is 8 further
        unsigned it = 0;
        for (int j = 0;; j++) {
            const int qb = j % 2;
            barrierWait(qFull(qb), (j / 2) & 1);
            const int item = itemSlot[qb];
            if (item < 0) break;
            int qt, b, h;
            decode(item, qt, b, h);
            const unsigned qTile = sQ(qb) + consumer * (FH_TILE / 2);
            float o[32], s[64];
            unsigned p[32];
#pragma unroll
            for (int i = 0; i < 32; i++) o[i] = 0.0f;
            float rowMax[2] = {NEG_INFINITY, NEG_INFINITY}, rowSum[2] = {0.0f, 0.0f}, rescale[2];
            // The first tile's scores and softmax; then per tile: the next tile's scores issued, this
            // tile's P V issued, the next softmax while both run, O rescaled once P V is done.
            barrierWait(kFull((int)(it % FH_STAGES)), (it / FH_STAGES) & 1);
            issueScores(s, qTile, sK((int)(it % FH_STAGES)));
            wgmmaWait<0>();
            fenceRegisters<64>(s);
            if (qt == 0) { arriveOncePerWarp(qEmpty(qb)); softmaxTile<true>(p, s, rowMax, rowSum, rescale, rowInItem); }
            else softmaxTile<false>(p, s, rowMax, rowSum, rescale, rowInItem);
#pragma unroll 2
            for (int kt = 0; kt < qt; kt++, it++) {
                const int stage = (int)(it % FH_STAGES), next = (int)((it + 1) % FH_STAGES);
                barrierWait(kFull(next), ((it + 1) / FH_STAGES) & 1);
                issueScores(s, qTile, sK(next));
                barrierWait(vFull(stage), (it / FH_STAGES) & 1);
                fenceRegisters<32>(o);
                issueValues(o, p, sV(stage));
                unsigned pNext[32];
                wgmmaWait<1>();  // the scores (committed first) are in; P V may still run
                fenceRegisters<64>(s);
                if (kt + 1 == qt) {
                    arriveOncePerWarp(qEmpty(qb));  // the item's last product reading Q is done
                    softmaxTile<true>(pNext, s, rowMax, rowSum, rescale, rowInItem);
                } else {
                    softmaxTile<false>(pNext, s, rowMax, rowSum, rescale, rowInItem);
                }
                wgmmaWait<0>();
                fenceRegisters<32>(o);
                fencePairs<32>(p);
                arriveOncePerWarp(kvEmpty(stage));
                rescaleRows(o, rescale);
#pragma unroll
                for (int i = 0; i < 32; i++) p[i] = pNext[i];
            }
            {  // the last (diagonal) tile's P V
                const int stage = (int)(it % FH_STAGES);
                barrierWait(vFull(stage), (it / FH_STAGES) & 1);
                fenceRegisters<32>(o);
                if (consumer == 0) issueValues<4>(o, p, sV(stage));
                else issueValues(o, p, sV(stage));
                wgmmaWait<0>();
                fenceRegisters<32>(o);
                fencePairs<32>(p);
                arriveOncePerWarp(kvEmpty(stage));
                it++;
            }
            // The rows' sums over the 4 threads that hold them; out = O / sum, lse = log(sum) + max.
            const float scale = 0.125f * FH_LOG2E;
            float inverse[2];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float sum = rowSum[e];
                sum += __shfl_xor_sync(0xffffffffU, sum, 1);
                sum += __shfl_xor_sync(0xffffffffU, sum, 2);
                inverse[e] = 1.0f / sum;
                const int row = qt * FH_ROWS + rowInItem + 8 * e;
                if (lane % 4 == 0) lse[((long long)b * NH + h) * T + row] = (rowMax[e] * scale + log2f(sum)) / FH_LOG2E;
            }
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int row = qt * FH_ROWS + rowInItem + 8 * e;
                unsigned* dst = (unsigned*)(out + ((long long)b * T + row) * C + h * 64 + 2 * (lane % 4));
#pragma unroll
                for (int jj = 0; jj < 8; jj++)
                    dst[4 * jj] = packBF16(o[4 * jj + 2 * e] * inverse[e], o[4 * jj + 2 * e + 1] * inverse[e]);
            }
        }
    }
#else
    __trap();  // only built for sm_90a in bf16; the host never launches it elsewhere
#endif
}

// MARK: - Backward: the key/value kernel on warpgroup MMAs
//
// dk, dv and the stored dS of flash_attention_backward_key_value_ds (flash_attention.cu), which
// the dq kernel then reads: same outputs, same dS layout. An item is 128 keys of one head, a
// consumer's 64 keys the dS layout's key tile; the query tiles of 64 rows stream through a ring
// with their lse and D rows. Per query tile and consumer, with its K and V (64, 64) in shared
// memory: S^T = K Q^T and dP^T = V dO^T (m64n64k16, both operands in shared memory), P^T =
// exp(S^T - lse), dS^T = P^T (dP^T - D) in registers, then dV += P^T dO and dK += dS^T Q with
// P^T and dS^T as register A operands and dO, Q N-major (the same shared tiles the scores read
// K-major).

#ifndef FB_STAGES
#define FB_STAGES 4              // query tiles (Q, dO, lse, D) in flight (the host passes its own: they size shared memory)
#endif
#define FB_STAGE 17408           // bytes of a stage: Q and dO (64, 64) bf16, 64 lse and 64 D floats, to 1024

// dk, dv (the k and v parts of dqkv) and dS (dsPair's layout, every fragment of every causal pair)
// for T a multiple of 128 and head size 64. mapQKV: qkv as (B T, 3C), mapDout: dout as (B T, C),
// both boxes of 64 x 64; lse (B, NH, T) natural log, dsum (B, NH, T) = D. Grid: at most one block
// per SM (persistent), block 384; dynamic shared memory CUDAModel.hopperKeyValueSharedBytes;
// schedule: claimItem's 2 counts, zero before the launch (and after it).
extern "C" __global__ void __launch_bounds__(FH_THREADS, 1)
flash_attention_backward_key_value_hopper(floatX* dqkv, floatX* dS, const __grid_constant__ TensorMap mapQKV,
                                          const __grid_constant__ TensorMap mapDout, const float* lse, const float* dsum,
                                          int B, int T, int NH, unsigned* schedule) {
#ifdef HOPPER_WGMMA
    extern __shared__ unsigned char fbShared[];
    const unsigned base = (sharedAddress(fbShared) + 1023) & ~1023u;
    // K and V of the item, double-buffered by item: buffer i holds K (128, 64) then V (128, 64).
    auto sK = [&](int i) { return base + i * 2 * FH_TILE; };
    auto sV = [&](int i) { return sK(i) + FH_TILE; };
    auto sQ = [&](int s) { return base + 4 * FH_TILE + s * FB_STAGE; };
    auto sG = [&](int s) { return sQ(s) + FH_TILE / 2; };
    auto sLse = [&](int s) { return sQ(s) + FH_TILE; };
    auto sD = [&](int s) { return sLse(s) + 256; };
    const unsigned bars = base + 4 * FH_TILE + FB_STAGES * FB_STAGE;
    auto kvFull = [&](int i) { return bars + 8 * i; };
    auto kvEmpty = [&](int i) { return bars + 16 + 8 * i; };
    auto full = [&](int s) { return bars + 32 + 8 * s; };
    auto empty = [&](int s) { return bars + 32 + 8 * (FB_STAGES + s); };
    // The item of each K, V buffer (claimItem's), -1 for none left: as the forward's.
    volatile int* itemSlot = (volatile int*)(fbShared + (bars + 8 * (4 + 2 * FB_STAGES) - sharedAddress(fbShared)));

    const int tiles = T / FH_ROWS, tiles64 = T / 64, heads = B * NH, items = tiles * heads, C = NH * 64;
    // The key tiles with the most query tiles (the first) first.
    auto decode = [&](int item, int& kt, int& b, int& h) { itemOf(item, tiles, heads, NH, kt, b, h); };
    const int warpgroup = threadIdx.x / 128, t = threadIdx.x % 128;
    if (threadIdx.x == 0) {
        for (int i = 0; i < 2; i++) { barrierInit(kvFull(i), 1); barrierInit(kvEmpty(i), 8); }
        for (int s = 0; s < FB_STAGES; s++) { barrierInit(full(s), 1); barrierInit(empty(s), 8); }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    if (warpgroup == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;" ::: "memory");
        if (t == 0) {  // the producer: each item's K and V, then its query tiles 2 kt .. tiles64 - 1
            unsigned it = 0;
            for (int item = blockIdx.x, j = 0;; item = claimItem(schedule, items, item), j++) {
                const int buffer = j & 1;
                barrierWait(kvEmpty(buffer), ((j >> 1) & 1) ^ 1);
                itemSlot[buffer] = item;
                if (item < 0) {
                    barrierArrive(kvFull(buffer));
                    break;
                }
                int kt, b, h;
                decode(item, kt, b, h);
                const int key0 = b * T + kt * FH_ROWS;
                barrierExpect(kvFull(buffer), 2 * FH_TILE);
                for (int half = 0; half < 2; half++) {
                    tmaLoad(sK(buffer) + half * (FH_TILE / 2), &mapQKV, kvFull(buffer), C + h * 64, key0 + 64 * half);
                    tmaLoad(sV(buffer) + half * (FH_TILE / 2), &mapQKV, kvFull(buffer), 2 * C + h * 64, key0 + 64 * half);
                }
                const long long stats = ((long long)b * NH + h) * T;
                for (int qt = 2 * kt; qt < tiles64; qt++, it++) {
                    const int s = (int)(it % FB_STAGES);
                    barrierWait(empty(s), ((it / FB_STAGES) & 1) ^ 1);
                    barrierExpect(full(s), FH_TILE + 2 * 256);
                    tmaLoad(sQ(s), &mapQKV, full(s), h * 64, b * T + qt * 64);
                    tmaLoad(sG(s), &mapDout, full(s), h * 64, b * T + qt * 64);
                    bulkLoad(sLse(s), lse + stats + qt * 64, 256, full(s));
                    bulkLoad(sD(s), dsum + stats + qt * 64, 256, full(s));
                }
            }
            releaseSchedule(schedule);
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;" ::: "memory");
        const int consumer = warpgroup - 1, warp = t / 32, lane = t % 32;
        const float scale = 0.125f * FH_LOG2E;
        unsigned it = 0;
        for (int j = 0;; j++) {
            const int buffer = j & 1;
            barrierWait(kvFull(buffer), (j >> 1) & 1);
            const int item = itemSlot[buffer];
            if (item < 0) break;
            int kt, b, h;
            decode(item, kt, b, h);
            const int keyTile = 2 * kt + consumer;  // this consumer's 64 keys: dS's key tile
            const unsigned kTile = sK(buffer) + consumer * (FH_TILE / 2), vTile = sV(buffer) + consumer * (FH_TILE / 2);
            const int key = 16 * warp + lane / 4;  // e = 0's key in the 64; e = 1's is 8 further
            float dk[32], dv[32];
#pragma unroll
            for (int i = 0; i < 32; i++) { dk[i] = 0.0f; dv[i] = 0.0f; }
            floatX* pairs = dS + dsPair(b, h, NH, tiles64, 0, keyTile) + (warp * 4 * 32 + lane) * 8;
            // S^T and dP^T of the stage's query tile, issued and committed.
            auto issueScoresT = [&](float* sT, float* dpT, int s) {
                wgmmaFence();
#pragma unroll
                for (int k16 = 0; k16 < 4; k16++)
                    wgmma64(sT, smemDescriptor(kTile + 32 * k16), smemDescriptor(sQ(s) + 32 * k16), k16 > 0 ? 1 : 0);
#pragma unroll
                for (int k16 = 0; k16 < 4; k16++)
                    wgmma64(dpT, smemDescriptor(vTile + 32 * k16), smemDescriptor(sG(s) + 32 * k16), k16 > 0 ? 1 : 0);
                wgmmaCommit();
            };
            // P^T and dS^T of query tile qt (stage s) into pT, dsT, and dS stored: value 4j + 2e + h
            // is key `key` + 8e, query 8j + 2 (lane % 4) + h of the tile.
            auto probabilities = [&](unsigned* pT, unsigned* dsT, const float* sT, const float* dpT, int s, int qt) {
                const float* rowLse = (const float*)(fbShared + (sLse(s) - sharedAddress(fbShared)));
                const float* rowD = (const float*)(fbShared + (sD(s) - sharedAddress(fbShared)));
                const bool masked = qt == keyTile;  // the diagonal pair: queries before a key are masked
#pragma unroll
                for (int jj = 0; jj < 8; jj++) {
                    const int q = 8 * jj + 2 * (lane % 4);
                    const float2 l = *(const float2*)(rowLse + q), d = *(const float2*)(rowD + q);
                    const float l0 = l.x * FH_LOG2E, l1 = l.y * FH_LOG2E;
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float p0 = exp2f(fmaf(sT[4 * jj + 2 * e], scale, -l0));
                        float p1 = exp2f(fmaf(sT[4 * jj + 2 * e + 1], scale, -l1));
                        if (masked) {
                            if (q < key + 8 * e) p0 = 0.0f;
                            if (q + 1 < key + 8 * e) p1 = 0.0f;
                        }
                        pT[2 * jj + e] = packBF16(p0, p1);
                        dsT[2 * jj + e] = packBF16(p0 * (dpT[4 * jj + 2 * e] - d.x), p1 * (dpT[4 * jj + 2 * e + 1] - d.y));
                    }
                }
                floatX* pair = pairs + dsPair(0, 0, 0, tiles64, qt, 0);
#pragma unroll
                for (int g = 0; g < 4; g++)
                    storeStreaming(pair + g * 32 * 8, make_uint4(dsT[4 * g], dsT[4 * g + 1], dsT[4 * g + 2], dsT[4 * g + 3]));
            };
            // dV += P^T dO and dK += dS^T Q from the stage's tiles, issued and committed.
            auto issueGradients = [&](const unsigned* pT, const unsigned* dsT, int s) {
                fenceRegisters<32>(dv);
                fenceRegisters<32>(dk);
                wgmmaFence();
#pragma unroll
                for (int k = 0; k < 4; k++) wgmma64RegisterA(dv, pT + 4 * k, smemDescriptorNMajor(sG(s) + 2048 * k));
#pragma unroll
                for (int k = 0; k < 4; k++) wgmma64RegisterA(dk, dsT + 4 * k, smemDescriptorNMajor(sQ(s) + 2048 * k));
                wgmmaCommit();
            };
            // Waits for those products, then hands stage s back to the producer.
            auto retireGradients = [&](unsigned* pT, unsigned* dsT, int s) {
                wgmmaWait<0>();
                fenceRegisters<32>(dv);
                fenceRegisters<32>(dk);
                fencePairs<16>(pT);
                fencePairs<16>(dsT);
                arriveOncePerWarp(empty(s));
            };
            // Software-pipelined: the next query tile's S^T and dP^T are issued before this tile's
            // gradient products, and its P^T and dS^T computed while those run (S13-11: backward
            // 1.1714 -> 1.1618 ms at B=64, d12 steps 887.45 -> 885.65 ms).
            int qt = 2 * kt;
            if (qt < keyTile) {  // consumer 1's first tile: every query before its keys (released once in)
                const int s = (int)(it % FB_STAGES);
                barrierWait(full(s), (it / FB_STAGES) & 1);
                arriveOncePerWarp(empty(s));
                qt++;
                it++;
            }
            float sT[32], dpT[32];
            unsigned pT[16], dsT[16];
            {
                const int s = (int)(it % FB_STAGES);
                barrierWait(full(s), (it / FB_STAGES) & 1);
                issueScoresT(sT, dpT, s);
                wgmmaWait<0>();
                fenceRegisters<32>(sT);
                fenceRegisters<32>(dpT);
                probabilities(pT, dsT, sT, dpT, s, qt);
            }
#pragma unroll 2
            for (; qt < tiles64 - 1; qt++, it++) {
                const int s = (int)(it % FB_STAGES), next = (int)((it + 1) % FB_STAGES);
                barrierWait(full(next), ((it + 1) / FB_STAGES) & 1);
                issueScoresT(sT, dpT, next);
                issueGradients(pT, dsT, s);
                unsigned pNext[16], dsNext[16];
                wgmmaWait<1>();  // the scores (committed first) are in; the gradient products may still run
                fenceRegisters<32>(sT);
                fenceRegisters<32>(dpT);
                probabilities(pNext, dsNext, sT, dpT, next, qt + 1);
                retireGradients(pT, dsT, s);
#pragma unroll
                for (int i = 0; i < 16; i++) { pT[i] = pNext[i]; dsT[i] = dsNext[i]; }
            }
            {  // the last query tile's gradient products
                const int s = (int)(it % FB_STAGES);
                issueGradients(pT, dsT, s);
                retireGradients(pT, dsT, s);
                it++;
            }
            arriveOncePerWarp(kvEmpty(buffer));
            // dk / 8 and dv to their rows of dqkv.
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const long long row = (long long)b * T + keyTile * 64 + key + 8 * e;
                unsigned* dkRow = (unsigned*)(dqkv + row * 3 * C + C + h * 64 + 2 * (lane % 4));
                unsigned* dvRow = (unsigned*)(dqkv + row * 3 * C + 2 * C + h * 64 + 2 * (lane % 4));
#pragma unroll
                for (int jj = 0; jj < 8; jj++) {
                    dkRow[4 * jj] = packBF16(dk[4 * jj + 2 * e] * 0.125f, dk[4 * jj + 2 * e + 1] * 0.125f);
                    dvRow[4 * jj] = packBF16(dv[4 * jj + 2 * e], dv[4 * jj + 2 * e + 1]);
                }
            }
        }
    }
#else
    __trap();  // only built for sm_90a in bf16; the host never launches it elsewhere
#endif
}
