#!/usr/bin/env bash
# Runs the shim's Python tests: builds the Rust binaries, installs ./shim into
# a venv and runs `python -m pytest shim/tests` there with the binaries found
# through PYTEST_ABORT_BIN.
#
#   shim/run-tests.sh [VENV] [PYTEST ARGS...]
#
# VENV defaults to the repository's .venv (created by .ci/run with pytest,
# pytest-xdist, pytest-html, pytest-json-report, pytest-csv and
# pytest_html_merger). Exit status: pytest's; "no tests collected" (5) is an
# error here, since this suite is never empty.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$repo/.venv}"
[ $# -gt 0 ] && shift
python="$venv/bin/python"
if ! [ -x "$python" ]; then
  echo "shim/run-tests.sh: no Python at $python (create the venv, or pass its path)" >&2
  exit 2
fi

cd "$repo"
cargo build --bins --quiet
"$python" -m pip install --quiet --disable-pip-version-check --no-build-isolation ./shim 2>/dev/null \
  || "$python" -m pip install --quiet --disable-pip-version-check ./shim
rm -rf shim/build

export PYTEST_ABORT_BIN="$repo/target/debug/pytest-abort"
export PATH="$repo/target/debug:$PATH"
unset PYTEST_ADDOPTS PYTEST_ABORT_LAST_RUNNING_FILE PYTEST_ABORT_LAST_RUNNING_DIR PYTEST_ABORT_CRASHED_TESTS_LOG || true

set +e
"$python" -m pytest -p no:cacheprovider shim/tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "shim/run-tests.sh: pytest collected no tests (exit 5): the shim suite is missing" >&2
  exit 1
fi
exit "$rc"
