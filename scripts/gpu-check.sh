#!/usr/bin/env bash
# The GPU check of issue 5, run on the lent GPU machine from the repo root
# with the release binary carried: examples/gpu_suite serial and under -n 2.
# Writes what the wrapper printed and recorded under $OUT.
set -u
OUT="${OUT:-/tmp/gpu-check}"; mkdir -p "$OUT"
W="$PWD/target/release/pytest-abort-wrap"
{
  date -u; uname -r; nvidia-smi -L; nvidia-smi --query-gpu=driver_version --format=csv,noheader
  python3 -c 'import sys, torch, cupy, pytest, xdist; print("python", sys.version.split()[0], "torch", torch.__version__, "cupy", cupy.__version__, "pytest", pytest.__version__, "xdist", xdist.__version__)'
} > "$OUT/env.txt" 2>&1
cd examples/gpu_suite
for mode in serial xdist; do
  extra=(); [ "$mode" = xdist ] && extra=(-n 2)
  start=$(date +%s)
  timeout 240 "$W" --crash-log "$OUT/crashes-$mode.jsonl" --test-timeout 15 -- \
    python3 -m pytest -p no:cacheprovider -q "${extra[@]}" test_gpu.py > "$OUT/$mode.txt" 2>&1
  echo "exit=$? wall=$(( $(date +%s) - start ))s" >> "$OUT/$mode.txt"
done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >> "$OUT/env.txt" 2>&1
tail -n 12 "$OUT"/serial.txt "$OUT"/xdist.txt
