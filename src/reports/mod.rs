//! Test reports that survive crashes: patch, create and merge the reports of
//! pytest-json-report, pytest-html 4.x, pytest-csv and JUnit XML.
//!
//! Every format is handled as text: the file is validated by a real parser,
//! then new entries are spliced in, so the rest of the file keeps its bytes
//! (key order, layout, the other entries). Every write goes through
//! [`crate::fsutil::atomic_write`].
//!
//! - [`patch_file`] / [`postprocess`]: one failed entry per crash record.
//! - [`complete`]: the wrapper's end step, one report per requested file
//!   holding every test of every run plus the crashes.
//! - [`sanitize_html_file`] / [`sanitize_paths`]: the original's
//!   `data-jsonblob` repair for pytest_html_merger.

/// Inside a serde `Visitor`: the scalar `visit_*` methods, each returning
/// `$out`, so a visitor that reads one shape of JSON value skips the others
/// (shared by the json and html readers).
macro_rules! skip_other_types {
    ($out:expr) => {
        fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
            Ok($out)
        }
    };
}

mod csv;
mod doc;
mod html;
mod html_page;
mod json;
mod junit;
mod merge;
mod patch;
mod sanitize;
pub mod text;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context as _, Result};

use crate::journal::{Done, RunReports};
use crate::record::{self, CrashRecord};

pub(crate) use doc::Doc;
pub use html_page::{use_python, PYTHON_ENV};
pub use merge::complete;
pub use sanitize::{sanitize_html_file, sanitize_paths, DEFAULT_GLOB};

/// Node ids (or other keys) of a report's tests: a set with a fast hash
/// (foldhash; these sets take every test of a merge, and are never
/// iterated into output, so their order does not matter).
pub(crate) type IdSet<T = String> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// pytest-json-report (`--json-report-file`).
    Json,
    /// pytest-html 4.x (`--html`).
    Html,
    /// pytest-csv (`--csv`).
    Csv,
    /// JUnit XML (`--junitxml`).
    Junit,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 4] = [Kind::Json, Kind::Html, Kind::Csv, Kind::Junit];

    /// The name used on command lines and in journals.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Html => "html",
            Kind::Csv => "csv",
            Kind::Junit => "junit",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "json" => Kind::Json,
            "html" => Kind::Html,
            "csv" => Kind::Csv,
            "junit" | "junitxml" | "xml" => Kind::Junit,
            other => bail!("unknown report kind {other:?} (json, html, csv, junit)"),
        })
    }
}

/// What the wrapper's end step ([`complete`]) merges, built by the run loop
/// from its session: every crash, every finished test, and per run the
/// report files pytest was asked for and where that run's copies went.
#[derive(Debug, Clone, Copy)]
pub struct RunOutput<'a> {
    /// Every crash record, in order.
    pub records: &'a [CrashRecord],
    /// Every finished test, first finish wins.
    pub done: &'a [Done],
    /// Collection reports that did not pass, one per node id: a report the
    /// wrapper creates lists them as the report plugin would have.
    pub collect: &'a [crate::journal::CollectReport],
    /// The report files of each run.
    pub runs: &'a [RunReports],
    /// `collected` and `deselected` as one plain run counts them (see
    /// `run::Session::counts`), when known.
    pub counts: Option<(usize, usize)>,
    /// Selected tests that neither finished nor crashed. What a run's
    /// report holds for one of them is dropped: the test was cut short
    /// (an interrupt mid-test leaves its passed setup, which is not a pass).
    pub not_run: &'a [String],
    /// Why the `not_run` tests did not run, when the wrapper stopped them
    /// (interrupted, `--max-runs` used up, a shard missing): each is then
    /// listed as a skip with this reason ([`Entry::not_run`]). `None`:
    /// they are left out, as plain pytest leaves out the tests it did not
    /// reach (after `-x`, a collection error).
    pub not_run_reason: Option<&'a str>,
    /// The exit status of the whole run (the wrapper's or the shard
    /// merge's): the merged JSON report's `exitcode`, when known.
    pub exit_status: Option<i32>,
}

/// What a report write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patched {
    /// The report file.
    pub path: PathBuf,
    /// Entries added (crashes, and for [`complete`] tests merged in).
    pub added: usize,
    /// True when the file did not exist before.
    pub created: bool,
    /// Tests the report holds once written (its own and those added).
    pub entries: usize,
    /// The mode of the report when it was read-only and was replaced
    /// (see [`crate::fsutil::Written`]): callers say so.
    pub replaced_read_only: Option<u32>,
}

