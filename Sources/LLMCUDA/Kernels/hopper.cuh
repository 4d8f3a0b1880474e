// Hopper (sm_90a) building blocks shared by gemm_hopper.cu and flash_hopper.cu: TMA copies and
// their mbarriers, warpgroup MMAs (wgmma) and their shared-memory descriptors, as inline PTX.
// HOPPER_WGMMA is defined where they compile: sm_90a in bf16; elsewhere the kernels trap.
#pragma once

// A CUtensorMap (cuda.h): 128 opaque bytes made by cuTensorMapEncodeTiled on the host, passed by value.
struct __align__(64) TensorMap { unsigned long long words[16]; };

#if defined(LLM_BF16) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define HOPPER_WGMMA 1
#endif

#ifdef HOPPER_WGMMA

// MARK: - Barriers and copies (PTX)

__device__ __forceinline__ unsigned sharedAddress(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void barrierInit(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void barrierArrive(unsigned bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(bar) : "memory");
}
// Arrive and announce `bytes` more to come from TMA copies on this barrier's current phase.
__device__ __forceinline__ void barrierExpect(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar), "r"(bytes) : "memory");
}
// Waits until the phase of parity `parity` has completed (a fresh barrier counts parity 1 as done).
__device__ __forceinline__ void barrierWait(unsigned bar, unsigned parity) {
    asm volatile("{\n"
                 ".reg .pred done;\n"
                 "WAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra WAIT;\n"
                 "}\n" :: "r"(bar), "r"(parity) : "memory");
}
// One arrival on `bar` for the calling warp, once every lane is here (after the warp's work that
// the barrier releases, e.g. its reads of a stage): barriers counted in warps.
__device__ __forceinline__ void arriveOncePerWarp(unsigned bar) {
    __syncwarp();
    if (threadIdx.x % 32 == 0) barrierArrive(bar);
}
// A barrier of the 128 threads of consumer warpgroup c (named barrier 1 + c).
__device__ __forceinline__ void warpgroupSync(int c) {
    asm volatile("bar.sync %0, 128;" :: "r"(1 + c) : "memory");
}

// The box of `map` at element (x along the rows, y the row) into shared memory at dst; its bytes
// count on `bar`.
__device__ __forceinline__ void tmaLoad(unsigned dst, const TensorMap* map, unsigned bar, int x, int y) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];"
                 :: "r"(dst), "l"((unsigned long long)map), "r"(bar), "r"(x), "r"(y) : "memory");
}

// An L2 policy: lines accessed with it are evicted first. For the epilogues' streams (hundreds of
// MB, each byte touched once), whose lines otherwise crowd the operands' tiles out of the L2:
// with two output streams A's tiles were read from DRAM 1.6 times as often (S12-10), and GELU
// ran at 476-521 TFLOP/s against 565 with the policy (S12-11).
__device__ __forceinline__ unsigned long long evictFirst() {
    unsigned long long policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}

// tmaLoad with evictFirst's policy.
__device__ __forceinline__ void tmaLoadOnce(unsigned dst, const TensorMap* map, unsigned bar, int x, int y) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
                 " [%0], [%1, {%3, %4}], [%2], %5;"
                 :: "r"(dst), "l"((unsigned long long)map), "r"(bar), "r"(x), "r"(y), "l"(evictFirst()) : "memory");
}

// The box of `map` at (x, y) from shared memory at src (TMA store, in this thread's bulk group),
// with evictFirst's policy.
__device__ __forceinline__ void tmaStore(const TensorMap* map, unsigned src, int x, int y) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group.L2::cache_hint [%0, {%2, %3}], [%1], %4;"
                 :: "l"((unsigned long long)map), "r"(src), "r"(x), "r"(y), "l"(evictFirst()) : "memory");
}
__device__ __forceinline__ void bulkCommit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
// Until this thread's TMA stores have read their shared memory (it may be written again).
__device__ __forceinline__ void bulkWaitRead() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
// Until this thread's TMA stores are done.
__device__ __forceinline__ void bulkWait() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
// This thread's shared-memory writes, visible to the TMA (the async proxy).
__device__ __forceinline__ void fenceAsyncShared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// MARK: - Warpgroup MMA

// Shared-memory matrix descriptor of a K-major tile written by TMA with the 128-byte swizzle:
// rows of 128 bytes, 8-row groups 1024 bytes apart (stride offset), leading offset unused (1).
// A k16 slice further along K starts 32 bytes later; the tile base is 1024-byte aligned.
__device__ __forceinline__ unsigned long long smemDescriptor(unsigned addr) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmmaFence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmmaWait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of N accumulator registers across the asynchronous MMAs.
template <int N>
__device__ __forceinline__ void fenceRegisters(float* d) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i]) :: "memory");
}

// The "+f" operands of accumulators d[i] .. d[i + 7], for the wgmma wrappers' output lists (an
// m64nN fragment is N / 2 floats a thread: N / 16 of these).
#define WGMMA_ACC8(d, i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                         "+f"(d[i + 6]), "+f"(d[i + 7])

// d (64 x 128, fp32, the accumulator fragment) (+)= A (64 x 16) . B (128 x 16)^T, both from shared memory.
__device__ __forceinline__ void wgmma128(float* d, unsigned long long a, unsigned long long b, int accumulate) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n"
        "}\n"
        : WGMMA_ACC8(d, 0), WGMMA_ACC8(d, 8), WGMMA_ACC8(d, 16), WGMMA_ACC8(d, 24),
          WGMMA_ACC8(d, 32), WGMMA_ACC8(d, 40), WGMMA_ACC8(d, 48), WGMMA_ACC8(d, 56)
        : "l"(a), "l"(b), "r"(accumulate));
}

__device__ __forceinline__ unsigned packBF16(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));  // one instruction for the pair
    return r;
}

#endif  // HOPPER_WGMMA
