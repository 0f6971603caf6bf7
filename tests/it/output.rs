//! The wrapper's own output: best effort on a full or closed stderr (issue
//! 10 item 2), node ids escaped for the terminal (item 11), and the
//! `--events` JSON lines read back from real crashing runs.

use std::fs::File;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::{python, Suite, CRASHY};

fn crashy() -> Suite {
    let s = Suite::new();
    s.write("test_crashy.py", CRASHY);
    s
}

/// The wrapper on the crashy suite with a JSON report, as a command.
fn wrap_cmd(s: &Suite, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).arg("--json-report").arg(s.path().join("r.json"));
    cmd.args(extra).arg("--").arg(python());
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_crashy.py"]);
    let path = format!("{}:{}", crate::util::venv_bin().display(), std::env::var("PATH").unwrap_or_default());
    cmd.current_dir(s.path()).env("PATH", path).env_remove("PYTEST_ADDOPTS");
    cmd
}

/// Nothing was lost: the crash record, the report with every test, and
/// the rerun that ran the test after the crash.
fn assert_nothing_lost(s: &Suite, code: Option<i32>) {
    assert_eq!(code, Some(1), "a crash fails the job; not a panic (101)");
    let log = std::fs::read_to_string(s.crash_log()).unwrap_or_default();
    assert!(log.contains("test_crashy.py::test_crash"), "crash record: {log}");
    let report: Value = serde_json::from_slice(&std::fs::read(s.path().join("r.json")).expect("report")).unwrap();
    assert_eq!(report["tests"].as_array().map(Vec::len), Some(3), "{report}");
    let runs = std::fs::read_to_string(s.path().join("runs.jsonl")).unwrap_or_default();
    assert!(runs.contains("test_crashy.py::test_after"), "the rest ran: {runs}");
}

#[test]
fn a_full_stderr_loses_nothing() {
    let s = crashy();
    let full = File::options().write(true).open("/dev/full").expect("/dev/full");
    let out = wrap_cmd(&s, &[]).stdout(Stdio::null()).stderr(full).output().unwrap();
    assert_nothing_lost(&s, out.status.code());
}

#[test]
fn a_stderr_closed_after_ten_bytes_loses_nothing() {
    let s = crashy();
    let mut wrapper = wrap_cmd(&s, &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let head = Command::new("head")
        .args(["-c", "10"])
        .stdin(Stdio::from(wrapper.stderr.take().unwrap()))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(head.success());
    let status = wrapper.wait().unwrap();
    assert_nothing_lost(&s, status.code());
}

fn read_events(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("events file");
    assert!(text.ends_with('\n'), "every event ends its line: {text:?}");
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["type"].is_string(), "every event has a type: {l}");
            v
        })
        .collect()
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

