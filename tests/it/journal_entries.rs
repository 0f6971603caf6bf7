//! What the plugin journals per test for the merged reports (issue 9):
//! the report plugins' own entries of each finished test, and the
//! deselection counts of one plain run.

use crate::util::Suite;
use pytest_abort::journal::{parse_journal, Done, Event};

#[test]
fn journal_carries_the_report_plugins_entries_and_the_users_deselections() {
    let s = Suite::new();
    s.write(
        "test_j.py",
        "import unittest, ctypes\n\
         def test_ok(): pass\n\
         def test_other(): pass\n\
         class TestU(unittest.TestCase):\n    def test_subs(self):\n        for i in range(3):\n            with self.subTest(i=i):\n                pass\n\
         def test_segv(): ctypes.string_at(0)\n",
    );
    let state = s.path().join("state");
    let state_arg = state.display().to_string();
    let run = s.wrap(
        &["--keep-state", "--state-dir", &state_arg],
        &[
            "-k",
            "not other",
            "--json-report",
            "--json-report-file=r.json",
            "--html=r.html",
            "--csv=r.csv",
            "--csv-columns",
            "function,status,message,duration_formatted,host",
            "--junitxml=r.xml",
        ],
    );
    assert_eq!(run.code(), 1, "{}", run.dump());
    let mut events = Vec::new();
    for e in std::fs::read_dir(state.join("journal")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("r1-") {
            events.extend(parse_journal(&std::fs::read_to_string(p).unwrap()));
        }
    }
    let collected = events.iter().find_map(|e| match e {
        // (The process that collected says; a resume fork server's children
        // only restate their tests.)
        Event::Collected { user_deselected: Some(user), plan_deselected, .. } => Some((Some(*user), *plan_deselected)),
        _ => None,
    });
    assert_eq!(collected, Some((Some(1), Some(0))), "the user's -k deselected one test\n{}", run.dump());
    let done: Vec<&Done> = events
        .iter()
        .filter_map(|e| match e {
            Event::Done(d) => Some(d),
            _ => None,
        })
        .collect();
    let subs = done.iter().find(|d| d.nodeid.ends_with("test_subs")).expect("test_subs journaled");
    let r = subs.reports.as_ref().expect("report plugins' entries journaled");
    assert_eq!(r.json.as_ref().unwrap()["nodeid"], "test_j.py::TestU::test_subs", "{r:?}");
    assert!(r.html.as_ref().unwrap().as_array().is_some_and(|a| !a.is_empty()), "{r:?}");
    let j = r.junit.as_ref().unwrap();
    assert!(j.xml[0].starts_with("<testcase "), "{j:?}");
    assert_eq!(j.stats["passed"], 4, "the test and its 3 subtests count in junit tests=: {j:?}");
    let rows = r.csv.as_ref().unwrap();
    assert_eq!(rows[0]["function"]["function"], "test_subs", "{rows:?}");
    assert!(rows[0]["host"].contains_key("host") && rows[0].contains_key("duration_formatted"), "{rows:?}");
}
