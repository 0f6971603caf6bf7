//! The differential harness: a wrapped run with crashes must leave the same
//! reports (json, html, csv, JUnit) as one plain pytest run of the same
//! suite without the crashes, entry by entry and in every count, except
//! that each crashed test is a failed test carrying the crash and tests no
//! run could reach are listed as not run.
//!
//! One generated suite (unittest subtests, doctests, hostile parametrize
//! ids, skips, xfail/xpass, fixture errors in setup and teardown, module-
//! and class-scoped fixtures) crashes in four tests over four files when
//! `PA_DIFF_CRASH=1` (SIGSEGV via ctypes, `os.abort`, `os._exit`, SIGKILL
//! of itself). Plain runs (serial and `-n 2`) are shared by every
//! comparison; only times, durations, pids and paths are normalised.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use pytest_abort::reports::text::html_unescape;
use regex::Regex;
use serde_json::Value;

use crate::util::{python, Suite};

const CONFTEST: &str = r#"
import ctypes, os, signal
import pytest

def crash(how):
    """Dies the way `how` says when PA_DIFF_CRASH=1; otherwise does nothing."""
    if os.environ.get("PA_DIFF_CRASH") != "1":
        return
    if how == "segv":
        ctypes.string_at(0)
    elif how == "abort":
        os.abort()
    elif how == "exit":
        os._exit(3)
    elif how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)

@pytest.fixture(scope="module")
def mod_res():
    yield {"n": 1}

@pytest.fixture(scope="class")
def cls_res():
    yield [1, 2]

@pytest.fixture
def broken_setup():
    raise RuntimeError("fixture setup failed")

@pytest.fixture
def broken_teardown():
    yield 1
    raise RuntimeError("fixture teardown failed")
"#;

const TEST_PARAMS: &str = r#"
import pytest
from conftest import crash

IDS = ['quote"d', "single'q", "br[ack]et", "new\nline", "ünïcödé ✓", "a<b&c>", "tab\there", "back\\slash", "sp ace", ">= 3"]

@pytest.mark.parametrize("v", range(len(IDS)), ids=IDS)
def test_odd_ids(v, mod_res):
    assert mod_res["n"] == 1

@pytest.mark.parametrize("n", range(150))
def test_many(n):
    if n == 37:
        crash("segv")
    assert n >= 0

@pytest.mark.parametrize("s", ["x]y", "[z", "q'\"q"])
def test_str(s):
    print("out", s)
"#;

const TEST_UNITS: &str = r#"
import unittest
from conftest import crash

class TestSub(unittest.TestCase):
    def test_subs_pass(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertGreaterEqual(i, 0)

    def test_subs_some_fail(self):
        for i in range(4):
            with self.subTest(i=i):
                self.assertNotEqual(i, 2)

    def test_plain(self):
        self.assertTrue(True)

    def test_crashes(self):
        crash("abort")

    @unittest.skip("unittest skip")
    def test_skipped(self):
        pass

class TestMore(unittest.TestCase):
    def test_a(self):
        pass

    def test_b(self):
        for i in range(2):
            with self.subTest(msg="m", i=i):
                pass
"#;

const TEST_MISC: &str = r#"
import sys
import pytest
from conftest import crash

def test_ok(mod_res):
    pass

def test_fails():
    print("to stdout")
    sys.stderr.write("to stderr\n")
    assert 1 + 1 == 3, "arithmetic"

@pytest.mark.skip(reason="skipped on purpose")
def test_skip():
    pass

def test_skip_inside():
    pytest.skip("skipped inside")

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="fixed already")
def test_xpass():
    pass

def test_setup_error(broken_setup):
    pass

def test_teardown_error(broken_teardown):
    pass

def test_exits():
    crash("exit")

class TestCls:
    def test_one(self, cls_res):
        assert cls_res == [1, 2]

    def test_two(self, cls_res):
        pass

