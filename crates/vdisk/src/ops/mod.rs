//! Operations written once against the [`Disk`](crate::Disk) trait.

pub mod check;
pub mod compact;
pub mod compare;
pub mod convert;
pub mod merge;
pub mod resize;
