// Shared helpers for every kernel file: the activation type floatX (bf16 or fp32, chosen by
// -DLLM_BF16 / -DLLM_FP32 at NVRTC time), conversions, stochastic rounding and reductions.
// No system headers: NVRTC compiles these with nothing but its built-in math functions.
#pragma once

// MARK: - floatX

#if defined(LLM_BF16)
// bf16 as its raw bits; converting in our own helpers keeps cuda_bf16.h (and its compile time) out.
struct bf16 { unsigned short bits; };
typedef bf16 floatX;
__device__ __forceinline__ float toFloat(floatX x) { return __uint_as_float(((unsigned)x.bits) << 16); }
__device__ __forceinline__ floatX fromFloat(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));  // round to nearest even, as llm.c's casts
    floatX r; r.bits = h; return r;
}
#elif defined(LLM_FP32)
typedef float floatX;
__device__ __forceinline__ float toFloat(floatX x) { return x; }
__device__ __forceinline__ floatX fromFloat(float f) { return f; }
#else
#error "compile with -DLLM_BF16 or -DLLM_FP32"
#endif

// MARK: - 16-byte packs

// PACK consecutive floatX values moved with one 128-bit load or store (8 in bf16, 4 in fp32).
// Callers keep the element offsets multiples of PACK (row lengths C, 4C, Vp are).
#define PACK (16 / (int)sizeof(floatX))
struct __align__(16) Pack { floatX v[PACK]; };
__device__ __forceinline__ Pack loadPack(const floatX* p) { return *(const Pack*)p; }
__device__ __forceinline__ void storePack(floatX* p, const Pack& x) { *(Pack*)p = x; }

