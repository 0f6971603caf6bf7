//! Drop-in compatibility with the original Python `pytest-abort`: the
//! `pytest-abort-retry` command line and the pieces of its Python API that
//! runner scripts call (`handle_abort` and the `append_abort_to_*` helpers),
//! which the Python shim forwards to `pytest-abort` subcommands.
//!
//! Report formats are not handled here: every report edit goes through
//! [`crate::reports`].

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use serde_json::{Map, Value};

use crate::model::Death;
use crate::record::{self, CrashRecord};
use crate::reports::{self, Kind};
use crate::run::{self, RetryMode};
use crate::supervise::Outcome;
use crate::{fsutil, marker, summary};

/// The generic reason the original writes for every crash it finds from a
/// marker (it cannot know the signal).
pub const GENERIC_REASON: &str = "Test crashed (segfault, abort, or fatal error)";

/// Heading of the retry command's final summary, as the original prints it.
pub const RETRY_SUMMARY_HEADING: &str = "=== pytest-abort-retry summary ===";

// --------------------------------------------------------------------------
// pytest-abort-retry
// --------------------------------------------------------------------------

/// `pytest-abort-retry`: run pytest, and rerun it without the tests that
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
                let _ = writeln!(std::io::stderr(), "pytest-abort-retry: error: {msg}");
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

fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
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
    let crash_log =
        args.crash_log.clone().filter(|p| !p.as_os_str().is_empty()).or_else(|| {
            std::env::var_os("PYTEST_ABORT_CRASHED_TESTS_LOG").filter(|v| !v.is_empty()).map(PathBuf::from)
        });
    let Some(crash_log) = crash_log else {
        print_out("ERROR: --crash-log not set and PYTEST_ABORT_CRASHED_TESTS_LOG is empty\n");
        return 2;
    };
    if let Err(e) = prepare_crash_log(&crash_log, args.clear_crash_log) {
        eprintln!("pytest-abort-retry: error: {e:#}");
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
        ptrace: true,
        crash_log: Some(crash_log.clone()),
        state_dir: None,
        keep_state: false,
        keep_leftovers: false,
        verbose: true,
        ..Default::default()
    };
    let session = match run::run(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pytest-abort-retry: error: {e:#}");
            return crate::error::exit_code(&e);
        }
    };
    eprint!("{}", summary::render(&session, max_runs, Some(&crash_log)));
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

/// Creates the folder a report goes into, when it is missing.
fn make_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => {
            std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create the folder", parent.display()))
        }
        None => Ok(()),
    }
}

fn prepare_crash_log(crash_log: &Path, clear: bool) -> Result<()> {
    if let Some(parent) = crash_log.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create the folder", parent.display()))?;
    }
    if clear {
        std::fs::write(crash_log, b"")
            .with_context(|| format!("{}: cannot clear the crash log", crash_log.display()))?;
    }
    Ok(())
}

// --------------------------------------------------------------------------
// handle_abort and the append helpers
// --------------------------------------------------------------------------

/// The node id the original puts into reports for a crash: `test_name` as
/// is when it is file-qualified (`path/x.py::...`), else anchored to the
/// file the runner was running: `<testfile>.py::<test_name>`.
pub fn anchored_nodeid(test_name: &str, testfile: &str) -> String {
    if let Some((left, _)) = test_name.split_once("::") {
        if left.ends_with(".py") {
            return test_name.to_string();
        }
    }
    format!("{testfile}.py::{test_name}")
}

/// Crash info from a marker file, the original's `check_for_crash_file`
/// with a minimum duration of 0 (a quick crash is still a crash).
///
/// `None` when there is no marker, when it does not say `running`, or when
/// it cannot be read; a marker that is not valid JSON is removed, as the
/// original does.
pub fn crash_info_from_marker(path: &Path) -> Option<Map<String, Value>> {
    let m = match marker::read_marker(path) {
        Ok(Some(m)) => m,
        Ok(None) => return None,
        Err(marker::MarkerError::Garbage(_)) => {
            let _ = std::fs::remove_file(path);
            return None;
        }
        Err(marker::MarkerError::Unreadable(_)) => return None,
    };
    if !m.is_running() {
        return None;
    }
    let Some(duration) = m.elapsed_secs() else {
        // The original cannot parse the start time either: invalid marker.
        let _ = std::fs::remove_file(path);
        return None;
    };
    let nodeid = if !m.nodeid.is_empty() {
        m.nodeid.clone()
    } else if !m.test_name.is_empty() {
        m.test_name.clone()
    } else {
        "unknown_test".to_string()
    };
    let mut info = Map::new();
    info.insert("test_name".into(), Value::from(nodeid.clone()));
    info.insert("test_class".into(), Value::from(record::test_class_of(&nodeid)));
    info.insert("nodeid".into(), Value::from(nodeid));
    info.insert("reason".into(), Value::from(GENERIC_REASON));
    info.insert("crash_time".into(), Value::from(record::now_iso()));
    info.insert("duration".into(), Value::from(duration));
    info.insert("gpu_id".into(), Value::from(if m.gpu_id.is_empty() { "unknown".to_string() } else { m.gpu_id }));
    info.insert("pid".into(), Value::from(m.pid.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into())));
    if let Some(phase) = m.phase.filter(|p| !p.is_empty()) {
        info.insert("phase".into(), Value::from(phase));
    }
    Some(info)
}

