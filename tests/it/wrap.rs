//! End-to-end tests of `pytest-abort-wrap` on real pytest processes that
//! really segfault, abort, exit and get killed: each checks the crash
//! records, how many times each test started, and the exit status.

use crate::util::Suite;
use crate::util::Want::{self, Crash, Exit, Ran};
use pytest_abort::record::CrashKind;

const SEGV: &str = "import ctypes\n\ndef segv():\n    ctypes.string_at(0)\n";

fn suite_with(tests: &str) -> Suite {
    let s = Suite::new();
    s.write("test_suite.py", &format!("import os, signal, ctypes\n{SEGV}\n{tests}"));
    s
}

const MIXED: &str = r#"
def test_a(): pass
def test_b(): pass
def test_segv(): segv()
def test_c(): pass
def test_abort(): os.abort()
def test_d(): pass
"#;

/// How each test of [`MIXED`] ends, in any mode.
const MIXED_ENDS: &[(&str, Want)] = &[
    ("::test_a", Ran),
    ("::test_b", Ran),
    ("::test_segv", Crash("SIGSEGV", "call")),
    ("::test_c", Ran),
    ("::test_abort", Crash("SIGABRT", "call")),
    ("::test_d", Ran),
];

#[test]
fn serial_crashes_are_named_and_the_rest_resumes_once() {
    let s = suite_with(MIXED);
    let r = s.wrap(&[], &["test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let segv = r.record("::test_segv");
    assert_eq!(segv.signal, Some(11));
    assert_eq!(segv.signal_name.as_deref(), Some("SIGSEGV"));
    assert_eq!(segv.kind, CrashKind::Crash);
    assert_eq!(segv.worker, "main");
    assert_eq!(segv.source, "runner");
    assert_eq!(segv.phase, "call");
    assert_eq!(segv.run, 1);
    assert_eq!(segv.test_name, "test_segv");
    assert_eq!(segv.test_class, "");
    assert_eq!(segv.reason, "crashed with SIGSEGV (segmentation fault) during call");
    assert_eq!(segv.si_code.as_deref(), Some("SEGV_MAPERR"));
    assert_eq!(segv.fault_addr.as_deref(), Some("0x0"));
    assert!(segv.duration >= 0.0 && segv.duration < 30.0);
    let abort = r.record("::test_abort");
    assert_eq!(abort.signal_name.as_deref(), Some("SIGABRT"));
    // Resumed in a fork of the collected session: still run 1 (the
    // fresh-process resume is in resume.rs).
    assert_eq!(abort.run, 1);
    r.expect(MIXED_ENDS);
    let err = r.stderr();
    assert!(err.contains("4 passed, 0 failed, 2 crashed"), "{err}");
    assert!(err.contains("runs used 3/5; supervision: ptrace"), "{err}");
}

#[test]
fn real_sigbus_sigkill_and_exit_mid_test() {
    let s = suite_with(
        r#"
import mmap, tempfile
def test_bus():
    with tempfile.TemporaryFile() as f:
        f.write(b"x" * 4096); f.flush()
        m = mmap.mmap(f.fileno(), 4096)
        f.truncate(0)
        m[0]
def test_kill(): os.kill(os.getpid(), signal.SIGKILL)
def test_exit(): os._exit(3)
def test_ok(): pass
"#,
    );
    let r = s.wrap(&[], &["test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let bus = r.record("::test_bus");
    assert_eq!(bus.signal_name.as_deref(), Some("SIGBUS"));
    assert_eq!(bus.si_code.as_deref(), Some("BUS_ADRERR"));
    let kill = r.record("::test_kill");
    assert_eq!(kill.signal, Some(9));
    let exit = r.record("::test_exit");
    assert_eq!(exit.kind, CrashKind::Exit);
    assert_eq!(exit.exit_code, Some(3));
    assert_eq!(exit.signal, None);
    assert_eq!(exit.reason, "exited with code 3 during call");
    r.expect(&[
        ("::test_bus", Crash("SIGBUS", "call")),
        ("::test_kill", Crash("SIGKILL", "call")),
        ("::test_exit", Exit(3, "call")),
        ("::test_ok", Ran),
    ]);
}

#[test]
fn crash_in_fixture_setup_and_teardown_names_the_phase() {
    let s = suite_with(
        r#"
import pytest
@pytest.fixture
def bad_setup(): segv()
@pytest.fixture
def bad_teardown():
    yield
    os.abort()
def test_setup(bad_setup): pass
def test_teardown(bad_teardown): pass
def test_after(): pass
"#,
    );
    let r = s.wrap(&[], &["test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let td = r.record("::test_teardown");
    assert_eq!(td.reason, "crashed with SIGABRT (abort) during teardown");
    r.expect(&[
        ("::test_setup", Crash("SIGSEGV", "setup")),
        ("::test_teardown", Crash("SIGABRT", "teardown")),
        ("::test_after", Ran),
    ]);
}

#[test]
fn segfault_at_import_names_the_file_and_the_other_files_run() {
    let s = Suite::new();
    s.write("test_a.py", "def test_a1(): pass\ndef test_a2(): pass\n");
    s.write("test_b.py", &format!("{SEGV}\nsegv()\ndef test_never(): pass\n"));
    s.write("test_c.py", "def test_c1(): pass\n");
    let r = s.wrap(&[], &[]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let rec = r.record("test_b.py");
    assert_eq!(rec.phase, "collection");
    assert_eq!(rec.nodeid, "test_b.py");
    assert_eq!(rec.reason, "crashed with SIGSEGV (segmentation fault) during collection of test_b.py");
    for t in ["::test_a1", "::test_a2", "::test_c1"] {
        assert_eq!(r.starts_of(t), 1, "{t}: {:?}", r.starts());
    }
    assert_eq!(r.starts_of("::test_never"), 0);
}

#[test]
fn class_methods_and_odd_parametrize_ids() {
    let s = suite_with(
        r#"
import pytest
class TestThing:
    def test_ok(self): pass
    def test_crash(self): segv()
IDS = ["a b", "[x]", "ünï", "q'\"", "a::b"]
@pytest.mark.parametrize("v", IDS, ids=IDS)
def test_p(v):
    if v == "ünï":
        segv()
"#,
    );
    let r = s.wrap(&[], &["test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let m = r.record("::TestThing::test_crash");
    assert_eq!(m.test_class, "TestThing");
    assert_eq!(m.test_name, "test_crash");
    // pytest escapes non-ASCII ids (`\xfc`) unless told otherwise.
    let p = r.record(r"::test_p[\xfcn\xef]");
    assert_eq!(p.nodeid, r"test_suite.py::test_p[\xfcn\xef]");
    assert_eq!(p.test_class, "");
    for id in ["a b", "[x]", "q'\"", "a::b", r"\xfcn\xef"] {
        assert_eq!(r.starts_of(&format!("::test_p[{id}]")), 1, "{id}: {:?}", r.starts());
    }
    assert_eq!(r.starts_of("::TestThing::test_ok"), 1);
}

#[test]
fn xdist_worker_crash_is_attributed_in_one_run() {
    let s = suite_with(MIXED);
    let r = s.wrap(&[], &["-n", "2", "test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let segv = r.record("::test_segv");
    assert!(segv.worker.starts_with("gw"), "{segv:?}");
    assert_eq!(segv.source, format!("xdist:{}", segv.worker));
    assert_eq!(segv.signal_name.as_deref(), Some("SIGSEGV"));
    assert_eq!(segv.si_code.as_deref(), Some("SEGV_MAPERR"));
    r.expect(MIXED_ENDS);
    assert!(r.stderr().contains("runs used 1/5"), "{}", r.dump());
}

#[test]
fn xdist_max_worker_restart_zero_resumes_the_rest() {
    let s = Suite::new();
    let mut body = String::from("import ctypes\ndef test_segv(): ctypes.string_at(0)\n");
    for i in 0..12 {
        body.push_str(&format!("def test_{i}(): pass\n"));
    }
    s.write("test_x.py", &body);
    let r = s.wrap(&[], &["-n", "2", "--max-worker-restart", "0", "-p", "no:randomly", "test_x.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_eq!(r.records().len(), 1, "{:?}", r.records());
    for i in 0..12 {
        assert_eq!(r.starts_of(&format!("::test_{i}")), 1, "test_{i}: {:?}\n{}", r.starts(), r.dump());
    }
    assert!(r.stderr().contains("12 passed, 0 failed, 1 crashed, 0 not run"), "{}", r.dump());
}

#[test]
fn deselect_mode_reruns_everything_but_the_crashed() {
    let s = suite_with(MIXED);
    let r = s.wrap(&["--retry-mode", "deselect"], &["test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_eq!(r.records().len(), 2);
    // Run 1 stops at test_segv, run 2 at test_abort, run 3 runs the rest.
    assert_eq!(r.starts_of("::test_a"), 3);
    assert_eq!(r.starts_of("::test_c"), 2);
    assert_eq!(r.starts_of("::test_d"), 1);
    assert_eq!(r.starts_of("::test_segv"), 1);
    assert!(r.stderr().contains("runs used 3/5"), "{}", r.dump());
}

#[test]
fn max_runs_bounds_the_loop_and_unrun_tests_fail_the_job() {
    let s = suite_with(MIXED);
    let r = s.wrap(&["--max-runs", "1"], &["test_suite.py"]);
    assert_eq!(r.code(), 1);
    assert_eq!(r.records().len(), 1);
    assert!(r.stderr().contains("2 passed, 0 failed, 1 crashed, 3 not run; runs used 1/1"), "{}", r.dump());
}

#[test]
fn no_ptrace_fallback_still_attributes_serial_and_worker_crashes() {
    let s = suite_with(MIXED);
    let r = s.wrap(&["--no-ptrace"], &["test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert!(r.stderr().contains("supervision: no-ptrace"), "{}", r.dump());
    r.expect(MIXED_ENDS);
    let s = suite_with(MIXED);
    let r = s.wrap(&["--no-ptrace"], &["-n", "2", "test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let segv = r.record("::test_segv");
    assert!(segv.worker.starts_with("gw"));
    r.record("::test_abort");
    for t in ["test_a", "test_b", "test_c", "test_d"] {
        assert_eq!(r.starts_of(&format!("::{t}")), 1);
    }
}

#[test]
fn a_crashing_subprocess_of_a_test_is_not_a_crash() {
    let s = suite_with(
        "import subprocess, sys\ndef test_child():\n    p = subprocess.run([sys.executable, '-c', 'import os; os.abort()'])\n    assert p.returncode < 0\ndef test_shell_child():\n    p = subprocess.run(['sh', '-c', 'kill -SEGV $$'])\n    assert p.returncode < 0\n",
    );
    let r = s.wrap(&[], &["test_suite.py"]);
    assert_eq!(r.code(), 0, "{}", r.dump());
    assert!(r.records().is_empty());
}

#[test]
fn exit_statuses_pass_through() {
    let s = suite_with("def test_ok(): pass\n");
    assert_eq!(s.wrap(&[], &["test_suite.py"]).code(), 0);
    let s = suite_with("def test_bad(): assert False\n");
    assert_eq!(s.wrap(&[], &["test_suite.py"]).code(), 1);
    let s = Suite::new();
    s.write("test_empty.py", "x = 1\n");
    assert_eq!(s.wrap(&[], &["test_empty.py"]).code(), 5);
    let s = suite_with("def test_ok(): pass\n");
    assert_eq!(s.wrap(&[], &["--no-such-pytest-flag"]).code(), 4);
}

#[test]
fn bare_pytest_runs_with_its_own_interpreter() {
    let s = suite_with("import sys\ndef test_which():\n    print(sys.executable)\n");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.args(["--", "pytest", "-s", "test_suite.py"]);
    let r = s.run_cmd(cmd);
    assert_eq!(r.code(), 0, "{}", r.dump());
    assert!(r.stdout().contains(&crate::util::python().display().to_string()), "{}", r.dump());
}

#[test]
fn crash_at_session_finish_is_reported() {
    let s = suite_with("def test_ok(): pass\n");
    s.write(
        "conftest.py",
        &format!(
            "{}\nimport ctypes\ndef pytest_sessionfinish(session): ctypes.string_at(0)\n",
            crate::util::COUNTING_CONFTEST
        ),
    );
    let r = s.wrap(&[], &["test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let recs = r.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].phase, "session-finish");
    assert_eq!(recs[0].nodeid, "");
    assert_eq!(r.starts_of("::test_ok"), 1);
}

#[test]
fn command_not_found_is_one_clear_line() {
    let s = Suite::new();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.args(["--", "no-such-command-xyz", "-q"]);
    let r = s.run_cmd(cmd);
    assert_eq!(r.code(), 127);
    assert_eq!(r.stderr().trim(), "pytest-abort-wrap: error: no-such-command-xyz: command not found");
}

#[test]
fn unwritable_crash_log_is_an_error_but_nothing_is_lost() {
    let s = suite_with(MIXED);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.args(["--crash-log", "/proc/no/such/crashes.jsonl", "--"]).arg(crate::util::python());
    cmd.args(["-m", "pytest", "test_suite.py"]);
    let r = s.run_cmd(cmd);
    assert_eq!(r.code(), 74, "{}", r.dump());
    let err = r.stderr();
    assert!(err.contains("/proc/no/such/crashes.jsonl"), "{err}");
    assert!(err.contains("CRASHED test_suite.py::test_segv"), "{err}");
    assert!(err.contains("4 passed, 0 failed, 2 crashed, 0 not run"), "{err}");
}

#[test]
fn state_dir_on_a_read_only_path_is_an_error() {
    let s = suite_with("def test_ok(): pass\n");
    let r = s.wrap(&["--state-dir", "/proc/self/nope"], &["test_suite.py"]);
    assert_eq!(r.code(), 70);
    assert!(r.stderr().contains("/proc/self/nope: cannot create the state folder"), "{}", r.dump());
}

#[test]
fn garbage_marker_is_named_and_the_death_still_recorded() {
    let s = suite_with(
        "def test_scribble():\n    d = os.environ['PYTEST_ABORT_LAST_RUNNING_DIR']\n    open(os.path.join(d, 'last_running_main.json'), 'w').write('{\"nodeid\": \"x')\n    segv()\ndef test_after(): pass\n",
    );
    let r = s.wrap(&[], &["test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert!(r.stderr().contains("last_running_main.json: marker is not valid JSON"), "{}", r.dump());
    let recs = r.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].signal, Some(11));
    assert_eq!(r.starts_of("::test_after"), 0, "no test was named, so nothing is known to be left");
}

#[test]
fn keep_state_keeps_markers_and_journals() {
    let s = suite_with(MIXED);
    let state = s.path().join("state");
    let r = s.wrap(&["--state-dir", state.to_str().unwrap()], &["test_suite.py"]);
    assert_eq!(r.code(), 1);
    assert!(state.join("journal").read_dir().unwrap().count() >= 3);
}

#[test]
fn a_pytest_started_by_a_test_is_not_supervised_as_ours() {
    let s = Suite::new();
    s.write(
        "inner/test_inner.py",
        "import ctypes\ndef test_inner_ok(): pass\ndef test_inner_crash(): ctypes.string_at(0)\n",
    );
    s.write(
        "test_outer.py",
        r#"
import os, subprocess, sys
def test_runs_pytest():
    inner = os.path.join(os.path.dirname(__file__), "inner")
    for extra in ([], ["-n", "2"]):
        p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", inner, inner] + extra)
        assert p.returncode != 0
def test_after(): pass
"#,
    );
    let r = s.wrap(&[], &["test_outer.py"]);
    assert_eq!(r.code(), 0, "{}", r.dump());
    assert!(r.records().is_empty(), "{:?}", r.records());
    assert!(r.stderr().contains("2 passed, 0 failed, 0 crashed, 0 not run; runs used 1/5"), "{}", r.dump());
}

#[test]
fn xdist_stopping_early_is_not_a_crash_and_leaves_clean_markers() {
    let s = suite_with(
        "import time\ndef test_fail(): assert False\ndef test_s1(): time.sleep(0.5)\ndef test_s2(): time.sleep(0.5)\ndef test_s3(): time.sleep(0.5)\ndef test_s4(): time.sleep(0.5)\n",
    );
    let r = s.wrap(&[], &["-n", "2", "-x", "test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert!(r.records().is_empty(), "{:?}", r.records());
    assert!(!r.stderr().contains("warning"), "{}", r.dump());
    assert!(r.stderr().contains("runs used 1/5"), "no rerun after -x: {}", r.dump());
}

#[test]
fn a_disabled_plugin_is_named_not_silently_ignored() {
    let s = suite_with(MIXED);
    let r = s.wrap(&[], &["-p", "no:pytest_abort", "test_suite.py"]);
    assert_eq!(r.code(), 1, "a death by signal still fails the job: {}", r.dump());
    assert!(r.stderr().contains("no pytest process loaded the pytest-abort plugin in run 1"), "{}", r.dump());
}
