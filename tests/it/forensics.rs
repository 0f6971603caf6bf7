//! Forensics and hangs on real processes: si_code, fault address, library
//! location, Python stacks, peak memory, per-test and session timeouts,
//! xdist's own crash report, reproduction, rechecks and leftovers.

use crate::util::Suite;
use pytest_abort::record::CrashKind;

const FIXTURES: &str = r#"
import ctypes, os, subprocess, time, pytest
def test_null(): ctypes.string_at(0)
def test_abort(): os.abort()
def test_sent(): subprocess.run(["kill", "-SEGV", str(os.getpid())]); time.sleep(10)
def test_fpe(): ctypes.CDLL(None).div(1, 0)
def test_big():
    hog = bytearray(300 * 1024 * 1024)
    ctypes.string_at(0)
def test_ok(): pass
"#;

fn check_fixture_records(r: &crate::util::Run) {
    let null = r.record("::test_null");
    assert_eq!(null.si_code.as_deref(), Some("SEGV_MAPERR"), "{null:?}");
    assert_eq!(null.fault_addr.as_deref(), Some("0x0"));
    assert!(null.fault_tid.is_some());
    let loc = null.location.clone().unwrap_or_default();
    assert!(loc.contains(".so") && loc.contains("+0x"), "location {loc:?}");
    let tb = null.traceback.clone().unwrap_or_default();
    assert!(tb.contains("Fatal Python error: Segmentation fault"), "{tb}");
    assert!(tb.contains("in test_null"), "{tb}");
    assert!(null.peak_rss_kb.unwrap_or(0) > 1000);

    let abort = r.record("::test_abort");
    assert_eq!(abort.signal_name.as_deref(), Some("SIGABRT"));
    assert!(abort.traceback.unwrap_or_default().contains("in test_abort"));

    let sent = r.record("::test_sent");
    assert_eq!(sent.si_code.as_deref(), Some("SI_USER"), "{sent:?}");
    let sender = sent.sender_pid.expect("sender pid");
    assert_ne!(sender.to_string(), sent.pid, "the sender is the kill process, not pytest");

    let fpe = r.record("::test_fpe");
    assert_eq!(fpe.signal_name.as_deref(), Some("SIGFPE"));
    assert_eq!(fpe.si_code.as_deref(), Some("FPE_INTDIV"));
    assert!(fpe.location.unwrap_or_default().starts_with("libc"), "div() faults inside libc");

    let big = r.record("::test_big");
    assert!(big.peak_rss_kb.unwrap() > 250 * 1024, "{:?}", big.peak_rss_kb);
}

