"""GPU slots (``pytest-abort-wrap --gpus``): every xdist worker of a wrapped
run takes a GPU slot of its own and sees only that slot's GPU.

The slot is taken as the worker imports the plugin (:mod:`pytest_abort.plugin`
calls :func:`take_slot` at import), which pytest does before it imports any
conftest or test module: a framework (torch, JAX, CuPy) imported by them
initialises on the slot's GPU. A slot is an exclusive ``flock`` on
``<state>/gpu/slot-<i>.lock``, held for the worker's life; the kernel frees
it when the worker dies, and the worker xdist starts in its place takes it
(the lowest free slot; one of the first workers, ``gwN``, tries slot N first). Slot ``i``
is GPU ``gpus[i % len(gpus)]``; more workers than slots get further slots
round the GPUs again. Slots of a quarantined GPU (``<state>/gpu/quarantined``,
written by the wrapper) are not taken while another GPU is usable.

The worker then sets the vendor's variables: NVIDIA ``CUDA_VISIBLE_DEVICES``
= the GPU's id or UUID; AMD ``ROCR_VISIBLE_DEVICES`` = its physical id with
``HIP_VISIBLE_DEVICES=0`` and no ``CUDA_VISIBLE_DEVICES``; and, for tests,
``PYTEST_ABORT_GPU`` (the GPU) and ``PYTEST_ABORT_GPU_SLOT`` (the slot).

After a worker death the wrapper leaves ``slot-<i>.dead`` with the dead pid:
the slot's next worker waits (at most the plan's ``release_wait`` seconds)
while ``nvidia-smi`` (or ``amd-smi``/``rocm-smi``) still lists that pid on a
GPU, and goes on at once when no such tool exists.

The serial pytest (and the xdist controller) takes no slot: it sees every GPU
of the plan, which the wrapper set. :func:`add_numprocesses` gives pytest
``-n (GPUs x per_gpu)`` when it was not given ``-n``.

PYTEST_DONT_REWRITE: no assertions here to rewrite (see :mod:`pytest_abort.plugin`).
"""

from __future__ import annotations

import json
import os
import time
from typing import List, Optional, Tuple

ENV_GPU_PLAN = "PYTEST_ABORT_GPU_PLAN"
ENV_GPU = "PYTEST_ABORT_GPU"
ENV_GPU_SLOT = "PYTEST_ABORT_GPU_SLOT"

#: The held slot lock (a file descriptor open for the process's life).
_held_fd: Optional[int] = None

#: Most slots beyond the planned ones a worker looks at (more workers than
#: slots, or a quarantined GPU's replacements).
_OVERFLOW = 256


def read_plan() -> Optional[dict]:
    """The wrapper's plan (``PYTEST_ABORT_GPU_PLAN``), or None."""
    try:
        plan = json.loads(os.environ.get(ENV_GPU_PLAN) or "null")
    except ValueError:
        return None
    if not isinstance(plan, dict) or not plan.get("gpus"):
        return None
    return plan


