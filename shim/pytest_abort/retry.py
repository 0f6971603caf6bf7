"""``pytest-abort-retry``: rerun pytest without the tests that crashed.

The command is the Rust binary of the same name (the wrapper in deselect
mode, which unlike the original also records crashes of serial runs); this
module is the original's entry point, ``pytest_abort.retry:main``, and
``python -m pytest_abort.retry`` launches it.
"""

from __future__ import annotations

from typing import List, Optional

from ._exec import exec_binary


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``pytest-abort-retry`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return exec_binary("pytest-abort-retry", argv)


if __name__ == "__main__":
    raise SystemExit(main())
