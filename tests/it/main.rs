//! The integration tests: one test binary, one harness ([`util`]).
//!
//! Every test builds a pytest suite in a temp folder, runs the real
//! binaries on it with the project's venv Python (real processes that really
//! segfault, abort, hang and get killed), and checks what comes back: crash
//! records, reports read by their real consumers, exit statuses.

mod collect_reports;
mod completions;
mod crash_log_append;
mod csv_columns;
mod differential;
mod flaky;
mod forensics;
mod github;
mod gpu;
mod html_pages;
mod journal_entries;
mod lastfailed;
mod maxfail;
mod messages;
mod multi_gpu;
mod not_run;
mod output;
mod poison;
mod report_input;
mod reports;
mod resume;
mod retry_cli;
mod shard;
mod shim_cache;
mod slurm;
mod startup;
mod supervise;
mod util;
mod wrap;
mod wrap_process;
mod xdist_scopes;
