//! `pytest-abort merge OUT_DIR SHARD_DIR...`: the out-dir folders of the
//! shards of one suite -> one crash log, one report per format and one
//! `summary.json`, as if one run had done it all.
//!
//! - A shard folder is complete when its `summary.json` exists (the wrapper
//!   writes it last). A folder that is missing or has none (node lost,
//!   job killed) is named in one line; so is a shard number `K` of `N`
//!   that no folder holds. Its tests, when the whole collection is known
//!   (any shard's `collection.json`), are reported as not run.
//! - Crash records: every shard's, in the order of the folders given,
//!   deduplicated by node id across shards (first seen wins); each keeps
//!   its `shard`.
//! - Reports: merged by [`crate::reports::complete`], the same code that
//!   merges the runs of one wrapper invocation (one shard's file in memory
//!   at a time, the merged file written as it is rendered), so every test
//!   of every shard is there exactly once with the totals counted again;
//!   the JSON `collected`/`deselected` are those of one plain run of the
//!   whole suite ([`plain_counts`]).
//! - Idempotent: outputs are rebuilt from the inputs each time.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

use super::node::{names, Counts, Summary};
use crate::fsutil;
use crate::journal::RunReports;
use crate::record::CrashRecord;
use crate::reports::{self, Kind, RunOutput};

/// `pytest-abort merge` options.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// Folder for the merged crashes.jsonl, reports and summary.json.
    #[arg(value_name = "OUT_DIR")]
    pub out_dir: PathBuf,
    /// The shards' --out-dir folders.
    #[arg(value_name = "SHARD_DIR", required = true)]
    pub shard_dirs: Vec<PathBuf>,
    /// Write the merged crash log here instead of OUT_DIR/crashes.jsonl.
    #[arg(long, value_name = "PATH")]
    pub crash_log: Option<PathBuf>,
    /// Write the merged pytest-json-report file here.
    #[arg(long, value_name = "PATH")]
    pub json_report: Option<PathBuf>,
    /// Write the merged pytest-html report here.
    #[arg(long, value_name = "PATH")]
    pub html_report: Option<PathBuf>,
    /// Write the merged pytest-csv report here.
    #[arg(long, value_name = "PATH")]
    pub csv_report: Option<PathBuf>,
    /// Write the merged JUnit XML here.
    #[arg(long, value_name = "PATH")]
    pub junit_xml: Option<PathBuf>,
    /// Merge what is there when a shard folder is missing or incomplete
    /// (exit status from the tests only).
    #[arg(long)]
    pub allow_missing: bool,
}

/// Exit status when a shard folder is missing or incomplete.
pub const EXIT_MISSING: i32 = 2;

/// A shard folder that could be read.
struct Present {
    dir: PathBuf,
    summary: Summary,
}

/// What the inputs hold.
struct Inputs {
    present: Vec<Present>,
    /// One line per missing or incomplete shard.
    missing: Vec<String>,
}

fn read_inputs(dirs: &[PathBuf]) -> Result<Inputs> {
    let mut present: Vec<Present> = Vec::new();
    let mut missing = Vec::new();
    for dir in dirs {
        let path = dir.join(names::SUMMARY);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Summary>(&bytes) {
                Ok(summary) => {
                    let dup = summary.shard.is_some()
                        && present.iter().any(|p| p.summary.shard == summary.shard && p.dir != *dir);
                    if !dup {
                        present.push(Present { dir: dir.clone(), summary });
                    }
                }
                Err(e) => missing.push(format!("{}: summary.json is not valid ({e}): shard incomplete", dir.display())),
            },
            Err(_) if !dir.is_dir() => missing.push(format!("{}: no such shard folder", dir.display())),
            Err(_) => missing.push(format!("{}: no summary.json: the shard did not finish", dir.display())),
        }
    }
    // Shard numbers no folder holds (a folder not even created).
    let totals: BTreeSet<u32> = present.iter().filter_map(|p| total_of(&p.summary)).collect();
    if totals.len() > 1 {
        bail!("the shard folders are of different splits (totals {totals:?}): merge one split at a time");
    }
    if let Some(total) = totals.into_iter().next() {
        let have: HashSet<String> = present.iter().filter_map(|p| p.summary.shard.clone()).collect();
        let absent: Vec<String> = (1..=total).map(|k| format!("{k}/{total}")).filter(|n| !have.contains(n)).collect();
        // Folders named above may be those shards; name the numbers only
        // when more are absent than folders were named.
        if absent.len() > missing.len() {
            missing.push(format!("shard {}: no folder among the inputs", absent.join(", ")));
        }
    }
    Ok(Inputs { present, missing })
}

