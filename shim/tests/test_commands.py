"""The original's commands as installed by ``pip install ./shim``: launchers
of the Rust binaries, which must never find themselves instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import SEGFAULT, clean_env, read_jsonl

CRASHY = """
import ctypes

def test_one():
    pass

def test_crash():
    ctypes.string_at(0)

def test_two():
    pass
"""


def _venv_script(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    assert os.path.exists(path), f"{path}: not installed (pip install ./shim)"
    return path


def test_python_m_retry_records_a_serial_crash(suite, rust_bin):
    suite.write("test_c.py", CRASHY)
    log = suite.root / "crashes.jsonl"
    env = clean_env(PYTEST_ABORT_BIN=os.path.join(rust_bin, "pytest-abort"))
    r = subprocess.run(
        [sys.executable, "-m", "pytest_abort.retry", "--crash-log", str(log), "--", sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_c.py"],
        cwd=suite.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout
    assert "=== pytest-abort-retry summary ===" in r.stdout
    assert [rec["nodeid"] for rec in read_jsonl(log)] == ["test_c.py::test_crash"]


def test_console_scripts_launch_the_binaries(suite, rust_bin):
    log = suite.root / "crashes.jsonl"
    log.write_text(json.dumps({"nodeid": "a_test.py::test_x", "test_name": "a_test.py::test_x"}) + "\n")
    report = suite.root / "r.json"
    # The venv's bin folder first on PATH (its launchers shadow the binaries),
    # binaries found through PYTEST_ABORT_BIN.
    path = os.pathsep.join([os.path.dirname(sys.executable), rust_bin, os.environ.get("PATH", "")])
    env = clean_env(PATH=path, PYTEST_ABORT_BIN=rust_bin)
    r = subprocess.run(
        [_venv_script("pytest-abort-postprocess"), "--crash-log", str(log), "--json-report", str(report)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout
    assert [t["nodeid"] for t in json.loads(report.read_text())["tests"]] == ["a_test.py::test_x"]
    # Without PYTEST_ABORT_BIN, the launcher skips itself on PATH.
    env.pop("PYTEST_ABORT_BIN")
    r = subprocess.run(
        [_venv_script("pytest-abort-retry")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
    )
    assert r.returncode == 2, r.stdout
    assert "ERROR: provide a pytest command" in r.stdout


def test_launcher_without_binary(tmp_path):
    """A plugin-only install (``pip install ./shim``) with no binary anywhere:
    127 and how to install. From the root wheel, the wheel's own binary runs
    whatever PYTEST_ABORT_BIN says."""
    from pytest_abort.abort_handling import wheel_binary

    env = clean_env(PATH=str(tmp_path), PYTEST_ABORT_BIN=str(tmp_path / "missing"))
    log = tmp_path / "crashes.jsonl"
    log.write_text(json.dumps({"nodeid": "a_test.py::test_x"}) + "\n")
    r = subprocess.run(
        [sys.executable, "-m", "pytest_abort.postprocess", "--crash-log", str(log), "--json-report", str(tmp_path / "r.json")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
    )
    if wheel_binary("pytest-abort-postprocess") is None:
        assert r.returncode == 127, r.stdout
        assert "cargo install --path" in r.stdout and "pip install ." in r.stdout
    else:
        assert r.returncode == 0, r.stdout
        assert [t["nodeid"] for t in json.loads((tmp_path / "r.json").read_text())["tests"]] == ["a_test.py::test_x"]
