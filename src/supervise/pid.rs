//! Typed signal targets: a process or a process group, never a negative
//! pid passed to `kill(2)` by hand.

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// A process or a process group to signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One process.
    Process(Pid),
    /// Every process in a process group (named by its leader's pid).
    Group(Pid),
}

impl Target {
    /// The process with this pid.
    pub fn process(pid: i32) -> Self {
        Target::Process(Pid::from_raw(pid))
    }

    /// The process group with this id.
    pub fn group(pgid: i32) -> Self {
        Target::Group(Pid::from_raw(pgid))
    }

    /// Sends a signal by number, real-time signals included (they have no
    /// `nix::Signal` value). Pids 0 and below are refused: they would name
    /// the caller's own group or every process.
    pub fn signal(self, sig: i32) -> Result<(), Errno> {
        let (Target::Process(pid) | Target::Group(pid)) = self;
        if pid.as_raw() <= 0 {
            return Err(Errno::ESRCH);
        }
        match (self, Signal::try_from(sig)) {
            (Target::Process(p), Ok(s)) => kill(p, s),
            (Target::Group(g), Ok(s)) => killpg(g, s),
            (_, Err(_)) => {
                let raw = match self {
                    Target::Process(p) => p.as_raw(),
                    Target::Group(g) => -g.as_raw(),
                };
                // SAFETY: kill(2) touches no memory of ours; `raw` is a
                // positive pid or the negated id of a real group (both
                // checked above to be > 0), never 0 or -1.
                Errno::result(unsafe { libc::kill(raw, sig) }).map(drop)
            }
        }
    }

    /// Sends SIGKILL; a target already gone is not an error.
    pub fn kill(self) {
        let _ = self.signal(libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_pids_that_name_more_than_one_process() {
        assert_eq!(Target::group(0).signal(0), Err(Errno::ESRCH));
        assert_eq!(Target::process(-1).signal(0), Err(Errno::ESRCH));
        assert_eq!(Target::process(std::process::id() as i32).signal(0), Ok(()));
    }

    #[test]
    fn a_real_time_signal_reaches_a_group() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        let pid = child.id() as i32;
        Target::group(pid).signal(libc::SIGRTMIN() + 5).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGRTMIN() + 5));
    }
}
