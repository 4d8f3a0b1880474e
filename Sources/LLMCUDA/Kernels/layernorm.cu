// LayerNorm forward/backward and the residual add. Statistics in fp32; biased variance, eps 1e-5.
// The weight/bias gradients are summed per block into fp32 partials, then in a fixed order by the
// backward kernel's last blocks.
#include "common.cuh"

// One warp per row: out (N, C) = (inp - mean) * rstd * weight + bias; mean, rstd (N) in fp32.
// Used only for rows wider than residual_layernorm_forward_* take (C > 2048 or C % PACK != 0).
extern "C" __global__ void layernorm_forward(floatX* out, float* mean, float* rstd, const floatX* inp,
                                             const floatX* weight, const floatX* bias, int N, int C) {
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= N) return;
    const floatX* x = inp + (long long)row * C;
    float sum = 0.0f;
    for (int c = lane; c < C; c += 32) sum += toFloat(x[c]);
    float m = warpSum(sum) / C;
    float var = 0.0f;
    for (int c = lane; c < C; c += 32) { float d = toFloat(x[c]) - m; var += d * d; }
    float s = rsqrtf(warpSum(var) / C + 1e-5f);
    floatX* o = out + (long long)row * C;
    for (int c = lane; c < C; c += 32) {
        o[c] = fromFloat((toFloat(x[c]) - m) * s * toFloat(weight[c]) + toFloat(bias[c]));
    }
    if (lane == 0) { mean[row] = m; rstd[row] = s; }
}

// One warp per row, the row held in registers as 16-byte packs (C % PACK == 0, C <= 32 * PACK *
// PACKS): with b, residual (N, C) = a + b (rounded to floatX) and out = layernorm(residual); with b
// null, out = layernorm(a) and residual is not touched. mean, rstd (N) in fp32, of the rounded
// residual, so a later call on the stored residual (recompute 2) gives the same bits. Fusing the add
// saves a read of the residual; the packs make it one pass over memory where layernorm_forward reads
// 2-byte elements three times. A lane visits its packs in the same order whatever PACKS is, so the
// two instantiations below give the same bits for the same row.
template <int PACKS>
__device__ __forceinline__ void residualLayerNormRow(floatX* residual, floatX* out, float* mean, float* rstd,
                                                     const floatX* a, const floatX* b, const floatX* weight,
                                                     const floatX* bias, int N, int C) {
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= N) return;
    const long long base = (long long)row * C;
    Pack x[PACKS];
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < PACKS; i++) {
        int c = (i * 32 + lane) * PACK;
        if (c >= C) break;
        x[i] = loadPack(a + base + c);
        if (b != nullptr) {
            Pack y = loadPack(b + base + c);
#pragma unroll
            for (int k = 0; k < PACK; k++) x[i].v[k] = fromFloat(toFloat(x[i].v[k]) + toFloat(y.v[k]));
            storePack(residual + base + c, x[i]);
        }
#pragma unroll
        for (int k = 0; k < PACK; k++) sum += toFloat(x[i].v[k]);
    }
    const float m = warpSum(sum) / C;
    float var = 0.0f;
#pragma unroll
    for (int i = 0; i < PACKS; i++) {
        if ((i * 32 + lane) * PACK >= C) break;
#pragma unroll
        for (int k = 0; k < PACK; k++) { float d = toFloat(x[i].v[k]) - m; var += d * d; }
    }
    const float s = rsqrtf(warpSum(var) / C + 1e-5f);
#pragma unroll
    for (int i = 0; i < PACKS; i++) {
        int c = (i * 32 + lane) * PACK;
        if (c >= C) break;
        Pack w = loadPack(weight + c), bb = loadPack(bias + c), o;
#pragma unroll
        for (int k = 0; k < PACK; k++) o.v[k] = fromFloat((toFloat(x[i].v[k]) - m) * s * toFloat(w.v[k]) + toFloat(bb.v[k]));
        storePack(out + base + c, o);
    }
    if (lane == 0) { mean[row] = m; rstd[row] = s; }
}

// Rows up to 1024 channels (GPT-2 up to 350M): the registers for 1024 only, so more warps fit an SM.
extern "C" __global__ void residual_layernorm_forward_1024(floatX* residual, floatX* out, float* mean, float* rstd,
                                                           const floatX* a, const floatX* b, const floatX* weight,
                                                           const floatX* bias, int N, int C) {
    residualLayerNormRow<1024 / (32 * PACK)>(residual, out, mean, rstd, a, b, weight, bias, N, C);
}

// Rows up to 2048 channels (GPT-2 774M and 1.5B).
extern "C" __global__ void residual_layernorm_forward_2048(floatX* residual, floatX* out, float* mean, float* rstd,
                                                           const floatX* a, const floatX* b, const floatX* weight,
                                                           const floatX* bias, int N, int C) {
    residualLayerNormRow<2048 / (32 * PACK)>(residual, out, mean, rstd, a, b, weight, bias, N, C);
}