@pytest.mark.parametrize("k", range(40))
def test_range(k):
    pass
"#;

const TEST_MORE: &str = r#"
import pytest
from conftest import crash

@pytest.mark.parametrize("k", range(50))
def test_bulk(k):
    if k == 20:
        crash("kill")

def test_after():
    pass
"#;

const DOCMOD: &str = r#"
def add(a, b):
    """
    >>> add(1, 2)
    3
    """
    return a + b

def bad():
    """
    >>> bad()
    2
    """
    return 1
"#;

/// The tests that crash when `PA_DIFF_CRASH=1`.
pub const CRASHING: [&str; 4] = [
    "test_params.py::test_many[37]",
    "test_units.py::TestSub::test_crashes",
    "test_misc.py::test_exits",
    "test_more.py::test_bulk[20]",
];

/// A module that skips itself at import, as GPU suites do on CPU nodes:
/// a collection result (JUnit case, JSON collector) in every report.
const TEST_GPU_ONLY: &str =
    "import pytest\n\ntorch = pytest.importorskip(\"pytest_abort_no_such_module\")\n\n\ndef test_on_gpu():\n    pass\n";

/// A fresh copy of the generated suite.
pub fn suite() -> Suite {
    let s = Suite::new();
    for (name, text) in [
        ("conftest.py", CONFTEST),
        ("test_params.py", TEST_PARAMS),
        ("test_units.py", TEST_UNITS),
        ("test_misc.py", TEST_MISC),
        ("test_more.py", TEST_MORE),
        ("docmod.py", DOCMOD),
        ("test_gpu_only.py", TEST_GPU_ONLY),
    ] {
        s.write(name, text);
    }
    s
}

/// The pytest arguments that ask for all four reports in `out/`.
pub fn report_args(extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> =
        ["-q", "--doctest-modules", "-p", "no:cacheprovider"].iter().map(|s| s.to_string()).collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(
        [
            "--json-report",
            "--json-report-file=out/r.json",
            "--html=out/r.html",
            "--self-contained-html",
            "--csv=out/r.csv",
            "--junitxml=out/r.xml",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    a
}

/// A plain pytest run of the suite without crashes: its folder and output.
pub struct Plain {
    suite: Suite,
}

impl Plain {
    fn run(extra: &[&str]) -> Plain {
        let suite = suite();
        let mut cmd = Command::new(python());
        cmd.args(["-m", "pytest"]).args(report_args(extra)).env_remove("PA_DIFF_CRASH");
        let run = suite.run_cmd(cmd);
        assert_eq!(run.code(), 1, "plain run\n{}", run.dump());
        Plain { suite }
    }

    /// The reports this run wrote.
    pub fn reports(&self) -> Reports {
        Reports::read(self.suite.path())
    }
}

static PLAIN_SERIAL: OnceLock<Plain> = OnceLock::new();
static PLAIN_XDIST: OnceLock<Plain> = OnceLock::new();

/// The one plain serial run every comparison shares.
pub fn plain_serial() -> &'static Plain {
    PLAIN_SERIAL.get_or_init(|| Plain::run(&[]))
}

/// The one plain `-n 2` run every xdist comparison shares.
pub fn plain_xdist() -> &'static Plain {
    PLAIN_XDIST.get_or_init(|| Plain::run(&["-n", "2"]))
}

