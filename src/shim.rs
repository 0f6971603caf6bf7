//! The embedded shim: the plugin's Python source, compiled into the binary
//! and put on pytest's path (and every xdist worker's) by the wrapper.
//!
//! The files are the same ones `pip install ./shim` installs, so there is one
//! plugin source.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// The package files, relative to the package folder.
pub const FILES: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../shim/pytest_abort/__init__.py")),
    ("plugin.py", include_str!("../shim/pytest_abort/plugin.py")),
    ("_common.py", include_str!("../shim/pytest_abort/_common.py")),
    ("_marker.py", include_str!("../shim/pytest_abort/_marker.py")),
    ("_journal.py", include_str!("../shim/pytest_abort/_journal.py")),
    ("_controller.py", include_str!("../shim/pytest_abort/_controller.py")),
    ("_shard.py", include_str!("../shim/pytest_abort/_shard.py")),
    ("_gpu.py", include_str!("../shim/pytest_abort/_gpu.py")),
    ("_resume.py", include_str!("../shim/pytest_abort/_resume.py")),
    ("_poison.py", include_str!("../shim/pytest_abort/_poison.py")),
    ("_sched.py", include_str!("../shim/pytest_abort/_sched.py")),
    ("crash_file.py", include_str!("../shim/pytest_abort/crash_file.py")),
    ("abort_handling.py", include_str!("../shim/pytest_abort/abort_handling.py")),
    ("_exec.py", include_str!("../shim/pytest_abort/_exec.py")),
    ("retry.py", include_str!("../shim/pytest_abort/retry.py")),
    ("postprocess.py", include_str!("../shim/pytest_abort/postprocess.py")),
];

/// Environment variable naming the folder the wrapper keeps its compiled
/// copy of the plugin in (default: `$XDG_CACHE_HOME/pytest-abort`, else
/// `~/.cache/pytest-abort`); an empty value keeps it in each run's state
/// folder instead.
pub const ENV_CACHE_DIR: &str = "PYTEST_ABORT_CACHE_DIR";

/// Environment variable the wrapper sets to the folder it put first on
/// `PYTHONPATH`: the plugin caches its own bytecode there even under
/// `PYTHONDONTWRITEBYTECODE` (see `shim/pytest_abort/__init__.py`).
pub const ENV_SHIM_ROOT: &str = "PYTEST_ABORT_WRAP_SHIM";

/// Writes the package where pytest will import it from and returns the
/// folder to put first on `PYTHONPATH`.
///
/// The copy lives in a per-user cache folder named after this version and
/// a hash of the package's files (`<cache>/shim-<version>-<hash>/`), so
/// that the bytecode its first pytest process caches there serves every
/// later process and every later wrapper run, as an installed package's
/// does: no wrapper run after the first compiles the plugin. Where that
/// folder cannot be written (or [`ENV_CACHE_DIR`] is empty) the copy goes
/// into `<state_dir>/py/`, compiled once per wrapper run.
///
/// A folder first on `PYTHONPATH` shadows an installed `pytest_abort` (ours
/// or the original), so whichever way the plugin gets loaded (entry point,
/// `-p pytest_abort`, `-p pytest_abort.plugin`, `PYTEST_PLUGINS`) it is this
/// copy, registered once.
pub fn install(state_dir: &Path) -> Result<PathBuf> {
    if let Some(cache) = cache_dir() {
        if let Ok(root) = install_cached(&cache, SystemTime::now()) {
            return Ok(root);
        }
    }
    install_into(&state_dir.join("py"))
}

/// Copies of other plugin versions in the cache folder that no wrapper run
/// used for this long are removed (each run marks its own as used).
const STALE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// [`install`] into the cache folder `cache`: this version's copy, marked
/// as used `now`; other versions' copies unused since [`STALE_AFTER`]
/// before `now` are removed (best effort), so upgrades do not pile up.
fn install_cached(cache: &Path, now: SystemTime) -> Result<PathBuf> {
    let root = cache.join(format!("shim-{}-{:016x}", env!("CARGO_PKG_VERSION"), package_hash()));
    private_dir(cache)?;
    private_dir(&root)?;
    let root = install_into(&root)?;
    if let Ok(dir) = std::fs::File::open(&root) {
        let _ = dir.set_modified(now);
    }
    for entry in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        let path = entry.path();
        let stale = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t + STALE_AFTER < now);
        if stale && path != root && entry.file_name().to_string_lossy().starts_with("shim-") {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    Ok(root)
}

/// The per-user cache folder, when there is one to use.
fn cache_dir() -> Option<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(v) = std::env::var_os(ENV_CACHE_DIR) {
        return (!v.is_empty()).then(|| PathBuf::from(v));
    }
    nonempty("XDG_CACHE_HOME").or_else(|| nonempty("HOME").map(|h| h.join(".cache"))).map(|c| c.join("pytest-abort"))
}

/// Creates `path` (mode 0700) unless it exists, and checks that it belongs
/// to this user and nobody else can write to it: pytest imports the code
/// in it, so a cache folder others can write (a shared `XDG_CACHE_HOME`)
/// is not used.
fn private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("{}: cannot create the cache folder", path.display()))?;
    let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    anyhow::ensure!(
        meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0,
        "{}: not used as a cache folder: it belongs to another user or others can write to it",
        path.display()
    );
    Ok(())
}