fn total_of(s: &Summary) -> Option<u32> {
    s.shard.as_deref()?.split_once('/')?.1.parse().ok()
}

/// Every shard's crash lines (JSON objects), deduplicated by node id across
/// shards, first seen wins.
fn merged_crash_lines(present: &[Present]) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut out = Vec::new();
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (i, p) in present.iter().enumerate() {
        let path = p.dir.join(names::CRASH_LOG);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("{}: cannot read", path.display()))),
        };
        for line in text.lines() {
            let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let key = obj.get("nodeid").and_then(|v| v.as_str()).unwrap_or("").trim().to_string();
            if !key.is_empty() && *owner.entry(key).or_insert(i) != i {
                continue;
            }
            out.push(obj);
        }
    }
    Ok(out)
}

/// The whole collection from the first shard that wrote one.
fn collection(present: &[Present]) -> Option<Vec<String>> {
    present.iter().find_map(|p| {
        let bytes = std::fs::read(p.dir.join(names::COLLECTION)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.get("nodeids")?.as_array()?.iter().map(|n| n.as_str().map(String::from)).collect()
    })
}

/// Tests of the collection no present shard accounts for, and why they
/// did not run (the reports list them with [`reports::Entry::not_run`]).
fn not_run_tests(present: &[Present], missing: &[String]) -> (Vec<String>, String) {
    let why = match missing.first() {
        Some(m) if missing.len() == 1 => format!("not run: its shard is missing ({m})"),
        _ => "not run: its shard is missing".to_string(),
    };
    let Some(all) = collection(present) else { return (Vec::new(), why) };
    let mut accounted: HashSet<&str> = HashSet::new();
    for p in present {
        let s = &p.summary;
        accounted.extend(s.durations.keys().map(String::as_str));
        accounted.extend(s.crashes.iter().map(String::as_str));
        accounted.extend(s.not_run.iter().map(String::as_str));
    }
    let left = all.into_iter().filter(|n| !accounted.contains(n.as_str())).collect();
    (left, why)
}

/// What a merge did.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The merged summary (as written).
    pub summary: serde_json::Value,
    /// One line per missing or incomplete shard.
    pub missing: Vec<String>,
    /// Written files.
    pub written: Vec<PathBuf>,
    /// The exit status (see [`run`]).
    pub exit_status: i32,
}

/// Merges the shard folders (see the module docs). Exit status: 0 when
/// every shard is there and no test failed or crashed; 1 when a test failed,
/// crashed or was left unrun; [`EXIT_MISSING`] (2) when a shard is missing
/// or incomplete, unless `--allow-missing`.
pub fn run(args: &MergeArgs) -> Result<Merged> {
    let Inputs { present, missing } = read_inputs(&args.shard_dirs)?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("{}: cannot create the merge folder", args.out_dir.display()))?;
    let mut written = Vec::new();
    // Crash log.
    let lines = merged_crash_lines(&present)?;
    let mut text = String::new();
    for obj in &lines {
        text.push_str(&serde_json::to_string(obj)?);
        text.push('\n');
    }
    let crash_log = args.crash_log.clone().unwrap_or_else(|| args.out_dir.join(names::CRASH_LOG));
    fsutil::atomic_write(&crash_log, text.as_bytes())?;
    written.push(crash_log);
    let records: Vec<CrashRecord> =
        lines.iter().filter_map(|o| serde_json::from_value(serde_json::Value::Object(o.clone())).ok()).collect();
    // Reports.
    let (not_run, why) = not_run_tests(&present, &missing);
    let mut runs = Vec::new();
    let mut kinds: BTreeSet<Kind> = BTreeSet::new();
    for (i, p) in present.iter().enumerate() {
        let mut rr = RunReports { run: i as u32 + 1, ..Default::default() };
        for (k, name) in &p.summary.reports {
            let Ok(kind) = k.parse::<Kind>() else { continue };
            kinds.insert(kind);
            rr.requested.insert(kind, report_dest(args, kind));
            rr.redirected.insert(kind, p.dir.join(name));
        }
        runs.push(rr);
    }
    let counts = plain_counts(&present, not_run.len());
    let mut summary = merged_summary(&present, &records, &not_run, &kinds);
    (summary.counts.collected, summary.counts.deselected) = (counts.map(|c| c.0), counts.map(|c| c.1));
    let failed = summary.counts.failed + summary.counts.error + summary.counts.crashed + summary.counts.not_run > 0;
    let exit_status = if !missing.is_empty() && !args.allow_missing { EXIT_MISSING } else { i32::from(failed) };
    let output = RunOutput {
        records: &records,
        done: &[],
        collect: &[],
        runs: &runs,
        counts,
        not_run: &not_run,
        not_run_reason: Some(&why),
        exit_status: Some(exit_status),
    };
    for res in reports::complete(&output, &[]) {
        written.push(res?.path);
    }
    let mut value = serde_json::to_value(&summary)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("exit_status".into(), exit_status.into());
        obj.insert("missing".into(), serde_json::json!(missing));
        obj.insert(
            "shards".into(),
            present
                .iter()
                .map(|p| {
                    serde_json::json!({"shard": p.summary.shard, "dir": p.dir, "exit_status": p.summary.exit_status})
                })
                .collect(),
        );
    }
    let path = args.out_dir.join(names::SUMMARY);
    fsutil::atomic_write(&path, &serde_json::to_vec_pretty(&value)?)?;
    written.push(path);
    Ok(Merged { summary: value, missing, written, exit_status })
}

