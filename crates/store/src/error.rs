//! Typed errors for the machine library.

use std::io;
use std::path::{Path, PathBuf};

/// Result of a library operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and with which file, blob or machine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an operation on a file.
    #[error("{}: {op} failed", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Stored data is not what it should be: a digest that does not match, a
    /// blob or document that cannot be parsed, a value out of its bounds.
    #[error("{what}: {problem}")]
    Corrupt {
        /// The blob, file or document (a digest or a path).
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No machine of that name and tag in the library.
    #[error("{0}: no such machine in the library")]
    NotFound(String),
    /// A value the caller passed cannot be used.
    #[error("{0}")]
    InvalidArgument(String),
    /// A machine's signature is missing, unknown, or the machine is older
    /// than one already trusted under its name.
    #[error("{0}")]
    Untrusted(String),
    /// A registry answered something other than what was asked for.
    #[error("{url}: {problem}")]
    Registry {
        /// The request's URL.
        url: String,
        /// What happened.
        problem: String,
    },
    /// Reading or writing a disk image failed.
    #[error(transparent)]
    Disk(#[from] vdisk::Error),
}

impl Error {
    /// An I/O error on `path` while doing `op`.
    pub fn io(path: &Path, op: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }

    /// Data in `what` that is not right.
    pub fn corrupt(what: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            problem: problem.into(),
        }
    }
}
