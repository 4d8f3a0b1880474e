// Causal flash attention on tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate) for head
// size 64, bf16 mode only; the scalar kernels of attention.cu stay the fp32 path and the reference.
// Same contract as attention.cu: qkv (B, T, 3C) in, out (B, T, C), lse (B, NH, T) natural-log row
// statistics; the backward recomputes the scores and writes dqkv without atomics (deterministic).
//
// Each kernel is a block of 4 warps on a 64-row tile (a warp owns 16 rows): the forward, and a
// backward split so that every output has one writer: key-major for dk and dv, query-major for dq.
// The backward runs D = rowsum(dout * out) first, then the key/value kernel, which also stores each
// (key tile, query tile) pair's dS in bf16, then the dq kernel, one product per pair over that dS:
// 5 products in all, at the price of dS through memory (~0.8 GiB at d12, B=64, T=1024, which the
// model keeps in its logits buffer, free during the layers' backward). The query kernel, which
// recomputes s and dp for dq (7 products, no dS buffer, writes D itself), remains for
// LLM_FLASH_DQ=0. What makes them fast:
// - the 1/8 * log2(e) score scale folds into the exponent's FFMA (the maximum is taken on raw scores);
// - the forward's row sums are one more tensor-core product (P times ones), not FADDs;
// - the diagonal tile is a separate instantiation (the causal compare only there), and on it the
//   work masked for a whole warp is skipped (keys past the warp's last row);
// - the backward walks a 64-row streamed tile as two 32-row parts, which halves the score
//   accumulators and their bf16 fragments (fewer registers: 3 blocks per SM), and lets a warp skip
//   a part that is fully masked on the diagonal tile; the query kernel issues the next part's
//   products before the current part's dS (software pipelining inside a warp);
// - ldmatrix addresses are 32-bit shared addresses with the lane's offset folded in once, so every
//   (k, n) step is an immediate offset: no address registers for the compiler to keep live.
// Scripts/flash-emu runs these kernels on the CPU against a float64 reference.
#include "common.cuh"
#include "flash.cuh"

#if defined(LLM_BF16)

#define FA_HS 64                    // head size these kernels are written for
#define FA_ROWS 64                  // query (or key) rows per block: 4 warps x 16 rows
#define FA_THREADS 128
#define FA_PAD 72                   // shared row length in bf16: the 16 spare bytes put ldmatrix's 8 rows in 8 bank groups
#define FA_TILE (FA_ROWS * FA_PAD)  // bf16 elements in one shared (64, 64) tile
#define FA_LOG2E 1.4426950408889634f

// MARK: - PTX helpers

