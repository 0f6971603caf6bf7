//! Tests no run reached (issue 9 items 4 and 6): after SIGTERM or SIGINT to
//! the wrapper, or once `--max-runs` is used up, every test that did not run
//! is listed in every report (json, html, csv, JUnit) as a skip whose
//! reason says why, `collected` counts it, and the summary line, the JSON
//! `exitcode`, the JUnit counts and the wrapper's exit status agree. A test
//! cut short by the interrupt is one of them, never `passed`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::differential::{junit_key, report_args, Reports};
use crate::util::{python, venv_bin, Suite};

/// Starts the wrapper on `s` with the four reports in `out/`, not waiting.
fn start(s: &Suite, pytest_extra: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).arg("--").arg(python()).args(["-m", "pytest"]);
    cmd.args(report_args(pytest_extra));
    let path = format!("{}:{}", venv_bin().display(), std::env::var("PATH").unwrap_or_default());
    cmd.current_dir(s.path()).env("PATH", path).env_remove("PYTEST_ADDOPTS");
    cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits until `n` files named `started-*` are in the suite folder.
fn wait_started(s: &Suite, n: usize) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let started = std::fs::read_dir(s.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("started-"))
            .count();
        if started >= n {
            break;
        }
        assert!(Instant::now() < until, "the sleeping tests never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let pytest settle inside the test's sleep.
    std::thread::sleep(Duration::from_millis(300));
}

/// Sends `sig` to the wrapper and waits for it: its exit status and stderr.
fn stop(child: Child, sig: i32) -> (i32, String) {
    // SAFETY: kill(2) on our own unreaped child's pid; no memory involved.
    unsafe { libc::kill(child.id() as i32, sig) };
    let out = child.wait_with_output().unwrap();
    (out.status.code().expect("the wrapper exits"), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// What one report set says about each test, by format.
fn outcomes(r: &Reports) -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let mut m: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
    for t in r.json["tests"].as_array().expect("tests") {
        m.entry("json")
            .or_default()
            .insert(t["nodeid"].as_str().unwrap().into(), t["outcome"].as_str().unwrap().into());
    }
    for (id, entries) in r.blob()["tests"].as_object().expect("blob tests") {
        let results: Vec<&str> = entries.as_array().unwrap().iter().map(|e| e["result"].as_str().unwrap()).collect();
        m.entry("html").or_default().insert(id.clone(), results.join(","));
    }
    let (header, rows) = &r.csv;
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    for row in rows {
        m.entry("csv").or_default().insert(row[col("id")].clone(), row[col("status")].clone());
    }
    for c in &r.junit.1 {
        m.entry("junit").or_default().insert(c.key.clone(), c.kind.clone());
    }
    m
}

/// Checks that every report lists each of `not_run` as a skip carrying
/// `reason` (and no test twice), that `ran` are there with the outcome
/// given, and that the counts agree: JSON `collected` = `total` = every
/// test, JSON `exitcode` = `exit`, JUnit `tests`/`skipped` as the cases.
fn check(r: &Reports, ran: &[(&str, &str)], not_run: &[&str], reason: &str, exit: i32, ctx: &str) {
    let all = ran.len() + not_run.len();
    let by = outcomes(r);
    for (fmt, got) in &by {
        assert_eq!(got.len(), all, "{fmt}: every test once, no more: {got:#?}\n{ctx}");
    }
    let json_tests: BTreeMap<&str, &Value> =
        r.json["tests"].as_array().unwrap().iter().map(|t| (t["nodeid"].as_str().unwrap(), t)).collect();
    let blob = r.blob();
    let (header, rows) = &r.csv;
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    for id in not_run {
        let t = json_tests.get(id).unwrap_or_else(|| panic!("json: {id} missing\n{ctx}"));
        assert_eq!(t["outcome"], "skipped", "json: {id} not listed as not run: {t}\n{ctx}");
        assert!(t.to_string().contains(reason), "json: {id} lacks the reason {reason:?}: {t}\n{ctx}");
        let h = &blob["tests"][*id];
        assert_eq!(h.as_array().map(Vec::len), Some(1), "html: {id}: {h}\n{ctx}");
        assert_eq!(h[0]["result"], "Skipped", "html: {id} not listed as not run: {h}\n{ctx}");
        assert!(h[0]["log"].as_str().unwrap().contains(reason), "html: {id} lacks the reason: {h}\n{ctx}");
        let row = rows.iter().find(|row| row[col("id")] == *id).unwrap_or_else(|| panic!("csv: {id} missing\n{ctx}"));
        assert_eq!(row[col("status")], "skipped", "csv: {id}: {row:?}\n{ctx}");
        assert!(row[col("message")].contains(reason), "csv: {id} lacks the reason: {row:?}\n{ctx}");
        let key = junit_key(id);
        let case = r.junit.1.iter().find(|c| c.key == key).unwrap_or_else(|| panic!("junit: {key} missing\n{ctx}"));
        assert_eq!(case.kind, "skipped/pytest.skip", "junit: {key}: {case:?}\n{ctx}");
        assert!(case.body.contains(reason), "junit: {key} lacks the reason: {case:?}\n{ctx}");
    }
    for (id, outcome) in ran {
        assert_eq!(by["json"].get(*id).map(String::as_str), Some(*outcome), "json: {id}\n{ctx}");
        assert_eq!(by["csv"].get(*id).map(String::as_str), Some(*outcome), "csv: {id}\n{ctx}");
    }
    let summary = &r.json["summary"];
    assert_eq!(summary["collected"], all, "json collected counts the tests not run: {summary}\n{ctx}");
    assert_eq!(summary["total"], all, "json total: {summary}\n{ctx}");
    let skipped = ran.iter().filter(|(_, o)| *o == "skipped").count() + not_run.len();
    assert_eq!(summary["skipped"], skipped, "json skipped: {summary}\n{ctx}");
    assert_eq!(r.json["exitcode"], exit, "json exitcode = the wrapper's exit status\n{ctx}");
    let suite = &r.junit.0;
    assert_eq!(suite.get("tests").map(String::as_str), Some(all.to_string().as_str()), "junit tests: {suite:?}\n{ctx}");
    assert_eq!(suite.get("skipped"), Some(&skipped.to_string()), "junit skipped: {suite:?}\n{ctx}");
    let span = format!("<span class=\"skipped\">{skipped} Skipped");
    assert!(r.html.contains(&span), "html: no {span:?}\n{ctx}");
}

const SLEEPY: &str = r#"
import os, time

def test_fast():
    pass

def test_sleep():
    open(os.path.join(os.path.dirname(__file__), "started-%d" % os.getpid()), "w").close()
    time.sleep(60)

def test_after_1():
    pass

def test_after_2():
    pass
"#;

#[test]
fn sigterm_lists_the_tests_not_run_in_every_report() {
    let s = Suite::new();
    s.write("test_s.py", SLEEPY);
    let child = start(&s, &["test_s.py"]);
    wait_started(&s, 1);
    let (code, err) = stop(child, libc::SIGTERM);
    assert_eq!(code, 143, "{err}");
    assert!(err.contains("1 passed, 0 failed, 0 crashed, 3 not run"), "{err}");
    let not_run = ["test_s.py::test_sleep", "test_s.py::test_after_1", "test_s.py::test_after_2"];
    let reports = Reports::read(s.path());
    check(
        &reports,
        &[("test_s.py::test_fast", "passed")],
        &not_run,
        "not run: wrapper interrupted by SIGTERM",
        143,
        &err,
    );
}

#[test]
fn tests_interrupted_by_sigint_under_xdist_are_not_passed_in_any_format() {
    let s = Suite::new();
    let mut body = String::from("import os, time\ndef test_fast(): pass\n");
    for i in 0..2 {
        body.push_str(&format!(
            "def test_sleep{i}():\n    open(os.path.join(os.path.dirname(__file__), 'started-%d' % os.getpid()), 'w').close()\n    time.sleep(60)\n"
        ));
    }
    s.write("test_i.py", &body);
    let child = start(&s, &["-n", "2", "test_i.py"]);
    wait_started(&s, 2);
    let (code, err) = stop(child, libc::SIGINT);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("1 passed, 0 failed, 0 crashed, 2 not run"), "{err}");
    let reports = Reports::read(s.path());
    for (fmt, got) in outcomes(&reports) {
        // (A passed JUnit case has no child element: kind "".)
        for (id, outcome) in got.iter().filter(|(id, _)| id.contains("test_sleep")) {
            let passed = outcome.to_lowercase().contains("passed") || outcome.is_empty();
            assert!(!passed, "{fmt}: interrupted test {id} reported {outcome:?}\n{err}");
        }
    }
    let not_run = ["test_i.py::test_sleep0", "test_i.py::test_sleep1"];
    check(
        &reports,
        &[("test_i.py::test_fast", "passed")],
        &not_run,
        "not run: wrapper interrupted by SIGINT",
        130,
        &err,
    );
}

