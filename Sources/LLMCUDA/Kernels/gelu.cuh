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

// Both in as few dependent steps as the formula allows (x^2, one fma, one product, the tanh, one
// fma), with the constants folded: k x (1 + 0.044715 x^2) = x (k + 0.0356774 x^2). The epilogues run
// them on ~100 values a thread with few registers to spare, so their latency is what shows.
#define GELU_CUBE_SCALE 0.035677408136300125f     // sqrt(2 / pi) 0.044715
#define GELU_CUBE_SCALE_3 0.10703222440890037f    // sqrt(2 / pi) 3 0.044715

__device__ __forceinline__ float geluFast(float x) {
    const float t = tanhFast(x * fmaf(GELU_CUBE_SCALE, x * x, GELU_SCALE));
    const float half = 0.5f * x;
    return fmaf(half, t, half);
}

__device__ __forceinline__ float geluDerivativeFast(float x) {
    const float u = x * x;
    const float t = tanhFast(x * fmaf(GELU_CUBE_SCALE, u, GELU_SCALE));
    // 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 0.044715 x^2)
    return fmaf(0.5f * x * fmaf(-t, t, 1.0f), fmaf(GELU_CUBE_SCALE_3, u, GELU_SCALE), fmaf(0.5f, t, 0.5f));
}
