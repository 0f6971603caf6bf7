//! The typed model the wrapper works with inside: where a process died
//! ([`Phase`]), how ([`Death`], [`CrashKind`], [`TimeoutScope`]), what a test
//! came to ([`TestOutcome`]), what a recheck concluded ([`Verdict`]), which
//! pytest process ([`Worker`]), and one crash with all of it ([`Crash`]).
//!
//! Values start typed here and are turned into strings only at the edge:
//! [`crate::record::CrashRecord`] (the crash log's wire format) is built from
//! a [`Crash`] in one `From`, and [`Death`]'s one `Display` is what the
//! summary, the crash `reason`, the xdist controller's crash info, every
//! report format and the compat commands show for "how it died".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::supervise::{signals, Fault, Outcome};

/// Where in a pytest process's life it died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// A test's setup.
    Setup,
    /// A test's call.
    Call,
    /// A test's teardown.
    Teardown,
    /// Collecting a file.
    Collection,
    /// Before the pytest-abort plugin loaded (interpreter start, conftest import).
    Startup,
    /// After the plugin loaded, before collection.
    SessionStart,
    /// After the last test (session finish, unconfigure).
    SessionFinish,
    /// Between two tests.
    BetweenTests,
}

impl Phase {
    /// Every phase, in the order a session goes through them.
    pub const ALL: [Phase; 8] = [
        Phase::Startup,
        Phase::SessionStart,
        Phase::Collection,
        Phase::Setup,
        Phase::Call,
        Phase::Teardown,
        Phase::BetweenTests,
        Phase::SessionFinish,
    ];

    /// The wire name: `setup`, `session-start`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Call => "call",
            Phase::Teardown => "teardown",
            Phase::Collection => "collection",
            Phase::Startup => "startup",
            Phase::SessionStart => "session-start",
            Phase::SessionFinish => "session-finish",
            Phase::BetweenTests => "between-tests",
        }
    }

    /// True for the three phases of a test's run protocol.
    pub fn is_test(self) -> bool {
        matches!(self, Phase::Setup | Phase::Call | Phase::Teardown)
    }

    /// Where, in words, for a crash reason: `during call`, `during
    /// collection of t.py`, `at session start`, `between tests`.
    pub fn describe(self, nodeid: &str) -> String {
        match self {
            Phase::Collection => format!("during collection of {nodeid}"),
            Phase::Startup if nodeid.is_empty() => "at startup, before the pytest-abort plugin loaded".to_string(),
            Phase::Startup => format!("at startup, before the pytest-abort plugin loaded (in {nodeid})"),
            Phase::SessionStart => "at session start".to_string(),
            Phase::SessionFinish => "at session finish".to_string(),
            Phase::BetweenTests => "between tests".to_string(),
            test => format!("during {}", test.as_str()),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s.trim()).ok_or_else(|| format!("unknown phase {s:?}"))
    }
}

/// The crash record's `kind`: what sort of death it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CrashKind {
    /// Killed by a signal (or died in a way nobody could see).
    #[default]
    Crash,
    /// Exited (for example `os._exit(3)`) in the middle of a test.
    Exit,
    /// Killed by the wrapper after a timeout.
    Timeout,
    /// Not a death: the test failed with a sticky device error (a CUDA
    /// device-side assert, an illegal address) that leaves its process's
    /// GPU context unusable, so its process ran no further test. The test
    /// finished, and its own report entry (a failure) stands.
    #[serde(rename = "device-error")]
    DeviceError,
}

impl CrashKind {
    /// True when the test finished and its own report entry stands (a
    /// device error); false for a death, whose crash is the test's entry.
    pub fn test_finished(self) -> bool {
        self == CrashKind::DeviceError
    }
}

