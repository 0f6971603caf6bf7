//! ptrace supervision: every descendant is followed (fork, vfork, clone,
//! exec, exit), every signal passes through unchanged, and each process's
//! end is reported at its exit-event stop, while it still exists and before
//! its parent (an xdist controller, say) can see it die.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::spawn::Child;
use super::{forward, signals, Fault, Leftover, Mode, Observer, Options, Outcome, ProcessEnd, Supervised};

const PTRACE_EVENT_STOP: i32 = 128;

/// A decoded wait status. Signals are raw numbers: real-time signals (the
/// dump signal, say) have no `nix::Signal` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// WNOHANG and nothing to report.
    Nothing,
    Exited(i32, i32),
    Signaled(i32, i32, bool),
    /// A ptrace event stop: pid, signal, event.
    Event(i32, i32, i32),
    /// A signal-delivery stop: pid, signal.
    Stopped(i32, i32),
    Other,
}

/// `waitpid(pid, __WALL [| WNOHANG])`.
fn wait(pid: i32, nohang: bool) -> Result<Wait, Errno> {
    let mut status = 0;
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: waitpid with a valid out pointer.
    let got = unsafe { libc::waitpid(pid, &mut status, flags) };
    if got < 0 {
        return Err(Errno::last());
    }
    if got == 0 {
        return Ok(Wait::Nothing);
    }
    Ok(if libc::WIFEXITED(status) {
        Wait::Exited(got, libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Wait::Signaled(got, libc::WTERMSIG(status), libc::WCOREDUMP(status))
    } else if libc::WIFSTOPPED(status) {
        let sig = libc::WSTOPSIG(status);
        match status >> 16 {
            0 => Wait::Stopped(got, sig),
            event => Wait::Event(got, sig, event),
        }
    } else {
        Wait::Other
    })
}

/// `PTRACE_CONT`, delivering `sig` (0 for none).
fn cont(pid: i32, sig: i32) {
    // SAFETY: PTRACE_CONT on a stopped tracee; errors (gone) are ignored.
    unsafe {
        libc::ptrace(libc::PTRACE_CONT, pid, 0, sig as libc::c_long);
    }
}

/// Per-thread state.
#[derive(Debug, Default)]
struct Tracee {
    /// Thread-group id, once known.
    tgid: Option<i32>,
    /// The process that forked it (fork/vfork children).
    parent: Option<i32>,
}

struct Tracer<'a> {
    root: Pid,
    observer: &'a mut dyn Observer,
    tracees: HashMap<i32, Tracee>,
    /// Fatal-signal details per thread group: the first delivery of a
    /// signal wins over later ones (faulthandler re-raising it).
    faults: HashMap<i32, Fault>,
    ended: HashSet<i32>,
    /// Threads seen past their first stop (so a later event-stop with a
    /// stop signal is a group-stop, not the auto-attach stop).
    running: HashSet<i32>,
    /// Threads of test-running pytest processes whose forks are no longer
    /// followed.
    unfollowed: HashSet<i32>,
    /// Whether a subprocess was detached at its exec.
    detached_any: bool,
    root_outcome: Option<Outcome>,
    interrupted: Option<i32>,
}

/// Supervises a seized child to the end.
pub fn supervise(child: Child, opts: &Options, observer: &mut dyn Observer) -> Result<Supervised> {
    let tick = observer.tick_interval();
    forward::set_ticker(tick);
    // Orphans (of detached subprocesses, say) become ours, to be found and reaped.
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let mut t = Tracer {
        root: child.pid,
        observer,
        tracees: HashMap::new(),
        faults: HashMap::new(),
        ended: HashSet::new(),
        running: HashSet::new(),
        unfollowed: HashSet::new(),
        detached_any: false,
        root_outcome: None,
        interrupted: None,
    };
    t.tracees.insert(child.pid.as_raw(), Tracee { tgid: Some(child.pid.as_raw()), parent: None });
    let mut last_tick = Instant::now();
    let mut leftovers = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        if let Some(sig) = forward::take_pending() {
            t.interrupted = Some(sig);
            t.observer.interrupted(sig);
            let _ = killpg(t.root, Signal::try_from(sig).ok());
        }
        if let Some(every) = tick {
            if last_tick.elapsed() >= every {
                last_tick = Instant::now();
                t.observer.tick();
            }
        }
        if t.root_outcome.is_some() {
            // The command is done: give the rest a moment, then treat what
            // is still running as leftovers.
            let d = *deadline.get_or_insert_with(|| Instant::now() + super::fallback::LEFTOVER_GRACE);
            if t.live_processes().is_empty() {
                break;
            }
            if Instant::now() >= d {
                leftovers = t
                    .live_processes()
                    .into_iter()
                    .map(|pid| Leftover { pid, cmdline: super::proc::cmdline(pid) })
                    .collect();
                if opts.keep_leftovers {
                    t.detach_all();
                } else {
                    t.kill_all();
                }
                break;
            }
            match wait(-1, true) {
                Ok(Wait::Nothing) => std::thread::sleep(Duration::from_millis(5)),
                Ok(status) => t.handle(status),
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
            continue;
        }
        match wait(-1, false) {
            Ok(status) => t.handle(status),
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => break,
            Err(e) => bail!("waitpid: {e}"),
        }
    }
    forward::set_ticker(None);
    child.restore_terminal();
    // Untraced processes left behind (by subprocesses no longer followed):
    // only possible when something stopped being followed.
    if t.root_outcome.is_some() && (t.detached_any || !t.unfollowed.is_empty()) {
        let traced: HashSet<i32> = leftovers.iter().map(|l: &Leftover| l.pid).collect();
        leftovers.extend(
            super::fallback::collect_leftovers(t.root.as_raw(), opts.keep_leftovers)
                .into_iter()
                .filter(|l| !traced.contains(&l.pid)),
        );
    }
    let outcome = t.root_outcome.unwrap_or(Outcome::Unknown);
    if outcome == Outcome::Exited(127) {
        if let Some(e) = child.exec_error() {
            return Err(crate::error::Error::exec_failed(&child.program, e).into());
        }
    }
    Ok(Supervised { outcome, mode: Mode::Ptrace, ptrace_refused: None, leftovers, interrupted: t.interrupted })
}

