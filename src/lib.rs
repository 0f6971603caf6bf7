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
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod attribute;
pub mod cli;
pub mod cli_tools;
pub mod compat;
pub mod completions;
pub mod error;
pub mod forensics;
pub mod fsutil;
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
pub mod watchdog;
