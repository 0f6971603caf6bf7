//! Issue 9 item 7: after a wrapped run, pytest's cache
//! (`.pytest_cache/v/cache/lastfailed`) holds every failed and crashed
//! test of all runs, so a plain `pytest --lf` picks exactly those.

use std::process::Command;

use serde_json::Value;

use crate::util::{python, Suite};

const SUITE: &str = r#"
import ctypes

def test_fail():
    assert False

def test_crash():
    ctypes.string_at(0)

def test_after():
    pass
"#;

#[test]
fn lastfailed_holds_every_failed_and_crashed_test_of_all_runs() {
    let s = Suite::new();
    s.write("test_lf.py", SUITE);
    // An earlier failure that this run's passing test clears, as pytest does.
    let cache = s.path().join(".pytest_cache/v/cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("lastfailed"), r#"{"test_lf.py::test_after": true, "test_gone.py::test_x": true}"#)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).arg("--").arg(python()).args(["-m", "pytest", "test_lf.py"]);
    let run = s.run_cmd(cmd);
    assert_eq!(run.code(), 1, "{}", run.dump());
    let text = std::fs::read_to_string(cache.join("lastfailed")).expect("lastfailed");
    let lf: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let mut keys: Vec<&str> = lf.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["test_gone.py::test_x", "test_lf.py::test_crash", "test_lf.py::test_fail"], "{text}");
    // The real consumer: pytest --lf selects exactly those of this file.
    let mut co = Command::new(python());
    co.args(["-m", "pytest", "--lf", "--co", "-q", "test_lf.py"]);
    let listed = s.run_cmd(co);
    let ids: Vec<String> = listed.stdout().lines().filter(|l| l.contains("::")).map(String::from).collect();
    assert_eq!(ids, ["test_lf.py::test_fail", "test_lf.py::test_crash"], "{}", listed.dump());
}
