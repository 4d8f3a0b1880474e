// GELU, tanh approximation (as GPT-2 and llm.c), forward and backward (in place over dout).
#include "common.cuh"

#define GELU_SCALE 0.7978845608028654f  // sqrt(2 / pi)

extern "C" __global__ void gelu_forward(floatX* out, const floatX* inp, long long N) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float x = toFloat(inp[i]);
    float cube = 0.044715f * x * x * x;
    out[i] = fromFloat(0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + cube))));
}

// dinp (N) = gelu'(inp) * dout; dinp may be dout itself.
extern "C" __global__ void gelu_backward(floatX* dinp, const floatX* inp, const floatX* dout, long long N) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float x = toFloat(inp[i]);
    float cube = 0.044715f * x * x * x;
    float arg = GELU_SCALE * (x + cube);
    float th = tanhf(arg);
    float ch = coshf(arg);
    float sech2 = 1.0f / (ch * ch);
    float local = 0.5f * (1.0f + th) + x * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] = fromFloat(local * toFloat(dout[i]));
}
