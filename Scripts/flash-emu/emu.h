// CPU emulation of the CUDA features flash_attention.cu uses: one OS thread per CUDA thread,
// warp collectives (ldmatrix, mma.sync, shfl) through per-warp slots and barriers.
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <vector>
#define LLM_BF16 1
#define __device__
#define __forceinline__ inline
#define __global__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
struct dim3e { unsigned x = 0, y = 0, z = 0; };
extern thread_local dim3e threadIdx, blockIdx;
extern dim3e gridDim;
struct uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct float2 { float x, y; };
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
#define NEG_INFINITY __int_as_float(0xff800000)
struct bf16 { unsigned short bits; };
typedef bf16 floatX;
inline void storeStreaming(bf16* p, uint4 v) { memcpy(p, &v, 16); }
inline float toFloat(floatX x) { return __uint_as_float(((unsigned)x.bits) << 16); }
inline unsigned short roundBF16(float f) {  // round to nearest even
    unsigned u = __float_as_uint(f);
    if ((u & 0x7f800000U) == 0x7f800000U) return (unsigned short)(u >> 16) | ((u & 0xffff) ? 0x40 : 0);
    u += 0x7fff + ((u >> 16) & 1);
    return (unsigned short)(u >> 16);
}

struct Warp {
    std::barrier<> bar{32};
    uint64_t slot[32][8];
};
struct Block {
    std::barrier<> bar{128};
    Warp warps[4];
    alignas(16) unsigned char shared[232448];
};
extern Block* currentBlock;
inline unsigned char* sharedBase() { return currentBlock->shared; }
inline bf16* emuSharedBase() { return (bf16*)sharedBase(); }
inline void __syncthreads() { currentBlock->bar.arrive_and_wait(); }
inline Warp& myWarp() { return currentBlock->warps[threadIdx.x / 32]; }

inline unsigned sharedAddress(const void* p) { return (unsigned)((const unsigned char*)p - sharedBase()); }
// cp.async: with $EMU_LATE set, a copy lands only at the wait that must complete it (the latest
// moment the hardware may land it: catches reads before their wait); else at once (the earliest).
struct Copy { unsigned dst; const void* src; bool valid; };
extern bool emuLate;
extern thread_local std::vector<std::vector<Copy>> copyGroups;  // committed, oldest first
extern thread_local std::vector<Copy> openGroup;
inline void landCopy(const Copy& c) {
    if (c.valid) memcpy(sharedBase() + c.dst, c.src, 16); else memset(sharedBase() + c.dst, 0, 16);
}
inline void copyAsync16(unsigned dst, const void* src, bool valid) {
    if (emuLate) openGroup.push_back({dst, src, valid}); else landCopy({dst, src, valid});
}
inline void commitCopies() { copyGroups.push_back(openGroup); openGroup.clear(); }
inline void waitGroups(size_t pending) {
    while (copyGroups.size() > pending) {
        for (auto& c : copyGroups.front()) landCopy(c);
        copyGroups.erase(copyGroups.begin());
    }
}
inline void waitAllButLatest() { waitGroups(1); }
inline void waitAll() { waitGroups(0); }

inline float __shfl_xor_sync(unsigned, float v, int mask) {
    Warp& w = myWarp(); int lane = threadIdx.x % 32;
    w.slot[lane][0] = __float_as_uint(v);
    w.bar.arrive_and_wait();
    float r = __uint_as_float((unsigned)w.slot[lane ^ mask][0]);
    w.bar.arrive_and_wait();
    return r;
}

// ldmatrix x4: lane i gives the row address of matrix i / 8, row i % 8.
inline void ldmatrixEmu(unsigned (&r)[4], const unsigned char* row, bool trans) {
    Warp& w = myWarp(); int lane = threadIdx.x % 32;
    w.slot[lane][0] = (uint64_t)row;
    w.bar.arrive_and_wait();
    for (int m = 0; m < 4; m++) {
        unsigned short e[2];
        for (int j = 0; j < 2; j++) {
            int rr, cc;
            if (!trans) { rr = lane / 4; cc = 2 * (lane % 4) + j; }
            else { rr = 2 * (lane % 4) + j; cc = lane / 4; }
            const unsigned short* p = (const unsigned short*)w.slot[m * 8 + rr][0];
            e[j] = p[cc];
        }
        r[m] = e[0] | ((unsigned)e[1] << 16);
    }
    w.bar.arrive_and_wait();
}
inline void loadMatrices(unsigned (&r)[4], unsigned a) { ldmatrixEmu(r, sharedBase() + a, false); }
inline void loadMatricesTransposed(unsigned (&r)[4], unsigned a) { ldmatrixEmu(r, sharedBase() + a, true); }

inline float lo16(unsigned u) { return __uint_as_float(u << 16); }
inline float hi16(unsigned u) { return __uint_as_float(u & 0xffff0000U); }
// mma.m16n8k16 row.col bf16 -> f32
inline void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    Warp& w = myWarp(); int lane = threadIdx.x % 32;
    for (int i = 0; i < 4; i++) w.slot[lane][i] = a[i];
    w.slot[lane][4] = b0; w.slot[lane][5] = b1;
    w.bar.arrive_and_wait();
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        int g = l / 4, t = l % 4;
        unsigned a0 = w.slot[l][0], a1 = w.slot[l][1], a2 = w.slot[l][2], a3 = w.slot[l][3];
        A[g][2 * t] = lo16(a0); A[g][2 * t + 1] = hi16(a0);
        A[g + 8][2 * t] = lo16(a1); A[g + 8][2 * t + 1] = hi16(a1);
        A[g][2 * t + 8] = lo16(a2); A[g][2 * t + 9] = hi16(a2);
        A[g + 8][2 * t + 8] = lo16(a3); A[g + 8][2 * t + 9] = hi16(a3);
        unsigned c0 = w.slot[l][4], c1 = w.slot[l][5];
        B[2 * t][g] = lo16(c0); B[2 * t + 1][g] = hi16(c0);
        B[2 * t + 8][g] = lo16(c1); B[2 * t + 9][g] = hi16(c1);
    }
    w.bar.arrive_and_wait();
    int g = lane / 4, t = lane % 4;
    for (int e = 0; e < 4; e++) {
        int row = g + (e / 2) * 8, col = 2 * t + (e & 1);
        float s = d[e];
        for (int k = 0; k < 16; k++) s += A[row][k] * B[k][col];
        d[e] = s;
    }
}
inline unsigned packPair(float lo, float hi) { return roundBF16(lo) | ((unsigned)roundBF16(hi) << 16); }
// movmatrix.m8n8.trans.b16: lane l holds (row l / 4, columns 2 (l % 4), +1) of the matrix and gets
// the same elements of its transpose.
inline unsigned transposeMatrix(unsigned a) {
    Warp& w = myWarp(); int lane = threadIdx.x % 32;
    w.slot[lane][0] = a;
    w.bar.arrive_and_wait();
    unsigned short e[2];
    for (int j = 0; j < 2; j++) {  // transpose (r, c) = matrix (c, r), r = lane / 4, c = 2 (lane % 4) + j
        int r = lane / 4, c = 2 * (lane % 4) + j;
        unsigned src = (unsigned)w.slot[c * 4 + r / 2][0];
        e[j] = (unsigned short)(r % 2 ? src >> 16 : src & 0xffff);
    }
    w.bar.arrive_and_wait();
    return e[0] | ((unsigned)e[1] << 16);
}
