"""The plugin on its own (no wrapper), as the original behaves: serial and
under xdist, loaded every way at once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_abort.crash_file import check_for_crash_file

from conftest import SEGFAULT, clean_env, read_jsonl

# A test that prints its own marker (read while it runs).
SHOW_MARKER = """
import json, os

def _marker():
    for key in ("PYTEST_ABORT_LAST_RUNNING_FILE",):
        if os.environ.get(key):
            return os.environ[key]
    return os.environ["MARKER_PATH"]

def test_show():
    with open(_marker()) as f:
        data = json.load(f)
    print("MARKER=" + json.dumps(data))
"""


def _marker_of(output: str) -> dict:
    line = next(l for l in output.splitlines() if "MARKER=" in l)
    return json.loads(line.split("MARKER=", 1)[1])


def test_marker_while_running_and_removed_after(suite):
    suite.write("test_m.py", SHOW_MARKER)
    marker = suite.root / "state" / "last.json"
    r = suite.pytest("-s", "test_m.py", env=clean_env(PYTEST_ABORT_LAST_RUNNING_FILE=str(marker)))
    assert r.returncode == 0, r.stdout
    data = _marker_of(r.stdout)
    assert data["test_name"] == "test_show"
    assert data["nodeid"] == "test_m.py::test_show"
    assert data["status"] == "running"
    assert isinstance(data["pid"], int)
    assert data["gpu_id"] == "unknown"
    assert len(data["start_time"].split(".")[-1]) == 6  # microseconds, no zone
    assert "+" not in data["start_time"]
    assert not marker.exists()
    assert os.listdir(marker.parent) == []  # no temp files left (atomic write)


@pytest.mark.parametrize(
    "gpu_env, expected",
    [
        ({"HIP_VISIBLE_DEVICES": "3", "ROCR_VISIBLE_DEVICES": "4", "CUDA_VISIBLE_DEVICES": "5"}, "3"),
        ({"HIP_VISIBLE_DEVICES": "", "ROCR_VISIBLE_DEVICES": "4", "CUDA_VISIBLE_DEVICES": "5"}, "4"),
        ({"CUDA_VISIBLE_DEVICES": "1,2"}, "1,2"),
    ],
)
def test_gpu_id_first_non_empty(suite, gpu_env, expected):
    suite.write("test_m.py", SHOW_MARKER)
    marker = suite.root / "last.json"
    r = suite.pytest("-s", "test_m.py", env=clean_env(PYTEST_ABORT_LAST_RUNNING_FILE=str(marker), **gpu_env))
    assert _marker_of(r.stdout)["gpu_id"] == expected, r.stdout


@pytest.mark.parametrize(
    "how",
    ["env-file", "env-dir", "opt-file", "opt-dir"],
)
def test_marker_path_sources(suite, how):
    suite.write("test_m.py", SHOW_MARKER)
    d = suite.root / "markers"
    env = clean_env()
    args = ["-s", "test_m.py"]
    expected = d / "last_running_main.json"
    if how == "env-file":
        expected = d / "x.json"
        env["PYTEST_ABORT_LAST_RUNNING_FILE"] = str(expected)
    elif how == "env-dir":
        env["PYTEST_ABORT_LAST_RUNNING_DIR"] = str(d)
    elif how == "opt-file":
        expected = d / "y.json"
        args.append(f"--last-running-file={expected}")
    else:
        args.append(f"--last-running-dir={d}")
    env["MARKER_PATH"] = str(expected)
    r = suite.pytest(*args, env=env)
    assert r.returncode == 0, r.stdout
    assert _marker_of(r.stdout)["nodeid"] == "test_m.py::test_show"
    assert not expected.exists()


def test_env_file_wins_over_option(suite):
    suite.write("test_m.py", SHOW_MARKER)
    env_path = suite.root / "env.json"
    r = suite.pytest(
        "-s", "test_m.py", f"--last-running-file={suite.root / 'opt.json'}",
        env=clean_env(PYTEST_ABORT_LAST_RUNNING_FILE=str(env_path)),
    )
    assert r.returncode == 0, r.stdout
    assert not (suite.root / "opt.json").exists()


def test_inert_without_a_path(suite):
    suite.write(
        "test_i.py",
        """
        import pytest_abort.plugin as p

        def test_inert(request):
            assert not any(request.config.pluginmanager.has_plugin(n) for n in p._PLUGIN_NAMES)
        """,
    )
    r = suite.pytest("test_i.py")
    assert r.returncode == 0, r.stdout
    assert not list(suite.root.rglob("last_running*"))


def test_unwritable_marker_never_fails_the_run_and_is_said_once(suite):
    suite.write("test_u.py", "def test_a():\n    pass\ndef test_b():\n    pass\n")
    blocker = suite.root / "file"
    blocker.write_text("x")
    r = suite.pytest("test_u.py", env=clean_env(PYTEST_ABORT_LAST_RUNNING_FILE=str(blocker / "sub" / "m.json")))
    assert r.returncode == 0, r.stdout
    assert "2 passed" in r.stdout
    assert r.stdout.count("pytest-abort: cannot write the marker") == 1, r.stdout


def test_unwritable_marker_under_w_error_goes_to_stderr(suite):
    suite.write("test_u.py", "def test_a():\n    pass\n")
    blocker = suite.root / "file"
    blocker.write_text("x")
    r = suite.pytest(
        "-W", "error", "test_u.py", env=clean_env(PYTEST_ABORT_LAST_RUNNING_FILE=str(blocker / "sub" / "m.json"))
    )
    assert r.returncode == 0, r.stdout
    assert "1 passed" in r.stdout
    assert "pytest-abort: cannot write the marker" in r.stdout, r.stdout


def test_serial_crash_leaves_the_marker(suite):
    suite.write("test_c.py", "def test_boom():\n" + "".join("    " + l + "\n" for l in SEGFAULT.splitlines()))
    marker = suite.root / "last.json"
    r = suite.pytest("test_c.py", env=clean_env(PYTEST_ABORT_LAST_RUNNING_FILE=str(marker)))
    assert r.returncode != 0
    info = check_for_crash_file(str(marker), min_duration=0.0)
    assert info is not None, r.stdout
    assert info["nodeid"] == "test_c.py::test_boom"
    assert info["test_class"] == ""
    assert info["reason"] == "Test crashed (segfault, abort, or fatal error)"


XDIST_SUITE = {
    "test_x.py": """
        import ctypes, time

        def test_a():
            pass

        def test_crash():
            ctypes.string_at(0)

        def test_b():
            pass

        class TestK:
            def test_c(self):
                pass
    """,
}


def test_xdist_worker_crash_logged_by_controller(suite):
    for name, text in XDIST_SUITE.items():
        suite.write(name, text)
    markers = suite.root / "markers"
    log = suite.root / "logs" / "crashes.jsonl"
    r = suite.pytest(
        "-n", "2", "test_x.py",
        env=clean_env(PYTEST_ABORT_LAST_RUNNING_DIR=str(markers), PYTEST_ABORT_CRASHED_TESTS_LOG=str(log)),
    )
    assert r.returncode == 1, r.stdout
    assert "3 passed" in r.stdout and "1 failed" in r.stdout, r.stdout
    records = read_jsonl(log)
    assert len(records) == 1, records
    rec = records[0]
    assert rec["nodeid"] == "test_x.py::test_crash"
    assert rec["source"].startswith("xdist:gw")
    assert rec["reason"] == "Test crashed (segfault, abort, or fatal error)"
    assert isinstance(rec["pid"], str) and isinstance(rec["duration"], float)
    for key in ("test_name", "test_class", "crash_time", "gpu_id", "logged_at"):
        assert key in rec
    # The dead worker's marker survives, under its per-worker name.
    worker = rec["source"].split(":", 1)[1]
    assert (markers / f"last_running_{worker}.json").exists()


def test_xdist_option_dir_and_unwritable_crash_log(suite):
    for name, text in XDIST_SUITE.items():
        suite.write(name, text)
    blocker = suite.root / "file"
    blocker.write_text("x")
    markers = suite.root / "m"
    r = suite.pytest(
        "-n", "2", "test_x.py", f"--last-running-dir={markers}",
        env=clean_env(PYTEST_ABORT_CRASHED_TESTS_LOG=str(blocker / "crashes.jsonl")),
    )
    # The run ends as without the plugin: one failure (the crash), no internal error.
    assert r.returncode == 1, r.stdout
    assert "INTERNALERROR" not in r.stdout
    assert any(p.name.startswith("last_running_gw") for p in markers.iterdir())


COUNT_PLUGIN = """
import sys
import pytest_abort.plugin as plugin
from pytest_abort._marker import MarkerWriter

