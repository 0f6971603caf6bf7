//! `pytest-abort-retry`: the original's command line, run by the wrapper in
//! deselect mode, so a serial run's crash is recorded and retried.

use std::process::Command;

use crate::util::{python, Suite, CRASHY};

fn retry(suite: &Suite, args: &[&str], pytest_args: &[&str]) -> crate::util::Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-retry"));
    cmd.args(args).arg("--").arg(python()).args(["-m", "pytest", "-q", "-p", "no:cacheprovider"]).args(pytest_args);
    suite.run_cmd(cmd)
}

#[test]
fn serial_crash_is_recorded_deselected_and_summarized() {
    let s = Suite::new();
    s.write("test_crashy.py", CRASHY);
    let log = s.crash_log();
    let run = retry(&s, &["--crash-log", log.to_str().unwrap()], &[]);
    let out = run.stdout();
    // The rerun without the crashed test passes: the original returns the
    // last run's status.
    assert_eq!(run.code(), 0, "{}", run.dump());
    let rec = run.record("test_crashy.py::test_crash");
    assert_eq!(rec.signal_name.as_deref(), Some("SIGSEGV"), "{}", run.dump());
    assert!(out.contains("=== pytest-abort-retry summary ==="), "{}", run.dump());
    assert!(out.contains("Crashed nodeids (unique): total=1 (new since start=1)"), "{}", run.dump());
    assert!(out.contains("\nCrashed nodeids:\ntest_crashy.py::test_crash\n"), "{}", run.dump());
    // Deselect mode reruns everything but the crashed test.
    assert_eq!(run.starts_of("::test_crash"), 1, "{}", run.dump());
    assert_eq!(run.starts_of("::test_before"), 2, "{}", run.dump());
    assert_eq!(run.starts_of("::test_after"), 1, "{}", run.dump());
}

#[test]
fn crash_log_from_env_and_clear_and_max_runs_one() {
    let s = Suite::new();
    s.write("test_crashy.py", CRASHY);
    let log = s.crash_log();
    std::fs::write(&log, "{\"nodeid\": \"old.py::test_old\"}\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-retry"));
    cmd.env("PYTEST_ABORT_CRASHED_TESTS_LOG", &log)
        .args(["--clear-crash-log", "--max-runs", "1", "--"])
        .arg(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"]);
    let run = s.run_cmd(cmd);
    // One run only, which died by SIGSEGV: Python's SystemExit(-11) status.
    assert_eq!(run.code(), 256 - 11, "{}", run.dump());
    let ids: Vec<String> = run.records().into_iter().map(|r| r.nodeid).collect();
    assert_eq!(ids, vec!["test_crashy.py::test_crash".to_string()], "{}", run.dump());
    assert_eq!(run.starts_of("::test_after"), 0, "{}", run.dump());
}

#[test]
fn usage_errors_exit_2_like_the_original() {
    let s = Suite::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-retry"));
    cmd.env_remove("PYTEST_ABORT_CRASHED_TESTS_LOG");
    let run = s.run_cmd(cmd);
    assert_eq!(run.code(), 2);
    assert!(run.stdout().contains("ERROR: provide a pytest command"), "{}", run.dump());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-retry"));
    cmd.env_remove("PYTEST_ABORT_CRASHED_TESTS_LOG").args(["--", "pytest"]);
    let run = s.run_cmd(cmd);
    assert_eq!(run.code(), 2);
    assert!(run.stdout().contains("ERROR: --crash-log not set"), "{}", run.dump());
}
