"""The xdist controller's part when two workers die close together: xdist's
real scheduler hands the first dead worker's tests to the others at once,
and the second dead worker (whose death xdist has not processed yet) must
not be sent any: writing to its closed pipe raised ``OSError: cannot send
(already closed?)`` and ended the session in an INTERNALERROR
(``differential::xdist_deselect_reports_match_plain`` failed about one run
in ten on a loaded machine).

The scheduler is xdist's own ``LoadScheduling``; the workers are stand-ins
whose command pipe is a real pipe (closed on the reading side when the
worker "dies"), sending as xdist's ``WorkerController`` does.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from xdist.scheduler import load as xdist_load

from pytest_abort._common import Problems
from pytest_abort._controller import XdistController


class Worker:
    """A worker as the scheduler sees it: xdist's ``WorkerController``
    interface (``shutting_down``, ``shutdown``, ``send_runtest_some``),
    commands written to a real pipe."""

    def __init__(self, gid: str) -> None:
        self.read_end, write_end = os.pipe()
        outfile = os.fdopen(write_end, "wb", buffering=0)
        self.gateway = SimpleNamespace(id=gid, _io=SimpleNamespace(outfile=outfile))
        self._shutdown_sent = False
        self.sent: list = []

    def __repr__(self) -> str:
        return f"<Worker {self.gateway.id}>"

    @property
    def shutting_down(self) -> bool:
        return self._shutdown_sent

    def sendcommand(self, name: str, **kwargs) -> None:
        # As execnet: a write to a pipe nobody reads raises OSError.
        self.gateway._io.outfile.write(repr((name, kwargs)).encode() + b"\n")
        self.sent.append(name)

    def send_runtest_some(self, indices) -> None:
        self.sendcommand("runtests", indices=list(indices))

    def shutdown(self) -> None:
        # As WorkerController.shutdown.
        try:
            self.sendcommand("shutdown")
        except OSError:
            pass
        self._shutdown_sent = True

    def die(self) -> None:
        os.close(self.read_end)


def _scheduler(workers):
    config = SimpleNamespace(getvalue=lambda name: ["2*popen"], getoption=lambda name: None)
    sched = xdist_load.LoadScheduling(config)
    ids = [f"t.py::test_{i}" for i in range(20)]
    for w in workers:
        sched.add_node(w)
    for w in workers:
        sched.add_node_collection(w, ids)
    sched.schedule()
    return sched


def _controller(sched, wrap_state=None):
    dsession = SimpleNamespace(sched=sched, maxfail=0, countfailures=0, shouldstop=False)
    pluginmanager = SimpleNamespace(getplugin=lambda name: dsession if name == "dsession" else None)
    config = SimpleNamespace(pluginmanager=pluginmanager)
    return XdistController(config, wrap_state, "1", None, Problems(config))


def test_without_the_plugin_xdist_sends_to_the_second_dead_worker():
    """The failure itself, with xdist alone (shows the stand-ins are real
    enough to reproduce it)."""
    gw0, gw1 = Worker("gw0"), Worker("gw1")
    sched = _scheduler([gw0, gw1])
    gw0.die()
    gw1.die()
    with pytest.raises(OSError):
        sched.remove_node(gw0)


def test_a_second_dead_worker_is_not_sent_the_first_ones_tests():
    gw0, gw1 = Worker("gw0"), Worker("gw1")
    sched = _scheduler([gw0, gw1])
    gw0.die()
    gw1.die()
    _controller(sched).pytest_testnodedown(node=gw0, error="Not properly terminated")
    crashitem = sched.remove_node(gw0)  # what DSession.worker_errordown does next
    assert crashitem == "t.py::test_0"
    assert gw1.shutting_down
    # Its own death is then handled as xdist does: its tests go back.
    assert sched.remove_node(gw1) is not None
    assert len(sched.pending) == 18


def test_a_worker_the_wrapper_saw_die_is_held_before_its_pipe_closes(tmp_path):
    """Under the wrapper, its crash info (written at the worker's exit stop,
    while the worker's pipes are still open) marks it too."""
    gw0, gw1 = Worker("gw0"), Worker("gw1")
    sched = _scheduler([gw0, gw1])
    (tmp_path / "crashinfo").mkdir()
    (tmp_path / "crashinfo" / "r1-gw1.json").write_text("{}")
    gw0.die()
    _controller(sched, str(tmp_path)).pytest_testnodedown(node=gw0, error="Not properly terminated")
    sched.remove_node(gw0)
    assert gw1.shutting_down
    assert gw1.sent == ["runtests", "shutdown"], "no tests after its death"


def test_a_live_worker_keeps_working():
    gw0, gw1 = Worker("gw0"), Worker("gw1")
    sched = _scheduler([gw0, gw1])
    before = len(gw1.sent)
    gw0.die()
    _controller(sched).pytest_testnodedown(node=gw0, error="Not properly terminated")
    sched.remove_node(gw0)
    assert not gw1.shutting_down
    assert gw1.sent[before:] == ["runtests"]