#[test]
fn events_of_a_crashing_serial_run_read_back() {
    let s = crashy();
    let ev = s.path().join("events.jsonl");
    let out = wrap_cmd(&s, &["--events", ev.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let events = read_events(&ev);
    assert_eq!(events.first().unwrap()["type"], "run_started", "{events:#?}");
    assert_eq!(events.first().unwrap()["run"], 1, "{events:#?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "session_finished", "{events:#?}");
    assert_eq!(last["exit_code"], 1, "{last}");
    assert_eq!(last["crashed"], 1, "{last}");
    assert_eq!(last["passed"], 2, "{last}");
    let crashed = of_type(&events, "test_crashed");
    assert_eq!(crashed.len(), 1, "{events:#?}");
    let c = crashed[0];
    assert_eq!(c["nodeid"], "test_crashy.py::test_crash", "{c}");
    assert_eq!(c["signal_name"], "SIGSEGV", "{c}");
    assert_eq!(c["phase"], "call", "{c}");
    assert_eq!(c["worker"], "main", "{c}");
    assert!(!of_type(&events, "run_finished").is_empty(), "{events:#?}");
    let reports = of_type(&events, "report_written");
    assert!(reports.iter().any(|r| r["path"].as_str().unwrap().ends_with("r.json")), "{events:#?}");
}

#[test]
fn events_of_a_crashing_xdist_run_read_back_even_when_quiet() {
    let s = crashy();
    let ev = s.path().join("events.jsonl");
    let mut cmd = wrap_cmd(&s, &["--events", ev.to_str().unwrap(), "-q"]);
    cmd.args(["-n", "2"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("pytest-abort summary"),
        "-q: the terminal reporter is quiet, the events are not"
    );
    let events = read_events(&ev);
    let crashed = of_type(&events, "test_crashed");
    assert_eq!(crashed.len(), 1, "{events:#?}");
    assert!(crashed[0]["worker"].as_str().unwrap().starts_with("gw"), "{:?}", crashed[0]);
    assert_eq!(crashed[0]["source"].as_str().unwrap(), format!("xdist:{}", crashed[0]["worker"].as_str().unwrap()));
    assert_eq!(events.last().unwrap()["type"], "session_finished");
    assert_eq!(events.last().unwrap()["passed"], 2);
}

#[test]
fn control_characters_in_node_ids_are_escaped_on_the_terminal() {
    let s = Suite::new();
    s.write("pytest.ini", "[pytest]\ndisable_test_id_escaping_and_forfeit_all_rights_to_community_support = true\n");
    s.write(
        "test_ids.py",
        "import ctypes, pytest\n\n@pytest.mark.parametrize('v', ['\\x1b]0;pwned\\x07\\x1b[31mred', 'nul\\x00here'])\ndef test_p(v):\n    ctypes.string_at(0)\n",
    );
    let r = s.wrap(&[], &["-q", "test_ids.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_eq!(r.records().len(), 2, "{}", r.dump());
    let err = r.stderr();
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("CRASHED") || l.starts_with("pytest-abort:")).collect();
    assert!(ours.iter().filter(|l| l.starts_with("CRASHED")).count() == 2, "{err:?}");
    for l in &ours {
        assert!(!l.contains('\u{1b}') && !l.contains('\0') && !l.contains('\u{7}'), "raw control character: {l:?}");
    }
    assert!(ours.iter().any(|l| l.contains("\\x1b[31mred")), "escaped, still readable: {ours:?}");
    assert!(ours.iter().any(|l| l.contains("nul\\x00here")), "{ours:?}");
}

#[test]
fn events_are_on_disk_while_the_run_goes_on() {
    // The test after the crash runs in the second pytest run and looks at
    // the events file from inside: the crash must already be there.
    let s = Suite::new();
    s.write(
        "test_follow.py",
        r#"
import ctypes, json, os

def test_crash():
    ctypes.string_at(0)

def test_sees_the_crash_event():
    lines = open(os.environ["EVENTS_UNDER_TEST"]).read().splitlines()
    types = [json.loads(l)["type"] for l in lines]
    assert "test_crashed" in types, types
"#,
    );
    let ev = s.path().join("events.jsonl");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).arg("--events").arg(&ev).arg("--").arg(python());
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_follow.py"]);
    cmd.env("EVENTS_UNDER_TEST", &ev);
    let r = s.run_cmd(cmd);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let events = read_events(&ev);
    let last = events.last().unwrap();
    assert_eq!(last["passed"], 1, "the test saw the crash event while the run went on: {}", r.dump());
    assert_eq!(last["failed"], 0, "{}", r.dump());
}

/// Issue 9 item 10: pytest's lines about the per-run report copies (temp
/// paths deleted at the end) are not shown as results; the wrapper ends
/// with each final report and the entries it really holds.
#[test]
fn reports_are_shown_at_their_final_paths_with_their_entry_counts() {
    let s = crashy();
    let (xml, json, html) = (s.path().join("r.xml"), s.path().join("r.json"), s.path().join("r.html"));
    let (xml_arg, json_arg) =
        (format!("--junitxml={}", xml.display()), format!("--json-report-file={}", json.display()));
    let html_arg = format!("--html={}", html.display());
    let run = s.wrap(&[], &[&xml_arg, "--json-report", &json_arg, &html_arg, "test_crashy.py"]);
    let all = format!("{}{}", run.stdout(), run.stderr());
    assert_eq!(run.code(), 1, "{}", run.dump());
    for line in all.lines() {
        assert!(!line.contains("/reports/r"), "a temporary report copy is shown: {line}\n{all}");
    }
    let junit = std::fs::read_to_string(&xml).expect("junit report");
    assert_eq!(junit.matches("<testcase ").count(), 3, "{junit}");
    assert!(all.contains(&format!("generated xml file: {}", xml.display())), "pytest's line, final path: {all}");
    for path in [&xml, &json, &html] {
        let want = format!("report {}: 3 entries", path.display());
        assert!(all.contains(&want), "want {want:?} in:\n{all}");
    }
}
