//! Collection results in the reports the wrapper creates: a module that
//! skips itself at import (`pytest.importorskip` of a missing package, as
//! GPU suites do on CPU nodes) or fails to import is an entry of plain
//! pytest's reports (JUnit `<skipped message="collection skipped">` /
//! `<error message="collection failure">`, pytest-json-report's
//! `collectors`, pytest-html's error row); a report the wrapper creates
//! (`--junit-xml` etc. on the wrapper, pytest not asked for it) holds the
//! same entries, serial and `-n 2`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{python, Suite};

const SKIPPING: &str =
    "import pytest\ntorch = pytest.importorskip(\"pytest_abort_no_such_module\")\n\n\ndef test_gpu():\n    pass\n";
const BROKEN: &str = "raise RuntimeError(\"boom at import\")\n\n\ndef test_never():\n    pass\n";
const OK: &str = "def test_ok():\n    pass\n";

/// A `<testcase>`: classname, name, child element, its message, its text.
type Case = (String, String, String, String, String);

/// The first `<testsuite>`'s counts and every testcase, read with an XML parser.
fn junit(path: &Path) -> (BTreeMap<String, String>, Vec<Case>) {
    use quick_xml::events::Event;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rd = quick_xml::Reader::from_str(&text);
    let (mut suite, mut cases) = (BTreeMap::new(), Vec::<Case>::new());
    let mut in_child = false;
    loop {
        match rd.read_event().expect("valid XML") {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |k: &str| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == k.as_bytes())
                        .map(|a| a.unescape_value().unwrap().into_owned())
                        .unwrap_or_default()
                };
                match e.name().as_ref() {
                    b"testsuite" if suite.is_empty() => {
                        for k in ["tests", "errors", "failures", "skipped"] {
                            suite.insert(k.to_string(), attr(k));
                        }
                    }
                    b"testcase" => {
                        cases.push((attr("classname"), attr("name"), String::new(), String::new(), String::new()))
                    }
                    n @ (b"failure" | b"error" | b"skipped") => {
                        let c = cases.last_mut().unwrap();
                        c.2 = String::from_utf8_lossy(n).into_owned();
                        c.3 = attr("message");
                        in_child = true;
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_child => cases.last_mut().unwrap().4.push_str(&t.unescape().unwrap()),
            Event::End(e) if matches!(e.name().as_ref(), b"failure" | b"error" | b"skipped") => in_child = false,
            Event::Eof => break,
            _ => {}
        }
    }
    cases.sort();
    (suite, cases)
}

/// pytest-json-report's exit code, summary, the tests' ids and outcomes,
/// and the collectors that did not pass (nodeid, outcome, longrepr): a
/// serial run lists the passed ones too, xdist's controller only these.
fn json(path: &Path) -> Value {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let collectors: Vec<Value> = v["collectors"]
        .as_array()
        .map(|a| a.iter().filter(|c| c["outcome"] != "passed").cloned().collect())
        .unwrap_or_default();
    let tests: Vec<Value> =
        v["tests"].as_array().unwrap().iter().map(|t| json_pick(t, &["nodeid", "outcome"])).collect();
    // Under xdist they come in the order the workers' reports arrived.
    let mut collectors: Vec<Value> =
        collectors.iter().map(|c| json_pick(c, &["nodeid", "outcome", "longrepr", "result"])).collect();
    collectors.sort_by_key(|c| c.to_string());
    serde_json::json!({"exitcode": v["exitcode"], "summary": v["summary"], "tests": tests, "collectors": collectors})
}

fn json_pick(v: &Value, keys: &[&str]) -> Value {
    Value::Object(keys.iter().map(|k| (k.to_string(), v[k].clone())).collect())
}

/// pytest-html's entries: per key, each entry's result, testId and log
/// (a test's log only for collection rows: under xdist plain pytest-html
/// shows the worker line as a passed test's log, not compared here).
fn html(path: &Path) -> BTreeMap<String, Vec<(String, String, String)>> {
    let page = std::fs::read_to_string(path).unwrap();
    let blob = crate::reports::blob(&page);
    let tests = blob["tests"].as_object().unwrap();
    tests
        .iter()
        .map(|(k, list)| {
            let entries = list.as_array().unwrap().iter().map(|e| {
                let s = |f: &str| e[f].as_str().unwrap_or_default().to_string();
                let log = if s("testId").ends_with("::collect") { s("log") } else { String::new() };
                (s("result"), s("testId"), log)
            });
            (k.clone(), entries.collect())
        })
        .collect()
}

