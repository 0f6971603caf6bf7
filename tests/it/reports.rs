//! Report handling against real reports from real pytest runs with the real
//! plugins (pytest-json-report, pytest-html 4, pytest-csv, junitxml):
//! patching, creation, idempotency, invalid files, pytest_html_merger,
//! headless Chromium, and the wrapper's end-to-end merge across runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{python, segv_record, Suite};
use pytest_abort::record::CrashRecord;
use pytest_abort::reports::{self, Kind};
use serde_json::Value;

const SUITE: &str = r#"
import pytest

def test_ok():
    pass

def test_fail():
    print("some output")
    assert 1 == 2

@pytest.mark.skip(reason="not today")
def test_skip():
    pass

class TestC:
    @pytest.mark.parametrize("p", ["a<b", 'q"&'])
    def test_m(self, p):
        pass
"#;

const XSS_IMG: &str = "test_r.py::test_p[<img src=x onerror=\"document.title='PWNED1';document.body.appendChild(document.createElement('pwned'))\">]";
const XSS_SCRIPT: &str = "test_r.py::test_q[</td></tr><script>document.title='PWNED2'</script>]";

fn crash(nodeid: &str) -> CrashRecord {
    CrashRecord {
        pid: "99".into(),
        gpu_id: "unknown".into(),
        duration: 0.5,
        traceback: Some("Fatal Python error: Segmentation fault\n  File \"x.py\", line 3 in <module>\n</div><script>document.title='PWNED3'</script>".into()),
        ..segv_record(nodeid)
    }
}

fn records() -> Vec<CrashRecord> {
    vec![
        crash(XSS_IMG),
        crash(&format!("  {XSS_IMG} ")), // duplicate after trimming
        crash(""),                       // no nodeid: skipped
        crash("test_r.py::test_ok"),     // already in the reports: skipped
        crash(XSS_SCRIPT),
    ]
}

/// Runs real pytest in `suite` writing all four reports into `dir`.
fn real_reports(suite: &Suite, dir: &Path, self_contained: bool) -> BTreeMap<Kind, PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let m: BTreeMap<Kind, PathBuf> = [
        (Kind::Json, dir.join("r.json")),
        (Kind::Html, dir.join("r.html")),
        (Kind::Csv, dir.join("r.csv")),
        (Kind::Junit, dir.join("r.xml")),
    ]
    .into_iter()
    .collect();
    let mut cmd = Command::new(python());
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "test_r.py"]);
    cmd.arg(format!("--html={}", m[&Kind::Html].display()));
    if self_contained {
        cmd.arg("--self-contained-html");
    }
    cmd.args(["--json-report", &format!("--json-report-file={}", m[&Kind::Json].display())]);
    cmd.arg(format!("--csv={}", m[&Kind::Csv].display()));
    cmd.arg(format!("--junitxml={}", m[&Kind::Junit].display()));
    let run = suite.run_cmd(cmd);
    assert_eq!(run.code(), 1, "{}", run.dump());
    for p in m.values() {
        assert!(p.exists(), "{} missing\n{}", p.display(), run.dump());
    }
    m
}

fn suite() -> Suite {
    let s = Suite::new();
    s.write("test_r.py", SUITE);
    s
}

/// The decoded `data-jsonblob` of a pytest-html page.
pub(crate) fn blob(html: &str) -> Value {
    let start = html.find("data-jsonblob=\"").expect("blob") + "data-jsonblob=\"".len();
    let end = start + html[start..].find('"').unwrap();
    serde_json::from_str(&reports::text::html_unescape(&html[start..end])).expect("blob is JSON")
}

fn json_ids(path: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["tests"].as_array().unwrap().iter().map(|t| t["nodeid"].as_str().unwrap().to_string()).collect()
}

/// (classname, name, child kind) of every testcase, and the first suite's attributes.
/// (classname, name, child element) per testcase.
type Cases = Vec<(String, String, String)>;

