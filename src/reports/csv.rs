//! pytest-csv reports: new rows are appended under the file's own header
//! (whatever columns it has); the known columns are filled in.

use std::borrow::Cow;
use std::collections::HashSet;

use anyhow::{bail, Context as _, Result};

use super::doc::{Doc, Part, Render};
use super::text::py_float;
use super::Entry;

/// pytest-csv's default columns.
pub(crate) const DEFAULT_HEADER: &str = "id,module,name,file,doc,markers,status,message,duration";

/// A parsed pytest-csv report.
pub(crate) struct CsvDoc {
    text: String,
    header: Vec<String>,
    terminator: &'static str,
    /// Every row, as a column -> value map in header order.
    rows: Vec<Vec<String>>,
    /// Indices of `rows` removed by [`Doc::drop_entries`].
    dropped: HashSet<usize>,
    ids: HashSet<String>,
    names: HashSet<String>,
    /// Rows held as CSV text.
    added: Vec<String>,
    /// Entries noted (added, absorbed or streamed).
    noted: usize,
    created: bool,
}

impl CsvDoc {
    fn from_text(text: String, created: bool) -> Result<Self> {
        if text.trim().is_empty() {
            bail!("empty file: no CSV header");
        }
        let terminator = match text.find('\n') {
            Some(i) if i > 0 && text.as_bytes()[i - 1] == b'\r' => "\r\n",
            _ => "\n",
        };
        let mut rd = ::csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
        let header: Vec<String> = rd.headers().context("invalid CSV header")?.iter().map(String::from).collect();
        if header.iter().all(|h| h.trim().is_empty()) {
            bail!("the CSV header is empty");
        }
        if !header.iter().any(|h| h == "id" || h == "name") {
            // Without them the file's tests cannot be told from the crashed
            // ones, and no crash could be written into a known column.
            bail!("not a pytest-csv report: its header ({}) has neither an id nor a name column", header.join(","));
        }
        let mut rows = Vec::new();
        for (i, rec) in rd.records().enumerate() {
            let rec = rec.with_context(|| format!("invalid CSV row {}", i + 2))?;
            rows.push(rec.iter().map(String::from).collect::<Vec<_>>());
        }
        let col = |name: &str| header.iter().position(|h| h == name);
        let ids = col("id").map(|c| rows.iter().map(|r| r[c].trim().to_string()).collect()).unwrap_or_default();
        let names = col("name").map(|c| rows.iter().map(|r| r[c].trim().to_string()).collect()).unwrap_or_default();
        Ok(CsvDoc {
            text,
            header,
            terminator,
            rows,
            dropped: HashSet::new(),
            ids,
            names,
            added: Vec::new(),
            noted: 0,
            created,
        })
    }

    /// Where the header line ends (after its terminator).
    fn header_end(&self) -> usize {
        let mut rd = ::csv::ReaderBuilder::new().has_headers(true).from_reader(self.text.as_bytes());
        let _ = rd.headers();
        (rd.position().byte() as usize).min(self.text.len())
    }

    fn has_id_column(&self) -> bool {
        self.header.iter().any(|h| h == "id")
    }

    fn value(&self, row: &[String], name: &str) -> String {
        self.header.iter().position(|h| h == name).and_then(|i| row.get(i).cloned()).unwrap_or_default()
    }
}

/// The known columns' values for an entry.
pub(crate) fn entry_cells(e: &Entry, header: &[String]) -> Vec<String> {
    let file = e.path.clone();
    let module = file.rsplit('/').next().unwrap_or("").trim_end_matches(".py").to_string();
    header
        .iter()
        .map(|h| match h.as_str() {
            "id" => e.nodeid.clone(),
            "module" => module.clone(),
            "name" => e.name(),
            "file" => file.clone(),
            "markers" if e.crash => "pytest_abort_crash".into(),
            "status" => e.outcome.clone(),
            "message" => e.message.clone(),
            "duration" => py_float(e.duration),
            _ => String::new(),
        })
        .collect()
}

/// Appends one CSV record as Python's csv module (and the csv crate)
/// writes it: a field is quoted when it holds the delimiter, a quote, CR
/// or LF, quotes doubled; a lone empty field is `""`.
fn record_into(cells: &[String], terminator: &str, out: &mut String) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if c.contains([',', '"', '\r', '\n']) || (c.is_empty() && cells.len() == 1) {
            out.push('"');
            out.push_str(&c.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(c);
        }
    }
    out.push_str(terminator);
}

impl Render for CsvDoc {
    fn has(&self, nodeid: &str) -> bool {
        let id = nodeid.trim();
        if self.has_id_column() {
            self.ids.contains(id)
        } else {
            let name = crate::record::split_nodeid(id).last().copied().unwrap_or("");
            self.names.contains(name)
        }
    }

