"""The plugin's side of ``--multi-gpu-marker``, without the wrapper's loop:
a real pytest given a run plan (as the wrapper writes it) leaves the other
phase's tests out, journals the marked ones in the first phase, and runs
the multi-GPU phase without xdist workers even when given ``-n``."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import clean_env, read_jsonl

TESTS = """
import os
import pytest

def test_plain():
    pass

@pytest.mark.multi_gpu
def test_marked():
    assert os.environ.get("PYTEST_XDIST_WORKER") is None
"""


def _run(suite, tmp_path: Path, phase: str, *args: str):
    state = tmp_path / "state"
    state.mkdir()
    (state / "plan.json").write_text(json.dumps({"run": 1, "multi_gpu": {"marker": "multi_gpu", "phase": phase}}))
    suite.write("test_gpu.py", TESTS)
    suite.write("pytest.ini", "[pytest]\nmarkers =\n    multi_gpu: needs every GPU\n")
    r = suite.pytest(*args, "test_gpu.py", env=clean_env(PYTEST_ABORT_WRAP_STATE=str(state)))
    events = [e for p in sorted((state / "journal").glob("r1-*.jsonl")) for e in read_jsonl(p)]
    return r, events


def test_the_first_phase_leaves_marked_tests_for_the_second(suite, tmp_path):
    r, events = _run(suite, tmp_path, "rest", "-n", "2")
    assert r.returncode == 0, r.stdout
    done = [e["nodeid"] for e in events if e["ev"] == "done"]
    assert done == ["test_gpu.py::test_plain"]
    collected = [e for e in events if e["ev"] == "collected"]
    assert collected and all(e["multi_gpu"] == ["test_gpu.py::test_marked"] for e in collected), collected
    assert all(e["user_deselected"] == 0 and e["plan_deselected"] == 1 for e in collected), collected


def test_the_multi_gpu_phase_runs_serially_whatever_n_says(suite, tmp_path):
    r, events = _run(suite, tmp_path, "marked", "-n", "2")
    assert r.returncode == 0, r.stdout
    starts = [e for e in events if e["ev"] == "start"]
    assert len(starts) == 1 and not starts[0]["xdist_controller"], starts
    done = [e["nodeid"] for e in events if e["ev"] == "done"]
    assert done == ["test_gpu.py::test_marked"]
