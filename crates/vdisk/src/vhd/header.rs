//! The dynamic disk header (VHD specification, "Dynamic Disk Header Format"):
//! 1024 big-endian bytes that locate the BAT and, for a differencing disk, the parent.

use super::footer::{be32_at, be64_at, checksum, cookie_problem, seal_problems};

/// Length of the dynamic header.
pub const HEADER_SIZE: usize = 1024;
/// The header's cookie.
pub const COOKIE: &[u8; 8] = b"cxsparse";
/// Header version 1.0.
pub const HEADER_VERSION: u32 = 0x0001_0000;
/// Where the checksum field sits.
const CHECKSUM_AT: usize = 36;
/// Number of parent locator entries.
pub const LOCATORS: usize = 8;
/// The default block size, 2 MiB.
pub const DEFAULT_BLOCK_SIZE: u64 = 2 << 20;
/// The largest block size accepted (larger ones are legal but unheard of, and
/// would make a single block allocation unreasonably large).
pub const MAX_BLOCK_SIZE: u64 = 256 << 20;

/// One parent locator entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParentLocator {
    /// Platform code (`W2ku`, `W2ru`, `Mac `, `MacX`, or zero when unused).
    pub platform_code: u32,
    /// Space reserved for the locator data.
    pub platform_data_space: u32,
    /// Length of the locator data, in bytes.
    pub platform_data_length: u32,
    /// Reserved.
    pub reserved: u32,
    /// Offset of the locator data in the file.
    pub platform_data_offset: u64,
}

impl ParentLocator {
    /// Whether the entry is in use.
    pub fn is_used(&self) -> bool {
        self.platform_code != 0
    }
}

/// A decoded dynamic header, valid or not: [`DynamicHeader::problems`] says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicHeader {
    /// Cookie; `cxsparse` when valid.
    pub cookie: [u8; 8],
    /// Unused; all ones.
    pub data_offset: u64,
    /// Offset of the BAT.
    pub table_offset: u64,
    /// Header version.
    pub header_version: u32,
    /// Entries in the BAT.
    pub max_table_entries: u32,
    /// Bytes of disk per block (data only, bitmap excluded).
    pub block_size: u32,
    /// The checksum as stored.
    pub checksum: u32,
    /// Unique id of the parent (differencing disks).
    pub parent_unique_id: [u8; 16],
    /// Modification time of the parent, seconds since 2000-01-01 UTC.
    pub parent_timestamp: u32,
    /// Reserved.
    pub reserved: u32,
    /// Parent file name, UTF-16BE, NUL padded.
    pub parent_unicode_name: [u8; 512],
    /// The eight parent locators.
    pub locators: [ParentLocator; LOCATORS],
    /// The checksum computed over the bytes this header was decoded from.
    pub computed_checksum: u32,
}

impl DynamicHeader {
    /// A header for a new dynamic disk.
    pub fn new(table_offset: u64, max_table_entries: u32, block_size: u32) -> DynamicHeader {
        DynamicHeader {
            cookie: *COOKIE,
            data_offset: u64::MAX,
            table_offset,
            header_version: HEADER_VERSION,
            max_table_entries,
            block_size,
            checksum: 0,
            parent_unique_id: [0; 16],
            parent_timestamp: 0,
            reserved: 0,
            parent_unicode_name: [0; 512],
            locators: [ParentLocator::default(); LOCATORS],
            computed_checksum: 0,
        }
    }

    /// Decodes a header; `None` unless `bytes` is exactly 1024 bytes long.
    pub fn decode(bytes: &[u8]) -> Option<DynamicHeader> {
        if bytes.len() != HEADER_SIZE {
            return None;
        }
        let b = bytes;
        let mut cookie = [0; 8];
        cookie.copy_from_slice(&b[0..8]);
        let mut parent_unique_id = [0; 16];
        parent_unique_id.copy_from_slice(&b[40..56]);
        let mut parent_unicode_name = [0; 512];
        parent_unicode_name.copy_from_slice(&b[64..576]);
        let mut locators = [ParentLocator::default(); LOCATORS];
        for (i, l) in locators.iter_mut().enumerate() {
            let at = 576 + 24 * i;
            *l = ParentLocator {
                platform_code: be32_at(b, at),
                platform_data_space: be32_at(b, at + 4),
                platform_data_length: be32_at(b, at + 8),
                reserved: be32_at(b, at + 12),
                platform_data_offset: be64_at(b, at + 16),
            };
        }
        Some(DynamicHeader {
            cookie,
            data_offset: be64_at(b, 8),
            table_offset: be64_at(b, 16),
            header_version: be32_at(b, 24),
            max_table_entries: be32_at(b, 28),
            block_size: be32_at(b, 32),
            checksum: be32_at(b, CHECKSUM_AT),
            parent_unique_id,
            parent_timestamp: be32_at(b, 56),
            reserved: be32_at(b, 60),
            parent_unicode_name,
            locators,
            computed_checksum: checksum(b, CHECKSUM_AT),
        })
    }

