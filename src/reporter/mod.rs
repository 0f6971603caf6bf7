//! Events and the reporters that show them.
//!
//! The run loop, the observer and reproduce/recheck do not print: they emit
//! [`Event`]s to [`Reporters`], and each reporter renders them its way:
//! [`terminal::Terminal`] on stderr (it owns quiet mode, escaping and output
//! errors: a write never panics and a full or closed stderr never stops the
//! run), [`jsonl::JsonLines`] as one JSON object a line for `--events PATH`,
//! [`github::GitHub`] as GitHub Actions annotations and a job summary.

pub mod github;
pub mod jsonl;
pub mod terminal;

use std::cell::RefCell;
use std::path::PathBuf;

use serde::Serialize;

use crate::record::CrashRecord;
use crate::summary::Summary;

/// Something that happened during a wrapper invocation.
///
/// Serialized with a `type` field naming the variant in snake case
/// (`run_started`, `test_crashed`, ...); the README lists every event.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A pytest run of the retry loop starts.
    RunStarted {
        /// 1-based run number.
        run: u32,
        /// Most runs in all.
        max_runs: u32,
        /// What the run is for, in words.
        purpose: String,
    },
    /// ptrace was refused; supervision goes on without it.
    PtraceRefused {
        /// Why, in words.
        reason: String,
    },
    /// A pytest process died in a test or outside one: its crash record,
    /// as the crash log holds it.
    TestCrashed(CrashRecord),
    /// A process a test left running when its pytest ended.
    Leftover {
        /// Its pid.
        pid: i32,
        /// Its command line.
        cmdline: String,
        /// False with `--keep-leftovers`.
        killed: bool,
    },
    /// A report file was written.
    ReportWritten {
        /// The file.
        path: PathBuf,
        /// Entries merged or added.
        added: usize,
        /// True when the file did not exist before.
        created: bool,
        /// Tests the written report holds (its own and those added).
        entries: usize,
    },
    /// A problem that did not stop the run.
    Warning {
        /// In words.
        message: String,
    },
    /// Something could not be done (a record or report not written).
    Error {
        /// In words.
        message: String,
    },
    /// A pytest run of the loop ended.
    RunFinished {
        /// 1-based run number.
        run: u32,
        /// How the pytest command ended: `exit 0`, `SIGSEGV`.
        how: String,
        /// The status a shell would show for it.
        exit_status: i32,
        /// Tests selected in the run.
        selected: usize,
        /// Tests that finished in the run.
        finished: usize,
        /// Crashes in the run.
        crashes: usize,
    },
    /// `--recheck-crashed` ran a crashed test alone again.
    Rechecked {
        /// The test.
        nodeid: String,
        /// `deterministic` or `flaky (k/N)`.
        verdict: String,
    },
    /// `--reproduce` starts a run.
    ReproduceRun {
        /// The test.
        nodeid: String,
        /// 1-based run.
        run: u32,
        /// Most runs.
        repeat: u32,
    },
    /// `--reproduce` is done.
    Reproduced {
        /// The test.
        nodeid: String,
        /// Runs made.
        runs: u32,
        /// Runs that crashed.
        crashed: u32,
        /// Whether pytest collected the test.
        found: bool,
        /// The first crash, with its forensics.
        first: Option<CrashRecord>,
    },
    /// The invocation ended: totals and the exit status.
    SessionFinished(Summary),
}

/// Renders events.
pub trait Reporter {
    /// Shows one event. Never panics; a reporter that cannot write keeps
    /// the failure for [`Reporter::failure`].
    fn report(&mut self, event: &Event);

    /// A write that failed, when the failure matters (a file the user asked
    /// for); `None` for best-effort outputs such as the terminal.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Every reporter of an invocation; events go to each in turn.
#[derive(Default)]
pub struct Reporters {
    sinks: RefCell<Vec<Box<dyn Reporter>>>,
}

impl std::fmt::Debug for Reporters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reporters({})", self.sinks.borrow().len())
    }
}

impl Reporters {
    /// No reporters: events are dropped.
    pub fn none() -> Self {
        Reporters::default()
    }

    /// Adds a reporter.
    pub fn with(self, r: impl Reporter + 'static) -> Self {
        self.sinks.borrow_mut().push(Box::new(r));
        self
    }

    /// Sends an event to every reporter.
    pub fn emit(&self, event: Event) {
        for r in self.sinks.borrow_mut().iter_mut() {
            r.report(&event);
        }
    }

    /// A warning, in words.
    pub fn warning(&self, message: impl Into<String>) {
        self.emit(Event::Warning { message: message.into() });
    }

    /// An error, in words.
    pub fn error(&self, message: impl Into<String>) {
        self.emit(Event::Error { message: message.into() });
    }

    /// The failures of reporters that write files the user asked for.
    pub fn failures(&self) -> Vec<String> {
        self.sinks.borrow().iter().filter_map(|r| r.failure()).collect()
    }
}
