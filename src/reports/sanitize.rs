//! The original's `data-jsonblob` sanitizer, so pytest_html_merger can read
//! a report whose blob holds control characters: raw control characters
//! inside JSON strings are escaped before parsing, then in every string
//! value CR/CRLF become LF, LF becomes `<br/>`, a tab becomes two spaces and
//! any other control or format character becomes a space.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context as _, Result};
use regex::Regex;
use serde_json::Value;

use super::text::{html_escape, html_unescape, py_dumps};

/// Files a folder argument stands for, as the original's
/// `sanitize_all_html_jsonblobs`.
pub const DEFAULT_GLOB: &str = "*_log.html";

/// True for characters in Unicode's general category C (control, format,
/// private use, and the noncharacters of the unassigned ones).
fn is_other(c: char) -> bool {
    let u = c as u32;
    matches!(u,
        0x00..=0x1F | 0x7F..=0x9F
        // Cf (format)
        | 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
        // Co (private use)
        | 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD
        // Cn noncharacters
        | 0xFDD0..=0xFDEF)
        || (u & 0xFFFE) == 0xFFFE
}

fn sanitize_str(s: &str) -> String {
    let s = s.replace("\r\n", "\n").replace('\r', "\n").replace('\n', "<br/>").replace('\t', "  ");
    s.chars().map(|c| if is_other(c) { ' ' } else { c }).collect()
}

fn sanitize_value(v: &mut Value) {
    match v {
        Value::String(s) => *s = sanitize_str(s),
        Value::Array(a) => a.iter_mut().for_each(sanitize_value),
        Value::Object(m) => m.values_mut().for_each(sanitize_value),
        _ => {}
    }
}

/// Escapes raw control characters that sit inside JSON string literals.
fn escape_controls_in_strings(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    let (mut in_str, mut escaped) = (false, false);
    for c in json.chars() {
        if !in_str {
            in_str = c == '"';
            out.push(c);
            continue;
        }
        if escaped {
            escaped = false;
            out.push(c);
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                out.push(c);
            }
            '"' => {
                in_str = false;
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Sanitizes a pytest-html report's `data-jsonblob` in place; `Ok(true)`
/// when the file changed. A blob that cannot be parsed even after repair
/// is an error naming the file (the file is left untouched).
pub fn sanitize_html_file(path: &Path) -> Result<bool> {
    let text = crate::fsutil::read_to_string(path)?;
    static DQ: OnceLock<Regex> = OnceLock::new();
    static SQ: OnceLock<Regex> = OnceLock::new();
    let dq = DQ.get_or_init(|| Regex::new(r#"data-jsonblob="([^"]*)""#).expect("valid regex"));
    let sq = SQ.get_or_init(|| Regex::new(r#"data-jsonblob='([^']*)'"#).expect("valid regex"));
    let Some(m) = dq.captures(&text).or_else(|| sq.captures(&text)).and_then(|c| c.get(1)) else {
        return Ok(false);
    };
    let raw = m.as_str();
    let json = html_unescape(raw);
    let maybe =
        json.contains(['\n', '\r', '\t']) || ["\\n", "\\r", "\\t", "\\u000", "\\u001"].iter().any(|p| json.contains(p));
    if !maybe {
        return Ok(false);
    }
    let mut value: Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(_) => serde_json::from_str(&escape_controls_in_strings(&json))
            .with_context(|| format!("{}: cannot parse the data-jsonblob", path.display()))?,
    };
    sanitize_value(&mut value);
    let new_attr = html_escape(&py_dumps(&value, false));
    if new_attr == raw {
        return Ok(false);
    }
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str(&text[..m.start()]);
    out.push_str(&new_attr);
    out.push_str(&text[m.end()..]);
    crate::fsutil::atomic_write(path, out.as_bytes())?;
    Ok(true)
}

/// Matches a file name against a glob with `*` and `?`.
fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&pat[1..], name) || (!name.is_empty() && glob_match(pat, &name[1..])),
        (Some(b'?'), Some(_)) => glob_match(&pat[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pat[1..], &name[1..]),
        _ => false,
    }
}

/// Sanitizes files, and in folders the files whose names match `glob`
/// (default [`DEFAULT_GLOB`]); returns (modified, total, failed).
pub fn sanitize_paths(paths: &[PathBuf], glob: &str) -> (usize, usize, usize) {
    let glob = if glob.is_empty() { DEFAULT_GLOB } else { glob };
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().is_file())
                        .filter(|e| glob_match(glob.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let (mut modified, mut failed) = (0, 0);
    for f in &files {
        match sanitize_html_file(f) {
            Ok(true) => modified += 1,
            Ok(false) => {}
            Err(e) => {
                eprintln!("pytest-abort: {e:#}");
                failed += 1;
            }
        }
    }
    (modified, files.len(), failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_like_the_original() {
        assert_eq!(sanitize_str("a\r\nb\tc\u{1}d\u{200b}"), "a<br/>b  c d ");
        assert!(glob_match(b"*_log.html", b"x_log.html"));
        assert!(!glob_match(b"*_log.html", b"x.html"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a_log.html");
        // A raw newline inside a blob string (invalid JSON) is repaired.
        std::fs::write(&p, "<div id=\"data-container\" data-jsonblob=\"{&#34;tests&#34;: {&#34;x&#34;: [{&#34;log&#34;: &#34;l1\nl2\\tz&#34;}]}}\"></div>").unwrap();
        assert!(sanitize_html_file(&p).unwrap());
        let out = std::fs::read_to_string(&p).unwrap();
        assert!(out.contains("l1&lt;br/&gt;l2  z"), "{out}");
        assert!(!sanitize_html_file(&p).unwrap());
        std::fs::write(dir.path().join("b_log.html"), "data-jsonblob=\"{&#34;a&#34;: &#34;\\n\"").unwrap();
        assert_eq!(sanitize_paths(&[dir.path().to_path_buf()], ""), (0, 2, 1));
    }
}