/// The failure texts that poison a process by default (`--poison-pattern`
/// adds to them, `--no-poison` turns them off): regular expressions,
/// searched in a failed test's report text. CUDA's sticky errors, then
/// HIP/ROCm's.
pub const DEFAULT_POISON_PATTERNS: [&str; 10] = [
    "device-side assert triggered",
    "an illegal memory access was encountered",
    "unspecified launch failure",
    "misaligned address",
    "CUDA_ERROR_ILLEGAL_ADDRESS",
    "CUDA_ERROR_LAUNCH_FAILED",
    "hipErrorIllegalAddress",
    "hipErrorLaunchFailure",
    "Memory access fault by GPU",
    "HSA_STATUS_ERROR_MEMORY_APERTURE_VIOLATION",
];

/// Which limit a timeout hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutScope {
    /// The per-test limit (`--test-timeout`, or the test's own `timeout` mark).
    Test,
    /// The whole-session limit (`--timeout`).
    Session,
}

impl TimeoutScope {
    /// The limit in words: `per-test limit`, `--timeout for the session`.
    pub fn describe(self) -> &'static str {
        match self {
            TimeoutScope::Test => "per-test limit",
            TimeoutScope::Session => "--timeout for the session",
        }
    }
}

impl fmt::Display for TimeoutScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutScope::Test => "test",
            TimeoutScope::Session => "session",
        })
    }
}

/// What a finished test came to (pytest's outcome words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestOutcome {
    /// passed.
    Passed,
    /// failed.
    Failed,
    /// error (in setup or teardown).
    Error,
    /// skipped.
    Skipped,
    /// xfailed (expected failure).
    Xfailed,
    /// xpassed (unexpected pass).
    Xpassed,
}

impl TestOutcome {
    /// Every outcome, in the order the summary lists them.
    pub const ALL: [TestOutcome; 6] = [
        TestOutcome::Passed,
        TestOutcome::Failed,
        TestOutcome::Error,
        TestOutcome::Skipped,
        TestOutcome::Xfailed,
        TestOutcome::Xpassed,
    ];

    /// pytest's word.
    pub fn as_str(self) -> &'static str {
        match self {
            TestOutcome::Passed => "passed",
            TestOutcome::Failed => "failed",
            TestOutcome::Error => "error",
            TestOutcome::Skipped => "skipped",
            TestOutcome::Xfailed => "xfailed",
            TestOutcome::Xpassed => "xpassed",
        }
    }

    /// Parses pytest's word; an empty outcome counts as passed (as reports do).
    pub fn parse(s: &str) -> Option<TestOutcome> {
        let s = s.trim();
        if s.is_empty() {
            return Some(TestOutcome::Passed);
        }
        TestOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// True for outcomes that make the suite fail.
    pub fn is_failure(self) -> bool {
        matches!(self, TestOutcome::Failed | TestOutcome::Error)
    }
}

impl fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `--recheck-crashed` concluded about a crashed test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// It crashed on every recheck.
    Deterministic,
    /// It crashed on `crashed` of `runs` rechecks.
    Flaky {
        /// Rechecks that crashed.
        crashed: u32,
        /// Rechecks made.
        runs: u32,
    },
}

impl Verdict {
    /// The verdict for `crashed` crashes in `runs` rechecks.
    pub fn of(crashed: u32, runs: u32) -> Verdict {
        if crashed == runs {
            Verdict::Deterministic
        } else {
            Verdict::Flaky { crashed, runs }
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Deterministic => f.write_str("deterministic"),
            Verdict::Flaky { crashed, runs } => write!(f, "flaky ({crashed}/{runs})"),
        }
    }
}

/// Which pytest process: the main one or an xdist worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Worker {
    /// The main pytest process (serial run, or the xdist controller).
    #[default]
    Main,
    /// An xdist worker, `gw3`.
    Xdist(String),
}

impl Worker {
    /// From the journal's or marker's worker id (`main`, `gw3`).
    pub fn from_id(id: &str) -> Worker {
        match id.trim() {
            "" | "main" => Worker::Main,
            gw => Worker::Xdist(gw.to_string()),
        }
    }

    /// The crash record's `source`: `runner`, or `xdist:gw3`.
    pub fn source(&self) -> String {
        match self {
            Worker::Main => "runner".to_string(),
            Worker::Xdist(gw) => format!("xdist:{gw}"),
        }
    }
}

