//! ptrace supervision: descendants are followed as the observer's
//! [`Follow`] policy says (fork, vfork, clone, exec, exit), every signal
//! passes through unchanged, group-stops stay stops (`PTRACE_LISTEN`), and
//! each process's end is reported at its exit-event stop, while it still
//! exists and before its parent (an xdist controller, say) can see it die.
//! Children a policy lets go of are detached at their first stop, before
//! they run code of their own, so they can be traced by a test's debugger.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;

use super::pid::Target;
use super::spawn::Child;
use super::wait::{wait, Backoff, Wait};
use super::{forward, leftovers, proc, signals, Fault, Follow, Leftover, Mode, Observer, Options, Outcome};
use super::{ProcessEnd, Supervised};

const PTRACE_EVENT_STOP: i32 = 128;

/// `__WALL`: threads and non-SIGCHLD children too.
const WALL: libc::c_int = libc::__WALL;

/// `PTRACE_CONT`, delivering `sig` (0 for none). A tracee that is gone
/// (killed meanwhile) is not an error.
fn cont(pid: i32, sig: i32) {
    // SAFETY: PTRACE_CONT passes no pointer (addr 0, data is a signal
    // number); the kernel checks that `pid` is our stopped tracee and
    // fails with ESRCH otherwise.
    unsafe {
        libc::ptrace(libc::PTRACE_CONT, pid, 0, sig as libc::c_long);
    }
}

/// `PTRACE_LISTEN`: a tracee in group-stop stays stopped (as it would
/// untraced) but keeps reporting, so SIGCONT and SIGKILL are seen.
fn listen(pid: i32) {
    // SAFETY: PTRACE_LISTEN passes no pointer; the kernel checks that `pid`
    // is our seized tracee in group-stop and fails otherwise.
    unsafe {
        libc::ptrace(libc::PTRACE_LISTEN, pid, 0, 0);
    }
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

/// Per-thread state.
#[derive(Debug, Default)]
struct Tracee {
    /// Thread-group id, once known.
    tgid: Option<i32>,
    /// Followed only up to its exec ([`Follow::UntilExec`]).
    until_exec: bool,
    /// Its parent's fork/vfork event was seen (the parent's stop and the
    /// child's first stop come in either order).
    announced: bool,
}

struct Tracer<'a> {
    root: Pid,
    opts: &'a Options,
    observer: &'a mut dyn Observer,
    tracees: HashMap<i32, Tracee>,
    /// Fatal-signal details per thread group: the first delivery of a
    /// signal wins over later ones (faulthandler re-raising it).
    faults: HashMap<i32, Fault>,
    ended: HashSet<i32>,
    /// Threads seen past their first stop (a later event-stop is a
    /// group-stop or an interrupt, not the auto-attach stop).
    running: HashSet<i32>,
    /// Threads whose forks are no longer followed.
    unfollowed: HashSet<i32>,
    /// Children let go of at their first stop before their parent's fork
    /// event was seen (that event must not register them).
    let_go_early: HashSet<i32>,
    root_outcome: Option<Outcome>,
}

/// Supervises a seized child to the end.
pub fn supervise(child: Child, opts: &Options, observer: &mut dyn Observer) -> Result<Supervised> {
    forward::set_ticker(observer.tick_interval());
    super::become_subreaper();
    let mut t = Tracer {
        root: child.pid,
        opts,
        observer,
        tracees: HashMap::new(),
        faults: HashMap::new(),
        ended: HashSet::new(),
        // Seized without a stop: the root never has an auto-attach stop.
        running: HashSet::from([child.pid.as_raw()]),
        unfollowed: HashSet::new(),
        let_go_early: HashSet::new(),
        root_outcome: None,
    };
    t.tracees.insert(child.pid.as_raw(), Tracee { tgid: Some(child.pid.as_raw()), until_exec: false, announced: true });
    let result = t.follow_until_the_root_ends().map(|()| t.finish());
    forward::set_ticker(None);
    child.restore_terminal();
    let leftovers = result?;
    let outcome = t.root_outcome.unwrap_or(Outcome::Unknown);
    if outcome == Outcome::Exited(127) {
        if let Some(e) = child.exec_error() {
            return Err(crate::error::Error::exec_failed(&child.program, e).into());
        }
    }
    let interrupted = forward::first_signal();
    Ok(Supervised { outcome, mode: Mode::Ptrace, ptrace_refused: None, leftovers, interrupted })
}

