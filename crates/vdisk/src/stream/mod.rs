//! Stream layouts: a whole image file, in any format whose layout can be
//! decided before the first byte is written, described as an ordered list of
//! segments.
//!
//! Given a disk's virtual size and which ranges of it hold data (an
//! [`AllocMap`]), each format module computes the image file as literal
//! metadata bytes (headers, tables, footers), runs of the disk's own bytes
//! and runs of zeros, with the file's exact length. Any byte range of the
//! file can then be produced from the segments alone ([`Layout::pieces`]),
//! so that a server can send a converted image while reading the disk, answer
//! range requests and resume downloads, without building the file anywhere.
//!
//! VMDK is the exception: a stream-optimized VMDK's grains are compressed,
//! so where each lies is known only once the ones before it are; [`vmdk`]
//! writes one front to back instead.
//!
//! The layouts are pure: no I/O, and identical for identical inputs (ids and
//! timestamps come from an [`Identity`] the caller chooses), so that two
//! requests for the same image get the same bytes.

pub mod qcow2;
pub mod raw;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use crate::{Disk, Error, Result};
use std::sync::Arc;

/// The formats a layout can be computed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// The disk's bytes, nothing else.
    Raw,
    /// Dynamic VHD, 2 MiB blocks.
    Vhd,
    /// Dynamic VHDX, 32 MiB blocks.
    Vhdx,
    /// qcow2 version 3, 64 KiB clusters.
    Qcow2,
    /// Dynamic VDI, 1 MiB blocks.
    Vdi,
}

impl StreamFormat {
    /// Every format, in the order pages list them.
    pub const ALL: [StreamFormat; 5] = [
        StreamFormat::Raw,
        StreamFormat::Vhd,
        StreamFormat::Vhdx,
        StreamFormat::Qcow2,
        StreamFormat::Vdi,
    ];

    /// The format's file name extension (and name).
    pub fn extension(self) -> &'static str {
        match self {
            StreamFormat::Raw => "raw",
            StreamFormat::Vhd => "vhd",
            StreamFormat::Vhdx => "vhdx",
            StreamFormat::Qcow2 => "qcow2",
            StreamFormat::Vdi => "vdi",
        }
    }

    /// The format whose extension is `ext`.
    pub fn from_extension(ext: &str) -> Option<StreamFormat> {
        StreamFormat::ALL.into_iter().find(|f| f.extension() == ext)
    }
}

/// Which ranges of a disk hold data: sorted, non-overlapping `(offset,
/// length)` pairs inside the disk. Everything else reads as zeros, and a
/// block that no range touches is left unallocated in the image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocMap {
    ranges: Vec<(u64, u64)>,
}

impl AllocMap {
    /// The map of `ranges` on a disk of `size` bytes. Touching ranges are
    /// merged; empty ones dropped. Ranges out of order, overlapping or past
    /// the disk's end are refused.
    pub fn new(size: u64, ranges: impl IntoIterator<Item = (u64, u64)>) -> Result<AllocMap> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut end = 0u64;
        for (offset, len) in ranges {
            if len == 0 {
                continue;
            }
            let e = offset
                .checked_add(len)
                .filter(|&e| e <= size)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "allocation map: range {offset}+{len} lies past the disk's {size} bytes"
                    ))
                })?;
            if offset < end {
                return Err(Error::InvalidArgument(format!(
                    "allocation map: range at {offset} overlaps or precedes the one before (ending at {end})"
                )));
            }
            match out.last_mut() {
                Some(last) if last.0 + last.1 == offset => last.1 += len,
                _ => out.push((offset, len)),
            }
            end = e;
        }
        Ok(AllocMap { ranges: out })
    }

    /// The data ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// The blocks of `block_size` bytes that some data range touches, in
    /// increasing order, each once.
    pub fn blocks(&self, block_size: u64) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for &(offset, len) in &self.ranges {
            let first = offset / block_size;
            let last = (offset + len - 1) / block_size;
            let from = match out.last() {
                Some(&b) if b >= first => b + 1,
                _ => first,
            };
            out.extend(from..=last);
        }
        out
    }
}

/// The ids and time an image carries. Chosen by the caller so that the same
/// disk gives the same file every time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Seed of every id the image holds (unique id, GUIDs, UUIDs).
    pub seed: [u8; 16],
    /// Creation time, seconds since 1970-01-01 UTC.
    pub timestamp: u64,
}

impl Identity {
    /// Id number `n` of the image: the seed with `n` mixed in, made a
    /// version 4 RFC 4122 id (as the formats' own writers make).
    pub fn id(&self, n: u8) -> [u8; 16] {
        let mut g = self.seed;
        for (i, b) in g.iter_mut().enumerate() {
            // A different byte pattern per id, so that no two ids are equal.
            *b ^= n
                .wrapping_mul(0x9d)
                .wrapping_add(i as u8)
                .rotate_left(u32::from(n) % 8);
        }
        g[7] = (g[7] & 0x0f) | 0x40;
        g[8] = (g[8] & 0x3f) | 0x80;
        g
    }
}

