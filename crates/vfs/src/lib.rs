//! What is inside a disk image: partition tables ([`part`]), filesystems behind
//! one [`Volume`] interface ([`fs`]), paths that name a file in an image
//! ([`path`]), and safe extraction to a local folder ([`extract`]).
//!
//! Everything reads through [`vdisk::Disk`], so every format and every
//! differencing chain vdisk opens can be looked into; writes (FAT only) go to
//! the top of a chain, never to its base.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod build;
pub mod error;
pub mod extract;
pub mod fs;
pub mod image;
pub mod inspect;
pub mod part;
pub mod path;
pub mod region;
pub mod time;

pub use error::{Error, Result};
pub use fs::{open_volume, Entry, EntryKind, FsKind, Volume};
pub use image::Image;
pub use part::{read_table, Partition, Table, TableKind};
pub use path::{normalize, Target};
pub use region::{share, Region, SharedDisk};
