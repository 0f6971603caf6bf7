//! JUnit XML as pytest's `--junitxml` writes it. The file is validated with
//! quick-xml; new `<testcase>` elements are spliced in before the first
//! suite's `</testsuite>` and that suite's counters are rewritten.

use std::borrow::Cow;
use std::collections::HashSet;

use anyhow::{bail, Context as _, Result};
use quick_xml::events::Event;
use quick_xml::Reader;

use super::doc::{Doc, Part, Render};
use super::text::{xml_attr, xml_text};
use super::{Entry, IdSet};

/// classname and name of a node id, the way pytest's junitxml derives them:
/// `a/b/test_x.py::Cls::test_y[p]` -> (`a.b.test_x.Cls`, `test_y[p]`).
pub(crate) fn junit_names(nodeid: &str) -> (String, String) {
    let (path, params) = match nodeid.find('[') {
        Some(i) => (&nodeid[..i], &nodeid[i..]),
        None => (nodeid, ""),
    };
    let mut names: Vec<String> = path.split("::").map(String::from).collect();
    names[0] = names[0].replace('/', ".");
    if let Some(stripped) = names[0].strip_suffix(".py") {
        names[0] = stripped.to_string();
    }
    let last = names.len() - 1;
    names[last].push_str(params);
    let name = names.pop().unwrap_or_default();
    (names.join("."), name)
}

/// One `<testcase>` of an existing file.
struct Case {
    key: (String, String),
    span: (usize, usize),
    kind: Option<&'static str>,
    time: f64,
}

/// A parsed JUnit XML report.
pub(crate) struct JunitDoc {
    text: String,
    /// Span of the first `<testsuite ...>` start tag, and whether it was
    /// self-closing.
    suite_tag: Option<(usize, usize, bool)>,
    /// Where new cases go: the first suite's `</testsuite>` (or the
    /// root's closing tag when there is no suite).
    insert_at: usize,
    cases: Vec<Case>,
    /// Indices of `cases` removed by [`Doc::drop_entries`].
    dropped: HashSet<usize>,
    keys: IdSet<(String, String)>,
    added: Vec<String>,
    added_tests: i64,
    added_failures: i64,
    added_errors: i64,
    added_skipped: i64,
    added_time: f64,
    created: bool,
}

fn attr_of(e: &quick_xml::events::BytesStart, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.unescape_value().ok())
        .map(|v| v.into_owned())
}

/// The span of the first `<testsuite ...>` start tag, and whether it was
/// self-closing.
type SuiteTag = (usize, usize, bool);

/// What reading a JUnit file finds, event by event: the root, the first
/// suite's start tag and end, and every test case with its span.
#[derive(Default)]
struct Scan {
    depth: usize,
    root: Option<String>,
    suite_tag: Option<SuiteTag>,
    suite_depth: Option<usize>,
    first_suite_close: Option<usize>,
    root_close: Option<usize>,
    cases: Vec<Case>,
    open_case: Option<Case>,
}

impl Scan {
    /// A start tag (or an empty element) spanning `span`.
    fn start(&mut self, e: &quick_xml::events::BytesStart, span: (usize, usize), empty: bool) -> Result<()> {
        let name = e.name();
        let name = name.as_ref();
        if self.depth == 0 {
            if self.root.is_some() {
                bail!("more than one root element");
            }
            self.root = Some(String::from_utf8_lossy(name).into_owned());
        }
        match name {
            b"testsuite" if self.suite_tag.is_none() => {
                self.suite_tag = Some((span.0, span.1, empty));
                if empty {
                    self.first_suite_close = Some(span.1);
                } else {
                    self.suite_depth = Some(self.depth);
                }
            }
            b"testcase" => {
                let key = (attr_of(e, b"classname").unwrap_or_default(), attr_of(e, b"name").unwrap_or_default());
                let time = attr_of(e, b"time").and_then(|t| t.parse().ok()).unwrap_or(0.0);
                let case = Case { key, span, kind: None, time };
                if empty {
                    self.cases.push(case);
                } else {
                    self.open_case = Some(case);
                }
            }
            b"failure" | b"error" | b"skipped" => {
                if let Some(c) = self.open_case.as_mut().filter(|c| c.kind.is_none()) {
                    c.kind = Some(match name {
                        b"failure" => "failure",
                        b"error" => "error",
                        _ => "skipped",
                    });
                }
            }
            _ => {}
        }
        if !empty {
            self.depth += 1;
        } else if self.depth == 0 {
            self.root_close = Some(span.0);
        }
        Ok(())
    }

