"""pytest plugin: keep a "last running test" marker so that an outer process
can name the test a hard crash killed.

Inert unless a marker path is configured, exactly like the original
``pytest-abort`` plugin. A path comes from (first match wins):

1. the xdist controller, which gives each worker ``<dir>/last_running_<gwN>.json``;
2. ``PYTEST_ABORT_LAST_RUNNING_FILE``;
3. ``PYTEST_ABORT_LAST_RUNNING_DIR`` + ``last_running_<worker>.json``;
4. ``--last-running-file``;
5. ``--last-running-dir``.

The marker is a JSON object (``test_name``, ``nodeid``, ``start_time``,
``status: "running"``, ``pid``, ``gpu_id``) written just before a test's run
protocol starts and removed when it returns; if the process dies hard, it
stays. Under xdist, when a worker goes down the controller appends the
worker's surviving marker to ``PYTEST_ABORT_CRASHED_TESTS_LOG``.

Under ``pytest-abort-wrap`` (``PYTEST_ABORT_WRAP_STATE`` set) the plugin also
keeps a per-process journal of collected and finished tests, applies the
wrapper's run plan (tests to deselect, files to skip), sends report files of
each run to their own paths, and writes markers in place (one ``pwrite`` per
update) since the wrapper reads them only once the writer is stopped or dead.
Writing never fails a test run.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any, Dict, List, Optional

import pytest
from json.encoder import encode_basestring_ascii as _encode_ascii

from .crash_file import append_crash_to_jsonl, check_for_crash_file, gpu_id_from_env

ENV_LAST_RUNNING_FILE = "PYTEST_ABORT_LAST_RUNNING_FILE"
ENV_LAST_RUNNING_DIR = "PYTEST_ABORT_LAST_RUNNING_DIR"
ENV_CRASHED_TESTS_LOG = "PYTEST_ABORT_CRASHED_TESTS_LOG"
#: Set by pytest-abort-wrap: its state folder (journals, run plan, reports).
ENV_WRAP_STATE = "PYTEST_ABORT_WRAP_STATE"
#: Set by pytest-abort-wrap: the 1-based run number.
ENV_WRAP_RUN = "PYTEST_ABORT_WRAP_RUN"
#: Set by pytest-abort-wrap: the signal on which to dump all Python stacks
#: (sent before it kills a test that timed out).
ENV_DUMP_SIGNAL = "PYTEST_ABORT_DUMP_SIGNAL"
#: Set (to its pid) by the pytest process the wrapper supervises, so that a
#: pytest started by a test inside it stays out of the wrapper's way.
ENV_WRAP_ACTIVE = "PYTEST_ABORT_WRAP_ACTIVE"
#: Set by pytest-abort-wrap when it enforces per-test timeouts: markers then
#: carry the test's own ``@pytest.mark.timeout(n)``.
ENV_WATCH_MARKS = "PYTEST_ABORT_WATCH_MARKS"
#: Key in an xdist worker's workerinput: the wrapper state of its controller.
_WORKERINPUT_WRAP = "pytest_abort_wrap_state"

OPT_LAST_RUNNING_FILE = "abort_last_running_file"
OPT_LAST_RUNNING_DIR = "abort_last_running_dir"

_PLUGIN_NAME = "pytest_abort_session"
_PHASE_OFFSET = len('{"phase": ')
_PHASES = {p: ('"%s"' % p).ljust(10).encode() for p in ("setup", "call", "teardown")}
_TEXT_LIMIT = 65536


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pytest-abort", "crash attribution (pytest-abort)")
    group.addoption(
        "--last-running-file",
        dest=OPT_LAST_RUNNING_FILE,
        default=None,
        help="Write the last-running-test marker (JSON) to this path.",
    )
    group.addoption(
        "--last-running-dir",
        dest=OPT_LAST_RUNNING_DIR,
        default=None,
        help="Write per-worker markers last_running_<worker>.json into this folder (xdist-safe).",
    )


def _worker_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    if isinstance(workerinput, dict) and workerinput.get("workerid"):
        return str(workerinput["workerid"])
    return os.environ.get("PYTEST_XDIST_WORKER") or "main"


def _marker_dir(config: pytest.Config) -> Optional[str]:
    return os.environ.get(ENV_LAST_RUNNING_DIR) or getattr(config.option, OPT_LAST_RUNNING_DIR, None)


def _marker_path(config: pytest.Config) -> Optional[str]:
    workerinput = getattr(config, "workerinput", None)
    if isinstance(workerinput, dict) and workerinput.get(OPT_LAST_RUNNING_FILE):
        return workerinput[OPT_LAST_RUNNING_FILE]
    path = os.environ.get(ENV_LAST_RUNNING_FILE)
    if path:
        return path
    worker = _worker_id(config)
    d = os.environ.get(ENV_LAST_RUNNING_DIR)
    if d:
        return os.path.join(d, f"last_running_{worker}.json")
    path = getattr(config.option, OPT_LAST_RUNNING_FILE, None)
    if path:
        return path
    d = getattr(config.option, OPT_LAST_RUNNING_DIR, None)
    if d:
        return os.path.join(d, f"last_running_{worker}.json")
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin(_PLUGIN_NAME):
        return
    wrap_state = os.environ.get(ENV_WRAP_STATE) or None
    if wrap_state is not None:
        workerinput = getattr(config, "workerinput", None)
        if isinstance(workerinput, dict):
            if workerinput.get(_WORKERINPUT_WRAP) != wrap_state:
                return  # a worker of a pytest that a test started
        elif os.environ.get(ENV_WRAP_ACTIVE):
            return  # a pytest that a test started: not the supervised one
        else:
            os.environ[ENV_WRAP_ACTIVE] = str(os.getpid())
    marker = _marker_path(config)
    if marker is None and _marker_dir(config) is None and wrap_state is None:
        return  # inert: nobody asked for markers
    config.pluginmanager.register(_AbortSession(config, marker, wrap_state), _PLUGIN_NAME)


def _timeout_of(item: pytest.Item) -> Optional[float]:
    mark = item.get_closest_marker("timeout")
    if mark is None:
        return None
    value = mark.kwargs.get("timeout", mark.args[0] if mark.args else None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class _AtomicMarker:
    """Marker written as temp file + rename and removed after the test (the
    original's semantics, for readers that poll it while pytest runs)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def start(self, payload: str) -> None:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            tmp = f"{self.path}.tmp.{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(payload)
            os.replace(tmp, self.path)
        except OSError:
            pass

    def phase(self, phase: str) -> None:
        pass

    def finish(self) -> None:
        try:
            os.remove(self.path)
        except OSError:
            pass

    def close(self) -> None:
        pass


class _InPlaceMarker:
    """Marker kept open and rewritten in place with one ``pwrite``.

    Used under the wrapper, which reads a marker only when its writer is
    stopped (ptrace) or dead, so a single write is all-or-nothing for it.
    Shorter contents are padded with spaces (valid JSON whitespace)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = 0
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self.fd: Optional[int] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError:
            self.fd = None

    def _put(self, data: bytes) -> None:
        if self.fd is None:
            return
        if len(data) < self.size:
            data = data.ljust(self.size)
        else:
            self.size = len(data)
        try:
            os.pwrite(self.fd, data, 0)
        except OSError:
            pass

    def start(self, payload: str) -> None:
        self._put(payload.encode("utf-8", "surrogateescape"))

    def phase(self, phase: str) -> None:
        if self.fd is not None:
            try:
                os.pwrite(self.fd, _PHASES[phase], _PHASE_OFFSET)
            except OSError:
                pass

    def finish(self) -> None:
        self._put(b'{"status": "idle"}')

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


class _Journal:
    """Append-only JSONL journal, one ``write`` per event (wrapper only)."""

    def __init__(self, path: str) -> None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.fd: Optional[int] = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        except OSError:
            self.fd = None

    def write(self, event: Dict[str, Any]) -> None:
        if self.fd is None:
            return
        try:
            line = json.dumps(event, separators=(",", ":"), default=str) + "\n"
            os.write(self.fd, line.encode("utf-8", "surrogateescape"))
        except (OSError, ValueError, TypeError):
            pass

    def write_line(self, line: str) -> None:
        """Appends one ready-made JSON line."""
        if self.fd is None:
            return
        try:
            os.write(self.fd, line.encode("ascii"))
        except OSError:
            pass

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def _q(text: str) -> str:
    """A JSON string literal (ASCII-only, so surrogates and odd characters
    in node ids survive), from the C encoder."""
    return _encode_ascii(str(text))


def _clip(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "\n[... truncated by pytest-abort]"


class _AbortSession:
    """The active plugin of one pytest process (controller, worker or serial)."""

    def __init__(self, config: pytest.Config, marker_path: Optional[str], wrap_state: Optional[str]) -> None:
        self.config = config
        self.worker = _worker_id(config)
        self.is_worker = isinstance(getattr(config, "workerinput", None), dict)
        self.wrap_state = wrap_state
        self.gpu_id = gpu_id_from_env()
        self.pid = os.getpid()
        self.marker = None
        if marker_path:
            self.marker = _InPlaceMarker(marker_path) if wrap_state else _AtomicMarker(marker_path)
        self.journal: Optional[_Journal] = None
        self.deselect: set = set()
        self.only: Optional[set] = None
        self.ignore: set = set()
        self.run = os.environ.get(ENV_WRAP_RUN, "1")
        self.fault_file = None
        self.pending: Optional[List[Any]] = None
        # True while this process runs a test's protocol (an xdist
        # controller also gets logreport calls, for its workers' tests).
        self.in_protocol = False
        self.quoted_paths: Dict[str, str] = {}
        # Only under the wrapper's watchdog do markers carry the test's own
        # timeout mark (looking it up costs a walk over the node chain).
        self.watch_marks = bool(os.environ.get(ENV_WATCH_MARKS))
        self.marker_tail = ', "status": "running", "pid": %d, "gpu_id": %s, "worker": %s' % (
            self.pid,
            _q(self.gpu_id),
            _q(self.worker),
        )
        if wrap_state:
            self._start_wrapped(wrap_state)

    # --- wrapper mode -------------------------------------------------------

    def _start_wrapped(self, state: str) -> None:
        run = self.run
        self.journal = _Journal(os.path.join(state, "journal", f"r{run}-{self.pid}.jsonl"))
        self.journal.write(
            {
                "ev": "start",
                "pid": self.pid,
                "worker": self.worker,
                "rootdir": str(self.config.rootpath),
                # An xdist controller starts the workers; every other pytest
                # process only starts a test's own subprocesses.
                "xdist_controller": not self.is_worker
                and bool(getattr(self.config.option, "numprocesses", None) or getattr(self.config.option, "tx", None)),
            }
        )
        try:
            with open(os.path.join(state, "plan.json"), encoding="utf-8") as f:
                plan = json.load(f)
            self.deselect = set(plan.get("deselect") or ())
            self.ignore = set(plan.get("ignore") or ())
            if plan.get("only") is not None:
                self.only = set(plan["only"])
        except (OSError, ValueError):
            pass
        if not self.is_worker:
            self._redirect_reports(state, run)

    def _redirect_reports(self, state: str, run: str) -> None:
        opt = self.config.option
        wanted = {
            "json": getattr(opt, "json_report_file", None) if getattr(opt, "json_report", False) else None,
            "html": getattr(opt, "htmlpath", None),
            "csv": getattr(opt, "csv_path", None),
            "junit": getattr(opt, "xmlpath", None),
        }
        attrs = {"json": "json_report_file", "html": "htmlpath", "csv": "csv_path", "junit": "xmlpath"}
        ext = {"json": "json", "html": "html", "csv": "csv", "junit": "xml"}
        requested, redirected = {}, {}
        folder = os.path.join(state, "reports", f"r{run}")
        for kind, path in wanted.items():
            if not path:
                continue
            requested[kind] = os.path.abspath(os.path.expanduser(str(path)))
            redirected[kind] = os.path.join(folder, f"report.{ext[kind]}")
            setattr(opt, attrs[kind], redirected[kind])
        if requested:
            os.makedirs(folder, exist_ok=True)
            self.journal.write({"ev": "reports", "requested": requested, "redirected": redirected})

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session) -> None:
        # After pytest's own faulthandler setup: send fatal-error dumps (and
        # the wrapper's dump signal) to this process's file in the state
        # folder; the wrapper attaches it to the crash record and echoes it.
        if self.wrap_state is None:
            return
        import faulthandler

        try:
            folder = os.path.join(self.wrap_state, "faulthandler")
            os.makedirs(folder, exist_ok=True)
            self.fault_file = open(os.path.join(folder, f"r{self.run}-{self.pid}.txt"), "w")
            faulthandler.enable(file=self.fault_file, all_threads=True)
            signum = int(os.environ.get(ENV_DUMP_SIGNAL) or 0)
            if signum:
                # chain=True: after the dump the signal's default action
                # (terminate) runs, so a test stuck in C cannot go on to
                # the next test once its stacks are dumped.
                faulthandler.register(signum, file=self.fault_file, all_threads=True, chain=True)
        except (OSError, ValueError, RuntimeError, AttributeError):
            pass

    def pytest_ignore_collect(self, collection_path, config):
        if self.ignore and str(collection_path) in self.ignore:
            return True
        return None

    def pytest_collectstart(self, collector) -> None:
        if self.journal is not None and isinstance(collector, pytest.File):
            self.journal.write({"ev": "collect", "nodeid": collector.nodeid, "path": str(collector.path)})

    def pytest_collectreport(self, report) -> None:
        if self.journal is not None and report.fspath and "::" not in report.nodeid:
            self.journal.write({"ev": "collect_end", "nodeid": report.nodeid})

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items) -> None:
        if not self.deselect and self.only is None:
            return
        keep, dropped = [], []
        for item in items:
            drop = item.nodeid in self.deselect or (self.only is not None and item.nodeid not in self.only)
            (dropped if drop else keep).append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    def pytest_collection_finish(self, session) -> None:
        if self.journal is not None:
            self.journal.write({"ev": "collected", "nodeids": [i.nodeid for i in session.items]})

    # --- markers ------------------------------------------------------------
    # The per-test path is kept lean: constant parts are formatted once, JSON
    # strings come from the C encoder, and the phase is updated from the
    # report hook pytest calls anyway.

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        marker = self.marker
        if marker is not None:
            timeout = _timeout_of(item) if self.watch_marks else None
            marker.start(
                '{"phase": "setup"   , "test_name": %s, "nodeid": %s, "start_time": "%s"%s, "timeout": %s}'
                % (
                    _q(item.name),
                    _q(item.nodeid),
                    datetime.now().isoformat(timespec="microseconds"),
                    self.marker_tail,
                    "null" if timeout is None else repr(timeout),
                )
            )
        if self.journal is not None:
            self.pending = []
        self.in_protocol = True
        result = yield
        self.in_protocol = False
        reports, self.pending = self.pending, None
        # Journal only a protocol that ran to its end (not one cut short by
        # KeyboardInterrupt or an internal error).
        if reports and result.excinfo is None and reports[-1].when == "teardown":
            self._journal_done(item.nodeid, reports)
        if marker is not None:
            marker.finish()

    def pytest_runtest_logreport(self, report) -> None:
        # Called for each phase of the test this process runs (and, in an
        # xdist controller, for workers' reports, which are not ours).
        if self.pending is not None:
            self.pending.append(report)
        when = report.when
        if self.in_protocol and self.marker is not None and when != "teardown":
            # The next phase starts now (teardown straight after a setup
            # that did not pass).
            self.marker.phase("call" if when == "setup" and report.outcome == "passed" else "teardown")

    # --- journal of finished tests -----------------------------------------

    def _journal_done(self, nodeid: str, reports: list) -> None:
        outcome, decided_by, duration, longrepr, sections, location = "passed", "call", 0.0, None, None, None
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
        if location is None:
            return
        path, lineno, domain = location
        quoted_path = self.quoted_paths.get(path)
        if quoted_path is None:
            quoted_path = self.quoted_paths[path] = _q(path)
        line = '{"ev":"done","nodeid":%s,"outcome":"%s","duration":%r,"when":"%s","location":[%s,%s,%s],"start":%r' % (
            _q(nodeid),
            outcome,
            duration,
            decided_by,
            quoted_path,
            "null" if lineno is None else int(lineno),
            _q(domain),
            time.time() - duration,
        )
        if longrepr:
            line += ',"longrepr":' + _q(longrepr)
        if sections:
            line += ',"sections":' + json.dumps(sections)
        self.journal.write_line(line + "}\n")

    # --- xdist controller ---------------------------------------------------

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        if self.wrap_state is not None:
            node.workerinput[_WORKERINPUT_WRAP] = self.wrap_state
        folder = _marker_dir(self.config)
        if not folder:
            return
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            return
        node.workerinput[OPT_LAST_RUNNING_FILE] = os.path.join(folder, f"last_running_{node.gateway.id}.json")

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        if not error:
            return
        workerinput = getattr(node, "workerinput", None)
        path = workerinput.get(OPT_LAST_RUNNING_FILE) if isinstance(workerinput, dict) else None
        worker = node.gateway.id
        if self.journal is not None:
            marker = None
            if path:
                try:
                    with open(path, encoding="utf-8") as f:
                        marker = json.loads(f.read().strip(" \0\n"))
                except (OSError, ValueError):
                    marker = None
            self.journal.write({"ev": "worker_down", "worker": worker, "error": str(error)[:2000], "marker": marker})
            return
        crash_log = os.environ.get(ENV_CRASHED_TESTS_LOG)
        if not crash_log or not path:
            return
        info = check_for_crash_file(path, min_duration=0.0)
        if info:
            info["worker"] = worker
            try:
                append_crash_to_jsonl(crash_log, info, source=f"xdist:{worker}")
            except OSError as e:  # never fail the run because the log is unwritable
                import sys

                sys.stderr.write(f"pytest-abort: cannot append to the crash log {crash_log}: {e}\n")

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem, report, sched) -> None:
        # The wrapper saw the worker die (ptrace exit stop) before this
        # controller did, and left what it knows; put it in the report that
        # xdist and the controller's report plugins show.
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
        except (OSError, ValueError):
            return
        if info.get("nodeid") != crashitem:
            return
        lines = [str(report.longrepr), "", "pytest-abort: " + str(info.get("reason", ""))]
        for key, label in (
            ("signal_name", "signal"),
            ("si_code", "si_code"),
            ("fault_addr", "fault address"),
            ("location", "location"),
            ("peak_rss_kb", "peak RSS (KiB)"),
        ):
            if info.get(key) not in (None, ""):
                lines.append(f"  {label}: {info[key]}")
        if info.get("traceback"):
            lines += ["", info["traceback"].rstrip()]
        report.longrepr = "\n".join(lines)

    # --- end of session -----------------------------------------------------

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        if self.journal is not None:
            self.journal.write({"ev": "finish", "exitstatus": int(exitstatus)})

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config) -> None:
        if self.journal is not None:
            self.journal.write({"ev": "end"})
            self.journal.close()
        if self.marker is not None:
            self.marker.close()
        if self.fault_file is not None:
            try:
                import faulthandler

                if self.wrap_state and os.environ.get(ENV_DUMP_SIGNAL):
                    faulthandler.unregister(int(os.environ[ENV_DUMP_SIGNAL]))
                self.fault_file.close()
            except (OSError, ValueError, RuntimeError):
                pass
            self.fault_file = None
