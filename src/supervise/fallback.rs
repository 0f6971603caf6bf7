//! Supervision without ptrace: waitpid on the direct child, and `/proc`
//! scans of the processes the observer watches (the pytest processes that
//! registered a journal). A watched process that vanishes is reported with
//! [`Outcome::Unknown`], or with its wait status when the scan caught it as
//! a zombie before its parent reaped it.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::proc;
use super::spawn::Child;
use super::{forward, Leftover, Mode, Observer, Options, Outcome, ProcessEnd, Supervised};

/// How long processes still running when the command ended get to exit
/// before they count as leftovers.
pub const LEFTOVER_GRACE: Duration = Duration::from_millis(300);

/// Processes still in the command's process group, or orphaned to us (we
/// are their subreaper), once the command ended: after a short grace for
/// processes on their way out, they are listed and, unless `keep`, killed.
pub(super) fn collect_leftovers(root: i32, keep: bool) -> Vec<Leftover> {
    let mut remaining = descendants_and_group(root);
    let grace_end = std::time::Instant::now() + LEFTOVER_GRACE;
    while !remaining.is_empty() && std::time::Instant::now() < grace_end {
        std::thread::sleep(Duration::from_millis(10));
        reap_orphans();
        remaining = descendants_and_group(root);
    }
    let mut leftovers: Vec<Leftover> =
        remaining.into_iter().map(|pid| Leftover { pid, cmdline: super::proc::cmdline(pid) }).collect();
    leftovers.sort_by_key(|l| l.pid);
    if !keep && !leftovers.is_empty() {
        for l in &leftovers {
            let _ = kill(Pid::from_raw(l.pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reap_orphans();
    leftovers
}

/// Reaps descendants orphaned to us (we are their subreaper).
fn reap_orphans() {
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// How often watched processes are checked.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(50);

/// Supervises an untraced child to the end.
pub fn supervise(
    child: Child,
    opts: &Options,
    observer: &mut dyn Observer,
    refused: Option<String>,
) -> Result<Supervised> {
    // Orphaned descendants become ours, so they can be found and reaped.
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let every = observer.tick_interval().map_or(SCAN_INTERVAL, |t| t.min(SCAN_INTERVAL));
    forward::set_ticker(Some(every));
    let mut ended: HashSet<i32> = HashSet::new();
    let mut interrupted = None;
    let root = child.pid;
    let outcome = loop {
        if let Some(sig) = forward::take_pending() {
            interrupted = Some(sig);
            observer.interrupted(sig);
            let _ = killpg(root, Signal::try_from(sig).ok());
        }
        match waitpid(root, None) {
            Ok(WaitStatus::Exited(_, code)) => break Outcome::Exited(code),
            Ok(WaitStatus::Signaled(_, sig, core)) => {
                break Outcome::Signaled { signal: sig as i32, core_dumped: core }
            }
            Ok(_) => {}
            Err(Errno::EINTR) => {
                scan(observer, &mut ended, root.as_raw());
                observer.tick();
            }
            Err(e) => bail!("waitpid: {e}"),
        }
    };
    forward::set_ticker(None);
    if !ended.contains(&root.as_raw()) {
        ended.insert(root.as_raw());
        observer.process_ended(&ProcessEnd { pid: root.as_raw(), outcome, peak_rss_kb: None, fault: None });
    }
    scan(observer, &mut ended, root.as_raw());
    child.restore_terminal();
    if outcome == Outcome::Exited(127) {
        if let Some(e) = child.exec_error() {
            return Err(crate::error::Error::exec_failed(&child.program, e).into());
        }
    }
    let leftovers = collect_leftovers(root.as_raw(), opts.keep_leftovers);
    Ok(Supervised { outcome, mode: Mode::NoPtrace, ptrace_refused: refused, leftovers, interrupted })
}

fn scan(observer: &mut dyn Observer, ended: &mut HashSet<i32>, root: i32) {
    for pid in observer.watched_pids() {
        if pid == root || ended.contains(&pid) {
            continue;
        }
        if let Some(outcome) = state_of(pid) {
            ended.insert(pid);
            observer.process_ended(&ProcessEnd { pid, outcome, peak_rss_kb: None, fault: None });
        }
    }
}

/// `None` while the process runs; its outcome once it is a zombie or gone.
fn state_of(pid: i32) -> Option<Outcome> {
    match proc::stat(pid) {
        None => Some(Outcome::Unknown),
        Some(st) if st.is_dead() => Some(st.exit_code.map_or(Outcome::Unknown, Outcome::from_wait_status)),
        Some(_) => None,
    }
}

/// Live processes in the root's process group or with us as their parent.
fn descendants_and_group(root: i32) -> Vec<i32> {
    let me = std::process::id() as i32;
    proc::all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| proc::stat(pid).is_some_and(|st| !st.is_dead() && (st.pgrp == root || st.ppid == me)))
        .collect()
}
