// Deterministic reductions: bias gradients (column sums) and the global gradient norm, each as
// per-block fp32 partials followed by one fixed-order sum (for the bias, by the kernel's last block).
#include "common.cuh"

// dbias (OC) += column sums of dout (N, OC). Block (x, y) sums rows [y*rowsPerBlock, ...) of 32 *
// PACK columns into partial (gridDim.y, OC); the last row block of column block x to finish
// (counters[x], zero before and after the launch) then adds its columns' partials, row blocks in
// order, to dbias. Block shape (32, 8): a lane reads one 16-byte pack of a row (a warp: 512 bytes
// of it), the 8 warps every 8th row; then the warps' sums meet in shared memory in a fixed order.
extern "C" __global__ void bias_backward(floatX* dbias, float* partial, unsigned* counters, const floatX* dout,
                                         int N, int OC, int rowsPerBlock) {
    __shared__ float sums[8][32 * PACK + 1];
    const int col0 = (blockIdx.x * 32 + threadIdx.x) * PACK;
    const int rowStart = blockIdx.y * rowsPerBlock;
    const int rowEnd = min(N, rowStart + rowsPerBlock);
    float acc[PACK];
#pragma unroll
    for (int i = 0; i < PACK; i++) acc[i] = 0.0f;
    if (col0 + PACK <= OC) {
        for (int r = rowStart + threadIdx.y; r < rowEnd; r += 8) {
            Pack p = loadPack(dout + (long long)r * OC + col0);
#pragma unroll
            for (int i = 0; i < PACK; i++) acc[i] += toFloat(p.v[i]);
        }
    } else if (col0 < OC) {  // a row length that is not a multiple of PACK: the last columns one by one
        for (int r = rowStart + threadIdx.y; r < rowEnd; r += 8)
            for (int i = 0; col0 + i < OC; i++) acc[i] += toFloat(dout[(long long)r * OC + col0 + i]);
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
    if (!lastBlockToArrive(&counters[blockIdx.x], gridDim.y)) return;
    if (c < 32 * PACK && col < OC) {
        float sum = sumPartialColumn(partial + col, gridDim.y, OC);
        dbias[col] = fromFloat(toFloat(dbias[col]) + sum);
    }
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