/// One run of the image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// These bytes (metadata).
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes of the disk from virtual offset `offset`.
    Disk {
        /// Offset in the disk.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// This many zero bytes.
    Zeros(u64),
    /// `len` bytes of value `byte` (the unused entries of a table).
    Fill {
        /// The value.
        byte: u8,
        /// Length in bytes.
        len: u64,
    },
}

impl Segment {
    /// The segment's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::Disk { len, .. } => *len,
            Segment::Zeros(n) => *n,
            Segment::Fill { len, .. } => *len,
        }
    }

    /// Whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A piece of a byte range of the file, as [`Layout::pieces`] yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// `len` bytes of the disk from `offset`.
    Disk {
        /// Offset in the disk.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// This many zeros.
    Zeros(u64),
    /// `len` bytes of value `byte`.
    Fill {
        /// The value.
        byte: u8,
        /// Length in bytes.
        len: u64,
    },
}

/// A whole image file as segments, with their offsets in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// `(file offset, segment)`, contiguous from 0.
    segments: Vec<(u64, Segment)>,
    len: u64,
}

impl Layout {
    /// An empty file.
    pub fn new() -> Layout {
        Layout::default()
    }

    /// Appends `s` at the end of the file.
    pub fn push(&mut self, s: Segment) {
        if s.is_empty() {
            return;
        }
        let n = s.len();
        match (self.segments.last_mut(), &s) {
            (Some((_, Segment::Zeros(z))), Segment::Zeros(m)) => *z += m,
            (Some((_, Segment::Fill { byte, len })), Segment::Fill { byte: b, len: m })
                if byte == b =>
            {
                *len += m
            }
            (Some((_, Segment::Disk { offset, len })), Segment::Disk { offset: o, len: l })
                if *offset + *len == *o =>
            {
                *len += l
            }
            _ => self.segments.push((self.len, s)),
        }
        self.len += n;
    }

    /// Appends literal bytes.
    pub fn bytes(&mut self, b: Vec<u8>) {
        self.push(Segment::Bytes(Arc::new(b)));
    }

    /// Appends zeros up to file offset `to` (nothing if already there).
    pub fn zeros_to(&mut self, to: u64) {
        self.push(Segment::Zeros(to.saturating_sub(self.len)));
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segments with their file offsets.
    pub fn segments(&self) -> &[(u64, Segment)] {
        &self.segments
    }

    /// What makes up the file's bytes `[start, end)`, in order; `end` is
    /// clipped to the file's length.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<Piece<'_>> {
        let end = end.min(self.len);
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let first = self
            .segments
            .partition_point(|(at, s)| at + s.len() <= start);
        for (at, s) in self.segments.iter().skip(first) {
            if *at >= end {
                break;
            }
            let from = start.max(*at) - at;
            let to = end.min(at + s.len()) - at;
            out.push(match s {
                Segment::Bytes(b) => {
                    Piece::Bytes(b.get(from as usize..to as usize).unwrap_or_default())
                }
                Segment::Disk { offset, .. } => Piece::Disk {
                    offset: offset + from,
                    len: to - from,
                },
                Segment::Zeros(_) => Piece::Zeros(to - from),
                Segment::Fill { byte, .. } => Piece::Fill {
                    byte: *byte,
                    len: to - from,
                },
            });
        }
        out
    }

