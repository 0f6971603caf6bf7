//! Text helpers shared by the report formats: Python-style JSON output, a
//! span-finding JSON scanner (to splice into a file without re-formatting
//! it), and HTML escaping for the places untrusted text lands in.

use std::borrow::Cow;

use anyhow::{bail, Result};
use serde_json::Value;

/// Serializes `v` the way Python's `json.dumps(v)` does with default
/// arguments (`", "` and `": "` separators); `ensure_ascii` escapes every
/// non-ASCII character as `\uXXXX` like Python's default.
pub fn py_dumps(v: &Value, ensure_ascii: bool) -> String {
    let mut out = String::new();
    py_dump_into(v, ensure_ascii, &mut out);
    out
}

/// [`py_dumps`] appending to `out`.
pub fn py_dump_into(v: &Value, ensure_ascii: bool, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_f64() {
                out.push_str(&py_float(n.as_f64().unwrap_or(0.0)));
            } else {
                out.push_str(&n.to_string());
            }
        }
        Value::String(s) => py_str_into(s, ensure_ascii, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_dump_into(x, ensure_ascii, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_str_into(k, ensure_ascii, out);
                out.push_str(": ");
                py_dump_into(x, ensure_ascii, out);
            }
            out.push('}');
        }
    }
}

/// Appends `s` to `out` with every byte for which `special` is true
/// replaced by what `escape` appends (all such bytes are ASCII, so runs
/// between them are whole characters and are copied in one piece).
#[inline]
fn escape_runs(s: &str, out: &mut String, special: impl Fn(u8) -> bool, mut escape: impl FnMut(u8, &mut String)) {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if special(c) {
            out.push_str(&s[start..i]);
            escape(c, out);
            start = i + 1;
        }
    }
    out.push_str(&s[start..]);
}

/// A JSON string literal as Python writes it.
pub fn py_str_into(s: &str, ensure_ascii: bool, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    let b = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c >= 0x20 && c != b'"' && c != b'\\' && (c < 0x7f || !ensure_ascii) {
            i += 1;
            continue;
        }
        out.push_str(&s[start..i]);
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            c if c < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c);
            }
            _ => {
                // ensure_ascii: DEL and every non-ASCII character as \\uXXXX.
                let ch = s[i..].chars().next().expect("a character starts here");
                let mut buf = [0u16; 2];
                for unit in ch.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
                i += ch.len_utf8();
                start = i;
                continue;
            }
        }
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A float as Python's `repr` writes it (`0.0`, `1.5`, `1e-05`, `inf` is
/// written as `Infinity` like Python's json).
pub fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    }
}

/// JSON text with every `\uD800`-`\uDFFF` escape that is not half of a
/// valid pair replaced by `\uFFFD`. Python's json writes such lone
/// surrogates (a node id can hold one once pytest's id escaping is off);
/// strict readers such as serde_json reject the whole file. The
/// replacement has the same length, so offsets found in the result hold
/// in the original text. Borrowed when there is nothing to replace.
pub fn replace_lone_surrogates(json: &str) -> Cow<'_, str> {
    let b = json.as_bytes();
    let hex4 = |at: usize| -> Option<u32> {
        let h = b.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    let mut lone = Vec::new();
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'\\', &b[i..]) {
        let at = i + off;
        i = at + 2;
        if b.get(at + 1) != Some(&b'u') {
            continue;
        }
        match hex4(at + 2) {
            Some(0xD800..=0xDBFF)
                if b.get(at + 6..at + 8) == Some(b"\\u") && matches!(hex4(at + 8), Some(0xDC00..=0xDFFF)) =>
            {
                i = at + 12
            }
            Some(0xD800..=0xDFFF) => {
                lone.push(at);
                i = at + 6;
            }
            _ => i = at + 6,
        }
    }
    if lone.is_empty() {
        return Cow::Borrowed(json);
    }
    let mut out = json.as_bytes().to_vec();
    for at in lone {
        out[at..at + 6].copy_from_slice(b"\\ufffd");
    }
    Cow::Owned(String::from_utf8(out).expect("ASCII replaced by ASCII"))
}

