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

from ._common import ENV_WATCH_MARKS, Problems, q, worker_id
from .crash_file import gpu_id_from_env

_PHASE_OFFSET = len('{"phase": ')
#: Size of a marker's memory map (grown in these steps for a longer one).
_MAP_SIZE = 4096
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
        return "%s.%06d" % (self.prefix, min(int((t - second) * 1e6), 999999))


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
        try:
            os.posix_fallocate(self.fd, 0, size)
            self.map = mmap.mmap(self.fd, size)
        except (OSError, ValueError, AttributeError):
            self.map = None  # a file system without fallocate/mmap: pwrite

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
        """Marks the process idle."""
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
        self.tail = ', "status": "running", "pid": %d, "gpu_id": %s, "worker": %s' % (
            os.getpid(),
            q(gpu_id_from_env()),
            q(self.worker),
        )

    # The per-test path is kept lean: it builds the marker's JSON from
    # constant parts and C-encoded string literals instead of json.dumps,
    # starts it from the first hook of the test's setup (no protocol
    # wrapper) and follows the phases from the report hook pytest calls
    # anyway.

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item) -> None:
        """Writes the marker as the test's setup starts (a hard crash from
        here to its teardown report leaves it)."""
        timeout = _timeout_of(item) if self.watch_marks else None
        self.marker.start(
            '{"phase": "setup"   , "test_name": %s, "nodeid": %s, "start_time": "%s"%s, "timeout": %s}'
            % (
                q(item.name),
                q(item.nodeid),
                self.clock.now(),
                self.tail,
                "null" if timeout is None else repr(timeout),
            )
        )
        if self.tests is not None:
            self.tests.pytest_runtest_setup(item)

    def pytest_runtest_logreport(self, report) -> None:
        """After each phase: the marker names the phase that starts now,
        and says idle after the teardown (under the wrapper: once the test
        is journaled, see pytest_runtest_logfinish)."""
        when = report.when
        if when == "setup":
            # Teardown comes straight after a setup that did not pass.
            self.marker.phase("call" if report.outcome == "passed" else "teardown")
        elif when == "call":
            if type(report) is pytest.TestReport:  # not a subtest's report (pytest-subtests)
                self.marker.phase("teardown")
        elif when == "teardown" and self.tests is None:
            self.marker.finish()
        if self.tests is not None:
            self.tests.pytest_runtest_logreport(report)

    def pytest_runtest_logfinish(self) -> None:
        """Under the wrapper, after the test's last report went through
        every plugin: journals the test, then says idle (a crash in
        between still names the test)."""
        if self.tests is not None:
            self.tests.pytest_runtest_logfinish()
            self.marker.finish()

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config) -> None:
        """Closes the marker."""
        self.marker.close()
