"""Helpers for the shim's tests: run real pytest processes (with the report
plugins) on small suites in temp folders, and locate the Rust binaries.

The tests expect ``pip install ./shim`` in the running Python and the Rust
binaries on PATH or in ``PYTEST_ABORT_BIN`` (``shim/run-tests.sh`` does both).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import pytest

# Variables of an outer pytest-abort, wrapper or xdist run that must not leak
# into the pytest processes the tests start.
_LEAKY = (
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_ABORT_LAST_RUNNING_FILE",
    "PYTEST_ABORT_LAST_RUNNING_DIR",
    "PYTEST_ABORT_CRASHED_TESTS_LOG",
    "PYTEST_ABORT_WRAP_STATE",
    "PYTEST_ABORT_WRAP_RUN",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONPATH",
)

SEGFAULT = "import ctypes\nctypes.string_at(0)\n"


def clean_env(**extra: str) -> Dict[str, str]:
    """This process's environment minus run-specific variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    env.update(extra)
    return env


class Suite:
    """A pytest suite in a temp folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def pytest(self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """``python -m pytest -p no:cacheprovider ARGS`` in the suite folder."""
        cmd: List[str] = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
        return subprocess.run(
            cmd,
            cwd=self.root,
            env=env if env is not None else clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def suite(tmp_path: Path) -> Suite:
    return Suite(tmp_path)


def read_jsonl(path: Path) -> List[dict]:
    if not path.exists():
        return []
    # (NULs: the unused rest of a journal its process had mapped when killed.)
    text = path.read_text(encoding="utf-8").replace("\0", "\n")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def html_blob(path: Path) -> dict:
    """The parsed ``data-jsonblob`` of a pytest-html report."""
    import html
    import re

    text = path.read_text(encoding="utf-8")
    m = re.search(r'data-jsonblob="([^"]*)"', text) or re.search(r"data-jsonblob='([^']*)'", text)
    assert m, f"{path}: no data-jsonblob"
    return json.loads(html.unescape(m.group(1)))


def rust_bin_dir() -> Optional[str]:
    """Folder of the Rust binaries, or None when they cannot be found."""
    from pytest_abort.abort_handling import BinaryNotFoundError, find_binary

    try:
        return os.path.dirname(find_binary("pytest-abort"))
    except BinaryNotFoundError:
        return None


@pytest.fixture
def rust_bin() -> str:
    folder = rust_bin_dir()
    if folder is None:
        pytest.fail("the pytest-abort binaries are not built: run `cargo build --bins` and set PYTEST_ABORT_BIN")
    return folder
