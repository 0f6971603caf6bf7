//! Shards across nodes: which shard `K/N` this invocation is (from
//! `--shard K/N` or, with `--shard auto`, from the environment a Slurm
//! array, Bazel, GitLab, Buildkite or CircleCI sets), and how tests are
//! assigned to shards ([`assign`]).
//!
//! Everything here is pure: the environment is read through a lookup
//! function the caller passes in, and nothing touches files. Selection
//! itself happens in the plugin at collection time (`shim/pytest_abort/
//! _shard.py`), which implements [`assign`] identically; the wrapper only
//! hands it the [`Plan`] in [`ENV_SHARD`].

pub mod assign;
pub mod merge;
pub mod node;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The environment variable that carries the shard [`Plan`] (JSON) to the
/// plugin in every pytest process of a wrapped run.
pub const ENV_SHARD: &str = "PYTEST_ABORT_SHARD";

/// What `--shard` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    /// `--shard K/N` (1-based K).
    Fixed(Shard),
    /// `--shard auto`: read the environment.
    Auto,
}

/// One shard: `index` of `total`, 1-based (`1 <= index <= total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based shard number.
    pub index: u32,
    /// How many shards in all.
    pub total: u32,
}

impl Shard {
    /// A shard, checked: `1 <= index <= total`.
    pub fn new(index: u32, total: u32) -> Result<Shard, String> {
        if total == 0 {
            return Err("the number of shards must be at least 1".into());
        }
        if index == 0 || index > total {
            return Err(format!("shard {index} is not in 1..={total}"));
        }
        Ok(Shard { index, total })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

/// Parses `--shard`: `auto` or `K/N` with `1 <= K <= N`.
pub fn parse_shard_arg(s: &str) -> Result<ShardArg, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(ShardArg::Auto);
    }
    let (k, n) = s.split_once('/').ok_or_else(|| format!("`{s}` is not K/N (1-based, e.g. 2/8) or `auto`"))?;
    let num = |v: &str| v.trim().parse::<u32>().map_err(|_| format!("`{s}` is not K/N (1-based, e.g. 2/8) or `auto`"));
    Shard::new(num(k)?, num(n)?).map(ShardArg::Fixed)
}

/// Where the shard came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `--shard K/N`.
    Flag,
    /// `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`, `SLURM_ARRAY_TASK_MIN`.
    Slurm,
    /// `TEST_SHARD_INDEX`, `TEST_TOTAL_SHARDS` (0-based).
    Bazel,
    /// `CI_NODE_INDEX`, `CI_NODE_TOTAL` (1-based).
    Gitlab,
    /// `BUILDKITE_PARALLEL_JOB`, `BUILDKITE_PARALLEL_JOB_COUNT` (0-based).
    Buildkite,
    /// `CIRCLE_NODE_INDEX`, `CIRCLE_NODE_TOTAL` (0-based).
    Circleci,
}

/// A shard and how it was found, for the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The shard.
    pub shard: Shard,
    /// Where it came from.
    pub source: Source,
    /// In words: the variables read and the base assumed, e.g.
    /// `SLURM_ARRAY_TASK_ID=5 with SLURM_ARRAY_TASK_MIN=4 (array index 4 is shard 1)`.
    pub detail: String,
    /// Bazel's `TEST_SHARD_STATUS_FILE`, which a sharding-aware runner
    /// touches to say it honours the shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_file: Option<PathBuf>,
}

/// The variable pairs `--shard auto` reads, in order, for messages.
pub const AUTO_SOURCES: &str = "SLURM_ARRAY_TASK_ID+SLURM_ARRAY_TASK_COUNT(+SLURM_ARRAY_TASK_MIN), \
     TEST_SHARD_INDEX+TEST_TOTAL_SHARDS, CI_NODE_INDEX+CI_NODE_TOTAL, \
     BUILDKITE_PARALLEL_JOB+BUILDKITE_PARALLEL_JOB_COUNT, CIRCLE_NODE_INDEX+CIRCLE_NODE_TOTAL";

