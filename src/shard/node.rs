//! The wrapper's side of sharding on one node: its options, the plan it
//! hands the plugin, and what it leaves at the end: the durations file and
//! the `--out-dir` folder (crash log, reports, `collection.json` and, last,
//! `summary.json`, whose presence marks the folder complete for
//! `pytest-abort merge`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{parse_shard_arg, resolve, Plan, Resolved, ShardArg, ShardBy, ShardMode, ENV_SHARD};
use crate::fsutil;
use crate::model::TestOutcome;
use crate::reporter::terminal::write_stderr;
use crate::reports::Kind;
use crate::run::Session;

/// File names inside an `--out-dir` folder.
pub mod names {
    /// The shard's crash records (JSONL), each with its `shard`.
    pub const CRASH_LOG: &str = "crashes.jsonl";
    /// Written last: the folder is complete when it exists.
    pub const SUMMARY: &str = "summary.json";
    /// Every test the shard's collection held before shard selection.
    pub const COLLECTION: &str = "collection.json";

    /// The fixed name of a report of `kind`.
    pub fn report(kind: crate::reports::Kind) -> &'static str {
        use crate::reports::Kind;
        match kind {
            Kind::Json => "report.json",
            Kind::Html => "report.html",
            Kind::Csv => "report.csv",
            Kind::Junit => "junit.xml",
        }
    }
}

/// The wrapper's sharding options (flattened into its command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ShardArgs {
    /// Run only shard K/N (1-based K of N), or `auto`: from SLURM_ARRAY_TASK_ID,
    /// TEST_SHARD_INDEX (Bazel), CI_NODE_INDEX (GitLab),
    /// BUILDKITE_PARALLEL_JOB or CIRCLE_NODE_INDEX and their totals.
    #[arg(long, value_name = "SHARD", value_parser = parse_shard_arg)]
    pub shard: Option<ShardArg>,

    /// What a shard is made of: whole files, or single tests.
    #[arg(long, value_enum, default_value_t, value_name = "file|test")]
    pub shard_by: ShardBy,

    /// Assign by a stable hash, or balance the durations of --durations-file.
    #[arg(long, value_enum, default_value_t, value_name = "hash|duration")]
    pub shard_mode: ShardMode,

    /// Per-test durations (JSON object node id -> seconds): read to balance
    /// `--shard-mode duration`, and written or updated after every run.
    #[arg(long, value_name = "PATH")]
    pub durations_file: Option<PathBuf>,

    /// Also leave the crash log, every report asked for and a summary.json
    /// under fixed names in DIR, for `pytest-abort merge`.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Sharding prepared for one wrapper invocation.
#[derive(Debug)]
pub struct Sharding {
    /// The shard and where it came from (none without `--shard`).
    pub resolved: Option<Resolved>,
    /// The plan handed to the plugin.
    pub plan: Option<Plan>,
    args: ShardArgs,
    /// Holds the collection file when there is no out-dir.
    _scratch: Option<tempfile::TempDir>,
}

