// Causal flash attention on tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate) for head
// size 64, bf16 mode only; the scalar kernels of attention.cu stay the fp32 path and the reference.
// Same contract as attention.cu: qkv (B, T, 3C) in, out (B, T, C), lse (B, NH, T) natural-log row
// statistics; the backward recomputes the scores and writes dqkv without atomics (deterministic).
#include "common.cuh"

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
// Waits until at most one group (the latest prefetch) is still in flight.
__device__ __forceinline__ void waitAllButLatest() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

// Four 8x8 bf16 matrices from shared memory; each lane passes one row address (lanes 8i..8i+7: matrix i).
__device__ __forceinline__ void loadMatrices(unsigned (&r)[4], const bf16* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(sharedAddress(row)));
}
__device__ __forceinline__ void loadMatricesTransposed(unsigned (&r)[4], const bf16* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(sharedAddress(row)));
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

// MARK: - Tiles and fragments
//
// A warp owns 16 rows of a 64-row block. Its (16, 64) fp32 accumulators are 8 "n-tiles" of 8
// columns, acc[n][e]: row g = lane / 4 (+8 for e >= 2), column n * 8 + 2 * (lane % 4) + (e & 1).
// A bf16 A-operand of 16 rows x 64 columns is 4 k-steps of 16 columns, frag[k][4].

// Rows [row0, row0 + 64) of one head's (T, 64) slice (rows `stride` elements apart) into a shared
// tile; rows at or past T become zeros. Issued by all 128 threads; completes at the next wait.
__device__ __forceinline__ void loadTile(bf16* tile, const bf16* src, int stride, int row0, int T) {
#pragma unroll
    for (int i = 0; i < FA_ROWS * FA_HS / 8 / FA_THREADS; i++) {
        int chunk = threadIdx.x + i * FA_THREADS, r = chunk / 8, col = (chunk % 8) * 8;
        bool ok = row0 + r < T;
        copyAsync16(sharedAddress(tile + r * FA_PAD + col), src + (long long)(ok ? row0 + r : 0) * stride + col, ok);
    }
}

// The warp's 16 rows of a shared tile as A fragments (rows x 64 channels).
__device__ __forceinline__ void loadRows(unsigned (&frag)[4][4], const bf16* tile, int warp, int lane) {
#pragma unroll
    for (int k = 0; k < 4; k++) loadMatrices(frag[k], tile + (warp * 16 + lane % 16) * FA_PAD + k * 16 + (lane / 16) * 8);
}

// acc (16, 64) = a (16 rows, 64 channels) . tile^T, tile (64 rows, 64 channels): the scores of the
// warp's rows against the tile's rows.
__device__ __forceinline__ void multiplyTransposed(float (&acc)[8][4], const unsigned (&a)[4][4], const bf16* tile, int lane) {
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[n][e] = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int n = 0; n < 8; n += 2) {  // one ldmatrix feeds n-tiles n and n + 1
            unsigned b[4];
            loadMatrices(b, tile + (n * 8 + lane % 8 + (lane / 16) * 8) * FA_PAD + k * 16 + ((lane / 8) % 2) * 8);
            mma(acc[n], a[k], b[0], b[1]);
            mma(acc[n + 1], a[k], b[2], b[3]);
        }
}

// acc (16, 64) += a (16 rows, 64 tile rows) . tile, tile (64 rows, 64 channels).
__device__ __forceinline__ void multiplyAccumulate(float (&acc)[8][4], const unsigned (&a)[4][4], const bf16* tile, int lane) {
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int n = 0; n < 8; n += 2) {
            unsigned b[4];
            loadMatricesTransposed(b, tile + (k * 16 + lane % 8 + ((lane / 8) % 2) * 8) * FA_PAD + n * 8 + (lane / 16) * 8);
            mma(acc[n], a[k], b[0], b[1]);
            mma(acc[n + 1], a[k], b[2], b[3]);
        }
}

