//! The one shape of a report format: parsed for splicing, asked which
//! tests it holds, told which entries it will gain, and written out in
//! parts. The parts are mostly slices of the parsed text; the new entries
//! go into *slots* (the place in the file where entries go: the `tests`
//! array of a JSON report, the blob of a pytest-html page, ...), so they
//! can be rendered one at a time while the file is written, however many
//! there are.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

use anyhow::Result;

use super::Entry;

/// One piece of a report's new text.
pub(crate) enum Part<'a> {
    /// Text, mostly a slice of the parsed file.
    Text(Cow<'a, str>),
    /// The new entries of one slot, in order: those the report holds as
    /// text (added or absorbed), then the streamed ones.
    Entries(usize),
}

/// The writing half of a report format: object safe, so reports of
/// several formats can be written side by side from one pass over the
/// crash log.
pub(crate) trait Render {
    /// True when the report already holds a test with this node id (one of
    /// its own, or one added with [`Doc::add`]).
    fn has(&self, nodeid: &str) -> bool;
    /// Counts an entry that will be written: counters, totals, durations.
    fn note(&mut self, e: &Entry);
    /// Remembers a node id as held, for [`Render::has`].
    fn remember(&mut self, nodeid: &str);
    /// How many tests the report holds (its own and those added).
    fn entries(&self) -> usize;
    /// How many slots the report has (see the module docs).
    fn slots(&self) -> usize {
        1
    }
    /// Appends an entry as the format writes it in `slot`.
    fn entry_into(&self, slot: usize, e: &Entry, out: &mut String);
    /// What goes before entry number `index` of `slot` (counting the
    /// held ones): `", "` between JSON elements, nothing for rows.
    fn separator(&self, _slot: usize, _index: usize) -> &str {
        ""
    }
    /// The entries of `slot` held as text (added or absorbed).
    fn held(&self, slot: usize) -> &[String];
    /// True when the file must be written: something was noted, or the
    /// report is a new one.
    fn changed(&self) -> bool;
    /// The new text in parts, with the noted counts.
    fn layout(&self) -> Vec<Part<'_>>;
    /// [`Render::layout`], or `None` when nothing changed (the file then
    /// stays as it is, byte for byte).
    fn parts(&self) -> Option<Vec<Part<'_>>> {
        self.changed().then(|| self.layout())
    }
}

/// A report format: [`Render`] plus reading, creating and merging.
pub(crate) trait Doc: Render + Sized {
    /// Parses and validates `text`; errors when it is not this format.
    fn parse(text: String) -> Result<Self>;
    /// Parses a run's own copy of the report (the report plugin wrote it
    /// under the wrapper): as [`Doc::parse`], but a format may accept what
    /// it refuses in a user's file.
    fn parse_copy(text: String) -> Result<Self> {
        Self::parse(text)
    }
    /// A new, empty report of this format.
    fn create() -> Self;
    /// A new, empty report of this format to be written at `path` (formats
    /// that name themselves after their file, as pytest-html does, use it).
    fn create_for(_path: &Path) -> Self {
        Self::create()
    }
    /// Adds collection reports that did not pass (in the order pytest saw
    /// them; one collector may come several times, once per xdist worker
    /// that reported it) to a new report, as the format's plugin lists
    /// them; pytest-csv lists none (the default), pytest-html only failures.
    fn add_collected(&mut self, _reports: &[&crate::journal::CollectReport]) {}
    /// Readies the report a merge starts from for what the merge adds
    /// (see `merge::merge_into`); nothing by default.
    fn prepare(&mut self, _out: &super::RunOutput) {}
    /// The entries of `slot` held as text, to add to.
    fn held_mut(&mut self, slot: usize) -> &mut Vec<String>;
    /// Removes the report's own entries of these node ids (and, in formats
    /// that have them, entries without a node id: xdist's stand-ins for a
    /// crashed worker's test); returns how many. Entries added since the
    /// parse stay.
    fn drop_entries(&mut self, ids: &HashSet<String>) -> usize;
    /// Takes every test of `other` (a report as parsed, entries dropped
    /// from it or not, none added) that this report lacks: notes them as
    /// [`Render::note`] would (node ids, counts, durations) without holding
    /// their text, and returns where that text is in `other`'s original, in
    /// order, for [`Doc::taken`] when the merged report is written.
    fn take(&mut self, other: &Self) -> Vec<(usize, usize)>;
    /// Passes to `each`, in order, the text the entries at `spans` of
    /// `text` (the original of a report [`Doc::take`] took them from, read
    /// again) have in this report: the slice itself, or (CSV) the row in
    /// this report's columns.
    fn taken(
        &self,
        text: &str,
        spans: &[(usize, usize)],
        each: &mut dyn FnMut(&str) -> io::Result<()>,
    ) -> io::Result<()> {
        spans.iter().try_for_each(|&(s, e)| each(&text[s..e]))
    }
    /// The text the report was parsed from.
    fn original(&self) -> &str;

    /// Adds one entry (the caller checked [`Render::has`]).
    fn add(&mut self, e: &Entry) {
        self.remember(&e.nodeid);
        self.note(e);
        for slot in 0..self.slots() {
            let mut text = String::new();
            self.entry_into(slot, e, &mut text);
            self.held_mut(slot).push(text);
        }
    }

    /// The new text, or `None` when nothing changed (in memory: for tests;
    /// reports are written as they are rendered, see [`write_parts_streamed`]).
    #[cfg(test)]
    fn render(&self) -> Option<String> {
        let parts = self.parts()?;
        let mut out = Vec::new();
        write_parts(self, &parts, &mut out).expect("writing to memory");
        Some(String::from_utf8(out).expect("every part is UTF-8"))
    }
}

/// Writes `parts` of `doc` to `w`: text as it is, each slot's held
/// entries with their separators.
#[cfg(test)]
pub(crate) fn write_parts(doc: &(impl Render + ?Sized), parts: &[Part<'_>], w: &mut dyn Write) -> io::Result<()> {
    write_parts_streamed(doc, parts, w, &mut |_| Ok(()))
}

/// What yields the entries a merged report streams into its slot 0: it
/// calls the function it is given once per entry's text, in order.
pub(crate) type Streamed<'s> = dyn FnMut(&mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<()> + 's;

/// [`write_parts`], with the entries `streamed` yields written first into
/// slot 0, before the held ones and with the same separators: entries
/// taken from other reports ([`Doc::take`]), read again while the file is
/// written, so a merged report is never whole in memory.
pub(crate) fn write_parts_streamed(
    doc: &(impl Render + ?Sized),
    parts: &[Part<'_>],
    w: &mut dyn Write,
    streamed: &mut Streamed<'_>,
) -> io::Result<()> {
    for part in parts {
        match part {
            Part::Text(t) => w.write_all(t.as_bytes())?,
            Part::Entries(slot) => {
                let mut index = 0;
                let mut one = |text: &str| {
                    w.write_all(doc.separator(*slot, index).as_bytes())?;
                    index += 1;
                    w.write_all(text.as_bytes())
                };
                if *slot == 0 {
                    streamed(&mut one)?;
                }
                doc.held(*slot).iter().try_for_each(|h| one(h))?;
            }
        }
    }
    Ok(())
}

/// Writes the held entries of `slot`, each after its separator.
pub(crate) fn write_held(doc: &(impl Render + ?Sized), slot: usize, w: &mut dyn Write) -> io::Result<()> {
    for (i, h) in doc.held(slot).iter().enumerate() {
        w.write_all(doc.separator(slot, i).as_bytes())?;
        w.write_all(h.as_bytes())?;
    }
    Ok(())
}
