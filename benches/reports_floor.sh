#!/usr/bin/env bash
# Report handling against its floor and against the original, with hyperfine
# (medians, variants alternated by hyperfine's own runs):
#   benches/reports_floor.sh SET_DIR [ROUNDS]
# SET_DIR holds report.{json,html,csv,xml} of one real pytest run of 5000
# tests (benches/compare.py --only postprocess makes one in
# bench-out/work/reports-5000). Needs target/release (cargo build --release)
# and, for the sanitizer's original, bench-out/venv-orig (benches/compare.sh
# makes it). Two comparisons:
#   1. pytest-abort-postprocess of 200 crashes into the json+html+csv+junit
#      set vs `cp` of the same four files (process start included in both);
#   2. sanitizing 20 copies of the html: the original's
#      sanitize_all_html_jsonblobs vs `pytest-abort sanitize-html`.
# Writes the hyperfine JSON to bench-out/floor-*.json and prints medians.
set -euo pipefail
cd "$(dirname "$0")/.."
SET=$(realpath "${1:?usage: benches/reports_floor.sh SET_DIR [ROUNDS]}")
ROUNDS=${2:-15}
REL=$PWD/target/release
W=$PWD/bench-out/floor
rm -rf "$W" && mkdir -p "$W"
python3 - "$W/crashes.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(200):
        f.write(json.dumps({
            "test_name": f"test_kernel[{i}]", "test_class": f"test_kernel[{i}]",
            "nodeid": f"tests/test_crashy_{i % 40:02d}.py::test_kernel[{i}]",
            "reason": "Test crashed (segmentation fault, abort, or other fatal error) - detected from last running file",
            "crash_time": "2026-11-26T21:25:37.%06d" % i, "duration": 0.5, "gpu_id": str(i % 8),
            "pid": str(4000 + i), "source": f"xdist:gw{i % 8}", "logged_at": "2026-11-26T21:25:38.000001",
        }) + "\n")
PY
files="$SET/report.json $SET/report.html $SET/report.csv $SET/report.xml"
hyperfine -N --warmup 2 --runs "$ROUNDS" --export-json "$W/../floor-postprocess.json" \
  --prepare "sh -c 'rm -rf $W/run $W/cp && mkdir $W/run $W/cp && cp $files $W/run/'" \
  -n "pytest-abort-postprocess (4 reports, 200 crashes)" \
  "$REL/pytest-abort-postprocess --crash-log $W/crashes.jsonl --json-report $W/run/report.json --html-report $W/run/report.html --csv-report $W/run/report.csv --junit-xml $W/run/report.xml" \
  -n "cp of the 4 files" "cp $files $W/cp/"

copies="for i in \$(seq -w 0 19); do cp $SET/report.html $W/san/shard\${i}_log.html; done"
sanitize_runs=()
if [ -x bench-out/venv-orig/bin/python ]; then
  sanitize_runs+=(-n "original sanitize_all_html_jsonblobs"
    "$PWD/bench-out/venv-orig/bin/python -c 'import sys; from pytest_abort.abort_handling import sanitize_all_html_jsonblobs as s; s(sys.argv[1])' $W/san")
fi
hyperfine -N --warmup 1 --runs "$(( ROUNDS < 5 ? ROUNDS : 5 ))" --export-json "$W/../floor-sanitize.json" \
  --prepare "sh -c 'rm -rf $W/san && mkdir $W/san && $copies'" \
  "${sanitize_runs[@]}" -n "pytest-abort sanitize-html" "$REL/pytest-abort sanitize-html $W/san"

python3 - "$W/../floor-postprocess.json" "$W/../floor-sanitize.json" <<'PY'
import json, sys
for path in sys.argv[1:]:
    res = json.load(open(path))["results"]
    meds = {r["command"]: r["median"] for r in res}
    base = list(meds.values())[-1]
    print(path)
    for name, m in meds.items():
        print(f"  {name:<55} median {m * 1000:9.1f} ms  x last {m / base:7.2f}")
PY
