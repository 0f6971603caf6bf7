//! The wrapper's end step: one report per requested file, merged from the
//! per-run copies the shim redirected pytest to, filled in from the
//! journals for runs whose process died before writing, plus the crashes.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::csv::CsvDoc;
use super::doc::{write_parts_streamed, Part, Render as _};
use super::html::HtmlDoc;
use super::json::JsonDoc;
use super::junit::JunitDoc;
use super::{add_crashes, read_report, Doc, Entry, Kind, Patched, RunOutput};
use crate::fsutil::Written;

/// Entries a merged report took from one source file ([`Doc::take`]):
/// their text stays in the file, read again when the report is written.
struct Taken {
    path: PathBuf,
    /// The text's length and the file's modification time when it was
    /// parsed: a file changed since is an error, not a mixed report.
    len: usize,
    modified: Option<std::time::SystemTime>,
    spans: Vec<(usize, usize)>,
}

/// A merged report before it is written: the first source (or a new
/// report) with the counts of every entry it gained, the text of those
/// taken from the other sources left in their files.
pub(crate) struct Merged<D> {
    doc: D,
    taken: Vec<Taken>,
    /// Entries added (taken, filled in from journals, crashes, not run).
    added: usize,
}

/// Merges `sources` (in order; missing or unreadable ones are skipped, as
/// the run that should have written them died), then adds every finished
/// test of `out.done`, every crash (but a device error's: its test
/// finished, and its own entry stands) and, when the wrapper stopped them, the
/// tests not run. A crashed test's entry is always the crash's own: what a
/// surviving xdist controller wrote for it (its "worker crashed" stand-in)
/// is dropped first, and so is an entry of a test that did not finish
/// (interrupted mid-test: the report plugin holds only its passed setup,
/// which is not a pass).
///
/// One source is in memory at a time: each is parsed (validated), its
/// entries counted into the first, and dropped; [`write_merged`] reads the
/// entries' text again from the files.
pub(crate) fn merge_into<D: Doc>(sources: &[PathBuf], out: &RunOutput) -> Result<Merged<D>> {
    // A device error's test finished: its own entry stands.
    let deaths: Vec<crate::record::CrashRecord>;
    let records = if out.records.iter().any(|r| r.kind.test_finished()) {
        deaths = out.records.iter().filter(|r| !r.kind.test_finished()).cloned().collect();
        deaths.as_slice()
    } else {
        out.records
    };
    let crashed: HashSet<String> = records.iter().map(|r| r.key().to_string()).filter(|k| !k.is_empty()).collect();
    let mut unfinished = crashed.clone();
    unfinished.extend(out.not_run.iter().map(|n| n.trim().to_string()));
    let mut base: Option<D> = None;
    let mut taken = Vec::new();
    let mut added = 0;
    for src in sources {
        let modified = std::fs::metadata(src).and_then(|m| m.modified()).ok();
        let Ok(Some(text)) = read_report(src) else { continue };
        let Ok(mut doc) = D::parse_copy(text) else { continue };
        doc.drop_entries(&unfinished);
        match base.as_mut() {
            None => {
                doc.prepare(out);
                base = Some(doc);
            }
            Some(b) => {
                let spans = b.take(&doc);
                added += spans.len();
                taken.push(Taken { path: src.clone(), len: doc.original().len(), modified, spans });
            }
        }
    }
    let mut doc = base.unwrap_or_else(|| {
        let mut doc = D::create();
        // A report pytest wrote lists these itself; a new one gets them
        // as the plugin would have written them, first, as pytest does.
        let fresh: Vec<_> = out.collect.iter().filter(|c| !doc.has(&c.nodeid)).collect();
        let before = doc.entries();
        doc.add_collected(&fresh);
        // Counted as entries where the format counts them as such.
        added += doc.entries() - before;
        doc.prepare(out);
        doc
    });
    for d in out.done {
        if !d.nodeid.trim().is_empty() && !doc.has(&d.nodeid) && !crashed.contains(d.nodeid.trim()) {
            doc.add(&Entry::from_done(d));
            added += 1;
        }
    }
    added += add_crashes(&mut doc, records);
    if let Some(why) = out.not_run_reason {
        for id in out.not_run.iter().filter(|n| !n.trim().is_empty()) {
            if !doc.has(id) && !crashed.contains(id.trim()) {
                doc.add(&Entry::not_run(id, why));
                added += 1;
            }
        }
    }
    Ok(Merged { doc, taken, added })
}

