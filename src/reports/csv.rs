//! pytest-csv reports: new rows are appended under the file's own header
//! (whatever columns it has); the known columns are filled in.
//!
//! In the wrapper's merge the header is pytest-csv's own for the session
//! (its `--csv-columns`, each column's cells as every journaled row made
//! them), and the rows the plugin journaled are written as pytest-csv
//! wrote them. A header without an `id` column cannot tell tests apart:
//! then every row comes from the journals, none from the runs' files.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;

use anyhow::{bail, Context as _, Result};

use super::doc::{Doc, Part, Render};
use super::text::py_float;
use super::{Entry, IdSet};

/// pytest-csv's default columns.
pub(crate) const DEFAULT_HEADER: &str = "id,module,name,file,doc,markers,status,message,duration";

/// pytest-csv's columns whose cell is the same in every row of a session
/// (where and how it ran): a row the wrapper builds takes them from the
/// rows the plugin journaled.
const CONSTANT_COLUMNS: [&str; 8] = [
    "host",
    "user",
    "system",
    "system_release",
    "system_version",
    "python_implementation",
    "python_version",
    "working_directory",
];

/// A journaled pytest-csv row: per column id, its cells.
type PluginRow = BTreeMap<String, BTreeMap<String, String>>;

/// A parsed pytest-csv report.
pub(crate) struct CsvDoc {
    text: String,
    header: Vec<String>,
    terminator: &'static str,
    /// Every row, as a column -> value map in header order.
    rows: Vec<Vec<String>>,
    /// Where each of `rows` starts in `text`.
    row_starts: Vec<usize>,
    /// Indices of `rows` removed by [`Doc::drop_entries`].
    dropped: HashSet<usize>,
    ids: IdSet,
    names: IdSet,
    /// Rows held as CSV text.
    added: Vec<String>,
    /// Entries noted (added, absorbed or streamed).
    noted: usize,
    created: bool,
    /// Per header cell, the pytest-csv column id that makes it, when known
    /// (two columns can make cells of one name: `markers` and
    /// `markers_with_args`).
    groups: Vec<Option<String>>,
    /// The header was replaced ([`CsvDoc::set_header`]): written anew.
    new_header: bool,
    /// Every row comes from the journals (see the module docs).
    rebuild: bool,
    /// Cells of [`CONSTANT_COLUMNS`] as the journaled rows have them.
    constants: BTreeMap<String, String>,
}

impl CsvDoc {
    /// Parses `text`; `strict` refuses a header that is not pytest-csv's
    /// (neither `id` nor `name`): a user's file, not a run's copy.
    fn from_text(text: String, created: bool, strict: bool) -> Result<Self> {
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
        if strict && !header.iter().any(|h| h == "id" || h == "name") {
            // Without them the file's tests cannot be told from the crashed
            // ones, and no crash could be written into a known column.
            bail!("not a pytest-csv report: its header ({}) has neither an id nor a name column", header.join(","));
        }
        let (mut rows, mut row_starts) = (Vec::new(), Vec::new());
        for (i, rec) in rd.records().enumerate() {
            let rec = rec.with_context(|| format!("invalid CSV row {}", i + 2))?;
            row_starts.push(rec.position().map_or(0, |p| p.byte() as usize));
            rows.push(rec.iter().map(String::from).collect::<Vec<_>>());
        }
        let col = |name: &str| header.iter().position(|h| h == name);
        let ids = col("id").map(|c| rows.iter().map(|r| r[c].trim().to_string()).collect()).unwrap_or_default();
        let names = col("name").map(|c| rows.iter().map(|r| r[c].trim().to_string()).collect()).unwrap_or_default();
        Ok(CsvDoc {
            text,
            groups: vec![None; header.len()],
            header,
            terminator,
            rows,
            row_starts,
            dropped: HashSet::new(),
            ids,
            names,
            added: Vec::new(),
            noted: 0,
            created,
            new_header: false,
            rebuild: false,
            constants: BTreeMap::new(),
        })
    }

    /// Makes `header` (cells with the column id making each) the report's
    /// header; the rows keep their cells by name.
    fn set_header(&mut self, header: Vec<(String, String)>) {
        let old = std::mem::take(&mut self.header);
        let (groups, names): (Vec<Option<String>>, Vec<String>) =
            header.into_iter().map(|(cid, h)| (Some(cid), h)).unzip();
        for row in &mut self.rows {
            *row = names
                .iter()
                .map(|h| old.iter().position(|o| o == h).map(|i| row[i].clone()).unwrap_or_default())
                .collect();
        }
        self.header = names;
        self.groups = groups;
        self.new_header = true;
    }

