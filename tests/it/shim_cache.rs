//! The plugin's bytecode is compiled once per machine and user, not once
//! per wrapper run (issue 12: the plugin's fixed cost per pytest process),
//! even where `PYTHONDONTWRITEBYTECODE` is set, as in many CI images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::util::{python, Run, Suite};

const SUITE: &str = "import ctypes\n\ndef test_a():\n    pass\n\ndef test_crash():\n    ctypes.string_at(0)\n\ndef test_b():\n    pass\n";

/// `pytest-abort-wrap [--state-dir STATE] -- python -m pytest test_suite.py`
/// with the bytecode switch on and the cache folder given.
fn wrap(s: &Suite, cache: &std::ffi::OsStr, state: Option<&Path>, pytest_args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log());
    if let Some(state) = state {
        cmd.arg("--state-dir").arg(state);
    }
    cmd.arg("--").arg(python()).args(["-m", "pytest", "-p", "no:cacheprovider", "test_suite.py"]).args(pytest_args);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").env("PYTEST_ABORT_CACHE_DIR", cache);
    s.run_cmd(cmd)
}

/// Every file under `dir` with its modification time and inode.
fn files(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), (m.modified().unwrap(), m.ino()));
            }
        }
    }
    out
}

#[test]
fn plugin_bytecode_is_compiled_once_and_reused_by_later_wrapper_runs() {
    let s = Suite::new();
    s.write("test_suite.py", SUITE);
    let cache = s.path().join("cache");
    let state = s.path().join("state");
    let first = wrap(&s, cache.as_os_str(), Some(&state), &[]);
    assert_eq!(first.code(), 1, "{}", first.dump());
    assert_eq!(first.starts_of("::test_b"), 1, "{}", first.dump());
    assert!(!state.join("py").exists(), "the shim went to the cache folder, not the state folder");
    let shims: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(shims.len(), 1, "one shim folder per plugin version: {shims:?}");
    let pycache = shims[0].join("pytest_abort/__pycache__");
    let compiled: Vec<String> = std::fs::read_dir(&pycache)
        .unwrap_or_else(|e| panic!("{}: {e}: no bytecode cached\n{}", pycache.display(), first.dump()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // (`__init__` itself is imported by pytest before the plugin can turn
    // caching on; it is small.)
    for module in ["plugin", "_marker", "_journal", "_controller"] {
        assert!(
            compiled.iter().any(|n| n.starts_with(&format!("{module}.")) && n.ends_with(".pyc")),
            "{module} not compiled into {}: {compiled:?}",
            pycache.display()
        );
    }
    let before = files(&shims[0]);

    // A later wrapper run (serial, and with xdist workers, each a pytest
    // process importing the plugin) loads that bytecode: nothing in the
    // cache folder is compiled or written again.
    std::fs::remove_file(s.crash_log()).unwrap();
    let second = wrap(&s, cache.as_os_str(), None, &["-n", "2"]);
    assert_eq!(second.code(), 1, "{}", second.dump());
    assert_eq!(second.records().len(), 1, "{}", second.dump());
    assert_eq!(files(&shims[0]), before, "the second run rewrote the cached shim or its bytecode");
}

#[test]
fn a_cache_folder_that_cannot_be_made_leaves_the_shim_in_the_state_folder() {
    let s = Suite::new();
    s.write("test_suite.py", SUITE);
    // A file where the cache folder would be.
    let blocked = s.path().join("not-a-folder");
    std::fs::write(&blocked, "x").unwrap();
    let state = s.path().join("state");
    let r = wrap(&s, blocked.as_os_str(), Some(&state), &[]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_eq!(r.starts_of("::test_b"), 1, "{}", r.dump());
    assert_eq!(r.records().len(), 1, "{}", r.dump());
    assert!(state.join("py/pytest_abort/plugin.py").exists());

    // An empty value asks for the state folder too.
    let state2 = s.path().join("state2");
    std::fs::remove_file(s.crash_log()).unwrap();
    let r = wrap(&s, std::ffi::OsStr::new(""), Some(&state2), &[]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert!(state2.join("py/pytest_abort/plugin.py").exists());
}
