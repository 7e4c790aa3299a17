//! Writing: payload and sector bitmap blocks placed at the end of the file,
//! sector bitmap bits and BAT entries changed in memory and made durable
//! through the log (see the crash-safety notes of the module).

use super::fields::{new_guid, ZERO_GUID};
use super::header::{ALIGN, HEADER_SECTION};
use super::store::write_header;
use super::{bat, corrupt, log, VhdxDisk, PAGE};
use crate::io::{sync_data, write_all_at};
use crate::{Disk, Error, Result};

impl VhdxDisk {
    /// Renews FileWriteGuid and DataWriteGuid (unless the open keeps it) on
    /// the first write of this open.
    pub(super) fn begin_writing(&mut self) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                path: self.store.path.clone(),
            });
        }
        if self.session {
            return Ok(());
        }
        let mut h = self.header.clone();
        h.file_write_guid = new_guid(&self.store.path)?;
        if !self.keep_data_write_guid {
            h.data_write_guid = new_guid(&self.store.path)?;
        }
        self.slot = write_header(&self.store, self.slot, &mut h)?;
        self.header = h;
        self.session = true;
        Ok(())
    }

    /// Gives the disk a new DataWriteGuid now (after a merge into it: any
    /// child made before no longer matches it).
    pub(crate) fn renew_data_write_guid(&mut self) -> Result<()> {
        self.flush()?;
        let mut h = self.header.clone();
        h.data_write_guid = new_guid(&self.store.path)?;
        self.slot = write_header(&self.store, self.slot, &mut h)?;
        self.header = h;
        Ok(())
    }

    /// Reads sector bitmap bytes at `offset` of the file, with the pages
    /// changed in memory.
    pub(super) fn read_bitmap(&self, buf: &mut [u8], offset: u64, chunk: u64) -> Result<()> {
        self.store
            .read(buf, offset, format_args!("sector bitmap of chunk {chunk}"))?;
        let end = offset + buf.len() as u64;
        let first = offset / PAGE * PAGE;
        for (&at, page) in self.bitmap_pages.range(first..end) {
            let (s, e) = (at.max(offset), (at + PAGE).min(end));
            buf[(s - offset) as usize..(e - offset) as usize]
                .copy_from_slice(&page[(s - at) as usize..(e - at) as usize]);
        }
        Ok(())
    }

    /// Places `len` bytes (zeros) at the 1 MiB-aligned end of the file.
    fn allocate_space(&mut self, len: u64) -> Result<u64> {
        let at = self
            .next_block
            .max(self.store.real_len.div_ceil(ALIGN) * ALIGN);
        let end = at + len;
        self.store
            .file
            .set_len(end)
            .map_err(|e| Error::io(&self.store.path, "resize", e))?;
        self.store.real_len = end;
        self.store.len = end;
        self.next_block = end;
        Ok(at)
    }

    /// Places payload block `block` at the end of the file in `state`; its
    /// BAT entry changes in memory.
    pub(super) fn allocate(&mut self, block: u64, state: u8) -> Result<u64> {
        let at = self.allocate_space(self.geo.block_size)?;
        self.set_entry(self.geo.payload_index(block), bat::entry(state, at));
        Ok(at)
    }

    /// The BAT index of the sector bitmap block of `chunk`, and its entry.
    fn bitmap_entry(&self, chunk: u64) -> (u64, u64) {
        let i = self.geo.bitmap_index(chunk);
        (i, self.bat.get(i as usize).copied().unwrap_or(0))
    }

    /// The file offset of the sector bitmap block of `chunk`, placed at the
    /// end of the file (all clear) when it has none.
    fn ensure_bitmap(&mut self, chunk: u64) -> Result<u64> {
        let (i, e) = self.bitmap_entry(chunk);
        if bat::state(e) == bat::SB_PRESENT {
            if bat::offset(e) < HEADER_SECTION {
                return Err(corrupt(
                    self.path_buf(),
                    format!("BAT entry {i} (sector bitmap of chunk {chunk}): offset {} inside the header section", bat::offset(e)),
                ));
            }
            return Ok(bat::offset(e));
        }
        let at = self.allocate_space(bat::BITMAP_BLOCK)?;
        self.set_entry(i, bat::entry(bat::SB_PRESENT, at));
        Ok(at)
    }

    /// Marks sectors `[first, end)` of `block` present in its chunk's bitmap
    /// (in memory until the next flush).
    fn set_bits(&mut self, block: u64, first: u64, end: u64) -> Result<()> {
        self.mark_bits(block, first, end, true)
    }

    /// Marks sectors `[first, end)` of `block` present in its chunk's bitmap,
    /// or not present (in memory until the next flush).
    pub(super) fn mark_bits(
        &mut self,
        block: u64,
        first: u64,
        end: u64,
        present: bool,
    ) -> Result<()> {
        let chunk = block / self.geo.chunk_ratio;
        if !present && bat::state(self.bitmap_entry(chunk).1) != bat::SB_PRESENT {
            // No bitmap block: no bit is set to clear.
            return Ok(());
        }
        let bm = self.ensure_bitmap(chunk)?;
        let base = self.geo.bitmap_bit(block);
        let (mut bit, stop) = (base + first, base + end);
        while bit < stop {
            let page_at = (bm + bit / 8) / PAGE * PAGE;
            // The bits of this page, up to the first of the next one.
            let page_stop = ((page_at + PAGE - bm) * 8).min(stop);
            let (mut page, mut changed) = match self.bitmap_pages.remove(&page_at) {
                Some(page) => (page, true),
                None => {
                    let mut page = vec![0u8; PAGE as usize];
                    self.store.read(
                        &mut page,
                        page_at,
                        format_args!("sector bitmap of chunk {chunk}"),
                    )?;
                    (page, false)
                }
            };
            for b in bit..page_stop {
                if let Some(byte) = page.get_mut((bm + b / 8 - page_at) as usize) {
                    let mask = 1u8 << (b % 8);
                    let new = if present { *byte | mask } else { *byte & !mask };
                    changed |= new != *byte;
                    *byte = new;
                }
            }
            // A page read and left as it was has nothing to write.
            if changed {
                self.bitmap_pages.insert(page_at, page);
            }
            bit = page_stop;
        }
        Ok(())
    }

    /// Writes `data` at `within` of block `block` of a differencing disk
    /// whose entry `ent` does not hold the whole block: the sectors written
    /// go into the child's block and are marked in the sector bitmap;
    /// sectors written only in part get the rest of their bytes from what the
    /// disk read there before.
    pub(super) fn write_partial(
        &mut self,
        block: u64,
        within: u64,
        data: &[u8],
        ent: u64,
    ) -> Result<()> {
        let sector = self.geo.sector;
        let chunk = block / self.geo.chunk_ratio;
        self.ensure_bitmap(chunk)?;
        let at = if bat::state(ent) == bat::PARTIALLY_PRESENT {
            self.block_offset(block, ent)?
        } else {
            // Bits of a block not present mean nothing and may be left from
            // before: only the sectors written now are the child's.
            self.mark_bits(block, 0, self.geo.block_size / sector, false)?;
            self.allocate(block, bat::PARTIALLY_PRESENT)?
        };
        let len = data.len() as u64;
        let s0 = within / sector * sector;
        let s1 = (within + len).div_ceil(sector) * sector;
        let guest = block * self.geo.block_size;
        if s0 == within && s1 == within + len {
            write_all_at(&self.store.file, &self.store.path, data, at + within)?;
        } else {
            let mut buf = vec![0u8; (s1 - s0) as usize];
            let last = s1 - sector;
            for s in [s0, last] {
                let o = (s - s0) as usize;
                self.read_at(&mut buf[o..o + sector as usize], guest + s)?;
            }
            buf[(within - s0) as usize..(within - s0 + len) as usize].copy_from_slice(data);
            write_all_at(&self.store.file, &self.store.path, &buf, at + s0)?;
        }
        self.set_bits(block, s0 / sector, s1 / sector)
    }

    pub(super) fn set_entry(&mut self, index: u64, e: u64) {
        if let Some(slot) = self.bat.get_mut(index as usize) {
            *slot = e;
            self.dirty.insert(index * 8 / log::SECTOR as u64);
        }
    }

    /// Whether BAT entries or sector bitmap bits changed since the last flush.
    pub(super) fn pending(&self) -> bool {
        !self.dirty.is_empty() || !self.bitmap_pages.is_empty()
    }

    /// Writes the changed BAT sectors through the log (see the module docs).
    pub(super) fn commit_bat(&mut self) -> Result<()> {
        if !self.pending() {
            return Ok(());
        }
        self.commit(Vec::new())
    }

    /// Writes the changed bitmap pages and BAT sectors, then the 4 KiB
    /// pages of `extra` (file offset, bytes), through the log.
    pub(super) fn commit(&mut self, extra: Vec<(u64, Vec<u8>)>) -> Result<()> {
        let path = self.store.path.clone();
        sync_data(&self.store.file, &path)?;
        let log_guid = new_guid(&path)?;
        let mut h = self.header.clone();
        h.log_guid = log_guid;
        self.slot = write_header(&self.store, self.slot, &mut h)?;
        self.header = h;
        // Bitmap pages before the BAT sectors: should the writes need more
        // than one entry, bits set ahead of the entry that points at their
        // block are never looked at.
        // Kept in memory until they are in the file: a failed flush leaves
        // them for the next.
        let mut all: Vec<(u64, Vec<u8>)> = self
            .bitmap_pages
            .iter()
            .map(|(&k, v)| (k, v.clone()))
            .collect();
        for &s in &self.dirty {
            let mut data = vec![0u8; log::SECTOR];
            let first = (s * log::SECTOR as u64 / 8) as usize;
            for (i, c) in data.chunks_exact_mut(8).enumerate() {
                let e = self.bat.get(first + i).copied().unwrap_or(0);
                c.copy_from_slice(&e.to_le_bytes());
            }
            all.push((self.bat_offset + s * log::SECTOR as u64, data));
        }
        all.extend(extra);
        let per_entry = log::capacity(u64::from(self.header.log_length)).max(1);
        let file_size = self.store.real_len;
        for writes in all.chunks(per_entry) {
            self.log_sequence += 1;
            let entry = log::encode_entry(
                self.log_sequence,
                0,
                &log_guid,
                file_size,
                file_size,
                writes,
            );
            write_all_at(&self.store.file, &path, &entry, self.header.log_offset)?;
            sync_data(&self.store.file, &path)?;
            for (off, data) in writes {
                write_all_at(&self.store.file, &path, data, *off)?;
            }
            sync_data(&self.store.file, &path)?;
        }
        self.bitmap_pages.clear();
        self.dirty.clear();
        let mut h = self.header.clone();
        h.log_guid = ZERO_GUID;
        self.slot = write_header(&self.store, self.slot, &mut h)?;
        self.header = h;
        Ok(())
    }
}