/// FNV-1a over the package's file names and contents: names the cache
/// folder, so a wrapper with other plugin files never reuses this copy.
fn package_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, text) in FILES {
        eat(name.as_bytes());
        eat(&[0]);
        eat(text.as_bytes());
        eat(&[0]);
    }
    h
}

/// Writes the package and its distribution metadata under `root`, each
/// file only when its content differs (atomically, so a pytest of another
/// wrapper run importing it meanwhile never reads half a file).
fn install_into(root: &Path) -> Result<PathBuf> {
    let pkg = root.join("pytest_abort");
    std::fs::create_dir_all(&pkg).with_context(|| format!("{}: cannot create the shim folder", pkg.display()))?;
    let mut changed = false;
    for (name, text) in FILES {
        changed |= write_if_changed(&pkg.join(name), text.as_bytes())?;
    }
    if changed {
        // Python validates cached bytecode by the source's mtime (seconds)
        // and size: drop it rather than trust that across a rewrite.
        let cache = pkg.join("__pycache__");
        if cache.exists() {
            std::fs::remove_dir_all(&cache).with_context(|| format!("{}: cannot remove", cache.display()))?;
        }
    }
    // Our own distribution metadata, found before any installed one: its
    // entry point (the package, not `pytest_abort.plugin`) is the one pytest
    // registers as `pytest_abort`, so an installed original's entry point is
    // skipped by name and `-p pytest_abort.plugin` stays compatible with it.
    let dist = root.join(format!("pytest_abort-{}.dist-info", env!("CARGO_PKG_VERSION")));
    std::fs::create_dir_all(&dist).with_context(|| format!("{}: cannot create", dist.display()))?;
    for (name, text) in [
        ("METADATA", format!("Metadata-Version: 2.1\nName: pytest-abort\nVersion: {}\n", env!("CARGO_PKG_VERSION"))),
        ("entry_points.txt", "[pytest11]\npytest_abort = pytest_abort\n".to_string()),
    ] {
        write_if_changed(&dist.join(name), text.as_bytes())?;
    }
    Ok(root.to_path_buf())
}

/// Writes `path` (atomically) unless it already holds `bytes`; true when
/// it wrote.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    crate::fsutil::atomic_write(path, bytes)?;
    Ok(true)
}

/// Environment for a pytest run under the wrapper: the variables to set.
///
/// `PYTEST_PLUGINS` gains `pytest_abort` (which pytest deduplicates by name,
/// so an installed or `-p`-loaded copy is not registered twice), even under
/// `PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`.
pub fn child_env(py_root: &Path, state_dir: &Path, marker_dir: &Path, run: u32) -> Vec<(String, String)> {
    let mut pythonpath = py_root.display().to_string();
    if let Ok(old) = std::env::var("PYTHONPATH") {
        if !old.is_empty() {
            pythonpath.push(':');
            pythonpath.push_str(&old);
        }
    }
    let mut plugins: Vec<String> = std::env::var("PYTEST_PLUGINS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "pytest_abort")
        .collect();
    plugins.insert(0, "pytest_abort".to_string());
    vec![
        ("PYTHONPATH".into(), pythonpath),
        (ENV_SHIM_ROOT.into(), py_root.display().to_string()),
        ("PYTEST_PLUGINS".into(), plugins.join(",")),
        ("PYTEST_ABORT_WRAP_STATE".into(), state_dir.display().to_string()),
        ("PYTEST_ABORT_WRAP_RUN".into(), run.to_string()),
        ("PYTEST_ABORT_LAST_RUNNING_DIR".into(), marker_dir.display().to_string()),
        ("PYTHONFAULTHANDLER".into(), "1".into()),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    #[test]
    fn other_versions_unused_for_a_month_leave_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(24 * 3600);
        let now = SystemTime::now();
        let aged = |name: &str, age: Duration| {
            let p = cache.path().join(name);
            std::fs::create_dir_all(p.join("pytest_abort")).unwrap();
            std::fs::File::open(&p).unwrap().set_modified(now - age).unwrap();
            p
        };
        let old = aged("shim-0.1.0-00000000000000aa", 40 * day);
        let recent = aged("shim-0.1.0-00000000000000bb", 10 * day);
        let other = aged("not-ours", 400 * day);
        let root = super::install_cached(cache.path(), now).unwrap();
        assert!(root.join("pytest_abort/plugin.py").exists());
        assert!(!old.exists(), "unused for 40 days: removed");
        assert!(recent.exists() && other.exists());
        // A cache folder others can write to is not used.
        use std::os::unix::fs::PermissionsExt;
        let shared = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = super::install_cached(shared.path(), now).unwrap_err();
        assert!(err.to_string().contains("others can write"), "{err:#}");
        // This version's copy is marked used by each run, however old.
        std::fs::File::open(&root).unwrap().set_modified(now - 90 * day).unwrap();
        assert_eq!(super::install_cached(cache.path(), now).unwrap(), root);
        let used = std::fs::metadata(&root).unwrap().modified().unwrap();
        assert!(used + day > now, "marked used");
    }

    #[test]
    fn embedded_shim_is_the_whole_package() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shim/pytest_abort");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".py"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = crate::shim::FILES.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "src/shim.rs FILES must list every module of shim/pytest_abort");
    }
}
