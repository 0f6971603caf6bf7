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
``status: "running"``, ``pid``, ``gpu_id``, ``phase``) written as a test's
setup starts and removed after its teardown; if the process dies hard, it
stays. Under xdist, when a worker goes down the controller appends the
worker's surviving marker to ``PYTEST_ABORT_CRASHED_TESTS_LOG``.

Under ``pytest-abort-wrap`` (``PYTEST_ABORT_WRAP_STATE`` set) the plugin also
keeps a per-process journal of collected and finished tests, applies the
wrapper's run plan (tests to deselect, files to skip), sends report files of
each run to their own paths, and writes markers in place (stores into a
memory map of the file) since the wrapper reads them only once the writer is
stopped or dead.
(PYTEST_DONT_REWRITE: nothing here needs assertion rewriting, and the
package imports this module itself, so it loads from bytecode.)

Writing never fails a test run; what cannot be written is said once, as a
pytest warning.

Like pytest-xdist (``DSession`` and ``TerminalDistReporter``), the work is
split into plugin objects that :func:`pytest_configure` registers, each only
where it has a job:

- :class:`~pytest_abort._marker.MarkerWriter` (a marker path is configured):
  the marker of the running test and its phase;
- :class:`~pytest_abort._journal.WrapSession` (under the wrapper): journal
  of the session and collection, the run plan, report redirection,
  fatal-error dumps;
- :class:`~pytest_abort._journal.TestJournal` (under the wrapper, in a
  process that runs tests): one journal line per finished test (its hooks
  are called by the MarkerWriter where there is one, and by
  :class:`~pytest_abort._marker.TestFinisher` where report plugins' entries
  go into the journal);
- :class:`~pytest_abort._shard.ShardSelector` (under ``--shard``): keeps
  the tests of this shard at collection time;
- :class:`~pytest_abort._controller.XdistController` (not an xdist worker):
  workers' marker paths, and what a dead worker took down;
- :class:`~pytest_abort._resume.ForkServer` (under the wrapper, serial, when
  the run plan allows resuming by fork): collects once and runs the tests in
  forked children, forking again after a crash;
- :class:`~pytest_abort._gpu.SlotHealth` (under ``--gpus``, in a worker that
  took a GPU slot on import): its first passed test clears the GPU's count of
  worker deaths in a row;
- :class:`~pytest_abort._poison.PoisonWatch` (under the wrapper, in a
  process that runs tests, when the run plan lists poison patterns): a test
  that fails with a sticky device error is the last one this process runs.
