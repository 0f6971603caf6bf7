//! Shards across nodes (issue 14): a suite with real crashes run as 3
//! shards (by file, by test, `-n 2` in one shard), merged with
//! `pytest-abort merge`, gives the reports the unsharded wrapped run gives,
//! entry by entry and in their counts, read by real parsers (json, an XML
//! parser, csv, pytest-html's data blob); an empty shard passes; a missing
//! shard fails the merge unless `--allow-missing`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pytest_abort::shard::assign::{assign, shard_of};
use pytest_abort::shard::{ShardBy, ShardMode};

use crate::util::{python, Run, Suite};

/// Files: passing params, a segfault, an abort and a mid-test exit among
/// passes, a failure, a skip, an xfail, a setup error and a class.
pub(crate) fn crash_suite() -> Suite {
    let s = Suite::new();
    s.write(
        "test_params.py",
        "import pytest\n@pytest.mark.parametrize('i', range(12))\ndef test_p(i):\n    assert i != 7\n",
    );
    s.write(
        "test_native.py",
        "import ctypes, os\n\
         def test_before(): pass\n\
         def test_segv(): ctypes.string_at(0)\n\
         def test_after(): pass\n\
         def test_abort(): os.abort()\n\
         def test_last(): pass\n",
    );
    s.write(
        "test_misc.py",
        "import os, pytest\n\
         @pytest.fixture\ndef broken(): raise RuntimeError('setup broke')\n\
         def test_skip(): pytest.skip('not here')\n\
         @pytest.mark.xfail(reason='known')\ndef test_xfail(): assert 0\n\
         def test_setup_error(broken): pass\n\
         class TestK:\n    def test_one(self): pass\n    def test_exit(self): os._exit(3)\n    def test_two(self): pass\n",
    );
    for i in 0..4 {
        s.write(&format!("test_more_{i}.py"), "def test_a(): pass\ndef test_b(): pass\ndef test_c(): pass\n");
    }
    s
}

/// pytest's own report options writing into `dir`.
fn report_args(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        "--json-report".into(),
        format!("--json-report-file={d}/user.json"),
        format!("--junitxml={d}/user.xml"),
        format!("--csv={d}/user.csv"),
        format!("--html={d}/user.html"),
        "--self-contained-html".into(),
    ]
}

fn wrap(s: &Suite, wrap_args: &[String], pytest_args: &[String]) -> Run {
    let wa: Vec<&str> = wrap_args.iter().map(String::as_str).collect();
    let pa: Vec<&str> = pytest_args.iter().map(String::as_str).collect();
    s.wrap(&wa, &pa)
}

fn merge(s: &Suite, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort"));
    cmd.arg("merge");
    for a in args {
        cmd.arg(a);
    }
    s.run_cmd(cmd)
}

/// Reads each report with a real parser and prints its entries and counts
/// (the JSON summary's `collected` and `deselected` included) with times,
/// durations, pids, paths and messages left out.
///
/// The kind of entry of a test crashed under xdist is left to issue 9's
/// differential harness, which owns it: a crashed test (argv[3]) is
/// compared by being a failure, not by its stages or tag.
const NORMALISE: &str = r#"
import csv, html, json, re, sys
import xml.etree.ElementTree as ET
kind, path, crashed = sys.argv[1], sys.argv[2], set(json.loads(sys.argv[3]))
out = {}
def crash(nodeid, failed):
    assert failed, f"crashed test {nodeid} is not a failure"
    return "crashed"
if kind == "json":
    d = json.load(open(path))
    out["summary"] = {k: v for k, v in d["summary"].items() if k != "duration"}
    out["tests"] = sorted(
        [t["nodeid"], crash(t["nodeid"], t["outcome"] in ("failed", "error"))] if t["nodeid"] in crashed else
        [t["nodeid"], t["outcome"]] + [t.get(s, {}).get("outcome") for s in ("setup", "call", "teardown")]
        for t in d["tests"])
