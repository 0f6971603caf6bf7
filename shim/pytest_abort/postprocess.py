"""``pytest-abort-postprocess``: add crashed tests from a crash log to
pytest-json-report, pytest-html and pytest-csv reports.

The command is the Rust binary of the same name; this module is the
original's entry point, ``pytest_abort.postprocess:main``, and
``python -m pytest_abort.postprocess`` launches it. From Python, call
:func:`pytest_abort.abort_handling.postprocess_reports_from_crash_log`.
"""

from __future__ import annotations

from typing import List, Optional

from ._exec import exec_binary


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``pytest-abort-postprocess`` with ``argv`` (default: ``sys.argv[1:]``)."""
    return exec_binary("pytest-abort-postprocess", argv)


if __name__ == "__main__":
    raise SystemExit(main())
