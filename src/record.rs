//! The crash record, the one type every part of the crate uses to describe a
//! crash, and the crash log (JSONL) that holds them.
//!
//! Records carry the original plugin's fields, so tools written for it read
//! ours, plus what the wrapper knows: signal, exit code, worker, run, phase
//! and, when ptrace saw the death, the forensics.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize};

use crate::fsutil;
use crate::model::{Crash, Death, Phase, SignalDetail};
use crate::supervise::signals;

pub use crate::model::CrashKind;

/// One crash, as written to the crash log (one JSON object a line).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct CrashRecord {
    // --- the original plugin's fields -------------------------------------
    /// pytest item name, `test_x[param]` (empty for deaths outside a test).
    #[serde(deserialize_with = "de_string_lenient")]
    pub test_name: String,
    /// The class for methods, empty for plain functions.
    #[serde(deserialize_with = "de_string_lenient")]
    pub test_class: String,
    /// Full node id; for a collection crash, the file's node id; empty for a
    /// death at session start or finish.
    #[serde(deserialize_with = "de_string_lenient")]
    pub nodeid: String,
    /// In words: "crashed with SIGSEGV (segmentation fault) during call".
    #[serde(deserialize_with = "de_string_lenient")]
    pub reason: String,
    /// Local time of the death, ISO-8601.
    #[serde(deserialize_with = "de_string_lenient")]
    pub crash_time: String,
    /// Seconds from the test's start to its death.
    #[serde(deserialize_with = "de_f64_lenient")]
    pub duration: f64,
    /// First non-empty of HIP_/ROCR_/CUDA_VISIBLE_DEVICES, else `unknown`.
    #[serde(deserialize_with = "de_string_lenient")]
    pub gpu_id: String,
    /// pid of the process that died (a string, as the original writes it).
    #[serde(deserialize_with = "de_string_lenient")]
    pub pid: String,
    /// `runner`, or `xdist:gwN` for a worker.
    #[serde(deserialize_with = "de_string_lenient")]
    pub source: String,
    /// Local time the record was written.
    #[serde(deserialize_with = "de_string_lenient")]
    pub logged_at: String,

    // --- what the wrapper adds --------------------------------------------
    /// The signal number that killed the process, if it was a signal.
    pub signal: Option<i32>,
    /// The signal's name, `SIGSEGV`.
    pub signal_name: Option<String>,
    /// The exit code, for a process that exited mid-test.
    pub exit_code: Option<i32>,
    /// Whether the kernel reported a core dump.
    pub core_dumped: bool,
    /// crash, exit or timeout.
    pub kind: CrashKind,
    /// `main` or `gwN`.
    #[serde(deserialize_with = "de_string_lenient")]
    pub worker: String,
    /// 1-based pytest run of the wrapper's retry loop.
    pub run: u32,
    /// setup, call, teardown, collection, session-start, session-finish.
    #[serde(deserialize_with = "de_string_lenient")]
    pub phase: String,

    // --- forensics (present when known) -----------------------------------
    /// si_code by name (`SEGV_MAPERR`, `SI_USER`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub si_code: Option<String>,
    /// Fault address as hex (`0x0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_addr: Option<String>,
    /// The thread that took the fatal signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_tid: Option<i32>,
    /// For a signal sent by a process, its pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_pid: Option<i32>,
    /// Instruction pointer as `library+0xoffset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Python stacks at death (faulthandler's dump).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// Peak resident memory of the process, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_kb: Option<u64>,
    /// Set when a SIGKILL looks like the OOM killer's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_suspected: Option<bool>,
    /// `deterministic` or `flaky (k/N)` after `--recheck-crashed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recheck: Option<String>,
    /// Each recheck of `--recheck-crashed`, in order (what JUnit's
    /// `<rerunFailure>`/`<flakyFailure>` elements show).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rechecks: Vec<RecheckRun>,
    /// For a flaky crash: `fail` or `pass`, what `--flaky-result` made of it
    /// (whether it fails the run and is a failure in JUnit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flaky_result: Option<String>,
    /// For kind `device-error`: the failure text that matched a poison
    /// pattern (`device-side assert triggered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_error: Option<String>,
}