elif kind == "junit":
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    counts["failures+errors"] = counts.pop("failures") + counts.pop("errors")
    out["counts"] = counts
    cases = []
    for c in suite.iter("testcase"):
        kids = [[k.tag, k.get("type")] for k in c if k.tag in ("failure", "error", "skipped")]
        nodeid = [n for n in crashed if n.endswith("::" + c.get("name")) and n.split("::")[0][:-3].replace("/", ".") in c.get("classname")]
        if nodeid:
            kids = crash(nodeid[0], kids and kids[0][0] in ("failure", "error"))
        cases.append([c.get("classname"), c.get("name"), kids])
    out["cases"] = sorted(cases)
elif kind == "csv":
    rows = list(csv.DictReader(open(path, newline="")))
    # pytest-csv under xdist adds a row with an empty id for a crashed
    # worker (issue 9, xdist alike): not a test.
    out["rows"] = sorted(
        [r["id"], crash(r["id"], r["status"] in ("failed", "error")) if r["id"] in crashed else r["status"]]
        for r in rows if r["id"])
elif kind == "html":
    text = open(path).read()
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', text).group(1)))
    out["tests"] = sorted(
        [k, crash(k, all(e["result"] in ("Failed", "Error") for e in v))] if k in crashed else [k, [e["result"] for e in v]]
        for k, v in blob["tests"].items())
print(json.dumps(out, sort_keys=True, indent=1))
"#;

pub(crate) const CRASHED: &str =
    r#"["test_native.py::test_segv", "test_native.py::test_abort", "test_misc.py::TestK::test_exit"]"#;

fn normalised(kind: &str, path: &Path) -> String {
    normalised_with(kind, path, CRASHED)
}