// An accumulator (16, 64) rounded to bf16 as the A operand of the next product (its columns become k).
__device__ __forceinline__ void toFragments(unsigned (&frag)[4][4], const float (&acc)[8][4]) {
#pragma unroll
    for (int k = 0; k < 4; k++) {
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

// out = softmax(q k^T / 8, causal) v and lse per row. Grid (ceil(T / 64), NH, B), block 128,
// shared 5 tiles (q, double-buffered k and v) = 46080 bytes. Each warp keeps its 16 query rows, a
// running maximum and sum (base-2 units) and the (16, 64) output in registers.
extern "C" __global__ void __launch_bounds__(FA_THREADS, 4)  // 128 registers: 4 blocks (16 warps) per SM
flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    bf16* qTile = flashShared;
    bf16* kTiles = qTile + FA_TILE;      // 2 x (64, PAD)
    bf16* vTiles = kTiles + 2 * FA_TILE; // 2 x (64, PAD)
    const int C = NH * FA_HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int qt = gridDim.x - 1 - blockIdx.x;  // the longest (last) query tiles start first
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int rowBase = qt * FA_ROWS + warp * 16 + lane / 4;  // this thread's rows: rowBase, rowBase + 8
    const bf16* qBase = qkv + (long long)b * T * C3 + h * FA_HS;
    const bf16* kBase = qBase + C;
    const bf16* vBase = qBase + 2 * C;
    const float scoreScale = 0.125f * FA_LOG2E;  // 1 / sqrt(64), and exp -> exp2

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
    float rowMax[2] = {NEG_INFINITY, NEG_INFINITY}, rowSum[2] = {0.0f, 0.0f};

    for (int kt = 0; kt <= qt; kt++) {
        const bf16* kTile = kTiles + (kt % 2) * FA_TILE;
        const bf16* vTile = vTiles + (kt % 2) * FA_TILE;
        if (kt < qt) {  // prefetch the next key/value tile into the other buffer
            loadTile(kTiles + ((kt + 1) % 2) * FA_TILE, kBase, C3, (kt + 1) * FA_ROWS, T);
            loadTile(vTiles + ((kt + 1) % 2) * FA_TILE, vBase, C3, (kt + 1) * FA_ROWS, T);
        }
        commitCopies();
        waitAllButLatest();
        __syncthreads();
        if (kt == 0) loadRows(q, qTile, warp, lane);

        float s[8][4];
        multiplyTransposed(s, q, kTile, lane);
        float tileMax[2] = {NEG_INFINITY, NEG_INFINITY};
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float v = s[n][e] * scoreScale;
                int key = kt * FA_ROWS + n * 8 + 2 * (lane % 4) + (e & 1);
                if (kt == qt && key > rowBase + (e / 2) * 8) v = NEG_INFINITY;  // causal: only the diagonal tile
                s[n][e] = v;
                tileMax[e / 2] = fmaxf(tileMax[e / 2], v);
            }
        float rescale[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {  // the four lanes of a row group hold the row between them
            tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(0xffffffffU, tileMax[r], 1));
            tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(0xffffffffU, tileMax[r], 2));
            float newMax = fmaxf(rowMax[r], tileMax[r]);  // finite: key 0 is in every row's first tile
            rescale[r] = exp2f(rowMax[r] - newMax);
            rowMax[r] = newMax;
            rowSum[r] *= rescale[r];
        }
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                o[n][e] *= rescale[e / 2];
                s[n][e] = exp2f(s[n][e] - rowMax[e / 2]);
                rowSum[e / 2] += s[n][e];
            }
        unsigned p[4][4];
        toFragments(p, s);
        multiplyAccumulate(o, p, vTile, lane);
        __syncthreads();  // all warps are done with this buffer before it is refilled
    }

    float inverse[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        rowSum[r] += __shfl_xor_sync(0xffffffffU, rowSum[r], 1);
        rowSum[r] += __shfl_xor_sync(0xffffffffU, rowSum[r], 2);
        inverse[r] = 1.0f / rowSum[r];
        int row = rowBase + r * 8;
        if (lane % 4 == 0 && row < T) lse[((long long)b * NH + h) * T + row] = (rowMax[r] + log2f(rowSum[r])) / FA_LOG2E;
    }
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[n][e] *= inverse[e / 2];
    storeRows(out + (long long)b * T * C + h * FA_HS, C, o, 1.0f, qt * FA_ROWS + warp * 16, T, lane);
}

// MARK: - Backward

// With P = exp(S - lse) recomputed from the forward's statistics and D = rowsum(dout * out):
// dS = P * (dout v^T - D), dq = dS k / 8, dk = dS^T q / 8, dv = P^T dout. Two kernels so that each
// output has one writer: query-major for dq (which also writes D), key-major for dk and dv.