    /// Writes the file's bytes `[start, end)` to `out`, reading disk bytes
    /// from `disk` a bounded buffer at a time.
    pub fn write_range<D: Disk + ?Sized, W: std::io::Write>(
        &self,
        disk: &D,
        start: u64,
        end: u64,
        out: &mut W,
    ) -> Result<()> {
        const BUF: u64 = 1 << 20;
        let io = |e| Error::io(disk.path(), "write the image", e);
        let mut buf = Vec::new();
        for p in self.pieces(start, end) {
            match p {
                Piece::Bytes(b) => out.write_all(b).map_err(io)?,
                Piece::Zeros(n) | Piece::Fill { len: n, .. } => {
                    let byte = match p {
                        Piece::Fill { byte, .. } => byte,
                        _ => 0,
                    };
                    let mut n = n;
                    while n > 0 {
                        let k = n.min(BUF);
                        buf.clear();
                        buf.resize(k as usize, byte);
                        out.write_all(&buf).map_err(io)?;
                        n -= k;
                    }
                }
                Piece::Disk { mut offset, len } => {
                    let end = offset + len;
                    while offset < end {
                        let k = (end - offset).min(BUF);
                        buf.resize(k as usize, 0);
                        disk.read_at(&mut buf, offset)?;
                        out.write_all(&buf).map_err(io)?;
                        offset += k;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The layout of `format` for a disk of `size` bytes whose data is `map`,
/// with each format's default block size.
pub fn layout(format: StreamFormat, size: u64, map: &AllocMap, id: &Identity) -> Result<Layout> {
    match format {
        StreamFormat::Raw => Ok(raw::layout(size, map)),
        StreamFormat::Vhd => vhd::layout(size, map, id, crate::vhd::header::DEFAULT_BLOCK_SIZE),
        StreamFormat::Vhdx => vhdx::layout(size, map, id, crate::vhdx::create::DEFAULT_BLOCK_SIZE),
        StreamFormat::Qcow2 => qcow2::layout(size, map, qcow2::DEFAULT_CLUSTER_BITS),
        StreamFormat::Vdi => vdi::layout(size, map, id, crate::vdi::DEFAULT_BLOCK_SIZE),
    }
}

/// Appends a table of `len` bytes that reads as `fill` but for `entries`:
/// `(offset in the table, bytes)`, in increasing order, not overlapping,
/// inside the table. Only the entries are held in memory, so a table's
/// cost follows the data of the disk, not its size.
pub(crate) fn push_table(
    l: &mut Layout,
    len: u64,
    fill: u8,
    entries: impl IntoIterator<Item = (u64, Vec<u8>)>,
) {
    let start = l.len();
    let gap = |l: &mut Layout, to: u64| {
        let n = (start + to).saturating_sub(l.len());
        l.push(if fill == 0 {
            Segment::Zeros(n)
        } else {
            Segment::Fill { byte: fill, len: n }
        });
    };
    // Touching entries are kept as one run of bytes.
    let mut run: Option<(u64, Vec<u8>)> = None;
    for (at, bytes) in entries {
        match &mut run {
            Some((r, b)) if *r + b.len() as u64 == at => b.extend_from_slice(&bytes),
            _ => {
                if let Some((r, b)) = run.take() {
                    gap(l, r);
                    l.bytes(b);
                }
                run = Some((at, bytes));
            }
        }
    }
    if let Some((r, b)) = run {
        gap(l, r);
        l.bytes(b);
    }
    gap(l, len);
}

/// Appends block `block` of `block_size` bytes of a disk of `size` bytes:
/// its disk bytes, then zeros to the block's end past the disk's end.
pub(crate) fn push_block(l: &mut Layout, size: u64, block_size: u64, block: u64) {
    let start = block * block_size;
    let len = size.saturating_sub(start).min(block_size);
    l.push(Segment::Disk { offset: start, len });
    l.push(Segment::Zeros(block_size - len));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The metadata bytes `[a, b)` of `l`, which must hold no disk bytes.
    pub(crate) fn bytes_of(l: &Layout, a: u64, b: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for p in l.pieces(a, b) {
            match p {
                Piece::Bytes(x) => out.extend_from_slice(x),
                Piece::Zeros(n) => out.resize(out.len() + n as usize, 0),
                Piece::Fill { byte, len } => out.resize(out.len() + len as usize, byte),
                Piece::Disk { .. } => panic!("disk bytes in {a}..{b}"),
            }
        }
        out
    }

    #[test]
    fn tables_hold_only_their_entries() {
        let mut l = Layout::new();
        l.bytes(vec![1]);
        push_table(
            &mut l,
            64,
            0xff,
            [(8, vec![1, 2]), (10, vec![3]), (60, vec![4, 5, 6, 7])],
        );
        assert_eq!(l.len(), 65);
        let b = bytes_of(&l, 0, 65);
        assert_eq!(
            &b[..12],
            &[1, 255, 255, 255, 255, 255, 255, 255, 255, 1, 2, 3]
        );
        assert_eq!(&b[61..], &[4, 5, 6, 7]);
        assert!(b[12..61].iter().all(|&x| x == 0xff));
        assert_eq!(l.segments().len(), 5);
    }

    /// Metadata bytes a layout holds in memory, shared ones once.
    fn held(l: &Layout) -> u64 {
        let mut seen: Vec<*const Vec<u8>> = Vec::new();
        let mut n = 0;
        for (_, s) in l.segments() {
            if let Segment::Bytes(b) = s {
                if !seen.contains(&Arc::as_ptr(b)) {
                    seen.push(Arc::as_ptr(b));
                    n += b.len() as u64;
                }
            }
        }
        n
    }

    #[test]
    fn huge_sparse_disks_cost_little() {
        let id = Identity {
            seed: [1; 16],
            timestamp: 0,
        };
        for f in StreamFormat::ALL {
            // The largest disk each format holds, 4 KiB of data every 8 GiB.
            let size: u64 = if f == StreamFormat::Vhd {
                2040 << 30
            } else {
                64 << 40
            };
            let map = AllocMap::new(size, (0..size >> 33).map(|i| (i << 33, 4096))).unwrap();
            let l = layout(f, size, &map, &id).unwrap();
            // VHD's BAT is whole (4 MiB at most); every other table holds
            // only its entries.
            assert!(held(&l) < 8 << 20, "{f:?}: {} bytes held", held(&l));
        }
    }

    /// Data ranges from (gap, length) pairs, inside `size`.
    fn ranges(size: u64, runs: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = 0u64;
        for &(gap, len) in runs {
            pos += gap;
            if pos >= size {
                break;
            }
            let len = len.min(size - pos);
            out.push((pos, len));
            pos += len;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Every layout is contiguous, as long as its segments, holds every
        /// data byte of the disk once, and any range of it comes out as
        /// pieces of exactly that length.
        #[test]
        fn layouts_are_consistent(
            sectors in 1u64..40_000,
            runs in proptest::collection::vec((0u64..3_000_000, 1u64..2_000_000), 0..12),
            cuts in proptest::collection::vec((any::<u64>(), any::<u64>()), 8),
        ) {
            let size = sectors * 512;
            let map = AllocMap::new(size, ranges(size, &runs)).unwrap();
            let id = Identity { seed: [5; 16], timestamp: 1 };
            for f in StreamFormat::ALL {
                let l = layout(f, size, &map, &id).unwrap();
                let mut at = 0;
                let mut disk: Vec<(u64, u64)> = Vec::new();
                for (o, seg) in l.segments() {
                    prop_assert_eq!(*o, at);
                    at += seg.len();
                    if let Segment::Disk { offset, len } = seg {
                        disk.push((*offset, *len));
                    }
                }
                prop_assert_eq!(at, l.len());
                // Disk bytes come in order, without overlap, inside the disk,
                // and cover every data range.
                let mut end = 0;
                for &(o, n) in &disk {
                    prop_assert!(o >= end && o + n <= size, "{:?}: {:?}", f, disk);
                    end = o + n;
                }
                for &(o, n) in map.ranges() {
                    let covered: u64 = disk
                        .iter()
                        .map(|&(a, m)| (o + n).min(a + m).saturating_sub(o.max(a)))
                        .sum();
                    prop_assert_eq!(covered, n, "{:?}: data {}+{} not covered", f, o, n);
                }
                for &(a, b) in &cuts {
                    let (a, b) = (a % (l.len() + 1), b % (l.len() + 1));
                    let (a, b) = (a.min(b), a.max(b));
                    let total: u64 = l.pieces(a, b).iter().map(|p| match p {
                        Piece::Bytes(x) => x.len() as u64,
                        Piece::Disk { len, .. } => *len,
                        Piece::Zeros(n) | Piece::Fill { len: n, .. } => *n,
                    }).sum();
                    prop_assert_eq!(total, b - a);
                }
            }
        }
    }

    #[test]
    fn alloc_map_merges_and_refuses() {
        let m = AllocMap::new(100, [(0, 10), (10, 5), (20, 0), (50, 50)]).unwrap();
        assert_eq!(m.ranges(), &[(0, 15), (50, 50)]);
        assert_eq!(m.blocks(16), vec![0, 3, 4, 5, 6]);
        assert_eq!(m.blocks(1000), vec![0]);
        assert!(AllocMap::new(100, [(90, 20)])
            .unwrap_err()
            .to_string()
            .contains("past the disk"));
        assert!(AllocMap::new(100, [(10, 10), (5, 1)])
            .unwrap_err()
            .to_string()
            .contains("overlaps"));
    }

    #[test]
    fn layout_pieces_cover_ranges() {
        let mut l = Layout::new();
        l.bytes(vec![1, 2, 3]);
        l.push(Segment::Disk { offset: 10, len: 5 });
        l.push(Segment::Disk { offset: 15, len: 5 });
        l.zeros_to(20);
        l.bytes(vec![9]);
        assert_eq!(l.len(), 21);
        assert_eq!(l.segments().len(), 4);
        assert_eq!(
            l.pieces(2, 21),
            vec![
                Piece::Bytes(&[3]),
                Piece::Disk {
                    offset: 10,
                    len: 10
                },
                Piece::Zeros(7),
                Piece::Bytes(&[9])
            ]
        );
        assert_eq!(l.pieces(5, 6), vec![Piece::Disk { offset: 12, len: 1 }]);
        assert_eq!(l.pieces(20, 100), vec![Piece::Bytes(&[9])]);
        assert!(l.pieces(21, 30).is_empty());
    }

    #[test]
    fn identities_differ_and_repeat() {
        let id = Identity {
            seed: [7; 16],
            timestamp: 0,
        };
        assert_ne!(id.id(0), id.id(1));
        assert_eq!(id.id(2), id.id(2));
        assert_eq!(id.id(3)[7] >> 4, 4);
    }
}