/// `s` with the control characters a page must not hold raw (all of C0
/// but tab, newline and CR, and DEL) shown as their Unicode control
/// pictures (U+2400 NUL ... U+2421 DEL): browsers drop or replace a raw NUL
/// and XML-based readers reject the page.
pub fn visible_controls(s: &str) -> Cow<'_, str> {
    let hidden = |c: char| matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}');
    // ASCII bytes are whole characters in UTF-8: a byte scan decides.
    if !s.bytes().any(|b| b < 0x80 && hidden(b as char)) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| match c {
                '\u{7f}' => '\u{2421}',
                c if hidden(c) => char::from_u32(0x2400 + c as u32).expect("a control picture"),
                c => c,
            })
            .collect(),
    )
}

/// Index of the first non-whitespace byte at or after `i`.
pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End (exclusive) of the JSON value starting at `i` (no leading space).
pub fn skip_value(b: &[u8], i: usize) -> Result<usize> {
    let Some(&first) = b.get(i) else { bail!("unexpected end of JSON") };
    match first {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            bail!("unterminated JSON container")
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            Ok(j)
        }
    }
}

fn skip_string(b: &[u8], i: usize) -> Result<usize> {
    let mut j = i + 1;
    // Jumps from one quote or backslash to the next (most of a report's
    // bytes are inside strings).
    while let Some(k) = b.get(j..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
        match b[j + k] {
            b'"' => return Ok(j + k + 1),
            _ => j += k + 2,
        }
    }
    bail!("unterminated JSON string")
}

/// One member of a JSON object: decoded key, the key's start, and the
/// value's span.
#[derive(Debug, Clone)]
pub struct Member {
    /// The decoded key.
    pub key: String,
    /// Byte offset of the key's opening quote.
    pub key_start: usize,
    /// Start of the value.
    pub start: usize,
    /// End (exclusive) of the value.
    pub end: usize,
}

/// Members of the object starting at `open` (`{`), plus the index of its
/// closing `}`.
pub fn object_members(text: &str, open: usize) -> Result<(Vec<Member>, usize)> {
    let b = text.as_bytes();
    if b.get(open) != Some(&b'{') {
        bail!("expected a JSON object");
    }
    let mut out = Vec::new();
    let mut i = skip_ws(b, open + 1);
    if b.get(i) == Some(&b'}') {
        return Ok((out, i));
    }
    loop {
        let key_start = i;
        let key_end = skip_string(b, i)?;
        let key: String = serde_json::from_str(&text[key_start..key_end])?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            bail!("expected ':' in JSON object");
        }
        let start = skip_ws(b, i + 1);
        let end = skip_value(b, start)?;
        out.push(Member { key, key_start, start, end });
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Ok((out, i)),
            _ => bail!("expected ',' or '}}' in JSON object"),
        }
    }
}

/// Element spans of the array starting at `open` (`[`), plus the index of
/// its closing `]`.
pub fn array_elements(text: &str, open: usize) -> Result<(Vec<(usize, usize)>, usize)> {
    let b = text.as_bytes();
    if b.get(open) != Some(&b'[') {
        bail!("expected a JSON array");
    }
    let mut out = Vec::new();
    let mut i = skip_ws(b, open + 1);
    if b.get(i) == Some(&b']') {
        return Ok((out, i));
    }
    loop {
        let end = skip_value(b, i)?;
        out.push((i, end));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Ok((out, i)),
            _ => bail!("expected ',' or ']' in JSON array"),
        }
    }
}

/// The separator to put between a container's elements so new ones follow
/// the file's layout: `", "` for one-line files, `",\n<indent>"` otherwise.
pub fn separator(text: &str, open: usize, first_start: Option<usize>) -> String {
    match first_start {
        Some(s) if text[open + 1..s].contains('\n') => {
            let ws = &text[open + 1..s];
            format!(",\n{}", ws.rsplit('\n').next().unwrap_or(""))
        }
        _ => ", ".to_string(),
    }
}

/// Escapes text for an HTML text node or a double-quoted attribute, as
/// Python's `html.escape(s, quote=True)` does.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    html_escape_into(s, &mut out);
    out
}

/// [`html_escape`] appending to `out`.
pub fn html_escape_into(s: &str, out: &mut String) {
    escape_runs(
        s,
        out,
        |c| matches!(c, b'&' | b'<' | b'>' | b'"' | b'\''),
        |c, out| {
            out.push_str(match c {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#x27;",
            })
        },
    )
}

