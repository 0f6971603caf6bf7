//! One supervised pytest run: the shared preparation of an invocation
//! (command, state, marker and shim folders), the plan file, and the run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::observer::RunObserver;
use super::Config;
use crate::attribute;
use crate::fsutil;
use crate::journal::RunJournal;
use crate::model::Crash;
use crate::reporter::Reporters;
use crate::shim;
use crate::supervise::{self, spawn::Command};
use crate::watchdog::{self, Watchdog};

/// The run plan the shim reads from `<state>/plan.json`.
#[derive(Debug, Clone, Serialize, Default)]
pub(super) struct Plan {
    /// 1-based run number.
    pub run: u32,
    /// Tests not to run.
    pub deselect: Vec<String>,
    /// Files not to collect: their collection crashed, or (resume) they
    /// hold no test left.
    pub ignore: Vec<String>,
    /// When set, only these tests run (reproduction, recheck).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    /// A serial pytest process may collect once and run the tests in
    /// forked children, forking again after a crash (resume mode; the shim
    /// checks that forking is safe).
    pub fork: bool,
    /// Most children a fork server may fork in this run (the runs left of
    /// `--max-runs`).
    pub max_forks: u32,
    /// Failures and crashes of earlier runs: they count toward pytest's
    /// `--maxfail` in this run, as in one plain run.
    pub failures: usize,
    /// Regular expressions that poison a process when a failed test's
    /// report text matches one (empty: off, as in reproduce and recheck
    /// runs, where each test runs alone anyway).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub poison: Vec<String>,
    /// Under `--multi-gpu-marker`: the marker and which phase this run is
    /// in (the plugin leaves the other phase's tests out, and runs the
    /// marked phase serially).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_gpu: Option<MultiGpu>,
}

/// The multi-GPU phases of `--multi-gpu-marker`, as the plan says them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(super) struct MultiGpu {
    /// The marker's name (`multi_gpu`).
    pub marker: String,
    /// Which tests this run is for.
    pub phase: MultiGpuPhase,
}

/// Which tests a run of `--multi-gpu-marker` is for.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum MultiGpuPhase {
    /// The first phase: every test without the marker, as the command says
    /// (xdist, GPU slots).
    Rest,
    /// Then: the marked tests, serially (no xdist), with every GPU of the
    /// job visible.
    Marked,
}

/// A state folder: given (kept), or a private temp folder.
enum StateDir {
    Given(PathBuf),
    Temp(tempfile::TempDir),
}

/// What every run of one invocation shares: the resolved command and the
/// state, marker and shim folders.
pub(super) struct Prepared {
    base: Command,
    state: StateDir,
    pub state_dir: PathBuf,
    marker_dir: PathBuf,
    py_root: PathBuf,
    started: Instant,
    /// Held for the whole invocation: one wrapper per state folder.
    _lock: crate::statelock::StateLock,
}

pub(super) fn prepare(cfg: &Config) -> Result<Prepared> {
    let base = Command::resolve(&cfg.command)?;
    let state = match &cfg.state_dir {
        Some(p) => {
            std::fs::create_dir_all(p).with_context(|| format!("{}: cannot create the state folder", p.display()))?;
            StateDir::Given(p.clone())
        }
        None => StateDir::Temp(
            tempfile::Builder::new()
                .prefix("pytest-abort-")
                .tempdir()
                .context("cannot create a private state folder in the temp folder")?,
        ),
    };
    let raw = match &state {
        StateDir::Given(p) => p.clone(),
        StateDir::Temp(t) => t.path().to_path_buf(),
    };
    let state_dir = std::fs::canonicalize(&raw).unwrap_or(raw);
    let lock = crate::statelock::lock(&state_dir)?;
    let marker_dir = match std::env::var_os("PYTEST_ABORT_LAST_RUNNING_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => state_dir.join("markers"),
    };
    std::fs::create_dir_all(&marker_dir)
        .with_context(|| format!("{}: cannot create the marker folder", marker_dir.display()))?;
    let py_root = shim::install(&state_dir)?;
    if cfg.gpu.is_some() {
        crate::gpu::slots::reset(&state_dir)?;
    }
    Ok(Prepared { base, state, state_dir, marker_dir, py_root, started: Instant::now(), _lock: lock })
}

impl Prepared {
    /// Keeps or removes the state folder, as configured.
    pub fn finish(self, cfg: &Config) {
        if cfg.keep_state {
            if let StateDir::Temp(t) = self.state {
                let _ = t.keep();
            }
        }
    }
}

