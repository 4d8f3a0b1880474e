// Cached generation: attention of one new query over the key/value cache of earlier positions,
// so a generated token costs one position's work instead of a forward over the whole sequence.
#include "common.cuh"

// MARK: - Attention for one position

// For head h = blockIdx.x: stores the new position's key and value (from qkv, the (3C) row
// [q | k | v] of position pos) into the caches, then out[h*HS ..< (h+1)*HS] = softmax over
// t2 <= pos of (q . k_t2 / sqrt(HS)) times v_t2, llm.c's math (the max starts at -10000).
// keys, values: (maxTokens, C) of this layer. Grid (NH); block a multiple of 32 and of HS, at most
// 1024; dynamic shared memory (HS + pos + 1 + blockDim.x + 32) floats.
extern "C" __global__ void attention_generation(floatX* out, floatX* keys, floatX* values, const floatX* qkv,
                                                int pos, int NH, int HS) {
    extern __shared__ float shared[];
    float* q = shared;                      // (HS) the query, pre-scaled
    float* scores = q + HS;                 // (pos + 1) scores, then probabilities before 1/sum
    float* partial = scores + pos + 1;      // (blockDim.x) per-thread sums of the output
    float* scratch = partial + blockDim.x;  // (32) block reductions
    const int C = NH * HS, h = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float scale = 1.0f / sqrtf((float)HS);
    const long long row = (long long)pos * C + h * HS;
    for (int d = threadIdx.x; d < HS; d += blockDim.x) {
        keys[row + d] = qkv[C + h * HS + d];
        values[row + d] = qkv[2 * C + h * HS + d];
        q[d] = toFloat(qkv[h * HS + d]) * scale;
    }
    __syncthreads();  // the cache writes and q are seen by the whole block from here

    // Scores: a warp per key, its lanes over the channels (coalesced reads of the key row).
    float localMax = -10000.0f;
    for (int t2 = warp; t2 <= pos; t2 += warps) {
        const floatX* k = keys + (long long)t2 * C + h * HS;
        float s = 0.0f;
        for (int d = lane; d < HS; d += 32) s += q[d] * toFloat(k[d]);
        s = warpSum(s);
        if (lane == 0) scores[t2] = s;
        localMax = fmaxf(localMax, s);
    }
    const float maxval = blockMax(localMax, scratch);  // its barriers also publish the scores

    float localSum = 0.0f;
    for (int t2 = threadIdx.x; t2 <= pos; t2 += blockDim.x) {
        float e = expf(scores[t2] - maxval);
        scores[t2] = e;
        localSum += e;
    }
    const float sum = blockSum(localSum, scratch);  // and these publish the exponentials
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;

    // Output: blockDim.x / HS groups of threads, each summing every groups-th position for all HS
    // channels (coalesced reads of the value rows); the groups' sums are added in a fixed order.
    const int groups = blockDim.x / HS;
    const int d = threadIdx.x % HS, g = threadIdx.x / HS;
    float acc = 0.0f;
    for (int t2 = g; t2 <= pos; t2 += groups) acc += scores[t2] * toFloat(values[(long long)t2 * C + h * HS + d]);
    partial[threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.x < HS) {
        float total = 0.0f;
        for (int k = 0; k < groups; k++) total += partial[k * HS + threadIdx.x];
        out[h * HS + threadIdx.x] = fromFloat(total * inv);
    }
}
