//! The one error type that decides an exit status.
//!
//! Errors travel as `anyhow::Error` with context; where a failure has an
//! exit status of its own, the error at its root is an [`Error`] variant.
//! [`exit_code`] walks the chain and the first typed cause decides (the way
//! ripgrep's `main` looks for typed causes): the status never depends on
//! what a message says.

use std::path::PathBuf;

/// A failure with an exit status of its own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage of the command (exit 64).
    #[error("{0}")]
    Usage(String),
    /// The tool could not do its work: state folder, spawn, supervision (exit 70).
    #[error("{0}")]
    CouldNotWork(String),
    /// A crash record or report could not be written (exit 74).
    #[error("{}: cannot write: {source}", path.display())]
    CouldNotWrite {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The command was found but cannot be executed (exit 126, as shells do).
    #[error("{}: cannot execute: {source}", path.display())]
    CannotExecute {
        /// The program.
        path: PathBuf,
        /// Why (permission denied, bad interpreter...).
        source: std::io::Error,
    },
    /// `--gpus auto` (or a count) and no GPU in the job's allocation or on
    /// the node, or fewer than asked for (exit 64, as bad usage).
    #[error("{0}")]
    NoGpu(String),
    /// The command was not found (exit 127).
    #[error("{name}: command not found")]
    CommandNotFound {
        /// The name as given.
        name: String,
    },
}

/// Exit status: bad usage.
pub const EXIT_USAGE: i32 = 64;
/// Exit status: the wrapper could not work.
pub const EXIT_SOFTWARE: i32 = 70;
/// Exit status: a record or report could not be written.
pub const EXIT_IO: i32 = 74;
/// Exit status: the command cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit status: the command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

impl Error {
    /// This error's exit status.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::NoGpu(_) => EXIT_USAGE,
            Error::CouldNotWork(_) => EXIT_SOFTWARE,
            Error::CouldNotWrite { .. } => EXIT_IO,
            Error::CannotExecute { .. } => EXIT_CANNOT_EXECUTE,
            Error::CommandNotFound { .. } => EXIT_NOT_FOUND,
        }
    }

    /// The error for an `exec` of `path` that failed with `e`: not found
    /// (ENOENT, a missing interpreter too) or cannot execute (the rest).
    pub fn exec_failed(path: impl Into<PathBuf>, e: std::io::Error) -> Error {
        let path = path.into();
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::CommandNotFound { name: path.display().to_string() }
        } else {
            Error::CannotExecute { path, source: e }
        }
    }
}

/// The exit status for an error: the first [`Error`] in its chain decides;
/// anything else means the tool could not work (70).
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.chain().find_map(|cause| cause.downcast_ref::<Error>()).map_or(EXIT_SOFTWARE, Error::exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn the_type_decides_never_the_text() {
        let text_only = anyhow::anyhow!("/proc/command not found: cannot create the state folder");
        assert_eq!(exit_code(&text_only), EXIT_SOFTWARE);
        let typed: anyhow::Result<()> = Err(Error::CommandNotFound { name: "x".into() }.into());
        let wrapped = typed.context("starting run 1").unwrap_err();
        assert_eq!(exit_code(&wrapped), EXIT_NOT_FOUND);
        let denied = Error::exec_failed("/p", std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(denied.exit_code(), EXIT_CANNOT_EXECUTE);
        assert_eq!(exit_code(&anyhow::Error::new(Error::Usage("u".into()))), EXIT_USAGE);
    }
}
