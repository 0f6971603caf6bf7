//! The shim's per-process journals: what each pytest process collected and
//! finished, so the wrapper knows what is left after a crash and can fill in
//! reports of a run whose process died before writing them.
//!
//! One file per pytest process and run: `<state>/journal/r<run>-<pid>.jsonl`,
//! one JSON event a line, appended by the shim with one `write` per line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Phase;
use crate::reports::Kind;

/// How much of a journal's end [`ProcessJournal::read_head_and_tail`] reads.
pub const TAIL_BYTES: u64 = 256 * 1024;

/// Folder of the journals inside the state dir.
pub fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("journal")
}

/// The journal a pytest process `pid` writes during run `run`.
pub fn journal_path(state_dir: &Path, run: u32, pid: i32) -> PathBuf {
    journal_dir(state_dir).join(format!("r{run}-{pid}.jsonl"))
}

/// True when the pytest process `pid` of `run`, started as a fork server,
/// declined to serve (forking was unsafe): it runs the tests itself. The
/// shim says so with an empty file beside its journal, which the
/// supervisor can check at each fork without reading the journal.
pub fn fork_declined(state_dir: &Path, run: u32, pid: i32) -> bool {
    journal_dir(state_dir).join(format!("r{run}-{pid}.no-fork")).exists()
}

/// One line of a journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The shim was configured in this process.
    Start {
        /// pid of the process.
        pid: i32,
        /// `main` or `gwN`.
        worker: String,
        /// pytest's rootdir.
        #[serde(default)]
        rootdir: String,
        /// pytest's cache folder; `None` when the cache plugin is off.
        #[serde(default)]
        cache_dir: Option<String>,
        /// True for an xdist controller (it starts the workers).
        #[serde(default)]
        xdist_controller: bool,
        /// True for a process that may run its tests in forked children
        /// (resume by fork): like a controller, its forks are pytest
        /// processes.
        #[serde(default)]
        fork_server: bool,
        /// In a child a fork server forked to run tests: the server's pid.
        #[serde(default)]
        forked_from: Option<i32>,
        /// pytest's `--maxfail` (`-x` is 1; 0: no limit).
        #[serde(default)]
        maxfail: u32,
        /// The interpreter running the tests (`sys.executable`): a new
        /// pytest-html page is built from the pytest-html installed there.
        #[serde(default)]
        python: Option<String>,
    },
    /// Collection of a file started.
    Collect {
        /// The file's node id (path relative to rootdir).
        nodeid: String,
        /// Absolute path of the file.
        #[serde(default)]
        path: String,
    },
    /// Collection of a file ended.
    CollectEnd {
        /// The file's node id.
        nodeid: String,
    },
    /// A collection report that did not pass: a module skipped at import
    /// (`pytest.importorskip`, `pytest.skip(allow_module_level=True)`) or
    /// one that failed to import. The report plugins list it as an entry.
    CollectReport(CollectReport),
    /// The selected tests of this process, after deselection.
    Collected {
        /// Node ids in run order.
        nodeids: Vec<String>,
        /// Tests the user's own options deselected (`-k`, `-m`,
        /// `--deselect`), not counting the wrapper's plan.
        #[serde(default)]
        user_deselected: Option<usize>,
        /// Tests the wrapper's plan deselected.
        #[serde(default)]
        plan_deselected: Option<usize>,
        /// Under `--multi-gpu-marker`, in the first phase: the tests the
        /// plan left for the multi-GPU phase (marked, selected by the user).
        #[serde(default)]
        multi_gpu: Option<Vec<String>>,
    },
    /// A test finished its protocol.
    Done(Done),
    /// (xdist controller) a worker went down.
    WorkerDown {
        /// The worker id.
        worker: String,
        /// xdist's error text.
        #[serde(default)]
        error: Option<String>,
        /// The worker's surviving marker, parsed.
        #[serde(default)]
        marker: Option<serde_json::Value>,
    },
    /// (controller) where pytest was asked to write reports, and where this
    /// run's copies actually go.
    Reports {
        /// Report kind (`json`, `html`, `csv`, `junit`) to the user's path.
        #[serde(default)]
        requested: BTreeMap<String, String>,
        /// Report kind to this run's redirected path.
        #[serde(default)]
        redirected: BTreeMap<String, String>,
        /// pytest-csv's column ids in order, when a CSV was asked for.
        #[serde(default)]
        csv_columns: Vec<String>,
    },
    /// A test failed with a sticky device error (its failure text matched
    /// a poison pattern): this process runs no further test.
    Poisoned {
        /// The test's node id.
        nodeid: String,
        /// The phase whose report matched: setup, call or teardown.
        #[serde(default)]
        when: String,
        /// The text that matched.
        #[serde(default)]
        matched: String,
        /// The GPU the process used, as the marker says it.
        #[serde(default)]
        gpu_id: String,
    },
    /// pytest_sessionfinish ran.
    Finish {
        /// pytest's exit status.
        #[serde(default)]
        exitstatus: Option<i32>,
    },
    /// pytest_unconfigure ran: the process is ending normally.
    End,
    /// An event this version does not know.
    #[serde(other)]
    Unknown,
}

