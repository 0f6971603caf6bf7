"""What the plugin objects of :mod:`pytest_abort.plugin` share: the names of
the environment variables the wrapper sets, JSON quoting for the per-test
paths, and :class:`Problems`, which tells the user (once) when the plugin
cannot do its job.

PYTEST_DONT_REWRITE: no assertions here to rewrite (see :mod:`pytest_abort.plugin`).
"""

from __future__ import annotations

import mmap
import os
import sys
# encode_ascii: the C encoder of a JSON string literal (ASCII-only), for the
# per-test paths, whose values are known to be str (else: q).
from json.encoder import encode_basestring_ascii as encode_ascii
from typing import Optional, Set

import pytest

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
WORKERINPUT_WRAP = "pytest_abort_wrap_state"

OPT_LAST_RUNNING_FILE = "abort_last_running_file"
OPT_LAST_RUNNING_DIR = "abort_last_running_dir"


def q(text: str) -> str:
    """A JSON string literal (ASCII-only, so surrogates and odd characters
    in node ids survive), from the C encoder: the per-test paths build
    their JSON from constant parts and these literals."""
    return encode_ascii(str(text))


def map_allocated(fd: int, size: int) -> Optional[mmap.mmap]:
    """A shared memory map of the first ``size`` bytes of the file open as
    ``fd``, its blocks allocated first so that a store into the map never
    faults on a full disk; None where the file system cannot allocate or
    map it (the caller writes instead). The marker and the journal both
    keep their files this way."""
    try:
        os.posix_fallocate(fd, 0, size)
        return mmap.mmap(fd, size)
    except (OSError, ValueError, AttributeError):
        return None


def worker_id(config: pytest.Config) -> str:
    """``gwN`` in an xdist worker, else ``PYTEST_XDIST_WORKER`` or ``main``."""
    workerinput = getattr(config, "workerinput", None)
    if isinstance(workerinput, dict) and workerinput.get("workerid"):
        return str(workerinput["workerid"])
    return os.environ.get("PYTEST_XDIST_WORKER") or "main"


def marker_dir(config: pytest.Config) -> Optional[str]:
    """The folder for per-worker markers, from the environment or option."""
    return os.environ.get(ENV_LAST_RUNNING_DIR) or getattr(config.option, OPT_LAST_RUNNING_DIR, None)


class PytestAbortWarning(pytest.PytestWarning):
    """pytest-abort could not do part of its job (the run goes on)."""


class Problems:
    """Tells the user, once per kind, what the plugin could not do.

    Writing markers, journals and crash logs never fails a test run, but a
    failure is not hidden either: like pytest-timeout and xdist, it becomes
    a pytest warning (in the warnings summary; xdist forwards a worker's to
    the controller). With ``-p no:warnings``, or when ``-W error`` turns the
    warning into an exception, it goes to stderr instead.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.seen: Set[str] = set()

    def report(self, kind: str, message: str) -> None:
        """Reports ``message`` unless a problem of this ``kind`` already was."""
        if kind in self.seen:
            return
        self.seen.add(kind)
        text = f"pytest-abort: {message}"
        try:
            if not self.config.pluginmanager.is_blocked("warnings"):
                self.config.issue_config_time_warning(PytestAbortWarning(text), stacklevel=2)
                return
        except Warning:
            pass  # -W error: the run must not fail for it; say it on stderr
        # Past pytest's output capture (a test's setup may be capturing).
        capman = self.config.pluginmanager.getplugin("capturemanager")
        try:
            if capman is not None:
                with capman.global_and_fixture_disabled():
                    sys.stderr.write(text + "\n")
            else:
                sys.stderr.write(text + "\n")
        except (OSError, ValueError):
            pass  # stderr itself is gone: nowhere left to say it
