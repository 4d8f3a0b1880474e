// AdamW on the GPU: fp32 moments and master weights, floatX parameters written with stochastic
// rounding. One launch per parameter tensor (weight decay differs per tensor).
#include "common.cuh"

// master may be null (fp32 mode: the parameters are the master weights).
extern "C" __global__ void adamw_update(floatX* params, float* master, const floatX* grads, float* m, float* v,
                                        long long n, float lr, float beta1, float beta2,
                                        float beta1Correction, float beta2Correction, float eps,
                                        float weightDecay, float gradScale, unsigned seed) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = toFloat(grads[i]) * gradScale;
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float mHat = mi / beta1Correction;
    float vHat = vi / beta2Correction;
    float old = master ? master[i] : toFloat(params[i]);
    float p = old - lr * (mHat / (sqrtf(vHat) + eps) + weightDecay * old);
    if (master) master[i] = p;
    params[i] = fromFloatStochastic(p, (unsigned)i, seed);
}
