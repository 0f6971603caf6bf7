//! pytest-json-report files: new tests are spliced into the `tests` array,
//! `summary`, `exitcode` and `duration` are rewritten in place; every other
//! byte of the file stays as it was.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Context as _, Result};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Value};

use super::doc::{Doc, Part, Render};
use super::text::{
    array_elements, object_members, py_dumps, py_float, py_str_into, replace_lone_surrogates, separator, OptStr,
};
use super::{Entry, IdSet};

/// A parsed pytest-json-report file.
pub(crate) struct JsonDoc {
    text: String,
    /// Spans of top-level values.
    summary: (usize, usize),
    summary_value: Map<String, Value>,
    exitcode: Option<(usize, usize, i64)>,
    duration: Option<(usize, usize, f64)>,
    tests_close: usize,
    sep: String,
    /// Existing test elements: span, nodeid, outcome.
    elems: Vec<(usize, usize, String, String)>,
    /// Indices of `elems` removed by [`Doc::drop_entries`].
    dropped: HashSet<usize>,
    /// `collected` and `deselected` to write instead of the counted ones.
    counts: Option<(i64, i64)>,
    /// The `exitcode` to write instead of the file's (see
    /// [`JsonDoc::set_exitcode`]).
    exit: Option<i64>,
    ids: IdSet,
    added: Vec<String>,
    added_outcomes: BTreeMap<String, i64>,
    added_duration: f64,
    created: bool,
}

/// What validating a report keeps, read in one streaming pass (no tree of
/// the whole file): the top-level members the patch needs, and each test's
/// node id and outcome. Repeated keys: the last wins, as for a parsed
/// object.
#[derive(Default)]
struct Top {
    object: bool,
    tests: Option<Vec<(String, String)>>,
    summary: Option<Value>,
    exitcode: Option<Value>,
    duration: Option<Value>,
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Top, A::Error> {
                let mut top = Top { object: true, ..Top::default() };
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    match &*k {
                        "tests" => top.tests = m.next_value::<TestList>()?.0,
                        "summary" => top.summary = Some(m.next_value()?),
                        "exitcode" => top.exitcode = Some(m.next_value()?),
                        "duration" => top.duration = Some(m.next_value()?),
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(top)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<Top, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Top::default())
            }
            skip_other_types!(Top::default());
        }
        d.deserialize_any(V)
    }
}

/// The `tests` member: each element's `(nodeid, outcome)` (empty when not
/// strings); `None` when it is not an array.
struct TestList(Option<Vec<(String, String)>>);

impl<'de> Deserialize<'de> for TestList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TestList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<TestList, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = s.next_element::<TestIds>()? {
                    out.push((t.nodeid.unwrap_or_default(), t.outcome.unwrap_or_default()));
                }
                Ok(TestList(Some(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<TestList, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TestList(None))
            }
            skip_other_types!(TestList(None));
        }
        d.deserialize_any(V)
    }
}

/// One test element's node id and outcome, when they are strings.
#[derive(Default)]
struct TestIds {
    nodeid: Option<String>,
    outcome: Option<String>,
}

impl<'de> Deserialize<'de> for TestIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TestIds;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<TestIds, A::Error> {
                let mut t = TestIds::default();
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    match &*k {
                        "nodeid" => t.nodeid = m.next_value::<OptStr>()?.0,
                        "outcome" => t.outcome = m.next_value::<OptStr>()?.0,
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(t)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<TestIds, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TestIds::default())
            }
            skip_other_types!(TestIds::default());
        }
        d.deserialize_any(V)
    }
}

