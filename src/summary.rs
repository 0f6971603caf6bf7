//! The end-of-run summary: one line per crash, the leftovers, then totals.
//! Built from the session as a [`Summary`] (the `session_finished` event),
//! rendered for the terminal by [`Summary::render`].

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::TestOutcome;
use crate::record::CrashRecord;
use crate::reporter::terminal::escape;
use crate::run::Session;
use crate::supervise::Leftover;

/// What a wrapper invocation came to.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Every crash record, in order.
    pub crashes: Vec<CrashRecord>,
    /// Processes tests left behind.
    pub leftovers: Vec<Leftover>,
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed or errored.
    pub failed: usize,
    /// Crash records of deaths (device errors not counted: their tests
    /// finished, and count as failed).
    pub crashed: usize,
    /// Tests that failed with a sticky device error, so that their process
    /// ran no further test (records of kind `device-error`).
    pub device_errors: usize,
    /// Tests skipped.
    pub skipped: usize,
    /// Tests xfailed.
    pub xfailed: usize,
    /// Tests xpassed.
    pub xpassed: usize,
    /// Selected tests that neither finished nor crashed.
    pub not_run: usize,
    /// pytest runs made (a fork server's children count one each).
    pub runs_used: usize,
    /// Most runs allowed.
    pub max_runs: u32,
    /// Runs made only because device errors ended the run before (not
    /// counted in `runs_used`).
    pub runs_after_device_errors: usize,
    /// The supervision mode of the last run.
    pub supervision: String,
    /// Why ptrace was refused, if it was.
    pub ptrace_refused: Option<String>,
    /// The crash log, when crashes were written to it (never a log that
    /// could not be written).
    pub crash_log: Option<PathBuf>,
    /// The wrapper's exit status.
    pub exit_code: i32,
    /// How the GPU slots were used (`--gpus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<crate::gpu::slots::Usage>,
}

impl Summary {
    /// The summary of a session.
    pub fn of(session: &Session, max_runs: u32, crash_log: Option<&Path>) -> Summary {
        Summary {
            crashes: session.records(),
            leftovers: session.leftovers.clone(),
            passed: session.count(TestOutcome::Passed),
            failed: session.count(TestOutcome::Failed) + session.count(TestOutcome::Error),
            crashed: session.crashes.iter().filter(|c| !c.death.kind().test_finished()).count(),
            device_errors: session.crashes.iter().filter(|c| c.death.kind().test_finished()).count(),
            skipped: session.count(TestOutcome::Skipped),
            xfailed: session.count(TestOutcome::Xfailed),
            xpassed: session.count(TestOutcome::Xpassed),
            not_run: session.not_run().len(),
            runs_used: session.runs_used() as usize,
            max_runs,
            runs_after_device_errors: session.runs_after_device_errors() as usize,
            supervision: session.mode.map(|m| m.to_string()).unwrap_or_else(|| "none".into()),
            ptrace_refused: session.ptrace_refused.clone(),
            crash_log: crash_log
                .filter(|_| !session.crash_log_failed && !session.crashes.is_empty())
                .map(Path::to_path_buf),
            exit_code: session.exit_code(),
            gpus: session.gpu.clone(),
        }
    }

    /// The summary for the terminal (no colors; strings from tests escaped).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n=== pytest-abort summary ===");
        if let Some(g) = &self.gpus {
            let _ = writeln!(s, "{}", escape(&g.headline()));
        }
        for r in &self.crashes {
            let _ = writeln!(s, "{}", crash_line(r));
        }
        for l in &self.leftovers {
            let _ = writeln!(s, "LEFTOVER pid {} {}", l.pid, escape(&l.cmdline));
        }
        let mut totals = vec![
            format!("{} passed", self.passed),
            format!("{} failed", self.failed),
            format!("{} crashed", self.crashed),
        ];
        for (n, label) in [
            (self.device_errors, "device-error"),
            (self.skipped, "skipped"),
            (self.xfailed, "xfailed"),
            (self.xpassed, "xpassed"),
        ] {
            if n > 0 {
                totals.push(format!("{n} {label}"));
            }
        }
        totals.push(format!("{} not run", self.not_run));
        let more = match self.runs_after_device_errors {
            0 => String::new(),
            n => format!(" (+{n} after device errors)"),
        };
        let _ = writeln!(
            s,
            "{}; runs used {}/{}{more}; supervision: {}",
            totals.join(", "),
            self.runs_used,
            self.max_runs,
            self.supervision
        );
        for line in self.gpus.iter().flat_map(|g| g.tail_lines()) {
            let _ = writeln!(s, "{}", escape(&line));
        }
        if let Some(why) = &self.ptrace_refused {
            let _ = writeln!(s, "({})", escape(why));
        }
        if let Some(p) = &self.crash_log {
            let _ = writeln!(s, "crash log: {}", escape(&p.to_string_lossy()));
        }
        s
    }
}

/// `CRASHED <id>  SIGSEGV  worker=gw0  0.002s  run 1  at libc.so.6+0x1`;
/// a device error: `DEVICE-ERROR <id>  device-side assert triggered  ...`.
fn crash_line(r: &CrashRecord) -> String {
    let id = if r.nodeid.is_empty() { format!("<{}>", r.phase) } else { r.nodeid.clone() };
    if r.kind.test_finished() {
        let matched = escape(r.device_error.as_deref().unwrap_or_default());
        let (w, run) = (escape(&r.worker), r.run);
        return format!("DEVICE-ERROR {}  {matched}  worker={w}  run {run}  (process retired)", escape(&id));
    }
    let mut line = format!(
        "CRASHED {id}  {how:#}  worker={w}  {dur:.3}s  run {run}",
        id = escape(&id),
        how = r.death(),
        w = escape(&r.worker),
        dur = r.duration,
        run = r.run
    );
    if let Some(loc) = &r.location {
        let _ = write!(line, "  at {}", escape(loc));
    }
    if r.oom_suspected == Some(true) {
        line.push_str("  (OOM killer)");
    }
    if let Some(rc) = &r.recheck {
        let _ = write!(line, "  crash: {}", escape(rc));
    }
    line
}

/// A crash's forensics, one field a line (for `--reproduce`).
pub fn forensics(r: &CrashRecord) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "first crash: {} {}", r.nodeid, r.reason);
    let fields: [(&str, Option<String>); 8] = [
        ("signal", r.signal_name.clone()),
        ("exit code", r.exit_code.map(|c| c.to_string())),
        ("si_code", r.si_code.clone()),
        ("fault address", r.fault_addr.clone()),
        ("sender pid", r.sender_pid.map(|p| p.to_string())),
        ("location", r.location.clone()),
        ("peak RSS", r.peak_rss_kb.map(|k| format!("{k} KiB"))),
        ("duration", Some(format!("{:.3}s", r.duration))),
    ];
    for (label, value) in fields {
        if let Some(v) = value {
            let _ = writeln!(s, "  {label}: {v}");
        }
    }
    if let Some(tb) = &r.traceback {
        let _ = writeln!(s, "  Python stacks:\n{tb}");
    }
    s
}
