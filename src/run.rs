//! The retry loop: one supervised pytest run after another until the suite
//! is done. Each run gets a plan (tests to deselect, files to skip) that the
//! shim applies; each process end is attributed as it happens and its record
//! appended to the crash log at once, so a wrapper killed later loses nothing.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use std::time::{Duration, Instant};

use crate::attribute::{self, Attribution};
use crate::forensics::{self, OomWatch};
use crate::fsutil;
use crate::journal::{Done, RunJournal, RunReports};
use crate::record::CrashKind;
use crate::record::{self, CrashRecord};
use crate::shim;
use crate::supervise::{self, spawn::Command, Leftover, Mode, Observer, Outcome, ProcessEnd};
use crate::watchdog::{self, Watchdog};

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
    /// Per-test timeout, seconds (a test's own `timeout` mark wins).
    pub test_timeout: Option<f64>,
    /// Whole-session timeout, seconds.
    pub session_timeout: Option<f64>,
    /// After the loop, rerun each crashed test alone this many times.
    pub recheck_crashed: u32,
    /// Extra reports the wrapper writes at the end (its own `--json-report`,
    /// `--html-report`, `--csv-report`, `--junit-xml`).
    pub reports: Vec<(crate::reports::Kind, PathBuf)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            command: Vec::new(),
            max_runs: 5,
            retry_mode: RetryMode::Resume,
            ptrace: true,
            crash_log: None,
            state_dir: None,
            keep_state: false,
            keep_leftovers: false,
            verbose: true,
            test_timeout: None,
            session_timeout: None,
            recheck_crashed: 0,
            reports: Vec::new(),
        }
    }
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
    /// When set, only these tests run (reproduction, recheck).
    #[serde(skip_serializing_if = "Option::is_none")]
    only: Option<Vec<String>>,
}

struct RunObserver<'a> {
    ctx: attribute::Context,
    crash_log: Option<&'a Path>,
    verbose: bool,
    interrupted: Option<i32>,
    records: Vec<CrashRecord>,
    warnings: Vec<String>,
    io_error: bool,
    watchdog: Watchdog,
    oom: OomWatch,
}

impl RunObserver<'_> {
    /// Adds what forensics know to a fresh record.
    fn enrich(&mut self, rec: &mut CrashRecord, end: &ProcessEnd) {
        rec.traceback = forensics::read_traceback(&self.ctx.state_dir, self.ctx.run, end.pid);
        if rec.signal.is_none() && rec.exit_code.is_none() {
            if let Some(sig) = rec.traceback.as_deref().and_then(forensics::signal_from_traceback) {
                rec.signal = Some(sig);
                rec.signal_name = Some(supervise::signals::name(sig));
                rec.reason = rec.reason.replacen(
                    "died (how is unknown without ptrace)",
                    &format!("crashed with {} ({})", supervise::signals::name(sig), supervise::signals::describe(sig)),
                    1,
                );
            }
        }
        if let Some(exp) = self.watchdog.expiry_of(end.pid) {
            rec.kind = CrashKind::Timeout;
            let flag = if exp.scope == "test" { "per-test limit" } else { "--timeout for the session" };
            let during = rec.reason.split_once(" during ").map(|(_, w)| format!(" during {w}")).unwrap_or_default();
            rec.reason = format!("timed out after {}s ({flag}): Python stacks dumped, then killed{during}", exp.limit);
        } else if rec.signal == Some(libc::SIGKILL) && self.oom.fired(end.pid) {
            rec.oom_suspected = Some(true);
            rec.reason.push_str(" (the cgroup's OOM killer fired)");
        }
    }
}

