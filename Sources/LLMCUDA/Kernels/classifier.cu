// The loss head over the logits (N rows of Vp, only the first V real): per-row cross-entropy and
// log-sum-exp, then its gradient written in place over the logits from that log-sum-exp (one read
// and one write per logit). Probabilities are never stored. Rows are read in 16-byte packs (Vp % PACK == 0).
// The model runs them on row chunks of the logits (pointers offset by the chunk's first row).
#include "common.cuh"

// MARK: - One row

// Folds `count` values of a pack (all PACK of them, a compile-time constant in the main loop, so
// no per-value bound checks) into a thread's running maximum m and its sum s scaled to m (online
// softmax: one pass over the row).
__device__ __forceinline__ void foldPack(float& m, float& s, const Pack& p, int count) {
    float packMax = NEG_INFINITY;
#pragma unroll
    for (int i = 0; i < PACK; i++) if (i < count) packMax = fmaxf(packMax, toFloat(p.v[i]));
    const float newMax = fmaxf(m, packMax);
    s *= expf(m - newMax);  // 0 on the first pack (m = -inf)
    m = newMax;
#pragma unroll
    for (int i = 0; i < PACK; i++) if (i < count) s += expf(toFloat(p.v[i]) - m);
}

// The block's log-sum-exp of a row from each thread's (m, s); every thread gets it.
__device__ __forceinline__ float combineLogSumExp(float m, float s, float* scratch) {
    const float rowMax = blockMax(m, scratch);
    const float rowSum = blockSum(m == NEG_INFINITY ? 0.0f : s * expf(m - rowMax), scratch);
    return rowMax + logf(rowSum);
}

// The gradient of the pack at column c, (softmax - onehot) * dloss for the first V columns, 0 for
// the padding: the bound and target checks only on the packs that need them.
__device__ __forceinline__ Pack gradientPack(Pack p, int c, float l, int target, float dloss, int V) {
    if (c + PACK <= V && (unsigned)(target - c) >= (unsigned)PACK) {
#pragma unroll
        for (int i = 0; i < PACK; i++) p.v[i] = fromFloat(expf(toFloat(p.v[i]) - l) * dloss);
    } else {
#pragma unroll
        for (int i = 0; i < PACK; i++) {
            float g = 0.0f;
            if (c + i < V) g = (expf(toFloat(p.v[i]) - l) - (c + i == target ? 1.0f : 0.0f)) * dloss;
            p.v[i] = fromFloat(g);
        }
    }
    return p;
}

// The row's log-sum-exp over its first V logits, for every thread of the block. Thread t folds the
// packs t, t + blockDim, ... in order, the last one (V % PACK values) where it falls.
__device__ float rowLogSumExp(const floatX* x, int V, float* scratch) {
    float m = NEG_INFINITY, s = 0.0f;
    const int whole = V / PACK * PACK;
    int c = threadIdx.x * PACK;
    for (; c < whole; c += blockDim.x * PACK) foldPack(m, s, loadPack(x + c), PACK);
    if (c < V) foldPack(m, s, loadPack(x + c), V - c);
    return combineLogSumExp(m, s, scratch);
}

// dlogits for the first V columns, 0 for the padding, written over the row, marked streaming: they
// go on to two matmuls that read far more than the L2 holds, while rows still read twice stay in it.
__device__ void rowGradient(floatX* x, float l, int target, float dloss, int V, int Vp) {
    for (int c = threadIdx.x * PACK; c < Vp; c += blockDim.x * PACK)
        storePackStreaming(x + c, gradientPack(loadPack(x + c), c, l, target, dloss, V));
}

// MARK: - Kernels

// losses (N) = -log softmax(logits[row])[targets[row]]; lse (N) = log sum exp of the row's first V
// logits. One block per row.
extern "C" __global__ void classifier_loss(float* losses, float* lse, const floatX* logits, const int* targets,
                                           int V, int Vp) {
    __shared__ float scratch[32];
    long long row = blockIdx.x;
    const floatX* x = logits + row * Vp;
    float l = rowLogSumExp(x, V, scratch);
    if (threadIdx.x == 0) {
        lse[row] = l;
        losses[row] = l - toFloat(x[targets[row]]);
    }
}

