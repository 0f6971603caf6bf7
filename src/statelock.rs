//! One wrapper per state folder: an exclusive `flock` on the folder itself,
//! held for the whole invocation. Two wrappers sharing a folder would read
//! each other's markers, journals and report copies and mix their results,
//! so the second one stops with one clear line instead.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
}

/// Takes the state folder's lock without waiting: an error naming the
/// folder when another process holds it.
pub fn lock(dir: &Path) -> Result<StateLock> {
    let file = File::open(dir).with_context(|| format!("{}: cannot open the state folder", dir.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(StateLock { _lock: lock }),
        Err((_, Errno::EWOULDBLOCK)) => bail!(
            "{}: the state folder is in use by another pytest-abort-wrap (each run needs its own --state-dir)",
            dir.display()
        ),
        Err((_, e)) => Err(e).with_context(|| format!("{}: cannot lock the state folder", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_folder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let err = format!("{:#}", lock(dir.path()).unwrap_err());
        assert!(err.contains("in use by another pytest-abort-wrap"), "{err}");
        drop(first);
        lock(dir.path()).unwrap();
    }
}
