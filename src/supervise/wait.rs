//! `waitpid(2)` with the raw status decoded here, not by `nix`: `nix`
//! refuses statuses whose signal has no `nix::Signal` value (a process
//! killed by a real-time signal, such as the stack-dump signal) with
//! `EINVAL`, which must never stop a run.

use nix::errno::Errno;

/// A decoded wait status. Signals are raw numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// WNOHANG and nothing to report.
    Nothing,
    /// pid, exit code.
    Exited(i32, i32),
    /// pid, signal, core dumped.
    Signaled(i32, i32, bool),
    /// A ptrace event stop: pid, signal, event.
    Event(i32, i32, i32),
    /// A signal-delivery stop (or a stop of an untraced child): pid, signal.
    Stopped(i32, i32),
    /// Anything else (a continued child).
    Other,
}

/// The pause between two looks at processes on their way out: 0.1 ms at
/// first, doubling up to 10 ms. A process that is already exiting is seen
/// gone after a fraction of a millisecond (a fixed 10 ms pause added
/// about 4 ms to the end of every run), one that lingers costs no more
/// looks than before.
pub struct Backoff(std::time::Duration);

impl Backoff {
    /// The first pause, 0.1 ms.
    pub fn new() -> Backoff {
        Backoff(std::time::Duration::from_micros(100))
    }

    /// Sleeps for the current pause, then doubles it (10 ms at most).
    pub fn pause(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(std::time::Duration::from_millis(10));
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// `waitpid(pid, flags)`, retried on nothing: `EINTR` comes back to the
/// caller, who has signals to act on.
pub fn wait(pid: i32, flags: libc::c_int) -> Result<Wait, Errno> {
    let mut status = 0;
    // SAFETY: waitpid writes one int through the pointer, which points to
    // a live local; no other memory is involved.
    let got = unsafe { libc::waitpid(pid, &mut status, flags) };
    if got < 0 {
        return Err(Errno::last());
    }
    if got == 0 {
        return Ok(Wait::Nothing);
    }
    Ok(decode(got, status))
}

fn decode(pid: i32, status: i32) -> Wait {
    if libc::WIFEXITED(status) {
        Wait::Exited(pid, libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Wait::Signaled(pid, libc::WTERMSIG(status), libc::WCOREDUMP(status))
    } else if libc::WIFSTOPPED(status) {
        let sig = libc::WSTOPSIG(status);
        match status >> 16 {
            0 => Wait::Stopped(pid, sig),
            event => Wait::Event(pid, sig, event),
        }
    } else {
        Wait::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_time_signal_death_decodes() {
        // Reaped below by `wait`, not by `Child::wait`.
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let rt = libc::SIGRTMIN() + 5;
        crate::supervise::pid::Target::process(pid).signal(rt).unwrap();
        assert_eq!(wait(pid, 0), Ok(Wait::Signaled(pid, rt, false)));
    }
}