impl JsonDoc {
    fn from_text(text: String, created: bool) -> Result<Self> {
        // Validates the whole file and keeps only what the patch needs;
        // spans found in `scan` hold in `text`.
        let scan = replace_lone_surrogates(&text);
        let top: Top = serde_json::from_str(&scan).context("invalid JSON")?;
        if !top.object {
            bail!("not a pytest-json-report file: the top level is not an object")
        }
        let Some(tests) = top.tests else { bail!("not a pytest-json-report file: no \"tests\" array") };
        let summary_value = match top.summary {
            Some(Value::Object(m)) => m,
            _ => bail!("not a pytest-json-report file: no \"summary\" object"),
        };
        let open = scan.find('{').context("no JSON object")?;
        let (members, _) = object_members(&scan, open)?;
        // The last of repeated keys, as the parse above kept.
        let span = |k: &str| members.iter().rev().find(|m| m.key == k).map(|m| (m.start, m.end));
        let (tests_open, _) = span("tests").context("no tests member")?;
        let summary = span("summary").context("no summary member")?;
        let (el_spans, tests_close) = array_elements(&scan, tests_open)?;
        if el_spans.len() != tests.len() {
            bail!("tests array could not be scanned");
        }
        let mut elems = Vec::with_capacity(tests.len());
        let mut ids = IdSet::with_capacity_and_hasher(tests.len(), Default::default());
        for ((s, e), (nodeid, outcome)) in el_spans.iter().zip(tests) {
            let nodeid = match nodeid.trim() {
                t if t.len() == nodeid.len() => nodeid,
                t => t.to_string(),
            };
            ids.insert(nodeid.clone());
            elems.push((*s, *e, nodeid, outcome));
        }
        let exitcode = span("exitcode").and_then(|(s, e)| top.exitcode?.as_i64().map(|v| (s, e, v)));
        let duration = span("duration").and_then(|(s, e)| top.duration?.as_f64().map(|v| (s, e, v)));
        let sep = separator(&scan, tests_open, el_spans.first().map(|x| x.0));
        drop(scan);
        Ok(JsonDoc {
            summary,
            summary_value,
            exitcode,
            duration,
            tests_close,
            sep,
            elems,
            dropped: HashSet::new(),
            counts: None,
            exit: None,
            ids,
            added: Vec::new(),
            added_outcomes: BTreeMap::new(),
            added_duration: 0.0,
            created,
            text,
        })
    }

    /// Makes the summary's `collected` and `deselected` these numbers (what
    /// one plain run of the whole session counts), whatever the per-run
    /// files said.
    pub(crate) fn set_counts(&mut self, collected: usize, deselected: usize) {
        self.counts = Some((collected as i64, deselected as i64));
    }

    /// Makes `exitcode` this number (the exit status of the whole wrapped
    /// run, which the report then agrees with), whatever the per-run files
    /// said.
    pub(crate) fn set_exitcode(&mut self, code: i32) {
        self.exit = Some(i64::from(code));
    }

    /// The `exitcode` the report gets, when it changes: the one set, else
    /// 1 once failures were added to a report that said the run passed.
    fn new_exitcode(&self, code: i64) -> Option<i64> {
        if let Some(exit) = self.exit {
            return (exit != code).then_some(exit);
        }
        let failures = self.added_outcomes.get("failed").copied().unwrap_or(0)
            + self.added_outcomes.get("error").copied().unwrap_or(0);
        (failures > 0 && (code == 0 || code == 5)).then_some(1)
    }

    fn count(&mut self, outcome: &str) {
        match self.added_outcomes.get_mut(outcome) {
            Some(n) => *n += 1,
            None => {
                self.added_outcomes.insert(outcome.to_string(), 1);
            }
        }
    }

    /// The new `summary` object: every count bumped by what was noted.
    fn new_summary(&self) -> String {
        let n: i64 = self.added_outcomes.values().sum();
        let mut summary = Map::new();
        let mut pending: Vec<(&String, &i64)> = self
            .added_outcomes
            .iter()
            .filter(|(k, _)| !k.is_empty() && !self.summary_value.contains_key(k.as_str()))
            .collect();
        for (k, v) in &self.summary_value {
            if k == "total" || k == "collected" {
                for (pk, pv) in pending.drain(..) {
                    summary.insert(pk.clone(), json!(*pv));
                }
            }
            let add = match k.as_str() {
                "total" | "collected" => n,
                "unskipped_total" => n - self.added_outcomes.get("skipped").copied().unwrap_or(0),
                other => self.added_outcomes.get(other).copied().unwrap_or(0),
            };
            let nv = match v.as_i64() {
                // An outcome no test has any more goes: pytest-json-report
                // counts only the outcomes it saw.
                Some(x) if x + add == 0 && add != 0 && !is_count_key(k) => continue,
                Some(x) => json!(x + add),
                None => v.clone(),
            };
            summary.insert(k.clone(), nv);
        }
        for (pk, pv) in pending {
            summary.insert(pk.clone(), json!(*pv));
        }
        if let Some((collected, deselected)) = self.counts {
            summary.insert("collected".into(), json!(collected));
            summary.shift_remove("deselected");
            if deselected > 0 {
                summary.insert("deselected".into(), json!(deselected));
            }
        }
        py_dumps(&Value::Object(summary), true)
    }
}

