//! Poisoned device contexts (issue 13): a test that fails with a sticky
//! device error (CUDA's `device-side assert triggered`, ...) leaves its
//! process unusable for every later test, so no later test may run there:
//! serially the session stops after it and the rest resumes in a fresh
//! process; under xdist the worker retires and its pending tests go to a
//! fresh worker. The poisoning test stays a failure with its own message and
//! gets a `device-error` record; no other test is recorded as crashed.

use std::collections::BTreeMap;

use crate::util::Suite;

/// Records `(test, pid)` for each test start in `pids.jsonl`, in order.
const PID_CONFTEST: &str = r#"
import json, os
import pytest

@pytest.fixture(autouse=True)
def _record_pid(request):
    path = os.path.join(os.path.dirname(__file__), "runs.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps(request.node.nodeid) + "\n")
    with open(os.path.join(os.path.dirname(__file__), "pids.jsonl"), "a") as f:
        f.write(json.dumps([request.node.name, os.getpid()]) + "\n")
    yield
"#;

/// A suite: `test_a` passes, `test_b_poison` raises `error_text`, then
/// `after` tests that pass (each sleeps a little, so that under xdist the
/// poisoned worker still holds some of them when it retires).
fn suite(error_text: &str, after: usize) -> Suite {
    let s = Suite::new();
    s.write("conftest.py", PID_CONFTEST);
    let mut t = String::from("import time\n\ndef test_a():\n    pass\n\n");
    t.push_str(&format!("def test_b_poison():\n    raise RuntimeError({error_text:?})\n\n"));
    for i in 0..after {
        t.push_str(&format!("def test_c{i:02}():\n    time.sleep(0.05)\n\n"));
    }
    s.write("test_gpu.py", &t);
    s
}

/// CUDA's text as PyTorch raises it.
const DEVICE_ASSERT: &str = "CUDA error: device-side assert triggered\nCUDA kernel errors might be asynchronously \
                             reported at some other API call, so the stacktrace below might be incorrect.";

/// The `(test name, pid)` starts, in order.
fn pids(s: &Suite) -> Vec<(String, i64)> {
    let text = std::fs::read_to_string(s.path().join("pids.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Asserts that no test started in the poisoning test's process after it,
/// and that every test started exactly once.
fn no_test_after_the_poison_in_its_process(s: &Suite, after: usize, dump: &str) {
    let starts = pids(s);
    let at = starts.iter().position(|(n, _)| n == "test_b_poison").unwrap_or_else(|| panic!("no poison\n{dump}"));
    let poisoned = starts[at].1;
    let later: Vec<_> = starts[at + 1..].iter().filter(|(_, p)| *p == poisoned).collect();
    assert!(later.is_empty(), "tests ran in the poisoned process {poisoned}: {later:?}\n{dump}");
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, _) in &starts {
        *count.entry(n.as_str()).or_default() += 1;
    }
    assert_eq!(count.len(), after + 2, "every test started: {count:?}\n{dump}");
    assert!(count.values().all(|c| *c == 1), "every test started once: {count:?}\n{dump}");
}

/// The one record: the poisoning test, kind `device-error`, phase call.
fn only_the_poison_is_recorded(r: &crate::util::Run) {
    let recs = r.records();
    assert_eq!(recs.len(), 1, "one record (the poisoning test): {recs:#?}\n{}", r.dump());
    let rec = &recs[0];
    assert!(rec.nodeid.ends_with("::test_b_poison"), "{rec:#?}");
    let wire = serde_json::to_value(rec).unwrap();
    assert_eq!(wire["kind"], "device-error", "{rec:#?}");
    assert_eq!(rec.phase, "call");
    assert!(rec.reason.contains("device-side assert triggered"), "{}", rec.reason);
    assert_eq!(rec.test_name, "test_b_poison");
    assert!(!rec.pid.is_empty() && !rec.crash_time.is_empty() && !rec.source.is_empty(), "{rec:#?}");
}

fn check_poisoned_run(wrap: &[&str], pytest: &[&str], after: usize) {
    let s = suite(DEVICE_ASSERT, after);
    let mut args: Vec<&str> = pytest.to_vec();
    args.extend(["--json-report", "--json-report-file=r.json", "test_gpu.py"]);
    let r = s.wrap(wrap, &args);
    let dump = format!("wrap {wrap:?} pytest {pytest:?}\n{}", r.dump());
    assert_eq!(r.code(), 1, "one failure: {dump}");
    no_test_after_the_poison_in_its_process(&s, after, &dump);
    only_the_poison_is_recorded(&r);
    assert!(r.stderr().contains("test_b_poison"), "the summary lists it: {dump}");
    // The merged report: the poisoning test is failed with its own message,
    // every other test passed (no "worker crashed" stand-in anywhere).
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.path().join("r.json")).unwrap())
        .unwrap_or_else(|e| panic!("r.json: {e}\n{dump}"));
    let tests = report["tests"].as_array().unwrap();
    assert_eq!(tests.len(), after + 2, "{dump}");
    for t in tests {
        let id = t["nodeid"].as_str().unwrap();
        if id.ends_with("::test_b_poison") {
            assert_eq!(t["outcome"], "failed", "{t}");
            let longrepr = t["call"]["longrepr"].as_str().unwrap_or_default();
            assert!(longrepr.contains("device-side assert triggered"), "its own message: {t}");
        } else {
            assert_eq!(t["outcome"], "passed", "{id}: {t}\n{dump}");
        }
    }
    assert!(!report.to_string().contains("crashed while running"), "no xdist crash entry: {dump}");
    assert_eq!(report["summary"]["failed"], 1, "{}", report["summary"]);
    assert_eq!(report["summary"]["passed"], after + 1, "{}", report["summary"]);
}

#[test]
fn serial_poison_resumes_in_a_fresh_process() {
    check_poisoned_run(&[], &[], 3);
}

#[test]
fn serial_poison_resumes_in_a_fresh_process_fresh_resume() {
    check_poisoned_run(&["--fresh-resume"], &[], 3);
}

#[test]
fn serial_poison_resumes_in_a_fresh_process_no_ptrace() {
    check_poisoned_run(&["--no-ptrace"], &[], 3);
}

#[test]
fn xdist_poisoned_worker_retires_and_its_tests_go_to_a_fresh_worker() {
    check_poisoned_run(&[], &["-n", "2"], 16);
}

#[test]
fn xdist_poisoned_worker_retires_no_ptrace() {
    check_poisoned_run(&["--no-ptrace"], &["-n", "2"], 16);
}

#[test]
fn xdist_single_worker_poisoned_is_replaced() {
    check_poisoned_run(&[], &["-n", "1"], 4);
}

#[test]
fn no_poison_keeps_the_later_tests_in_the_same_process() {
    let s = suite(DEVICE_ASSERT, 2);
    let r = s.wrap(&["--no-poison"], &["test_gpu.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert!(r.records().is_empty(), "{:#?}", r.records());
    let starts = pids(&s);
    assert_eq!(starts.len(), 4, "{}", r.dump());
    assert!(starts.iter().all(|(_, p)| *p == starts[0].1), "one process: {starts:?}\n{}", r.dump());
}

#[test]
fn a_custom_poison_pattern_poisons_too() {
    let s = suite("mylib: context lost (code 7)", 2);
    let r = s.wrap(&["--poison-pattern", r"context lost \(code \d+\)"], &["test_gpu.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    no_test_after_the_poison_in_its_process(&s, 2, &r.dump());
    assert_eq!(r.records().len(), 1, "{}", r.dump());
    // The default patterns still apply beside the custom one.
    let s = suite("HIP error: hipErrorIllegalAddress", 2);
    let r = s.wrap(&["--poison-pattern", "context lost"], &["test_gpu.py"]);
    no_test_after_the_poison_in_its_process(&s, 2, &r.dump());
    assert_eq!(r.records().len(), 1, "{}", r.dump());
}

#[test]
fn an_ordinary_failure_does_not_poison() {
    let s = suite("CUDA error: out of memory", 2);
    let r = s.wrap(&[], &["test_gpu.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert!(r.records().is_empty(), "{:#?}", r.records());
    let starts = pids(&s);
    assert!(starts.iter().all(|(_, p)| *p == starts[0].1), "one process: {starts:?}\n{}", r.dump());
}

#[test]
fn a_bad_poison_pattern_is_a_usage_error() {
    let s = suite(DEVICE_ASSERT, 1);
    let r = s.wrap(&["--poison-pattern", "(unclosed"], &["test_gpu.py"]);
    assert_eq!(r.code(), 64, "{}", r.dump());
    assert!(r.stderr().contains("--poison-pattern"), "{}", r.dump());
}

#[test]
fn runs_after_device_errors_do_not_count_toward_max_runs() {
    let s = Suite::new();
    s.write("conftest.py", PID_CONFTEST);
    let mut t = String::new();
    for i in 0..4 {
        t.push_str(&format!(
            "def test_ok{i}():\n    pass\n\ndef test_p{i}():\n    raise RuntimeError({DEVICE_ASSERT:?})\n\n"
        ));
    }
    s.write("test_gpu.py", &t);
    let r = s.wrap(&["--max-runs", "2"], &["test_gpu.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_eq!(r.records().len(), 4, "{}", r.dump());
    assert!(r.stderr().contains("0 not run"), "{}", r.dump());
    assert!(r.stderr().contains("not counted toward --max-runs"), "{}", r.dump());
    assert!(r.stderr().contains("runs used 1/2 (+3 after device errors)"), "{}", r.dump());
    let starts = pids(&s);
    assert_eq!(starts.len(), 8, "every test once: {starts:?}\n{}", r.dump());
    for i in 0..3 {
        let at = starts.iter().position(|(n, _)| *n == format!("test_p{i}")).unwrap();
        assert_ne!(starts[at].1, starts[at + 1].1, "a fresh process after test_p{i}: {starts:?}");
    }
}

#[test]
fn a_device_error_in_setup_poisons_too() {
    let s = Suite::new();
    s.write("conftest.py", PID_CONFTEST);
    s.write(
        "test_gpu.py",
        &format!(
            "import pytest\n\n@pytest.fixture\ndef gpu():\n    raise RuntimeError({DEVICE_ASSERT:?})\n\n\
             def test_b_poison(gpu):\n    pass\n\ndef test_after():\n    pass\n"
        ),
    );
    let r = s.wrap(&[], &["test_gpu.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let rec = r.record("::test_b_poison");
    assert_eq!(rec.phase, "setup", "{rec:#?}");
    let starts = pids(&s);
    assert_eq!(starts.len(), 2, "{starts:?}\n{}", r.dump());
    assert_ne!(starts[0].1, starts[1].1, "{starts:?}\n{}", r.dump());
}

/// The retired worker's process ends when it retires (its GPU memory and
/// slot are free for the fresh worker), not at the end of the session.
#[test]
fn the_retired_xdist_worker_process_is_gone_while_the_rest_runs() {
    let s = suite(DEVICE_ASSERT, 0);
    s.write(
        "test_later.py",
        r#"
import json, os, time

def test_poisoned_process_is_gone():
    here = os.path.dirname(__file__)
    with open(os.path.join(here, "pids.jsonl")) as f:
        starts = [json.loads(l) for l in f]
    poisoned = dict(starts)["test_b_poison"]
    assert poisoned != os.getpid()
    deadline = time.time() + 20
    while os.path.exists(f"/proc/{poisoned}") and time.time() < deadline:
        with open(f"/proc/{poisoned}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] == "Z":
                break  # exited, not yet reaped
        time.sleep(0.05)
    assert time.time() < deadline, f"the poisoned worker {poisoned} still runs"
"#,
    );
    let r = s.wrap(&[], &["-n", "1", "-p", "no:randomly", "test_gpu.py", "test_later.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_eq!(r.records().len(), 1, "{}", r.dump());
    assert!(r.stdout().contains("2 passed"), "{}", r.dump());
}

/// With GPU slots (`--gpus 0,1`: two workers, one slot each), the poisoned
/// worker's process is gone before its replacement takes a slot: the
/// replacement takes the freed slot (its GPU), never a third one, and the
/// record names the poisoned worker's GPU.
#[test]
fn the_replacement_of_a_poisoned_worker_takes_its_gpu_slot() {
    let s = suite(DEVICE_ASSERT, 16);
    // Long enough that the other worker cannot take every test left before
    // the replacement is up.
    let tests = std::fs::read_to_string(s.path().join("test_gpu.py")).unwrap();
    s.write("test_gpu.py", &tests.replace("time.sleep(0.05)", "time.sleep(0.4)"));
    s.write(
        "conftest.py",
        &PID_CONFTEST.replace(
            "json.dumps([request.node.name, os.getpid()])",
            "json.dumps([request.node.name, os.getpid(), os.environ.get(\"PYTEST_ABORT_GPU_SLOT\"), \
             os.environ.get(\"CUDA_VISIBLE_DEVICES\")])",
        ),
    );
    let r = s.wrap(&["--gpus", "0,1"], &["test_gpu.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let text = std::fs::read_to_string(s.path().join("pids.jsonl")).unwrap();
    let starts: Vec<(String, i64, Option<String>, Option<String>)> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(starts.len(), 18, "{starts:?}\n{}", r.dump());
    let at = starts.iter().position(|t| t.0 == "test_b_poison").unwrap();
    let (_, poisoned, slot, gpu) = starts[at].clone();
    assert!(starts.iter().all(|t| matches!(t.2.as_deref(), Some("0" | "1"))), "two slots only: {starts:?}");
    let replacement: Vec<_> = starts[at + 1..].iter().filter(|t| t.1 != poisoned && t.2 == slot).collect();
    assert!(starts[at + 1..].iter().all(|t| t.1 != poisoned), "{starts:?}");
    assert!(!replacement.is_empty(), "a fresh worker on the freed slot {slot:?}: {starts:?}\n{}", r.dump());
    assert!(replacement.iter().all(|t| t.3 == gpu), "{starts:?}");
    let rec = r.record("::test_b_poison");
    assert_eq!(Some(rec.gpu_id.clone()), gpu, "{rec:#?}");
}

/// A GPU runtime may abort when a poisoned process exits (after its
/// session): that death is the device error's, not a crash of its own.
#[test]
fn a_poisoned_process_that_aborts_at_exit_is_not_a_second_crash() {
    for xdist in [false, true] {
        let s = suite(DEVICE_ASSERT, 4);
        let tests = std::fs::read_to_string(s.path().join("test_gpu.py")).unwrap();
        let abort_at_exit = "    import atexit, os\n    atexit.register(os.abort)\n    raise RuntimeError(";
        s.write("test_gpu.py", &tests.replacen("    raise RuntimeError(", abort_at_exit, 1));
        let pytest: &[&str] = if xdist { &["-n", "2", "test_gpu.py"] } else { &["test_gpu.py"] };
        let r = s.wrap(&[], pytest);
        let dump = format!("xdist={xdist}\n{}", r.dump());
        assert_eq!(r.code(), 1, "{dump}");
        no_test_after_the_poison_in_its_process(&s, 4, &dump);
        only_the_poison_is_recorded(&r);
    }
}

/// `--out-dir`'s summary.json and `pytest-abort merge` count the poisoning
/// test once, as failed: a device error is not a crash.
#[test]
fn out_dir_and_merge_count_a_device_error_as_a_failure_not_a_crash() {
    let s = suite(DEVICE_ASSERT, 2);
    let r = s.wrap(&["--out-dir", "shard-1"], &["--junitxml=j.xml", "test_gpu.py"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(s.path().join(p)).unwrap()).unwrap()
    };
    let shard = read("shard-1/summary.json");
    assert_eq!(
        (shard["counts"]["failed"].clone(), shard["counts"]["crashed"].clone()),
        (1.into(), 0.into()),
        "{shard}"
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pytest-abort"));
    cmd.args(["merge", "merged", "shard-1"]);
    let m = s.run_cmd(cmd);
    assert_eq!(m.code(), 1, "{}", m.dump());
    let merged = read("merged/summary.json");
    assert_eq!(
        (merged["counts"]["failed"].clone(), merged["counts"]["crashed"].clone()),
        (1.into(), 0.into()),
        "{merged}"
    );
    assert_eq!(merged["counts"]["passed"], 3, "{merged}");
}
