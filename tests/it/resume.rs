//! Resume without collecting the suite again: the fork server (a serial
//! pytest collects once, runs the tests in forked children and forks again
//! after a crash), its safety checks (threads, no ptrace: fresh pytest per
//! resume instead), and fresh-process resumes that leave out the files with
//! nothing left. Each test checks that every test started exactly once,
//! how often each module was imported, and the crash records.

use std::collections::BTreeMap;

use crate::util::{Run, Suite};

/// Module-level side effect: one line per import of the module.
const IMPORT_LOG: &str =
    "import os\nwith open(os.path.join(os.path.dirname(__file__), 'imports.txt'), 'a') as _f:\n    \
                          _f.write(__name__ + '\\n')\n";

fn module(body: &str) -> String {
    format!("{IMPORT_LOG}import ctypes, signal, pytest\n{body}")
}

/// How many times each test module was imported (collected).
fn imports(s: &Suite) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for line in std::fs::read_to_string(s.path().join("tests/imports.txt")).unwrap_or_default().lines() {
        *m.entry(line.to_string()).or_default() += 1;
    }
    m
}

fn assert_each_started_once(r: &Run, tests: usize) {
    let starts = r.starts();
    assert_eq!(starts.len(), tests, "{starts:?}\n{}", r.dump());
    assert!(starts.values().all(|n| *n == 1), "a test started twice: {starts:?}\n{}", r.dump());
}

/// Four files, ten tests each; crashes in the call (SIGSEGV, SIGKILL), in
/// a fixture's setup (SIGABRT) and teardown (exit 3).
fn crashing_suite() -> Suite {
    let s = Suite::new();
    let ten = "@pytest.mark.parametrize('i', range(10))\n";
    s.write("tests/test_a.py", &module(&format!("{ten}def test_a(i):\n    pass\n")));
    s.write(
        "tests/test_b.py",
        &module(&format!(
            "{ten}def test_b(i):\n    if i == 3:\n        \
             print('LEAK' + '-MARKER')\n        ctypes.string_at(0)\n    assert i != 4, 'a real failure'\n"
        )),
    );
    s.write(
        "tests/test_c.py",
        &module(&format!(
            "@pytest.fixture\ndef fx(request):\n    if request.node.callspec.params['i'] == 2:\n        \
             os.abort()\n    yield\n    if request.node.callspec.params['i'] == 6:\n        os._exit(3)\n\n\
             {ten}def test_c(i, fx):\n    pass\n"
        )),
    );
    s.write(
        "tests/test_d.py",
        &module(&format!("{ten}def test_d(i):\n    if i == 8:\n        os.kill(os.getpid(), signal.SIGKILL)\n")),
    );
    s
}

fn check_crashes(r: &Run, runs: [u32; 4]) {
    let segv = r.record("test_b.py::test_b[3]");
    assert_eq!(
        (segv.signal_name.as_deref(), segv.phase.as_str(), segv.worker.as_str()),
        (Some("SIGSEGV"), "call", "main")
    );
    let abort = r.record("test_c.py::test_c[2]");
    assert_eq!((abort.signal_name.as_deref(), abort.phase.as_str()), (Some("SIGABRT"), "setup"));
    let exit = r.record("test_c.py::test_c[6]");
    assert_eq!((exit.exit_code, exit.phase.as_str()), (Some(3), "teardown"));
    let kill = r.record("test_d.py::test_d[8]");
    assert_eq!((kill.signal_name.as_deref(), kill.phase.as_str()), (Some("SIGKILL"), "call"));
    let got: Vec<u32> = [segv.run, abort.run, exit.run, kill.run].to_vec();
    assert_eq!(got, runs.to_vec(), "run numbers of the crashes\n{}", r.dump());
    assert_eq!(r.records().len(), 4, "{:#?}", r.records());
}

