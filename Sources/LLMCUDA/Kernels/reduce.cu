// Deterministic reductions: bias gradients (column sums) and the global gradient norm, each as
// per-block fp32 partials followed by one fixed-order sum.
#include "common.cuh"

// partial (gridDim.y, OC): block (x, y) sums rows [y*rowsPerBlock, ...) of 32 columns of dout (N, OC).
// Block shape (32, 8).
extern "C" __global__ void bias_backward_partial(float* partial, const floatX* dout, int N, int OC,
                                                 int rowsPerBlock) {
    __shared__ float sums[8][33];
    int col = blockIdx.x * 32 + threadIdx.x;
    int rowStart = blockIdx.y * rowsPerBlock;
    int rowEnd = min(N, rowStart + rowsPerBlock);
    float sum = 0.0f;
    if (col < OC) {
        for (int r = rowStart + threadIdx.y; r < rowEnd; r += 8) sum += toFloat(dout[(long long)r * OC + col]);
    }
    sums[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && col < OC) {
        float total = 0.0f;
        for (int y = 0; y < 8; y++) total += sums[y][threadIdx.x];
        partial[(long long)blockIdx.y * OC + col] = total;
    }
}

// dbias (OC) += sum over the row blocks of partial, in order.
extern "C" __global__ void bias_backward_reduce(floatX* dbias, const float* partial, int blocks, int OC) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= OC) return;
    float sum = 0.0f;
    for (int b = 0; b < blocks; b++) sum += partial[(long long)b * OC + col];
    dbias[col] = fromFloat(toFloat(dbias[col]) + sum);
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