/// Escapes text for pytest-html's `data-jsonblob` attribute the way its
/// Jinja template does (`&#34;` for quotes).
pub fn attr_escape_into(s: &str, out: &mut String) {
    escape_runs(
        s,
        out,
        |c| matches!(c, b'&' | b'<' | b'>' | b'"' | b'\''),
        |c, out| {
            out.push_str(match c {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&#34;",
                _ => "&#39;",
            })
        },
    )
}

/// Decodes one character reference at the start of `s` (which begins with
/// `&`): returns the character and the reference's length.
pub(crate) fn entity_at(s: &str) -> Option<(char, usize)> {
    // Bytes, not `&s[..12]`: byte 12 may fall inside a character.
    let semi = s.as_bytes()[..s.len().min(12)].iter().position(|&b| b == b';')?;
    let name = &s[1..semi];
    let c = if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        char::from_u32(code)?
    } else {
        match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "nbsp" => '\u{a0}',
            _ => return None,
        }
    };
    Some((c, semi + 1))
}

/// Decodes HTML character references (numeric, and the named ones an
/// attribute written by Python or Jinja uses).
pub fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        match entity_at(rest) {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The offset in escaped text `s` that corresponds to byte `target` of
/// `html_unescape(s)`.
pub fn escaped_offset(s: &str, target: usize) -> usize {
    let mut produced = 0usize;
    let mut i = 0usize;
    while i < s.len() && produced < target {
        let rest = &s[i..];
        if rest.starts_with('&') {
            if let Some((c, len)) = entity_at(rest) {
                produced += c.len_utf8();
                i += len;
                continue;
            }
        }
        let c = rest.chars().next().unwrap_or('\0');
        produced += c.len_utf8();
        i += c.len_utf8();
    }
    i
}

/// [`escaped_offset`] for many targets at once, in one pass: `targets` must
/// be in increasing order; returns their offsets in `s` in the same order.
pub fn escaped_offsets(s: &str, targets: &[usize]) -> Vec<usize> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(targets.len());
    let (mut produced, mut i) = (0usize, 0usize);
    for &target in targets {
        while i < b.len() && produced < target {
            // Runs without references map one to one.
            let run = memchr::memchr(b'&', &b[i..]).unwrap_or(b.len() - i).min(target - produced);
            if run > 0 {
                produced += run;
                i += run;
                continue;
            }
            // The references pytest-html's escaping writes, then any other.
            if let Some(len) = [&b"&#34;"[..], b"&#39;", b"&amp;", b"&lt;", b"&gt;"]
                .iter()
                .find(|r| b[i..].starts_with(r))
                .map(|r| r.len())
            {
                produced += 1;
                i += len;
                continue;
            }
            match entity_at(&s[i..]) {
                Some((c, len)) => {
                    produced += c.len_utf8();
                    i += len;
                }
                None => {
                    produced += 1;
                    i += 1;
                }
            }
        }
        out.push(i);
    }
    out
}

