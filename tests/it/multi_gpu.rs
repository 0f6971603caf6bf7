//! `--multi-gpu-marker NAME` (issue 13): tests with the marker are left out
//! of the first phase (xdist, as the command says) and run afterwards in one
//! serial phase with every GPU the caller gave; one crash log and one set of
//! merged reports for both, counted as one plain run.

use std::process::Command;

use serde_json::Value;

use crate::util::{python, Suite};

/// Registers the marker and notes, for every test start, its name, pid,
/// xdist worker and `CUDA_VISIBLE_DEVICES`, in order, in `seen.jsonl`.
const CONFTEST: &str = r#"
import json, os
import pytest

def pytest_configure(config):
    config.addinivalue_line("markers", "multi_gpu: needs every GPU")

@pytest.fixture(autouse=True)
def _note(request):
    here = os.path.dirname(__file__)
    with open(os.path.join(here, "runs.jsonl"), "a") as f:
        f.write(json.dumps(request.node.nodeid) + "\n")
    with open(os.path.join(here, "seen.jsonl"), "a") as f:
        f.write(json.dumps({
            "name": request.node.name,
            "pid": os.getpid(),
            "worker": os.environ.get("PYTEST_XDIST_WORKER"),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }) + "\n")
    yield
"#;

const TESTS: &str = r#"
import ctypes, time
import pytest

def test_s0(): time.sleep(0.05)
def test_s1(): time.sleep(0.05)
def test_s2(): time.sleep(0.05)
def test_s3_segv(): ctypes.string_at(0)
def test_s4(): time.sleep(0.05)
def test_s5_fails(): assert False, "plain failure"

@pytest.mark.multi_gpu
def test_m0(): pass

@pytest.mark.multi_gpu
def test_m1_segv(): ctypes.string_at(0)

@pytest.mark.multi_gpu
def test_m2(): pass

class TestAll:
    @pytest.mark.multi_gpu
    def test_m3(self): pass
"#;

