"""GPU slots on CPU (issue 13): 8 slots x 1000 short tests with an explicit
GPU list, against plain ``pytest -n 8`` and the wrapper without slots, and
the cost of taking a slot per worker start.

    benches/gpu_slots.sh                 # builds target/release, then runs this
    BENCH_ROUNDS=5 BENCH_TESTS=1000 benches/gpu_slots.sh

Variants run alternating (A B C, A B C, ... the order rotating each round);
the medians and ratios go to stdout as a Markdown table.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRAP = os.path.join(ROOT, "target", "release", "pytest-abort-wrap")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
TESTS = int(os.environ.get("BENCH_TESTS", "1000"))
SLOTS = 8
TAKES = int(os.environ.get("BENCH_TAKES", "200"))


def suite(folder: str) -> None:
    with open(os.path.join(folder, "test_short.py"), "w") as f:
        f.write("import pytest\n\n@pytest.mark.parametrize('i', range(%d))\ndef test_short(i):\n    pass\n" % TESTS)


def variants(py: str) -> dict:
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_short.py"]
    gpus = ",".join(str(i) for i in range(SLOTS))
    return {
        "plain pytest -n 8": pytest + ["-n", str(SLOTS)],
        "wrapper, pytest -n 8": [WRAP, "-q", "--"] + pytest + ["-n", str(SLOTS)],
        "wrapper --gpus 0..7 (adds -n 8)": [WRAP, "-q", "--gpus", gpus, "--"] + pytest,
    }


def timed(argv, cwd: str, env: dict) -> float:
    start = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit("%s: exit %d\n%s" % (argv, r.returncode, r.stderr.decode(errors="replace")[-2000:]))
    return took


def slot_cost(py: str) -> tuple:
    """Median seconds of one take_slot (lock, pin, log line) in a warm
    process, and of loading _gpu.py plus one take in a fresh one (the
    module alone: a worker has pytest and the package imported already)."""
    probe = r"""
import os, sys, json, time, tempfile, importlib.util
os.environ["PYTEST_ABORT_GPU_PLAN"] = json.dumps({"vendor": "nvidia", "gpus": [str(i) for i in range(8)], "per_gpu": 1, "workers": 8, "release_wait": 10})
state = tempfile.mkdtemp()
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("_gpu", os.path.join(sys.argv[1], "pytest_abort", "_gpu.py"))
_gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_gpu)
_gpu.take_slot(state, "gw0", "1")
first = time.perf_counter() - t
warm = []
for _ in range(int(sys.argv[2])):
    os.close(_gpu._held_fd)
    t = time.perf_counter()
    _gpu.take_slot(state, "gw0", "1")
    warm.append(time.perf_counter() - t)
warm.sort()
print(json.dumps({"first": first, "warm": warm[len(warm) // 2]}))
"""
    firsts, warms = [], []
    for _ in range(10):
        out = subprocess.run([py, "-c", probe, os.path.join(ROOT, "shim"), str(TAKES)], capture_output=True, text=True, check=True)
        v = json.loads(out.stdout)
        firsts.append(v["first"])
        warms.append(v["warm"])
    return statistics.median(warms), statistics.median(firsts)


def main() -> None:
    py = os.environ.get("BENCH_PYTHON") or os.path.join(ROOT, ".venv", "bin", "python")
    env = {k: v for k, v in os.environ.items() if not k.endswith("VISIBLE_DEVICES") and not k.startswith("PYTEST_")}
    times: dict = {}
    if ROUNDS == 0:  # BENCH_ROUNDS=0: the slot cost alone
        warm, first = slot_cost(py)
        print("slot take: %.1f us warm, %.2f ms cold" % (warm * 1e6, first * 1e3))
        return
    with tempfile.TemporaryDirectory(prefix="gpu-slots-bench-") as folder:
        suite(folder)
        named = list(variants(py).items())
        for name, argv in named:  # warm-up, not counted
            timed(argv, folder, env)
        for r in range(ROUNDS):
            for name, argv in named[r % len(named):] + named[: r % len(named)]:
                times.setdefault(name, []).append(timed(argv, folder, env))
    plain = statistics.median(times[named[0][0]])
    wrapped = statistics.median(times[named[1][0]])
    print("| variant (%d tests, %d rounds) | median (s) | x plain -n 8 | x wrapper -n 8 |" % (TESTS, ROUNDS))
    print("|---|---|---|---|")
    for name, _ in named:
        m = statistics.median(times[name])
        print("| %s | %.3f | %.3f | %.3f |" % (name, m, m / plain, m / wrapped))
    warm, first = slot_cost(py)
    print()
    print("slot take per worker start: %.1f us warm (median of %d takes), %.2f ms cold: loading _gpu.py and the first take in a fresh process (median of 10)" % (warm * 1e6, TAKES, first * 1e3))


if __name__ == "__main__":
    main()
