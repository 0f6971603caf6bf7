//! The original's `data-jsonblob` sanitizer, so pytest_html_merger can read
//! a report whose blob holds control characters: raw control characters
//! inside JSON strings are escaped before parsing, then in every string
//! value CR/CRLF become LF, LF becomes `<br/>`, a tab becomes two spaces and
//! any other control or format character becomes a space.
//!
//! The work is one linear pass over the HTML-escaped attribute value
//! ([`fast_sanitize`]): it decodes character references on the fly, checks
//! the JSON grammar, and writes the value as the original writes it
//! (`json.dumps(..., ensure_ascii=False)` then `html.escape(quote=True)`),
//! without building a tree. Inputs it does not handle exactly (duplicate
//! keys, lone surrogates, `NaN`, very deep nesting, invalid JSON) go the
//! full-parse way ([`slow_sanitize`]), which is the reference semantics.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::text::{entity_at, html_escape, html_unescape, py_dumps, py_float};

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

/// The span of the first `data-jsonblob="..."` value (or, when there is no
/// double-quoted one, `data-jsonblob='...'`), as the original's regexes
/// `data-jsonblob="([^"]*)"` / `data-jsonblob='([^']*)'` find it.
fn find_blob(text: &str) -> Option<(usize, usize)> {
    for (open, quote) in [("data-jsonblob=\"", '"'), ("data-jsonblob='", '\'')] {
        if let Some(at) = text.find(open) {
            let start = at + open.len();
            if let Some(len) = text[start..].find(quote) {
                return Some((start, start + len));
            }
        }
    }
    None
}

/// The reference semantics, on a parsed tree: `Ok(None)` when the original
/// would not touch the file.
fn slow_sanitize(path: &Path, raw: &str) -> Result<Option<String>> {
    // A lone surrogate (which Python's json reads) is read as U+FFFD.
    let json = super::text::replace_lone_surrogates(&html_unescape(raw)).into_owned();
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

/// Sanitizes a pytest-html report's `data-jsonblob` in place; `Ok(true)`
/// when the file changed. A blob that cannot be parsed even after repair
/// is an error naming the file (the file is left untouched).
pub fn sanitize_html_file(path: &Path) -> Result<bool> {
    let text = crate::fsutil::read_to_string(path)?;
    let Some((start, end)) = find_blob(&text) else { return Ok(false) };
    let raw = &text[start..end];
    let new_attr = match fast_sanitize(raw) {
        Some(Fast { maybe: false, .. }) => return Ok(false),
        Some(Fast { out, .. }) => out,
        None => match slow_sanitize(path, raw)? {
            Some(out) => out,
            None => return Ok(false),
        },
    };
    if new_attr == raw {
        return Ok(false);
    }
    crate::fsutil::atomic_write_parts(
        path,
        &[&text.as_bytes()[..start], new_attr.as_bytes(), &text.as_bytes()[end..]],
    )?;
    Ok(true)
}

/// What [`fast_sanitize`] made of an attribute value.
struct Fast {
    /// The original's pre-check: the decoded blob holds a raw newline, CR
    /// or tab, or one of `\n`, `\r`, `\t`, `\u000`, `\u001`. When false
    /// the original leaves the file alone.
    maybe: bool,
    /// The new attribute value.
    out: String,
}

/// Bytes that a JSON string can copy straight from the escaped attribute
/// to the escaped output: printable ASCII other than the characters HTML
/// escaping or JSON escaping touch.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = !matches!(b as u8, b'"' | b'\\' | b'&' | b'<' | b'>' | b'\'');
        b += 1;
    }
    t
};

/// The nesting depth beyond which the fast path gives up (serde_json's
/// limit on the slow path is 128 too).
const MAX_DEPTH: usize = 128;

/// Identity hasher for the already-hashed keys of an object.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The keys of one object seen so far: a short list, a hash set past 16.
#[derive(Default)]
struct KeySet {
    few: Vec<u64>,
    many: HashSet<u64, BuildHasherDefault<IdHasher>>,
}

impl KeySet {
    fn clear(&mut self) {
        self.few.clear();
        if !self.many.is_empty() {
            self.many.clear();
        }
    }

    /// False when `h` was there already.
    fn insert(&mut self, h: u64) -> bool {
        if self.few.len() < 16 {
            if self.few.contains(&h) {
                return false;
            }
            self.few.push(h);
            return true;
        }
        if self.many.is_empty() {
            self.many.extend(self.few.iter().copied());
        }
        self.many.insert(h)
    }
}

