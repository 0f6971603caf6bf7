"""The runner pattern the original was written for (rocm-jax's
run_single_gpu.py): one pytest process per test file, ``handle_abort`` after
each, ``sanitize_all_html_jsonblobs("logs")``, then pytest_html_merger over
the folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pytest_abort.abort_handling import handle_abort, sanitize_all_html_jsonblobs

from conftest import clean_env, html_blob, read_jsonl

FILES = {
    "pytest.ini": "[pytest]\n",
    "tests/alpha_test.py": """
        def test_a1():
            print("multi\\nline\\toutput")

        def test_a2():
            assert False, "plain failure"
    """,
    "tests/beta_test.py": """
        import ctypes

        def test_b1():
            pass

        class TestBeta:
            def test_b2_crash(self):
                ctypes.string_at(0)

            def test_b3_never_runs(self):
                pass
    """,
    "tests/gamma_test.py": """
        import pytest

        @pytest.mark.parametrize("x", [1, 2])
        def test_g(x):
            pass
    """,
}


def _merger() -> str:
    exe = shutil.which("pytest_html_merger", path=os.path.dirname(sys.executable))
    assert exe, "pytest_html_merger is not installed in this venv"
    return exe


def test_per_file_runs_with_handle_abort_then_merge(suite, rust_bin, monkeypatch):
    for name, text in FILES.items():
        suite.write(name, text)
    logs = suite.root / "logs"
    logs.mkdir()
    crash_log = suite.root / "crashes.jsonl"
    marker = logs / "last_running.json"
    monkeypatch.setenv("PYTEST_ABORT_CRASHED_TESTS_LOG", str(crash_log))

    results = {}
    for name in sorted(n for n in FILES if n.endswith(".py")):
        testfile = name[: -len(".py")]
        stem = Path(testfile).name
        jf, hf = logs / f"{stem}_log.json", logs / f"{stem}_log.html"
        r = suite.pytest(
            name,
            "--json-report",
            f"--json-report-file={jf}",
            f"--html={hf}",
            "--self-contained-html",
            env=clean_env(PYTEST_ABORT_LAST_RUNNING_FILE=str(marker), HIP_VISIBLE_DEVICES="1"),
        )
        results[stem] = (r.returncode, handle_abort(str(jf), str(hf), str(marker), testfile))
        assert not marker.exists()

    assert results["alpha_test"] == (1, False)
    assert results["beta_test"][0] < 0 or results["beta_test"][0] > 100  # killed by SIGSEGV
    assert results["beta_test"][1] is True
    assert results["gamma_test"] == (0, False)

    crashed = "tests/beta_test.py::TestBeta::test_b2_crash"
    (rec,) = read_jsonl(crash_log)
    assert rec["nodeid"] == crashed and rec["source"] == "runner" and rec["gpu_id"] == "1"
    beta = json.loads((logs / "beta_test_log.json").read_text())
    assert [t["nodeid"] for t in beta["tests"]] == [crashed]
    assert beta["summary"]["failed"] == 1

    modified, total, failed = sanitize_all_html_jsonblobs(str(logs))
    assert total == 3 and failed == 0 and modified >= 1

    merged = suite.root / "merged.html"
    m = subprocess.run(
        [_merger(), "-i", str(logs), "-o", str(merged)],
        cwd=suite.root,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert m.returncode == 0, m.stdout
    blob = html_blob(merged)
    text = json.dumps(blob)
    for nodeid in (
        "tests/alpha_test.py::test_a1",
        "tests/alpha_test.py::test_a2",
        crashed,
        "tests/gamma_test.py::test_g[1]",
        "tests/gamma_test.py::test_g[2]",
    ):
        assert nodeid in text, nodeid
    assert "test_b3_never_runs" not in text
