// Causal self-attention straight from the qkv activation (B, T, 3C), flash-style: the forward keeps
// only the log-sum-exp of each row (B, NH, T), never the (T, T) scores; the backward recomputes them.
// This first version gives a pair of threads a query (or key) row and keeps tiles in shared memory
// (CUDA cores, fp32 math); the speed issue replaces it with tensor-core tiles behind the same signatures.
#include "common.cuh"

#define ATT_TILE 64  // rows per block (threads per block) and keys/queries per shared tile

// Keys and values [k0, k0 + ATT_TILE) of one head into shared (ATT_TILE, HS) fp32 tiles, zeros
// past T; base = the head's first q element, rows 3C apart. Called by the whole block.
template <int HS>
__device__ __forceinline__ void loadKeyValueTile(float* keys, float* values, const floatX* base, int k0, int T, int C) {
    const int C3 = 3 * C;
    for (int idx = threadIdx.x; idx < ATT_TILE * HS; idx += blockDim.x) {
        int key = k0 + idx / HS, d = idx % HS;
        bool ok = key < T;
        keys[idx] = ok ? toFloat(base[(long long)key * C3 + C + d]) : 0.0f;
        values[idx] = ok ? toFloat(base[(long long)key * C3 + 2 * C + d]) : 0.0f;
    }
}

// MARK: - Forward

// out (B, T, C) = softmax(q k^T / sqrt(HS), causal) v per head; lse (B, NH, T) = log sum exp of
// the scaled scores of each row. Two threads per query row (a lane pair, each owning the even or odd
// channels; the pair adds its partial dot products with one shuffle). Every thread walks the same
// keys (the shuffles need the whole warp); keys after the row get p = 0.
// Grid (ceil(T / TILE), NH, B); block 2 * TILE; shared 2 * TILE * HS floats.
template <int HS>
__device__ __forceinline__ void attentionForward(floatX* out, float* lse, const floatX* qkv, int T, int NH) {
    extern __shared__ float shared[];
    const int H = HS / 2;
    float* keys = shared;                    // (TILE, HS)
    float* values = shared + ATT_TILE * HS;  // (TILE, HS)
    const int C = NH * HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int half = threadIdx.x & 1;
    const int t = blockIdx.x * ATT_TILE + (threadIdx.x >> 1);
    const floatX* base = qkv + (long long)b * T * C3 + h * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    float q[H], o[H];
    float rowMax = NEG_INFINITY, rowSum = 0.0f;
#pragma unroll
    for (int e = 0; e < H; e++) {
        q[e] = t < T ? toFloat(base[(long long)t * C3 + 2 * e + half]) * scale : 0.0f;
        o[e] = 0.0f;
    }
    const int lastRow = min(T - 1, blockIdx.x * ATT_TILE + ATT_TILE - 1);
    for (int k0 = 0; k0 <= lastRow; k0 += ATT_TILE) {
        __syncthreads();
        loadKeyValueTile<HS>(keys, values, base, k0, T, C);
        __syncthreads();
        const int count = min(ATT_TILE, lastRow - k0 + 1);
        for (int j = 0; j < count; j++) {
            const float* kj = keys + j * HS + half;
            const float* vj = values + j * HS + half;
            float s = 0.0f;
#pragma unroll
            for (int e = 0; e < H; e++) s += q[e] * kj[2 * e];
            s += __shfl_xor_sync(0xffffffffU, s, 1);
            if (k0 + j > t) continue;  // causal mask (uniform within the pair: same row)
            if (s > rowMax) {  // rescale what was summed under the old maximum
                float c = expf(rowMax - s);
                rowSum *= c;
#pragma unroll
                for (int e = 0; e < H; e++) o[e] *= c;
                rowMax = s;
            }
            float p = expf(s - rowMax);
            rowSum += p;
#pragma unroll
            for (int e = 0; e < H; e++) o[e] += p * vj[2 * e];
        }
    }
    if (t >= T) return;
    const float inv = 1.0f / rowSum;
    floatX* y = out + ((long long)b * T + t) * C + h * HS + half;
#pragma unroll
    for (int e = 0; e < H; e++) y[2 * e] = fromFloat(o[e] * inv);
    if (half == 0) lse[((long long)b * NH + h) * T + t] = rowMax + logf(rowSum);
}

// MARK: - Backward

