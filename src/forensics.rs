//! Crash forensics beyond the signal: the Python stacks faulthandler wrote
//! at death, whether a SIGKILL looks like the OOM killer's, and the crash
//! details left for the xdist controller's report of the crashed test.

use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::record::CrashRecord;

/// Longest traceback attached to a record.
pub const TRACEBACK_LIMIT: usize = 64 * 1024;

/// The faulthandler file of pytest process `pid` in run `run`.
pub fn faulthandler_path(state_dir: &Path, run: u32, pid: i32) -> PathBuf {
    state_dir.join("faulthandler").join(format!("r{run}-{pid}.txt"))
}

/// The Python stacks faulthandler dumped for that process, if any.
pub fn read_traceback(state_dir: &Path, run: u32, pid: i32) -> Option<String> {
    let bytes = std::fs::read(faulthandler_path(state_dir, run, pid)).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.len() > TRACEBACK_LIMIT {
        let mut cut = text.len() - TRACEBACK_LIMIT;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        return Some(format!("[... earlier output cut by pytest-abort]\n{}", &text[cut..]));
    }
    Some(text.to_string())
}

/// The fatal signal faulthandler names in its dump ("Fatal Python error:
/// Segmentation fault"), for when the wait status is unknown.
pub fn signal_from_traceback(text: &str) -> Option<i32> {
    let line = text.lines().rev().find_map(|l| l.trim().strip_prefix("Fatal Python error: "))?;
    Some(match line.trim() {
        "Segmentation fault" => libc::SIGSEGV,
        "Aborted" => libc::SIGABRT,
        "Bus error" => libc::SIGBUS,
        "Floating-point exception" | "Floating point exception" => libc::SIGFPE,
        "Illegal instruction" => libc::SIGILL,
        _ => return None,
    })
}

/// Watches the cgroup's `memory.events` `oom_kill` counter, so a SIGKILL
/// can be told apart as the OOM killer's.
#[derive(Debug, Default)]
pub struct OomWatch {
    events: Option<PathBuf>,
    seen: u64,
}

impl OomWatch {
    /// Starts watching the wrapper's own cgroup (v2), when there is one.
    pub fn new() -> Self {
        let events = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|s| {
            let rel = s.lines().find_map(|l| l.strip_prefix("0::"))?.trim().to_string();
            let p = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')).join("memory.events");
            p.exists().then_some(p)
        });
        let mut w = OomWatch { events, seen: 0 };
        w.seen = w.count().unwrap_or(0);
        w
    }

    fn count(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.events.as_ref()?).ok()?;
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok())
    }

    /// True when the OOM killer struck since the last call.
    pub fn fired(&mut self) -> bool {
        match self.count() {
            Some(n) if n > self.seen => {
                self.seen = n;
                true
            }
            _ => false,
        }
    }
}

/// Where the wrapper leaves a worker's crash record for the controller's
/// `pytest_handlecrashitem`.
pub fn crashinfo_path(state_dir: &Path, run: u32, worker: &str) -> PathBuf {
    state_dir.join("crashinfo").join(format!("r{run}-{worker}.json"))
}

/// Writes the record for the controller (best effort: a failure only loses
/// detail in xdist's own message, never the record).
pub fn write_crashinfo(state_dir: &Path, run: u32, record: &CrashRecord) {
    let path = crashinfo_path(state_dir, run, &record.worker);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Ok(json) = serde_json::to_vec(record) {
        let _ = fsutil::atomic_write(&path, &json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_signal_from_dump() {
        let dump = "Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n";
        assert_eq!(signal_from_traceback(dump), Some(libc::SIGSEGV));
        assert_eq!(signal_from_traceback("Fatal Python error: Aborted\n"), Some(libc::SIGABRT));
        assert_eq!(signal_from_traceback("Thread 0x1 (most recent call first):"), None);
    }
}
