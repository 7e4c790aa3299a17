//! Typed errors for everything `vdisk` does.

use std::io;
use std::path::{Path, PathBuf};

/// Result of a `vdisk` operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and with which file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an operation on a file.
    #[error("{}: {op} failed", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What was being done ("read", "write", "open", ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The image is malformed: a structure or field holds a value that cannot be right.
    #[error("{}: {what}", path.display())]
    Corrupt {
        /// The image file.
        path: PathBuf,
        /// Which structure and field, and what is wrong with it.
        what: String,
    },
    /// The image is well formed but uses something this version cannot handle.
    #[error("{}: {what}", path.display())]
    Unsupported {
        /// The image file.
        path: PathBuf,
        /// What is not supported.
        what: String,
    },
    /// A request outside the disk (offset or length past its virtual size).
    #[error("{}: range {offset}+{len} lies outside the disk's {size} bytes", path.display())]
    OutOfRange {
        /// The image file.
        path: PathBuf,
        /// Start of the request.
        offset: u64,
        /// Length of the request.
        len: u64,
        /// The disk's virtual size.
        size: u64,
    },
    /// A write to an image opened read-only.
    #[error("{}: image is open read-only", path.display())]
    ReadOnly {
        /// The image file.
        path: PathBuf,
    },
    /// A caller passed a value that cannot be used (a size, a block size, a format name).
    #[error("{0}")]
    InvalidArgument(String),
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

    /// A corruption found in `path`.
    pub fn corrupt(path: &Path, what: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    /// Something in `path` that this version does not support.
    pub fn unsupported(path: &Path, what: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}
