//! The retry loop: one supervised pytest run after another until the suite
//! is done. Each run gets a plan (tests to deselect, files to skip) that the
//! shim applies; each process end is attributed as it happens and its record
//! appended to the crash log at once, so a wrapper killed later loses nothing.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::attribute::{self, Attribution};
use crate::fsutil;
use crate::journal::{Done, RunJournal, RunReports};
use crate::record::{self, CrashRecord};
use crate::shim;
use crate::supervise::{self, spawn::Command, Leftover, Mode, Observer, Outcome, ProcessEnd};

/// What to rerun after a run that left tests behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryMode {
    /// Run only the tests that have not completed, minus crashed ones.
    Resume,
    /// The original's behaviour: rerun everything minus crashed tests.
    Deselect,
}

/// Everything one wrapper invocation needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The command, as given after `--`.
    pub command: Vec<OsString>,
    /// Most pytest runs.
    pub max_runs: u32,
    /// Resume or deselect.
    pub retry_mode: RetryMode,
    /// Try ptrace supervision.
    pub ptrace: bool,
    /// Crash log (JSONL) to append records to.
    pub crash_log: Option<PathBuf>,
    /// State folder; a private temp folder when `None`.
    pub state_dir: Option<PathBuf>,
    /// Keep the state folder.
    pub keep_state: bool,
    /// Leave leftover processes running.
    pub keep_leftovers: bool,
    /// Print progress lines on stderr.
    pub verbose: bool,
}

/// One pytest run of the loop.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// 1-based number.
    pub number: u32,
    /// How the pytest command ended.
    pub outcome: Outcome,
    /// Tests selected in this run.
    pub selected: usize,
    /// Tests that finished in this run.
    pub finished: usize,
    /// Crash records of this run.
    pub crashes: usize,
}

/// The result of the whole loop.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Every crash record, in order.
    pub records: Vec<CrashRecord>,
    /// Every finished test, first finish wins, in order.
    pub done: Vec<Done>,
    /// Every selected test, in first-seen order.
    pub selected: Vec<String>,
    /// The runs.
    pub runs: Vec<RunInfo>,
    /// The supervision mode of the last run.
    pub mode: Option<Mode>,
    /// Why ptrace was not used, when it was refused.
    pub ptrace_refused: Option<String>,
    /// Processes left behind.
    pub leftovers: Vec<Leftover>,
    /// The signal the wrapper was stopped with.
    pub interrupted: Option<i32>,
    /// Problems that did not stop the run (unwritable crash log, bad marker).
    pub warnings: Vec<String>,
    /// True when a record could not be written to the crash log.
    pub io_error: bool,
    /// User-requested report paths to this run's copies, per run.
    pub reports: Vec<RunReports>,
    /// The state folder (gone unless kept).
    pub state_dir: PathBuf,
}

impl Session {
    /// Node ids of crashed tests (non-empty, unique).
    pub fn crashed_nodeids(&self) -> HashSet<&str> {
        self.records.iter().map(|r| r.key()).filter(|k| !k.is_empty()).collect()
    }

    /// Selected tests that neither finished nor crashed.
    pub fn not_run(&self) -> Vec<&str> {
        let done: HashSet<&str> = self.done.iter().map(|d| d.nodeid.as_str()).collect();
        let crashed = self.crashed_nodeids();
        self.selected.iter().map(String::as_str).filter(|n| !done.contains(n) && !crashed.contains(n)).collect()
    }

    /// Count of finished tests with this outcome.
    pub fn count(&self, outcome: &str) -> usize {
        self.done.iter().filter(|d| d.outcome == outcome).count()
    }

