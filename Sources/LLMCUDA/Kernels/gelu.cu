// GELU, tanh approximation (as GPT-2 and llm.c), forward and backward (in place over dout).
#include "common.cuh"
#include "gelu.cuh"

// One 16-byte pack per thread; N % PACK == 0.
extern "C" __global__ void gelu_forward(floatX* out, const floatX* inp, long long N) {
    long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * PACK;
    if (i >= N) return;
    Pack x = loadPack(inp + i), y;
#pragma unroll
    for (int k = 0; k < PACK; k++) y.v[k] = fromFloat(gelu(toFloat(x.v[k])));
    storePack(out + i, y);
}

// dinp (N) = gelu'(inp) * dout; dinp may be dout itself. One pack per thread; N % PACK == 0.
extern "C" __global__ void gelu_backward(floatX* dinp, const floatX* inp, const floatX* dout, long long N) {
    long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * PACK;
    if (i >= N) return;
    Pack x = loadPack(inp + i), g = loadPack(dout + i), d;
#pragma unroll
    for (int k = 0; k < PACK; k++) d.v[k] = fromFloat(geluDerivative(toFloat(x.v[k])) * toFloat(g.v[k]));
    storePack(dinp + i, d);
}

// gelu_backward and the bias gradient of the layer whose output was inp, in one pass: dinp (N, OC)
// = gelu'(inp) * dout (dinp may be dout), then dbias (OC) += dinp's column sums (as rounded to
// floatX). Grid, block, partials and counters as bias_backward (addColumnSums): the same bits as
// gelu_backward then bias_backward over dinp, without bias_backward's read of dinp.
extern "C" __global__ void gelu_backward_bias(floatX* dbias, float* partial, unsigned* counters, floatX* dinp,
                                              const floatX* inp, const floatX* dout, int N, int OC, int rowsPerBlock) {
    addColumnSums(dbias, partial, counters, N, OC, rowsPerBlock,
        [&](long long i) {
            Pack x = loadPack(inp + i), g = loadPack(dout + i), d;
#pragma unroll
            for (int k = 0; k < PACK; k++) d.v[k] = fromFloat(geluDerivative(toFloat(x.v[k])) * toFloat(g.v[k]));
            storePack(dinp + i, d);
            return d;
        },
        [&](long long i) {
            floatX d = fromFloat(geluDerivative(toFloat(inp[i])) * toFloat(dout[i]));
            dinp[i] = d;
            return toFloat(d);
        });
}