// out (N) = a + b, one 16-byte pack per thread; N % PACK == 0.
extern "C" __global__ void residual_forward(floatX* out, const floatX* a, const floatX* b, long long N) {
    long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * PACK;
    if (i >= N) return;
    Pack x = loadPack(a + i), y = loadPack(b + i), z;
#pragma unroll
    for (int k = 0; k < PACK; k++) z.v[k] = fromFloat(toFloat(x.v[k]) + toFloat(y.v[k]));
    storePack(out + i, z);
}

// One pack of a row, first pass: the sums of dnorm = weight * dout and of dnorm * norm.
__device__ __forceinline__ void layerNormBackwardSums(float& dnormSum, float& dnormNormSum, const Pack& gp,
                                                      const Pack& xp, const Pack& wp, float m, float s) {
#pragma unroll
    for (int i = 0; i < PACK; i++) {
        float norm = (toFloat(xp.v[i]) - m) * s;
        float dnorm = toFloat(wp.v[i]) * toFloat(gp.v[i]);
        dnormSum += dnorm;
        dnormNormSum += dnorm * norm;
    }
}

// One pack of a row, second pass: the weight and bias sums (element-major in shared memory, see
// below) and dinp's pack p += its input gradient (= with overwrite: dinp is not read).
__device__ __forceinline__ void layerNormBackwardPack(floatX* d, float* dweightAcc, float* dbiasAcc, int p, int packs,
                                                      const Pack& gp, const Pack& xp, const Pack& wp, float m, float s,
                                                      float dnormMean, float dnormNormMean, bool overwrite) {
    Pack dp;
    if (overwrite) {
#pragma unroll
        for (int i = 0; i < PACK; i++) dp.v[i] = fromFloat(0.0f);
    } else {
        dp = loadPack(d + p * PACK);
    }
#pragma unroll
    for (int i = 0; i < PACK; i++) {
        float gc = toFloat(gp.v[i]);
        float norm = (toFloat(xp.v[i]) - m) * s;
        float dnorm = toFloat(wp.v[i]) * gc;
        dweightAcc[i * packs + p] += gc * norm;
        dbiasAcc[i * packs + p] += gc;
        dp.v[i] = fromFloat(toFloat(dp.v[i]) + (dnorm - dnormMean - norm * dnormNormMean) * s);
    }
    storePack(d + p * PACK, dp);
}

