//! pytest-abort: supervise pytest, name the test a hard crash killed and
//! how, keep every result already earned, finish the suite, and hand CI
//! complete reports.
//!
//! The modules read in the order data flows:
//! [`supervise`] (spawn, follow, decode each death) ->
//! [`attribute`] (death + marker + journal -> a typed [`model::Crash`]) ->
//! [`record`] (crash log) -> [`run`] (the retry loop) -> [`summary`].
//! [`marker`], [`journal`] and [`shim`] are the contract with the pytest
//! plugin; [`model`] holds the typed values (phase, death, outcome) that
//! [`record::CrashRecord`] turns into the crash log's strings; [`fsutil`] holds the atomic-write and locked-append helpers.

#![warn(missing_docs)]
// Output goes through the reporters (src/reporter/terminal.rs), whose writes never panic.
#![warn(clippy::print_stdout, clippy::print_stderr)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod attribute;
pub mod cli;
pub mod cli_tools;
pub mod compat;
pub mod completions;
pub mod error;
pub mod forensics;
pub mod fsutil;
pub mod gpu;
pub mod journal;
pub mod marker;
pub mod model;
pub mod record;
pub mod reporter;
/// Test reports (pytest-json-report, pytest-html, pytest-csv, JUnit XML): patch, create and merge.
pub mod reports;
pub mod run;
pub mod shard;
pub mod shim;
pub mod statelock;
pub mod summary;
pub mod supervise;
pub mod tool;
pub mod watchdog;

#[cfg(test)]
mod tests {
    /// README's "How the code is laid out" names every module and file of
    /// `src/` (binaries aside).
    #[test]
    fn readme_layout_names_every_module() {
        let root = env!("CARGO_MANIFEST_DIR");
        let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
        let start = readme.find("## How the code is laid out").expect("the layout section");
        let table = &readme[start..start + readme[start..].find("\n## Development").unwrap_or(readme.len() - start)];
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(format!("{root}/src")).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ["lib.rs", "bin"].contains(&name.as_str()) {
                continue;
            }
            if entry.path().is_dir() {
                if !table.contains(&format!("`{name}/`")) {
                    missing.push(format!("{name}/"));
                }
                for file in std::fs::read_dir(entry.path()).unwrap().flatten() {
                    let f = file.file_name().to_string_lossy().into_owned();
                    let named =
                        f == "mod.rs" || f == "tests.rs" || !f.ends_with(".rs") || table.contains(&format!("`{f}`"));
                    if !named {
                        missing.push(format!("{name}/{f}"));
                    }
                }
            } else if !table.contains(&format!("`{name}`")) {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "README's layout table does not name: {missing:?}");
    }
}
