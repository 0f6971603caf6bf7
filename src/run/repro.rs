//! Running single tests alone: `--recheck-crashed` (label each crash
//! deterministic or flaky) and `--reproduce` (crash rate of one test).

use anyhow::Result;

use super::once::{prepare, run_once, Plan, Prepared};
use super::{Config, Session};
use crate::model::{Crash, Verdict};
use crate::record::{self, CrashRecord, RecheckRun};
use crate::reporter::{Event, Reporters};

/// Reruns each crashed test alone `cfg.recheck_crashed` times and labels
/// its record `deterministic` or `flaky (k/N)`. The crash log gets the
/// labelled record as a further line.
pub(super) fn recheck(cfg: &Config, prep: &Prepared, session: &mut Session, out: &Reporters) -> Result<()> {
    let n = cfg.recheck_crashed;
    let mut number = session.runs.len() as u32;
    let mut ids: Vec<String> = Vec::new();
    // A device error is a failure, not a crash: nothing to recheck.
    for c in session.crashes.iter().filter(|c| !c.death.kind().test_finished()) {
        if !c.key().is_empty() && !ids.iter().any(|i| i == c.key()) {
            ids.push(c.key().to_string());
        }
    }
    for id in ids {
        let mut crashed = 0;
        let mut runs = Vec::new();
        for _ in 0..n {
            number += 1;
            let plan = Plan { run: number, only: Some(vec![id.clone()]), ..Default::default() };
            let one = run_once(cfg, prep, &plan, None, &Reporters::none())?;
            let again = one.crashes.iter().find(|c| c.key() == id);
            crashed += u32::from(again.is_some());
            runs.push(RecheckRun {
                run: number,
                crashed: again.is_some(),
                reason: again.map(|c| c.reason()).unwrap_or_default(),
                traceback: again.and_then(|c| c.traceback.clone()),
            });
            if one.sup.interrupted.is_some() {
                session.interrupted = one.sup.interrupted;
                return Ok(());
            }
        }
        let verdict = Verdict::of(crashed, n);
        out.emit(Event::Rechecked { nodeid: id.clone(), verdict: verdict.to_string() });
        let mut labelled = Vec::new();
        for c in session.crashes.iter_mut().filter(|c| c.key() == id) {
            c.recheck = Some(verdict);
            c.rechecks = runs.clone();
            c.flaky_result = matches!(verdict, Verdict::Flaky { .. }).then_some(cfg.flaky_result);
            labelled.push(CrashRecord::from(&*c));
        }
        if let Some(log) = &cfg.crash_log {
            if let Err(e) = record::append_records(log, &labelled[..labelled.len().min(1)]) {
                out.error(format!("{e:#}"));
                session.warnings.push(format!("{e:#}"));
                session.io_error = true;
                session.crash_log_failed = true;
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
    /// The first crash.
    pub first: Option<Crash>,
    /// The signal the wrapper was stopped with.
    pub interrupted: Option<i32>,
    /// Whether the test ran at all (it was collected).
    pub found: bool,
}

/// Runs `nodeid` alone up to `repeat` times (fresh pytest each time) and
/// stops at the first crash.
pub fn reproduce(cfg: &Config, nodeid: &str, repeat: u32, out: &Reporters) -> Result<Reproduction> {
    let prep = prepare(cfg)?;
    let mut r = Reproduction::default();
    for number in 1..=repeat.max(1) {
        out.emit(Event::ReproduceRun { nodeid: nodeid.to_string(), run: number, repeat });
        let plan = Plan { run: number, only: Some(vec![nodeid.to_string()]), ..Default::default() };
        let one = run_once(cfg, &prep, &plan, cfg.crash_log.as_deref(), out)?;
        r.runs = number;
        r.found |= one.journal.collected.iter().any(|n| n == nodeid);
        if !r.found && (one.journal.collection_finished || one.no_plugin.is_some()) {
            // pytest does not collect it (or never started): another run
            // would say the same.
            break;
        }
        if let Some(c) = one.crashes.into_iter().next() {
            r.crashed += 1;
            r.first = Some(c);
            break;
        }
        if one.sup.interrupted.is_some() {
            r.interrupted = one.sup.interrupted;
            break;
        }
    }
    prep.finish(cfg);
    if r.interrupted.is_none() {
        out.emit(Event::Reproduced {
            nodeid: nodeid.to_string(),
            runs: r.runs,
            crashed: r.crashed,
            found: r.found,
            first: r.first.as_ref().map(CrashRecord::from),
        });
    }
    Ok(r)
}

impl Reproduction {
    /// The exit status of `--reproduce`: 128+N when interrupted, 4 when
    /// pytest does not collect the test, 1 when it crashed, else 0.
    pub fn exit_code(&self) -> i32 {
        match (self.interrupted, self.found, &self.first) {
            (Some(sig), _, _) => 128 + sig,
            (None, _, Some(_)) => 1,
            (None, false, None) => 4,
            (None, true, None) => 0,
        }
    }
}
