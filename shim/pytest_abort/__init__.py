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
