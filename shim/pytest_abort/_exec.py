"""Console scripts of the original (``pytest-abort-retry``,
``pytest-abort-postprocess``) as thin launchers of the Rust binaries of the
same name, so that ``pip install`` of this package keeps those commands
working wherever the binaries are installed."""

from __future__ import annotations

import os
import sys
from typing import List, Optional

from .abort_handling import BinaryNotFoundError, find_binary


def exec_binary(name: str, argv: Optional[List[str]] = None) -> int:
    """Replaces this process with the Rust binary ``name`` and the given
    arguments (default: this process's). Returns 127 with a message when
    the binary cannot be found."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        binary = find_binary(name)
    except BinaryNotFoundError as e:
        sys.stderr.write(f"{name}: {e}\n")
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(binary, [binary, *args])
    return 127  # pragma: no cover - execv does not return
