"""The wrapper journal: what a pytest process under ``pytest-abort-wrap``
tells the wrapper (collected files and tests, finished tests, where its
reports went), and the wrapper's run plan it applies.

Two plugin objects share one :class:`Journal` file:
:class:`WrapSession` (session, collection, plan, reports, fatal-error dumps)
and :class:`TestJournal` (one ``done`` line per finished test), which only a
process that runs tests registers.

PYTEST_DONT_REWRITE: no assertions here to rewrite (see :mod:`pytest_abort.plugin`).
"""

from __future__ import annotations

import json
import mmap
import os
import sys
import time
from typing import Any, Dict, List, Optional

import pytest

from ._common import ENV_DUMP_SIGNAL, Problems, encode_ascii, map_allocated, q, worker_id

_TEXT_LIMIT = 65536

#: The report files the wrapper takes over, one row per format: the kind
#: (the journal's key), the pytest option holding the path, and the file
#: extension. JSON also needs its ``--json-report`` switch.
_REPORT_FORMATS = (
    ("json", "json_report_file", "json"),
    ("html", "htmlpath", "html"),
    ("csv", "csv_path", "csv"),
    ("junit", "xmlpath", "xml"),
)


def _cache_dir(config) -> Optional[str]:
    """pytest's cache folder, or ``None`` when the cache plugin is off (the
    wrapper then leaves the ``--lf`` cache alone)."""
    if not config.pluginmanager.has_plugin("cacheprovider"):
        return None
    try:
        from _pytest.cacheprovider import Cache

        return str(Cache.cache_dir_from_config(config, _ispytest=True))
    except Exception:  # an older or newer pytest: no cache update
        return None


def _csv_columns(opt) -> List[str]:
    """pytest-csv's column ids in order, read from its options as it reads
    them (``--csv-columns`` then ``--csv-add-columns``, comma-separated;
    a repeated id keeps its first place): the merged CSV's header is built
    from them when no run wrote one."""
    ids: List[str] = []
    for group in list(getattr(opt, "csv_columns", None) or []) + list(getattr(opt, "csv_add_columns", None) or []):
        for cid in str(group).split(","):
            if cid.strip() and cid.strip() not in ids:
                ids.append(cid.strip())
    return ids


def _show_final_paths(tr, paths: Dict[str, str]):
    """Makes ``tr.write_sep`` and ``tr.write_line`` name each report at the
    path the user asked for instead of its redirected copy (as a path or,
    as pytest-html writes it, a file URI); returns the undo."""
    from pathlib import Path

    pairs = [(Path(a).as_uri(), Path(b).as_uri()) for a, b in paths.items()] + list(paths.items())

    def final(text):
        if isinstance(text, str):
            for copy, requested in pairs:
                text = text.replace(copy, requested)
        return text

    write_sep, write_line = tr.write_sep, tr.write_line
    tr.write_sep = lambda sep, title=None, *a, **kw: write_sep(sep, final(title), *a, **kw)
    tr.write_line = lambda line, *a, **kw: write_line(final(line), *a, **kw)

    def restore() -> None:
        tr.write_sep, tr.write_line = write_sep, write_line

    return restore


def read_plan_file(state: str) -> Dict[str, Any]:
    """The wrapper's run plan (``<state>/plan.json``); raises OSError or
    ValueError when it cannot be read."""
    with open(os.path.join(state, "plan.json"), encoding="utf-8") as f:
        plan = json.load(f)
    if not isinstance(plan, dict):
        raise ValueError("not a JSON object")
    return plan


def serial_phase(config: pytest.Config, state: str) -> None:
    """In the multi-GPU phase of ``--multi-gpu-marker`` (the plan says so),
    this pytest runs its tests itself, whatever ``-n`` it was given: as
    xdist does for ``--pdb``, no workers (numprocesses 0, dist "no"). Called
    before xdist's ``pytest_configure`` decides to start them."""
    try:
        phase = (read_plan_file(state).get("multi_gpu") or {}).get("phase")
    except (OSError, ValueError, AttributeError):
        return  # WrapSession reports an unreadable plan
    if phase == "marked" and hasattr(config.option, "numprocesses"):
        config.option.numprocesses = 0
        config.option.dist = "no"
        config.option.tx = []


#: The journal's memory map grows in steps of this size; a process killed
#: hard leaves at most this many NULs after its last line.
_JOURNAL_STEP = 256 * 1024


