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
        if r.oom_suspected == Some(true) {
            line.push_str("  (OOM killer)");
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

/// A crash's forensics, one field a line (for `--reproduce`).
pub fn forensics(r: &crate::record::CrashRecord) -> String {
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