"""

from __future__ import annotations

import os
from typing import Optional

import pytest

from ._common import (
    ENV_CRASHED_TESTS_LOG,
    ENV_DUMP_SIGNAL,
    ENV_LAST_RUNNING_DIR,
    ENV_LAST_RUNNING_FILE,
    ENV_WATCH_MARKS,
    ENV_WRAP_ACTIVE,
    ENV_WRAP_RUN,
    ENV_WRAP_STATE,
    OPT_LAST_RUNNING_DIR,
    OPT_LAST_RUNNING_FILE,
    WORKERINPUT_WRAP,
    Problems,
    PytestAbortWarning,
    marker_dir,
    worker_id,
)

__all__ = [
    "ENV_CRASHED_TESTS_LOG",
    "ENV_DUMP_SIGNAL",
    "ENV_LAST_RUNNING_DIR",
    "ENV_LAST_RUNNING_FILE",
    "ENV_WATCH_MARKS",
    "ENV_WRAP_ACTIVE",
    "ENV_WRAP_RUN",
    "ENV_WRAP_STATE",
    "PytestAbortWarning",
    "pytest_addoption",
    "pytest_configure",
]

def _early_fault_file():
    """Under the wrapper, sends fatal-error stacks to this process's file in
    the state folder from the moment the plugin is imported (before
    conftests are), so that a process that dies before the plugin is
    configured leaves both a sign that it was a pytest process of this run
    and the stack of the module it was importing (the wrapper records a
    crash at startup from it). :class:`WrapSession` keeps the same file.

    Only the supervised pytest and its own xdist workers do this (a worker's
    parent is the process that set ``PYTEST_ABORT_WRAP_ACTIVE``; ``workerinput``
    does not exist yet while a worker imports its conftests)."""
    state = os.environ.get(ENV_WRAP_STATE)
    if not state:
        return None
    active = os.environ.get(ENV_WRAP_ACTIVE)
    if active and not (os.environ.get("PYTEST_XDIST_WORKER") and str(os.getppid()) == active):
        return None  # a pytest that a test started
    import faulthandler

    run = os.environ.get(ENV_WRAP_RUN, "1")
    try:
        folder = os.path.join(state, "faulthandler")
        os.makedirs(folder, exist_ok=True)
        f = open(os.path.join(folder, f"r{run}-{os.getpid()}.txt"), "w")
        # The wrapper's sign of a pytest process of this run, and its worker
        # id (the stacks faulthandler dumps follow this line).
        f.write("pytest-abort startup: worker=%s\n" % (os.environ.get("PYTEST_XDIST_WORKER") or "main"))
        f.flush()
        faulthandler.enable(file=f, all_threads=True)
        return f
    except (OSError, ValueError, RuntimeError):
        return None  # WrapSession tries again, and reports a failure


#: Set on import under the wrapper (see :func:`_early_fault_file`).
_EARLY_FAULT_FILE = _early_fault_file()


def _take_gpu_slot():
    """Under ``pytest-abort-wrap --gpus``, in one of the supervised pytest's
    own xdist workers: takes a GPU slot now, at import, before pytest imports
    any conftest or test module (see :mod:`pytest_abort._gpu`)."""
    state = os.environ.get(ENV_WRAP_STATE)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not (state and worker and os.environ.get("PYTEST_ABORT_GPU_PLAN")):
        return None
    if os.environ.get(ENV_WRAP_ACTIVE) != str(os.getppid()):
        return None  # a worker of a pytest that a test started
    from ._gpu import take_slot

    try:
        return take_slot(state, worker, os.environ.get(ENV_WRAP_RUN, "1"))
    except (OSError, ValueError):
        return None  # no slot: the worker sees every GPU of the plan


#: ``(slot, gpu)`` taken on import in an xdist worker under ``--gpus``.
_GPU_SLOT = _take_gpu_slot()

#: The names the plugin objects are registered under, one per job.
_MARKER_PLUGIN = "pytest_abort_marker"
_WRAP_PLUGIN = "pytest_abort_wrap"
_TESTS_PLUGIN = "pytest_abort_tests"
_XDIST_PLUGIN = "pytest_abort_xdist"
_SHARD_PLUGIN = "pytest_abort_shard"
_FORK_PLUGIN = "pytest_abort_fork"
_GPU_PLUGIN = "pytest_abort_gpu"
_POISON_PLUGIN = "pytest_abort_poison"
_PLUGIN_NAMES = (
    _MARKER_PLUGIN,
    _WRAP_PLUGIN,
    _TESTS_PLUGIN,
    _XDIST_PLUGIN,
    _SHARD_PLUGIN,
    _FORK_PLUGIN,
    _GPU_PLUGIN,
    _POISON_PLUGIN,
)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list) -> None:
    """Under ``pytest-abort-wrap --gpus``, in the pytest the wrapper started:
    adds ``-n (GPUs x per GPU)`` unless pytest was given ``-n``."""
    if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get(ENV_WRAP_ACTIVE):
        return  # a worker, or a pytest that a test started
    if os.environ.get(ENV_WRAP_STATE) and os.environ.get("PYTEST_ABORT_GPU_PLAN"):
        from ._gpu import add_numprocesses

        add_numprocesses(early_config, args)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Adds ``--last-running-file`` and ``--last-running-dir``."""
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


