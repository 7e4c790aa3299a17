//! The hosted sparse extent header ("KDMV", VMware Virtual Disk Format 1.1) and
//! the stream-optimized markers, as plain structs.

/// The header's first four bytes.
pub const MAGIC: &[u8; 4] = b"KDMV";
/// Bytes in the header, a marker, and a sector.
pub const SECTOR: u64 = 512;
/// Flag: the newline-detection characters are valid.
pub const FLAG_NL_DETECT: u32 = 1;
/// Flag: a redundant grain directory exists.
pub const FLAG_RGD: u32 = 1 << 1;
/// Flag: grain-table entry 1 means a grain of zeros.
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag: the extent holds markers (stream-optimized).
pub const FLAG_MARKERS: u32 = 1 << 17;
/// `compressAlgorithm`: deflate.
pub const COMPRESS_DEFLATE: u16 = 1;
/// `gdOffset` of a stream-optimized extent whose grain directory is found
/// through the footer at the end of the file.
pub const GD_AT_END: u64 = u64::MAX;
/// Grain-table entry of a grain that reads as zeros.
pub const GTE_ZERO: u32 = 1;
/// Metadata marker types.
pub const MARKER_EOS: u32 = 0;
/// Grain table marker.
pub const MARKER_GT: u32 = 1;
/// Grain directory marker.
pub const MARKER_GD: u32 = 2;
/// Footer marker.
pub const MARKER_FOOTER: u32 = 3;

/// A hosted sparse extent header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseHeader {
    /// Format version (1, 2 or 3).
    pub version: u32,
    /// Flags (`FLAG_*`).
    pub flags: u32,
    /// Sectors the extent holds.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_size: u64,
    /// Sector of the embedded descriptor (0: none).
    pub descriptor_offset: u64,
    /// Sectors of the embedded descriptor.
    pub descriptor_size: u64,
    /// Entries per grain table.
    pub gtes_per_gt: u32,
    /// Sector of the redundant grain directory.
    pub rgd_offset: u64,
    /// Sector of the grain directory, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
    /// Set while the extent is open for writing.
    pub unclean_shutdown: bool,
    /// The four newline-detection characters.
    pub newline_chars: [u8; 4],
    /// Compression algorithm (`COMPRESS_*`).
    pub compress_algorithm: u16,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl SparseHeader {
    /// Decodes a header from its 512 bytes; `None` without the magic.
    pub fn decode(b: &[u8; 512]) -> Option<SparseHeader> {
        if &b[..4] != MAGIC {
            return None;
        }
        Some(SparseHeader {
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            capacity: u64_at(b, 12),
            grain_size: u64_at(b, 20),
            descriptor_offset: u64_at(b, 28),
            descriptor_size: u64_at(b, 36),
            gtes_per_gt: u32_at(b, 44),
            rgd_offset: u64_at(b, 48),
            gd_offset: u64_at(b, 56),
            overhead: u64_at(b, 64),
            unclean_shutdown: b[72] != 0,
            newline_chars: [b[73], b[74], b[75], b[76]],
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        })
    }

    /// The header's 512 bytes.
    pub fn encode(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        b[72] = u8::from(self.unclean_shutdown);
        b[73..77].copy_from_slice(&self.newline_chars);
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }

    /// Whether grains are compressed.
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// Bytes per grain table.
    pub fn gt_bytes(&self) -> u64 {
        u64::from(self.gtes_per_gt) * 4
    }

    /// Entries of the grain directory.
    pub fn gd_entries(&self) -> u64 {
        let per_gd = self.grain_size.saturating_mul(u64::from(self.gtes_per_gt));
        if per_gd == 0 {
            0
        } else {
            self.capacity.div_ceil(per_gd)
        }
    }

    /// What is wrong with the header, as (field, message, merely unsupported).
    pub fn problems(&self) -> Vec<(&'static str, String, bool)> {
        let mut out = Vec::new();
        if !(1..=3).contains(&self.version) {
            out.push((
                "version",
                format!("{} is not supported (only 1 to 3)", self.version),
                true,
            ));
            return out;
        }
        if self.flags & FLAG_NL_DETECT != 0 && self.newline_chars != *b"\n \r\n" {
            out.push((
                "newline detection characters",
                format!(
                    "are {:02x?}, not 0a 20 0d 0a: the file was transferred as text",
                    self.newline_chars
                ),
                false,
            ));
        }
        if !self.grain_size.is_power_of_two() || self.grain_size > super::MAX_GRAIN_SECTORS {
            out.push((
                "grain size",
                format!(
                    "is {} sectors; it must be a power of two up to {}",
                    self.grain_size,
                    super::MAX_GRAIN_SECTORS
                ),
                false,
            ));
        }
        if self.gtes_per_gt == 0 || self.gtes_per_gt > super::MAX_GTES_PER_GT {
            out.push((
                "entries per grain table",
                format!(
                    "{} is not between 1 and {}",
                    self.gtes_per_gt,
                    super::MAX_GTES_PER_GT
                ),
                false,
            ));
        }
        if self.capacity > super::MAX_CAPACITY_SECTORS {
            out.push((
                "capacity",
                format!(
                    "{} sectors are more than the {} supported",
                    self.capacity,
                    super::MAX_CAPACITY_SECTORS
                ),
                false,
            ));
        }
        if self.compressed() && self.compress_algorithm != COMPRESS_DEFLATE {
            out.push((
                "compression algorithm",
                format!(
                    "{} is not supported (only deflate)",
                    self.compress_algorithm
                ),
                true,
            ));
        }
        out
    }
}

/// A marker of a stream-optimized extent: the sector count (or a grain's LBA),
/// the size of compressed data that follows (0 for metadata), and the type of
/// a metadata marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Sectors of metadata that follow, or a grain's first sector.
    pub value: u64,
    /// Bytes of compressed grain data that follow; 0 for metadata markers.
    pub size: u32,
    /// Metadata type (`MARKER_*`), meaningful when `size` is 0.
    pub kind: u32,
}

impl Marker {
    /// Decodes the first 16 bytes of a marker.
    pub fn decode(b: &[u8; 16]) -> Marker {
        Marker {
            value: u64_at(b, 0),
            size: u32_at(b, 8),
            kind: u32_at(b, 12),
        }
    }

    /// A metadata marker's full sector.
    pub fn metadata(kind: u32, sectors: u64) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..8].copy_from_slice(&sectors.to_le_bytes());
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = SparseHeader {
            version: 3,
            flags: FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: 40960,
            grain_size: 128,
            descriptor_offset: 1,
            descriptor_size: 20,
            gtes_per_gt: 512,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: 128,
            unclean_shutdown: false,
            newline_chars: *b"\n \r\n",
            compress_algorithm: COMPRESS_DEFLATE,
        };
        assert_eq!(SparseHeader::decode(&h.encode()), Some(h.clone()));
        assert!(h.problems().is_empty());
        assert_eq!(h.gd_entries(), 1);
        let m = Marker::metadata(MARKER_GT, 4);
        let mut head = [0u8; 16];
        head.copy_from_slice(&m[..16]);
        assert_eq!(
            Marker::decode(&head),
            Marker {
                value: 4,
                size: 0,
                kind: MARKER_GT
            }
        );
    }
}
