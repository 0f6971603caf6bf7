"""The per-process journal under the wrapper (pytest_abort._journal.Journal):
lines stored into a memory map of the file. A real pytest process with a
wrapper state folder (as the wrapper starts one), ending normally, killed
with SIGKILL, and with a test that forks."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import clean_env, read_jsonl

TESTS = """
import os, signal

def test_a():
    pass

def test_b():
    pass

def test_fork(request):
    # A forked child writes nothing into its parent's journal, even when
    # it writes through the plugin's own journal object.
    journal = request.config.pluginmanager.get_plugin("pytest_abort_wrap").journal
    pid = os.fork()
    if pid == 0:
        journal.write({"ev": "from_the_child"})
        journal.close()
        os._exit(0)
    os.waitpid(pid, 0)

def test_kill():
    if os.environ.get("KILL_IN_TEST"):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _run(suite, tmp_path: Path, **env: str):
    state = tmp_path / "state"
    state.mkdir()
    (state / "plan.json").write_text(json.dumps({"run": 1}))
    suite.write("test_j.py", TESTS)
    r = suite.pytest("-p", "no:randomly", "test_j.py", env=clean_env(PYTEST_ABORT_WRAP_STATE=str(state), **env))
    (journal,) = sorted((state / "journal").glob("r1-*.jsonl"))
    return r, journal


def test_a_journal_ends_at_its_last_line_when_pytest_ends(suite, tmp_path):
    r, journal = _run(suite, tmp_path)
    assert r.returncode == 0, r.stdout
    data = journal.read_bytes()
    assert data.endswith(b"\n") and b"\0" not in data
    events = read_jsonl(journal)
    done = [e["nodeid"] for e in events if e["ev"] == "done"]
    assert done == ["test_j.py::test_a", "test_j.py::test_b", "test_j.py::test_fork", "test_j.py::test_kill"]
    assert not [e for e in events if e["ev"] == "from_the_child"]
    assert events[-1] == {"ev": "end"}
    # Whole microseconds, as JSON numbers.
    assert all(isinstance(e["duration"], float) and e["duration"] >= 0 for e in events if e["ev"] == "done")


def test_a_killed_process_keeps_every_line_it_wrote(suite, tmp_path):
    r, journal = _run(suite, tmp_path, KILL_IN_TEST="1")
    assert r.returncode == -9, r.stdout
    data = journal.read_bytes()
    text, nuls = data.rstrip(b"\0"), len(data) - len(data.rstrip(b"\0"))
    assert nuls > 0 and b"\0" not in text and text.endswith(b"\n"), data[-200:]
    done = [e["nodeid"] for e in read_jsonl(journal) if e["ev"] == "done"]
    assert done == ["test_j.py::test_a", "test_j.py::test_b", "test_j.py::test_fork"]
