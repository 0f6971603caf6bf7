//! The embedded shim: the plugin's Python source, compiled into the binary
//! and put on pytest's path (and every xdist worker's) by the wrapper.
//!
//! The files are the same ones `pip install ./shim` installs, so there is one
//! plugin source.

use std::path::{Path, PathBuf};

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

/// Writes the package into `<state_dir>/py/pytest_abort/` and returns the
/// folder to put first on `PYTHONPATH`.
///
/// A folder first on `PYTHONPATH` shadows an installed `pytest_abort` (ours
/// or the original), so whichever way the plugin gets loaded (entry point,
/// `-p pytest_abort`, `-p pytest_abort.plugin`, `PYTEST_PLUGINS`) it is this
/// copy, registered once.
pub fn install(state_dir: &Path) -> Result<PathBuf> {
    let root = state_dir.join("py");
    let pkg = root.join("pytest_abort");
    std::fs::create_dir_all(&pkg).with_context(|| format!("{}: cannot create the shim folder", pkg.display()))?;
    let mut changed = false;
    for (name, text) in FILES {
        let path = pkg.join(name);
        // Unchanged files keep their times, so the bytecode the plugin cached
        // in a kept state folder stays valid.
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        changed = true;
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write the shim", path.display()))?;
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
        let path = dist.join(name);
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(root)
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
