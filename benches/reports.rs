//! Report patching (json, html, csv, junit at 5k and 50k tests) and the html
//! sanitizer, on reports shaped like the real plugins' output.
//!
//! `cargo bench --bench reports`; under `cargo test --all-targets` each
//! benchmark runs once on 1/100 of the size.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pytest_abort::record::parse_crash_log;
use pytest_abort::reports::{patch_file, sanitize_html_file};

fn configure() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

/// One failed entry per crash into each format: 20 crashes into 5k tests,
/// 200 into 5k, 2000 into 50k (the comparison script's workloads).
fn patch(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (tests, crashes) in [(5_000, 20), (5_000, 200), (50_000, 2_000)] {
        let (tests, crashes) = (common::size(tests), if common::full_mode() { crashes } else { crashes / 10 });
        let set = common::ReportSet::write(dir.path(), tests);
        let records = parse_crash_log(&common::crash_log(crashes));
        let mut g = c.benchmark_group(format!("patch/{tests}tests/{crashes}crashes"));
        for (kind, path, bytes) in &set.files {
            g.throughput(Throughput::Bytes(bytes.len() as u64));
            g.bench_function(kind.as_str(), |b| {
                b.iter_batched(
                    || std::fs::write(path, bytes).expect("restore report"),
                    |()| {
                        let p = patch_file(*kind, path, &records).expect("patch");
                        assert_eq!(p.added, crashes);
                    },
                    BatchSize::PerIteration,
                )
            });
        }
        g.finish();
    }
}

/// The `data-jsonblob` repair of one pytest-html report (real logs hold
/// newlines, so every file changes).
fn sanitize(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("sanitize_html");
    for tests in [5_000, 50_000] {
        let tests = common::size(tests);
        let bytes = common::html_report(tests).into_bytes();
        let path = dir.path().join(format!("r{tests}_log.html"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("{tests}tests"), |b| {
            b.iter_batched(
                || std::fs::write(&path, &bytes).expect("restore report"),
                |()| assert!(sanitize_html_file(&path).expect("sanitize")),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = configure(); targets = patch, sanitize }
criterion_main!(benches);