impl Tracer<'_> {
    /// Handles stops until the command's own process is gone.
    fn follow_until_the_root_ends(&mut self) -> Result<()> {
        let tick = self.observer.tick_interval();
        let mut last_tick = Instant::now();
        while self.root_outcome.is_none() {
            super::act_on_signals(self.root.as_raw(), self.observer);
            if tick.is_some_and(|every| last_tick.elapsed() >= every) {
                last_tick = Instant::now();
                self.observer.tick();
            }
            match wait(-1, WALL) {
                Ok(status) => self.handle(status),
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => break,
                Err(e) => bail!("waitpid: {e}"),
            }
        }
        Ok(())
    }

    /// The command is done: gives the rest a moment, then lists (and kills
    /// or lets go of) the traced processes still running, then the untraced
    /// trees they and the processes let go of left.
    fn finish(&mut self) -> Vec<Leftover> {
        let root = self.root.as_raw();
        let deadline = Instant::now() + leftovers::GRACE;
        let mut backoff = Backoff::new();
        while Instant::now() < deadline {
            let live = self.live_processes();
            if live.is_empty() && leftovers::tree(root, &[]).is_empty() {
                break;
            }
            super::act_on_signals(root, self.observer);
            // Reaps orphans too (we are their subreaper).
            match wait(-1, WALL | libc::WNOHANG) {
                Ok(Wait::Nothing) => backoff.pause(),
                Ok(status) => self.handle(status),
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        let traced = self.live_processes();
        // The untraced trees below the traced leftovers are found first,
        // while their parent links still lead to them.
        let below = leftovers::tree(root, &traced);
        let mut out: Vec<Leftover> = below.iter().map(|&pid| Leftover { pid, cmdline: proc::cmdline(pid) }).collect();
        if self.opts.keep_leftovers {
            self.detach_all();
        } else {
            for &pid in &below {
                Target::process(pid).kill();
            }
            self.kill_all();
        }
        let untraced = leftovers::collect(root, &below, Duration::ZERO, self.opts.keep_leftovers);
        out.extend(untraced);
        out.sort_by_key(|l| l.pid);
        out.dedup_by_key(|l| l.pid);
        out
    }

    fn tgid_of(&mut self, tid: i32) -> i32 {
        if let Some(g) = self.tracees.get(&tid).and_then(|t| t.tgid) {
            return g;
        }
        let g = proc::tgid(tid).unwrap_or(tid);
        self.tracees.entry(tid).or_default().tgid = Some(g);
        g
    }

    fn live_processes(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .tracees
            .iter()
            .filter(|(tid, t)| t.tgid == Some(**tid) && !self.ended.contains(tid))
            .map(|(tid, _)| *tid)
            .collect();
        v.sort_unstable();
        v
    }

    /// SIGKILLs every traced process and lets their last stops pass until
    /// they are gone (2 s at most).
    fn kill_all(&mut self) {
        for pid in self.live_processes() {
            Target::process(pid).kill();
        }
        let until = Instant::now() + Duration::from_secs(2);
        let mut backoff = Backoff::new();
        while Instant::now() < until && !self.tracees.is_empty() {
            match wait(-1, WALL | libc::WNOHANG) {
                Ok(Wait::Nothing) => backoff.pause(),
                Ok(Wait::Event(pid, _, _)) | Ok(Wait::Stopped(pid, _)) => cont(pid, 0),
                Ok(Wait::Exited(pid, _)) | Ok(Wait::Signaled(pid, _, _)) => {
                    self.tracees.remove(&pid);
                }
                Ok(Wait::Other) => {}
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
    }

    /// Lets go of every traced thread (`--keep-leftovers`).
    fn detach_all(&mut self) {
        let tids: Vec<i32> = self.tracees.keys().copied().collect();
        for tid in tids {
            let pid = Pid::from_raw(tid);
            if ptrace::interrupt(pid).is_ok() {
                let _ = wait(tid, WALL);
                let _ = ptrace::detach(pid, None);
            }
        }
    }

    fn handle(&mut self, status: Wait) {
        match status {
            Wait::Exited(pid, code) => self.gone(pid, Outcome::Exited(code)),
            Wait::Signaled(pid, signal, core_dumped) => self.gone(pid, Outcome::Signaled { signal, core_dumped }),
            Wait::Event(pid, sig, event) => self.event(Pid::from_raw(pid), sig, event),
            Wait::Stopped(pid, sig) => self.signal_stop(Pid::from_raw(pid), sig),
            Wait::Nothing | Wait::Other => {}
        }
    }

    /// A traced thread is fully gone (reaped by us or auto-reaped).
    fn gone(&mut self, tid: i32, outcome: Outcome) {
        if tid == self.root.as_raw() {
            self.root_outcome = Some(outcome);
            if !self.ended.contains(&tid) {
                // No exit stop was seen (should not happen): report now.
                self.ended.insert(tid);
                let fault = self.faults.remove(&tid);
                self.observer.process_ended(&ProcessEnd { pid: tid, outcome, peak_rss_kb: None, fault });
            }
        }
        self.tracees.remove(&tid);
        self.running.remove(&tid);
        self.ended.remove(&tid);
    }

    fn event(&mut self, pid: Pid, sig: i32, event: i32) {
        match event {
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => self.on_fork(pid, event),
            libc::PTRACE_EVENT_EXIT => self.on_exit(pid),
            libc::PTRACE_EVENT_EXEC => self.on_exec(pid),
            PTRACE_EVENT_STOP => self.on_event_stop(pid, sig),
            _ => cont(pid.as_raw(), 0),
        }
    }

    /// The parent's fork/vfork/clone stop: registers the new thread or
    /// process, and stops following the forks of a thread whose process
    /// lets go of its children.
    fn on_fork(&mut self, pid: Pid, event: i32) {
        let tid = pid.as_raw();
        if let Ok(new) = ptrace::getevent(pid) {
            let new = new as i32;
            let parent_tgid = self.tgid_of(tid);
            if event == libc::PTRACE_EVENT_CLONE {
                let tgid = proc::tgid(new).unwrap_or(parent_tgid);
                self.tracees.entry(new).or_default().tgid = Some(tgid);
            } else {
                if !self.let_go_early.remove(&new) {
                    let entry = self.tracees.entry(new).or_default();
                    entry.tgid = Some(new);
                    entry.announced = true;
                }
                if !self.unfollowed.contains(&tid) && self.observer.follow(parent_tgid) == Follow::None {
                    // Its later forks cost no stops at all.
                    self.unfollowed.insert(tid);
                    let _ = ptrace::setoptions(pid, follow_no_forks());
                }
            }
        }
        cont(tid, 0);
    }

    /// The exit-event stop: the process still exists; its end is reported.
    fn on_exit(&mut self, pid: Pid) {
        let tid = pid.as_raw();
        let status = ptrace::getevent(pid).unwrap_or(0) as i32;
        let tgid = self.tgid_of(tid);
        if tgid == tid && !self.ended.contains(&tid) {
            self.ended.insert(tid);
            let outcome = Outcome::from_wait_status(status);
            let peak = proc::peak_rss_kb(tid);
            let fault = match outcome {
                Outcome::Signaled { signal, .. } => self
                    .faults
                    .remove(&tid)
                    .filter(|f| f.signal == signal)
                    .or(Some(Fault { signal, tid, ..Default::default() })),
                _ => {
                    self.faults.remove(&tid);
                    None
                }
            };
            self.observer.process_ended(&ProcessEnd { pid: tid, outcome, peak_rss_kb: peak, fault });
        }
        cont(tid, 0);
    }

    /// The exec stop: a process followed only up to its exec is let go of
    /// unless it now runs a program named in `keep_after_exec`.
    fn on_exec(&mut self, pid: Pid) {
        let tid = pid.as_raw();
        if self.tracees.get(&tid).is_some_and(|t| t.until_exec) {
            let keep = proc::exe_name(tid)
                .map_or(true, |n| self.opts.keep_after_exec.iter().any(|k| n.starts_with(k.as_str())));
            if !keep {
                self.let_go(pid);
                return;
            }
            self.tracees.entry(tid).or_default().until_exec = false;
        }
        cont(tid, 0);
    }

    /// A `PTRACE_EVENT_STOP`: a new thread's or process's first stop, a
    /// group-stop (stop signal), or an interrupt/notification (SIGTRAP).
    fn on_event_stop(&mut self, pid: Pid, sig: i32) {
        let tid = pid.as_raw();
        if self.running.insert(tid) && self.first_stop(pid) {
            return;
        }
        if is_stop_signal(sig) {
            // Group-stop: stays stopped, as it would untraced.
            listen(tid);
        } else {
            cont(tid, 0);
        }
    }

    /// A new tracee's first stop, before it ran any code of its own: a new
    /// process whose parent lets go of its children is let go of here (true
    /// then); one followed up to its exec is marked.
    fn first_stop(&mut self, pid: Pid) -> bool {
        let tid = pid.as_raw();
        let tgid = self.tgid_of(tid);
        if tgid != tid {
            return false;
        }
        let Some(parent) = proc::stat(tid).map(|s| s.ppid) else { return false };
        match self.observer.follow(parent) {
            Follow::All => false,
            Follow::UntilExec => {
                self.tracees.entry(tid).or_default().until_exec = true;
                false
            }
            Follow::None => {
                if !self.tracees.get(&tid).is_some_and(|t| t.announced) {
                    // The parent's fork event is still to come: it must
                    // not register this child again.
                    self.let_go_early.insert(tid);
                }
                self.let_go(pid);
                true
            }
        }
    }

    /// Detaches a stopped process: it runs on untraced (a group-stop it is
    /// in stays in effect). What it leaves running is still found at the end.
    fn let_go(&mut self, pid: Pid) {
        let tid = pid.as_raw();
        if ptrace::detach(pid, None).is_err() {
            cont(tid, 0);
            return;
        }
        self.tracees.remove(&tid);
        self.running.remove(&tid);
    }

    /// A signal is about to be delivered: note fatal-signal details, then
    /// pass the signal on unchanged.
    fn signal_stop(&mut self, pid: Pid, signo: i32) {
        let tid = pid.as_raw();
        self.running.insert(tid);
        if is_possibly_fatal(signo) {
            let tgid = self.tgid_of(tid);
            if let Ok(info) = ptrace::getsiginfo(pid) {
                let code = info.si_code;
                let sent = signals::is_sent(code);
                let mut fault = Fault { signal: signo, si_code: code, tid, ..Default::default() };
                if sent {
                    // SAFETY: the union field read by si_pid() is the one the kernel
                    // fills for kill/tkill/sigqueue (si_code <= 0, checked above).
                    fault.sender_pid = Some(unsafe { info.si_pid() });
                } else if signals::is_fault(signo) {
                    // SAFETY: the kernel fills si_addr for fault signals raised by
                    // the CPU (si_code > 0 and a fault signal, checked above).
                    fault.addr = Some(unsafe { info.si_addr() } as u64);
                    fault.ip = instruction_pointer(pid);
                    fault.location = fault.ip.and_then(|ip| location_of(tgid, ip));
                }
                // The first delivery is the cause; faulthandler re-raising
                // the same signal afterwards (SI_TKILL from itself) is not.
                let keep_old = self.faults.get(&tgid).is_some_and(|old| old.signal == signo);
                if !keep_old {
                    self.faults.insert(tgid, fault);
                }
            }
        }
        cont(tid, signo);
    }
}

fn is_possibly_fatal(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGWINCH
            | libc::SIGURG
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    )
}

/// The trace options without fork and vfork following.
fn follow_no_forks() -> ptrace::Options {
    super::spawn::trace_options() - ptrace::Options::PTRACE_O_TRACEFORK - ptrace::Options::PTRACE_O_TRACEVFORK
}

#[cfg(target_arch = "x86_64")]
fn instruction_pointer(pid: Pid) -> Option<u64> {
    ptrace::getregs(pid).ok().map(|r| r.rip)
}

#[cfg(not(target_arch = "x86_64"))]
fn instruction_pointer(_pid: Pid) -> Option<u64> {
    None
}

/// `libname+0xoffset` for an address, from `/proc/PID/maps`.
pub fn location_of(pid: i32, addr: u64) -> Option<String> {
    use procfs::process::MMapPath;
    let maps = procfs::process::Process::new(pid).ok()?.maps().ok()?;
    let m = maps.iter().find(|m| m.address.0 <= addr && addr < m.address.1)?;
    let name = match &m.pathname {
        MMapPath::Path(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        MMapPath::Heap => "[heap]".into(),
        MMapPath::Stack => "[stack]".into(),
        MMapPath::Anonymous => "[anon]".into(),
        other => format!("{other:?}"),
    };
    Some(format!("{name}+{:#x}", addr - m.address.0 + m.offset))
}