/// Summary members that count tests rather than name an outcome.
fn is_count_key(k: &str) -> bool {
    matches!(k, "total" | "collected" | "deselected" | "unskipped_total")
}

/// pytest-json-report's own test object for an entry filled in from a
/// journal, when the process that ran the test had the plugin.
fn plugin_json(e: &Entry) -> Option<&Value> {
    e.plugin.as_ref().and_then(|p| p.json.as_ref()).filter(|v| v.is_object())
}

/// The reference the direct writer is tested against (readable, slow).
#[cfg(test)]
/// The pytest-json-report test object for an entry.
pub(crate) fn entry_value(e: &Entry) -> Value {
    let keywords = {
        let mut k = vec![Value::from(e.name())];
        if let Some(file) = e.path.rsplit('/').next().filter(|f| !f.is_empty()) {
            k.push(Value::from(file));
        }
        if e.crash {
            k.push(Value::from("pytest_abort_crash"));
        }
        k.push(Value::from(""));
        k
    };
    let passed = |d: f64| json!({"duration": d, "outcome": "passed"});
    let mut failed_stage = Map::new();
    let stage_outcome = match e.outcome.as_str() {
        "error" | "failed" => "failed",
        "skipped" | "xfailed" => "skipped",
        _ => "passed",
    };
    failed_stage.insert("duration".into(), json!(e.duration));
    failed_stage.insert("outcome".into(), json!(stage_outcome));
    if !e.longrepr.is_empty() {
        if stage_outcome == "failed" {
            failed_stage.insert(
                "crash".into(),
                json!({"path": e.crash_path(), "lineno": e.crash_lineno(), "message": e.message}),
            );
        }
        for (title, text) in &e.sections {
            if let Some(key) = stream_of(title) {
                failed_stage.insert(key.into(), json!(text));
            }
        }
        failed_stage.insert("longrepr".into(), json!(e.longrepr));
    }
    let mut t = Map::new();
    t.insert("nodeid".into(), json!(e.nodeid));
    t.insert("lineno".into(), json!(e.lineno.unwrap_or(0)));
    t.insert("outcome".into(), json!(e.outcome));
    t.insert("keywords".into(), Value::Array(keywords));
    match e.when.as_str() {
        "setup" => {
            t.insert("setup".into(), Value::Object(failed_stage));
            t.insert("teardown".into(), passed(0.0));
        }
        "teardown" => {
            t.insert("setup".into(), passed(0.0));
            t.insert("call".into(), passed(0.0));
            t.insert("teardown".into(), Value::Object(failed_stage));
        }
        _ => {
            t.insert("setup".into(), passed(0.0));
            t.insert("call".into(), Value::Object(failed_stage));
            t.insert("teardown".into(), passed(0.0));
        }
    }
    Value::Object(t)
}

/// Writes [`entry_value`] as `py_dumps(.., true)` would, without building
/// the value (this runs once per crash, a million times for a huge log).
pub(crate) fn entry_json_into(e: &Entry, out: &mut String) {
    use std::fmt::Write as _;
    let s = |v: &str, out: &mut String| py_str_into(v, true, out);
    out.push_str("{\"nodeid\": ");
    s(&e.nodeid, out);
    let _ = write!(out, ", \"lineno\": {}, \"outcome\": ", e.lineno.unwrap_or(0));
    s(&e.outcome, out);
    out.push_str(", \"keywords\": [");
    s(&e.name(), out);
    if let Some(file) = e.path.rsplit('/').next().filter(|f| !f.is_empty()) {
        out.push_str(", ");
        s(file, out);
    }
    if e.crash {
        out.push_str(", \"pytest_abort_crash\"");
    }
    out.push_str(", \"\"]");
    let passed = "{\"duration\": 0.0, \"outcome\": \"passed\"}";
    match e.when.as_str() {
        "setup" => {
            out.push_str(", \"setup\": ");
            stage_into(e, out);
            let _ = write!(out, ", \"teardown\": {passed}}}");
        }
        "teardown" => {
            let _ = write!(out, ", \"setup\": {passed}, \"call\": {passed}, \"teardown\": ");
            stage_into(e, out);
            out.push('}');
        }
        _ => {
            let _ = write!(out, ", \"setup\": {passed}, \"call\": ");
            stage_into(e, out);
            let _ = write!(out, ", \"teardown\": {passed}}}");
        }
    }
}

