//! Making a new, empty qcow2 image: version 3, 16-bit refcounts, clusters of
//! 64 KiB unless asked otherwise.

use super::header::Header;
use super::{cluster_bits_for, refcount, Qcow2Disk};
use crate::format::CreateOptions;
use crate::io::write_all_at;
use crate::{Disk, Error, Result};
use std::fs::File;
use std::path::Path;

/// Refcount order of new images: 16-bit refcounts, as qemu-img makes.
const REFCOUNT_ORDER: u32 = super::header::NEW_REFCOUNT_ORDER;

/// Makes an empty qcow2 image of `size` bytes in `file` (new and empty), and
/// returns it open for writing, with notes on any size adjustment.
pub fn create(
    file: File,
    path: &Path,
    size: u64,
    opts: &CreateOptions,
) -> Result<(Box<dyn Disk>, Vec<String>)> {
    let cb = cluster_bits_for(path, opts)?;
    let cs = 1u64 << cb;
    let mut notes = Vec::new();
    let rounded = size.div_ceil(512) * 512;
    if rounded != size {
        notes.push(format!(
            "size rounded up from {size} to {rounded} bytes (a whole number of sectors)"
        ));
    }
    let mut h = Header::new_v3(cb, rounded, 1)
        .map_err(|why| Error::InvalidArgument(format!("{}: {why}", path.display())))?;
    let l1_size = u64::from(h.l1_size);
    let l1_clusters = (l1_size * 8).div_ceil(cs);
    let rpb = refcount::entries_per_block(cb, REFCOUNT_ORDER);
    // Header, refcount table, refcount blocks, L1 table: the blocks must count
    // every cluster of all four, themselves included.
    let (mut rt, mut rb) = (1u64, 1u64);
    loop {
        let total = 1 + rt + rb + l1_clusters;
        let nrb = total.div_ceil(rpb);
        let nrt = (nrb * 8).div_ceil(cs);
        if nrb == rb && nrt == rt {
            break;
        }
        (rb, rt) = (nrb.max(rb), nrt.max(rt));
    }
    let total = 1 + rt + rb + l1_clusters;
    h.refcount_table_clusters = rt as u32;
    h.l1_table_offset = (1 + rt + rb) * cs;
    file.set_len(total * cs)
        .map_err(|e| Error::io(path, "resize", e))?;
    let mut table = vec![0u8; (rt * cs) as usize];
    for i in 0..rb {
        let off = (1 + rt + i) * cs;
        table[(i * 8) as usize..(i * 8 + 8) as usize].copy_from_slice(&off.to_be_bytes());
    }
    write_all_at(&file, path, &table, cs)?;
    let mut blocks = vec![0u8; (rb * cs) as usize];
    for c in 0..total {
        let (bi, i) = (c / rpb, c % rpb);
        let b = &mut blocks[(bi * cs) as usize..((bi + 1) * cs) as usize];
        refcount::set(b, REFCOUNT_ORDER, i, 1);
    }
    write_all_at(&file, path, &blocks, (1 + rt) * cs)?;
    // The header goes last: until it is written the file is no image at all.
    write_all_at(&file, path, &h.encode(), 0)?;
    let disk = Qcow2Disk::from_file(file, path, true)?;
    Ok((Box::new(disk), notes))
}