def test_count(request):
    pm = request.config.pluginmanager
    sessions = [p for p in pm.get_plugins() if isinstance(p, MarkerWriter)]
    modules = [p for p in pm.get_plugins() if p is plugin]
    writers = [
        impl for impl in request.config.hook.pytest_runtest_setup.get_hookimpls()
        if type(impl.plugin).__module__.startswith("pytest_abort.")
    ]
    print("COUNTS", len(sessions), len(modules), len(writers))
"""


@pytest.mark.parametrize(
    "args, env",
    [
        ([], {}),
        (["-p", "pytest_abort"], {}),
        (["-p", "pytest_abort.plugin"], {}),
        (["-p", "pytest_abort", "-p", "pytest_abort.plugin"], {}),
        (["-p", "pytest_abort.plugin"], {"PYTEST_PLUGINS": "pytest_abort"}),
        (["-p", "pytest_abort.plugin"], {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}),
        (["-p", "pytest_abort"], {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}),
    ],
    ids=["autoload", "p-pkg", "p-plugin", "p-both", "env-plugins", "noauto-plugin", "noauto-pkg"],
)
def test_loaded_every_way_registers_once(suite, args, env):
    suite.write("test_count.py", COUNT_PLUGIN)
    marker = suite.root / "last.json"
    r = suite.pytest("-s", *args, "test_count.py", env=clean_env(PYTEST_ABORT_LAST_RUNNING_FILE=str(marker), **env))
    assert "already registered" not in r.stdout
    assert r.returncode == 0, r.stdout
    assert "COUNTS 1 1 1" in r.stdout, r.stdout


def test_installed_entry_point():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="pytest11") if ep.name == "pytest_abort"]
    assert eps, "pytest_abort is not installed: pip install ./shim"
    assert eps[0].value in ("pytest_abort", "pytest_abort.plugin")


def test_xdist_controller_appends_on_a_fresh_line(suite):
    for name, text in XDIST_SUITE.items():
        suite.write(name, text)
    log = suite.root / "crashes.jsonl"
    log.write_text('{"nodeid": "prev.py::test_prev"}')  # last line cut short: no newline
    r = suite.pytest(
        "-n", "2", "test_x.py",
        env=clean_env(PYTEST_ABORT_LAST_RUNNING_DIR=str(suite.root / "m"), PYTEST_ABORT_CRASHED_TESTS_LOG=str(log)),
    )
    assert r.returncode == 1, r.stdout
    assert [rec["nodeid"] for rec in read_jsonl(log)] == ["prev.py::test_prev", "test_x.py::test_crash"]


PHASE_CRASHES = """
import ctypes, json, os
import pytest

