//! Hang handling: per-test timeouts (from the marker's start time; a test's
//! own `@pytest.mark.timeout(n)` wins) and a whole-session timeout. On expiry
//! the stuck process's Python stacks are dumped (a faulthandler signal the
//! shim registered), and after a short grace it is killed with SIGKILL,
//! which works on a process stuck inside a GPU driver call too.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::marker;
use crate::model::TimeoutScope;
use crate::supervise::pid::Target;

/// Time between the stack dump and the SIGKILL.
pub const GRACE: Duration = Duration::from_millis(1000);

/// The signal the shim registers for dumping stacks: `SIGRTMIN+5`.
pub fn dump_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

/// Why a process was killed.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiry {
    /// The limit in seconds.
    pub limit: f64,
    /// Which limit.
    pub scope: TimeoutScope,
}

/// The per-run watchdog.
#[derive(Debug)]
pub struct Watchdog {
    marker_dir: PathBuf,
    test_timeout: Option<f64>,
    session_deadline: Option<(Instant, f64)>,
    root: Option<i32>,
    /// Dumped, waiting for the grace to end: pid -> (when, why).
    dumped: HashMap<i32, (Instant, Expiry)>,
    /// Killed: pid -> why.
    killed: HashMap<i32, Expiry>,
    session_expired: bool,
}

impl Watchdog {
    /// A watchdog for one run; `session_left` is what is left of `--timeout`.
    pub fn new(marker_dir: PathBuf, test_timeout: Option<f64>, session_left: Option<(Duration, f64)>) -> Self {
        Watchdog {
            marker_dir,
            test_timeout,
            session_deadline: session_left.map(|(d, limit)| (Instant::now() + d, limit)),
            root: None,
            dumped: HashMap::new(),
            killed: HashMap::new(),
            session_expired: false,
        }
    }

    /// True when any limit is set.
    pub fn active(&self) -> bool {
        self.test_timeout.is_some() || self.session_deadline.is_some()
    }

    /// The pytest command's pid (its process group).
    pub fn set_root(&mut self, pid: i32) {
        self.root = Some(pid);
    }

    /// Why `pid` was killed, if the watchdog killed it.
    pub fn expiry_of(&self, pid: i32) -> Option<&Expiry> {
        self.killed.get(&pid).or_else(|| self.dumped.get(&pid).map(|(_, e)| e))
    }

    /// True once the whole-session limit expired.
    pub fn session_expired(&self) -> bool {
        self.session_expired
    }

    /// One look at the markers (and the clock); `pytest_pids` are the live
    /// pytest processes, dumped first when the session limit expires.
    pub fn tick(&mut self, pytest_pids: &[i32]) {
        let now = Instant::now();
        // Grace over: kill.
        let due: Vec<i32> = self.dumped.iter().filter(|(_, (t, _))| now >= *t + GRACE).map(|(p, _)| *p).collect();
        for pid in due {
            let (_, why) = self.dumped.remove(&pid).unwrap();
            if why.scope == TimeoutScope::Session {
                if let Some(root) = self.root {
                    Target::group(root).kill();
                }
            }
            Target::process(pid).kill();
            self.killed.insert(pid, why);
        }
        if let Some((deadline, limit)) = self.session_deadline {
            if now >= deadline && !self.session_expired {
                self.session_expired = true;
                let why = Expiry { limit, scope: TimeoutScope::Session };
                let mut targets: Vec<i32> = pytest_pids.to_vec();
                if targets.is_empty() {
                    targets.extend(self.root);
                }
                for pid in targets {
                    self.dump(pid, why.clone(), now);
                }
            }
        }
        let Some(default) = self.test_timeout else { return };
        let Ok(entries) = std::fs::read_dir(&self.marker_dir) else { return };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with("last_running_") {
                continue;
            }
            let Ok(Some(m)) = marker::read_marker(&e.path()) else { continue };
            let Some(pid) = m.pid.filter(|_| m.is_running()) else { continue };
            if self.dumped.contains_key(&pid) || self.killed.contains_key(&pid) {
                continue;
            }
            let limit = m.timeout.filter(|t| *t > 0.0).unwrap_or(default);
            if m.elapsed_secs().is_some_and(|e| e > limit) {
                self.dump(pid, Expiry { limit, scope: TimeoutScope::Test }, now);
            }
        }
    }

    fn dump(&mut self, pid: i32, why: Expiry, now: Instant) {
        let _ = Target::process(pid).signal(dump_signal());
        self.dumped.insert(pid, (now, why));
    }

    /// How often to tick: often enough for the smallest limit.
    pub fn interval(&self) -> Option<Duration> {
        self.active().then(|| {
            let smallest = self.test_timeout.unwrap_or(f64::MAX).min(self.session_deadline.map_or(f64::MAX, |d| d.1));
            Duration::from_secs_f64((smallest / 10.0).clamp(0.02, 0.25))
        })
    }
}
