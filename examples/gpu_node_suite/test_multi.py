"""Runs in the multi-GPU phase: after the per-slot tests, alone, with every GPU
of the job visible and no slot taken."""

import os

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.multi_gpu
def test_sees_every_gpu(record_property):
    record_property("visible", os.environ.get("CUDA_VISIBLE_DEVICES"))
    record_property("worker", os.environ.get("PYTEST_XDIST_WORKER", "main"))
    assert "PYTEST_XDIST_WORKER" not in os.environ
    assert "PYTEST_ABORT_GPU_SLOT" not in os.environ
    n = torch.cuda.device_count()
    assert n == int(os.environ.get("GPU_CHECK_EXPECT_GPUS", "1"))
    for d in range(n):
        assert torch.ones(2, device=f"cuda:{d}").sum().item() == 2
