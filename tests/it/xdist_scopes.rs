//! Worker deaths under every xdist scheduler, `--dist loadfile`,
//! `loadscope` and `loadgroup` (which hand out whole files or classes) as
//! well as `load` and `worksteal`: a test that crashes its worker (SIGSEGV,
//! killed by `--test-timeout`) has one crash record and is never started
//! again, every other test starts exactly once, and worker replacements
//! (crashed or retired after a poisoned device context) never take the
//! controller down.

use pytest_abort::record::CrashKind;

use crate::util::{Suite, Want};

/// A file that segfaults in one test and hangs in another, between tests
/// that pass (each sleeps a little, so its worker still holds some of them
/// when it dies).
const CRASH_AND_HANG: &str = r#"
import ctypes, time

def test_a():
    time.sleep(0.1)

def test_segv():
    ctypes.string_at(0)

def test_b():
    time.sleep(0.1)

def test_hang():
    time.sleep(987601)

def test_c():
    time.sleep(0.1)

def test_d():
    time.sleep(0.1)
"#;

/// A file of tests that pass.
fn passing(n: usize) -> String {
    (0..n).map(|i| format!("import time\n\ndef test_p{i:02}():\n    time.sleep(0.1)\n\n")).collect()
}

/// Asserts what every run here must hold: exit status 1, no INTERNALERROR.
fn clean_end(r: &crate::util::Run, what: &str) {
    let dump = format!("{what}\n{}", r.dump());
    assert!(!dump.contains("INTERNALERROR"), "the controller died: {dump}");
    assert_eq!(r.code(), 1, "{dump}");
}

fn crashed_tests_start_once(dist: &str) {
    let s = Suite::new();
    s.write("test_crash.py", CRASH_AND_HANG);
    s.write("test_other.py", &passing(6));
    let r = s.wrap(
        &["--timeout", "150", "--test-timeout", "4"],
        &["-n", "2", "--dist", dist, "test_crash.py", "test_other.py"],
    );
    clean_end(&r, dist);
    let mut tests: Vec<String> =
        ["a", "segv", "b", "hang", "c", "d"].iter().map(|t| format!("test_crash.py::test_{t}")).collect();
    tests.extend((0..6).map(|i| format!("test_other.py::test_p{i:02}")));
    for t in &tests {
        assert_eq!(r.starts_of(t), 1, "{dist}: {t} should start once: {:?}\n{}", r.starts(), r.dump());
    }
    assert_eq!(r.starts().len(), tests.len(), "{dist}: {:?}", r.starts());
    let records = r.records();
    assert_eq!(records.len(), 2, "{dist}: one record per crashed test: {records:#?}\n{}", r.dump());
    let segv = r.record("::test_segv");
    assert_eq!((segv.signal_name.as_deref(), segv.phase.as_str()), (Some("SIGSEGV"), "call"), "{segv:#?}");
    let hang = r.record("::test_hang");
    assert_eq!((hang.kind, hang.phase.as_str()), (CrashKind::Timeout, "call"), "{hang:#?}");
    assert!(r.stderr().contains("10 passed, 0 failed, 2 crashed"), "{dist}\n{}", r.dump());
    assert!(r.stderr().contains("runs used 1/"), "one pytest run: {dist}\n{}", r.dump());
}

#[test]
fn loadfile_crashed_tests_start_once() {
    crashed_tests_start_once("loadfile");
}

#[test]
fn loadscope_crashed_tests_start_once() {
    crashed_tests_start_once("loadscope");
}

#[test]
fn loadgroup_crashed_tests_start_once() {
    crashed_tests_start_once("loadgroup");
}

#[test]
fn load_crashed_tests_start_once() {
    crashed_tests_start_once("load");
}

#[test]
fn worksteal_crashed_tests_start_once() {
    crashed_tests_start_once("worksteal");
}

/// CUDA's text as PyTorch raises it: the test that fails with it poisons
/// its worker, which retires (see tests/it/poison.rs).
const POISONS: &str = r#"
import time

def test_a():
    time.sleep(0.1)

def test_poison():
    raise RuntimeError("CUDA error: device-side assert triggered")
"#;

/// A segfault in one file and a poisoned worker in another, at about the
/// same time: two fresh workers start together; the first to finish
/// collecting must not make the scheduler give work to the other, which has
/// not (xdist's loadscope schedulers raised KeyError there).
fn two_replacements_at_once(dist: &str, workers: &str) {
    let s = Suite::new();
    s.write("test_crash.py", &format!("import ctypes\n\ndef test_segv():\n    ctypes.string_at(0)\n\n{}", passing(4)));
    s.write("test_gpu.py", &format!("{POISONS}\n{}", passing(4).replace("test_p", "test_g")));
    for f in 0..3 {
        s.write(&format!("test_more{f}.py"), &passing(4));
    }
    let r = s.wrap(&["--timeout", "150"], &["-n", workers, "--dist", dist, "-p", "no:randomly"]);
    let what = format!("--dist {dist} -n {workers}");
    clean_end(&r, &what);
    let mut names: Vec<String> = vec!["test_crash.py::test_segv".into(), "test_gpu.py::test_poison".into()];
    names.push("test_gpu.py::test_a".into());
    for i in 0..4 {
        names.push(format!("test_crash.py::test_p{i:02}"));
        names.push(format!("test_gpu.py::test_g{i:02}"));
        for f in 0..3 {
            names.push(format!("test_more{f}.py::test_p{i:02}"));
        }
    }
    let table: Vec<(&str, Want)> = names
        .iter()
        .map(|n| {
            let want = if n.ends_with("::test_segv") { Want::Crash("SIGSEGV", "call") } else { Want::Ran };
            (n.as_str(), want)
        })
        .collect();
    // The poisoning test has its device-error record beside the crash.
    let records = r.records();
    let poison: Vec<_> = records.iter().filter(|r| r.nodeid.ends_with("::test_poison")).collect();
    assert_eq!(poison.len(), 1, "{what}: {records:#?}\n{}", r.dump());
    assert_eq!(serde_json::to_value(poison[0]).unwrap()["kind"], "device-error", "{:#?}", poison[0]);
    let segv = records.iter().filter(|r| r.nodeid.ends_with("::test_segv")).count();
    assert_eq!(segv, 1, "{what}: {records:#?}\n{}", r.dump());
    assert_eq!(records.len(), 2, "{what}: {records:#?}");
    for (name, _) in &table {
        assert_eq!(r.starts_of(name), 1, "{what}: {name} should start once: {:?}\n{}", r.starts(), r.dump());
    }
    assert_eq!(r.starts().len(), table.len(), "{what}: {:?}", r.starts());
    assert!(r.stderr().contains("runs used 1/"), "one pytest run: {what}\n{}", r.dump());
}

#[test]
fn loadfile_two_replacements_at_once_2_workers() {
    two_replacements_at_once("loadfile", "2");
}

#[test]
fn loadfile_two_replacements_at_once_4_workers() {
    two_replacements_at_once("loadfile", "4");
}

#[test]
fn loadscope_two_replacements_at_once() {
    two_replacements_at_once("loadscope", "2");
}

#[test]
fn loadgroup_two_replacements_at_once() {
    two_replacements_at_once("loadgroup", "2");
}

#[test]
fn load_two_replacements_at_once() {
    two_replacements_at_once("load", "2");
}

#[test]
fn worksteal_two_replacements_at_once() {
    two_replacements_at_once("worksteal", "2");
}
