//! Exit statuses chosen by the error's type, bad input on the command line,
//! and messages that say what really happened (issue 10 items 7, 16-20).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::util::{python, Suite, CRASHY};

fn wrap_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.args(args);
    cmd
}

#[test]
fn a_state_folder_named_command_not_found_is_not_exit_127() {
    let s = Suite::new();
    let r = s.run_cmd(wrap_cmd(&["--state-dir", "/proc/command not found", "--", "true"]));
    assert_eq!(r.code(), 70, "exit status from the error's type, not its text: {}", r.dump());
    assert!(r.stderr().contains("cannot create the state folder"), "{}", r.dump());
}

#[test]
fn an_interpreter_that_cannot_be_read_is_not_command_not_found() {
    let s = Suite::new();
    let locked = s.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let interp = locked.join("python");
    std::fs::write(&interp, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&interp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut everyone = s.path().to_path_buf();
    while everyone.parent().is_some() && everyone != std::path::Path::new("/tmp") {
        let _ = std::fs::set_permissions(&everyone, std::fs::Permissions::from_mode(0o755));
        everyone.pop();
    }
    // Root reads everything: run the wrapper as nobody, for whom stat() of
    // the interpreter fails with EACCES.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_pytest-abort-wrap")]);
        c
    } else {
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"))
    };
    let mut cmd = cmd;
    cmd.arg("--").arg(&interp).args(["-m", "pytest"]);
    let r = s.run_cmd(cmd);
    let _ = std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755));
    assert_ne!(r.code(), 127, "{}", r.dump());
    assert_eq!(r.code(), 126, "found but cannot be executed: {}", r.dump());
    assert!(!r.stderr().contains("command not found"), "{}", r.dump());
    assert!(r.stderr().contains("Permission denied"), "{}", r.dump());
}

#[test]
fn absurd_timeouts_are_usage_errors_not_panics() {
    let s = Suite::new();
    for flag in ["--timeout", "--test-timeout"] {
        let r = s.run_cmd(wrap_cmd(&[flag, "1e20", "--", "true"]));
        assert_eq!(r.code(), 64, "{flag}: {}", r.dump());
        assert!(!r.stderr().contains("panicked"), "{flag}: {}", r.dump());
        assert!(r.stderr().contains(flag), "{flag}: the option is named: {}", r.dump());
    }
}

#[test]
fn reproducing_an_id_pytest_does_not_collect_stops_after_the_first_run() {
    let s = Suite::new();
    s.write("test_x.py", "def test_ok(): pass\n");
    s.write(
        "conftest.py",
        &format!(
            "{}\ndef pytest_sessionstart(session):\n    open('sessions.txt', 'a').write('x\\n')\n",
            crate::util::COUNTING_CONFTEST
        ),
    );
    let r = s.wrap(&["--reproduce", "test_x.py::test_nope", "--repeat", "5"], &["test_x.py"]);
    assert_eq!(r.code(), 4, "{}", r.dump());
    assert!(r.stderr().contains("not collected"), "{}", r.dump());
    let sessions = std::fs::read_to_string(s.path().join("sessions.txt")).unwrap_or_default();
    assert_eq!(sessions.lines().count(), 1, "one pytest run, not five: {}", r.dump());
}

#[test]
fn a_pytest_usage_error_is_named_as_such() {
    let s = Suite::new();
    s.write("test_x.py", "def test_ok(): pass\n");
    let r = s.wrap(&[], &["--no-such-pytest-option", "test_x.py"]);
    assert_eq!(r.code(), 4, "pytest's own status: {}", r.dump());
    let err = r.stderr();
    assert!(!err.contains("no pytest process loaded the pytest-abort plugin"), "{err}");
    assert!(err.contains("usage error"), "{err}");
}

#[test]
fn a_python_without_pytest_is_named_as_such() {
    let s = Suite::new();
    let venv = s.path().join("bare");
    let made = Command::new("python3").args(["-m", "venv", "--without-pip"]).arg(&venv).status().unwrap();
    assert!(made.success(), "cannot make a venv without pytest");
    let mut cmd = wrap_cmd(&["--"]);
    cmd.arg(venv.join("bin/python")).args(["-m", "pytest", "-q"]);
    let r = s.run_cmd(cmd);
    assert_eq!(r.code(), 1, "the command's own status (README): {}", r.dump());
    let err = r.stderr();
    assert!(!err.contains("no pytest process loaded the pytest-abort plugin"), "{err}");
    assert!(err.contains("has no pytest"), "{err}");
}

#[test]
fn after_a_collection_crash_the_rerun_says_what_it_is_for() {
    let s = Suite::new();
    s.write("test_a.py", "def test_a1(): pass\n");
    s.write("test_b.py", "import ctypes\nctypes.string_at(0)\ndef test_never(): pass\n");
    s.write("test_c.py", "def test_c1(): pass\n");
    let r = s.wrap(&[], &[]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let err = r.stderr();
    assert!(!err.contains("resuming the 0 tests"), "{err}");
    assert!(err.contains("run 2/5: collecting the files not yet collected (skipping test_b.py"), "{err}");
}

fn retry_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-retry"));
    cmd.args(args);
    cmd
}

#[test]
fn retry_usage_errors_name_the_option_on_one_stderr_line() {
    let s = Suite::new();
    s.write("test_crashy.py", CRASHY);
    let log = s.crash_log();
    let cases: [(&[&str], &str); 2] = [
        (&["--crash-log", log.to_str().unwrap(), "--max-runs", "0", "--", "pytest"], "--max-runs"),
        (&["--crashlog", log.to_str().unwrap(), "--", "pytest"], "--crashlog"),
    ];
    for (args, option) in cases {
        let r = s.run_cmd(retry_cmd(args));
        assert_eq!(r.code(), 2, "{args:?}: {}", r.dump());
        let err = r.stderr();
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line: {}", r.dump());
        assert!(err.contains(option), "{args:?}: names {option}: {}", r.dump());
        assert!(r.stdout().trim().is_empty(), "{args:?}: nothing on stdout: {}", r.dump());
        assert_eq!(r.starts_of("::test_before"), 0, "{args:?}: nothing ran");
    }
}

#[test]
fn a_crash_log_that_could_not_be_written_is_not_named_in_the_summary() {
    let s = Suite::new();
    s.write("test_crashy.py", CRASHY);
    s.write("afile", "I am a file\n");
    let blocked = s.path().join("afile/c.jsonl");
    let mut cmd = wrap_cmd(&["--crash-log", blocked.to_str().unwrap(), "--"]);
    cmd.arg(python()).args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_crashy.py"]);
    let r = s.run_cmd(cmd);
    assert_eq!(r.code(), 74, "{}", r.dump());
    let err = r.stderr();
    assert!(err.contains("CRASHED test_crashy.py::test_crash"), "{err}");
    assert!(!err.contains(&format!("crash log: {}", blocked.display())), "{err}");
}
