//! Reading a hosted sparse extent: the grain directory, grain tables (read on
//! demand and cached) and grains, plain or deflate-compressed behind a grain
//! marker.

use super::header::{Marker, SparseHeader, GD_AT_END, GTE_ZERO, MAGIC, MARKER_FOOTER, SECTOR};
use crate::io::{read_exact_at, sync_data};
use crate::{Error, Result};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Grain-table entries kept in memory per extent at most (16 MiB); past that
/// the cache starts over.
const MAX_CACHED_ENTRIES: usize = 4 << 20;

/// Where a grain is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    /// Nowhere: the extent holds nothing for it.
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// At this byte offset of the file.
    At(u64),
}

/// An open hosted sparse extent.
pub struct SparseExtent {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) file_len: u64,
    /// The header in effect (the footer's, for a stream-optimized extent whose
    /// grain directory is at the end).
    pub(crate) header: SparseHeader,
    /// Bytes per grain.
    pub(crate) grain: u64,
    /// The grain directory: sector of each grain table (0: none).
    pub(crate) gd: Vec<u32>,
    gts: Mutex<HashMap<usize, Arc<[u32]>>>,
    /// The last grain inflated (its file offset and bytes).
    last: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

/// Reads the header of a sparse extent file, and the footer's copy when the
/// grain directory is at the end.
pub fn read_header(file: &File, path: &Path, len: u64) -> Result<SparseHeader> {
    let mut b = [0u8; 512];
    read_exact_at(file, path, &mut b, 0, "VMDK sparse extent header")?;
    let h = SparseHeader::decode(&b)
        .ok_or_else(|| Error::corrupt(path, "VMDK sparse extent header: magic is not \"KDMV\""))?;
    check_header(&h, path)?;
    if h.gd_offset != GD_AT_END {
        return Ok(h);
    }
    // Stream-optimized: footer marker, footer (a header copy), end-of-stream
    // marker, in the last three sectors.
    if len < 4 * SECTOR {
        return Err(Error::corrupt(
            path,
            "VMDK footer: the grain directory is at the end, but the file is too short for a footer",
        ));
    }
    let mut m = [0u8; 16];
    read_exact_at(file, path, &mut m, len - 3 * SECTOR, "VMDK footer marker")?;
    let marker = Marker::decode(&m);
    if marker.size != 0 || marker.kind != MARKER_FOOTER {
        return Err(Error::corrupt(
            path,
            format!(
                "VMDK footer marker at {}: type {} is not a footer marker",
                len - 3 * SECTOR,
                marker.kind
            ),
        ));
    }
    read_exact_at(file, path, &mut b, len - 2 * SECTOR, "VMDK footer")?;
    let f = SparseHeader::decode(&b)
        .ok_or_else(|| Error::corrupt(path, "VMDK footer: magic is not \"KDMV\""))?;
    check_header(&f, path)?;
    if f.gd_offset == GD_AT_END {
        return Err(Error::corrupt(
            path,
            "VMDK footer: the grain directory offset is \"at the end\" in the footer too",
        ));
    }
    Ok(f)
}

fn check_header(h: &SparseHeader, path: &Path) -> Result<()> {
    if let Some((field, msg, unsupported)) = h.problems().into_iter().next() {
        let what = format!("VMDK sparse extent header: {field}: {msg}");
        return Err(if unsupported {
            Error::unsupported(path, what)
        } else {
            Error::corrupt(path, what)
        });
    }
    Ok(())
}

