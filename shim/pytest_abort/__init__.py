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


#: The modules a pytest process under the wrapper (or keeping markers)
#: imports at start-up, in the order their own imports need.
_ACTIVE = ("_common", "crash_file", "_journal", "_marker", "_poison", "_controller", "_shard", "plugin")


def _in_wrapper_copy(path: str) -> bool:
    """True when ``path`` (a real path) lies in the copy of this package that
    pytest-abort-wrap puts first on ``PYTHONPATH`` (in its cache folder, or
    its state folder), which it names in ``$PYTEST_ABORT_WRAP_SHIM``."""
    import os

    shim = os.environ.get("PYTEST_ABORT_WRAP_SHIM", "")
    return bool(shim) and path.startswith(os.path.join(os.path.realpath(shim), ""))


def _import_plugin() -> None:
    """Imports the plugin's modules through Python's own source loader before
    pytest can: pytest marks the package for assertion rewriting when it
    loads it as a plugin, and a module its rewriting importer loads is
    parsed and compiled again at every start unless pytest may write its own
    bytecode beside it, and is read back through many small reads. Python's
    loader uses the bytecode Python (or pip, installing the package) cached.
    The modules say PYTEST_DONT_REWRITE, so pytest does not warn that they
    were imported before it could rewrite them.

    Under the wrapper, the package is the wrapper's own copy (in a per-user
    cache folder named after the package's content, or in the run's state
    folder, see :func:`_in_wrapper_copy`); when
    ``PYTHONDONTWRITEBYTECODE`` keeps Python from caching bytecode, the
    first pytest process that imports this copy caches its modules'
    bytecode there anyway, as installing a package does, so no later
    process (xdist workers, resume runs, later wrapper runs) compiles them
    again. Only the compiling is done with caching on, not the modules'
    execution, so nothing is written anywhere else."""
    import os
    import sys
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_file_location

    env = os.environ
    here = os.path.dirname(os.path.realpath(__file__))
    cache = sys.dont_write_bytecode and _in_wrapper_copy(here)
    active = any(env.get(v) for v in ("PYTEST_ABORT_WRAP_STATE", "PYTEST_ABORT_LAST_RUNNING_DIR", "PYTEST_ABORT_LAST_RUNNING_FILE"))
    package = sys.modules[__name__]
    for name in _ACTIVE if active else ("_common", "plugin"):
        full = f"{__name__}.{name}"
        if full in sys.modules:
            continue
        path = os.path.join(here, name + ".py")
        loader = SourceFileLoader(full, path)
        module = module_from_spec(spec_from_file_location(full, path, loader=loader))
        if cache:
            sys.dont_write_bytecode = False
        try:
            code = loader.get_code(full)
        finally:
            if cache:
                sys.dont_write_bytecode = True
        sys.modules[full] = module
        try:
            exec(code, module.__dict__)
        except BaseException:
            del sys.modules[full]
            raise
        setattr(package, name, module)


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