/// Replaces what differs between two runs of the same suite by nature:
/// folders, state paths, durations, pids, addresses.
pub fn norm(s: &str, root: &Path) -> String {
    static RES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let res = RES.get_or_init(|| {
        [
            (r"/tmp/pytest-abort-[A-Za-z0-9]+", "<STATE>"),
            (r"pa-suite-[A-Za-z0-9]+", "<SUITE>"),
            (r"\[gw\d+\]", "[gw]"),
            // Under xdist a worker's progress characters for unittest
            // subtests land in the test's captured stdout: what they are
            // depends on which tests that worker ran before (timing).
            (r"[.uFsxXE]*\s*\[\s*\d+%\]\n?", ""),
            (r"(?m)^u+$", ""),
            (r"\b\d+(\.\d+)?\s?(ms|s)\b", "<T>"),
            (r"\d\d:\d\d:\d\d", "<T>"),
            (r"\bpid \d+", "pid <PID>"),
            (r"0x[0-9a-fA-F]+", "0x<ADDR>"),
        ]
        .into_iter()
        .map(|(r, w)| (Regex::new(r).unwrap(), w))
        .collect()
    });
    let canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut out = s.replace(&canon.display().to_string(), "<ROOT>").replace(&root.display().to_string(), "<ROOT>");
    for (re, with) in res {
        out = re.replace_all(&out, *with).into_owned();
    }
    out
}

