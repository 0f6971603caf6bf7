//! Command-line definitions of `pytest-abort` (the toolbox) and
//! `pytest-abort-postprocess`, in the library so that their completions and
//! man pages ([`crate::completions`]) come from the same definitions as the
//! binaries' parsing. `pytest-abort-wrap`'s are in [`crate::cli`],
//! `pytest-abort-retry`'s in [`crate::compat`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{compat, reports};

/// pytest-abort tools: report and crash-file commands for runner scripts,
/// shell completions and man pages.
#[derive(Debug, Parser)]
#[command(name = "pytest-abort", version, arg_required_else_help = true)]
pub struct ToolsCli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub cmd: ToolsCmd,
}

/// The subcommands of `pytest-abort`.
#[derive(Debug, Subcommand)]
pub enum ToolsCmd {
    /// Repair pytest-html reports' data-jsonblob so pytest_html_merger can
    /// read them (files, or folders meaning their files matching --glob).
    SanitizeHtml {
        /// HTML files or folders.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Which files of a folder to sanitize.
        #[arg(long, default_value = reports::DEFAULT_GLOB, value_name = "GLOB")]
        glob: String,
    },
    /// The original's handle_abort for runner scripts: report the crash of a
    /// per-file pytest run (marker or --crash-info) into its json and html
    /// reports and the crash log. Prints true/false; exit 0 when a crash
    /// was reported, 1 when there was none, 2 on error.
    HandleAbort(compat::HandleAbortArgs),
    /// Merge the --out-dir folders of shards into one crash log, one report
    /// per format and one summary.json in OUT_DIR. Exit status: 0 all shards
    /// there and nothing failed, 1 a test failed, crashed or was not run, 2 a
    /// shard folder is missing or incomplete (unless --allow-missing), 64 bad
    /// usage, 74 an output could not be written.
    Merge(crate::shard::merge::MergeArgs),
    /// Add one crash (the original's abort info, JSON) to a pytest-json-report file.
    AppendJson(compat::AppendArgs),
    /// Add one crash (the original's abort info, JSON) to a pytest-html report.
    AppendHtml(compat::AppendArgs),
    /// Add one crash (the original's abort info, JSON) to a pytest-csv report.
    AppendCsv(compat::AppendArgs),
    /// Print the shell completions of the pytest-abort commands (all four,
    /// or --command's), or write one file per command into --out-dir under
    /// the name the shell looks for.
    Completions(crate::completions::CompletionsArgs),
    /// Print the man page of pytest-abort-wrap (or --command's), or write
    /// all four pages into --out-dir.
    Manpage(crate::completions::ManpageArgs),
}

/// Add the crashed tests of a crash log to pytest reports as failed tests.
#[derive(Debug, Parser)]
#[command(name = "pytest-abort-postprocess", version)]
pub struct PostprocessArgs {
    /// Crash log (JSONL) [env: PYTEST_ABORT_CRASHED_TESTS_LOG].
    #[arg(long, value_name = "PATH")]
    pub crash_log: Option<PathBuf>,
    /// The reports to add the crashes to.
    #[command(flatten)]
    pub reports: crate::cli::ReportArgs,
}
