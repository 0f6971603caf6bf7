//! Command-line definitions of `pytest-abort-wrap`, turned into a
//! [`run::Config`].

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use crate::run::{self, RetryMode};

/// Exit statuses, shown in `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    every selected test ran; none failed or crashed
  1    a test failed or crashed, or tests were left unrun
  2-5  pytest's own status of the last run (interrupted, internal error,
       usage error, no tests collected), when nothing failed or crashed
  64   bad usage of pytest-abort-wrap (also: --gpus auto and no GPU found)
  70   the wrapper could not work (state folder missing or in use by
       another wrapper, spawn, ptrace loop)
  74   a crash record or report could not be written (the rest was)
  126  the command was found but cannot be executed (permission denied)
  127  the command was not found
  128+N  the wrapper got signal N (SIGINT, SIGTERM, SIGHUP), forwarded it
       to pytest's process group (a second signal kills the group), and
       wrote what had run";

/// Supervise pytest: name the test that crashed and how, keep every result
/// already earned, and run the rest of the suite.
#[derive(Debug, Parser)]
#[command(
    name = "pytest-abort-wrap",
    version,
    about = "Supervise pytest: name the test that crashed and how, keep every result, finish the suite.",
    after_help = EXIT_STATUS_HELP,
    arg_required_else_help = true
)]
pub struct WrapArgs {
    /// Append crash records (JSONL) here [env: PYTEST_ABORT_CRASHED_TESTS_LOG].
    #[arg(long, value_name = "PATH")]
    pub crash_log: Option<PathBuf>,

    /// Most pytest runs in all (the first included; runs after device errors
    /// not counted).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_runs: u32,

    /// After a crash: `resume` runs only the tests not yet finished;
    /// `deselect` reruns everything minus crashed tests (the original's way).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = RetryMode::Resume)]
    pub retry_mode: RetryMode,

    /// Supervise with waitpid and /proc scans instead of ptrace.
    #[arg(long)]
    pub no_ptrace: bool,

    /// Resume every time in a fresh pytest process that collects again
    /// (without it, a serial pytest that is safe to fork collects once and
    /// runs the tests in forked children, forking again after a crash).
    #[arg(long)]
    pub fresh_resume: bool,

    /// Folder for markers, journals and the shim copy (default: a private
    /// temp folder, removed at the end unless --keep-state).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Keep the state folder.
    #[arg(long)]
    pub keep_state: bool,

    /// Leave processes that tests left behind running.
    #[arg(long)]
    pub keep_leftovers: bool,

    /// No progress lines or summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// Per-test time limit in seconds, from the test's start (a test's own
    /// `@pytest.mark.timeout(n)` wins): dump its Python stacks, then kill
    /// its process and go on with the rest.
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub test_timeout: Option<f64>,

    /// Time limit for the whole session (all runs), in seconds.
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub timeout: Option<f64>,

    /// Run only this test, alone, up to --repeat times (a fresh pytest each
    /// time), stop at the first crash and print the crash rate.
    #[arg(long, value_name = "NODEID")]
    pub reproduce: Option<String>,

    /// How many times --reproduce runs the test.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "reproduce",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,

    /// After the run, rerun each crashed test alone N times and label it
    /// `deterministic` or `flaky (k/N)`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub recheck_crashed: u32,

    /// With --recheck-crashed: whether a crash that did not reproduce on
    /// every recheck (flaky) fails the run (`fail`) or not (`pass`); JUnit
    /// shows it as <failure> with <rerunFailure>s, or as <flakyFailure>s.
    #[arg(long, value_enum, value_name = "RESULT", default_value_t = crate::model::FlakyResult::Fail)]
    pub flaky_result: crate::model::FlakyResult,

    /// Also count a failed test whose report text matches this regular
    /// expression as a sticky device error (repeatable; added to the
    /// default CUDA and HIP/ROCm patterns): its process runs no further
    /// test, and the tests left run in a fresh one.
    #[arg(long, value_name = "REGEX", value_parser = poison_pattern)]
    pub poison_pattern: Vec<String>,

