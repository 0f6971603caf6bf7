"""Shard selection at collection time, for ``pytest-abort-wrap --shard K/N``.

The wrapper passes its plan in ``PYTEST_ABORT_SHARD`` (JSON: ``index``
(1-based), ``total``, ``by`` ``file``/``test``, ``mode`` ``hash``/``duration``,
optional ``durations`` file and ``collection`` file). Every pytest process
that collects (serial, or each xdist worker) keeps exactly the tests of its
shard; the assignment is the one ``src/shard/assign.rs`` documents and
computes, so it is the same on every node and Python version:

- key: the node id (``test``) or its part before the first ``::`` (``file``);
- ``hash``: shard ``zlib.crc32(key as UTF-8) % total + 1``;
- ``duration``: keys heaviest first (sum of their tests' durations, the
  median of the known ones for a test missing from the file; ties by key),
  each to the least loaded shard (ties: the lower one).

Tests of other shards are dropped without ``pytest_deselected``: for the
reports they were never collected here, so merging the shards' reports gives
the counts one unsharded run would (the user's own ``-k``/``--deselect``,
applied before, still count as deselected in every shard). The selector runs
after the user's deselection and before the wrapper's resume plan, so a
resumed run selects from the same tests as the first.

A shard that gets no test while the suite has some passes: pytest's "no
tests collected" (exit 5) becomes 0, with a line saying so.

PYTEST_DONT_REWRITE: no assertions here to rewrite (see :mod:`pytest_abort.plugin`).
"""

from __future__ import annotations

import heapq
import json
import os
import sys
import zlib
from typing import Dict, List, Optional, Sequence

import pytest

#: Set by pytest-abort-wrap: the shard plan (JSON).
ENV_SHARD = "PYTEST_ABORT_SHARD"

_NO_TESTS_COLLECTED = 5


def key_of(nodeid: str, by: str) -> str:
    """The key a test is assigned by: its node id, or its file's part."""
    if by == "test":
        return nodeid
    return nodeid.split("::", 1)[0]


def shard_of(key: str, total: int) -> int:
    """The 1-based shard of ``key`` among ``total`` in ``hash`` mode."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % max(total, 1) + 1


def median(values: List[float]) -> Optional[float]:
    """The median (mean of the middle two for an even count); None if empty."""
    values = sorted(values)
    n = len(values)
    if n == 0:
        return None
    if n % 2 == 1:
        return values[n // 2]
    return (values[n // 2 - 1] + values[n // 2]) / 2.0


_INF = float("inf")
#: The classes a usable duration has (not bool, a subclass of int).
_NUMBERS = (float, int)


def _weights(nodeids: Sequence[str], by: str, durations: Dict[str, float]):
    """The keys (first-seen order), each key's weight (its tests' usable
    durations summed in test order, the median of the usable ones for a
    test without one) and each test's key index."""
    # A usable duration: an int or float (not bool), finite, not negative;
    # -0.0 becomes 0.0. Inline: this runs once per test.
    known = [d + 0.0 if d.__class__ in _NUMBERS and 0.0 <= d < _INF else None for d in map(durations.get, nodeids)]
    fill = median([d for d in known if d is not None])
    if fill is None:
        fill = 1.0
    if by == "test" and len(set(nodeids)) == len(nodeids):
        # Every test its own key (the usual case): no key table to build.
        return nodeids, [fill if d is None else d for d in known], range(len(nodeids))
    index: Dict[str, int] = {}
    keys: List[str] = []
    weight: List[float] = []
    key_of_test = []
    for n, d in zip(nodeids, known):
        key = n if by == "test" else n.split("::", 1)[0]
        i = index.get(key)
        if i is None:
            i = index[key] = len(keys)
            keys.append(key)
            weight.append(0.0)
        weight[i] += fill if d is None else d
        key_of_test.append(i)
    return keys, weight, key_of_test