#[test]
fn fork_server_collects_once_and_resumes_in_forked_children() {
    let s = crashing_suite();
    let r = s.wrap(&["--max-runs", "10"], &["tests", "--json-report", "--json-report-file", "r.json"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_each_started_once(&r, 40);
    check_crashes(&r, [1, 1, 1, 1]);
    // Collected once: every module imported once, by the fork server.
    assert!(imports(&s).values().all(|n| *n == 1), "{:?}\n{}", imports(&s), r.dump());
    let err = r.stderr();
    assert!(err.contains("35 passed, 1 failed, 4 crashed, 0 not run; runs used 5/10"), "{err}");
    // The merged JSON has every test once, the crashes as failed, and what
    // the crashed test printed did not leak into the next test's output.
    let json = std::fs::read_to_string(s.path().join("r.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let tests = doc["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 40, "{json}");
    let next = tests.iter().find(|t| t["nodeid"] == "tests/test_b.py::test_b[4]").unwrap();
    assert_eq!(next["outcome"], "failed");
    assert!(!next.to_string().contains("LEAK-MARKER"), "{next}");
}

#[test]
fn fresh_resume_leaves_out_files_with_nothing_left_but_keeps_their_conftest() {
    let s = crashing_suite();
    // A conftest beside files that are done before the first crash: its
    // global hook still runs in every run.
    s.write(
        "tests/conftest.py",
        "import os\n\ndef pytest_collection_modifyitems(items):\n    \
         open(os.path.join(os.path.dirname(__file__), 'hook.txt'), 'a').write('x')\n",
    );
    let r = s.wrap(&["--fresh-resume", "--max-runs", "10"], &["tests"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_each_started_once(&r, 40);
    check_crashes(&r, [1, 2, 3, 4]);
    let want: BTreeMap<String, usize> =
        [("test_a", 1), ("test_b", 2), ("test_c", 4), ("test_d", 5)].map(|(k, v)| (k.to_string(), v)).into();
    assert_eq!(imports(&s), want, "test_a has nothing left after the first crash, and so on\n{}", r.dump());
    let hook = std::fs::read_to_string(s.path().join("tests/hook.txt")).unwrap();
    assert_eq!(hook.len(), 5, "the conftest's hook ran in each of the 5 runs");
    assert!(r.stderr().contains("runs used 5/10"), "{}", r.dump());
}

#[test]
fn a_process_with_threads_is_not_forked() {
    let s = crashing_suite();
    // A thread started at import (as torch or jax start theirs).
    s.write(
        "tests/conftest.py",
        "import threading, time\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n",
    );
    let st = s.path().join("state");
    let r = s.wrap(&["--keep-state", "--state-dir", st.to_str().unwrap(), "--max-runs", "10"], &["tests"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_each_started_once(&r, 40);
    check_crashes(&r, [1, 2, 3, 4]);
    assert_eq!(imports(&s)["test_d"], 5, "a fresh pytest per resume\n{}", r.dump());
    let journal = std::fs::read_dir(st.join("journal"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(journal.contains(r#"{"ev":"fork_server","serving":false,"why":"it has 2 threads"}"#), "{journal}");
    // ... and says so beside its journal, so its children (tests' own
    // subprocesses) are let go like any serial pytest's.
    let declined = std::fs::read_dir(st.join("journal"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".no-fork"))
        .count();
    assert_eq!(declined, 5, "one per run\n{}", r.dump());
}

#[test]
fn without_ptrace_resumes_in_fresh_processes() {
    let s = crashing_suite();
    let r = s.wrap(&["--no-ptrace", "--max-runs", "10"], &["tests"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_each_started_once(&r, 40);
    assert_eq!(r.records().len(), 4, "{}", r.dump());
    assert_eq!(imports(&s)["test_d"], 5, "{}", r.dump());
}

#[test]
fn forked_children_count_toward_max_runs() {
    let s = crashing_suite();
    let r = s.wrap(&["--max-runs", "2"], &["tests"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    // Two children: the first crashes at test_b[3], the second at test_c[2].
    assert_eq!(r.records().len(), 2, "{}", r.dump());
    assert_eq!(r.starts_of("test_c.py::test_c[3]"), 0, "{}", r.dump());
    assert!(r.starts().values().all(|n| *n == 1), "{:?}", r.starts());
    let err = r.stderr();
    assert!(err.contains("runs used 2/2"), "{err}");
    assert!(err.contains("17 not run"), "{err}");
}
