//! The original's `data-jsonblob` sanitizer, so pytest_html_merger can read
//! a report whose blob holds control characters: raw control characters
//! inside JSON strings are escaped before parsing, then in every string
//! value CR/CRLF become LF, LF becomes `<br/>`, a tab becomes two spaces and
//! any other control or format character becomes a space.
//!
//! The modules, one job each: [`rules`] (what happens to one string),
//! [`reference`] (the original's semantics on a parsed tree), [`fast`]
//! (one linear pass that gives the same bytes, or defers to the reference),
//! [`keys`] (duplicate-key detection for the fast pass). This module finds
//! the blob, picks the files (`globset`) and works on them in parallel.

mod fast;
mod keys;
mod reference;
mod rules;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use fast::{fast_sanitize, Fast};
use reference::slow_sanitize;

/// Files a folder argument stands for, as the original's
/// `sanitize_all_html_jsonblobs`.
pub const DEFAULT_GLOB: &str = "*_log.html";

/// The span of the first `data-jsonblob="..."` value (or, when there is no
/// double-quoted one, `data-jsonblob='...'`), as the original's regexes
/// `data-jsonblob="([^"]*)"` / `data-jsonblob='([^']*)'` find it.
fn find_blob(text: &str) -> Option<(usize, usize)> {
    for (open, quote) in [("data-jsonblob=\"", '"'), ("data-jsonblob='", '\'')] {
        if let Some(at) = text.find(open) {
            let start = at + open.len();
            // (memchr: the blob is megabytes long.)
            if let Some(len) = memchr::memchr(quote as u8, &text.as_bytes()[start..]) {
                return Some((start, start + len));
            }
        }
    }
    None
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

/// `f` over `items` on up to as many threads as there are cores (one blob
/// needs about twice its size in memory, so a few at once stay small),
/// results in input order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8).min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    // Each thread takes every `threads`-th item: files are similar in size.
    let chunks: Vec<Vec<(usize, R)>> = std::thread::scope(|sc| {
        let f = &f;
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                sc.spawn(move || items.iter().enumerate().skip(t).step_by(threads).map(|(i, x)| (i, f(x))).collect())
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("sanitize worker panicked")).collect()
    });
    let mut out: Vec<(usize, R)> = chunks.into_iter().flatten().collect();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// The files `paths` stand for: files as given, folders by the names of
/// their files that match `glob` (default [`DEFAULT_GLOB`]), sorted.
fn expand(paths: &[PathBuf], glob: &str) -> Result<Vec<PathBuf>> {
    let glob = if glob.is_empty() { DEFAULT_GLOB } else { glob };
    let matcher = globset::Glob::new(glob).with_context(|| format!("invalid glob {glob:?}"))?.compile_matcher();
    let mut files = Vec::new();
    for p in paths {
        if !p.is_dir() {
            files.push(p.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("{}: cannot list", p.display()))?
            .flatten()
            .filter(|e| e.path().is_file() && matcher.is_match(e.file_name()))
            .map(|e| e.path())
            .collect();
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Sanitizes files, and in folders the files whose names match `glob`
/// (default [`DEFAULT_GLOB`]); returns (modified, total, failed).
pub fn sanitize_paths(paths: &[PathBuf], glob: &str) -> (usize, usize, usize) {
    let files = match expand(paths, glob) {
        Ok(f) => f,
        Err(e) => {
            crate::reporter::terminal::write_stderr(&format!("pytest-abort: {e:#}\n"));
            return (0, 0, 1);
        }
    };
    // Files are independent: sanitize them on every core, report in order.
    let results = parallel_map(&files, |f| sanitize_html_file(f));
    let (mut modified, mut failed) = (0, 0);
    for r in results {
        match r {
            Ok(true) => modified += 1,
            Ok(false) => {}
            Err(e) => {
                crate::reporter::terminal::write_stderr(&format!("pytest-abort: {e:#}\n"));
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
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a_log.html");
        // A raw newline inside a blob string (invalid JSON) is repaired.
        std::fs::write(&p, "<div id=\"data-container\" data-jsonblob=\"{&#34;tests&#34;: {&#34;x&#34;: [{&#34;log&#34;: &#34;l1\nl2\\tz&#34;}]}}\"></div>").unwrap();
        assert!(sanitize_html_file(&p).unwrap());
        let out = std::fs::read_to_string(&p).unwrap();
        assert!(out.contains("l1&lt;br/&gt;l2  z"), "{out}");
        assert!(!sanitize_html_file(&p).unwrap());
        std::fs::write(dir.path().join("b_log.html"), "data-jsonblob=\"{&#34;a&#34;: &#34;\\n\"").unwrap();
        std::fs::write(dir.path().join("c.html"), "not matched by the glob").unwrap();
        assert_eq!(sanitize_paths(&[dir.path().to_path_buf()], ""), (0, 2, 1));
        assert_eq!(expand(&[dir.path().to_path_buf()], "*.html").unwrap().len(), 3);
    }
}
