//! Reading `/proc`: the one place that parses `/proc/PID/stat` (through the
//! `procfs` crate) and the other per-process files supervision needs.

use procfs::process::Process;

/// The fields of `/proc/PID/stat` supervision uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// State letter: `R`, `S`, `D`, `T` (stopped), `t` (trace-stopped),
    /// `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process-group id.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// The wait status, once the process is a zombie (Linux 3.5+).
    pub exit_code: Option<i32>,
}

impl Stat {
    /// True for a zombie or a dead process: it runs no more code.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// `/proc/PID/stat`, or `None` when the process is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let s = Process::new(pid).ok()?.stat().ok()?;
    Some(Stat { state: s.state, ppid: s.ppid, pgrp: s.pgrp, session: s.session, exit_code: s.exit_code })
}

/// True when a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !s.is_dead())
}

/// Every pid in `/proc` (processes, not threads).
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect()
}

/// `/proc/PID/cmdline` as one line (arguments joined by spaces); empty when
/// the process is gone or a kernel thread.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Peak resident memory (VmHWM) of a live process, KiB.
pub fn peak_rss_kb(pid: i32) -> Option<u64> {
    Process::new(pid).ok()?.status().ok()?.vmhwm
}

/// Thread-group id (the process) of a thread, from `/proc/TID/status`.
pub fn tgid(tid: i32) -> Option<i32> {
    Process::new(tid).ok()?.status().ok().map(|s| s.tgid)
}

/// File name of the program a process runs (`python3.11`), from
/// `/proc/PID/exe`.
pub fn exe_name(pid: i32) -> Option<String> {
    let p = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    p.file_name().map(|n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("own stat");
        assert!(!s.is_dead());
        use nix::unistd::{getpgrp, getppid, getsid};
        let sid = getsid(None).unwrap();
        assert_eq!((s.ppid, s.pgrp, s.session), (getppid().as_raw(), getpgrp().as_raw(), sid.as_raw()));
        assert!(alive(me));
        assert!(all_pids().contains(&me));
        assert_eq!(tgid(me), Some(me));
        assert!(!cmdline(me).is_empty());
        assert!(peak_rss_kb(me).is_some_and(|k| k > 0));
    }

    #[test]
    fn sees_a_stopped_child_and_its_zombie() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let child_pid = crate::supervise::pid::Target::process(pid);
        child_pid.signal(libc::SIGSTOP).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stat(pid).unwrap().state != 'T' {
            assert!(std::time::Instant::now() < until, "never stopped");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child_pid.kill();
        while alive(pid) {
            assert!(std::time::Instant::now() < until, "never died");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let st = stat(pid).expect("a zombie until reaped");
        assert_eq!(st.exit_code, Some(libc::SIGKILL));
        child.wait().unwrap();
    }

    #[test]
    fn a_gone_pid_is_not_alive() {
        assert!(stat(i32::MAX).is_none());
        assert!(!alive(i32::MAX));
    }
}