    /// An end tag spanning `span`.
    fn end(&mut self, name: &[u8], span: (usize, usize)) -> Result<()> {
        self.depth = self.depth.checked_sub(1).context("unbalanced XML")?;
        match name {
            b"testcase" => {
                if let Some(mut c) = self.open_case.take() {
                    c.span.1 = span.1;
                    self.cases.push(c);
                }
            }
            b"testsuite" if self.suite_depth == Some(self.depth) && self.first_suite_close.is_none() => {
                self.first_suite_close = Some(span.0);
            }
            _ => {}
        }
        if self.depth == 0 {
            self.root_close = Some(span.0);
        }
        Ok(())
    }

    /// Checks the whole: the first suite's tag, where new cases go, the cases.
    fn finish(self) -> Result<(Option<SuiteTag>, usize, Vec<Case>)> {
        if self.depth != 0 {
            bail!("the XML ends before its elements close (truncated file?)");
        }
        match self.root.as_deref() {
            Some("testsuites") | Some("testsuite") => {}
            Some(other) => bail!("not JUnit XML: the root element is <{other}>"),
            None => bail!("not JUnit XML: no root element"),
        }
        let root_close = self.root_close.context("no root element end")?;
        Ok((self.suite_tag, self.first_suite_close.unwrap_or(root_close), self.cases))
    }
}

impl JunitDoc {
    fn from_text(text: String, created: bool) -> Result<Self> {
        let mut rd = Reader::from_str(&text);
        rd.config_mut().check_end_names = true;
        let mut scan = Scan::default();
        loop {
            let before = rd.buffer_position() as usize;
            let ev = rd.read_event().with_context(|| format!("invalid XML near byte {before}"))?;
            let after = rd.buffer_position() as usize;
            match ev {
                Event::Start(ref e) => scan.start(e, (before, after), false)?,
                Event::Empty(ref e) => scan.start(e, (before, after), true)?,
                Event::End(ref e) => scan.end(e.name().as_ref(), (before, after))?,
                Event::Eof => break,
                _ => {}
            }
        }
        let (suite_tag, insert_at, cases) = scan.finish()?;
        let keys = cases.iter().map(|c| c.key.clone()).collect();
        Ok(JunitDoc {
            text,
            suite_tag,
            insert_at,
            cases,
            dropped: HashSet::new(),
            keys,
            added: Vec::new(),
            added_tests: 0,
            added_failures: 0,
            added_errors: 0,
            added_skipped: 0,
            added_time: 0.0,
            created,
        })
    }

    fn count(&mut self, kind: Option<&str>, time: f64) {
        self.count_by(kind, time, 1);
    }

    /// Adds `by` (1 or -1) to the counters for a case of this kind.
    fn count_by(&mut self, kind: Option<&str>, time: f64, by: i64) {
        self.added_tests += by;
        self.added_time += time * by as f64;
        match kind {
            Some("failure") => self.added_failures += by,
            Some("error") => self.added_errors += by,
            Some("skipped") => self.added_skipped += by,
            _ => {}
        }
    }

    /// The file's text from `from` to `to` without the dropped cases.
    fn kept(&self, from: usize, to: usize) -> String {
        let mut out = String::with_capacity(to - from);
        let mut pos = from;
        for (i, c) in self.cases.iter().enumerate() {
            if self.dropped.contains(&i) && c.span.0 >= pos && c.span.1 <= to {
                out.push_str(&self.text[pos..c.span.0]);
                pos = c.span.1;
            }
        }
        out.push_str(&self.text[pos..to]);
        out
    }

    /// The first suite's start tag with updated counters.
    fn suite_start(&self, tag: &str) -> String {
        let inner = tag.trim_start_matches('<').trim_end_matches('>').trim_end_matches('/');
        let name = inner.split_whitespace().next().unwrap_or("testsuite");
        let mut attrs = tag_attributes(inner);
        let bump =
            |attrs: &mut Vec<(String, String)>, key: &str, delta: i64| match attrs.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = (v.parse::<i64>().unwrap_or(0) + delta).to_string(),
                None if delta != 0 => attrs.push((key.to_string(), delta.to_string())),
                None => {}
            };
        bump(&mut attrs, "errors", self.added_errors);
        bump(&mut attrs, "failures", self.added_failures);
        bump(&mut attrs, "skipped", self.added_skipped);
        bump(&mut attrs, "tests", self.added_tests);
        if let Some((_, v)) = attrs.iter_mut().find(|(k, _)| k == "time") {
            *v = format!("{:.3}", v.parse::<f64>().unwrap_or(0.0) + self.added_time);
        }
        let mut out = format!("<{name}");
        for (k, v) in attrs {
            out.push_str(&format!(" {k}=\"{v}\""));
        }
        out.push('>');
        out
    }
}

