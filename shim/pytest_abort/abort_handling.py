"""The original ``pytest_abort.abort_handling`` API, for runner scripts.

Runners (such as rocm-jax's ``run_single_gpu.py``) run one pytest process
per test file, call :func:`handle_abort` after each to turn a crash into a
failed test in that file's reports, then :func:`sanitize_all_html_jsonblobs`
before ``pytest_html_merger``. The names, signatures, return values and
effects are the original's; the report handling itself is done by the Rust
binary ``pytest-abort`` (one implementation, shared with the wrapper).

The binary is the one shipped in this package's own wheel (``pip install .``
at the repository root installs the binaries into the environment's scripts
folder), else ``$PYTEST_ABORT_BIN`` (the binary, or the folder holding the
pytest-abort binaries), else ``pytest-abort`` on ``PATH``. Without it, the
report functions raise :class:`BinaryNotFoundError`, which says how to
install it.
Arguments are passed as an argument list, never through a shell.

Differences from the original, all deliberate:

- :func:`handle_abort` reads the marker with no minimum duration, so a test
  that crashes within 0.1 s is still reported.
- Appending the same crash twice to a report does not add a second entry.
- Node ids are escaped wherever they land in an HTML report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import _in_wrapper_copy
from .crash_file import append_crash_to_jsonl, check_for_crash_file

__all__ = [
    "ENV_CRASHED_TESTS_LOG",
    "ENV_BIN",
    "BinaryNotFoundError",
    "ReportError",
    "append_abort_to_csv",
    "append_abort_to_html",
    "append_abort_to_json",
    "append_crash_to_jsonl",
    "check_for_crash_file",
    "find_binary",
    "wheel_binary",
    "handle_abort",
    "postprocess_reports_from_crash_log",
    "sanitize_all_html_jsonblobs",
    "sanitize_html_file_jsonblob",
]

ENV_CRASHED_TESTS_LOG = "PYTEST_ABORT_CRASHED_TESTS_LOG"
#: The ``pytest-abort`` binary, or the folder that holds the binaries.
ENV_BIN = "PYTEST_ABORT_BIN"
#: The Python whose installed pytest-html a created HTML report is built from.
ENV_PYTHON = "PYTEST_ABORT_PYTHON"

_INSTALL_HINT = (
    "Install the wheel with the binaries (`pip install .` at the root of a checkout "
    "of the pytest-abort repository), or the binaries alone with `cargo install --path .` "
    "(they go to ~/.cargo/bin, which must be on PATH), "
    "or set PYTEST_ABORT_BIN to the pytest-abort binary."
)


class BinaryNotFoundError(RuntimeError):
    """The Rust binary that does the report handling cannot be found."""


class ReportError(RuntimeError):
    """The Rust binary could not do what was asked (its message says why)."""


def _is_script(path: str) -> bool:
    """True for a text script (a Python console script such as the ones
    this package installs), which must not be mistaken for the binary."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return True


def _usable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK) and not _is_script(path)


def wheel_binary(name: str = "pytest-abort") -> Optional[str]:
    """Path of the binary ``name`` that the wheel this package was installed
    from ships, or None (a plugin-only install, ``pip install ./shim``, or
    the copy of the plugin the wrapper puts on ``PYTHONPATH``).

    maturin puts the binaries in the wheel's scripts folder, which pip
    installs wherever the install scheme says (``<venv>/bin``, ``~/.local/bin``
    with ``--user``); the distribution's ``RECORD`` says where, relative to
    the installed package. Only the distribution whose files include this
    very module counts, so another install of ``pytest-abort`` elsewhere on
    ``sys.path`` is never mistaken for ours.
    """
    try:
        from importlib.metadata import distributions
    except ImportError:  # pragma: no cover
        return None
    here = os.path.realpath(os.path.abspath(__file__))
    ours: List[str] = []
    others: List[str] = []
    try:
        for dist in distributions():
            if (dist.metadata["Name"] or "").lower().replace("_", "-") != "pytest-abort":
                continue
            located = [(f, os.path.realpath(str(dist.locate_file(f)))) for f in (dist.files or [])]
            found = [path for f, path in located if f.name == name and _usable(path)]
            mine = any(path == here for _, path in located)
            (ours if mine else others).extend(found)
    except OSError:
        return None
    if ours:
        return ours[0]
    # The copy of this package that pytest-abort-wrap puts first on
    # PYTHONPATH has no RECORD: the wheel installed in this environment
    # (its dist-info further down sys.path) is its own.
    if others and _in_wrapper_copy(here):
        return others[0]
    return None


