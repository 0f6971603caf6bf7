//! Crash forensics beyond the signal: the Python stacks faulthandler wrote
//! at death, whether a SIGKILL looks like the OOM killer's, and the crash
//! details left for the xdist controller's report of the crashed test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::record::CrashRecord;

/// Longest traceback attached to a record.
pub const TRACEBACK_LIMIT: usize = 64 * 1024;

/// The faulthandler file of pytest process `pid` in run `run`.
pub fn faulthandler_path(state_dir: &Path, run: u32, pid: i32) -> PathBuf {
    state_dir.join("faulthandler").join(format!("r{run}-{pid}.txt"))
}

/// First line of a faulthandler file the plugin opened on import, before
/// conftests load: `pytest-abort startup: worker=<main|gwN>`. It marks a
/// pytest process of the run even when that process dies before it writes
/// a journal.
const STARTUP_HEADER: &str = "pytest-abort startup: worker=";

/// The worker id a pytest process's faulthandler file names, when the
/// plugin opened it on import (see [`STARTUP_HEADER`]).
pub fn startup_worker(state_dir: &Path, run: u32, pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(faulthandler_path(state_dir, run, pid)).ok()?;
    Some(text.lines().next()?.strip_prefix(STARTUP_HEADER)?.trim().to_string())
}

/// The module a dying process was importing, from faulthandler's stack
/// (most recent call first): the innermost `<module>` frame outside
/// installed packages (a conftest that imports a crashing library is
/// named, not the library), else the innermost `<module>` frame. Relative
/// to the wrapper's folder when inside it.
pub fn module_being_imported(traceback: &str) -> Option<String> {
    let modules: Vec<&str> = traceback
        .lines()
        .filter_map(|l| l.trim().strip_prefix("File \"")?.strip_suffix(" in <module>"))
        .filter_map(|l| l.rsplit_once("\", line ").map(|(path, _)| path))
        .filter(|path| !path.starts_with('<'))
        .collect();
    let installed = |p: &&str| p.contains("/site-packages/") || p.contains("/dist-packages/");
    let path = modules.iter().find(|p| !installed(p)).or(modules.first())?;
    let cwd = std::env::current_dir().ok();
    let relative = cwd.as_deref().and_then(|d| Path::new(path).strip_prefix(d).ok());
    Some(relative.map_or_else(|| path.to_string(), |r| r.display().to_string()))
}

/// The Python stacks faulthandler dumped for that process, if any.
pub fn read_traceback(state_dir: &Path, run: u32, pid: i32) -> Option<String> {
    let bytes = std::fs::read(faulthandler_path(state_dir, run, pid)).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with(STARTUP_HEADER) => rest,
        _ if text.starts_with(STARTUP_HEADER) => "",
        _ => &text,
    };
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

/// Watches the memory cgroup's `oom_kill` counter (cgroup v2
/// `memory.events`, or v1 `memory.oom_control`), so a SIGKILL can be told
/// apart as the OOM killer's.
#[derive(Debug, Default)]
pub struct OomWatch {
    own: Option<PathBuf>,
    seen: HashMap<PathBuf, u64>,
}

impl OomWatch {
    /// Starts watching; the wrapper's own cgroup is the baseline.
    pub fn new() -> Self {
        let mut w = OomWatch { own: oom_counter_file("self"), seen: HashMap::new() };
        if let Some(p) = w.own.clone() {
            if let Some(n) = read_oom_kills(&p) {
                w.seen.insert(p, n);
            }
        }
        w
    }

    /// True when the OOM killer struck in the cgroup of `pid` (read while
    /// it still exists, at its exit stop) or else the wrapper's own, since
    /// the last look.
    pub fn fired(&mut self, pid: i32) -> bool {
        let Some(path) = oom_counter_file(&pid.to_string()).or_else(|| self.own.clone()) else { return false };
        let Some(now) = read_oom_kills(&path) else { return false };
        let before = self.seen.insert(path, now).unwrap_or(0);
        now > before
    }
}

/// The file holding the `oom_kill` count of the memory cgroup of `/proc/<who>`.
fn oom_counter_file(who: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{who}/cgroup")).ok()?;
    let root = Path::new("/sys/fs/cgroup");
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        let candidates = if controllers.is_empty() {
            [root.join(rel).join("memory.events"), root.join("memory.events")]
        } else if controllers.split(',').any(|c| c == "memory") {
            [root.join("memory").join(rel).join("memory.oom_control"), root.join("memory/memory.oom_control")]
        } else {
            continue;
        };
        if let Some(p) = candidates.into_iter().find(|p| p.exists()) {
            return Some(p);
        }
    }
    None
}

fn read_oom_kills(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok())
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
    let _ = fsutil::create_parent(&path);
    if let Ok(json) = serde_json::to_vec(record) {
        let _ = fsutil::atomic_write(&path, &json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_being_imported_prefers_the_users_module() {
        let dump = "Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n  \
            File \"/venv/lib/python3.11/site-packages/gpu/__init__.py\", line 3 in <module>\n  \
            File \"<frozen importlib._bootstrap>\", line 690 in _load_unlocked\n  \
            File \"/src/sub dir/conftest.py\", line 1 in <module>\n  \
            File \"/venv/lib/python3.11/site-packages/_pytest/config/__init__.py\", line 788 in _importconftest\n  \
            File \"/venv/lib/python3.11/site-packages/pytest/__main__.py\", line 9 in <module>\n";
        assert_eq!(module_being_imported(dump).as_deref(), Some("/src/sub dir/conftest.py"));
        let only_installed = "  File \"/venv/lib/python3.11/site-packages/plug.py\", line 3 in <module>\n";
        assert_eq!(
            module_being_imported(only_installed).as_deref(),
            Some("/venv/lib/python3.11/site-packages/plug.py")
        );
        assert_eq!(module_being_imported("Fatal Python error: Aborted\n"), None);
    }

    #[test]
    fn startup_header_names_the_worker_and_stays_out_of_the_traceback() {
        let dir = tempfile::tempdir().unwrap();
        let path = faulthandler_path(dir.path(), 1, 42);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "pytest-abort startup: worker=gw3\n").unwrap();
        assert_eq!(startup_worker(dir.path(), 1, 42).as_deref(), Some("gw3"));
        assert_eq!(read_traceback(dir.path(), 1, 42), None);
        std::fs::write(&path, "pytest-abort startup: worker=main\nFatal Python error: Aborted\n").unwrap();
        assert_eq!(read_traceback(dir.path(), 1, 42).as_deref(), Some("Fatal Python error: Aborted"));
        assert_eq!(startup_worker(dir.path(), 2, 42), None);
    }

    #[test]
    fn names_signal_from_dump() {
        let dump = "Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n";
        assert_eq!(signal_from_traceback(dump), Some(libc::SIGSEGV));
        assert_eq!(signal_from_traceback("Fatal Python error: Aborted\n"), Some(libc::SIGABRT));
        assert_eq!(signal_from_traceback("Thread 0x1 (most recent call first):"), None);
    }
}