/// The `name="value"` (or `'value'`) pairs of a start tag's text, values
/// as written; what is not such a pair is passed over.
fn tag_attributes(tag: &str) -> Vec<(String, String)> {
    let name_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let name_char = |c: u8| name_start(c) || c.is_ascii_digit() || c == b'-' || c == b'.';
    let pair = |at: usize| -> Option<(usize, (String, String))> {
        let name_len = tag[at..].bytes().take_while(|&c| name_char(c)).count();
        let rest = tag[at + name_len..].trim_start().strip_prefix('=')?.trim_start();
        let quote = rest.chars().next().filter(|&q| q == '"' || q == '\'')?;
        let len = rest[1..].find(quote)?;
        let end = tag.len() - rest.len() + len + 2;
        Some((end, (tag[at..at + name_len].to_string(), rest[1..1 + len].to_string())))
    };
    let (mut out, mut at) = (Vec::new(), 0);
    while at < tag.len() {
        match Some(at).filter(|&i| name_start(tag.as_bytes()[i])).and_then(pair) {
            Some((end, kv)) => {
                out.push(kv);
                at = end;
            }
            None => at += tag[at..].chars().next().map_or(1, char::len_utf8),
        }
    }
    out
}

/// The `<testcase>` element for an entry: its `<properties>` (the test's
/// `record_property` values) first, then its outcome's child, as junitxml
/// orders them.
pub(crate) fn entry_xml(e: &Entry) -> String {
    let (classname, name) = junit_names(&e.nodeid);
    let mut s = format!(
        "<testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
        xml_attr(&classname),
        xml_attr(&name),
        e.duration
    );
    let child = match e.outcome.as_str() {
        "failed" if e.crash => Some(("failure", " type=\"crash\"")),
        "failed" => Some(("failure", "")),
        "error" => Some(("error", "")),
        "skipped" => Some(("skipped", " type=\"pytest.skip\"")),
        "xfailed" => Some(("skipped", " type=\"pytest.xfail\"")),
        _ => None,
    };
    let mut body = properties_xml(&e.props);
    if e.crash && !e.rechecks.is_empty() {
        body.push_str(&rechecks_xml(e));
    } else if let Some((tag, ty)) = child {
        let message = e.junit_message.as_deref().unwrap_or(&e.message);
        body.push_str(&format!("<{tag}{ty} message=\"{}\">{}</{tag}>", xml_attr(message), xml_text(&e.longrepr)));
    }
    if body.is_empty() {
        s.push_str(" />");
    } else {
        s.push('>');
        s.push_str(&body);
        s.push_str("</testcase>");
    }
    s
}

/// `<properties>` with one `<property>` per `record_property` value, or
/// nothing when the test recorded none.
fn properties_xml(props: &[(String, String)]) -> String {
    if props.is_empty() {
        return String::new();
    }
    let mut s = String::from("<properties>");
    for (name, value) in props {
        s.push_str(&format!("<property name=\"{}\" value=\"{}\" />", xml_attr(name), xml_attr(value)));
    }
    s.push_str("</properties>");
    s
}

/// The children of a rechecked crash's `<testcase>`, as cargo-nextest and
/// Maven Surefire write reruns: a crash that failed the run is a `<failure>`
/// followed by one `<rerunFailure>` per recheck that crashed again; a flaky
/// crash that `--flaky-result pass` lets pass is one `<flakyFailure>` per
/// crash (the first, then each recheck's), with no `<failure>`.
fn rechecks_xml(e: &Entry) -> String {
    let rerun_tag = if e.flaky_pass { "flakyFailure" } else { "rerunFailure" };
    let mut s = if e.flaky_pass {
        rerun_xml(rerun_tag, &e.message, &e.longrepr)
    } else {
        format!("<failure type=\"crash\" message=\"{}\">{}</failure>", xml_attr(&e.message), xml_text(&e.longrepr))
    };
    for r in e.rechecks.iter().filter(|r| r.crashed) {
        let message = format!("recheck run {}: {}", r.run, r.reason);
        s.push_str(&rerun_xml(rerun_tag, &message, r.traceback.as_deref().unwrap_or("")));
    }
    s
}

