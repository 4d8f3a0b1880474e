#!/usr/bin/env bash
# One call on a GPU host: correctness first (parity with PyTorch in fp32 and bf16, GPU vs CPU on
# d12, determinism), then start-up and speed, and a short table last. Logs go to $OUT (or ./gpu-out).
# Usage: Scripts/gpu-check.sh DIST   (DIST holds the llm binary, tiny*.bin, tiny_steps.json,
#        tinyshakespeare.gpt2.u16, tinyshakespeare.txt and gpt2.tiktoken; build the binary with
#        swift build -c release --static-swift-stdlib -Xcc -march=x86-64-v3)
set -uo pipefail
dist="${1:-dist}"
out="${OUT:-gpu-out}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
llm="$dist/llm"
summary="$out/summary.txt"
: > "$summary"
row() { printf '%-44s %s\n' "$1" "$2" | tee -a "$summary"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

# Correctness
for p in fp32 bf16; do
    "$llm" check --device cuda --precision $p --model "$dist/tiny.bin" --state "$dist/tiny_debug_state.bin" \
        --losses "$dist/tiny_steps.json" > "$out/check-$p.txt" 2>&1
    row "llm check --device cuda --precision $p" "$(tail -1 "$out/check-$p.txt") (exit $?)"
    grep -E "logits|loss  |worst" "$out/check-$p.txt" | head -3
done
for p in fp32 bf16; do
    "$llm" compare-devices --model d12 --precision $p --tokens "$dist/tinyshakespeare.gpt2.u16" > "$out/compare-$p.txt" 2>&1
    row "d12 GPU vs CPU, $p" "$(tail -1 "$out/compare-$p.txt" | sed 's/.*max loss diff/max loss diff/')"
done

# Determinism: two identical 20-step runs must print bit-identical losses.
export LLM_KERNEL_CACHE="$out/kernel-cache"
for run in 1 2; do
    "$llm" train --device cuda --model d12 --batch 8 --seq-len 1024 --steps 20 --val-every 0 --sample-every 0 \
        --text "$dist/tinyshakespeare.txt" --vocab "$dist/gpt2.tiktoken" > "$out/determinism-$run.txt" 2>&1
    grep -oE "step +[0-9]+/[0-9]+ \| loss [0-9.]+" "$out/determinism-$run.txt" > "$out/losses-$run.txt"
done
if [ -s "$out/losses-1.txt" ] && cmp -s "$out/losses-1.txt" "$out/losses-2.txt"; then
    row "determinism (d12, 20 steps, 2 runs)" "bit-identical: $(head -1 "$out/losses-1.txt" | sed 's/.*loss //') -> $(tail -1 "$out/losses-1.txt" | sed 's/.*loss //')"
else
    row "determinism (d12, 20 steps, 2 runs)" "DIFFERENT"; diff "$out/losses-1.txt" "$out/losses-2.txt" | head
fi

# Start-up: from launch to the first step's output line, with a cold kernel cache, then warm.
rm -rf "$out/startup-cache"
for kind in cold warm; do
    start=$(date +%s.%N)
    LLM_KERNEL_CACHE="$out/startup-cache" "$llm" train --device cuda --model d12 --batch 64 --seq-len 1024 --steps 1 \
        --val-every 0 --sample-every 0 --text "$dist/tinyshakespeare.txt" --vocab "$dist/gpt2.tiktoken" 2>&1 \
        | while IFS= read -r line; do
            case "$line" in *"step    1/"*)
                row "start-up to first step output ($kind cache)" "$(python3 -c "import time; print(round(time.time() - $start, 1))") s";;
            esac
          done
done

# Speed
"$llm" bench train --device cuda --model d12 --batch 64 --seq-len 1024 --total-batch 524288 --steps ${D12_STEPS:-10} \
    --warmup-steps 1 > "$out/bench-d12.txt" 2>&1
"$llm" bench train --device cuda --model d24 --batch 32 --seq-len 1024 --total-batch 524288 --steps ${D24_STEPS:-4} \
    --warmup-steps 1 > "$out/bench-d24.txt" 2>&1
for cache in cache no-cache; do
    flag=""; [ $cache = no-cache ] && flag="--no-cache"
    "$llm" sample --device cuda --model d12 --tokens 256 $flag --vocab "$dist/gpt2.tiktoken" \
        > "$out/sample-$cache.txt" 2> "$out/sample-$cache.err"
    row "llm sample d12 256 tokens, $cache" "$(tail -1 "$out/sample-$cache.err")"
done
for m in d12 d24; do
    for k in "median ms/step" "tokens/s" "MFU" "peak GPU memory"; do
        row "$m $k" "$(grep "^$k" "$out/bench-$m.txt" | sed "s|^$k[^0-9]*||")"
    done
done
echo; echo "== summary"; cat "$summary"
