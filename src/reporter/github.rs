//! GitHub Actions output, on when `GITHUB_ACTIONS=true` (off with
//! `--no-ci-annotations`): one `::error` workflow command per crash, which
//! GitHub shows as an annotation on the test's line, and a Markdown job
//! summary (a table of the crashes, the totals, the report files) appended
//! to `$GITHUB_STEP_SUMMARY`.
//!
//! Every string from a test is escaped: for workflow commands as the runner
//! decodes them (`%`, `\r`, `\n` in the message; also `:` and `,` in
//! properties), for Markdown by a backslash before every ASCII punctuation
//! character (GitHub Flavored Markdown's escape), so a node id can neither
//! end a command early, add a property, break out of a table cell, nor
//! inject HTML.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::terminal::{write_stderr, write_stdout};
use super::{Event, Reporter};
use crate::record::{split_nodeid, CrashRecord};
use crate::summary::Summary;

/// Escapes a workflow command's message (the part after `::`).
pub fn escape_data(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            // Other control characters (ESC and the like) would act on the log viewer.
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a workflow command's property value (`file=`, `title=`).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Escapes text for a Markdown table cell: a backslash before every ASCII
/// punctuation character, and line breaks as spaces.
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// The test's function name without parameters (`test_x` of `test_x[3]`).
fn function_name(r: &CrashRecord) -> &str {
    let name = split_nodeid(r.key()).last().copied().unwrap_or("");
    name.split('[').next().unwrap_or(name)
}

/// The file part of the node id (`tests/test_x.py`).
fn nodeid_file(r: &CrashRecord) -> &str {
    split_nodeid(r.key()).first().copied().unwrap_or("")
}

/// The test's frame in the Python stacks at death: the most recent frame of
/// the test's function in the test's file (faulthandler lists the most
/// recent call first), else the most recent frame in the test's file.
pub fn stack_location(r: &CrashRecord) -> Option<(String, u64)> {
    let tb = r.traceback.as_deref()?;
    let file = nodeid_file(r);
    let frames: Vec<(&str, u64, &str)> = tb
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("File \"")?;
            let (path, rest) = rest.split_once("\", line ")?;
            let (line, func) = rest.split_once(" in ").unwrap_or((rest, ""));
            Some((path, line.trim().parse().ok()?, func.trim()))
        })
        .filter(|(path, _, _)| !file.is_empty() && path.ends_with(file))
        .collect();
    let func = function_name(r);
    frames.iter().find(|(_, _, f)| *f == func).or(frames.first()).map(|(p, l, _)| (p.to_string(), *l))
}

/// The line of `def <test>` in the test's file (1-based), for a crash whose
/// stacks do not show the test's frame.
pub fn definition_line(path: &Path, r: &CrashRecord) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let func = function_name(r);
    let class = if r.test_class.is_empty() { None } else { r.test_class.rsplit("::").next() };
    let mut in_class = class.is_none();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(c) = class {
            if t.starts_with(&format!("class {c}(")) || t.starts_with(&format!("class {c}:")) {
                in_class = true;
            }
        }
        let def = t.strip_prefix("async ").unwrap_or(t);
        if in_class && def.starts_with(&format!("def {func}(")) {
            return Some(i as u64 + 1);
        }
    }
    None
}

/// A path as GitHub wants it in an annotation: relative to the workspace
/// when it lies inside it.
fn workspace_relative(path: &Path, workspace: Option<&Path>) -> String {
    match workspace.and_then(|w| path.strip_prefix(w).ok()) {
        Some(rel) => rel.display().to_string(),
        None => path.display().to_string(),
    }
}

/// The `::error` workflow command for one crash. `cwd` is where relative
/// node ids are found (the wrapper's folder, pytest's rootdir in practice).
pub fn annotation(r: &CrashRecord, workspace: Option<&Path>, cwd: &Path) -> String {
    let (file, line) = match stack_location(r) {
        Some((path, line)) => (workspace_relative(Path::new(&path), workspace), Some(line)),
        None => {
            let path = cwd.join(nodeid_file(r));
            let line = definition_line(&path, r);
            (workspace_relative(&path, workspace), line)
        }
    };
    let test = match split_nodeid(r.key()).as_slice() {
        [_, rest @ ..] if !rest.is_empty() => r.key()[nodeid_file(r).len() + 2..].to_string(),
        _ => r.key().to_string(),
    };
    let title = if test.is_empty() { format!("{} {}", r.how(), r.phase) } else { format!("{} in {test}", r.how()) };
    let mut message = r.reason.clone();
    if let Some(loc) = &r.location {
        let _ = write!(message, " at {loc}");
    }
    if let Some(v) = &r.recheck {
        let _ = write!(message, "; recheck: {v}");
    }
    let _ = write!(message, " (worker {}, GPU {}, run {})", r.worker, r.gpu_id, r.run);
    let mut props = format!("file={}", escape_property(&file));
    if let Some(l) = line {
        let _ = write!(props, ",line={l}");
    }
    let _ = write!(props, ",title={}", escape_property(&title));
    format!("::error {props}::{}\n", escape_data(&message))
}

