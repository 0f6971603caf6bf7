//! pytest's `--lf` cache after a wrapped run (issue 9 item 7): a run that
//! crashed never reached pytest's session end, so its failures (and the
//! crash itself) never got into `<cache>/v/cache/lastfailed`. The wrapper
//! brings the file to what one plain run would leave: what was there,
//! less the tests that passed, plus every failed and crashed test.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::{Map, Value};

use super::Session;
use crate::journal::{Event as JEvent, RunJournal};

/// The cache folder a run's pytest processes use, when the cache plugin
/// was active in them.
pub(super) fn cache_dir(journal: &RunJournal) -> Option<PathBuf> {
    journal.processes.values().find_map(|pj| match pj.events.first() {
        Some(JEvent::Start { cache_dir: Some(d), .. }) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => None,
    })
}

/// Updates the `lastfailed` file of the session's cache folder (nothing
/// when no run had the cache plugin): as pytest's cacheprovider does, a
/// test that failed is set, one that passed or was skipped is removed.
pub(super) fn update(session: &Session) -> Result<()> {
    let Some(dir) = &session.cache_dir else { return Ok(()) };
    let path = dir.join("v").join("cache").join("lastfailed");
    let mut map = read(&path);
    for d in &session.done {
        match d.outcome.as_str() {
            "failed" | "error" => map.insert(d.nodeid.clone(), Value::Bool(true)),
            _ => map.remove(&d.nodeid),
        };
    }
    for c in &session.crashes {
        if !c.key().is_empty() {
            map.insert(c.key().to_string(), Value::Bool(true));
        }
    }
    map.sort_keys();
    let text = serde_json::to_string_pretty(&Value::Object(map)).context("cannot render lastfailed")?;
    crate::fsutil::create_parent(&path)?;
    crate::fsutil::atomic_write(&path, text.as_bytes())
        .with_context(|| format!("{}: cannot update pytest's --lf cache", path.display()))?;
    Ok(())
}

/// The file's entries; none when it is missing or not a JSON object (pytest
/// then starts afresh too).
fn read(path: &Path) -> Map<String, Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}