def _marker_path(config: pytest.Config) -> Optional[str]:
    workerinput = getattr(config, "workerinput", None)
    if isinstance(workerinput, dict) and workerinput.get(OPT_LAST_RUNNING_FILE):
        return workerinput[OPT_LAST_RUNNING_FILE]
    path = os.environ.get(ENV_LAST_RUNNING_FILE)
    if path:
        return path
    worker = worker_id(config)
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


def _wrap_state(config: pytest.Config) -> Optional[str]:
    """The wrapper's state folder when this process is the one the wrapper
    supervises (or its xdist worker); None otherwise, also for a pytest
    that a test started inside a wrapped run."""
    wrap_state = os.environ.get(ENV_WRAP_STATE) or None
    if wrap_state is None:
        return None
    workerinput = getattr(config, "workerinput", None)
    if isinstance(workerinput, dict):
        if workerinput.get(WORKERINPUT_WRAP) != wrap_state:
            return None  # a worker of a pytest that a test started
    elif os.environ.get(ENV_WRAP_ACTIVE):
        return None  # a pytest that a test started: not the supervised one
    else:
        os.environ[ENV_WRAP_ACTIVE] = str(os.getpid())
    return wrap_state


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Registers the plugin objects this process needs; none (inert) unless a
    marker path is configured or the wrapper runs this pytest."""
    if any(config.pluginmanager.has_plugin(name) for name in _PLUGIN_NAMES):
        return
    wrap_state = _wrap_state(config)
    marker = _marker_path(config)
    if marker is None and marker_dir(config) is None and wrap_state is None:
        return  # inert: nobody asked for markers
    from ._controller import XdistController
    from ._marker import MarkerWriter

    problems = Problems(config)
    register = config.pluginmanager.register
    is_worker = isinstance(getattr(config, "workerinput", None), dict)
    if wrap_state is not None and not is_worker:
        from ._journal import serial_phase

        serial_phase(config, wrap_state)
    # An xdist controller starts workers and runs no test itself.
    controller = not is_worker and bool(
        getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None)
    )
    run = os.environ.get(ENV_WRAP_RUN, "1")
    journal = None
    marker_writer = None
    if marker and not controller:
        marker_writer = MarkerWriter(config, marker, wrap_state is not None, problems)
        register(marker_writer, _MARKER_PLUGIN)
    if wrap_state is not None:
        from ._journal import Journal, TestJournal, WrapSession
        from ._shard import ShardSelector, read_plan

        shard = read_plan()
        if shard is not None:
            # Registered before WrapSession: both select trylast, and the
            # shard must be chosen before the resume plan deselects.
            register(ShardSelector(config, shard), _SHARD_PLUGIN)

        journal = Journal(os.path.join(wrap_state, "journal", f"r{run}-{os.getpid()}.jsonl"), problems)
        wrap = WrapSession(config, wrap_state, run, journal, problems, controller, _EARLY_FAULT_FILE)
        register(wrap, _WRAP_PLUGIN)
        if not controller:
            tests = TestJournal(journal, config, wrap)
            if marker_writer is not None:
                marker_writer.tests = tests  # one hook call per phase for both
            else:
                register(tests, _TESTS_PLUGIN)
            if wrap.plan.get("poison"):
                from ._poison import PoisonWatch

                register(PoisonWatch(config, journal, list(wrap.plan["poison"]), problems), _POISON_PLUGIN)
        if _GPU_SLOT is not None and is_worker:
            from ._gpu import SlotHealth

            register(SlotHealth(wrap_state, _GPU_SLOT[1]), _GPU_PLUGIN)
        if wrap.fork_server:
            from ._resume import ForkServer

            register(ForkServer(config, wrap, journal, marker_writer), _FORK_PLUGIN)
    if not is_worker:
        register(XdistController(config, wrap_state, run, journal, problems), _XDIST_PLUGIN)