/// Where the report files can be fetched: the run's page on GitHub (its
/// artifacts), from `GITHUB_SERVER_URL`, `GITHUB_REPOSITORY`, `GITHUB_RUN_ID`.
pub fn run_url(get: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let server = get("GITHUB_SERVER_URL").filter(|s| !s.is_empty())?;
    let repo = get("GITHUB_REPOSITORY").filter(|s| !s.is_empty())?;
    let id = get("GITHUB_RUN_ID").filter(|s| !s.is_empty())?;
    Some(format!("{server}/{repo}/actions/runs/{id}"))
}

/// The job summary in Markdown: the crashes as a table, the totals, the
/// report files by name.
pub fn summary_markdown(s: &Summary, reports: &[PathBuf], run_url: Option<&str>) -> String {
    let mut md = String::from("## pytest-abort\n\n");
    if s.crashes.is_empty() {
        md.push_str("No test crashed.\n\n");
    } else {
        md.push_str("| Test | How it died | Where | Worker / GPU | Run |\n| --- | --- | --- | --- | --- |\n");
        for r in &s.crashes {
            let test = if r.key().is_empty() { format!("<{}>", r.phase) } else { r.key().to_string() };
            let mut how = r.how();
            if let Some(v) = &r.recheck {
                let _ = write!(how, ", {v}");
            }
            let mut place = r.phase.clone();
            if let Some((_, line)) = stack_location(r) {
                let _ = write!(place, ", {}:{line}", nodeid_file(r));
            }
            if let Some(loc) = &r.location {
                let _ = write!(place, " at {loc}");
            }
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} / {} | {} |",
                escape_markdown(&test),
                escape_markdown(&how),
                escape_markdown(&place),
                escape_markdown(&r.worker),
                escape_markdown(&r.gpu_id),
                r.run
            );
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "**{} passed, {} failed, {} crashed, {} not run**; runs used {}/{}; supervision: {}; exit status {}\n",
        s.passed,
        s.failed,
        s.crashed,
        s.not_run,
        s.runs_used,
        s.max_runs,
        escape_markdown(&s.supervision),
        s.exit_code
    );
    let files: Vec<&Path> =
        s.crash_log.iter().map(PathBuf::as_path).chain(reports.iter().map(PathBuf::as_path)).collect();
    if !files.is_empty() {
        md.push_str("Reports:\n\n");
        for f in files {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let name = escape_markdown(&name);
            let path = escape_markdown(&f.display().to_string());
            match run_url {
                Some(url) => {
                    let _ = writeln!(md, "- [{name}]({url}#artifacts) ({path})");
                }
                None => {
                    let _ = writeln!(md, "- {name} ({path})");
                }
            }
        }
        md.push('\n');
    }
    md
}

/// The GitHub Actions reporter.
#[derive(Debug)]
pub struct GitHub {
    summary_file: Option<PathBuf>,
    workspace: Option<PathBuf>,
    cwd: PathBuf,
    run_url: Option<String>,
    reports: Vec<PathBuf>,
}

impl GitHub {
    /// The reporter when `GITHUB_ACTIONS=true` in `get`'s environment, else None.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Option<GitHub> {
        if get("GITHUB_ACTIONS").as_deref() != Some("true") {
            return None;
        }
        let path = |k: &str| get(k).filter(|s| !s.is_empty()).map(PathBuf::from);
        Some(GitHub {
            summary_file: path("GITHUB_STEP_SUMMARY"),
            workspace: path("GITHUB_WORKSPACE"),
            cwd: std::env::current_dir().unwrap_or_default(),
            run_url: run_url(get),
            reports: Vec::new(),
        })
    }

    fn finish(&self, s: &Summary) {
        let mut out = String::new();
        for r in &s.crashes {
            out.push_str(&annotation(r, self.workspace.as_deref(), &self.cwd));
        }
        write_stdout(&out);
        if let Some(file) = &self.summary_file {
            let md = summary_markdown(s, &self.reports, self.run_url.as_deref());
            // Other steps append to the same file: append, never replace.
            if let Err(e) = crate::fsutil::append_locked(file, md.as_bytes()) {
                write_stderr(&format!("pytest-abort: warning: GitHub job summary: {e:#}\n"));
            }
        }
    }
}

