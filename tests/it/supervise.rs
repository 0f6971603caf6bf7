//! Supervision as a test sees it, in both modes (ptrace and `--no-ptrace`),
//! serial and under xdist: timeouts that keep the run going, whole leftover
//! trees killed, one wrapper per state folder, tests free to ptrace their
//! own children, SIGSTOP stopping a test as it would without the wrapper,
//! and a pytest that ignores SIGTERM still stopped by a second signal.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pytest_abort::record::CrashKind;
use pytest_abort::supervise::proc;

use crate::util::{python, Suite};

const MODES: [&[&str]; 2] = [&[], &["--no-ptrace"]];

/// Kills, on drop, every process whose command line contains one of the
/// markers (unique sleep durations), so a failing test leaves nothing behind.
struct Reaper(Vec<String>);

impl Reaper {
    /// Live pids whose command line contains `needle`.
    fn find(needle: &str) -> Vec<i32> {
        proc::all_pids().into_iter().filter(|p| proc::alive(*p) && proc::cmdline(*p).contains(needle)).collect()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for _ in 0..50 {
            let pids: Vec<i32> = self.0.iter().flat_map(|n| Reaper::find(n)).collect();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                // SAFETY: kill(2) on a pid whose command line carries this
                // test's unique marker; no memory is involved.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// SIGKILLs these pids on drop (a wrapper and its stopped or deaf pytest),
/// so a failed assertion leaves nothing running; cleared once both were
/// reaped, since their pids may then be reused.
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &p in &self.0 {
            send(p as u32, libc::SIGKILL);
        }
    }
}

/// Waits until `path` exists (written by a test), or panics after `secs`.
fn wait_for_file(path: &Path, secs: u64, what: &str) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(Instant::now() < until, "{what}: {} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the wrapper in the background on the suite, stderr piped.
fn start_wrapper(s: &Suite, wrap_args: &[&str], pytest_args: &[&str]) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).args(wrap_args).arg("--").arg(python());
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider"]).args(pytest_args);
    cmd.current_dir(s.path()).env_remove("PYTEST_ADDOPTS").stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Waits for the wrapper to end; kills it (and `also`) after `secs`.
fn finish(child: std::process::Child, secs: u64, also: i32) -> (std::process::Output, bool) {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(secs)).is_err() {
            send(pid, libc::SIGKILL);
            send(also as u32, libc::SIGKILL);
        }
    });
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let _ = tx.send(());
    (out, started.elapsed() < Duration::from_secs(secs))
}

fn send(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child process; no memory is involved.
    unsafe { libc::kill(pid as i32, sig) };
}

// ---- item 1: timeouts in both modes keep the run going ----

const HANG_THEN_PASS: &str = r#"
import time
def test_a(): pass
def test_hang(): time.sleep(987601)
def test_b(): pass
def test_c(): pass
"#;

fn timeout_keeps_the_run(mode: &[&str], xdist: &[&str]) {
    let s = Suite::new();
    s.write("test_h.py", HANG_THEN_PASS);
    let junit = s.path().join("out.xml");
    let mut args = mode.to_vec();
    args.extend(["--test-timeout", "3", "--junit-xml", junit.to_str().unwrap()]);
    let mut py = xdist.to_vec();
    py.push("test_h.py");
    let r = s.wrap(&args, &py);
    assert_eq!(r.code(), 1, "{mode:?} {xdist:?}\n{}", r.dump());
    let rec = r.record("::test_hang");
    assert_eq!(rec.kind, CrashKind::Timeout, "{rec:?}");
    for t in ["::test_a", "::test_b", "::test_c"] {
        assert_eq!(r.starts_of(t), 1, "{t} in {mode:?} {xdist:?}\n{}", r.dump());
    }
    assert!(r.stderr().contains("3 passed, 0 failed, 1 crashed"), "{}", r.dump());
    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|e| panic!("no JUnit report: {e}\n{}", r.dump()));
    assert!(xml.contains("test_hang") && xml.contains("test_c"), "{xml}");
}

#[test]
fn timeout_keeps_the_run_no_ptrace_serial() {
    timeout_keeps_the_run(&["--no-ptrace"], &[]);
}

#[test]
fn timeout_keeps_the_run_no_ptrace_xdist() {
    timeout_keeps_the_run(&["--no-ptrace"], &["-n", "2"]);
}

