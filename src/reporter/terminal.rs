//! The terminal reporter: events as lines on stderr.
//!
//! It owns quiet mode (`-q`: no progress lines or summary; warnings, errors,
//! echoed Python stacks and `--reproduce`'s result still show), escapes
//! every string that came from a test (node ids, reasons, command lines,
//! stacks) so no control character reaches the terminal raw, and ignores
//! write errors: a full disk (ENOSPC) or a closed pipe (EPIPE) on stderr
//! never panics and never stops the run, its records or its reports.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;

use super::{Event, Reporter};
use crate::record::CrashRecord;

/// Writes text to stderr, ignoring every error (best effort).
pub fn write_stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Writes text to stdout, ignoring every error (best effort).
pub fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// True for characters a terminal may act on: C0 and C1 controls, DEL, and
/// the bidirectional overrides that reorder what is shown.
fn is_unsafe(c: char, keep_newlines: bool) -> bool {
    if keep_newlines && (c == '\n' || c == '\t') {
        return false;
    }
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_with(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c, keep_newlines)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_unsafe(c, keep_newlines) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// One line of untrusted text for the terminal: every control character
/// (newlines too) written as `\x1b`, `\x00`, `\u{202e}`.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

/// Untrusted text of several lines (Python stacks): as [`escape`], but
/// newlines and tabs stay.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

/// The terminal reporter.
#[derive(Debug, Default)]
pub struct Terminal {
    quiet: bool,
}

impl Terminal {
    /// A reporter on stderr; `quiet` drops progress lines and the summary.
    pub fn new(quiet: bool) -> Self {
        Terminal { quiet }
    }

    /// The text for one event, or `None` when it shows nothing.
    pub fn render(&self, event: &Event) -> Option<String> {
        let loud = !self.quiet;
        Some(match event {
            Event::RunStarted { run, max_runs, purpose } if loud && *run > 1 => {
                format!("\npytest-abort: run {run}/{max_runs}: {}\n", escape(purpose))
            }
            Event::PtraceRefused { reason } if loud => {
                format!("pytest-abort: {}; supervising without ptrace\n", escape(reason))
            }
            Event::TestCrashed(rec) => crashed(rec, loud)?,
            Event::ReportWritten { path, added, entries, .. } if loud => format!(
                "pytest-abort: report {}: {entries} entries ({added} merged or added)\n",
                escape(&path.to_string_lossy())
            ),
            Event::Warning { message } => format!("pytest-abort: warning: {}\n", escape(message)),
            Event::Error { message } => format!("pytest-abort: error: {}\n", escape(message)),
            Event::Rechecked { nodeid, verdict } if loud => {
                format!("pytest-abort: recheck {}: crash: {verdict}\n", escape(nodeid))
            }
            Event::ReproduceRun { nodeid, run, repeat } if loud => {
                format!("pytest-abort: reproduce {}: run {run}/{repeat}\n", escape(nodeid))
            }
            Event::Reproduced { nodeid, runs, crashed, found, first } => {
                reproduced(nodeid, *runs, *crashed, *found, first)
            }
            Event::SessionFinished(summary) if loud => summary.render(),
            _ => return None,
        })
    }
}

/// A crash as it happens: the Python stacks faulthandler wrote into the
/// wrapper's file (echoed even when quiet), then one line.
fn crashed(rec: &CrashRecord, loud: bool) -> Option<String> {
    let mut s = String::new();
    if let Some(tb) = &rec.traceback {
        let _ = writeln!(s, "{}", escape_text(tb));
    }
    if loud {
        let who = if rec.nodeid.is_empty() { "pytest" } else { rec.nodeid.as_str() };
        let _ = writeln!(
            s,
            "\npytest-abort: {} {} [{}, pid {}]",
            escape(who),
            escape(&rec.reason),
            escape(&rec.worker),
            escape(&rec.pid)
        );
    }
    (!s.is_empty()).then_some(s)
}

fn reproduced(nodeid: &str, runs: u32, crashed: u32, found: bool, first: &Option<CrashRecord>) -> String {
    let id = escape(nodeid);
    let mut s = String::from("\n=== pytest-abort reproduce ===\n");
    if !found && first.is_none() {
        let _ = writeln!(s, "{id}: not collected by the command (check the node id)");
        return s;
    }
    let _ = writeln!(s, "{id}: crashed {crashed}/{runs} runs");
    if let Some(rec) = first {
        s.push_str(&escape_text(&crate::summary::forensics(rec)));
    }
    s
}

impl Reporter for Terminal {
    fn report(&mut self, event: &Event) {
        if let Some(text) = self.render(event) {
            write_stderr(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(escape("t.py::test[\u{1b}[31mred\u{0}]"), "t.py::test[\\x1b[31mred\\x00]");
        assert_eq!(escape("a\nb\u{202e}c\u{85}"), "a\\x0ab\\u{202e}c\\x85");
        assert_eq!(escape_text("line 1\n\tline 2\u{7}"), "line 1\n\tline 2\\x07");
        assert!(matches!(escape("plain ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn quiet_keeps_warnings_errors_and_stacks() {
        let t = Terminal::new(true);
        assert!(t.render(&Event::Warning { message: "w".into() }).is_some());
        assert!(t.render(&Event::RunStarted { run: 2, max_runs: 5, purpose: "p".into() }).is_none());
        let rec = CrashRecord { traceback: Some("Fatal Python error".into()), ..Default::default() };
        assert_eq!(t.render(&Event::TestCrashed(rec)).as_deref(), Some("Fatal Python error\n"));
    }
}
