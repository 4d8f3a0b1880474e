// What the two flash attention files share (flash_attention.cu, flash_hopper.cu): the stored
// dS's layout, which the key/value kernels of both write (with common.cuh's storeStreaming) and
// the dq kernel reads.
#pragma once

#if defined(LLM_BF16)

// Offset (elements) of pair (kt, qt)'s 64 x 64 dS in the stored-dS buffer of head b * NH + h:
// (B, NH, pairs, 4096), pairs = tiles (tiles + 1) / 2 in query-tile-major order. CUDAModel's
// flashDSBytes sizes the buffer the same way.
__device__ __forceinline__ long long dsPair(int b, int h, int NH, int tiles, int qt, int kt) {
    return ((((long long)b * NH + h) * (tiles * (tiles + 1) / 2) + qt * (qt + 1) / 2 + kt) << 12);
}

#endif
