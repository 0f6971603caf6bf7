//! `pytest-abort-postprocess [--crash-log P] [--json-report P] [--html-report P] [--csv-report P] [--junit-xml P]`:
//! adds one failed entry per crashed test to each report that lacks it,
//! creating reports that do not exist. Running it twice changes nothing.

use std::path::PathBuf;

use clap::Parser;
use pytest_abort::cli_tools::PostprocessArgs as Args;
use pytest_abort::record;
use pytest_abort::reporter::terminal::{write_stderr, write_stdout};
use pytest_abort::reports::{self, Kind};

fn main() {
    reports::tune_allocator();
    let args = Args::parse();
    let Some(log) = record::crash_log_or_env(args.crash_log.as_deref()) else {
        write_stderr(
            "pytest-abort-postprocess: error: no crash log: pass --crash-log or set PYTEST_ABORT_CRASHED_TESTS_LOG\n",
        );
        std::process::exit(2);
    };
    if !log.exists() {
        // Nothing to add: no report is created or touched from nothing.
        write_stderr(&format!(
            "pytest-abort-postprocess: warning: {}: no such crash log; no report written\n",
            log.display()
        ));
        std::process::exit(0);
    }
    let targets: Vec<(Kind, PathBuf)> = args.reports.targets();
    // The log is streamed (read twice), never held whole: a huge one costs
    // time, not memory.
    let (unique, results) = match reports::postprocess_log(&log, &targets) {
        Ok(r) => r,
        Err(e) => {
            write_stderr(&format!("pytest-abort-postprocess: error: {e:#}\n"));
            std::process::exit(2);
        }
    };
    write_stdout(&format!("pytest-abort-postprocess: {unique} crashed tests in {}\n", log.display()));
    let mut failed = false;
    for ((kind, _), res) in targets.iter().zip(results) {
        match res {
            Ok(p) => {
                if let Some(note) = p.read_only_note() {
                    write_stderr(&format!("pytest-abort-postprocess: warning: {note}\n"));
                }
                write_stdout(&format!(
                    "{kind} {}: {} {} added\n",
                    p.path.display(),
                    if p.created { "created," } else { "patched," },
                    p.added
                ))
            }
            Err(e) => {
                failed = true;
                // Every report error starts with the report's path.
                write_stderr(&format!("pytest-abort-postprocess: error: {kind} report {e:#}\n"));
            }
        }
    }
    std::process::exit(if failed { 1 } else { 0 });
}
