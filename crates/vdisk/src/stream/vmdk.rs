//! A stream-optimized VMDK written front to back, for sinks that cannot
//! seek: the header and descriptor, then each grain that holds data
//! (deflated, behind its grain marker) in disk order, then the grain tables,
//! the grain directory, the footer and the end-of-stream marker. The same
//! structures vmhub's file writer (`vmdk::stream`) makes; grain sizes are
//! known only once compressed, which is why this format has no precomputed
//! layout and no ranges.

use crate::vmdk::compress::deflate;
use crate::vmdk::descriptor::new_text;
use crate::vmdk::header::{SparseHeader, SECTOR};
use crate::vmdk::stream::{
    pad_to_sector, stream_header, DEFAULT_GRAIN, DESCRIPTOR_SECTORS, OVERHEAD_SECTORS,
};
use crate::vmdk::MAX_CAPACITY_SECTORS;
use crate::{Error, Result};

/// The grain: the file writer's default (64 KiB, as VMware and QEMU use).
pub const GRAIN: u64 = DEFAULT_GRAIN;

/// Encodes a stream-optimized VMDK in order: [`VmdkEncoder::start`] gives
/// the head, [`VmdkEncoder::grain`] each stored grain, [`VmdkEncoder::finish`]
/// the metadata that ends the file.
#[derive(Debug)]
pub struct VmdkEncoder {
    header: SparseHeader,
    size: u64,
    /// Bytes produced so far.
    pos: u64,
    /// Grains stored: (grain number, sector of its marker), ascending.
    stored: Vec<(u64, u32)>,
}

impl VmdkEncoder {
    /// An encoder for a disk of `size` bytes; `name` goes into the
    /// descriptor's extent line and `cid` is its content id. Returns it with
    /// the file's first bytes (header, descriptor, padding to the first grain).
    pub fn start(size: u64, name: &str, cid: u32) -> Result<(VmdkEncoder, Vec<u8>)> {
        let rounded = pad_to_sector(size);
        let capacity = rounded / SECTOR;
        if capacity == 0 || capacity > MAX_CAPACITY_SECTORS {
            return Err(Error::InvalidArgument(format!(
                "a {size}-byte disk cannot be a VMDK image (1 to {} bytes)",
                MAX_CAPACITY_SECTORS * SECTOR
            )));
        }
        let header = stream_header(capacity, GRAIN / SECTOR);
        let name = name.replace(['"', '\n', '\r'], "_");
        let mut desc = new_text("streamOptimized", &name, capacity, cid).into_bytes();
        if desc.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
            return Err(Error::InvalidArgument(format!(
                "the file name {name:?} is too long for a VMDK descriptor"
            )));
        }
        desc.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
        let mut head = header.encode().to_vec();
        head.extend_from_slice(&desc);
        head.resize((OVERHEAD_SECTORS * SECTOR) as usize, 0);
        let e = VmdkEncoder {
            header,
            size: rounded,
            pos: head.len() as u64,
            stored: Vec::new(),
        };
        Ok((e, head))
    }

    /// Bytes of grain `g` (the last may be short).
    pub fn grain_len(&self, g: u64) -> usize {
        GRAIN.min(self.size.saturating_sub(g * GRAIN)) as usize
    }

    /// The bytes that store grain `g` holding `data` (its full length, see
    /// [`VmdkEncoder::grain_len`]). Grains must come in increasing order;
    /// grains of zeros need not come at all.
    pub fn grain(&mut self, g: u64, data: &[u8]) -> Result<Vec<u8>> {
        if self.stored.last().is_some_and(|&(last, _)| last >= g) {
            return Err(Error::InvalidArgument(format!(
                "VMDK grain {g} comes after a later one"
            )));
        }
        if data.len() != self.grain_len(g) || data.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "VMDK grain {g}: {} bytes, not {}",
                data.len(),
                self.grain_len(g)
            )));
        }
        let sector = u32::try_from(self.pos / SECTOR).map_err(|_| {
            Error::InvalidArgument(
                "the VMDK image grew past the 2 TiB a grain table entry can address".into(),
            )
        })?;
        let z = deflate(data).map_err(|e| Error::InvalidArgument(format!("grain {g}: {e}")))?;
        let mut b = Vec::with_capacity(12 + z.len() + SECTOR as usize);
        b.extend_from_slice(&(g * self.header.grain_size).to_le_bytes());
        b.extend_from_slice(&(z.len() as u32).to_le_bytes());
        b.extend_from_slice(&z);
        b.resize(pad_to_sector(b.len() as u64) as usize, 0);
        self.stored.push((g, sector));
        self.pos += b.len() as u64;
        Ok(b)
    }

    /// The file's last bytes: grain tables, grain directory, footer and
    /// end-of-stream marker.
    pub fn finish(self) -> Result<Vec<u8>> {
        let entries: Vec<(u64, u64)> = self
            .stored
            .iter()
            .map(|&(g, s)| (g, u64::from(s)))
            .collect();
        crate::vmdk::stream::stream_tail(&self.header, &entries, self.pos)
            .map_err(|why| Error::InvalidArgument(format!("the VMDK image grew past {why}")))
    }
}

/// Writes the stream-optimized VMDK of `disk`, whose data is `map`, to
/// `out` front to back, a grain at a time.
pub fn write_vmdk<D: crate::Disk + ?Sized, W: std::io::Write>(
    disk: &D,
    map: &super::AllocMap,
    name: &str,
    cid: u32,
    out: &mut W,
) -> Result<()> {
    let io = |e| Error::io(disk.path(), "write the image", e);
    let (mut e, head) = VmdkEncoder::start(disk.virtual_size(), name, cid)?;
    out.write_all(&head).map_err(io)?;
    let mut buf = Vec::new();
    for g in map.blocks(GRAIN) {
        let n = e.grain_len(g);
        // The disk's own bytes; past its end (a size rounded up to a
        // sector) the grain holds zeros.
        buf.clear();
        buf.resize(n, 0);
        let avail = disk.virtual_size().saturating_sub(g * GRAIN).min(n as u64) as usize;
        if let Some(b) = buf.get_mut(..avail) {
            disk.read_at(b, g * GRAIN)?;
        }
        out.write_all(&e.grain(g, &buf)?).map_err(io)?;
    }
    out.write_all(&e.finish()?).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grains_in_order_only() {
        let (mut e, head) = VmdkEncoder::start(GRAIN * 3 + 512, "d.vmdk", 7).unwrap();
        assert_eq!(head.len() as u64, OVERHEAD_SECTORS * SECTOR);
        assert_eq!(&head[..4], b"KDMV");
        assert_eq!(e.grain_len(3), 512);
        let g = e.grain(1, &vec![1u8; GRAIN as usize]).unwrap();
        assert_eq!(g.len() % 512, 0);
        assert_eq!(u64::from_le_bytes(g[..8].try_into().unwrap()), 128);
        assert!(e.grain(0, &vec![1u8; GRAIN as usize]).is_err());
        assert!(e.grain(3, &[1u8; 100]).is_err());
        e.grain(3, &[1u8; 512]).unwrap();
        let tail = e.finish().unwrap();
        // GT marker + table (4 sectors), GD marker + GD, footer marker + footer, EOS.
        assert_eq!(tail.len(), 512 * (1 + 4 + 1 + 1 + 1 + 1 + 1));
    }
}