/// A quick hash of a key, eight bytes at a time (collisions only send the
/// blob to the full parse).
fn key_hash(b: &[u8]) -> u64 {
    const K: u64 = 0x517cc1b727220a95;
    let mut h = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    for &x in chunks.remainder() {
        h = (h.rotate_left(5) ^ x as u64).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

/// True when one of the 8 bytes of `w` is not [`PLAIN`].
#[inline(always)]
fn has_special(w: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let eq = |c: u8| zero(w ^ (LO * c as u64));
    // Non-ASCII, below 0x20 (valid as every byte is ASCII then), 0x7f.
    (w & HI) != 0
        || (w.wrapping_sub(LO * 0x20) & !w & HI) != 0
        || (eq(0x7f) | eq(b'"') | eq(b'\\') | eq(b'&') | eq(b'<') | eq(b'>') | eq(b'\'')) != 0
}

/// One pass over the escaped attribute value, producing
/// `html.escape(json.dumps(sanitized(json.loads(html.unescape(raw)))))`;
/// `None` when the input needs the full parse (see the module docs).
fn fast_sanitize(raw: &str) -> Option<Fast> {
    let mut sc = Scan {
        s: raw,
        b: raw.as_bytes(),
        i: 0,
        out: String::with_capacity(raw.len() + raw.len() / 8),
        maybe: false,
        key: String::new(),
        sets: Vec::new(),
    };
    sc.ws();
    sc.value(0)?;
    sc.ws();
    if sc.i != sc.b.len() {
        return None;
    }
    Some(Fast { maybe: sc.maybe, out: sc.out })
}

struct Scan<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    out: String,
    maybe: bool,
    /// The decoded key being read.
    key: String,
    /// Hashes of the keys seen, per object nesting level.
    sets: Vec<KeySet>,
}

impl Scan<'_> {
    /// The decoded character at byte `i` and its length in the escaped text.
    #[inline(always)]
    fn char_at(&self, i: usize) -> Option<(char, usize)> {
        let &b = self.b.get(i)?;
        if b == b'&' {
            return Some(self.entity(i));
        }
        if b < 0x80 {
            return Some((b as char, 1));
        }
        let c = self.s[i..].chars().next()?;
        Some((c, c.len_utf8()))
    }

    /// True when the escaped text at byte `i` starts with `pat`.
    #[inline(always)]
    fn at(&self, i: usize, pat: &[u8]) -> bool {
        self.b.len() >= i + pat.len() && self.b[i..i + pat.len()].iter().zip(pat).all(|(a, b)| a == b)
    }

    /// The character reference at byte `i` (an `&`), or a plain `&`.
    #[inline]
    fn entity(&self, i: usize) -> (char, usize) {
        if self.at(i, b"&#34;") {
            ('"', 5)
        } else if self.at(i, b"&lt;") {
            ('<', 4)
        } else if self.at(i, b"&gt;") {
            ('>', 4)
        } else if self.at(i, b"&amp;") {
            ('&', 5)
        } else if self.at(i, b"&quot;") {
            ('"', 6)
        } else {
            entity_at(&self.s[i..]).unwrap_or(('&', 1))
        }
    }

    #[inline]
    fn next(&mut self) -> Option<char> {
        let (c, n) = self.char_at(self.i)?;
        self.i += n;
        Some(c)
    }

    /// Skips JSON whitespace (noting raw newlines and tabs for `maybe`).
    fn ws(&mut self) {
        while self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
        while let Some((c, n)) = self.char_at(self.i) {
            match c {
                ' ' => {}
                '\t' | '\n' | '\r' => self.maybe = true,
                _ => return,
            }
            self.i += n;
        }
    }

    /// `maybe` when the decoded text at byte `i` (just after a backslash)
    /// reads `n`, `r`, `t`, `u000` or `u001`.
    fn check_after_backslash(&mut self, mut i: usize) {
        if self.maybe {
            return;
        }
        let mut got = [0u8; 4];
        for g in got.iter_mut() {
            match self.char_at(i) {
                Some((c, n)) if c.is_ascii() => {
                    *g = c as u8;
                    i += n;
                }
                _ => break,
            }
        }
        self.maybe = matches!(got[0], b'n' | b'r' | b't') || (&got[..3] == b"u00" && matches!(got[3], b'0' | b'1'));
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (c, n) = self.char_at(self.i)?;
        match c {
            '"' => {
                self.i += n;
                self.string(false)
            }
            '{' => {
                self.i += n;
                self.object(depth)
            }
            '[' => {
                self.i += n;
                self.out.push('[');
                self.ws();
                if self.char_at(self.i)?.0 == ']' {
                    self.next();
                    self.out.push(']');
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        ',' => self.out.push_str(", "),
                        ']' => break,
                        _ => return None,
                    }
                    self.ws();
                }
                self.out.push(']');
                Some(())
            }
            't' => self.literal("true"),
            'f' => self.literal("false"),
            'n' => self.literal("null"),
            '-' | '0'..='9' => self.number(),
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.out.push('{');
        self.ws();
        if self.char_at(self.i)?.0 == '}' {
            self.next();
            self.out.push('}');
            return Some(());
        }
        if self.sets.len() <= depth {
            self.sets.resize_with(depth + 1, KeySet::default);
        }
        self.sets[depth].clear();
        loop {
            if self.next()? != '"' {
                return None;
            }
            self.key.clear();
            self.string(true)?;
            // Python keeps the last value of a repeated key at the first
            // key's place: leave that to the full parse.
            if !self.sets[depth].insert(key_hash(self.key.as_bytes())) {
                return None;
            }
            self.ws();
            if self.next()? != ':' {
                return None;
            }
            self.out.push_str(": ");
            self.ws();
            self.value(depth + 1)?;
            self.ws();
            match self.next()? {
                ',' => self.out.push_str(", "),
                '}' => break,
                _ => return None,
            }
            self.ws();
        }
        self.out.push('}');
        Some(())
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        for w in word.chars() {
            if self.next()? != w {
                return None;
            }
        }
        self.out.push_str(word);
        Some(())
    }

    /// A number: integers as written (Python keeps them exact), floats as
    /// Python's `repr` writes them.
    fn number(&mut self) -> Option<()> {
        let mut t = String::new();
        while let Some((c, n)) = self.char_at(self.i) {
            if !matches!(c, '0'..='9' | '-' | '+' | '.' | 'e' | 'E') {
                break;
            }
            t.push(c);
            self.i += n;
        }
        let b = t.as_bytes();
        let mut j = usize::from(b.first() == Some(&b'-'));
        let digits = |j: &mut usize| {
            let s = *j;
            while *j < b.len() && b[*j].is_ascii_digit() {
                *j += 1;
            }
            *j - s
        };
        let int_start = j;
        let nd = digits(&mut j);
        if nd == 0 || (nd > 1 && b[int_start] == b'0') {
            return None;
        }
        let mut float = false;
        if b.get(j) == Some(&b'.') {
            j += 1;
            if digits(&mut j) == 0 {
                return None;
            }
            float = true;
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            j += 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if digits(&mut j) == 0 {
                return None;
            }
            float = true;
        }
        if j != b.len() {
            return None;
        }
        if float {
            self.out.push_str(&py_float(t.parse().ok()?));
        } else if t == "-0" {
            self.out.push('0');
        } else {
            self.out.push_str(&t);
        }
        Some(())
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            v = v * 16 + self.next()?.to_digit(16)?;
        }
        Some(v)
    }

    /// A string after its opening quote: a key (kept, JSON-escaped, and
    /// collected in `self.key`) or a value (sanitized).
    fn string(&mut self, key: bool) -> Option<()> {
        self.out.push_str("&quot;");
        let mut cr = false;
        loop {
            let start = self.i;
            while let Some(w) = self.b.get(self.i..self.i + 8) {
                if has_special(u64::from_le_bytes(w.try_into().expect("8 bytes"))) {
                    break;
                }
                self.i += 8;
            }
            while self.i < self.b.len() && PLAIN[self.b[self.i] as usize] {
                self.i += 1;
            }
            if self.i > start {
                let run = &self.s[start..self.i];
                self.out.push_str(run);
                if key {
                    self.key.push_str(run);
                }
                cr = false;
            }
            let at = self.i;
            // The references pytest-html writes, HTML-escaped the same way
            // on the way out: copy them.
            if self.b.get(at) == Some(&b'&') {
                let same: Option<(usize, char)> = if self.at(at, b"&lt;") {
                    Some((4, '<'))
                } else if self.at(at, b"&gt;") {
                    Some((4, '>'))
                } else if self.at(at, b"&amp;") {
                    Some((5, '&'))
                } else {
                    None
                };
                if let Some((n, c)) = same {
                    self.out.push_str(&self.s[at..at + n]);
                    if key {
                        self.key.push(c);
                    }
                    self.i += n;
                    cr = false;
                    continue;
                }
            } else if self.b.get(at) == Some(&b'\\') && self.at(at + 1, b"&#34;") {
                // An escaped quote.
                self.out.push_str("\\&quot;");
                if key {
                    self.key.push('"');
                }
                self.i += 6;
                cr = false;
                continue;
            }
            let (c, n) = self.char_at(at)?;
            self.i += n;
            let c = match c {
                '"' => break,
                '\\' => {
                    self.check_after_backslash(self.i);
                    match self.next()? {
                        '"' => '"',
                        '\\' => {
                            self.check_after_backslash(self.i);
                            '\\'
                        }
                        '/' => '/',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'u' => {
                            let u = self.hex4()?;
                            match u {
                                0xD800..=0xDBFF => {
                                    // A pair: `\uD83D\uDE00`; a lone half goes the slow way.
                                    if self.next()? != '\\' || self.next()? != 'u' {
                                        return None;
                                    }
                                    let lo = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        return None;
                                    }
                                    char::from_u32(0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00))?
                                }
                                0xDC00..=0xDFFF => return None,
                                _ => char::from_u32(u)?,
                            }
                        }
                        _ => return None,
                    }
                }
                c => {
                    if matches!(c, '\n' | '\r' | '\t') {
                        self.maybe = true;
                    }
                    c
                }
            };
            if key {
                self.key.push(c);
                self.key_char(c);
            } else {
                self.value_char(c, &mut cr);
            }
        }
        self.out.push_str("&quot;");
        Some(())
    }

    /// A key's character as `json.dumps` then `html.escape` write it.
    fn key_char(&mut self, c: char) {
        use std::fmt::Write as _;
        let o = &mut self.out;
        match c {
            '"' => o.push_str("\\&quot;"),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => html_char(o, c),
        }
    }

    /// A value's character, sanitized: CR, CRLF and LF become `<br/>`, a
    /// tab two spaces, any other category C character a space.
    #[inline]
    fn value_char(&mut self, c: char, cr: &mut bool) {
        let o = &mut self.out;
        let was_cr = std::mem::replace(cr, false);
        match c {
            '\n' if was_cr => {}
            '\r' => {
                o.push_str("&lt;br/&gt;");
                *cr = true;
            }
            '\n' => o.push_str("&lt;br/&gt;"),
            '\t' => o.push_str("  "),
            c if is_other(c) => o.push(' '),
            '"' => o.push_str("\\&quot;"),
            '\\' => o.push_str("\\\\"),
            c => html_char(o, c),
        }
    }
}