/// Collection reports grouped by node id, in first-seen order (under xdist
/// one collector may fail once per worker: one entry with each report).
pub(crate) fn collect_groups<'a>(
    reports: &[&'a crate::journal::CollectReport],
) -> Vec<Vec<&'a crate::journal::CollectReport>> {
    let mut groups: Vec<Vec<&crate::journal::CollectReport>> = Vec::new();
    for &c in reports {
        match groups.iter_mut().find(|g| g[0].nodeid == c.nodeid) {
            Some(g) => g.push(c),
            None => groups.push(vec![c]),
        }
    }
    groups
}

/// Writes a merged report to `dest` atomically, streaming the taken
/// entries from their files; `first` rewrites the text before the first
/// entry (HTML: the page's title).
fn write_merged<D: Doc>(m: &Merged<D>, dest: &Path, first: impl FnOnce(&str) -> String) -> Result<Written> {
    let doc = &m.doc;
    let mut parts = match m.taken.is_empty() {
        true => doc.parts().unwrap_or_else(|| vec![Part::Text(Cow::Borrowed(doc.original()))]),
        false => doc.layout(),
    };
    if let Some(Part::Text(t)) = parts.first_mut() {
        *t = Cow::Owned(first(t));
    }
    crate::fsutil::atomic_write_with(dest, |w| {
        write_parts_streamed(doc, &parts, w, &mut |each| m.taken.iter().try_for_each(|t| t.read(doc, each)))
    })
}

