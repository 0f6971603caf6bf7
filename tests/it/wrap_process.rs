//! The wrapper as a process: signals sent to it reach pytest's whole
//! process group, killing it outright takes pytest and its workers along,
//! and an installed plugin (loaded every way pytest allows) never gives two
//! marker writers or "Plugin already registered".

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::Suite;

fn alive(pid: i32) -> bool {
    pytest_abort::attribute::pid_alive(pid)
}

fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("pid-").and_then(|p| p.parse().ok()))
        .collect()
}

const SLEEPY: &str = r#"
import os, time
def test_fast(): pass
def test_sleep():
    open(os.path.join(os.path.dirname(__file__), "pid-%d" % os.getpid()), "w").close()
    time.sleep(60)
"#;

fn start_wrapper(s: &Suite, pytest_args: &[&str]) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).arg("--").arg(crate::util::python());
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider"]).args(pytest_args);
    cmd.current_dir(s.path()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn forwarded(sig: i32, expect_code: i32) {
    let s = Suite::new();
    s.write("test_s.py", SLEEPY);
    let child = start_wrapper(&s, &["test_s.py"]);
    let pidfile_dir = s.path().to_path_buf();
    let until = Instant::now() + Duration::from_secs(30);
    while pids_in(&pidfile_dir).is_empty() {
        assert!(Instant::now() < until, "test_sleep never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pytest_pid = pids_in(&pidfile_dir)[0];
    let started = Instant::now();
    // SAFETY: kill(2) on our own unreaped child's pid; no memory involved.
    unsafe { libc::kill(child.id() as i32, sig) };
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(expect_code), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!alive(pytest_pid), "pytest survived the forwarded signal");
    let recs = pytest_abort::record::read_crash_log(&s.crash_log()).unwrap();
    assert!(recs.is_empty(), "an interrupt is not a crash: {recs:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 passed, 0 failed, 0 crashed"), "{err}");
}

#[test]
fn sigterm_is_forwarded_to_pytest_and_the_wrapper_exits_143() {
    forwarded(libc::SIGTERM, 143);
}

#[test]
fn sigint_is_forwarded_to_pytest_and_the_wrapper_exits_130() {
    forwarded(libc::SIGINT, 130);
}

#[test]
fn sighup_is_forwarded_to_pytest_and_the_wrapper_exits_129() {
    forwarded(libc::SIGHUP, 129);
}

fn killed_outright(args: &[&str], n_pids: usize) {
    let s = Suite::new();
    let mut body = String::from("import os, time\n");
    for i in 0..n_pids {
        body.push_str(&format!(
            "def test_sleep{i}():\n    open(os.path.join(os.path.dirname(__file__), 'pid-%d' % os.getpid()), 'w').close()\n    time.sleep(60)\n"
        ));
    }
    s.write("test_k.py", &body);
    let mut all = args.to_vec();
    all.push("test_k.py");
    let mut child = start_wrapper(&s, &all);
    let until = Instant::now() + Duration::from_secs(40);
    while pids_in(s.path()).len() < n_pids {
        assert!(Instant::now() < until, "tests never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids = pids_in(s.path());
    child.kill().unwrap();
    child.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < until, "pytest processes outlived the killed wrapper: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killing_the_wrapper_kills_serial_pytest() {
    killed_outright(&[], 1);
}

#[test]
fn killing_the_wrapper_kills_xdist_workers() {
    killed_outright(&["-n", "2"], 2);
}

/// A site folder where `pytest_abort` is installed with an entry point, the
/// way the original registers it (`pytest_abort = pytest_abort.plugin`).
fn fake_installed_plugin(site: &Path) {
    let pkg = site.join("pytest_abort");
    std::fs::create_dir_all(&pkg).unwrap();
    for (name, text) in pytest_abort::shim::FILES {
        std::fs::write(pkg.join(name), text).unwrap();
    }
    let dist = site.join("pytest_abort-0.1.0.dist-info");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("METADATA"), "Metadata-Version: 2.1\nName: pytest-abort\nVersion: 0.1.0\n").unwrap();
    std::fs::write(dist.join("entry_points.txt"), "[pytest11]\npytest_abort = pytest_abort.plugin\n").unwrap();
}

const COUNT_WRITERS: &str = r#"
import ctypes
def test_one_writer(request):
    pm = request.config.pluginmanager
    sessions = [p for p in pm.get_plugins() if type(p).__name__ == "MarkerWriter"]
    modules = [p for p in pm.get_plugins() if getattr(p, "__name__", "") == "pytest_abort.plugin"]
    assert len(sessions) == 1 and len(modules) == 1, pm.list_name_plugin()
def test_crash(): ctypes.string_at(0)
def test_after(): pass
"#;

#[test]
fn installed_plugin_loaded_every_way_gives_exactly_one_writer() {
    for autoload_off in [false, true] {
        for extra in [&[][..], &["-p", "pytest_abort"][..], &["-p", "pytest_abort.plugin"][..]] {
            let s = Suite::new();
            s.write("test_w.py", COUNT_WRITERS);
            let site = s.path().join("site");
            fake_installed_plugin(&site);
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
            cmd.arg("--crash-log").arg(s.crash_log()).arg("--").arg(crate::util::python());
            cmd.args(["-m", "pytest", "-p", "no:cacheprovider"]).args(extra).arg("test_w.py");
            cmd.env("PYTHONPATH", &site);
            if autoload_off {
                cmd.env("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1");
            } else {
                cmd.env_remove("PYTEST_DISABLE_PLUGIN_AUTOLOAD");
            }
            let r = s.run_cmd(cmd);
            let ctx = format!("autoload_off={autoload_off} extra={extra:?}\n{}", r.dump());
            assert!(!r.dump().contains("already registered"), "{ctx}");
            assert_eq!(r.code(), 1, "{ctx}");
            assert_eq!(r.records().len(), 1, "{ctx}");
            assert_eq!(r.record("::test_crash").signal, Some(11), "{ctx}");
            assert!(r.stderr().contains("2 passed, 0 failed, 1 crashed"), "{ctx}");
        }
    }
}

#[test]
fn tests_interrupted_by_sigint_under_xdist_are_not_reported_passed() {
    let s = Suite::new();
    let mut body = String::from("import os, time\ndef test_fast(): pass\n");
    for i in 0..2 {
        body.push_str(&format!(
            "def test_sleep{i}():\n    open(os.path.join(os.path.dirname(__file__), 'pid-%d' % os.getpid()), 'w').close()\n    time.sleep(60)\n"
        ));
    }
    s.write("test_i.py", &body);
    let child = start_wrapper(&s, &["-n", "2", "--json-report", "--json-report-file=r.json", "test_i.py"]);
    let until = Instant::now() + Duration::from_secs(40);
    while pids_in(s.path()).len() < 2 {
        assert!(Instant::now() < until, "tests never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own unreaped child's pid; no memory involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let text = std::fs::read_to_string(s.path().join("r.json")).unwrap_or_else(|e| panic!("r.json: {e}\n{err}"));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    for t in doc["tests"].as_array().unwrap() {
        let id = t["nodeid"].as_str().unwrap();
        assert!(
            !(id.contains("test_sleep") && t["outcome"] == "passed"),
            "interrupted test reported passed: {t}\n{err}"
        );
    }
    let passed = doc["summary"]["passed"].as_u64().unwrap_or(0);
    assert!(passed <= 1, "summary counts interrupted tests as passed: {}\n{err}", doc["summary"]);
}