__device__ __forceinline__ unsigned sharedAddress(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16 bytes global -> shared without going through registers; zero-filled when !valid.
__device__ __forceinline__ void copyAsync16(unsigned dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void commitCopies() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most one group (the latest prefetch) is still in flight, or none.
__device__ __forceinline__ void waitAllButLatest() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
__device__ __forceinline__ void waitAll() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

// Four 8x8 bf16 matrices from shared memory at a 32-bit shared address (lanes 8i..8i+7 give the
// rows of matrix i), plain or transposed.
__device__ __forceinline__ void loadMatrices(unsigned (&r)[4], unsigned address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}
__device__ __forceinline__ void loadMatricesTransposed(unsigned (&r)[4], unsigned address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}

// d (16x8 fp32) += a (16x16 bf16, row-major fragment) * b (16x8 bf16, column fragment b0 b1).
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a bf16 pair (lo in the low half: the lower column), round to nearest even.
__device__ __forceinline__ unsigned packPair(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// An 8x8 bf16 matrix transposed across the warp: each lane's pair (row lane / 4, columns
// 2 (lane % 4) and +1) in, the same pair of the transpose out.
__device__ __forceinline__ unsigned transposeMatrix(unsigned a) {
    unsigned r;
    asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(r) : "r"(a));
    return r;
}

// MARK: - Tiles and fragments
//
// A warp owns 16 rows of a 64-row block. Its (16, 64) fp32 accumulators are 8 "n-tiles" of 8
// columns, acc[n][e]: row g = lane / 4 (+8 for e >= 2), column n * 8 + 2 * (lane % 4) + (e & 1).
// A bf16 A-operand of 16 rows x 64 columns is 4 k-steps of 16 columns, frag[k][4]. Shared tiles
// are (64, FA_PAD) bf16, rows padded so that ldmatrix's rows fall in distinct bank groups.

// Byte offsets of a lane's ldmatrix row: A fragments of 16 rows (add the warp's first row),
// B fragments of two n-tiles (rows of the tile are the n dimension), and transposed B fragments
// (rows of the tile are the k dimension). The helpers below take a tile's shared address plus one
// of these, and step through k and n by immediate offsets.
__device__ __forceinline__ unsigned laneRowsA(int lane) { return ((lane % 16) * FA_PAD + (lane / 16) * 8) * 2; }
__device__ __forceinline__ unsigned laneRowsB(int lane) { return ((lane % 8 + (lane / 16) * 8) * FA_PAD + ((lane / 8) % 2) * 8) * 2; }
__device__ __forceinline__ unsigned laneRowsBT(int lane) { return ((lane % 8 + ((lane / 8) % 2) * 8) * FA_PAD + (lane / 16) * 8) * 2; }

// Rows [row0, row0 + 64) of one head's (T, 64) slice (rows `stride` elements apart) into a shared
// tile; rows at or past T become zeros. Issued by all 128 threads; completes at the next wait.
// For the first tiles of a block; the streamed tiles use loadTileAt.
__device__ __forceinline__ void loadTile(bf16* tile, const bf16* src, int stride, int row0, int T) {
#pragma unroll
    for (int i = 0; i < FA_ROWS * FA_HS / 8 / FA_THREADS; i++) {
        int chunk = threadIdx.x + i * FA_THREADS, r = chunk / 8, col = (chunk % 8) * 8;
        bool ok = row0 + r < T;
        copyAsync16(sharedAddress(tile + r * FA_PAD + col), src + (long long)(ok ? row0 + r : 0) * stride + col, ok);
    }
}

// loadTile with less address math: dst = the tile's shared address + tileChunk(), src = the head's
// slice at the tile's first row + streamChunk(stride); rows = T - the tile's first row. Rows at or
// past T are zero-filled (their source address is `head`, the slice's row 0, as loadTile).
__device__ __forceinline__ unsigned tileChunk() { return ((threadIdx.x / 8) * FA_PAD + (threadIdx.x % 8) * 8) * 2; }
__device__ __forceinline__ long long streamChunk(int stride) { return (long long)(threadIdx.x / 8) * stride + (threadIdx.x % 8) * 8; }
__device__ __forceinline__ void loadTileAt(unsigned dst, const bf16* src, const bf16* head, int stride, int rows) {
#pragma unroll
    for (int i = 0; i < FA_ROWS * FA_HS / 8 / FA_THREADS; i++) {  // 16 rows per step
        bool ok = (int)(threadIdx.x / 8) + i * 16 < rows;
        copyAsync16(dst + i * 16 * FA_PAD * 2, ok ? src + (long long)i * 16 * stride : head, ok);
    }
}

// frag = 16 rows x 64 channels at `rows` (shared address + laneRowsA + first row * FA_PAD * 2).
__device__ __forceinline__ void loadRows(unsigned (&frag)[4][4], unsigned rows) {
#pragma unroll
    for (int k = 0; k < 4; k++) loadMatrices(frag[k], rows + k * 32);
}

// acc (16, 8 * NT) = a (16 rows, 64 channels) . tile^T over 8 * NT tile rows; b = tile address + laneRowsB.
// n-tiles past lastN (pairs n, n + 1 with n > lastN) are skipped: left zero.
template <int NT>
__device__ __forceinline__ void multiplyTransposed(float (&acc)[NT][4], const unsigned (&a)[4][4], unsigned b,
                                                   int lastN = NT) {
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[n][e] = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int n = 0; n < NT; n += 2) {  // one ldmatrix feeds n-tiles n and n + 1
            if (n > lastN) continue;
            unsigned m[4];
            loadMatrices(m, b + (n * 8 * FA_PAD + k * 16) * 2);
            mma(acc[n], a[k], m[0], m[1]);
            mma(acc[n + 1], a[k], m[2], m[3]);
        }
}

// acc (16, 64) += a (16 rows, 16 * KS tile rows) . tile over 16 * KS tile rows; b = tile address + laneRowsBT.
// k-steps past lastK are skipped.
template <int KS>
__device__ __forceinline__ void multiplyAccumulate(float (&acc)[8][4], const unsigned (&a)[KS][4], unsigned b,
                                                   int lastK = KS) {
#pragma unroll
    for (int k = 0; k < KS; k++)
#pragma unroll
        for (int n = 0; n < 8; n += 2) {
            if (k > lastK) continue;
            unsigned m[4];
            loadMatricesTransposed(m, b + (k * 16 * FA_PAD + n * 8) * 2);
            mma(acc[n], a[k], m[0], m[1]);
            mma(acc[n + 1], a[k], m[2], m[3]);
        }
}

// An accumulator (16, 16 * KS) rounded to bf16 as an A operand of KS k-steps (its columns become k).
template <int KS>
__device__ __forceinline__ void toFragments(unsigned (&frag)[KS][4], const float (&acc)[2 * KS][4]) {
#pragma unroll
    for (int k = 0; k < KS; k++) {
        frag[k][0] = packPair(acc[2 * k][0], acc[2 * k][1]);
        frag[k][1] = packPair(acc[2 * k][2], acc[2 * k][3]);
        frag[k][2] = packPair(acc[2 * k + 1][0], acc[2 * k + 1][1]);
        frag[k][3] = packPair(acc[2 * k + 1][2], acc[2 * k + 1][3]);
    }
}

// Writes the warp's accumulator rows (times `scale`) to dst rows (`stride` elements apart) below T.
__device__ __forceinline__ void storeRows(bf16* dst, int stride, const float (&acc)[8][4], float scale, int row0, int T, int lane) {
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int row = row0 + lane / 4 + half * 8;
        if (row >= T) continue;
        unsigned* out = (unsigned*)(dst + (long long)row * stride + 2 * (lane % 4));
#pragma unroll
        for (int n = 0; n < 8; n++) out[n * 4] = packPair(acc[n][2 * half] * scale, acc[n][2 * half + 1] * scale);
    }
}