/// One rerun of a crashed test alone by `--recheck-crashed`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct RecheckRun {
    /// The pytest run it was (numbered after the session's runs).
    pub run: u32,
    /// Whether the test crashed again.
    pub crashed: bool,
    /// How it crashed, in words (empty when it did not).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Its Python stacks at death, when it crashed and they were dumped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

impl CrashRecord {
    /// True when `--recheck-crashed` saw the test not crash at least once.
    pub fn is_flaky(&self) -> bool {
        self.rechecks.iter().any(|r| !r.crashed) || self.recheck.as_deref().is_some_and(|v| v.starts_with("flaky"))
    }

    /// True for a flaky crash that `--flaky-result pass` does not count as a failure.
    pub fn flaky_passes(&self) -> bool {
        self.is_flaky() && self.flaky_result.as_deref() == Some("pass")
    }
}

impl CrashRecord {
    /// The node id with surrounding whitespace removed, as readers compare it.
    pub fn key(&self) -> &str {
        self.nodeid.trim()
    }

    /// A short label for how it died: `SIGSEGV`, `exit 3`, `timeout`.
    pub fn how(&self) -> String {
        format!("{:#}", self.death())
    }

    /// How it died, typed, from the record's fields (a record of the
    /// original, which has none of them, died in an unknown way). The
    /// timeout's limit is not a field of its own: only its kind is known.
    pub fn death(&self) -> Death {
        let end = match (self.signal, self.exit_code) {
            (Some(signal), _) => Death::Signal { signal, core_dumped: self.core_dumped, detail: self.detail() },
            (None, Some(code)) => Death::Exit(code),
            (None, None) => Death::Unknown,
        };
        match self.kind {
            CrashKind::Timeout => Death::Timeout { limit: None, scope: None, end: Box::new(end) },
            CrashKind::DeviceError => Death::DeviceError { matched: self.device_error.clone().unwrap_or_default() },
            _ => end,
        }
    }

    /// The phase, when the record names a known one.
    pub fn phase(&self) -> Option<Phase> {
        self.phase.parse().ok()
    }

    fn detail(&self) -> Option<SignalDetail> {
        let addr =
            self.fault_addr.as_deref().and_then(|a| u64::from_str_radix(a.trim().trim_start_matches("0x"), 16).ok());
        let d = SignalDetail {
            si_code: self.si_code.clone(),
            addr,
            tid: self.fault_tid,
            sender_pid: self.sender_pid,
            location: self.location.clone(),
        };
        (!d.is_empty()).then_some(d)
    }

    /// One-line JSON for the crash log.
    pub fn to_json_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("a crash record always serializes");
        s.push('\n');
        s
    }
}

impl From<&Crash> for CrashRecord {
    /// The wire form of a typed crash: every string the crash log holds is
    /// made here.
    fn from(c: &Crash) -> CrashRecord {
        let detail = c.death.detail();
        let signal = c.death.signal();
        CrashRecord {
            test_name: c.test_name.clone(),
            test_class: test_class_of(&c.nodeid),
            nodeid: c.nodeid.clone(),
            reason: c.reason(),
            crash_time: c.crash_time.clone(),
            duration: c.duration,
            gpu_id: c.gpu_id.clone(),
            pid: c.pid.to_string(),
            source: c.worker.source(),
            logged_at: c.crash_time.clone(),
            signal,
            signal_name: signal.map(signals::name),
            exit_code: c.death.exit_code(),
            core_dumped: c.death.core_dumped(),
            kind: c.death.kind(),
            worker: c.worker.to_string(),
            run: c.run,
            phase: c.phase.to_string(),
            si_code: detail.and_then(|d| d.si_code.clone()),
            fault_addr: detail.and_then(|d| d.addr).map(|a| format!("{a:#x}")),
            fault_tid: detail.and_then(|d| d.tid),
            sender_pid: detail.and_then(|d| d.sender_pid),
            location: detail.and_then(|d| d.location.clone()),
            traceback: c.traceback.clone(),
            peak_rss_kb: c.peak_rss_kb,
            oom_suspected: c.oom_suspected.then_some(true),
            recheck: c.recheck.map(|v| v.to_string()),
            rechecks: c.rechecks.clone(),
            flaky_result: c.flaky_result.map(|r| r.as_str().to_string()),
            device_error: match &c.death {
                Death::DeviceError { matched } => Some(matched.clone()),
                _ => None,
            },
        }
    }
}

