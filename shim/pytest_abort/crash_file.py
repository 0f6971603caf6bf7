"""Marker parsing and crash-log appends, in pure Python.

Small on purpose: the plugin needs these without the Rust binary. Report
handling lives in the Rust binary (see :mod:`pytest_abort.abort_handling`).

PYTEST_DONT_REWRITE: no assertions here to rewrite (see :mod:`pytest_abort.plugin`).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any, Dict, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - not Linux
    fcntl = None  # type: ignore

GPU_ENV_VARS = ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


def gpu_id_from_env() -> str:
    """The physical GPU(s) this process uses: ``PYTEST_ABORT_GPU`` (set by
    ``pytest-abort-wrap --gpus``), else the first non-empty of
    HIP_/ROCR_/CUDA_VISIBLE_DEVICES, else "unknown"."""
    for name in ("PYTEST_ABORT_GPU",) + GPU_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return "unknown"


def _split_nodeid(nodeid: str):
    base, bracket, params = nodeid.partition("[")
    parts = base.split("::")
    if bracket:
        parts[-1] += bracket + params
    return parts


def test_class_of(nodeid: str) -> str:
    """The class of a method's node id; empty for a plain function."""
    parts = _split_nodeid(nodeid)
    return parts[-2] if len(parts) >= 3 else ""


def check_for_crash_file(last_running_file: str, *, min_duration: float = 0.1) -> Optional[Dict[str, Any]]:
    """Return crash info if the marker file says a test was running.

    Same contract as the original: ``None`` when there is no marker, when it
    is not ``status: running``, when it is unreadable (an invalid marker is
    removed), or when the test ran for less than ``min_duration`` seconds.
    Unlike the original, ``test_class`` is empty for plain functions.
    """
    if not os.path.exists(last_running_file):
        return None
    try:
        with open(last_running_file, "r", encoding="utf-8") as f:
            data = json.loads(f.read().strip(" \0\n\t"))
        if not isinstance(data, dict) or data.get("status") != "running":
            return None
        start = datetime.fromisoformat(data["start_time"])
        duration = (datetime.now() - start).total_seconds()
        if duration < min_duration:
            return None
        nodeid = data.get("nodeid", data.get("test_name", "unknown_test"))
        return {
            "test_name": nodeid,
            "test_class": test_class_of(nodeid),
            "nodeid": nodeid,
            "reason": "Test crashed (segfault, abort, or fatal error)",
            "crash_time": datetime.now().isoformat(),
            "duration": duration,
            "gpu_id": str(data.get("gpu_id", "unknown")),
            "pid": str(data.get("pid", "unknown")),
        }
    except (ValueError, KeyError, TypeError):
        try:
            os.remove(last_running_file)
        except OSError:
            pass
        return None
    except OSError:
        return None


def append_crash_to_jsonl(crash_log_file: str, crash_info: Dict[str, Any], *, source: str) -> None:
    """Append one crash record (plus ``source`` and ``logged_at``) to a JSONL
    crash log under an exclusive ``flock``.

    When the log does not end with a newline (a writer killed mid-line), the
    record starts on a fresh line instead of gluing onto the cut-short one.
    """
    record = dict(crash_info)
    record["source"] = source
    record["logged_at"] = datetime.now().isoformat()
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
    folder = os.path.dirname(os.path.abspath(crash_log_file))
    os.makedirs(folder, exist_ok=True)
    fd = os.open(crash_log_file, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        # One write (a record is small), so a reader never sees the newline
        # without the record; the loop only finishes a short write.
        while line:
            line = line[os.write(fd, line) :]
    finally:
        os.close(fd)  # closing releases the lock
