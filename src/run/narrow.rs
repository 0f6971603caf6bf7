//! What a resume run can leave out, so that a crash costs little: the files
//! that hold no test left (not collected again), and how many pytest
//! processes a run used (a fork server's children each count as one run).

use std::collections::HashSet;

use crate::journal::{Event, RunJournal};

/// The files collected so far: `(node id, absolute path)`, first seen
/// first, from the journals' `collect` events.
#[derive(Debug, Clone, Default)]
pub(super) struct CollectedFiles {
    files: Vec<(String, String)>,
    seen: HashSet<(String, String)>,
}

impl CollectedFiles {
    /// Adds the files a run collected.
    pub fn absorb(&mut self, journal: &RunJournal) {
        for pj in journal.processes.values() {
            for e in &pj.events {
                if let Event::Collect { nodeid, path } = e {
                    let key = (nodeid.clone(), path.clone());
                    if !path.is_empty() && self.seen.insert(key.clone()) {
                        self.files.push(key);
                    }
                }
            }
        }
    }

    /// Absolute paths of collected files that hold none of the tests in
    /// `left`, for the plan's `ignore` (a resume run then neither imports
    /// nor collects them; directories and their conftests are still
    /// visited, so rootdir, ini and conftest behaviour stay the user's).
    /// Empty when some test left lies in a file no journal named: leaving
    /// files out is then not known to be safe.
    pub fn without(&self, left: &[&str]) -> Vec<String> {
        let known: HashSet<&str> = self.files.iter().map(|(n, _)| n.as_str()).collect();
        let wanted: HashSet<&str> = left.iter().map(|n| file_of(n)).collect();
        if !wanted.iter().all(|f| known.contains(f)) {
            return Vec::new();
        }
        // One path may have several collectors (a module and its doctests):
        // it stays when any of them holds a test left.
        let keep: HashSet<&str> =
            self.files.iter().filter(|(n, _)| wanted.contains(n.as_str())).map(|(_, p)| p.as_str()).collect();
        let mut out: Vec<String> = Vec::new();
        let mut listed: HashSet<&str> = HashSet::new();
        for (_, path) in &self.files {
            if !keep.contains(path.as_str()) && listed.insert(path) {
                out.push(path.clone());
            }
        }
        out
    }
}

/// The file part of a test's node id (the collector's node id).
fn file_of(nodeid: &str) -> &str {
    nodeid.split_once("::").map_or(nodeid, |(file, _)| file)
}

/// How many pytest processes of a run ran tests for `--max-runs`: each
/// child a fork server forked counts as one run; a run without them is one.
pub(super) fn processes_used(journal: &RunJournal) -> u32 {
    let children = journal
        .processes
        .values()
        .filter(|pj| matches!(pj.events.first(), Some(Event::Start { forked_from: Some(_), .. })))
        .count();
    u32::try_from(children).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{parse_journal, ProcessJournal};

    fn journal(lines: &str) -> RunJournal {
        let mut rj = RunJournal::default();
        rj.processes.insert(1, ProcessJournal::from_events(1, parse_journal(lines)));
        rj
    }

    #[test]
    fn files_without_tests_left() {
        let mut files = CollectedFiles::default();
        files.absorb(&journal(concat!(
            "{\"ev\":\"collect\",\"nodeid\":\"t/a.py\",\"path\":\"/r/t/a.py\"}\n",
            "{\"ev\":\"collect\",\"nodeid\":\"t/b.py\",\"path\":\"/r/t/b.py\"}\n",
            "{\"ev\":\"collect\",\"nodeid\":\"t/b.py\",\"path\":\"/r/t/b.py\"}\n",
            "{\"ev\":\"collect\",\"nodeid\":\"t/c.py\",\"path\":\"/r/t/c.py\"}\n",
        )));
        assert_eq!(files.without(&["t/b.py::test_x[a::b]"]), vec!["/r/t/a.py", "/r/t/c.py"]);
        assert_eq!(files.without(&["t/b.py::T::t", "t/c.py::t"]), vec!["/r/t/a.py"]);
        // A test in a file no journal named: nothing is left out.
        assert!(files.without(&["t/b.py::t", "t/d.py::t"]).is_empty());
    }

    #[test]
    fn a_path_with_doctests_stays_when_either_collector_has_tests_left() {
        let mut files = CollectedFiles::default();
        files.absorb(&journal(concat!(
            "{\"ev\":\"collect\",\"nodeid\":\"m.py\",\"path\":\"/r/m.py\"}\n",
            "{\"ev\":\"collect\",\"nodeid\":\"README.txt\",\"path\":\"/r/README.txt\"}\n",
        )));
        assert_eq!(files.without(&["m.py::m.f"]), vec!["/r/README.txt"]);
    }

    #[test]
    fn forked_children_count_as_runs() {
        let mut rj = journal("{\"ev\":\"start\",\"pid\":1,\"worker\":\"main\",\"fork_server\":true}\n");
        assert_eq!(processes_used(&rj), 1);
        for pid in [2, 3] {
            let line = format!("{{\"ev\":\"start\",\"pid\":{pid},\"worker\":\"main\",\"forked_from\":1}}\n");
            rj.processes.insert(pid, ProcessJournal::from_events(pid, parse_journal(&line)));
        }
        assert_eq!(processes_used(&rj), 2);
    }
}