// The q part of dqkv, and dsum (B, NH, T) = D. Grid (ceil(T / 64), NH, B), block 128, shared 7 tiles
// (q, dout, out, double-buffered k and v) and 64 floats (D) = 64768 bytes.
extern "C" __global__ void __launch_bounds__(FA_THREADS, 3)  // 168 registers: 3 blocks per SM
flash_attention_backward_query(bf16* dqkv, float* dsum, const bf16* qkv, const bf16* out, const bf16* dout,
                               const float* lse, int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    bf16* qTile = flashShared;
    bf16* gTile = qTile + FA_TILE;
    bf16* oTile = gTile + FA_TILE;
    bf16* kTiles = oTile + FA_TILE;       // 2 x (64, PAD)
    bf16* vTiles = kTiles + 2 * FA_TILE;  // 2 x (64, PAD)
    float* tileD = (float*)(vTiles + 2 * FA_TILE);  // (64)
    const int C = NH * FA_HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int rowBase = qt * FA_ROWS + warp * 16 + lane / 4;
    const bf16* qBase = qkv + (long long)b * T * C3 + h * FA_HS;
    const bf16* kBase = qBase + C;
    const bf16* vBase = qBase + 2 * C;
    const float scoreScale = 0.125f * FA_LOG2E;

    loadTile(qTile, qBase, C3, qt * FA_ROWS, T);
    loadTile(gTile, dout + (long long)b * T * C + h * FA_HS, C, qt * FA_ROWS, T);
    loadTile(oTile, out + (long long)b * T * C + h * FA_HS, C, qt * FA_ROWS, T);
    loadTile(kTiles, kBase, C3, 0, T);
    loadTile(vTiles, vBase, C3, 0, T);
    commitCopies();
    const long long stats = ((long long)b * NH + h) * T;
    float rowLse[2], rowD[2];  // lse in base-2 units
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = rowBase + r * 8;
        rowLse[r] = row < T ? lse[stats + row] * FA_LOG2E : 0.0f;
    }
    unsigned q[4][4], g[4][4];
    float dq[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dq[n][e] = 0.0f;

    for (int kt = 0; kt <= qt; kt++) {
        const bf16* kTile = kTiles + (kt % 2) * FA_TILE;
        const bf16* vTile = vTiles + (kt % 2) * FA_TILE;
        if (kt < qt) {
            loadTile(kTiles + ((kt + 1) % 2) * FA_TILE, kBase, C3, (kt + 1) * FA_ROWS, T);
            loadTile(vTiles + ((kt + 1) % 2) * FA_TILE, vBase, C3, (kt + 1) * FA_ROWS, T);
        }
        commitCopies();
        waitAllButLatest();
        __syncthreads();
        if (kt == 0) {
            loadRows(q, qTile, warp, lane);
            loadRows(g, gTile, warp, lane);
            // D of the tile's rows: a pair of threads per row, 32 channels each.
            int row = threadIdx.x / 2, c0 = (threadIdx.x % 2) * 32;
            float d = 0.0f;
            for (int c = c0; c < c0 + 32; c++) d += toFloat(gTile[row * FA_PAD + c]) * toFloat(oTile[row * FA_PAD + c]);
            d += __shfl_xor_sync(0xffffffffU, d, 1);
            if (threadIdx.x % 2 == 0) {
                tileD[row] = d;
                if (qt * FA_ROWS + row < T) dsum[stats + qt * FA_ROWS + row] = d;
            }
            __syncthreads();
            rowD[0] = tileD[warp * 16 + lane / 4];
            rowD[1] = tileD[warp * 16 + lane / 4 + 8];
        }

        float s[8][4], dp[8][4];
        multiplyTransposed(s, q, kTile, lane);
        multiplyTransposed(dp, g, vTile, lane);
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = kt * FA_ROWS + n * 8 + 2 * (lane % 4) + (e & 1);
                bool masked = kt == qt && key > rowBase + (e / 2) * 8;
                float p = masked ? 0.0f : exp2f(s[n][e] * scoreScale - rowLse[e / 2]);
                s[n][e] = p * (dp[n][e] - rowD[e / 2]);  // dS
            }
        unsigned ds[4][4];
        toFragments(ds, s);
        multiplyAccumulate(dq, ds, kTile, lane);
        __syncthreads();
    }
    storeRows(dqkv + (long long)b * T * C3 + h * FA_HS, C3, dq, 0.125f, qt * FA_ROWS + warp * 16, T, lane);
}