fn rerun_xml(tag: &str, message: &str, stack: &str) -> String {
    format!(
        "<{tag} type=\"crash\" message=\"{}\"><stackTrace>{}</stackTrace></{tag}>",
        xml_attr(message),
        xml_text(stack)
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// junitxml's own cases and counters for an entry filled in from a
/// journal, when the process that ran the test wrote JUnit XML.
fn plugin_junit(e: &Entry) -> Option<&crate::journal::JunitEntries> {
    e.plugin.as_ref().and_then(|p| p.junit.as_ref()).filter(|j| !j.xml.is_empty())
}

impl Render for JunitDoc {
    fn has(&self, nodeid: &str) -> bool {
        self.keys.contains(&junit_names(nodeid.trim()))
    }

    fn note(&mut self, e: &Entry) {
        if let Some(j) = plugin_junit(e) {
            // junitxml's own counters for the test (subtests count).
            let stat = |k: &str| j.stats.get(k).copied().unwrap_or(0);
            self.added_tests += stat("passed") + stat("failure") + stat("skipped") + stat("error") - j.double;
            self.added_failures += stat("failure");
            self.added_errors += stat("error");
            self.added_skipped += stat("skipped");
            self.added_time += e.duration;
            return;
        }
        let kind = match e.outcome.as_str() {
            "failed" if e.flaky_pass => None,
            "failed" => Some("failure"),
            "error" => Some("error"),
            "skipped" | "xfailed" => Some("skipped"),
            _ => None,
        };
        self.count(kind, e.duration);
    }

    fn remember(&mut self, nodeid: &str) {
        self.keys.insert(junit_names(nodeid.trim()));
    }

    fn entries(&self) -> usize {
        self.keys.len()
    }

    fn entry_into(&self, _slot: usize, e: &Entry, out: &mut String) {
        match plugin_junit(e) {
            // junitxml's own cases, from the process that ran the test.
            Some(j) => j.xml.iter().for_each(|x| out.push_str(x)),
            None => out.push_str(&entry_xml(e)),
        }
    }

    fn held(&self, _slot: usize) -> &[String] {
        &self.added
    }

    fn changed(&self) -> bool {
        self.added_tests != 0 || self.created || !self.dropped.is_empty()
    }

    fn layout(&self) -> Vec<Part<'_>> {
        let t = self.text.as_str();
        let text = |s: &'_ str| Part::Text(Cow::Owned(s.to_string()));
        let out: Vec<Part<'_>> = match self.suite_tag {
            Some((s, e, true)) => vec![
                Part::Text(t[..s].into()),
                Part::Text(self.suite_start(&t[s..e]).into()),
                Part::Entries(0),
                text("</testsuite>"),
                Part::Text(t[e..].into()),
            ],
            Some((s, e, false)) => vec![
                Part::Text(t[..s].into()),
                Part::Text(self.suite_start(&t[s..e]).into()),
                Part::Text(match self.dropped.is_empty() {
                    true => t[e..self.insert_at].into(),
                    false => self.kept(e, self.insert_at).into(),
                }),
                Part::Entries(0),
                Part::Text(t[self.insert_at..].into()),
            ],
            None => vec![
                Part::Text(t[..self.insert_at].into()),
                Part::Text(
                    format!(
                        "<testsuite name=\"pytest\" errors=\"{}\" failures=\"{}\" skipped=\"{}\" tests=\"{}\" time=\"{:.3}\">",
                        self.added_errors, self.added_failures, self.added_skipped, self.added_tests, self.added_time
                    )
                    .into(),
                ),
                Part::Entries(0),
                text("</testsuite>"),
                Part::Text(t[self.insert_at..].into()),
            ],
        };
        out
    }
}

impl Doc for JunitDoc {
    fn parse(text: String) -> Result<Self> {
        Self::from_text(text, false)
    }

    fn create() -> Self {
        let ts = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.6f%:z");
        let text = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><testsuites name=\"pytest tests\"><testsuite name=\"pytest\" \
errors=\"0\" failures=\"0\" skipped=\"0\" tests=\"0\" time=\"0.000\" timestamp=\"{ts}\" hostname=\"{}\"></testsuite></testsuites>",
            xml_attr(&hostname())
        );
        Self::from_text(text, true).expect("a new JUnit report parses")
    }

    fn held_mut(&mut self, _slot: usize) -> &mut Vec<String> {
        &mut self.added
    }

    /// junitxml's case for a collector's reports: named from the node id,
    /// one `<skipped message="collection skipped">` or `<error message=
    /// "collection failure">` per report, holding its text.
    fn add_collected(&mut self, reports: &[&crate::journal::CollectReport]) {
        for group in super::merge::collect_groups(reports) {
            self.add_collector(&group);
        }
    }

    fn drop_entries(&mut self, ids: &HashSet<String>) -> usize {
        let keys: HashSet<(String, String)> = ids.iter().map(|id| junit_names(id.trim())).collect();
        let mut n = 0;
        for i in 0..self.cases.len() {
            let key = &self.cases[i].key;
            // A case without classname and name is junitxml's for a test
            // that never finished (interrupted after its setup): never
            // named, never counted.
            let nameless = key.0.is_empty() && key.1.is_empty();
            if (nameless || keys.contains(key)) && self.dropped.insert(i) {
                self.keys.remove(&self.cases[i].key);
                if !nameless {
                    self.count_by(self.cases[i].kind, self.cases[i].time, -1);
                }
                n += 1;
            }
        }
        n
    }

    fn take(&mut self, other: &Self) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        for (i, c) in other.cases.iter().enumerate() {
            if !other.dropped.contains(&i) && self.keys.insert(c.key.clone()) {
                self.count(c.kind, c.time);
                spans.push(c.span);
            }
        }
        spans
    }

    fn original(&self) -> &str {
        &self.text
    }
}

