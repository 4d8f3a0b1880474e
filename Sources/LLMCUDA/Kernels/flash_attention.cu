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

// MARK: - Variants (v2 to v4): selected at run time by $LLM_FLASH_FORWARD / $LLM_FLASH_BACKWARD
//
// Same contract and tiling as the kernels above, which stay the baseline (v1). What changes:
// - the 1/8 * log2(e) score scale folds into the exponent's FFMA (max taken on raw scores);
// - the diagonal tile is a separate instantiation (the causal compare only there), and on it the
//   work that is masked for a whole warp is skipped (keys past the warp's last row);
// - the backward kernels walk a 64-row streamed tile as two 32-row halves, which halves the score
//   accumulators and their bf16 fragments (fewer registers: more blocks per SM), and lets a warp
//   skip a half that is fully masked on the diagonal tile;
// - forward v3, query v4 and key/value v4 issue the next tile's (or part's) score products before
//   the current softmax / dS (software pipelining inside a warp), with deeper buffering.
// Scripts/flash-emu checks every kernel on the CPU against a float64 reference.

// The v2 helpers take 32-bit shared addresses that already include the lane's own offset (from
// the lane offsets below), so every (k, n) step is an immediate offset of the ldmatrix: no address
// registers per step for the compiler to keep live (v1 keeps them, and the v2 kernels spilled).
__device__ __forceinline__ void loadMatricesAt(unsigned (&r)[4], unsigned address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}
__device__ __forceinline__ void loadMatricesTransposedAt(unsigned (&r)[4], unsigned address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}
// Byte offsets of a lane's ldmatrix row: A fragments of 16 rows (add the warp's first row),
// B fragments of two n-tiles (rows of the tile are the n dimension), and transposed B fragments
// (rows of the tile are the k dimension).
__device__ __forceinline__ unsigned laneRowsA(int lane) { return ((lane % 16) * FA_PAD + (lane / 16) * 8) * 2; }
__device__ __forceinline__ unsigned laneRowsB(int lane) { return ((lane % 8 + (lane / 16) * 8) * FA_PAD + ((lane / 8) % 2) * 8) * 2; }
__device__ __forceinline__ unsigned laneRowsBT(int lane) { return ((lane % 8 + ((lane / 8) % 2) * 8) * FA_PAD + (lane / 16) * 8) * 2; }

// loadTile with less address math (v2 kernels): dst = the tile's shared address + tileChunk(), src =
// the head's slice at the tile's first row + streamChunk(stride); rows = T - the tile's first row.
// Rows at or past T are zero-filled (their source address is `head`, the slice's row 0, as loadTile).
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
__device__ __forceinline__ void loadRowsAt(unsigned (&frag)[4][4], unsigned rows) {
#pragma unroll
    for (int k = 0; k < 4; k++) loadMatricesAt(frag[k], rows + k * 32);
}

// acc (16, 8 * NT) = a (16 rows, 64 channels) . tile^T over 8 * NT tile rows; b = tile address + laneRowsB.
template <int NT>
__device__ __forceinline__ void multiplyTransposedAt(float (&acc)[NT][4], const unsigned (&a)[4][4], unsigned b) {
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[n][e] = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int n = 0; n < NT; n += 2) {
            unsigned m[4];
            loadMatricesAt(m, b + (n * 8 * FA_PAD + k * 16) * 2);
            mma(acc[n], a[k], m[0], m[1]);
            mma(acc[n + 1], a[k], m[2], m[3]);
        }
}

// multiplyTransposedAt with the A operand read from shared one k-step at a time (a = the A rows'
// address, as loadRowsAt): 4 live registers for A instead of 16.
template <int NT>
__device__ __forceinline__ void multiplyTransposedLoadA(float (&acc)[NT][4], unsigned a, unsigned b) {
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[n][e] = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        unsigned f[4];
        loadMatricesAt(f, a + k * 32);
#pragma unroll
        for (int n = 0; n < NT; n += 2) {
            unsigned m[4];
            loadMatricesAt(m, b + (n * 8 * FA_PAD + k * 16) * 2);
            mma(acc[n], f, m[0], m[1]);
            mma(acc[n + 1], f, m[2], m[3]);
        }
    }
}

