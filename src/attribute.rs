//! Attribution: a process end, plus the marker and journal of that process,
//! becomes a typed [`Crash`] naming the test (or the collection file, or the
//! session stage) it died in. Knows nothing of report formats.

use std::path::PathBuf;

use crate::forensics;
use crate::journal::{Event, ProcessJournal};
use crate::marker::{self, Marker};
use crate::model::{Crash, Death, Phase, Worker};
use crate::record;
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
    /// The crash, when the end was one.
    pub crash: Option<Crash>,
    /// Problems worth one line each (a garbage marker, say).
    pub warnings: Vec<String>,
}

/// Attributes one process end. `interrupted` is the signal the wrapper
/// forwarded, if any: processes that die of it are not crashes.
pub fn attribute(ctx: &Context, end: &ProcessEnd, interrupted: Option<i32>) -> Attribution {
    let mut out = Attribution::default();
    let Some(journal) = ProcessJournal::read_head_and_tail(&ctx.state_dir, ctx.run, end.pid) else {
        out.crash = startup_crash(ctx, end, interrupted);
        return out;
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
        // Outside any test, after a test poisoned the process: its end (a
        // GPU runtime that aborts at exit) is the device error's, recorded
        // as that.
        (None, _) if journal.poisoned() => false,
        (None, Outcome::Signaled { .. }) => true,
        (None, _) => !journal.ended_normally(),
    };
    if !is_crash {
        return out;
    }
    out.crash = Some(build(ctx, end, &journal, marker.as_ref()));
    out
}

fn build(ctx: &Context, end: &ProcessEnd, journal: &ProcessJournal, marker: Option<&Marker>) -> Crash {
    let (nodeid, test_name, phase) = match marker {
        Some(m) => {
            let phase = m.phase.as_deref().and_then(|p| p.parse().ok()).unwrap_or(Phase::Call);
            (m.nodeid.clone(), m.test_name.clone(), phase)
        }
        None => match journal.stage() {
            Phase::Collection => (journal.collecting().unwrap_or("").to_string(), String::new(), Phase::Collection),
            stage => (String::new(), String::new(), stage),
        },
    };
    let death = Death::from_end(end.outcome, end.fault.as_ref());
    Crash {
        nodeid,
        test_name,
        duration: marker.and_then(Marker::elapsed_secs).unwrap_or(0.0),
        gpu_id: record::gpu_id_or_env(marker.map_or("", |m| m.gpu_id.as_str())),
        peak_rss_kb: end.peak_rss_kb,
        ..Crash::new(phase, death, end.pid, Worker::from_id(&journal.worker), ctx.run)
    }
}

/// The device error a process's journal reports, if any: the test whose
/// failure matched a poison pattern, after which the process ran no
/// further test. Not a death: its record (kind `device-error`) says why
/// the tests after it ran in another process.
pub fn device_error(ctx: &Context, journal: &ProcessJournal) -> Option<Crash> {
    let (nodeid, when, matched, gpu_id) = journal.events.iter().find_map(|e| match e {
        Event::Poisoned { nodeid, when, matched, gpu_id } => Some((nodeid, when, matched, gpu_id)),
        _ => None,
    })?;
    // The test's own `done` line comes just before: its duration.
    let duration = journal.events.iter().rev().find_map(|e| match e {
        Event::Done(d) if d.nodeid == *nodeid => Some(d.duration),
        _ => None,
    });
    let phase = when.parse().ok().filter(|p: &Phase| p.is_test()).unwrap_or(Phase::Call);
    let death = Death::DeviceError { matched: matched.clone() };
    Some(Crash {
        nodeid: nodeid.clone(),
        test_name: record::split_nodeid(nodeid).last().map(|n| n.to_string()).unwrap_or_default(),
        duration: duration.unwrap_or(0.0),
        gpu_id: record::gpu_id_or_env(gpu_id),
        ..Crash::new(phase, death, journal.pid, Worker::from_id(&journal.worker), ctx.run)
    })
}

/// A process without a journal that the plugin marked on import as a pytest
/// process of this run (and its worker): one that died of a signal before
/// the plugin was configured crashed at startup, in the module its stack
/// was importing (a conftest, say). Any other end is not a crash.
fn startup_crash(ctx: &Context, end: &ProcessEnd, interrupted: Option<i32>) -> Option<Crash> {
    let worker = forensics::startup_worker(&ctx.state_dir, ctx.run, end.pid)?;
    let traceback = forensics::read_traceback(&ctx.state_dir, ctx.run, end.pid);
    let signal = match end.outcome {
        Outcome::Signaled { signal, .. } => signal,
        // Without ptrace a worker's status may be unknown: faulthandler's
        // dump names the fatal signal.
        Outcome::Unknown => traceback.as_deref().and_then(forensics::signal_from_traceback)?,
        _ => return None,
    };
    if interrupted.is_some() && !(signals::is_fault(signal) || signal == libc::SIGABRT) {
        return None; // it went down with the wrapper's forwarded signal
    }
    let journal = ProcessJournal { worker, ..ProcessJournal::default() };
    let mut crash = build(ctx, end, &journal, None);
    crash.nodeid = traceback.as_deref().and_then(forensics::module_being_imported).unwrap_or_default();
    crash.phase = Phase::Startup;
    Some(crash)
}

/// True when a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    crate::supervise::proc::alive(pid)
}