impl Tracer<'_> {
    fn tgid_of(&mut self, tid: i32) -> i32 {
        if let Some(g) = self.tracees.get(&tid).and_then(|t| t.tgid) {
            return g;
        }
        let g = super::proc::tgid(tid).unwrap_or(tid);
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

    fn kill_all(&mut self) {
        for pid in self.live_processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            match wait(-1, true) {
                Ok(Wait::Nothing) => std::thread::sleep(Duration::from_millis(5)),
                Ok(Wait::Event(pid, _, _)) | Ok(Wait::Stopped(pid, _)) => cont(pid, 0),
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
    }

    fn detach_all(&mut self) {
        let tids: Vec<i32> = self.tracees.keys().copied().collect();
        for tid in tids {
            let pid = Pid::from_raw(tid);
            if ptrace::interrupt(pid).is_ok() {
                let _ = wait(tid, false);
                let _ = ptrace::detach(pid, None);
            }
        }
    }

    fn handle(&mut self, status: Wait) {
        match status {
            Wait::Exited(pid, code) => self.gone(Pid::from_raw(pid), Outcome::Exited(code)),
            Wait::Signaled(pid, sig, core) => {
                self.gone(Pid::from_raw(pid), Outcome::Signaled { signal: sig, core_dumped: core })
            }
            Wait::Event(pid, sig, event) => self.event(Pid::from_raw(pid), sig, event),
            Wait::Stopped(pid, sig) => self.signal_stop(Pid::from_raw(pid), sig),
            Wait::Nothing | Wait::Other => {}
        }
    }

    /// A traced thread is fully gone (reaped by us or auto-reaped).
    fn gone(&mut self, pid: Pid, outcome: Outcome) {
        let tid = pid.as_raw();
        if pid == self.root {
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
        let tid = pid.as_raw();
        match event {
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                if let Ok(new) = ptrace::getevent(pid) {
                    let parent_tgid = self.tgid_of(tid);
                    let entry = self.tracees.entry(new as i32).or_default();
                    if event == libc::PTRACE_EVENT_CLONE {
                        entry.tgid = Some(super::proc::tgid(new as i32).unwrap_or(parent_tgid));
                    } else {
                        entry.tgid = Some(new as i32);
                        entry.parent = Some(parent_tgid);
                        // A pytest process that runs tests starts nothing
                        // but tests' own subprocesses: stop following this
                        // thread's forks (the one just made is still
                        // followed up to its exec), so they cost no stops.
                        if !self.unfollowed.contains(&tid) && self.observer.runs_tests(parent_tgid) {
                            self.unfollowed.insert(tid);
                            let _ = ptrace::setoptions(pid, follow_no_forks());
                        }
                    }
                }
                cont(tid, 0);
            }
            libc::PTRACE_EVENT_EXIT => {
                let status = ptrace::getevent(pid).unwrap_or(0) as i32;
                let tgid = self.tgid_of(tid);
                if tgid == tid && !self.ended.contains(&tid) {
                    self.ended.insert(tid);
                    let outcome = Outcome::from_wait_status(status);
                    let peak = super::proc::peak_rss_kb(tid);
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
            libc::PTRACE_EVENT_EXEC => {
                // A test's own subprocess that is not Python (a compiler, a
                // shell tool) can never be a pytest process: stop following
                // it, so it costs no further stops. Leftovers among such
                // processes are still found through /proc at the end.
                let parent = self.tracees.get(&tid).and_then(|t| t.parent);
                if parent.is_some_and(|p| self.observer.is_pytest_process(p))
                    && !runs_python(tid)
                    && ptrace::detach(pid, None).is_ok()
                {
                    self.tracees.remove(&tid);
                    self.running.remove(&tid);
                    self.detached_any = true;
                    return;
                }
                cont(tid, 0);
            }
            PTRACE_EVENT_STOP => {
                let group_stop = self.running.contains(&tid)
                    && matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
                    && ptrace::getsiginfo(pid).is_err();
                if group_stop {
                    // Group-stop: stay stopped, but keep reporting.
                    // SAFETY: PTRACE_LISTEN on a tracee in group-stop.
                    unsafe {
                        libc::ptrace(libc::PTRACE_LISTEN, tid, 0, 0);
                    }
                } else {
                    self.tracees.entry(tid).or_default();
                    self.running.insert(tid);
                    cont(tid, 0);
                }
            }
            _ => {
                cont(tid, 0);
            }
        }
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
                    // SAFETY: si_pid is valid for signals sent by kill/tkill.
                    fault.sender_pid = Some(unsafe { info.si_pid() });
                } else if signals::is_fault(signo) {
                    // SAFETY: si_addr is valid for fault signals.
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

/// True when the process runs a Python interpreter (`python3.11`, `pypy3`),
/// which may become a pytest process (an xdist worker) later.
fn runs_python(pid: i32) -> bool {
    super::proc::exe_name(pid).map_or(true, |n| n.starts_with("python") || n.starts_with("pypy"))
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
