# How fast one bf16 GEMM runs when it runs without a pause: PyTorch (cuBLAS) multiplies two n x n
# matrices back to back for a few seconds after the GPU has idled, a CUDA event around each call,
# and prints the rate in windows of time since the start. A measurement for the notes (a step runs
# at the 700 W power cap: docs/gpu-performance.md, ninth round), not part of llm.swift.
# Usage: python3 Scripts/torch-gemm-power.py [n, default 8192] [seconds, default 6] [m k: an m x k by k x n product]
import sys
import time

import torch

n = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 6.0
m = int(sys.argv[3]) if len(sys.argv) > 3 else n
k = int(sys.argv[4]) if len(sys.argv) > 4 else n
a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
flop = 2.0 * m * n * k

for _ in range(5):
    torch.matmul(a, b, out=c)
torch.cuda.synchronize()
t0 = time.time()
for _ in range(20):
    torch.matmul(a, b, out=c)
torch.cuda.synchronize()
per_call = (time.time() - t0) / 20
calls = max(50, int(seconds / per_call))
time.sleep(3.0)  # let the GPU cool to its idle clock and power

events = [torch.cuda.Event(enable_timing=True) for _ in range(calls + 1)]
events[0].record()
for i in range(calls):
    torch.matmul(a, b, out=c)
    events[i + 1].record()
torch.cuda.synchronize()
ms = [events[i].elapsed_time(events[i + 1]) for i in range(calls)]

print(f"{m}x{k} by {k}x{n} bf16, {calls} calls back to back ({sum(ms) / 1000:.2f} s)")
print(f"{'window (ms since start)':>26} {'calls':>6} {'median ms':>10} {'TFLOP/s':>8}")
edges = [0, 10, 50, 100, 250, 500, 1000, 2000, 4000, 1e12]
elapsed, window, rows = 0.0, 0, {}
for t in ms:
    while elapsed >= edges[window + 1]:
        window += 1
    rows.setdefault(window, []).append(t)
    elapsed += t
for w in sorted(rows):
    v = sorted(rows[w])
    med = v[len(v) // 2]
    hi = "end" if edges[w + 1] > 1e11 else f"{edges[w + 1]:.0f}"
    print(f"{f'{edges[w]:.0f}-{hi}':>26} {len(v):>6} {med:>10.4f} {flop / med / 1e9:>8.1f}")