/// The stage that decided the outcome, as [`entry_value`] builds it.
fn stage_into(e: &Entry, out: &mut String) {
    use std::fmt::Write as _;
    let outcome = match e.outcome.as_str() {
        "error" | "failed" => "failed",
        "skipped" | "xfailed" => "skipped",
        _ => "passed",
    };
    let _ = write!(out, "{{\"duration\": {}, \"outcome\": \"{outcome}\"", py_float(e.duration));
    if !e.longrepr.is_empty() {
        if outcome == "failed" {
            out.push_str(", \"crash\": {\"path\": ");
            py_str_into(e.crash_path(), true, out);
            let _ = write!(out, ", \"lineno\": {}, \"message\": ", e.crash_lineno());
            py_str_into(&e.message, true, out);
            out.push('}');
        }
        // A repeated key keeps its first place and its last value.
        let mut streams: Vec<(&str, &str)> = Vec::new();
        for (title, text) in &e.sections {
            let Some(key) = stream_of(title) else { continue };
            match streams.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = text,
                None => streams.push((key, text)),
            }
        }
        for (key, text) in streams {
            let _ = write!(out, ", \"{key}\": ");
            py_str_into(text, true, out);
        }
        out.push_str(", \"longrepr\": ");
        py_str_into(&e.longrepr, true, out);
    }
    out.push('}');
}

/// The stage member a captured-output section goes to, as
/// pytest-json-report names them (`stdout`, `stderr`); `None` for others
/// (captured logs).
fn stream_of(title: &str) -> Option<&'static str> {
    if title.contains("stdout") {
        Some("stdout")
    } else if title.contains("stderr") {
        Some("stderr")
    } else {
        None
    }
}

impl Render for JsonDoc {
    fn has(&self, nodeid: &str) -> bool {
        self.ids.contains(nodeid.trim())
    }

    fn note(&mut self, e: &Entry) {
        self.added_duration += e.duration;
        match plugin_json(e).and_then(|v| v.get("outcome")?.as_str()) {
            Some(outcome) => self.count(outcome),
            None => self.count(&e.outcome),
        }
    }

    fn remember(&mut self, nodeid: &str) {
        self.ids.insert(nodeid.trim().to_string());
    }

    fn entries(&self) -> usize {
        self.ids.len()
    }

    fn entry_into(&self, _slot: usize, e: &Entry, out: &mut String) {
        match plugin_json(e) {
            // The plugin's own entry, from the process that ran the test.
            Some(v) => out.push_str(&py_dumps(v, true)),
            None => entry_json_into(e, out),
        }
    }

    fn separator(&self, _slot: usize, index: usize) -> &str {
        if index == 0 && self.elems.len() == self.dropped.len() {
            ""
        } else {
            &self.sep
        }
    }

    fn held(&self, _slot: usize) -> &[String] {
        &self.added
    }

    fn changed(&self) -> bool {
        let exit_changes = self.exitcode.is_some_and(|(_, _, code)| self.exit.is_some_and(|x| x != code));
        !self.added_outcomes.is_empty()
            || self.created
            || !self.dropped.is_empty()
            || self.counts.is_some()
            || exit_changes
    }