#[test]
fn fault_details_stacks_and_memory_serial() {
    let s = Suite::new();
    s.write("test_f.py", FIXTURES);
    let r = s.wrap(&["--max-runs", "10"], &["test_f.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    check_fixture_records(&r);
    assert_eq!(r.starts_of("::test_ok"), 1);
    // faulthandler's dump went to the state folder and is echoed on stderr.
    assert!(r.stderr().contains("Fatal Python error: Floating point exception"), "{}", r.dump());
}

#[test]
fn fault_details_stacks_and_memory_xdist() {
    let s = Suite::new();
    s.write("test_f.py", FIXTURES);
    let r = s.wrap(&[], &["-n", "2", "test_f.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    check_fixture_records(&r);
    // The controller's own crash report (what xdist prints) carries the
    // signal, the location and the Python stack.
    let out = r.stdout();
    assert!(out.contains("crashed while running 'test_f.py::test_null'"), "{out}");
    assert!(out.contains("pytest-abort: crashed with SIGSEGV (segmentation fault) during call"), "{out}");
    assert!(out.contains("si_code: SEGV_MAPERR"), "{out}");
    assert!(out.contains("in test_null"), "{out}");
}

const HANGS: &str = r#"
import ctypes, time, pytest
def test_py_sleep(): time.sleep(60)
def test_c_sleep(): ctypes.CDLL(None).sleep(60)
@pytest.mark.timeout(0.5)
def test_marked(): time.sleep(60)
def test_ok(): pass
"#;

fn check_hangs(r: &crate::util::Run) {
    for (name, limit) in [("test_py_sleep", "3s"), ("test_c_sleep", "3s"), ("test_marked", "0.5s")] {
        let rec = r.record(&format!("::{name}"));
        assert_eq!(rec.kind, CrashKind::Timeout, "{rec:?}");
        assert!(rec.reason.starts_with(&format!("timed out after {limit}")), "{}", rec.reason);
        assert!(rec.traceback.clone().unwrap_or_default().contains(&format!("in {name}")), "{rec:?}");
        assert_eq!(rec.phase, "call");
    }
    assert!(r.record("::test_marked").duration < 3.0);
    assert_eq!(r.starts_of("::test_ok"), 1);
}

#[test]
fn per_test_timeout_serial() {
    let s = Suite::new();
    s.write("test_h.py", HANGS);
    s.write("pytest.ini", "[pytest]\nmarkers = timeout: per-test limit\n");
    let r = s.wrap(&["--test-timeout", "3"], &["test_h.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    check_hangs(&r);
}

#[test]
fn per_test_timeout_xdist() {
    let s = Suite::new();
    s.write("test_h.py", HANGS);
    s.write("pytest.ini", "[pytest]\nmarkers = timeout: per-test limit\n");
    let r = s.wrap(&["--test-timeout", "3"], &["-n", "2", "test_h.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    check_hangs(&r);
    assert!(r.stderr().contains("runs used 1/5"), "xdist replaced the killed workers\n{}", r.dump());
}

#[test]
fn session_timeout_stops_everything() {
    let s = Suite::new();
    s.write("test_s.py", "import time\ndef test_ok(): pass\ndef test_hang(): time.sleep(60)\ndef test_never(): pass\n");
    let started = std::time::Instant::now();
    let r = s.wrap(&["--timeout", "8"], &["test_s.py"]);
    assert!(started.elapsed().as_secs() < 40);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let rec = r.record("::test_hang");
    assert_eq!(rec.kind, CrashKind::Timeout);
    assert!(rec.reason.contains("--timeout for the session"), "{}", rec.reason);
    assert_eq!(r.starts_of("::test_never"), 0);
    assert!(r.stderr().contains("1 not run"), "{}", r.dump());
}

#[test]
fn reproduce_reports_the_crash_rate_and_forensics() {
    let s = Suite::new();
    s.write(
        "test_r.py",
        "import ctypes, os\ndef test_other(): pass\ndef test_flaky():\n    n = os.path.join(os.path.dirname(__file__), 'count')\n    k = len(open(n).read()) if os.path.exists(n) else 0\n    open(n, 'a').write('x')\n    if k == 2: ctypes.string_at(0)\n",
    );
    let r = s.wrap(&["--reproduce", "test_r.py::test_flaky", "--repeat", "5"], &["test_r.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let err = r.stderr();
    assert!(err.contains("test_r.py::test_flaky: crashed 1/3 runs"), "{err}");
    assert!(err.contains("si_code: SEGV_MAPERR"), "{err}");
    assert_eq!(r.starts_of("::test_flaky"), 3);
    assert_eq!(r.starts_of("::test_other"), 0, "only the named test runs");

    let r = s.wrap(&["--reproduce", "test_r.py::test_other", "--repeat", "2"], &["test_r.py"]);
    assert_eq!(r.code(), 0, "{}", r.dump());
    assert!(r.stderr().contains("crashed 0/2 runs"), "{}", r.dump());
}

#[test]
fn recheck_labels_deterministic_and_flaky_crashes() {
    let s = Suite::new();
    s.write(
        "test_c.py",
        "import ctypes, os\ndef test_always(): ctypes.string_at(0)\ndef test_once():\n    n = os.path.join(os.path.dirname(__file__), 'once')\n    if not os.path.exists(n):\n        open(n, 'w').close(); ctypes.string_at(0)\ndef test_ok(): pass\n",
    );
    let r = s.wrap(&["--recheck-crashed", "2"], &["test_c.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let err = r.stderr();
    assert!(err.contains("crash: deterministic"), "{err}");
    assert!(err.contains("crash: flaky (0/2)"), "{err}");
    let labelled: Vec<_> = r.records().into_iter().filter(|r| r.recheck.is_some()).collect();
    assert_eq!(labelled.len(), 2, "{labelled:?}");
    assert_eq!(r.starts_of("::test_ok"), 1);
}

#[test]
fn leftover_processes_are_listed_and_killed() {
    for mode in [&[][..], &["--no-ptrace"][..]] {
        let s = Suite::new();
        s.write(
            "test_l.py",
            "import subprocess\ndef test_spawn():\n    subprocess.Popen(['sleep', '300'], start_new_session=True)\n",
        );
        let r = s.wrap(mode, &["test_l.py"]);
        assert_eq!(r.code(), 0, "{}", r.dump());
        let err = r.stderr();
        let line = err.lines().find(|l| l.starts_with("LEFTOVER pid ")).unwrap_or_else(|| panic!("{mode:?}\n{err}"));
        assert!(line.ends_with("sleep 300"), "{line}");
        let pid: i32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!pytest_abort::attribute::pid_alive(pid), "leftover {pid} still alive ({mode:?})");
    }
}

/// A memory cgroup the test process can move itself into, when this machine
/// lets us make one (root, cgroup v1 memory controller or cgroup v2).
fn oom_cgroup_snippet() -> Option<String> {
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
    let (dir, limit_file) = if v1.join("memory.limit_in_bytes").exists() {
        (v1.join(format!("pa-oom-{}", std::process::id())), "memory.limit_in_bytes")
    } else if std::fs::read_to_string(v2).is_ok_and(|c| c.contains("memory")) {
        (std::path::PathBuf::from(format!("/sys/fs/cgroup/pa-oom-{}", std::process::id())), "memory.max")
    } else {
        return None;
    };
    std::fs::create_dir(&dir).ok()?;
    std::fs::write(dir.join(limit_file), (64 * 1024 * 1024).to_string()).ok()?;
    Some(dir.display().to_string())
}

#[test]
fn oom_kill_is_named() {
    let Some(cg) = oom_cgroup_snippet() else {
        eprintln!(
            "oom_kill_is_named: skipped: cannot create a memory cgroup here (needs root and a memory controller)"
        );
        return;
    };
    let s = Suite::new();
    s.write(
        "test_o.py",
        &format!(
            "import os\ndef test_hog():\n    open({cg:?} + '/cgroup.procs', 'w').write(str(os.getpid()))\n    hog = bytearray(400 * 1024 * 1024)\ndef test_after(): pass\n"
        ),
    );
    let r = s.wrap(&[], &["test_o.py"]);
    let _ = std::fs::remove_dir(&cg);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let rec = r.record("::test_hog");
    assert_eq!(rec.signal, Some(9), "{rec:?}");
    assert_eq!(rec.oom_suspected, Some(true), "{rec:?}");
    assert!(rec.reason.contains("OOM killer"), "{}", rec.reason);
    assert_eq!(r.starts_of("::test_after"), 1);
}