impl Taken {
    /// Reads the file again and passes each taken entry's text to `each`.
    fn read<D: Doc>(&self, doc: &D, each: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<()> {
        let changed = || io::Error::other(format!("{}: changed while the reports were merged", self.path.display()));
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let text = match read_report(&self.path) {
            Ok(Some(text)) if text.len() == self.len && modified == self.modified => text,
            Ok(_) => return Err(changed()),
            Err(e) => return Err(io::Error::other(format!("{e:#}"))),
        };
        doc.taken(&text, &self.spans, each)
    }
}

/// Copies `<src>/assets/*` next to `dest` (pytest-html without
/// `--self-contained-html` keeps its CSS there).
fn copy_assets(sources: &[PathBuf], dest: &Path) -> Result<()> {
    let Some(src) = sources.iter().filter_map(|s| s.parent()).map(|d| d.join("assets")).find(|d| d.is_dir()) else {
        return Ok(());
    };
    let to = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("assets");
    std::fs::create_dir_all(&to).with_context(|| format!("{}: cannot create", to.display()))?;
    for e in std::fs::read_dir(&src).with_context(|| format!("{}: cannot list", src.display()))?.flatten() {
        if e.path().is_file() {
            let target = to.join(e.file_name());
            std::fs::copy(e.path(), &target).with_context(|| format!("{}: cannot copy assets", target.display()))?;
        }
    }
    Ok(())
}

/// pytest-html titles its page with the file's name; the run copies are
/// all `report.html`, so give the final page the requested name.
fn retitle(text: String, dest: &Path) -> String {
    let Some(name) = dest.file_name().map(|n| n.to_string_lossy().into_owned()) else { return text };
    let esc = super::text::html_escape(&name);
    text.replacen("<title id=\"head-title\">report.html</title>", &format!("<title id=\"head-title\">{esc}</title>"), 1)
        .replacen("<h1 id=\"title\">report.html</h1>", &format!("<h1 id=\"title\">{esc}</h1>"), 1)
}

fn complete_one(kind: Kind, dest: &Path, session: &RunOutput) -> Result<Patched> {
    let sources: Vec<PathBuf> = session.runs.iter().filter_map(|rr| rr.redirected.get(&kind)).cloned().collect();
    let created = !dest.exists();
    crate::fsutil::create_parent(dest)?;
    let keep = |t: &str| t.to_string();
    let (written, added, entries) = match kind {
        Kind::Json => {
            let mut m = merge_into::<JsonDoc>(&sources, session)?;
            if let Some((collected, deselected)) = session.counts {
                m.doc.set_counts(collected, deselected);
            }
            if let Some(code) = session.exit_status {
                m.doc.set_exitcode(code);
            }
            (write_merged(&m, dest, keep)?, m.added, m.doc.entries())
        }
        Kind::Html => {
            let m = merge_into::<HtmlDoc>(&sources, session)?;
            copy_assets(&sources, dest)?;
            (write_merged(&m, dest, |t| retitle(t.to_string(), dest))?, m.added, m.doc.entries())
        }
        Kind::Csv => {
            let m = merge_into::<CsvDoc>(&sources, session)?;
            (write_merged(&m, dest, keep)?, m.added, m.doc.entries())
        }
        Kind::Junit => {
            let m = merge_into::<JunitDoc>(&sources, session)?;
            (write_merged(&m, dest, keep)?, m.added, m.doc.entries())
        }
    };
    Ok(Patched { path: dest.to_path_buf(), added, created, entries, replaced_read_only: written.replaced_read_only })
}

/// The wrapper's end step: for each report kind the user asked pytest for
/// (`session.runs`: requested/redirected paths per run, see
/// journal::RunReports) and each extra target (wrapper flags), write ONE
/// report holding every test of every run exactly once plus each crashed
/// test as failed. Runs whose process died before writing its report are
/// filled from the journal `Done` entries (session.done has outcome,
/// duration, longrepr, location, sections, start); tests the wrapper
/// stopped before they ran are listed as not run (see
/// [`RunOutput::not_run_reason`]). Creates JUnit from journals when asked
/// only via the wrapper flag. The targets are written in parallel, one
/// thread each (they share nothing but the read-only session), and the
/// results come back in target order.
pub fn complete(session: &RunOutput, extra: &[(Kind, PathBuf)]) -> Vec<Result<Patched>> {
    let mut targets: Vec<(Kind, PathBuf)> = Vec::new();
    for rr in session.runs {
        for (kind, p) in &rr.requested {
            if !targets.iter().any(|(tk, tp)| tk == kind && tp == p) {
                targets.push((*kind, p.clone()));
            }
        }
    }
    for (kind, p) in extra {
        if !targets.iter().any(|(tk, tp)| tk == kind && tp == p) {
            targets.push((*kind, p.clone()));
        }
    }
    if targets.len() < 2 {
        return targets.iter().map(|(k, p)| complete_one(*k, p, session)).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = targets.iter().map(|(k, p)| scope.spawn(move || complete_one(*k, p, session))).collect();
        handles
            .into_iter()
            .zip(&targets)
            .map(|(h, (k, p))| {
                h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("{}: writing the {k} report panicked", p.display())))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Done, RunReports};
    use crate::record::CrashRecord;

    #[test]
    fn fills_missing_runs_from_journal_and_adds_crashes() {
        let dir = tempfile::tempdir().unwrap();
        let r2 = dir.path().join("r2.json");
        std::fs::write(&r2, r#"{"created": 1.0, "duration": 1.0, "exitcode": 0, "root": "/", "environment": {}, "summary": {"passed": 1, "total": 1, "collected": 1}, "collectors": [], "tests": [{"nodeid": "t.py::c", "outcome": "passed"}]}"#).unwrap();
        let mut runs = Vec::new();
        for (run, red) in [(1, dir.path().join("missing.json")), (2, r2.clone())] {
            let mut rr = RunReports { run, ..Default::default() };
            rr.requested.insert(Kind::Json, dir.path().join("out.json"));
            rr.redirected.insert(Kind::Json, red);
            runs.push(rr);
        }
        let done = vec![
            Done { nodeid: "t.py::a".into(), outcome: "passed".into(), ..Default::default() },
            Done { nodeid: "t.py::c".into(), outcome: "passed".into(), ..Default::default() },
        ];
        let records = vec![CrashRecord { nodeid: "t.py::b".into(), signal: Some(11), ..Default::default() }];
        let session = RunOutput {
            records: &records,
            done: &done,
            collect: &[],
            runs: &runs,
            counts: None,
            not_run: &[],
            not_run_reason: None,
            exit_status: None,
        };
        let junit = dir.path().join("j.xml");
        let res = complete(&session, &[(Kind::Junit, junit.clone())]);
        assert_eq!(res.len(), 2);
        let p = res[0].as_ref().unwrap();
        assert_eq!(p.added, 2);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("out.json")).unwrap()).unwrap();
        let ids: Vec<_> = v["tests"].as_array().unwrap().iter().map(|t| t["nodeid"].as_str().unwrap()).collect();
        assert_eq!(ids, ["t.py::c", "t.py::a", "t.py::b"]);
        assert_eq!(v["summary"]["total"], 3);
        let x = std::fs::read_to_string(&junit).unwrap();
        assert!(x.contains("tests=\"3\"") && x.contains("failures=\"1\""), "{x}");
    }
}
