#!/usr/bin/env bash
# Times every flash-attention variant (flash_attention.cu; $LLM_FLASH_FORWARD / $LLM_FLASH_BACKWARD
# pick one for training) in one call on a GPU host: `llm cuda-selftest` checks each against the
# scalar kernels (relative L2 errors, run-to-run bit identity) and prints median times, at d12
# heads, T=1024 (and a ragged T=200), B=16 and B=64; a compact table comes last.
# Usage: Scripts/gpu-attention-variants.sh LLM   (the llm binary, or a folder holding it; run from
#        the repository root so Tests/Fixtures is found). Logs go to $OUT (or ./gpu-out).
set -uo pipefail
llm="${1:-dist/llm}"
[ -d "$llm" ] && llm="$llm/llm"
out="${OUT:-gpu-out}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"

# FORWARD/BACKWARD pairs (CUDAModel.flashVariantPairs); one process each, so a kernel that faults
# cannot take the other variants' results with it.
pairs="${PAIRS:-v1/v1 v2/v1 v3/v1 v1/v2 v1/v3 v1/v4 v1/v5 v1/v6 v1/v7 v1/v8 v1/v9 v1/v10 v1/v11}"
status=0
for B in 16 64; do
    for pair in $pairs; do
        log="$out/attention-variants-b$B-${pair/\//-}.txt"
        "$llm" cuda-selftest --precision bf16 --attention-batch "$B" --attention-variants "$pair" \
            --determinism-steps 0 --bench-steps 0 > "$log" 2>&1
        rc=$?
        [ $rc -ne 0 ] && status=$rc
        echo "B=$B $pair: exit $rc ($log)"
        [ $rc -ne 0 ] && grep -vE "^\[attention" "$log" | tail -3
    done
done
echo
echo "==== flash attention variants (median ms; errors are relative L2 against the scalar kernels) ===="
cat "$out"/attention-variants-b*.txt | grep '^\[attention-variant\]' | sed 's/^\[attention-variant\] //' |
    awk '{ line = ""; for (i = 1; i <= NF; i++) { split($i, kv, "="); line = line (kv[2] == "" ? kv[1] : kv[2]) "\t" }; print line }' |
    sort -s -t $'\t' -k1,1n -k2,2nr | (printf 'B\tT\tfwd\tbwd\tfwd_ms\tbwd_ms\tout\tdq\tdk\tdv\tlse\tsame\tresult\n'; cat) |
    if command -v column > /dev/null; then column -t -s $'\t'; else cat; fi
exit $status
