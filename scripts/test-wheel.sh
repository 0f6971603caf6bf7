#!/usr/bin/env bash
# The wheel, end to end: from a clean clone of the committed tree, build the
# wheel through pip and maturin (the PEP 517 path `pip install .` takes),
# install it into a fresh venv that has only pytest, and with no Rust
# toolchain on PATH run pytest-abort-wrap from that venv on the example crash
# suite (checking its crash records), then the Python API tests (shim/tests)
# against the installed wheel, with no PYTEST_ABORT_BIN.
#
#   scripts/test-wheel.sh [BUILD_PYTHON]
#
# BUILD_PYTHON (default .venv/bin/python) must have maturin (.ci/run installs
# it). The build keeps its own cargo target folder, target/wheel-target (the
# clone's binaries would otherwise replace this checkout's in target/debug):
# its dependencies are built once, then only the crate is. It uses the dev
# profile (MATURIN_PROFILE=release for the optimized build `pip install .`
# makes): a release build takes minutes on a small CI machine, and what is
# checked here — the wheel's layout, its manylinux tag, that the installed
# binaries and API work with no Rust around — does not depend on the profile.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
build_python="${1:-$repo/.venv/bin/python}"
profile="${MATURIN_PROFILE:-dev}"
fail() { echo "scripts/test-wheel.sh: $*" >&2; exit 1; }
# Each phase says how long the previous ones took, so a slow CI log shows where.
phase() { echo "== wheel [$((SECONDS))s]: $*"; }
"$build_python" -c 'import maturin' 2>/dev/null || fail "$build_python has no maturin (pip install maturin)"

# Under target/ (ignored by git), at a fixed path: cargo then sees the same
# package at the same place every time and rebuilds only what changed.
work="$repo/target/wheel-check"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

phase "clean clone of HEAD"
# --shared: a real clone with its own checkout of HEAD, reading the objects
# of this repository in place (copying them all took minutes).
git clone --quiet --shared "$repo" "$work/src"

phase "pip wheel (maturin, profile $profile)"
start=$SECONDS
# (maturin's PEP 517 backend runs the `maturin` command next to its Python.)
PATH="$(dirname "$build_python"):$PATH" CARGO_TARGET_DIR="$repo/target/wheel-target" MATURIN_PEP517_ARGS="--profile $profile --compatibility pypi" \
  nice "$build_python" -m pip wheel --quiet --disable-pip-version-check --no-build-isolation --no-deps \
  -w "$work/dist" "$work/src"
wheel="$(ls "$work"/dist/pytest_abort-*.whl)"
echo "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB) in $((SECONDS - start)) s"
case "$(basename "$wheel")" in
  *-py3-none-manylinux_2_*_x86_64.whl | *-py3-none-manylinux_2_*_aarch64.whl) ;;
  *) fail "$(basename "$wheel"): not a manylinux wheel" ;;
esac

# From here on, no Rust: PATH without cargo's folder or this checkout's target.
clean_path="$work/venv/bin"
IFS=: read -ra parts <<<"$PATH"
for p in "${parts[@]}"; do
  case "$p" in *"/.cargo/bin"* | "$repo"/* | "") ;; *) clean_path="$clean_path:$p" ;; esac
done
export PATH="$clean_path"
unset PYTEST_ABORT_BIN PYTEST_ADDOPTS PYTHONPATH PYTEST_ABORT_CRASHED_TESTS_LOG \
  PYTEST_ABORT_LAST_RUNNING_FILE PYTEST_ABORT_LAST_RUNNING_DIR CARGO_TARGET_DIR || true
if command -v cargo >/dev/null 2>&1 || command -v rustc >/dev/null 2>&1; then
  fail "a Rust toolchain is still on PATH ($(command -v cargo rustc | head -1))"
fi

phase "fresh venv with pytest, then the wheel"
python3 -m venv "$work/venv"
venv_py="$work/venv/bin/python"
"$venv_py" -m pip install --quiet --disable-pip-version-check pytest
"$venv_py" -m pip install --quiet --disable-pip-version-check --no-deps "$wheel"
for b in pytest-abort-wrap pytest-abort pytest-abort-retry pytest-abort-postprocess; do
  [ "$(command -v "$b")" = "$work/venv/bin/$b" ] || fail "$b is not installed in the venv's bin folder"
done

for f in share/man/man1/pytest-abort-wrap.1 share/bash-completion/completions/pytest-abort-wrap \
  share/zsh/site-functions/_pytest-abort-wrap share/fish/vendor_completions.d/pytest-abort-wrap.fish; do
  [ -s "$work/venv/$f" ] || fail "the wheel did not install $f"
done

phase "pytest-abort-wrap on examples/crash_suite"
cd "$work/src"
set +e
# The example suite fails and crashes on purpose: its pytest output goes to a
# log (shown when the check fails), so CI's closing lines stay the real suite's.
pytest-abort-wrap --crash-log "$work/crashes.jsonl" --junit-xml "$work/junit.xml" -- \
  pytest -p no:cacheprovider examples/crash_suite >"$work/example.log" 2>&1
status=$?
set -e
if [ "$status" -ne 1 ]; then
  cat "$work/example.log" >&2
  fail "pytest-abort-wrap exited with $status (expected 1: the suite crashes)"
fi
"$venv_py" - "$work/crashes.jsonl" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
got = sorted((r["nodeid"].split("::", 1)[1], r.get("signal_name") or f"exit {r.get('exit_code')}") for r in records)
want = sorted([
    ("test_segfault", "SIGSEGV"),
    ("test_abort", "SIGABRT"),
    ("TestGroup::test_exits_mid_test", "exit 3"),
])
assert got == want, f"crash records {got}, expected {want}"
print(f"crash records: {got}")
PY

phase "Python API tests against the installed wheel"
"$venv_py" -m pip install --quiet --disable-pip-version-check \
  pytest-xdist pytest-html pytest-json-report pytest-csv pytest_html_merger
"$venv_py" -c 'from pytest_abort.abort_handling import find_binary, wheel_binary; import sys; b = find_binary(); assert b == wheel_binary(), b; print("API finds", b)'
"$venv_py" -m pytest -p no:cacheprovider -q shim/tests
# Under the wrapper, pytest_abort is the copy it puts first on PYTHONPATH;
# that copy's API still runs the wheel's binaries, with the venv off PATH.
probe='from pytest_abort.abort_handling import find_binary; print("found:" + find_binary())'
found="$(PATH=/usr/bin:/bin "$work/venv/bin/pytest-abort-wrap" -q -- "$venv_py" -c "$probe" 2>/dev/null | sed -n 's/^found://p')" || true
[ "$found" = "$work/venv/bin/pytest-abort" ] || fail "under the wrapper the API found '$found', not the wheel's binary"
echo "under the wrapper the API finds $found"
phase "done"
