"""The fork server's safety check: which processes may collect once and run
their tests in forked children. Real /proc of real processes where one can
be made (threads, this process), and a copy of /proc/self with one thing
changed where the machine cannot make it (a GPU driver mapped)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pytest_abort._resume import GPU_LIBRARIES, fork_unsafe

_UNTRACED = "import os, sys; sys.path[:0] = {path!r}; from pytest_abort._resume import fork_unsafe; print(fork_unsafe())"


def _fake_proc(tmp_path: Path, threads: int = 1, maps: str = "", tracer: int = 4242) -> Path:
    """A /proc/PID folder with the three files the check reads."""
    proc = tmp_path / "proc"
    (proc / "task").mkdir(parents=True)
    for i in range(threads):
        (proc / "task" / str(1000 + i)).mkdir()
    with open("/proc/self/maps", encoding="utf-8") as f:
        real_maps = f.read()
    (proc / "maps").write_text(real_maps + maps)
    (proc / "status").write_text(f"Name:\tpython\nState:\tR (running)\nTracerPid:\t{tracer}\nUid:\t0\t0\t0\t0\n")
    return proc


def test_a_single_threaded_traced_process_may_fork(tmp_path):
    assert fork_unsafe(str(_fake_proc(tmp_path))) is None


def test_threads_are_unsafe(tmp_path):
    assert fork_unsafe(str(_fake_proc(tmp_path, threads=16))) == "it has 16 threads"


def test_this_process_with_a_live_thread_is_unsafe():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        why = fork_unsafe()
    finally:
        stop.set()
        t.join()
    assert why is not None and why.endswith("threads"), why


@pytest.mark.parametrize(
    "lib",
    [
        "/usr/lib/x86_64-linux-gnu/libcuda.so.580.159",
        "/opt/rocm/lib/libamdhip64.so.6",
        "/opt/rocm/lib/libhsa-runtime64.so.1",
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
    ],
)
def test_a_gpu_driver_mapped_is_unsafe(tmp_path, lib):
    line = f"7f0000000000-7f0000100000 r-xp 00000000 08:01 123456                     {lib}\n"
    why = fork_unsafe(str(_fake_proc(tmp_path, maps=line)))
    assert why == f"a GPU driver is loaded ({os.path.basename(lib)})"
    assert os.path.basename(lib).startswith(GPU_LIBRARIES)


def test_a_library_named_like_a_driver_elsewhere_in_the_path_is_not_a_driver(tmp_path):
    line = "7f0000000000-7f0000100000 r-xp 00000000 08:01 1 /home/libcuda/lib/libfoo.so\n"
    assert fork_unsafe(str(_fake_proc(tmp_path, maps=line))) is None


def test_without_a_tracer_it_is_unsafe(tmp_path):
    assert fork_unsafe(str(_fake_proc(tmp_path, tracer=0))) == "it is not supervised with ptrace"


def test_an_unreadable_proc_folder_is_unsafe(tmp_path):
    why = fork_unsafe(str(tmp_path / "gone"))
    assert why is not None and why.startswith("cannot count its threads"), why


def test_a_real_untraced_process_is_unsafe():
    """A plain Python process has no tracer (the traced case is the
    wrapper's: tests/it/resume.rs)."""
    path = [str(Path(__import__("pytest_abort").__file__).parent.parent)]
    out = subprocess.run(
        [sys.executable, "-c", _UNTRACED.format(path=path)], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "it is not supervised with ptrace"