/// `collected` and `deselected` as one plain run of the whole suite counts
/// them: every present shard's selected tests (its collected less the
/// user's deselected), the `missing` tests of absent shards, and the user's
/// deselected once (every shard deselects the same tests before its shard
/// selection). `None` when a shard did not say (its reports' own counts
/// are summed then).
fn plain_counts(present: &[Present], missing: usize) -> Option<(usize, usize)> {
    let mut selected = missing;
    let mut deselected = None;
    for c in present.iter().map(|p| &p.summary.counts) {
        let (col, des) = (c.collected?, c.deselected?);
        selected += col.saturating_sub(des);
        deselected.get_or_insert(des);
    }
    deselected.map(|d| (selected + d, d))
}

fn report_dest(args: &MergeArgs, kind: Kind) -> PathBuf {
    let explicit = match kind {
        Kind::Json => &args.json_report,
        Kind::Html => &args.html_report,
        Kind::Csv => &args.csv_report,
        Kind::Junit => &args.junit_xml,
    };
    explicit.clone().unwrap_or_else(|| args.out_dir.join(names::report(kind)))
}

fn merged_summary(present: &[Present], records: &[CrashRecord], not_run: &[String], kinds: &BTreeSet<Kind>) -> Summary {
    let mut counts = Counts::default();
    let mut durations = serde_json::Map::new();
    let mut runs = Vec::new();
    let mut left: Vec<String> = Vec::new();
    for p in present {
        let c = &p.summary.counts;
        counts.selected += c.selected;
        counts.passed += c.passed;
        counts.failed += c.failed;
        counts.error += c.error;
        counts.skipped += c.skipped;
        counts.xfailed += c.xfailed;
        counts.xpassed += c.xpassed;
        left.extend(p.summary.not_run.iter().cloned());
        for (k, v) in &p.summary.durations {
            durations.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for r in &p.summary.runs {
            let mut r = r.clone();
            if let Some(o) = r.as_object_mut() {
                o.insert("shard".into(), serde_json::json!(p.summary.shard));
            }
            runs.push(r);
        }
    }
    let crashes: Vec<String> = {
        let mut seen = HashSet::new();
        // A device error's test finished: it counts as failed, not crashed.
        let deaths = records.iter().filter(|r| !r.kind.test_finished());
        deaths.map(|r| r.key().to_string()).filter(|k| !k.is_empty() && seen.insert(k.clone())).collect()
    };
    counts.crashed = crashes.len();
    left.extend(not_run.iter().cloned());
    counts.not_run = left.len();
    counts.selected += not_run.len();
    Summary {
        shard: None,
        shard_source: None,
        shard_by: present.iter().find_map(|p| p.summary.shard_by.clone()),
        shard_mode: present.iter().find_map(|p| p.summary.shard_mode.clone()),
        exit_status: 0,
        counts,
        crashes,
        not_run: left,
        runs,
        reports: kinds.iter().map(|k| (k.as_str().to_string(), names::report(*k).to_string())).collect(),
        durations,
        gpu_slots: None,
    }
}
