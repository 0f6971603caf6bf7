//! Hostile and odd report input (issue 10, items 11-15 and 20): node ids
//! with NUL and lone surrogates, report paths that are symlinks or
//! read-only files, reports that start with a UTF-8 BOM, CSV files that are
//! not pytest-csv's, a crash log that does not exist, and error messages
//! that name a path once. Reports are read back by Python's own readers
//! (json, xml.etree, the pytest-html blob) where Rust's would differ.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{python, segv_record, Run, Suite};
use pytest_abort::record::CrashRecord;

/// Node ids are free text once pytest's id escaping is turned off.
const NO_ESCAPING_INI: &str = "[pytest]\ndisable_test_id_escaping_and_forfeit_all_rights_to_community_support = true\n";

fn crash(nodeid: &str) -> CrashRecord {
    CrashRecord { duration: 0.25, ..segv_record(nodeid) }
}

fn write_log(path: &Path, records: &[CrashRecord]) {
    let text: String = records.iter().map(|r| r.to_json_line()).collect();
    std::fs::write(path, text).unwrap();
}

/// Runs `pytest-abort-postprocess ARGS` in the suite folder.
fn postprocess(s: &Suite, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-postprocess"));
    cmd.env_remove("PYTEST_ABORT_CRASHED_TESTS_LOG");
    for a in args {
        cmd.arg(a);
    }
    s.run_cmd(cmd)
}