/// The environment variable naming the crash log, as the original reads it.
pub const CRASH_LOG_ENV: &str = "PYTEST_ABORT_CRASHED_TESTS_LOG";

/// The `gpu_id` of a record whose GPU is not known (the original's word).
pub const UNKNOWN_GPU: &str = "unknown";

/// The crash log: `given` when it is a non-empty path, else
/// `$PYTEST_ABORT_CRASHED_TESTS_LOG` when set and non-empty (every command
/// reads the crash log this one way).
pub fn crash_log_or_env(given: Option<&Path>) -> Option<std::path::PathBuf> {
    given
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CRASH_LOG_ENV).filter(|v| !v.is_empty()).map(std::path::PathBuf::from))
}

/// Appends records to the crash log under an exclusive lock.
pub fn append_records(path: &Path, records: &[CrashRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let text: String = records.iter().map(CrashRecord::to_json_line).collect();
    fsutil::append_locked(path, text.as_bytes())
}

/// Parses crash-log text tolerantly: blank lines, lines that are not JSON
/// objects and records without a string `nodeid` are skipped.
pub fn parse_crash_log(text: &str) -> Vec<CrashRecord> {
    text.lines().filter_map(parse_crash_line).collect()
}

/// Parses one crash-log line: `None` for a blank line, a line that is not
/// a JSON object, or a record without a string `nodeid`. A lone surrogate
/// escape (which Python's json writes for such node ids) reads as U+FFFD.
pub fn parse_crash_line(line: &str) -> Option<CrashRecord> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let line = crate::reports::text::replace_lone_surrogates(line);
    // One typed parse when the line is plain: exactly one `"nodeid"` key
    // whose value is a string (an unescaped `"` cannot sit inside a JSON
    // string, so the text says it), and no repeated field. Anything else
    // takes the tree, which decides the odd cases as before.
    let b = line.as_bytes();
    let mut keys = memchr::memmem::find_iter(b, b"\"nodeid\"");
    if let (true, Some(at), None) = (line.starts_with('{'), keys.next(), keys.next()) {
        let rest = line[at + 8..].trim_start();
        if rest.strip_prefix(':').is_some_and(|v| v.trim_start().starts_with('"')) {
            if let Ok(r) = serde_json::from_str::<CrashRecord>(&line) {
                return Some(r);
            }
        }
    }
    let value: serde_json::Value = serde_json::from_str(&line).ok()?;
    if !value.get("nodeid").is_some_and(|v| v.is_string()) {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// Reads a crash log; a missing file is an empty log.
pub fn read_crash_log(path: &Path) -> Result<Vec<CrashRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(parse_crash_log(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("{}: cannot read crash log", path.display()))),
    }
}

/// Keeps the first record for each trimmed, non-empty node id, in order.
pub fn dedupe_by_nodeid(records: &[CrashRecord]) -> Vec<&CrashRecord> {
    let mut seen = HashSet::new();
    records.iter().filter(|r| !r.key().is_empty() && seen.insert(r.key().to_string())).collect()
}

/// Derives the class part of a node id: `a.py::Cls::test` -> `Cls`, and
/// empty for a plain function (`a.py::test`).
pub fn test_class_of(nodeid: &str) -> String {
    let parts: Vec<&str> = split_nodeid(nodeid);
    if parts.len() >= 3 {
        parts[parts.len() - 2].to_string()
    } else {
        String::new()
    }
}

