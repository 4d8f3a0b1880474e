// GELU, tanh approximation (as GPT-2 and llm.c), and its derivative: the element functions shared
// by gelu.cu's kernels and the Hopper GEMM's epilogues (gemm_hopper.cu).
#pragma once

#define GELU_SCALE 0.7978845608028654f  // sqrt(2 / pi)

__device__ __forceinline__ float gelu(float x) {
    float cube = 0.044715f * x * x * x;
    return 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + cube)));
}

// d gelu(x) / dx, with sech^2 = 1 - tanh^2 (as the CPU path): one tanh per element, where
// 1 / cosh^2 took an exponential and two reciprocals more, enough special-function work to slow
// the bandwidth-bound gelu_backward_bias (H100, d24, S8-2/S8-3: 0.331 -> 0.306 ms a call; its
// bytes take 0.27).
__device__ __forceinline__ float geluDerivative(float x) {
    float cube = 0.044715f * x * x * x;
    float arg = GELU_SCALE * (x + cube);
    float th = tanhf(arg);
    float sech2 = 1.0f - th * th;
    return 0.5f * (1.0f + th) + x * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
}

// The same two with the hardware's tanh (tanh.approx.f32: one MUFU instruction, relative error
// ~2^-11, below bf16's rounding of the result): the Hopper GEMM's epilogues, whose registers and
// issue slots are shared with the products of the other consumer (gemm_hopper.cu).
__device__ __forceinline__ float tanhFast(float x) {
    float y;
    asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float geluFast(float x) {
    float cube = 0.044715f * x * x * x;
    return 0.5f * x * (1.0f + tanhFast(GELU_SCALE * (x + cube)));
}

__device__ __forceinline__ float geluDerivativeFast(float x) {
    float cube = 0.044715f * x * x * x;
    float th = tanhFast(GELU_SCALE * (x + cube));
    float sech2 = 1.0f - th * th;
    return 0.5f * (1.0f + th) + x * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
}
