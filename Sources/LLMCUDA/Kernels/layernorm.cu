// LayerNorm forward/backward and the residual add. Statistics in fp32; biased variance, eps 1e-5.
// The weight/bias gradients are summed per block into fp32 partials, then in a fixed order.
#include "common.cuh"

// One warp per row: out (N, C) = (inp - mean) * rstd * weight + bias; mean, rstd (N) in fp32.
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

// out (N) = a + b
extern "C" __global__ void residual_forward(floatX* out, const floatX* a, const floatX* b, long long N) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) out[i] = fromFloat(toFloat(a[i]) + toFloat(b[i]));
}

// dinp (N, C) += layernorm input gradient; partial (gridDim.x, 2C) gets this block's sums of
// dout * norm (dweight) and dout (dbias). Block: 4 warps, dynamic shared memory 4 * 2C floats.
extern "C" __global__ void layernorm_backward(floatX* dinp, float* partial, const floatX* dout,
                                              const floatX* inp, const floatX* weight, const float* mean,
                                              const float* rstd, int N, int C) {
    extern __shared__ float shared[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float* acc = shared + warp * 2 * C;  // this warp's dweight (C) then dbias (C)
    for (int c = lane; c < 2 * C; c += 32) acc[c] = 0.0f;
    __syncwarp();  // with C % 32 != 0 another lane zeroed some of our dbias slots
    for (int row = blockIdx.x * warps + warp; row < N; row += gridDim.x * warps) {
        const floatX* g = dout + (long long)row * C;
        const floatX* x = inp + (long long)row * C;
        float m = mean[row], s = rstd[row];
        float dnormMean = 0.0f, dnormNormMean = 0.0f;
        for (int c = lane; c < C; c += 32) {
            float norm = (toFloat(x[c]) - m) * s;
            float dnorm = toFloat(weight[c]) * toFloat(g[c]);
            dnormMean += dnorm;
            dnormNormMean += dnorm * norm;
        }
        dnormMean = warpSum(dnormMean) / C;
        dnormNormMean = warpSum(dnormNormMean) / C;
        floatX* d = dinp + (long long)row * C;
        for (int c = lane; c < C; c += 32) {
            float gc = toFloat(g[c]);
            float norm = (toFloat(x[c]) - m) * s;
            float dnorm = toFloat(weight[c]) * gc;
            acc[c] += gc * norm;
            acc[C + c] += gc;
            d[c] = fromFloat(toFloat(d[c]) + (dnorm - dnormMean - norm * dnormNormMean) * s);
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
        float sum = 0.0f;
        for (int w = 0; w < warps; w++) sum += shared[w * 2 * C + c];
        partial[(long long)blockIdx.x * 2 * C + c] = sum;
    }
}

// dweight (C) += sum of partial rows [0, C), dbias (C) += [C, 2C), blocks summed in order.
extern "C" __global__ void layernorm_backward_reduce(floatX* dweight, floatX* dbias, const float* partial,
                                                     int blocks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= 2 * C) return;
    float sum = 0.0f;
    for (int b = 0; b < blocks; b++) sum += partial[(long long)b * 2 * C + c];
    if (c < C) dweight[c] = fromFloat(toFloat(dweight[c]) + sum);
    else dbias[c - C] = fromFloat(toFloat(dbias[c - C]) + sum);
}
