// The loss head over the logits (N rows of Vp, only the first V real): per-row cross-entropy and
// log-sum-exp, then its gradient written in place over the logits from that log-sum-exp (one read
// and one write per logit). Probabilities are never stored. Rows are read in 16-byte packs (Vp % PACK == 0).
// The model runs them on row chunks of the logits (pointers offset by the chunk's first row).
#include "common.cuh"

// losses (N) = -log softmax(logits[row])[targets[row]]; lse (N) = log sum exp of the row's first V
// logits. One block per row; each thread keeps a running maximum and the sum scaled to it (online
// softmax: one pass over the row), then the block combines them.
extern "C" __global__ void classifier_loss(float* losses, float* lse, const floatX* logits, const int* targets,
                                           int V, int Vp) {
    __shared__ float scratch[32];
    long long row = blockIdx.x;
    const floatX* x = logits + row * Vp;
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
    if (threadIdx.x == 0) {
        float l = rowMax + logf(rowSum);
        lse[row] = l;
        losses[row] = l - toFloat(x[targets[row]]);
    }
}

// logits[row] := (softmax - onehot(target)) * dloss for the first V columns, 0 for the padding,
// with softmax = exp(logit - lse[row]) from classifier_loss.
extern "C" __global__ void classifier_backward(floatX* logits, const float* lse, const int* targets, float dloss,
                                               int V, int Vp) {
    long long row = blockIdx.x;
    floatX* x = logits + row * Vp;
    const float l = lse[row];
    const int target = targets[row];
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