    /// Do not look for sticky device errors: a test's failure never retires
    /// its process.
    #[arg(long, conflicts_with = "poison_pattern")]
    pub no_poison: bool,

    /// Leave tests with this pytest marker (`multi_gpu`) out of the run and
    /// run them afterwards, serially (no xdist) with every GPU of the job
    /// visible; one set of reports and one crash log for both.
    #[arg(long, value_name = "NAME", value_parser = marker_name)]
    pub multi_gpu_marker: Option<String>,

    /// The reports the wrapper writes itself.
    #[command(flatten)]
    pub reports: ReportArgs,

    /// Write what happens (runs, crashes, reports, warnings, the totals) to
    /// this file as JSON lines, one event a line, as it happens.
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,

    /// Under GitHub Actions (GITHUB_ACTIONS=true), do not print ::error
    /// annotations for the crashes nor append the job summary to
    /// $GITHUB_STEP_SUMMARY.
    #[arg(long)]
    pub no_ci_annotations: bool,

    /// Shards across nodes (`--shard`, `--shard-by`, `--shard-mode`,
    /// `--durations-file`, `--out-dir`).
    #[command(flatten)]
    pub shard: crate::shard::node::ShardArgs,

    /// GPU slots (`--gpus`, `--per-gpu`, `--gpu-vendor`, `--gpu-quarantine`,
    /// `--gpu-release-wait`).
    #[command(flatten)]
    pub gpu: crate::gpu::args::GpuArgs,

    /// The command: `pytest ...`, `python -m pytest ...`, or anything that
    /// runs pytest.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The report flags of `pytest-abort-wrap` and `pytest-abort-postprocess`:
/// one file per format, holding the tests and the crashes (patched when it
/// exists, created when missing).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReportArgs {
    /// A pytest-json-report file with every test and crash (patched, or created).
    #[arg(long, value_name = "PATH")]
    pub json_report: Option<PathBuf>,

    /// A pytest-html report with every test and crash (patched, or created).
    #[arg(long, value_name = "PATH")]
    pub html_report: Option<PathBuf>,

    /// A pytest-csv report with every test and crash (patched, or created).
    #[arg(long, value_name = "PATH")]
    pub csv_report: Option<PathBuf>,

    /// JUnit XML with every test and crash (patched, or created; the wrapper
    /// builds it from the journals when pytest was not asked for --junitxml).
    #[arg(long, value_name = "PATH")]
    pub junit_xml: Option<PathBuf>,
}

impl ReportArgs {
    /// The flags given, as (format, path) targets.
    pub fn targets(&self) -> Vec<(crate::reports::Kind, PathBuf)> {
        use crate::reports::Kind;
        [
            (Kind::Json, &self.json_report),
            (Kind::Html, &self.html_report),
            (Kind::Csv, &self.csv_report),
            (Kind::Junit, &self.junit_xml),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.clone().map(|p| (k, p)))
        .collect()
    }
}

impl WrapArgs {
    /// The run configuration.
    pub fn config(&self) -> run::Config {
        run::Config {
            command: self.command.clone(),
            max_runs: self.max_runs,
            retry_mode: self.retry_mode,
            ptrace: !self.no_ptrace,
            crash_log: crate::record::crash_log_or_env(self.crash_log.as_deref()),
            state_dir: self.state_dir.clone(),
            keep_state: self.keep_state,
            keep_leftovers: self.keep_leftovers,
            test_timeout: self.test_timeout,
            session_timeout: self.timeout,
            recheck_crashed: self.recheck_crashed,
            flaky_result: self.flaky_result,
            reports: self.reports.targets(),
            extra_env: Vec::new(),
            fork_resume: !self.fresh_resume,
            gpu: None,
            poison: self.poison_patterns(),
            multi_gpu_marker: self.multi_gpu_marker.clone(),
        }
    }

