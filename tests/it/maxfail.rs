//! `-x` / `--maxfail` across crashes (issue 9 item 5): a crash counts as a
//! failure toward pytest's limit, and nothing resumes once pytest stopped.

use crate::util::Suite;

fn suite(tests: &str) -> Suite {
    let s = Suite::new();
    s.write("test_suite.py", &format!("import ctypes, time\n\ndef segv():\n    ctypes.string_at(0)\n\n{tests}"));
    s
}

const CRASH_THEN_FAILURES: &str = r#"
def test_segv(): segv()
def test_f1(): assert False
def test_f2(): assert False
def test_ok(): pass
"#;

const FAILURE_THEN_CRASH: &str = r#"
def test_f1(): assert False
def test_segv(): segv()
def test_ok(): pass
def test_f2(): assert False
"#;

#[test]
fn serial_maxfail_counts_a_crash_before_the_failures() {
    for fresh in [false, true] {
        let s = suite(CRASH_THEN_FAILURES);
        let wrap: &[&str] = if fresh { &["--fresh-resume"] } else { &[] };
        let r = s.wrap(wrap, &["--maxfail=2", "test_suite.py"]);
        assert_eq!(r.code(), 1, "{}", r.dump());
        assert_eq!(r.records().len(), 1, "{}", r.dump());
        assert_eq!(r.starts_of("::test_f1"), 1, "fresh={fresh}: {}", r.dump());
        assert_eq!(r.starts_of("::test_f2"), 0, "crash + 1 failure is 2: fresh={fresh}: {}", r.dump());
        assert_eq!(r.starts_of("::test_ok"), 0, "fresh={fresh}: {}", r.dump());
    }
}

#[test]
fn serial_maxfail_reached_by_a_crash_resumes_nothing() {
    for fresh in [false, true] {
        let s = suite(FAILURE_THEN_CRASH);
        let wrap: &[&str] = if fresh { &["--fresh-resume"] } else { &[] };
        let r = s.wrap(wrap, &["--maxfail=2", "test_suite.py"]);
        assert_eq!(r.code(), 1, "{}", r.dump());
        assert_eq!(r.starts_of("::test_ok"), 0, "fresh={fresh}: {}", r.dump());
        assert_eq!(r.starts_of("::test_f2"), 0, "fresh={fresh}: {}", r.dump());
    }
}

#[test]
fn xdist_x_stopped_by_a_crash_is_not_resumed() {
    let mut tests = String::from("def test_segv(): segv()\n");
    for i in 0..8 {
        tests.push_str(&format!("def test_s{i}(): time.sleep(1.0)\n"));
    }
    let s = suite(&tests);
    let r = s.wrap(&[], &["-n", "2", "-x", "test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_eq!(r.records().len(), 1, "{}", r.dump());
    assert!(r.stderr().contains("runs used 1/5"), "no resume after -x stopped: {}", r.dump());
    let slept: usize = (0..8).map(|i| r.starts_of(&format!("::test_s{i}"))).sum();
    assert!(slept < 8, "stopped early, not all tests run: {}", r.dump());
}

#[test]
fn xdist_x_stopped_by_a_failure_after_a_crash_is_not_resumed() {
    let mut tests = String::from("def test_segv(): segv()\ndef test_fail(): time.sleep(0.5); assert False\n");
    for i in 0..8 {
        tests.push_str(&format!("def test_s{i}(): time.sleep(1.0)\n"));
    }
    let s = suite(&tests);
    let r = s.wrap(&[], &["-n", "2", "--maxfail=2", "test_suite.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_eq!(r.records().len(), 1, "{}", r.dump());
    assert!(r.stderr().contains("runs used 1/5"), "no resume after --maxfail stopped: {}", r.dump());
}
