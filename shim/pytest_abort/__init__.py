"""pytest-abort: name the test that a hard crash (SIGSEGV, SIGABRT, OOM kill,
hang) took down, and keep every result that was already earned.

The pytest plugin lives in :mod:`pytest_abort.plugin`. This package module is
what the ``pytest11`` entry point and ``-p pytest_abort`` load; it registers
the plugin module by name, so that loading it by any of its names, any number
of times, gives exactly one active plugin and never "Plugin already
registered".

PYTEST_DONT_REWRITE: no assertions here to rewrite (see :mod:`pytest_abort.plugin`).
"""

from __future__ import annotations

# pytest loads the modules named here through its name-deduplicating import.
pytest_plugins = ["pytest_abort.plugin"]


def _import_plugin() -> None:
    """Imports the plugin before pytest marks ``pytest_abort.plugin`` for
    assertion rewriting (it does so for every plugin it imports by name), so
    that it loads through Python's own importer, from bytecode when there is
    some, instead of being parsed, rewritten and compiled at every pytest
    start (its docstring says PYTEST_DONT_REWRITE, so pytest does not warn).

    Under the wrapper, the package is a copy in the wrapper's state folder;
    when ``PYTHONDONTWRITEBYTECODE`` keeps Python from caching bytecode, the
    first pytest process of the wrapper run caches this package's bytecode
    there anyway, so later ones (xdist workers, resume runs) do not compile
    it again. Only the package's own modules are imported while caching is
    on (their standard-library imports come first), so nothing is written
    anywhere else. Python checks each cached file against its source."""
    import os
    import sys

    state = os.environ.get("PYTEST_ABORT_WRAP_STATE")
    here = os.path.dirname(os.path.realpath(__file__))
    ours = bool(state) and here.startswith(os.path.join(os.path.realpath(state), ""))
    if not (ours and sys.dont_write_bytecode):
        from . import plugin  # noqa: F401

        return
    import datetime, faulthandler, fcntl, gc, heapq, json, json.encoder, mmap, signal, time, typing, zlib  # noqa: E401,F401

    import pytest  # noqa: F401

    sys.dont_write_bytecode = False
    try:
        from . import _common, _controller, _gpu, _journal, _marker, _resume, _shard, crash_file, plugin  # noqa: F401
    finally:
        sys.dont_write_bytecode = True


_import_plugin()



def __getattr__(name: str):
    # Looked up on first use only: reading distribution metadata costs tens
    # of milliseconds at every pytest start.
    if name == "__version__":
        try:
            from importlib.metadata import PackageNotFoundError, version

            try:
                return version("pytest-abort")
            except PackageNotFoundError:  # pragma: no cover - embedded copy
                return "0.0.0"
        except ImportError:  # pragma: no cover
            return "0.0.0"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__"]