impl fmt::Display for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Worker::Main => f.write_str("main"),
            Worker::Xdist(gw) => f.write_str(gw),
        }
    }
}

/// What ptrace saw at a fatal signal, named.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignalDetail {
    /// si_code by name (`SEGV_MAPERR`, `SI_USER`).
    pub si_code: Option<String>,
    /// Fault address.
    pub addr: Option<u64>,
    /// The thread that took the signal.
    pub tid: Option<i32>,
    /// For a signal sent by a process, its pid.
    pub sender_pid: Option<i32>,
    /// Instruction pointer as `library+0xoffset`.
    pub location: Option<String>,
}

impl SignalDetail {
    /// Names what supervision saw at the signal.
    pub fn from_fault(f: &Fault) -> SignalDetail {
        SignalDetail {
            si_code: (f.si_code != 0 || f.sender_pid.is_some()).then(|| signals::si_code_name(f.signal, f.si_code)),
            addr: f.addr,
            tid: (f.tid != 0).then_some(f.tid),
            sender_pid: f.sender_pid,
            location: f.location.clone(),
        }
    }

    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == SignalDetail::default()
    }
}

/// How a process ended, with everything known about it.
///
/// `Display` is the one rendering of "how it died": `crashed with SIGSEGV
/// (segmentation fault)`, `exited with code 3`, `timed out after 5s
/// (per-test limit): Python stacks dumped, then killed`. The alternate form
/// (`{:#}`) is the short label of the summary: `SIGSEGV`, `exit 3`, `timeout`.
#[derive(Debug, Clone, PartialEq)]
pub enum Death {
    /// Killed by a signal.
    Signal {
        /// Signal number.
        signal: i32,
        /// Whether the kernel wrote a core.
        core_dumped: bool,
        /// What ptrace saw, when it saw the signal.
        detail: Option<SignalDetail>,
    },
    /// Exited with this code.
    Exit(i32),
    /// Killed by the wrapper's watchdog after a time limit.
    Timeout {
        /// The limit in seconds, when known.
        limit: Option<f64>,
        /// Which limit, when known.
        scope: Option<TimeoutScope>,
        /// How the process then ended (SIGKILL, usually).
        end: Box<Death>,
    },
    /// Gone, and nobody could tell how (no ptrace, reaped by another).
    Unknown,
    /// Not dead: the test failed with a sticky device error, and the
    /// process ran no further test (it was retired).
    DeviceError {
        /// The failure text that matched a poison pattern.
        matched: String,
    },
}

impl Death {
    /// From a process end and what ptrace saw.
    pub fn from_end(outcome: Outcome, fault: Option<&Fault>) -> Death {
        match outcome {
            Outcome::Signaled { signal, core_dumped } => Death::Signal {
                signal,
                core_dumped,
                detail: fault.map(SignalDetail::from_fault).filter(|d| !d.is_empty()),
            },
            Outcome::Exited(code) => Death::Exit(code),
            Outcome::Unknown => Death::Unknown,
        }
    }

    /// The crash kind.
    pub fn kind(&self) -> CrashKind {
        match self {
            Death::Signal { .. } | Death::Unknown => CrashKind::Crash,
            Death::Exit(_) => CrashKind::Exit,
            Death::Timeout { .. } => CrashKind::Timeout,
            Death::DeviceError { .. } => CrashKind::DeviceError,
        }
    }

    /// The death under a timeout (the kill), else itself.
    pub fn end(&self) -> &Death {
        match self {
            Death::Timeout { end, .. } => end.end(),
            other => other,
        }
    }

    /// The fatal signal, if it was one.
    pub fn signal(&self) -> Option<i32> {
        match self.end() {
            Death::Signal { signal, .. } => Some(*signal),
            _ => None,
        }
    }

