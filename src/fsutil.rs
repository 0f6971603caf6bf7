//! File-system helpers shared by every writer in the crate.
//!
//! One atomic-write helper and one locked-append helper: every report, marker
//! and plan file goes through [`atomic_write`], every crash-log line through
//! [`append_locked`].

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// What an atomic write did besides writing the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The file that was written: the path asked for, or, when that is a
    /// symbolic link, the file it points to.
    pub target: PathBuf,
    /// The mode of the file that was replaced when nobody could write to it
    /// (e.g. 0444): the caller says so. The new file keeps that mode.
    pub replaced_read_only: Option<u32>,
}

impl Written {
    /// One line for the user when the write replaced a read-only file.
    pub fn read_only_note(&self) -> Option<String> {
        self.replaced_read_only.map(|mode| {
            format!("{}: was read-only (mode {mode:04o}); replaced it, keeping the mode", self.target.display())
        })
    }
}

/// Writes `bytes` to `path` atomically: see [`atomic_write_with`].
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<Written> {
    atomic_write_parts(path, &[bytes])
}

/// Writes the concatenation of `parts` to `path` atomically (a report
/// written from slices of the text it was read from needs no joined copy):
/// see [`atomic_write_with`].
pub fn atomic_write_parts(path: &Path, parts: &[&[u8]]) -> Result<Written> {
    atomic_write_with(path, |w| parts.iter().try_for_each(|p| w.write_all(p)))
}

/// Writes what `fill` writes to `path` atomically: see [`AtomicFile`].
pub fn atomic_write_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<Written> {
    let mut file = AtomicFile::create(path)?;
    fill(file.writer()).with_context(|| format!("{}: cannot write", path.display()))?;
    file.commit()
}

/// A file being replaced atomically, written in pieces: a temp file in the
/// target's folder, written through a buffer (an output larger than memory
/// can be produced piece by piece, several files at once), then flushed
/// and renamed over the target by [`AtomicFile::commit`]. Dropped without
/// a commit, it removes the temp file and leaves the target as it was.
///
/// The target is the path asked for, or when that is a symbolic link
/// (dangling ones included) the file it finally points to, as pytest
/// writes through a link: the link stays a link. A target that was
/// read-only is replaced and reported in [`Written::replaced_read_only`].
///
/// What is guaranteed: a crash or kill of this process, or a write error
/// such as a full disk (the error is returned, naming the file), leaves
/// either the old file or the new one, never a truncated mix. What is not:
/// durability across a power loss or a kernel crash. The data is not
/// fsynced (the kernel writes it back later), so after a power cut the file
/// may be the old one, or on some file systems empty. The new file keeps
/// the old file's permissions when there was one, else 0644.
pub struct AtomicFile {
    path: PathBuf,
    target: PathBuf,
    out: std::io::BufWriter<tempfile::NamedTempFile>,
}

impl AtomicFile {
    /// Starts replacing `path`: creates the temp file beside its target.
    pub fn create(path: &Path) -> Result<AtomicFile> {
        let target = resolve_links(path)?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("{}: cannot create a temp file in {}", path.display(), dir.display()))?;
        let out = std::io::BufWriter::with_capacity(1 << 18, tmp);
        Ok(AtomicFile { path: path.to_path_buf(), target, out })
    }

    /// Where the new content goes. Write errors (ENOSPC, EIO) surface here
    /// or at [`AtomicFile::commit`].
    pub fn writer(&mut self) -> &mut dyn Write {
        &mut self.out
    }

    /// Flushes the content and renames it over the target.
    pub fn commit(self) -> Result<Written> {
        let AtomicFile { path, target, out } = self;
        let tmp = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("{}: cannot write", path.display()))?;
        let old_mode = fs::metadata(&target).ok().map(|m| m.permissions().mode() & 0o7777);
        let _ = fs::set_permissions(tmp.path(), fs::Permissions::from_mode(old_mode.unwrap_or(0o644)));
        tmp.persist(&target)
            .map_err(|e| e.error)
            .with_context(|| format!("{}: cannot rename the temp file into place", path.display()))?;
        Ok(Written { replaced_read_only: old_mode.filter(|m| m & 0o222 == 0), target })
    }
}

/// The file `path` finally names: symbolic links followed (relative
/// targets against the link's folder), the last one even when dangling.
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    // The kernel's own limit on links in one lookup.
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&p).with_context(|| format!("{}: cannot read the link", p.display()))?;
                p = match p.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            _ => return Ok(p),
        }
    }
    anyhow::bail!("{}: too many levels of symbolic links", path.display())
}

/// Creates the folder `path` goes in (and its parents) when missing.
pub fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create the folder {}", path.display(), parent.display())),
        _ => Ok(()),
    }
}

