//! The reference semantics, on a parsed tree, as the original computes
//! them: raw control characters inside JSON strings are escaped, the blob
//! parsed, every string value sanitized ([`super::rules`]), and the value
//! written back as `json.dumps(..., ensure_ascii=False)` then
//! `html.escape(quote=True)` write it. Slow (a tree of the whole blob) but
//! complete: the fast pass defers to it for whatever it does not handle.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::rules::sanitize_str;
use crate::reports::text::{html_escape, html_unescape, py_dumps};

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

/// The reference semantics, on a parsed tree: `Ok(None)` when the original
/// would not touch the file.
pub(super) fn slow_sanitize(path: &Path, raw: &str) -> Result<Option<String>> {
    // A lone surrogate (which Python's json reads) is read as U+FFFD.
    let json = crate::reports::text::replace_lone_surrogates(&html_unescape(raw)).into_owned();
    let maybe =
        json.contains(['\n', '\r', '\t']) || ["\\n", "\\r", "\\t", "\\u000", "\\u001"].iter().any(|p| json.contains(p));
    if !maybe {
        return Ok(None);
    }
    let mut value: Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(_) => serde_json::from_str(&escape_controls_in_strings(&json))
            .with_context(|| format!("{}: cannot parse the data-jsonblob", path.display()))?,
    };
    sanitize_value(&mut value);
    Ok(Some(html_escape(&py_dumps(&value, false))))
}
