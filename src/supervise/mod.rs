//! Supervision: start one pytest command and follow every process it
//! starts until they are all gone, yielding a typed [`ProcessEnd`] for each
//! process that ends. Knows nothing of pytest; the [`Observer`] decides what
//! an end means.
//!
//! Two modes: [`ptrace`] (follows descendants as the observer's [`Follow`]
//! policy says; sees fatal signals and exits before any parent reaps them)
//! and [`fallback`] (waitpid on the direct child plus `/proc` scans of the
//! processes the observer names). Either way, what is left running at the
//! end is found and killed as whole trees ([`leftovers`]).

pub mod fallback;
pub mod forward;
pub mod leftovers;
pub mod pid;
pub mod proc;
pub mod ptrace;
pub mod signals;
pub mod spawn;
pub mod wait;

use std::time::Duration;

use serde::Serialize;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Exited with this code.
    Exited(i32),
    /// Killed by a signal.
    Signaled {
        /// Signal number.
        signal: i32,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
    },
    /// Gone, and nobody could tell how (fallback mode, reaped by another).
    Unknown,
}

impl Outcome {
    /// Decodes a raw wait status.
    pub fn from_wait_status(status: i32) -> Self {
        if libc::WIFEXITED(status) {
            Outcome::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Outcome::Signaled { signal: libc::WTERMSIG(status), core_dumped: libc::WCOREDUMP(status) }
        } else {
            Outcome::Unknown
        }
    }

    /// The exit status a shell would show: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match *self {
            Outcome::Exited(c) => c,
            Outcome::Signaled { signal, .. } => 128 + signal,
            Outcome::Unknown => 1,
        }
    }

    /// True for exit code 0.
    pub fn is_clean(&self) -> bool {
        *self == Outcome::Exited(0)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One rendering of "how it died" for the whole crate.
        std::fmt::Display::fmt(&crate::model::Death::from_end(*self, None), f)
    }
}

/// What ptrace saw at the fatal signal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fault {
    /// Signal number.
    pub signal: i32,
    /// Raw si_code.
    pub si_code: i32,
    /// Fault address (for SIGSEGV/SIGBUS/SIGFPE/SIGILL).
    pub addr: Option<u64>,
    /// Sender of a signal sent with kill/tkill.
    pub sender_pid: Option<i32>,
    /// Thread that took the signal.
    pub tid: i32,
    /// Instruction pointer at the fault.
    pub ip: Option<u64>,
    /// `library+0xoffset` of the instruction pointer.
    pub location: Option<String>,
}

/// One process that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessEnd {
    /// Its pid (thread-group id).
    pub pid: i32,
    /// How it ended.
    pub outcome: Outcome,
    /// Peak resident memory (VmHWM), KiB, when read before it was gone.
    pub peak_rss_kb: Option<u64>,
    /// The fatal signal's details, when ptrace saw it.
    pub fault: Option<Fault>,
}

/// A process left running after the supervised command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leftover {
    /// pid.
    pub pid: i32,
    /// Its command line.
    pub cmdline: String,
}

/// How ptrace mode follows the children a process starts (the observer
/// decides, per process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Follow every child and everything it starts.
    All,
    /// Follow a child up to its exec; after it, keep following only a
    /// program named in [`Options::keep_after_exec`], let go of any other.
    UntilExec,
    /// Let go of each child at its first stop, before it runs any code of
    /// its own, and stop following this process's forks: the children run
    /// exactly as without a tracer (they can be traced by a debugger) and
    /// cost no ptrace stops.
    None,
}

/// What the supervisor tells its observer, and asks of it.
pub trait Observer {
    /// A process ended. In ptrace mode it is still stopped at its exit event
    /// (its parent has not seen it die yet) while this runs.
    fn process_ended(&mut self, end: &ProcessEnd);

    /// How to follow the children `pid` starts from now on. Asked when a
    /// child of `pid` first stops, so the answer may change as `pid` runs
    /// (a process that only later starts running tests, say).
    fn follow(&mut self, _pid: i32) -> Follow {
        Follow::All
    }

    /// In fallback mode: pids worth watching (the pytest processes).
    fn watched_pids(&mut self) -> Vec<i32> {
        Vec::new()
    }

    /// How often [`Observer::tick`] should run; `None` for never.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Periodic call (timeouts). Runs between waits.
    fn tick(&mut self) {}

    /// The wrapper got SIGINT/SIGTERM/SIGHUP and forwarded it; `signal` is
    /// always the first one (a second signal, which kills the group, tells
    /// it again).
    fn interrupted(&mut self, _signal: i32) {}

    /// The command started as `root` (also its process-group id).
    fn started(&mut self, _root: i32) {}
}

/// Which supervision mode ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// ptrace following every descendant.
    Ptrace,
    /// waitpid on the child plus /proc scans.
    NoPtrace,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Ptrace => "ptrace",
            Mode::NoPtrace => "no-ptrace (waitpid + /proc)",
        })
    }
}

/// The result of supervising one command.
#[derive(Debug, Clone)]
pub struct Supervised {
    /// How the direct child ended.
    pub outcome: Outcome,
    /// The mode that ran.
    pub mode: Mode,
    /// Why ptrace was not used, when it was asked for and refused.
    pub ptrace_refused: Option<String>,
    /// Processes still running when the command ended.
    pub leftovers: Vec<Leftover>,
    /// The forwarded signal, if the wrapper was interrupted.
    pub interrupted: Option<i32>,
}

/// Options for one supervised run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Use ptrace (falls back when refused).
    pub ptrace: bool,
    /// Leave leftover processes running instead of killing them.
    pub keep_leftovers: bool,
    /// For [`Follow::UntilExec`]: prefixes of program file names (`python`)
    /// that stay followed after their exec.
    pub keep_after_exec: Vec<String>,
}

/// Acts on the signals the wrapper got: the first is forwarded to the
/// command's process group (and told to the observer), a second kills the
/// group with SIGKILL.
fn act_on_signals(root: i32, observer: &mut dyn Observer) {
    match forward::take_pending() {
        Some(forward::Interrupt::Forward(sig)) => {
            observer.interrupted(sig);
            let _ = pid::Target::group(root).signal(sig);
        }
        Some(forward::Interrupt::Kill) => {
            if let Some(sig) = forward::first_signal() {
                observer.interrupted(sig);
            }
            pid::Target::group(root).kill();
        }
        None => {}
    }
}

/// Makes the wrapper the subreaper of its descendants: orphans (of
/// processes let go of, or of leftover trees) become its children, to be
/// found, reaped and killed.
fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers and only
    // changes how this process's orphaned descendants are reparented.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
}

/// Starts `cmd` and supervises it to the end.
pub fn run(cmd: &spawn::Command, opts: &Options, observer: &mut dyn Observer) -> anyhow::Result<Supervised> {
    forward::install();
    if opts.ptrace {
        match spawn::spawn(cmd, true)? {
            spawn::Spawned::Traced(child) => {
                observer.started(child.pid.as_raw());
                return ptrace::supervise(child, opts, observer);
            }
            spawn::Spawned::Plain(child, why) => {
                observer.started(child.pid.as_raw());
                return fallback::supervise(child, opts, observer, Some(why));
            }
        }
    }
    match spawn::spawn(cmd, false)? {
        spawn::Spawned::Plain(child, _) | spawn::Spawned::Traced(child) => {
            observer.started(child.pid.as_raw());
            fallback::supervise(child, opts, observer, None)
        }
    }
}
