//! Repairing the `.` and `..` entries of directories `fatfs` made.

use super::layout::Layout;
use super::table::dir_extents;
use crate::fs::FsKind;
use crate::region::Region;
use crate::Result;

/// Rewrites the `.` and `..` entries of directories `fatfs` made.
///
/// `fatfs` 0.3 writes each of them with a long-name entry before it, which
/// `fsck.vfat` rejects (the first two slots of a directory must be the short
/// entries `.` and `..`), and points `..` of a FAT32 root's child at the root
/// cluster where the specification says 0. So after making directories the
/// tree is walked and every directory that starts that way is fixed: `.` and
/// `..` moved to slots 0 and 1, the two slots after them marked deleted
/// (entries after them stay where they are).
pub(super) fn fix_new_dirs(region: &mut Region, kind: FsKind, l: &Layout) -> Result<()> {
    const DOT: &[u8; 11] = b".          ";
    const DOTDOT: &[u8; 11] = b"..         ";
    let mut seen = std::collections::HashSet::new();
    // (directory's first cluster or 0 for the root, depth)
    let mut todo = vec![(0u64, 0usize)];
    while let Some((dir, depth)) = todo.pop() {
        if depth > crate::extract::MAX_DEPTH {
            continue;
        }
        for (off, len) in dir_extents(region, kind, l, dir)? {
            let mut data = vec![0u8; len as usize];
            region.read_at_checked(&mut data, off)?;
            for e in data.chunks_exact(32) {
                if e[0] == 0 {
                    break;
                }
                let attr = e[11];
                if e[0] == 0xE5 || attr & 0x3F == 0x0F || attr & 0x08 != 0 || attr & 0x10 == 0 {
                    continue;
                }
                if &e[..11] == DOT || &e[..11] == DOTDOT {
                    continue;
                }
                let hi = if kind == FsKind::Fat32 {
                    u16::from_le_bytes([e[20], e[21]]) as u64
                } else {
                    0
                };
                let child = hi << 16 | u16::from_le_bytes([e[26], e[27]]) as u64;
                if !(2..l.clusters + 2).contains(&child) || !seen.insert(child) {
                    continue;
                }
                let at = l.data_start + (child - 2) * l.cluster_size;
                let mut head = [0u8; 128];
                if l.cluster_size < 128 {
                    continue;
                }
                region.read_at_checked(&mut head, at)?;
                let broken = head[11] & 0x3F == 0x0F
                    && &head[32..43] == DOT
                    && head[64 + 11] & 0x3F == 0x0F
                    && &head[96..107] == DOTDOT;
                if broken {
                    let mut fixed = [0u8; 128];
                    fixed[64] = 0xE5;
                    fixed[96] = 0xE5;
                    fixed[..32].copy_from_slice(&head[32..64]);
                    fixed[32..64].copy_from_slice(&head[96..128]);
                    // `..` of a child of the root points at cluster 0.
                    let parent = if dir == 0 { 0 } else { dir };
                    fixed[32 + 26..32 + 28].copy_from_slice(&(parent as u16).to_le_bytes());
                    fixed[32 + 20..32 + 22].copy_from_slice(&((parent >> 16) as u16).to_le_bytes());
                    region.write_at_checked(&fixed, at)?;
                }
                todo.push((child, depth + 1));
            }
        }
    }
    Ok(())
}