/// A collection report that did not pass, as the report plugins list it:
/// JUnit's `collection skipped`/`collection failure` case,
/// pytest-json-report's `collectors` entry, pytest-html's error row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CollectReport {
    /// The collector's node id (a file's path relative to rootdir).
    pub nodeid: String,
    /// pytest's outcome: `skipped` or `failed`.
    pub outcome: String,
    /// `str(report.longrepr)`, as junitxml and pytest-json-report write it.
    #[serde(default)]
    pub longrepr: String,
}

/// A finished test.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Done {
    /// Node id.
    pub nodeid: String,
    /// passed, failed, error, skipped, xfailed, xpassed.
    pub outcome: String,
    /// Seconds, all phases.
    #[serde(default)]
    pub duration: f64,
    /// The phase that decided the outcome.
    #[serde(default)]
    pub when: String,
    /// Failure text, when it failed or was skipped.
    #[serde(default)]
    pub longrepr: Option<String>,
    /// Location `[path, lineno, domain]` as pytest reports it.
    #[serde(default)]
    pub location: Option<(String, Option<u64>, String)>,
    /// The item's keywords (names).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Captured stdout/stderr/log sections `(title, text)`.
    #[serde(default)]
    pub sections: Vec<(String, String)>,
    /// Start time (epoch seconds).
    #[serde(default)]
    pub start: f64,
    /// The entries this process's report plugins wrote for the test, when
    /// it had any: put into a report the process never got to write, they
    /// make it the same as if it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<Box<PluginEntries>>,
    /// The test's `record_property` values `(name, str(value))`, in order,
    /// as junitxml writes them under `<properties>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<(String, String)>,
    /// Where the failure that decided the outcome was raised, and its whole
    /// message (pytest's `reprcrash`), when pytest located it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprcrash: Option<Box<ReprCrash>>,
    /// The `message` attribute junitxml writes for that failure (for an
    /// error, `failed on setup with "..."`; shortened as the pytest that ran
    /// it shortens it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junit_message: Option<String>,
}

/// Where a failure was raised and its message, as pytest locates it
/// (`longrepr.reprcrash`): pytest-json-report's `crash`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ReprCrash {
    /// The file, as pytest gives it (absolute).
    #[serde(default)]
    pub path: String,
    /// Line number, 1-based.
    #[serde(default)]
    pub lineno: u64,
    /// The exception's whole message (`Type: text`, every line).
    #[serde(default)]
    pub message: String,
}

/// What the report plugins of the process that ran a test wrote for it
/// (each part absent when that plugin was not active there).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PluginEntries {
    /// pytest-json-report's test object.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// pytest-html's result entries (the list under the node id in the
    /// page's `tests`).
    #[serde(default)]
    pub html: Option<serde_json::Value>,
    /// junitxml's `<testcase>` elements and counters.
    #[serde(default)]
    pub junit: Option<JunitEntries>,
    /// pytest-csv's rows: per column id (`--csv-columns`), its cells
    /// (header to value; most columns make one cell named as the column,
    /// `markers_as_columns` and the like several).
    #[serde(default)]
    pub csv: Option<Vec<BTreeMap<String, BTreeMap<String, String>>>>,
}

/// junitxml's part of [`PluginEntries`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct JunitEntries {
    /// The `<testcase>` elements, as XML text.
    #[serde(default)]
    pub xml: Vec<String>,
    /// What the test added to junitxml's counters (`passed`, `failure`,
    /// `skipped`, `error`).
    #[serde(default)]
    pub stats: BTreeMap<String, i64>,
    /// Cases counted twice (a passed call with a teardown error), which
    /// junitxml subtracts from `tests`.
    #[serde(default)]
    pub double: i64,
}

