//! The retry loop: one supervised pytest run after another until the suite
//! is done. Each run gets a plan (tests to deselect, files to skip) that the
//! shim applies; each process end is attributed as it happens and its record
//! appended to the crash log at once, so a wrapper killed later loses nothing.
//!
//! [`once`] runs one supervised pytest; [`observer`] turns each process end
//! into a record as it happens; [`repro`] reruns single tests (`--reproduce`,
//! `--recheck-crashed`); this module holds the loop and its result.

mod lastfailed;
mod narrow;
mod observer;
mod once;
mod repro;

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::journal::{Done, RunJournal, RunReports};
use crate::model::{Crash, Phase, TestOutcome};
use crate::record::CrashRecord;
use crate::reporter::{Event, Reporters};
use crate::supervise::{Leftover, Mode, Outcome};

use once::{prepare, run_once, MultiGpu, MultiGpuPhase, OneRun, Plan};
pub use repro::{reproduce, Reproduction};
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
    /// Per-test timeout, seconds (a test's own `timeout` mark wins).
    pub test_timeout: Option<f64>,
    /// Whole-session timeout, seconds.
    pub session_timeout: Option<f64>,
    /// After the loop, rerun each crashed test alone this many times.
    pub recheck_crashed: u32,
    /// Whether a crash the rechecks did not see every time fails the run.
    pub flaky_result: crate::model::FlakyResult,
    /// Extra reports the wrapper writes at the end (its own `--json-report`,
    /// `--html-report`, `--csv-report`, `--junit-xml`).
    pub reports: Vec<(crate::reports::Kind, PathBuf)>,
    /// More environment for every pytest run (the shard plan).
    pub extra_env: Vec<(String, String)>,
    /// Resume mode: let a serial pytest that is safe to fork collect once
    /// and run the tests in forked children (`--fresh-resume` turns it off).
    pub fork_resume: bool,
    /// GPU slots: the plan the plugin takes slots by (`--gpus`).
    pub gpu: Option<crate::gpu::plan::Plan>,
    /// Regular expressions on a failed test's report text that mark a
    /// sticky device error: the process runs no further test (empty: off).
    pub poison: Vec<String>,
    /// `--multi-gpu-marker`: tests with this marker run after the others,
    /// serially, with every GPU of the job visible.
    pub multi_gpu_marker: Option<String>,
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
            test_timeout: None,
            session_timeout: None,
            recheck_crashed: 0,
            flaky_result: crate::model::FlakyResult::Fail,
            reports: Vec::new(),
            extra_env: Vec::new(),
            fork_resume: true,
            gpu: None,
            poison: crate::model::DEFAULT_POISON_PATTERNS.iter().map(|p| p.to_string()).collect(),
            multi_gpu_marker: None,
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
    /// Crashes of this run.
    pub crashes: usize,
    /// pytest processes that ran tests: 1, or the children a fork server
    /// forked (each counts as one run toward `--max-runs`).
    pub processes: u32,
    /// True for a run started only because device errors ended the one
    /// before (no crash): it does not count toward `--max-runs`.
    pub after_device_error: bool,
}

/// The result of the whole loop.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Every crash, in order.
    pub crashes: Vec<Crash>,
    /// Every finished test, first finish wins, in order.
    pub done: Vec<Done>,
    /// Collection reports that did not pass, first per node id wins.
    pub collect_reports: Vec<crate::journal::CollectReport>,
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
    /// True when the crash log could not be written at all (the summary
    /// then does not point to it).
    pub crash_log_failed: bool,
    /// User-requested report paths to this run's copies, per run.
    pub reports: Vec<RunReports>,
    /// The state folder (gone unless kept).
    pub state_dir: PathBuf,
    /// Files whose collection crashed (skipped in later runs), as node ids.
    pub skipped_files: Vec<String>,
    /// Whether the last run's collection finished.
    pub collection_finished: bool,
    /// What one plain run would count as collected (every test of the
    /// session, the user's deselected ones included) and deselected (by the
    /// user's own `-k`/`-m`/`--deselect`), from the first run that finished
    /// collecting; the wrapper's own deselections never count.
    pub counts: Option<(usize, usize)>,
    /// Under `--multi-gpu-marker`: the tests the first phase left for the
    /// multi-GPU phase (`None` until a run of the first phase collected).
    pub multi_gpu_tests: Option<Vec<String>>,
    /// pytest's `--maxfail` as the plugin journaled it (`-x` is 1; 0: no
    /// limit).
    pub maxfail: u32,
    /// pytest's cache folder, when its cache plugin was active (the
    /// wrapper then updates its `--lf` file at the end).
    pub cache_dir: Option<PathBuf>,
    /// How the GPU slots were used (`--gpus`).
    pub gpu: Option<crate::gpu::slots::Usage>,
    /// Why the tests left unrun were not run, when the wrapper stopped
    /// them (`not run: wrapper interrupted by SIGTERM`, `not run:
    /// --max-runs 5 used up`, ...): the reports then list each as a skip
    /// with this reason. `None` when pytest itself stopped (`-x`, a
    /// collection error): plain pytest lists no such tests either.
    pub not_run_reason: Option<String>,
    /// True when the session's `--timeout` ran out.
    pub timed_out: bool,
}

