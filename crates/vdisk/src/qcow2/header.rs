//! The qcow2 header (qcow2 specification, "Header") and its extensions
//! ("Header extensions"): parsed into plain structs, checked, and encoded.

use crate::{Error, Result};
use std::path::Path;

/// The magic at offset 0: "QFI" and 0xfb.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Bytes of a version 2 header.
pub const V2_HEADER_LEN: usize = 72;
/// Bytes of the version 3 header this crate writes (with the compression type byte).
pub const V3_HEADER_LEN: usize = 112;
/// Smallest cluster size (512 bytes) qemu supports.
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster size (2 MiB) qemu supports.
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest L1 table qemu accepts, in bytes.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// The refcount width of images vmhub makes: 16 bits, as qemu-img makes them.
pub const NEW_REFCOUNT_ORDER: u32 = 4;
/// Largest refcount table qemu accepts, in bytes.
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Longest backing file name qemu accepts.
pub const MAX_BACKING_NAME: u32 = 1023;

/// Incompatible feature bit 0: the refcounts may be stale (lazy refcounts).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: qemu found corruption and stopped writing.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: the guest data lives in an external file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is not zlib.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: L2 entries are 128 bits with subcluster bitmaps.
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Every incompatible bit this crate knows.
const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_DATA_FILE
    | INCOMPAT_COMPRESSION
    | INCOMPAT_EXTENDED_L2;
/// Compatible feature bit 0: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear feature bit 0: the bitmaps extension is consistent.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;

/// Header extension: end of the list.
const EXT_END: u32 = 0;
/// Header extension: backing file format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: feature name table.
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
/// Header extension: persistent bitmaps.
const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension: full disk encryption header.
const EXT_ENCRYPTION: u32 = 0x0537_be77;
/// Header extension: external data file name.
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// How compressed clusters are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (RFC 1951), window of 4 KiB.
    Zlib,
    /// A zstd frame.
    Zstd,
}

impl Compression {
    /// The name qemu-img uses.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// A parsed and checked qcow2 header with the extensions that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Offset of the backing file name, 0 for none.
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// 0 for none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Entries of the active L1 table.
    pub l1_size: u32,
    /// Offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (0 for version 2).
    pub incompatible: u64,
    /// Compatible feature bits.
    pub compatible: u64,
    /// Autoclear feature bits.
    pub autoclear: u64,
    /// log2 of the refcount width in bits (4 for version 2).
    pub refcount_order: u32,
    /// Bytes of the header proper; extensions follow.
    pub header_length: u32,
    /// The compression type of compressed clusters.
    pub compression: Compression,
    /// The backing file format extension, if present.
    pub backing_format: Option<String>,
    /// Names of feature bits from the feature name table: (type, bit, name).
    pub feature_names: Vec<(u8, u8, String)>,
    /// Whether a bitmaps extension is present.
    pub has_bitmaps: bool,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_be_bytes(v)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_be_bytes(v)
}

