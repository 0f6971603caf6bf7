"""Resume without collecting the suite again: the fork server.

Under ``pytest-abort-wrap --retry-mode resume`` the run plan says
``"fork": true``. A serial pytest process (not an xdist controller or
worker) then collects as usual and, where forking is safe, runs no test
itself: it forks a child that runs the tests, waits for it, and when the
child dies in the middle of a test, forks a new child for the tests that are
left. A crash then costs one ``fork`` instead of a new pytest process that
imports and collects the whole suite again. The child that reaches the end of
the session writes the reports and the terminal summary; the parent exits
with its status.

Safe to fork means: the process has one thread (``/proc/self/task``), no GPU
driver is mapped (``libcuda``, ``libamdhip64``, ``libhsa-runtime``,
``libnvidia-*`` in ``/proc/self/maps``: their state does not survive a fork),
and the wrapper traces the process with ptrace, so it sees each child's exit
(and reads its marker) before the parent can fork the next child, which
rewrites the marker. Otherwise the process runs the tests itself and the
wrapper resumes in a fresh pytest process (see ``ignore`` in the plan: files
with nothing left are not collected again).

Each child is its own pytest process for the wrapper: its own journal
(``r<run>-<pid>.jsonl``, with ``forked_from``), marker contents with its pid,
its own fatal-error dump file. The parent's journal says ``fork_server``, so
the wrapper follows its forks; it ends with ``end`` and the child's status.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest

from ._journal import Journal, WrapSession

#: Shared libraries of GPU drivers: a process that mapped one is not forked.
GPU_LIBRARIES = ("libcuda", "libamdhip64", "libhsa-runtime", "libnvidia-")

_FORWARDED = (signal.SIGTERM, signal.SIGHUP)


def fork_unsafe(proc: str = "/proc/self") -> Optional[str]:
    """Why the process at ``proc`` must not become a fork server, or None
    when it may: more than one thread, a GPU driver mapped, or no ptrace
    supervisor (``TracerPid`` 0)."""
    try:
        threads = len(os.listdir(os.path.join(proc, "task")))
    except OSError as e:
        return f"cannot count its threads: {e}"
    if threads != 1:
        return f"it has {threads} threads"
    try:
        with open(os.path.join(proc, "maps"), encoding="utf-8", errors="replace") as f:
            for line in f:
                name = line.rstrip("\n").rpartition("/")[2]
                if name.startswith(GPU_LIBRARIES):
                    return f"a GPU driver is loaded ({name})"
        with open(os.path.join(proc, "status"), encoding="utf-8") as f:
            tracer = next((ln.split()[1] for ln in f if ln.startswith("TracerPid:")), "0")
    except (OSError, IndexError) as e:
        return f"cannot read its memory map or status: {e}"
    if tracer == "0":
        return "it is not supervised with ptrace"
    return None


def _child_outcome(journal_path: str) -> Tuple[Set[str], int, bool]:
    """From a child's journal: the tests it finished, how many of them
    failed, and whether its session reached its end (``finish``)."""
    done: Set[str] = set()
    failures = 0
    finished = False
    try:
        with open(journal_path, "rb") as f:
            # (NULs: the unused rest of a killed child's mapped journal.)
            lines = f.read().replace(b"\0", b"\n").split(b"\n")
    except OSError:
        return done, failures, finished
    for line in lines:
        if line.startswith(b'{"ev":"done"'):
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn last line
            done.add(event["nodeid"])
            failures += event.get("outcome") in ("failed", "error")
        elif line.startswith(b'{"ev":"finish"'):
            finished = True
    return done, failures, finished


def _crashed_test(marker_path: Optional[str], pid: int) -> Optional[str]:
    """The test the marker says process ``pid`` was running, if any."""
    if not marker_path:
        return None
    try:
        with open(marker_path, encoding="utf-8", errors="surrogateescape") as f:
            marker = json.loads(f.read().strip(" \0\n"))
    except (OSError, ValueError):
        return None
    if marker.get("status") == "running" and marker.get("pid") == pid:
        return marker.get("nodeid")
    return None


class ForkServer:
    """Plugin object of a serial pytest process under the wrapper whose run
    plan allows resuming by fork (see the module's docstring)."""

    def __init__(self, config: pytest.Config, wrap: WrapSession, journal: Journal, marker: Any) -> None:
        self.config = config
        self.wrap = wrap
        self.journal = journal
        #: The MarkerWriter plugin object (None without a marker path).
        self.marker = marker
        self.child: Optional[int] = None
        self.stopping = False

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Optional[bool]:
        """In the parent: serve forks until a child ends the session, then
        exit with its status. In a child: None, so pytest's own loop runs
        the tests left."""
        if self.child == 0:
            return None
        opt = self.config.option
        if (session.testsfailed and not opt.continue_on_collection_errors) or opt.collectonly:
            return None  # pytest stops before running tests anyway
        why = fork_unsafe()
        if why is not None:
            self.journal.write({"ev": "fork_server", "serving": False, "why": why})
            self._declined()
            return None
        self.journal.write({"ev": "fork_server", "serving": True})
        return self._serve(session)

    def _declined(self) -> None:
        """Tells the wrapper (a file beside the journal) that this process
        runs its tests itself: its children are tests' own subprocesses."""
        path = os.path.join(self.wrap.state, "journal", f"r{self.wrap.run}-{os.getpid()}.no-fork")
        try:
            with open(path, "w"):
                pass
        except OSError:
            pass  # the wrapper then follows them too; only slower

    def _serve(self, session: pytest.Session) -> None:
        items = list(session.items)
        maxfail = int(getattr(self.config.option, "maxfail", 0) or 0)
        # The wrapper's --max-runs: each child counts as one run.
        max_forks = int(self.wrap.plan.get("max_forks") or 0)
        failures = forks = 0
        ended: Set[str] = set()  # tests finished or crashed in earlier children
        marker_path = getattr(getattr(self.marker, "marker", None), "path", None)
        # Nothing the parent printed may be printed again by a child, and a
        # child's garbage collector need not touch (and copy) the pages of
        # everything collection made.
        gc.freeze()
        handlers = self._parent_signals()
        while True:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                self._become_child(session, items, handlers, ended)
                self.wrap.add_prior_failures(failures)
                return None
            self.child = pid
            forks += 1
            status = self._wait(pid)
            journal = os.path.join(self.wrap.state, "journal", f"r{self.wrap.run}-{pid}.jsonl")
            done, failed, finished = _child_outcome(journal)
            if finished or self.stopping:
                self._exit(status)  # the session ended (or is being stopped)
            crashed = _crashed_test(marker_path, pid)
            left = [it for it in items if it.nodeid not in done and it.nodeid != crashed]
            ended.update(done)
            if crashed is not None:
                ended.add(crashed)
            failures += failed + (crashed is not None)
            if len(left) == len(items) or (maxfail and failures >= maxfail) or (max_forks and forks >= max_forks):
                self._exit(status)  # no progress, pytest would have stopped, or no runs left
            items = left
            self._discard_captured()
            self.journal.write({"ev": "fork_server", "child": pid, "crashed": crashed, "left": len(items)})

    def _parent_signals(self) -> Dict[int, Any]:
        """The parent ignores SIGINT (the child gets it from the terminal or
        the wrapper, which signal the process group, and ends the session)
        and passes SIGTERM and SIGHUP on to the child."""
        handlers = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
        for sig in _FORWARDED:
            handlers[sig] = signal.signal(sig, self._forward)
        return handlers

    def _forward(self, signum: int, _frame: Any) -> None:
        self.stopping = True
        if self.child:
            try:
                os.kill(self.child, signum)
            except OSError:
                pass

    @staticmethod
    def _wait(pid: int) -> int:
        while True:
            try:
                return os.waitpid(pid, 0)[1]
            except ChildProcessError:
                return 0
            except InterruptedError:
                continue

    def _become_child(
        self, session: pytest.Session, items: List[pytest.Item], handlers: Dict[int, Any], ended: Set[str]
    ) -> None:
        parent = os.getppid()
        self.child = 0
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        _die_with_parent(parent)
        self.wrap.forked(parent)
        if self.marker is not None:
            self.marker.forked()
        self.journal.write({"ev": "collected", "nodeids": [it.nodeid for it in items]})
        session.items[:] = items
        # The terminal's progress percentage counts what earlier children ran.
        progress = getattr(self.config.pluginmanager.getplugin("terminalreporter"), "_progress_nodeids_reported", None)
        if isinstance(progress, set):
            progress.update(ended)

    def _discard_captured(self) -> None:
        """What the dead child's test wrote to the captured stdout/stderr
        (shared files) must not show up in the next child's first test."""
        capman = self.config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            try:
                capman.read_global_capture()
            except Exception:  # noqa: BLE001 - no capture, or in a state without one
                pass

    def _exit(self, status: int) -> None:
        """Ends the parent with the status of its last child (128+N for a
        signal), without pytest's session end: the child did that."""
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            code = 128 - code
        self.journal.write({"ev": "end"})
        self.journal.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with_parent(parent: int) -> None:
    """A child must not outlive the fork server (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)  # the parent died before prctl: nobody waits for this child