impl Session {
    /// Node ids of crashed tests (non-empty, unique).
    pub fn crashed_nodeids(&self) -> HashSet<&str> {
        self.crashes.iter().map(Crash::key).filter(|k| !k.is_empty()).collect()
    }

    /// Selected tests that neither finished nor crashed.
    pub fn not_run(&self) -> Vec<&str> {
        let done: HashSet<&str> = self.done.iter().map(|d| d.nodeid.as_str()).collect();
        let crashed = self.crashed_nodeids();
        self.selected.iter().map(String::as_str).filter(|n| !done.contains(n) && !crashed.contains(n)).collect()
    }

    /// pytest runs used toward `--max-runs` (a fork server's children
    /// count one each).
    pub fn runs_used(&self) -> u32 {
        self.runs.iter().filter(|r| !r.after_device_error).map(|r| r.processes).sum()
    }

    /// Runs started only because device errors ended the run before (not
    /// counted toward `--max-runs`).
    pub fn runs_after_device_errors(&self) -> u32 {
        self.runs.iter().filter(|r| r.after_device_error).map(|r| r.processes).sum()
    }

    /// Count of finished tests with this outcome.
    pub fn count(&self, outcome: TestOutcome) -> usize {
        self.done.iter().filter(|d| TestOutcome::parse(&d.outcome) == Some(outcome)).count()
    }