impl Header {
    /// The header of a new, empty v3 image of `size` bytes (a whole number of
    /// sectors) as vmhub makes one: no backing file, 16-bit refcounts, the
    /// refcount table in cluster 1 (`refcount_table_clusters` long), and an L1
    /// table big enough for the disk (placed by the caller). The error says
    /// why the size does not fit.
    pub fn new_v3(
        cluster_bits: u32,
        size: u64,
        refcount_table_clusters: u32,
    ) -> std::result::Result<Header, String> {
        let cs = 1u64 << cluster_bits;
        let mut h = Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits,
            size,
            crypt_method: 0,
            l1_size: 0,
            l1_table_offset: 0,
            refcount_table_offset: cs,
            refcount_table_clusters,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: NEW_REFCOUNT_ORDER,
            header_length: V3_HEADER_LEN as u32,
            compression: Compression::Zlib,
            backing_format: None,
            feature_names: Vec::new(),
            has_bitmaps: false,
        };
        let l1_size = h.l1_needed().max(1);
        if l1_size * 8 > MAX_L1_BYTES {
            return Err(format!(
                "{size} bytes is too large for a qcow2 image with {cs}-byte clusters"
            ));
        }
        h.l1_size = u32::try_from(l1_size).map_err(|_| format!("{size} bytes is too large"))?;
        Ok(h)
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Whether L2 entries are extended (128 bits, 32 subclusters).
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTENDED_L2 != 0
    }

    /// Entries of one L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / if self.extended_l2() { 16 } else { 8 }
    }

    /// Entries of the L1 table needed for the virtual size.
    pub fn l1_needed(&self) -> u64 {
        let per_l1 = self.cluster_size() * self.l2_entries();
        self.size.div_ceil(per_l1)
    }

    /// The name of an incompatible feature bit, from the feature name table or
    /// the specification.
    fn incompat_name(&self, bit: u8) -> String {
        if let Some((_, _, n)) = self
            .feature_names
            .iter()
            .find(|(t, b, _)| *t == 0 && *b == bit)
        {
            return n.clone();
        }
        format!("bit {bit}")
    }

    /// Parses the first cluster (or less for a short file) of an image. Checks
    /// everything that can be checked without the file's length.
    pub fn parse(b: &[u8], path: &Path) -> Result<Header> {
        let bad = |what: String| Error::corrupt(path, format!("header: {what}"));
        if b.len() < V2_HEADER_LEN {
            return Err(bad(format!(
                "the file has {} bytes, fewer than the {V2_HEADER_LEN} of a header",
                b.len()
            )));
        }
        if b[..4] != MAGIC {
            return Err(bad("magic is not QFI\\xfb".into()));
        }
        let version = be32(b, 4);
        if version != 2 && version != 3 {
            return Err(Error::unsupported(
                path,
                format!("header: version {version} (only 2 and 3 exist)"),
            ));
        }
        let cluster_bits = be32(b, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(bad(format!(
                "cluster_bits {cluster_bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
            )));
        }
        let cluster_size = 1usize << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(b, 8),
            backing_file_size: be32(b, 16),
            cluster_bits,
            size: be64(b, 24),
            crypt_method: be32(b, 32),
            l1_size: be32(b, 36),
            l1_table_offset: be64(b, 40),
            refcount_table_offset: be64(b, 48),
            refcount_table_clusters: be32(b, 56),
            nb_snapshots: be32(b, 60),
            snapshots_offset: be64(b, 64),
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN as u32,
            compression: Compression::Zlib,
            backing_format: None,
            feature_names: Vec::new(),
            has_bitmaps: false,
        };
        if version == 3 {
            if b.len() < 104 {
                return Err(bad(format!(
                    "a version 3 header needs 104 bytes; the file has {}",
                    b.len()
                )));
            }
            h.incompatible = be64(b, 72);
            h.compatible = be64(b, 80);
            h.autoclear = be64(b, 88);
            h.refcount_order = be32(b, 96);
            h.header_length = be32(b, 100);
            if h.header_length < 104 || h.header_length % 8 != 0 {
                return Err(bad(format!(
                    "header_length {} is below 104 or not a multiple of 8",
                    h.header_length
                )));
            }
            if h.header_length as usize > cluster_size.min(b.len()) {
                return Err(bad(format!(
                    "header_length {} reaches past the first cluster",
                    h.header_length
                )));
            }
            if h.header_length > 104 {
                h.compression = match b[104] {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    t => {
                        return Err(Error::unsupported(
                            path,
                            format!("header: unknown compression_type {t}"),
                        ))
                    }
                };
            }
            if (h.incompatible & INCOMPAT_COMPRESSION != 0) != (h.compression != Compression::Zlib)
            {
                return Err(bad(
                    "compression type bit does not agree with the compression_type field"
                        .to_string(),
                ));
            }
        }
        if h.refcount_order > 6 {
            return Err(bad(format!(
                "refcount_order {} is above 6 (64-bit refcounts)",
                h.refcount_order
            )));
        }
        h.parse_extensions(b, path)?;
        let unknown = h.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64u8)
                .filter(|i| unknown & (1 << i) != 0)
                .map(|i| h.incompat_name(i))
                .collect();
            return Err(Error::unsupported(
                path,
                format!(
                    "header: unknown incompatible features: {}",
                    names.join(", ")
                ),
            ));
        }
        if h.incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::unsupported(
                path,
                "the guest data is in an external data file, which is not supported",
            ));
        }
        if h.crypt_method != 0 {
            return Err(Error::unsupported(
                path,
                format!(
                    "the image is encrypted (crypt_method {}), which is not supported",
                    h.crypt_method
                ),
            ));
        }
        if h.extended_l2() && cluster_bits < 14 {
            return Err(bad(format!(
                "extended L2 entries need clusters of 16 KiB or more; cluster_bits is {cluster_bits}"
            )));
        }
        if h.backing_file_offset != 0 {
            if h.backing_file_size > MAX_BACKING_NAME {
                return Err(bad(format!(
                    "backing file name of {} bytes is longer than {MAX_BACKING_NAME}",
                    h.backing_file_size
                )));
            }
            let end = h
                .backing_file_offset
                .checked_add(h.backing_file_size as u64);
            if end.is_none_or(|e| e > cluster_size as u64) {
                return Err(bad(format!(
                    "backing file name at offset {} ({} bytes) reaches past the first cluster",
                    h.backing_file_offset, h.backing_file_size
                )));
            }
        }
        let cs = cluster_size as u64;
        for (name, off) in [
            ("l1_table_offset", h.l1_table_offset),
            ("refcount_table_offset", h.refcount_table_offset),
        ] {
            if off % cs != 0 || off == 0 {
                return Err(bad(format!(
                    "{name} {off} is not a nonzero multiple of the cluster size"
                )));
            }
        }
        if h.nb_snapshots != 0 && h.snapshots_offset % cs != 0 {
            return Err(bad(format!(
                "snapshots_offset {} is not a multiple of the cluster size",
                h.snapshots_offset
            )));
        }
        if h.l1_size as u64 * 8 > MAX_L1_BYTES {
            return Err(bad(format!(
                "l1_size {} is larger than the {MAX_L1_BYTES} bytes qemu allows",
                h.l1_size
            )));
        }
        if (h.l1_size as u64) < h.l1_needed() {
            return Err(bad(format!(
                "l1_size {} is too small for the virtual size {} (needs {})",
                h.l1_size,
                h.size,
                h.l1_needed()
            )));
        }
        if h.refcount_table_clusters as u64 * cs > MAX_REFTABLE_BYTES
            || h.refcount_table_clusters == 0
        {
            return Err(bad(format!(
                "refcount_table_clusters {} is 0 or larger than the {MAX_REFTABLE_BYTES} bytes qemu allows",
                h.refcount_table_clusters
            )));
        }
        Ok(h)
    }

    /// Reads the header extensions, which follow the header in the first cluster.
    fn parse_extensions(&mut self, b: &[u8], path: &Path) -> Result<()> {
        let end = b.len().min(self.cluster_size() as usize);
        let mut at = self.header_length as usize;
        // The backing file name, when it is in the first cluster, ends the
        // extension area.
        let limit = if self.backing_file_offset != 0 && (self.backing_file_offset as usize) > at {
            end.min(self.backing_file_offset as usize)
        } else {
            end
        };
        let mut index = 0;
        while at + 8 <= limit {
            let kind = be32(b, at);
            let len = be32(b, at + 4) as usize;
            if kind == EXT_END {
                return Ok(());
            }
            let data_end = (at + 8).checked_add(len).filter(|&e| e <= limit);
            let Some(data_end) = data_end else {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "header extension {index} (type {kind:#x}) at offset {at}: length {len} reaches past the end of the header area"
                    ),
                ));
            };
            let data = &b[at + 8..data_end];
            match kind {
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(String::from_utf8_lossy(data).into_owned());
                }
                EXT_FEATURE_NAMES => {
                    for e in data.chunks_exact(48) {
                        let name = &e[2..];
                        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(46)];
                        self.feature_names.push((
                            e[0],
                            e[1],
                            String::from_utf8_lossy(name).into_owned(),
                        ));
                    }
                }
                EXT_BITMAPS => self.has_bitmaps = true,
                EXT_ENCRYPTION => {
                    return Err(Error::unsupported(
                        path,
                        "the image is encrypted, which is not supported",
                    ))
                }
                EXT_DATA_FILE => {
                    return Err(Error::unsupported(
                        path,
                        "the guest data is in an external data file, which is not supported",
                    ))
                }
                _ => {}
            }
            at = data_end.div_ceil(8) * 8;
            index += 1;
        }
        Ok(())
    }

    /// Encodes the header proper (version 3 with the compression byte, or
    /// version 2), without extensions.
    pub fn encode(&self) -> Vec<u8> {
        let len = if self.version >= 3 {
            self.header_length as usize
        } else {
            V2_HEADER_LEN
        };
        let mut b = vec![0u8; len.max(V2_HEADER_LEN)];
        b[..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.version.to_be_bytes());
        b[8..16].copy_from_slice(&self.backing_file_offset.to_be_bytes());
        b[16..20].copy_from_slice(&self.backing_file_size.to_be_bytes());
        b[20..24].copy_from_slice(&self.cluster_bits.to_be_bytes());
        b[24..32].copy_from_slice(&self.size.to_be_bytes());
        b[32..36].copy_from_slice(&self.crypt_method.to_be_bytes());
        b[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        b[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        b[48..56].copy_from_slice(&self.refcount_table_offset.to_be_bytes());
        b[56..60].copy_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b[60..64].copy_from_slice(&self.nb_snapshots.to_be_bytes());
        b[64..72].copy_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version >= 3 && b.len() >= 104 {
            b[72..80].copy_from_slice(&self.incompatible.to_be_bytes());
            b[80..88].copy_from_slice(&self.compatible.to_be_bytes());
            b[88..96].copy_from_slice(&self.autoclear.to_be_bytes());
            b[96..100].copy_from_slice(&self.refcount_order.to_be_bytes());
            b[100..104].copy_from_slice(&self.header_length.to_be_bytes());
            if b.len() > 104 {
                b[104] = match self.compression {
                    Compression::Zlib => 0,
                    Compression::Zstd => 1,
                };
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: 16,
            size: 10 << 20,
            crypt_method: 0,
            l1_size: 1,
            l1_table_offset: 0x30000,
            refcount_table_offset: 0x10000,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: V3_HEADER_LEN as u32,
            compression: Compression::Zlib,
            backing_format: None,
            feature_names: Vec::new(),
            has_bitmaps: false,
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let mut b = h.encode();
        b.resize(4096, 0);
        assert_eq!(Header::parse(&b, Path::new("x")).unwrap(), h);
    }

    #[test]
    fn refuses_bad_fields() {
        let p = Path::new("x.qcow2");
        let mut h = sample();
        h.cluster_bits = 30;
        let mut b = h.encode();
        b.resize(4096, 0);
        assert!(Header::parse(&b, p).is_err());
        let mut h = sample();
        h.incompatible = 1 << 9;
        let mut b = h.encode();
        b.resize(4096, 0);
        let e = Header::parse(&b, p).unwrap_err().to_string();
        assert!(e.contains("bit 9"), "{e}");
        let mut h = sample();
        h.l1_size = 0;
        let mut b = h.encode();
        b.resize(4096, 0);
        assert!(Header::parse(&b, p).is_err());
    }
}