/// Parses a `--crash-info` argument: a JSON object.
pub fn parse_crash_info(text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text).context("--crash-info is not valid JSON")? {
        Value::Object(m) => Ok(m),
        other => bail!("--crash-info must be a JSON object, got {}", kind_of(&other)),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Appends a crash-info object to a JSONL crash log as the original's
/// `append_crash_to_jsonl` does: every field kept, plus `source` and
/// `logged_at`, one line, under an exclusive lock.
pub fn append_crash_info(crash_log: &Path, info: &Map<String, Value>, source: &str) -> Result<()> {
    let mut line = info.clone();
    line.insert("source".into(), Value::from(source));
    line.insert("logged_at".into(), Value::from(record::now_iso()));
    let mut text = serde_json::to_string(&Value::Object(line)).context("cannot serialize crash info")?;
    text.push('\n');
    if let Some(parent) = crash_log.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create the folder", parent.display()))?;
    }
    fsutil::append_locked(crash_log, text.as_bytes())
}

/// Turns crash info (the original's dict) into a record for the report
/// patchers, with the node id the original would show:
/// [`anchored_nodeid`] of `test_name` when `testfile` is given, else
/// `nodeid` (or `test_name`) as is. The original's `abort_time` stands in
/// for a missing `crash_time`.
pub fn record_from_info(info: &Map<String, Value>, testfile: Option<&str>) -> Result<CrashRecord> {
    let mut rec: CrashRecord =
        serde_json::from_value(Value::Object(info.clone())).context("crash info has fields of the wrong type")?;
    let text = |k: &str| info.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let nodeid = match testfile {
        Some(tf) => {
            let Some(name) = info.get("test_name").and_then(Value::as_str) else {
                bail!("crash info has no test_name");
            };
            anchored_nodeid(name, tf)
        }
        None => match text("nodeid").or_else(|| text("test_name")) {
            Some(n) => n.to_string(),
            None => bail!("crash info has neither nodeid nor test_name"),
        },
    };
    rec.nodeid = nodeid;
    if rec.test_name.trim().is_empty() {
        rec.test_name = rec.nodeid.clone();
    }
    if rec.crash_time.is_empty() {
        if let Some(t) = text("abort_time") {
            rec.crash_time = t.to_string();
        }
    }
    if rec.reason.is_empty() {
        rec.reason = GENERIC_REASON.to_string();
    }
    if rec.gpu_id.is_empty() {
        rec.gpu_id = "unknown".to_string();
    }
    Ok(rec)
}

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
        Err(e) => {
            eprintln!("pytest-abort: warning: {}: cannot remove the marker: {e}", args.last_running_file.display())
        }
    }
    let Some(info) = info.filter(|m| !m.is_empty()) else { return Ok(false) };
    if let Some(log) = std::env::var_os("PYTEST_ABORT_CRASHED_TESTS_LOG").filter(|v| !v.is_empty()) {
        append_crash_info(Path::new(&log), &info, "runner")?;
    }
    let rec = record_from_info(&info, Some(&args.testfile))?;
    make_parent(&args.json_file)?;
    make_parent(&args.html_file)?;
    reports::patch_file(Kind::Json, &args.json_file, std::slice::from_ref(&rec))
        .with_context(|| format!("{}: cannot add the crash", args.json_file.display()))?;
    if let Err(e) = reports::patch_file(Kind::Html, &args.html_file, std::slice::from_ref(&rec)) {
        eprintln!("pytest-abort: warning: {}: cannot add the crash: {e:#}", args.html_file.display());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_like_the_original() {
        assert_eq!(anchored_nodeid("tests/a.py::T::t", "x"), "tests/a.py::T::t");
        assert_eq!(anchored_nodeid("T::t", "tests/a"), "tests/a.py::T::t");
        assert_eq!(anchored_nodeid("t[a::b]", "a"), "a.py::t[a::b]");
    }

    #[test]
    fn marker_with_zero_min_duration() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        std::fs::write(
            &p,
            format!(
                r#"{{"test_name": "t", "nodeid": "a.py::K::t", "start_time": "{}", "status": "running", "pid": 7, "gpu_id": "1"}}"#,
                record::now_iso()
            ),
        )
        .unwrap();
        let info = crash_info_from_marker(&p).unwrap();
        assert_eq!(info["test_name"], "a.py::K::t");
        assert_eq!(info["test_class"], "K");
        assert_eq!(info["pid"], "7");
        assert_eq!(info["reason"], GENERIC_REASON);
        assert!(info["duration"].as_f64().unwrap() < 5.0);
        std::fs::write(&p, r#"{"status": "idle"}"#).unwrap();
        assert!(crash_info_from_marker(&p).is_none());
        assert!(p.exists());
        std::fs::write(&p, "{garbage").unwrap();
        assert!(crash_info_from_marker(&p).is_none());
        assert!(!p.exists(), "an invalid marker is removed, as the original does");
        assert!(crash_info_from_marker(&dir.path().join("none")).is_none());
    }

    #[test]
    fn record_from_original_info() {
        let info =
            parse_crash_info(r#"{"test_name": "test_x", "abort_time": "T", "pid": 3, "duration": "1.5"}"#).unwrap();
        let r = record_from_info(&info, Some("dir/f")).unwrap();
        assert_eq!(r.nodeid, "dir/f.py::test_x");
        assert_eq!(r.crash_time, "T");
        assert_eq!(r.pid, "3");
        assert_eq!(r.duration, 1.5);
        assert_eq!(r.reason, GENERIC_REASON);
        let r = record_from_info(&info, None).unwrap();
        assert_eq!(r.nodeid, "test_x");
        assert!(record_from_info(&parse_crash_info("{}").unwrap(), None).is_err());
        assert!(parse_crash_info("[1]").is_err());
    }

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

    #[test]
    fn embedded_shim_is_the_whole_package() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shim/pytest_abort");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".py"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = crate::shim::FILES.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "src/shim.rs FILES must list every module of shim/pytest_abort");
    }
}