    /// The wrapper's exit status (see `--help`).
    pub fn exit_code(&self) -> i32 {
        if let Some(sig) = self.interrupted {
            return 128 + sig;
        }
        if self.io_error {
            return EXIT_IO;
        }
        let failed = self.done.iter().any(Done::is_failure);
        if !self.records.is_empty() || failed {
            return 1;
        }
        let last = self.runs.last().map(|r| r.outcome);
        match last {
            Some(Outcome::Exited(c)) if (2..=5).contains(&c) => c,
            _ if !self.not_run().is_empty() => 1,
            Some(Outcome::Exited(0)) | None => 0,
            Some(_) => 1,
        }
    }
}

/// Exit status when a record or report could not be written.
pub const EXIT_IO: i32 = 74;

/// The run plan the shim reads from `<state>/plan.json`.
#[derive(Debug, Clone, Serialize, Default)]
struct Plan {
    run: u32,
    deselect: Vec<String>,
    ignore: Vec<String>,
}

struct RunObserver<'a> {
    ctx: attribute::Context,
    crash_log: Option<&'a Path>,
    verbose: bool,
    interrupted: Option<i32>,
    records: Vec<CrashRecord>,
    warnings: Vec<String>,
    io_error: bool,
}

impl Observer for RunObserver<'_> {
    fn process_ended(&mut self, end: &ProcessEnd) {
        let Attribution { record, warnings } = attribute::attribute(&self.ctx, end, self.interrupted);
        for w in warnings {
            eprintln!("pytest-abort: warning: {w}");
            self.warnings.push(w);
        }
        let Some(rec) = record else { return };
        if self.verbose {
            eprintln!(
                "\npytest-abort: {} {} [{}, pid {}]",
                if rec.nodeid.is_empty() { "pytest" } else { &rec.nodeid },
                rec.reason,
                rec.worker,
                rec.pid
            );
        }
        if let Some(log) = self.crash_log {
            if let Err(e) = record::append_records(log, std::slice::from_ref(&rec)) {
                let w = format!("{e:#}");
                eprintln!("pytest-abort: error: {w}");
                self.warnings.push(w);
                self.io_error = true;
            }
        }
        self.records.push(rec);
    }

    fn watched_pids(&mut self) -> Vec<i32> {
        let prefix = format!("r{}-", self.ctx.run);
        std::fs::read_dir(crate::journal::journal_dir(&self.ctx.state_dir))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_prefix(&prefix)
                            .and_then(|r| r.strip_suffix(".jsonl"))
                            .and_then(|p| p.parse().ok())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn interrupted(&mut self, signal: i32) {
        self.interrupted = Some(signal);
    }
}

/// A state folder: given (kept), or a private temp folder.
enum StateDir {
    Given(PathBuf),
    Temp(tempfile::TempDir),
}

impl StateDir {
    fn path(&self) -> &Path {
        match self {
            StateDir::Given(p) => p,
            StateDir::Temp(t) => t.path(),
        }
    }
}

