//! Writing a new stream-optimized VMDK (the kind OVA packages and VMware's
//! import take): one sparse extent whose grains are deflate-compressed behind
//! grain markers, written in ascending order, with the grain tables, grain
//! directory, footer and end-of-stream marker after the last grain.
//!
//! Writes must come in ascending order (as `img convert` makes them). Every
//! [`Disk::flush`] writes the grain being filled and then the metadata after
//! it, so that each flush leaves a complete image; a later write continues
//! from where that metadata began, and the next flush writes it anew. Grains
//! that hold only zeros are never stored.

use super::compress::{deflate, inflate};
use super::descriptor::new_text;
use super::header::{
    Marker, SparseHeader, COMPRESS_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_DETECT,
    GD_AT_END, MARKER_FOOTER, MARKER_GD, MARKER_GT, SECTOR,
};
use crate::format::CreateOptions;
use crate::io::{is_zero, read_exact_at, sync_data, write_all_at};
use crate::{check_range, push_extent, Disk, Error, Extent, ExtentKind, ImageInfo, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The default grain: 64 KiB, as VMware and QEMU use.
pub const DEFAULT_GRAIN: u64 = 64 << 10;
/// Entries per grain table.
pub(crate) const GTES_PER_GT: u32 = 512;
/// Sectors reserved for the embedded descriptor.
pub(crate) const DESCRIPTOR_SECTORS: u64 = 20;
/// Sector of the first grain: the header and descriptor fit before it.
pub(crate) const OVERHEAD_SECTORS: u64 = 128;

/// A stream-optimized VMDK being written.
pub struct StreamWriter {
    path: PathBuf,
    file: File,
    size: u64,
    grain: u64,
    header: SparseHeader,
    /// Grains stored so far, ascending: (grain number, sector of its marker).
    stored: Vec<(u64, u64)>,
    /// Where the next finished grain goes (bytes).
    data_end: u64,
    /// The grain being filled: its number and bytes.
    current: Option<(u64, Vec<u8>)>,
    /// One past the last byte written; writes may not start before it.
    last_end: u64,
    /// Whether anything changed since the last flush.
    dirty: bool,
}

pub(crate) fn pad_to_sector(n: u64) -> u64 {
    n.div_ceil(SECTOR) * SECTOR
}

impl StreamWriter {
    /// Makes `file` (new and empty) an empty stream-optimized VMDK of `size`
    /// bytes. Returns the writer and notes on any size adjustment.
    pub fn create(
        file: File,
        path: &Path,
        size: u64,
        opts: &CreateOptions,
    ) -> Result<(StreamWriter, Vec<String>)> {
        if opts.image_type == crate::ImageType::Fixed {
            return Err(Error::InvalidArgument(format!(
                "{}: fixed VMDK images cannot be created; VMDK images are written stream-optimized",
                path.display()
            )));
        }
        let grain = opts.block_size.unwrap_or(DEFAULT_GRAIN);
        if !grain.is_power_of_two() || !(4096..=super::MAX_GRAIN_SECTORS * SECTOR).contains(&grain)
        {
            return Err(Error::InvalidArgument(format!(
                "{}: VMDK grain size {grain} must be a power of two from 4096 to {}",
                path.display(),
                super::MAX_GRAIN_SECTORS * SECTOR
            )));
        }
        let mut notes = Vec::new();
        let rounded = pad_to_sector(size);
        if rounded != size {
            notes.push(format!(
                "size rounded up from {size} to {rounded} bytes (a whole number of sectors)"
            ));
        }
        let capacity = rounded / SECTOR;
        if capacity > super::MAX_CAPACITY_SECTORS {
            return Err(Error::InvalidArgument(format!(
                "{}: {rounded} bytes are more than a VMDK image of vmhub's holds ({} bytes)",
                path.display(),
                super::MAX_CAPACITY_SECTORS * SECTOR
            )));
        }
        let header = stream_header(capacity, grain / SECTOR);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().replace('"', "_"))
            .unwrap_or_else(|| "disk.vmdk".into());
        let mut cid = [0u8; 4];
        getrandom::fill(&mut cid)
            .map_err(|e| Error::io(path, "getrandom", std::io::Error::other(e.to_string())))?;
        let text = new_text("streamOptimized", &name, capacity, u32::from_le_bytes(cid));
        let mut desc = text.into_bytes();
        if desc.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
            return Err(Error::InvalidArgument(format!(
                "{}: file name too long for the VMDK descriptor",
                path.display()
            )));
        }
        desc.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
        write_all_at(&file, path, &header.encode(), 0)?;
        write_all_at(&file, path, &desc, SECTOR)?;
        let mut w = StreamWriter {
            path: path.to_path_buf(),
            file,
            size: rounded,
            grain,
            header,
            stored: Vec::new(),
            data_end: OVERHEAD_SECTORS * SECTOR,
            current: None,
            last_end: 0,
            dirty: true,
        };
        w.write_metadata()?;
        Ok((w, notes))
    }

    /// Bytes of grain `g` (the last grain may be short).
    fn grain_len(&self, g: u64) -> usize {
        self.grain.min(self.size - g * self.grain) as usize
    }

    /// Writes grain `g` with `data` at `at` (bytes): its marker and its
    /// compressed bytes. Returns where the next one goes.
    fn put_grain(&self, g: u64, data: &[u8], at: u64) -> Result<u64> {
        let z = deflate(data).map_err(|e| Error::corrupt(&self.path, format!("grain {g}: {e}")))?;
        let mut b = Vec::with_capacity(12 + z.len() + SECTOR as usize);
        b.extend_from_slice(&(g * self.header.grain_size).to_le_bytes());
        b.extend_from_slice(&(z.len() as u32).to_le_bytes());
        b.extend_from_slice(&z);
        b.resize(pad_to_sector(b.len() as u64) as usize, 0);
        write_all_at(&self.file, &self.path, &b, at)?;
        Ok(at + b.len() as u64)
    }

    /// Stores the grain being filled for good (no later write can reach it).
    fn finish_current(&mut self) -> Result<()> {
        if let Some((g, data)) = self.current.take() {
            if !is_zero(&data) {
                let next = self.put_grain(g, &data, self.data_end)?;
                self.stored.push((g, self.data_end / SECTOR));
                self.data_end = next;
            }
        }
        Ok(())
    }

    /// Writes the grain being filled (provisionally), then grain tables, grain
    /// directory, footer and end-of-stream marker, and cuts the file after them.
    fn write_metadata(&mut self) -> Result<()> {
        let mut entries = self.stored.clone();
        let mut pos = self.data_end;
        if let Some((g, data)) = &self.current {
            if !is_zero(data) {
                entries.push((*g, pos / SECTOR));
                pos = self.put_grain(*g, data, pos)?;
            }
        }
        let meta = stream_tail(&self.header, &entries, pos).map_err(|why| {
            Error::unsupported(&self.path, format!("VMDK: the image grew past {why}"))
        })?;
        write_all_at(&self.file, &self.path, &meta, pos)?;
        self.file
            .set_len(pos + meta.len() as u64)
            .map_err(|e| Error::io(&self.path, "resize", e))?;
        Ok(())
    }

    /// The bytes of stored grain `g`, if it is stored.
    fn stored_grain(&self, g: u64) -> Result<Option<Vec<u8>>> {
        if let Some((cg, data)) = &self.current {
            if *cg == g {
                return Ok(Some(data.clone()));
            }
        }
        let Ok(i) = self.stored.binary_search_by_key(&g, |e| e.0) else {
            return Ok(None);
        };
        let at = self.stored[i].1 * SECTOR;
        let mut head = [0u8; 12];
        read_exact_at(&self.file, &self.path, &mut head, at, "VMDK grain marker")?;
        let n = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let mut z = vec![0u8; n];
        read_exact_at(
            &self.file,
            &self.path,
            &mut z,
            at + 12,
            "VMDK compressed grain",
        )?;
        let mut out = inflate(&z, self.grain as usize)
            .map_err(|e| Error::corrupt(&self.path, format!("VMDK grain {g}: {e}")))?;
        out.truncate(self.grain_len(g));
        Ok(Some(out))
    }
}