// logits[row] := (softmax - onehot(target)) * dloss for the first V columns, 0 for the padding,
// with softmax = exp(logit - lse[row]) from classifier_loss.
extern "C" __global__ void classifier_backward(floatX* logits, const float* lse, const int* targets, float dloss,
                                               int V, int Vp) {
    long long row = blockIdx.x;
    rowGradient(logits + row * Vp, lse[row], targets[row], dloss, V, Vp);
}

// Both of the above in one launch for a training micro-step: the loss and log-sum-exp, then the
// gradient over the same row while it is still in L2 (a row is Vp * 2 bytes, ~100 KB at GPT-2's
// vocabulary), so the logits come from memory once instead of twice. Same arithmetic, same bits.
extern "C" __global__ void classifier_loss_backward(floatX* logits, float* losses, float* lse, const int* targets,
                                                    float dloss, int V, int Vp) {
    __shared__ float scratch[32];
    long long row = blockIdx.x;
    floatX* x = logits + row * Vp;
    const int target = targets[row];
    const float targetLogit = toFloat(x[target]);  // read before any thread overwrites the row
    float l = rowLogSumExp(x, V, scratch);          // ends with a barrier: every read of pass one is done
    if (threadIdx.x == 0) {
        lse[row] = l;
        losses[row] = l - targetLogit;
    }
    rowGradient(x, l, target, dloss, V, Vp);
}

// The same with the row staged in shared memory (dynamic, Vp floatX): copied in once with
// asynchronous 16-byte copies (cp.async, sm_80 on), both passes read it from there, so the row
// leaves memory once whatever the L2 keeps; two blocks of 1024 threads an SM (~100 KB each at
// GPT-2's vocabulary), one's copies running beside the other's arithmetic. Same threads, same
// order, same bits as classifier_loss_backward.
extern "C" __global__ void __launch_bounds__(1024, 2)
classifier_loss_backward_staged(floatX* logits, float* losses, float* lse, const int* targets, float dloss,
                                int V, int Vp) {
    extern __shared__ __align__(16) unsigned char stagedRow[];
    __shared__ float scratch[32];
    const floatX* row = (const floatX*)stagedRow;
    const long long r = blockIdx.x;
    floatX* x = logits + r * Vp;
    const unsigned base = (unsigned)__cvta_generic_to_shared(stagedRow);
    for (int c = threadIdx.x * PACK; c < Vp; c += blockDim.x * PACK)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(base + c * (int)sizeof(floatX)), "l"(x + c) : "memory");
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;" ::: "memory");
    __syncthreads();
    const int target = targets[r];
    float l = rowLogSumExp(row, V, scratch);
    if (threadIdx.x == 0) {
        lse[r] = l;
        losses[r] = l - toFloat(row[target]);
    }
    for (int c = threadIdx.x * PACK; c < Vp; c += blockDim.x * PACK)
        storePackStreaming(x + c, gradientPack(loadPack(row + c), c, l, target, dloss, V));
}

// grad (n) += sum (n, fp32), rounded to nearest once: the LM head's dwte, summed over the row
// chunks of the classifier in an fp32 scratch, joins the bf16 gradient. One 16-byte pack of grad
// per thread (n % PACK == 0); one writer per element, so the result is the same on every run.
extern "C" __global__ void add_fp32_gradient(floatX* grad, const float* sum, long long n) {
    long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * PACK;
    if (i >= n) return;
    Pack g = loadPack(grad + i);
    const float4* s = (const float4*)(sum + i);
#pragma unroll
    for (int k = 0; k < PACK / 4; k++) {
        float4 f = s[k];
        g.v[4 * k + 0] = fromFloat(toFloat(g.v[4 * k + 0]) + f.x);
        g.v[4 * k + 1] = fromFloat(toFloat(g.v[4 * k + 1]) + f.y);
        g.v[4 * k + 2] = fromFloat(toFloat(g.v[4 * k + 2]) + f.z);
        g.v[4 * k + 3] = fromFloat(toFloat(g.v[4 * k + 3]) + f.w);
    }
    storePack(grad + i, g);
}
