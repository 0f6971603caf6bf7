//! Drop-in compatibility with the original Python `pytest-abort`, one job a
//! module: the `pytest-abort-retry` command ([`retry`]), the original's
//! crash info ([`crash_info`]), and `handle_abort` with the
//! `append_abort_to_*` helpers that runner scripts call ([`handle_abort`]),
//! which the Python shim forwards to `pytest-abort` subcommands.
//!
//! Report formats are not handled here: every report edit goes through
//! [`crate::reports`].

pub mod crash_info;
pub mod handle_abort;
pub mod retry;

pub use crash_info::{
    anchored_nodeid, append_crash_info, crash_info_from_marker, parse_crash_info, record_from_info, GENERIC_REASON,
};
pub use handle_abort::{append, handle_abort, AppendArgs, HandleAbortArgs};
pub use retry::{crashed_nodeids, original_status, retry_main, retry_summary, RetryArgs, RETRY_SUMMARY_HEADING};