def find_binary(name: str = "pytest-abort") -> str:
    """Path of one of the Rust binaries (``pytest-abort``,
    ``pytest-abort-wrap``, ``pytest-abort-retry``,
    ``pytest-abort-postprocess``).

    Looks first at the binaries shipped in this package's own wheel (see
    :func:`wheel_binary`), then at ``$PYTEST_ABORT_BIN`` (the
    ``pytest-abort`` binary, whose folder also holds the others, or that
    folder itself), then ``PATH``, skipping Python console scripts of the
    same name.
    """
    shipped = wheel_binary(name)
    if shipped is not None:
        return shipped
    configured = os.environ.get(ENV_BIN, "").strip()
    if configured:
        folder = configured if os.path.isdir(configured) else os.path.dirname(configured)
        candidate = configured if not os.path.isdir(configured) and name == "pytest-abort" else os.path.join(folder, name)
        if _usable(candidate):
            return candidate
        if name == "pytest-abort" or not os.path.isdir(folder):
            raise BinaryNotFoundError(f"{ENV_BIN}={configured}: no executable {name} there. {_INSTALL_HINT}")
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        if _usable(candidate):
            return candidate
    raise BinaryNotFoundError(f"the pytest-abort binary {name!r} was not found on PATH. {_INSTALL_HINT}")


def _run(args: Sequence[str], *, name: str = "pytest-abort") -> subprocess.CompletedProcess:
    """Runs a binary with an argument list (no shell); stdout and stderr
    are captured as text."""
    argv: List[str] = [find_binary(name), *args]
    # A report the binary creates is built from the pytest-html installed
    # for this interpreter (see ENV_PYTHON).
    env = dict(os.environ)
    if sys.executable and not env.get(ENV_PYTHON):
        env[ENV_PYTHON] = sys.executable
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False, env=env)


def _fail(proc: subprocess.CompletedProcess, what: str) -> ReportError:
    message = (proc.stderr or proc.stdout or "").strip() or f"exit status {proc.returncode}"
    return ReportError(f"{what}: {message}")


def _info_json(info: Dict[str, Any]) -> str:
    # default=str: the original accepted any values and wrote them with str().
    return json.dumps(dict(info), default=str, ensure_ascii=False)


def handle_abort(
    json_file: str,
    html_file: str,
    last_running_file: str,
    testfile: str,
    crash_info: Optional[Dict[str, Any]] = None,
) -> bool:
    """Report a crash of the pytest run of ``testfile`` into its reports.

    Without ``crash_info``, reads ``last_running_file`` (with no minimum
    duration, unlike the original). The marker file is removed. When there is
    a crash: appends it to ``$PYTEST_ABORT_CRASHED_TESTS_LOG`` (source
    ``runner``) when set, and adds a failed test to the pytest-json-report
    file ``json_file`` and the pytest-html file ``html_file``, creating the
    ones that do not exist.

    Returns True when a crash was reported, False when there was none or
    the reports could not be written (the message goes to stderr, as the
    original printed its traceback).
    """
    args = [
        "handle-abort",
        "--json-file",
        os.fspath(json_file),
        "--html-file",
        os.fspath(html_file),
        "--last-running-file",
        os.fspath(last_running_file),
        "--testfile",
        str(testfile),
    ]
    if crash_info is not None:
        args += ["--crash-info", _info_json(crash_info)]
    proc = _run(args)
    if proc.returncode == 0:
        return True
    if proc.returncode != 1 and proc.stderr:
        sys.stderr.write(proc.stderr)
    return False


def append_abort_to_json(json_file: str, testfile: str, abort_info: Dict[str, Any]) -> None:
    """Add the crash as a failed test to a pytest-json-report file (created
    when missing), with the summary counts and exit code updated.

    The test's node id is ``abort_info["test_name"]`` when it is file
    qualified, else ``<testfile>.py::<test_name>``.
    """
    if "test_name" not in abort_info:
        raise KeyError("test_name")
    proc = _run(["append-json", "--file", os.fspath(json_file), "--testfile", str(testfile), "--crash-info", _info_json(abort_info)])
    if proc.returncode != 0:
        raise _fail(proc, f"cannot add the crash to {json_file}")


