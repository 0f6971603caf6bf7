"""A real driver segfault and a kernel that never ends (only --test-timeout
stops it), then a correct test."""

import ctypes

import pytest

torch = pytest.importorskip("torch")


def test_driver_segfault():
    cuda = ctypes.CDLL("libcuda.so.1")
    assert cuda.cuInit(0) == 0
    dev, ctx, dptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
    assert cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
    assert cuda.cuCtxSetCurrent(ctx) == 0
    size = 1 << 20
    assert cuda.cuMemAlloc_v2(ctypes.byref(dptr), ctypes.c_size_t(size)) == 0
    # A host pointer into unmapped memory: the driver's copy faults.
    cuda.cuMemcpyHtoD_v2(dptr, ctypes.c_void_p(0x10), ctypes.c_size_t(size))


def test_spinning_kernel():
    torch.cuda._sleep(1 << 50)  # a kernel spinning for days
    torch.cuda.synchronize()


def test_correct_after_faults():
    assert torch.ones(8, device="cuda").sum().item() == 8