// acc (16, 64) += a (16 rows, 16 * KS tile rows) . tile over 16 * KS tile rows; b = tile address + laneRowsBT.
template <int KS>
__device__ __forceinline__ void multiplyAccumulateAt(float (&acc)[8][4], const unsigned (&a)[KS][4], unsigned b) {
#pragma unroll
    for (int k = 0; k < KS; k++)
#pragma unroll
        for (int n = 0; n < 8; n += 2) {
            unsigned m[4];
            loadMatricesTransposedAt(m, b + (k * 16 * FA_PAD + n * 8) * 2);
            mma(acc[n], a[k], m[0], m[1]);
            mma(acc[n + 1], a[k], m[2], m[3]);
        }
}

// An accumulator (16, 16 * KS) rounded to bf16 as an A operand of KS k-steps.
template <int KS>
__device__ __forceinline__ void toFragmentsRows(unsigned (&frag)[KS][4], const float (&acc)[2 * KS][4]) {
#pragma unroll
    for (int k = 0; k < KS; k++) {
        frag[k][0] = packPair(acc[2 * k][0], acc[2 * k][1]);
        frag[k][1] = packPair(acc[2 * k][2], acc[2 * k][3]);
        frag[k][2] = packPair(acc[2 * k + 1][0], acc[2 * k + 1][1]);
        frag[k][3] = packPair(acc[2 * k + 1][2], acc[2 * k + 1][3]);
    }
}

// The online softmax of a warp's scores s (raw, 16 rows x 64 keys) and o += P v; vBT = v tile +
// laneRowsBT. DIAGONAL: keys past a row are masked, and the k-steps (16 keys) past `warp` skipped.
template <bool DIAGONAL>
__device__ __forceinline__ void forwardSoftmax(float (&o)[8][4], float (&rowMax)[2], float (&rowSum)[2], float (&s)[8][4],
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
        rowSum[r] *= rescale[r];
    }
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            o[n][e] *= rescale[e / 2];
            s[n][e] = exp2f(fmaf(s[n][e], scale, -shift[e / 2]));
            rowSum[e / 2] += s[n][e];
        }
    unsigned p[4][4];
    toFragments(p, s);
    if (DIAGONAL) {
#pragma unroll
        for (int k = 0; k < 4; k++)
#pragma unroll
            for (int n = 0; n < 8; n += 2) {
                if (k > warp) continue;  // keys 16k.. are past all the warp's rows: P is zero there
                unsigned m[4];
                loadMatricesTransposedAt(m, vBT + (k * 16 * FA_PAD + n * 8) * 2);
                mma(o[n], p[k], m[0], m[1]);
                mma(o[n + 1], p[k], m[2], m[3]);
            }
    } else {
        multiplyAccumulateAt<4>(o, p, vBT);
    }
}

// One key tile of the forward for a warp: scores, online softmax, o += P v; kB = k tile + laneRowsB,
// vBT = v tile + laneRowsBT. DIAGONAL: the tile holding the warp's own rows, where keys past a row
// are masked, and the n-tiles (8 keys) past the warp's last row (2 * warp + 1) and the k-steps
// (16 keys) past `warp` are skipped outright.
template <bool DIAGONAL>
__device__ __forceinline__ void forwardTile(float (&o)[8][4], float (&rowMax)[2], float (&rowSum)[2], const unsigned (&q)[4][4],
                                            unsigned kB, unsigned vBT, int warp, int lane) {
    float s[8][4];
    if (DIAGONAL) {
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++)
#pragma unroll
            for (int n = 0; n < 8; n += 2) {
                if (n > 2 * warp) continue;  // n-tiles n, n + 1 hold keys past all the warp's rows
                unsigned m[4];
                loadMatricesAt(m, kB + (n * 8 * FA_PAD + k * 16) * 2);
                mma(s[n], q[k], m[0], m[1]);
                mma(s[n + 1], q[k], m[2], m[3]);
            }
    } else {
        multiplyTransposedAt<8>(s, q, kB);
    }
    forwardSoftmax<DIAGONAL>(o, rowMax, rowSum, s, vBT, warp, lane);
}