// MARK: - Forward

// The online softmax of a warp's scores s (raw, 16 rows x 64 keys) and o += P v; vBT = v tile +
// laneRowsBT. DIAGONAL: keys past a row are masked, and the k-steps (16 keys) past `warp` skipped.
// The row sums come from the tensor cores: P times a column of ones, one more m16n8k16 per k-step
// in place of 32 FADD per lane and tile (~2-3 ms of the forward's ~53 per step: docs/gpu-performance.md).
// They sum the bf16 P that multiplies v, so o is normalised by exactly its weights' sum; rowSum is
// that accumulator (rows g and g + 8 in elements 0 and 2, every column holding the row's sum).
template <bool DIAGONAL>
__device__ __forceinline__ void forwardSoftmax(float (&o)[8][4], float (&rowMax)[2], float (&rowSum)[4], float (&s)[8][4],
                                               unsigned vBT, int warp, int lane) {
    const float scale = 0.125f * FA_LOG2E;
    float tileMax[2] = {NEG_INFINITY, NEG_INFINITY};
    const int last = warp * 16 + lane / 4 - 2 * (lane % 4);  // key n * 8 + (e & 1) of the tile is masked past last + (e / 2) * 8
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            if (DIAGONAL && n * 8 + (e & 1) > last + (e / 2) * 8) s[n][e] = NEG_INFINITY;
            tileMax[e / 2] = fmaxf(tileMax[e / 2], s[n][e]);
        }
    float rescale[2], shift[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(0xffffffffU, tileMax[r], 1));
        tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(0xffffffffU, tileMax[r], 2));
        float newMax = fmaxf(rowMax[r], tileMax[r]);  // raw scores; finite: key 0 is in every row's first tile
        rescale[r] = exp2f((rowMax[r] - newMax) * scale);
        rowMax[r] = newMax;
        shift[r] = newMax * scale;
    }
#pragma unroll
    for (int e = 0; e < 4; e++) rowSum[e] *= rescale[e / 2];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            o[n][e] *= rescale[e / 2];
            s[n][e] = exp2f(fmaf(s[n][e], scale, -shift[e / 2]));
        }
    unsigned p[4][4];
    toFragments<4>(p, s);
    // On the diagonal, keys 16k.. for k > warp are past all the warp's rows: P is zero there.
    multiplyAccumulate<4>(o, p, vBT, DIAGONAL ? warp : 4);
    const unsigned ones = 0x3F803F80U;  // bf16 1.0, twice: a B fragment of ones
#pragma unroll
    for (int k = 0; k < 4; k++)
        if (!DIAGONAL || k <= warp) mma(rowSum, p[k], ones, ones);
}

// One key tile of the forward for a warp: scores, online softmax, o += P v; kB = k tile + laneRowsB,
// vBT = v tile + laneRowsBT. DIAGONAL: the tile holding the warp's own rows, where keys past a row
// are masked, and the n-tiles (8 keys) past the warp's last row (2 * warp + 1) and the k-steps
// (16 keys) past `warp` are skipped outright.
template <bool DIAGONAL>
__device__ __forceinline__ void forwardTile(float (&o)[8][4], float (&rowMax)[2], float (&rowSum)[4], const unsigned (&q)[4][4],
                                            unsigned kB, unsigned vBT, int warp, int lane) {
    float s[8][4];
    // On the diagonal, n-tiles n, n + 1 past 2 * warp hold keys past all the warp's rows.
    multiplyTransposed<8>(s, q, kB, DIAGONAL ? 2 * warp : 8);
    forwardSoftmax<DIAGONAL>(o, rowMax, rowSum, s, vBT, warp, lane);
}