    fn layout(&self) -> Vec<Part<'_>> {
        // (start, end, replacement) in the original text; `None`: the new tests.
        let at = self.elems.last().map(|e| e.1).unwrap_or(self.tests_close);
        let mut edits: Vec<(usize, usize, Option<String>)> =
            vec![(at, at, None), (self.summary.0, self.summary.1, Some(self.new_summary()))];
        if !self.dropped.is_empty() {
            // Some elements go: the kept ones are written anew from their
            // own text.
            let kept: Vec<&str> = (0..self.elems.len())
                .filter(|i| !self.dropped.contains(i))
                .map(|i| &self.text[self.elems[i].0..self.elems[i].1])
                .collect();
            edits.push((self.elems[0].0, at, Some(kept.join(&self.sep))));
        }
        if let Some((s, e, code)) = self.exitcode {
            if let Some(new) = self.new_exitcode(code) {
                edits.push((s, e, Some(new.to_string())));
            }
        }
        if let Some((s, e, d)) = self.duration {
            if self.added_duration > 0.0 {
                edits.push((s, e, Some(py_float(d + self.added_duration))));
            }
        }
        // At the same place, the kept elements come before the new ones.
        edits.sort_by_key(|x| (x.0, x.2.is_none()));
        let mut out = Vec::with_capacity(2 * edits.len() + 1);
        let mut pos = 0;
        for (s, e, rep) in edits {
            out.push(Part::Text(Cow::Borrowed(&self.text[pos..s])));
            out.push(match rep {
                Some(r) => Part::Text(Cow::Owned(r)),
                None => Part::Entries(0),
            });
            pos = e;
        }
        out.push(Part::Text(Cow::Borrowed(&self.text[pos..])));
        out
    }
}

impl Doc for JsonDoc {
    fn parse(text: String) -> Result<Self> {
        Self::from_text(text, false)
    }

    fn create() -> Self {
        let created = chrono::Local::now().timestamp_micros() as f64 / 1e6;
        let root = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
        let v = json!({
            "created": created, "duration": 0.0, "exitcode": 0, "root": root, "environment": {},
            "summary": {"total": 0, "collected": 0}, "collectors": [], "tests": []
        });
        Self::from_text(py_dumps(&v, true), true).expect("a new report parses")
    }

    /// pytest-json-report's `collectors` entry (a new report's only: one
    /// pytest wrote lists its own).
    fn add_collected(&mut self, reports: &[&crate::journal::CollectReport]) {
        if !self.created || reports.is_empty() {
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&self.text) else { return };
        let Some(list) = v.get_mut("collectors").and_then(Value::as_array_mut) else { return };
        for c in reports {
            list.push(json!({"nodeid": c.nodeid, "outcome": c.outcome, "result": [], "longrepr": c.longrepr}));
        }
        if let Ok(doc) = Self::from_text(py_dumps(&v, true), true) {
            *self = doc;
        }
    }

    fn held_mut(&mut self, _slot: usize) -> &mut Vec<String> {
        &mut self.added
    }

    fn drop_entries(&mut self, ids: &HashSet<String>) -> usize {
        let mut n = 0;
        for (i, (_, _, nodeid, outcome)) in self.elems.iter().enumerate() {
            if ids.contains(nodeid) && self.dropped.insert(i) {
                self.ids.remove(nodeid);
                *self.added_outcomes.entry(outcome.clone()).or_default() -= 1;
                n += 1;
            }
        }
        n
    }

    fn take(&mut self, other: &Self) -> Vec<(usize, usize)> {
        debug_assert!(other.added.is_empty(), "take reads a report as parsed");
        let mut spans = Vec::new();
        for (i, (s, e, nodeid, outcome)) in other.elems.iter().enumerate() {
            if !other.dropped.contains(&i) && !self.has(nodeid) {
                self.remember(nodeid);
                self.count(outcome);
                spans.push((*s, *e));
            }
        }
        self.added_duration += other.duration.map(|d| d.2).unwrap_or(0.0);
        spans
    }

