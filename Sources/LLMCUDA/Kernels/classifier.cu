// The loss head over the logits (N rows of Vp, only the first V real): per-row cross-entropy and
// log-sum-exp, then its gradient written in place over the logits from that log-sum-exp (one read
// and one write per logit). Probabilities are never stored. Rows are read in 16-byte packs (Vp % PACK == 0).
// The model runs them on row chunks of the logits (pointers offset by the chunk's first row).
#include "common.cuh"

// The row's log-sum-exp over its first V logits, for every thread of the block. Each thread keeps a
// running maximum and the sum scaled to it (online softmax: one pass over the row), then the block
// combines them.
__device__ float rowLogSumExp(const floatX* x, int V, float* scratch) {
    float m = NEG_INFINITY, s = 0.0f;
    for (int c = threadIdx.x * PACK; c < V; c += blockDim.x * PACK) {
        Pack p = loadPack(x + c);
        float packMax = NEG_INFINITY;
#pragma unroll
        for (int i = 0; i < PACK; i++) if (c + i < V) packMax = fmaxf(packMax, toFloat(p.v[i]));
        float newMax = fmaxf(m, packMax);
        s *= expf(m - newMax);  // 0 on the first pack (m = -inf)
        m = newMax;
#pragma unroll
        for (int i = 0; i < PACK; i++) if (c + i < V) s += expf(toFloat(p.v[i]) - m);
    }
    float rowMax = blockMax(m, scratch);
    float rowSum = blockSum(m == NEG_INFINITY ? 0.0f : s * expf(m - rowMax), scratch);
    return rowMax + logf(rowSum);
}

// dlogits for the first V columns, 0 for the padding, written over the row: (softmax - onehot) * dloss.
__device__ void rowGradient(floatX* x, float l, int target, float dloss, int V, int Vp) {
    for (int c = threadIdx.x * PACK; c < Vp; c += blockDim.x * PACK) {
        Pack p = loadPack(x + c);
#pragma unroll
        for (int i = 0; i < PACK; i++) {
            float g = 0.0f;
            if (c + i < V) g = (expf(toFloat(p.v[i]) - l) - (c + i == target ? 1.0f : 0.0f)) * dloss;
            p.v[i] = fromFloat(g);
        }
        storePack(x + c, p);
    }
}

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