// dsum (B, NH, T) = sum over the head's channels of dout * out (the softmax backward's row term).
extern "C" __global__ void attention_backward_rowsum(float* dsum, const floatX* dout, const floatX* out,
                                                     int B, int T, int NH, int HS) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;  // (b, h, t)
    if (i >= (long long)B * NH * T) return;
    int t = (int)(i % T);
    int h = (int)((i / T) % NH);
    long long b = i / ((long long)T * NH);
    long long row = (b * T + t) * (NH * HS) + h * HS;
    float s = 0.0f;
    for (int d = 0; d < HS; d++) s += toFloat(dout[row + d]) * toFloat(out[row + d]);
    dsum[i] = s;
}

// The q part of dqkv (B, T, 3C): two threads per query row (even/odd channels, as the forward),
// looping over the keys it sees. Grid (ceil(T / TILE), NH, B); block 2 * TILE; shared 2 * TILE * HS floats.
template <int HS>
__device__ __forceinline__ void attentionBackwardQuery(floatX* dqkv, const floatX* qkv, const floatX* dout,
                                                       const float* lse, const float* dsum, int T, int NH) {
    extern __shared__ float shared[];
    const int H = HS / 2;
    float* keys = shared;
    float* values = shared + ATT_TILE * HS;
    const int C = NH * HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int half = threadIdx.x & 1;
    const int t = blockIdx.x * ATT_TILE + (threadIdx.x >> 1);
    const floatX* base = qkv + (long long)b * T * C3 + h * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    float q[H], dO[H], dq[H];
    const floatX* g = dout + ((long long)b * T + t) * C + h * HS;
#pragma unroll
    for (int e = 0; e < H; e++) {
        q[e] = t < T ? toFloat(base[(long long)t * C3 + 2 * e + half]) * scale : 0.0f;
        dO[e] = t < T ? toFloat(g[2 * e + half]) : 0.0f;
        dq[e] = 0.0f;
    }
    const long long stat = ((long long)b * NH + h) * T + t;
    const float rowLse = t < T ? lse[stat] : 0.0f;
    const float rowD = t < T ? dsum[stat] : 0.0f;
    const int lastRow = min(T - 1, blockIdx.x * ATT_TILE + ATT_TILE - 1);
    for (int k0 = 0; k0 <= lastRow; k0 += ATT_TILE) {
        __syncthreads();
        loadKeyValueTile<HS>(keys, values, base, k0, T, C);
        __syncthreads();
        const int count = min(ATT_TILE, lastRow - k0 + 1);
        for (int j = 0; j < count; j++) {
            const float* kj = keys + j * HS + half;
            const float* vj = values + j * HS + half;
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int e = 0; e < H; e++) {
                s += q[e] * kj[2 * e];
                dp += dO[e] * vj[2 * e];
            }
            s += __shfl_xor_sync(0xffffffffU, s, 1);
            dp += __shfl_xor_sync(0xffffffffU, dp, 1);
            if (k0 + j > t) continue;  // causal mask
            float ds = expf(s - rowLse) * (dp - rowD);
#pragma unroll
            for (int e = 0; e < H; e++) dq[e] += ds * kj[2 * e];
        }
    }
    if (t >= T) return;
    floatX* dst = dqkv + ((long long)b * T + t) * C3 + h * HS + half;
#pragma unroll
    for (int e = 0; e < H; e++) dst[2 * e] = fromFloat(dq[e] * scale);
}