def _phase():
    with open(os.environ["PYTEST_ABORT_LAST_RUNNING_FILE"]) as f:
        return json.load(f)["phase"]

@pytest.fixture
def crash_in_teardown():
    yield
    ctypes.string_at(0)

@pytest.fixture
def phase_in_setup():
    return _phase()

def test_phases(phase_in_setup):
    print("PHASES", phase_in_setup, _phase())

def test_call():
    ctypes.string_at(0)

def test_teardown(crash_in_teardown):
    pass
"""


@pytest.mark.parametrize("test, phase", [("test_call", "call"), ("test_teardown", "teardown")])
def test_marker_carries_the_phase_without_the_wrapper(suite, rust_bin, test, phase):
    from pytest_abort import abort_handling as ah

    suite.write("test_p.py", PHASE_CRASHES)
    marker = suite.root / "last.json"
    env = clean_env(PYTEST_ABORT_LAST_RUNNING_FILE=str(marker))
    r = suite.pytest("-s", f"test_p.py::test_phases", env=env)
    assert "PHASES setup call" in r.stdout, r.stdout
    r = suite.pytest(f"test_p.py::{test}", env=env)
    assert r.returncode != 0 and marker.exists(), r.stdout
    log = suite.root / "crashes.jsonl"
    os.environ["PYTEST_ABORT_CRASHED_TESTS_LOG"] = str(log)
    try:
        assert ah.handle_abort(str(suite.root / "r.json"), str(suite.root / "r.html"), str(marker), "test_p")
    finally:
        del os.environ["PYTEST_ABORT_CRASHED_TESTS_LOG"]
    (rec,) = read_jsonl(log)
    assert rec["nodeid"] == f"test_p.py::{test}" and rec["phase"] == phase, rec