impl Sharding {
    /// Resolves the options; `Ok(None)` when none was given. Errors are one
    /// line, for exit status 64. Also clears an out-dir's summary (the folder
    /// is incomplete until this run ends) and touches Bazel's status file.
    pub fn prepare(args: &ShardArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Sharding>, String> {
        if args.shard.is_none() && args.out_dir.is_none() && args.durations_file.is_none() {
            return Ok(None);
        }
        if args.shard.is_none() && (args.shard_by != ShardBy::File || args.shard_mode != ShardMode::Hash) {
            return Err("--shard-by and --shard-mode need --shard".into());
        }
        if args.shard_mode == ShardMode::Duration && args.durations_file.is_none() {
            return Err("--shard-mode duration needs --durations-file".into());
        }
        let resolved = args.shard.map(|a| resolve(a, env)).transpose()?;
        let scratch = match resolved {
            Some(_) => Some(
                tempfile::Builder::new()
                    .prefix("pytest-abort-shard-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a temp folder: {e}"))?,
            ),
            None => None,
        };
        let collection = match (&args.out_dir, &scratch) {
            (Some(dir), Some(_)) => Some(dir.join(names::COLLECTION)),
            (None, Some(t)) => Some(t.path().join(names::COLLECTION)),
            _ => None,
        };
        // Duration mode splits by the file as it was when this wrapper
        // started: a resumed run must not see what other shards wrote since.
        let durations = match (&args.durations_file, &scratch) {
            (Some(src), Some(t)) if args.shard_mode == ShardMode::Duration => {
                let snap = t.path().join("durations.json");
                let bytes = std::fs::read(src).unwrap_or_else(|_| b"{}".to_vec());
                std::fs::write(&snap, bytes).map_err(|e| format!("{}: cannot write: {e}", snap.display()))?;
                Some(snap)
            }
            _ => None,
        };
        if let Some(dir) = &args.out_dir {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create the out-dir: {e}", dir.display()))?;
            for stale in [names::SUMMARY, names::COLLECTION] {
                match std::fs::remove_file(dir.join(stale)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(format!("{}: cannot remove the old {stale}: {e}", dir.display()))
                    }
                    _ => {}
                }
            }
        }
        if let Some(status) = resolved.as_ref().and_then(|r| r.status_file.as_ref()) {
            // Bazel: say that this runner honours the shard.
            let _ = std::fs::OpenOptions::new().create(true).append(true).open(status);
        }
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let plan = resolved.as_ref().map(|r| Plan {
            index: r.shard.index,
            total: r.shard.total,
            by: args.shard_by,
            mode: args.shard_mode,
            durations: durations.as_deref().map(absolute),
            collection: collection.as_deref().map(absolute),
        });
        Ok(Some(Sharding { resolved, plan, args: args.clone(), _scratch: scratch }))
    }

    /// Environment for every pytest run: the plan for the plugin.
    pub fn env(&self) -> Vec<(String, String)> {
        self.plan.iter().map(|p| (ENV_SHARD.to_string(), p.to_env())).collect()
    }

    /// One line for the end summary: which shard, from where, how chosen.
    pub fn describe(&self) -> Option<String> {
        let r = self.resolved.as_ref()?;
        Some(format!(
            "shard {} (from {}; by {}, {}); {}",
            r.shard,
            r.detail,
            self.args.shard_by.as_str(),
            self.args.shard_mode.as_str(),
            match &self.args.out_dir {
                Some(d) => format!("out-dir: {}", d.display()),
                None => "no --out-dir".into(),
            }
        ))
    }

    /// The wrapper's last step: [`Sharding::finish`] with every report the
    /// run wrote, then the shard's line on stderr. Returns `code`, or 74
    /// when the out-dir or durations file could not be written.
    pub fn end(&self, session: &Session, cfg: &crate::run::Config, code: i32, quiet: bool) -> i32 {
        let mut reports: Vec<(Kind, PathBuf)> = Vec::new();
        for rr in &session.reports {
            reports.extend(rr.requested.iter().map(|(k, p)| (*k, PathBuf::from(p))));
        }
        reports.extend(cfg.reports.iter().cloned());
        let result = self.finish(session, &reports, code);
        if !quiet {
            if let Some(line) = self.describe() {
                write_stderr(&format!("{line}\n"));
            }
        }
        match result {
            Ok(()) => code,
            Err(e) => {
                write_stderr(&format!("pytest-abort-wrap: error: {e:#}\n"));
                if code == 0 || code == 1 {
                    crate::run::EXIT_IO
                } else {
                    code
                }
            }
        }
    }

    /// After the runs: updates the durations file and fills the out-dir
    /// (summary last). `reports` are the final report files the run wrote.
    pub fn finish(&self, session: &Session, reports: &[(Kind, PathBuf)], exit_status: i32) -> Result<()> {
        if let Some(path) = &self.args.durations_file {
            update_durations(path, &durations_of(session))?;
        }
        let Some(dir) = &self.args.out_dir else { return Ok(()) };
        let shard = self.resolved.as_ref().map(|r| r.shard.to_string());
        write_crash_log(&dir.join(names::CRASH_LOG), session, shard.as_deref())?;
        let mut copied = BTreeMap::new();
        for (kind, src) in reports {
            if copied.contains_key(kind.as_str()) || !src.is_file() {
                continue;
            }
            copy_report(*kind, src, dir)?;
            copied.insert(kind.as_str().to_string(), names::report(*kind).to_string());
        }
        let summary = Summary::of(self, session, copied, exit_status);
        let text = serde_json::to_vec_pretty(&summary).context("cannot serialise the shard summary")?;
        fsutil::atomic_write(&dir.join(names::SUMMARY), &text).map(drop)
    }
}

