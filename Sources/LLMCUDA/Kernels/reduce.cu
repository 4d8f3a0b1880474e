// Deterministic reductions: bias gradients (column sums) and the global gradient norm, each as
// per-block fp32 partials followed by one fixed-order sum (for the bias, by the kernel's last block).
#include "common.cuh"

// dbias (OC) += column sums of dout (N, OC): addColumnSums (common.cuh) over dout as it is. At most
// 32 registers: 8 blocks an SM keep enough loads in flight (40, for the partials' sums, left 6).
extern "C" __global__ void __launch_bounds__(256, 8)
bias_backward(floatX* dbias, float* partial, unsigned* counters, const floatX* dout, int N, int OC, int rowsPerBlock) {
    addColumnSums(dbias, partial, counters, N, OC, rowsPerBlock,
                  [&](long long i) { return loadPack(dout + i); }, [&](long long i) { return toFloat(dout[i]); });
}

// partial (gridDim.x) = this block's sum of squares over a grid-stride slice of g (n).
extern "C" __global__ void norm_squared_partial(float* partial, const floatX* g, long long n) {
    __shared__ float scratch[32];
    float sum = 0.0f;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float x = toFloat(g[i]);
        sum += x * x;
    }
    sum = blockSum(sum, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// out[0] = sum of partial (n); one block.
extern "C" __global__ void sum_partials(float* out, const float* partial, int n) {
    __shared__ float scratch[32];
    float sum = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) sum += partial[i];
    sum = blockSum(sum, scratch);
    if (threadIdx.x == 0) out[0] = sum;
}
