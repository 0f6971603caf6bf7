//! One linear pass over the HTML-escaped attribute value that produces
//! what [`super::reference`] produces, without building a tree: character
//! references are decoded on the fly, the JSON grammar is checked, and the
//! value is written as the original writes it. Inputs it does not handle
//! exactly (duplicate keys, lone surrogates, `NaN`, very deep nesting,
//! invalid JSON) return `None`, for the full parse.

use super::keys::{key_hash, KeySet};
use super::rules::is_other;
use crate::reports::text::{entity_at, py_float};

/// What [`fast_sanitize`] made of an attribute value.
pub(super) struct Fast {
    /// The original's pre-check: the decoded blob holds a raw newline, CR
    /// or tab, or one of `\n`, `\r`, `\t`, `\u000`, `\u001`. When false
    /// the original leaves the file alone.
    pub(super) maybe: bool,
    /// The new attribute value.
    pub(super) out: String,
}

/// The printable ASCII characters HTML escaping or JSON escaping touch.
const TOUCHED: [u8; 6] = [b'"', b'\\', b'&', b'<', b'>', b'\''];

/// Bytes that a JSON string can copy straight from the escaped attribute
/// to the escaped output: printable ASCII other than [`TOUCHED`].
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b >= 0x20 && b < 0x7f;
        b += 1;
    }
    let mut i = 0;
    while i < TOUCHED.len() {
        t[TOUCHED[i] as usize] = false;
        i += 1;
    }
    t
};

/// The nesting depth beyond which the fast path gives up (serde_json's
/// limit on the slow path is 128 too).
const MAX_DEPTH: usize = 128;

/// The index (0-7, in memory order) of the first of the 8 bytes of `w`
/// (read little-endian) that is not [`PLAIN`]; 8 when all are.
///
/// Each test sets the high bit of the bytes it matches; a borrow can set
/// it falsely only in a byte after a true match, so the lowest set bit is
/// exact.
#[inline(always)]
fn first_special(w: u64) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let eq = |c: u8| zero(w ^ (LO * c as u64));
    // Non-ASCII, below 0x20, 0x7f and the bytes escaping touches.
    let m = (w & HI) | (w.wrapping_sub(LO * 0x20) & !w & HI) | eq(0x7f);
    let m = TOUCHED.iter().fold(m, |m, &c| m | eq(c));
    m.trailing_zeros() as usize / 8
}

/// A bit per byte of the 16 at `chunk` (bit k for byte k) that is not
/// [`PLAIN`]; 0 when all are. SSE2, which every x86-64 CPU has: a pytest-html
/// blob's runs of plain bytes are a few dozen long, so this halves the steps
/// of the word-wise check over them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn special_mask16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline, and the load reads the
    // 16 bytes `chunk` borrows (unaligned loads are allowed).
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
        // Signed: below 0x20 includes every byte of 0x80 and up (non-ASCII).
        let mut m = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)), eq(0x7f));
        for c in TOUCHED {
            m = _mm_or_si128(m, eq(c));
        }
        _mm_movemask_epi8(m) as u32
    }
}