impl Observer for RunObserver<'_> {
    fn process_ended(&mut self, end: &ProcessEnd) {
        let Attribution { record, warnings } = attribute::attribute(&self.ctx, end, self.interrupted);
        for w in warnings {
            eprintln!("pytest-abort: warning: {w}");
            self.warnings.push(w);
        }
        let Some(mut rec) = record else { return };
        self.enrich(&mut rec, end);
        if rec.worker != "main" {
            forensics::write_crashinfo(&self.ctx.state_dir, self.ctx.run, &rec);
        }
        if let Some(tb) = &rec.traceback {
            // faulthandler wrote into our file instead of stderr: echo it.
            eprintln!("{tb}");
        }
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

    fn started(&mut self, root: i32) {
        self.watchdog.set_root(root);
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.watchdog.interval()
    }

    fn tick(&mut self) {
        if self.watchdog.active() {
            let pids = self.watched_pids();
            self.watchdog.tick(&pids);
        }
    }
}

/// A state folder: given (kept), or a private temp folder.
enum StateDir {
    Given(PathBuf),
    Temp(tempfile::TempDir),
}

/// What every run of one invocation shares: the resolved command and the
/// state, marker and shim folders.
struct Prepared {
    base: Command,
    state: StateDir,
    state_dir: PathBuf,
    marker_dir: PathBuf,
    py_root: PathBuf,
    started: Instant,
}

fn prepare(cfg: &Config) -> Result<Prepared> {
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
    let marker_dir = match std::env::var_os("PYTEST_ABORT_LAST_RUNNING_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => state_dir.join("markers"),
    };
    std::fs::create_dir_all(&marker_dir)
        .with_context(|| format!("{}: cannot create the marker folder", marker_dir.display()))?;
    let py_root = shim::install(&state_dir)?;
    Ok(Prepared { base, state, state_dir, marker_dir, py_root, started: Instant::now() })
}

impl Prepared {
    /// Keeps or removes the state folder, as configured.
    fn finish(self, cfg: &Config) {
        if cfg.keep_state {
            if let StateDir::Temp(t) = self.state {
                let _ = t.keep();
            }
        }
    }
}

/// One supervised pytest run and what came of it.
struct OneRun {
    sup: supervise::Supervised,
    records: Vec<CrashRecord>,
    warnings: Vec<String>,
    io_error: bool,
    journal: RunJournal,
    session_expired: bool,
}

fn run_once(cfg: &Config, prep: &Prepared, plan: &Plan, crash_log: Option<&Path>) -> Result<OneRun> {
    clear_markers(&prep.marker_dir);
    fsutil::atomic_write(&prep.state_dir.join("plan.json"), &serde_json::to_vec(plan)?)?;
    let mut cmd = prep.base.clone();
    cmd.env_set = shim::child_env(&prep.py_root, &prep.state_dir, &prep.marker_dir, plan.run)
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    cmd.env_set.push(("PYTEST_ABORT_DUMP_SIGNAL".into(), watchdog::dump_signal().to_string().into()));
    cmd.env_remove = vec!["PYTEST_ABORT_LAST_RUNNING_FILE".into()];
    let session_left =
        cfg.session_timeout.map(|limit| (Duration::from_secs_f64(limit).saturating_sub(prep.started.elapsed()), limit));
    let mut obs = RunObserver {
        ctx: attribute::Context {
            state_dir: prep.state_dir.clone(),
            marker_dir: prep.marker_dir.clone(),
            run: plan.run,
        },
        crash_log,
        verbose: cfg.verbose,
        interrupted: None,
        records: Vec::new(),
        warnings: Vec::new(),
        io_error: false,
        watchdog: Watchdog::new(prep.marker_dir.clone(), cfg.test_timeout, session_left),
        oom: OomWatch::new(),
    };
    let opts = supervise::Options { ptrace: cfg.ptrace, keep_leftovers: cfg.keep_leftovers };
    let sup = supervise::run(&cmd, &opts, &mut obs)?;
    Ok(OneRun {
        sup,
        session_expired: obs.watchdog.session_expired(),
        records: obs.records,
        warnings: obs.warnings,
        io_error: obs.io_error,
        journal: RunJournal::read(&prep.state_dir, plan.run),
    })
}