// v2: folded scale, split diagonal tile, masked n-tiles and k-steps skipped, immediate ldmatrix
// offsets; 128 registers (4 blocks per SM) as v1. Shared as v1: q, 2 x k, 2 x v tiles.
extern "C" __global__ void __launch_bounds__(FA_THREADS, 4)
flash_attention_forward_v2(bf16* out, float* lse, const bf16* qkv, int T, int NH) {
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
    float rowMax[2] = {NEG_INFINITY, NEG_INFINITY}, rowSum[2] = {0.0f, 0.0f};

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
        if (kt == 0) loadRowsAt(q, sharedAddress(qTile) + laneRowsA(lane) + warp * 16 * FA_PAD * 2);
        if (kt < qt) forwardTile<false>(o, rowMax, rowSum, q, kB + buffer, vBT + buffer, warp, lane);
        else forwardTile<true>(o, rowMax, rowSum, q, kB + buffer, vBT + buffer, warp, lane);
        __syncthreads();
    }

    const float scale = 0.125f * FA_LOG2E;
    float inverse[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        rowSum[r] += __shfl_xor_sync(0xffffffffU, rowSum[r], 1);
        rowSum[r] += __shfl_xor_sync(0xffffffffU, rowSum[r], 2);
        inverse[r] = 1.0f / rowSum[r];
        int row = rowBase + r * 8;
        if (lane % 4 == 0 && row < T) lse[((long long)b * NH + h) * T + row] = (rowMax[r] * scale + log2f(rowSum[r])) / FA_LOG2E;
    }
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[n][e] *= inverse[e / 2];
    storeRows(out + (long long)b * T * C + h * FA_HS, C, o, 1.0f, qt * FA_ROWS + warp * 16, T, lane);
}

// v3: v2 software-pipelined inside each warp: the scores of key tile kt + 1 are issued before the
// softmax and P v of tile kt, in one basic block, so the tensor cores work while MUFU and FFMA do
// the softmax. The k tiles run one ahead of the v tiles: iteration kt reads k tile kt + 1 and v
// tile kt, and prefetches k tile kt + 2 and v tile kt + 1 into the buffers iteration kt - 1 read
// (one barrier per tile). Two score accumulators live at once: 168 registers (3 blocks per SM).
// Shared as v1.
extern "C" __global__ void __launch_bounds__(FA_THREADS, 3)
flash_attention_forward_v3(bf16* out, float* lse, const bf16* qkv, int T, int NH) {
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
    const unsigned chunk = tileChunk();

    loadTile(qTile, qBase, C3, qt * FA_ROWS, T);
    loadTile(kTiles, kBase, C3, 0, T);
    commitCopies();  // group: q, k 0
    loadTile(vTiles, vBase, C3, 0, T);
    if (qt >= 1) loadTile(kTiles + FA_TILE, kBase, C3, FA_ROWS, T);
    commitCopies();  // group: v 0, k 1
    waitAllButLatest();
    __syncthreads();
    unsigned q[4][4];
    loadRowsAt(q, sharedAddress(qTile) + laneRowsA(lane) + warp * 16 * FA_PAD * 2);
    float s[8][4];
    multiplyTransposedAt<8>(s, q, kB);  // tile 0 (masked below if it is the diagonal)
    float o[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[n][e] = 0.0f;
    float rowMax[2] = {NEG_INFINITY, NEG_INFINITY}, rowSum[2] = {0.0f, 0.0f};

    for (int kt = 0; kt <= qt; kt++) {
        asm volatile("cp.async.wait_group 0;" ::: "memory");  // v tile kt and k tile kt + 1
        __syncthreads();  // ... for all threads; and every warp is done with iteration kt - 1's buffers
        if (kt + 2 <= qt) {
            const int row = (kt + 2) * FA_ROWS;
            loadTileAt(sharedAddress(kTiles) + (kt % 2) * FA_TILE * 2 + chunk, kBase + (long long)row * C3 + streamChunk(C3),
                       kBase, C3, T - row);
        }
        if (kt + 1 <= qt) {
            const int row = (kt + 1) * FA_ROWS;
            loadTileAt(sharedAddress(vTiles) + ((kt + 1) % 2) * FA_TILE * 2 + chunk, vBase + (long long)row * C3 + streamChunk(C3),
                       vBase, C3, T - row);
        }
        commitCopies();
        const unsigned vTile = vBT + (kt % 2) * FA_TILE * 2;
        if (kt < qt) {
            float next[8][4];
            multiplyTransposedAt<8>(next, q, kB + ((kt + 1) % 2) * FA_TILE * 2);
            forwardSoftmax<false>(o, rowMax, rowSum, s, vTile, warp, lane);
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[n][e] = next[n][e];
        } else {
            forwardSoftmax<true>(o, rowMax, rowSum, s, vTile, warp, lane);
        }
    }

    const float scale = 0.125f * FA_LOG2E;
    float inverse[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        rowSum[r] += __shfl_xor_sync(0xffffffffU, rowSum[r], 1);
        rowSum[r] += __shfl_xor_sync(0xffffffffU, rowSum[r], 2);
        inverse[r] = 1.0f / rowSum[r];
        int row = rowBase + r * 8;
        if (lane % 4 == 0 && row < T) lse[((long long)b * NH + h) * T + row] = (rowMax[r] * scale + log2f(rowSum[r])) / FA_LOG2E;
    }
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[n][e] *= inverse[e / 2];
    storeRows(out + (long long)b * T * C + h * FA_HS, C, o, 1.0f, qt * FA_ROWS + warp * 16, T, lane);
}

// One key tile (two 32-key halves) of the query kernel for a warp: dq += dS k. kB, vB: the k and v
// tiles + laneRowsB; kBT: the k tile + laneRowsBT. DIAGONAL: keys past a row are masked; warps 0
// and 1 (rows 0..31 of the tile) skip the upper half (keys 32..63).
template <bool DIAGONAL>
__device__ __forceinline__ void queryTile(float (&dq)[8][4], const unsigned (&q)[4][4], const unsigned (&g)[4][4],
                                          const float (&rowLse)[2], const float (&rowD)[2],
                                          unsigned kB, unsigned vB, unsigned kBT, int warp, int lane) {
    const float scale = 0.125f * FA_LOG2E;
    const int last = warp * 16 + lane / 4 - 2 * (lane % 4);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        if (DIAGONAL && half == 1 && warp < 2) continue;
        const unsigned rows = half * 32 * FA_PAD * 2;
        float s[4][4], dp[4][4];
        multiplyTransposedAt<4>(s, q, kB + rows);
        multiplyTransposedAt<4>(dp, g, vB + rows);
#pragma unroll
        for (int n = 0; n < 4; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = exp2f(fmaf(s[n][e], scale, -rowLse[e / 2]));
                if (DIAGONAL && half * 32 + n * 8 + (e & 1) > last + (e / 2) * 8) p = 0.0f;
                s[n][e] = p * (dp[n][e] - rowD[e / 2]);  // dS
            }
        unsigned ds[2][4];
        toFragmentsRows<2>(ds, s);
        multiplyAccumulateAt<2>(dq, ds, kBT + rows);
    }
}

