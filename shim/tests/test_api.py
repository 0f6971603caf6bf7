"""The original's Python API (``pytest_abort.abort_handling``) on reports
written by the real pytest-json-report, pytest-html and pytest-csv."""

from __future__ import annotations

import csv
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from pytest_abort import abort_handling as ah

from conftest import clean_env, html_blob, read_jsonl

REASON = "Test crashed (segfault, abort, or fatal error)"

SUITE = """
import sys

def test_pass():
    print("line one\\n\\tindented\\x07bell")

def test_fail():
    sys.stdout.write("out\\twith tab\\n")
    assert 1 == 2
"""


@pytest.fixture
def reports(suite, tmp_path):
    """Real json, html and csv reports of a run with one pass and one failure."""
    suite.write("test_real.py", SUITE)
    out = tmp_path / "out"
    r = suite.pytest(
        "test_real.py",
        "--json-report",
        f"--json-report-file={out / 'r.json'}",
        f"--html={out / 'r_log.html'}",
        "--self-contained-html",
        f"--csv={out / 'r.csv'}",
    )
    assert r.returncode == 1, r.stdout
    return {"json": out / "r.json", "html": out / "r_log.html", "csv": out / "r.csv", "dir": out}


def _info(nodeid="test_real.py::test_gone", **extra):
    info = {
        "test_name": nodeid,
        "test_class": "",
        "nodeid": nodeid,
        "reason": REASON,
        "crash_time": datetime.now().isoformat(),
        "duration": 0.25,
        "gpu_id": "2",
        "pid": "1234",
    }
    info.update(extra)
    return info


def _json_tests(path: Path):
    return {t["nodeid"]: t for t in json.loads(path.read_text())["tests"]}


def test_append_abort_to_json_existing_report(reports, rust_bin):
    before = json.loads(reports["json"].read_text())
    ah.append_abort_to_json(str(reports["json"]), "test_real", _info())
    after = json.loads(reports["json"].read_text())
    tests = _json_tests(reports["json"])
    assert tests["test_real.py::test_gone"]["outcome"] == "failed"
    assert set(tests) == {"test_real.py::test_pass", "test_real.py::test_fail", "test_real.py::test_gone"}
    assert after["summary"]["failed"] == before["summary"]["failed"] + 1
    assert after["summary"]["total"] == before["summary"]["total"] + 1
    assert after["exitcode"] == 1
    # Not added twice.
    ah.append_abort_to_json(str(reports["json"]), "test_real", _info())
    assert len(json.loads(reports["json"].read_text())["tests"]) == 3


def test_append_abort_to_json_anchors_bare_names_and_creates(tmp_path, rust_bin):
    path = tmp_path / "new" / "f_log.json"
    ah.append_abort_to_json(str(path), "tests/f", _info(nodeid="test_x"))
    data = json.loads(path.read_text())
    assert [t["nodeid"] for t in data["tests"]] == ["tests/f.py::test_x"]
    assert data["summary"]["failed"] == 1 and data["exitcode"] == 1
    with pytest.raises(KeyError):
        ah.append_abort_to_json(str(path), "f", {"nodeid": "x"})


def test_append_abort_to_html_existing_report(reports, rust_bin):
    ah.append_abort_to_html(str(reports["html"]), "test_real", _info())
    blob = html_blob(reports["html"])
    assert "test_real.py::test_gone" in json.dumps(blob["tests"])
    text = reports["html"].read_text()
    assert '<span class="failed">2 Failed,' in text


def test_append_abort_to_html_escapes_and_creates(tmp_path, rust_bin):
    path = tmp_path / "x_log.html"
    evil = 'test_e.py::test_p[<script>alert("x")</script>]'
    ah.append_abort_to_html(str(path), "test_e", _info(nodeid=evil))
    text = path.read_text()
    assert "<script>alert" not in text
    assert evil in html_blob(path)["tests"]