// The k and v parts of dqkv. Grid (ceil(T / 64), NH, B), block 128, shared 6 tiles (k, v,
// double-buffered q and dout) and 2 x 2 x 64 floats (lse, D) = 56320 bytes. Each warp keeps its
// 16 key rows and their (16, 64) dk and dv in registers and walks the query tiles at or after its own.
extern "C" __global__ void __launch_bounds__(FA_THREADS)
flash_attention_backward_key_value(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse, const float* dsum,
                                   int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    bf16* kTile = flashShared;
    bf16* vTile = kTile + FA_TILE;
    bf16* qTiles = vTile + FA_TILE;       // 2 x (64, PAD)
    bf16* gTiles = qTiles + 2 * FA_TILE;  // 2 x (64, PAD)
    float* lseTiles = (float*)(gTiles + 2 * FA_TILE);  // 2 x 64, base-2 units
    float* dTiles = lseTiles + 2 * FA_ROWS;            // 2 x 64
    const int C = NH * FA_HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int kt = blockIdx.x;  // the first key tiles see the most queries and start first
    const int tiles = gridDim.x;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int keyBase = kt * FA_ROWS + warp * 16 + lane / 4;  // this thread's keys: keyBase, keyBase + 8
    const bf16* qBase = qkv + (long long)b * T * C3 + h * FA_HS;
    const bf16* gBase = dout + (long long)b * T * C + h * FA_HS;
    const float* lseBase = lse + ((long long)b * NH + h) * T;
    const float* dBase = dsum + ((long long)b * NH + h) * T;
    const float scoreScale = 0.125f * FA_LOG2E;

    // Row statistics of query tile qt into buffer `buf` (plain loads: T need not keep them 16-byte aligned).
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
    unsigned k[4][4], v[4][4];
    float dk[8][4], dv[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) { dk[n][e] = 0.0f; dv[n][e] = 0.0f; }

    for (int qt = kt; qt < tiles; qt++) {
        const int buf = (qt - kt) % 2;
        const bf16* qTile = qTiles + buf * FA_TILE;
        const bf16* gTile = gTiles + buf * FA_TILE;
        const float* rowLse = lseTiles + buf * FA_ROWS;
        const float* rowD = dTiles + buf * FA_ROWS;
        if (qt + 1 < tiles) {
            loadTile(qTiles + (1 - buf) * FA_TILE, qBase, C3, (qt + 1) * FA_ROWS, T);
            loadTile(gTiles + (1 - buf) * FA_TILE, gBase, C, (qt + 1) * FA_ROWS, T);
            loadStatistics(qt + 1, 1 - buf);
        }
        commitCopies();
        waitAllButLatest();
        __syncthreads();
        if (qt == kt) {
            loadRows(k, kTile, warp, lane);
            loadRows(v, vTile, warp, lane);
        }

        // Transposed scores: sT[key][query] = k . q, dpT[key][query] = v . dout.
        float sT[8][4], dpT[8][4];
        multiplyTransposed(sT, k, qTile, lane);
        multiplyTransposed(dpT, v, gTile, lane);
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int i = n * 8 + 2 * (lane % 4) + (e & 1);  // query within the tile
                int query = qt * FA_ROWS + i;
                bool masked = query < keyBase + (e / 2) * 8 || query >= T;
                float p = masked ? 0.0f : exp2f(sT[n][e] * scoreScale - rowLse[i]);
                sT[n][e] = p;
                dpT[n][e] = p * (dpT[n][e] - rowD[i]);  // dS^T
            }
        unsigned pT[4][4], dsT[4][4];
        toFragments(pT, sT);
        toFragments(dsT, dpT);
        multiplyAccumulate(dv, pT, gTile, lane);
        multiplyAccumulate(dk, dsT, qTile, lane);
        __syncthreads();
    }
    bf16* dst = dqkv + (long long)b * T * C3 + h * FA_HS;
    storeRows(dst + C, C3, dk, 0.125f, kt * FA_ROWS + warp * 16, T, lane);
    storeRows(dst + 2 * C, C3, dv, 1.0f, kt * FA_ROWS + warp * 16, T, lane);
}

#endif