    /// The crash records (wire form) of every crash.
    pub fn records(&self) -> Vec<CrashRecord> {
        self.crashes.iter().map(CrashRecord::from).collect()
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
        if self.crashes.iter().any(|c| !c.flaky_passes()) || failed {
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

    /// Distinct tests that failed or crashed: what counts toward pytest's
    /// `--maxfail` across runs (a crash is a failure).
    fn failures(&self) -> usize {
        let mut ids: HashSet<&str> = self.done.iter().filter(|d| d.is_failure()).map(|d| d.nodeid.as_str()).collect();
        ids.extend(self.crashed_nodeids());
        ids.len()
    }

    /// Whether pytest's `--maxfail`/`-x` is reached: nothing more may run.
    fn maxfail_reached(&self) -> bool {
        self.maxfail > 0 && self.failures() >= self.maxfail as usize
    }

    /// Before the multi-GPU phase: its tests become selected (not run
    /// yet). False when the first phase found none (nothing to run).
    fn start_multi_gpu_phase(&mut self) -> bool {
        let Some(ids) = self.multi_gpu_tests.clone() else { return true };
        let seen: HashSet<String> = self.selected.iter().cloned().collect();
        self.selected.extend(ids.iter().filter(|n| !seen.contains(*n)).cloned());
        !ids.is_empty()
    }

    /// The tests the next run leaves out.
    fn deselect(&self, mode: RetryMode) -> Vec<String> {
        let crashed = self.crashed_nodeids().into_iter().map(String::from);
        match mode {
            RetryMode::Resume => self.done.iter().map(|d| d.nodeid.clone()).chain(crashed).collect(),
            RetryMode::Deselect => crashed.collect(),
        }
    }

    /// What run `number` (a rerun) is for, in words.
    fn rerun_purpose(&self, mode: RetryMode) -> String {
        match mode {
            RetryMode::Resume if !self.collection_finished => {
                let left = self.not_run().len();
                let known = if left > 0 { format!(", then the {left} tests not yet run") } else { String::new() };
                format!(
                    "collecting the files not yet collected (skipping {}, whose collection crashed){known}",
                    self.skipped_files.join(", ")
                )
            }
            RetryMode::Resume => format!("resuming the {} tests not yet run", self.not_run().len()),
            RetryMode::Deselect => {
                format!("rerunning the command without the {} crashed tests", self.crashed_nodeids().len())
            }
        }
    }
}

pub use crate::error::EXIT_IO;

/// What one run added, for deciding whether to run again.
struct Step {
    new_crashes: usize,
    /// The run's records are all device errors (no process died).
    device_errors_only: bool,
    new_crashed_ids: usize,
    finished: usize,
    stop: bool,
}

/// Where the retry loop stands across phases: the last run's number and
/// what later runs leave out.
#[derive(Default)]
struct LoopState {
    number: u32,
    ignore: Vec<String>,
    files: narrow::CollectedFiles,
}

/// Runs the whole loop (and the rechecks, when asked); what happens goes to
/// `out` as events. Under `--multi-gpu-marker` the loop runs twice: first
/// on the tests without the marker (as the command says), then serially on
/// the marked ones.
pub fn run(cfg: &Config, out: &Reporters) -> Result<Session> {
    let prep = prepare(cfg)?;
    let mut session = Session { state_dir: prep.state_dir.clone(), ..Default::default() };
    let mut state = LoopState::default();
    match &cfg.multi_gpu_marker {
        None => {
            run_phase(cfg, &prep, &mut session, &mut state, None, out)?;
        }
        Some(marker) => {
            let rest = MultiGpu { marker: marker.clone(), phase: MultiGpuPhase::Rest };
            let stopped = run_phase(cfg, &prep, &mut session, &mut state, Some(rest), out)?;
            if !stopped && session.start_multi_gpu_phase() {
                let marked = MultiGpu { marker: marker.clone(), phase: MultiGpuPhase::Marked };
                run_phase(cfg, &prep, &mut session, &mut state, Some(marked), out)?;
            }
        }
    }
    if let Some(sig) = session.interrupted {
        let name = crate::supervise::signals::name(sig);
        session.not_run_reason = Some(format!("not run: wrapper interrupted by {name}"));
    } else if session.timed_out {
        let limit = cfg.session_timeout.unwrap_or_default();
        session.not_run_reason = Some(format!("not run: the session --timeout of {limit} s ran out"));
    }
    if cfg.recheck_crashed > 0 && session.interrupted.is_none() {
        repro::recheck(cfg, &prep, &mut session, out)?;
    }
    write_reports(cfg, &mut session, out);
    session.gpu = cfg.gpu.as_ref().map(|p| crate::gpu::slots::Usage::read(&prep.state_dir, p, &session.crashes));
    if let Err(e) = lastfailed::update(&session) {
        out.warning(format!("{e:#}"));
    }
    prep.finish(cfg);
    Ok(session)
}

/// The interpreter the run's pytest processes journaled, if any.
fn journaled_python(journal: &RunJournal) -> Option<PathBuf> {
    journal.processes.values().find_map(|pj| match pj.events.first() {
        Some(crate::journal::Event::Start { python: Some(p), .. }) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => None,
    })
}

/// One phase of the retry loop: runs until the tests are done, no run
/// makes progress or `--max-runs` (for this phase) is used up. Returns true
/// when nothing more may run (interrupted, timed out, pytest stopped).
fn run_phase(
    cfg: &Config,
    prep: &once::Prepared,
    session: &mut Session,
    state: &mut LoopState,
    multi_gpu: Option<MultiGpu>,
    out: &Reporters,
) -> Result<bool> {
    let first = state.number + 1;
    let mut used = 0;
    // A run that follows one only device errors ended is not counted: each
    // poisoned process finished its tests up to the poisoning one.
    let mut free = false;
    while used < cfg.max_runs.max(1) {
        state.number += 1;
        let number = state.number;
        let mut purpose = match &multi_gpu {
            _ if number == 1 => "the command".to_string(),
            Some(m) if number == first && m.phase == MultiGpuPhase::Marked => format!(
                "the {} tests marked {}, serially with every GPU (multi-GPU phase)",
                session.not_run().len(),
                m.marker
            ),
            _ => session.rerun_purpose(cfg.retry_mode),
        };
        if free {
            purpose.push_str(" (after a device error: not counted toward --max-runs)");
        }
        out.emit(Event::RunStarted { run: number, max_runs: cfg.max_runs, purpose });
        let resume = cfg.retry_mode == RetryMode::Resume;
        let mut plan_ignore = state.ignore.clone();
        if resume && number > 1 && session.collection_finished {
            plan_ignore.extend(state.files.without(&session.not_run()));
        }
        let plan = Plan {
            run: number,
            deselect: session.deselect(cfg.retry_mode),
            ignore: plan_ignore,
            only: None,
            fork: resume && cfg.fork_resume,
            max_forks: cfg.max_runs.max(1) - used,
            failures: session.failures(),
            poison: cfg.poison.clone(),
            multi_gpu: multi_gpu.clone(),
        };
        let one = run_once(cfg, prep, &plan, cfg.crash_log.as_deref(), out)?;
        state.files.absorb(&one.journal);
        let step = absorb(session, number, one, &mut state.ignore, out);
        if let Some(r) = session.runs.last_mut() {
            r.after_device_error = free;
        }
        if !free {
            used += session.runs.last().map_or(1, |r| r.processes);
        }
        free = step.device_errors_only;
        let left_behind = !session.not_run().is_empty() || !session.collection_finished;
        let again = match cfg.retry_mode {
            RetryMode::Resume => step.new_crashes > 0 && left_behind,
            RetryMode::Deselect => step.new_crashed_ids > 0,
        };
        let progress = step.finished > 0 || step.new_crashed_ids > 0;
        if step.stop || session.maxfail_reached() {
            return Ok(true);
        }
        if !again || !progress {
            break;
        }
        if used >= cfg.max_runs.max(1) {
            // Another run was due: what is left stays unrun.
            session.not_run_reason = Some(format!("not run: --max-runs {} used up", cfg.max_runs.max(1)));
        }
    }
    Ok(false)
}

/// The `--maxfail` the run's pytest processes journaled (the largest).
fn journaled_maxfail(journal: &RunJournal) -> u32 {
    let starts = journal.processes.values().filter_map(|pj| match pj.events.first() {
        Some(crate::journal::Event::Start { maxfail, .. }) => Some(*maxfail),
        _ => None,
    });
    starts.max().unwrap_or(0)
}

/// Takes one run's results into the session.
fn absorb(session: &mut Session, number: u32, one: OneRun, ignore: &mut Vec<String>, out: &Reporters) -> Step {
    note_supervision(session, &one, out);
    session.timed_out |= one.session_expired;
    let journal = &one.journal;
    let finished = merge_journal(session, journal, number);
    if let Some(python) = journaled_python(journal) {
        crate::reports::use_python(&python);
    }
    if session.cache_dir.is_none() {
        session.cache_dir = lastfailed::cache_dir(journal);
    }
    // Files whose collection crashed are skipped from now on.
    for c in one.crashes.iter().filter(|c| c.phase == Phase::Collection && !c.nodeid.is_empty()) {
        if let Some(pj) = journal.processes.get(&c.pid) {
            ignore.push(Path::new(&pj.rootdir).join(&c.nodeid).display().to_string());
            session.skipped_files.push(c.nodeid.clone());
        }
    }
    let previously_crashed: HashSet<String> = session.crashed_nodeids().into_iter().map(String::from).collect();
    let step = Step {
        new_crashes: one.crashes.len(),
        device_errors_only: !one.crashes.is_empty() && one.crashes.iter().all(|c| c.death.kind().test_finished()),
        new_crashed_ids: one
            .crashes
            .iter()
            .filter(|c| !c.key().is_empty() && !previously_crashed.contains(c.key()))
            .count(),
        finished,
        // pytest itself died before its session (a conftest crashed at
        // import): another run would crash the same way.
        stop: session.interrupted.is_some()
            || session.timed_out
            || one.crashes.iter().any(|c| c.phase == Phase::Startup && c.worker == crate::model::Worker::Main),
    };
    session.collection_finished = journal.collection_finished;
    session.maxfail = session.maxfail.max(journaled_maxfail(journal));
    session.crashes.extend(one.crashes);
    let info = RunInfo {
        number,
        outcome: one.sup.outcome,
        selected: one.journal.collected.len(),
        finished,
        crashes: step.new_crashes,
        processes: narrow::processes_used(journal),
        after_device_error: false,
    };
    out.emit(Event::RunFinished {
        run: number,
        how: format!("{:#}", crate::model::Death::from_end(info.outcome, None)),
        exit_status: info.outcome.shell_code(),
        selected: info.selected,
        finished,
        crashes: info.crashes,
    });
    session.runs.push(info);
    step
}

/// Takes what supervision of one run says into the session: the mode, a
/// refused ptrace, leftovers, the interrupt, problems, and a run in which
/// no pytest process loaded the plugin.
fn note_supervision(session: &mut Session, one: &OneRun, out: &Reporters) {
    if let Some(why) = &one.sup.ptrace_refused {
        if session.ptrace_refused.is_none() {
            out.emit(Event::PtraceRefused { reason: why.clone() });
        }
        session.ptrace_refused = Some(why.clone());
    }
    session.mode = Some(one.sup.mode);
    for l in &one.sup.leftovers {
        out.emit(Event::Leftover { pid: l.pid, cmdline: l.cmdline.clone(), killed: !one.kept_leftovers });
    }
    session.leftovers.extend(one.sup.leftovers.iter().cloned());
    session.interrupted = one.sup.interrupted;
    session.warnings.extend(one.warnings.iter().cloned());
    session.io_error |= one.io_error;
    session.crash_log_failed |= one.io_error;
    if let Some(w) = one.no_plugin.clone() {
        // Nothing loaded the plugin: deaths cannot be named.
        out.warning(w.clone());
        session.warnings.push(w);
    }
}

/// Adds a run's selected and finished tests (first seen wins) and its
/// report paths; returns how many tests finished in it.
fn merge_journal(session: &mut Session, journal: &RunJournal, number: u32) -> usize {
    let before = session.done.len();
    if session.counts.is_none() {
        session.counts = journal.counts;
    }
    if session.multi_gpu_tests.is_none() {
        session.multi_gpu_tests = journal.multi_gpu.clone();
    }
    let selected_seen: HashSet<String> = session.selected.iter().cloned().collect();
    for n in &journal.collected {
        if !selected_seen.contains(n) {
            session.selected.push(n.clone());
        }
    }
    let done_seen: HashSet<String> = session.done.iter().map(|d| d.nodeid.clone()).collect();
    for d in &journal.done {
        if !done_seen.contains(&d.nodeid) {
            session.done.push(d.clone());
        }
    }
    crate::journal::add_collect_reports(&mut session.collect_reports, &journal.collect_reports);
    if let Some(r) = journal.reports(number) {
        session.reports.push(r);
    }
    session.done.len() - before
}

/// Writes the final reports while the per-run copies still exist in the
/// state folder; failures become warnings and set `io_error`.
fn write_reports(cfg: &Config, session: &mut Session, out: &Reporters) {
    let records = session.records();
    let not_run: Vec<String> = session.not_run().into_iter().map(String::from).collect();
    let input = crate::reports::RunOutput {
        records: &records,
        done: &session.done,
        collect: &session.collect_reports,
        runs: &session.reports,
        counts: session.counts,
        not_run: &not_run,
        not_run_reason: session.not_run_reason.as_deref(),
        exit_status: Some(session.exit_code()),
    };
    for res in crate::reports::complete(&input, &cfg.reports) {
        match res {
            Ok(p) => {
                if let Some(note) = p.read_only_note() {
                    out.warning(note);
                }
                out.emit(Event::ReportWritten {
                    path: p.path.clone(),
                    added: p.added,
                    created: p.created,
                    entries: p.entries,
                });
            }
            Err(e) => {
                let w = format!("{e:#}");
                out.error(w.clone());
                session.warnings.push(w);
                session.io_error = true;
            }
        }
    }
}