pub(crate) fn normalised_with(kind: &str, path: &Path, crashed: &str) -> String {
    let out =
        Command::new(python()).arg("-c").arg(NORMALISE).arg(kind).arg(path).arg(crashed).output().expect("run python");
    assert!(out.status.success(), "{kind} {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const FORMATS: [(&str, &str, &str); 4] = [
    ("json", "user.json", "report.json"),
    ("junit", "user.xml", "junit.xml"),
    ("csv", "user.csv", "report.csv"),
    ("html", "user.html", "report.html"),
];

/// Runs the suite as 3 shards with `shard_args`, `-n 2` in `xdist_shard`,
/// merges them, and compares every format with the unsharded run's. The
/// user's own `deselect` (pytest's `--deselect`, given to every run) counts
/// once in the merged `collected`/`deselected`, as in the unsharded run.
fn sharded_equals_unsharded(by: &str, xdist_shard: Option<u32>, deselect: &[&str]) {
    let s = crash_suite();
    let full = s.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    let user_args = |dir: &Path| {
        let mut a = report_args(dir);
        a.extend(deselect.iter().map(|d| format!("--deselect={d}")));
        a
    };
    let tests = 35 - deselect.len();
    let r = wrap(&s, &[], &user_args(&full));
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert_eq!(r.records().len(), 3, "{}", r.dump());
    let mut dirs = Vec::new();
    for k in 1..=3u32 {
        let dir = s.path().join(format!("shard-{k}"));
        let user = s.path().join(format!("user-{k}"));
        std::fs::create_dir_all(&user).unwrap();
        let mut pytest_args = user_args(&user);
        if xdist_shard == Some(k) {
            pytest_args.extend(["-n".to_string(), "2".to_string()]);
        }
        let wrap_args = [format!("--shard={k}/3"), format!("--shard-by={by}"), format!("--out-dir={}", dir.display())];
        let r = wrap(&s, &wrap_args, &pytest_args);
        assert!(r.code() == 0 || r.code() == 1, "shard {k}: {}", r.dump());
        assert!(r.stderr().contains(&format!("shard {k}/3 (from --shard; by {by}, hash)")), "{}", r.dump());
        assert!(dir.join("summary.json").is_file(), "{}", r.dump());
        dirs.push(dir);
    }
    // Each test ran in exactly one shard.
    let mut ran: Vec<String> = Vec::new();
    for dir in &dirs {
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        let selected = summary["counts"]["selected"].as_u64().unwrap();
        assert!(selected > 0 && selected < tests as u64, "{}: {selected} of {tests} tests", dir.display());
        ran.extend(summary["durations"].as_object().unwrap().keys().cloned());
    }
    let unique: std::collections::BTreeSet<&String> = ran.iter().collect();
    assert_eq!((ran.len(), unique.len()), (tests, tests), "{ran:?}");
    let out = s.path().join("merged");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&out];
    args.extend(dirs.iter().map(|d| d as &dyn AsRef<std::ffi::OsStr>));
    let m = merge(&s, &args);
    assert_eq!(m.code(), 1, "failures and crashes make the merge exit 1\n{}", m.dump());
    for (kind, user, merged) in FORMATS {
        let want = normalised(kind, &full.join(user));
        let got = normalised(kind, &out.join(merged));
        assert_eq!(got, want, "{kind}: merged shards (by {by}) differ from the unsharded run");
    }
    // One crash log: each crash once, each with its shard; the summary adds up.
    let crashes = std::fs::read_to_string(out.join("crashes.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = crashes.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut ids: Vec<&str> = lines.iter().map(|v| v["nodeid"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["test_misc.py::TestK::test_exit", "test_native.py::test_abort", "test_native.py::test_segv"]);
    assert!(lines.iter().all(|v| v["shard"].as_str().is_some_and(|s| s.ends_with("/3"))), "{crashes}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let c = &summary["counts"];
    assert_eq!(
        (c["selected"].as_u64(), c["crashed"].as_u64(), c["not_run"].as_u64()),
        (Some(tests as u64), Some(3), Some(0))
    );
    // As pytest-json-report counts one plain run: every collected test, the
    // user's deselected ones included, and those once.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let (collected, deselected) = (&json["summary"]["collected"], &json["summary"]["deselected"]);
    assert_eq!((collected.as_u64(), deselected.as_u64()), (Some(35), Some(deselect.len() as u64).filter(|d| *d > 0)));
    assert_eq!(summary["shards"].as_array().unwrap().len(), 3);
    // The counts are the suite's even when a shard left no JSON report
    // (they come from the shards' summaries, not from the first report).
    let moved = dirs[0].join("report.json.away");
    std::fs::rename(dirs[0].join("report.json"), &moved).unwrap();
    let partial = s.path().join("merged-partial");
    let mut partial_args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&partial];
    partial_args.extend(dirs.iter().map(|d| d as &dyn AsRef<std::ffi::OsStr>));
    assert_eq!(merge(&s, &partial_args).code(), 1);
    std::fs::rename(&moved, dirs[0].join("report.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(partial.join("report.json")).unwrap()).unwrap();
    let (collected, deselected) = (&json["summary"]["collected"], &json["summary"]["deselected"]);
    assert_eq!((collected.as_u64(), deselected.as_u64()), (Some(35), Some(deselect.len() as u64).filter(|d| *d > 0)));
    // Idempotent: merging again writes the same bytes.
    let before: Vec<Vec<u8>> = FORMATS.iter().map(|f| std::fs::read(out.join(f.2)).unwrap()).collect();
    assert_eq!(merge(&s, &args).code(), 1);
    let after: Vec<Vec<u8>> = FORMATS.iter().map(|f| std::fs::read(out.join(f.2)).unwrap()).collect();
    assert!(before == after, "a second merge changed the reports");
}

#[test]
fn three_shards_by_file_merge_to_the_unsharded_reports() {
    sharded_equals_unsharded("file", None, &["test_more_2.py::test_c"]);
}

#[test]
fn three_shards_by_test_one_with_xdist_merge_to_the_unsharded_reports() {
    sharded_equals_unsharded("test", Some(2), &["test_more_0.py::test_a", "test_params.py::test_p[3]"]);
}

/// A shard number that gets none of `files` (by file, hash).
fn empty_shard_of(files: &[&str], total: u32) -> u32 {
    (1..=total).find(|k| files.iter().all(|f| shard_of(f, total) != *k)).expect("some shard is empty")
}

#[test]
fn an_empty_shard_passes_with_a_line_saying_so() {
    let s = Suite::new();
    s.write("test_only.py", "def test_a(): pass\ndef test_b(): pass\n");
    let k = empty_shard_of(&["test_only.py"], 4);
    for extra in [&[][..], &["-n", "2"][..]] {
        let out = s.path().join(format!("out-{}", extra.len()));
        let shard = format!("--shard={k}/4");
        let out_arg = format!("--out-dir={}", out.display());
        let r = s.wrap(&[&shard, &out_arg], extra);
        assert_eq!(r.code(), 0, "an empty shard must pass, not exit 5 ({extra:?})\n{}", r.dump());
        assert!(r.dump().contains(&format!("shard {k}/4 by file (hash) is empty")), "{}", r.dump());
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["counts"]["selected"], 0);
        assert_eq!(summary["exit_status"], 0);
    }
    // A suite with no tests at all is still pytest's "no tests collected".
    let empty = Suite::new();
    empty.write("test_none.py", "x = 1\n");
    assert_eq!(empty.wrap(&["--shard=1/2"], &[]).code(), 5);
}

#[test]
fn a_missing_shard_fails_the_merge_unless_allowed() {
    let s = crash_suite();
    let dirs: Vec<PathBuf> = (1..=3).map(|k| s.path().join(format!("shard-{k}"))).collect();
    for k in [1, 3] {
        let dir = &dirs[k - 1];
        let mut pytest_args = vec![format!("--junitxml={}/u.xml", dir.display())];
        pytest_args.push(format!("--json-report-file={}/u.json", dir.display()));
        pytest_args.extend(["--json-report".into(), "-q".into()]);
        let r = wrap(
            &s,
            &[format!("--shard={k}/3"), "--shard-by=test".into(), format!("--out-dir={}", dir.display())],
            &pytest_args,
        );
        assert!(r.code() <= 1, "{}", r.dump());
    }
    // Shard 2's folder exists but its node died before the summary.
    std::fs::create_dir_all(&dirs[1]).unwrap();
    let out = s.path().join("merged");
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&out, &dirs[0], &dirs[1], &dirs[2]];
    let m = merge(&s, &args);
    assert_eq!(m.code(), 2, "{}", m.dump());
    let missing: Vec<String> = m.stderr().lines().filter(|l| l.contains("missing shard")).map(String::from).collect();
    assert_eq!(missing.len(), 1, "one line names the missing shard\n{}", m.dump());
    assert!(missing[0].contains("shard-2") && missing[0].contains("summary.json"), "{}", missing[0]);
    // Allowed: the merge goes through; shard 2's tests are listed as not run.
    let mut allowed = args.clone();
    allowed.push(&"--allow-missing");
    let m = merge(&s, &allowed);
    assert_eq!(m.code(), 1, "{}", m.dump());
    let all: Vec<String> =
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(dirs[0].join("collection.json")).unwrap()).unwrap()
            ["nodeids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
    assert_eq!(all.len(), 35);
    let of_two: Vec<&String> = all
        .iter()
        .zip(assign(&all, 3, ShardBy::Test, ShardMode::Hash, &HashMap::new()))
        .filter(|(_, k)| *k == 2)
        .map(|(n, _)| n)
        .collect();
    assert!(!of_two.is_empty());
    let junit = normalised_with("junit", &out.join("junit.xml"), "[]");
    let v: serde_json::Value = serde_json::from_str(&junit).unwrap();
    assert_eq!(v["counts"]["tests"], 35, "{junit}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let not_run: Vec<&str> = summary["not_run"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(not_run.len(), of_two.len(), "{summary}");
    assert!(of_two.iter().all(|n| not_run.contains(&n.as_str())));
    // Every format lists every test: the present shards' as they ran, the
    // missing shard's as skips saying so (the one not-run entry builder).
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let tests = json["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 35, "{json}");
    for t in tests.iter().filter(|t| of_two.iter().any(|n| t["nodeid"] == n.as_str())) {
        assert_eq!(t["outcome"], "skipped", "{t}");
        assert!(t.to_string().contains("not run: its shard is missing"), "{t}");
    }
    assert_eq!(json["summary"]["collected"], 35, "{}", json["summary"]);
    assert_eq!(json["exitcode"], 1, "the merge's exit status: {json}");
    // A shard number with no folder at all is named too.
    let m = merge(&s, &[&out as &dyn AsRef<std::ffi::OsStr>, &dirs[0], &dirs[2]]);
    assert_eq!(m.code(), 2, "{}", m.dump());
    assert!(m.stderr().contains("2/3"), "{}", m.dump());
}

#[test]
fn shard_auto_reads_slurm_and_fails_clearly_without_a_source() {
    let s = Suite::new();
    s.write("test_x.py", "def test_a(): pass\n");
    let out = s.path().join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.args(["--shard", "auto", "--out-dir"]).arg(&out).arg("--").arg(python()).args(["-m", "pytest", "-q"]);
    for (k, v) in [("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_COUNT", "3"), ("SLURM_ARRAY_TASK_MIN", "4")] {
        cmd.env(k, v);
    }
    let r = s.run_cmd(cmd);
    assert!(r.code() <= 1, "{}", r.dump());
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["shard"], "2/3");
    assert!(summary["shard_source"].as_str().unwrap().contains("SLURM_ARRAY_TASK_MIN=4"), "{summary}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.args(["--shard", "auto", "--"]).arg(python()).args(["-m", "pytest"]);
    for var in
        ["SLURM_ARRAY_TASK_ID", "TEST_SHARD_INDEX", "CI_NODE_INDEX", "BUILDKITE_PARALLEL_JOB", "CIRCLE_NODE_INDEX"]
    {
        cmd.env_remove(var);
    }
    let r = s.run_cmd(cmd);
    assert_eq!(r.code(), 64, "{}", r.dump());
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.dump());
    assert!(r.stderr().contains("no shard in the environment"), "{}", r.dump());
}

#[test]
fn duration_mode_balances_from_the_file_every_run_updates() {
    let s = Suite::new();
    s.write("test_slow.py", "import time\ndef test_s1(): time.sleep(0.3)\ndef test_s2(): time.sleep(0.3)\n");
    for i in 0..5 {
        s.write(&format!("test_fast_{i}.py"), "def test_f(): pass\n");
    }
    let durations = s.path().join("durations.json");
    let d_arg = format!("--durations-file={}", durations.display());
    assert_eq!(s.wrap(&[&d_arg], &["-q"]).code(), 0);
    let known: HashMap<String, f64> = serde_json::from_slice(&std::fs::read(&durations).unwrap()).unwrap();
    assert_eq!(known.len(), 7, "{known:?}");
    assert!(known["test_slow.py::test_s1"] >= 0.3);
    let all: Vec<String> = {
        let mut v: Vec<String> = known.keys().cloned().collect();
        v.sort();
        v
    };
    let mut seen = Vec::new();
    for k in 1..=2u32 {
        let out = s.path().join(format!("out-{k}"));
        let args = [
            format!("--shard={k}/2"),
            "--shard-mode=duration".into(),
            d_arg.clone(),
            format!("--out-dir={}", out.display()),
        ];
        let r = wrap(&s, &args, &["-q".to_string()]);
        assert_eq!(r.code(), 0, "{}", r.dump());
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        let mut ran: Vec<String> = summary["durations"].as_object().unwrap().keys().cloned().collect();
        ran.sort();
        // The plugin's choice is the Rust assignment over the collection.
        let collection: Vec<String> =
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(out.join("collection.json")).unwrap()).unwrap()
                ["nodeids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
        let mut want: Vec<String> = collection
            .iter()
            .zip(assign(&collection, 2, ShardBy::File, ShardMode::Duration, &known))
            .filter(|(_, s)| *s == k)
            .map(|(n, _)| n.clone())
            .collect();
        want.sort();
        assert_eq!(ran, want, "shard {k}");
        seen.extend(ran);
    }
    seen.sort();
    assert_eq!(seen, all, "the two shards cover the suite once");
}