fn junit(path: &Path) -> (Cases, BTreeMap<String, String>) {
    use quick_xml::events::Event;
    let text = std::fs::read_to_string(path).unwrap();
    let mut rd = quick_xml::Reader::from_str(&text);
    let mut cases: Cases = Vec::new();
    let mut suite = BTreeMap::new();
    loop {
        match rd.read_event().expect("valid XML") {
            Event::Start(e) | Event::Empty(e) => {
                let attrs: BTreeMap<String, String> = e
                    .attributes()
                    .map(|a| {
                        let a = a.unwrap();
                        (String::from_utf8_lossy(a.key.as_ref()).into_owned(), a.unescape_value().unwrap().into_owned())
                    })
                    .collect();
                match e.name().as_ref() {
                    b"testsuite" if suite.is_empty() => suite = attrs,
                    b"testcase" => cases.push((attrs["classname"].clone(), attrs["name"].clone(), String::new())),
                    b"failure" | b"error" | b"skipped" => {
                        cases.last_mut().unwrap().2 = String::from_utf8_lossy(e.name().as_ref()).into_owned()
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (cases, suite)
}

fn csv_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut rd = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    rd.records().map(|r| header.iter().cloned().zip(r.unwrap().iter().map(String::from)).collect()).collect()
}

fn snapshot(paths: &BTreeMap<Kind, PathBuf>) -> BTreeMap<Kind, Vec<u8>> {
    paths.iter().map(|(k, p)| (*k, std::fs::read(p).unwrap())).collect()
}

#[test]
fn patches_real_reports_of_every_format_once() {
    let s = suite();
    let dir = s.path().join("out");
    let paths = real_reports(&s, &dir, true);
    let targets: Vec<(Kind, PathBuf)> = paths.iter().map(|(k, p)| (*k, p.clone())).collect();
    let before_json = std::fs::read_to_string(&paths[&Kind::Json]).unwrap();

    let res = reports::postprocess(&records(), &targets);
    for r in &res {
        let p = r.as_ref().expect("patched");
        assert_eq!(p.added, 2, "{p:?}");
        assert!(!p.created);
    }

    // JSON: the original text is a prefix up to the tests' end; two failed tests appended.
    let after_json = std::fs::read_to_string(&paths[&Kind::Json]).unwrap();
    let v: Value = serde_json::from_str(&after_json).unwrap();
    let ids = json_ids(&paths[&Kind::Json]);
    assert_eq!(ids.len(), 7);
    assert_eq!(&ids[5..], [XSS_IMG, XSS_SCRIPT]);
    assert_eq!(v["summary"]["failed"], 3);
    assert_eq!(v["summary"]["total"], 7);
    assert_eq!(v["exitcode"], 1);
    assert_eq!(v["tests"][5]["outcome"], "failed");
    let longrepr = v["tests"][5]["call"]["longrepr"].as_str().unwrap();
    assert!(longrepr.contains("SIGSEGV") && longrepr.contains("Fatal Python error"), "{longrepr}");
    // Everything from "collectors" to the last original test is byte-identical.
    let from = before_json.find("\"collectors\": ").unwrap();
    let to = before_json.rfind("]}").unwrap();
    assert!(after_json.contains(&before_json[from..to]), "original entries kept byte for byte");
    assert!(after_json.ends_with("}]}") || after_json.ends_with("}]}\n"), "layout kept");
    assert!(!after_json.contains("\n    "), "not re-indented");

    // JUnit
    let (cases, suite_attrs) = junit(&paths[&Kind::Junit]);
    assert_eq!(cases.len(), 7);
    assert_eq!(suite_attrs["tests"], "7");
    assert_eq!(suite_attrs["failures"], "3");
    assert_eq!(suite_attrs["skipped"], "1");
    let img = cases.iter().find(|c| c.1.starts_with("test_p[")).unwrap();
    assert_eq!(img.0, "test_r");
    assert_eq!(img.2, "failure");
    let xml = std::fs::read_to_string(&paths[&Kind::Junit]).unwrap();
    assert!(xml.contains("<failure type=\"crash\""), "{xml}");
    // pytest's own entry for the class method, for comparison of naming
    assert!(cases.iter().any(|c| c.0 == "test_r.TestC" && c.1 == "test_m[a<b]"));

    // CSV
    let rows = csv_rows(&paths[&Kind::Csv]);
    assert_eq!(rows.len(), 7);
    let last = rows.last().unwrap();
    assert_eq!(last["id"], XSS_SCRIPT);
    assert_eq!(last["status"], "failed");
    assert_eq!(last["module"], "test_r");
    assert!(last["message"].contains("SIGSEGV"));

    // HTML blob
    let html = std::fs::read_to_string(&paths[&Kind::Html]).unwrap();
    let b = blob(&html);
    let tests = b["tests"].as_object().unwrap();
    assert_eq!(tests.len(), 7);
    assert_eq!(tests[XSS_IMG][0]["result"], "Failed");
    assert!(html.contains("<span class=\"failed\">3 Failed,</span>"));
    assert!(html.contains("<p class=\"run-count\">6 tests took"), "run count");
    assert!(!html.contains("<script>document.title"), "raw script in page");

    // Idempotent: byte-identical on a second run, nothing added.
    let once = snapshot(&paths);
    for r in reports::postprocess(&records(), &targets) {
        assert_eq!(r.unwrap().added, 0);
    }
    assert_eq!(once, snapshot(&paths));
    // No temp files left beside the reports (atomic writes).
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn invalid_reports_are_left_untouched_and_the_rest_patched() {
    let s = suite();
    let dir = s.path().join("out");
    let paths = real_reports(&s, &dir, true);
    // Truncate the JSON and XML as a killed writer would leave them.
    let json = std::fs::read(&paths[&Kind::Json]).unwrap();
    std::fs::write(&paths[&Kind::Json], &json[..json.len() / 2]).unwrap();
    let xml = std::fs::read(&paths[&Kind::Junit]).unwrap();
    std::fs::write(&paths[&Kind::Junit], &xml[..xml.len() - 30]).unwrap();
    let before = snapshot(&paths);

    let log = s.path().join("crashes.jsonl");
    let mut text = String::from("\nnot json\n{\"nodeid\": 3}\n");
    for r in records() {
        text.push_str(&r.to_json_line());
    }
    std::fs::write(&log, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-postprocess"));
    cmd.arg("--crash-log").arg(&log);
    for (flag, k) in [
        ("--json-report", Kind::Json),
        ("--html-report", Kind::Html),
        ("--csv-report", Kind::Csv),
        ("--junit-xml", Kind::Junit),
    ] {
        cmd.arg(flag).arg(&paths[&k]);
    }
    let run = s.run_cmd(cmd);
    assert_ne!(run.code(), 0, "{}", run.dump());
    let err = run.stderr();
    assert!(err.contains(&paths[&Kind::Json].display().to_string()), "{err}");
    assert!(err.contains(&paths[&Kind::Junit].display().to_string()), "{err}");
    let after = snapshot(&paths);
    assert_eq!(before[&Kind::Json], after[&Kind::Json], "invalid JSON untouched");
    assert_eq!(before[&Kind::Junit], after[&Kind::Junit], "invalid XML untouched");
    assert_ne!(before[&Kind::Html], after[&Kind::Html], "valid html still patched");
    assert_eq!(csv_rows(&paths[&Kind::Csv]).len(), 7);

    // No crash log at all: usage error.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-postprocess"));
    cmd.env_remove("PYTEST_ABORT_CRASHED_TESTS_LOG").arg("--json-report").arg(dir.join("x.json"));
    assert_eq!(s.run_cmd(cmd).code(), 2);
}

#[test]
fn missing_reports_are_created_valid_for_their_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records();
    for kind in Kind::ALL {
        let p = dir.path().join(format!("new.{kind}"));
        let r = reports::patch_file(kind, &p, &recs).unwrap();
        assert!(r.created);
        assert_eq!(r.added, 3);
        let again = std::fs::read(&p).unwrap();
        assert_eq!(reports::patch_file(kind, &p, &recs).unwrap().added, 0);
        assert_eq!(again, std::fs::read(&p).unwrap(), "{kind} idempotent");
    }
    assert_eq!(json_ids(&dir.path().join("new.json")).len(), 3);
    let (cases, attrs) = junit(&dir.path().join("new.junit"));
    assert_eq!((cases.len(), attrs["failures"].as_str()), (3, "3"));
    assert_eq!(csv_rows(&dir.path().join("new.csv")).len(), 3);
    let html = std::fs::read_to_string(dir.path().join("new.html")).unwrap();
    assert_eq!(blob(&html)["tests"].as_object().unwrap().len(), 3);
    // A full pytest-html page (its script renders the rows; see
    // html_pages.rs), no markup from the records.
    assert!(html.contains("<script>") && !html.contains("<script>document"), "{html}");
    // The created page is readable by pytest_html_merger.
    let inp = dir.path().join("in");
    std::fs::create_dir(&inp).unwrap();
    std::fs::copy(dir.path().join("new.html"), inp.join("a.html")).unwrap();
    let out = dir.path().join("merged.html");
    let st =
        Command::new(python()).args(["-m", "pytest_html_merger", "-i"]).arg(&inp).arg("-o").arg(&out).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
}

pub(crate) fn chromium_dom(page: &Path) -> String {
    let bin = Path::new("/usr/bin/chromium");
    assert!(bin.exists(), "/usr/bin/chromium is missing: install Debian's chromium package (.ci/run does)");
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn patched_html_renders_crashed_rows_and_runs_no_injected_script() {
    let s = suite();
    let dir = s.path().join("out");
    let paths = real_reports(&s, &dir, true);
    reports::patch_file(Kind::Html, &paths[&Kind::Html], &records()).unwrap();
    let dom = chromium_dom(&paths[&Kind::Html]);
    assert!(
        !dom.contains("PWNED1</title>") && !dom.contains("PWNED2</title>") && !dom.contains("PWNED3</title>"),
        "script ran:\n{dom}"
    );
    assert!(!dom.contains("<pwned>"), "onerror ran");
    // The page's script built one row per test, crashed ones included, with
    // the nodeid shown as text.
    assert_eq!(dom.matches("<tbody class=\"results-table-row failed\"").count(), 3, "{dom}");
    assert!(dom.contains("test_p[&lt;img src=x onerror="), "{dom}");
    assert!(dom.contains("test_q[&lt;/td&gt;&lt;/tr&gt;&lt;script&gt;"), "{dom}");
    assert!(dom.contains("Crashed: SIGSEGV (signal 11)"), "crash text in the log");
    assert!(dom.contains("<span class=\"failed\">3 Failed,</span>"));
    // Control: the same payload inserted unescaped does run under this
    // Chromium setup, so the checks above can see an injection.
    let ctl = dir.join("control.html");
    std::fs::write(&ctl, "<html><head><title>t</title></head><body><div id=d></div><script>document.getElementById('d').innerHTML=\"<img src=x onerror=\\\"document.title='PWNED1';document.body.appendChild(document.createElement('pwned'))\\\">\"</script></body></html>").unwrap();
    let dom = chromium_dom(&ctl);
    assert!(dom.contains("PWNED1</title>") && dom.contains("<pwned>"), "control did not execute:\n{dom}");
    // A created page shows its rows safely too.
    let created = dir.join("created.html");
    reports::patch_file(Kind::Html, &created, &records()).unwrap();
    let dom = chromium_dom(&created);
    assert!(!dom.contains("PWNED1</title>") && !dom.contains("PWNED2</title>"), "script ran");
    assert!(!dom.contains("<pwned>"));
    assert_eq!(dom.matches("class=\"results-table-row failed\"").count(), 3, "{dom}");
}

#[test]
fn pytest_html_merger_reads_patched_and_sanitized_reports() {
    let s = suite();
    let a = real_reports(&s, &s.path().join("a"), true);
    let b = real_reports(&s, &s.path().join("b"), true);
    reports::patch_file(Kind::Html, &a[&Kind::Html], &records()).unwrap();
    // Put a raw control character into b's blob (as broken writers do): the
    // merger cannot read it until it is sanitized.
    let inp = s.path().join("in");
    std::fs::create_dir(&inp).unwrap();
    std::fs::copy(&a[&Kind::Html], inp.join("a_log.html")).unwrap();
    let bt = std::fs::read_to_string(&b[&Kind::Html]).unwrap().replacen("No log output captured.", "bad\tlog\u{1}", 1);
    std::fs::write(inp.join("b_log.html"), bt).unwrap();
    let merge = |out: &Path| {
        Command::new(python()).args(["-m", "pytest_html_merger", "-i"]).arg(&inp).arg("-o").arg(out).output().unwrap()
    };
    let out = s.path().join("merged.html");
    assert!(!merge(&out).status.success(), "the merger should choke on the raw control character");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort"));
    cmd.arg("sanitize-html").arg(&inp);
    let run = s.run_cmd(cmd);
    assert_eq!(run.code(), 0, "{}", run.dump());
    assert!(run.stdout().contains("modified=2 total=2 failed=0"), "{}", run.dump());

    let st = merge(&out);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let merged = std::fs::read_to_string(&out).unwrap();
    let tests = blob(&merged)["tests"].as_object().unwrap().clone();
    assert_eq!(tests.len(), 12, "{:?}", tests.keys().collect::<Vec<_>>());
    assert!(tests.keys().any(|k| k.ends_with(XSS_SCRIPT)));
}

#[test]
fn wrapper_merges_every_run_into_the_requested_reports() {
    let s = Suite::new();
    s.write(
        "test_a.py",
        r#"
import ctypes
def test_1(): pass
def test_2(): ctypes.string_at(0)
def test_3(): pass
def test_4(): assert False, "plain failure"
"#,
    );
    s.write("test_b.py", "def test_5(): pass\ndef test_6(): pass\n");
    let run = s.wrap(
        &["--junit-xml", "w.xml", "--csv-report", "w.csv"],
        &["--html", "r.html", "--json-report", "--json-report-file", "r.json", "--csv", "r.csv", "--junitxml", "r.xml"],
    );
    assert_eq!(run.code(), 1, "{}", run.dump());
    let want: Vec<String> = [
        "test_a.py::test_1",
        "test_a.py::test_2",
        "test_a.py::test_3",
        "test_a.py::test_4",
        "test_b.py::test_5",
        "test_b.py::test_6",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let p = |n: &str| s.path().join(n);

    let v: Value = serde_json::from_slice(&std::fs::read(p("r.json")).unwrap()).unwrap();
    assert_eq!(sorted(json_ids(&p("r.json"))), want, "{}", run.dump());
    let outcome =
        |id: &str| v["tests"].as_array().unwrap().iter().find(|t| t["nodeid"] == id).unwrap()["outcome"].clone();
    assert_eq!(outcome("test_a.py::test_1"), "passed");
    assert_eq!(outcome("test_a.py::test_2"), "failed");
    assert_eq!(outcome("test_a.py::test_4"), "failed");
    assert_eq!(v["summary"]["total"], 6);
    assert_eq!(v["summary"]["failed"], 2);

    let html = std::fs::read_to_string(p("r.html")).unwrap();
    let hb = blob(&html);
    assert_eq!(sorted(hb["tests"].as_object().unwrap().keys().cloned().collect()), want);
    assert_eq!(hb["tests"]["test_a.py::test_2"][0]["result"], "Failed");
    assert!(html.contains("<span class=\"failed\">2 Failed,</span>"), "counts");
    assert!(p("assets/style.css").exists(), "pytest-html assets copied beside the report");
    assert!(html.contains("<title id=\"head-title\">r.html</title>"));

    for csvp in ["r.csv", "w.csv"] {
        let rows = csv_rows(&p(csvp));
        assert_eq!(sorted(rows.iter().map(|r| r["id"].clone()).collect()), want, "{csvp}");
        assert_eq!(rows.iter().find(|r| r["id"] == "test_a.py::test_2").unwrap()["status"], "failed");
    }
    for xmlp in ["r.xml", "w.xml"] {
        let (cases, attrs) = junit(&p(xmlp));
        let mut names: Vec<String> = cases.iter().map(|c| format!("{}::{}", c.0, c.1)).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "test_a::test_1",
                "test_a::test_2",
                "test_a::test_3",
                "test_a::test_4",
                "test_b::test_5",
                "test_b::test_6"
            ],
            "{xmlp}"
        );
        assert_eq!(attrs["tests"], "6", "{xmlp}");
        assert_eq!(attrs["failures"], "2", "{xmlp}");
    }
}

/// A JUnit file the wrapper creates from the journals (pytest was not asked
/// for `--junitxml`) carries each test's `record_property` values as
/// junitxml writes them, serial and under xdist, so CI dashboards that read
/// properties (GPU id, worker, seed) see the same as with plain pytest.
#[test]
fn created_junit_carries_record_property_values_like_junitxml() {
    let s = Suite::new();
    s.write(
        "test_props.py",
        r#"
import pytest

def test_gpu(record_property):
    record_property("gpu", 3)
    record_property("note", 'a<b & "c"')

def test_fails(record_property):
    record_property("seed", "42")
    assert False, "boom"

def test_none():
    pass
"#,
    );
    let props = |path: &Path| -> BTreeMap<String, Vec<(String, String)>> {
        junit_properties(&std::fs::read_to_string(path).unwrap())
    };
    for xdist in [false, true] {
        let mut pytest_args = vec!["-p", "no:cacheprovider"];
        if xdist {
            pytest_args.extend(["-n", "2"]);
        }
        let plain = Command::new(python())
            .args(["-m", "pytest", "--junitxml", "plain.xml"])
            .args(&pytest_args)
            .current_dir(s.path())
            .output()
            .unwrap();
        assert_eq!(plain.status.code(), Some(1), "{}", String::from_utf8_lossy(&plain.stdout));
        let run = s.wrap(&["--junit-xml", "w.xml"], &pytest_args);
        assert_eq!(run.code(), 1, "{}", run.dump());
        let want = props(&s.path().join("plain.xml"));
        assert_eq!(
            want["test_props::test_gpu"],
            vec![("gpu".into(), "3".into()), ("note".into(), "a<b & \"c\"".into())]
        );
        assert_eq!(props(&s.path().join("w.xml")), want, "xdist={xdist}\n{}", run.dump());
    }
}

/// Each testcase's properties `(name, value)` by `classname::name`, read
/// with Python's XML parser (a real consumer of the file).
fn junit_properties(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let script = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
out = {}
for c in root.iter("testcase"):
    out[c.get("classname") + "::" + c.get("name")] = [[p.get("name"), p.get("value")] for p in c.iter("property")]
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Failures whose messages span lines, or are not the last `E` line of the
/// report: what the reports the wrapper creates from its journal say about
/// them must be what pytest's own plugins write.
const MESSAGES_SUITE: &str = r#"
import ctypes
import pytest

def test_multi():
    assert 1 + 1 == 3, "arithmetic\nsecond line"

def test_raise():
    raise ValueError("first\nsecond\nthird")

def helper():
    raise KeyError("deep")

def test_deep():
    helper()

@pytest.fixture
def bad():
    raise RuntimeError("setup\nbroke")

def test_setup_err(bad):
    pass

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_teardown_err(bad_teardown):
    pass

def test_long():
    assert False, "\n".join("line %d %s" % (i, "x" * 60) for i in range(20))

def test_segv():
    ctypes.string_at(0)

def test_ok():
    pass
"#;

/// Per test of a report set in `dir` (`<stem>.xml`, `.csv`, `.json`): the
/// JUnit failure or error element's message, pytest-csv's message, and
/// pytest-json-report's `crash` of the phase that failed.
fn messages_of(dir: &Path, stem: &str) -> BTreeMap<String, (String, String, Value)> {
    use quick_xml::events::Event;
    let mut out: BTreeMap<String, (String, String, Value)> = BTreeMap::new();
    let xml = std::fs::read_to_string(dir.join(format!("{stem}.xml"))).unwrap();
    let mut rd = quick_xml::Reader::from_str(&xml);
    let mut case = String::new();
    loop {
        match rd.read_event().expect("valid JUnit XML") {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |k: &str| {
                    e.try_get_attribute(k)
                        .unwrap()
                        .map(|a| a.unescape_value().unwrap().into_owned())
                        .unwrap_or_default()
                };
                match e.name().as_ref() {
                    b"testcase" => case = attr("name"),
                    b"failure" | b"error" => out.entry(case.clone()).or_default().0 = attr("message"),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut rd = ::csv::Reader::from_path(dir.join(format!("{stem}.csv"))).unwrap();
    let header = rd.headers().unwrap().clone();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    for row in rd.records() {
        let row = row.unwrap();
        if row[col("status")] != *"passed" {
            out.entry(row[col("name")].to_string()).or_default().1 = row[col("message")].to_string();
        }
    }
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap()).unwrap();
    for t in json["tests"].as_array().unwrap() {
        let name = t["nodeid"].as_str().unwrap().rsplit("::").next().unwrap().to_string();
        for phase in ["setup", "call", "teardown"] {
            if let Some(c) = t.get(phase).and_then(|p| p.get("crash")) {
                out.entry(name.clone()).or_default().2 = c.clone();
            }
        }
    }
    out
}

#[test]
fn created_reports_carry_the_failure_messages_pytests_plugins_write() {
    let s = Suite::new();
    s.write("test_msgs.py", MESSAGES_SUITE);
    // Plain pytest with its plugins writing the reports (the crashing test
    // left out), then the wrapper creating the same three from its journal.
    let mut plain = Command::new(python());
    plain.args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-k", "not segv", "--junitxml=p.xml", "--csv=p.csv"]);
    plain.args(["--json-report", "--json-report-file=p.json"]);
    let p = s.run_cmd(plain);
    assert_eq!(p.code(), 1, "{}", p.dump());
    let w = s.wrap(&["--junit-xml", "w.xml", "--csv-report", "w.csv", "--json-report", "w.json"], &["-q"]);
    assert_eq!(w.code(), 1, "{}", w.dump());
    let (want, mut got) = (messages_of(s.path(), "p"), messages_of(s.path(), "w"));
    assert!(got.remove("test_segv").is_some_and(|m| m.0.contains("SIGSEGV")), "{got:?}");
    for name in ["test_multi", "test_raise", "test_deep", "test_setup_err", "test_teardown_err", "test_long"] {
        assert!(want.contains_key(name), "plain run lacks {name}: {want:?}");
    }
    for (name, plain) in &want {
        let created = got.get(name).cloned().unwrap_or_default();
        assert_eq!(created.0, plain.0, "JUnit message of {name}");
        assert_eq!(created.1, plain.1, "CSV message of {name}");
        assert_eq!(created.2, plain.2, "JSON crash of {name}");
    }
}
