"""Each worker's slot: the GPU variables were set before this module imported
torch, and torch sees exactly one device (its slot's)."""

import os

import pytest

import conftest

torch = pytest.importorskip("torch")
AT_IMPORT = os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.mark.parametrize("i", range(16))
def test_slot_gpu(i, record_property):
    gpu = os.environ.get("PYTEST_ABORT_GPU")
    record_property("worker", os.environ.get("PYTEST_XDIST_WORKER", "main"))
    record_property("slot", os.environ.get("PYTEST_ABORT_GPU_SLOT"))
    record_property("gpu", gpu)
    record_property("pid", os.getpid())
    record_property("visible", AT_IMPORT)
    assert gpu is not None and AT_IMPORT is not None
    # The same value in conftest's and this module's import and now.
    assert conftest.SEEN_AT_IMPORT["CUDA_VISIBLE_DEVICES"] == AT_IMPORT
    assert os.environ["CUDA_VISIBLE_DEVICES"] == AT_IMPORT
    assert torch.cuda.device_count() == 1
    a = torch.randn(256, 256, device="cuda")
    assert torch.allclose(a @ torch.eye(256, device="cuda"), a)