/// Splits a node id on `::` outside parametrize brackets, so an id such as
/// `a.py::t[x::y]` has two parts.
pub fn split_nodeid(nodeid: &str) -> Vec<&str> {
    let base_end = nodeid.find('[').unwrap_or(nodeid.len());
    let mut parts: Vec<&str> = Vec::new();
    let mut start = 0;
    let bytes = nodeid.as_bytes();
    let mut i = 0;
    while i + 1 < base_end {
        if bytes[i] == b':' && bytes[i + 1] == b':' {
            parts.push(&nodeid[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    parts.push(&nodeid[start..]);
    parts
}

/// Current local time as the original writes it (ISO-8601, microseconds).
pub fn now_iso() -> String {
    chrono::Local::now().naive_local().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The GPU a crash record names: the one the process reported (its GPU
/// slot's, from its marker or journal) when it reported one, else
/// [`gpu_id_from_env`].
pub fn gpu_id_or_env(reported: &str) -> String {
    if reported.is_empty() {
        gpu_id_from_env()
    } else {
        reported.to_string()
    }
}

/// First non-empty of `HIP_VISIBLE_DEVICES`, `ROCR_VISIBLE_DEVICES`,
/// `CUDA_VISIBLE_DEVICES`, else `unknown`.
pub fn gpu_id_from_env() -> String {
    ["HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| UNKNOWN_GPU.to_string())
}

/// Accepts a string, a number or null as a string (the original writes pid
/// as a string, markers write it as a number).
pub fn de_string_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// Accepts a number or a numeric string; anything else is 0.
pub fn de_f64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(0.0),
        serde_json::Value::String(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    })
}

/// Accepts a pid as a number or a numeric string.
pub fn de_opt_pid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_i64().and_then(|v| i32::try_from(v).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_lines_parse_the_same_either_way() {
        let tree = |l: &str| -> Option<CrashRecord> {
            let v: serde_json::Value = serde_json::from_str(l.trim()).ok()?;
            v.get("nodeid").is_some_and(|n| n.is_string()).then(|| serde_json::from_value(v).ok())?
        };
        for l in [
            r#"{"nodeid": "a.py::t", "signal": 11, "duration": "0.5"}"#,
            r#"{"nodeid": 3, "reason": "x"}"#,
            r#"{"reason": "no id"}"#,
            r#"{"nodeid": "a", "nodeid": "b"}"#,
            r#"{"nodeid": "a", "reason": "r", "reason": "s"}"#,
            r#"{"x": {"nodeid": "in"}, "nodeid": "out"}"#,
            r#"["x", {"nodeid": "y"}]"#,
            r#"{"nodeid" : "spaced", "worker": "gw1"}"#,
            r#"{"reason": "say "nodeid": "x"", "nodeid": "real"}"#,
            "not json",
            "",
        ] {
            assert_eq!(parse_crash_line(l), tree(l), "{l}");
        }
        assert_eq!(parse_crash_line(r#"{"nodeid": "a\ud800b"}"#).unwrap().nodeid, "a\u{fffd}b");
    }

    #[test]
    fn reads_original_records_and_skips_junk() {
        let log = concat!(
            "\n",
            "not json\n",
            "{\"nodeid\": 5}\n",
            "{\"test_name\": \"a.py::t\", \"test_class\": \"t\", \"nodeid\": \" a.py::t \", \"reason\": \"Test crashed\", ",
            "\"crash_time\": \"x\", \"duration\": 1.5, \"gpu_id\": \"0\", \"pid\": \"12\", \"source\": \"xdist:gw0\", \"logged_at\": \"y\"}\n",
            "{\"nodeid\": \"a.py::t\"}\n",
            "{\"nodeid\": \"b.py::u\", \"signal\": 11, \"kind\": \"crash\"}\n",
        );
        let recs = parse_crash_log(log);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].pid, "12");
        let unique = dedupe_by_nodeid(&recs);
        assert_eq!(unique.iter().map(|r| r.key()).collect::<Vec<_>>(), ["a.py::t", "b.py::u"]);
    }

    #[test]
    fn test_class_for_methods_only() {
        assert_eq!(test_class_of("t.py::TestA::test_x[a::b]"), "TestA");
        assert_eq!(test_class_of("t.py::test_x[a::b]"), "");
        assert_eq!(test_class_of("t.py::test_x"), "");
        assert_eq!(split_nodeid("t.py::C::t[1]"), ["t.py", "C", "t[1]"]);
    }

    #[test]
    fn a_typed_crash_becomes_the_wire_record_in_the_original_field_order() {
        use crate::model::{Death, Phase, SignalDetail, TimeoutScope, Worker};
        let crash = Crash {
            nodeid: "t.py::K::test_x[1]".into(),
            test_name: "test_x[1]".into(),
            duration: 5.5,
            gpu_id: "0".into(),
            crash_time: "T".into(),
            ..Crash::new(
                Phase::Call,
                Death::Timeout {
                    limit: Some(5.0),
                    scope: Some(TimeoutScope::Test),
                    end: Box::new(Death::Signal {
                        signal: 9,
                        core_dumped: false,
                        detail: Some(SignalDetail {
                            si_code: Some("SI_USER".into()),
                            sender_pid: Some(7),
                            ..Default::default()
                        }),
                    }),
                },
                4242,
                Worker::from_id("gw1"),
                2,
            )
        };
        let rec = CrashRecord::from(&crash);
        let v: serde_json::Value = serde_json::from_str(&rec.to_json_line()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let original = [
            "test_name",
            "test_class",
            "nodeid",
            "reason",
            "crash_time",
            "duration",
            "gpu_id",
            "pid",
            "source",
            "logged_at",
        ];
        assert_eq!(keys[..original.len()], original, "the original's fields first, in its order");
        assert_eq!(v["pid"], "4242", "pid is a string on the wire, as the original writes it");
        assert_eq!(v["test_class"], "K");
        assert_eq!(v["source"], "xdist:gw1");
        assert_eq!(v["kind"], "timeout");
        assert_eq!(v["phase"], "call");
        assert_eq!(v["signal_name"], "SIGKILL");
        assert_eq!(v["sender_pid"], 7);
        assert_eq!(v["reason"], "timed out after 5s (per-test limit): Python stacks dumped, then killed during call");
        assert_eq!(rec.death().kind(), crash.death.kind(), "the record reads back the same kind");
        assert_eq!(rec.phase(), Some(Phase::Call));
    }

    #[test]
    fn a_device_error_is_its_own_kind_on_the_wire() {
        use crate::model::{Death, Phase, Worker};
        let crash = Crash {
            nodeid: "t.py::test_x[a::b]".into(),
            test_name: "test_x[a::b]".into(),
            duration: 0.5,
            gpu_id: "3".into(),
            crash_time: "T".into(),
            ..Crash::new(
                Phase::Setup,
                Death::DeviceError { matched: "device-side assert triggered".into() },
                7,
                Worker::from_id("gw0"),
                1,
            )
        };
        let rec = CrashRecord::from(&crash);
        let v: serde_json::Value = serde_json::from_str(&rec.to_json_line()).unwrap();
        assert_eq!(v["kind"], "device-error");
        assert_eq!(v["device_error"], "device-side assert triggered");
        assert_eq!(v["signal"], serde_json::Value::Null);
        assert_eq!(
            v["reason"],
            "failed with a sticky device error (device-side assert triggered) during setup; its process ran no further test"
        );
        let back = parse_crash_log(&rec.to_json_line()).pop().unwrap();
        assert_eq!(back.death(), crash.death, "the record reads back the same death");
        assert!(back.kind.test_finished() && !CrashKind::Crash.test_finished());
        assert_eq!(back.how(), "device-error");
    }

    #[test]
    fn record_round_trips() {
        let r =
            CrashRecord { nodeid: "x".into(), signal: Some(11), kind: CrashKind::Crash, run: 2, ..Default::default() };
        let back = parse_crash_log(&r.to_json_line());
        assert_eq!(back, vec![r]);
    }
}