def append_abort_to_html(html_file: str, testfile: str, abort_info: Dict[str, Any]) -> None:
    """Add the crash as a failed test to a pytest-html report, or write a
    standalone report with just that test when the file is missing.

    Best effort, like the original: a failure is reported on stderr, not
    raised (only a missing binary raises).
    """
    if "test_name" not in abort_info:
        raise KeyError("test_name")
    proc = _run(["append-html", "--file", os.fspath(html_file), "--testfile", str(testfile), "--crash-info", _info_json(abort_info)])
    if proc.returncode != 0:
        sys.stderr.write(f"pytest-abort: {_fail(proc, f'cannot add the crash to {html_file}')}\n")


def append_abort_to_csv(csv_file: str, abort_info: Dict[str, Any]) -> None:
    """Add a failed row for the crash to a pytest-csv report (created with
    pytest-csv's default header when missing), unless a row with that id is
    already there. Nothing happens when the info has no node id."""
    nodeid = abort_info.get("nodeid") or abort_info.get("test_name") or ""
    if not isinstance(nodeid, str) or not nodeid.strip():
        return
    proc = _run(["append-csv", "--file", os.fspath(csv_file), "--crash-info", _info_json(abort_info)])
    if proc.returncode != 0:
        raise _fail(proc, f"cannot add the crash to {csv_file}")


def sanitize_html_file_jsonblob(html_path: str) -> bool:
    """Make a pytest-html report's ``data-jsonblob`` safe for
    pytest_html_merger, in place: control characters in its strings become
    ``<br/>`` (newlines), two spaces (tabs) or a space.

    Returns True when the file was changed; False when it needed nothing,
    has no blob, or cannot be read. Raises ``ValueError`` when the blob
    cannot be parsed even after repair, as the original does.
    """
    try:
        with open(html_path, "rb"):
            pass
    except OSError:
        return False
    proc = _run(["sanitize-html", os.fspath(html_path)])
    modified, _total, failed = _parse_counts(proc)
    if failed:
        raise ValueError((proc.stderr or "").strip() or f"Could not parse data-jsonblob in {html_path}")
    return modified > 0


def sanitize_all_html_jsonblobs(log_dir: str) -> Tuple[int, int, int]:
    """:func:`sanitize_html_file_jsonblob` on every ``*_log.html`` file of
    ``log_dir`` (a file that fails is counted, not raised). Returns
    ``(modified, total, failed)``."""
    if not os.path.isdir(log_dir):
        return 0, 0, 0
    proc = _run(["sanitize-html", "--glob", "*_log.html", os.fspath(log_dir)])
    if proc.stderr:
        sys.stderr.write(proc.stderr)
    return _parse_counts(proc)


def _parse_counts(proc: subprocess.CompletedProcess) -> Tuple[int, int, int]:
    """Reads ``modified=M total=T failed=F`` from ``pytest-abort sanitize-html``."""
    for line in proc.stdout.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if {"modified", "total", "failed"} <= fields.keys():
            return int(fields["modified"]), int(fields["total"]), int(fields["failed"])
    raise _fail(proc, "unexpected output of pytest-abort sanitize-html")


def postprocess_reports_from_crash_log(
    crash_log_file: str,
    *,
    json_report_file: Optional[str] = None,
    html_report_file: Optional[str] = None,
    csv_report_file: Optional[str] = None,
) -> None:
    """Add one failed test per crashed node id of the crash log to each
    given report that does not have it yet (a missing report is created).
    Running it twice changes nothing. Nothing happens when the crash log
    cannot be read or holds no crash."""
    if not os.path.isfile(crash_log_file):
        return
    args = ["--crash-log", os.fspath(crash_log_file)]
    for flag, path in (("--json-report", json_report_file), ("--html-report", html_report_file), ("--csv-report", csv_report_file)):
        if path:
            args += [flag, os.fspath(path)]
    proc = _run(args, name="pytest-abort-postprocess")
    if proc.returncode != 0:
        raise _fail(proc, f"cannot patch the reports from {crash_log_file}")