/// Appends `bytes` to `path` under an exclusive `flock`, creating the file
/// (and its parent folders) when missing.
///
/// Used for the crash log, which several processes (the wrapper, the shim in
/// an xdist controller, the original plugin) may append to at once. When the
/// file does not end with a newline (a writer killed mid-line), the append
/// starts with one, so the new lines never glue onto a cut-short line.
pub fn append_locked(path: &Path, bytes: &[u8]) -> Result<()> {
    create_parent(path)?;
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("{}: cannot open for appending", path.display()))?;
    let file = lock_exclusive(file).with_context(|| format!("{}: cannot lock", path.display()))?;
    let fresh = ends_mid_line(&file).with_context(|| format!("{}: cannot read its end", path.display()))?;
    let mut text = Vec::with_capacity(bytes.len() + 1);
    if fresh {
        text.push(b'\n');
    }
    text.extend_from_slice(bytes);
    // One write, so a reader never sees the newline without the record.
    (&*file).write_all(&text).with_context(|| format!("{}: cannot append", path.display()))?;
    Ok(())
}

/// True when a non-empty file's last byte is not a newline.
fn ends_mid_line(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] != b'\n')
}

/// Runs `f` while holding an exclusive `flock` on `lock_path` (created when
/// missing), so read-modify-write of a file shared by several processes
/// (the durations file of shards on shared storage) loses no update.
pub fn with_lock<T>(lock_path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(lock_path)
        .with_context(|| format!("{}: cannot open the lock file", lock_path.display()))?;
    let _lock = lock_exclusive(file).with_context(|| format!("{}: cannot lock", lock_path.display()))?;
    f()
}

/// Takes an exclusive `flock` on `file` (through `nix`), waiting for it; the
/// lock is released when the returned guard is dropped.
fn lock_exclusive(mut file: File) -> std::io::Result<Flock<File>> {
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(e.into()),
        }
    }
}

/// Reads a whole file into memory. The buffer's pages are made present
/// with one call before the read (a file of megabytes otherwise takes a
/// page fault per 4 KiB as the read fills it, a third of the time of
/// reading a report; where the kernel lacks the call, pages fault in as
/// before).
pub fn read_whole(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut f = File::open(path)?;
    let len = f.metadata().map_or(0, |m| m.len() as usize);
    let mut buf = Vec::with_capacity(len.saturating_add(1));
    prefault(buf.spare_capacity_mut().as_mut_ptr() as usize, len);
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Makes the whole pages of `len` bytes at `start` present (a hint: failure
/// changes nothing); small ranges are left to fault in.
fn prefault(start: usize, len: usize) {
    const PAGE: usize = 4096;
    if len < 16 * PAGE {
        return;
    }
    let lo = start.next_multiple_of(PAGE);
    let hi = (start + len) & !(PAGE - 1);
    if hi > lo {
        // SAFETY: the range lies inside an allocation the caller owns and
        // has not handed out; populating a page writes none of its bytes.
        unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_POPULATE_WRITE) };
    }
}

/// Reads a whole file to a string, with the path in the error.
pub fn read_to_string(path: &Path) -> Result<String> {
    let bytes = read_whole(path).with_context(|| format!("{}: cannot read", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        atomic_write_parts(&p, &[b"th", b"", b"ree"]).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
    }

    #[test]
    fn atomic_write_on_a_full_disk_fails_and_keeps_the_old_file() {
        // /dev/full is not a folder we can create temp files in; emulate a
        // full disk with a file-size limit instead, which makes write(2)
        // fail with EFBIG the way ENOSPC would.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.html");
        atomic_write(&p, b"old").unwrap();
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "fsutil::tests::full_disk_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("PA_FULL_DISK_TARGET", &p)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(out.contains("write failed as expected"), "{out}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// Runs in a child process started by
    /// `atomic_write_on_a_full_disk_fails_and_keeps_the_old_file` (hence
    /// ignored in a normal run): lowers RLIMIT_FSIZE so writes past 64 KiB
    /// fail, then writes 1 MiB.
    #[test]
    #[ignore = "run in a child process by atomic_write_on_a_full_disk_fails_and_keeps_the_old_file"]
    fn full_disk_child() {
        let target = std::env::var_os("PA_FULL_DISK_TARGET")
            .expect("PA_FULL_DISK_TARGET: this test runs only as the child of the full-disk test");
        // SAFETY: signal() with SIG_IGN installs no handler code, and
        // getrlimit/setrlimit get a pointer to a live, properly sized local
        // rlimit; all three only change this process (a child test process
        // of its own, so no other test sees the lowered limit).
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
            lim.rlim_cur = 64 * 1024;
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        let err = atomic_write_parts(Path::new(&target), &[&vec![b'y'; 1 << 20]]).unwrap_err();
        assert!(format!("{err:#}").contains("cannot write"), "{err:#}");
        // The parent test reads this line from the child test's stdout.
        #[allow(clippy::print_stdout)]
        {
            println!("write failed as expected: {err:#}");
        }
    }

    #[test]
    fn atomic_write_into_missing_folder_fails_with_path() {
        let err = atomic_write(Path::new("/nonexistent-dir/x.json"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent-dir/x.json"));
    }

    #[test]
    fn append_locked_creates_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/log.jsonl");
        append_locked(&p, b"a\n").unwrap();
        append_locked(&p, b"b\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "a\nb\n");
    }

    #[test]
    fn append_locked_starts_on_a_fresh_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        fs::write(&p, "{\"cut\": 1").unwrap();
        append_locked(&p, b"b\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "{\"cut\": 1\nb\n");
        fs::write(&p, "").unwrap();
        append_locked(&p, b"c\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "c\n");
    }
}
