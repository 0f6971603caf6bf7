//! `pytest-abort-retry`: the original's command line and output, on the
//! wrapper's loop in deselect mode.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Parser;

use crate::fsutil;
use crate::model::Death;
use crate::record;
use crate::reporter::terminal::{write_stderr, write_stdout as print_out, Terminal};
use crate::reporter::{Event, Reporters};
use crate::run::{self, RetryMode};
use crate::summary::Summary;
use crate::supervise::Outcome;

/// Heading of the retry command's final summary, as the original prints it.
pub const RETRY_SUMMARY_HEADING: &str = "=== pytest-abort-retry summary ===";

/// crashed, until a run adds no new crash (the original's flags).
#[derive(Debug, Parser)]
#[command(
    name = "pytest-abort-retry",
    version,
    about = "Retry pytest runs by deselecting nodeids recorded as crashed in a JSONL crash log.",
    long_about = "Retry pytest runs by deselecting nodeids recorded as crashed in a JSONL crash log.\n\n\
                  Drop-in for the original pytest-abort-retry. Every run is supervised by the \
                  pytest-abort wrapper, so crashes of serial (non-xdist) runs are recorded and retried too.",
    after_help = "Exit status: the exit status of the last pytest run (as the original), 2 for bad usage \
                  (no command, no crash log, an unknown option, --max-runs below 1: one line on stderr), \
                  126 when the command cannot be executed, 127 when it is not found, 70 when the \
                  wrapper could not work."
)]
pub struct RetryArgs {
    /// Path to crashed-tests JSONL (default: PYTEST_ABORT_CRASHED_TESTS_LOG).
    #[arg(long, value_name = "PATH")]
    pub crash_log: Option<PathBuf>,

    /// Maximum number of pytest invocations (at least 1).
    #[arg(long, value_name = "N", default_value_t = 5, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub max_runs: i64,

    /// Truncate the crash log before the first run.
    #[arg(long)]
    pub clear_crash_log: bool,

    /// Pytest command to run (include 'pytest' and all args), after `--`.
    /// An option before it that is not one of the above is a usage error,
    /// not the command.
    #[arg(trailing_var_arg = true, value_name = "PYTEST_CMD")]
    pub pytest_cmd: Vec<OsString>,
}

impl RetryArgs {
    /// Parses the command line the original's way: a usage error is one
    /// line on stderr naming the option, and exit status 2.
    pub fn parse_or_exit() -> RetryArgs {
        match RetryArgs::try_parse() {
            Ok(a) => a,
            Err(e) if !e.use_stderr() => {
                let _ = e.print();
                std::process::exit(0);
            }
            Err(e) => {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or("bad usage");
                let msg = first.strip_prefix("error: ").unwrap_or(first);
                write_stderr(&format!("pytest-abort-retry: error: {msg}\n"));
                std::process::exit(2);
            }
        }
    }
}

/// Unique, trimmed, non-empty node ids of a crash log, first-seen order; a
/// missing or unreadable log has none.
pub fn crashed_nodeids(crash_log: &Path) -> Vec<String> {
    let records = record::read_crash_log(crash_log).unwrap_or_default();
    record::dedupe_by_nodeid(&records).into_iter().map(|r| r.key().to_string()).collect()
}

/// The original's final summary block (stdout), for the crash log as it is now.
pub fn retry_summary(crash_log: &Path, start_count: usize) -> String {
    let crashed = crashed_nodeids(crash_log);
    let new_since_start = crashed.len().saturating_sub(start_count);
    let mut s = format!(
        "\n{RETRY_SUMMARY_HEADING}\nCrash log: {}\nCrashed nodeids (unique): total={} (new since start={})\n",
        crash_log.display(),
        crashed.len(),
        new_since_start
    );
    if !crashed.is_empty() {
        s.push_str("\nCrashed nodeids:\n");
        for nid in &crashed {
            s.push_str(nid);
            s.push('\n');
        }
    }
    s
}