impl JunitDoc {
    /// One `<testcase>` for one collector's reports.
    fn add_collector(&mut self, reports: &[&crate::journal::CollectReport]) {
        let Some(first) = reports.first() else { return };
        let (classname, name) = junit_names(first.nodeid.trim());
        let mut xml =
            format!("<testcase classname=\"{}\" name=\"{}\" time=\"0.000\">", xml_attr(&classname), xml_attr(&name));
        let mut stats = std::collections::BTreeMap::new();
        for c in reports {
            let (tag, message, stat) = match c.outcome.as_str() {
                "skipped" => ("skipped", "collection skipped", "skipped"),
                "failed" => ("error", "collection failure", "error"),
                _ => continue,
            };
            xml.push_str(&format!("<{tag} message=\"{message}\">{}</{tag}>", xml_text(&c.longrepr)));
            *stats.entry(stat.to_string()).or_insert(0) += 1;
        }
        if stats.is_empty() {
            return;
        }
        xml.push_str("</testcase>");
        let junit = crate::journal::JunitEntries { xml: vec![xml], stats, double: 0 };
        let plugin = crate::journal::PluginEntries { junit: Some(junit), ..Default::default() };
        self.add(&Entry { nodeid: first.nodeid.clone(), plugin: Some(Box::new(plugin)), ..Entry::default() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::sample_record;

    #[test]
    fn tag_attributes_as_the_attribute_pattern_finds_them() {
        let re = regex::Regex::new(r#"([A-Za-z_:][-A-Za-z0-9_:.]*)\s*=\s*("[^"]*"|'[^']*')"#).unwrap();
        for tag in [
            r#"testsuite name="pytest" errors="0" failures="1" skipped="0" tests="3" time="0.5""#,
            r#"testsuite  a = 'x"y'  b="1"c='2' 9d="3" -e="4" f.g:h="5" i= "6" j="7/"#,
            r#"testsuite name="é" x:y="a>b" broken=" no="end" ="v" k=v l="#,
            "testsuite\tname\n=\r\"t\"\u{a0}u\u{a0}=\u{a0}'v'",
            "",
        ] {
            let want: Vec<(String, String)> =
                re.captures_iter(tag).map(|c| (c[1].to_string(), c[2][1..c[2].len() - 1].to_string())).collect();
            assert_eq!(tag_attributes(tag), want, "{tag}");
        }
    }

    #[test]
    fn names_like_pytest() {
        assert_eq!(junit_names("a/b/test_x.py::Cls::test_y[p::q]"), ("a.b.test_x.Cls".into(), "test_y[p::q]".into()));
        assert_eq!(junit_names("test_a.py::test_ok"), ("test_a".into(), "test_ok".into()));
    }

    #[test]
    fn synthetic_case_snapshot() {
        insta::assert_snapshot!(entry_xml(&Entry::from_crash(&sample_record())));
    }

    #[test]
    fn updates_counts_and_rejects_truncated() {
        let text = r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="2" time="0.040"><testcase classname="t" name="a" time="0.1" /><testcase classname="t" name="b" time="0.1"><failure message="x">y</failure></testcase></testsuite></testsuites>"#;
        let mut d = JunitDoc::parse(text.into()).unwrap();
        assert!(d.has("t.py::a"));
        d.add(&Entry::from_crash(&sample_record()));
        let out = d.render().unwrap();
        assert!(
            out.contains(r#"<testsuite name="pytest" errors="0" failures="2" skipped="0" tests="3" time="1.290">"#),
            "{out}"
        );
        assert!(JunitDoc::parse(out[..out.len() - 20].to_string()).is_err());
        assert!(JunitDoc::parse("<html></html>".into()).is_err());
    }
}
