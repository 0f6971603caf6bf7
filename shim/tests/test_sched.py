"""The plugin's xdist scheduler repairs (pytest_abort._sched) without the
wrapper: real pytest + xdist, a real segfault, the plugin asked for markers
(PYTEST_ABORT_LAST_RUNNING_DIR), under every scheduler."""

from __future__ import annotations

import json

import pytest
from conftest import clean_env, read_jsonl

COUNT = """
import json, os
import pytest

@pytest.fixture(autouse=True)
def _count(request):
    with open(os.path.join(os.path.dirname(__file__), "starts.jsonl"), "a") as f:
        f.write(json.dumps(request.node.nodeid) + "\\n")
"""

CRASHES = """
import ctypes, time

def test_a():
    time.sleep(0.1)

def test_crash():
    ctypes.string_at(0)

def test_b():
    time.sleep(0.1)

def test_c():
    pass
"""


def _run_crashing_suite(suite, conftest: str, dist: str, timeout: float = 120):
    """The suite (test_x.py with one segfault, test_y.py passing) under
    ``-n 2 --dist DIST`` with the plugin asked for markers; returns pytest's
    result and the crash log's path."""
    suite.write("conftest.py", conftest)
    suite.write("test_x.py", CRASHES)
    suite.write("test_y.py", "".join(f"def test_y{i}():\n    pass\n\n" for i in range(4)))
    log = suite.root / "crashes.jsonl"
    env = clean_env(PYTEST_ABORT_LAST_RUNNING_DIR=str(suite.root / "m"), PYTEST_ABORT_CRASHED_TESTS_LOG=str(log))
    return suite.pytest("-n", "2", "--dist", dist, "-p", "no:randomly", env=env, timeout=timeout), log


@pytest.mark.parametrize("dist", ["load", "loadfile", "loadscope", "loadgroup", "worksteal"])
def test_a_crashed_test_starts_once(suite, dist):
    r, log = _run_crashing_suite(suite, COUNT, dist)
    assert r.returncode == 1, r.stdout
    assert "INTERNALERROR" not in r.stdout, r.stdout
    starts = [json.loads(line) for line in (suite.root / "starts.jsonl").read_text().splitlines()]
    assert sorted(starts) == sorted(set(starts)) and len(starts) == 8, starts
    assert [rec["nodeid"] for rec in read_jsonl(log)] == ["test_x.py::test_crash"]
    assert "7 passed" in r.stdout and "1 failed" in r.stdout, r.stdout


# The replacement of the crashed worker collects slowly: the other worker
# runs every test meanwhile, and the session ends while the replacement is
# still joining.
SLOW_REPLACEMENT = (
    COUNT
    + """

@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session):
    import time
    if os.environ.get("PYTEST_XDIST_WORKER") == "gw2":
        time.sleep(3)
"""
)


@pytest.mark.parametrize("dist", ["loadfile", "loadscope", "loadgroup"])
def test_a_replacement_worker_still_collecting_when_the_tests_end_does_not_hang_the_session(suite, dist):
    r, log = _run_crashing_suite(suite, SLOW_REPLACEMENT, dist, timeout=60)
    assert r.returncode == 1, r.stdout
    assert "7 passed" in r.stdout and "1 failed" in r.stdout, r.stdout
    assert [rec["nodeid"] for rec in read_jsonl(log)] == ["test_x.py::test_crash"]
