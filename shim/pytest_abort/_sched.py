"""xdist's scope schedulers (``--dist loadscope``, ``loadfile``,
``loadgroup``), with the two things a worker's death needs fixed.

xdist hands out whole work units (a file, a class, a group) under these
modes. When a worker dies, its unfinished units go back into the work queue
as they were, the test that crashed the worker included: that test then runs
again on the next worker, crashes it too, and so on until no worker is left
or the run's time is spent. And a worker that has started but not yet
collected is already one of the scheduler's nodes: when another worker
finishes collecting (two replacements starting together) or dies, the
scheduler gives it work and fails with ``KeyError`` (it has no collection to
index), which ends the session with an INTERNALERROR.

:func:`run_once` swaps xdist's scheduler (made in
``pytest_xdist_make_scheduler``, see
:meth:`~pytest_abort._controller.XdistController.pytest_xdist_make_scheduler`)
for the same class with :class:`_RunOnce` in front:

- the crashed test counts as done: it is reported crashed once and never
  started again (as under ``--dist load``); a unit with nothing left to run
  does not go back into the queue;
- a worker joins the scheduler when its collection arrives, not before
  (and is shut down with the others if the tests end before it joined).

:meth:`_RunOnce.retire_node` gives a retired (poisoned) worker's pending
tests back without marking any of them crashed. Any other scheduler (``load``,
``worksteal``, ``each``, one a plugin made) stays as it is.

PYTEST_DONT_REWRITE: no assertions here to rewrite (see :mod:`pytest_abort.plugin`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Set


class _RunOnce:
    """Put in front of one of xdist's scope schedulers (``LoadScopeScheduling``
    and its subclasses): see the module's docstring. It uses their documented
    state (``assigned_work``, ``workqueue``) and public methods."""

    assigned_work: Dict[Any, Dict[str, Dict[str, bool]]]
    workqueue: Dict[str, Dict[str, bool]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        #: Workers that started but have not sent their collection yet.
        self._joining: Set[Any] = set()

    def add_node(self, node: Any) -> None:
        """A worker started: it joins at its collection
        (:meth:`add_node_collection`); until then no work goes to it."""
        self._joining.add(node)

    def add_node_collection(self, node: Any, collection: Any) -> None:
        """The worker's collection arrived: it joins the scheduler with it. A
        collection that differs from the first one is refused (xdist logs
        it); the worker then gets no work, as one that never collected."""
        if node in self._joining:
            self._joining.discard(node)
            super().add_node(node)  # type: ignore[misc]
        super().add_node_collection(node, collection)  # type: ignore[misc]
        if node not in getattr(self, "registered_collections", {}):
            self.assigned_work.pop(node, None)

    @property
    def tests_finished(self) -> bool:
        """xdist's answer; when it is yes, a worker still joining is told
        to shut down too. (xdist shuts down the scheduler's ``nodes`` once
        the tests are finished, and a joining worker is not one of them
        yet: it would wait for work forever, and the session with it.)"""
        finished = super().tests_finished  # type: ignore[misc]
        if finished:
            for node in self._joining:
                if not node.shutting_down:
                    node.shutdown()
        return finished

    def remove_node(self, node: Any) -> Optional[str]:
        """A worker left (it finished or died). Returns the test it was
        running, the first one not done, or None when it had none; that
        test counts as done (the crash is its result) and the tests it had
        not started go back into the queue. ``KeyError`` for a worker the
        scheduler does not know, as xdist's."""
        return self._take_back(node, crashed=True)

    def retire_node(self, node: Any) -> None:
        """A worker retired after a test poisoned it (see
        :mod:`pytest_abort._poison`): every test it had not run goes back
        into the queue, none counts as crashed."""
        self._take_back(node, crashed=False)

    def _take_back(self, node: Any, crashed: bool) -> Optional[str]:
        if node in self._joining:
            self._joining.discard(node)
            return None
        workload = self.assigned_work.pop(node)
        running = next((t for unit in workload.values() for t, done in unit.items() if not done), None)
        if running is None:
            return None
        for scope, unit in workload.items():
            left = {t: False for t, done in unit.items() if not done and not (crashed and t == running)}
            if left:
                self.workqueue.setdefault(scope, {}).update(left)
        # Hands the queue to the workers that have room, as xdist does.
        self.schedule()  # type: ignore[attr-defined]
        return running


#: xdist's scheduler class -> the same with :class:`_RunOnce` in front.
_CLASSES: Dict[type, type] = {}


def run_once(sched: Any, config: Any, log: Any) -> Any:
    """``sched``, the scheduler xdist made, or, when it is exactly one of
    xdist's scope schedulers, a fresh one of that class with
    :class:`_RunOnce` in front (see the module's docstring)."""
    if not _CLASSES:
        import xdist.scheduler

        for name in ("LoadScopeScheduling", "LoadFileScheduling", "LoadGroupScheduling"):
            base = getattr(xdist.scheduler, name, None)  # loadgroup: xdist >= 2.5
            if isinstance(base, type):
                _CLASSES[base] = type(f"RunOnce{name}", (_RunOnce, base), {"__doc__": _RunOnce.__doc__})
    cls = _CLASSES.get(type(sched))
    return sched if cls is None else cls(config, log)
