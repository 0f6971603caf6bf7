//! Shards across nodes (issue 14): merging 64 shard folders of 5,000-test
//! reports in all four formats with the real `pytest-abort merge` binary
//! (wall time and its peak RSS against the largest merged output), and
//! shard selection on 50,000 collected tests in the plugin (Python, where
//! selection happens) and in Rust.
//!
//! `cargo bench --bench shard` (release build); under `cargo test
//! --all-targets` it runs once on small sizes as a smoke test. Prints one
//! line per measurement: the median of the rounds and the target.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pytest_abort::shard::assign::assign;
use pytest_abort::shard::{ShardBy, ShardMode};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes `shards` folders of `tests`-test reports (distinct node ids per
/// shard) plus each one's summary.json, as `--out-dir` leaves them.
fn write_shards(root: &Path, shards: usize, tests: usize) -> Vec<PathBuf> {
    let base = [
        ("report.json", common::json_report(tests)),
        ("report.html", common::html_report(tests)),
        ("report.csv", common::csv_report(tests)),
        ("junit.xml", common::junit_report(tests)),
    ];
    (1..=shards)
        .map(|k| {
            let dir = root.join(format!("shard-{k}"));
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in &base {
                let text = text
                    .replace("tests/test_suite_", &format!("tests/shard{k:02}/test_suite_"))
                    .replace("tests.test_suite_", &format!("tests.shard{k:02}.test_suite_"));
                std::fs::write(dir.join(name), text).unwrap();
            }
            std::fs::write(dir.join("crashes.jsonl"), "").unwrap();
            let summary = serde_json::json!({
                "shard": format!("{k}/{shards}"),
                "exit_status": 1,
                "counts": {"selected": tests},
                "reports": {"json": "report.json", "html": "report.html", "csv": "report.csv", "junit": "junit.xml"},
            });
            std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
            dir
        })
        .collect()
}

/// Runs the merge binary; returns (wall seconds, CPU seconds, peak RSS in bytes).
fn merge_once(out: &Path, dirs: &[PathBuf]) -> (f64, f64, u64) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pytest-abort"))
        .arg("merge")
        .arg(out)
        .args(dirs)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start pytest-abort merge");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 on our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(rc, pid, "wait4");
    let _ = child.try_wait();
    let code = libc::WEXITSTATUS(status);
    assert!(code <= 1, "merge exited {code}");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs, tv(usage.ru_utime) + tv(usage.ru_stime), usage.ru_maxrss as u64 * 1024)
}

/// CPU time of this process so far, seconds (wall time is meaningless on
/// a machine shared with builds).
fn cpu_now() -> f64 {
    // SAFETY: clock_gettime fills the timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn bench_merge() {
    let (shards, tests) = if common::full_mode() { (64, 5_000) } else { (4, 50) };
    let rounds = if common::full_mode() { 3 } else { 1 };
    let tmp = tempfile::tempdir().unwrap();
    // BENCH_SHARD_KEEP=DIR: the shard folders are written there and kept
    // (to merge them by hand, e.g. under `/usr/bin/time -v`).
    let root = std::env::var_os("BENCH_SHARD_KEEP").map(PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
    let dirs = write_shards(&root, shards, tests);
    let input: u64 =
        dirs.iter().flat_map(|d| std::fs::read_dir(d).unwrap()).map(|e| e.unwrap().metadata().unwrap().len()).sum();
    let out = root.join("merged");
    let runs: Vec<(f64, f64, u64)> = (0..rounds).map(|_| merge_once(&out, &dirs)).collect();
    let largest = ["report.json", "report.html", "report.csv", "junit.xml"]
        .iter()
        .map(|f| std::fs::metadata(out.join(f)).unwrap().len())
        .max()
        .unwrap();
    let peak = runs.iter().map(|r| r.2).max().unwrap();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "merge {shards} shards x {tests} tests, 4 formats ({:.0} MiB in): median wall {:.3} s, CPU {:.3} s of {rounds} \
         (target < 2 s); peak RSS {:.0} MiB = {:.2}x the largest output ({:.0} MiB; target <= 2x)",
        mib(input),
        median(runs.iter().map(|r| r.0).collect()),
        median(runs.iter().map(|r| r.1).collect()),
        mib(peak),
        peak as f64 / largest as f64,
        mib(largest),
    );
}

fn node_ids(n: usize) -> Vec<String> {
    (0..n).map(common::nodeid).collect()
}

/// The plugin's selection as `ShardSelector` does it at collection time
/// (in duration mode reading the durations file, then `_shard.assign`,
/// then keeping the shard's tests), timed in the project's Python.
const PY_SELECT: &str = r#"
import json, statistics, sys, time
from pytest_abort import _shard
n, rounds, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
ids = [l.rstrip("\n") for l in open(sys.argv[3])]
out = {}
for by in ("file", "test"):
    for mode in ("hash", "duration"):
        times = []
        for _ in range(rounds):
            t, c = time.perf_counter(), time.process_time()
            durations = _shard.load_durations(path) if mode == "duration" else {}
            shards = _shard.assign(ids, 8, by, mode, durations)
            keep = [i for i, s in zip(ids, shards) if s == 3]
            times.append((time.perf_counter() - t, time.process_time() - c))
        out[f"{by}/{mode}"] = [statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)]
print(json.dumps(out))
"#;

fn bench_selection() {
    let n = if common::full_mode() { 50_000 } else { 500 };
    let rounds = if common::full_mode() { 11 } else { 1 };
    let ids = node_ids(n);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("ids.txt");
    std::fs::write(&list, ids.join("\n") + "\n").unwrap();
    let durations: HashMap<String, f64> =
        ids.iter().enumerate().filter(|(k, _)| k % 3 != 0).map(|(k, i)| (i.clone(), (k % 97) as f64 / 10.0)).collect();
    let durations_file = dir.path().join("durations.json");
    std::fs::write(&durations_file, serde_json::to_vec_pretty(&durations).unwrap()).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python =
        std::env::var_os("PYTEST_ABORT_TEST_PYTHON").map(PathBuf::from).unwrap_or(repo.join(".venv/bin/python"));
    let out = Command::new(&python)
        .env("PYTHONPATH", repo.join("shim"))
        .arg("-c")
        .arg(PY_SELECT)
        .arg(n.to_string())
        .arg(rounds.to_string())
        .arg(&list)
        .arg(&durations_file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let py: HashMap<String, [f64; 2]> = serde_json::from_slice(&out.stdout).unwrap();
    for by in [ShardBy::File, ShardBy::Test] {
        for mode in [ShardMode::Hash, ShardMode::Duration] {
            let d = if mode == ShardMode::Duration { durations.clone() } else { HashMap::new() };
            let times: Vec<(f64, f64)> = (0..rounds)
                .map(|_| {
                    let (t, c) = (Instant::now(), cpu_now());
                    let a = assign(&ids, 8, by, mode, &d);
                    std::hint::black_box(a);
                    (t.elapsed().as_secs_f64(), cpu_now() - c)
                })
                .collect();
            let key = format!("{}/{}", by.as_str(), mode.as_str());
            println!(
                "select shard 3/8 of {n} tests by {key}: plugin (Python, durations file read included) median wall {:.1} ms, CPU {:.1} ms; \
                 Rust wall {:.1} ms, CPU {:.1} ms (target < 50 ms)",
                py[&key][0] * 1e3,
                py[&key][1] * 1e3,
                median(times.iter().map(|t| t.0).collect()) * 1e3,
                median(times.iter().map(|t| t.1).collect()) * 1e3,
            );
        }
    }
}

fn main() {
    bench_selection();
    bench_merge();
}