impl ShardBy {
    /// The option's word.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardBy::File => "file",
            ShardBy::Test => "test",
        }
    }
}

impl ShardMode {
    /// The option's word.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardMode::Hash => "hash",
            ShardMode::Duration => "duration",
        }
    }
}

/// Test counts of a shard (or of a merge).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Tests this shard selected.
    pub selected: usize,
    /// Finished tests by outcome.
    pub passed: usize,
    /// Failed in the call phase.
    pub failed: usize,
    /// Failed in setup or teardown.
    pub error: usize,
    /// Skipped.
    pub skipped: usize,
    /// Expected failures.
    pub xfailed: usize,
    /// Unexpected passes.
    pub xpassed: usize,
    /// Crashed tests (unique node ids).
    pub crashed: usize,
    /// Selected tests that neither finished nor crashed.
    pub not_run: usize,
    /// What one plain run (of this shard alone) counts as collected: its
    /// selected tests and the user's deselected ones (`-k`, `-m`,
    /// `--deselect`), not the other shards' tests; unknown when no pytest
    /// process said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collected: Option<usize>,
    /// The tests the user's own options deselected (the same in every
    /// shard: deselection comes before shard selection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deselected: Option<usize>,
}

/// `summary.json` of a shard's out-dir (also the merged one's base).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// `K/N`, absent for an unsharded run.
    #[serde(default)]
    pub shard: Option<String>,
    /// Where the shard came from, in words.
    #[serde(default)]
    pub shard_source: Option<String>,
    /// `file` or `test`.
    #[serde(default)]
    pub shard_by: Option<String>,
    /// `hash` or `duration`.
    #[serde(default)]
    pub shard_mode: Option<String>,
    /// The wrapper's exit status.
    #[serde(default)]
    pub exit_status: i32,
    /// Test counts.
    #[serde(default)]
    pub counts: Counts,
    /// Crashed node ids, in order.
    #[serde(default)]
    pub crashes: Vec<String>,
    /// Selected tests that neither finished nor crashed.
    #[serde(default)]
    pub not_run: Vec<String>,
    /// The pytest runs: number, outcome, selected, finished, crashes.
    #[serde(default)]
    pub runs: Vec<serde_json::Value>,
    /// Report kind -> file name in the folder.
    #[serde(default)]
    pub reports: BTreeMap<String, String>,
    /// Seconds per finished or crashed test.
    #[serde(default)]
    pub durations: serde_json::Map<String, serde_json::Value>,
    /// How the GPU slots were used (`--gpus`): GPUs, slots, workers,
    /// crashes and quarantine per GPU. Absent without slots and in a merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_slots: Option<crate::gpu::slots::Usage>,
}