// The query kernel on 32-key halves (flashShared: the kernel's dynamic shared memory). OUT_TILE: as
// v1, `out` comes in as a shared tile for D (7 tiles + 64 floats); without it each thread reads its
// 32 channels of `out` straight from global memory (6 tiles + 64 floats: 4 blocks fit an H100 SM).
template <bool OUT_TILE>
__device__ __forceinline__ void flashBackwardQuery2(bf16* flashShared, bf16* dqkv, float* dsum, const bf16* qkv, const bf16* out,
                                                   const bf16* dout, const float* lse, int T, int NH) {
    bf16* qTile = flashShared;
    bf16* gTile = qTile + FA_TILE;
    bf16* oTile = gTile + FA_TILE;  // OUT_TILE only
    bf16* kTiles = gTile + (OUT_TILE ? 2 : 1) * FA_TILE;
    bf16* vTiles = kTiles + 2 * FA_TILE;
    float* tileD = (float*)(vTiles + 2 * FA_TILE);
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

    loadTile(qTile, qBase, C3, qt * FA_ROWS, T);
    loadTile(gTile, dout + (long long)b * T * C + h * FA_HS, C, qt * FA_ROWS, T);
    if (OUT_TILE) loadTile(oTile, out + (long long)b * T * C + h * FA_HS, C, qt * FA_ROWS, T);
    loadTile(kTiles, kBase, C3, 0, T);
    loadTile(vTiles, vBase, C3, 0, T);
    commitCopies();
    const long long stats = ((long long)b * NH + h) * T;
    float rowLse[2], rowD[2];
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
        if (kt == 0) {
            const unsigned rows = laneRowsA(lane) + warp * 16 * FA_PAD * 2;
            loadRowsAt(q, sharedAddress(qTile) + rows);
            loadRowsAt(g, sharedAddress(gTile) + rows);
            int row = threadIdx.x / 2, c0 = (threadIdx.x % 2) * 32;
            float d = 0.0f;
            if (OUT_TILE) {
                for (int c = c0; c < c0 + 32; c++) d += toFloat(gTile[row * FA_PAD + c]) * toFloat(oTile[row * FA_PAD + c]);
            } else if (qt * FA_ROWS + row < T) {  // same order of sums as the shared tile
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
        if (kt < qt) queryTile<false>(dq, q, g, rowLse, rowD, kB + buffer, vB + buffer, kBT + buffer, warp, lane);
        else queryTile<true>(dq, q, g, rowLse, rowD, kB + buffer, vB + buffer, kBT + buffer, warp, lane);
        __syncthreads();
    }
    storeRows(dqkv + (long long)b * T * C3 + h * FA_HS, C3, dq, 0.125f, qt * FA_ROWS + warp * 16, T, lane);
}

// v2 of the query kernel: 32-key halves, split diagonal tile, immediate ldmatrix offsets. Same
// shared layout as v1 (q, dout, out, 2 x k, 2 x v tiles and 64 floats); 168 registers, 3 blocks per SM.
extern "C" __global__ void __launch_bounds__(FA_THREADS, 3)
flash_attention_backward_query_v2(bf16* dqkv, float* dsum, const bf16* qkv, const bf16* out, const bf16* dout,
                                  const float* lse, int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    flashBackwardQuery2<true>(flashShared, dqkv, dsum, qkv, out, dout, lse, T, NH);
}

// v3: as v2 without the out tile (D from global `out`), at 128 registers: 4 blocks per SM (4 x 55.5
// KB of shared; an A100 runs 2).
extern "C" __global__ void __launch_bounds__(FA_THREADS, 4)
flash_attention_backward_query_v3(bf16* dqkv, float* dsum, const bf16* qkv, const bf16* out, const bf16* dout,
                                  const float* lse, int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    flashBackwardQuery2<false>(flashShared, dqkv, dsum, qkv, out, dout, lse, T, NH);
}

// MARK: - Query kernel v4: software-pipelined 32-key parts

// s = q k^T and dp = dout v^T of one 32-key part (kB, vB: the part's k and v rows + laneRowsB).
__device__ __forceinline__ void queryScores(float (&s)[4][4], float (&dp)[4][4], const unsigned (&q)[4][4], const unsigned (&g)[4][4],
                                            unsigned kB, unsigned vB) {
    multiplyTransposedAt<4>(s, q, kB);
    multiplyTransposedAt<4>(dp, g, vB);
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
    toFragmentsRows<2>(ds, s);
    multiplyAccumulateAt<2>(dq, ds, kBT);
}

// v4: the query kernel as a stream of 32-key parts in which the products of the next part are
// issued before the dS and dq update of the current one (software pipelining in a warp; the
// parts' scores ping-pong between two register sets, 168 registers, 3 blocks per SM). The next
// tile's first part is needed while the current tile is still read, so k and v are triple-
// buffered: 6 tiles, the third buffers holding q and dout until their fragments are loaded; D
// comes from global `out` (as query v3). Shared 6 tiles + 64 floats = 55552 bytes.
extern "C" __global__ void __launch_bounds__(FA_THREADS, 3)
flash_attention_backward_query_v4(bf16* dqkv, float* dsum, const bf16* qkv, const bf16* out, const bf16* dout,
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
        loadRowsAt(q, sharedAddress(qTile) + rows);
        loadRowsAt(g, sharedAddress(gTile) + rows);
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
        asm volatile("cp.async.wait_group 0;" ::: "memory");  // k and v tile kt + 1
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

// One query tile of the key/value kernel for a warp, in parts of ROWS queries (32: halves, 16:
// quarters): dv += P^T dout, dk += dS^T q. qB, gB: the q and dout tiles + laneRowsB; qBT, gBT: +
// laneRowsBT. MASKED: the diagonal tile (queries before a key are masked; a part whose queries all
// precede the warp's keys is skipped) or a tile that reaches past T (those rows have zero q and
// dout, masked anyway). RELOAD: k and v fragments come from the shared k and v tiles (kA, vA: +
// laneRowsA + the warp's rows), one k-step at a time, instead of staying in registers (32 fewer
// live registers, 8 more ldmatrix per part).
template <bool MASKED, bool RELOAD, int ROWS>
__device__ __forceinline__ void keyValueTile(float (&dk)[8][4], float (&dv)[8][4], const unsigned (&k)[4][4], const unsigned (&v)[4][4],
                                             unsigned kA, unsigned vA, unsigned qB, unsigned gB, unsigned qBT, unsigned gBT,
                                             const float* rowLse, const float* rowD,
                                             bool diagonal, int queryBase, int keyBase, int T, int warp, int lane) {
    constexpr int NT = ROWS / 8, KS = ROWS / 16;
    const float scale = 0.125f * FA_LOG2E;
#pragma unroll
    for (int part = 0; part < FA_ROWS / ROWS; part++) {
        if (MASKED && diagonal && (part + 1) * ROWS <= warp * 16) continue;
        const unsigned rows = part * ROWS * FA_PAD * 2;
        float sT[NT][4], dpT[NT][4];
        if constexpr (RELOAD) {
            multiplyTransposedLoadA<NT>(sT, kA, qB + rows);
            multiplyTransposedLoadA<NT>(dpT, vA, gB + rows);
        } else {
            multiplyTransposedAt<NT>(sT, k, qB + rows);
            multiplyTransposedAt<NT>(dpT, v, gB + rows);
        }
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const int i = part * ROWS + n * 8 + 2 * (lane % 4);  // queries i, i + 1 of the tile
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
        unsigned pT[KS][4], dsT[KS][4];
        toFragmentsRows<KS>(pT, sT);
        toFragmentsRows<KS>(dsT, dpT);
        multiplyAccumulateAt<KS>(dv, pT, gBT + rows);
        multiplyAccumulateAt<KS>(dk, dsT, qBT + rows);
    }
}

// The key/value kernel on parts of ROWS queries (flashShared: the kernel's dynamic shared memory;
// same layout as v1: k, v, 2 x q, 2 x dout tiles, 2 x 2 x 64 floats).
template <bool RELOAD, int ROWS>
__device__ __forceinline__ void flashBackwardKeyValue2(bf16* flashShared, bf16* dqkv, const bf16* qkv, const bf16* dout,
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
    unsigned k[4][4] = {}, v[4][4] = {};  // unused with RELOAD
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
        if (!RELOAD && qt == kt) {
            loadRowsAt(k, kA);
            loadRowsAt(v, vA);
        }
        const float* rowLse = lseTiles + buf * FA_ROWS;
        const float* rowD = dTiles + buf * FA_ROWS;
        if (qt == kt || (qt + 1) * FA_ROWS > T)
            keyValueTile<true, RELOAD, ROWS>(dk, dv, k, v, kA, vA, qB + buffer, gB + buffer, qBT + buffer, gBT + buffer, rowLse, rowD,
                                       qt == kt, qt * FA_ROWS, keyBase, T, warp, lane);
        else
            keyValueTile<false, RELOAD, ROWS>(dk, dv, k, v, kA, vA, qB + buffer, gB + buffer, qBT + buffer, gBT + buffer, rowLse, rowD,
                                        false, qt * FA_ROWS, keyBase, T, warp, lane);
        __syncthreads();
    }
    bf16* dst = dqkv + (long long)b * T * C3 + h * FA_HS;
    storeRows(dst + C, C3, dk, 0.125f, kt * FA_ROWS + warp * 16, T, lane);
    storeRows(dst + 2 * C, C3, dv, 1.0f, kt * FA_ROWS + warp * 16, T, lane);
}

// v2: 32-query halves, k and v fragments in registers, at most 168 registers (3 blocks per SM; v1 has 2).
extern "C" __global__ void __launch_bounds__(FA_THREADS, 3)
flash_attention_backward_key_value_v2(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse, const float* dsum,
                                      int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    flashBackwardKeyValue2<false, 32>(flashShared, dqkv, qkv, dout, lse, dsum, T, NH);
}

// v3: 16-query quarters, k and v fragments reloaded from shared one k-step at a time, at 128
// registers (4 blocks per SM: 4 x 57 KB of shared fits the H100's 228 KB; an A100 (164 KB) runs 2).
// (32-query halves with reloads spilled ~170 bytes at 128 registers; these quarters spill 32.)
extern "C" __global__ void __launch_bounds__(FA_THREADS, 4)
flash_attention_backward_key_value_v3(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse, const float* dsum,
                                      int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    flashBackwardKeyValue2<true, 16>(flashShared, dqkv, qkv, dout, lse, dsum, T, NH);
}

// MARK: - Key/value kernel v4: software-pipelined 32-query parts

// sT = k q^T and dpT = v dout^T of one 32-query part for a warp's 16 keys (kA, vA: the warp's k and
// v rows + laneRowsA, read per k-step; qB, gB: the part's q and dout rows + laneRowsB).
__device__ __forceinline__ void keyValueScores(float (&sT)[4][4], float (&dpT)[4][4], unsigned kA, unsigned vA, unsigned qB, unsigned gB) {
    multiplyTransposedLoadA<4>(sT, kA, qB);
    multiplyTransposedLoadA<4>(dpT, vA, gB);
}

// P^T and dS^T of one 32-query part (queries i0.. of the tile, whose statistics are rowLse and rowD)
// from its sT and dpT, then dv += P^T dout, dk += dS^T q (qBT, gBT: the part's rows + laneRowsBT).
// MASKED: queries before a key, and at or past T, are masked.
template <bool MASKED>
__device__ __forceinline__ void keyValueUpdate(float (&dk)[8][4], float (&dv)[8][4], float (&sT)[4][4], float (&dpT)[4][4],
                                               const float* rowLse, const float* rowD, int i0, unsigned qBT, unsigned gBT,
                                               int queryBase, int keyBase, int T, int lane) {
    const float scale = 0.125f * FA_LOG2E;
#pragma unroll
    for (int n = 0; n < 4; n++) {
        const int i = i0 + n * 8 + 2 * (lane % 4);  // queries i, i + 1 of the tile
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
    toFragmentsRows<2>(pT, sT);
    toFragmentsRows<2>(dsT, dpT);
    multiplyAccumulateAt<2>(dv, pT, gBT);
    multiplyAccumulateAt<2>(dk, dsT, qBT);
}

// v4: the key/value kernel as a stream of 32-query parts in which the products of the next part
// are issued before the P, dS and dk, dv update of the current one (software pipelining in a
// warp; two register sets of scores; k and v fragments read from shared per k-step). The next
// tile's first part is needed while the current tile is still read, so q, dout and their row
// statistics are triple-buffered: 8 tiles + 3 x 2 x 64 floats = 75264 bytes; 168 registers, 3
// blocks per SM on an H100 (2 on an A100).
extern "C" __global__ void __launch_bounds__(FA_THREADS, 3)
flash_attention_backward_key_value_v4(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse, const float* dsum,
                                      int T, int NH) {
    extern __shared__ __align__(16) bf16 flashShared[];
    bf16* kTile = flashShared;
    bf16* vTile = kTile + FA_TILE;
    bf16* qTiles = vTile + FA_TILE;       // 3 x (64, PAD): query tile kt + j in buffer j % 3
    bf16* gTiles = qTiles + 3 * FA_TILE;  // 3 x (64, PAD)
    float* lseTiles = (float*)(gTiles + 3 * FA_TILE);  // 3 x 64, base-2 units
    float* dTiles = lseTiles + 3 * FA_ROWS;            // 3 x 64
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
    const unsigned upper = 32 * FA_PAD * 2;  // the second 32-query part of a tile
    const unsigned chunk = tileChunk();

    auto loadStatistics = [&](int qt, int buf) {
        int i = threadIdx.x % FA_ROWS, row = qt * FA_ROWS + i;
        if (threadIdx.x < FA_ROWS) lseTiles[buf * FA_ROWS + i] = row < T ? lseBase[row] * FA_LOG2E : 0.0f;
        else dTiles[buf * FA_ROWS + i] = row < T ? dBase[row] : 0.0f;
    };
    loadTile(kTile, qBase + C, C3, kt * FA_ROWS, T);
    loadTile(vTile, qBase + 2 * C, C3, kt * FA_ROWS, T);
    loadTile(qTiles, qBase, C3, kt * FA_ROWS, T);
    loadTile(gTiles, gBase, C, kt * FA_ROWS, T);
    commitCopies();  // group: k, v, query tile kt
    if (kt + 1 < tiles) {
        loadTile(qTiles + FA_TILE, qBase, C3, (kt + 1) * FA_ROWS, T);
        loadTile(gTiles + FA_TILE, gBase, C, (kt + 1) * FA_ROWS, T);
    }
    commitCopies();  // group: query tile kt + 1
    loadStatistics(kt, 0);
    if (kt + 1 < tiles) loadStatistics(kt + 1, 1);
    float dk[8][4], dv[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) { dk[n][e] = 0.0f; dv[n][e] = 0.0f; }
    waitAllButLatest();
    __syncthreads();
    float sA[4][4], dpA[4][4], sB[4][4], dpB[4][4];  // parts (tile, 0) and (tile, 1)
    keyValueScores(sA, dpA, kA, vA, qB, gB);

    const int steps = tiles - kt;  // query tiles kt .. tiles - 1; step j is tile kt + j, buffer j % 3
    for (int j = 0; j + 1 < steps; j++) {
        const int qt = kt + j;
        asm volatile("cp.async.wait_group 0;" ::: "memory");  // query tile qt + 1
        __syncthreads();  // ... and its statistics, for all threads; buffer (j + 2) % 3 (tile qt - 1) is free
        if (j + 2 < steps) {
            const int buf = (j + 2) % 3, row = (qt + 2) * FA_ROWS;
            const unsigned next = buf * FA_TILE * 2 + chunk;
            loadTileAt(sharedAddress(qTiles) + next, qBase + (long long)row * C3 + streamChunk(C3), qBase, C3, T - row);
            loadTileAt(sharedAddress(gTiles) + next, gBase + (long long)row * C + streamChunk(C), gBase, C, T - row);
            loadStatistics(qt + 2, buf);
        }
        commitCopies();
        const unsigned cur = (j % 3) * FA_TILE * 2, nxt = ((j + 1) % 3) * FA_TILE * 2;
        const float* rowLse = lseTiles + (j % 3) * FA_ROWS;
        const float* rowD = dTiles + (j % 3) * FA_ROWS;
        keyValueScores(sB, dpB, kA, vA, qB + cur + upper, gB + cur + upper);
        if (j == 0) {  // the diagonal tile: warps 2 and 3 (keys 32..63) have no query of the first part
            if (warp < 2) keyValueUpdate<true>(dk, dv, sA, dpA, rowLse, rowD, 0, qBT + cur, gBT + cur, qt * FA_ROWS, keyBase, T, lane);
            keyValueScores(sA, dpA, kA, vA, qB + nxt, gB + nxt);
            keyValueUpdate<true>(dk, dv, sB, dpB, rowLse, rowD, 32, qBT + cur + upper, gBT + cur + upper, qt * FA_ROWS, keyBase, T, lane);
        } else {
            keyValueUpdate<false>(dk, dv, sA, dpA, rowLse, rowD, 0, qBT + cur, gBT + cur, qt * FA_ROWS, keyBase, T, lane);
            keyValueScores(sA, dpA, kA, vA, qB + nxt, gB + nxt);
            keyValueUpdate<false>(dk, dv, sB, dpB, rowLse, rowD, 32, qBT + cur + upper, gBT + cur + upper, qt * FA_ROWS, keyBase, T, lane);
        }
    }
    {   // the last query tile (already waited for; sA, dpA hold its first part); masked: it may be
        // the diagonal tile and may reach past T
        const int j = steps - 1, qt = kt + j;
        const unsigned cur = (j % 3) * FA_TILE * 2;
        const float* rowLse = lseTiles + (j % 3) * FA_ROWS;
        const float* rowD = dTiles + (j % 3) * FA_ROWS;
        keyValueScores(sB, dpB, kA, vA, qB + cur + upper, gB + cur + upper);
        if (j > 0 || warp < 2)
            keyValueUpdate<true>(dk, dv, sA, dpA, rowLse, rowD, 0, qBT + cur, gBT + cur, qt * FA_ROWS, keyBase, T, lane);
        keyValueUpdate<true>(dk, dv, sB, dpB, rowLse, rowD, 32, qBT + cur + upper, gBT + cur + upper, qt * FA_ROWS, keyBase, T, lane);
    }
    bf16* dst = dqkv + (long long)b * T * C3 + h * FA_HS;
    storeRows(dst + C, C3, dk, 0.125f, kt * FA_ROWS + warp * 16, T, lane);
    storeRows(dst + 2 * C, C3, dv, 1.0f, kt * FA_ROWS + warp * 16, T, lane);
}

#endif