/// pytest-csv's rows without the duration.
fn csv(path: &Path) -> Option<Vec<BTreeMap<String, String>>> {
    let mut rd = ::csv::Reader::from_path(path).ok()?;
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    let rows = rd.records().map(|r| header.iter().cloned().zip(r.unwrap().iter().map(String::from)).collect());
    Some(
        rows.map(|mut r: BTreeMap<String, String>| {
            r.remove("duration");
            r
        })
        .collect(),
    )
}

/// Runs `args` plain with every report plugin, then wrapped with the
/// wrapper creating every report, and compares them entry by entry.
fn created_match_plain(s: &Suite, args: &[&str], want_cases: usize) {
    let mut cmd = Command::new(python());
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider"]).args(args).args([
        "--junitxml=plain.xml",
        "--json-report",
        "--json-report-file=plain.json",
        "--html=plain.html",
        "--self-contained-html",
        "--csv=plain.csv",
    ]);
    let plain = s.run_cmd(cmd);
    let wrapped = s.wrap(
        &["--junit-xml", "w.xml", "--json-report", "w.json", "--html-report", "w.html", "--csv-report", "w.csv"],
        args,
    );
    let p = |n: &str| s.path().join(n);
    let ctx = format!("{args:?}\nplain:\n{}\nwrapped:\n{}", plain.dump(), wrapped.dump());
    let (plain_suite, plain_cases) = junit(&p("plain.xml"));
    assert_eq!(plain_cases.len(), want_cases, "plain JUnit\n{ctx}");
    assert_eq!(junit(&p("w.xml")), (plain_suite, plain_cases), "JUnit\n{ctx}");
    assert_eq!(json(&p("w.json")), json(&p("plain.json")), "JSON\n{ctx}");
    assert_eq!(html(&p("w.html")), html(&p("plain.html")), "HTML\n{ctx}");
    // pytest-csv lists no collection results, and writes nothing when
    // collection is interrupted.
    if let Some(rows) = csv(&p("plain.csv")) {
        assert_eq!(csv(&p("w.csv")), Some(rows), "CSV\n{ctx}");
    }
    assert_eq!(wrapped.code(), plain.code(), "exit status\n{ctx}");
}

/// The blunt durations of pytest-html ("0 ms") differ run to run for the
/// passing test; a suite of fast tests keeps them at 0 ms.
fn skipping_suite() -> Suite {
    let s = Suite::new();
    s.write("test_ok.py", OK).write("test_skip_a.py", SKIPPING).write("gpu/test_skip_b.py", SKIPPING);
    s
}

#[test]
fn module_level_skips_are_in_created_reports_serial() {
    created_match_plain(&skipping_suite(), &[], 3);
}

#[test]
fn module_level_skips_are_in_created_reports_xdist() {
    created_match_plain(&skipping_suite(), &["-n", "2"], 3);
}

fn broken_suite() -> Suite {
    let s = Suite::new();
    s.write("test_ok.py", OK).write("test_broken.py", BROKEN).write("test_skip_a.py", SKIPPING);
    s
}

#[test]
fn collection_errors_are_in_created_reports_serial() {
    created_match_plain(&broken_suite(), &["--continue-on-collection-errors"], 3);
}

#[test]
fn collection_errors_are_in_created_reports_xdist() {
    created_match_plain(&broken_suite(), &["-n", "2", "--continue-on-collection-errors"], 3);
}

#[test]
fn interrupted_collection_is_in_created_reports() {
    // "Interrupted: 1 error during collection": no test runs.
    created_match_plain(&broken_suite(), &[], 2);
}

#[test]
fn collection_results_once_after_a_crash_and_resume() {
    // Every run collects the skipping modules again; the created reports
    // list each once, beside the crash.
    let s = skipping_suite();
    s.write("test_crashy.py", crate::util::CRASHY);
    let run = s.wrap(&["--junit-xml", "w.xml", "--json-report", "w.json"], &[]);
    assert_eq!(run.code(), 1, "{}", run.dump());
    assert!(run.records().len() == 1, "{}", run.dump());
    let (suite, cases) = junit(&s.path().join("w.xml"));
    let skips: Vec<&Case> = cases.iter().filter(|c| c.3 == "collection skipped").collect();
    assert_eq!(skips.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(), ["gpu.test_skip_b", "test_skip_a"], "{cases:?}");
    let want = [("errors", "0"), ("failures", "1"), ("skipped", "2"), ("tests", "6")];
    assert_eq!(suite, want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), "{}", run.dump());
    let collectors = json(&s.path().join("w.json"))["collectors"].clone();
    assert_eq!(collectors.as_array().unwrap().len(), 2, "{collectors}");
}
