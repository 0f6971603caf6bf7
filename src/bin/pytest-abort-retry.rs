//! `pytest-abort-retry [--crash-log P] [--max-runs N] [--clear-crash-log] -- pytest ARGS...`
//!
//! Drop-in for the original's retry command, run by the wrapper in deselect
//! mode (see [`pytest_abort::compat::retry_main`]).

use pytest_abort::compat::{retry_main, RetryArgs};

fn main() {
    let args = RetryArgs::parse_or_exit();
    std::process::exit(retry_main(&args));
}
