//! `pytest-abort handle-abort` and `append-json|append-html|append-csv`:
//! the original's `handle_abort` and `append_abort_to_*` for runner scripts.
//! Every report edit goes through [`crate::reports`].

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use super::crash_info::{append_crash_info, crash_info_from_marker, parse_crash_info, record_from_info};
use crate::fsutil::create_parent as make_parent;
use crate::record;
use crate::reporter::terminal::write_stderr;
use crate::reports::{self, Kind};

/// Arguments of `pytest-abort handle-abort`: the original's
/// `handle_abort(json_file, html_file, last_running_file, testfile, crash_info=None)`.
#[derive(Debug, clap::Args)]
pub struct HandleAbortArgs {
    /// pytest-json-report file of the run (created when missing).
    #[arg(long, value_name = "PATH")]
    pub json_file: PathBuf,
    /// pytest-html file of the run (created when missing).
    #[arg(long, value_name = "PATH")]
    pub html_file: PathBuf,
    /// The run's marker file; read when no --crash-info is given, and removed.
    #[arg(long, value_name = "PATH")]
    pub last_running_file: PathBuf,
    /// The test file the run was given, without `.py`; anchors crash names
    /// that are not file-qualified (`<testfile>.py::<name>`).
    #[arg(long, value_name = "NAME")]
    pub testfile: String,
    /// Crash info (JSON object) to report instead of reading the marker.
    #[arg(long, value_name = "JSON")]
    pub crash_info: Option<String>,
}

/// The original's `handle_abort`: finds the crash (from `--crash-info`, or
/// the marker with no minimum duration), removes the marker, appends the
/// crash to `$PYTEST_ABORT_CRASHED_TESTS_LOG` (source `runner`) when set,
/// and adds it to the json and html reports. Returns whether there was a
/// crash to report.
///
/// As in the original, a problem with the html report is only a warning
/// (on stderr); a problem with the crash log or the json report is an error.
pub fn handle_abort(args: &HandleAbortArgs) -> Result<bool> {
    let info = match &args.crash_info {
        Some(text) => Some(parse_crash_info(text)?),
        None => crash_info_from_marker(&args.last_running_file),
    };
    match std::fs::remove_file(&args.last_running_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => write_stderr(&format!(
            "pytest-abort: warning: {}: cannot remove the marker: {e}\n",
            args.last_running_file.display()
        )),
    }
    let Some(info) = info.filter(|m| !m.is_empty()) else { return Ok(false) };
    if let Some(log) = record::crash_log_or_env(None) {
        append_crash_info(&log, &info, "runner")?;
    }
    let rec = record_from_info(&info, Some(&args.testfile))?;
    make_parent(&args.json_file)?;
    make_parent(&args.html_file)?;
    reports::patch_file(Kind::Json, &args.json_file, std::slice::from_ref(&rec))
        .with_context(|| format!("{}: cannot add the crash", args.json_file.display()))?;
    if let Err(e) = reports::patch_file(Kind::Html, &args.html_file, std::slice::from_ref(&rec)) {
        write_stderr(&format!("pytest-abort: warning: {}: cannot add the crash: {e:#}\n", args.html_file.display()));
    }
    Ok(true)
}

/// Arguments of `pytest-abort append-json|append-html|append-csv`: the
/// original's `append_abort_to_*` helpers.
#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    /// The report to add the crash to (created when missing).
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// Anchor a `test_name` that is not file-qualified to `<testfile>.py`
    /// (json and html, as the original); without it the info's `nodeid`
    /// (or `test_name`) is used as is.
    #[arg(long, value_name = "NAME")]
    pub testfile: Option<String>,
    /// The crash info, a JSON object with `test_name` and/or `nodeid`.
    #[arg(long, value_name = "JSON")]
    pub crash_info: String,
}

/// Adds one crash to one report; returns what was done. A crash already in
/// the report is not added again.
pub fn append(kind: Kind, args: &AppendArgs) -> Result<reports::Patched> {
    let info = parse_crash_info(&args.crash_info)?;
    let testfile = if kind == Kind::Csv { None } else { args.testfile.as_deref() };
    let rec = record_from_info(&info, testfile)?;
    make_parent(&args.file)?;
    reports::patch_file(kind, &args.file, std::slice::from_ref(&rec))
        .with_context(|| format!("{}: cannot add the crash", args.file.display()))
}
