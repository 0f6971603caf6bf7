//! Parsing on the wrapper's side: the crash log (100k lines), marker files
//! (the original's and the shim's) and merging the journals of a run.
//!
//! `cargo bench --bench parsing`; under `cargo test --all-targets` each
//! benchmark runs once on small inputs.

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pytest_abort::journal::{journal_path, parse_journal, RunJournal};
use pytest_abort::marker::parse_marker;
use pytest_abort::record::parse_crash_log;

fn configure() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

fn crash_log(c: &mut Criterion) {
    let lines = common::size(100_000);
    let text = common::crash_log(lines);
    let mut g = c.benchmark_group("crash_log");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function(format!("parse_{lines}_lines"), |b| {
        b.iter(|| assert_eq!(parse_crash_log(black_box(&text)).len(), lines))
    });
    g.finish();
}

fn marker(c: &mut Criterion) {
    // As the original plugin writes it (json.dumps, indent=2) and as the shim
    // writes it (one line, with phase/worker/timeout).
    let original = "{\n  \"test_name\": \"test_matmul[1024-float32]\",\n  \"nodeid\": \
        \"tests/test_gpu.py::TestKernels::test_matmul[1024-float32]\",\n  \"start_time\": \
        \"2026-11-26T21:25:37.265126\",\n  \"status\": \"running\",\n  \"pid\": 41234,\n  \"gpu_id\": \"unknown\"\n}";
    let shim = "{\"phase\": \"call\"    , \"test_name\": \"test_matmul[1024-float32]\", \"nodeid\": \
        \"tests/test_gpu.py::TestKernels::test_matmul[1024-float32]\", \"start_time\": \
        \"2026-11-26T21:25:37.265126\", \"status\": \"running\", \"pid\": 41234, \"gpu_id\": \"3\", \
        \"worker\": \"gw3\", \"timeout\": null}";
    let mut g = c.benchmark_group("parse_marker");
    for (name, text) in [("original", original), ("shim", shim)] {
        g.bench_function(name, |b| b.iter(|| assert!(parse_marker(black_box(text)).expect("marker").is_running())));
    }
    g.finish();
}

/// One run of an xdist session: a controller and `workers` workers, every
/// process listing the whole selection, each worker finishing its share.
fn write_journals(state: &std::path::Path, workers: usize, tests: usize) {
    std::fs::create_dir_all(state.join("journal")).expect("journal dir");
    let ids: Vec<String> = (0..tests).map(common::nodeid).collect();
    let collected = serde_json::to_string(&ids).expect("ids");
    for w in 0..=workers {
        let pid = 1000 + w as i32;
        let worker = if w == 0 { "main".to_string() } else { format!("gw{}", w - 1) };
        let mut s = String::new();
        let _ = writeln!(s, "{{\"ev\":\"start\",\"pid\":{pid},\"worker\":\"{worker}\",\"rootdir\":\"/work/project\"}}");
        let _ = writeln!(s, "{{\"ev\":\"collected\",\"nodeids\":{collected}}}");
        if w > 0 {
            for (i, id) in ids.iter().enumerate().skip(w - 1).step_by(workers) {
                let file = id.split("::").next().unwrap_or_default();
                if i % 50 == 3 {
                    let _ = writeln!(
                        s,
                        "{{\"ev\":\"done\",\"nodeid\":{},\"outcome\":\"failed\",\"duration\":0.0012,\"when\":\"call\",\
                         \"location\":[\"{file}\",8,\"test_fails\"],\"start\":1795728343.1,\"longrepr\":\"def test_fails():\\n\
                         >       assert x == -1\\nE       AssertionError: value mismatch\\n\\n{file}:11: AssertionError\",\
                         \"sections\":[[\"Captured stdout call\",\"launching kernel\\n\"]]}}",
                        serde_json::to_string(id).expect("id")
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "{{\"ev\":\"done\",\"nodeid\":{},\"outcome\":\"passed\",\"duration\":0.0007,\"when\":\"call\",\
                         \"location\":[\"{file}\",3,\"TestKernels.test_matmul\"],\"start\":1795728343.1}}",
                        serde_json::to_string(id).expect("id")
                    );
                }
            }
            let _ = writeln!(s, "{{\"ev\":\"finish\",\"exitstatus\":1}}\n{{\"ev\":\"end\"}}");
        }
        std::fs::write(journal_path(state, 1, pid), s).expect("journal");
    }
}