// The k and v parts of dqkv: two threads per key row (a pair of lanes, each owning the even or odd
// channels of dk and dv, which keeps the accumulators in registers), looping over the queries that
// see the key. Grid (ceil(T / TILE), NH, B); block 2 * TILE;
// shared (2 * TILE * (HS + 2) + 2 * TILE * HS + 2 * TILE) floats.
template <int HS>
__device__ __forceinline__ void attentionBackwardKeyValue(floatX* dqkv, const floatX* qkv, const floatX* dout,
                                                          const float* lse, const float* dsum, int T, int NH) {
    extern __shared__ float shared[];
    const int P = HS + 2;  // padded rows: the 32 lanes (16 keys x 2 halves) hit 32 different banks
    const int H = HS / 2;  // channels per thread
    float* ownKeys = shared;                      // (TILE, HS + 2)
    float* ownValues = ownKeys + ATT_TILE * P;    // (TILE, HS + 2)
    float* queries = ownValues + ATT_TILE * P;    // (TILE, HS), scaled
    float* grads = queries + ATT_TILE * HS;       // (TILE, HS), dout rows
    float* rowLse = grads + ATT_TILE * HS;        // (TILE)
    float* rowD = rowLse + ATT_TILE;              // (TILE)
    const int C = NH * HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int k0 = blockIdx.x * ATT_TILE;
    const int r = threadIdx.x >> 1, half = threadIdx.x & 1;
    const int j = k0 + r;
    const floatX* base = qkv + (long long)b * T * C3 + h * HS;
    const floatX* gbase = dout + (long long)b * T * C + h * HS;
    const float* lseBase = lse + ((long long)b * NH + h) * T;
    const float* dBase = dsum + ((long long)b * NH + h) * T;
    const float scale = 1.0f / sqrtf((float)HS);
    for (int idx = threadIdx.x; idx < ATT_TILE * HS; idx += blockDim.x) {
        int key = k0 + idx / HS, d = idx % HS;
        bool ok = key < T;
        ownKeys[(idx / HS) * P + d] = ok ? toFloat(base[(long long)key * C3 + C + d]) : 0.0f;
        ownValues[(idx / HS) * P + d] = ok ? toFloat(base[(long long)key * C3 + 2 * C + d]) : 0.0f;
    }
    float dk[H], dv[H];
#pragma unroll
    for (int e = 0; e < H; e++) { dk[e] = 0.0f; dv[e] = 0.0f; }
    const float* myKey = ownKeys + r * P + half;      // channel 2e + half at myKey[2e]
    const float* myValue = ownValues + r * P + half;
    for (int q0 = k0; q0 < T; q0 += ATT_TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < ATT_TILE * HS; idx += blockDim.x) {
            int row = q0 + idx / HS, d = idx % HS;
            bool ok = row < T;
            queries[idx] = ok ? toFloat(base[(long long)row * C3 + d]) * scale : 0.0f;
            grads[idx] = ok ? toFloat(gbase[(long long)row * C + d]) : 0.0f;
        }
        for (int i = threadIdx.x; i < ATT_TILE; i += blockDim.x) {
            int row = q0 + i;
            rowLse[i] = row < T ? lseBase[row] : 0.0f;
            rowD[i] = row < T ? dBase[row] : 0.0f;
        }
        __syncthreads();
        // Every thread runs the same rows (the shuffles need the whole warp); rows before the key
        // (causal mask) and past T get p = 0.
        const int count = min(ATT_TILE, T - q0);
        for (int i = 0; i < count; i++) {
            const float* qi = queries + i * HS + half;
            const float* gi = grads + i * HS + half;
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int e = 0; e < H; e++) {
                s += qi[2 * e] * myKey[2 * e];
                dp += gi[2 * e] * myValue[2 * e];
            }
            s += __shfl_xor_sync(0xffffffffU, s, 1);
            dp += __shfl_xor_sync(0xffffffffU, dp, 1);
            float p = (q0 + i >= j) ? expf(s - rowLse[i]) : 0.0f;
            float ds = p * (dp - rowD[i]);
#pragma unroll
            for (int e = 0; e < H; e++) {
                dv[e] += p * gi[2 * e];
                dk[e] += ds * qi[2 * e];  // queries are pre-scaled: d(s)/d(k) = scale * q
            }
        }
    }
    if (j >= T) return;
    floatX* dst = dqkv + ((long long)b * T + j) * C3 + h * HS + half;
#pragma unroll
    for (int e = 0; e < H; e++) {
        dst[C + 2 * e] = fromFloat(dk[e]);
        dst[2 * C + 2 * e] = fromFloat(dv[e]);
    }
}

// MARK: - Entry points per head size

#define ATTENTION_KERNELS(HS)                                                                              \
    extern "C" __global__ void __launch_bounds__(2 * ATT_TILE) attention_forward_hs##HS(                  \
        floatX* out, float* lse, const floatX* qkv, int T, int NH) {                                       \
        attentionForward<HS>(out, lse, qkv, T, NH);                                                        \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(2 * ATT_TILE) attention_backward_query_hs##HS(           \
        floatX* dqkv, const floatX* qkv, const floatX* dout, const float* lse, const float* dsum, int T,  \
        int NH) {                                                                                          \
        attentionBackwardQuery<HS>(dqkv, qkv, dout, lse, dsum, T, NH);                                     \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(2 * ATT_TILE) attention_backward_key_value_hs##HS(       \
        floatX* dqkv, const floatX* qkv, const floatX* dout, const float* lse, const float* dsum, int T,  \
        int NH) {                                                                                          \
        attentionBackwardKeyValue<HS>(dqkv, qkv, dout, lse, dsum, T, NH);                                  \
    }

ATTENTION_KERNELS(16)
ATTENTION_KERNELS(32)
ATTENTION_KERNELS(64)
ATTENTION_KERNELS(128)
