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

# FORWARD/BACKWARD pairs (CUDAModel.flashVariantPairs): all in one process per B; if that process
# dies before reporting every pair (a faulting kernel takes the CUDA context with it), each missing
# pair runs again in its own process (its times then come from another process than the others').
pairs="${PAIRS:-v1/v1 v2/v1 v3/v1 v1/v2 v1/v3 v1/v4 v1/v5 v1/v6 v1/v7 v1/v8 v1/v9 v1/v10 v1/v11}"
selftest() {  # B, comma-separated pairs, log
    "$llm" cuda-selftest --precision bf16 --attention-batch "$1" --attention-variants "$2" \
        --determinism-steps 0 --bench-steps 0 > "$3" 2>&1
}
status=0
for B in 16 64; do
    log="$out/attention-variants-b$B.txt"
    selftest "$B" "$(echo $pairs | tr ' ' ',')" "$log"
    rc=$?
    [ $rc -ne 0 ] && status=$rc
    echo "B=$B, all pairs: exit $rc ($log)"
    for pair in $pairs; do
        f="${pair%/*}" b="${pair#*/}"
        if [ "$(grep -c "fwd=$f bwd=$b " "$log")" -lt 2 ]; then  # a line per T (1024, 200)
            sed -i "/fwd=$f bwd=$b /d" "$log"
            one="$out/attention-variants-b$B-$f-$b.txt"
            selftest "$B" "$pair" "$one"
            echo "B=$B $pair alone: exit $? ($one)"
            grep -vE "^\[attention" "$one" | tail -3
        fi
    done
done
echo
echo "==== flash attention variants (median ms; errors are relative L2 against the scalar kernels) ===="
cat "$out"/attention-variants-b*.txt | grep '^\[attention-variant\]' | sed 's/^\[attention-variant\] //' |
    awk '{ line = ""; for (i = 1; i <= NF; i++) { split($i, kv, "="); line = line (kv[2] == "" ? kv[1] : kv[2]) "\t" }; print line }' |
    sort -s -t $'\t' -k1,1n -k2,2nr | (printf 'B\tT\tfwd\tbwd\tfwd_ms\tbwd_ms\tout\tdq\tdk\tdv\tlse\tsame\tresult\n'; cat) |
    if command -v column > /dev/null; then column -t -s $'\t'; else cat; fi
exit $status
