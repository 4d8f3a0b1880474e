// The loss head over the logits (N rows of Vp, only the first V real): per-row cross-entropy,
// and its gradient written in place over the logits. Probabilities are never stored.
#include "common.cuh"

// One block per row: returns max and sum of exp(x - max) over the first V logits.
__device__ void rowSoftmaxStats(const floatX* x, int V, float* scratch, float* maxOut, float* sumOut) {
    float m = NEG_INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, toFloat(x[i]));
    m = blockMax(m, scratch);
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(toFloat(x[i]) - m);
    *maxOut = m;
    *sumOut = blockSum(s, scratch);
}

// losses (N) = -log softmax(logits[row])[targets[row]]
extern "C" __global__ void classifier_loss(float* losses, const floatX* logits, const int* targets, int V, int Vp) {
    __shared__ float scratch[32];
    long long row = blockIdx.x;
    const floatX* x = logits + row * Vp;
    float m, s;
    rowSoftmaxStats(x, V, scratch, &m, &s);
    if (threadIdx.x == 0) losses[row] = logf(s) + m - toFloat(x[targets[row]]);
}

// logits[row] := (softmax - onehot(target)) * dloss for the first V columns, 0 for the padding.
extern "C" __global__ void classifier_backward(floatX* logits, const int* targets, float dloss, int V, int Vp) {
    __shared__ float scratch[32];
    long long row = blockIdx.x;
    floatX* x = logits + row * Vp;
    float m, s;
    rowSoftmaxStats(x, V, scratch, &m, &s);
    __syncthreads();  // every thread has read the row before any writes over it
    float inv = 1.0f / s;
    int target = targets[row];
    for (int i = threadIdx.x; i < Vp; i += blockDim.x) {
        float g = 0.0f;
        if (i < V) g = (expf(toFloat(x[i]) - m) * inv - (i == target ? 1.0f : 0.0f)) * dloss;
        x[i] = fromFloat(g);
    }
}
