// Token + position embedding, forward and backward. The backward is deterministic: wte rows are
// summed per token from a bucket list the host builds (no atomics), with stochastic rounding.
#include "common.cuh"

// out (B, T, C) = wte[inp[b, t]] + wpe[t]. One 16-byte pack of C per thread (C % PACK == 0, as every
// kernel here assumes): one element per thread with its divisions took 0.28 ms a d12 call, 4x its bytes.
extern "C" __global__ void encoder_forward(floatX* out, const int* inp, const floatX* wte, const floatX* wpe,
                                           int B, int T, int C) {
    const long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * PACK;
    if (i >= (long long)B * T * C) return;
    const long long bt = i / C;
    const int c = (int)(i - bt * C), t = (int)(bt % T);
    const Pack w = loadPack(wte + (long long)inp[bt] * C + c), p = loadPack(wpe + (long long)t * C + c);
    Pack r;
#pragma unroll
    for (int k = 0; k < PACK; k++) r.v[k] = fromFloat(toFloat(w.v[k]) + toFloat(p.v[k]));
    storePack(out + i, r);
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
// bucketTokens (numBuckets), bucketStarts (numBuckets + 1) into positions (B*T, flat b*T+t). A thread
// sums one 16-byte pack of C over the token's positions in order (a frequent token has ~1000 of them
// at B=64, T=1024, so its block is the kernel's tail: packs make each step 8 channels wide).
extern "C" __global__ void encoder_backward_wte(floatX* dwte, const floatX* dout, const int* bucketTokens,
                                                const int* bucketStarts, const int* positions, int C,
                                                unsigned seed) {
    const int bucket = blockIdx.x;
    const int token = bucketTokens[bucket];
    const int start = bucketStarts[bucket], end = bucketStarts[bucket + 1];
    for (int c = threadIdx.x * PACK; c < C; c += blockDim.x * PACK) {
        float sum[PACK];
#pragma unroll
        for (int k = 0; k < PACK; k++) sum[k] = 0.0f;
        for (int p = start; p < end; p++) {
            const Pack d = loadPack(dout + (long long)positions[p] * C + c);
#pragma unroll
            for (int k = 0; k < PACK; k++) sum[k] += toFloat(d.v[k]);
        }
        const long long w = (long long)token * C + c;
        Pack g = loadPack(dwte + w);
#pragma unroll
        for (int k = 0; k < PACK; k++) g.v[k] = fromFloatStochastic(toFloat(g.v[k]) + sum[k], (unsigned)(w + k), seed);
        storePack(dwte + w, g);
    }
}
