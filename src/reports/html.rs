//! pytest-html 4.x reports. The results live in the `data-jsonblob`
//! attribute of `#data-container`; the page's script builds the table from
//! it. New entries are spliced into the blob's `tests` object (escaped for
//! JSON inside an HTML attribute), the static counts above the table are
//! updated, and the matching filter checkbox is enabled.
//!
//! A report created from nothing starts from a full pytest-html page with
//! no tests (see [`super::html_page`]), then gains its entries as any
//! other page does. Pages earlier versions of pytest-abort created have no
//! script: their rows are rendered as escaped HTML after
//! [`ROWS_MARKER`], and patching them keeps doing so.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context as _, Result};
use regex::Regex;
use serde::de::{Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::doc::{Doc, Part, Render};
use super::html_page;
use super::text::{self, attr_escape_into, escaped_offsets, html_escape, html_unescape, object_members, py_str_into};
use super::{Entry, IdSet};

/// Where rows of a page created by an earlier pytest-abort go (such pages
/// have no script to build the table from the blob).
const ROWS_MARKER: &str = "<!-- pytest-abort: rows -->";

/// A parsed pytest-html report.
pub(crate) struct HtmlDoc {
    text: String,
    /// Span of the `data-jsonblob` attribute's value in `text`.
    attr: (usize, usize),
    /// Index in `text` of the (escaped) `}` closing `tests`.
    tests_close: usize,
    /// Existing tests: span `key_start..value_end` in `text` (escaped),
    /// results.
    members: Vec<(usize, usize, Vec<String>)>,
    /// The (trimmed) key of each of `members`.
    member_keys: Vec<String>,
    /// Indices of `members` removed by [`Doc::drop_entries`].
    dropped: HashSet<usize>,
    keys: IdSet,
    /// `td` classes of the file's own rows (`col-result`, ...).
    columns: Vec<String>,
    added: Vec<String>,
    added_rows: Vec<String>,
    added_results: BTreeMap<String, i64>,
    /// Entries noted (added, absorbed or streamed).
    noted: usize,
    /// The page is one an earlier pytest-abort created (rows rendered
    /// statically).
    static_rows: bool,
    created: bool,
}

/// pytest-html's duration text: `"12 ms"` under a second, else `HH:MM:SS`.
pub(crate) fn format_duration(d: f64) -> String {
    if d < 1.0 {
        return format!("{} ms", (d * 1000.0).round() as u64);
    }
    let total = d.floor() as u64;
    let hours = total / 3600;
    let minutes = (total % 3600) / 60;
    let seconds = (d % 60.0).round() as u64;
    format!("{hours:02}:{minutes:02}:{seconds:02}")
}

/// pytest-html's result word for an outcome.
fn result_word(outcome: &str) -> &'static str {
    match outcome {
        "passed" => "Passed",
        "failed" => "Failed",
        "skipped" => "Skipped",
        "error" => "Error",
        "xfailed" => "XFailed",
        "xpassed" => "XPassed",
        "rerun" => "Rerun",
        _ => "Failed",
    }
}

/// The log text pytest-html shows: escaped failure text plus captured
/// sections with their dashed headers.
fn log_text(e: &Entry) -> String {
    let mut log = String::new();
    if !e.longrepr.is_empty() {
        log.push_str(&html_escape(&e.longrepr));
        log.push('\n');
    }
    for (title, text) in &e.sections {
        let head = format!(" {} ", html_escape(title));
        let width = head.chars().count();
        let pad = 80usize.saturating_sub(width);
        log.push_str(&"-".repeat(pad / 2));
        log.push_str(&head);
        log.push_str(&"-".repeat(pad - pad / 2));
        log.push('\n');
        log.push_str(&html_escape(text));
    }
    if log.is_empty() {
        log.push_str("No log output captured.");
    }
    log
}

/// The reference the direct writer is tested against (readable, slow).
#[cfg(test)]
/// The blob entry (`[ {...} ]`) pytest-html would write for this entry, with
/// the row's cells following `columns`.
pub(crate) fn entry_value(e: &Entry, columns: &[String]) -> Value {
    let result = result_word(&e.outcome);
    let duration = format_duration(e.duration);
    let cells: Vec<Value> = columns
        .iter()
        .map(|c| {
            let inner = match c.as_str() {
                "col-result" => result.to_string(),
                "col-testId" | "col-name" => html_escape(&e.nodeid),
                "col-duration" => duration.clone(),
                _ => String::new(),
            };
            Value::from(format!("<td class=\"{}\">{inner}</td>", html_escape(c)))
        })
        .collect();
    serde_json::json!([{
        "extras": [],
        "result": result,
        "testId": e.nodeid,
        "duration": duration,
        "resultsTableRow": cells,
        "log": log_text(e),
    }])
}

