//! Content digests in the OCI form `algorithm:encoded` (OCI image spec,
//! "Digests"): the machine library's own, so that the hub and its clients
//! agree on every byte. The hub stores SHA-256 only; [`Digest::parse`] tells a
//! well-formed digest of another algorithm (refused as unsupported) from junk.

pub use store::digest::{Digest, DigestError, Hasher};