/// True for characters XML 1.0 can hold.
fn xml_char_ok(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// Replaces characters XML 1.0 cannot hold with `#xNN`, as pytest's junitxml
/// does.
pub fn xml_legal(s: &str) -> Cow<'_, str> {
    // The only characters a Rust string can hold that XML cannot: C0
    // controls other than tab, LF and CR, and U+FFFE, U+FFFF.
    let c0 = s.bytes().any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'));
    if !c0 && !s.contains(['\u{fffe}', '\u{ffff}']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if xml_char_ok(c) {
            out.push(c);
        } else {
            out.push_str(&format!("#x{:02X}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// Escapes text for an XML attribute (after [`xml_legal`]); newlines and
/// tabs become character references so they survive attribute
/// normalization.
pub fn xml_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    escape_runs(
        &xml_legal(s),
        &mut out,
        |c| matches!(c, b'&' | b'<' | b'>' | b'"' | b'\n' | b'\r' | b'\t'),
        |c, out| {
            out.push_str(match c {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\n' => "&#10;",
                b'\r' => "&#13;",
                _ => "&#9;",
            })
        },
    );
    out
}

/// Escapes text for XML element content.
pub fn xml_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    escape_runs(
        &xml_legal(s),
        &mut out,
        |c| matches!(c, b'&' | b'<' | b'>'),
        |c, out| {
            out.push_str(match c {
                b'&' => "&amp;",
                b'<' => "&lt;",
                _ => "&gt;",
            })
        },
    );
    out
}

/// A JSON string; `None` for any other value (read and skipped).
pub(crate) struct OptStr(pub(crate) Option<String>);

impl<'de> serde::Deserialize<'de> for OptStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OptStr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<OptStr, E> {
                Ok(OptStr(Some(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<OptStr, E> {
                Ok(OptStr(Some(s)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<OptStr, E> {
                Ok(OptStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<OptStr, E> {
                Ok(OptStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<OptStr, E> {
                Ok(OptStr(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<OptStr, E> {
                Ok(OptStr(None))
            }
            fn visit_unit<E>(self) -> Result<OptStr, E> {
                Ok(OptStr(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<OptStr, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(OptStr(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<OptStr, A::Error> {
                while m.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(OptStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_floats() {
        assert_eq!(py_float(0.0), "0.0");
        assert_eq!(py_float(1.5), "1.5");
        assert_eq!(py_float(1e-5), "1e-05");
        assert_eq!(py_float(8.830100000523089e-05), "8.830100000523089e-05");
        assert_eq!(py_float(1795727710.6431413), "1795727710.6431413");
        assert_eq!(py_float(1e16), "1e+16");
    }

    #[test]
    fn python_strings() {
        let mut s = String::new();
        py_str_into("a\u{7f}é😀\u{1}\u{8}\\\"x", true, &mut s);
        assert_eq!(s, r#""a\u007f\u00e9\ud83d\ude00\u0001\b\\\"x""#);
        s.clear();
        py_str_into("a\u{7f}é\u{1}", false, &mut s);
        assert_eq!(s, "\"a\u{7f}é\\u0001\"");
        assert_eq!(html_escape("<a href='x'>&\"é"), "&lt;a href=&#x27;x&#x27;&gt;&amp;&quot;é");
        assert_eq!(xml_attr("a\0<\"\n\u{fffe}é"), "a#x00&lt;&quot;&#10;#xFFFEé");
        assert_eq!(xml_text("a&b\u{1b}"), "a&amp;b#x1B");
        let v = serde_json::json!({"a": ["é\n\"", 1, 2.5, null]});
        assert_eq!(py_dumps(&v, true), r#"{"a": ["\u00e9\n\"", 1, 2.5, null]}"#);
        assert_eq!(py_dumps(&v, false), "{\"a\": [\"é\\n\\\"\", 1, 2.5, null]}");
    }

    #[test]
    fn scanner_spans() {
        let t = r#"{"a": [1, "x]", {"b": 2}], "c" : "d\"" }"#;
        let (m, close) = object_members(t, 0).unwrap();
        assert_eq!(close, t.len() - 1);
        assert_eq!(m[0].key, "a");
        assert_eq!(&t[m[1].start..m[1].end], r#""d\"""#);
        let (els, _) = array_elements(t, m[0].start).unwrap();
        assert_eq!(els.len(), 3);
    }

    #[test]
    fn lone_surrogates_and_controls() {
        let t = r#"["a\ud800b", "\ud83d\ude00", "\\ud800", "\udc00\ud800"]"#;
        let fixed = replace_lone_surrogates(t);
        assert_eq!(fixed, r#"["a\ufffdb", "\ud83d\ude00", "\\ud800", "\ufffd\ufffd"]"#);
        assert_eq!(fixed.len(), t.len());
        serde_json::from_str::<Value>(&fixed).unwrap();
        assert!(matches!(replace_lone_surrogates(r#"["\n\u00e9"]"#), Cow::Borrowed(_)));
        assert_eq!(visible_controls("a\0b\tc\u{1b}[\u{7f}"), "a\u{2400}b\tc\u{241b}[\u{2421}");
    }

    #[test]
    fn unescape_and_offsets() {
        let s = "a&#34;b&amp;c&lt;é";
        let u = html_unescape(s);
        assert_eq!(u, "a\"b&c<é");
        assert_eq!(escaped_offset(s, 2), 6);
        assert_eq!(escaped_offset(s, u.len()), s.len());
        assert_eq!(escaped_offsets(s, &[0, 2, 3, u.len()]), [0, 6, 7, s.len()]);
        let all: Vec<usize> = (0..=u.len()).filter(|&t| u.is_char_boundary(t)).collect();
        let one: Vec<usize> = all.iter().map(|&t| escaped_offset(s, t)).collect();
        assert_eq!(escaped_offsets(s, &all), one);
        assert_eq!(html_unescape("x & y &bogus;"), "x & y &bogus;");
    }
}
