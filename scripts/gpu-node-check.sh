#!/usr/bin/env bash
# The GPU-node check of issue 13, run on a lent GPU machine from the repo root
# with the release binary carried (target/release/pytest-abort-wrap):
#   A. examples/gpu_node_suite under --gpus auto --per-gpu 4 --dist loadfile
#      (or $GPU_CHECK_DIST)
#      with the multi-GPU phase and --test-timeout;
#   B. the poisoning file and the faults serially (no xdist).
# Everything printed goes to $OUT/log.txt; every file written to $OUT/bundle.tar.gz.
set -u
OUT="${OUT:-/tmp/gpu-node-check}"; mkdir -p "$OUT"
W="$PWD/target/release/pytest-abort-wrap"
work=$(mktemp -d); export GPU_CHECK_DIR="$work/shared"
exec > >(tee "$OUT/log.txt") 2>&1
echo "== environment"
date -u; uname -r; nvidia-smi -L; nvidia-smi --query-gpu=driver_version --format=csv,noheader
echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
python3 -c 'import sys, torch, pytest, xdist; print("python", sys.version.split()[0], "torch", torch.__version__, "pytest", pytest.__version__, "xdist", xdist.__version__)'
cd examples/gpu_node_suite
run() { # name, wrapper options..., -- pytest options...
  local name=$1; shift
  echo; echo "== $name: pytest-abort-wrap $*"
  local start; start=$(date +%s.%N)
  timeout 200 "$W" --crash-log "$work/$name-crashes.jsonl" --junit-xml "$work/$name-junit.xml" \
    --events "$work/$name-events.jsonl" "$@"
  echo "exit=$? wall=$(python3 -c "import time; print(round(time.time() - $start, 1))")s"
  echo "-- $name crash records"; cat "$work/$name-crashes.jsonl" 2>/dev/null
  echo "-- $name JUnit testcases"
  python3 - "$work/$name-junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
for s in root.iter("testsuite"):
    print("suite", {k: s.get(k) for k in ("tests", "failures", "errors", "skipped")})
for c in root.iter("testcase"):
    kids = [k.tag for k in c if k.tag in ("failure", "error", "skipped")]
    props = {p.get("name"): p.get("value") for p in c.iter("property")}
    msg = next((k.get("message", "")[:90] for k in c if k.tag in ("failure", "error")), "")
    print(f"  {c.get('classname')}::{c.get('name')} {kids or ['passed']} {props} {msg}")
PY
}
multi=(--multi-gpu-marker multi_gpu)
"$W" --help | grep -q -- --multi-gpu-marker || multi=()
run A --gpus auto --per-gpu 4 --test-timeout 20 "${multi[@]}" \
  --out-dir "$work/A-out" -- python3 -m pytest -p no:cacheprovider -q -rA --dist "${GPU_CHECK_DIST:-loadfile}" .
rm -f "$GPU_CHECK_DIR/poison.pid"
run B --test-timeout 20 -- python3 -m pytest -p no:cacheprovider -q -rA test_poison.py test_faults.py
echo; echo "== after"; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
nvidia-smi --query-compute-apps=pid,used_memory --format=csv
tar -C "$work" -czf "$OUT/bundle.tar.gz" .
