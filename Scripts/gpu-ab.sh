#!/usr/bin/env bash
# A against B on a GPU host: d12 B=64 five-step benches in the order A B B A, repeated (so neither
# side always runs first: session 4 found the first bench of a pair 5-7 ms faster with equal
# kernels), then each side's medians and their median. Logs go to $OUT.
# Usage: Scripts/gpu-ab.sh "A command prefix" "B command prefix" [quads, default 2]
#   e.g. Scripts/gpu-ab.sh "env LLM_SIDE_STREAM=0 dist/final/llm" "dist/final/llm"
set -uo pipefail
if [ $# -lt 2 ]; then sed -n '2,6p' "$0"; exit 2; fi
a="$1"; b="$2"; quads="${3:-2}"
out="${OUT:-gpu-out}"; mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LLM_KERNEL_CACHE="${LLM_KERNEL_CACHE:-/tmp/llm-kernel-cache}"
bench() {  # side, run number
    local cmd; [ "$1" = A ] && cmd="$a" || cmd="$b"
    $cmd bench train --device cuda --model d12 --batch 64 --seq-len 1024 --total-batch 524288 \
        --warmup-steps 1 --steps 5 > "$out/ab-$1-$2.txt" 2>&1
    local ms; ms=$(awk '/^median ms\/step/ {print $NF}' "$out/ab-$1-$2.txt")
    echo "$1 $2 ${ms:-failed}" | tee -a "$out/ab.txt"
}
: > "$out/ab.txt"
n=0
for q in $(seq "$quads"); do
    for side in A B B A; do n=$((n + 1)); bench "$side" "$n"; done
done
median() { sort -n | awk '{v[NR] = $1} END {if (NR == 0) print "none"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for side in A B; do
    echo "$side: $(awk -v s=$side '$1 == s {print $3}' "$out/ab.txt" | tr '\n' ' ')-> median $(awk -v s=$side '$1 == s && $3 != "failed" {print $3}' "$out/ab.txt" | median) ms/step"
done