// out = softmax(q k^T / 8, causal) v and lse per row. Grid (ceil(T / 64), NH, B), block 128; the
// last query tiles (the most key tiles) start first. Shared 5 tiles = 46080 bytes: q, and k and v
// double-buffered (tile kt + 1 streams in while tile kt is used). Each warp keeps its 16 query rows
// as fragments, a running maximum (of raw scores) and sum (of base-2 exponentials) and the (16, 64)
// output in registers.
extern "C" __global__ void __launch_bounds__(FA_THREADS, 4)  // 128 registers (16 bytes of stack on sm_90): 4 blocks per SM
flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    bf16* qTile = flashShared;
    bf16* kTiles = qTile + FA_TILE;
    bf16* vTiles = kTiles + 2 * FA_TILE;
    const int C = NH * FA_HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int rowBase = qt * FA_ROWS + warp * 16 + lane / 4;
    const bf16* qBase = qkv + (long long)b * T * C3 + h * FA_HS;
    const bf16* kBase = qBase + C;
    const bf16* vBase = qBase + 2 * C;
    const unsigned kB = sharedAddress(kTiles) + laneRowsB(lane), vBT = sharedAddress(vTiles) + laneRowsBT(lane);

    loadTile(qTile, qBase, C3, qt * FA_ROWS, T);
    loadTile(kTiles, kBase, C3, 0, T);
    loadTile(vTiles, vBase, C3, 0, T);
    commitCopies();
    unsigned q[4][4];
    float o[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[n][e] = 0.0f;
    float rowMax[2] = {NEG_INFINITY, NEG_INFINITY}, rowSum[4] = {0.0f, 0.0f, 0.0f, 0.0f};

    for (int kt = 0; kt <= qt; kt++) {
        const unsigned buffer = (kt % 2) * FA_TILE * 2;
        if (kt < qt) {
            const unsigned next = ((kt + 1) % 2) * FA_TILE * 2 + tileChunk();
            const long long at = (long long)(kt + 1) * FA_ROWS * C3 + streamChunk(C3);
            loadTileAt(sharedAddress(kTiles) + next, kBase + at, kBase, C3, T - (kt + 1) * FA_ROWS);
            loadTileAt(sharedAddress(vTiles) + next, vBase + at, vBase, C3, T - (kt + 1) * FA_ROWS);
        }
        commitCopies();
        waitAllButLatest();
        __syncthreads();
        if (kt == 0) loadRows(q, sharedAddress(qTile) + laneRowsA(lane) + warp * 16 * FA_PAD * 2);
        if (kt < qt) forwardTile<false>(o, rowMax, rowSum, q, kB + buffer, vBT + buffer, warp, lane);
        else forwardTile<true>(o, rowMax, rowSum, q, kB + buffer, vBT + buffer, warp, lane);
        __syncthreads();
    }

    const float scale = 0.125f * FA_LOG2E;
    float inverse[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const float sum = rowSum[2 * r];
        inverse[r] = 1.0f / sum;
        int row = rowBase + r * 8;
        if (lane % 4 == 0 && row < T) lse[((long long)b * NH + h) * T + row] = (rowMax[r] * scale + log2f(sum)) / FA_LOG2E;
    }
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[n][e] *= inverse[e / 2];
    storeRows(out + (long long)b * T * C + h * FA_HS, C, o, 1.0f, qt * FA_ROWS + warp * 16, T, lane);
}

// MARK: - Backward
//
// With P = exp(S - lse) recomputed from the forward's statistics and D = rowsum(dout * out):
// dS = P * (dout v^T - D), dq = dS k / 8, dk = dS^T q / 8, dv = P^T dout. Two kernels so that each
// output has one writer: query-major for dq (which also writes D), key-major for dk and dv.

// MARK: Query kernel: software-pipelined 32-key parts

// s = q k^T and dp = dout v^T of one 32-key part (kB, vB: the part's k and v rows + laneRowsB).
__device__ __forceinline__ void queryScores(float (&s)[4][4], float (&dp)[4][4], const unsigned (&q)[4][4], const unsigned (&g)[4][4],
                                            unsigned kB, unsigned vB) {
    multiplyTransposed<4>(s, q, kB);
    multiplyTransposed<4>(dp, g, vB);
}

// dS of one 32-key part (`half` of its tile) from its s and dp, then dq += dS k (kBT: the part's k
// rows + laneRowsBT). DIAGONAL: keys past a row are masked.
template <bool DIAGONAL>
__device__ __forceinline__ void queryUpdate(float (&dq)[8][4], float (&s)[4][4], const float (&dp)[4][4], const float (&rowLse)[2],
                                            const float (&rowD)[2], int half, unsigned kBT, int warp, int lane) {
    const float scale = 0.125f * FA_LOG2E;
    const int last = warp * 16 + lane / 4 - 2 * (lane % 4);
#pragma unroll
    for (int n = 0; n < 4; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float p = exp2f(fmaf(s[n][e], scale, -rowLse[e / 2]));
            if (DIAGONAL && half * 32 + n * 8 + (e & 1) > last + (e / 2) * 8) p = 0.0f;
            s[n][e] = p * (dp[n][e] - rowD[e / 2]);  // dS
        }
    unsigned ds[2][4];
    toFragments<2>(ds, s);
    multiplyAccumulate<2>(dq, ds, kBT);
}