/// Writes `[entry_value(e, columns)]` as `py_dumps(.., true)` would,
/// without building the value (once per crash).
pub(crate) fn entry_json_into(e: &Entry, columns: &[String], out: &mut String) {
    let result = result_word(&e.outcome);
    let duration = format_duration(e.duration);
    out.push_str("[{\"extras\": [], \"result\": \"");
    out.push_str(result);
    out.push_str("\", \"testId\": ");
    py_str_into(&e.nodeid, true, out);
    out.push_str(", \"duration\": ");
    py_str_into(&duration, true, out);
    out.push_str(", \"resultsTableRow\": [");
    let mut cell = String::new();
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        cell.clear();
        cell.push_str("<td class=\"");
        text::html_escape_into(c, &mut cell);
        cell.push_str("\">");
        match c.as_str() {
            "col-result" => cell.push_str(result),
            "col-testId" | "col-name" => text::html_escape_into(&e.nodeid, &mut cell),
            "col-duration" => cell.push_str(&duration),
            _ => {}
        }
        cell.push_str("</td>");
        py_str_into(&cell, true, out);
    }
    out.push_str("], \"log\": ");
    py_str_into(&log_text(e), true, out);
    out.push_str("}]");
}

const DEFAULT_COLUMNS: [&str; 4] = ["col-result", "col-testId", "col-duration", "col-links"];

fn static_row(e: &Entry) -> String {
    let result = result_word(&e.outcome);
    let row = format!(
        "<tbody class=\"results-table-row {cls}\"><tr class=\"collapsible\"><td class=\"col-result\">{result}</td>\
<td class=\"col-testId\">{id}</td><td class=\"col-duration\">{dur}</td><td class=\"col-links\"></td></tr>\
<tr class=\"extras-row\"><td class=\"extra\" colspan=\"4\"><div class=\"log\">{log}</div></td></tr></tbody>\n",
        cls = result.to_lowercase(),
        id = html_escape(&e.nodeid),
        dur = format_duration(e.duration),
        log = log_text(e),
    );
    text::visible_controls(&row).into_owned()
}

/// What validating a blob keeps, read in one streaming pass: per member
/// of `tests`, the lowercased results of its entries, and the row classes
/// of the first entry that has them. `None`: no `tests` object.
struct BlobInfo(Option<(Vec<Vec<String>>, Vec<String>)>);

impl<'de> Deserialize<'de> for BlobInfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = BlobInfo;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<BlobInfo, A::Error> {
                let mut tests = None;
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    if k == "tests" {
                        tests = m.next_value_seed(Tests)?;
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(BlobInfo(tests))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<BlobInfo, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(BlobInfo(None))
            }
            skip_other_types!(BlobInfo(None));
        }
        d.deserialize_any(Top)
    }
}

/// The `tests` object: results per member (in order) and the columns.
struct Tests;

