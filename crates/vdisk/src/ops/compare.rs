//! Comparing the contents of two disks, whatever their formats.

use crate::io::is_zero;
use crate::{Disk, ExtentKind, Result};

/// How two disks compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Same bytes (the larger disk's extra part, if any, reads as zeros).
    Identical,
    /// The sizes differ (in strict mode), or the larger disk's extra part holds data.
    SizeMismatch {
        /// Size of the first disk.
        a: u64,
        /// Size of the second disk.
        b: u64,
    },
    /// The first byte that differs.
    Differ {
        /// Its offset.
        offset: u64,
    },
}

const WINDOW: u64 = 4 << 20;

fn reads_zero(disk: &dyn Disk, offset: u64, len: u64) -> Result<bool> {
    Ok(disk
        .map(offset, len)?
        .iter()
        .all(|e| e.kind != ExtentKind::Data))
}

/// Compares `a` and `b` byte by byte, skipping ranges both know to be zeros. With
/// `strict`, disks of different sizes differ; otherwise the larger one's extra
/// part must read as zeros, as `qemu-img compare` does. `progress` gets
/// (bytes done, bytes total).
pub fn compare(
    a: &dyn Disk,
    b: &dyn Disk,
    strict: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Comparison> {
    let (sa, sb) = (a.virtual_size(), b.virtual_size());
    if strict && sa != sb {
        return Ok(Comparison::SizeMismatch { a: sa, b: sb });
    }
    let common = sa.min(sb);
    let total = sa.max(sb);
    let mut ba = vec![0u8; WINDOW as usize];
    let mut bb = vec![0u8; WINDOW as usize];
    let mut pos = 0;
    while pos < common {
        let n = WINDOW.min(common - pos);
        let (za, zb) = (reads_zero(a, pos, n)?, reads_zero(b, pos, n)?);
        if !(za && zb) {
            let (xa, xb) = (&mut ba[..n as usize], &mut bb[..n as usize]);
            if za {
                xa.fill(0)
            } else {
                a.read_at(xa, pos)?
            }
            if zb {
                xb.fill(0)
            } else {
                b.read_at(xb, pos)?
            }
            if xa != xb {
                let i = xa
                    .iter()
                    .zip(xb.iter())
                    .position(|(p, q)| p != q)
                    .unwrap_or(0);
                return Ok(Comparison::Differ {
                    offset: pos + i as u64,
                });
            }
        }
        pos += n;
        progress(pos, total);
    }
    let larger: &dyn Disk = if sa > sb { a } else { b };
    while pos < total {
        let n = WINDOW.min(total - pos);
        if !reads_zero(larger, pos, n)? {
            let x = &mut ba[..n as usize];
            larger.read_at(x, pos)?;
            if !is_zero(x) {
                return Ok(Comparison::SizeMismatch { a: sa, b: sb });
            }
        }
        pos += n;
        progress(pos, total);
    }
    Ok(Comparison::Identical)
}