/// Runs a Python snippet with `sys.argv[1:] = args`; returns its stdout.
fn py(code: &str, args: &[&Path]) -> String {
    let out = Command::new(python()).arg("-c").arg(code).args(args).output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The node ids of every report, as Python reads them, printed with
/// `ascii()` one per line, prefixed by the format.
const READ_IDS: &str = r#"
import csv, html, json, re, sys, xml.etree.ElementTree as ET
for path in sys.argv[1:]:
    if path.endswith(".json"):
        ids = [t["nodeid"] for t in json.load(open(path))["tests"]]
    elif path.endswith(".html"):
        text = open(path, encoding="utf-8").read()
        blob = re.search(r'data-jsonblob="([^"]*)"', text).group(1)
        ids = list(json.loads(html.unescape(blob))["tests"])
    elif path.endswith(".xml"):
        ids = [c.get("classname") + "::" + c.get("name") for c in ET.parse(path).getroot().iter("testcase")]
    else:
        ids = [r["id"] for r in csv.DictReader(open(path, encoding="utf-8", newline=""))]
    for i in ids:
        print(path.rsplit(".", 1)[1], ascii(i))
"#;

#[test]
fn nul_and_lone_surrogate_ids_stay_in_every_report_and_no_raw_nul_lands_in_html() {
    let s = Suite::new();
    s.write("pytest.ini", NO_ESCAPING_INI);
    s.write(
        "test_ids.py",
        "import ctypes, pytest\n\ndef test_ok():\n    pass\n\n\
@pytest.mark.parametrize('p', ['sur\\ud800y'])\ndef test_sur(p):\n    assert 0\n\n\
@pytest.mark.parametrize('p', ['nul\\x00x'])\ndef test_nul(p):\n    ctypes.string_at(0)\n",
    );
    let run = s
        .wrap(&[], &["-q", "--json-report", "--json-report-file", "r.json", "--html", "r.html", "--junitxml", "r.xml"]);
    assert_eq!(run.code(), 1, "{}", run.dump());
    let p = |n: &str| s.path().join(n);
    let ids = py(READ_IDS, &[&p("r.json"), &p("r.html"), &p("r.xml")]);
    for want in [
        "json 'test_ids.py::test_ok'",
        "json 'test_ids.py::test_sur[sur\\ud800y]'",
        "json 'test_ids.py::test_nul[nul\\x00x]'",
        "html 'test_ids.py::test_ok'",
        "html 'test_ids.py::test_sur[sur\\ud800y]'",
        "html 'test_ids.py::test_nul[nul\\x00x]'",
        "xml 'test_ids::test_ok'",
        "xml 'test_ids::test_nul[nul#x00x]'",
    ] {
        // A test whose process died is filled in from its journal, where the
        // wrapper reads a lone surrogate as U+FFFD (a Rust string holds none).
        let alt = want.replace("\\ud800", "\\ufffd");
        assert!(ids.lines().any(|l| l == want || l == alt), "{want} missing from\n{ids}\n{}", run.dump());
    }
    // pytest itself gives the surrogate test an error (it cannot put the id
    // into PYTEST_CURRENT_TEST): the merged JSON says so.
    let summary = py("import json,sys; print(json.load(open(sys.argv[1]))['summary'])", &[&p("r.json")]);
    assert!(summary.contains("'error': 1") && summary.contains("'failed': 1"), "{summary}");
    let html = std::fs::read(p("r.html")).unwrap();
    assert!(!html.contains(&0), "raw NUL in the merged html");

    // A report created from the crash log alone: no raw NUL either, and the
    // id is in its blob.
    let run = postprocess(&s, &[&"--crash-log", &s.crash_log(), &"--html-report", &p("new.html")]);
    assert_eq!(run.code(), 0, "{}", run.dump());
    let html = std::fs::read(p("new.html")).unwrap();
    assert!(!html.contains(&0), "raw NUL in the created html");
    let ids = py(READ_IDS, &[&p("new.html")]);
    assert!(ids.contains("html 'test_ids.py::test_nul[nul\\x00x]'"), "{ids}");
}

#[test]
fn symlinked_reports_are_written_through_to_their_targets() {
    let s = Suite::new();
    let real = s.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let links = s.path().join("links");
    std::fs::create_dir(&links).unwrap();
    // A link to an existing report (relative target, as `ln -s` makes).
    let log = s.path().join("c.jsonl");
    write_log(&log, &[crash("t.py::test_a")]);
    let run = postprocess(&s, &[&"--crash-log", &log, &"--junit-xml", &real.join("r.xml")]);
    assert_eq!(run.code(), 0, "{}", run.dump());
    symlink("../real/r.xml", links.join("r.xml")).unwrap();
    // A dangling link whose target does not exist yet.
    symlink(real.join("new.json"), links.join("new.json")).unwrap();

    write_log(&log, &[crash("t.py::test_a"), crash("t.py::test_b")]);
    let run = postprocess(
        &s,
        &[&"--crash-log", &log, &"--junit-xml", &links.join("r.xml"), &"--json-report", &links.join("new.json")],
    );
    assert_eq!(run.code(), 0, "{}", run.dump());
    for (link, target) in [(links.join("r.xml"), real.join("r.xml")), (links.join("new.json"), real.join("new.json"))] {
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(meta.file_type().is_symlink(), "{} was replaced by a regular file", link.display());
        assert!(target.is_file(), "{} not written", target.display());
    }
    let ids = py(READ_IDS, &[&real.join("r.xml"), &real.join("new.json")]);
    for want in ["xml 't::test_a'", "xml 't::test_b'", "json 't.py::test_a'", "json 't.py::test_b'"] {
        assert!(ids.lines().any(|l| l == want), "{want} missing from\n{ids}");
    }
    // No temp file left in either folder.
    for d in [&real, &links] {
        let names: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}

#[test]
fn replacing_a_read_only_report_says_so_and_keeps_its_mode() {
    let s = Suite::new();
    let log = s.path().join("c.jsonl");
    let xml = s.path().join("r.xml");
    write_log(&log, &[crash("t.py::test_a")]);
    assert_eq!(postprocess(&s, &[&"--crash-log", &log, &"--junit-xml", &xml]).code(), 0);
    std::fs::set_permissions(&xml, std::fs::Permissions::from_mode(0o444)).unwrap();
    write_log(&log, &[crash("t.py::test_a"), crash("t.py::test_b")]);
    let run = postprocess(&s, &[&"--crash-log", &log, &"--junit-xml", &xml]);
    assert_eq!(run.code(), 0, "{}", run.dump());
    let out = format!("{}{}", run.stdout(), run.stderr());
    let says: Vec<&str> = out.lines().filter(|l| l.contains("read-only")).collect();
    assert_eq!(says.len(), 1, "one line about the read-only file:\n{out}");
    assert!(says[0].contains(&xml.display().to_string()), "{out}");
    assert_eq!(std::fs::metadata(&xml).unwrap().permissions().mode() & 0o777, 0o444);
    assert!(py(READ_IDS, &[&xml]).contains("xml 't::test_b'"));
}

/// A real report of every format from one pytest run, each with a UTF-8 BOM
/// put in front.
fn bom_reports(s: &Suite) -> Vec<PathBuf> {
    s.write("test_b.py", "def test_ok():\n    pass\n");
    let p = |n: &str| s.path().join(n);
    let mut cmd = Command::new(python());
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "test_b.py", "--self-contained-html"]);
    cmd.args(["--json-report", "--json-report-file=r.json", "--html=r.html", "--csv=r.csv", "--junitxml=r.xml"]);
    let run = s.run_cmd(cmd);
    assert_eq!(run.code(), 0, "{}", run.dump());
    let paths = vec![p("r.json"), p("r.html"), p("r.csv"), p("r.xml")];
    for f in &paths {
        let mut b = vec![0xEF, 0xBB, 0xBF];
        b.extend(std::fs::read(f).unwrap());
        std::fs::write(f, b).unwrap();
    }
    paths
}