def take_slot(state: str, worker: str, run: str) -> Optional[Tuple[int, str]]:
    """Takes a free slot for this worker, pins the process to its GPU and
    returns ``(slot, gpu)``; None without a plan or when no slot is free."""
    global _held_fd
    plan = read_plan()
    if plan is None:
        return None
    import fcntl

    folder = os.path.join(state, "gpu")
    os.makedirs(folder, exist_ok=True)
    gpus = [str(g) for g in plan["gpus"]]
    slots = len(gpus) * max(int(plan.get("per_gpu") or 1), 1)
    usable = set(gpus) - _quarantined(folder) or set(gpus)
    for slot in _order(worker, slots):
        gpu = gpus[slot % len(gpus)]
        if gpu not in usable:
            continue
        fd = os.open(os.path.join(folder, "slot-%d.lock" % slot), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held_fd = fd
        _pin(plan.get("vendor"), gpu, slot)
        _log(folder, {"pid": os.getpid(), "worker": worker, "slot": slot, "gpu": gpu, "run": int(run)})
        _wait_for_release(folder, slot, plan.get("vendor"), float(plan.get("release_wait") or 0))
        return slot, gpu
    return None


def _order(worker: str, slots: int) -> List[int]:
    """Slots in the order this worker tries them: the lowest free, except
    that one of the first workers (``gwN`` with N below xdist's
    ``PYTEST_XDIST_WORKER_COUNT``; replacements get higher numbers) tries
    slot N first, so that ``gwN`` is on slot N when it can be."""
    order = list(range(slots + _OVERFLOW))
    digits = worker[2:] if worker.startswith("gw") else ""
    first = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if digits.isdigit() and first.isdigit() and int(digits) < min(slots, int(first)):
        order.remove(int(digits))
        order.insert(0, int(digits))
    return order


def _quarantined(folder: str) -> set:
    try:
        with open(os.path.join(folder, "quarantined")) as f:
            return {line.strip() for line in f if line.strip()}
    except OSError:
        return set()


def _pin(vendor: Optional[str], gpu: str, slot: int) -> None:
    """Sets the vendor's variables for this process (and what it starts)."""
    if vendor == "amd":
        os.environ["ROCR_VISIBLE_DEVICES"] = gpu
        os.environ["HIP_VISIBLE_DEVICES"] = "0"
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ[ENV_GPU] = gpu
    os.environ[ENV_GPU_SLOT] = str(slot)


def _log(folder: str, take: dict) -> None:
    """Appends the take to ``slots.jsonl`` (one write: whole lines)."""
    try:
        fd = os.open(os.path.join(folder, "slots.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, (json.dumps(take) + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # the record then says the GPU from the marker


def _wait_for_release(folder: str, slot: int, vendor: Optional[str], limit: float) -> None:
    """After a death on this slot: waits (at most ``limit`` seconds) while
    the vendor's tool still lists the dead pid on a GPU."""
    note = os.path.join(folder, "slot-%d.dead" % slot)
    try:
        with open(note) as f:
            dead = f.read().strip()
        os.unlink(note)
    except OSError:
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        listed = gpu_pids(vendor)
        if listed is None or dead not in listed:
            return
        time.sleep(0.25)


def gpu_pids(vendor: Optional[str]) -> Optional[set]:
    """The pids the vendor's tool lists on a GPU; None when no tool runs."""
    import subprocess

    if vendor == "amd":
        tools = (["amd-smi", "process"], ["rocm-smi", "--showpids"])
    else:
        tools = (["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],)
    for argv in tools:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        return parse_pids(out)
    return None


def parse_pids(text: str) -> set:
    """The pids in a tool's listing: lines that start with a pid
    (``nvidia-smi --query-compute-apps`` CSV, ``rocm-smi --showpids``'s
    table) or say ``PID: N`` (``amd-smi process``)."""
    pids = set()
    for line in text.splitlines():
        words = line.replace(",", " ").replace(":", " ").split()
        if words and words[0].isdigit():
            pids.add(words[0])
        elif len(words) > 1 and words[0].lower() == "pid" and words[1].isdigit():
            pids.add(words[1])
    return pids


def add_numprocesses(early_config, args: List[str]) -> None:
    """Prepends ``-n (GPUs x per_gpu)`` to pytest's arguments (in
    ``pytest_load_initial_conftests``, the way pytest's documentation adds
    options) unless they hold ``-n``/``--numprocesses`` or xdist is not
    loaded."""
    plan = read_plan()
    workers = plan.get("workers") if plan else None
    if not workers or not early_config.pluginmanager.hasplugin("xdist"):
        return
    for a in args:
        if a == "--":
            break
        if a.startswith("-n") or a == "--numprocesses" or a.startswith("--numprocesses="):
            return
    args[:0] = ["-n", str(int(workers))]


class SlotHealth:
    """In a worker with a slot: its first passed test clears the GPU's count
    of worker deaths in a row (``<state>/gpu/deaths-<k>``), which the wrapper
    uses for ``--gpu-quarantine``."""

    def __init__(self, state: str, gpu: str) -> None:
        plan = read_plan() or {}
        gpus = [str(g) for g in plan.get("gpus", [])]
        index = gpus.index(gpu) if gpu in gpus else -1
        self.path = os.path.join(state, "gpu", "deaths-%d" % index) if index >= 0 else None

    def pytest_runtest_logreport(self, report) -> None:
        """Clears the count at the first passed test, then never again."""
        if self.path is None or report.when != "call" or not report.passed:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.path = None
