// What the two flash attention files share (flash_attention.cu, flash_hopper.cu): the stored
// dS's layout, which the key/value kernels of both write and the dq kernel reads, and its store.
#pragma once

#if defined(LLM_BF16)

// 16 bytes to global memory marked streaming (evict first): dS is written once and read once, and
// so does not push the q, k, v and dout tiles that blocks share out of the L2 (-3 ms per step, run S6-3).
__device__ __forceinline__ void storeStreaming(bf16* p, uint4 v) {
    asm volatile("st.global.cs.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}

// Offset (elements) of pair (kt, qt)'s 64 x 64 dS in the stored-dS buffer of head b * NH + h:
// (B, NH, pairs, 4096), pairs = tiles (tiles + 1) / 2 in query-tile-major order. CUDAModel's
// flashDSBytes sizes the buffer the same way.
__device__ __forceinline__ long long dsPair(int b, int h, int NH, int tiles, int qt, int kt) {
    return ((((long long)b * NH + h) * (tiles * (tiles + 1) / 2) + qt * (qt + 1) / 2 + kt) << 12);
}

#endif