/// One character as `html.escape(quote=True)` writes it.
#[inline]
fn html_char(o: &mut String, c: char) {
    match c {
        '&' => o.push_str("&amp;"),
        '<' => o.push_str("&lt;"),
        '>' => o.push_str("&gt;"),
        '"' => o.push_str("&quot;"),
        '\'' => o.push_str("&#x27;"),
        c => o.push(c),
    }
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

/// `f` over `items` on up to as many threads as there are cores (one blob
/// needs about twice its size in memory, so a few at once stay small),
/// results in input order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8).min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("sanitize worker panicked")).collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
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
    // Files are independent: sanitize them on every core, report in order.
    let results = parallel_map(&files, |f| sanitize_html_file(f));
    let (mut modified, mut failed) = (0, 0);
    for r in results {
        match r {
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

    /// The fast pass gives exactly what the full parse gives, or defers.
    fn same_as_slow(raw: &str) {
        let slow = slow_sanitize(Path::new("x"), raw);
        match fast_sanitize(raw) {
            Some(Fast { maybe: false, .. }) => assert!(matches!(slow, Ok(None)), "{raw:?}: {slow:?}"),
            Some(Fast { out, .. }) => assert_eq!(out, slow.unwrap().unwrap(), "{raw:?}"),
            None => {}
        }
    }

    #[test]
    fn special_bytes_word_check() {
        for b in 0..=255u8 {
            let mut w = [b'a'; 8];
            w[5] = b;
            assert_eq!(has_special(u64::from_le_bytes(w)), !PLAIN[b as usize], "{b:#x}");
        }
        assert_ne!(key_hash(b"ab"), key_hash(b"ba"));
    }

    #[test]
    fn fast_pass_matches_the_full_parse() {
        let cases = [
            r#"{&#34;a&#34;: &#34;x\ny&#34;}"#,
            "{&#34;a&#34;: &#34;x\ny\r\nz\r\rw\tv&#34;}",
            r#"{&#34;k\n&#34;: &#34;v\u0001\u00e9\ud83d\ude00 &lt;td class=\&#34;c\&#34;&gt;&#39;&amp;&#34;, &#34;n&#34;: [1, 2.50, 1e5, 1E-7, -3, true, false, null, {}, []]}"#,
            r#"{&quot;a&quot;:&quot;\\n&quot; ,  &quot;b&quot; : [ 1 ,2 ] }"#,
            r#"{&#34;a&#34;: &#34;\\u0001&#34;}"#,
            r#"{&#34;a&#34;: &#34;\/x\b\f&#34;}"#,
            r#"{&#34;a&#34;: &#34;plain&#34;}"#,
            r#"{&#34;a&#34;: &#34;\u200b\u0085\u00ad&#34;, &#34;t&#34;: &#34;\t&#34;}"#,
            r#"{&#34;a&#34;: &#34;x&#34;, &#34;a&#34;: &#34;\n&#34;}"#,
            r#"{&#34;a&#34;: &#34;\ud800&#34;, &#34;b&#34;: &#34;\n&#34;}"#,
            r#"{&#34;a&#34;: NaN, &#34;b&#34;: &#34;\n&#34;}"#,
            r#"{&#34;a&#34;: 01, &#34;b&#34;: &#34;\n&#34;}"#,
            r#"{&#34;a&#34;: &#34;\n&#34;"#,
            r#"{&#34;a&#34;: &#34;\n&#34;} x"#,
            "[&#34;\u{1}\n&#34;, &#34;é&#x27;&#92;n&#34;]",
            "\n[1]",
            r#"[&#34;&amp;&amp;&bogus;&#34;, &#34;\r&#34;, 12345]"#,
            "&#34;top\\n&#34;",
            "",
        ];
        for c in cases {
            same_as_slow(c);
        }
        // Python reads `-0` as the int 0 (serde_json as the float -0.0),
        // and keeps big integers exact.
        let f = fast_sanitize("[-0, 123456789012345678901234567890, &#34;\n&#34;]").unwrap();
        assert_eq!(f.out, "[0, 123456789012345678901234567890, &quot;&lt;br/&gt;&quot;]");
        // A pytest-html-like blob: every quote is `&#34;`, rows hold escaped
        // HTML, logs hold newlines.
        let mut blob = String::from("{&#34;environment&#34;: {&#34;Python&#34;: &#34;3.11&#34;}, &#34;tests&#34;: {");
        for i in 0..50 {
            if i > 0 {
                blob.push_str(", ");
            }
            blob.push_str(&format!(
                "&#34;t.py::test[{i}]&#34;: [{{&#34;extras&#34;: [], &#34;result&#34;: &#34;Failed&#34;, \
&#34;resultsTableRow&#34;: [&#34;&lt;td class=\\&#34;col-result\\&#34;&gt;Failed&lt;/td&gt;&#34;], \
&#34;log&#34;: &#34;def test():\\n&gt;       assert {i} == -1\\nE       assert\\t1\\r\\n&#34;}}]"
            ));
        }
        blob.push_str("}, &#34;renderCollapsed&#34;: [&#34;passed&#34;], &#34;initialSort&#34;: &#34;result&#34;}");
        same_as_slow(&blob);
        assert!(fast_sanitize(&blob).unwrap().maybe);
        // Pseudo-random strings over the characters that matter.
        let alphabet = [
            "a",
            "\\n",
            "\\r",
            "\\t",
            "\\\\",
            "\\&#34;",
            "&#34;",
            "\n",
            "\r",
            "\t",
            "\u{1}",
            "&lt;",
            "&amp;",
            "'",
            "é",
            "\u{200b}",
            "\\u0000",
            "\\u001f",
            "&#92;",
            "&#10;",
            "\\ud83d\\ude00",
            "<",
            ">",
            " ",
        ];
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut v = String::from("{&#34;k");
            let mut pick = |v: &mut String, n: usize| {
                for _ in 0..n {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    v.push_str(alphabet[(seed >> 33) as usize % alphabet.len()]);
                }
            };
            pick(&mut v, 3);
            v.push_str("&#34;: [&#34;");
            pick(&mut v, 8);
            v.push_str("&#34;]}");
            same_as_slow(&v);
        }
    }
}