    /// The exit code, if it exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self.end() {
            Death::Exit(c) => Some(*c),
            _ => None,
        }
    }

    /// Whether the kernel wrote a core.
    pub fn core_dumped(&self) -> bool {
        matches!(self.end(), Death::Signal { core_dumped: true, .. })
    }

    /// What ptrace saw at the signal.
    pub fn detail(&self) -> Option<&SignalDetail> {
        match self.end() {
            Death::Signal { detail, .. } => detail.as_ref(),
            _ => None,
        }
    }

    /// The first line of a crash's text in reports: `Crashed: SIGSEGV
    /// (signal 11, core dumped)`, `Exited with code 3 during the test`,
    /// `Timed out: killed by pytest-abort`.
    pub fn headline(&self) -> String {
        match self {
            Death::Timeout { .. } => "Timed out: killed by pytest-abort".to_string(),
            Death::Signal { signal, core_dumped, .. } => format!(
                "Crashed: {} (signal {signal}{})",
                signals::name(*signal),
                if *core_dumped { ", core dumped" } else { "" }
            ),
            Death::Exit(code) => format!("Exited with code {code} during the test"),
            Death::Unknown => "Crashed: the test process died".to_string(),
            Death::DeviceError { .. } => "Device error: the test's process ran no further test".to_string(),
        }
    }
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = f.alternate();
        match self {
            Death::Signal { signal, .. } if short => f.write_str(&signals::name(*signal)),
            Death::Signal { signal, .. } => {
                write!(f, "crashed with {} ({})", signals::name(*signal), signals::describe(*signal))
            }
            Death::Exit(code) if short => write!(f, "exit {code}"),
            Death::Exit(code) => write!(f, "exited with code {code}"),
            Death::Timeout { .. } if short => f.write_str("timeout"),
            Death::Timeout { limit, scope, .. } => {
                f.write_str("timed out")?;
                match (limit, scope) {
                    (Some(l), Some(s)) => write!(f, " after {l}s ({})", s.describe())?,
                    (Some(l), None) => write!(f, " after {l}s")?,
                    (None, Some(s)) => write!(f, " ({})", s.describe())?,
                    (None, None) => {}
                }
                f.write_str(": Python stacks dumped, then killed")
            }
            Death::Unknown if short => f.write_str("died"),
            Death::Unknown => f.write_str("died (how is unknown without ptrace)"),
            Death::DeviceError { .. } if short => f.write_str("device-error"),
            Death::DeviceError { matched } => {
                write!(f, "failed with a sticky device error ({matched})")
            }
        }
    }
}

/// One crash, typed: a pytest process that died in a test (or outside one).
#[derive(Debug, Clone, PartialEq)]
pub struct Crash {
    /// Node id of the test; the file's for a collection crash; empty for a
    /// death outside any test or file.
    pub nodeid: String,
    /// pytest item name (`test_x[param]`), empty outside a test.
    pub test_name: String,
    /// Where it died.
    pub phase: Phase,
    /// How it died.
    pub death: Death,
    /// The process that died.
    pub pid: i32,
    /// Which pytest process it was.
    pub worker: Worker,
    /// 1-based pytest run of the retry loop.
    pub run: u32,
    /// Seconds from the test's start to its death.
    pub duration: f64,
    /// The GPU it was pinned to, or `unknown`.
    pub gpu_id: String,
    /// Local time of the death, ISO-8601.
    pub crash_time: String,
    /// Python stacks at death (faulthandler's dump).
    pub traceback: Option<String>,
    /// Peak resident memory, KiB.
    pub peak_rss_kb: Option<u64>,
    /// Set when a SIGKILL came with the cgroup's OOM kill count going up.
    pub oom_suspected: bool,
    /// What `--recheck-crashed` concluded.
    pub recheck: Option<Verdict>,
    /// Each recheck, in order.
    pub rechecks: Vec<crate::record::RecheckRun>,
    /// For a flaky crash: what `--flaky-result` made of it.
    pub flaky_result: Option<FlakyResult>,
}