    /// True when tests are told apart by node id (see [`Render::has`]).
    fn by_id(&self) -> bool {
        self.rebuild || self.has_id_column()
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

    /// The index of the first column named `name`.
    fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

/// The header pytest-csv writes for these column ids and rows: each
/// column's cells, sorted by name, in column order.
fn header_of(columns: &[String], rows: &[&PluginRow]) -> Vec<(String, String)> {
    let mut header = Vec::new();
    for cid in columns {
        let names: BTreeSet<&String> = rows.iter().filter_map(|r| r.get(cid)).flat_map(|cells| cells.keys()).collect();
        header.extend(names.into_iter().map(|h| (cid.clone(), h.clone())));
    }
    header
}

/// `str(datetime.timedelta(seconds=d))`, as pytest-csv's
/// `duration_formatted`: `0:00:01.250000`, `1 day, 2:03:04`.
fn timedelta_str(d: f64) -> String {
    let micros = if d.is_finite() && d > 0.0 { (d * 1e6).round() as u64 } else { 0 };
    let (days, rest) = (micros / 86_400_000_000, micros % 86_400_000_000);
    let (secs, us) = (rest / 1_000_000, rest % 1_000_000);
    let mut s = format!("{}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60);
    if us > 0 {
        s.push_str(&format!(".{us:06}"));
    }
    match days {
        0 => s,
        1 => format!("1 day, {s}"),
        n => format!("{n} days, {s}"),
    }
}

/// The known columns' values for an entry, as pytest-csv computes them
/// from the node id and the report; `constants` fills the columns that
/// are the same for every test of the session.
pub(crate) fn entry_cells(e: &Entry, header: &[String], constants: &BTreeMap<String, String>) -> Vec<String> {
    let file = e.path.clone();
    let module = file.strip_suffix(".py").unwrap_or(&file).replace('/', ".");
    let parts = crate::record::split_nodeid(&e.nodeid);
    let function = e.name().split('[').next().unwrap_or("").to_string();
    let class = if parts.len() >= 3 { parts[1].to_string() } else { String::new() };
    let failed = matches!(e.outcome.as_str(), "failed" | "error");
    header
        .iter()
        .map(|h| match h.as_str() {
            "id" => e.nodeid.clone(),
            "module" => module.clone(),
            "class" => class.clone(),
            "function" => function.clone(),
            "name" => e.name(),
            "file" => file.clone(),
            "markers" if e.crash => "pytest_abort_crash".into(),
            "status" => e.outcome.clone(),
            "success" => if failed { "False" } else { "True" }.into(),
            "message" => e.message.clone(),
            "duration" => py_float(e.duration),
            "duration_formatted" => timedelta_str(e.duration),
            other => constants.get(other).cloned().unwrap_or_default(),
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
        if self.by_id() {
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
        if self.by_id() {
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
                    let cell = |(h, cid): (&String, &Option<String>)| {
                        let cells = match cid {
                            Some(cid) => row.get(cid).and_then(|c| c.get(h)),
                            None => row.values().find_map(|c| c.get(h)),
                        };
                        cells.cloned().unwrap_or_default()
                    };
                    let cells: Vec<String> = self.header.iter().zip(&self.groups).map(cell).collect();
                    record_into(&cells, self.terminator, out);
                }
            }
            None => record_into(&entry_cells(e, &self.header, &self.constants), self.terminator, out),
        }
    }

    fn held(&self, _slot: usize) -> &[String] {
        &self.added
    }

    fn changed(&self) -> bool {
        self.noted > 0 || self.created || !self.dropped.is_empty() || self.new_header
    }

    fn layout(&self) -> Vec<Part<'_>> {
        if !self.dropped.is_empty() || self.new_header {
            // Rows go: the header (as it was, or the new one), then the
            // kept rows anew.
            let mut text = String::new();
            if self.new_header {
                record_into(&self.header, self.terminator, &mut text);
            } else {
                text.push_str(&self.text[..self.header_end()]);
                if !text.ends_with('\n') {
                    text.push_str(self.terminator);
                }
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
        Self::from_text(text, false, true)
    }

    fn parse_copy(text: String) -> Result<Self> {
        Self::from_text(text, false, false)
    }

    fn create() -> Self {
        Self::from_text(format!("{DEFAULT_HEADER}\r\n"), true, true).expect("the default header parses")
    }

    /// The session's header and constants from the journaled rows; without
    /// an `id` column, every row from the journals (none from the file).
    fn prepare(&mut self, out: &super::RunOutput) {
        let rows: Vec<&PluginRow> =
            out.done.iter().filter_map(|d| d.reports.as_ref()?.csv.as_ref()).flatten().collect();
        if rows.is_empty() {
            return;
        }
        for cid in CONSTANT_COLUMNS {
            if let Some(v) = rows.iter().find_map(|r| r.get(cid)?.get(cid)) {
                self.constants.insert(cid.to_string(), v.clone());
            }
        }
        if let Some(columns) = out.runs.iter().map(|r| &r.csv_columns).find(|c| !c.is_empty()) {
            let header = header_of(columns, &rows);
            let names: Vec<&String> = header.iter().map(|(_, h)| h).collect();
            if !header.is_empty() && names != self.header.iter().collect::<Vec<_>>() {
                self.set_header(header);
            } else if !header.is_empty() {
                self.groups = header.into_iter().map(|(cid, _)| Some(cid)).collect();
            }
        }
        if !self.has_id_column() {
            self.rebuild = true;
            self.dropped = (0..self.rows.len()).collect();
            self.ids.clear();
            self.names.clear();
        }
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

    fn take(&mut self, other: &Self) -> Vec<(usize, usize)> {
        if self.rebuild {
            // Every row comes from the journals.
            return Vec::new();
        }
        // Known before this take: a test's further rows (one per subtest
        // or phase) in `other` all come along with its first. So the rows'
        // ids and names join this report's after the loop.
        fn cell(row: &[String], c: Option<usize>) -> &str {
            c.and_then(|c| row.get(c)).map_or("", |v| v.trim())
        }
        let (id_col, name_col) = (other.column("id"), other.column("name"));
        let by_id = self.by_id();
        let mut new: Vec<(&str, &str)> = Vec::new();
        let mut spans = Vec::new();
        for (i, row) in other.rows.iter().enumerate() {
            let (id, name) = (cell(row, id_col), cell(row, name_col));
            let known = if by_id { self.ids.contains(id) } else { self.names.contains(name) };
            if known || other.dropped.contains(&i) {
                continue;
            }
            new.push((id, name));
            self.noted += 1;
            let end = other.row_starts.get(i + 1).copied().unwrap_or(other.text.len());
            spans.push((other.row_starts[i], end));
        }
        for (id, name) in new {
            self.ids.insert(id.to_string());
            self.names.insert(name.to_string());
        }
        spans
    }

    /// The rows starting at the spans' starts, read again in order and
    /// written in this report's columns (by name; those `text` lacks
    /// empty) and line ends.
    fn taken(
        &self,
        text: &str,
        spans: &[(usize, usize)],
        each: &mut dyn FnMut(&str) -> io::Result<()>,
    ) -> io::Result<()> {
        let bad = |e: ::csv::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let mut rd = ::csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
        let theirs = rd.headers().map_err(bad)?.clone();
        let from: Vec<Option<usize>> = self.header.iter().map(|h| theirs.iter().position(|t| t == h)).collect();
        let mut want = spans.iter().map(|s| s.0).peekable();
        let (mut rec, mut cells, mut line) = (::csv::StringRecord::new(), Vec::new(), String::new());
        while want.peek().is_some() && rd.read_record(&mut rec).map_err(bad)? {
            if rec.position().map(|p| p.byte() as usize) != want.peek().copied() {
                continue;
            }
            want.next();
            cells.clear();
            cells.extend(from.iter().map(|c| c.and_then(|c| rec.get(c)).unwrap_or("").to_string()));
            line.clear();
            record_into(&cells, self.terminator, &mut line);
            each(&line)?;
        }
        match want.peek() {
            Some(at) => Err(io::Error::new(io::ErrorKind::InvalidData, format!("no CSV row at byte {at} any more"))),
            None => Ok(()),
        }
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
    fn durations_formatted_like_python_timedelta() {
        assert_eq!(timedelta_str(0.0), "0:00:00");
        assert_eq!(timedelta_str(0.002705), "0:00:00.002705");
        assert_eq!(timedelta_str(3723.5), "1:02:03.500000");
        assert_eq!(timedelta_str(86_400.0 * 2.0 + 1.0), "2 days, 0:00:01");
        assert_eq!(timedelta_str(86_400.0), "1 day, 0:00:00");
    }

    #[test]
    fn crash_rows_fill_the_columns_known_without_running_the_test() {
        let header: Vec<String> =
            ["module", "class", "function", "success", "host", "doc"].iter().map(|s| s.to_string()).collect();
        let constants = [("host".to_string(), "node7".to_string())].into_iter().collect();
        let cells = entry_cells(&Entry::from_crash(&sample_record()), &header, &constants);
        assert_eq!(cells, ["tests.test_gpu", "TestK", "test_p", "False", "node7", ""]);
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