/// Runs the whole loop (and the rechecks, when asked).
pub fn run(cfg: &Config) -> Result<Session> {
    let prep = prepare(cfg)?;
    let mut session = Session { state_dir: prep.state_dir.clone(), ..Default::default() };
    let mut ignore: Vec<String> = Vec::new();
    let mut selected_seen: HashSet<String> = HashSet::new();
    let mut done_seen: HashSet<String> = HashSet::new();

    for number in 1..=cfg.max_runs.max(1) {
        let deselect: Vec<String> = match cfg.retry_mode {
            RetryMode::Resume => session
                .done
                .iter()
                .map(|d| d.nodeid.clone())
                .chain(session.crashed_nodeids().into_iter().map(String::from))
                .collect(),
            RetryMode::Deselect => session.crashed_nodeids().into_iter().map(String::from).collect(),
        };
        if number > 1 && cfg.verbose {
            let what = match cfg.retry_mode {
                RetryMode::Resume => format!("resuming the {} tests not yet run", session.not_run().len()),
                RetryMode::Deselect => {
                    format!("rerunning the command without the {} crashed tests", session.crashed_nodeids().len())
                }
            };
            eprintln!("\npytest-abort: run {number}/{}: {what}", cfg.max_runs);
        }
        let plan = Plan { run: number, deselect, ignore: ignore.clone(), only: None };
        let one = run_once(cfg, &prep, &plan, cfg.crash_log.as_deref())?;
        if let Some(why) = &one.sup.ptrace_refused {
            if session.ptrace_refused.is_none() && cfg.verbose {
                eprintln!("pytest-abort: {why}; supervising without ptrace");
            }
            session.ptrace_refused = Some(why.clone());
        }
        session.mode = Some(one.sup.mode);
        session.leftovers.extend(one.sup.leftovers.iter().cloned());
        session.interrupted = one.sup.interrupted;
        session.warnings.extend(one.warnings.iter().cloned());
        session.io_error |= one.io_error;

        let journal = &one.journal;
        let before_done = session.done.len();
        for n in &journal.collected {
            if selected_seen.insert(n.clone()) {
                session.selected.push(n.clone());
            }
        }
        for d in &journal.done {
            if done_seen.insert(d.nodeid.clone()) {
                session.done.push(d.clone());
            }
        }
        if let Some(r) = journal.reports(number) {
            session.reports.push(r);
        }
        // Files whose collection crashed are skipped from now on.
        for rec in one.records.iter().filter(|r| r.phase == "collection" && !r.nodeid.is_empty()) {
            if let Some(pj) = journal.processes.get(&rec.pid.parse().unwrap_or(0)) {
                ignore.push(Path::new(&pj.rootdir).join(&rec.nodeid).display().to_string());
            }
        }
        let new_crashes = one.records.len();
        let previously_crashed = session.crashed_nodeids().into_iter().map(String::from).collect::<HashSet<_>>();
        let new_crashed_ids =
            one.records.iter().filter(|r| !r.key().is_empty() && !previously_crashed.contains(r.key())).count();
        let collection_finished = journal.collection_finished;
        session.records.extend(one.records);
        let finished = session.done.len() - before_done;
        session.runs.push(RunInfo {
            number,
            outcome: one.sup.outcome,
            selected: one.journal.collected.len(),
            finished,
            crashes: new_crashes,
        });

        if session.interrupted.is_some() || one.session_expired {
            break;
        }
        let left_behind = !session.not_run().is_empty() || !collection_finished;
        let again = match cfg.retry_mode {
            RetryMode::Resume => new_crashes > 0 && left_behind,
            RetryMode::Deselect => new_crashed_ids > 0,
        };
        let progress = finished > 0 || new_crashed_ids > 0;
        if !again || !progress {
            break;
        }
    }

    if cfg.recheck_crashed > 0 && session.interrupted.is_none() {
        recheck(cfg, &prep, &mut session)?;
    }
    write_reports(cfg, &mut session);
    prep.finish(cfg);
    Ok(session)
}

