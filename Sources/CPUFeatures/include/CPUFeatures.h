// What the compiler may assume of the CPU, as seen by clang with the build's -Xcc flags
// (-march=native, -march=x86-64-v3, ...). Swift reads these constants, so a kernel can pick a
// fused multiply-add only where the hardware has one: without it, Swift's `addingProduct`
// becomes a call to libm's fmaf for every lane, about 50 times slower than a multiply and an add.
#ifndef LLM_CPU_FEATURES_H
#define LLM_CPU_FEATURES_H

#if defined(__FMA__) || defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
#define LLM_HAS_FMA 1
#else
#define LLM_HAS_FMA 0
#endif

#if defined(__AVX512F__)
#define LLM_VECTOR_BITS 512
#elif defined(__AVX__)
#define LLM_VECTOR_BITS 256
#else
#define LLM_VECTOR_BITS 128
#endif

#endif
