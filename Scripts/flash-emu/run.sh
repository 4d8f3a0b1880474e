#!/usr/bin/env bash
# CPU emulator of the flash-attention kernels (Sources/LLMCUDA/Kernels/flash_attention.cu): checks
# the forward, query and key/value kernels without a GPU. gen.py turns the .cu file into C++ with
# the PTX helpers removed; emu.h runs each CUDA thread as an OS thread and emulates ldmatrix,
# mma.sync, shfl and cp.async per warp; main.cpp prints relative L2 errors of out, dq, dk, dv (and
# lse's max difference) against a float64 reference for each T in the arguments (default 200 64
# 65). Run twice per T: cp.async copies landing at issue and at their wait. One head pair (B=1,
# NH=2); seconds per T at T <= 200 on 2 cores. Fails (exit 1) past the GPU self-test's error limits;
# CI runs it. Usage: Scripts/flash-emu/run.sh [T...]
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