/// Reruns each crashed test alone `cfg.recheck_crashed` times and labels
/// its record `deterministic` or `flaky (k/N)`. The crash log gets the
/// labelled record as a further line.
fn recheck(cfg: &Config, prep: &Prepared, session: &mut Session) -> Result<()> {
    let n = cfg.recheck_crashed;
    let mut number = session.runs.len() as u32;
    let ids: Vec<String> =
        crate::record::dedupe_by_nodeid(&session.records).iter().map(|r| r.key().to_string()).collect();
    for id in ids {
        let mut crashed = 0;
        for _ in 0..n {
            number += 1;
            let plan = Plan { run: number, deselect: vec![], ignore: vec![], only: Some(vec![id.clone()]) };
            let quiet = Config { verbose: false, ..cfg.clone() };
            let one = run_once(&quiet, prep, &plan, None)?;
            if one.records.iter().any(|r| r.key() == id) {
                crashed += 1;
            }
            if one.sup.interrupted.is_some() {
                session.interrupted = one.sup.interrupted;
                return Ok(());
            }
        }
        let label = if crashed == n { "deterministic".to_string() } else { format!("flaky ({crashed}/{n})") };
        if cfg.verbose {
            eprintln!("pytest-abort: recheck {id}: crash: {label}");
        }
        let mut labelled = Vec::new();
        for r in session.records.iter_mut().filter(|r| r.key() == id) {
            r.recheck = Some(label.clone());
            labelled.push(r.clone());
        }
        if let Some(log) = &cfg.crash_log {
            if let Err(e) = record::append_records(log, &labelled[..labelled.len().min(1)]) {
                session.warnings.push(format!("{e:#}"));
                session.io_error = true;
            }
        }
    }
    Ok(())
}

/// The result of `--reproduce`.
#[derive(Debug, Clone, Default)]
pub struct Reproduction {
    /// Runs made.
    pub runs: u32,
    /// Runs that crashed.
    pub crashed: u32,
    /// The first crash's record.
    pub first: Option<CrashRecord>,
    /// The signal the wrapper was stopped with.
    pub interrupted: Option<i32>,
    /// Whether the test ran at all (it was collected).
    pub found: bool,
}

/// Runs `nodeid` alone up to `repeat` times (fresh pytest each time) and
/// stops at the first crash.
pub fn reproduce(cfg: &Config, nodeid: &str, repeat: u32) -> Result<Reproduction> {
    let prep = prepare(cfg)?;
    let mut out = Reproduction::default();
    for number in 1..=repeat.max(1) {
        if cfg.verbose {
            eprintln!("pytest-abort: reproduce {nodeid}: run {number}/{repeat}");
        }
        let plan = Plan { run: number, deselect: vec![], ignore: vec![], only: Some(vec![nodeid.to_string()]) };
        let one = run_once(cfg, &prep, &plan, cfg.crash_log.as_deref())?;
        out.runs = number;
        out.found |= one.journal.collected.iter().any(|n| n == nodeid);
        if let Some(r) = one.records.into_iter().next() {
            out.crashed += 1;
            out.first = Some(r);
            break;
        }
        if one.sup.interrupted.is_some() {
            out.interrupted = one.sup.interrupted;
            break;
        }
    }
    prep.finish(cfg);
    Ok(out)
}

/// Writes the final reports while the per-run copies still exist in the
/// state folder; failures become warnings and set `io_error`.
fn write_reports(cfg: &Config, session: &mut Session) {
    for res in crate::reports::complete(session, &cfg.reports) {
        match res {
            Ok(p) if cfg.verbose && p.added > 0 => {
                eprintln!("pytest-abort: report {}: {} entries merged or added", p.path.display(), p.added)
            }
            Ok(_) => {}
            Err(e) => {
                let w = format!("{e:#}");
                eprintln!("pytest-abort: error: {w}");
                session.warnings.push(w);
                session.io_error = true;
            }
        }
    }
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
