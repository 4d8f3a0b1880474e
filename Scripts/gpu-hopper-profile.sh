#!/usr/bin/env bash
# Nsight Compute on the Hopper GEMM at d12's fc shape (65536 x 3072 x 768) on a GPU host: the
# cuda-selftest's GEMM timing without the tiny parity run (whose small launches would be profiled
# first), each kernel's first 65536-row launch (the 8192-row check is launch 0). Reports go to $OUT.
# Usage: Scripts/gpu-hopper-profile.sh DIST [plain gelu dgelu]
set -uo pipefail
d="${1:-dist/final}"; [ $# -gt 0 ] && shift
if [ $# -gt 0 ]; then kernels=("$@"); else kernels=(plain gelu dgelu); fi
out="${OUT:-gpu-out}"; mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LLM_KERNEL_CACHE="${LLM_KERNEL_CACHE:-/tmp/llm-kernel-cache}"
for k in "${kernels[@]}"; do
    ncu --kernel-name "gemm_hopper_$k" --launch-skip 1 --launch-count 1 --set full \
        "$d/llm" cuda-selftest --no-parity --precision bf16 --attention-batch 0 --classifier-batch 0 \
        --determinism-steps 0 --bench-steps 0 > "$out/ncu-$k.txt" 2>&1
    echo "== gemm_hopper_$k (rc $?)"
    grep -E "\(([0-9]+), 1, 1\)x\(384|Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Executed Ipc Active|No Eligible|Stall" "$out/ncu-$k.txt" | head -20
done