// The q part of dqkv, and dsum (B, NH, T) = D. Grid (ceil(T / 64), NH, B), block 128; the last
// query tiles start first. The key tiles are walked as a stream of 32-key parts in which the
// products of the next part are issued before the dS and dq update of the current one (software
// pipelining in a warp: the parts' scores ping-pong between two register sets). The next tile's
// first part is needed while the current tile is still read, so k and v are triple-buffered.
// Shared 6 tiles + 64 floats = 55552 bytes: 3 x k, 3 x v (the third buffers hold q and dout until
// their fragments are loaded) and D of the tile's rows, which comes from global `out` (no out tile).
extern "C" __global__ void __launch_bounds__(FA_THREADS, 3)  // 168 registers: 3 blocks per SM
flash_attention_backward_query(bf16* dqkv, float* dsum, const bf16* qkv, const bf16* out, const bf16* dout,
                               const float* lse, int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    bf16* kTiles = flashShared;           // 3 x (64, PAD): key tile j in buffer j % 3
    bf16* vTiles = kTiles + 3 * FA_TILE;  // 3 x (64, PAD)
    bf16* qTile = kTiles + 2 * FA_TILE;   // until the fragments are loaded
    bf16* gTile = vTiles + 2 * FA_TILE;
    float* tileD = (float*)(vTiles + 3 * FA_TILE);  // (64)
    const int C = NH * FA_HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int rowBase = qt * FA_ROWS + warp * 16 + lane / 4;
    const bf16* qBase = qkv + (long long)b * T * C3 + h * FA_HS;
    const bf16* kBase = qBase + C;
    const bf16* vBase = qBase + 2 * C;
    const unsigned kB = sharedAddress(kTiles) + laneRowsB(lane), vB = sharedAddress(vTiles) + laneRowsB(lane);
    const unsigned kBT = sharedAddress(kTiles) + laneRowsBT(lane);
    const unsigned upper = 32 * FA_PAD * 2;  // the second 32-key part of a tile
    const unsigned chunk = tileChunk();

    loadTile(qTile, qBase, C3, qt * FA_ROWS, T);
    loadTile(gTile, dout + (long long)b * T * C + h * FA_HS, C, qt * FA_ROWS, T);
    loadTile(kTiles, kBase, C3, 0, T);
    loadTile(vTiles, vBase, C3, 0, T);
    commitCopies();  // group: q, dout, k 0, v 0
    if (qt >= 1) {
        loadTile(kTiles + FA_TILE, kBase, C3, FA_ROWS, T);
        loadTile(vTiles + FA_TILE, vBase, C3, FA_ROWS, T);
    }
    commitCopies();  // group: k 1, v 1
    const long long stats = ((long long)b * NH + h) * T;
    float rowLse[2], rowD[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = rowBase + r * 8;
        rowLse[r] = row < T ? lse[stats + row] * FA_LOG2E : 0.0f;
    }
    waitAllButLatest();
    __syncthreads();
    unsigned q[4][4], g[4][4];
    {
        const unsigned rows = laneRowsA(lane) + warp * 16 * FA_PAD * 2;
        loadRows(q, sharedAddress(qTile) + rows);
        loadRows(g, sharedAddress(gTile) + rows);
        int row = threadIdx.x / 2, c0 = (threadIdx.x % 2) * 32;
        float d = 0.0f;
        if (qt * FA_ROWS + row < T) {  // D of the tile's rows: a pair of threads per row, 32 channels each
            const uint4* o16 = (const uint4*)(out + ((long long)b * T + qt * FA_ROWS + row) * C + h * FA_HS + c0);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const uint4 u = o16[j];
                const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                for (int t = 0; t < 4; t++) {
                    const int c = c0 + j * 8 + 2 * t;
                    d += toFloat(gTile[row * FA_PAD + c]) * __uint_as_float(w[t] << 16);
                    d += toFloat(gTile[row * FA_PAD + c + 1]) * __uint_as_float(w[t] & 0xffff0000U);
                }
            }
        }
        d += __shfl_xor_sync(0xffffffffU, d, 1);
        if (threadIdx.x % 2 == 0) {
            tileD[row] = d;
            if (qt * FA_ROWS + row < T) dsum[stats + qt * FA_ROWS + row] = d;
        }
        __syncthreads();
        rowD[0] = tileD[warp * 16 + lane / 4];
        rowD[1] = tileD[warp * 16 + lane / 4 + 8];
    }
    float dq[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dq[n][e] = 0.0f;
    float sA[4][4], dpA[4][4], sB[4][4], dpB[4][4];  // parts (tile, 0) and (tile, 1)
    queryScores(sA, dpA, q, g, kB, vB);

    for (int kt = 0; kt < qt; kt++) {
        waitAll();  // k and v tile kt + 1
        __syncthreads();  // ... for all threads; every warp is done with buffer (kt + 2) % 3 (tile kt - 1, or q and dout)
        if (kt + 2 <= qt) {
            const unsigned next = ((kt + 2) % 3) * FA_TILE * 2 + chunk;
            const int row = (kt + 2) * FA_ROWS;
            const long long at = (long long)row * C3 + streamChunk(C3);
            loadTileAt(sharedAddress(kTiles) + next, kBase + at, kBase, C3, T - row);
            loadTileAt(sharedAddress(vTiles) + next, vBase + at, vBase, C3, T - row);
        }
        commitCopies();
        const unsigned cur = (kt % 3) * FA_TILE * 2, nxt = ((kt + 1) % 3) * FA_TILE * 2;
        queryScores(sB, dpB, q, g, kB + cur + upper, vB + cur + upper);
        queryUpdate<false>(dq, sA, dpA, rowLse, rowD, 0, kBT + cur, warp, lane);
        queryScores(sA, dpA, q, g, kB + nxt, vB + nxt);
        queryUpdate<false>(dq, sB, dpB, rowLse, rowD, 1, kBT + cur + upper, warp, lane);
    }
    // The diagonal tile qt (already waited for; sA, dpA hold its first part). Warps 0 and 1 (rows
    // 0..31 of the tile) skip the second part: all its keys are past their rows.
    const unsigned cur = (qt % 3) * FA_TILE * 2;
    if (warp >= 2) queryScores(sB, dpB, q, g, kB + cur + upper, vB + cur + upper);
    queryUpdate<true>(dq, sA, dpA, rowLse, rowD, 0, kBT + cur, warp, lane);
    if (warp >= 2) queryUpdate<true>(dq, sB, dpB, rowLse, rowD, 1, kBT + cur + upper, warp, lane);
    storeRows(dqkv + (long long)b * T * C3 + h * FA_HS, C3, dq, 0.125f, qt * FA_ROWS + warp * 16, T, lane);
}

