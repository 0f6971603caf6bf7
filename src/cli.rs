//! Command-line definitions of `pytest-abort-wrap`, turned into a
//! [`run::Config`].

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use crate::run::{self, RetryMode};

/// Exit statuses, shown in `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    every selected test ran; none failed or crashed
  1    a test failed or crashed, or tests were left unrun
  2-5  pytest's own status of the last run (interrupted, internal error,
       usage error, no tests collected), when nothing failed or crashed
  64   bad usage of pytest-abort-wrap
  70   the wrapper could not work (state folder, spawn, ptrace loop)
  74   a crash record or report could not be written (the rest was)
  127  the command was not found
  128+N  the wrapper got signal N (SIGINT, SIGTERM, SIGHUP), forwarded it
       to pytest's process group, and wrote what had run";

/// Supervise pytest: name the test that crashed and how, keep every result
/// already earned, and run the rest of the suite.
#[derive(Debug, Parser)]
#[command(
    name = "pytest-abort-wrap",
    version,
    about = "Supervise pytest: name the test that crashed and how, keep every result, finish the suite.",
    after_help = EXIT_STATUS_HELP,
    arg_required_else_help = true
)]
pub struct WrapArgs {
    /// Append crash records (JSONL) here [env: PYTEST_ABORT_CRASHED_TESTS_LOG].
    #[arg(long, value_name = "PATH")]
    pub crash_log: Option<PathBuf>,

    /// Most pytest runs in all (the first included).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_runs: u32,

    /// After a crash: `resume` runs only the tests not yet finished;
    /// `deselect` reruns everything minus crashed tests (the original's way).
    #[arg(long, value_enum, default_value_t = RetryMode::Resume)]
    pub retry_mode: RetryMode,

    /// Supervise with waitpid and /proc scans instead of ptrace.
    #[arg(long)]
    pub no_ptrace: bool,

    /// Folder for markers, journals and the shim copy (default: a private
    /// temp folder, removed at the end unless --keep-state).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Keep the state folder.
    #[arg(long)]
    pub keep_state: bool,

    /// Leave processes that tests left behind running.
    #[arg(long)]
    pub keep_leftovers: bool,

    /// No progress lines or summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// The command: `pytest ...`, `python -m pytest ...`, or anything that
    /// runs pytest.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

impl WrapArgs {
    /// The run configuration.
    pub fn config(&self) -> run::Config {
        run::Config {
            command: self.command.clone(),
            max_runs: self.max_runs,
            retry_mode: self.retry_mode,
            ptrace: !self.no_ptrace,
            crash_log: self.crash_log.clone().or_else(|| {
                std::env::var_os("PYTEST_ABORT_CRASHED_TESTS_LOG").filter(|v| !v.is_empty()).map(PathBuf::from)
            }),
            state_dir: self.state_dir.clone(),
            keep_state: self.keep_state,
            keep_leftovers: self.keep_leftovers,
            verbose: !self.quiet,
        }
    }
}
