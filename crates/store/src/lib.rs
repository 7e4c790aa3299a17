//! The machine library: machines stored as content-defined, compressed chunks
//! in one portable folder laid out as an OCI image layout.
//!
//! - [`Library`] — import, list, show, tag, remove, prune, export.
//! - [`chunker`] — cutting a disk into chunks (FastCDC) and storing them.
//! - [`ChunkDisk`] — a stored disk read straight from its chunks.
//! - [`index`], [`machine`], [`manifest`] — the documents of the wire format.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blobs;
pub mod chunkdisk;
pub mod chunker;
pub mod digest;
pub mod error;
pub mod index;
pub mod library;
mod lock;
pub mod machine;
pub mod manifest;
pub mod oci;
pub mod reference;
pub mod trust;

pub use chunkdisk::{ChunkCache, ChunkDisk, ChunkSource};
pub use digest::{ContentDigest, Digest};
pub use error::{Error, Result};
pub use library::Library;
pub use reference::MachineRef;
