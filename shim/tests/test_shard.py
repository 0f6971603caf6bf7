"""Shard assignment in the plugin: the same fixed expected shards as the Rust
side (src/shard/tests.rs), so the wrapper, the merge and every node agree."""

from __future__ import annotations

import zlib

from pytest_abort import _shard

# Same list and expectations as src/shard/tests.rs (IDS, DURATION_IDS).
IDS = [
    "tests/test_a.py::test_one",
    "tests/test_a.py::test_two[1-2]",
    'tests/test_b.py::TestK::test_x["q"]',
    "tests/test_b.py::TestK::test_y[<&>]",
    "tests/sub/test_c.py::test_ünïcode[ß-€]",
    "tests/sub/test_c.py::test_nl[a\nb]",
    "tests/test_d.py::test_d",
    "tests/test_d.py::test_e",
    "doc/mod.py::mod.func",
    "tests/test_e.py::test_z[0]",
]
HASH_EXPECTED = [
    (2, [2, 1, 2, 1, 1, 1, 1, 1, 1, 2], [2, 2, 2, 2, 1, 1, 2, 2, 1, 1]),
    (3, [1, 1, 3, 3, 1, 3, 1, 2, 2, 1], [3, 3, 1, 1, 2, 2, 3, 3, 1, 2]),
    (5, [2, 5, 4, 2, 3, 2, 3, 2, 3, 5], [2, 2, 5, 5, 3, 3, 5, 5, 5, 3]),
]
DURATION_IDS = ["a.py::t1", "a.py::t2", "b.py::t1", "c.py::t1", "c.py::t2", "d.py::t1"]
DURATIONS = {"a.py::t1": 5.0, "a.py::t2": 1.0, "b.py::t1": 3.0, "c.py::t1": 2.0, "c.py::t2": 2.0, "gone.py::t": 99.0}


def test_hash_assignment_matches_the_wrapper():
    assert zlib.crc32(b"123456789") == 0xCBF43926
    for n, by_test, by_file in HASH_EXPECTED:
        assert _shard.assign(IDS, n, "test", "hash", {}) == by_test
        assert _shard.assign(IDS, n, "file", "hash", {}) == by_file
        assert [_shard.shard_of(_shard.key_of(i, "test"), n) for i in IDS] == by_test
    assert _shard.key_of("a/b.py::C::t[x::y]", "file") == "a/b.py"


def test_duration_balancing_matches_the_wrapper():
    assert _shard.assign(DURATION_IDS, 2, "test", "duration", DURATIONS) == [1, 1, 2, 2, 1, 2]
    assert _shard.assign(DURATION_IDS, 2, "file", "duration", DURATIONS) == [1, 1, 2, 2, 2, 1]
    ids = [f"t.py::t{i}" for i in range(10)]
    shards = _shard.assign(ids, 4, "test", "duration", {"t.py::t0": float("nan"), "t.py::t1": -1.0, "t.py::t2": "x"})
    assert [shards.count(k) for k in (1, 2, 3, 4)] == [3, 3, 2, 2]
    assert _shard.median([3.0, 1.0, 2.0, 10.0]) == 2.5
    assert _shard.median([]) is None


def test_shards_partition_the_suite():
    ids = [f"tests/test_m{i % 37}.py::TestC::test_{i}[p{i * 7}]" for i in range(500)]
    durations = {n: float(i % 13) for i, n in enumerate(ids[::3])}
    for n in (1, 2, 3, 7, 16):
        for by in ("file", "test"):
            for mode in ("hash", "duration"):
                shards = _shard.assign(ids, n, by, mode, durations)
                assert len(shards) == len(ids) and all(1 <= s <= n for s in shards)
                if by == "file":
                    per_file = {}
                    for i, s in zip(ids, shards):
                        assert per_file.setdefault(_shard.key_of(i, by), s) == s


def test_plan_from_the_environment(monkeypatch):
    monkeypatch.setenv(_shard.ENV_SHARD, '{"index":2,"total":3,"by":"test","mode":"duration","durations":"/d.json"}')
    assert _shard.read_plan() == {"index": 2, "total": 3, "by": "test", "mode": "duration", "durations": "/d.json"}
    for bad in ("", "{", '{"index":4,"total":3}', '{"index":"x","total":3}', "[]"):
        monkeypatch.setenv(_shard.ENV_SHARD, bad)
        assert _shard.read_plan() is None, bad


def test_durations_file_tolerates_garbage(tmp_path):
    assert _shard.load_durations(None) == {}
    assert _shard.load_durations(str(tmp_path / "missing.json")) == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert _shard.load_durations(str(tmp_path / "bad.json")) == {}
    (tmp_path / "list.json").write_text("[1, 2]")
    assert _shard.load_durations(str(tmp_path / "list.json")) == {}
