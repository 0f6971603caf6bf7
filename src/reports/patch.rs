//! Patching reports with crash records: one failed entry per crashed test
//! a report lacks, every report of a command written side by side.
//!
//! Memory stays bounded however long the crash log is: records are read
//! twice, once to decide which report gains which crash (keeping only each
//! crash's node id and its place in the log) and once to write, each entry
//! rendered straight into the reports' temp files. A report's second slot
//! (the static rows of a page pytest-abort created) is written into an
//! unnamed temp file first and copied into place after the first slot.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::doc::{write_held, Doc, Part, Render};
use super::{csv, html, json, junit, read_report_bom, Entry, Kind, Patched, BOM};
use crate::fsutil::{AtomicFile, Written};
use crate::record::{self, CrashRecord};

/// Where crash records come from: read once to choose, once to write.
pub(crate) trait Source {
    /// Calls `f(position, record)` for every record, in order.
    fn scan(&self, f: &mut dyn FnMut(u64, &CrashRecord)) -> Result<()>;
    /// Calls `f(i, record)` for the records at `positions[i]` (ascending).
    fn replay(&self, positions: &[u64], f: &mut dyn FnMut(usize, &CrashRecord) -> Result<()>) -> Result<()>;
}

impl Source for [CrashRecord] {
    fn scan(&self, f: &mut dyn FnMut(u64, &CrashRecord)) -> Result<()> {
        self.iter().enumerate().for_each(|(i, r)| f(i as u64, r));
        Ok(())
    }

    fn replay(&self, positions: &[u64], f: &mut dyn FnMut(usize, &CrashRecord) -> Result<()>) -> Result<()> {
        positions.iter().enumerate().try_for_each(|(i, &p)| f(i, &self[p as usize]))
    }
}

/// A crash log file, read line by line (the position is a line's offset).
pub(crate) struct LogFile<'p>(pub &'p Path);

impl LogFile<'_> {
    /// Calls `f(offset, line)` for each line; stops early when `f` says so.
    fn lines(&self, f: &mut dyn FnMut(u64, &str) -> Result<bool>) -> Result<()> {
        let file = File::open(self.0).with_context(|| format!("{}: cannot read the crash log", self.0.display()))?;
        let mut rd = BufReader::with_capacity(1 << 16, file);
        let (mut buf, mut offset) = (Vec::new(), 0u64);
        loop {
            buf.clear();
            let n = rd
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("{}: cannot read the crash log", self.0.display()))?;
            if n == 0 || !f(offset, &String::from_utf8_lossy(&buf))? {
                return Ok(());
            }
            offset += n as u64;
        }
    }
}

impl Source for LogFile<'_> {
    fn scan(&self, f: &mut dyn FnMut(u64, &CrashRecord)) -> Result<()> {
        self.lines(&mut |at, line| {
            if let Some(r) = record::parse_crash_line(line) {
                f(at, &r);
            }
            Ok(true)
        })
    }

    fn replay(&self, positions: &[u64], f: &mut dyn FnMut(usize, &CrashRecord) -> Result<()>) -> Result<()> {
        let mut next = 0;
        self.lines(&mut |at, line| {
            if positions.get(next) == Some(&at) {
                let r = record::parse_crash_line(line).context("the crash log changed while it was read")?;
                f(next, &r)?;
                next += 1;
            }
            Ok(next < positions.len())
        })
    }
}

/// One report being patched.
struct Target<'a> {
    path: &'a Path,
    created: bool,
    bom: bool,
    doc: Box<dyn Render + Send + Sync>,
    added: usize,
}

/// Reads and parses a report, or starts a new one when it is missing.
fn open(kind: Kind, path: &Path) -> Result<Target<'_>> {
    fn load<D: Doc + Send + Sync + 'static>(path: &Path) -> Result<(bool, bool, Box<dyn Render + Send + Sync>)> {
        Ok(match read_report_bom(path)? {
            Some((bom, text)) => {
                let doc =
                    D::parse(text).with_context(|| format!("{}: not a valid report of its format", path.display()))?;
                (false, bom, Box::new(doc))
            }
            None => (true, false, Box::new(D::create_for(path))),
        })
    }
    let (created, bom, doc) = match kind {
        Kind::Json => load::<json::JsonDoc>(path)?,
        Kind::Html => load::<html::HtmlDoc>(path)?,
        Kind::Csv => load::<csv::CsvDoc>(path)?,
        Kind::Junit => load::<junit::JunitDoc>(path)?,
    };
    Ok(Target { path, created, bom, doc, added: 0 })
}