const CRASHING: &str = r#"
import ctypes

def test_a():
    pass

def test_segv_1():
    ctypes.string_at(0)

def test_b():
    pass

def test_segv_2():
    ctypes.string_at(0)

def test_c():
    pass

def test_d():
    pass
"#;

#[test]
fn tests_left_when_max_runs_is_used_up_are_listed_as_not_run() {
    let s = Suite::new();
    s.write("test_m.py", CRASHING);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).args(["--max-runs", "2", "--"]).arg(python()).args(["-m", "pytest"]);
    cmd.args(report_args(&["test_m.py"]));
    let run = s.run_cmd(cmd);
    let err = run.stderr();
    assert_eq!(run.code(), 1, "{}", run.dump());
    assert_eq!(run.records().len(), 2, "{}", run.dump());
    assert!(err.contains("2 passed, 0 failed, 2 crashed, 2 not run; runs used 2/2"), "{err}");
    let reports = Reports::read(s.path());
    let ran = [
        ("test_m.py::test_a", "passed"),
        ("test_m.py::test_segv_1", "failed"),
        ("test_m.py::test_b", "passed"),
        ("test_m.py::test_segv_2", "failed"),
    ];
    check(&reports, &ran, &["test_m.py::test_c", "test_m.py::test_d"], "not run: --max-runs 2 used up", 1, &err);
    assert_eq!(reports.junit.0.get("failures").map(String::as_str), Some("2"), "{:?}", reports.junit.0);
}
