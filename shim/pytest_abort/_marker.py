"""The marker writer: keeps the "last running test" marker of one pytest
process (see :mod:`pytest_abort.plugin` for where it goes and what it holds)."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Optional

import pytest

from ._common import ENV_WATCH_MARKS, Problems, q, worker_id
from .crash_file import gpu_id_from_env

_PHASE_OFFSET = len('{"phase": ')
#: Each phase's JSON literal, padded to one width so that a phase change is
#: one write at a fixed offset.
_PHASE_TEXT = {p: ('"%s"' % p).ljust(10) for p in ("setup", "call", "teardown")}
_PHASES = {p: text.encode() for p, text in _PHASE_TEXT.items()}


def _timeout_of(item: pytest.Item) -> Optional[float]:
    mark = item.get_closest_marker("timeout")
    if mark is None:
        return None
    value = mark.kwargs.get("timeout", mark.args[0] if mark.args else None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class AtomicMarker:
    """Marker written as temp file + rename and removed after the test (the
    original's semantics, for readers that poll it while pytest runs)."""

    def __init__(self, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.payload = ""

    def start(self, payload: str) -> None:
        """Writes the marker of a test whose protocol starts."""
        self.payload = payload
        self._write(payload)

    def _write(self, payload: str) -> None:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            tmp = f"{self.path}.tmp.{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(payload)
            os.replace(tmp, self.path)
        except OSError as e:
            self.problems.report("marker", f"cannot write the marker {self.path}: {e}; a crash cannot be attributed")

    def phase(self, phase: str) -> None:
        """Rewrites the marker (atomically, as a whole) with the new phase."""
        end = _PHASE_OFFSET + len(_PHASES[phase])
        self._write(self.payload[:_PHASE_OFFSET] + _PHASE_TEXT[phase] + self.payload[end:])

    def finish(self) -> None:
        """Removes the marker: no test is running."""
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass  # start could not write it (already reported)
        except OSError as e:
            self.problems.report("marker-rm", f"cannot remove the marker {self.path}: {e}")

    def reset(self) -> None:
        """Nothing to reset: each write replaces the whole file."""

    def close(self) -> None:
        """Nothing stays open."""


class InPlaceMarker:
    """Marker kept open and rewritten in place with one ``pwrite``.

    Used under the wrapper, which reads a marker only when its writer is
    stopped (ptrace) or dead, so a single write is all-or-nothing for it.
    Shorter contents are padded with spaces (valid JSON whitespace)."""

    def __init__(self, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.size = 0
        self.fd: Optional[int] = None
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            self._failed(e)

    def _failed(self, e: OSError) -> None:
        self.problems.report("marker", f"cannot write the marker {self.path}: {e}; a crash cannot be attributed")

    def _put(self, data: bytes) -> None:
        if self.fd is None:
            return
        if len(data) < self.size:
            data = data.ljust(self.size)
        else:
            self.size = len(data)
        try:
            os.pwrite(self.fd, data, 0)
        except OSError as e:
            self._failed(e)

    def start(self, payload: str) -> None:
        """Writes the marker of a test whose protocol starts."""
        self._put(payload.encode("utf-8", "surrogateescape"))

    def phase(self, phase: str) -> None:
        """Overwrites the phase field only."""
        if self.fd is not None:
            try:
                os.pwrite(self.fd, _PHASES[phase], _PHASE_OFFSET)
            except OSError as e:
                self._failed(e)

    def finish(self) -> None:
        """Marks the process idle."""
        self._put(b'{"status": "idle"}')

    def reset(self) -> None:
        """Empties the file (in a forked child: an earlier child's longer
        marker must not show through the padding of this one's)."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
            self.size = 0
        except OSError as e:
            self._failed(e)

    def close(self) -> None:
        """Closes the file (the marker stays, saying idle)."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError as e:
                self._failed(e)
            self.fd = None


class MarkerWriter:
    """Plugin object: the marker of the test this process runs, with the
    phase it is in. Registered when a marker path is configured."""

    def __init__(self, config: pytest.Config, path: str, in_place: bool, problems: Problems) -> None:
        self.marker = InPlaceMarker(path, problems) if in_place else AtomicMarker(path, problems)
        # True while this process runs a test's protocol (an xdist
        # controller also gets logreport calls, for its workers' tests).
        self.in_protocol = False
        # Only under the wrapper's watchdog do markers carry the test's own
        # timeout mark (looking it up costs a walk over the node chain).
        self.watch_marks = bool(os.environ.get(ENV_WATCH_MARKS))
        self.worker = worker_id(config)
        self._format_tail()

    def forked(self) -> None:
        """In a child the fork server forked: a fresh marker, whose constant
        part holds this process's pid."""
        self.marker.reset()
        self._format_tail()

    def _format_tail(self) -> None:
        """Formats the part of every marker that never changes."""
        self.tail = ', "status": "running", "pid": %d, "gpu_id": %s, "worker": %s' % (
            os.getpid(),
            q(gpu_id_from_env()),
            q(self.worker),
        )

    # The per-test path is kept lean: it builds the marker's JSON from
    # constant parts and C-encoded string literals instead of json.dumps,
    # and updates the phase from the report hook pytest calls anyway.

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        """Writes the marker before the test's protocol and marks the
        process idle after it (a hard crash in between leaves it)."""
        timeout = _timeout_of(item) if self.watch_marks else None
        self.marker.start(
            '{"phase": "setup"   , "test_name": %s, "nodeid": %s, "start_time": "%s"%s, "timeout": %s}'
            % (
                q(item.name),
                q(item.nodeid),
                datetime.now().isoformat(timespec="microseconds"),
                self.tail,
                "null" if timeout is None else repr(timeout),
            )
        )
        self.in_protocol = True
        try:
            yield
        finally:
            self.in_protocol = False
            self.marker.finish()

    def pytest_runtest_logreport(self, report) -> None:
        """After setup and call: the marker names the phase that starts now."""
        when = report.when
        if self.in_protocol and when != "teardown":
            # The next phase starts now (teardown straight after a setup
            # that did not pass).
            self.marker.phase("call" if when == "setup" and report.outcome == "passed" else "teardown")

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config) -> None:
        """Closes the marker."""
        self.marker.close()