    /// The poison patterns: the defaults and `--poison-pattern`s, or none
    /// under `--no-poison`.
    fn poison_patterns(&self) -> Vec<String> {
        if self.no_poison {
            return Vec::new();
        }
        let defaults = crate::model::DEFAULT_POISON_PATTERNS.iter().map(|p| p.to_string());
        defaults.chain(self.poison_pattern.iter().cloned()).collect()
    }
}

/// A `--poison-pattern`: a regular expression in the syntax Rust's regex
/// and Python's `re` share (the plugin searches with `re`).
fn poison_pattern(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("an empty pattern would match every failure".to_string());
    }
    regex::Regex::new(s).map(|_| s.to_string()).map_err(|e| format!("`{s}` is not a regular expression: {e}"))
}

/// A `--multi-gpu-marker`: a pytest marker name (a Python identifier).
fn marker_name(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let ok =
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || c == '_');
    ok.then(|| s.to_string()).ok_or_else(|| format!("`{s}` is not a pytest marker name (a Python identifier)"))
}

/// The longest time limit accepted (about 31 years): longer ones would
/// overflow the clock arithmetic of the watchdog.
pub const MAX_SECS: f64 = 1e9;

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= MAX_SECS => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds above 0 and at most {MAX_SECS:.0}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::*;

    fn readme_section(heading: &str) -> String {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let start = readme.find(heading).unwrap_or_else(|| panic!("README has no {heading}"));
        let rest = &readme[start + heading.len()..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    }

    #[test]
    fn the_definitions_are_consistent() {
        WrapArgs::command().debug_assert();
        crate::compat::RetryArgs::command().debug_assert();
    }

    /// Every option `--help` shows is in README's options block, with the
    /// same value name and default, and README lists no option that is gone.
    #[test]
    fn readme_options_match_help() {
        let block = readme_section("## Options");
        // One entry per option: continuation lines joined to their option.
        let mut entries: Vec<String> = Vec::new();
        for line in block.lines() {
            match line.trim_start() {
                l if line.starts_with("  -") => entries.push(l.to_string()),
                l if !l.is_empty() && line.starts_with("    ") && !entries.is_empty() => {
                    let last = entries.last_mut().unwrap();
                    last.push(' ');
                    last.push_str(l);
                }
                _ => {}
            }
        }
        let mut readme = BTreeSet::new();
        for line in &entries {
            let flags = line.split("  ").next().unwrap().trim();
            let default = line.split("[default: ").nth(1).map(|d| d.split(']').next().unwrap().to_string());
            for part in flags.split(", ").filter(|p| p.starts_with("--") && !p.contains(" / ") && *p != "--version") {
                let mut words = part.split_whitespace();
                let long = words.next().unwrap().trim_start_matches("--").to_string();
                let value = words.next().map(|v| v.trim_matches(|c| c == '<' || c == '>').to_string());
                readme.insert((long, value, default.clone().filter(|d| !d.contains(' '))));
            }
        }
        let mut help = BTreeSet::new();
        let mut cmd = WrapArgs::command();
        cmd.build();
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            let value = a.get_value_names().and_then(|v| v.first()).map(|v| v.to_string());
            let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
            let default = a.get_default_values().first().map(|d| d.to_string_lossy().into_owned());
            let default = default.filter(|_| takes_value);
            help.insert((long.to_string(), value.filter(|_| takes_value), default));
        }
        assert_eq!(readme, help, "README's options block and --help differ");
    }

    /// README's exit-status table names the same statuses as `--help`.
    #[test]
    fn readme_exit_statuses_match_help() {
        let table = readme_section("## Exit status");
        let readme: Vec<String> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| "))
            .map(|l| l.split(" |").next().unwrap().replace('–', "-"))
            .filter(|c| c.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .collect();
        let help: Vec<String> = EXIT_STATUS_HELP
            .lines()
            .skip(1)
            .filter_map(|l| l.strip_prefix("  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| c.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(String::from)
            .collect();
        assert_eq!(readme, help, "README's exit-status table and --help differ");
    }
}
