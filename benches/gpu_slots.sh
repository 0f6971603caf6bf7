#!/usr/bin/env bash
# GPU slots on CPU (issue 13): 8 slots x 1000 short tests with an explicit GPU
# list vs plain `pytest -n 8`, and the cost of taking a slot per worker start.
#   benches/gpu_slots.sh            (BENCH_ROUNDS, BENCH_TESTS, BENCH_PYTHON)
# Needs .venv with pytest and pytest-xdist (see .ci/run); builds target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin pytest-abort-wrap
exec "${BENCH_PYTHON:-.venv/bin/python}" benches/gpu_slots.py