/// Reads and parses every target, each in its own thread: parsing (the
/// validation of every report before it is touched) is most of the work,
/// and the reports are independent.
fn open_all(targets: &[(Kind, PathBuf)]) -> Vec<Result<Target<'_>>> {
    each_in_parallel(targets.iter().collect(), |(k, p)| open(*k, p))
}

/// `f` of every item, each in its own thread when there are several (the
/// reports of one command are independent: each is read, parsed and
/// written on its own), results in the items' order.
fn each_in_parallel<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() < 2 {
        return items.into_iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items.into_iter().map(|item| s.spawn(move || f(item))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// Which crashes go where: for each chosen record, its position and the
/// targets (bits) that gain it.
struct Plan {
    picks: Vec<(u64, u32)>,
    /// Distinct crashed tests in the source.
    unique: usize,
}

/// First pass: deduplicates the records by node id (first wins) and notes
/// each in every target that lacks it.
fn choose(source: &(impl Source + ?Sized), targets: &mut [Result<Target<'_>>]) -> Result<Plan> {
    let mut seen: HashSet<Box<str>> = HashSet::new();
    let mut picks = Vec::new();
    source.scan(&mut |pos, r| {
        let key = r.key();
        if key.is_empty() || !seen.insert(key.into()) {
            return;
        }
        let entry = Entry::from_crash(r);
        let mut bits = 0u32;
        for (i, t) in targets.iter_mut().enumerate() {
            if let Some(t) = t.as_mut().ok().filter(|t| !t.doc.has(key)) {
                t.doc.note(&entry);
                t.added += 1;
                bits |= 1 << i;
            }
        }
        if bits != 0 {
            picks.push((pos, bits));
        }
    })?;
    Ok(Plan { picks, unique: seen.len() })
}

/// A target's output while the entries stream in.
struct Out<'d> {
    file: AtomicFile,
    doc: &'d (dyn Render + Sync),
    parts: Vec<Part<'d>>,
    /// Index in `parts` of the first slot, written straight to `file`.
    first: usize,
    /// The other slots' entries, in unnamed temp files until the end.
    spills: Vec<Option<io::BufWriter<File>>>,
    /// Per slot, the index of the next entry (for separators).
    next: Vec<usize>,
}

impl<'d> Out<'d> {
    /// Starts the file: everything up to the first slot, and the held
    /// entries of every slot.
    fn start(t: &'d Target<'_>) -> Result<Option<Out<'d>>> {
        let doc: &(dyn Render + Sync) = &*t.doc;
        let Some(parts) = doc.parts() else { return Ok(None) };
        let mut file = AtomicFile::create(t.path)?;
        let dir = t.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let first = parts.iter().position(|p| matches!(p, Part::Entries(_))).unwrap_or(parts.len());
        let mut spills = Vec::new();
        let io = || format!("{}: cannot write", t.path.display());
        let w = file.writer();
        w.write_all(if t.bom { BOM.as_bytes() } else { b"" }).with_context(io)?;
        for p in &parts[..first] {
            if let Part::Text(s) = p {
                w.write_all(s.as_bytes()).with_context(io)?;
            }
        }
        for slot in 0..doc.slots() {
            if matches!(parts.get(first), Some(Part::Entries(s)) if *s == slot) {
                write_held(doc, slot, file.writer()).with_context(io)?;
                spills.push(None);
            } else {
                let f = tempfile::tempfile_in(dir)
                    .with_context(|| format!("{}: cannot create a temp file", t.path.display()))?;
                let mut w = io::BufWriter::with_capacity(1 << 16, f);
                write_held(doc, slot, &mut w).with_context(io)?;
                spills.push(Some(w));
            }
        }
        let next = (0..doc.slots()).map(|slot| doc.held(slot).len()).collect();
        Ok(Some(Out { file, doc, parts, first, spills, next }))
    }

    /// Writes one streamed entry into every slot, after its separator.
    fn entry(&mut self, e: &Entry, buf: &mut String) -> io::Result<()> {
        for slot in 0..self.next.len() {
            buf.clear();
            buf.push_str(self.doc.separator(slot, self.next[slot]));
            self.next[slot] += 1;
            self.doc.entry_into(slot, e, buf);
            let w: &mut dyn Write = match self.spills[slot].as_mut() {
                Some(spill) => spill,
                None => self.file.writer(),
            };
            w.write_all(buf.as_bytes())?;
        }
        Ok(())
    }

    /// Writes the rest (the text after the first slot, the other slots
    /// from their temp files) and renames the file into place.
    fn finish(mut self, path: &Path) -> Result<Written> {
        let io = || format!("{}: cannot write", path.display());
        let rest = std::mem::take(&mut self.parts).into_iter().skip(self.first + 1);
        for p in rest {
            match p {
                Part::Text(s) => self.file.writer().write_all(s.as_bytes()).with_context(io)?,
                Part::Entries(slot) => {
                    let spill = self.spills[slot].take().context("a slot written twice")?;
                    let mut f = spill.into_inner().map_err(|e| e.into_error()).with_context(io)?;
                    f.rewind().with_context(io)?;
                    io::copy(&mut f, self.file.writer()).with_context(io)?;
                }
            }
        }
        self.file.commit()
    }
}

/// Patches every target with the crashes of `source` (deduplicated by node
/// id, first wins; only those a report lacks): returns how many distinct
/// crashed tests the source holds, and per target what was done or why it
/// failed (a report that cannot be read or is not valid for its format is
/// left untouched; the others are still patched). An error of the source
/// itself fails the whole call, touching nothing.
pub(crate) fn patch_all(
    source: &(impl Source + ?Sized),
    targets: &[(Kind, PathBuf)],
) -> Result<(usize, Vec<Result<Patched>>)> {
    if targets.len() > 32 {
        // A pick's bits say which targets gain it: 32 at a time.
        let mut out = Vec::new();
        let mut unique = 0;
        for chunk in targets.chunks(32) {
            let (u, r) = patch_all(source, chunk)?;
            unique = u;
            out.extend(r);
        }
        return Ok((unique, out));
    }
    let mut opened = open_all(targets);
    let plan = choose(source, &mut opened)?;
    let written = write_all(source, &opened, &plan, targets)?;
    let mut docs = Vec::new();
    let results = opened
        .into_iter()
        .zip(written)
        .map(|(t, w)| {
            let t = t?;
            let w = w?;
            let patched = Patched {
                path: t.path.to_path_buf(),
                added: t.added,
                created: t.created,
                entries: t.doc.entries(),
                replaced_read_only: w.and_then(|w| w.replaced_read_only),
            };
            docs.push(t.doc);
            Ok(patched)
        })
        .collect();
    drop_later(docs);
    Ok((plan.unique, results))
}

/// Frees `value` on a thread of its own. A parsed report is many small
/// allocations (a tenth of the time of patching it goes to freeing them);
/// a report tool then ends without waiting for that (the process's memory
/// goes back whole), and the wrapper, which lives on, frees it beside its
/// next work. Where no thread can start, it is freed here.
fn drop_later<T: Send + 'static>(value: T) {
    // When the thread cannot start, the closure, and `value` with it, is
    // dropped by `spawn`.
    let _ = std::thread::Builder::new().name("drop".into()).spawn(move || drop(value));
}

