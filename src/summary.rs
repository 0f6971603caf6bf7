//! The end-of-run summary on stderr: one line per crash, then totals.

use std::fmt::Write;

use crate::model::{Crash, TestOutcome};
use crate::run::Session;
use crate::supervise::signals;

/// Renders the summary (without colors).
pub fn render(session: &Session, max_runs: u32, crash_log: Option<&std::path::Path>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n=== pytest-abort summary ===");
    for c in &session.crashes {
        let mut line = format!(
            "CRASHED {id}  {how:#}  worker={w}  {dur:.3}s  run {run}",
            id = c.label(),
            how = c.death,
            w = c.worker,
            dur = c.duration,
            run = c.run
        );
        if let Some(loc) = c.death.detail().and_then(|d| d.location.as_ref()) {
            let _ = write!(line, "  at {loc}");
        }
        if c.oom_suspected {
            line.push_str("  (OOM killer)");
        }
        if let Some(rc) = &c.recheck {
            let _ = write!(line, "  crash: {rc}");
        }
        let _ = writeln!(s, "{line}");
    }
    for l in &session.leftovers {
        let _ = writeln!(s, "LEFTOVER pid {} {}", l.pid, l.cmdline);
    }
    let not_run = session.not_run().len();
    let mut totals = vec![
        format!("{} passed", session.count(TestOutcome::Passed)),
        format!("{} failed", session.count(TestOutcome::Failed) + session.count(TestOutcome::Error)),
        format!("{} crashed", session.crashes.len()),
    ];
    for outcome in [TestOutcome::Skipped, TestOutcome::Xfailed, TestOutcome::Xpassed] {
        let n = session.count(outcome);
        if n > 0 {
            totals.push(format!("{n} {outcome}"));
        }
    }
    totals.push(format!("{not_run} not run"));
    let mode = session.mode.map(|m| m.to_string()).unwrap_or_else(|| "none".into());
    let _ = writeln!(s, "{}; runs used {}/{}; supervision: {}", totals.join(", "), session.runs.len(), max_runs, mode);
    if let Some(why) = &session.ptrace_refused {
        let _ = writeln!(s, "({why})");
    }
    if let Some(p) = crash_log.filter(|_| !session.crash_log_failed) {
        if !session.crashes.is_empty() {
            let _ = writeln!(s, "crash log: {}", p.display());
        }
    }
    s
}

/// A crash's forensics, one field a line (for `--reproduce`).
pub fn forensics(c: &Crash) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "first crash: {} {}", c.nodeid, c.reason());
    let d = c.death.detail();
    let fields: [(&str, Option<String>); 8] = [
        ("signal", c.death.signal().map(signals::name)),
        ("exit code", c.death.exit_code().map(|c| c.to_string())),
        ("si_code", d.and_then(|d| d.si_code.clone())),
        ("fault address", d.and_then(|d| d.addr).map(|a| format!("{a:#x}"))),
        ("sender pid", d.and_then(|d| d.sender_pid).map(|p| p.to_string())),
        ("location", d.and_then(|d| d.location.clone())),
        ("peak RSS", c.peak_rss_kb.map(|k| format!("{k} KiB"))),
        ("duration", Some(format!("{:.3}s", c.duration))),
    ];
    for (label, value) in fields {
        if let Some(v) = value {
            let _ = writeln!(s, "  {label}: {v}");
        }
    }
    if let Some(tb) = &c.traceback {
        let _ = writeln!(s, "  Python stacks:\n{tb}");
    }
    s
}