// MARK: Key/value kernel: 32-query halves

// One query tile of the key/value kernel for a warp, as two halves of 32 queries: dv += P^T dout,
// dk += dS^T q, with the warp's 16 keys as k and v fragments. qB, gB: the q and dout tiles +
// laneRowsB; qBT, gBT: + laneRowsBT. MASKED: the diagonal tile (queries before a key are masked; a
// half whose queries all precede the warp's keys is skipped: the first half for warps 2 and 3) or a
// tile that reaches past T (those rows have zero q and dout, masked anyway).
template <bool MASKED>
__device__ __forceinline__ void keyValueTile(float (&dk)[8][4], float (&dv)[8][4], const unsigned (&k)[4][4], const unsigned (&v)[4][4],
                                             unsigned qB, unsigned gB, unsigned qBT, unsigned gBT, const float* rowLse, const float* rowD,
                                             bool diagonal, int queryBase, int keyBase, int T, int warp, int lane,
                                             bf16* pairDS) {
    const float scale = 0.125f * FA_LOG2E;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        if (MASKED && diagonal && (half + 1) * 32 <= warp * 16) continue;
        const unsigned rows = half * 32 * FA_PAD * 2;
        float sT[4][4], dpT[4][4];  // (16 keys, 32 queries)
        multiplyTransposed<4>(sT, k, qB + rows);
        multiplyTransposed<4>(dpT, v, gB + rows);
#pragma unroll
        for (int n = 0; n < 4; n++) {
            const int i = half * 32 + n * 8 + 2 * (lane % 4);  // queries i, i + 1 of the tile
            const float2 l = *(const float2*)(rowLse + i), d = *(const float2*)(rowD + i);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = exp2f(fmaf(sT[n][e], scale, -((e & 1) ? l.y : l.x)));
                if (MASKED) {
                    int query = queryBase + i + (e & 1);
                    if (query < keyBase + (e / 2) * 8 || query >= T) p = 0.0f;
                }
                sT[n][e] = p;
                dpT[n][e] = p * (dpT[n][e] - ((e & 1) ? d.y : d.x));  // dS^T
            }
        }
        unsigned pT[2][4], dsT[2][4];
        toFragments<2>(pT, sT);
        toFragments<2>(dsT, dpT);
        if (pairDS) {  // (16 keys, 16 queries) fragments f = warp * 4 + query group, 16 bytes per lane
#pragma unroll
            for (int kk = 0; kk < 2; kk++)
                storeStreaming(pairDS + ((warp * 4 + half * 2 + kk) * 32 + lane) * 8,
                               make_uint4(dsT[kk][0], dsT[kk][1], dsT[kk][2], dsT[kk][3]));
        }
        multiplyAccumulate<2>(dv, pT, gBT + rows);
        multiplyAccumulate<2>(dk, dsT, qBT + rows);
    }
}