impl<'de> DeserializeSeed<'de> for Tests {
    type Value = Option<(Vec<Vec<String>>, Vec<String>)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tests {
    type Value = Option<(Vec<Vec<String>>, Vec<String>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        let mut columns = Vec::new();
        while m.next_key::<IgnoredAny>()?.is_some() {
            members.push(m.next_value_seed(Results { columns: &mut columns })?);
        }
        Ok(Some((members, columns)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<Self::Value, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    skip_other_types!(None);
}

/// One member of `tests` (a list of entries): their results; fills
/// `columns` from the first entry's row while it is empty.
struct Results<'c> {
    columns: &'c mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Results<'_> {
    type Value = Vec<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Results<'_> {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<Self::Value, A::Error> {
        let mut results = Vec::new();
        let mut first = true;
        while let Some((result, row)) = s.next_element_seed(Fields { row: first && self.columns.is_empty() })? {
            if let Some(r) = result {
                results.push(r);
            }
            if let Some(row) = row {
                *self.columns = row.iter().filter_map(|c| td_class(c.as_str()?)).collect();
            }
            first = false;
        }
        Ok(results)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Self::Value, A::Error> {
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Vec::new())
    }
    skip_other_types!(Vec::new());
}

/// One entry: its lowercased `result`, and its `resultsTableRow` when asked.
struct Fields {
    row: bool,
}

impl<'de> DeserializeSeed<'de> for Fields {
    type Value = (Option<String>, Option<Vec<Value>>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fields {
    type Value = (Option<String>, Option<Vec<Value>>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Self::Value, A::Error> {
        let (mut result, mut row) = (None, None);
        while let Some(k) = m.next_key::<Cow<'de, str>>()? {
            match &*k {
                "result" => result = m.next_value::<text::OptStr>()?.0.map(|r| r.to_lowercase()),
                "resultsTableRow" if self.row => {
                    row = match m.next_value::<Value>()? {
                        Value::Array(a) => Some(a),
                        _ => None,
                    }
                }
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((result, row))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<Self::Value, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok((None, None))
    }
    skip_other_types!((None, None));
}

/// The span of the `data-jsonblob` attribute's value on the tag that holds
/// `id="data-container"` (found without a regex: the value is most of the
/// file).
fn blob_attr_span(text: &str) -> Result<(usize, usize)> {
    let container = text.find("id=\"data-container\"").context(
        "no <div id=\"data-container\">: not a pytest-html 4.x report (pytest-html 3 and other HTML are not supported)",
    )?;
    let tag_start = text[..container].rfind('<').unwrap_or(0);
    let b = text.as_bytes();
    let mut from = tag_start;
    while let Some(at) = text[from..].find("data-jsonblob").map(|i| from + i) {
        let mut i = at + "data-jsonblob".len();
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        if b.get(i) == Some(&b'=') {
            i += 1;
            while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
                i += 1;
            }
            if b.get(i) == Some(&b'"') {
                if let Some(len) = text[i + 1..].find('"') {
                    return Ok((i + 1, i + 1 + len));
                }
            }
        }
        from = at + 1;
    }
    bail!("no data-jsonblob attribute on #data-container")
}

/// Members of the blob's `tests` (with decoded keys), their results, the
/// row classes, and the offsets in the blob of each member's key start and
/// value end, then of the `}` closing `tests`.
type BlobScan = (Vec<text::Member>, Vec<Vec<String>>, Vec<String>, Vec<usize>);

/// Validates a decoded blob and finds what patching needs.
fn scan_blob(blob: &str) -> Result<BlobScan> {
    // Offsets found in the fixed text hold in `blob`.
    let blob = &*text::replace_lone_surrogates(blob);
    let BlobInfo(info) = serde_json::from_str(blob).context("the data-jsonblob attribute is not valid JSON")?;
    let Some((results, columns)) = info else { bail!("the data-jsonblob has no \"tests\" object") };
    let open = blob.find('{').context("empty blob")?;
    let (top, _) = object_members(blob, open)?;
    // The last of repeated keys, as the parse above kept.
    let tests_m = top.iter().rev().find(|m| m.key == "tests").context("no tests member")?;
    let (members, tests_close) = object_members(blob, tests_m.start)?;
    if members.len() != results.len() {
        bail!("the tests object could not be scanned");
    }
    let mut targets = Vec::with_capacity(2 * members.len() + 1);
    for m in &members {
        targets.extend([m.key_start, m.end]);
    }
    targets.push(tests_close);
    Ok((members, results, columns, targets))
}

/// The canonical reference of a character the attribute escapes.
fn canonical_ref(c: u8) -> Option<&'static [u8]> {
    Some(match c {
        b'"' => b"&#34;",
        b'\'' => b"&#39;",
        b'&' => b"&amp;",
        b'<' => b"&lt;",
        b'>' => b"&gt;",
        _ => return None,
    })
}

/// Decodes `buf` in place when it is escaped exactly as
/// [`attr_escape_into`] escapes; returns the decoded length and where in
/// the decoded bytes each reference was (ascending), or `None` (with `buf`
/// as it was) for any other escaping.
fn decode_in_place(buf: &mut [u8]) -> Option<(usize, Vec<u32>)> {
    // Canonical escaping leaves none of these bytes raw.
    if u32::try_from(buf.len()).is_err()
        || memchr::memchr3(b'"', b'\'', b'<', buf).is_some()
        || memchr::memchr(b'>', buf).is_some()
    {
        return None;
    }
    let (mut r, mut w) = (0, 0);
    let mut refs = Vec::new();
    while r < buf.len() {
        // Runs between references move as they are.
        let run = memchr::memchr(b'&', &buf[r..]).unwrap_or(buf.len() - r);
        buf.copy_within(r..r + run, w);
        (r, w) = (r + run, w + run);
        if r == buf.len() {
            break;
        }
        let Some(d) = [b'"', b'\'', b'&', b'<', b'>']
            .into_iter()
            .find(|&d| buf[r..].starts_with(canonical_ref(d).expect("escaped")))
        else {
            // The first `r` bytes were decoded into `w`: undo.
            encode_in_place(&mut buf[..r], w, &refs);
            return None;
        };
        buf[w] = d;
        refs.push(w as u32);
        w += 1;
        r += canonical_ref(d).expect("escaped").len();
    }
    Some((w, refs))
}

/// Undoes [`decode_in_place`]: escapes the `n` decoded bytes at the start
/// of `buf`, whose references were at `refs`, back over the whole of
/// `buf`, from the end.
fn encode_in_place(buf: &mut [u8], n: usize, refs: &[u32]) {
    let (mut r, mut w) = (n, buf.len());
    for &at in refs.iter().rev() {
        let at = at as usize;
        // The run after the reference moves as it is.
        let run = r - (at + 1);
        buf.copy_within(at + 1..r, w - run);
        w -= run;
        let e = canonical_ref(buf[at]).expect("an escaped byte");
        buf[w - e.len()..w].copy_from_slice(e);
        (r, w) = (at, w - e.len());
    }
    debug_assert_eq!(w, r, "the escaped text is as long as it was");
}

/// Where the decoded offsets `targets` (ascending) are in the escaped
/// text, given the decoded bytes and where their references were.
fn escaped_offsets_of(decoded: &[u8], refs: &[u32], targets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(targets.len());
    let (mut next, mut extra) = (0, 0);
    for &t in targets {
        while let Some(&at) = refs.get(next).filter(|&&at| (at as usize) < t) {
            extra += canonical_ref(decoded[at as usize]).expect("an escaped byte").len() - 1;
            next += 1;
        }
        out.push(t + extra);
    }
    out
}

impl HtmlDoc {
    fn from_text(text: String, created: bool) -> Result<Self> {
        let attr = blob_attr_span(&text)?;
        // pytest-html escapes the blob canonically (`&#34;`, `&#39;`,
        // `&amp;`, `&lt;`, `&gt;`): then it is decoded in place for the
        // parse and escaped back afterwards, so the file is in memory once.
        // Any other escaping is decoded into a copy.
        let mut bytes = text.into_bytes();
        let (scan, esc, text) = match decode_in_place(&mut bytes[attr.0..attr.1]) {
            Some((n, refs)) => {
                let decoded = &bytes[attr.0..attr.0 + n];
                let scan = std::str::from_utf8(decoded)
                    .context("the data-jsonblob attribute is not UTF-8")
                    .and_then(scan_blob);
                let esc = scan.as_ref().map(|s| escaped_offsets_of(decoded, &refs, &s.3)).unwrap_or_default();
                encode_in_place(&mut bytes[attr.0..attr.1], n, &refs);
                debug_assert!(std::str::from_utf8(&bytes).is_ok());
                // SAFETY: the bytes were a `String`'s; decoding replaced
                // ASCII references by ASCII bytes and encoding restored them
                // byte for byte.
                let text = unsafe { String::from_utf8_unchecked(bytes) };
                (scan?, esc, text)
            }
            None => {
                let text = String::from_utf8(bytes).context("not UTF-8")?;
                let scan = scan_blob(&html_unescape(&text[attr.0..attr.1]))?;
                let esc = escaped_offsets(&text[attr.0..attr.1], &scan.3);
                (scan, esc, text)
            }
        };
        let (members_raw, results, columns, _) = scan;
        let mut members = Vec::with_capacity(members_raw.len());
        let mut member_keys = Vec::with_capacity(members_raw.len());
        for ((mem, results), span) in members_raw.into_iter().zip(results).zip(esc.chunks_exact(2)) {
            member_keys.push(if mem.key.trim().len() == mem.key.len() { mem.key } else { mem.key.trim().to_string() });
            members.push((attr.0 + span[0], attr.0 + span[1], results));
        }
        let keys: IdSet = member_keys.iter().cloned().collect();
        let tests_close = attr.0 + esc[esc.len() - 1];
        let columns =
            if columns.is_empty() { DEFAULT_COLUMNS.iter().map(|s| s.to_string()).collect() } else { columns };
        Ok(HtmlDoc {
            attr,
            tests_close,
            members,
            member_keys,
            dropped: HashSet::new(),
            keys,
            columns,
            added: Vec::new(),
            added_rows: Vec::new(),
            added_results: BTreeMap::new(),
            noted: 0,
            static_rows: text.contains(ROWS_MARKER),
            created,
            text,
        })
    }

    fn count(&mut self, result: &str) {
        match self.added_results.get_mut(result) {
            Some(n) => *n += 1,
            None => {
                self.added_results.insert(result.to_string(), 1);
            }
        }
    }

    /// The page before the blob with the counts bumped by what was noted.
    fn new_prefix(&self) -> String {
        let mut prefix = self.text[..self.attr.0].to_string();
        for (cls, delta) in &self.added_results {
            prefix = bump_count(&prefix, cls, *delta);
        }
        let ran: i64 = ["passed", "failed", "xpassed", "xfailed"]
            .iter()
            .map(|k| self.added_results.get(*k).copied().unwrap_or(0))
            .sum();
        bump_run_count(&prefix, ran)
    }
}

fn td_class(td: &str) -> Option<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r#"^\s*<td[^>]*\bclass\s*=\s*"([^"]*)""#).expect("valid regex"));
    Some(re.captures(td)?.get(1)?.as_str().split_whitespace().next()?.to_string())
}

/// Replaces, at the first place `needle` is followed by text `f` accepts,
/// the `n` bytes `f` consumed with what it returns; `None` when no place
/// is accepted.
fn replace_after(hay: &str, needle: &str, mut f: impl FnMut(&str) -> Option<(usize, String)>) -> Option<String> {
    memchr::memmem::find_iter(hay.as_bytes(), needle.as_bytes()).find_map(|at| {
        let from = at + needle.len();
        let (n, with) = f(&hay[from..])?;
        Some([&hay[..from], &with, &hay[from + n..]].concat())
    })
}

/// The number at the start of `s` (one ASCII digit at least), and its length.
fn leading_number(s: &str) -> Option<(i64, usize)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    (n > 0).then(|| (s[..n].parse().unwrap_or(0), n))
}

/// Adds `delta` to the number at the start of `<span class="cls">N ...`
/// and enables the filter when the count becomes non-zero.
fn bump_count(prefix: &str, cls: &str, delta: i64) -> String {
    let mut now = 0;
    let out = replace_after(prefix, &format!(r#"<span class="{cls}">"#), |rest| {
        let (n, len) = leading_number(rest)?;
        now = n + delta;
        Some((len, now.to_string()))
    })
    .unwrap_or_else(|| prefix.to_string());
    if now <= 0 {
        return out;
    }
    // `data-test-result="cls"  disabled` -> `data-test-result="cls" `.
    replace_after(&out, &format!(r#"data-test-result="{cls}""#), |rest| {
        let gap = rest.len() - rest.trim_start().len();
        (gap > 0 && rest[gap..].starts_with("disabled")).then(|| (gap + "disabled".len(), " ".to_string()))
    })
    .unwrap_or(out)
}

/// Adds `delta` to the page's `N tests took` and `N/M tests done` counts.
fn bump_run_count(prefix: &str, delta: i64) -> String {
    const RUN_COUNT: &str = r#"<p class="run-count">"#;
    let plural = |n: i64| if n > 1 { "tests" } else { "test" };
    let words = |rest: &str, tail: &str| {
        let t = rest.strip_prefix(" test")?;
        let t = t.strip_prefix('s').unwrap_or(t);
        t.starts_with(tail).then(|| rest.len() - t.len() + tail.len())
    };
    let took = replace_after(prefix, RUN_COUNT, |rest| {
        let (n, len) = leading_number(rest)?;
        let end = len + words(&rest[len..], " took ")?;
        let n = n + delta;
        Some((end, format!("{n} {} took ", plural(n))))
    });
    let out = took.as_deref().unwrap_or(prefix);
    replace_after(out, RUN_COUNT, |rest| {
        let (n, len) = leading_number(rest)?;
        let (m, mlen) = leading_number(rest[len..].strip_prefix('/')?)?;
        let end = len + 1 + mlen + words(&rest[len + 1 + mlen..], " done")?;
        let (n, m) = (n + delta, m + delta);
        Some((end, format!("{n}/{m} {} done", plural(m))))
    })
    .unwrap_or_else(|| out.to_string())
}

/// pytest-html's own result entries for an entry filled in from a
/// journal, when the process that ran the test had the plugin.
fn plugin_html(e: &Entry) -> Option<&Vec<Value>> {
    e.plugin.as_ref().and_then(|p| p.html.as_ref()).and_then(Value::as_array).filter(|l| !l.is_empty())
}

impl Render for HtmlDoc {
    fn has(&self, nodeid: &str) -> bool {
        self.keys.contains(nodeid.trim())
    }

    fn note(&mut self, e: &Entry) {
        self.noted += 1;
        match plugin_html(e) {
            Some(list) => {
                for r in list.iter().filter_map(|r| r.get("result")?.as_str()) {
                    self.count(&r.to_lowercase());
                }
            }
            None => self.count(&result_word(&e.outcome).to_lowercase()),
        }
    }

    fn remember(&mut self, nodeid: &str) {
        self.keys.insert(nodeid.trim().to_string());
    }

    fn entries(&self) -> usize {
        self.keys.len()
    }

    /// Slot 0: the blob's `tests`; slot 1: a created page's static rows.
    fn slots(&self) -> usize {
        if self.static_rows {
            2
        } else {
            1
        }
    }

    fn entry_into(&self, slot: usize, e: &Entry, out: &mut String) {
        if slot == 1 {
            out.push_str(&static_row(e));
            return;
        }
        let mut frag = String::new();
        py_str_into(&e.nodeid, true, &mut frag);
        frag.push_str(": ");
        match plugin_html(e) {
            // The plugin's own entries, from the process that ran the test.
            Some(list) => frag.push_str(&super::text::py_dumps(&Value::Array(list.clone()), true)),
            None => entry_json_into(e, &self.columns, &mut frag),
        }
        attr_escape_into(&frag, out);
    }

    fn separator(&self, slot: usize, index: usize) -> &str {
        if slot == 1 || (index == 0 && self.members.len() == self.dropped.len()) {
            ""
        } else {
            ", "
        }
    }

    fn held(&self, slot: usize) -> &[String] {
        if slot == 1 {
            &self.added_rows
        } else {
            &self.added
        }
    }

    fn changed(&self) -> bool {
        self.noted > 0 || self.created || !self.dropped.is_empty()
    }

    fn layout(&self) -> Vec<Part<'_>> {
        let mut prefix = self.new_prefix();
        let mut out = Vec::with_capacity(6);
        if let Some(pos) = prefix.find(ROWS_MARKER).filter(|_| self.static_rows) {
            let rest = prefix.split_off(pos);
            out.extend([Part::Text(Cow::Owned(prefix)), Part::Entries(1), Part::Text(Cow::Owned(rest))]);
        } else {
            out.push(Part::Text(Cow::Owned(prefix)));
        }
        let blob = if self.dropped.is_empty() {
            Cow::Borrowed(&self.text[self.attr.0..self.tests_close])
        } else {
            // Some members go: the kept ones are written anew from their own
            // (escaped) text.
            let (first, last) = (self.members[0].0, self.members[self.members.len() - 1].1);
            let kept: Vec<&str> = (0..self.members.len())
                .filter(|i| !self.dropped.contains(i))
                .map(|i| &self.text[self.members[i].0..self.members[i].1])
                .collect();
            Cow::Owned(format!(
                "{}{}{}",
                &self.text[self.attr.0..first],
                kept.join(", "),
                &self.text[last..self.tests_close]
            ))
        };
        out.extend([Part::Text(blob), Part::Entries(0), Part::Text(Cow::Borrowed(&self.text[self.tests_close..]))]);
        out
    }
}

impl HtmlDoc {
    /// A new page titled `title` (pytest-html titles a page with its file
    /// name): the installed pytest-html's when there is one, else the
    /// bundled page.
    fn create_titled(title: &str) -> Self {
        Self::from_text(html_page::new_page(title), true)
            .or_else(|_| Self::from_text(html_page::bundled(title), true))
            .expect("the bundled page parses")
    }
}

impl Doc for HtmlDoc {
    fn parse(text: String) -> Result<Self> {
        Self::from_text(text, false)
    }

    fn create() -> Self {
        Self::create_titled("report.html")
    }

    fn create_for(path: &Path) -> Self {
        match path.file_name() {
            Some(name) => Self::create_titled(&name.to_string_lossy()),
            None => Self::create(),
        }
    }

    /// pytest-html's rows for a collector's failures (it lists no skipped
    /// collection): under the collector's node id, one `Error` per report,
    /// its test id ending in `::collect`, the report's text as its log.
    fn add_collected(&mut self, reports: &[&crate::journal::CollectReport]) {
        for group in super::merge::collect_groups(reports) {
            self.add_collector(&group);
        }
    }

    fn held_mut(&mut self, slot: usize) -> &mut Vec<String> {
        if slot == 1 {
            &mut self.added_rows
        } else {
            &mut self.added
        }
    }

    fn drop_entries(&mut self, ids: &HashSet<String>) -> usize {
        let mut n = 0;
        for (i, key) in self.member_keys.iter().enumerate() {
            if ids.contains(key) && self.dropped.insert(i) {
                self.keys.remove(key);
                for r in &self.members[i].2 {
                    *self.added_results.entry(r.clone()).or_default() -= 1;
                }
                n += 1;
            }
        }
        n
    }

    fn take(&mut self, other: &Self) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        for (i, ((s, e, results), key)) in other.members.iter().zip(&other.member_keys).enumerate() {
            // The member as `other` escaped it is valid in this attribute
            // too (both double-quoted): kept as it is.
            if !other.dropped.contains(&i) && !self.has(key) {
                self.remember(key);
                self.noted += 1;
                results.iter().for_each(|r| self.count(r));
                spans.push((*s, *e));
            }
        }
        spans
    }

    fn original(&self) -> &str {
        &self.text
    }
}

impl HtmlDoc {
    /// One collector's rows.
    fn add_collector(&mut self, reports: &[&crate::journal::CollectReport]) {
        let mut rows = Vec::new();
        for c in reports.iter().filter(|c| c.outcome == "failed") {
            let row = Entry {
                nodeid: format!("{}::collect", c.nodeid.trim()),
                outcome: "error".into(),
                longrepr: c.longrepr.clone(),
                ..Entry::default()
            };
            let mut text = String::new();
            entry_json_into(&row, &self.columns, &mut text);
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(list)) => rows.extend(list),
                _ => return,
            }
        }
        if rows.is_empty() {
            return;
        }
        let plugin = crate::journal::PluginEntries { html: Some(Value::Array(rows)), ..Default::default() };
        let nodeid = reports[0].nodeid.clone();
        self.add(&Entry { nodeid, outcome: "error".into(), plugin: Some(Box::new(plugin)), ..Entry::default() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::sample_record;

    #[test]
    fn counts_bumped_as_the_page_patterns_find_them() {
        // The patterns the counts were bumped with before (regex), as oracle.
        fn by_pattern(prefix: &str, cls: &str, delta: i64) -> String {
            let span = Regex::new(&format!(r#"(<span class="{}">)(\d+)"#, regex::escape(cls))).unwrap();
            let mut now = 0;
            let out = span
                .replace(prefix, |c: &regex::Captures| {
                    now = c[2].parse::<i64>().unwrap_or(0) + delta;
                    format!("{}{}", &c[1], now)
                })
                .into_owned();
            if now <= 0 {
                return out;
            }
            let input = Regex::new(&format!(r#"(data-test-result="{}")\s+disabled"#, regex::escape(cls))).unwrap();
            input.replace(&out, "$1 ").into_owned()
        }
        fn run_by_pattern(prefix: &str, delta: i64) -> String {
            let took = Regex::new(r#"(<p class="run-count">)(\d+) tests? took "#).unwrap();
            let done = Regex::new(r#"(<p class="run-count">)(\d+)/(\d+) tests? done"#).unwrap();
            let plural = |n: i64| if n > 1 { "tests" } else { "test" };
            let out = took.replace(prefix, |c: &regex::Captures| {
                let n = c[2].parse::<i64>().unwrap_or(0) + delta;
                format!("{}{n} {} took ", &c[1], plural(n))
            });
            done.replace(&out, |c: &regex::Captures| {
                let n = c[2].parse::<i64>().unwrap_or(0) + delta;
                let m = c[3].parse::<i64>().unwrap_or(0) + delta;
                format!("{}{n}/{m} {} done", &c[1], plural(m))
            })
            .into_owned()
        }
        let pages = [
            html_page::bundled("t.html"),
            r#"<span class="failed">x</span><span class="failed">7 Failed</span><input data-test-result="failed"
                disabled/><input data-test-result="failed" disabled/>"#
                .to_string(),
            r#"<span class="failed">0 Failed</span><input data-test-result="failed"disabled/>"#.to_string(),
            r#"<p class="run-count">x</p><p class="run-count">1 test took 1 ms.</p><p class="run-count">3 tests took"#
                .to_string(),
            r#"<p class="run-count">2/5 tests done</p><p class="run-count">0/0 test done"#.to_string(),
            String::new(),
        ];
        for page in &pages {
            for (cls, delta) in [("failed", 1), ("failed", -7), ("passed", 3), ("error", 0)] {
                assert_eq!(bump_count(page, cls, delta), by_pattern(page, cls, delta), "{cls} {delta} {page}");
            }
            for delta in [1, 2, -1] {
                assert_eq!(bump_run_count(page, delta), run_by_pattern(page, delta), "{delta} {page}");
            }
        }
    }

    #[test]
    fn synthetic_entry_snapshot() {
        let e = Entry::from_crash(&sample_record());
        let cols: Vec<String> = DEFAULT_COLUMNS.iter().map(|s| s.to_string()).collect();
        insta::assert_snapshot!(serde_json::to_string_pretty(&entry_value(&e, &cols)).unwrap());
    }

    #[test]
    fn direct_writer_matches_the_value() {
        let mut cols: Vec<String> = DEFAULT_COLUMNS.iter().map(|s| s.to_string()).collect();
        cols.push("col-x\"<".into());
        for e in crate::reports::json::tests::sample_entries() {
            let mut direct = String::new();
            entry_json_into(&e, &cols, &mut direct);
            assert_eq!(direct, crate::reports::text::py_dumps(&entry_value(&e, &cols), true));
        }
    }

    #[test]
    fn durations_like_pytest_html() {
        assert_eq!(format_duration(0.0004), "0 ms");
        assert_eq!(format_duration(0.25), "250 ms");
        assert_eq!(format_duration(3725.4), "01:02:05");
    }

    #[test]
    fn in_place_decoding_restores_the_bytes() {
        for s in ["a&#34;b&amp;&lt;&gt;&#39;é", "", "plain", "x&quot;y", "a&#34;b&bogus;c", "a&#34;b<c", "&amp;&#x27;"]
        {
            let mut b = s.as_bytes().to_vec();
            match decode_in_place(&mut b) {
                Some((n, refs)) => {
                    assert_eq!(std::str::from_utf8(&b[..n]).unwrap(), html_unescape(s), "{s}");
                    let all: Vec<usize> = (0..=n).collect();
                    assert_eq!(escaped_offsets_of(&b[..n], &refs, &all), escaped_offsets(s, &all), "{s}");
                    encode_in_place(&mut b, n, &refs);
                }
                None => assert!(s.contains("quot") || s.contains("bogus") || s.contains('<') || s.contains("x27")),
            }
            assert_eq!(b, s.as_bytes(), "{s}");
        }
    }

    #[test]
    fn pages_of_earlier_versions_keep_their_static_rows() {
        let legacy = html_page::bundled("t.html").replace("</thead>", &format!("</thead>\n{ROWS_MARKER}"));
        let mut d = HtmlDoc::parse(legacy).unwrap();
        d.add(&Entry::from_crash(&sample_record()));
        let out = d.render().unwrap();
        let rows = &out[out.find("</thead>").unwrap()..out.find(ROWS_MARKER).unwrap()];
        assert!(rows.contains("<tbody class=\"results-table-row failed\">"), "{rows}");
        assert!(rows.contains("test_p[&lt;img src=x onerror=alert(1)&gt;]") && !out.contains("<img src=x"), "{rows}");
    }

    #[test]
    fn created_page_round_trips() {
        let mut d = HtmlDoc::create();
        d.add(&Entry::from_crash(&sample_record()));
        let out = d.render().unwrap();
        assert!(out.contains("<span class=\"failed\">1 Failed,</span>"), "{out}");
        assert!(out.contains("data-test-result=\"failed\" >"), "{out}");
        assert!(out.contains("1 test took"), "{out}");
        assert!(!out.contains("<img src=x"), "{out}");
        let d2 = HtmlDoc::parse(out.clone()).unwrap();
        assert!(d2.has("tests/test_gpu.py::TestK::test_p[<img src=x onerror=alert(1)>]"));
        assert!(d2.render().is_none());
    }
}