impl Summary {
    fn of(s: &Sharding, session: &Session, reports: BTreeMap<String, String>, exit_status: i32) -> Summary {
        let c = |o| session.count(o);
        let crashes: Vec<String> = {
            let mut seen = std::collections::HashSet::new();
            // A device error's test finished: it counts as failed, not crashed.
            session
                .crashes
                .iter()
                .filter(|c| !c.death.kind().test_finished())
                .map(|c| c.key().to_string())
                .filter(|k| !k.is_empty() && seen.insert(k.clone()))
                .collect()
        };
        let not_run: Vec<String> = session.not_run().into_iter().map(String::from).collect();
        let counts = Counts {
            selected: session.selected.len(),
            passed: c(TestOutcome::Passed),
            failed: c(TestOutcome::Failed),
            error: c(TestOutcome::Error),
            skipped: c(TestOutcome::Skipped),
            xfailed: c(TestOutcome::Xfailed),
            xpassed: c(TestOutcome::Xpassed),
            crashed: crashes.len(),
            not_run: not_run.len(),
            collected: session.counts.map(|c| c.0),
            deselected: session.counts.map(|c| c.1),
        };
        let durations = durations_of(session).into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect();
        Summary {
            shard: s.resolved.as_ref().map(|r| r.shard.to_string()),
            shard_source: s.resolved.as_ref().map(|r| r.detail.clone()),
            shard_by: s.resolved.as_ref().map(|_| s.args.shard_by.as_str().to_string()),
            shard_mode: s.resolved.as_ref().map(|_| s.args.shard_mode.as_str().to_string()),
            exit_status,
            counts,
            crashes,
            not_run,
            runs: session.runs.iter().filter_map(|r| serde_json::to_value(r).ok()).collect(),
            reports,
            durations,
            gpu_slots: session.gpu.clone(),
        }
    }
}

/// Seconds per test of this session: finished tests, then crashed ones.
fn durations_of(session: &Session) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = session.done.iter().map(|d| (d.nodeid.clone(), d.duration)).collect();
    for r in session.records() {
        if !r.key().is_empty() && r.duration.is_finite() {
            out.push((r.key().to_string(), r.duration));
        }
    }
    out.retain(|(_, d)| d.is_finite() && *d >= 0.0);
    out
}

/// Updates the durations file under a lock (shards on shared storage may
/// finish at once): existing entries are kept, these replace or add.
pub fn update_durations(path: &Path, durations: &[(String, f64)]) -> Result<()> {
    let lock = path.with_file_name(format!(
        ".{}.lock",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    fsutil::with_lock(&lock, || {
        let mut map: serde_json::Map<String, serde_json::Value> = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => serde_json::Map::new(),
        };
        for (nodeid, secs) in durations {
            map.insert(nodeid.clone(), serde_json::json!((secs * 1e6).round() / 1e6));
        }
        let text = serde_json::to_vec_pretty(&map).context("cannot serialise the durations")?;
        fsutil::atomic_write(path, &text).map(drop)
    })
}

/// The session's crash records, each with `"shard": "K/N"`.
fn write_crash_log(path: &Path, session: &Session, shard: Option<&str>) -> Result<()> {
    let mut text = String::new();
    for r in session.records() {
        let mut v = serde_json::to_value(&r).context("cannot serialise a crash record")?;
        if let (Some(obj), Some(shard)) = (v.as_object_mut(), shard) {
            obj.insert("shard".into(), shard.into());
        }
        text.push_str(&serde_json::to_string(&v).context("cannot serialise a crash record")?);
        text.push('\n');
    }
    fsutil::atomic_write(path, text.as_bytes()).map(drop)
}

/// Copies a final report into the out-dir under its fixed name (and, for
/// pytest-html without `--self-contained-html`, its `assets/` folder).
fn copy_report(kind: Kind, src: &Path, dir: &Path) -> Result<()> {
    let bytes = std::fs::read(src).with_context(|| format!("{}: cannot read the report", src.display()))?;
    fsutil::atomic_write(&dir.join(names::report(kind)), &bytes)?;
    let assets = src.parent().unwrap_or(Path::new(".")).join("assets");
    if kind == Kind::Html && assets.is_dir() {
        copy_dir_files(&assets, &dir.join("assets"))?;
    }
    Ok(())
}

/// Copies the plain files of `from` into `to` (created).
pub(crate) fn copy_dir_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("{}: cannot create", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("{}: cannot list", from.display()))?.flatten() {
        if e.path().is_file() {
            let target = to.join(e.file_name());
            std::fs::copy(e.path(), &target).with_context(|| format!("{}: cannot copy", target.display()))?;
        }
    }
    Ok(())
}
