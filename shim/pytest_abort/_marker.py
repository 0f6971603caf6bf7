"""The marker writer: keeps the "last running test" marker of one pytest
process (see :mod:`pytest_abort.plugin` for where it goes and what it holds).

PYTEST_DONT_REWRITE: no assertions here to rewrite (see :mod:`pytest_abort.plugin`).
"""

from __future__ import annotations

import mmap
import os
import time
from typing import Any, Optional

import pytest

from ._common import ENV_WATCH_MARKS, Problems, encode_ascii as _encode, map_allocated, q, worker_id
from .crash_file import gpu_id_from_env

#: A marker starts with its status and phase, each value padded to a fixed
#: width, so that a phase change or the end of a test is one store at a
#: fixed offset: ``{"status": "running", "phase": "setup"   , ...}``.
_STATUS_OFFSET = len('{"status": ')
_PHASE_OFFSET = len('{"status": "running", "phase": ')
_IDLE = b'"idle"   '  # as wide as '"running"'
#: The name :class:`TestFinisher` is registered under.
_FINISHER = "pytest_abort_finisher"
#: Size of a marker's memory map (grown in these steps for a longer one).
_MAP_SIZE = 4096
#: Each phase's JSON literal, padded to one width.
_PHASE_TEXT = {p: ('"%s"' % p).ljust(10) for p in ("setup", "call", "teardown")}
_PHASES = {p: text.encode() for p, text in _PHASE_TEXT.items()}
#: The start of a marker as a test's setup starts, up to its test name.
_START = '{"status": "running", "phase": "setup"   , "test_name": '



