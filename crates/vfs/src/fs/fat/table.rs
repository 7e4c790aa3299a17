//! The allocation table: reading it, checking its chains, following a
//! directory's chain, and finding the free clusters.

use super::layout::Layout;
use crate::fs::FsKind;
use crate::region::Region;
use crate::{Error, Result};

/// The first FAT as one entry per cluster (index = cluster number).
pub(super) fn read_table(
    region: &mut Region,
    kind: FsKind,
    l: &Layout,
    name: &str,
) -> Result<Vec<u32>> {
    let entries = l.clusters + 2;
    let bytes = match kind {
        FsKind::Fat12 => (entries * 3).div_ceil(2),
        FsKind::Fat16 => entries * 2,
        _ => entries * 4,
    };
    if l.fat_start.saturating_add(bytes) > region.len() {
        return Err(Error::Corrupt(format!(
            "{name}: the allocation table runs past the end of the volume"
        )));
    }
    // Bounded by the volume's length, checked above.
    let mut raw = vec![0u8; bytes as usize];
    region.read_at_checked(&mut raw, l.fat_start)?;
    let _ = l.bytes_per_sector;
    let mut out = Vec::with_capacity(entries as usize);
    for n in 0..entries as usize {
        let v = match kind {
            FsKind::Fat12 => {
                let at = n + n / 2;
                let pair = u16::from_le_bytes([raw[at], raw.get(at + 1).copied().unwrap_or(0)]);
                let v = if n % 2 == 0 { pair & 0x0FFF } else { pair >> 4 };
                // Normalize the special values to FAT32's.
                match v {
                    0xFF7 => 0x0FFF_FFF7,
                    v if v >= 0xFF8 => 0x0FFF_FFFF,
                    v => v as u32,
                }
            }
            FsKind::Fat16 => {
                let v = u16::from_le_bytes([raw[2 * n], raw[2 * n + 1]]);
                match v {
                    0xFFF7 => 0x0FFF_FFF7,
                    v if v >= 0xFFF8 => 0x0FFF_FFFF,
                    v => v as u32,
                }
            }
            _ => {
                u32::from_le_bytes([raw[4 * n], raw[4 * n + 1], raw[4 * n + 2], raw[4 * n + 3]])
                    & 0x0FFF_FFFF
            }
        };
        out.push(v);
    }
    Ok(out)
}

const BAD: u32 = 0x0FFF_FFF7;

/// Checks that every chain in the table ends: each link points at a cluster
/// of the volume, and no chain comes back to a cluster it went through.
pub(super) fn check_chains(table: &[u32], name: &str) -> Result<()> {
    let n = table.len();
    // 0: not seen, 1: on the walk in progress, 2: known to end.
    let mut state = vec![0u8; n];
    let mut walk = Vec::new();
    for first in 2..n {
        if state[first] != 0 {
            continue;
        }
        let mut c = first;
        walk.clear();
        loop {
            match state[c] {
                2 => break,
                1 => {
                    return Err(Error::Corrupt(format!(
                        "{name}: the cluster chain through cluster {c} loops back on itself"
                    )))
                }
                _ => {}
            }
            state[c] = 1;
            walk.push(c);
            let next = table[c];
            if next == 0 || next >= BAD {
                break;
            }
            if next < 2 || next as usize >= n {
                return Err(Error::Corrupt(format!(
                    "{name}: cluster {c} links to cluster {next}, which is not on the volume (clusters 2–{})",
                    n - 1
                )));
            }
            c = next as usize;
        }
        for &w in &walk {
            state[w] = 2;
        }
    }
    Ok(())
}

/// The FAT entry of `cluster`, read from the first table.
fn fat_entry(region: &mut Region, kind: FsKind, l: &Layout, cluster: u64) -> Result<u32> {
    let mut b = [0u8; 4];
    let v = match kind {
        FsKind::Fat12 => {
            region.read_at_checked(&mut b[..2], l.fat_start + cluster + cluster / 2)?;
            let pair = u16::from_le_bytes([b[0], b[1]]);
            let v = if cluster % 2 == 0 {
                pair & 0x0FFF
            } else {
                pair >> 4
            };
            if v >= 0xFF7 {
                BAD
            } else {
                v as u32
            }
        }
        FsKind::Fat16 => {
            region.read_at_checked(&mut b[..2], l.fat_start + cluster * 2)?;
            let v = u16::from_le_bytes([b[0], b[1]]);
            if v >= 0xFFF7 {
                BAD
            } else {
                v as u32
            }
        }
        _ => {
            region.read_at_checked(&mut b, l.fat_start + cluster * 4)?;
            u32::from_le_bytes(b) & 0x0FFF_FFFF
        }
    };
    Ok(v)
}

/// Byte ranges (offset, length) of the directory starting at `cluster`
/// (0: the root), following its chain for at most every cluster of the volume.
pub(super) fn dir_extents(
    region: &mut Region,
    kind: FsKind,
    l: &Layout,
    cluster: u64,
) -> Result<Vec<(u64, u64)>> {
    let mut c = if cluster == 0 {
        l.root_cluster
    } else {
        cluster
    };
    if c == 0 {
        return Ok(vec![l.root_dir]);
    }
    let mut out = Vec::new();
    while (2..l.clusters + 2).contains(&c) {
        if out.len() as u64 > l.clusters {
            return Err(Error::Corrupt(format!(
                "{}: a directory's cluster chain loops",
                region.name()
            )));
        }
        out.push((l.data_start + (c - 2) * l.cluster_size, l.cluster_size));
        let next = fat_entry(region, kind, l, c)?;
        if next == 0 || next >= BAD {
            break;
        }
        c = next as u64;
    }
    Ok(out)
}

/// Byte ranges (offset, length) of the free clusters in `table`, adjacent
/// ones merged.
pub(super) fn free_ranges(table: &[u32], l: &Layout) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (c, &v) in table.iter().enumerate().skip(2) {
        if v != 0 {
            continue;
        }
        let off = l.data_start + (c as u64 - 2) * l.cluster_size;
        match out.last_mut() {
            Some(last) if last.0 + last.1 == off => last.1 += l.cluster_size,
            _ => out.push((off, l.cluster_size)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_that_loop_or_leave_are_found() {
        let ok = vec![0x0FFF_FFF8, 0x0FFF_FFFF, 3, 4, 0x0FFF_FFFF, 0, 0x0FFF_FFF7];
        check_chains(&ok, "t").unwrap();
        let looped = vec![0, 0, 3, 4, 2, 0];
        let e = check_chains(&looped, "t").unwrap_err().to_string();
        assert!(e.contains("loops"), "{e}");
        let out = vec![0, 0, 3, 99];
        let e = check_chains(&out, "t").unwrap_err().to_string();
        assert!(e.contains("not on the volume"), "{e}");
        // Two chains joining is odd but ends; it must not be taken for a loop.
        let join = vec![0, 0, 4, 4, 0x0FFF_FFFF];
        check_chains(&join, "t").unwrap();
    }
}
