//! The original's crash info (a JSON object, its `abort_info` dict): read
//! from a marker, parsed from `--crash-info`, appended to a crash log, and
//! turned into a crash record for the report patchers.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde_json::{Map, Value};

use crate::fsutil;
use crate::marker;
use crate::record::{self, CrashRecord};

/// The generic reason the original writes for every crash it finds from a
/// marker (it cannot know the signal).
pub const GENERIC_REASON: &str = "Test crashed (segfault, abort, or fatal error)";

/// The node id the original puts into reports for a crash: `test_name` as
/// is when it is file-qualified (`path/x.py::...`), else anchored to the
/// file the runner was running: `<testfile>.py::<test_name>`.
pub fn anchored_nodeid(test_name: &str, testfile: &str) -> String {
    if let Some((left, _)) = test_name.split_once("::") {
        if left.ends_with(".py") {
            return test_name.to_string();
        }
    }
    format!("{testfile}.py::{test_name}")
}

/// Crash info from a marker file, the original's `check_for_crash_file`
/// with a minimum duration of 0 (a quick crash is still a crash).
///
/// `None` when there is no marker, when it does not say `running`, or when
/// it cannot be read; a marker that is not valid JSON is removed, as the
/// original does.
pub fn crash_info_from_marker(path: &Path) -> Option<Map<String, Value>> {
    let m = match marker::read_marker(path) {
        Ok(Some(m)) => m,
        Ok(None) => return None,
        Err(marker::MarkerError::Garbage(_)) => {
            let _ = std::fs::remove_file(path);
            return None;
        }
        Err(marker::MarkerError::Unreadable(_)) => return None,
    };
    if !m.is_running() {
        return None;
    }
    let Some(duration) = m.elapsed_secs() else {
        // The original cannot parse the start time either: invalid marker.
        let _ = std::fs::remove_file(path);
        return None;
    };
    let nodeid = if !m.nodeid.is_empty() {
        m.nodeid.clone()
    } else if !m.test_name.is_empty() {
        m.test_name.clone()
    } else {
        "unknown_test".to_string()
    };
    let mut info = Map::new();
    info.insert("test_name".into(), Value::from(nodeid.clone()));
    info.insert("test_class".into(), Value::from(record::test_class_of(&nodeid)));
    info.insert("nodeid".into(), Value::from(nodeid));
    info.insert("reason".into(), Value::from(GENERIC_REASON));
    info.insert("crash_time".into(), Value::from(record::now_iso()));
    info.insert("duration".into(), Value::from(duration));
    info.insert(
        "gpu_id".into(),
        Value::from(if m.gpu_id.is_empty() { crate::record::UNKNOWN_GPU.to_string() } else { m.gpu_id }),
    );
    info.insert("pid".into(), Value::from(m.pid.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into())));
    if let Some(phase) = m.phase.filter(|p| !p.is_empty()) {
        info.insert("phase".into(), Value::from(phase));
    }
    Some(info)
}

/// Parses a `--crash-info` argument: a JSON object.
pub fn parse_crash_info(text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text).context("--crash-info is not valid JSON")? {
        Value::Object(m) => Ok(m),
        other => bail!("--crash-info must be a JSON object, got {}", kind_of(&other)),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Appends a crash-info object to a JSONL crash log as the original's
/// `append_crash_to_jsonl` does: every field kept, plus `source` and
/// `logged_at`, one line, under an exclusive lock.
pub fn append_crash_info(crash_log: &Path, info: &Map<String, Value>, source: &str) -> Result<()> {
    let mut line = info.clone();
    line.insert("source".into(), Value::from(source));
    line.insert("logged_at".into(), Value::from(record::now_iso()));
    let mut text = serde_json::to_string(&Value::Object(line)).context("cannot serialize crash info")?;
    text.push('\n');
    fsutil::create_parent(crash_log)?;
    fsutil::append_locked(crash_log, text.as_bytes())
}

/// Turns crash info (the original's dict) into a record for the report
/// patchers, with the node id the original would show:
/// [`anchored_nodeid`] of `test_name` when `testfile` is given, else
/// `nodeid` (or `test_name`) as is. The original's `abort_time` stands in
/// for a missing `crash_time`.
pub fn record_from_info(info: &Map<String, Value>, testfile: Option<&str>) -> Result<CrashRecord> {
    let mut rec: CrashRecord =
        serde_json::from_value(Value::Object(info.clone())).context("crash info has fields of the wrong type")?;
    let text = |k: &str| info.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let nodeid = match testfile {
        Some(tf) => {
            let Some(name) = info.get("test_name").and_then(Value::as_str) else {
                bail!("crash info has no test_name");
            };
            anchored_nodeid(name, tf)
        }
        None => match text("nodeid").or_else(|| text("test_name")) {
            Some(n) => n.to_string(),
            None => bail!("crash info has neither nodeid nor test_name"),
        },
    };
    rec.nodeid = nodeid;
    if rec.test_name.trim().is_empty() {
        rec.test_name = rec.nodeid.clone();
    }
    if rec.crash_time.is_empty() {
        if let Some(t) = text("abort_time") {
            rec.crash_time = t.to_string();
        }
    }
    if rec.reason.is_empty() {
        rec.reason = GENERIC_REASON.to_string();
    }
    if rec.gpu_id.is_empty() {
        rec.gpu_id = crate::record::UNKNOWN_GPU.to_string();
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_like_the_original() {
        assert_eq!(anchored_nodeid("tests/a.py::T::t", "x"), "tests/a.py::T::t");
        assert_eq!(anchored_nodeid("T::t", "tests/a"), "tests/a.py::T::t");
        assert_eq!(anchored_nodeid("t[a::b]", "a"), "a.py::t[a::b]");
    }

    #[test]
    fn marker_with_zero_min_duration() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        std::fs::write(
            &p,
            format!(
                r#"{{"test_name": "t", "nodeid": "a.py::K::t", "start_time": "{}", "status": "running", "pid": 7, "gpu_id": "1"}}"#,
                record::now_iso()
            ),
        )
        .unwrap();
        let info = crash_info_from_marker(&p).unwrap();
        assert_eq!(info["test_name"], "a.py::K::t");
        assert_eq!(info["test_class"], "K");
        assert_eq!(info["pid"], "7");
        assert_eq!(info["reason"], GENERIC_REASON);
        assert!(info["duration"].as_f64().unwrap() < 5.0);
        std::fs::write(&p, r#"{"status": "idle"}"#).unwrap();
        assert!(crash_info_from_marker(&p).is_none());
        assert!(p.exists());
        std::fs::write(&p, "{garbage").unwrap();
        assert!(crash_info_from_marker(&p).is_none());
        assert!(!p.exists(), "an invalid marker is removed, as the original does");
        assert!(crash_info_from_marker(&dir.path().join("none")).is_none());
    }

    #[test]
    fn record_from_original_info() {
        let info =
            parse_crash_info(r#"{"test_name": "test_x", "abort_time": "T", "pid": 3, "duration": "1.5"}"#).unwrap();
        let r = record_from_info(&info, Some("dir/f")).unwrap();
        assert_eq!(r.nodeid, "dir/f.py::test_x");
        assert_eq!(r.crash_time, "T");
        assert_eq!(r.pid, "3");
        assert_eq!(r.duration, 1.5);
        assert_eq!(r.reason, GENERIC_REASON);
        let r = record_from_info(&info, None).unwrap();
        assert_eq!(r.nodeid, "test_x");
        assert!(record_from_info(&parse_crash_info("{}").unwrap(), None).is_err());
        assert!(parse_crash_info("[1]").is_err());
    }
}