def _timeout_of(item: pytest.Item) -> Optional[float]:
    mark = item.get_closest_marker("timeout")
    if mark is None:
        return None
    value = mark.kwargs.get("timeout", mark.args[0] if mark.args else None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class _LocalClock:
    """``datetime.now().isoformat(timespec="microseconds")``, at a fraction
    of its cost: the local date and time of the current second are
    formatted once per second (the offset from UTC changes only at a
    second's boundary), the microseconds every call."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
        # (t - second) < 1, so the microseconds are below 10**6.
        return "%s.%06d" % (self.prefix, int((t - second) * 1e6))


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
    """Marker kept open and updated in place, as stores into a shared memory
    map of the file (no system call per update; the page cache the wrapper
    reads is the mapping itself), or one ``pwrite`` each where the file
    cannot be mapped.

    Used under the wrapper, which reads a marker only when its writer is
    stopped (ptrace) or dead. Shorter contents are padded with spaces (valid
    JSON whitespace); the rest of the mapped size is NULs, which readers
    strip. The file's blocks are allocated up front, so a store never
    faults on a full disk."""

    def __init__(self, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.size = 0  # length of the longest content written (padding)
        self.fd: Optional[int] = None
        self.map: Optional[mmap.mmap] = None
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            self._failed(e)
            return
        self._map(_MAP_SIZE)

    def _failed(self, e: OSError) -> None:
        self.problems.report("marker", f"cannot write the marker {self.path}: {e}; a crash cannot be attributed")

    def _map(self, size: int) -> None:
        old, self.map = self.map, None
        if old is not None:
            old.close()
        self.map = map_allocated(self.fd, size)  # None: pwrite instead

    def _put(self, data: bytes) -> None:
        n = len(data)
        if n < self.size:
            data = data.ljust(self.size)
        else:
            self.size = n
        m = self.map
        if m is not None:
            if self.size > len(m):
                self._map(-(-self.size // _MAP_SIZE) * _MAP_SIZE)
                return self._put(data)
            m[: len(data)] = data
        elif self.fd is not None:
            try:
                os.pwrite(self.fd, data, 0)
            except OSError as e:
                self._failed(e)

    def start(self, payload: str) -> None:
        """Writes the marker of a test whose protocol starts."""
        self._put(payload.encode("utf-8", "surrogateescape"))

    def phase(self, phase: str) -> None:
        """Overwrites the phase field only."""
        m = self.map
        if m is not None:
            m[_PHASE_OFFSET : _PHASE_OFFSET + 10] = _PHASES[phase]
        elif self.fd is not None:
            try:
                os.pwrite(self.fd, _PHASES[phase], _PHASE_OFFSET)
            except OSError as e:
                self._failed(e)

    def finish(self) -> None:
        """Marks the process idle: the status of the marker of the test
        that ended becomes "idle" (the rest is left as it was)."""
        m = self.map
        if m is not None and self.size:
            m[_STATUS_OFFSET : _STATUS_OFFSET + 9] = _IDLE
        elif self.size and self.fd is not None:
            try:
                os.pwrite(self.fd, _IDLE, _STATUS_OFFSET)
            except OSError as e:
                self._failed(e)
        else:
            self._put(b'{"status": "idle"}')

    def reset(self) -> None:
        """Empties the file (in a forked child: an earlier child's longer
        marker must not show through the padding of this one's)."""
        if self.map is not None:
            # Not ftruncate to 0: a store into a mapping past the file's end
            # would fault. NULs, which readers strip, read as no marker; all
            # of them, since the earlier child's length is not known here
            # (and a longer file, grown by that child, is cut to the map).
            n = len(self.map)
            try:
                if os.fstat(self.fd).st_size > n:
                    os.ftruncate(self.fd, n)
            except OSError as e:
                self._failed(e)
            self.map[:] = bytes(n)
            self.size = 0
            return
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
            self.size = 0
        except OSError as e:
            self._failed(e)

    def close(self) -> None:
        """Unmaps and closes the file (the marker stays, saying idle)."""
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError as e:
                self._failed(e)
            self.fd = None


class MarkerWriter:
    """Plugin object: the marker of the test this process runs, with the
    phase it is in. Registered when a marker path is configured, in a
    process that runs tests (not an xdist controller, whose report hooks
    carry its workers' tests).

    Under the wrapper it also drives the process's
    :class:`~pytest_abort._journal.TestJournal` (``tests``): its per-test
    hooks are called from these, so that each phase costs one hook call
    for both jobs instead of one each."""

    def __init__(self, config: pytest.Config, path: str, in_place: bool, problems: Problems, tests: Any = None) -> None:
        self.marker = InPlaceMarker(path, problems) if in_place else AtomicMarker(path, problems)
        # Only under the wrapper's watchdog do markers carry the test's own
        # timeout mark (looking it up costs a walk over the node chain).
        self.watch_marks = bool(os.environ.get(ENV_WATCH_MARKS))
        self.worker = worker_id(config)
        #: The TestJournal this writer drives (None: markers only).
        self.tests = tests
        self.clock = _LocalClock()
        self._format_tail()

    def forked(self) -> None:
        """In a child the fork server forked: a fresh marker, whose constant
        part holds this process's pid."""
        self.marker.reset()
        self._format_tail()

    def _format_tail(self) -> None:
        """Formats the part of every marker that never changes."""
        self.tail = ', "pid": %d, "gpu_id": %s, "worker": %s' % (
            os.getpid(),
            q(gpu_id_from_env()),
            q(self.worker),
        )

    # The per-test path is kept lean (issue 12): two hook implementations
    # (the setup hook and the report hook pytest calls anyway; no protocol
    # wrapper), the marker's JSON built by one f-string from constant parts
    # and C-encoded string literals, phase changes and the end of a test
    # as stores at fixed offsets, and the journal's done line written from
    # the teardown report.

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item) -> None:
        """Writes the marker as the test's setup starts (a hard crash from
        here to its teardown report leaves it)."""
        nodeid = item.nodeid
        quoted = _encode(nodeid)
        timeout = "null"
        if self.watch_marks:
            seconds = _timeout_of(item)
            timeout = "null" if seconds is None else repr(seconds)
        self.marker.start(
            f'{_START}{_encode(item.name)}, "nodeid": {quoted}, "start_time": "{self.clock.now()}"'
            f'{self.tail}, "timeout": {timeout}}}'
        )
        tests = self.tests
        if tests is not None:
            tests.started_nodeid = nodeid
            tests.quoted_nodeid = quoted
            if tests.pending_setup:
                tests.pytest_runtest_setup(item)
                if tests.defer_to_finish and not item.config.pluginmanager.has_plugin(_FINISHER):
                    item.config.pluginmanager.register(TestFinisher(self), _FINISHER)

    def pytest_runtest_logreport(self, report) -> None:
        """After each phase: the marker names the phase that starts now,
        and says idle after the teardown. Under the wrapper it also gathers
        the test's reports, as :meth:`TestJournal.pytest_runtest_logreport`
        does (inlined: the per-test path), and journals the test from its
        teardown report, unless report plugins' entries are to be taken
        with it once every plugin saw that report (then
        :class:`TestFinisher` does, from ``pytest_runtest_logfinish``)."""
        when = report.when
        tests = self.tests
        if when == "call":
            if type(report) is pytest.TestReport:  # not a subtest's report (pytest-subtests)
                self.marker.phase("teardown")
            if tests is not None:
                tests.reports.append(report)
        elif when == "setup":
            # Teardown comes straight after a setup that did not pass.
            self.marker.phase("call" if report.outcome == "passed" else "teardown")
            if tests is not None:
                tests.reports = [report]
        elif tests is None:
            self.marker.finish()
        else:
            tests.reports.append(report)
            if not tests.defer_to_finish:
                # Journaled, then idle: a crash in between still names the test.
                tests.pytest_runtest_logfinish()
                self.marker.finish()


class TestFinisher:
    """Plugin object registered beside a :class:`MarkerWriter` where report
    plugins' per-test entries go into the journal: journals each test after
    its teardown report went through every plugin (pytest-html's report hook
    is trylast), then marks the process idle."""

    __test__ = False  # not a test class, whatever pytest's python_classes say

    def __init__(self, writer: MarkerWriter) -> None:
        self.writer = writer

    def pytest_runtest_logfinish(self) -> None:
        """Journals the test, then says idle."""
        writer = self.writer
        if writer.tests is not None:
            writer.tests.pytest_runtest_logfinish()
            writer.marker.finish()

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config) -> None:
        """Closes the marker."""
        self.marker.close()
