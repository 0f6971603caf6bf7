//! The "last running test" marker file, as the shim (and the original
//! plugin) writes it: one JSON object per pytest process, naming the test
//! whose run protocol is in progress.
//!
//! This is the only place in the crate that parses markers.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Marker file name for one pytest process: `last_running_<worker>.json`,
/// where worker is `main` or an xdist id such as `gw3`.
pub fn marker_path(dir: &Path, worker: &str) -> PathBuf {
    dir.join(format!("last_running_{worker}.json"))
}

/// A parsed marker. Unknown fields are ignored; missing optional fields
/// default, so markers of the original plugin read fine.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Marker {
    /// pytest item name (`test_x[param]`).
    #[serde(default)]
    pub test_name: String,
    /// Full pytest node id.
    #[serde(default)]
    pub nodeid: String,
    /// Local time, ISO-8601 with microseconds and no zone.
    #[serde(default)]
    pub start_time: String,
    /// `running` while the test's protocol runs; anything else means idle.
    #[serde(default)]
    pub status: String,
    /// pid of the pytest process that wrote it.
    #[serde(default, deserialize_with = "crate::record::de_opt_pid")]
    pub pid: Option<i32>,
    /// GPU the process was pinned to, or `unknown`.
    #[serde(default, deserialize_with = "crate::record::de_string_lenient")]
    pub gpu_id: String,
    /// `setup`, `call` or `teardown` (shim markers only).
    #[serde(default)]
    pub phase: Option<String>,
    /// `main` or `gwN` (shim markers only).
    #[serde(default)]
    pub worker: Option<String>,
    /// A per-test timeout in seconds from `@pytest.mark.timeout` (shim only).
    #[serde(default)]
    pub timeout: Option<f64>,
}

impl Marker {
    /// True when the marker says a test's protocol is in progress.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }

    /// Seconds since `start_time`, measured against the local clock now;
    /// `None` when the start time does not parse.
    pub fn elapsed_secs(&self) -> Option<f64> {
        let start = chrono::NaiveDateTime::parse_from_str(self.start_time.trim(), "%Y-%m-%dT%H:%M:%S%.f").ok()?;
        let now = chrono::Local::now().naive_local();
        Some(((now - start).num_microseconds()? as f64 / 1e6).max(0.0))
    }
}

/// Why a marker could not be used.
#[derive(Debug, PartialEq)]
pub enum MarkerError {
    /// The file could not be read (other than not existing).
    Unreadable(String),
    /// The file is not a JSON object (garbage, or half-written).
    Garbage(String),
}

impl std::fmt::Display for MarkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MarkerError::Unreadable(e) => write!(f, "cannot read marker: {e}"),
            MarkerError::Garbage(e) => {
                write!(f, "marker is not valid JSON (garbage or half-written): {e}")
            }
        }
    }
}

/// Parses marker text. Trailing padding (spaces, NULs) is allowed.
pub fn parse_marker(text: &str) -> Result<Marker, MarkerError> {
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    serde_json::from_str(trimmed).map_err(|e| MarkerError::Garbage(e.to_string()))
}

/// Reads a marker file: `Ok(None)` when there is none.
pub fn read_marker(path: &Path) -> Result<Option<Marker>, MarkerError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(|b| b.is_ascii_whitespace() || *b == 0) => Ok(None),
        Ok(bytes) => parse_marker(&String::from_utf8_lossy(&bytes)).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MarkerError::Unreadable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_original_marker() {
        let m = parse_marker(
            r#"{"test_name": "t", "nodeid": "a.py::t", "start_time": "2026-01-01T10:00:00.123456",
                "status": "running", "pid": 42, "gpu_id": "unknown"}"#,
        )
        .unwrap();
        assert!(m.is_running());
        assert_eq!(m.pid, Some(42));
        assert_eq!(m.phase, None);
    }

    #[test]
    fn parses_padded_shim_marker() {
        let m = parse_marker(
            "{\"phase\": \"call\"    , \"nodeid\": \"x\", \"status\": \"running\", \"pid\": \"7\"}   \0\0",
        )
        .unwrap();
        assert_eq!(m.phase.as_deref(), Some("call"));
        assert_eq!(m.pid, Some(7));
    }

    #[test]
    fn half_written_marker_is_garbage() {
        assert!(matches!(parse_marker("{\"nodeid\": \"x"), Err(MarkerError::Garbage(_))));
    }

    #[test]
    fn missing_marker_is_none() {
        assert_eq!(read_marker(Path::new("/nonexistent/m.json")), Ok(None));
    }
}
