//! pytest-csv's custom columns (issue 9 item 8): with `--csv-columns`, the
//! merged CSV of a wrapped run with crashes has the user's header and every
//! row as a plain pytest-csv run of the same suite without the crashes
//! writes it (rows filled in from the journal included), except that each
//! crashed test's row is failed with the crash and has every column that
//! does not depend on the test having run (which test it is, the host, the
//! Python) filled in. Differential: real plain and wrapped runs of the
//! generated suite of `differential.rs`, CSVs read by a CSV parser.

use std::collections::BTreeMap;
use std::process::Command;

use crate::differential::{norm, report_args, suite, wrapped, Reports, CRASHING};
use crate::util::python;

/// The plain run's and the wrapped run's reports for these pytest args
/// (the plain one without crashes).
fn plain_and_wrapped(wrap_args: &[&str], pytest_extra: &[&str]) -> (Reports, Reports, String) {
    let plain = suite();
    let mut cmd = Command::new(python());
    cmd.args(["-m", "pytest"]).args(report_args(pytest_extra)).env_remove("PA_DIFF_CRASH");
    let run = plain.run_cmd(cmd);
    assert_eq!(run.code(), 1, "plain run\n{}", run.dump());
    let (s, run) = wrapped(wrap_args, pytest_extra);
    assert_eq!(run.code(), 1, "{}", run.dump());
    assert_eq!(run.records().len(), CRASHING.len(), "{}", run.dump());
    let err = run.stderr();
    let out = (Reports::read(plain.path()), Reports::read(s.path()), err);
    drop((plain, s));
    out
}

/// Rows as column -> normalised cell, durations blanked.
fn rows(r: &Reports, root: &std::path::Path) -> Vec<BTreeMap<String, String>> {
    let (header, rows) = &r.csv;
    rows.iter()
        .map(|row| {
            header
                .iter()
                .zip(row)
                .map(|(h, c)| (h.clone(), if h.starts_with("duration") { String::new() } else { norm(c, root) }))
                .collect()
        })
        .collect()
}

fn crash_text(s: &str) -> bool {
    ["Crashed: SIG", "Exited with code", "crashed with SIG", "exited with code"].iter().any(|w| s.contains(w))
}

/// Columns a crashed test's row has as the plain run's: those that say
/// which test it is and where it ran.
const KNOWN: [&str; 12] = [
    "id",
    "module",
    "class",
    "function",
    "name",
    "file",
    "host",
    "user",
    "system",
    "python_implementation",
    "python_version",
    "working_directory",
];

/// Compares the CSVs as multisets of rows: the plain run's rows of the
/// crashed tests (matched on `function`) are replaced by one failed row
/// carrying the crash each, whose KNOWN columns equal the plain row's.
fn compare(plain: &Reports, wrapped: &Reports) -> Vec<String> {
    let mut d = Vec::new();
    if plain.csv.0 != wrapped.csv.0 {
        d.push(format!("header: plain {:?} wrapped {:?}", plain.csv.0, wrapped.csv.0));
        return d;
    }
    let pr = rows(plain, plain.root());
    let wr = rows(wrapped, wrapped.root());
    let function = |id: &str| id.rsplit("::").next().unwrap().split('[').next().unwrap().to_string();
    let id_of = |row: &BTreeMap<String, String>| row.get("id").cloned();
    let mut want: Vec<BTreeMap<String, String>> = pr.clone();
    for crashed in CRASHING {
        let f = function(crashed);
        // The plain row of that test: by id when there is an id column,
        // else one of its function's (they differ in durations only).
        let at = want.iter().position(|r| match id_of(r) {
            Some(id) => id == crashed,
            None => r.get("function") == Some(&f) && r.get("status").is_some_and(|s| s == "passed"),
        });
        let Some(at) = at else {
            d.push(format!("plain has no row for {crashed}"));
            continue;
        };
        let plain_row = want.remove(at);
        let found = wr.iter().any(|w| {
            let failed = w.get("status").map_or(true, |s| s == "failed");
            let carries = w.get("message").map_or(true, |m| crash_text(m));
            let known = KNOWN.iter().all(|k| w.get(*k) == plain_row.get(*k));
            failed && carries && known
        });
        if !found {
            d.push(format!("no failed row carrying the crash with {KNOWN:?} as plain's {plain_row:?}"));
        }
    }
    let mut got: Vec<BTreeMap<String, String>> =
        wr.into_iter().filter(|w| !w.get("message").is_some_and(|m| crash_text(m))).collect();
    let key = |r: &BTreeMap<String, String>| format!("{r:?}");
    want.sort_by_key(key);
    got.sort_by_key(key);
    if want != got {
        let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
        d.push(format!(
            "{} rows plain (crashes out), {} wrapped\n  missing: {missing:#?}\n  extra: {extra:#?}",
            want.len(),
            got.len()
        ));
    }
    d
}

fn assert_same_csv(wrap_args: &[&str], columns: &str, xdist: bool) {
    let arg = format!("--csv-columns={columns}");
    let mut extra = vec![arg.as_str()];
    if xdist {
        extra.extend(["-n", "2"]);
    }
    let (plain, wrapped, err) = plain_and_wrapped(wrap_args, &extra);
    let diffs = compare(&plain, &wrapped);
    assert!(diffs.is_empty(), "{} differences:\n{}\n{err}", diffs.len(), diffs.join("\n"));
}

#[test]
fn every_pytest_csv_column_matches_plain_serial() {
    assert_same_csv(
        &["--max-runs", "9"],
        "id,module,class,function,name,file,doc,status,success,message,duration,duration_formatted,markers,\
         markers_with_args,parameters,properties,host,user,system,system_release,python_implementation,\
         python_version,working_directory",
        false,
    );
}

#[test]
fn columns_without_an_id_match_plain_under_xdist() {
    assert_same_csv(&["--max-runs", "9"], "function,status,message,duration_formatted,host", true);
}

#[test]
fn columns_without_an_id_match_plain_serial() {
    assert_same_csv(&["--max-runs", "9"], "function,status,message,duration_formatted,host", false);
}