impl Done {
    /// True for outcomes that make the suite fail.
    pub fn is_failure(&self) -> bool {
        crate::model::TestOutcome::parse(&self.outcome).is_some_and(crate::model::TestOutcome::is_failure)
    }
}

/// Parses journal text; unparsable lines (a torn last line) are skipped,
/// and so are NULs: the plugin stores lines into a memory map of the file,
/// whose unused rest (up to one growth step) is NULs when the process was
/// killed before it closed the journal.
pub fn parse_journal(text: &str) -> Vec<Event> {
    text.split(['\n', '\0']).filter(|l| !l.trim().is_empty()).filter_map(parse_line).collect()
}

/// Where the text of a journal file of `len` bytes ends: before the NULs
/// a process killed with its journal mapped leaves at the end (read
/// backwards a block at a time, so a long journal is not read whole).
fn content_end(file: &mut std::fs::File, len: u64) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        match chunk.iter().rposition(|b| *b != 0) {
            Some(i) => return Ok(start + i as u64 + 1),
            None => end = start,
        }
    }
    Ok(0)
}

/// One event; a lone surrogate in a string (Python writes one for a node
/// id that holds it) is read as U+FFFD instead of losing the line.
fn parse_line(line: &str) -> Option<Event> {
    serde_json::from_str(line).ok().or_else(|| match crate::reports::text::replace_lone_surrogates(line) {
        std::borrow::Cow::Owned(fixed) => serde_json::from_str(&fixed).ok(),
        std::borrow::Cow::Borrowed(_) => None,
    })
}

/// What one pytest process's journal says about it.
#[derive(Debug, Clone, Default)]
pub struct ProcessJournal {
    /// pid.
    pub pid: i32,
    /// `main` or `gwN`.
    pub worker: String,
    /// pytest's rootdir.
    pub rootdir: String,
    /// Every event, in order.
    pub events: Vec<Event>,
}

impl ProcessJournal {
    /// Reads the journal of `pid` in `run`; `None` when that process never
    /// loaded the shim (it is not a pytest process).
    pub fn read(state_dir: &Path, run: u32, pid: i32) -> Option<Self> {
        let text = std::fs::read(journal_path(state_dir, run, pid)).ok()?;
        Some(Self::from_events(pid, parse_journal(&String::from_utf8_lossy(&text))))
    }

    /// Reads only what attribution needs, in bounded time however long the
    /// process ran: the first event (worker, rootdir) and the events in the
    /// last [`TAIL_BYTES`] of the file (the stage it stopped in).
    pub fn read_head_and_tail(state_dir: &Path, run: u32, pid: i32) -> Option<Self> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(journal_path(state_dir, run, pid)).ok()?;
        let len = file.metadata().ok()?.len();
        let len = content_end(&mut file, len).ok()?;
        file.seek(SeekFrom::Start(0)).ok()?;
        if len <= 2 * TAIL_BYTES {
            let mut bytes = vec![0u8; len as usize];
            file.read_exact(&mut bytes).ok()?;
            return Some(Self::from_events(pid, parse_journal(&String::from_utf8_lossy(&bytes))));
        }
        let mut events: Vec<Event> = read_start(state_dir, run, pid).into_iter().collect();
        let mut tail = vec![0u8; TAIL_BYTES as usize];
        file.seek(SeekFrom::Start(len - TAIL_BYTES)).ok()?;
        file.read_exact(&mut tail).ok()?;
        // The window starts inside a line: drop that partial line.
        let from = tail.iter().position(|b| *b == b'\n').map_or(tail.len(), |i| i + 1);
        events.extend(parse_journal(&String::from_utf8_lossy(&tail[from..])));
        Some(Self::from_events(pid, events))
    }

    /// Builds from parsed events.
    pub fn from_events(pid: i32, events: Vec<Event>) -> Self {
        let mut j = ProcessJournal { pid, worker: "main".into(), ..Default::default() };
        if let Some(Event::Start { worker, rootdir, .. }) = events.first() {
            j.worker = worker.clone();
            j.rootdir = rootdir.clone();
        }
        j.events = events;
        j
    }

    /// True when a test poisoned the process (a sticky device error).
    pub fn poisoned(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::Poisoned { .. }))
    }

    /// True when the process reached pytest_unconfigure.
    pub fn ended_normally(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::End))
    }

    /// The file being collected when the journal stops, if any.
    pub fn collecting(&self) -> Option<&str> {
        let mut current = None;
        for e in &self.events {
            match e {
                Event::Collect { nodeid, .. } => current = Some(nodeid.as_str()),
                Event::CollectEnd { .. } | Event::Collected { .. } => current = None,
                _ => {}
            }
        }
        current
    }

    /// Where in the session the journal stops: session start, collection,
    /// between tests or session finish (a marker names a test's own phase).
    pub fn stage(&self) -> Phase {
        let mut stage = Phase::SessionStart;
        for e in &self.events {
            match e {
                Event::Collect { .. } | Event::CollectEnd { .. } => stage = Phase::Collection,
                Event::Collected { .. } | Event::Done(_) => stage = Phase::BetweenTests,
                Event::Finish { .. } | Event::End => stage = Phase::SessionFinish,
                _ => {}
            }
        }
        stage
    }
}