impl Patched {
    /// One line for the user when a read-only report was replaced.
    pub fn read_only_note(&self) -> Option<String> {
        let written = crate::fsutil::Written { target: self.path.clone(), replaced_read_only: self.replaced_read_only };
        written.read_only_note()
    }
}

/// One test result to put into a report, from a crash record or a journal
/// `Done` entry, in the terms every format needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Entry {
    /// Trimmed node id.
    pub nodeid: String,
    /// passed, failed, error, skipped, xfailed, xpassed.
    pub outcome: String,
    /// The phase that decided the outcome (setup, call, teardown).
    pub when: String,
    /// Seconds.
    pub duration: f64,
    /// Full failure text (may be empty).
    pub longrepr: String,
    /// One-line message.
    pub message: String,
    /// The file part of the node id (or the location's path).
    pub path: String,
    /// Line number (0-based as pytest reports locations), when known.
    pub lineno: Option<u64>,
    /// Captured output `(title, text)`.
    pub sections: Vec<(String, String)>,
    /// True for a crash.
    pub crash: bool,
    /// A crash's rechecks (`--recheck-crashed`), in order.
    pub rechecks: Vec<record::RecheckRun>,
    /// A flaky crash that `--flaky-result pass` does not count as a failure.
    pub flaky_pass: bool,
    /// The entries the report plugins wrote for this test in the process
    /// that ran it (a journal entry's): used as they are.
    pub plugin: Option<Box<crate::journal::PluginEntries>>,
    /// The test's `record_property` values `(name, value)`, in order.
    pub props: Vec<(String, String)>,
    /// Where its failure was raised (pytest's `reprcrash`), when the
    /// journal says.
    pub reprcrash: Option<crate::journal::ReprCrash>,
    /// junitxml's `message` attribute for its failure, when the journal
    /// says (else [`Entry::message`]).
    pub junit_message: Option<String>,
}

impl Entry {
    /// The synthetic failed entry for a crash.
    pub fn from_crash(r: &CrashRecord) -> Entry {
        let nodeid = r.key().to_string();
        let how = crash_headline(r);
        let reason = one_line(&r.reason);
        let message = if reason.is_empty() {
            how
        } else if reason.contains(&r.how()) {
            reason
        } else {
            format!("{how}: {reason}")
        };
        // A crash the rechecks did not see every time says so in every format.
        let message = match r.recheck.as_deref() {
            Some(v) if r.is_flaky() => format!("[{v}] {message}"),
            _ => message,
        };
        Entry {
            path: record::split_nodeid(&nodeid).first().map(|s| s.to_string()).unwrap_or_default(),
            nodeid,
            outcome: "failed".into(),
            // The phase it died in; deaths outside a test count as call.
            when: match r.phase.as_str() {
                p @ ("setup" | "teardown") => p.into(),
                _ => "call".into(),
            },
            duration: if r.duration.is_finite() && r.duration > 0.0 { r.duration } else { 0.0 },
            longrepr: crash_text(r),
            message,
            lineno: None,
            sections: Vec::new(),
            crash: true,
            rechecks: r.rechecks.clone(),
            flaky_pass: r.flaky_passes(),
            plugin: None,
            props: Vec::new(),
            reprcrash: None,
            junit_message: None,
        }
    }