impl Disk for StreamWriter {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.path, offset, buf.len() as u64, self.size)?;
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let g = pos / self.grain;
            let within = (pos % self.grain) as usize;
            let n = (self.grain - pos % self.grain).min(end - pos) as usize;
            let s = (pos - offset) as usize;
            match self.stored_grain(g)? {
                Some(data) => buf[s..s + n].copy_from_slice(&data[within..within + n]),
                None => buf[s..s + n].fill(0),
            }
            pos += n as u64;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(&self.path, offset, buf.len() as u64, self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        if offset < self.last_end {
            return Err(Error::unsupported(
                &self.path,
                format!(
                    "a stream-optimized VMDK is written in ascending order: a write at byte \
                     {offset} comes before the end of the previous write (byte {})",
                    self.last_end
                ),
            ));
        }
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let g = pos / self.grain;
            let within = (pos % self.grain) as usize;
            let n = (self.grain - pos % self.grain).min(end - pos) as usize;
            let s = (pos - offset) as usize;
            let piece = &buf[s..s + n];
            if self.current.as_ref().map(|c| c.0) != Some(g) {
                self.finish_current()?;
                if is_zero(piece) {
                    // A grain that only zeros reached so far needs nothing yet.
                    pos += n as u64;
                    continue;
                }
                let len = self.grain_len(g);
                self.current = Some((g, vec![0u8; len]));
            }
            if let Some((_, data)) = &mut self.current {
                data[within..within + n].copy_from_slice(piece);
            }
            pos += n as u64;
        }
        self.last_end = end;
        self.dirty = true;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.dirty {
            self.write_metadata()?;
            self.dirty = false;
        }
        sync_data(&self.file, &self.path)
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(&self.path, offset, len, self.size)?;
        let mut out = Vec::new();
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let g = pos / self.grain;
            let n = (self.grain - pos % self.grain).min(end - pos);
            let held = self.stored.binary_search_by_key(&g, |e| e.0).is_ok()
                || self.current.as_ref().is_some_and(|c| c.0 == g);
            let kind = if held {
                ExtentKind::Data
            } else {
                ExtentKind::Unallocated
            };
            push_extent(
                &mut out,
                Extent {
                    offset: pos,
                    length: n,
                    kind,
                },
            );
            pos += n;
        }
        Ok(out)
    }

    fn info(&self) -> Result<ImageInfo> {
        let allocated = self
            .stored
            .iter()
            .map(|&(g, _)| self.grain_len(g) as u64)
            .sum::<u64>()
            + self
                .current
                .as_ref()
                .map_or(0, |(g, _)| self.grain_len(*g) as u64);
        Ok(ImageInfo {
            file: self.path.display().to_string(),
            format: "vmdk",
            virtual_size: self.size,
            file_size: crate::io::file_len(&self.file, &self.path)?,
            allocated_bytes: allocated,
            host_allocated_bytes: crate::io::host_allocated(&self.file, &self.path)?,
            chain: vec![crate::ChainLink {
                file: self.path.display().to_string(),
                format: "vmdk",
                kind: "dynamic",
                unique_id: None,
            }],
            vhd: None,
            details: Some(crate::FormatDetails::Vmdk(super::VmdkInfo {
                create_type: "streamOptimized".into(),
                ..Default::default()
            })),
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// The header of a stream-optimized VMDK of `capacity` sectors in grains of
/// `grain_sectors`, as vmhub writes one: compressed grains with markers, the
/// grain directory at the end, the descriptor after the header.
pub(crate) fn stream_header(capacity: u64, grain_sectors: u64) -> SparseHeader {
    SparseHeader {
        version: 3,
        flags: FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity,
        grain_size: grain_sectors,
        descriptor_offset: 1,
        descriptor_size: DESCRIPTOR_SECTORS,
        gtes_per_gt: GTES_PER_GT,
        rgd_offset: 0,
        gd_offset: GD_AT_END,
        overhead: OVERHEAD_SECTORS,
        unclean_shutdown: false,
        newline_chars: *b"\n \r\n",
        compress_algorithm: COMPRESS_DEFLATE,
    }
}

/// The end of a stream-optimized VMDK whose grains (`entries`: grain number
/// and the sector its marker starts at, in ascending grain order) end at byte
/// `pos`: grain tables, grain directory, footer (a copy of `header` pointing
/// at that directory) and end-of-stream marker, each after its marker. The
/// error says what overflowed a 32-bit sector number.
pub(crate) fn stream_tail(
    header: &SparseHeader,
    entries: &[(u64, u64)],
    pos: u64,
) -> std::result::Result<Vec<u8>, &'static str> {
    let per = u64::from(GTES_PER_GT);
    let mut gd = vec![0u32; header.gd_entries() as usize];
    let mut meta = Vec::new();
    let sector_u32 =
        |s: u64| u32::try_from(s).map_err(|_| "the 2 TiB a grain table entry can address");
    let mut i = 0;
    while let Some(&(first, _)) = entries.get(i) {
        let table = first / per;
        let mut gt = vec![0u8; (per * 4) as usize];
        while let Some(&(g, s)) = entries.get(i) {
            if g / per != table {
                break;
            }
            let at = ((g % per) * 4) as usize;
            if let Some(e) = gt.get_mut(at..at + 4) {
                e.copy_from_slice(&sector_u32(s)?.to_le_bytes());
            }
            i += 1;
        }
        meta.extend_from_slice(&Marker::metadata(MARKER_GT, per * 4 / SECTOR));
        let gt_sector = (pos + meta.len() as u64) / SECTOR;
        if let Some(e) = gd.get_mut(table as usize) {
            *e = sector_u32(gt_sector)?;
        }
        meta.extend_from_slice(&gt);
    }
    let gd_bytes = pad_to_sector(gd.len() as u64 * 4);
    meta.extend_from_slice(&Marker::metadata(MARKER_GD, gd_bytes / SECTOR));
    let gd_sector = (pos + meta.len() as u64) / SECTOR;
    let start = meta.len();
    meta.extend(gd.iter().flat_map(|e| e.to_le_bytes()));
    meta.resize(start + gd_bytes as usize, 0);
    meta.extend_from_slice(&Marker::metadata(MARKER_FOOTER, 1));
    let footer = SparseHeader {
        gd_offset: gd_sector,
        ..header.clone()
    };
    meta.extend_from_slice(&footer.encode());
    // The end-of-stream marker: a sector of zeros.
    meta.extend_from_slice(&[0u8; SECTOR as usize]);
    Ok(meta)
}
