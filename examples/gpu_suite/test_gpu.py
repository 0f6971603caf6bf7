"""GPU suite for the device check (docs/gpu-check.md): passing torch tests,
a real driver crash (bad host pointer to cuMemcpyHtoD_v2: SIGSEGV inside
libcuda) and a spinning CUDA kernel that only a timeout can stop.
Needs an NVIDIA GPU with torch and cupy; skipped elsewhere."""

import ctypes

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)


def test_add_on_gpu():
    x = torch.arange(1024, device="cuda", dtype=torch.float32)
    assert float((x + x).sum()) == 2 * float(x.sum())


def test_matmul_on_gpu():
    a = torch.eye(64, device="cuda")
    b = torch.randn(64, 64, device="cuda")
    assert torch.allclose(a @ b, b)


def test_driver_crash_bad_host_pointer():
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


def test_spinning_kernel_hangs():
    cupy = pytest.importorskip("cupy")
    spin = cupy.RawKernel(
        r'extern "C" __global__ void spin(volatile int* flag) { while (*flag == 0) { } }', "spin"
    )
    flag = cupy.zeros(1, dtype=cupy.int32)
    spin((1,), (1,), (flag,))
    cupy.cuda.Device().synchronize()


def test_after_on_gpu():
    assert torch.ones(8, device="cuda").sum().item() == 8