/// Runs the whole loop.
pub fn run(cfg: &Config) -> Result<Session> {
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
    let state_dir = std::fs::canonicalize(state.path()).unwrap_or_else(|_| state.path().to_path_buf());
    let marker_dir = match std::env::var_os("PYTEST_ABORT_LAST_RUNNING_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => state_dir.join("markers"),
    };
    std::fs::create_dir_all(&marker_dir)
        .with_context(|| format!("{}: cannot create the marker folder", marker_dir.display()))?;
    let py_root = shim::install(&state_dir)?;
    let mut session = Session { state_dir: state_dir.clone(), ..Default::default() };
    let mut ignore: Vec<String> = Vec::new();
    let mut selected_seen: HashSet<String> = HashSet::new();
    let mut done_seen: HashSet<String> = HashSet::new();

    for number in 1..=cfg.max_runs.max(1) {
        clear_markers(&marker_dir);
        let deselect: Vec<String> = match cfg.retry_mode {
            RetryMode::Resume => session
                .done
                .iter()
                .map(|d| d.nodeid.clone())
                .chain(session.crashed_nodeids().into_iter().map(String::from))
                .collect(),
            RetryMode::Deselect => session.crashed_nodeids().into_iter().map(String::from).collect(),
        };
        let plan = Plan { run: number, deselect, ignore: ignore.clone() };
        fsutil::atomic_write(&state_dir.join("plan.json"), &serde_json::to_vec(&plan)?)?;
        if number > 1 && cfg.verbose {
            let what = match cfg.retry_mode {
                RetryMode::Resume => {
                    format!("resuming the {} tests not yet run", session.not_run().len())
                }
                RetryMode::Deselect => {
                    format!("rerunning the command without the {} crashed tests", session.crashed_nodeids().len())
                }
            };
            eprintln!("\npytest-abort: run {number}/{}: {what}", cfg.max_runs);
        }

        let mut cmd = base.clone();
        cmd.env_set = shim::child_env(&py_root, &state_dir, &marker_dir, number)
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        cmd.env_remove = vec!["PYTEST_ABORT_LAST_RUNNING_FILE".into()];
        let mut obs = RunObserver {
            ctx: attribute::Context { state_dir: state_dir.clone(), marker_dir: marker_dir.clone(), run: number },
            crash_log: cfg.crash_log.as_deref(),
            verbose: cfg.verbose,
            interrupted: None,
            records: Vec::new(),
            warnings: Vec::new(),
            io_error: false,
        };
        let opts = supervise::Options { ptrace: cfg.ptrace, keep_leftovers: cfg.keep_leftovers };
        let sup = supervise::run(&cmd, &opts, &mut obs)?;
        if let Some(why) = &sup.ptrace_refused {
            if session.ptrace_refused.is_none() && cfg.verbose {
                eprintln!("pytest-abort: {why}; supervising without ptrace");
            }
            session.ptrace_refused = Some(why.clone());
        }
        session.mode = Some(sup.mode);
        session.leftovers.extend(sup.leftovers);
        session.interrupted = sup.interrupted;
        session.warnings.extend(obs.warnings);
        session.io_error |= obs.io_error;

        let journal = RunJournal::read(&state_dir, number);
        let before_done = session.done.len();
        for n in &journal.collected {
            if selected_seen.insert(n.clone()) {
                session.selected.push(n.clone());
            }
        }
        for d in journal.done.iter().cloned() {
            if done_seen.insert(d.nodeid.clone()) {
                session.done.push(d);
            }
        }
        if let Some(r) = journal.reports(number) {
            session.reports.push(r);
        }
        // Files whose collection crashed are skipped from now on.
        for rec in obs.records.iter().filter(|r| r.phase == "collection" && !r.nodeid.is_empty()) {
            if let Some(pj) = journal.processes.get(&rec.pid.parse().unwrap_or(0)) {
                ignore.push(Path::new(&pj.rootdir).join(&rec.nodeid).display().to_string());
            }
        }
        let new_crashes = obs.records.len();
        let previously_crashed = session.crashed_nodeids().into_iter().map(String::from).collect::<HashSet<_>>();
        let new_crashed_ids =
            obs.records.iter().filter(|r| !r.key().is_empty() && !previously_crashed.contains(r.key())).count();
        session.records.extend(obs.records);
        let finished = session.done.len() - before_done;
        session.runs.push(RunInfo {
            number,
            outcome: sup.outcome,
            selected: journal.collected.len(),
            finished,
            crashes: new_crashes,
        });

        if session.interrupted.is_some() {
            break;
        }
        let abnormal = new_crashes > 0;
        let left_behind = !session.not_run().is_empty() || !journal.collection_finished;
        let again = match cfg.retry_mode {
            RetryMode::Resume => abnormal && left_behind,
            RetryMode::Deselect => new_crashed_ids > 0,
        };
        let progress = finished > 0 || new_crashed_ids > 0;
        if !again || !progress {
            break;
        }
    }

    if cfg.keep_state || cfg.state_dir.is_some() {
        if let StateDir::Temp(t) = state {
            let _ = t.keep();
        }
    }
    Ok(session)
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