/// Resolves `--shard`: a fixed `K/N` as given, or `auto` from the first
/// source present in `env` (see [`AUTO_SOURCES`] for the order). Errors
/// (one line, for exit status 64) when no source is set or a source's
/// values are not numbers or out of range.
pub fn resolve(arg: ShardArg, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, String> {
    if let ShardArg::Fixed(shard) = arg {
        return Ok(Resolved { shard, source: Source::Flag, detail: "--shard".into(), status_file: None });
    }
    let get = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    if let Some(id) = get("SLURM_ARRAY_TASK_ID") {
        return slurm(&id, &get);
    }
    type Pair = (Source, &'static str, &'static str, u32);
    const PAIRS: [Pair; 4] = [
        (Source::Bazel, "TEST_SHARD_INDEX", "TEST_TOTAL_SHARDS", 0),
        (Source::Gitlab, "CI_NODE_INDEX", "CI_NODE_TOTAL", 1),
        (Source::Buildkite, "BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT", 0),
        (Source::Circleci, "CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", 0),
    ];
    for (source, index_var, total_var, base) in PAIRS {
        let Some(index) = get(index_var) else { continue };
        let total = get(total_var).ok_or_else(|| format!("--shard auto: {index_var} is set but {total_var} is not"))?;
        let (i, n) = (number(index_var, &index)?, number(total_var, &total)?);
        let k = i.checked_sub(base).map(|z| z + 1).unwrap_or(0);
        let shard = Shard::new(k, n).map_err(|e| {
            format!("--shard auto: {index_var}={i} with {total_var}={n} ({base}-based) is out of range: {e}")
        })?;
        let detail = format!("{index_var}={i} of {total_var}={n}, {base}-based");
        let status_file = if source == Source::Bazel { get("TEST_SHARD_STATUS_FILE").map(PathBuf::from) } else { None };
        return Ok(Resolved { shard, source, detail, status_file });
    }
    Err(format!("--shard auto: no shard in the environment (looked for {AUTO_SOURCES})"))
}

fn number(var: &str, v: &str) -> Result<u32, String> {
    v.parse::<u32>().map_err(|_| format!("--shard auto: {var}={v:?} is not a whole number"))
}

/// A Slurm array task: shard `(ID - MIN) / STEP + 1` of `COUNT`, so arrays
/// that start at 0, at 1 or anywhere else (and stepped ones) all work.
fn slurm(id: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, String> {
    let id = number("SLURM_ARRAY_TASK_ID", id)?;
    let count = get("SLURM_ARRAY_TASK_COUNT")
        .ok_or("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")?;
    let count = number("SLURM_ARRAY_TASK_COUNT", &count)?;
    let min = match get("SLURM_ARRAY_TASK_MIN") {
        Some(m) => number("SLURM_ARRAY_TASK_MIN", &m)?,
        None => 0,
    };
    let step = match get("SLURM_ARRAY_TASK_STEP") {
        Some(s) => number("SLURM_ARRAY_TASK_STEP", &s)?.max(1),
        None => 1,
    };
    let offset = id.checked_sub(min).filter(|o| o % step == 0).ok_or_else(|| {
        format!("--shard auto: SLURM_ARRAY_TASK_ID={id} is not SLURM_ARRAY_TASK_MIN={min} plus a multiple of the step {step}")
    })?;
    let shard = Shard::new(offset / step + 1, count).map_err(|e| {
        format!("--shard auto: SLURM_ARRAY_TASK_ID={id} (min {min}, step {step}) of SLURM_ARRAY_TASK_COUNT={count}: {e} (arrays with gaps such as 1,5,7 cannot be shards)")
    })?;
    let detail =
        format!("SLURM_ARRAY_TASK_ID={id} of SLURM_ARRAY_TASK_COUNT={count}, based at SLURM_ARRAY_TASK_MIN={min}");
    Ok(Resolved { shard, source: Source::Slurm, detail, status_file: None })
}

/// What a shard is made of: whole files (the default: a GPU process pays
/// its framework set-up once per file) or single tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ShardBy {
    /// Every test of a file goes to the same shard.
    #[default]
    File,
    /// Each test on its own.
    Test,
}

/// How tests are assigned to shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ShardMode {
    /// A stable hash of the node id or file ([`assign::shard_of`]).
    #[default]
    Hash,
    /// Greedy balance of the durations in `--durations-file`.
    Duration,
}

/// What the plugin needs to select its shard: the JSON value of
/// [`ENV_SHARD`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// 1-based shard number.
    pub index: u32,
    /// Number of shards.
    pub total: u32,
    /// File or test.
    pub by: ShardBy,
    /// Hash or duration.
    pub mode: ShardMode,
    /// The durations file (JSON object node id -> seconds), for `duration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durations: Option<PathBuf>,
    /// Where the first collecting process writes the whole collection
    /// (before shard selection): the out-dir's `collection.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<PathBuf>,
}

impl Plan {
    /// The value of [`ENV_SHARD`].
    pub fn to_env(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