// dinp (N, C) += layernorm input gradient (overwrite != 0: dinp = it, as if dinp held zeros, so
// the backward's first layernorm needs no memset of its dinp); dweight (C) += sum of dout * norm,
// dbias (C) += sum of dout over rows. Each block stores its rows' sums in partial (gridDim.x, 2C),
// dweight's then dbias's; the sum over blocks follows in two stages (see the end). One warp per
// row, each lane on 16-byte packs of channels (C % PACK == 0). Dynamic shared memory: warps * 2C
// floats, each warp's sums stored element-major (acc[i * packs + p] is element i of pack p) so
// that the 32 lanes touch 32 different banks. counters (1 + groups): zero before and after the
// launch.
// P > 0 (C <= 32 * PACK * P): a lane keeps its packs of dout and inp in registers from the first
// pass to the second; P = 0: the second pass reads them again, from the L2 at best, as the shared
// sums leave the L1 little room. The same arithmetic in the same order either way: the same bits.
template <int P>
__device__ __forceinline__ void layerNormBackward(floatX* dinp, floatX* dweight, floatX* dbias, float* partial,
                                                  unsigned* counters, const floatX* dout, const floatX* inp,
                                                  const floatX* weight, const float* mean, const float* rstd,
                                                  int N, int C, int groupBlocks, int overwrite) {
    extern __shared__ float shared[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int packs = C / PACK;
    float* dweightAcc = shared + warp * 2 * C;  // (PACK, packs)
    float* dbiasAcc = dweightAcc + C;           // (PACK, packs)
    for (int c = lane; c < 2 * C; c += 32) dweightAcc[c] = 0.0f;
    __syncwarp();  // with C % 32 != 0 another lane zeroed some of our slots
    for (int row = blockIdx.x * warps + warp; row < N; row += gridDim.x * warps) {
        const floatX* g = dout + (long long)row * C;
        const floatX* x = inp + (long long)row * C;
        floatX* d = dinp + (long long)row * C;
        float m = mean[row], s = rstd[row];
        float dnormMean = 0.0f, dnormNormMean = 0.0f;
        if constexpr (P > 0) {
            Pack gs[P], xs[P];
#pragma unroll
            for (int k = 0; k < P; k++) {
                int p = lane + 32 * k;
                if (p < packs) {
                    gs[k] = loadPack(g + p * PACK);
                    xs[k] = loadPack(x + p * PACK);
                    layerNormBackwardSums(dnormMean, dnormNormMean, gs[k], xs[k], loadPack(weight + p * PACK), m, s);
                }
            }
            dnormMean = warpSum(dnormMean) / C;
            dnormNormMean = warpSum(dnormNormMean) / C;
#pragma unroll
            for (int k = 0; k < P; k++) {
                int p = lane + 32 * k;
                if (p < packs)
                    layerNormBackwardPack(d, dweightAcc, dbiasAcc, p, packs, gs[k], xs[k], loadPack(weight + p * PACK),
                                          m, s, dnormMean, dnormNormMean, overwrite);
            }
        } else {
            for (int p = lane; p < packs; p += 32)
                layerNormBackwardSums(dnormMean, dnormNormMean, loadPack(g + p * PACK), loadPack(x + p * PACK),
                                      loadPack(weight + p * PACK), m, s);
            dnormMean = warpSum(dnormMean) / C;
            dnormNormMean = warpSum(dnormNormMean) / C;
            for (int p = lane; p < packs; p += 32)
                layerNormBackwardPack(d, dweightAcc, dbiasAcc, p, packs, loadPack(g + p * PACK), loadPack(x + p * PACK),
                                      loadPack(weight + p * PACK), m, s, dnormMean, dnormNormMean, overwrite);
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {  // c = half * C + i * packs + p
        float sum = 0.0f;
        for (int w = 0; w < warps; w++) sum += shared[w * 2 * C + c];
        int half = c / C, i = (c % C) / packs, p = (c % C) % packs;
        partial[(long long)blockIdx.x * 2 * C + half * C + p * PACK + i] = sum;
    }
    // Two stages, as one block reading every partial (gridDim.x * 2C floats, 3 MB at d12) would
    // take longer than a whole separate kernel over many SMs: the last block of each group of
    // groupBlocks consecutive blocks sums its group's partials into groupSums, then the last group
    // to finish sums those into dweight and dbias. Fixed orders, so deterministic.
    const int group = blockIdx.x / groupBlocks, first = group * groupBlocks;
    const int groups = (gridDim.x + groupBlocks - 1) / groupBlocks;
    float* groupSums = partial + (long long)gridDim.x * 2 * C;  // (groups, 2C)
    if (!lastBlockToArrive(&counters[1 + group], min(groupBlocks, gridDim.x - first))) return;
    for (int c = threadIdx.x * 4; c < 2 * C; c += blockDim.x * 4) {
        *(float4*)(groupSums + (long long)group * 2 * C + c) =
            sumPartialColumns4(partial + (long long)first * 2 * C + c, min(groupBlocks, gridDim.x - first), 2 * C);
    }
    if (!lastBlockToArrive(&counters[0], groups)) return;
    for (int c = threadIdx.x * 4; c < 2 * C; c += blockDim.x * 4) {
        float4 sum = sumPartialColumns4(groupSums + c, groups, 2 * C);
        floatX* d = c < C ? dweight + c : dbias + (c - C);  // C % 4 == 0: the four columns in one half
        d[0] = fromFloat(toFloat(d[0]) + sum.x);
        d[1] = fromFloat(toFloat(d[1]) + sum.y);
        d[2] = fromFloat(toFloat(d[2]) + sum.z);
        d[3] = fromFloat(toFloat(d[3]) + sum.w);
    }
}

// Any C (C % PACK == 0).
extern "C" __global__ void layernorm_backward(floatX* dinp, floatX* dweight, floatX* dbias, float* partial,
                                              unsigned* counters, const floatX* dout, const floatX* inp,
                                              const floatX* weight, const float* mean, const float* rstd,
                                              int N, int C, int groupBlocks, int overwrite) {
    layerNormBackward<0>(dinp, dweight, dbias, partial, counters, dout, inp, weight, mean, rstd, N, C, groupBlocks,
                         overwrite);
}

// C <= 1024 (GPT-2 up to 350M): the row in registers between the passes. Registers for 3 blocks of
// 256 threads per SM, as many as the shared sums allow at C = 1024.
extern "C" __global__ void __launch_bounds__(256, 3)
layernorm_backward_1024(floatX* dinp, floatX* dweight, floatX* dbias, float* partial, unsigned* counters,
                        const floatX* dout, const floatX* inp, const floatX* weight, const float* mean, const float* rstd,
                        int N, int C, int groupBlocks, int overwrite) {
    layerNormBackward<1024 / (32 * PACK)>(dinp, dweight, dbias, partial, counters, dout, inp, weight, mean, rstd, N, C,
                                          groupBlocks, overwrite);
}

// C <= 768 (GPT-2 124M): as above, in registers for 4 blocks per SM (the shared sums allow 4 at 768).
extern "C" __global__ void __launch_bounds__(256, 4)
layernorm_backward_768(floatX* dinp, floatX* dweight, floatX* dbias, float* partial, unsigned* counters,
                       const floatX* dout, const floatX* inp, const floatX* weight, const float* mean, const float* rstd,
                       int N, int C, int groupBlocks, int overwrite) {
    layerNormBackward<768 / (32 * PACK)>(dinp, dweight, dbias, partial, counters, dout, inp, weight, mean, rstd, N, C,
                                         groupBlocks, overwrite);
}