    /// A finished test from the shim's journal.
    pub fn from_done(d: &Done) -> Entry {
        let nodeid = d.nodeid.trim().to_string();
        let longrepr = d.longrepr.clone().unwrap_or_default();
        // pytest's own message of the failure; from a journal without it,
        // the report's last `E` line.
        let message = match &d.reprcrash {
            Some(rc) => rc.message.clone(),
            None => longrepr
                .lines()
                .rev()
                .find(|l| l.starts_with("E "))
                .map(|l| l.trim_start_matches('E').trim().to_string())
                .or_else(|| longrepr.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()))
                .unwrap_or_default(),
        };
        let (path, lineno) = match &d.location {
            Some((p, l, _)) => (p.clone(), *l),
            None => (record::split_nodeid(&nodeid).first().map(|s| s.to_string()).unwrap_or_default(), None),
        };
        Entry {
            nodeid,
            outcome: if d.outcome.is_empty() { "passed".into() } else { d.outcome.clone() },
            when: if d.when.is_empty() { "call".into() } else { d.when.clone() },
            duration: if d.duration.is_finite() && d.duration > 0.0 { d.duration } else { 0.0 },
            longrepr,
            message,
            path,
            lineno,
            sections: d.sections.clone(),
            crash: false,
            rechecks: Vec::new(),
            flaky_pass: false,
            plugin: d.reports.clone(),
            props: d.props.clone(),
            reprcrash: d.reprcrash.as_deref().cloned(),
            junit_message: d.junit_message.clone(),
        }
    }

    /// A test no run reached, listed as pytest lists a test skipped at
    /// setup: outcome `skipped`, `reason` as its message (the one builder
    /// of not-run entries: the wrapper's and the shard merge's).
    pub fn not_run(nodeid: &str, reason: &str) -> Entry {
        let nodeid = nodeid.trim().to_string();
        Entry {
            path: record::split_nodeid(&nodeid).first().map(|s| s.to_string()).unwrap_or_default(),
            nodeid,
            outcome: "skipped".into(),
            when: "setup".into(),
            longrepr: format!("Skipped: {reason}"),
            message: reason.to_string(),
            ..Entry::default()
        }
    }

    /// Where its failure was raised, as pytest-json-report's `crash` gives
    /// it: the file pytest located it in, else the test's own.
    pub fn crash_path(&self) -> &str {
        self.reprcrash.as_ref().map_or(&self.path, |rc| &rc.path)
    }

    /// The 1-based line of [`Entry::crash_path`] (the test's own line when
    /// pytest did not locate the failure; 0 when unknown).
    pub fn crash_lineno(&self) -> u64 {
        self.reprcrash.as_ref().map_or(self.lineno.map_or(0, |l| l + 1), |rc| rc.lineno)
    }

    /// The test's name: the last part of the node id (`test_x[param]`).
    pub fn name(&self) -> String {
        record::split_nodeid(&self.nodeid).last().map(|s| s.to_string()).unwrap_or_default()
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first line of a crash's text: `Crashed: SIGSEGV (signal 11, core
/// dumped)`, `Exited with code 3 during a test`, `Timed out`.
pub fn crash_headline(r: &CrashRecord) -> String {
    r.death().headline()
}

/// The full text of a crash as reports show it: how it died, the reason,
/// worker, GPU, duration, native location and the Python traceback.
pub fn crash_text(r: &CrashRecord) -> String {
    use std::fmt::Write as _;
    let mut s = crash_headline(r);
    s.push('\n');
    let mut line = |k: &str, v: &str| {
        if !v.trim().is_empty() {
            let _ = writeln!(s, "{k}: {v}");
        }
    };
    line("Reason", r.reason.trim());
    line("Phase", &r.phase);
    let worker = match (r.worker.as_str(), r.pid.as_str()) {
        ("", "") => String::new(),
        (w, "") => w.to_string(),
        ("", p) => format!("pid {p}"),
        (w, p) => format!("{w} (pid {p})"),
    };
    line("Worker", &worker);
    line("GPU", &r.gpu_id);
    line("Duration", &if r.duration > 0.0 { format!("{:.3} s", r.duration) } else { String::new() });
    line("Run", &if r.run > 0 { r.run.to_string() } else { String::new() });
    let fault = match (&r.si_code, &r.fault_addr) {
        (Some(c), Some(a)) => format!("{c} at {a}"),
        (Some(c), None) => c.clone(),
        (None, Some(a)) => format!("address {a}"),
        (None, None) => String::new(),
    };
    line("Fault", &fault);
    line("Location", r.location.as_deref().unwrap_or(""));
    line("Peak memory", &r.peak_rss_kb.map(|k| format!("{k} KiB")).unwrap_or_default());
    if r.oom_suspected == Some(true) {
        line("Note", "the kernel's OOM killer is suspected");
    }
    line("Recheck", r.recheck.as_deref().unwrap_or(""));
    line("Crash time", &r.crash_time);
    if let Some(tb) = r.traceback.as_deref().filter(|t| !t.trim().is_empty()) {
        s.push_str("\nPython traceback at the crash:\n");
        s.push_str(tb.trim_end());
        s.push('\n');
    }
    s
}

/// The UTF-8 byte order mark some editors and tools put first.
const BOM: &str = "\u{feff}";

/// Reads a report: `Ok(None)` when missing; a UTF-8 BOM at the start is
/// dropped (see [`read_report_bom`]).
fn read_report(path: &Path) -> Result<Option<String>> {
    Ok(read_report_bom(path)?.map(|(_, text)| text))
}

/// Sets the C allocator up for a process that reads reports of megabytes
/// on several threads (the report tools call it first in `main`): each
/// heap grows 64 MiB of address space at a time (pages are still only
/// used as they are touched). glibc's heaps of other threads otherwise
/// grow by one `mprotect` per allocation past their end, each taking the
/// process's memory-map lock against the other threads' page faults:
/// patching the four reports of a 5,000-test run took 38.8 ms with them,
/// 32.4 ms without (hyperfine, 40 runs; BENCHMARKS.md section 14).
/// Elsewhere (musl) nothing changes.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called
    // before any other thread of the process exists.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Reads a report: `Ok(None)` when missing, else whether it started with a
/// UTF-8 BOM and its text without it (every format's parser sees the same
/// text with or without one; a patched file keeps its BOM).
fn read_report_bom(path: &Path) -> Result<Option<(bool, String)>> {
    match crate::fsutil::read_whole(path) {
        Ok(b) => {
            let mut text = String::from_utf8(b).with_context(|| format!("{}: not UTF-8 text", path.display()))?;
            let bom = text.starts_with(BOM);
            if bom {
                text.drain(..BOM.len());
            }
            Ok(Some((bom, text)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("{}: cannot read", path.display()))),
    }
}

/// Adds one failed entry per crashed test the report lacks (records
/// deduplicated by trimmed node id, first wins); returns how many.
fn add_crashes<D: Doc>(doc: &mut D, records: &[CrashRecord]) -> usize {
    let mut added = 0;
    for r in record::dedupe_by_nodeid(records) {
        if !doc.has(r.key()) {
            doc.add(&Entry::from_crash(r));
            added += 1;
        }
    }
    added
}

/// Add one failed entry per crash record (dedupe by trimmed nodeid, first
/// wins, skip empty nodeid) missing from the report; create the report when
/// absent; idempotent (byte-identical on rerun); atomic write via
/// [`crate::fsutil::AtomicFile`]; error (file untouched) when the report is
/// invalid for its format.
pub fn patch_file(kind: Kind, path: &Path, records: &[CrashRecord]) -> Result<Patched> {
    let (_, mut results) = patch::patch_all(records, &[(kind, path.to_path_buf())])?;
    results.pop().expect("one result per target")
}

/// Patch every target; per-file errors collected, others still patched.
pub fn postprocess(records: &[CrashRecord], targets: &[(Kind, PathBuf)]) -> Vec<Result<Patched>> {
    let (_, results) = patch::patch_all(records, targets).expect("records in memory cannot fail to read");
    results
}

/// [`postprocess`] from a crash log file, read as a stream (twice), so
/// memory stays small however long the log is: returns the number of
/// distinct crashed tests in the log and per target what was done. An
/// error reading the log fails the whole call, touching no report.
pub fn postprocess_log(log: &Path, targets: &[(Kind, PathBuf)]) -> Result<(usize, Vec<Result<Patched>>)> {
    patch::patch_all(&patch::LogFile(log), targets)
}

/// Entries rendered by every format's snapshot tests: a fixed crash record.
#[cfg(test)]
pub(crate) fn sample_record() -> CrashRecord {
    CrashRecord {
        test_name: "test_p[<img src=x onerror=alert(1)>]".into(),
        nodeid: "tests/test_gpu.py::TestK::test_p[<img src=x onerror=alert(1)>]".into(),
        reason: "crashed with SIGSEGV (segmentation fault) during call".into(),
        crash_time: "2026-01-02T03:04:05.000006".into(),
        duration: 1.25,
        gpu_id: "0".into(),
        pid: "4242".into(),
        source: "xdist:gw1".into(),
        signal: Some(11),
        signal_name: Some("SIGSEGV".into()),
        worker: "gw1".into(),
        run: 1,
        phase: "call".into(),
        si_code: Some("SEGV_MAPERR".into()),
        fault_addr: Some("0x0".into()),
        location: Some("libcuda.so.1+0x1234".into()),
        traceback: Some("Fatal Python error: Segmentation fault\n\n  File \"tests/test_gpu.py\", line 9 in test_p\n</td></tr><script>alert(2)</script>".into()),
        ..Default::default()
    }
}
