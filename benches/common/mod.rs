//! Input generators shared by the criterion benchmarks.
//!
//! Reports are grown from small files the real plugins wrote
//! (`benches/fixtures/sample.*`, from `fixtures/test_sample.py.txt` run with
//! pytest-json-report 1.5, pytest-html 4.2, pytest-csv 3.0 and `--junitxml`):
//! each test entry of a fixture is a template, repeated with fresh node ids,
//! so a generated report keeps the real plugins' layout byte for byte apart
//! from the ids. Nothing large is committed.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

const JSON: &str = include_str!("../fixtures/sample.json");
const HTML: &str = include_str!("../fixtures/sample.html");
const CSV: &str = include_str!("../fixtures/sample.csv");
const XML: &str = include_str!("../fixtures/sample.xml");

/// Node ids of the fixture's tests: two passing (with captured stdout), one
/// failing, one skipped.
const PASS: &str = "test_sample.py::TestKernels::test_matmul[1]";
const FAIL: &str = "test_sample.py::test_fails";
const SKIP: &str = "test_sample.py::test_skipped";

/// True under `cargo bench`; false when `cargo test --all-targets` runs the
/// benchmarks once as a smoke test (then inputs are kept small).
pub fn full_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `full` under `cargo bench`, else a small size for the smoke test.
pub fn size(full: usize) -> usize {
    if full_mode() {
        full
    } else {
        (full / 100).max(20)
    }
}

/// Which template test `i` uses: 2% fail, 0.5% skip, the rest pass (the
/// mix of a healthy suite).
fn template_of(i: usize) -> &'static str {
    if i % 50 == 3 {
        FAIL
    } else if i % 200 == 11 {
        SKIP
    } else {
        PASS
    }
}

/// Rewrites a template's text for test `i`: the file becomes
/// `tests/test_suite_NNN.py` (500 tests a file), the name gets `i`.
fn fill(template: &str, tmpl_id: &str, i: usize) -> String {
    let g = i / 500;
    let (old_name, new_name) = match tmpl_id {
        PASS => ("test_matmul[1]", format!("test_matmul[{i}]")),
        FAIL => ("test_fails", format!("test_fails_{i}")),
        _ => ("test_skipped", format!("test_skipped_{i}")),
    };
    template
        .replace("test_sample.py", &format!("tests/test_suite_{g:03}.py"))
        .replace("test_sample", &format!("tests.test_suite_{g:03}"))
        .replace(old_name, &new_name)
}

/// The node id of generated test `i`.
pub fn nodeid(i: usize) -> String {
    fill(template_of(i), template_of(i), i)
}

/// Python's `json.dumps` (default separators, `ensure_ascii=True`).
pub fn py_dumps(v: &Value) -> String {
    pytest_abort::reports::text::py_dumps(v, true)
}

/// Jinja/markupsafe attribute escaping, as pytest-html writes its blob.
fn attr_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    pytest_abort::reports::text::attr_escape_into(s, &mut out);
    out
}

