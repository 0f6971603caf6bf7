//! Appending to a crash log whose last line has no final newline (a writer
//! killed mid-line): the new record starts on a fresh line, so readers keep
//! both the old record and the new one.

use std::process::Command;

use crate::util::{python, Suite};

const UNTERMINATED: &str = "{\"nodeid\": \"prev.py::test_prev\"}";

const SEGV: &str = "import ctypes\n\ndef test_seg():\n    ctypes.string_at(0)\n";

fn nodeids(run: &crate::util::Run) -> Vec<String> {
    run.records().into_iter().map(|r| r.nodeid).collect()
}

#[test]
fn wrapper_appends_on_a_fresh_line() {
    let s = Suite::new();
    s.write("test_s.py", SEGV);
    std::fs::write(s.crash_log(), UNTERMINATED).unwrap();
    let run = s.wrap(&[], &["-q", "test_s.py"]);
    assert_eq!(nodeids(&run), ["prev.py::test_prev", "test_s.py::test_seg"], "{}", run.dump());
}

#[test]
fn retry_appends_on_a_fresh_line() {
    let s = Suite::new();
    s.write("test_s.py", SEGV);
    std::fs::write(s.crash_log(), UNTERMINATED).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-retry"));
    cmd.arg("--crash-log").arg(s.crash_log()).arg("--").arg(python());
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_s.py"]);
    let run = s.run_cmd(cmd);
    assert_eq!(nodeids(&run), ["prev.py::test_prev", "test_s.py::test_seg"], "{}", run.dump());
}