/// One supervised pytest run and what came of it.
pub(super) struct OneRun {
    pub sup: supervise::Supervised,
    pub crashes: Vec<Crash>,
    pub warnings: Vec<String>,
    pub io_error: bool,
    pub journal: RunJournal,
    pub session_expired: bool,
    /// When no pytest process loaded the plugin: what happened, in words.
    pub no_plugin: Option<String>,
    /// True when leftovers were left running (`--keep-leftovers`).
    pub kept_leftovers: bool,
}

/// One supervised pytest run; its events go to `out` (rechecks pass
/// [`Reporters::none`]).
pub(super) fn run_once(
    cfg: &Config,
    prep: &Prepared,
    plan: &Plan,
    crash_log: Option<&Path>,
    out: &Reporters,
) -> Result<OneRun> {
    clear_markers(&prep.marker_dir);
    fsutil::atomic_write(&prep.state_dir.join("plan.json"), &serde_json::to_vec(plan)?)?;
    let mut cmd = prep.base.clone();
    cmd.env_set = shim::child_env(&prep.py_root, &prep.state_dir, &prep.marker_dir, plan.run)
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    cmd.env_set.push(("PYTEST_ABORT_DUMP_SIGNAL".into(), watchdog::dump_signal().to_string().into()));
    cmd.env_set.extend(cfg.extra_env.iter().map(|(k, v)| (k.into(), v.into())));
    if let Some(gpu) = &cfg.gpu {
        // A test rerun alone (`only`) runs in one process: no `-n` then.
        cmd.env_set.extend(gpu.env_set(plan.only.is_none()).into_iter().map(|(k, v)| (k.into(), v.into())));
    }
    if cfg.test_timeout.is_some() {
        cmd.env_set.push(("PYTEST_ABORT_WATCH_MARKS".into(), "1".into()));
    }
    cmd.env_remove = vec!["PYTEST_ABORT_LAST_RUNNING_FILE".into()];
    cmd.env_remove.extend(cfg.gpu.iter().flat_map(|g| g.env_remove()).map(Into::into));
    let session_left =
        cfg.session_timeout.map(|limit| (Duration::from_secs_f64(limit).saturating_sub(prep.started.elapsed()), limit));
    let ctx =
        attribute::Context { state_dir: prep.state_dir.clone(), marker_dir: prep.marker_dir.clone(), run: plan.run };
    let watchdog = Watchdog::new(prep.marker_dir.clone(), cfg.test_timeout, session_left);
    let mut obs = RunObserver::new(ctx, crash_log, out, watchdog).with_gpu(cfg.gpu.clone());
    let opts = supervise::Options {
        ptrace: cfg.ptrace,
        keep_leftovers: cfg.keep_leftovers,
        // An xdist controller's children that run Python are its workers.
        keep_after_exec: vec!["python".into(), "pypy".into()],
    };
    let sup = supervise::run(&cmd, &opts, &mut obs)?;
    let journal = RunJournal::read(&prep.state_dir, plan.run);
    // A device error of a process whose end supervision did not report
    // (without ptrace, only pytest's own end is seen for sure).
    for pj in journal.processes.values() {
        obs.device_error(pj);
    }
    // A pytest that crashed before the plugin was configured has no journal
    // but a startup crash: that says what happened.
    let no_plugin = (journal.processes.is_empty() && obs.crashes.is_empty() && sup.interrupted.is_none())
        .then(|| explain_no_plugin(&prep.base, sup.outcome, plan.run));
    Ok(OneRun {
        sup,
        session_expired: obs.watchdog.session_expired(),
        no_plugin,
        kept_leftovers: cfg.keep_leftovers,
        crashes: obs.crashes,
        warnings: obs.warnings,
        io_error: obs.io_error,
        journal,
    })
}

/// Why no pytest process of run `run` loaded the plugin, in words: pytest's
/// own usage error (exit 4, before any session), a Python without pytest,
/// or the plugin disabled / a command that is not pytest.
fn explain_no_plugin(base: &Command, outcome: supervise::Outcome, run: u32) -> String {
    let runs_pytest_module = base.argv.windows(2).any(|w| w[0] == "-m" && w[1] == "pytest");
    if runs_pytest_module && outcome != supervise::Outcome::Exited(0) && !has_pytest(&base.program) {
        return format!(
            "run {run}: {} has no pytest (`import pytest` fails there): install pytest into that environment",
            base.program.display()
        );
    }
    match outcome {
        supervise::Outcome::Exited(4) => format!(
            "run {run}: pytest stopped with a usage error (exit status 4) before its session started: \
             see pytest's message above"
        ),
        _ => format!(
            "no pytest process loaded the pytest-abort plugin in run {run} (disabled with \
             `-p no:pytest_abort`, or the command did not run pytest?): crashes cannot be attributed to tests"
        ),
    }
}

/// True when `python` can import pytest.
fn has_pytest(python: &Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import pytest"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes markers left from an earlier run, so they are not read again.
fn clear_markers(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("last_running_") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
