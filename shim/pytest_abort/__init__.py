"""pytest-abort: name the test that a hard crash (SIGSEGV, SIGABRT, OOM kill,
hang) took down, and keep every result that was already earned.

The pytest plugin lives in :mod:`pytest_abort.plugin`. This package module is
what the ``pytest11`` entry point and ``-p pytest_abort`` load; it registers
the plugin module by name, so that loading it by any of its names, any number
of times, gives exactly one active plugin and never "Plugin already
registered".
"""

from __future__ import annotations

# pytest loads the modules named here through its name-deduplicating import.
pytest_plugins = ["pytest_abort.plugin"]

try:
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("pytest-abort")
    except PackageNotFoundError:  # pragma: no cover - embedded copy
        __version__ = "0.0.0"
except ImportError:  # pragma: no cover
    __version__ = "0.0.0"

__all__ = ["__version__"]