class Journal:
    """Append-only JSONL journal of one pytest process.

    Lines are stored into a shared memory map of the file: no system call
    per line (issue 12's per-test cost), and the stores are the file's page
    cache itself, so a process killed between events leaves every whole
    line it wrote, exactly as one ``write`` per line did. The file's blocks
    are allocated before they are mapped (a store never faults on a full
    disk), in steps of :data:`_JOURNAL_STEP`; the unused rest is NULs,
    which readers skip, and is cut off when the journal is closed. Where
    the file cannot be mapped (no ``fallocate``, full disk), each line is
    one ``write`` at the end of the file.

    A forked child does not write into its parent's journal: it has none
    until it opens its own (:meth:`reopen`)."""

    def __init__(self, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.fd: Optional[int] = None
        self.map: Optional[mmap.mmap] = None
        self.pos = 0  # where the next line goes
        self.in_owner: List[bool] = [True]
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            # After anything already there (a process of an earlier run
            # with the same pid): nothing is lost.
            self.pos = os.fstat(self.fd).st_size
        except OSError as e:
            self._failed(e)
            return
        self._map(self.pos + 1)
        # Emptied in a forked child. (A list's own method: a Python function
        # registered here would keep its module, and all it refers to,
        # alive until the interpreter's very end, where collecting it all
        # costs several milliseconds at every pytest exit.)
        os.register_at_fork(after_in_child=self.in_owner.clear)

    def _failed(self, e: Exception) -> None:
        self.problems.report(
            "journal", f"cannot write the journal {self.path}: {e}; the wrapper will miss this process's results"
        )

    def _map(self, need: int) -> None:
        """Maps the file with room for ``need`` bytes; on failure, the file
        ends at the last line and lines are written instead."""
        old, self.map = self.map, None
        if old is not None:
            old.close()
        self.map = map_allocated(self.fd, -(-need // _JOURNAL_STEP) * _JOURNAL_STEP)
        if self.map is None:
            try:
                os.ftruncate(self.fd, self.pos)  # no NULs after the last line
            except OSError:
                pass

    def write(self, event: Dict[str, Any]) -> None:
        """Appends one event (not on the per-test path: ``json.dumps``)."""
        try:
            self.write_line(json.dumps(event, separators=(",", ":"), default=str) + "\n")
        except (ValueError, TypeError) as e:
            self._failed(e)

    def write_line(self, line: str) -> None:
        """Appends one ready-made JSON line (ASCII, newline-terminated)."""
        data = line.encode("ascii", "backslashreplace")
        m = self.map
        if m is not None and self.in_owner:
            pos = self.pos
            end = pos + len(data)
            if end <= len(m):
                m[pos:end] = data
                self.pos = end
                return
            self._map(end)
            return self.write_line(line)
        if self.fd is None:
            return
        if not self.in_owner:
            self._detach()  # a forked child: not its journal
            return
        try:
            self.pos += os.pwrite(self.fd, data, self.pos)
        except OSError as e:
            self._failed(e)

    def reopen(self, path: str) -> None:
        """Continues in another file (a forked child's own journal)."""
        self._detach()
        self.__init__(path, self.problems)

    def _detach(self) -> None:
        """In a forked child: lets go of the parent's journal (unmaps it and
        closes this process's descriptor), leaving the file as it is."""
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def close(self) -> None:
        """Closes the file, cutting off the unused rest of the map."""
        if self.fd is None:
            return
        if not self.in_owner:
            self._detach()  # a forked child: the file is its parent's
            return
        try:
            if self.map is not None:
                self.map.close()
                self.map = None
                os.ftruncate(self.fd, self.pos)
            os.close(self.fd)
        except OSError as e:
            self._failed(e)
        self.fd = None


def _failure_fields(reprcrash: Any, outcome: str, when: str) -> str:
    """The journal fields of a failure pytest located (its ``reprcrash``):
    where it was raised and its whole message, as pytest-json-report's
    ``crash`` and pytest-csv's ``message`` hold them, and the ``message``
    attribute junitxml writes for it (``failed on setup with "..."`` for an
    error; shortened where the running pytest shortens it), so that a
    report the wrapper creates from the journal says what the plugins would
    have."""
    message = str(reprcrash.message)
    junit = message
    if outcome == "error":
        junit = 'failed on %s with "%s"' % ("teardown" if when == "teardown" else "setup", message)
    try:
        from _pytest.junitxml import shorten_message  # pytest 9.1 and later
    except ImportError:
        pass
    else:
        junit = shorten_message(junit)
    try:
        lineno = int(reprcrash.lineno)
    except (TypeError, ValueError):
        lineno = 0
    crash = {"path": str(reprcrash.path), "lineno": lineno, "message": message}
    return ',"reprcrash":' + json.dumps(crash) + ',"junit_message":' + q(junit)


def _clip(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "\n[... truncated by pytest-abort]"


class WrapSession:
    """Plugin object of a pytest process under the wrapper: the journal's
    session and collection events, the run plan (tests to deselect or keep,
    files to skip), report files sent to the state folder, and fatal-error
    dumps sent to a file the wrapper reads."""

    def __init__(
        self,
        config: pytest.Config,
        state: str,
        run: str,
        journal: Journal,
        problems: Problems,
        controller: bool,
        fault_file=None,
    ) -> None:
        self.config = config
        self.state = state
        self.run = run
        self.journal = journal
        self.problems = problems
        self.is_worker = isinstance(getattr(config, "workerinput", None), dict)
        self.deselect: set = set()
        #: Each redirected report copy's path -> the path the user asked for.
        self.report_paths: Dict[str, str] = {}
        self.only: Optional[set] = None
        self.ignore: set = set()
        # Opened when the plugin was imported (to catch crashes before this
        # point), else in pytest_sessionstart.
        self.fault_file = fault_file
        # Deselected tests: all of them, and those the run plan deselected
        # (the rest are the user's own -k/-m/--deselect).
        self.deselected_all = 0
        self.deselected_by_plan = 0
        #: The run plan as read (empty when unreadable).
        self.plan: Dict[str, Any] = {}
        #: Under --multi-gpu-marker: the marker, and whether this run is the
        #: multi-GPU phase (marked tests only) or the first (the rest).
        self.multi_gpu: Optional[tuple] = None
        #: In the first phase: the tests left for the multi-GPU phase.
        self.multi_gpu_left: List[str] = []
        #: Whether count_prior_failures ran (before this process's first test).
        self.prior_counted = False
        self._read_plan()
        #: Whether this process may become a fork server for resume (it then
        #: forks the processes that run the tests; see _resume.py).
        self.fork_server = bool(self.plan.get("fork")) and not controller and not self.is_worker
        journal.write(self._start_event(controller))
        if not self.is_worker:
            self._redirect_reports()

    def _start_event(self, controller: bool, **extra: Any) -> Dict[str, Any]:
        return {
            "ev": "start",
            "pid": os.getpid(),
            "worker": worker_id(self.config),
            "rootdir": str(self.config.rootpath),
            "cache_dir": _cache_dir(self.config),
            # An xdist controller starts the workers, and so may a fork
            # server (the wrapper follows their forks); every other pytest
            # process only starts a test's own subprocesses.
            "xdist_controller": controller,
            "fork_server": self.fork_server,
            # pytest's --maxfail (-x is 1; 0 means no limit): the wrapper
            # counts crashes toward it and stops resuming once it is reached.
            "maxfail": int(getattr(self.config.option, "maxfail", 0) or 0),
            # The interpreter running the tests: the wrapper builds a new
            # pytest-html page from the pytest-html installed there.
            "python": sys.executable,
            **extra,
        }

    def forked(self, parent: int) -> None:
        """In a child the fork server forked to run tests: journal and
        fatal-error dumps go to this process's own files from now on."""
        self.fork_server = False
        self.journal.reopen(os.path.join(self.state, "journal", f"r{self.run}-{os.getpid()}.jsonl"))
        self.journal.write(self._start_event(False, forked_from=parent))
        if self.fault_file is not None:
            try:
                self.fault_file.close()
            except OSError:
                pass
            self.fault_file = None
        self._send_fatal_dumps()

    def _read_plan(self) -> None:
        try:
            plan = read_plan_file(self.state)
        except (OSError, ValueError) as e:
            path = os.path.join(self.state, "plan.json")
            self.problems.report("plan", f"cannot read the run plan {path}: {e}; running every test")
            return
        self.plan = plan
        multi = plan.get("multi_gpu")
        if isinstance(multi, dict) and multi.get("marker"):
            self.multi_gpu = (str(multi["marker"]), multi.get("phase") == "marked")
        self.deselect = set(plan.get("deselect") or ())
        self.ignore = set(plan.get("ignore") or ())
        if plan.get("only") is not None:
            self.only = set(plan["only"])

    def _redirect_reports(self) -> None:
        opt = self.config.option
        requested, redirected = {}, {}
        folder = os.path.join(self.state, "reports", f"r{self.run}")
        for kind, attr, ext in _REPORT_FORMATS:
            path = getattr(opt, attr, None)
            if not path or (kind == "json" and not getattr(opt, "json_report", False)):
                continue
            requested[kind] = os.path.abspath(os.path.expanduser(str(path)))
            redirected[kind] = os.path.join(folder, f"report.{ext}")
            setattr(opt, attr, redirected[kind])
        if requested:
            os.makedirs(folder, exist_ok=True)
            event = {"ev": "reports", "requested": requested, "redirected": redirected}
            if "csv" in requested:
                event["csv_columns"] = _csv_columns(opt)
            self.journal.write(event)
            self.report_paths = {redirected[k]: requested[k] for k in requested}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_terminal_summary(self, terminalreporter):
        """The report plugins' closing lines ("generated xml file: ...")
        name the final report, not this run's copy in the state folder,
        which the wrapper merges into it and deletes."""
        if not self.report_paths:
            yield
            return
        restore = _show_final_paths(terminalreporter, self.report_paths)
        try:
            yield
        finally:
            restore()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session) -> None:
        """After pytest's own faulthandler setup: sends fatal-error dumps (and
        the wrapper's dump signal) to this process's file in the state
        folder; the wrapper attaches it to the crash record and echoes it."""
        self._send_fatal_dumps()

    def _send_fatal_dumps(self) -> None:
        import faulthandler

        path = os.path.join(self.state, "faulthandler", f"r{self.run}-{os.getpid()}.txt")
        try:
            if self.fault_file is None:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self.fault_file = open(path, "w")
            faulthandler.enable(file=self.fault_file, all_threads=True)
            signum = int(os.environ.get(ENV_DUMP_SIGNAL) or 0)
            if signum:
                # chain=True: after the dump the signal's default action
                # (terminate) runs, so a test stuck in C cannot go on to
                # the next test once its stacks are dumped.
                faulthandler.register(signum, file=self.fault_file, all_threads=True, chain=True)
        except (OSError, ValueError, RuntimeError, AttributeError) as e:
            self.problems.report("faulthandler", f"cannot send fatal-error stacks to {path}: {e}")

    def pytest_ignore_collect(self, collection_path, config):
        """Skips the files the run plan says to skip."""
        if self.ignore and str(collection_path) in self.ignore:
            return True
        return None

    def pytest_collectstart(self, collector) -> None:
        """Journals the start of a file's collection (a crash inside it is
        then a collection crash of that file)."""
        if isinstance(collector, pytest.File):
            self.journal.write({"ev": "collect", "nodeid": collector.nodeid, "path": str(collector.path)})

    def pytest_collectreport(self, report) -> None:
        """Journals the end of a file's collection, and a collection report
        that did not pass (a module skipped at import, one that failed to
        import): the report plugins list it as an entry of its own (JUnit's
        "collection skipped"/"collection failure", pytest-json-report's
        ``collectors``, pytest-html's error row), and so does a report the
        wrapper creates. Its text is ``str(report.longrepr)``, as junitxml
        and pytest-json-report write it. Under xdist the workers journal
        their reports and the controller those they forward; the wrapper
        keeps one per node id."""
        if report.fspath and "::" not in report.nodeid:
            self.journal.write({"ev": "collect_end", "nodeid": report.nodeid})
        if report.outcome in ("skipped", "failed"):
            self.journal.write(
                {
                    "ev": "collect_report",
                    "nodeid": report.nodeid,
                    "outcome": report.outcome,
                    "longrepr": _clip(str(report.longrepr)),
                }
            )

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items) -> None:
        """Deselects what the run plan says (after every other plugin chose):
        tests done or crashed, tests not in ``only``, and under
        ``--multi-gpu-marker`` the other phase's tests."""
        if not self.deselect and self.only is None and self.multi_gpu is None:
            return
        keep, dropped = [], []
        for item in items:
            drop = item.nodeid in self.deselect or (self.only is not None and item.nodeid not in self.only)
            if self.multi_gpu is not None:
                marker, marked_phase = self.multi_gpu
                marked = item.get_closest_marker(marker) is not None
                if marked and not marked_phase:
                    self.multi_gpu_left.append(item.nodeid)
                drop = drop or marked != marked_phase
            (dropped if drop else keep).append(item)
        if dropped:
            self.deselected_by_plan += len(dropped)
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    def pytest_deselected(self, items) -> None:
        """Counts every deselection (the user's and the plan's)."""
        self.deselected_all += len(items)

    def pytest_collection_finish(self, session) -> None:
        """Journals the tests this process will run, and how many the user
        and the plan deselected (the merged reports count as one plain run)."""
        self.journal.write(
            {
                "ev": "collected",
                "nodeids": [i.nodeid for i in session.items],
                "user_deselected": self.deselected_all - self.deselected_by_plan,
                "plan_deselected": self.deselected_by_plan,
                **({"multi_gpu": self.multi_gpu_left} if self.multi_gpu and not self.multi_gpu[1] else {}),
            }
        )

    def count_prior_failures(self, session) -> None:
        """Called once, before the first test (by :class:`TestJournal`):
        failures and crashes of earlier runs (the plan's "failures") count
        toward --maxfail, as in one plain run. Not earlier: pytest reads a
        non-zero count before its test loop as collection errors."""
        self.prior_counted = True
        prior = int(self.plan.get("failures") or 0)
        # Only under --maxfail/-x: the count also sets pytest's exit status,
        # and a rerun whose own tests all passed must exit 0 without it.
        limited = int(getattr(self.config.option, "maxfail", 0) or 0) > 0
        if prior and limited and not self.is_worker:
            session.testsfailed += prior

    def add_prior_failures(self, count: int) -> None:
        """In a fork server's child: the failures of earlier children count
        too (see count_prior_failures)."""
        self.plan["failures"] = int(self.plan.get("failures") or 0) + count

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        """Journals pytest's exit status."""
        self.journal.write({"ev": "finish", "exitstatus": int(exitstatus)})

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config) -> None:
        """Journals the clean end, closes the journal and the dump file."""
        self.journal.write({"ev": "end"})
        self.journal.close()
        if self.fault_file is not None:
            import faulthandler

            try:
                if os.environ.get(ENV_DUMP_SIGNAL):
                    faulthandler.unregister(int(os.environ[ENV_DUMP_SIGNAL]))
                self.fault_file.close()
            except (OSError, ValueError, RuntimeError) as e:
                self.problems.report("faulthandler-close", f"cannot close {self.fault_file.name}: {e}")
            self.fault_file = None


class ReportEntries:
    """What the report plugins of this process wrote for one test, taken from
    them when its protocol ends, so that the wrapper can put exactly those
    entries into a report the process never got to write (it died later).

    Reads the plugins' own per-test state: pytest-json-report's test item,
    pytest-html's result entries, junitxml's ``<testcase>`` elements and
    counters, and pytest-csv's rows. A plugin that is absent or whose state
    looks different is left out; the wrapper then builds that entry from the
    journal's outcome instead.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.json = getattr(getattr(config, "_json_report", None), "_json_tests", None)
        plugins = config.pluginmanager.get_plugins()
        html = next((p for p in plugins if type(p).__module__.startswith("pytest_html") and hasattr(p, "_report")), None)
        self.html = getattr(getattr(html, "_report", None), "data", None)
        self.xml = None
        try:
            from _pytest.junitxml import xml_key

            self.xml = config.stash.get(xml_key, None)
        except ImportError:
            pass
        csv_reporter = getattr(config, "_csv_reporter", None)
        self.csv_rows = getattr(csv_reporter, "_rows", None)
        #: Whether any report plugin's state was found (fixed once read).
        self.is_active = any(x is not None for x in (self.json, self.html, self.xml, self.csv_rows))

    def mark(self) -> tuple:
        """Where the plugins' lists stand before a test."""
        xml = self.xml
        junit = None
        if xml is not None:
            junit = (len(xml.node_reporters_ordered), dict(xml.stats), xml.cnt_double_fail_tests)
        return (junit, len(self.csv_rows) if isinstance(self.csv_rows, list) else None)

    def taken(self, nodeid: str, mark: tuple) -> Dict[str, Any]:
        """The entries written for `nodeid` since `mark`."""
        out: Dict[str, Any] = {}
        try:
            if isinstance(self.json, dict) and nodeid in self.json:
                out["json"] = self.json[nodeid]
            if isinstance(self.html, dict) and self.html.get("tests", {}).get(nodeid):
                out["html"] = self.html["tests"][nodeid]
            junit, csv_at = mark
            if junit is not None:
                import xml.etree.ElementTree as ET

                at, stats, double = junit
                xml = self.xml
                out["junit"] = {
                    "xml": [ET.tostring(r.to_xml(), encoding="unicode") for r in xml.node_reporters_ordered[at:]],
                    "stats": {k: v - stats.get(k, 0) for k, v in xml.stats.items()},
                    "double": xml.cnt_double_fail_tests - double,
                }
            if csv_at is not None:
                # Each row by column id, as pytest-csv keeps it: a column
                # may make several cells (markers_as_columns, ...).
                out["csv"] = [
                    {cid: {h: "" if v is None else str(v) for h, v in col.items()} for cid, col in row.items()}
                    for row in self.csv_rows[csv_at:]
                ]
        except Exception:  # the plugins' internals changed: leave them out
            return {}
        return out


class TestJournal:
    """Plugin object: one ``done`` line per finished test, with its outcome,
    duration, location and (when it did not pass) its longrepr and output
    sections. Used in a process that runs tests (serial, or an xdist
    worker; an xdist controller's reports are its workers', journaled
    there).

    Where the process also keeps a marker, the
    :class:`~pytest_abort._marker.MarkerWriter` calls this object's
    per-test hooks from its own (one hook call per phase does both jobs:
    issue 12's per-test overhead); otherwise it is registered itself."""

    __test__ = False  # not a test class, whatever pytest's python_classes say

    def __init__(self, journal: Journal, config: Optional[pytest.Config] = None, wrap: Optional["WrapSession"] = None):
        self.journal = journal
        self.config = config
        self.wrap = wrap
        self.reports: List[Any] = []
        self.quoted_paths: Dict[str, str] = {}
        self.entries: Optional[ReportEntries] = None
        self.entries_mark: Optional[tuple] = None
        #: Whether :meth:`pytest_runtest_setup` has work at the next test
        #: (the first test, or report plugins whose state it marks); the
        #: MarkerWriter, which calls it, skips the call otherwise.
        self.pending_setup = True
        #: Whether a test is journaled only once its teardown report went
        #: through every plugin (report plugins' entries are taken with it):
        #: from ``pytest_runtest_logfinish``, not the teardown report.
        self.defer_to_finish = False
        #: The node id of the test the MarkerWriter started, and its JSON
        #: literal, which the done line reuses.
        self.started_nodeid: Optional[str] = None
        self.quoted_nodeid = ""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item) -> None:
        """Before a test's setup (so before its first report reaches the
        report plugins): marks where their per-test state stands, and
        before the first test counts earlier runs' failures (see
        :meth:`WrapSession.count_prior_failures`)."""
        wrap = self.wrap
        if wrap is not None and not wrap.prior_counted:
            wrap.count_prior_failures(item.session)
        entries = self.entries
        if entries is None:
            if self.config is None:
                self.pending_setup = False
                return
            entries = self.entries = ReportEntries(self.config)
        self.pending_setup = self.defer_to_finish = entries.is_active
        self.entries_mark = entries.mark() if entries.is_active else None

    def pytest_runtest_logreport(self, report) -> None:
        """Gathers a test's phase reports."""
        if report.when == "setup":
            self.reports = [report]
        else:
            self.reports.append(report)

    def pytest_runtest_logfinish(self) -> None:
        """Journals the test once its teardown report went through every
        plugin's report hook (so the report plugins' entries for it are
        all written), and only then: a test cut short by KeyboardInterrupt
        or an internal error is not journaled."""
        reports, self.reports = self.reports, []
        if not reports or reports[-1].when != "teardown":
            return
        nodeid = reports[-1].nodeid
        if self.entries_mark is not None:
            taken = self.entries.taken(nodeid, self.entries_mark)
            self.entries_mark = None
            self._journal_done(nodeid, reports, taken)
        elif not self._journal_passed(reports):
            self._journal_done(nodeid, reports)

    def _journal_passed(self, reports: list) -> bool:
        """The common case, fast: a test whose three phases passed (and
        did not xpass) and that recorded no property, journaled as
        :meth:`_journal_done` would; False for any other test."""
        if len(reports) != 3:
            return False
        setup, call, teardown = reports
        # (A report's fields are its instance attributes: a dict lookup
        # instead of hasattr's raised and caught AttributeError.)
        if not (setup.outcome == call.outcome == teardown.outcome == "passed") or "wasxfail" in call.__dict__:
            return False
        if teardown.user_properties:
            return False
        path, lineno, domain = teardown.location
        if type(lineno) is not int:
            return False
        quoted_path = self.quoted_paths.get(path)
        if quoted_path is None:
            quoted_path = self.quoted_paths[path] = q(path)
        nodeid = teardown.nodeid
        quoted = self.quoted_nodeid if nodeid is self.started_nodeid else q(nodeid)
        duration = setup.duration + call.duration + teardown.duration
        self.journal.write_line(
            f'{{"ev":"done","nodeid":{quoted},"outcome":"passed","duration":{int(duration * 1e6)}e-6,"when":"call",'
            f'"location":[{quoted_path},{lineno},{encode_ascii(domain)}],"start":{int((time.time() - duration) * 1e6)}e-6}}\n'
        )
        return True

    def _journal_done(self, nodeid: str, reports: list, entries: Optional[Dict[str, Any]] = None) -> None:
        outcome, decided_by, duration, longrepr, sections, location = "passed", "call", 0.0, None, None, None
        reprcrash = None
        for report in reports:
            duration += report.duration
            location = report.location
            when, result = report.when, report.outcome
            new = None
            if when == "call":
                xfail = hasattr(report, "wasxfail")
                if result == "passed":
                    new = "xpassed" if xfail else "passed"
                elif result == "skipped":
                    new = "xfailed" if xfail else "skipped"
                else:
                    new = "failed"
            elif result == "failed":
                new = "error" if when == "setup" or outcome in ("passed", "xpassed") else outcome
            elif result == "skipped" and when == "setup":
                new = "xfailed" if hasattr(report, "wasxfail") else "skipped"
            if new is not None:
                outcome, decided_by = new, when
                if result != "passed":
                    longrepr = _clip(report.longreprtext)
                    if result == "failed":
                        sections = [(title, _clip(text)) for title, text in report.sections]
                        reprcrash = getattr(report.longrepr, "reprcrash", None)
        if location is None:
            return
        line = self._done_line(nodeid, outcome, duration, decided_by, location, longrepr, sections)
        if reprcrash is not None:
            line = line[:-2] + _failure_fields(reprcrash, outcome, decided_by) + "}\n"
        props = reports[-1].user_properties
        if props:
            # record_property values, as junitxml writes them (str of each).
            line = line[:-2] + ',"props":' + json.dumps([[str(k), str(v)] for k, v in props]) + "}\n"
        if entries:
            try:
                line = line[:-2] + ',"reports":' + json.dumps(entries, default=str) + "}\n"
            except (TypeError, ValueError):
                pass
        self.journal.write_line(line)

    def _done_line(self, nodeid, outcome, duration, decided_by, location, longrepr, sections) -> str:
        # Per-test hot path: the line is built from constant parts and
        # C-encoded string literals (json.dumps of a dict costs several
        # times more); the rare failure details go through json.dumps.
        # Times are whole microseconds written as JSON numbers with an
        # exponent (``300e-6``): formatting a float costs several times
        # more.
        path, lineno, domain = location
        quoted_path = self.quoted_paths.get(path)
        if quoted_path is None:
            quoted_path = self.quoted_paths[path] = q(path)
        line = '{"ev":"done","nodeid":%s,"outcome":"%s","duration":%de-6,"when":"%s","location":[%s,%s,%s],"start":%de-6' % (
            q(nodeid),
            outcome,
            int(duration * 1e6),
            decided_by,
            quoted_path,
            "null" if lineno is None else int(lineno),
            q(domain),
            int((time.time() - duration) * 1e6),
        )
        if longrepr:
            line += ',"longrepr":' + q(longrepr)
        if sections:
            line += ',"sections":' + json.dumps(sections)
        return line + "}\n"