def test_append_abort_to_csv(reports, rust_bin):
    with open(reports["csv"], newline="") as f:
        header = next(csv.reader(f))
    ah.append_abort_to_csv(str(reports["csv"]), _info())
    ah.append_abort_to_csv(str(reports["csv"]), _info())  # same id: not added again
    ah.append_abort_to_csv(str(reports["csv"]), {"reason": "no id"})  # nothing to add
    with open(reports["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
        f.seek(0)
        assert next(csv.reader(f)) == header
    gone = [r for r in rows if r["id"] == "test_real.py::test_gone"]
    assert len(gone) == 1 and len(rows) == 3
    assert gone[0]["status"] == "failed"


def test_append_crash_to_jsonl(tmp_path):
    log = tmp_path / "sub" / "crashes.jsonl"
    ah.append_crash_to_jsonl(str(log), _info(extra_field=7), source="runner")
    ah.append_crash_to_jsonl(str(log), _info(nodeid="a.py::b"), source="xdist:gw1")
    recs = read_jsonl(log)
    assert [r["source"] for r in recs] == ["runner", "xdist:gw1"]
    assert recs[0]["extra_field"] == 7 and "logged_at" in recs[0]


def _write_marker(path: Path, nodeid: str) -> None:
    path.write_text(
        json.dumps(
            {
                "test_name": nodeid.split("::")[-1],
                "nodeid": nodeid,
                "start_time": datetime.now().isoformat(),
                "status": "running",
                "pid": 4242,
                "gpu_id": "0",
            }
        )
    )


def test_handle_abort_quick_crash(tmp_path, rust_bin, monkeypatch):
    log = tmp_path / "crashes.jsonl"
    monkeypatch.setenv("PYTEST_ABORT_CRASHED_TESTS_LOG", str(log))
    marker = tmp_path / "last_running.json"
    _write_marker(marker, "tests/q_test.py::TestK::test_quick")  # started just now
    jf, hf = tmp_path / "q_log.json", tmp_path / "q_log.html"
    assert ah.handle_abort(str(jf), str(hf), str(marker), "tests/q_test") is True
    assert not marker.exists()
    assert list(_json_tests(jf)) == ["tests/q_test.py::TestK::test_quick"]
    assert "tests/q_test.py::TestK::test_quick" in json.dumps(html_blob(hf))
    (rec,) = read_jsonl(log)
    assert rec["source"] == "runner" and rec["nodeid"] == "tests/q_test.py::TestK::test_quick"
    assert rec["test_class"] == "TestK" and rec["reason"] == REASON and rec["pid"] == "4242"


def test_handle_abort_no_crash(tmp_path, rust_bin):
    jf, hf = tmp_path / "a.json", tmp_path / "a.html"
    assert ah.handle_abort(str(jf), str(hf), str(tmp_path / "none.json"), "a") is False
    idle = tmp_path / "idle.json"
    idle.write_text('{"status": "idle"}')
    assert ah.handle_abort(str(jf), str(hf), str(idle), "a") is False
    assert not idle.exists() and not jf.exists() and not hf.exists()
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert ah.handle_abort(str(jf), str(hf), str(garbage), "a") is False
    assert not garbage.exists()


def test_handle_abort_creates_a_page_from_this_interpreters_pytest_html(tmp_path, rust_bin, monkeypatch):
    """A report handle_abort creates is a full pytest-html page built from
    the pytest-html installed for the interpreter that called it: its own
    script and CSS (so pytest_html_merger can use it as the merged page)."""
    import importlib.util

    monkeypatch.delenv("PYTEST_ABORT_PYTHON", raising=False)
    monkeypatch.delenv("PYTEST_ABORT_CRASHED_TESTS_LOG", raising=False)
    # Only the binaries on PATH: no other Python to find pytest-html in.
    monkeypatch.setenv("PATH", os.path.dirname(ah.find_binary()))
    jf, hf = tmp_path / "c_log.json", tmp_path / "c_log.html"
    info = _info(nodeid="test_c", test_name="test_c")
    assert ah.handle_abort(str(jf), str(hf), str(tmp_path / "m.json"), "dir/c", crash_info=info) is True
    text = hf.read_text(encoding="utf-8")
    resources = Path(importlib.util.find_spec("pytest_html").submodule_search_locations[0]) / "resources"
    app_js = (resources / "app.js").read_text(encoding="utf-8")
    probe = next(line.strip() for line in app_js.splitlines() if len(line.strip()) > 30)
    assert probe in text, "pytest-html's own script is not in the created page"
    assert '<title id="head-title">c_log.html</title>' in text
    assert list(html_blob(hf)["tests"]) == ["dir/c.py::test_c"]
    assert '<span class="failed">1 Failed,' in text


def test_handle_abort_with_crash_info(tmp_path, rust_bin, monkeypatch):
    monkeypatch.delenv("PYTEST_ABORT_CRASHED_TESTS_LOG", raising=False)
    jf, hf = tmp_path / "b_log.json", tmp_path / "b_log.html"
    info = _info(nodeid="test_b", test_name="test_b")
    assert ah.handle_abort(str(jf), str(hf), str(tmp_path / "m.json"), "dir/b", crash_info=info) is True
    assert list(_json_tests(jf)) == ["dir/b.py::test_b"]


def test_sanitize_html_file_jsonblob(reports, rust_bin, tmp_path):
    path = str(reports["html"])
    # pytest-html writes "\n" inside the blob's strings (escaped): the
    # sanitizer turns them into <br/> for pytest_html_merger.
    first = ah.sanitize_html_file_jsonblob(path)
    assert first is True
    assert ah.sanitize_html_file_jsonblob(path) is False
    for entries in html_blob(reports["html"])["tests"].values():
        for e in entries:
            assert not any(ch in e.get("log", "") for ch in "\n\t\x07")
    assert ah.sanitize_html_file_jsonblob(str(tmp_path / "missing.html")) is False


def test_sanitize_all_html_jsonblobs(reports, rust_bin, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(reports["html"], logs / "a_log.html")
    shutil.copy(reports["html"], logs / "b_log.html")
    shutil.copy(reports["html"], logs / "other.html")  # not *_log.html: left alone
    # Unparsable even after repair (it has an escape, so it is parsed).
    (logs / "c_log.html").write_text('<div id="data-container" data-jsonblob="{&#34;tests&#34;: [&#34;a\\nb&#34;, broken"></div>')
    modified, total, failed = ah.sanitize_all_html_jsonblobs(str(logs))
    assert (modified, total, failed) == (2, 3, 1)
    assert (logs / "other.html").read_bytes() == reports["html"].read_bytes()
    assert ah.sanitize_all_html_jsonblobs(str(logs)) == (0, 3, 1)
    assert ah.sanitize_all_html_jsonblobs(str(tmp_path / "nothing-here")) == (0, 0, 0)


def test_postprocess_reports_from_crash_log(reports, rust_bin, tmp_path):
    log = tmp_path / "crashes.jsonl"
    lines = [
        json.dumps(_info()),
        "",
        "not json",
        json.dumps(_info(nodeid=" test_real.py::test_gone ")),
        json.dumps(_info(nodeid="test_real.py::test_other", test_name="test_other")),
    ]
    log.write_text("\n".join(lines) + "\n")
    kw = dict(json_report_file=str(reports["json"]), html_report_file=str(reports["html"]), csv_report_file=str(reports["csv"]))
    ah.postprocess_reports_from_crash_log(str(log), **kw)
    snapshot = {k: Path(v).read_bytes() for k, v in kw.items()}
    tests = _json_tests(reports["json"])
    assert {"test_real.py::test_gone", "test_real.py::test_other"} <= set(tests)
    assert len(tests) == 4
    with open(reports["csv"], newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert "test_real.py::test_other" in json.dumps(html_blob(reports["html"]))
    ah.postprocess_reports_from_crash_log(str(log), **kw)  # twice: nothing changes
    assert snapshot == {k: Path(v).read_bytes() for k, v in kw.items()}
    ah.postprocess_reports_from_crash_log(str(tmp_path / "no-log.jsonl"), **kw)  # no log: nothing


def test_postprocess_creates_missing_reports(tmp_path, rust_bin):
    log = tmp_path / "crashes.jsonl"
    log.write_text(json.dumps(_info()) + "\n")
    jf, cf = tmp_path / "n.json", tmp_path / "n.csv"
    ah.postprocess_reports_from_crash_log(str(log), json_report_file=str(jf), csv_report_file=str(cf))
    assert list(_json_tests(jf)) == ["test_real.py::test_gone"]
    assert cf.read_text().splitlines()[0] == "id,module,name,file,doc,markers,status,message,duration"


def test_arguments_never_go_through_a_shell(tmp_path, rust_bin):
    jf = tmp_path / "s.json"
    nasty = "t.py::test_x[$(touch pwned); `touch pwned2` | ' \" \n]"
    ah.append_abort_to_json(str(jf), "t", _info(nodeid=nasty, test_name=nasty))
    assert list(_json_tests(jf)) == [nasty]
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_missing_binary_says_how_to_install(tmp_path, monkeypatch):
    # As a plugin-only install sees it (from the root wheel, its own binaries
    # would be found first: test_binary_lookup_order).
    monkeypatch.setattr(ah, "wheel_binary", lambda name="pytest-abort": None)
    monkeypatch.setenv("PYTEST_ABORT_BIN", str(tmp_path / "nope" / "pytest-abort"))
    with pytest.raises(ah.BinaryNotFoundError, match="cargo install --path"):
        ah.append_abort_to_json(str(tmp_path / "x.json"), "x", _info())
    monkeypatch.delenv("PYTEST_ABORT_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ah.BinaryNotFoundError, match="cargo install --path"):
        ah.handle_abort("a.json", "a.html", str(tmp_path / "m.json"), "a")


def _installed_from_wheel() -> bool:
    """True when this package came from the root wheel (binaries included),
    False for ``pip install ./shim`` (the plugin and API alone)."""
    return ah.wheel_binary() is not None


@pytest.mark.parametrize("name", ["pytest-abort", "pytest-abort-wrap", "pytest-abort-retry", "pytest-abort-postprocess"])
def test_binary_lookup_order(tmp_path, monkeypatch, name):
    """The wheel's own binaries come first (whatever PYTEST_ABORT_BIN and PATH
    say); without them, a bad PYTEST_ABORT_BIN is an error that says how to
    install."""
    monkeypatch.setenv("PYTEST_ABORT_BIN", str(tmp_path / "nope" / "pytest-abort"))
    monkeypatch.setenv("PATH", str(tmp_path))
    if not _installed_from_wheel():
        with pytest.raises(ah.BinaryNotFoundError, match="pip install ."):
            ah.find_binary(name)
        return
    found = ah.find_binary(name)
    # pip installs a wheel's scripts next to the venv's interpreter.
    import sysconfig

    assert os.path.dirname(found) == sysconfig.get_path("scripts"), found
    assert os.path.basename(found) == name
    with open(found, "rb") as f:
        assert f.read(4) == b"\x7fELF", f"{found}: not the Rust binary"


# A crash log whose last line has no newline (a writer killed mid-line):
# the next record must start on a fresh line, not glue onto it.
UNTERMINATED = '{"nodeid": "prev.py::test_prev"}'


def test_append_crash_to_jsonl_starts_on_a_fresh_line(tmp_path):
    log = tmp_path / "crashes.jsonl"
    log.write_text(UNTERMINATED)
    ah.append_crash_to_jsonl(str(log), _info(nodeid="a.py::test_new"), source="runner")
    assert [r["nodeid"] for r in read_jsonl(log)] == ["prev.py::test_prev", "a.py::test_new"]
    assert log.read_text().endswith("\n")


def test_handle_abort_appends_on_a_fresh_line(tmp_path, rust_bin, monkeypatch):
    log = tmp_path / "crashes.jsonl"
    log.write_text(UNTERMINATED)
    monkeypatch.setenv("PYTEST_ABORT_CRASHED_TESTS_LOG", str(log))
    marker = tmp_path / "last_running.json"
    _write_marker(marker, "tests/f_test.py::test_fresh")
    jf, hf = tmp_path / "f_log.json", tmp_path / "f_log.html"
    assert ah.handle_abort(str(jf), str(hf), str(marker), "tests/f_test") is True
    assert [r["nodeid"] for r in read_jsonl(log)] == ["prev.py::test_prev", "tests/f_test.py::test_fresh"]
