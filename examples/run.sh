#!/usr/bin/env bash
# Runs pytest-abort-wrap on the bundled crash suite: tests that segfault,
# abort and exit mid-test between tests that pass and one that fails.
# Sets up examples/.venv with pytest and pytest-xdist when no pytest is found.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
cargo build --release --quiet --bin pytest-abort-wrap
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$root/.venv/bin/python" ] && "$root/.venv/bin/python" -c 'import pytest, xdist' 2>/dev/null; then
    python="$root/.venv/bin/python"
  else
    if ! [ -x "$here/.venv/bin/python" ] || ! "$here/.venv/bin/python" -c 'import pytest, xdist' 2>/dev/null; then
      echo "examples/run.sh: creating examples/.venv with pytest and pytest-xdist" >&2
      python3 -m venv "$here/.venv"
      "$here/.venv/bin/pip" install --quiet pytest pytest-xdist
    fi
    python="$here/.venv/bin/python"
  fi
fi
mkdir -p "$here/out"
rm -f "$here/out/crashes.jsonl"
set +e
"$root/target/release/pytest-abort-wrap" --crash-log "$here/out/crashes.jsonl" -- \
  "$python" -m pytest -p no:cacheprovider "$here/crash_suite" "$@"
status=$?
set -e
echo "examples/run.sh: pytest-abort-wrap exited with $status; crash records in examples/out/crashes.jsonl" >&2
# The suite is meant to crash: 1 (failures and crashes recorded) is the expected result.
[ "$status" -eq 1 ]