// 16 bytes to global memory marked streaming (evict first), for data written once and read once
// much later (the flash backward's dS, the classifier's dlogits): it does not push out of the L2
// what blocks are still reading (-3 ms per step for dS, run S6-3).
__device__ __forceinline__ void storeStreaming(void* p, uint4 v) {
    asm volatile("st.global.cs.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}
__device__ __forceinline__ void storePackStreaming(floatX* p, const Pack& x) { storeStreaming(p, *(const uint4*)&x); }

// MARK: - Stochastic rounding

// A 32-bit integer mix (lowbias32 constants): cheap, and good enough to decorrelate rounding.
__device__ __forceinline__ unsigned mixBits(unsigned x) {
    x ^= x >> 16; x *= 0x7feb352dU;
    x ^= x >> 15; x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

// fp32 -> floatX rounding up with probability equal to the discarded fraction, so that many
// small updates to a bf16 value are not all lost; exact in fp32 mode.
__device__ __forceinline__ floatX fromFloatStochastic(float f, unsigned index, unsigned seed) {
#if defined(LLM_BF16)
    unsigned bits = __float_as_uint(f);
    if ((bits & 0x7f800000U) == 0x7f800000U) return fromFloat(f);  // inf and NaN stay as they are
    unsigned noise = mixBits(index ^ mixBits(seed)) & 0xffffU;
    floatX r; r.bits = (unsigned short)((bits + noise) >> 16);
    return r;
#else
    return f;
#endif
}

// MARK: - Reductions (fixed order, so results are bit-identical run to run)

__device__ __forceinline__ float warpSum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffU, v, o);
    return v;
}

__device__ __forceinline__ float warpMax(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffU, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float blockSum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warpSum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warpSum(v);
}

__device__ __forceinline__ float blockMax(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warpMax(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -3.402823466e38f;
    return warpMax(v);
}

#define NEG_INFINITY __int_as_float(0xff800000)

// MARK: - The last block finishes the sum

// A kernel whose blocks each store fp32 partials ends with the fixed-order sum of them itself,
// instead of a second, latency-bound kernel launch: every block counts itself done on a counter
// in global memory, and the block that counts last reads every block's partials.
// Called by every thread of the block after its partial stores; true in the whole block for the
// last of `blocks` blocks counting on `counter`. The fences order this block's stores before its
// count and the last block's loads after every other count. atomicInc wraps the count back to 0 on
// that last arrival, so the counter is ready for the next launch with no memset: launches on the
// one stream run one after another, so two launches never use a counter at the same time.
__device__ __forceinline__ bool lastBlockToArrive(unsigned* counter, unsigned blocks) {
    __threadfence();
    __syncthreads();
    int last = 0;
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        last = atomicInc(counter, blocks - 1) == blocks - 1;
        __threadfence();
    }
    return __syncthreads_or(last);
}

// Sum of column 0 of partial (rows, stride), rows in order. L2 loads (ld.global.cg): the other
// blocks' partials were stored from other SMs, so this SM's L1 must not answer. Unrolled so that
// 16 loads are in flight: a lone block's tail is bound by L2 latency.
__device__ __forceinline__ float sumPartialColumn(const float* partial, int rows, long long stride) {
    float sum = 0.0f;
#pragma unroll 16
    for (int r = 0; r < rows; r++) sum += __ldcg(partial + r * stride);
    return sum;
}

// The same for columns 0..3 at once with 16-byte loads (partial 16-byte aligned, stride % 4 == 0):
// each column's sum in the same order as sumPartialColumn's, four times the bytes per load.
__device__ __forceinline__ float4 sumPartialColumns4(const float* partial, int rows, long long stride) {
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 8
    for (int r = 0; r < rows; r++) {
        float4 v = __ldcg((const float4*)(partial + r * stride));
        sum.x += v.x; sum.y += v.y; sum.z += v.z; sum.w += v.w;
    }
    return sum;
}

// MARK: - Column sums (bias gradients)

// dbias (OC) += column sums of an (N, OC) matrix whose values `packAt(i)` / `valueAt(i)` give at
// element offset i (one 16-byte pack at a PACK-aligned column, or one element), for a kernel with
// grid (column blocks of 32 * PACK columns, row blocks, at most COLUMN_SUM_GROUP^2) and block (32, 8).
// Block (x, y) sums rows [y*rowsPerBlock, ...) of its columns into partial (gridDim.y, OC). A lane
// reads one pack of a row (a warp: 512 bytes of it), the 8 warps every 8th row; the warps' sums
// meet in shared memory in a fixed order. Then two stages, each a short chain of L2 reads: the last
// block of each group of COLUMN_SUM_GROUP row blocks to finish sums the group's partials, in order,
// into the group's first row; the last group to finish adds the group sums, in order, to dbias.
// (One stage, the last block reading all 256 rows through 16 loads in flight a thread, left a tail
// of ~10 us a call.) counters: COLUMN_SUM_COUNTERS per column block (the last-group count, then
// one per group), zero before and after the launch. Every kernel built on this (bias_backward,
// gelu_backward_bias) sums in the same order: the same bits. The host passes the group size
// (CUDAModel.columnSumGroup), which also sizes its counters.
#ifndef COLUMN_SUM_GROUP
#define COLUMN_SUM_GROUP 16
#endif
#define COLUMN_SUM_COUNTERS (1 + COLUMN_SUM_GROUP)
template <typename PackAt, typename ValueAt>
__device__ __forceinline__ void addColumnSums(floatX* dbias, float* partial, unsigned* counters, int N, int OC,
                                              int rowsPerBlock, PackAt packAt, ValueAt valueAt) {
    __shared__ float sums[8][32 * PACK + 1];
    const int col0 = (blockIdx.x * 32 + threadIdx.x) * PACK;
    const int rowStart = blockIdx.y * rowsPerBlock;
    const int rowEnd = min(N, rowStart + rowsPerBlock);
    float acc[PACK];
#pragma unroll
    for (int i = 0; i < PACK; i++) acc[i] = 0.0f;
    if (col0 + PACK <= OC) {
        for (int r = rowStart + threadIdx.y; r < rowEnd; r += 8) {
            Pack p = packAt((long long)r * OC + col0);
#pragma unroll
            for (int i = 0; i < PACK; i++) acc[i] += toFloat(p.v[i]);
        }
    } else if (col0 < OC) {  // a row length that is not a multiple of PACK: the last columns one by one
        for (int r = rowStart + threadIdx.y; r < rowEnd; r += 8)
            for (int i = 0; col0 + i < OC; i++) acc[i] += valueAt((long long)r * OC + col0 + i);
    }
#pragma unroll
    for (int i = 0; i < PACK; i++) sums[threadIdx.y][threadIdx.x * PACK + i] = acc[i];
    __syncthreads();
    const int c = threadIdx.y * 32 + threadIdx.x;  // 256 threads, 32 * PACK <= 256 columns: one each
    const int col = blockIdx.x * 32 * PACK + c;
    if (c < 32 * PACK && col < OC) {
        float total = 0.0f;
        for (int y = 0; y < 8; y++) total += sums[y][c];
        partial[(long long)blockIdx.y * OC + col] = total;
    }
    unsigned* blockCounters = counters + blockIdx.x * COLUMN_SUM_COUNTERS;
    const int group = blockIdx.y / COLUMN_SUM_GROUP, first = group * COLUMN_SUM_GROUP;
    const int members = min(COLUMN_SUM_GROUP, (int)gridDim.y - first);
    const int groups = (gridDim.y + COLUMN_SUM_GROUP - 1) / COLUMN_SUM_GROUP;
    if (!lastBlockToArrive(&blockCounters[1 + group], members)) return;
    if (c < 32 * PACK && col < OC) {  // read, then overwritten by this thread alone
        float* groupRow = partial + (long long)first * OC + col;
        *groupRow = sumPartialColumn(groupRow, members, OC);
    }
    if (!lastBlockToArrive(&blockCounters[0], groups)) return;
    if (c < 32 * PACK && col < OC) {
        float sum = sumPartialColumn(partial + col, groups, (long long)COLUMN_SUM_GROUP * OC);
        dbias[col] = fromFloat(toFloat(dbias[col]) + sum);
    }
}
