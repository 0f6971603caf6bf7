//! `--events PATH`: every event as one JSON object a line, with a `type`
//! field, flushed per line, so a dashboard or a batch script can follow a
//! run as it happens (as pytest-reportlog does for pytest's reports).

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use super::{Event, Reporter};
use crate::error::Error;

/// The JSON-lines reporter.
#[derive(Debug)]
pub struct JsonLines {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    failure: Option<String>,
}

impl JsonLines {
    /// Creates (or truncates) the events file.
    pub fn create(path: &Path) -> Result<Self, Error> {
        crate::fsutil::create_parent(path).map_err(|e| Error::CouldNotWrite {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.root_cause().to_string()),
        })?;
        let file = File::create(path).map_err(|source| Error::CouldNotWrite { path: path.to_path_buf(), source })?;
        Ok(JsonLines { path: path.to_path_buf(), out: Some(BufWriter::new(file)), failure: None })
    }
}

impl Reporter for JsonLines {
    fn report(&mut self, event: &Event) {
        let Some(out) = self.out.as_mut() else { return };
        let written = serde_json::to_writer(&mut *out, event)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(e) = written {
            // One failure is enough: stop writing, keep the reason.
            self.failure = Some(format!("{}: cannot write the events: {e}", self.path.display()));
            self.out = None;
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }
}