#[test]
fn timeout_keeps_the_run_ptrace_serial() {
    timeout_keeps_the_run(&[], &[]);
}

#[test]
fn timeout_keeps_the_run_ptrace_xdist() {
    timeout_keeps_the_run(&[], &["-n", "2"]);
}

// ---- item 5: whole leftover trees are killed ----

/// A test that leaves a tree in a new session and a loop that keeps
/// starting sleeps in sessions of their own; `tag` makes the sleep
/// durations unique to one test.
fn trees(tag: &str) -> String {
    format!(
        r#"
import subprocess, time
def test_tree():
    subprocess.Popen(["bash", "-c", "sleep 98760{tag}7 & wait"], start_new_session=True)
def test_respawn():
    subprocess.Popen(["bash", "-c", "while :; do setsid sleep 98760{tag}8 & sleep 0.05; done"], start_new_session=True)
    time.sleep(0.5)
"#
    )
}

fn leftover_trees_die(mode: &[&str], tag: &'static str) {
    let (tree, respawned) = (format!("98760{tag}7"), format!("98760{tag}8"));
    let _reaper = Reaper(vec![tree.clone(), respawned.clone()]);
    let s = Suite::new();
    s.write("test_t.py", &trees(tag));
    let r = s.wrap(mode, &["test_t.py"]);
    assert_eq!(r.code(), 0, "{mode:?}\n{}", r.dump());
    let err = r.stderr();
    let listed: Vec<&str> = err.lines().filter(|l| l.starts_with("LEFTOVER pid ")).collect();
    let sleep_of = |n: &str| format!("sleep {n}");
    assert!(listed.iter().any(|l| l.ends_with(&sleep_of(&tree))), "{mode:?}: the tree's sleep not listed\n{err}");
    assert!(
        listed.iter().any(|l| l.ends_with(&format!("{} & wait", sleep_of(&tree)))),
        "{mode:?}: the bash not listed\n{err}"
    );
    assert!(listed.iter().any(|l| l.ends_with(&sleep_of(&respawned))), "{mode:?}: the loop's sleeps not listed\n{err}");
    std::thread::sleep(Duration::from_millis(500));
    for n in [&tree, &respawned] {
        let alive = Reaper::find(n);
        assert!(alive.is_empty(), "{mode:?}: {n} survived the wrapper: {alive:?}\n{err}");
    }
}

/// `--keep-leftovers` lists the whole tree and leaves it running.
fn kept_trees_are_listed_whole(mode: &[&str], tag: &'static str) {
    let (bash_sleep, sleep) = (format!("98761{tag}7"), format!("98761{tag}8"));
    let _reaper = Reaper(vec![bash_sleep.clone(), sleep.clone()]);
    let s = Suite::new();
    s.write(
        "test_k.py",
        &format!(
            "import subprocess\ndef test_tree():\n    subprocess.Popen(['bash', '-c', 'setsid sleep {sleep} & sleep {bash_sleep}'], start_new_session=True)\n"
        ),
    );
    let mut args = mode.to_vec();
    args.push("--keep-leftovers");
    let r = s.wrap(&args, &["test_k.py"]);
    assert_eq!(r.code(), 0, "{mode:?}\n{}", r.dump());
    let err = r.stderr();
    let listed: Vec<&str> = err.lines().filter(|l| l.starts_with("LEFTOVER pid ")).collect();
    for n in [&bash_sleep, &sleep] {
        assert!(listed.iter().any(|l| l.ends_with(&format!("sleep {n}"))), "{mode:?}: sleep {n} not listed\n{err}");
        assert!(!Reaper::find(n).is_empty(), "{mode:?}: sleep {n} was killed despite --keep-leftovers\n{err}");
    }
}

#[test]
fn kept_leftover_trees_are_listed_whole() {
    kept_trees_are_listed_whole(MODES[0], "1");
    kept_trees_are_listed_whole(MODES[1], "2");
}

#[test]
fn leftover_trees_die_ptrace() {
    leftover_trees_die(MODES[0], "1");
}

#[test]
fn leftover_trees_die_no_ptrace() {
    leftover_trees_die(MODES[1], "2");
}

// ---- item 6: one wrapper per state folder ----

