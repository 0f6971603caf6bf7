"""The plugin's side of poisoned device contexts, without the wrapper's
loop: a real pytest process given a run plan with poison patterns (as the
wrapper writes it) journals the poisoning test and runs no test after it."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import clean_env, read_jsonl

TESTS = """
def test_ok():
    pass

def test_poison():
    raise RuntimeError("CUDA error: device-side assert triggered")

def test_after():
    pass
"""


def _run(suite, tmp_path: Path, patterns, tests=TESTS):
    state = tmp_path / "state"
    state.mkdir()
    (state / "plan.json").write_text(json.dumps({"run": 1, "poison": patterns}))
    suite.write("test_gpu.py", tests)
    r = suite.pytest("-p", "no:randomly", "test_gpu.py", env=clean_env(PYTEST_ABORT_WRAP_STATE=str(state)))
    events = [e for p in sorted((state / "journal").glob("r1-*.jsonl")) for e in read_jsonl(p)]
    return r, events


def test_a_matching_failure_is_journaled_and_ends_the_session(suite, tmp_path):
    r, events = _run(suite, tmp_path, ["device-side assert triggered"])
    assert r.returncode == 2, r.stdout  # pytest's "Interrupted"
    assert "sticky device error (device-side assert triggered)" in r.stdout
    poisoned = [e for e in events if e["ev"] == "poisoned"]
    assert poisoned == [
        {
            "ev": "poisoned",
            "nodeid": "test_gpu.py::test_poison",
            "when": "call",
            "matched": "device-side assert triggered",
            "gpu_id": "unknown",
        }
    ]
    done = [e["nodeid"] for e in events if e["ev"] == "done"]
    assert done == ["test_gpu.py::test_ok", "test_gpu.py::test_poison"], done


def test_no_patterns_no_poisoning(suite, tmp_path):
    r, events = _run(suite, tmp_path, [])
    assert r.returncode == 1, r.stdout
    assert not [e for e in events if e["ev"] == "poisoned"]
    assert len([e for e in events if e["ev"] == "done"]) == 3


def test_a_pattern_python_cannot_compile_is_reported_and_the_rest_still_work(suite, tmp_path):
    r, events = _run(suite, tmp_path, ["(?<!x", "device-side"])
    assert "is not a Python regex" in r.stdout, r.stdout
    assert [e["matched"] for e in events if e["ev"] == "poisoned"] == ["device-side"]


def test_an_expected_failure_does_not_poison(suite, tmp_path):
    tests = """
import pytest

@pytest.mark.xfail
def test_poison():
    raise RuntimeError("CUDA error: device-side assert triggered")

def test_after():
    pass
"""
    r, events = _run(suite, tmp_path, ["device-side assert triggered"], tests)
    assert r.returncode == 0, r.stdout
    assert not [e for e in events if e["ev"] == "poisoned"]