    /// Encodes the header with a freshly computed checksum.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.cookie);
        b[8..16].copy_from_slice(&self.data_offset.to_be_bytes());
        b[16..24].copy_from_slice(&self.table_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.header_version.to_be_bytes());
        b[28..32].copy_from_slice(&self.max_table_entries.to_be_bytes());
        b[32..36].copy_from_slice(&self.block_size.to_be_bytes());
        b[40..56].copy_from_slice(&self.parent_unique_id);
        b[56..60].copy_from_slice(&self.parent_timestamp.to_be_bytes());
        b[60..64].copy_from_slice(&self.reserved.to_be_bytes());
        b[64..576].copy_from_slice(&self.parent_unicode_name);
        for (i, l) in self.locators.iter().enumerate() {
            let at = 576 + 24 * i;
            b[at..at + 4].copy_from_slice(&l.platform_code.to_be_bytes());
            b[at + 4..at + 8].copy_from_slice(&l.platform_data_space.to_be_bytes());
            b[at + 8..at + 12].copy_from_slice(&l.platform_data_length.to_be_bytes());
            b[at + 12..at + 16].copy_from_slice(&l.reserved.to_be_bytes());
            b[at + 16..at + 24].copy_from_slice(&l.platform_data_offset.to_be_bytes());
        }
        let sum = checksum(&b, CHECKSUM_AT);
        b[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Whether the cookie and checksum are right.
    pub fn is_valid(&self) -> bool {
        &self.cookie == COOKIE && self.checksum == self.computed_checksum
    }

    /// Bytes of the sector bitmap in front of each block: one bit per sector,
    /// rounded up to whole sectors.
    pub fn bitmap_size(&self) -> u64 {
        bitmap_size(u64::from(self.block_size))
    }

    /// Whether any parent field (id, name, locators) is set.
    pub fn has_parent_fields(&self) -> bool {
        self.parent_unique_id != [0; 16]
            || self.parent_unicode_name.iter().any(|&b| b != 0)
            || self.locators.iter().any(|l| l.is_used())
    }

    /// What is wrong with the header's own fields (empty when nothing is). File
    /// layout (where the BAT lies) is checked by the caller, who knows the file.
    pub fn problems(&self) -> Vec<String> {
        let Some(mut p) =
            seal_problems(&self.cookie, COOKIE, self.checksum, self.computed_checksum)
        else {
            return vec![cookie_problem(&self.cookie, COOKIE)];
        };
        if self.header_version >> 16 != 1 {
            p.push(format!(
                "header version is 0x{:08x}, expected 0x00010000",
                self.header_version
            ));
        }
        if let Some(why) = block_size_problem(u64::from(self.block_size)) {
            p.push(why);
        }
        if self.table_offset % 512 != 0 {
            p.push(format!(
                "table offset {} is not sector-aligned",
                self.table_offset
            ));
        }
        p
    }
}

/// Why `block_size` cannot be a VHD block size, if it cannot.
pub fn block_size_problem(block_size: u64) -> Option<String> {
    if !block_size.is_power_of_two() || block_size < 512 {
        Some(format!(
            "block size {block_size} is not a power of two of at least 512 bytes"
        ))
    } else if block_size > MAX_BLOCK_SIZE {
        Some(format!(
            "block size {block_size} is larger than the {MAX_BLOCK_SIZE} bytes supported"
        ))
    } else {
        None
    }
}

/// Bytes of the sector bitmap for blocks of `block_size` bytes.
pub fn bitmap_size(block_size: u64) -> u64 {
    (block_size / 512).div_ceil(8).div_ceil(512) * 512
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = DynamicHeader::new(1536, 26, 2 << 20);
        h.locators[1].platform_code = u32::from_be_bytes(*b"W2ru");
        h.locators[1].platform_data_offset = 4096;
        let b = h.encode();
        let d = DynamicHeader::decode(&b).unwrap();
        assert!(d.is_valid());
        assert!(d.problems().is_empty());
        assert_eq!(d.encode(), b);
        assert_eq!(d.locators[1].platform_data_offset, 4096);
        assert!(d.has_parent_fields());
        assert!(
            !DynamicHeader::decode(&DynamicHeader::new(1536, 1, 4096).encode())
                .unwrap()
                .has_parent_fields()
        );
    }

    #[test]
    fn bitmap_sizes() {
        assert_eq!(bitmap_size(2 << 20), 512);
        assert_eq!(bitmap_size(512), 512);
        assert_eq!(bitmap_size(4 << 20), 1024);
        assert_eq!(bitmap_size(256 << 20), 64 << 10);
    }

    #[test]
    fn bad_block_sizes() {
        assert!(block_size_problem(0).is_some());
        assert!(block_size_problem(3 << 20).is_some());
        assert!(block_size_problem(256).is_some());
        assert!(block_size_problem(1 << 30).is_some());
        assert!(block_size_problem(512).is_none());
        let mut h = DynamicHeader::new(1536, 1, 3000);
        h.checksum = 1;
        let d = DynamicHeader::decode(&h.encode()).unwrap();
        assert_eq!(d.problems().len(), 1, "{:?}", d.problems());
    }
}