fn attr_unescape(s: &str) -> String {
    s.replace("&#34;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// A pytest-json-report file with `n` tests.
pub fn json_report(n: usize) -> String {
    let doc: Value = serde_json::from_str(JSON).expect("fixture json");
    let tests = doc["tests"].as_array().expect("tests");
    let tmpl = |id: &str| py_dumps(tests.iter().find(|t| t["nodeid"] == id).expect("template test"));
    let (tp, tf, ts) = (tmpl(PASS), tmpl(FAIL), tmpl(SKIP));
    let mut counts = [0usize; 3];
    let mut body = String::with_capacity(n * 700);
    let mut collected = String::with_capacity(n * 100);
    for i in 0..n {
        let id = template_of(i);
        let t = match id {
            PASS => {
                counts[0] += 1;
                &tp
            }
            FAIL => {
                counts[1] += 1;
                &tf
            }
            _ => {
                counts[2] += 1;
                &ts
            }
        };
        if i > 0 {
            body.push_str(", ");
            collected.push_str(", ");
        }
        body.push_str(&fill(t, id, i));
        let _ =
            write!(collected, "{{\"nodeid\": {}, \"type\": \"Function\", \"lineno\": 3}}", py_dumps(&nodeid(i).into()));
    }
    let mut out = String::with_capacity(body.len() + collected.len() + 1024);
    let _ = write!(
        out,
        "{{\"created\": 1795728343.88, \"duration\": {:.3}, \"exitcode\": 1, \"root\": \"/work/project\", \
         \"environment\": {}, \"summary\": {{\"passed\": {}, \"failed\": {}, \"skipped\": {}, \"total\": {n}, \
         \"collected\": {n}}}, \"collectors\": [{{\"nodeid\": \"tests\", \"outcome\": \"passed\", \"result\": [{}]}}], \
         \"tests\": [{}], \"warnings\": []}}",
        n as f64 * 0.0013,
        py_dumps(&doc["environment"]),
        counts[0],
        counts[1],
        counts[2],
        collected,
        body
    );
    out
}

/// A self-contained pytest-html 4 report with `n` tests.
pub fn html_report(n: usize) -> String {
    let start = HTML.find("data-jsonblob=\"").expect("blob") + "data-jsonblob=\"".len();
    let end = start + HTML[start..].find('"').expect("blob end");
    let blob: Value = serde_json::from_str(&attr_unescape(&HTML[start..end])).expect("fixture blob");
    let tests = blob["tests"].as_object().expect("tests");
    let tmpl = |id: &str| py_dumps(&tests[id]);
    let (tp, tf, ts) = (tmpl(PASS), tmpl(FAIL), tmpl(SKIP));
    let mut failed = 0;
    let mut json = String::with_capacity(n * 700);
    json.push_str("{\"environment\": ");
    json.push_str(&py_dumps(&blob["environment"]));
    json.push_str(", \"tests\": {");
    for i in 0..n {
        let id = template_of(i);
        let t = match id {
            PASS => &tp,
            FAIL => {
                failed += 1;
                &tf
            }
            _ => &ts,
        };
        if i > 0 {
            json.push_str(", ");
        }
        json.push_str(&py_dumps(&nodeid(i).into()));
        json.push_str(": ");
        json.push_str(&fill(t, id, i));
    }
    let _ = write!(
        json,
        "}}, \"renderCollapsed\": {}, \"initialSort\": {}, \"title\": \"report.html\"}}",
        py_dumps(&blob["renderCollapsed"]),
        py_dumps(&blob["initialSort"])
    );
    let head = &HTML[..start];
    let head = replace_between(head, "<p class=\"run-count\">", " tests took", &n.to_string());
    let head = replace_between(&head, "<span class=\"failed\">", " Failed,", &failed.to_string());
    let mut out = String::with_capacity(head.len() + json.len() * 5 / 4 + HTML.len() - end);
    out.push_str(&head);
    out.push_str(&attr_escape(&json));
    out.push_str(&HTML[end..]);
    out
}

/// Replaces the text between the first `open` and the next `close`.
fn replace_between(s: &str, open: &str, close: &str, with: &str) -> String {
    match s.find(open) {
        Some(a) => {
            let a = a + open.len();
            match s[a..].find(close) {
                Some(b) => format!("{}{}{}", &s[..a], with, &s[a + b..]),
                None => s.to_string(),
            }
        }
        None => s.to_string(),
    }
}

/// A pytest-csv file with `n` tests.
pub fn csv_report(n: usize) -> String {
    let (header, rows) = CSV.split_once('\n').expect("header");
    let row = |id: &str| {
        let a = rows.find(&format!("{id},")).expect("template row");
        let b = rows[a + 1..].find("\ntest_sample.py::").map_or(rows.len(), |b| a + 1 + b + 1);
        rows[a..b].trim_end_matches('\n').to_string() + "\n"
    };
    let (tp, tf, ts) = (row(PASS), row(FAIL), row(SKIP));
    let mut out = String::with_capacity(n * 130);
    out.push_str(header);
    out.push('\n');
    for i in 0..n {
        let id = template_of(i);
        out.push_str(&fill(
            match id {
                PASS => &tp,
                FAIL => &tf,
                _ => &ts,
            },
            id,
            i,
        ));
    }
    out
}

/// A JUnit XML file (pytest `--junitxml`) with `n` tests.
pub fn junit_report(n: usize) -> String {
    let case = |name: &str| {
        let a = XML.find(&format!("name=\"{name}\"")).expect("template case");
        let a = XML[..a].rfind("<testcase ").expect("case start");
        let b = XML[a + 1..].find("<testcase ").map_or_else(|| XML.find("</testsuite>").expect("end"), |b| a + 1 + b);
        XML[a..b].to_string()
    };
    let (tp, tf, ts) = (case("test_matmul[1]"), case("test_fails"), case("test_skipped"));
    let first = XML.find("<testcase ").expect("first case");
    let (mut failures, mut skipped) = (0, 0);
    let mut body = String::with_capacity(n * 120);
    for i in 0..n {
        let id = template_of(i);
        body.push_str(&fill(
            match id {
                PASS => &tp,
                FAIL => {
                    failures += 1;
                    &tf
                }
                _ => {
                    skipped += 1;
                    &ts
                }
            },
            id,
            i,
        ));
    }
    let head = XML[..first]
        .replacen("failures=\"1\"", &format!("failures=\"{failures}\""), 1)
        .replacen("skipped=\"1\"", &format!("skipped=\"{skipped}\""), 1)
        .replacen("tests=\"4\"", &format!("tests=\"{n}\""), 1);
    format!("{head}{body}</testsuite></testsuites>")
}

/// A crash log (the original's record fields) of `n` crashes of tests the
/// reports do not hold, as the original plugin writes it.
pub fn crash_log(n: usize) -> String {
    let mut out = String::with_capacity(n * 420);
    for k in 0..n {
        let g = k % 40;
        let _ = writeln!(
            out,
            "{{\"test_name\": \"test_kernel[{k}]\", \"test_class\": \"test_kernel[{k}]\", \
             \"nodeid\": \"tests/test_crashy_{g:02}.py::test_kernel[{k}]\", \"reason\": \"Test crashed \
             (segmentation fault, abort, or other fatal error) - detected from last running file\", \
             \"crash_time\": \"2026-11-26T21:25:37.{:06}\", \"duration\": 0.{:03}, \"gpu_id\": \"{}\", \
             \"pid\": \"{}\", \"source\": \"xdist:gw{}\", \"logged_at\": \"2026-11-26T21:25:38.000001\"}}",
            k % 1_000_000,
            k % 1000,
            k % 8,
            4000 + k % 30000,
            k % 8
        );
    }
    out
}

/// The four report files of one generated set, written into `dir`.
pub struct ReportSet {
    /// (kind, path, original bytes) per format.
    pub files: Vec<(pytest_abort::reports::Kind, PathBuf, Vec<u8>)>,
}

impl ReportSet {
    /// Generates and writes the set of `n` tests.
    pub fn write(dir: &Path, n: usize) -> ReportSet {
        use pytest_abort::reports::Kind;
        let files = vec![
            (Kind::Json, dir.join(format!("report-{n}.json")), json_report(n).into_bytes()),
            (Kind::Html, dir.join(format!("report-{n}.html")), html_report(n).into_bytes()),
            (Kind::Csv, dir.join(format!("report-{n}.csv")), csv_report(n).into_bytes()),
            (Kind::Junit, dir.join(format!("report-{n}.xml")), junit_report(n).into_bytes()),
        ];
        for (_, p, b) in &files {
            std::fs::write(p, b).expect("write report");
        }
        ReportSet { files }
    }
}