#[test]
fn a_second_wrapper_on_a_busy_state_dir_is_refused() {
    let s = Suite::new();
    s.write(
        "test_w.py",
        "import os, time\nHERE = os.path.dirname(__file__)\ndef test_wait():\n    open(os.path.join(HERE, 'started'), 'w').close()\n    for _ in range(600):\n        if os.path.exists(os.path.join(HERE, 'go')): return\n        time.sleep(0.05)\n",
    );
    let state = s.path().join("state");
    let first = start_wrapper(&s, &["--state-dir", state.to_str().unwrap()], &["test_w.py"]);
    wait_for_file(&s.path().join("started"), 60, "first wrapper's test");
    let second = s.wrap(&["--state-dir", state.to_str().unwrap()], &["test_w.py"]);
    std::fs::write(s.path().join("go"), "").unwrap();
    let out = first.wait_with_output().unwrap();
    let first_err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(second.code(), 70, "{}", second.dump());
    let err = second.stderr();
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("in use by another pytest-abort-wrap") && err.contains("state"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{first_err}");
    assert!(first_err.contains("1 passed, 0 failed, 0 crashed, 0 not run"), "{first_err}");
    // The second wrapper never started pytest: one start only.
    let r = s.wrap(&["--state-dir", state.to_str().unwrap()], &["test_w.py"]);
    assert_eq!(r.code(), 0, "the lock is released when the first wrapper ends\n{}", r.dump());
}

// ---- item 8: tests can ptrace their own children, first test included ----

const TRACEME: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_TRACEME = 0

def traceme_in_child():
    pid = os.fork()
    if pid == 0:
        r = libc.ptrace(PTRACE_TRACEME, 0, None, None)
        os._exit(0 if r == 0 else 100 + ctypes.get_errno())
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 0, "PTRACE_TRACEME failed, errno %d" % (os.WEXITSTATUS(status) - 100)

def test_1(): traceme_in_child()
def test_2(): traceme_in_child()
def test_3(): traceme_in_child()
def test_4(): traceme_in_child()
"#;

fn children_can_be_traced(xdist: &[&str]) {
    for mode in MODES {
        let s = Suite::new();
        s.write("test_p.py", TRACEME);
        let mut py = xdist.to_vec();
        py.push("test_p.py");
        let r = s.wrap(mode, &py);
        assert_eq!(r.code(), 0, "{mode:?} {xdist:?}\n{}", r.dump());
        assert!(r.stderr().contains("4 passed, 0 failed"), "{}", r.dump());
    }
}

#[test]
fn a_test_can_ptrace_its_child_serial() {
    children_can_be_traced(&[]);
}

#[test]
fn a_test_can_ptrace_its_child_xdist() {
    children_can_be_traced(&["-n", "2"]);
}

// ---- item 9: SIGSTOP stops a test as it would without the wrapper ----

const STOPS: &str = r#"
import os, signal
HERE = os.path.dirname(__file__)
def test_stop():
    open(os.path.join(HERE, "pid-%d" % os.getpid()), "w").close()
    os.kill(os.getpid(), signal.SIGSTOP)
    open(os.path.join(HERE, "resumed"), "w").close()
def test_after(): pass
"#;

fn sigstop_stops(mode: &[&str], xdist: &[&str]) {
    let s = Suite::new();
    s.write("test_s.py", STOPS);
    let mut py = xdist.to_vec();
    py.push("test_s.py");
    let child = start_wrapper(&s, mode, &py);
    let until = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        let found = std::fs::read_dir(s.path())
            .unwrap()
            .flatten()
            .find_map(|e| e.file_name().to_string_lossy().strip_prefix("pid-").and_then(|p| p.parse::<i32>().ok()));
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < until, "test_stop never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut guard = KillOnDrop(vec![pid, child.id() as i32]);
    // Stopped: the state says so (T, or t while a tracer listens) and the
    // test makes no progress.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let state = proc::stat(pid).map(|st| st.state);
        if matches!(state, Some('T' | 't')) {
            break;
        }
        if Instant::now() >= until || s.path().join("resumed").exists() {
            send(pid as u32, libc::SIGKILL);
            let (out, _) = finish(child, 60, pid);
            guard.0.clear();
            panic!(
                "{mode:?} {xdist:?}: the test did not stop (state {state:?})\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!s.path().join("resumed").exists(), "{mode:?} {xdist:?}: the test ran on while stopped");
    assert!(matches!(proc::stat(pid).map(|st| st.state), Some('T' | 't')));
    send(pid as u32, libc::SIGCONT);
    let (out, in_time) = finish(child, 60, pid);
    guard.0.clear(); // Both ended and were reaped: their pids may be reused.
    assert!(in_time, "{mode:?} {xdist:?}: the run did not end after SIGCONT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{mode:?} {xdist:?}\n{err}");
    assert!(s.path().join("resumed").exists());
    assert!(err.contains("2 passed, 0 failed, 0 crashed"), "{err}");
}

#[test]
fn sigstop_stops_the_test_serial() {
    for mode in MODES {
        sigstop_stops(mode, &[]);
    }
}

#[test]
fn sigstop_stops_the_test_xdist() {
    for mode in MODES {
        sigstop_stops(mode, &["-n", "2"]);
    }
}

// ---- item 10: a pytest that ignores SIGTERM ----

const DEAF: &str = r#"
import os, signal, time
HERE = os.path.dirname(__file__)
def test_ok(): pass
def test_deaf():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    open(os.path.join(HERE, "pid-%d" % os.getpid()), "w").close()
    time.sleep(987609)
"#;

fn second_signal_escalates(mode: &[&str], xdist: &[&str]) {
    let s = Suite::new();
    s.write("test_d.py", DEAF);
    let junit = s.path().join("out.xml");
    let mut args = mode.to_vec();
    args.extend(["--junit-xml", junit.to_str().unwrap()]);
    let mut py = xdist.to_vec();
    py.push("test_d.py");
    let child = start_wrapper(&s, &args, &py);
    let until = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        let found = std::fs::read_dir(s.path())
            .unwrap()
            .flatten()
            .find_map(|e| e.file_name().to_string_lossy().strip_prefix("pid-").and_then(|p| p.parse::<i32>().ok()));
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < until, "test_deaf never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut guard = KillOnDrop(vec![pid, child.id() as i32]);
    std::thread::sleep(Duration::from_millis(300));
    send(child.id(), libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(1500));
    if xdist.is_empty() {
        assert!(proc::alive(pid), "pytest ignores SIGTERM: the first one must not kill it");
    }
    send(child.id(), libc::SIGTERM);
    let (out, in_time) = finish(child, 30, pid);
    guard.0.clear(); // Both ended and were reaped: their pids may be reused.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(in_time, "{mode:?} {xdist:?}: the second SIGTERM did not stop the run\n{err}");
    assert_eq!(out.status.code(), Some(143), "{mode:?} {xdist:?}\n{err}");
    assert!(!proc::alive(pid), "pytest survived the second signal");
    assert!(err.contains("1 passed"), "the summary was written\n{err}");
    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|e| panic!("no JUnit report: {e}\n{err}"));
    assert!(xml.contains("test_ok"), "{xml}");
}

#[test]
fn a_second_sigterm_kills_a_deaf_pytest_serial() {
    for mode in MODES {
        second_signal_escalates(mode, &[]);
    }
}

#[test]
fn a_second_sigterm_kills_a_deaf_pytest_xdist() {
    for mode in MODES {
        second_signal_escalates(mode, &["-n", "2"]);
    }
}

// ---- children let go at birth leave no trace in the tracer ----

const THREADS_FORKING: &str = r#"
import subprocess, threading
def test_threads_fork_at_once():
    go = threading.Event()
    def run():
        go.wait()
        for _ in range(3):
            subprocess.run(["true"])
    threads = [threading.Thread(target=run) for _ in range(24)]
    for t in threads: t.start()
    go.set()
    for t in threads: t.join()
def test_after(): pass
"#;

/// Many threads' first forks at once: each child is let go of whichever of
/// its first stop and its parent's fork event the wrapper sees first, and
/// none is left behind as a phantom traced process (listed as a leftover,
/// or waited for at the end).
#[test]
fn children_let_go_at_birth_are_not_phantom_leftovers() {
    for xdist in [&[][..], &["-n", "2"][..]] {
        for _ in 0..3 {
            let s = Suite::new();
            s.write("test_f.py", THREADS_FORKING);
            let mut py = xdist.to_vec();
            py.push("test_f.py");
            let r = s.wrap(&[], &py);
            assert_eq!(r.code(), 0, "{xdist:?}\n{}", r.dump());
            assert!(!r.stderr().contains("LEFTOVER"), "{xdist:?}: phantom leftovers\n{}", r.dump());
        }
    }
}
