//! Attribution: a process end, plus the marker and journal of that process,
//! becomes a crash record naming the test (or the collection file, or the
//! session stage) it died in. Knows nothing of report formats.

use std::path::PathBuf;

use crate::journal::ProcessJournal;
use crate::marker::{self, Marker};
use crate::record::{self, CrashKind, CrashRecord};
use crate::supervise::{signals, Outcome, ProcessEnd};

/// Where one run's files are.
#[derive(Debug, Clone)]
pub struct Context {
    /// The wrapper's state folder (journals).
    pub state_dir: PathBuf,
    /// The folder of marker files.
    pub marker_dir: PathBuf,
    /// 1-based run number.
    pub run: u32,
}

/// What attribution concluded about one process end.
#[derive(Debug, Default)]
pub struct Attribution {
    /// The record, when the end was a crash.
    pub record: Option<CrashRecord>,
    /// Problems worth one line each (a garbage marker, say).
    pub warnings: Vec<String>,
}

/// Attributes one process end. `interrupted` is the signal the wrapper
/// forwarded, if any: processes that die of it are not crashes.
pub fn attribute(ctx: &Context, end: &ProcessEnd, interrupted: Option<i32>) -> Attribution {
    let mut out = Attribution::default();
    let Some(journal) = ProcessJournal::read_head_and_tail(&ctx.state_dir, ctx.run, end.pid) else {
        return out; // not a pytest process
    };
    let marker_file = marker::marker_path(&ctx.marker_dir, &journal.worker);
    let marker = match marker::read_marker(&marker_file) {
        Ok(m) => m.filter(|m| m.is_running() && m.pid == Some(end.pid)),
        Err(e) => {
            out.warnings.push(format!("{}: {e}", marker_file.display()));
            None
        }
    };
    let fatal_fault =
        matches!(end.outcome, Outcome::Signaled { signal, .. } if signals::is_fault(signal) || signal == libc::SIGABRT);
    if interrupted.is_some() && !fatal_fault {
        return out; // it went down with the wrapper's forwarded signal
    }
    let is_crash = match (&marker, end.outcome) {
        (Some(_), _) => true,
        (None, Outcome::Signaled { .. }) => true,
        (None, _) => !journal.ended_normally(),
    };
    if !is_crash {
        return out;
    }
    out.record = Some(build(ctx, end, &journal, marker.as_ref()));
    out
}

fn build(ctx: &Context, end: &ProcessEnd, journal: &ProcessJournal, marker: Option<&Marker>) -> CrashRecord {
    let now = record::now_iso();
    let (kind, signal, exit_code, core) = match end.outcome {
        Outcome::Signaled { signal, core_dumped } => (CrashKind::Crash, Some(signal), None, core_dumped),
        Outcome::Exited(code) => (CrashKind::Exit, None, Some(code), false),
        Outcome::Unknown => (CrashKind::Crash, None, None, false),
    };
    let (nodeid, test_name, phase) = match marker {
        Some(m) => (m.nodeid.clone(), m.test_name.clone(), m.phase.clone().unwrap_or_else(|| "call".into())),
        None => match journal.stage() {
            "collection" => (journal.collecting().unwrap_or("").to_string(), String::new(), "collection".into()),
            "session-start" => (String::new(), String::new(), "session-start".into()),
            "session-finish" => (String::new(), String::new(), "session-finish".into()),
            _ => (String::new(), String::new(), "between-tests".into()),
        },
    };
    let fault = end.fault.as_ref();
    let mut rec = CrashRecord {
        test_class: record::test_class_of(&nodeid),
        test_name,
        crash_time: now.clone(),
        duration: marker.and_then(Marker::elapsed_secs).unwrap_or(0.0),
        gpu_id: marker.map(|m| m.gpu_id.clone()).filter(|g| !g.is_empty()).unwrap_or_else(record::gpu_id_from_env),
        pid: end.pid.to_string(),
        source: if journal.worker == "main" { "runner".into() } else { format!("xdist:{}", journal.worker) },
        logged_at: now,
        signal,
        signal_name: signal.map(signals::name),
        exit_code,
        core_dumped: core,
        kind,
        worker: journal.worker.clone(),
        run: ctx.run,
        phase,
        si_code: fault
            .filter(|f| f.si_code != 0 || f.sender_pid.is_some())
            .map(|f| signals::si_code_name(f.signal, f.si_code)),
        fault_addr: fault.and_then(|f| f.addr).map(|a| format!("{a:#x}")),
        fault_tid: fault.filter(|f| f.tid != 0).map(|f| f.tid),
        sender_pid: fault.and_then(|f| f.sender_pid),
        location: fault.and_then(|f| f.location.clone()),
        peak_rss_kb: end.peak_rss_kb,
        nodeid,
        ..Default::default()
    };
    rec.reason = reason(&rec, None);
    rec
}

/// Why the watchdog killed a process: the limit in seconds and `test` or
/// `session`.
pub type TimeoutCause<'a> = (f64, &'a str);

/// The record's `reason` in words, from its fields: "crashed with SIGSEGV
/// (segmentation fault) during call", "exited with code 3 during collection
/// of t.py", "timed out after 5s (per-test limit): ...".
pub fn reason(rec: &CrashRecord, timeout: Option<TimeoutCause>) -> String {
    let how = match (timeout, rec.signal, rec.exit_code) {
        (Some((limit, scope)), _, _) => {
            let flag = if scope == "test" { "per-test limit" } else { "--timeout for the session" };
            format!("timed out after {limit}s ({flag}): Python stacks dumped, then killed")
        }
        (None, Some(s), _) => format!("crashed with {} ({})", signals::name(s), signals::describe(s)),
        (None, None, Some(c)) => format!("exited with code {c}"),
        _ => "died (how is unknown without ptrace)".to_string(),
    };
    let where_ = match rec.phase.as_str() {
        "collection" => format!("during collection of {}", rec.nodeid),
        "session-start" => "at session start".to_string(),
        "session-finish" => "at session finish".to_string(),
        "between-tests" => "between tests".to_string(),
        phase => format!("during {phase}"),
    };
    let oom = if rec.oom_suspected == Some(true) { " (the cgroup's OOM killer fired)" } else { "" };
    format!("{how} {where_}{oom}")
}

/// True when a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    crate::supervise::proc::alive(pid)
}
