//! Which of the footer's two sizes is the disk's size.
//!
//! A footer holds `current_size` and a CHS geometry, and readers disagree on which
//! to trust. vmhub reads as QEMU 10 does, so that a disk has one size on Linux:
//! the CHS product only for disks made by Virtual PC (`vpc `) or older QEMU
//! (`qemu`), whose geometry is the disk's real size; `current_size` for every other
//! creator, and whenever the geometry is the maximum 65535/16/255.

use super::footer::Footer;
use serde::Serialize;

/// Where the virtual size came from, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SizeSource {
    /// `"current-size"` or `"chs"`.
    pub field: &'static str,
    /// One sentence saying why.
    pub reason: String,
}

/// The disk's size in bytes (whole sectors), by QEMU 10's rule.
pub fn virtual_size(footer: &Footer) -> (u64, SizeSource) {
    let app = footer.creator_app_text();
    if footer.geometry.is_max() {
        (
            footer.current_size / 512 * 512,
            SizeSource {
                field: "current-size",
                reason:
                    "the geometry is the maximum 65535/16/255, which means the size is current_size"
                        .into(),
            },
        )
    } else if &footer.creator_app == b"vpc " || &footer.creator_app == b"qemu" {
        (
            footer.geometry.size(),
            SizeSource {
                field: "chs",
                reason: format!("creator \"{app}\" sizes disks by their CHS geometry"),
            },
        )
    } else {
        (
            footer.current_size / 512 * 512,
            SizeSource {
                field: "current-size",
                reason: format!("creator \"{app}\" records the exact size in current_size"),
            },
        )
    }
}