// The k and v parts of dqkv. Grid (ceil(T / 64), NH, B), block 128. Each warp keeps its 16 key
// rows (k and v fragments) and their (16, 64) dk and dv in registers and walks the query tiles at
// or after its own. Shared 6 tiles and 2 x 2 x 64 floats = 56320 bytes: k, v, and q, dout and their
// row statistics (lse in base 2, D) double-buffered.
// STORE_DS: also write each (key tile, query tile) pair's dS^T to dS, for the dq kernel.
template <bool STORE_DS>
__device__ __forceinline__ void keyValueBlock(bf16* flashShared, bf16* dqkv, bf16* dS, const bf16* qkv, const bf16* dout,
                                              const float* lse, const float* dsum, int T, int NH) {
    bf16* kTile = flashShared;
    bf16* vTile = kTile + FA_TILE;
    bf16* qTiles = vTile + FA_TILE;
    bf16* gTiles = qTiles + 2 * FA_TILE;
    float* lseTiles = (float*)(gTiles + 2 * FA_TILE);
    float* dTiles = lseTiles + 2 * FA_ROWS;
    const int C = NH * FA_HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int kt = blockIdx.x;
    const int tiles = gridDim.x;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int keyBase = kt * FA_ROWS + warp * 16 + lane / 4;
    const bf16* qBase = qkv + (long long)b * T * C3 + h * FA_HS;
    const bf16* gBase = dout + (long long)b * T * C + h * FA_HS;
    const float* lseBase = lse + ((long long)b * NH + h) * T;
    const float* dBase = dsum + ((long long)b * NH + h) * T;
    const unsigned kA = sharedAddress(kTile) + laneRowsA(lane) + warp * 16 * FA_PAD * 2;
    const unsigned vA = kA + FA_TILE * 2;
    const unsigned qB = sharedAddress(qTiles) + laneRowsB(lane), gB = sharedAddress(gTiles) + laneRowsB(lane);
    const unsigned qBT = sharedAddress(qTiles) + laneRowsBT(lane), gBT = sharedAddress(gTiles) + laneRowsBT(lane);

    auto loadStatistics = [&](int qt, int buf) {
        int i = threadIdx.x % FA_ROWS, row = qt * FA_ROWS + i;
        if (threadIdx.x < FA_ROWS) lseTiles[buf * FA_ROWS + i] = row < T ? lseBase[row] * FA_LOG2E : 0.0f;
        else dTiles[buf * FA_ROWS + i] = row < T ? dBase[row] : 0.0f;
    };
    loadTile(kTile, qBase + C, C3, kt * FA_ROWS, T);
    loadTile(vTile, qBase + 2 * C, C3, kt * FA_ROWS, T);
    loadTile(qTiles, qBase, C3, kt * FA_ROWS, T);
    loadTile(gTiles, gBase, C, kt * FA_ROWS, T);
    commitCopies();
    loadStatistics(kt, 0);
    unsigned k[4][4] = {}, v[4][4] = {};  // loaded at the first query tile (once its copies have landed)
    float dk[8][4], dv[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) { dk[n][e] = 0.0f; dv[n][e] = 0.0f; }

    for (int qt = kt; qt < tiles; qt++) {
        const int buf = (qt - kt) % 2;
        const unsigned buffer = buf * FA_TILE * 2;
        if (qt + 1 < tiles) {
            const unsigned next = (1 - buf) * FA_TILE * 2 + tileChunk();
            const int row = (qt + 1) * FA_ROWS;
            loadTileAt(sharedAddress(qTiles) + next, qBase + (long long)row * C3 + streamChunk(C3), qBase, C3, T - row);
            loadTileAt(sharedAddress(gTiles) + next, gBase + (long long)row * C + streamChunk(C), gBase, C, T - row);
            loadStatistics(qt + 1, 1 - buf);
        }
        commitCopies();
        waitAllButLatest();
        __syncthreads();
        if (qt == kt) {
            loadRows(k, kA);
            loadRows(v, vA);
        }
        const float* rowLse = lseTiles + buf * FA_ROWS;
        const float* rowD = dTiles + buf * FA_ROWS;
        bf16* pairDS = STORE_DS ? dS + dsPair(b, h, NH, tiles, qt, kt) : nullptr;
        if (qt == kt || (qt + 1) * FA_ROWS > T)
            keyValueTile<true>(dk, dv, k, v, qB + buffer, gB + buffer, qBT + buffer, gBT + buffer, rowLse, rowD,
                               qt == kt, qt * FA_ROWS, keyBase, T, warp, lane, pairDS);
        else
            keyValueTile<false>(dk, dv, k, v, qB + buffer, gB + buffer, qBT + buffer, gBT + buffer, rowLse, rowD,
                                false, qt * FA_ROWS, keyBase, T, warp, lane, pairDS);
        __syncthreads();
    }
    bf16* dst = dqkv + (long long)b * T * C3 + h * FA_HS;
    storeRows(dst + C, C3, dk, 0.125f, kt * FA_ROWS + warp * 16, T, lane);
    storeRows(dst + 2 * C, C3, dv, 1.0f, kt * FA_ROWS + warp * 16, T, lane);
}

extern "C" __global__ void __launch_bounds__(FA_THREADS, 3)  // 168 registers (8 bytes of stack on sm_90): 3 blocks per SM
flash_attention_backward_key_value(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse, const float* dsum,
                                   int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    keyValueBlock<false>(flashShared, dqkv, nullptr, qkv, dout, lse, dsum, T, NH);
}

// The key/value kernel that also writes dS (dsPair's layout), each pair as 16 (16, 16) A fragments
// of dS^T (fragment warp * 4 + query group: 32 lanes x 16 bytes). Fragments that the kernel skips
// on the diagonal (all queries before all keys) are left unwritten.
extern "C" __global__ void __launch_bounds__(FA_THREADS, 3)
flash_attention_backward_key_value_ds(bf16* dqkv, bf16* dS, const bf16* qkv, const bf16* dout, const float* lse,
                                      const float* dsum, int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    keyValueBlock<true>(flashShared, dqkv, dS, qkv, dout, lse, dsum, T, NH);
}

// MARK: dq from the stored dS

