"""The xdist controller's part: gives each worker its marker path (and the
wrapper's state), and when a worker dies, says which test it took down.

PYTEST_DONT_REWRITE: no assertions here to rewrite (see :mod:`pytest_abort.plugin`).
"""

from __future__ import annotations

import json
import os
import select
from typing import Optional

import pytest

from ._common import ENV_CRASHED_TESTS_LOG, OPT_LAST_RUNNING_FILE, WORKERINPUT_WRAP, Problems, marker_dir
from ._journal import Journal
from ._poison import WORKEROUTPUT_POISONED
from .crash_file import append_crash_to_jsonl, check_for_crash_file

#: What the wrapper's crash info adds to xdist's crash report, in order.
_CRASH_INFO_LINES = (
    ("signal_name", "signal"),
    ("si_code", "si_code"),
    ("fault_addr", "fault address"),
    ("location", "location"),
    ("peak_rss_kb", "peak RSS (KiB)"),
)


class XdistController:
    """Plugin object of a pytest process that may start xdist workers.

    Without the wrapper, a dead worker's surviving marker goes to the crash
    log (``PYTEST_ABORT_CRASHED_TESTS_LOG``), as the original does. Under the
    wrapper, the worker's death is journaled, and the wrapper's crash info
    (signal, fault address, stack) goes into the report xdist makes."""

    def __init__(
        self,
        config: pytest.Config,
        wrap_state: Optional[str],
        run: str,
        journal: Optional[Journal],
        problems: Problems,
    ) -> None:
        self.config = config
        self.wrap_state = wrap_state
        self.run = run
        self.journal = journal
        self.problems = problems

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        """Passes the wrapper's state and the worker's marker path to a new
        worker (in ``workerinput``)."""
        if self.wrap_state is not None:
            node.workerinput[WORKERINPUT_WRAP] = self.wrap_state
        folder = marker_dir(self.config)
        if not folder:
            return
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            self.problems.report("marker-dir", f"cannot create the marker folder {folder}: {e}")
            return
        node.workerinput[OPT_LAST_RUNNING_FILE] = os.path.join(folder, f"last_running_{node.gateway.id}.json")

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        """A worker went down: journal it (wrapper) or log its marker's test
        as crashed (no wrapper). A worker that ended because a test poisoned
        it is retired instead (see :meth:`_retire`)."""
        if not error:
            workeroutput = getattr(node, "workeroutput", None)
            if isinstance(workeroutput, dict) and workeroutput.get(WORKEROUTPUT_POISONED):
                self._retire(node, workeroutput)
            return
        self._hold_dead_peers(node)
        self._count_toward_maxfail()
        workerinput = getattr(node, "workerinput", None)
        path = workerinput.get(OPT_LAST_RUNNING_FILE) if isinstance(workerinput, dict) else None
        worker = node.gateway.id
        if self.journal is not None:
            self.journal.write(
                {"ev": "worker_down", "worker": worker, "error": str(error)[:2000], "marker": self._read_marker(path)}
            )
            return
        crash_log = os.environ.get(ENV_CRASHED_TESTS_LOG)
        if not crash_log or not path:
            return
        info = check_for_crash_file(path, min_duration=0.0)
        if info:
            info["worker"] = worker
            try:
                append_crash_to_jsonl(crash_log, info, source=f"xdist:{worker}")
            except OSError as e:
                self.problems.report("crash-log", f"cannot append to the crash log {crash_log}: {e}")

    def _retire(self, node, workeroutput: dict) -> None:
        """A worker stopped after a test poisoned its device context (see
        :mod:`pytest_abort._poison`): its tests not yet run go back to the
        scheduler and a fresh worker takes them, as xdist does for a
        worker that died (``DSession.worker_errordown``), but nothing is
        reported crashed, no restart counts toward ``--max-worker-restart``,
        and the session does not stop for the worker's ``shouldstop``.

        Called from ``DSession.worker_workerfinished`` before it reads
        ``shouldstop`` and removes the node from the scheduler."""
        if str(workeroutput.get("shouldstop") or "").startswith("pytest-abort: "):
            workeroutput["shouldstop"] = False
        dsession = self.config.pluginmanager.getplugin("dsession")
        sched = getattr(dsession, "sched", None)
        if sched is None or node not in sched.nodes:
            return
        self._hold_dead_peers(node)
        retire = getattr(sched, "retire_node", None)
        if retire is not None:
            retire(node)  # the scope schedulers (see _sched): every pending test back, none crashed
            first = None
        else:
            # remove_node hands every pending test but the first back to the
            # scheduler (it takes the first for the one a dead worker crashed in).
            first = sched.remove_node(node)
        if first is not None:
            try:
                sched.mark_test_pending(first)
            except NotImplementedError:
                # loadscope/loadfile/loadgroup requeue the whole unfinished
                # work unit, this test included; --dist each cannot.
                if not hasattr(sched, "workqueue"):
                    dist = self.config.getvalue("dist")
                    self.problems.report(
                        "poison-requeue",
                        f"--dist {dist} cannot give {first} to a fresh worker; pytest-abort-wrap runs it afterwards",
                    )
        try:
            # The poisoned process ends now, not at session end, and before
            # its replacement starts (which then finds its GPU slot free):
            # execnet's own way to end a gateway, as Group.terminate does.
            node.gateway.exit()
            node.gateway.join(timeout=10)
        except Exception as e:  # noqa: BLE001 - execnet's errors vary; the session goes on
            self.problems.report("poison-exit", f"cannot end the poisoned worker {node.gateway.id}: {e}")
        if not sched.tests_finished:
            # As worker_errordown: a fresh worker, even when a shutdown was
            # already triggered (it would otherwise be shut down at once).
            dsession.shuttingdown = False
            dsession._clone_node(node)

    def _hold_dead_peers(self, down) -> None:
        """Before xdist hands the tests of the worker `down` to the others
        (``sched.remove_node`` sends them at once), marks every other worker
        that is already dead as shutting down, so that none is sent tests.

        xdist learns that a worker died in that worker's receiver thread,
        which needs the GIL the main thread holds while it handles the first
        death: a second worker that died close by still looks alive to the
        scheduler, sending to it raises ``OSError: cannot send (already
        closed?)``, and the session ends in an INTERNALERROR with tests
        unrun. ``node.shutdown()`` is xdist's own way to mark a worker so
        (it tolerates the dead pipe); the worker's death is handled as
        usual when its event comes."""
        dsession = self.config.pluginmanager.getplugin("dsession")
        nodes = getattr(getattr(dsession, "sched", None), "nodes", None) or ()
        for other in list(nodes):
            if other is not down and not other.shutting_down and self._is_gone(other):
                other.shutdown()

    def _is_gone(self, node) -> bool:
        """True when the worker `node` is dead or dying: the wrapper saw it
        die (its crash info, written at the worker's exit stop, before its
        pipes close), or the pipe xdist sends it commands on has no reader
        any more."""
        worker = getattr(getattr(node, "gateway", None), "id", None)
        if self.wrap_state is not None and worker:
            if os.path.exists(os.path.join(self.wrap_state, "crashinfo", f"r{self.run}-{worker}.json")):
                return True
        try:
            fd = node.gateway._io.outfile.fileno()  # execnet's pipe to the worker
        except (AttributeError, OSError, ValueError):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))

    def _count_toward_maxfail(self) -> None:
        """A worker that died counts as a failed test toward --maxfail/-x, as
        in a serial run (xdist counts only the reports its workers sent)."""
        dsession = self.config.pluginmanager.getplugin("dsession")
        maxfail = getattr(dsession, "maxfail", 0)
        if not maxfail or not isinstance(getattr(dsession, "countfailures", None), int):
            return
        dsession.countfailures += 1
        if dsession.countfailures >= maxfail and not dsession.shouldstop:
            dsession.shouldstop = f"stopping after {dsession.countfailures} failures"

    def _read_marker(self, path: Optional[str]):
        if not path:
            return None
        try:
            with open(path, encoding="utf-8") as f:
                return json.loads(f.read().strip(" \0\n"))
        except FileNotFoundError:
            return None  # the worker died before its first test
        except (OSError, ValueError) as e:
            self.problems.report("marker-read", f"cannot read the marker {path} of a dead worker: {e}")
            return None

    @pytest.hookimpl(hookwrapper=True, optionalhook=True)
    def pytest_xdist_make_scheduler(self, config, log):
        """Under ``--dist loadscope``/``loadfile``/``loadgroup``, xdist's
        scheduler with the repairs of :mod:`pytest_abort._sched`: a test that
        crashed its worker is not started again, and a worker gets work only
        once its collection arrived. Other schedulers stay as made."""
        outcome = yield
        sched = outcome.get_result()
        if sched is not None:
            from ._sched import run_once

            outcome.force_result(run_once(sched, config, log))

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem, report, sched) -> None:
        """Adds the wrapper's crash info to the report of the test a worker's
        crash took down.

        The wrapper saw the worker die (ptrace exit stop) before this
        controller did, and left what it knows; it goes into the report that
        xdist and the controller's report plugins show."""
        if self.wrap_state is None:
            return
        node = getattr(report, "node", None)
        worker = getattr(getattr(node, "gateway", None), "id", None)
        if not worker:
            return
        path = os.path.join(self.wrap_state, "crashinfo", f"r{self.run}-{worker}.json")
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
        except FileNotFoundError:
            return  # the wrapper has nothing to add (e.g. --no-ptrace)
        except (OSError, ValueError) as e:
            self.problems.report("crashinfo", f"cannot read the wrapper's crash info {path}: {e}")
            return
        if info.get("nodeid") != crashitem:
            return
        lines = [str(report.longrepr), "", "pytest-abort: " + str(info.get("reason", ""))]
        for key, label in _CRASH_INFO_LINES:
            if info.get(key) not in (None, ""):
                lines.append(f"  {label}: {info[key]}")
        if info.get("traceback"):
            lines += ["", info["traceback"].rstrip()]
        report.longrepr = "\n".join(lines)
