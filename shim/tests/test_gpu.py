"""The GPU slot parts of the plugin that need no xdist run (the slots
themselves are tested with real workers in tests/it/gpu.rs)."""

from __future__ import annotations

import json
import os

import pytest

from pytest_abort import _gpu


@pytest.fixture
def plan(monkeypatch):
    def set_plan(**kw):
        p = {"vendor": "nvidia", "gpus": ["0", "1"], "per_gpu": 1, "workers": 2, "release_wait": 0}
        p.update(kw)
        monkeypatch.setenv(_gpu.ENV_GPU_PLAN, json.dumps(p))
        for k in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", _gpu.ENV_GPU, _gpu.ENV_GPU_SLOT):
            monkeypatch.setenv(k, "")  # recorded, so what take_slot sets is undone
            monkeypatch.delenv(k)
        return p

    return set_plan


def test_parse_pids_reads_every_tool():
    nvidia = "4242, 812 MiB\n77, 100 MiB\n"
    rocm = (
        "============================ KFD Processes ============================\n"
        "KFD process information:\nPID\tPROCESS NAME\tGPU(s)\tVRAM USED\n1234\tpython\t1\t0\n"
    )
    amd = "GPU: 0\n    PROCESS_INFO:\n        NAME: python\n        PID: 5150\n"
    assert _gpu.parse_pids(nvidia) == {"4242", "77"}
    assert _gpu.parse_pids(rocm) == {"1234"}
    assert "5150" in _gpu.parse_pids(amd)


class _PM:
    def __init__(self, xdist):
        self.xdist = xdist

    def hasplugin(self, name):
        return self.xdist and name == "xdist"


class _Config:
    def __init__(self, xdist=True):
        self.pluginmanager = _PM(xdist)


def test_n_is_added_unless_given_or_without_xdist(plan):
    plan(workers=8)
    args = ["tests", "-q"]
    _gpu.add_numprocesses(_Config(), args)
    assert args == ["-n", "8", "tests", "-q"]
    for given in (["-n", "2"], ["-n4"], ["--numprocesses=3"], ["--numprocesses", "auto"]):
        args = ["tests"] + given
        _gpu.add_numprocesses(_Config(), args)
        assert args == ["tests"] + given
    args = ["tests"]
    _gpu.add_numprocesses(_Config(xdist=False), args)
    assert args == ["tests"]
    plan(workers=None)
    _gpu.add_numprocesses(_Config(), args)
    assert args == ["tests"]


def test_slots_are_exclusive_and_skip_a_quarantined_gpu(plan, tmp_path, monkeypatch):
    plan()
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    held = []
    try:
        assert _gpu.take_slot(str(tmp_path), "gw5", "1") == (0, "0")
        held.append(_gpu._held_fd)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0" and os.environ[_gpu.ENV_GPU_SLOT] == "0"
        (tmp_path / "gpu" / "quarantined").write_text("1\n")
        # Slot 1 is GPU 1, quarantined: the next free slot on GPU 0 is 2.
        assert _gpu.take_slot(str(tmp_path), "gw6", "1") == (2, "0")
        held.append(_gpu._held_fd)
        lines = (tmp_path / "gpu" / "slots.jsonl").read_text().splitlines()
        assert [json.loads(line)["slot"] for line in lines] == [0, 2]
    finally:
        for fd in held:
            os.close(fd)


def test_amd_pins_rocr_with_hip_zero(plan, tmp_path, monkeypatch):
    plan(vendor="amd", gpus=["4", "5"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "9")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    try:
        assert _gpu.take_slot(str(tmp_path), "gw1", "1") == (1, "5")
        assert (os.environ["ROCR_VISIBLE_DEVICES"], os.environ["HIP_VISIBLE_DEVICES"]) == ("5", "0")
        assert "CUDA_VISIBLE_DEVICES" not in os.environ and os.environ[_gpu.ENV_GPU] == "5"
    finally:
        os.close(_gpu._held_fd)