/// Second pass: every changed target written side by side, each chosen
/// record rendered once per target that gains it.
fn write_all(
    source: &(impl Source + ?Sized),
    opened: &[Result<Target<'_>>],
    plan: &Plan,
    targets: &[(Kind, PathBuf)],
) -> Result<Vec<Result<Option<Written>>>> {
    // The text up to each report's first slot (most of a report) is
    // written in parallel, the crash log is read once for all, and the
    // rest of each is written in parallel again.
    let mut outs: Vec<Result<Option<Out<'_>>>> =
        each_in_parallel(opened.iter().collect(), |t| t.as_ref().map_or(Ok(None), Out::start));
    let positions: Vec<u64> = plan.picks.iter().map(|p| p.0).collect();
    let mut buf = String::new();
    source.replay(&positions, &mut |i, r| {
        let bits = plan.picks[i].1;
        let e = Entry::from_crash(r);
        for (j, o) in outs.iter_mut().enumerate().filter(|(j, _)| bits & (1 << j) != 0) {
            if let Ok(Some(out)) = o {
                if let Err(err) = out.entry(&e, &mut buf) {
                    *o = Err(anyhow::Error::new(err).context(format!("{}: cannot write", targets[j].1.display())));
                }
            }
        }
        Ok(())
    })?;
    Ok(each_in_parallel(outs.into_iter().zip(targets).collect(), |(o, (_, path))| match o? {
        Some(out) => out.finish(path).map(Some),
        None => Ok(None),
    }))
}