/// The status the original returns for a pytest run that ended this way:
/// the exit code, or for a signal death what Python's `SystemExit(-N)`
/// becomes (`256 - N`).
pub fn original_status(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Exited(c) => c,
        Outcome::Signaled { signal, .. } => (256 - signal) & 0xff,
        Outcome::Unknown => 1,
    }
}

/// Runs `pytest-abort-retry` and returns its exit status.
///
/// The loop is the wrapper's ([`run::run`] in [`RetryMode::Deselect`]): each
/// rerun is the same command minus every test that crashed so far, and it
/// stops when a run adds no new crashed node id or after `--max-runs` runs.
pub fn retry_main(args: &RetryArgs) -> i32 {
    let mut cmd = args.pytest_cmd.clone();
    if cmd.first().is_some_and(|a| a == "--") {
        cmd.remove(0);
    }
    if cmd.is_empty() {
        print_out("ERROR: provide a pytest command to run, e.g. `pytest-abort-retry -- pytest -n 8 tests`\n");
        return 2;
    }
    let Some(crash_log) = record::crash_log_or_env(args.crash_log.as_deref()) else {
        print_out("ERROR: --crash-log not set and PYTEST_ABORT_CRASHED_TESTS_LOG is empty\n");
        return 2;
    };
    if let Err(e) = prepare_crash_log(&crash_log, args.clear_crash_log) {
        write_stderr(&format!("pytest-abort-retry: error: {e:#}\n"));
        return 1;
    }
    let start_count = crashed_nodeids(&crash_log).len();
    let max_runs = u32::try_from(args.max_runs.max(1)).unwrap_or(u32::MAX);
    print_out(&format!(
        "\n=== pytest-abort-retry: run 1/{max_runs} ===\nCommand: {}\n",
        cmd.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    ));
    let cfg = run::Config {
        command: cmd,
        max_runs,
        retry_mode: RetryMode::Deselect,
        crash_log: Some(crash_log.clone()),
        ..Default::default()
    };
    let out = Reporters::none().with(Terminal::new(false));
    let session = match run::run(&cfg, &out) {
        Ok(s) => s,
        Err(e) => {
            write_stderr(&format!("pytest-abort-retry: error: {e:#}\n"));
            return crate::error::exit_code(&e);
        }
    };
    out.emit(Event::SessionFinished(Summary::of(&session, max_runs, Some(&crash_log))));
    for info in &session.runs {
        let shown = format!("{:#}", Death::from_end(info.outcome, None));
        print_out(&format!(
            "pytest-abort-retry: run {}/{max_runs}: {shown}, {} tests selected, {} crashed\n",
            info.number, info.selected, info.crashes
        ));
    }
    print_out(&retry_summary(&crash_log, start_count));
    if let Some(sig) = session.interrupted {
        return 128 + sig;
    }
    session.runs.last().map(|r| original_status(r.outcome)).unwrap_or(2)
}

fn prepare_crash_log(crash_log: &Path, clear: bool) -> Result<()> {
    fsutil::create_parent(crash_log)?;
    if clear {
        std::fs::write(crash_log, b"")
            .with_context(|| format!("{}: cannot clear the crash log", crash_log.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.jsonl");
        std::fs::write(
            &log,
            "{\"nodeid\": \"a.py::x\"}\n\nbad\n{\"nodeid\": \" a.py::x \"}\n{\"nodeid\": \"b.py::y\"}\n",
        )
        .unwrap();
        let s = retry_summary(&log, 1);
        assert!(s.starts_with("\n=== pytest-abort-retry summary ===\n"), "{s}");
        assert!(s.contains("Crashed nodeids (unique): total=2 (new since start=1)\n"), "{s}");
        assert!(s.ends_with("\nCrashed nodeids:\na.py::x\nb.py::y\n"), "{s}");
        let empty = retry_summary(&dir.path().join("none"), 0);
        assert!(!empty.contains("Crashed nodeids:\n"), "{empty}");
        assert_eq!(original_status(Outcome::Exited(3)), 3);
        assert_eq!(original_status(Outcome::Signaled { signal: 11, core_dumped: false }), 245);
    }
}
