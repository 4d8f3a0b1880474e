// Token + position embedding, forward and backward. The backward is deterministic: wte rows are
// summed per token from a bucket list the host builds (no atomics), with stochastic rounding.
#include "common.cuh"

// out (B, T, C) = wte[inp[b, t]] + wpe[t]
extern "C" __global__ void encoder_forward(floatX* out, const int* inp, const floatX* wte, const floatX* wpe,
                                           int B, int T, int C) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long n = (long long)B * T * C;
    if (i >= n) return;
    int c = (int)(i % C);
    long long bt = i / C;
    int t = (int)(bt % T);
    int token = inp[bt];
    out[i] = fromFloat(toFloat(wte[(long long)token * C + c]) + toFloat(wpe[(long long)t * C + c]));
}

// dwpe (T, C) += sum over b of dout (B, T, C); one thread per (t, c), b summed in order.
extern "C" __global__ void encoder_backward_wpe(floatX* dwpe, const floatX* dout, int B, int T, int C,
                                                unsigned seed) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * C) return;
    float sum = 0.0f;
    for (int b = 0; b < B; b++) sum += toFloat(dout[(long long)b * T * C + i]);
    dwpe[i] = fromFloatStochastic(toFloat(dwpe[i]) + sum, (unsigned)i, seed);
}

// dwte[token] += sum of dout rows at the positions of that token. One block per distinct token:
// bucketTokens (numBuckets), bucketStarts (numBuckets + 1) into positions (B*T, flat b*T+t).
extern "C" __global__ void encoder_backward_wte(floatX* dwte, const floatX* dout, const int* bucketTokens,
                                                const int* bucketStarts, const int* positions, int C,
                                                unsigned seed) {
    int bucket = blockIdx.x;
    int token = bucketTokens[bucket];
    int start = bucketStarts[bucket], end = bucketStarts[bucket + 1];
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float sum = 0.0f;
        for (int p = start; p < end; p++) sum += toFloat(dout[(long long)positions[p] * C + c]);
        long long w = (long long)token * C + c;
        dwte[w] = fromFloatStochastic(toFloat(dwte[w]) + sum, (unsigned)w, seed);
    }
}
