#!/usr/bin/env bash
# Side-by-side benchmark against the original pytest-abort 0.1.0.post2 and
# plain pytest, from a clean clone:
#   benches/compare.sh            full sizes (about 15-20 minutes on 2 cores)
#   benches/compare.sh --quick    smoke run (about a minute)
#   benches/compare.sh --only overhead,subprocess,recovery,postprocess,sanitize,resume
# Sizes: BENCH_* environment variables (see CONFIG in benches/compare.py).
# Builds target/release, creates bench-out/venv-orig with the original from
# PyPI (never our shim: the wrapper puts its own copy first on PYTHONPATH),
# and writes the tables to bench-out/compare.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=bench-out/venv-orig
PKGS=(pytest-abort==0.1.0.post2 pytest pytest-xdist pytest-html pytest-json-report pytest-csv)

if ! [ -x /usr/bin/time ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing GNU time (peak RSS of each command)" >&2
  apt-get install -y -qq time >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq time >/dev/null) || true
fi

echo "== building release binaries" >&2
cargo build --release --quiet --bins

if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import pytest_abort, xdist, pytest_html, pytest_jsonreport, pytest_csv' 2>/dev/null; then
  echo "== creating $VENV with the original pytest-abort from PyPI" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}"
fi

# The venv must hold the original, installed from PyPI, not our shim.
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md, pytest_abort, sys
v = md.version("pytest-abort")
where = pytest_abort.__file__
if v != "0.1.0.post2" or "site-packages" not in where:
    sys.exit(f"bench-out/venv-orig: pytest-abort {v} at {where}, expected the original 0.1.0.post2 from PyPI")
print(f"original pytest-abort {v} at {where}; pytest {md.version('pytest')}", file=sys.stderr)
PY

PATH="$PWD/$VENV/bin:$PATH" exec "$VENV/bin/python" benches/compare.py "$@"
