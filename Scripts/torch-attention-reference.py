#!/usr/bin/env python3
# Reference timings for docs/gpu-performance.md: PyTorch's fused causal attention kernels (FlashAttention-2,
# cuDNN, memory-efficient) at GPT-2's shapes (head size 64, bf16), forward and forward + backward, with
# CUDA events, median of 20 after 5 warm-ups. Run on the GPU host (PyTorch is there, not in llm.swift):
#   python3 Scripts/torch-attention-reference.py [B ...]
# Layout as in llm.swift: q, k, v are strided views into one (B, T, 3C) tensor; the output is (B, T, C).
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F

T, NH, HS = 1024, 12, 64
C = NH * HS


def median_ms(fn, warmup=5, repeats=20):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main():
    batches = [int(b) for b in sys.argv[1:]] or [16, 64]
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION)]
    for B in batches:
        flops_fwd = 4 * B * NH * T * T * HS / 2  # two products, causal half
        qkv = torch.randn(B, T, 3 * C, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        dout = torch.randn(B, NH, T, HS, device="cuda", dtype=torch.bfloat16)

        def views():
            q, k, v = qkv.split(C, dim=2)
            return [x.view(B, T, NH, HS).transpose(1, 2) for x in (q, k, v)]

        for name, backend in backends:
            try:
                with sdpa_kernel(backend):
                    def forward():
                        with torch.no_grad():
                            q, k, v = views()
                            F.scaled_dot_product_attention(q, k, v, is_causal=True)

                    def forward_backward():
                        qkv.grad = None  # no accumulation kernel in the timing
                        q, k, v = views()
                        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                        y.backward(dout)

                    f = median_ms(forward)
                    fb = median_ms(forward_backward)
                b = fb - f
                print(f"B={B:3d} {name:9s} forward {f:7.3f} ms ({flops_fwd / f / 1e9:6.1f} TFLOP/s)   "
                      f"backward {b:7.3f} ms ({2.5 * flops_fwd / b / 1e9:6.1f} TFLOP/s, 5 products)   per layer")
            except Exception as e:  # a backend that does not take this shape or build
                print(f"B={B:3d} {name:9s} unavailable: {str(e).splitlines()[0][:100]}")


if __name__ == "__main__":
    main()
