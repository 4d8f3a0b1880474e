#!/usr/bin/env bash
# GPU: parity, then kill-and-resume exactness with bf16 checkpoints (model v5 + fp32 masters).
# Usage: Scripts/gpu-resume-check.sh DIST (the folder gpu-check.sh uses).
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64
d=${1:-dist/final}; llm=$d/llm; common="--device cuda --model d4 --batch 8 --seq-len 256 --steps 12 --checkpoint-every 6 --val-every 0 --sample-every 0 --text $d/tinyshakespeare.txt --vocab $d/gpt2.tiktoken"
for p in fp32 bf16; do $llm check --device cuda --precision $p --model $d/tiny.bin --state $d/tiny_debug_state.bin --losses $d/tiny_steps.json | tail -1; done
$llm train $common --output /tmp/A > /tmp/A.txt 2>&1
$llm train $common --output /tmp/B 2>&1 | while IFS= read -r l; do echo "$l" >> /tmp/B1.txt; case "$l" in *"model_00000006.bin"*) pkill -f "output /tmp/B"; break;; esac; done
sleep 1; ls /tmp/B
$llm train $common --output /tmp/B --resume > /tmp/B2.txt 2>&1
grep resumed /tmp/B2.txt
grep -oE "step +([7-9]|1[0-2])/12 \| loss [0-9.]+" /tmp/A.txt > /tmp/a; grep -oE "step +([7-9]|1[0-2])/12 \| loss [0-9.]+" /tmp/B2.txt > /tmp/b
cat /tmp/a; if [ -s /tmp/a ] && cmp -s /tmp/a /tmp/b; then echo "GPU resume: steps 7-12 bit-identical"; else echo "GPU resume: DIFFERENT"; cat /tmp/b; fi