    fn note(&mut self, _e: &Entry) {
        self.noted += 1;
    }

    fn remember(&mut self, nodeid: &str) {
        let id = nodeid.trim();
        self.names.insert(crate::record::split_nodeid(id).last().copied().unwrap_or("").to_string());
        self.ids.insert(id.to_string());
    }

    fn entries(&self) -> usize {
        if self.has_id_column() {
            self.ids.len()
        } else {
            self.names.len()
        }
    }

    fn entry_into(&self, _slot: usize, e: &Entry, out: &mut String) {
        match e.plugin.as_ref().and_then(|p| p.csv.as_ref()).filter(|r| !r.is_empty()) {
            // pytest-csv's own rows (every column it knows), from the
            // process that ran the test.
            Some(rows) => {
                for row in rows {
                    let cells: Vec<String> =
                        self.header.iter().map(|h| row.get(h).cloned().unwrap_or_default()).collect();
                    record_into(&cells, self.terminator, out);
                }
            }
            None => record_into(&entry_cells(e, &self.header), self.terminator, out),
        }
    }

    fn held(&self, _slot: usize) -> &[String] {
        &self.added
    }

    fn changed(&self) -> bool {
        self.noted > 0 || self.created || !self.dropped.is_empty()
    }

    fn layout(&self) -> Vec<Part<'_>> {
        if !self.dropped.is_empty() {
            // Rows go: the header as it was, then the kept rows anew.
            let mut text = self.text[..self.header_end()].to_string();
            if !text.ends_with('\n') {
                text.push_str(self.terminator);
            }
            for (_, row) in self.rows.iter().enumerate().filter(|(i, _)| !self.dropped.contains(i)) {
                record_into(row, self.terminator, &mut text);
            }
            return vec![Part::Text(Cow::Owned(text)), Part::Entries(0)];
        }
        let mut out = vec![Part::Text(Cow::Borrowed(self.text.as_str()))];
        if !self.text.ends_with('\n') {
            out.push(Part::Text(Cow::Borrowed(self.terminator)));
        }
        out.push(Part::Entries(0));
        out
    }
}

impl Doc for CsvDoc {
    fn parse(text: String) -> Result<Self> {
        Self::from_text(text, false)
    }

    fn create() -> Self {
        Self::from_text(format!("{DEFAULT_HEADER}\r\n"), true).expect("the default header parses")
    }

    fn held_mut(&mut self, _slot: usize) -> &mut Vec<String> {
        &mut self.added
    }

    fn drop_entries(&mut self, ids: &HashSet<String>) -> usize {
        let Some(col) = self.header.iter().position(|h| h == "id") else { return 0 };
        let mut n = 0;
        for (i, row) in self.rows.iter().enumerate() {
            let id = row[col].trim();
            // A row without an id is pytest-csv's row for xdist's stand-in
            // report of a crashed worker's test (it has no item to name).
            if (id.is_empty() || ids.contains(id)) && self.dropped.insert(i) {
                self.ids.remove(id);
                n += 1;
            }
        }
        n
    }

    fn absorb(&mut self, other: &Self) -> usize {
        // Known before this absorb: a test's further rows (one per subtest
        // or phase) in `other` all come along with its first.
        let (ids, names) = (self.ids.clone(), self.names.clone());
        let mut n = 0;
        for (i, row) in other.rows.iter().enumerate() {
            if other.dropped.contains(&i) {
                continue;
            }
            let id = other.value(row, "id");
            let name = other.value(row, "name");
            let known = if self.has_id_column() { ids.contains(id.trim()) } else { names.contains(name.trim()) };
            if known {
                continue;
            }
            let cells: Vec<String> = self.header.iter().map(|h| other.value(row, h)).collect();
            self.ids.insert(id.trim().to_string());
            self.names.insert(name.trim().to_string());
            let mut line = String::new();
            record_into(&cells, self.terminator, &mut line);
            self.added.push(line);
            self.noted += 1;
            n += 1;
        }
        n
    }

    fn original(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::sample_record;

    #[test]
    fn synthetic_row_snapshot() {
        let mut d = CsvDoc::create();
        d.add(&Entry::from_crash(&sample_record()));
        insta::assert_snapshot!(d.render().unwrap());
    }

    #[test]
    fn keeps_custom_header() {
        let mut d = CsvDoc::parse("status,id\nfailed,x\n".into()).unwrap();
        assert!(d.has("x"));
        d.add(&Entry::from_crash(&sample_record()));
        let out = d.render().unwrap();
        assert!(out.starts_with("status,id\nfailed,x\nfailed,tests/test_gpu.py::TestK::"), "{out}");
        assert!(CsvDoc::parse("id,b\n1\n".into()).is_err());
        assert!(CsvDoc::parse("foo,bar\n1,2\n".into()).is_err());
    }
}
