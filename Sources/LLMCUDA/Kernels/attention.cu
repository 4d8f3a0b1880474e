// Causal self-attention straight from the qkv activation (B, T, 3C), flash-style: the forward keeps
// only the log-sum-exp of each row (B, NH, T), never the (T, T) scores; the backward recomputes them.
// This first version gives one thread a query (or key) row and keeps tiles in shared memory; the
// speed issue replaces it with tensor-core tiles behind the same signatures.
#include "common.cuh"

#define ATT_TILE 64  // rows per block (threads per block) and keys/queries per shared tile

// MARK: - Forward

// out (B, T, C) = softmax(q k^T / sqrt(HS), causal) v per head; lse (B, NH, T) = log sum exp of
// the scaled scores of each row. Grid (ceil(T / TILE), NH, B); block TILE; shared 2 * TILE * HS floats.
template <int HS>
__device__ __forceinline__ void attentionForward(floatX* out, float* lse, const floatX* qkv, int T, int NH) {
    extern __shared__ float shared[];
    float* keys = shared;                  // (TILE, HS)
    float* values = shared + ATT_TILE * HS;  // (TILE, HS)
    const int C = NH * HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int t = blockIdx.x * ATT_TILE + threadIdx.x;
    const floatX* base = qkv + (long long)b * T * C3 + h * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    float q[HS], o[HS];
    float rowMax = NEG_INFINITY, rowSum = 0.0f;
#pragma unroll
    for (int d = 0; d < HS; d++) {
        q[d] = t < T ? toFloat(base[(long long)t * C3 + d]) * scale : 0.0f;
        o[d] = 0.0f;
    }
    const int lastRow = min(T - 1, blockIdx.x * ATT_TILE + ATT_TILE - 1);
    for (int k0 = 0; k0 <= lastRow; k0 += ATT_TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < ATT_TILE * HS; idx += blockDim.x) {
            int key = k0 + idx / HS, d = idx % HS;
            bool ok = key < T;
            keys[idx] = ok ? toFloat(base[(long long)key * C3 + C + d]) : 0.0f;
            values[idx] = ok ? toFloat(base[(long long)key * C3 + 2 * C + d]) : 0.0f;
        }
        __syncthreads();
        if (t >= T) continue;
        const int count = min(ATT_TILE, t - k0 + 1);
        for (int j = 0; j < count; j++) {
            float s = 0.0f;
#pragma unroll
            for (int d = 0; d < HS; d++) s += q[d] * keys[j * HS + d];
            if (s > rowMax) {  // rescale what was summed under the old maximum
                float c = expf(rowMax - s);
                rowSum *= c;
#pragma unroll
                for (int d = 0; d < HS; d++) o[d] *= c;
                rowMax = s;
            }
            float p = expf(s - rowMax);
            rowSum += p;
#pragma unroll
            for (int d = 0; d < HS; d++) o[d] += p * values[j * HS + d];
        }
    }
    if (t >= T) return;
    const float inv = 1.0f / rowSum;
    floatX* y = out + ((long long)b * T + t) * C + h * HS;
#pragma unroll
    for (int d = 0; d < HS; d++) y[d] = fromFloat(o[d] * inv);
    lse[((long long)b * NH + h) * T + t] = rowMax + logf(rowSum);
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

// The q part of dqkv (B, T, 3C): one thread per query row, looping over the keys it sees.
// Grid (ceil(T / TILE), NH, B); block TILE; shared 2 * TILE * HS floats.
template <int HS>
__device__ __forceinline__ void attentionBackwardQuery(floatX* dqkv, const floatX* qkv, const floatX* dout,
                                                       const float* lse, const float* dsum, int T, int NH) {
    extern __shared__ float shared[];
    float* keys = shared;
    float* values = shared + ATT_TILE * HS;
    const int C = NH * HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int t = blockIdx.x * ATT_TILE + threadIdx.x;
    const floatX* base = qkv + (long long)b * T * C3 + h * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    float q[HS], dO[HS], dq[HS];
    const floatX* g = dout + ((long long)b * T + t) * C + h * HS;
#pragma unroll
    for (int d = 0; d < HS; d++) {
        q[d] = t < T ? toFloat(base[(long long)t * C3 + d]) * scale : 0.0f;
        dO[d] = t < T ? toFloat(g[d]) : 0.0f;
        dq[d] = 0.0f;
    }
    const long long stat = ((long long)b * NH + h) * T + t;
    const float rowLse = t < T ? lse[stat] : 0.0f;
    const float rowD = t < T ? dsum[stat] : 0.0f;
    const int lastRow = min(T - 1, blockIdx.x * ATT_TILE + ATT_TILE - 1);
    for (int k0 = 0; k0 <= lastRow; k0 += ATT_TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < ATT_TILE * HS; idx += blockDim.x) {
            int key = k0 + idx / HS, d = idx % HS;
            bool ok = key < T;
            keys[idx] = ok ? toFloat(base[(long long)key * C3 + C + d]) : 0.0f;
            values[idx] = ok ? toFloat(base[(long long)key * C3 + 2 * C + d]) : 0.0f;
        }
        __syncthreads();
        if (t >= T) continue;
        const int count = min(ATT_TILE, t - k0 + 1);
        for (int j = 0; j < count; j++) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int d = 0; d < HS; d++) {
                s += q[d] * keys[j * HS + d];
                dp += dO[d] * values[j * HS + d];
            }
            float ds = expf(s - rowLse) * (dp - rowD);