/// One pass over the escaped attribute value, producing
/// `html.escape(json.dumps(sanitized(json.loads(html.unescape(raw)))))`;
/// `None` when the input needs the full parse (see the module docs).
pub(super) fn fast_sanitize(raw: &str) -> Option<Fast> {
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
            if self.copy_run(key) {
                cr = false;
                continue;
            }
            let (c, n) = self.char_at(self.i)?;
            self.i += n;
            let c = match c {
                '"' => break,
                '\\' => self.escape()?,
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

    /// Copies what goes to the output unchanged from byte `i` on: plain
    /// bytes, the references pytest-html writes that are escaped the same
    /// way on the way out (`&lt;`, `&gt;`, `&amp;`), and escaped quotes
    /// (`\&#34;`, written `\&quot;`). True when it copied anything.
    #[inline]
    fn copy_run(&mut self, key: bool) -> bool {
        let first = self.i;
        let mut start = self.i;
        loop {
            let plain = self.i;
            self.skip_plain();
            if key {
                self.key.push_str(&self.s[plain..self.i]);
            }
            let at = self.i;
            let (n, c) = match self.b.get(at) {
                Some(b'&') if self.at(at, b"&lt;") => (4, '<'),
                Some(b'&') if self.at(at, b"&gt;") => (4, '>'),
                Some(b'&') if self.at(at, b"&amp;") => (5, '&'),
                Some(b'\\') if self.at(at + 1, b"&#34;") => {
                    // An escaped quote: written `\&quot;` on the way out.
                    self.out.push_str(&self.s[start..at]);
                    self.out.push_str("\\&quot;");
                    start = at + 6;
                    (6, '"')
                }
                _ => break,
            };
            if key {
                self.key.push(c);
            }
            self.i += n;
        }
        self.out.push_str(&self.s[start..self.i]);
        self.i > first
    }

    /// Moves past plain bytes, eight at a time (in a pytest-html blob a
    /// byte that ends a run, mostly the `&` of `&#34;`, comes every few
    /// dozen bytes: a word-wise check that finds its exact place is faster
    /// there than a `memchr` search followed by a check of what it skipped).
    #[inline]
    fn skip_plain(&mut self) {
        let b = self.b;
        let mut i = self.i;
        #[cfg(target_arch = "x86_64")]
        while let Some(chunk) = b.get(i..i + 16) {
            let m = special_mask16(chunk.try_into().expect("16 bytes"));
            if m != 0 {
                self.i = i + m.trailing_zeros() as usize;
                return;
            }
            i += 16;
        }
        while let Some(w) = b.get(i..i + 8) {
            let k = first_special(u64::from_le_bytes(w.try_into().expect("8 bytes")));
            i += k;
            if k < 8 {
                self.i = i;
                return;
            }
        }
        while i < b.len() && PLAIN[b[i] as usize] {
            i += 1;
        }
        self.i = i;
    }

    /// The character a backslash escape stands for (after the backslash).
    fn escape(&mut self) -> Option<char> {
        self.check_after_backslash(self.i);
        Some(match self.next()? {
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
            'u' => self.unicode_escape()?,
            _ => return None,
        })
    }

    /// A `\\uXXXX` escape (after the `u`), a surrogate pair as one
    /// character; a lone half goes the slow way.
    fn unicode_escape(&mut self) -> Option<char> {
        let u = self.hex4()?;
        match u {
            0xD800..=0xDBFF => {
                if self.next()? != '\\' || self.next()? != 'u' {
                    return None;
                }
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return None;
                }
                char::from_u32(0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00))
            }
            0xDC00..=0xDFFF => None,
            _ => char::from_u32(u),
        }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::reference::slow_sanitize;
    use super::*;

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
            for at in 0..8 {
                let mut w = [b'a'; 8];
                w[at] = b;
                let want = if PLAIN[b as usize] { 8 } else { at };
                assert_eq!(first_special(u64::from_le_bytes(w)), want, "{b:#x} at {at}");
                // A second special byte later on never hides the first.
                for c in [0u8, 0x1f, b'&', 0xff] {
                    if at < 7 {
                        w[7] = c;
                        let want = if PLAIN[b as usize] { 7 } else { at };
                        assert_eq!(first_special(u64::from_le_bytes(w)), want, "{b:#x} at {at}, {c:#x} at 7");
                    }
                }
            }
        }
        assert_ne!(key_hash(b"ab"), key_hash(b"ba"));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn special_bytes_sse2_check() {
        for b in 0..=255u8 {
            for at in 0..16 {
                let mut w = [b'a'; 16];
                w[at] = b;
                let want = if PLAIN[b as usize] { 0 } else { 1 << at };
                assert_eq!(special_mask16(&w), want, "{b:#x} at {at}");
            }
        }
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