fn journal(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("journal");
    for (workers, tests) in [(2, 5_000), (16, 50_000)] {
        let tests = common::size(tests);
        let state = dir.path().join(format!("w{workers}"));
        write_journals(&state, workers, tests);
        g.bench_function(format!("read_run_{workers}workers_{tests}tests"), |b| {
            b.iter(|| {
                let rj = RunJournal::read(&state, 1);
                assert_eq!(rj.done.len(), tests);
                assert_eq!(rj.collected.len(), tests);
            })
        });
    }
    let text = std::fs::read_to_string(journal_path(&dir.path().join("w2"), 1, 1001)).expect("journal");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("parse_one_worker_journal", |b| b.iter(|| parse_journal(black_box(&text)).len()));
    g.finish();
}

/// What the wrapper does for one crash, besides the ptrace calls: attribute
/// the death (marker, journal head and tail of a 50k-test worker, record)
/// and turn the instruction pointer into `library+offset` from
/// `/proc/PID/maps`. Uses this process as the "dead" one.
fn forensics(c: &mut Criterion) {
    use pytest_abort::attribute::{attribute, Context};
    use pytest_abort::supervise::{ptrace::location_of, Fault, Outcome, ProcessEnd};
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_path_buf();
    let pid = std::process::id() as i32;
    let tests = common::size(50_000);
    let mut s = format!("{{\"ev\":\"start\",\"pid\":{pid},\"worker\":\"gw0\",\"rootdir\":\"/r\"}}\n");
    for i in 0..tests {
        let _ = writeln!(s, "{{\"ev\":\"done\",\"nodeid\":\"tests/test_m.py::test_{i}\",\"outcome\":\"passed\",\"duration\":0.001,\"when\":\"call\"}}");
    }
    let jp = journal_path(&state, 1, pid);
    std::fs::create_dir_all(jp.parent().unwrap()).expect("mkdir");
    std::fs::write(&jp, s).expect("journal");
    let markers = state.join("markers");
    std::fs::create_dir_all(&markers).expect("mkdir");
    std::fs::write(
        markers.join("last_running_gw0.json"),
        format!("{{\"phase\": \"call\"    , \"test_name\": \"test_x\", \"nodeid\": \"tests/test_m.py::test_x\", \"start_time\": \"2026-01-01T00:00:00.000000\", \"status\": \"running\", \"pid\": {pid}, \"gpu_id\": \"0\", \"worker\": \"gw0\"}}"),
    )
    .expect("marker");
    let ctx = Context { state_dir: state.clone(), marker_dir: markers, run: 1 };
    let end = ProcessEnd {
        pid,
        outcome: Outcome::Signaled { signal: 11, core_dumped: false },
        peak_rss_kb: None,
        fault: Some(Fault { signal: 11, si_code: 1, addr: Some(0), tid: pid, ..Default::default() }),
    };
    let ip = forensics as fn(&mut Criterion) as usize as u64;
    let mut g = c.benchmark_group("forensics");
    g.bench_function(format!("attribute_crash_{tests}test_worker"), |b| {
        b.iter(|| assert!(attribute(black_box(&ctx), black_box(&end), None).crash.is_some()))
    });
    g.bench_function("location_from_proc_maps", |b| b.iter(|| assert!(location_of(pid, black_box(ip)).is_some())));
    g.finish();
}

criterion_group! { name = benches; config = configure(); targets = crash_log, marker, journal, forensics }
criterion_main!(benches);
