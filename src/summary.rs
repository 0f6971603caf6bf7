//! The end-of-run summary on stderr: one line per crash, then totals.

use std::fmt::Write;

use crate::run::Session;

/// Renders the summary (without colors).
pub fn render(session: &Session, max_runs: u32, crash_log: Option<&std::path::Path>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n=== pytest-abort summary ===");
    for r in &session.records {
        let id = if r.nodeid.is_empty() { format!("<{}>", r.phase) } else { r.nodeid.clone() };
        let mut line = format!(
            "CRASHED {id}  {how}  worker={w}  {dur:.3}s  run {run}",
            how = r.how(),
            w = r.worker,
            dur = r.duration,
            run = r.run
        );
        if let Some(loc) = &r.location {
            let _ = write!(line, "  at {loc}");
        }
        if let Some(rc) = &r.recheck {
            let _ = write!(line, "  crash: {rc}");
        }
        let _ = writeln!(s, "{line}");
    }
    for l in &session.leftovers {
        let _ = writeln!(s, "LEFTOVER pid {} {}", l.pid, l.cmdline);
    }
    let not_run = session.not_run().len();
    let mut totals = vec![
        format!("{} passed", session.count("passed")),
        format!("{} failed", session.count("failed") + session.count("error")),
        format!("{} crashed", session.records.len()),
    ];
    for (label, key) in [("skipped", "skipped"), ("xfailed", "xfailed"), ("xpassed", "xpassed")] {
        let n = session.count(key);
        if n > 0 {
            totals.push(format!("{n} {label}"));
        }
    }
    totals.push(format!("{not_run} not run"));
    let mode = session.mode.map(|m| m.to_string()).unwrap_or_else(|| "none".into());
    let _ = writeln!(s, "{}; runs used {}/{}; supervision: {}", totals.join(", "), session.runs.len(), max_runs, mode);
    if let Some(why) = &session.ptrace_refused {
        let _ = writeln!(s, "({why})");
    }
    if let Some(p) = crash_log {
        if !session.records.is_empty() {
            let _ = writeln!(s, "crash log: {}", p.display());
        }
    }
    s
}
