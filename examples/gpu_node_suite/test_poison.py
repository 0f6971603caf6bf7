"""A real device-side assert poisons the CUDA context of its process; the
correct tests after it must run in another process and pass."""

import os

import pytest

torch = pytest.importorskip("torch")


def test_a_device_side_assert(check_dir):
    with open(os.path.join(check_dir, "poison.pid"), "w") as f:
        f.write(str(os.getpid()))
    x = torch.zeros(4, device="cuda")
    y = x[torch.tensor([10], device="cuda")]
    torch.cuda.synchronize()
    assert y.numel() == 1


@pytest.mark.parametrize("n", [1, 2, 3])
def test_b_correct_after_the_assert(check_dir, n):
    # Under --dist loadfile (and serially) the assert above ran first, in
    # the process this test would have shared with it.
    path = os.path.join(check_dir, "poison.pid")
    if os.path.exists(path):
        with open(path) as f:
            assert os.getpid() != int(f.read()), "ran in the poisoned process"
    assert torch.ones(n, device="cuda").sum().item() == n
