#!/usr/bin/env bash
# Checks every flash-attention kernel (Sources/LLMCUDA/Kernels/flash_attention.cu, v1 and the
# variants) on the CPU, no GPU needed: each CUDA thread is an OS thread, and ldmatrix, mma.sync,
# shfl and cp.async are emulated per warp (emu.h). Prints relative L2 errors against a float64
# reference for T in the arguments (default 200 64 65); the variants should match v1's errors.
# Run twice per T: cp.async copies landing at issue and at their wait. One head pair (B=1,
# NH=2); about 30 s per T on 2 cores. Usage: Scripts/flash-emu/run.sh [T...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 "$here/gen.py" "$here/../../Sources/LLMCUDA/Kernels/flash_attention.cu" "$work/fa_emu.cpp"
cp "$here/emu.h" "$here/main.cpp" "$work/"
g++ -std=c++20 -O1 -pthread -w "$work/main.cpp" -o "$work/emu"
for T in "${@:-200 64 65}"; do
    echo "T=$T, copies land at issue"
    "$work/emu" "$T"
    echo "T=$T, copies land at their wait (EMU_LATE)"
    EMU_LATE=1 "$work/emu" "$T"
done