    fn original(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::reports::sample_record;

    #[test]
    fn synthetic_entry_snapshot() {
        let e = Entry::from_crash(&sample_record());
        insta::assert_snapshot!(py_dumps(&entry_value(&e), true));
    }

    /// Entries of every shape: the direct writer gives the bytes of the
    /// value-building one.
    pub(crate) fn sample_entries() -> Vec<Entry> {
        let crash = Entry::from_crash(&sample_record());
        let mut out = vec![crash.clone()];
        for (outcome, when) in [("failed", "setup"), ("error", "teardown"), ("skipped", "call"), ("passed", "call")] {
            out.push(Entry {
                nodeid: format!("a/t.py::T::test_é[{outcome}]"),
                outcome: outcome.into(),
                when: when.into(),
                duration: 0.000123,
                longrepr: if outcome == "passed" { String::new() } else { "E   assert 1\n\"x\"".into() },
                message: "assert 1".into(),
                path: "a/t.py".into(),
                lineno: Some(4),
                sections: vec![
                    ("Captured stdout call".into(), "o1\n".into()),
                    ("Captured stderr call".into(), "e1\u{1}".into()),
                    ("Captured stdout teardown".into(), "o2".into()),
                    ("Captured log call".into(), "l".into()),
                ],
                crash: false,
                ..Default::default()
            });
        }
        out
    }

    #[test]
    fn direct_writer_matches_the_value() {
        for e in sample_entries() {
            let mut direct = String::new();
            entry_json_into(&e, &mut direct);
            assert_eq!(direct, py_dumps(&entry_value(&e), true));
        }
    }

    #[test]
    fn splices_without_reformatting() {
        let text = r#"{"created": 1.5, "duration": 2.0, "exitcode": 0, "root": "/r", "environment": {}, "summary": {"passed": 1, "total": 1, "collected": 1}, "collectors": [], "tests": [{"nodeid": "a.py::t", "outcome": "passed"}]}"#;
        let mut d = JsonDoc::parse(text.to_string()).unwrap();
        assert!(d.has("a.py::t"));
        d.add(&Entry::from_crash(&sample_record()));
        let out = d.render().unwrap();
        assert!(out.starts_with(r#"{"created": 1.5, "duration": 3.25, "exitcode": 1, "#), "{out}");
        assert!(out.contains(r#""summary": {"passed": 1, "failed": 1, "total": 2, "collected": 2}"#), "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["tests"][1]["outcome"], "failed");
        let d2 = JsonDoc::parse(out).unwrap();
        assert!(d2.has("tests/test_gpu.py::TestK::test_p[<img src=x onerror=alert(1)>]"));
    }

    #[test]
    fn indented_files_keep_their_layout() {
        let text = "{\n    \"summary\": {\n        \"total\": 0\n    },\n    \"tests\": [\n        {\"nodeid\": \"x\"}\n    ]\n}";
        let mut d = JsonDoc::parse(text.to_string()).unwrap();
        d.add(&Entry::from_crash(&sample_record()));
        let out = d.render().unwrap();
        assert!(out.contains("{\"nodeid\": \"x\"},\n        {\"nodeid\": \"tests/"), "{out}");
        serde_json::from_str::<Value>(&out).unwrap();
    }
}

#[cfg(test)]
mod drop_tests {
    use super::*;
    use crate::reports::sample_record;

    #[test]
    fn dropped_entries_leave_valid_json_and_counts() {
        let text = r#"{"summary": {"passed": 2, "failed": 1, "total": 3, "collected": 3}, "tests": [{"nodeid": "a", "outcome": "passed"}, {"nodeid": "b", "outcome": "failed"}, {"nodeid": "c", "outcome": "passed"}]}"#;
        for drop in ["a", "b", "c"] {
            let mut d = JsonDoc::parse(text.to_string()).unwrap();
            assert_eq!(d.drop_entries(&[drop.to_string()].into_iter().collect()), 1);
            assert!(!d.has(drop));
            d.add(&Entry::from_crash(&sample_record()));
            let out = d.render().unwrap();
            let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            let ids: Vec<&str> = v["tests"].as_array().unwrap().iter().map(|t| t["nodeid"].as_str().unwrap()).collect();
            assert_eq!(ids.len(), 3, "{out}");
            assert!(!ids.contains(&drop), "{out}");
            assert_eq!(v["summary"]["total"], 3, "{out}");
        }
        // Only the counts change: the tests stay as they were.
        let mut d = JsonDoc::parse(text.to_string()).unwrap();
        d.set_counts(5, 2);
        let v: Value = serde_json::from_str(&d.render().unwrap()).unwrap();
        assert_eq!((v["summary"]["collected"].clone(), v["summary"]["deselected"].clone()), (json!(5), json!(2)));
        assert_eq!(v["tests"].as_array().unwrap().len(), 3);
    }
}