#pragma unroll
            for (int d = 0; d < HS; d++) dq[d] += ds * keys[j * HS + d];
        }
    }
    if (t >= T) return;
    floatX* dst = dqkv + ((long long)b * T + t) * C3 + h * HS;
#pragma unroll
    for (int d = 0; d < HS; d++) dst[d] = fromFloat(dq[d] * scale);
}

// The k and v parts of dqkv: one thread per key row, looping over the queries that see it.
// Grid (ceil(T / TILE), NH, B); block TILE; shared (2 * TILE * (HS + 1) + 2 * TILE * HS + 2 * TILE) floats.
template <int HS>
__device__ __forceinline__ void attentionBackwardKeyValue(floatX* dqkv, const floatX* qkv, const floatX* dout,
                                                          const float* lse, const float* dsum, int T, int NH) {
    extern __shared__ float shared[];
    const int P = HS + 1;  // padded rows: each thread reads its own row, conflict-free
    float* ownKeys = shared;                      // (TILE, HS + 1)
    float* ownValues = ownKeys + ATT_TILE * P;    // (TILE, HS + 1)
    float* queries = ownValues + ATT_TILE * P;    // (TILE, HS), scaled
    float* grads = queries + ATT_TILE * HS;       // (TILE, HS), dout rows
    float* rowLse = grads + ATT_TILE * HS;        // (TILE)
    float* rowD = rowLse + ATT_TILE;              // (TILE)
    const int C = NH * HS, C3 = 3 * C;
    const int h = blockIdx.y, b = blockIdx.z;
    const int k0 = blockIdx.x * ATT_TILE;
    const int j = k0 + threadIdx.x;
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
    float dk[HS], dv[HS];
#pragma unroll
    for (int d = 0; d < HS; d++) { dk[d] = 0.0f; dv[d] = 0.0f; }
    const float* myKey = ownKeys + threadIdx.x * P;
    const float* myValue = ownValues + threadIdx.x * P;
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
        if (j >= T) continue;
        const int first = max(0, j - q0);          // queries before the key do not see it
        const int count = min(ATT_TILE, T - q0);
        for (int i = first; i < count; i++) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int d = 0; d < HS; d++) {
                s += queries[i * HS + d] * myKey[d];
                dp += grads[i * HS + d] * myValue[d];
            }
            float p = expf(s - rowLse[i]);
            float ds = p * (dp - rowD[i]);
#pragma unroll
            for (int d = 0; d < HS; d++) {
                dv[d] += p * grads[i * HS + d];
                dk[d] += ds * queries[i * HS + d];  // queries are pre-scaled: d(s)/d(k) = scale * q
            }
        }
    }
    if (j >= T) return;
    floatX* dst = dqkv + ((long long)b * T + j) * C3 + h * HS;
#pragma unroll
    for (int d = 0; d < HS; d++) {
        dst[C + d] = fromFloat(dk[d]);
        dst[2 * C + d] = fromFloat(dv[d]);
    }
}

// MARK: - Entry points per head size

#define ATTENTION_KERNELS(HS)                                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_TILE) attention_forward_hs##HS(                      \
        floatX* out, float* lse, const floatX* qkv, int T, int NH) {                                       \
        attentionForward<HS>(out, lse, qkv, T, NH);                                                        \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(ATT_TILE) attention_backward_query_hs##HS(               \
        floatX* dqkv, const floatX* qkv, const floatX* dout, const float* lse, const float* dsum, int T,  \
        int NH) {                                                                                          \
        attentionBackwardQuery<HS>(dqkv, qkv, dout, lse, dsum, T, NH);                                     \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(ATT_TILE) attention_backward_key_value_hs##HS(           \
        floatX* dqkv, const floatX* qkv, const floatX* dout, const float* lse, const float* dsum, int T,  \
        int NH) {                                                                                          \
        attentionBackwardKeyValue<HS>(dqkv, qkv, dout, lse, dsum, T, NH);                                  \
    }

ATTENTION_KERNELS(16)
ATTENTION_KERNELS(32)
ATTENTION_KERNELS(64)
ATTENTION_KERNELS(128)