// dq (the q part of dqkv) = dS k / 8 from the key/value kernel's dS: one product per pair, no
// scores recomputed. Grid (ceil(T / 64), NH, B), block 128, the last query tiles first; each warp
// owns 16 query rows. Its dS (16 queries, 64 keys) per key tile is 4 stored dS^T fragments (key
// groups 0..3, its query group), read straight into registers one tile ahead and transposed with
// movmatrix; k tiles are double-buffered in shared memory (2 tiles = 18432 bytes).
extern "C" __global__ void __launch_bounds__(FA_THREADS)
flash_attention_backward_dq(bf16* dqkv, const bf16* dS, const bf16* qkv, int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    const int C = NH * FA_HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z, tiles = gridDim.x;
    const int qt = tiles - 1 - blockIdx.x;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const bf16* kBase = qkv + (long long)b * T * C3 + C + h * FA_HS;
    const unsigned kBT = sharedAddress(flashShared) + laneRowsBT(lane);
    // This warp's fragment of pair (qt, 0) key group 0; key group g is 4 * 32 * 8 elements further.
    const bf16* pairs = dS + dsPair(b, h, NH, tiles, qt, 0) + (warp * 32 + lane) * 8;
    loadTile(flashShared, kBase, C3, 0, T);
    commitCopies();
    // The fragments of pair j (on the diagonal only key groups <= warp: the others are not written).
    auto loadPair = [&](uint4 (&f)[4], int j) {
#pragma unroll
        for (int g = 0; g < 4; g++)
            if (j < qt || g <= warp) f[g] = *(const uint4*)(pairs + (long long)j * 4096 + g * 4 * 32 * 8);
    };
    uint4 next[4] = {};
    loadPair(next, 0);
    float dq[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dq[n][e] = 0.0f;
    for (int kt = 0; kt <= qt; kt++) {
        const unsigned cur = (kt % 2) * FA_TILE * 2;
        if (kt < qt) {  // k tile kt + 1 into the other buffer (free: the barrier closing step kt - 1)
            const int row = (kt + 1) * FA_ROWS;
            loadTileAt(sharedAddress(flashShared) + ((kt + 1) % 2) * FA_TILE * 2 + tileChunk(),
                       kBase + (long long)row * C3 + streamChunk(C3), kBase, C3, T - row);
        }
        commitCopies();
        // dS (16 queries, 16 keys of group g) = the stored dS^T fragment transposed: its 8x8 parts
        // (keys, queries) [0 2; 1 3] become (queries, keys) [0^T 1^T; 2^T 3^T].
        unsigned a[4][4];
#pragma unroll
        for (int g = 0; g < 4; g++) {
            a[g][0] = transposeMatrix(next[g].x);
            a[g][1] = transposeMatrix(next[g].z);
            a[g][2] = transposeMatrix(next[g].y);
            a[g][3] = transposeMatrix(next[g].w);
        }
        const bool diagonal = kt == qt;
        if (kt < qt) loadPair(next, kt + 1);  // in flight during this tile's product
        waitAllButLatest();  // k tile kt
        __syncthreads();
        // On the diagonal, key groups past the warp's own hold keys after all its queries (zero dS,
        // never written).
        multiplyAccumulate<4>(dq, a, kBT + cur, diagonal ? warp : 4);
        __syncthreads();  // every warp is done with buffer kt % 2 before tile kt + 2 goes there
    }
    storeRows(dqkv + (long long)b * T * C3 + h * FA_HS, C3, dq, 0.125f, qt * FA_ROWS + warp * 16, T, lane);
}

// dsum (B, NH, T) = D, the rowsum of dout * out over each head's 64 channels, which the key/value
// kernel reads (the query kernel writes it itself). Eight lanes per (b, t, h) row, 8 channels (16
// bytes of each input) apiece; rows in memory order. Block 128 (16 rows), grid ceil(B T NH / 16).
extern "C" __global__ void __launch_bounds__(FA_THREADS)
flash_attention_backward_rowsum(float* dsum, const bf16* out, const bf16* dout, int B, int T, int NH) {
    const long long row = ((long long)blockIdx.x * FA_THREADS + threadIdx.x) / 8;  // (b * T + t) * NH + h
    const bool valid = row < (long long)B * T * NH;
    const int part = threadIdx.x % 8;
    float d = 0.0f;
    if (valid) {
        const uint4 o = *(const uint4*)(out + row * FA_HS + part * 8), g = *(const uint4*)(dout + row * FA_HS + part * 8);
        const unsigned ow[4] = {o.x, o.y, o.z, o.w}, gw[4] = {g.x, g.y, g.z, g.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            d += __uint_as_float(ow[i] << 16) * __uint_as_float(gw[i] << 16);
            d += __uint_as_float(ow[i] & 0xffff0000U) * __uint_as_float(gw[i] & 0xffff0000U);
        }
    }
    d += __shfl_xor_sync(0xffffffffU, d, 4);
    d += __shfl_xor_sync(0xffffffffU, d, 2);
    d += __shfl_xor_sync(0xffffffffU, d, 1);
    if (valid && part == 0) {
        const int h = (int)(row % NH), t = (int)((row / NH) % T);
        const long long b = row / ((long long)NH * T);
        dsum[(b * NH + h) * T + t] = d;
    }
}

#endif
