"""GPU-node check suite (docs/gpu-check.md, issue 13): run it on a GPU machine
under `pytest-abort-wrap --gpus auto --per-gpu 4 --multi-gpu-marker multi_gpu`.

Every test module reads the GPU variables at import time, so a test that sees
its slot's GPU proves the slot was set before torch initialised CUDA."""

import os

import pytest

#: What this process saw before any test module imported torch.
SEEN_AT_IMPORT = {
    name: os.environ.get(name)
    for name in ("CUDA_VISIBLE_DEVICES", "PYTEST_ABORT_GPU", "PYTEST_ABORT_GPU_SLOT")
}


def pytest_configure(config):
    config.addinivalue_line("markers", "multi_gpu: needs every GPU of the job")


@pytest.fixture
def check_dir():
    """A folder shared by every worker of the check (GPU_CHECK_DIR)."""
    path = os.environ.get("GPU_CHECK_DIR", "/tmp/gpu-check")
    os.makedirs(path, exist_ok=True)
    return path
