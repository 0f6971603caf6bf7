//! Supervision without ptrace: waitpid on the direct child, and `/proc`
//! scans of the processes the observer watches (the pytest processes that
//! registered a journal). A watched process that vanishes is reported with
//! [`Outcome::Unknown`], or with its wait status when the scan caught it as
//! a zombie before its parent reaped it.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Result};
use nix::errno::Errno;

use super::proc;
use super::spawn::Child;
use super::wait::{wait, Wait};
use super::{forward, leftovers, Mode, Observer, Options, Outcome, ProcessEnd, Supervised};

/// How often watched processes are checked.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(50);

/// Supervises an untraced child to the end.
pub fn supervise(
    child: Child,
    opts: &Options,
    observer: &mut dyn Observer,
    refused: Option<String>,
) -> Result<Supervised> {
    super::become_subreaper();
    let every = observer.tick_interval().map_or(SCAN_INTERVAL, |t| t.min(SCAN_INTERVAL));
    forward::set_ticker(Some(every));
    let mut ended: HashSet<i32> = HashSet::new();
    let root = child.pid.as_raw();
    let outcome = loop {
        super::act_on_signals(root, observer);
        match wait(root, 0) {
            Ok(Wait::Exited(_, code)) => break Outcome::Exited(code),
            Ok(Wait::Signaled(_, signal, core_dumped)) => break Outcome::Signaled { signal, core_dumped },
            Ok(_) => {}
            Err(Errno::EINTR) => {
                scan(observer, &mut ended, root);
                observer.tick();
            }
            Err(e) => bail!("waitpid on the command (pid {root}): {e}"),
        }
    };
    forward::set_ticker(None);
    if ended.insert(root) {
        observer.process_ended(&ProcessEnd { pid: root, outcome, peak_rss_kb: None, fault: None });
    }
    scan(observer, &mut ended, root);
    child.restore_terminal();
    if outcome == Outcome::Exited(127) {
        if let Some(e) = child.exec_error() {
            return Err(crate::error::Error::exec_failed(&child.program, e).into());
        }
    }
    let leftovers = leftovers::collect(root, &[], leftovers::GRACE, opts.keep_leftovers);
    let interrupted = forward::first_signal();
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