impl Reporter for GitHub {
    fn report(&mut self, event: &Event) {
        match event {
            Event::ReportWritten { path, .. } if !self.reports.contains(path) => self.reports.push(path.clone()),
            Event::Reproduced { first: Some(r), .. } => {
                write_stdout(&annotation(r, self.workspace.as_deref(), &self.cwd));
            }
            Event::SessionFinished(s) => self.finish(s),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CrashRecord {
        CrashRecord {
            nodeid: "tests/test_x.py::TestA::test_y[a,b:c%d]".into(),
            test_name: "test_y[a,b:c%d]".into(),
            test_class: "TestA".into(),
            reason: "crashed with SIGSEGV (segmentation fault) during call\nsecond line".into(),
            signal: Some(11),
            signal_name: Some("SIGSEGV".into()),
            worker: "gw1".into(),
            gpu_id: "0".into(),
            run: 2,
            phase: "call".into(),
            traceback: Some(
                "Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n  \
                 File \"/usr/lib/python3.11/ctypes/__init__.py\", line 519 in string_at\n  \
                 File \"/ws/tests/helpers.py\", line 3 in boom\n  \
                 File \"/ws/tests/test_x.py\", line 42 in test_y\n  \
                 File \"/ws/tests/test_x.py\", line 7 in fixture\n"
                    .into(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn workflow_command_escaping() {
        assert_eq!(escape_data("a%b\r\nc:d,e"), "a%25b%0D%0Ac:d,e");
        assert_eq!(escape_property("a%b\r\nc:d,e"), "a%25b%0D%0Ac%3Ad%2Ce");
        assert_eq!(escape_data("\u{1b}[31m"), "\u{fffd}[31m");
    }

    #[test]
    fn annotation_points_at_the_tests_frame() {
        let a = annotation(&record(), Some(Path::new("/ws")), Path::new("/elsewhere"));
        assert_eq!(
            a,
            "::error file=tests/test_x.py,line=42,title=SIGSEGV in TestA%3A%3Atest_y[a%2Cb%3Ac%25d]::\
             crashed with SIGSEGV (segmentation fault) during call%0Asecond line (worker gw1, GPU 0, run 2)\n"
        );
    }

    #[test]
    fn annotation_falls_back_to_the_tests_definition() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tests")).unwrap();
        std::fs::write(
            dir.path().join("tests/test_x.py"),
            "def test_y():\n    pass\n\nclass TestA:\n    def helper(self):\n        pass\n\n    def test_y(self):\n        pass\n",
        )
        .unwrap();
        let r = CrashRecord { traceback: None, ..record() };
        let a = annotation(&r, Some(dir.path()), dir.path());
        assert!(a.starts_with("::error file=tests/test_x.py,line=8,title="), "{a}");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table_or_inject_html() {
        assert_eq!(escape_markdown("a|b<script>`x`\n*y*"), "a\\|b\\<script\\>\\`x\\` \\*y\\*");
    }

    #[test]
    fn summary_has_one_row_per_crash_and_the_totals() {
        let s =
            Summary { crashes: vec![record()], passed: 3, crashed: 1, runs_used: 2, max_runs: 5, ..Default::default() };
        let md = summary_markdown(&s, &[PathBuf::from("out/junit.xml")], Some("https://github.com/o/r/actions/runs/1"));
        assert!(md.contains("| Test | How it died | Where | Worker / GPU | Run |"), "{md}");
        assert!(md.contains("| tests\\/test\\_x\\.py\\:\\:TestA\\:\\:test\\_y\\[a\\,b\\:c\\%d\\] | SIGSEGV"), "{md}");
        assert!(md.contains("**3 passed, 0 failed, 1 crashed, 0 not run**"), "{md}");
        assert!(
            md.contains("- [junit\\.xml](https://github.com/o/r/actions/runs/1#artifacts) (out\\/junit\\.xml)"),
            "{md}"
        );
    }
}