/// The report files of one run: what the user asked pytest for, and where
/// the shim sent this run's copies, by report format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReports {
    /// 1-based run number.
    pub run: u32,
    /// Format to the user's path.
    pub requested: BTreeMap<Kind, PathBuf>,
    /// Format to this run's copy.
    pub redirected: BTreeMap<Kind, PathBuf>,
    /// pytest-csv's column ids in order (empty when no CSV was asked for).
    pub csv_columns: Vec<String>,
}

/// The journal's string-keyed report map, typed; formats this version does
/// not know are left out.
fn by_kind(map: &BTreeMap<String, String>) -> BTreeMap<Kind, PathBuf> {
    map.iter().filter_map(|(k, p)| Some((k.parse::<Kind>().ok()?, PathBuf::from(p)))).collect()
}

/// Adds a run's collection reports to `list`, but those of node ids it
/// already holds (an earlier run collected them): one plain run's.
pub fn add_collect_reports(list: &mut Vec<CollectReport>, run: &[CollectReport]) {
    let held: HashSet<String> = list.iter().map(|c| c.nodeid.clone()).collect();
    list.extend(run.iter().filter(|c| !held.contains(&c.nodeid)).cloned());
}

/// The first event of the journal of `pid` in `run`, when that process
/// loaded the plugin.
pub fn read_start(state_dir: &Path, run: u32, pid: i32) -> Option<Event> {
    use std::io::Read;
    let mut file = std::fs::File::open(journal_path(state_dir, run, pid)).ok()?;
    let mut head = vec![0u8; 16 * 1024];
    let n = file.read(&mut head).ok()?;
    let line = head[..n].split(|b| *b == b'\n').next()?;
    serde_json::from_slice(line).ok().filter(|e| matches!(e, Event::Start { .. }))
}

/// Everything the journals of one run say.
#[derive(Debug, Clone, Default)]
pub struct RunJournal {
    /// Per process, by pid.
    pub processes: BTreeMap<i32, ProcessJournal>,
    /// Tests selected in this run (union over processes, first-seen order).
    pub collected: Vec<String>,
    /// Finished tests, first report wins.
    pub done: Vec<Done>,
    /// Collection reports that did not pass, as the process writing the
    /// reports saw them (see [`RunJournal::gather_collect_reports`]).
    pub collect_reports: Vec<CollectReport>,
    /// Whether any process finished collecting.
    pub collection_finished: bool,
    /// What a plain run would count as `collected` and `deselected`: the
    /// tests collected (selected, the user's deselected and the plan's),
    /// and the user's deselected; `None` when no process said.
    pub counts: Option<(usize, usize)>,
    /// Under `--multi-gpu-marker`, in the first phase: the tests left for
    /// the multi-GPU phase, as the first process that collected said.
    pub multi_gpu: Option<Vec<String>>,
}

