//! Typed errors for everything `vfs` does.

/// Result of a `vfs` operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. Messages name the image, the partition or the path inside
/// the filesystem, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk image below could not be read or written.
    #[error(transparent)]
    Disk(#[from] vdisk::Error),
    /// A path, partition or entry that does not exist.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// An entry that already exists where a new one was to be made.
    #[error("{0}: already exists")]
    Exists(String),
    /// A directory where a file was expected.
    #[error("{0}: is a directory")]
    IsDir(String),
    /// A file where a directory was expected.
    #[error("{0}: not a directory")]
    NotDir(String),
    /// A directory that is not empty, removed without recursion.
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    /// A partition table or filesystem structure that cannot be right.
    #[error("{0}")]
    Corrupt(String),
    /// Something well formed that this version does not handle (writing to a
    /// read-only filesystem kind, an unknown filesystem).
    #[error("{0}")]
    Unsupported(String),
    /// A caller passed something that cannot be used (a bad path, a bad size).
    #[error("{0}")]
    Invalid(String),
    /// A local file or folder could not be read or written.
    #[error("{path}: {op} failed: {source}")]
    Local {
        /// The local path.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An error on the local file `path` while doing `op`.
    pub fn local(path: &std::path::Path, op: &'static str, source: std::io::Error) -> Self {
        Error::Local {
            path: path.display().to_string(),
            op,
            source,
        }
    }
}