impl SparseExtent {
    /// Opens the sparse extent in `file`.
    pub fn open(file: File, path: &Path) -> Result<SparseExtent> {
        let len = crate::io::file_len(&file, path)?;
        if len < SECTOR {
            return Err(Error::corrupt(
                path,
                format!("file is {len} bytes, too small for a VMDK sparse extent header"),
            ));
        }
        let header = read_header(&file, path, len)?;
        let entries = header.gd_entries();
        let gd_at = header.gd_offset.saturating_mul(SECTOR);
        let gd_len = entries.saturating_mul(4);
        if gd_at.saturating_add(gd_len) > len {
            return Err(Error::corrupt(
                path,
                format!(
                    "VMDK grain directory at sector {} ({entries} entries) extends past the end \
                     of the file ({len} bytes)",
                    header.gd_offset
                ),
            ));
        }
        let mut bytes = vec![0u8; gd_len as usize];
        read_exact_at(&file, path, &mut bytes, gd_at, "VMDK grain directory")?;
        let gd: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let gt_bytes = header.gt_bytes();
        for (i, &e) in gd.iter().enumerate() {
            if e != 0 && u64::from(e) * SECTOR + gt_bytes > len {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "VMDK grain directory: entry {i} points past the end of the file \
                         (grain table at sector {e})"
                    ),
                ));
            }
        }
        Ok(SparseExtent {
            path: path.to_path_buf(),
            file,
            file_len: len,
            grain: header.grain_size * SECTOR,
            header,
            gd,
            gts: Mutex::new(HashMap::new()),
            last: Mutex::new(None),
        })
    }

    /// The extent's size in bytes.
    pub fn capacity(&self) -> u64 {
        self.header.capacity * SECTOR
    }

    /// Grain table `i` of the directory, if it has one.
    pub fn grain_table(&self, i: usize) -> Result<Option<Arc<[u32]>>> {
        let sector = match self.gd.get(i) {
            Some(&0) | None => return Ok(None),
            Some(&s) => s,
        };
        if let Some(gt) = self.gts.lock().map_err(|_| self.poisoned())?.get(&i) {
            return Ok(Some(gt.clone()));
        }
        let mut bytes = vec![0u8; self.header.gt_bytes() as usize];
        read_exact_at(
            &self.file,
            &self.path,
            &mut bytes,
            u64::from(sector) * SECTOR,
            format_args!("VMDK grain table {i}"),
        )?;
        let gt: Arc<[u32]> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut cache = self.gts.lock().map_err(|_| self.poisoned())?;
        if (cache.len() + 1) * gt.len() > MAX_CACHED_ENTRIES {
            cache.clear();
        }
        cache.insert(i, gt.clone());
        Ok(Some(gt))
    }

    fn poisoned(&self) -> Error {
        Error::io(
            &self.path,
            "lock",
            std::io::Error::other("a reader panicked while holding the grain table cache"),
        )
    }

    /// Where grain `g` (numbered from the start of the extent) is.
    pub fn grain(&self, g: u64) -> Result<Grain> {
        let per = u64::from(self.header.gtes_per_gt);
        let Some(gt) = self.grain_table((g / per) as usize)? else {
            return Ok(Grain::Unallocated);
        };
        Ok(match gt.get((g % per) as usize).copied().unwrap_or(0) {
            0 => Grain::Unallocated,
            GTE_ZERO => Grain::Zero,
            s => {
                let at = u64::from(s) * SECTOR;
                if at >= self.file_len {
                    return Err(Error::corrupt(
                        &self.path,
                        format!(
                            "VMDK grain table {}: entry {} points past the end of the file (sector {s})",
                            g / per,
                            g % per
                        ),
                    ));
                }
                Grain::At(at)
            }
        })
    }

    /// Reads `buf.len()` bytes at `offset` within the extent.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut run: Option<(u64, usize, usize)> = None;
        let flush = |run: &mut Option<(u64, usize, usize)>, buf: &mut [u8]| -> Result<()> {
            if let Some((at, s, n)) = run.take() {
                read_exact_at(&self.file, &self.path, &mut buf[s..s + n], at, "VMDK grain")?;
            }
            Ok(())
        };
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let g = pos / self.grain;
            let within = pos % self.grain;
            let n = (self.grain - within).min(end - pos) as usize;
            let s = (pos - offset) as usize;
            match self.grain(g)? {
                Grain::At(at) if !self.header.compressed() => {
                    let at = at + within;
                    match &mut run {
                        Some((ra, _, rn)) if *ra + *rn as u64 == at => *rn += n,
                        _ => {
                            flush(&mut run, buf)?;
                            run = Some((at, s, n));
                        }
                    }
                }
                Grain::At(at) => {
                    flush(&mut run, buf)?;
                    let data = self.inflate(g, at)?;
                    let w = within as usize;
                    buf[s..s + n].copy_from_slice(&data[w..w + n]);
                }
                Grain::Zero | Grain::Unallocated => {
                    flush(&mut run, buf)?;
                    buf[s..s + n].fill(0);
                }
            }
            pos += n as u64;
        }
        flush(&mut run, buf)
    }

    /// The bytes of compressed grain `g` stored at `at`: a grain marker (LBA,
    /// size) and deflate data that must inflate to at most a grain.
    fn inflate(&self, g: u64, at: u64) -> Result<Arc<Vec<u8>>> {
        if let Some((o, d)) = self.last.lock().map_err(|_| self.poisoned())?.as_ref() {
            if *o == at {
                return Ok(d.clone());
            }
        }
        let mut head = [0u8; 12];
        read_exact_at(
            &self.file,
            &self.path,
            &mut head,
            at,
            format_args!("VMDK grain marker of grain {g}"),
        )?;
        let size = u64::from(u32::from_le_bytes([head[8], head[9], head[10], head[11]]));
        // Deflate never needs much more than its input; a size past that, or
        // past the file, is damage.
        let bound = self.grain + self.grain / 8 + 1024;
        if size > bound || at + 12 + size > self.file_len {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "VMDK grain {g}: compressed size {size} at offset {at} is larger than a grain \
                     can need or extends past the end of the file"
                ),
            ));
        }
        let mut input = vec![0u8; size as usize];
        read_exact_at(
            &self.file,
            &self.path,
            &mut input,
            at + 12,
            format_args!("VMDK compressed grain {g}"),
        )?;
        let out = super::compress::inflate(&input, self.grain as usize).map_err(|e| {
            Error::corrupt(&self.path, format!("VMDK grain {g} at offset {at}: {e}"))
        })?;
        let out = Arc::new(out);
        *self.last.lock().map_err(|_| self.poisoned())? = Some((at, out.clone()));
        Ok(out)
    }

    /// Bytes of the first `len` bytes of the extent that grains hold (not
    /// zero grains), counted a grain table at a time.
    pub fn allocated_bytes(&self, len: u64) -> Result<u64> {
        let per = u64::from(self.header.gtes_per_gt);
        let mut total = 0;
        for i in 0..self.gd.len() {
            let Some(gt) = self.grain_table(i)? else {
                continue;
            };
            for (j, &e) in gt.iter().enumerate() {
                let start = (i as u64 * per + j as u64) * self.grain;
                if e > GTE_ZERO && start < len {
                    total += self.grain.min(len - start);
                }
            }
        }
        Ok(total)
    }

    /// Makes the extent file durable.
    pub fn sync(&self) -> Result<()> {
        sync_data(&self.file, &self.path)
    }
}

/// True when `head` starts with a sparse extent header.
pub fn is_sparse(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}