fn seen(s: &Suite) -> Vec<Value> {
    let text = std::fs::read_to_string(s.path().join("seen.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Reads the JUnit file with junitparser: per test case its name and
/// result tags, then the suite's totals.
const JUNIT_READER: &str = r#"
import json, sys
from junitparser import JUnitXml
xml = JUnitXml.fromfile(sys.argv[1])
for suite in xml:
    for case in suite:
        print(json.dumps({"name": case.name, "result": [r._tag for r in case.result]}))
    print(json.dumps({"tests": suite.tests, "failures": suite.failures, "errors": suite.errors}))
"#;

fn read_junit(path: &std::path::Path) -> Vec<Value> {
    let out = Command::new(python()).args(["-c", JUNIT_READER]).arg(path).output().expect("run python");
    assert!(out.status.success(), "junitparser: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn run(wrap: &[&str], pytest: &[&str]) -> (Suite, crate::util::Run) {
    let s = Suite::new();
    s.write("conftest.py", CONFTEST);
    s.write("test_gpu.py", TESTS);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).args(["--multi-gpu-marker", "multi_gpu"]).args(wrap);
    cmd.arg("--").arg(python()).args(["-m", "pytest", "-p", "no:cacheprovider"]).args(pytest);
    cmd.args(["--json-report", "--json-report-file=r.json", "--junitxml=j.xml", "test_gpu.py"]);
    cmd.env("CUDA_VISIBLE_DEVICES", "5,7").env_remove("HIP_VISIBLE_DEVICES").env_remove("ROCR_VISIBLE_DEVICES");
    let r = s.run_cmd(cmd);
    (s, r)
}

fn check(wrap: &[&str], pytest: &[&str], xdist: bool) {
    let (s, r) = run(wrap, pytest);
    let dump = format!("wrap {wrap:?} pytest {pytest:?}\n{}", r.dump());
    assert_eq!(r.code(), 1, "{dump}");
    // Every test started once; the marked ones after all the others, in a
    // pytest that is no xdist worker, seeing the caller's GPUs.
    let starts = r.starts();
    assert_eq!(starts.len(), 10, "{starts:?}\n{dump}");
    assert!(starts.values().all(|n| *n == 1), "{starts:?}\n{dump}");
    let seen = seen(&s);
    let marked = |v: &Value| v["name"].as_str().unwrap().starts_with("test_m");
    let last_rest = seen.iter().rposition(|v| !marked(v)).unwrap();
    let first_marked = seen.iter().position(marked).unwrap();
    assert!(last_rest < first_marked, "marked tests run after the others: {seen:#?}\n{dump}");
    for v in seen.iter().filter(|v| marked(v)) {
        assert_eq!(v["worker"], Value::Null, "serial: {v}\n{dump}");
        assert_eq!(v["cuda"], "5,7", "the caller's GPUs: {v}\n{dump}");
    }
    for v in seen.iter().filter(|v| !marked(v)) {
        assert_eq!(v["worker"].is_string(), xdist, "{v}\n{dump}");
    }
    // One crash log: a crash in each phase, attributed as always.
    let first = r.record("::test_s3_segv");
    let second = r.record("::test_m1_segv");
    assert_eq!(r.records().len(), 2, "{dump}");
    for rec in [&first, &second] {
        assert_eq!((rec.signal_name.as_deref(), rec.phase.as_str()), (Some("SIGSEGV"), "call"), "{rec:#?}");
    }
    assert_eq!(second.worker, "main", "{second:#?}");
    assert!(second.run > first.run, "the multi-GPU phase's runs come later: {first:#?} {second:#?}");
    // One merged JSON report, counted as one plain run.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(s.path().join("r.json")).unwrap()).unwrap();
    let tests = report["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 10, "{dump}");
    let outcome = |suffix: &str| {
        let t: Vec<_> = tests.iter().filter(|t| t["nodeid"].as_str().unwrap().ends_with(suffix)).collect();
        assert_eq!(t.len(), 1, "{suffix}: {tests:#?}");
        t[0]["outcome"].as_str().unwrap().to_string()
    };
    for (suffix, want) in [
        ("::test_s0", "passed"),
        ("::test_s3_segv", "failed"),
        ("::test_s5_fails", "failed"),
        ("::test_m0", "passed"),
        ("::test_m1_segv", "failed"),
        ("::test_m2", "passed"),
        ("::TestAll::test_m3", "passed"),
    ] {
        assert_eq!(outcome(suffix), want, "{suffix}\n{dump}");
    }
    let summary = &report["summary"];
    assert_eq!(summary["collected"], 10, "as one plain run: {summary}");
    assert_eq!(summary["total"], 10, "{summary}");
    assert_eq!(summary["passed"], 7, "{summary}");
    assert_eq!(summary["failed"], 3, "{summary}");
    assert!(summary["deselected"].is_null() || summary["deselected"] == 0, "nothing deselected: {summary}");
    // One merged JUnit file, read by junitparser.
    let cases = read_junit(&s.path().join("j.xml"));
    let totals = cases.last().unwrap();
    assert_eq!(totals["tests"], 10, "{cases:?}");
    assert_eq!(totals["failures"], 3, "{cases:?}");
    let names: Vec<&str> = cases.iter().filter_map(|c| c["name"].as_str()).collect();
    for n in ["test_m0", "test_m1_segv", "test_m2", "test_m3", "test_s0", "test_s3_segv"] {
        assert_eq!(names.iter().filter(|x| **x == n).count(), 1, "{n}: {names:?}");
    }
}

#[test]
fn marked_tests_run_last_serially_with_every_gpu_xdist() {
    check(&[], &["-n", "2"], true);
}

#[test]
fn marked_tests_run_last_serially_with_every_gpu_serial() {
    check(&[], &[], false);
}

#[test]
fn marked_tests_run_last_serially_with_every_gpu_no_ptrace() {
    check(&["--no-ptrace"], &["-n", "2"], true);
}

/// Without marked tests there is no second phase (pytest would say "no
/// tests ran" and exit 5).
#[test]
fn no_marked_test_no_second_phase() {
    let s = Suite::new();
    s.write("conftest.py", CONFTEST);
    s.write("test_x.py", "def test_a(): pass\ndef test_b(): pass\n");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).args(["--multi-gpu-marker", "multi_gpu", "--"]);
    cmd.arg(python()).args(["-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "test_x.py"]);
    let r = s.run_cmd(cmd);
    assert_eq!(r.code(), 0, "{}", r.dump());
    assert!(!r.stderr().contains("run 2"), "one run: {}", r.dump());
}

#[test]
fn a_bad_marker_name_is_a_usage_error() {
    let s = Suite::new();
    let r = s.wrap(&["--multi-gpu-marker", "multi-gpu"], &[]);
    assert_eq!(r.code(), 64, "{}", r.dump());
}

/// With GPU slots (`--gpus 0,1`): the first phase runs one worker per slot
/// (`-n 2` added), the multi-GPU phase runs serially, takes no slot and
/// sees both GPUs.
#[test]
fn with_gpu_slots_the_multi_gpu_phase_takes_no_slot_and_sees_every_gpu() {
    let s = Suite::new();
    s.write("conftest.py", CONFTEST);
    s.write("test_gpu.py", TESTS);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).args(["--gpus", "0,1", "--multi-gpu-marker", "multi_gpu", "--"]);
    cmd.arg(python()).args(["-m", "pytest", "-p", "no:cacheprovider", "test_gpu.py"]);
    for v in ["CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "PYTEST_ABORT_GPUS"] {
        cmd.env_remove(v);
    }
    let r = s.run_cmd(cmd);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_eq!(r.records().len(), 2, "{}", r.dump());
    let seen = seen(&s);
    assert_eq!(seen.len(), 10, "{seen:#?}\n{}", r.dump());
    for v in &seen {
        let marked = v["name"].as_str().unwrap().starts_with("test_m");
        if marked {
            assert_eq!((v["worker"].clone(), v["cuda"].clone()), (Value::Null, "0,1".into()), "{v}\n{}", r.dump());
        } else {
            assert!(v["worker"].is_string() && (v["cuda"] == "0" || v["cuda"] == "1"), "{v}\n{}", r.dump());
        }
    }
}
