#!/usr/bin/env bash
# Two or more variants against each other on a GPU host: d12 B=64 benches in the order A B B A
# (A B C C B A for three, and so on), repeated, so that no side always runs first (session 4
# found the first bench of a pair 5-7 ms faster with equal kernels); then each side's medians and
# their median. $STEPS steps a bench (default 5; 10 is steadier), $MODEL and $BATCH pick another
# model (default d12, 64). Logs go to $OUT.
# Usage: Scripts/gpu-ab.sh "A command prefix" "B command prefix" [more prefixes ...] [rounds, default 2]
#   e.g. Scripts/gpu-ab.sh "env LLM_SIDE_STREAM=0 dist/final/llm" "dist/final/llm"
set -uo pipefail
if [ $# -lt 2 ]; then sed -n '2,8p' "$0"; exit 2; fi
rounds=2
if [[ "${!#}" =~ ^[0-9]+$ ]]; then rounds="${!#}"; set -- "${@:1:$(($# - 1))}"; fi
sides=("$@"); names=(A B C D E F G H)
out="${OUT:-gpu-out}"; mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LLM_KERNEL_CACHE="${LLM_KERNEL_CACHE:-/tmp/llm-kernel-cache}"
bench() {  # side index, run number
    local name="${names[$1]}"
    ${sides[$1]} bench train --device cuda --model "${MODEL:-d12}" --batch "${BATCH:-64}" --seq-len 1024 \
        --total-batch 524288 --warmup-steps 1 --steps "${STEPS:-5}" > "$out/ab-$name-$2.txt" 2>&1
    local ms; ms=$(awk '/^median ms\/step/ {print $NF}' "$out/ab-$name-$2.txt")
    echo "$name $2 ${ms:-failed}" | tee -a "$out/ab.txt"
}
: > "$out/ab.txt"
order=(); for i in "${!sides[@]}"; do order+=("$i"); done
for ((i = ${#sides[@]} - 1; i >= 0; i--)); do order+=("$i"); done
n=0
for r in $(seq "$rounds"); do
    for i in "${order[@]}"; do n=$((n + 1)); bench "$i" "$n"; done
done
median() { sort -n | awk '{v[NR] = $1} END {if (NR == 0) print "none"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for i in "${!sides[@]}"; do
    s="${names[$i]}"
    echo "$s (${sides[$i]}): $(awk -v s=$s '$1 == s {print $3}' "$out/ab.txt" | tr '\n' ' ')-> median $(awk -v s=$s '$1 == s && $3 != "failed" {print $3}' "$out/ab.txt" | median) ms/step"
done
