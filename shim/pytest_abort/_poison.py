"""Poisoned device contexts: a test that fails with a sticky device error
ends its process's testing.

Some GPU errors cannot be recovered from inside the process: after a CUDA
device-side assert or an illegal memory access, every later CUDA call in
that process fails with the same error, so every later test there fails
although it is correct. Under ``pytest-abort-wrap`` the run plan lists the
failure texts that mean such an error (regular expressions: the defaults
and ``--poison-pattern``; none under ``--no-poison``). When a failed test's
report text matches one, :class:`PoisonWatch` in the process that ran it
(serial pytest, a fork server's child, an xdist worker):

- journals a ``poisoned`` event (the wrapper records it as a
  ``device-error``; the test stays a failure with its own report);
- sets ``session.shouldstop``, so that pytest tears the poisoning test
  down as the last one and runs no further test in this process. Serially
  the session then ends (pytest says "Interrupted") and the wrapper resumes
  the tests left in a fresh process. In an xdist worker the worker's loop
  ends; the worker says so in ``workeroutput`` and the controller
  (:meth:`~pytest_abort._controller.XdistController.pytest_testnodedown`)
  gives its pending tests to a fresh worker instead of stopping the session.

PYTEST_DONT_REWRITE: no assertions here to rewrite (see :mod:`pytest_abort.plugin`).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

import pytest

from ._common import Problems
from ._journal import Journal
from .crash_file import gpu_id_from_env

#: Key in a worker's ``workeroutput``: the node id of the test that
#: poisoned the worker (the controller then retires it).
WORKEROUTPUT_POISONED = "pytest_abort_poisoned"


def compile_patterns(patterns: List[str], problems: Problems) -> List["re.Pattern[str]"]:
    """The patterns compiled; one that Python's ``re`` refuses is left out
    and reported once (the wrapper checked them with Rust's regex)."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(str(pattern)))
        except re.error as e:
            problems.report("poison-pattern", f"poison pattern {pattern!r} is not a Python regex ({e}); ignored")
    return compiled


class PoisonWatch:
    """Plugin object of a pytest process under the wrapper that runs tests,
    when the run plan lists poison patterns (see the module's docstring).

    It looks only at failures with an exception (``pytest_exception_interact``,
    which pytest calls for those alone), so passing tests cost nothing."""

    def __init__(self, config: pytest.Config, journal: Journal, patterns: List[str], problems: Problems) -> None:
        self.config = config
        self.journal = journal
        self.patterns = compile_patterns(patterns, problems)
        #: The node id of the test that poisoned this process, once one did.
        self.poisoned: Optional[str] = None

    def _match(self, text: str) -> Optional[str]:
        for pattern in self.patterns:
            m = pattern.search(text)
            if m is not None:
                return m.group(0)
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_exception_interact(self, node, call, report) -> None:
        """A failed test phase whose text matches a pattern poisons the
        process: no further test runs here. Called after the phase's report
        was logged and, for setup and call, before the teardown, which then
        tears everything down with this test."""
        if self.poisoned is not None or not isinstance(node, pytest.Item) or not report.failed:
            return
        matched = self._match(report.longreprtext)
        if matched is None:
            return
        self.poisoned = node.nodeid
        event: Dict[str, Any] = {
            "ev": "poisoned",
            "nodeid": node.nodeid,
            "when": report.when,
            "matched": matched,
            "gpu_id": gpu_id_from_env(),
        }
        self.journal.write(event)
        node.session.shouldstop = (
            f"pytest-abort: {node.nodeid} failed with a sticky device error ({matched}); "
            "no further test runs in this process (pytest-abort-wrap runs the rest in a fresh one)"
        )
        workeroutput = getattr(self.config, "workeroutput", None)
        if isinstance(workeroutput, dict):
            workeroutput[WORKEROUTPUT_POISONED] = node.nodeid