impl RunJournal {
    /// Reads every journal of `run` in the state dir.
    pub fn read(state_dir: &Path, run: u32) -> Self {
        let mut rj = RunJournal::default();
        let prefix = format!("r{run}-");
        let Ok(entries) = std::fs::read_dir(journal_dir(state_dir)) else {
            return rj;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) =
                name.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".jsonl")).and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(pj) = ProcessJournal::read(state_dir, run, pid) {
                rj.processes.insert(pid, pj);
            }
        }
        let mut seen_collected = HashSet::new();
        let mut seen_done = HashSet::new();
        for pj in rj.processes.values() {
            for e in &pj.events {
                match e {
                    Event::Collected { nodeids, user_deselected, plan_deselected, multi_gpu } => {
                        rj.collection_finished = true;
                        if rj.multi_gpu.is_none() {
                            rj.multi_gpu = multi_gpu.clone();
                        }
                        if let (None, Some(user)) = (rj.counts, user_deselected) {
                            let total = nodeids.len() + user + plan_deselected.unwrap_or(0);
                            rj.counts = Some((total, *user));
                        }
                        for n in nodeids {
                            if seen_collected.insert(n.clone()) {
                                rj.collected.push(n.clone());
                            }
                        }
                    }
                    Event::Done(d) if seen_done.insert(d.nodeid.clone()) => rj.done.push(d.clone()),
                    _ => {}
                }
            }
        }
        rj.gather_collect_reports();
        rj
    }

    /// The collection reports the report plugins of this run saw: every one
    /// an xdist controller journaled (it sees a collection error once per
    /// worker that hit it, and the plugins list each, as in a plain `-n`
    /// run), then those of other processes whose node id it lacks (the
    /// workers journal the same reports; a serial run has one process).
    fn gather_collect_reports(&mut self) {
        let controller =
            |p: &ProcessJournal| matches!(p.events.first(), Some(Event::Start { xdist_controller: true, .. }));
        let mut order: Vec<&ProcessJournal> = self.processes.values().collect();
        order.sort_by_key(|p| !controller(p));
        let mut out: Vec<CollectReport> = Vec::new();
        for p in order {
            let before: HashSet<&str> = out.iter().map(|c| c.nodeid.as_str()).collect();
            let mine: Vec<CollectReport> = p
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::CollectReport(c) if !before.contains(c.nodeid.as_str()) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            out.extend(mine);
        }
        self.collect_reports = out;
    }

    /// The `Reports` event of the run's controller, if any.
    pub fn reports(&self, run: u32) -> Option<RunReports> {
        self.processes.values().flat_map(|p| p.events.iter()).find_map(|e| match e {
            Event::Reports { requested, redirected, csv_columns } => Some(RunReports {
                run,
                requested: by_kind(requested),
                redirected: by_kind(redirected),
                csv_columns: csv_columns.clone(),
            }),
            _ => None,
        })
    }

    /// Worker-down events from the controller, by worker id.
    pub fn workers_down(&self) -> HashMap<String, Option<serde_json::Value>> {
        let mut out = HashMap::new();
        for pj in self.processes.values() {
            for e in &pj.events {
                if let Event::WorkerDown { worker, marker, .. } = e {
                    out.insert(worker.clone(), marker.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal of pid 42 in run 1 under `dir` (its folder created): a
    /// start event of `worker`, then 20,000 passed tests, `t.py::test_0`
    /// to `t.py::test_19999`; returns its path and text.
    fn long_journal(dir: &Path, worker: &str) -> (PathBuf, String) {
        let path = journal_path(dir, 1, 42);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut text = format!("{{\"ev\":\"start\",\"pid\":42,\"worker\":\"{worker}\",\"rootdir\":\"/r\"}}\n");
        for i in 0..20000 {
            text.push_str(&format!("{{\"ev\":\"done\",\"nodeid\":\"t.py::test_{i}\",\"outcome\":\"passed\"}}\n"));
        }
        (path, text)
    }

    #[test]
    fn head_and_tail_of_a_long_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut text) = long_journal(dir.path(), "gw3");
        text.push_str("{\"ev\":\"finish\",\"exitstatus\":0}\n");
        std::fs::write(&path, &text).unwrap();
        assert!(text.len() as u64 > 2 * TAIL_BYTES);
        let pj = ProcessJournal::read_head_and_tail(dir.path(), 1, 42).unwrap();
        assert_eq!(pj.worker, "gw3");
        assert_eq!(pj.rootdir, "/r");
        assert_eq!(pj.stage(), Phase::SessionFinish);
        assert!(!pj.ended_normally());
        assert!(pj.events.len() < 20000);
    }

    /// A process killed with its journal mapped leaves NULs after its last
    /// line (up to one growth step, here more than the tail window): the
    /// tail read skips them and finds the real last events.
    #[test]
    fn head_and_tail_skip_the_nuls_of_a_killed_process() {
        let dir = tempfile::tempdir().unwrap();
        let (path, text) = long_journal(dir.path(), "gw1");
        let mut bytes = text.into_bytes();
        bytes.resize(bytes.len() + 3 * TAIL_BYTES as usize, 0);
        std::fs::write(&path, &bytes).unwrap();
        let pj = ProcessJournal::read_head_and_tail(dir.path(), 1, 42).unwrap();
        assert_eq!(pj.worker, "gw1");
        assert_eq!(pj.stage(), Phase::BetweenTests);
        assert!(
            matches!(pj.events.last(), Some(Event::Done(d)) if d.nodeid == "t.py::test_19999"),
            "{:?}",
            pj.events.last()
        );

        // A short one, and the whole-file reader.
        let short = b"{\"ev\":\"start\",\"pid\":7,\"worker\":\"main\"}\n{\"ev\":\"done\",\"nodeid\":\"a\",\"outcome\":\"failed\",\"duration\":300e-6,\"start\":1795988285343042e-6}\n\0\0\0";
        std::fs::write(journal_path(dir.path(), 1, 7), short).unwrap();
        for pj in [ProcessJournal::read_head_and_tail(dir.path(), 1, 7), ProcessJournal::read(dir.path(), 1, 7)] {
            let pj = pj.unwrap();
            assert_eq!(pj.events.len(), 2, "{:?}", pj.events);
            let Some(Event::Done(d)) = pj.events.last() else { panic!("{:?}", pj.events) };
            assert_eq!((d.duration, d.start), (0.0003, 1_795_988_285.343_042));
        }
        // NULs between lines (a process of an earlier run with the same pid
        // was killed; this one appended after them).
        let events = parse_journal("{\"ev\":\"end\"}\n\0\0\0{\"ev\":\"end\"}\n");
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn a_lone_surrogate_does_not_lose_the_line() {
        let text = "{\"ev\":\"done\",\"nodeid\":\"t.py::t[a\\ud800b]\",\"outcome\":\"passed\"}\n";
        let events = parse_journal(text);
        assert!(matches!(&events[..], [Event::Done(d)] if d.nodeid == "t.py::t[a\u{fffd}b]"), "{events:?}");
    }

    #[test]
    fn collect_reports_as_the_controller_saw_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(journal_dir(dir.path())).unwrap();
        let report = |id: &str| {
            format!("{{\"ev\":\"collect_report\",\"nodeid\":\"{id}\",\"outcome\":\"failed\",\"longrepr\":\"E\"}}\n")
        };
        let start = |pid: i32, ctl: bool| {
            format!("{{\"ev\":\"start\",\"pid\":{pid},\"worker\":\"w\",\"xdist_controller\":{ctl}}}\n")
        };
        // Workers (lower pids) each report a.py, one also b.py; the
        // controller saw a.py once per worker.
        let files = [
            (10, start(10, false) + &report("a.py") + &report("b.py")),
            (11, start(11, false) + &report("a.py")),
            (12, start(12, true) + &report("a.py") + &report("a.py")),
        ];
        for (pid, text) in files {
            std::fs::write(journal_path(dir.path(), 1, pid), text).unwrap();
        }
        let rj = RunJournal::read(dir.path(), 1);
        let ids: Vec<&str> = rj.collect_reports.iter().map(|c| c.nodeid.as_str()).collect();
        assert_eq!(ids, ["a.py", "a.py", "b.py"]);
        let mut session = rj.collect_reports.clone();
        add_collect_reports(&mut session, &rj.collect_reports);
        assert_eq!(session.len(), 3, "a later run's reports of the same files are not added");
    }

    #[test]
    fn parses_events_and_stage() {
        let text = concat!(
            "{\"ev\":\"start\",\"pid\":5,\"worker\":\"gw1\",\"rootdir\":\"/r\"}\n",
            "{\"ev\":\"collect\",\"nodeid\":\"t/a.py\",\"path\":\"/r/t/a.py\"}\n",
            "{\"ev\":\"some_future_event\",\"x\":1}\n",
            "{\"ev\":\"collect\",\"nodeid\":\"t/b.py\"}\n",
            "{\"ev\":\"done\",\"nodeid\":\"t/a.py::x\",\"outc",
        );
        let pj = ProcessJournal::from_events(5, parse_journal(text));
        assert_eq!(pj.worker, "gw1");
        assert_eq!(pj.collecting(), Some("t/b.py"));
        assert_eq!(pj.stage(), Phase::Collection);
        assert!(!pj.ended_normally());
        assert!(pj.events.contains(&Event::Unknown));
    }
}