/// Normalises every string in a JSON value and drops `duration` members.
fn norm_value(v: &Value, root: &Path) -> Value {
    match v {
        Value::String(s) => Value::String(norm(s, root)),
        Value::Array(a) => Value::Array(a.iter().map(|x| norm_value(x, root)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "duration" | "created"))
                .map(|(k, x)| (k.clone(), norm_value(x, root)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// One JUnit `<testcase>`: its key and its normalised content.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// classname::name
    pub key: String,
    /// First child element (`failure`, `error`, `skipped`) and its `type`.
    pub kind: String,
    /// The element without its `time`, normalised.
    pub body: String,
}

/// Every report of one run, read by real parsers.
pub struct Reports {
    root: PathBuf,
    /// pytest-json-report.
    pub json: Value,
    /// The pytest-html page.
    pub html: String,
    /// CSV header and rows.
    pub csv: (Vec<String>, Vec<Vec<String>>),
    /// JUnit suite attributes and cases.
    pub junit: (BTreeMap<String, String>, Vec<Case>),
}

impl Reports {
    /// Reads `<root>/out/r.{json,html,csv,xml}`.
    pub fn read(root: &Path) -> Reports {
        let out = root.join("out");
        let read =
            |n: &str| std::fs::read_to_string(out.join(n)).unwrap_or_else(|e| panic!("{}: {e}", out.join(n).display()));
        let json = serde_json::from_str(&read("r.json")).expect("r.json is JSON");
        let html = read("r.html");
        let mut rd = csv::Reader::from_path(out.join("r.csv")).expect("r.csv");
        let header: Vec<String> = rd.headers().expect("csv header").iter().map(String::from).collect();
        let rows = rd.records().map(|r| r.expect("csv row").iter().map(String::from).collect()).collect();
        let junit = parse_junit(&read("r.xml"), root);
        Reports { root: root.to_path_buf(), json, html, csv: (header, rows), junit }
    }

    /// The folder of the run that wrote these reports.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The decoded `data-jsonblob` of the page.
    pub fn blob(&self) -> Value {
        let start = self.html.find("data-jsonblob=\"").expect("blob") + "data-jsonblob=\"".len();
        let end = start + self.html[start..].find('"').unwrap();
        serde_json::from_str(&html_unescape(&self.html[start..end])).expect("blob is JSON")
    }
}

fn parse_junit(text: &str, root: &Path) -> (BTreeMap<String, String>, Vec<Case>) {
    use quick_xml::events::Event;
    let mut rd = quick_xml::Reader::from_str(text);
    let mut suite = BTreeMap::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut in_case = 0usize;
    let attrs = |e: &quick_xml::events::BytesStart| -> BTreeMap<String, String> {
        e.attributes()
            .map(|a| {
                let a = a.expect("attribute");
                (String::from_utf8_lossy(a.key.as_ref()).into_owned(), a.unescape_value().expect("value").into_owned())
            })
            .collect()
    };
    loop {
        let ev = rd.read_event().expect("valid JUnit XML");
        match &ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let mut a = attrs(e);
                let empty = matches!(ev, Event::Empty(_));
                if name == "testsuite" && suite.is_empty() {
                    suite = a;
                } else if name == "testcase" {
                    cases.push(Case {
                        key: format!(
                            "{}::{}",
                            a.get("classname").cloned().unwrap_or_default(),
                            a.get("name").cloned().unwrap_or_default()
                        ),
                        kind: String::new(),
                        body: String::new(),
                    });
                    if !empty {
                        in_case = 1;
                    }
                } else if in_case > 0 {
                    let c = cases.last_mut().unwrap();
                    if c.kind.is_empty() && matches!(name.as_str(), "failure" | "error" | "skipped") {
                        c.kind = format!("{name}/{}", a.get("type").cloned().unwrap_or_default());
                    }
                    a.remove("time");
                    c.body.push_str(&norm(&format!("<{name} {a:?}>"), root));
                    if !empty {
                        in_case += 1;
                    }
                }
            }
            Event::Text(t) if in_case > 0 => {
                let t = t.unescape().expect("text");
                cases.last_mut().unwrap().body.push_str(&norm(&t, root));
            }
            Event::CData(t) if in_case > 0 => {
                cases.last_mut().unwrap().body.push_str(&norm(&String::from_utf8_lossy(t), root));
            }
            Event::End(_) if in_case > 0 => {
                in_case -= 1;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (suite, cases)
}

/// What a wrapped run may differ in from the plain one.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Node ids that crashed: failed entries carrying the crash.
    pub crashed: Vec<String>,
    /// Node ids no run reached: one skipped entry each, carrying
    /// `not_run_reason`, in place of whatever plain pytest wrote for them.
    pub not_run: Vec<String>,
    /// The reason every not-run entry carries.
    pub not_run_reason: String,
}

/// Compares every format; returns each difference as a line.
pub fn compare(plain: &Reports, wrapped: &Reports, want: &Expect) -> Vec<String> {
    let mut d = Vec::new();
    compare_json(plain, wrapped, want, &mut d);
    compare_html(plain, wrapped, want, &mut d);
    compare_csv(plain, wrapped, want, &mut d);
    compare_junit(plain, wrapped, want, &mut d);
    d
}

fn is_crashed(want: &Expect, id: &str) -> bool {
    want.crashed.iter().any(|c| c == id)
}

fn is_not_run(want: &Expect, id: &str) -> bool {
    want.not_run.iter().any(|c| c == id)
}

fn crash_text(s: &str) -> bool {
    ["Crashed: SIG", "Exited with code", "crashed with SIG", "exited with code"].iter().any(|w| s.contains(w))
}

fn compare_json(p: &Reports, w: &Reports, want: &Expect, d: &mut Vec<String>) {
    let tests = |r: &Reports| -> BTreeMap<String, Value> {
        let mut m = BTreeMap::new();
        for t in r.json["tests"].as_array().expect("tests array") {
            let id = t["nodeid"].as_str().expect("nodeid").to_string();
            if m.insert(id.clone(), norm_value(t, &r.root)).is_some() {
                m.insert(format!("{id} (again)"), Value::Null);
            }
        }
        m
    };
    let (pt, wt) = (tests(p), tests(w));
    let mut summary = p.json["summary"].as_object().cloned().unwrap_or_default();
    for (id, pv) in &pt {
        let Some(wv) = wt.get(id) else {
            d.push(format!("json: {id:?} missing"));
            continue;
        };
        if is_crashed(want, id) {
            let text = wv.to_string();
            if wv["outcome"] != "failed" || !crash_text(&text) {
                d.push(format!("json: crashed {id:?} is not a failed entry carrying the crash: {wv}"));
            }
            let o = pv["outcome"].as_str().unwrap_or("").to_string();
            let n = summary.get(&o).and_then(Value::as_i64).unwrap_or(0) - 1;
            summary.insert(o, n.into());
            let f = summary.get("failed").and_then(Value::as_i64).unwrap_or(0) + 1;
            summary.insert("failed".into(), f.into());
        } else if is_not_run(want, id) {
            if wv["outcome"] != "skipped" || !wv.to_string().contains(&want.not_run_reason) {
                d.push(format!("json: {id:?} is not a skipped entry saying it was not run: {wv}"));
            }
            let o = pv["outcome"].as_str().unwrap_or("").to_string();
            let n = summary.get(&o).and_then(Value::as_i64).unwrap_or(0) - 1;
            summary.insert(o, n.into());
            let f = summary.get("skipped").and_then(Value::as_i64).unwrap_or(0) + 1;
            summary.insert("skipped".into(), f.into());
        } else if pv != wv {
            d.push(format!("json: {id:?}\n  plain:   {pv}\n  wrapped: {wv}"));
        }
    }
    for id in wt.keys().filter(|k| !pt.contains_key(*k)) {
        d.push(format!("json: extra entry {id:?}"));
    }
    summary.retain(|_, v| v.as_i64() != Some(0));
    let ws = w.json["summary"].as_object().cloned().unwrap_or_default();
    if summary != ws {
        d.push(format!("json summary: plain (crashes applied) {summary:?}\n  wrapped {ws:?}"));
    }
    if p.json["exitcode"] != w.json["exitcode"] {
        d.push(format!("json exitcode: plain {} wrapped {}", p.json["exitcode"], w.json["exitcode"]));
    }
}

fn compare_html(p: &Reports, w: &Reports, want: &Expect, d: &mut Vec<String>) {
    let (pb, wb) = (p.blob(), w.blob());
    let (pt, wt) = (pb["tests"].as_object().unwrap(), wb["tests"].as_object().unwrap());
    let strip = |v: &Value, root: &Path| -> Value {
        let mut v = norm_value(v, root);
        if let Some(a) = v.as_array_mut() {
            for e in a {
                if let Some(row) = e.get_mut("resultsTableRow").and_then(Value::as_array_mut) {
                    row.retain(|c| !c.as_str().unwrap_or("").contains("col-duration"));
                }
            }
        }
        v
    };
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for (id, pv) in pt {
        for e in pv.as_array().unwrap() {
            *counts.entry(e["result"].as_str().unwrap_or("").to_lowercase()).or_default() += 1;
        }
        let Some(wv) = wt.get(id) else {
            d.push(format!("html: {id:?} missing"));
            continue;
        };
        if is_crashed(want, id) {
            let e = &wv[0];
            if wv.as_array().map(Vec::len) != Some(1) || e["result"] != "Failed" || !crash_text(&e["log"].to_string()) {
                d.push(format!("html: crashed {id:?} is not one failed entry carrying the crash: {wv}"));
            }
            for e in pv.as_array().unwrap() {
                *counts.entry(e["result"].as_str().unwrap_or("").to_lowercase()).or_default() -= 1;
            }
            *counts.entry("failed".into()).or_default() += 1;
        } else if is_not_run(want, id) {
            let e = &wv[0];
            let says = e["log"].as_str().is_some_and(|l| l.contains(&want.not_run_reason));
            if wv.as_array().map(Vec::len) != Some(1) || e["result"] != "Skipped" || !says {
                d.push(format!("html: {id:?} is not one skipped entry saying it was not run: {wv}"));
            }
            for e in pv.as_array().unwrap() {
                *counts.entry(e["result"].as_str().unwrap_or("").to_lowercase()).or_default() -= 1;
            }
            *counts.entry("skipped".into()).or_default() += 1;
        } else if strip(pv, &p.root) != strip(wv, &w.root) {
            d.push(format!("html: {id:?}\n  plain:   {}\n  wrapped: {}", strip(pv, &p.root), strip(wv, &w.root)));
        }
    }
    for id in wt.keys().filter(|k| !pt.contains_key(*k)) {
        d.push(format!("html: extra entry {id:?}"));
    }
    for (cls, n) in &counts {
        let want_span = format!("<span class=\"{cls}\">{n} ");
        if *n > 0 && !w.html.contains(&want_span) {
            d.push(format!("html: count span {want_span:?} missing"));
        }
    }
    let run_count = |h: &str| {
        Regex::new(r#"<p class="run-count">(\d+) tests?"#).unwrap().captures(h).map(|c| c[1].parse::<i64>().unwrap())
    };
    // pytest-html's run count counts the passed, failed, xpassed and
    // xfailed entries: a not-run test (skipped) takes its entries out.
    let ran = |e: &Value| ["Passed", "Failed", "XPassed", "XFailed"].contains(&e["result"].as_str().unwrap_or(""));
    let not_run_delta: i64 = -want
        .not_run
        .iter()
        .filter_map(|id| pt.get(id)?.as_array())
        .map(|a| a.iter().filter(|e| ran(e)).count() as i64)
        .sum::<i64>();
    if run_count(&p.html).map(|n| n + not_run_delta) != run_count(&w.html) {
        d.push(format!(
            "html run-count: plain {:?} (+{not_run_delta} not run) wrapped {:?}",
            run_count(&p.html),
            run_count(&w.html)
        ));
    }
}

fn keyed<T: Clone>(items: impl Iterator<Item = (String, T)>) -> BTreeMap<String, T> {
    let mut m = BTreeMap::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (k, v) in items {
        let n = seen.entry(k.clone()).or_default();
        *n += 1;
        m.insert(if *n == 1 { k } else { format!("{k} #{n}") }, v);
    }
    m
}

fn compare_csv(p: &Reports, w: &Reports, want: &Expect, d: &mut Vec<String>) {
    let (ph, wh) = (&p.csv.0, &w.csv.0);
    if ph != wh {
        d.push(format!("csv header: plain {ph:?} wrapped {wh:?}"));
        return;
    }
    let col = |n: &str| ph.iter().position(|h| h == n);
    let id = col("id").expect("id column");
    let rows = |r: &Reports| {
        keyed(r.csv.1.iter().map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| if ph[i].starts_with("duration") { String::new() } else { norm(c, &r.root) })
                .collect();
            (row[id].clone(), cells)
        }))
    };
    let (pr, wr) = (rows(p), rows(w));
    let base = |k: &str| k.rsplit_once(" #").map_or(k.to_string(), |(b, _)| b.to_string());
    for (k, pv) in &pr {
        let Some(wv) = wr.get(k) else {
            // A not-run test is one row, wherever the plain run had more.
            if !(is_not_run(want, &base(k)) && k.contains(" #")) {
                d.push(format!("csv: row {k:?} missing"));
            }
            continue;
        };
        if is_crashed(want, k) {
            let st = col("status").map(|i| wv[i].as_str()).unwrap_or("failed");
            let msg = col("message").map(|i| wv[i].as_str()).unwrap_or("Crashed: SIG");
            if st != "failed" || !crash_text(msg) {
                d.push(format!("csv: crashed {k:?} is not a failed row carrying the crash: {wv:?}"));
            }
        } else if is_not_run(want, k) {
            let st = col("status").map(|i| wv[i].as_str()).unwrap_or("skipped");
            let msg = col("message").map(|i| wv[i].as_str()).unwrap_or(&want.not_run_reason);
            if st != "skipped" || !msg.contains(&want.not_run_reason) {
                d.push(format!("csv: {k:?} is not a skipped row saying it was not run: {wv:?}"));
            }
        } else if pv != wv {
            d.push(format!("csv: {k:?}\n  plain:   {pv:?}\n  wrapped: {wv:?}"));
        }
    }
    for k in wr.keys().filter(|k| !pr.contains_key(*k)) {
        d.push(format!("csv: extra row {k:?}"));
    }
}

/// The key of a node id's JUnit `<testcase>` (`classname::name`, as
/// [`Case::key`]).
pub fn junit_key(id: &str) -> String {
    let (path, rest) = id.split_once("::").unwrap();
    let cls = path.trim_end_matches(".py").replace('/', ".");
    match rest.rsplit_once("::") {
        Some((c, n)) => format!("{cls}.{c}::{n}"),
        None => format!("{cls}::{rest}"),
    }
}

fn compare_junit(p: &Reports, w: &Reports, want: &Expect, d: &mut Vec<String>) {
    let (ps, pc) = &p.junit;
    let (ws, wc) = &w.junit;
    let by_key = |cs: &Vec<Case>| keyed(cs.iter().map(|c| (c.key.clone(), c.clone())));
    let (pm, wm) = (by_key(pc), by_key(wc));
    let crashed_keys: Vec<String> = want.crashed.iter().map(|id| junit_key(id)).collect();
    let not_run_keys: Vec<String> = want.not_run.iter().map(|id| junit_key(id)).collect();
    let base = |k: &str| k.rsplit_once(" #").map_or(k.to_string(), |(b, _)| b.to_string());
    // A test counts in junitxml's `tests` once per report it counted: its
    // own and each subtest's, as many as its pytest-csv rows. A not-run
    // test counts once.
    let id_col = p.csv.0.iter().position(|h| h == "id").expect("id column");
    let plain_counted = |id: &String| p.csv.1.iter().filter(|row| row[id_col] == *id).count() as i64;
    let mut tests = ps.get("tests").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    tests -= want.not_run.iter().map(|id| plain_counted(id) - 1).sum::<i64>();
    let mut failures = ps.get("failures").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let mut skipped = ps.get("skipped").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let mut errors = ps.get("errors").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let uncount = |kind: &str, failures: &mut i64, skipped: &mut i64, errors: &mut i64| match kind
        .split('/')
        .next()
        .unwrap_or("")
    {
        "failure" => *failures -= 1,
        "skipped" => *skipped -= 1,
        "error" => *errors -= 1,
        _ => {}
    };
    for (k, pv) in &pm {
        if not_run_keys.contains(&base(k)) {
            // One skipped case in place of each of the plain run's.
            uncount(&pv.kind, &mut failures, &mut skipped, &mut errors);
            if k.contains(" #") {
                if wm.contains_key(k) {
                    d.push(format!("junit: not-run {k:?} has more than one case"));
                }
                continue;
            }
            skipped += 1;
            match wm.get(k) {
                Some(wv) if wv.kind == "skipped/pytest.skip" && wv.body.contains(&want.not_run_reason) => {}
                other => d.push(format!("junit: {k:?} is not a skipped case saying it was not run: {other:?}")),
            }
            continue;
        }
        let Some(wv) = wm.get(k) else {
            d.push(format!("junit: {k:?} missing"));
            continue;
        };
        if crashed_keys.contains(k) {
            if wv.kind != "failure/crash" || !crash_text(&wv.body) {
                d.push(format!("junit: crashed {k:?} is not a <failure type=\"crash\">: {wv:?}"));
            }
            uncount(&pv.kind, &mut failures, &mut skipped, &mut errors);
            failures += 1;
        } else if pv != wv {
            d.push(format!("junit: {k:?}\n  plain:   {pv:?}\n  wrapped: {wv:?}"));
        }
    }
    for k in wm.keys().filter(|k| !pm.contains_key(*k)) {
        d.push(format!("junit: extra case {k:?}"));
    }
    let want_counts = [
        ("tests", tests.to_string()),
        ("failures", failures.to_string()),
        ("errors", errors.to_string()),
        ("skipped", skipped.to_string()),
    ];
    for (k, v) in want_counts {
        if ws.get(k) != Some(&v) {
            d.push(format!("junit suite {k}: want {v} wrapped {:?}", ws.get(k)));
        }
    }
}

/// Runs the wrapper on a fresh copy of the suite with the crashes on.
pub fn wrapped(wrap_args: &[&str], pytest_extra: &[&str]) -> (Suite, crate::util::Run) {
    let s = suite();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).args(wrap_args).arg("--").arg(python());
    cmd.args(["-m", "pytest"]).args(report_args(pytest_extra)).env("PA_DIFF_CRASH", "1");
    let run = s.run_cmd(cmd);
    (s, run)
}