def _balance(nodeids: Sequence[str], total: int, by: str, durations: Dict[str, float]) -> List[int]:
    """Greedy duration balance: the 1-based shard of each test. Keys go
    heaviest first (ties by key), each onto the least loaded shard (ties:
    the lower one); two stable sorts on plain floats and strings order
    them faster than one sort on tuples."""
    keys, weight, key_of_test = _weights(nodeids, by, durations)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    order.sort(key=weight.__getitem__, reverse=True)
    heap = [(0.0, s) for s in range(max(total, 1))]
    shard_of_key = [0] * len(keys)
    replace = heapq.heapreplace
    for i in order:
        load, s = heap[0]
        shard_of_key[i] = s + 1
        replace(heap, (load + weight[i], s))
    if key_of_test.__class__ is range:
        return shard_of_key
    return [shard_of_key[i] for i in key_of_test]


def assign(nodeids: Sequence[str], total: int, by: str, mode: str, durations: Dict[str, float]) -> List[int]:
    """The 1-based shard of every test in ``nodeids`` (same order)."""
    if mode == "duration":
        return _balance(nodeids, total, by, durations)
    crc = zlib.crc32
    total = max(total, 1)
    if by == "test":
        return [crc(n.encode("utf-8", "surrogatepass")) % total + 1 for n in nodeids]
    cache: Dict[str, int] = {}
    out = []
    for n in nodeids:
        key = n.split("::", 1)[0]
        s = cache.get(key)
        if s is None:
            s = cache[key] = crc(key.encode("utf-8", "surrogatepass")) % total + 1
        out.append(s)
    return out


def load_durations(path: Optional[str]) -> Dict[str, float]:
    """The durations file (a JSON object node id -> seconds, the format
    pytest-split also uses); empty when missing or unreadable."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_plan() -> Optional[dict]:
    """The plan from ``PYTEST_ABORT_SHARD``; None when unset or invalid."""
    raw = os.environ.get(ENV_SHARD)
    if not raw:
        return None
    try:
        plan = json.loads(raw)
        index, total = int(plan["index"]), int(plan["total"])
    except (ValueError, KeyError, TypeError):
        return None
    if not 1 <= index <= total:
        return None
    plan["index"], plan["total"] = index, total
    return plan


def _write_once(path: str, nodeids: List[str]) -> None:
    """Writes the whole collection to ``path`` unless a process of this run
    already did (the first complete file wins: temp file, then link)."""
    if os.path.exists(path):
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"nodeids": nodeids}, f)
        os.link(tmp, path)
    except OSError:
        pass
    finally:
        try:
            os.remove(tmp)
        except OSError:
            pass


class ShardSelector:
    """Keeps the tests of one shard (see the module docs)."""

    def __init__(self, config: pytest.Config, plan: dict) -> None:
        self.config = config
        self.index = plan["index"]
        self.total = plan["total"]
        self.by = "test" if plan.get("by") == "test" else "file"
        self.mode = "duration" if plan.get("mode") == "duration" else "hash"
        self.durations_path = plan.get("durations")
        self.collection_path = plan.get("collection")
        self.collected: Optional[int] = None
        self.selected: Optional[int] = None

    def describe(self) -> str:
        return f"shard {self.index}/{self.total} by {self.by} ({self.mode})"

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items) -> None:
        nodeids = [item.nodeid for item in items]
        durations = load_durations(self.durations_path) if self.mode == "duration" else {}
        shards = assign(nodeids, self.total, self.by, self.mode, durations)
        if self.collection_path:
            _write_once(self.collection_path, nodeids)
        self.collected = len(items)
        items[:] = [item for item, s in zip(items, shards) if s == self.index]
        self.selected = len(items)

    def pytest_report_collectionfinish(self, config, start_path, items):
        if self.collected is None:
            return None
        return f"pytest-abort: {self.describe()}: {self.selected} of {self.collected} tests"

    def _suite_size(self) -> int:
        if self.collected is not None:
            return self.collected
        # An xdist controller collects nothing itself: its workers wrote
        # the collection.
        try:
            with open(self.collection_path or "", encoding="utf-8") as f:
                return len(json.load(f).get("nodeids") or ())
        except (OSError, ValueError, AttributeError):
            return 0

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session, exitstatus) -> None:
        if int(exitstatus) != _NO_TESTS_COLLECTED or getattr(self.config, "workerinput", None) is not None:
            return
        size = self._suite_size()
        if size == 0:
            return
        session.exitstatus = 0
        line = f"pytest-abort: {self.describe()} is empty: none of the {size} collected tests belong to it; passing"
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)
        else:
            sys.stderr.write(line + "\n")
