//! Integration-test harness: builds pytest suites in temp folders, runs the
//! real binaries on them with the project's venv Python, and reads back the
//! crash log and the per-test run counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pytest_abort::record::{parse_crash_log, CrashRecord};

/// The Python with pytest and the report plugins: `$PYTEST_ABORT_TEST_PYTHON`,
/// else `<repo>/.venv/bin/python` (which `.ci/run` creates).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PYTEST_ABORT_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "no test Python at {}: run .ci/run (it creates the venv) or set PYTEST_ABORT_TEST_PYTHON",
        p.display()
    );
    p
}

/// Folder holding the venv's scripts (`pytest`, ...).
pub fn venv_bin() -> PathBuf {
    python().parent().unwrap().to_path_buf()
}

/// A pytest suite in a temp folder.
pub struct Suite {
    /// The temp folder (removed on drop).
    pub dir: tempfile::TempDir,
}

/// A conftest that counts how many times each test starts, in
/// `runs.jsonl` (one line per start: the nodeid).
pub const COUNTING_CONFTEST: &str = r#"
import json, os
import pytest

@pytest.fixture(autouse=True)
def _count_runs(request):
    path = os.path.join(os.path.dirname(__file__), "runs.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps(request.node.nodeid) + "\n")
    yield
"#;

/// A test file whose middle test segfaults between two that pass.
pub const CRASHY: &str = r#"
import ctypes

def test_before():
    pass

def test_crash():
    ctypes.string_at(0)

def test_after():
    pass
"#;

impl Suite {
    /// An empty suite with the counting conftest.
    pub fn new() -> Self {
        let s = Suite { dir: tempfile::Builder::new().prefix("pa-suite-").tempdir().unwrap() };
        s.write("conftest.py", COUNTING_CONFTEST);
        s
    }

    /// Root folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (parents created).
    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// The crash log path used by [`Suite::wrap`].
    pub fn crash_log(&self) -> PathBuf {
        self.path().join("crashes.jsonl")
    }

    /// Runs `pytest-abort-wrap --crash-log <suite>/crashes.jsonl WRAP_ARGS -- <python> -m pytest PYTEST_ARGS`
    /// in the suite folder.
    pub fn wrap(&self, wrap_args: &[&str], pytest_args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
        cmd.arg("--crash-log").arg(self.crash_log()).args(wrap_args).arg("--").arg(python());
        cmd.args(["-m", "pytest", "-p", "no:cacheprovider"]).args(pytest_args);
        self.run_cmd(cmd)
    }

    /// Runs any command in the suite folder, with the venv first on PATH
    /// (unless the command sets its own PATH).
    pub fn run_cmd(&self, mut cmd: Command) -> Run {
        if !cmd.get_envs().any(|(k, _)| k == "PATH") {
            let path = format!("{}:{}", venv_bin().display(), std::env::var("PATH").unwrap_or_default());
            cmd.env("PATH", path);
        }
        cmd.current_dir(self.path()).env_remove("PYTEST_ADDOPTS");
        let out = cmd.output().expect("run command");
        Run { out, crash_log: self.crash_log(), runs_file: self.path().join("runs.jsonl") }
    }
}

impl Default for Suite {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of one wrapper invocation.
pub struct Run {
    /// Raw output.
    pub out: Output,
    crash_log: PathBuf,
    runs_file: PathBuf,
}

impl Run {
    /// Exit status (panics on a signal death).
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or_else(|| panic!("wrapper died by a signal\n{}", self.dump()))
    }

    /// stdout + stderr for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&self.out.stdout),
            String::from_utf8_lossy(&self.out.stderr)
        )
    }

    /// stderr as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// stdout as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    /// Crash records written.
    pub fn records(&self) -> Vec<CrashRecord> {
        parse_crash_log(&std::fs::read_to_string(&self.crash_log).unwrap_or_default())
    }

    /// The record for a nodeid ending in `suffix` (exactly one).
    pub fn record(&self, suffix: &str) -> CrashRecord {
        let recs: Vec<_> = self.records().into_iter().filter(|r| r.nodeid.ends_with(suffix)).collect();
        assert_eq!(recs.len(), 1, "want one record for {suffix}, got {recs:#?}\n{}", self.dump());
        recs.into_iter().next().unwrap()
    }

    /// How many times each test started (by the counting conftest).
    pub fn starts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for line in std::fs::read_to_string(&self.runs_file).unwrap_or_default().lines() {
            let id: String = serde_json::from_str(line).unwrap();
            *m.entry(id).or_default() += 1;
        }
        m
    }

    /// Starts of the test whose nodeid ends with `suffix`.
    pub fn starts_of(&self, suffix: &str) -> usize {
        self.starts().iter().filter(|(k, _)| k.ends_with(suffix)).map(|(_, v)| *v).sum()
    }

    /// Checks a table of expectations, one row per test of the suite (node
    /// id suffix, how it ended): every listed test started exactly once,
    /// each crashed row has exactly one record with that death and phase,
    /// and no other test has a record.
    pub fn expect(&self, table: &[(&str, Want)]) {
        let records = self.records();
        for (suffix, want) in table {
            assert_eq!(self.starts_of(suffix), 1, "{suffix} should start once: {:?}\n{}", self.starts(), self.dump());
            let mine: Vec<_> = records.iter().filter(|r| r.nodeid.ends_with(suffix)).collect();
            let ok = match want {
                Want::Ran => mine.is_empty(),
                _ => mine.len() == 1 && want.matches(mine[0]),
            };
            assert!(ok, "{suffix}: want {want:?}, records {mine:#?}\n{}", self.dump());
        }
        let crashed = table.iter().filter(|(_, w)| *w != Want::Ran).count();
        assert_eq!(records.len(), crashed, "records beyond the table: {records:#?}");
    }
}

/// A crash record as the wrapper writes one for a SIGSEGV in the call phase
/// of the test `nodeid` on the main worker, for tests that feed crash logs.
pub fn segv_record(nodeid: &str) -> CrashRecord {
    CrashRecord {
        nodeid: nodeid.into(),
        test_name: nodeid.rsplit("::").next().unwrap_or("").into(),
        reason: "crashed with SIGSEGV (segmentation fault) during call".into(),
        signal: Some(11),
        signal_name: Some("SIGSEGV".into()),
        worker: "main".into(),
        phase: "call".into(),
        ..Default::default()
    }
}

/// How a test ended, for [`Run::expect`] tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Finished without a crash (passed, failed or skipped: pytest's business).
    Ran,
    /// Killed by this signal (its name) in this phase.
    Crash(&'static str, &'static str),
    /// Exited with this code in this phase.
    Exit(i32, &'static str),
}

impl Want {
    /// True when a crash record is this death in this phase.
    fn matches(&self, r: &CrashRecord) -> bool {
        match *self {
            Want::Ran => false,
            Want::Crash(sig, phase) => r.signal_name.as_deref() == Some(sig) && r.phase == phase,
            Want::Exit(code, phase) => r.signal.is_none() && r.exit_code == Some(code) && r.phase == phase,
        }
    }
}