#[test]
fn reports_starting_with_a_utf8_bom_are_patched_in_all_four_formats() {
    let s = Suite::new();
    let paths = bom_reports(&s);
    let log = s.path().join("c.jsonl");
    write_log(&log, &[crash("test_b.py::test_crash")]);
    let run = postprocess(
        &s,
        &[
            &"--crash-log",
            &log,
            &"--json-report",
            &paths[0],
            &"--html-report",
            &paths[1],
            &"--csv-report",
            &paths[2],
            &"--junit-xml",
            &paths[3],
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.dump());
    // Python's readers with utf-8-sig (what a BOM file needs) see both tests.
    let code = READ_IDS
        .replace("encoding=\"utf-8\"", "encoding=\"utf-8-sig\"")
        .replace("json.load(open(path))", "json.load(open(path, encoding=\"utf-8-sig\"))");
    let ids = py(&code, &paths.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    for fmt in ["json", "html", "csv"] {
        for t in ["test_ok", "test_crash"] {
            let want = format!("{fmt} 'test_b.py::{t}'");
            assert!(ids.lines().any(|l| l == want), "{want} missing from\n{ids}");
        }
    }
    assert!(ids.lines().any(|l| l == "xml 'test_b::test_crash'"), "{ids}");
    for p in &paths {
        assert!(std::fs::read(p).unwrap().starts_with(&[0xEF, 0xBB, 0xBF]), "{} lost its BOM", p.display());
    }
}

#[test]
fn a_csv_that_is_not_pytest_csvs_is_refused_untouched() {
    let s = Suite::new();
    let log = s.path().join("c.jsonl");
    write_log(&log, &[crash("t.py::test_a")]);
    let csv = s.path().join("r.csv");
    std::fs::write(&csv, "foo,bar\n1,2\n").unwrap();
    let run = postprocess(&s, &[&"--crash-log", &log, &"--csv-report", &csv]);
    assert_ne!(run.code(), 0, "{}", run.dump());
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "foo,bar\n1,2\n", "file touched");
    let err = run.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line:\n{err}");
    assert!(lines[0].contains(&csv.display().to_string()) && lines[0].contains("pytest-csv"), "{err}");
}

#[test]
fn a_missing_crash_log_is_one_warning_and_creates_no_report() {
    let s = Suite::new();
    let json = s.path().join("r.json");
    let run = postprocess(&s, &[&"--crash-log", &s.path().join("missing.jsonl"), &"--json-report", &json]);
    assert_eq!(run.code(), 0, "{}", run.dump());
    assert!(!json.exists(), "a report was created from nothing");
    let out = format!("{}{}", run.stdout(), run.stderr());
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line:\n{out}");
    assert!(lines[0].contains("warning") && lines[0].contains("missing.jsonl"), "{out}");
}

#[test]
fn a_report_error_names_its_path_once() {
    let s = Suite::new();
    let log = s.path().join("c.jsonl");
    write_log(&log, &[crash("t.py::test_a")]);
    // A folder where the report should be: it cannot be read.
    let json = s.path().join("r.json");
    std::fs::create_dir(&json).unwrap();
    let run = postprocess(&s, &[&"--crash-log", &log, &"--json-report", &json]);
    assert_ne!(run.code(), 0, "{}", run.dump());
    let err = run.stderr();
    let line = err.lines().find(|l| l.contains("r.json")).unwrap_or_else(|| panic!("no error line:\n{err}"));
    assert_eq!(line.matches(&json.display().to_string()).count(), 1, "{line}");
}