/// `--flaky-result`: whether a crash that `--recheck-crashed` did not see
/// every time fails the run (as nextest's option of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FlakyResult {
    /// A flaky crash is a failure (exit status 1, `<failure>` in JUnit).
    #[default]
    Fail,
    /// A flaky crash does not fail the run (`<flakyFailure>` elements only).
    Pass,
}

impl FlakyResult {
    /// `fail` or `pass`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlakyResult::Fail => "fail",
            FlakyResult::Pass => "pass",
        }
    }
}

impl Crash {
    /// A crash as attribution first knows it: how and where process `pid`
    /// (`worker`, pytest run `run`) died, at the local time now, outside any
    /// test (empty node id and name), no duration, GPU `unknown`, and the
    /// forensic fields (stacks, peak memory, OOM, rechecks) empty for the
    /// later stages to fill. Builders set the rest with struct update syntax.
    pub fn new(phase: Phase, death: Death, pid: i32, worker: Worker, run: u32) -> Crash {
        Crash {
            nodeid: String::new(),
            test_name: String::new(),
            phase,
            death,
            pid,
            worker,
            run,
            duration: 0.0,
            gpu_id: crate::record::UNKNOWN_GPU.to_string(),
            crash_time: crate::record::now_iso(),
            traceback: None,
            peak_rss_kb: None,
            oom_suspected: false,
            recheck: None,
            rechecks: Vec::new(),
            flaky_result: None,
        }
    }

    /// True for a crash `--flaky-result pass` keeps from failing the run.
    pub fn flaky_passes(&self) -> bool {
        matches!(self.recheck, Some(Verdict::Flaky { .. })) && self.flaky_result == Some(FlakyResult::Pass)
    }

    /// The node id with surrounding whitespace removed, as readers compare it.
    pub fn key(&self) -> &str {
        self.nodeid.trim()
    }

    /// The crash in words, the record's `reason`: "crashed with SIGSEGV
    /// (segmentation fault) during call", "exited with code 3 during
    /// collection of t.py".
    pub fn reason(&self) -> String {
        let oom = if self.oom_suspected { " (the cgroup's OOM killer fired)" } else { "" };
        let retired = if self.death.kind().test_finished() { "; its process ran no further test" } else { "" };
        format!("{} {}{oom}{retired}", self.death, self.phase.describe(&self.nodeid))
    }

    /// What the summary shows for a crash outside any test: `<collection>`.
    pub fn label(&self) -> String {
        if self.nodeid.is_empty() {
            format!("<{}>", self.phase)
        } else {
            self.nodeid.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_wire_names_round_trip() {
        for p in Phase::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
        }
        assert_eq!(serde_json::to_string(&Phase::BetweenTests).unwrap(), "\"between-tests\"");
        assert!("nope".parse::<Phase>().is_err());
    }

    #[test]
    fn one_rendering_of_a_death() {
        let segv = Death::Signal { signal: 11, core_dumped: true, detail: None };
        assert_eq!(segv.to_string(), "crashed with SIGSEGV (segmentation fault)");
        assert_eq!(format!("{segv:#}"), "SIGSEGV");
        assert_eq!(segv.headline(), "Crashed: SIGSEGV (signal 11, core dumped)");
        assert_eq!(Death::Exit(3).to_string(), "exited with code 3");
        assert_eq!(format!("{:#}", Death::Exit(3)), "exit 3");
        let t = Death::Timeout { limit: Some(5.0), scope: Some(TimeoutScope::Test), end: Box::new(segv.clone()) };
        assert_eq!(t.to_string(), "timed out after 5s (per-test limit): Python stacks dumped, then killed");
        assert_eq!(format!("{t:#}"), "timeout");
        assert_eq!(t.kind(), CrashKind::Timeout);
        assert_eq!(t.signal(), Some(11));
        assert_eq!(Verdict::of(2, 3).to_string(), "flaky (2/3)");
        assert_eq!(Verdict::of(3, 3).to_string(), "deterministic");
        assert_eq!(Worker::from_id("gw2").source(), "xdist:gw2");
        assert_eq!(Worker::from_id("main").source(), "runner");
    }
}