fn assert_same(plain: &Plain, wrap_args: &[&str], pytest_extra: &[&str]) {
    let want = Expect { crashed: CRASHING.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    assert_matches(plain, wrap_args, pytest_extra, want);
}

/// Runs the suite wrapped and compares its reports with `plain`'s: the
/// crash records must be `want.crashed`'s, and the reports the same but
/// for `want`.
fn assert_matches(plain: &Plain, wrap_args: &[&str], pytest_extra: &[&str], mut want: Expect) {
    let (s, run) = wrapped(wrap_args, pytest_extra);
    assert_eq!(run.code(), 1, "{}", run.dump());
    let mut crashed: Vec<String> = run.records().iter().map(|r| r.nodeid.clone()).collect();
    crashed.sort();
    want.crashed.sort();
    assert_eq!(crashed, want.crashed, "{}", run.dump());
    let diffs = compare(&plain.reports(), &Reports::read(s.path()), &want);
    assert!(
        diffs.is_empty(),
        "{} differences from the plain run ({wrap_args:?} {pytest_extra:?}):\n{}\n{}",
        diffs.len(),
        diffs.iter().take(40).map(|l| l.chars().take(700).collect::<String>()).collect::<Vec<_>>().join("\n"),
        run.stderr().lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
}

/// With `--max-runs 2` the serial wrapped run stops at its second crash:
/// the crashes are the first two crashing tests in run order, and every
/// test after the second is a not-run skip.
fn expect_max_runs_2(plain: &Plain) -> Expect {
    let order: Vec<String> = plain.reports().json["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["nodeid"].as_str().unwrap().into())
        .collect();
    let crash_at: Vec<usize> =
        order.iter().enumerate().filter(|(_, id)| CRASHING.contains(&id.as_str())).map(|(i, _)| i).collect();
    let last = crash_at[1];
    Expect {
        crashed: crash_at[..2].iter().map(|i| order[*i].clone()).collect(),
        not_run: order[last + 1..].to_vec(),
        not_run_reason: "not run: --max-runs 2 used up".into(),
    }
}

#[test]
fn serial_resume_reports_match_plain() {
    assert_same(plain_serial(), &["--max-runs", "9"], &[]);
}

#[test]
fn serial_deselect_reports_match_plain() {
    assert_same(plain_serial(), &["--max-runs", "9", "--retry-mode", "deselect"], &[]);
}

#[test]
fn xdist_resume_reports_match_plain() {
    assert_same(plain_xdist(), &["--max-runs", "9"], &["-n", "2"]);
}

#[test]
fn xdist_deselect_reports_match_plain() {
    assert_same(plain_xdist(), &["--max-runs", "9", "--retry-mode", "deselect"], &["-n", "2"]);
}

#[test]
fn serial_resume_with_max_runs_used_up_matches_plain_but_for_not_run_tests() {
    let want = expect_max_runs_2(plain_serial());
    assert!(want.not_run.len() > 100, "{want:?}");
    assert_matches(plain_serial(), &["--max-runs", "2"], &[], want);
}

#[test]
fn serial_deselect_with_max_runs_used_up_matches_plain_but_for_not_run_tests() {
    let want = expect_max_runs_2(plain_serial());
    assert_matches(plain_serial(), &["--max-runs", "2", "--retry-mode", "deselect"], &[], want);
}
