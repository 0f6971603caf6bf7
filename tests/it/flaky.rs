//! `--recheck-crashed N` in JUnit, the way cargo-nextest and Maven Surefire
//! write reruns, read back with `junitparser`: a crash that reproduces is a
//! `<failure>` with `<rerunFailure>`s; a flaky crash is labelled flaky and
//! `--flaky-result` decides whether it fails the run.

use std::process::Command;

use pytest_abort::record::CrashRecord;

use crate::util::{python, Suite};

/// One test that crashes every time, one that crashes only the first time
/// (the flag file it leaves behind makes it pass after), one that passes.
const SUITE: &str = r#"
import ctypes, os, pathlib

def test_always():
    ctypes.string_at(0)

def test_once():
    flag = pathlib.Path(__file__).with_name("crashed-once")
    if not flag.exists():
        flag.write_text("x")
        os.abort()

def test_fine():
    pass
"#;

/// Reads the JUnit file with junitparser and prints, per test case, one
/// JSON line: name, final results, rerun and flaky failures (message, stack).
const READER: &str = r#"
import json, sys
from junitparser import JUnitXml
from junitparser.xunit2 import TestCase
xml = JUnitXml.fromfile(sys.argv[1])
for suite in xml:
    for case in suite:
        case = TestCase.fromelem(case._elem)
        print(json.dumps({
            "name": case.name,
            "result": [r._tag for r in case.result],
            "failure_message": [r.message for r in case.result],
            "rerun": [[r.message, r.stack_trace] for r in case.rerun_failures()],
            "flaky": [[r.message, r.stack_trace] for r in case.flaky_failures()],
        }))
    print(json.dumps({"suite_failures": suite.failures, "suite_tests": suite.tests}))
"#;

fn read_junit(path: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(python()).args(["-c", READER]).arg(path).output().expect("run python");
    assert!(out.status.success(), "junitparser: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn case<'a>(cases: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    let found: Vec<_> = cases.iter().filter(|c| c["name"] == name).collect();
    assert_eq!(found.len(), 1, "one <testcase> for {name}: {cases:?}");
    found[0]
}

fn run(flaky_result: &str) -> (Suite, i32, Vec<serde_json::Value>) {
    let s = Suite::new();
    s.write("test_f.py", SUITE);
    let junit = s.path().join("junit.xml");
    let r = s.wrap(
        &["--recheck-crashed", "2", "--flaky-result", flaky_result, "--junit-xml", junit.to_str().unwrap()],
        &["test_f.py"],
    );
    let cases = read_junit(&junit);
    let code = r.code();
    assert!(r.stderr().contains("flaky (0/2)"), "{}", r.dump());
    (s, code, cases)
}

#[test]
fn flaky_crash_fails_by_default_with_rerun_failures_in_junit() {
    let (s, code, cases) = run("fail");
    assert_eq!(code, 1);
    let always = case(&cases, "test_always");
    assert_eq!(always["result"], serde_json::json!(["failure"]));
    let reruns = always["rerun"].as_array().unwrap();
    assert_eq!(reruns.len(), 2, "{always}");
    for r in reruns {
        assert!(r[0].as_str().unwrap().contains("SIGSEGV"), "{r}");
        assert!(r[1].as_str().unwrap().contains("test_always"), "stack of the recheck: {r}");
    }
    let once = case(&cases, "test_once");
    assert_eq!(once["result"], serde_json::json!(["failure"]), "{once}");
    assert!(once["failure_message"][0].as_str().unwrap().starts_with("[flaky (0/2)]"), "{once}");
    assert_eq!(once["rerun"], serde_json::json!([]), "no recheck crashed: {once}");
    assert_eq!(case(&cases, "test_fine")["result"], serde_json::json!([]));
    assert_eq!(cases.last().unwrap()["suite_failures"], 2);
    // The crash log's labelled line says the same.
    let log = std::fs::read_to_string(s.crash_log()).unwrap();
    let flaky: Vec<CrashRecord> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<CrashRecord>(l).ok())
        .filter(|r| r.nodeid.ends_with("test_once") && r.recheck.is_some())
        .collect();
    assert_eq!(flaky.len(), 1);
    assert_eq!(flaky[0].flaky_result.as_deref(), Some("fail"));
    assert_eq!(flaky[0].rechecks.iter().filter(|r| r.crashed).count(), 0);
}

#[test]
fn flaky_result_pass_keeps_a_flaky_crash_from_failing_the_run() {
    let s = Suite::new();
    s.write("test_f.py", &SUITE.replace("def test_always():\n    ctypes.string_at(0)\n", ""));
    let junit = s.path().join("junit.xml");
    let r = s.wrap(
        &["--recheck-crashed", "2", "--flaky-result", "pass", "--junit-xml", junit.to_str().unwrap()],
        &["test_f.py"],
    );
    assert_eq!(r.code(), 0, "a flaky crash passes under --flaky-result pass: {}", r.dump());
    let cases = read_junit(&junit);
    let once = case(&cases, "test_once");
    assert_eq!(once["result"], serde_json::json!([]), "no <failure>: {once}");
    let flaky = once["flaky"].as_array().unwrap();
    assert_eq!(flaky.len(), 1, "the first crash as <flakyFailure>: {once}");
    assert!(
        flaky[0][0].as_str().unwrap().contains("[flaky (0/2)]") && flaky[0][0].as_str().unwrap().contains("SIGABRT"),
        "{once}"
    );
    assert!(flaky[0][1].as_str().unwrap().contains("test_once"), "the stack: {once}");
    assert_eq!(cases.last().unwrap()["suite_failures"], 0);
    // A crash that reproduces still fails under --flaky-result pass.
    let (_s, code, cases) = run("pass");
    assert_eq!(code, 1);
    assert_eq!(case(&cases, "test_always")["result"], serde_json::json!(["failure"]));
    assert_eq!(case(&cases, "test_once")["result"], serde_json::json!([]));
}
