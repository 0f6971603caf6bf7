//! A pytest process that dies before the plugin is configured (a conftest
//! that segfaults at import) is a crash at startup, named after the module
//! faulthandler's stack was importing: serial and under xdist, with and
//! without ptrace.

use crate::util::Suite;

const CONFTEST_SEGV: &str = "import ctypes\nctypes.string_at(0)\n";

/// Crashes only in xdist worker gw1 (the controller and gw0 import it fine).
const CONFTEST_SEGV_GW1: &str =
    "import ctypes, os\nif os.environ.get('PYTEST_XDIST_WORKER') == 'gw1':\n    ctypes.string_at(0)\n";

const TESTS: &str = "def test_a():\n    pass\n\ndef test_b():\n    pass\n";

#[test]
fn conftest_segfault_at_import_is_a_startup_crash() {
    for mode in [&[][..], &["--no-ptrace"][..]] {
        let s = Suite::new();
        s.write("conftest.py", CONFTEST_SEGV).write("test_a.py", TESTS);
        let run = s.wrap(mode, &["-q"]);
        let ctx = format!("mode {mode:?}\n{}", run.dump());
        assert_eq!(run.code(), 1, "{ctx}");
        let rec = run.record("conftest.py");
        assert_eq!(rec.nodeid, "conftest.py", "{ctx}");
        assert_eq!(rec.phase, "startup", "{ctx}");
        assert_eq!(rec.signal_name.as_deref(), Some("SIGSEGV"), "{ctx}");
        assert_eq!(rec.worker, "main", "{ctx}");
        assert!(rec.traceback.as_deref().is_some_and(|t| t.contains("conftest.py")), "{ctx}");
        assert!(!run.stderr().contains("no pytest process loaded"), "{ctx}");
        assert!(run.stderr().contains("1 crashed"), "{ctx}");
    }
}

#[test]
fn xdist_worker_conftest_segfault_is_a_startup_crash() {
    for mode in [&[][..], &["--no-ptrace"][..]] {
        let s = Suite::new();
        s.write("conftest.py", CONFTEST_SEGV_GW1).write("test_a.py", TESTS);
        let run = s.wrap(mode, &["-q", "-n", "2"]);
        let ctx = format!("mode {mode:?}\n{}", run.dump());
        let rec = run.record("conftest.py");
        assert_eq!(rec.phase, "startup", "{ctx}");
        assert_eq!(rec.worker, "gw1", "{ctx}");
        assert_eq!(rec.signal_name.as_deref(), Some("SIGSEGV"), "{ctx}");
        // xdist replaced the worker: both tests still ran and passed.
        assert!(run.stderr().contains("2 passed"), "{ctx}");
        assert_eq!(run.code(), 1, "{ctx}");
    }
}
