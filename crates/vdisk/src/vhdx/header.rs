//! The header section ([MS-VHDX] 2.2): the file type identifier, the two
//! headers and the two region tables, all within the first 1 MiB.

use super::fields::{crc32c_skip, guid, guid_at, put, u16_at, u32_at, u64_at, Guid};

/// Where the file type identifier is.
pub const FILE_ID_OFFSET: u64 = 0;
/// The signature that starts the file.
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// Where the two headers are.
pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// Bytes of a header covered by its checksum.
pub const HEADER_SIZE: usize = 4096;
/// Where the two region tables are.
pub const REGION_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// Bytes of a region table covered by its checksum.
pub const REGION_TABLE_SIZE: usize = 64 << 10;
/// The header section: nothing else may lie in the first 1 MiB.
pub const HEADER_SECTION: u64 = 1 << 20;
/// Structures in the file are placed on 1 MiB boundaries.
pub const ALIGN: u64 = 1 << 20;

const HEADER_SIG: &[u8; 4] = b"head";
const REGION_SIG: &[u8; 4] = b"regi";
/// The most entries a region table may hold.
pub const MAX_REGIONS: u32 = 2047;

/// The BAT region.
pub const BAT_REGION: Guid = guid("2DC27766-F623-4200-9D64-115E9BFD4A08");
/// The metadata region.
pub const METADATA_REGION: Guid = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E");

/// One of the two headers ([MS-VHDX] 2.2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Which of two headers is current: the valid one with the larger number.
    pub sequence: u64,
    /// Changed on the first write to the file after it is opened.
    pub file_write_guid: Guid,
    /// Changed on the first change of the disk's content after it is opened;
    /// children name their parent by it.
    pub data_write_guid: Guid,
    /// Zero when the log holds nothing to replay; else the id its entries carry.
    pub log_guid: Guid,
    /// Log format version, 0.
    pub log_version: u16,
    /// Format version, 1.
    pub version: u16,
    /// Bytes of the log.
    pub log_length: u32,
    /// Where the log is.
    pub log_offset: u64,
}

impl Header {
    /// Decodes a header from its 4 KiB; the error says which field is wrong.
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() < HEADER_SIZE {
            return Err("short read".into());
        }
        if b.get(..4) != Some(&HEADER_SIG[..]) {
            return Err("bad signature (expected \"head\")".into());
        }
        let stored = u32_at(b, 4);
        let computed = crc32c_skip(&b[..HEADER_SIZE], 4);
        if stored != computed {
            return Err(format!(
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        Ok(Header {
            sequence: u64_at(b, 8),
            file_write_guid: guid_at(b, 16),
            data_write_guid: guid_at(b, 32),
            log_guid: guid_at(b, 48),
            log_version: u16_at(b, 64),
            version: u16_at(b, 66),
            log_length: u32_at(b, 68),
            log_offset: u64_at(b, 72),
        })
    }

    /// Encodes the header into its 4 KiB, checksum included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        put(&mut b, 0, HEADER_SIG);
        put(&mut b, 8, &self.sequence.to_le_bytes());
        put(&mut b, 16, &self.file_write_guid);
        put(&mut b, 32, &self.data_write_guid);
        put(&mut b, 48, &self.log_guid);
        put(&mut b, 64, &self.log_version.to_le_bytes());
        put(&mut b, 66, &self.version.to_le_bytes());
        put(&mut b, 68, &self.log_length.to_le_bytes());
        put(&mut b, 72, &self.log_offset.to_le_bytes());
        let crc = crc32c_skip(&b, 4);
        put(&mut b, 4, &crc.to_le_bytes());
        b
    }

    /// What is wrong with the header's fields (checksum aside), if anything.
    pub fn validate(&self, file_len: u64) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!("version {} is not 1", self.version));
        }
        if self.log_version != 0 {
            return Err(format!("log version {} is not 0", self.log_version));
        }
        let len = u64::from(self.log_length);
        if len == 0 || len % ALIGN != 0 {
            return Err(format!(
                "log length {len} is not a non-zero multiple of 1 MiB"
            ));
        }
        if self.log_offset < HEADER_SECTION || self.log_offset % ALIGN != 0 {
            return Err(format!(
                "log offset {} is not a multiple of 1 MiB past the header section",
                self.log_offset
            ));
        }
        match self.log_offset.checked_add(len) {
            Some(end) if end <= file_len => Ok(()),
            _ => Err(format!(
                "log ({len} bytes at {}) extends past the end of the file ({file_len} bytes)",
                self.log_offset
            )),
        }
    }
}

/// Picks the current header from the two slots' decode results: the valid
/// one with the larger sequence number. Returns its slot.
pub fn current(slots: &[Result<Header, String>; 2]) -> Option<usize> {
    match (&slots[0], &slots[1]) {
        (Ok(a), Ok(b)) => Some(if b.sequence > a.sequence { 1 } else { 0 }),
        (Ok(_), Err(_)) => Some(0),
        (Err(_), Ok(_)) => Some(1),
        (Err(_), Err(_)) => None,
    }
}

/// One region table entry ([MS-VHDX] 2.2.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Which region.
    pub guid: Guid,
    /// Where it is in the file.
    pub offset: u64,
    /// Its length in bytes.
    pub length: u32,
    /// Whether a reader that does not know the region must refuse the file.
    pub required: bool,
}

/// A region table ([MS-VHDX] 2.2.3).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RegionTable {
    /// Its entries.
    pub regions: Vec<Region>,
}

impl RegionTable {
    /// The table of a new image, as vmhub lays one out: its BAT of
    /// `bat_length` bytes at `bat_offset` and its metadata region of
    /// `metadata_length` at `metadata_offset`, both required.
    pub fn of_new_image(
        bat_offset: u64,
        bat_length: u32,
        metadata_offset: u64,
        metadata_length: u32,
    ) -> RegionTable {
        RegionTable {
            regions: vec![
                Region {
                    guid: BAT_REGION,
                    offset: bat_offset,
                    length: bat_length,
                    required: true,
                },
                Region {
                    guid: METADATA_REGION,
                    offset: metadata_offset,
                    length: metadata_length,
                    required: true,
                },
            ],
        }
    }

    /// Decodes a region table from its 64 KiB.
    pub fn decode(b: &[u8]) -> Result<RegionTable, String> {
        if b.len() < REGION_TABLE_SIZE {
            return Err("short read".into());
        }
        if b.get(..4) != Some(&REGION_SIG[..]) {
            return Err("bad signature (expected \"regi\")".into());
        }
        let stored = u32_at(b, 4);
        let computed = crc32c_skip(&b[..REGION_TABLE_SIZE], 4);
        if stored != computed {
            return Err(format!(
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let count = u32_at(b, 8);
        if count > MAX_REGIONS {
            return Err(format!("entry count {count} exceeds {MAX_REGIONS}"));
        }
        let regions = (0..count as usize)
            .map(|i| {
                let at = 16 + i * 32;
                Region {
                    guid: guid_at(b, at),
                    offset: u64_at(b, at + 16),
                    length: u32_at(b, at + 24),
                    required: u32_at(b, at + 28) & 1 != 0,
                }
            })
            .collect();
        Ok(RegionTable { regions })
    }

    /// Encodes the table into its 64 KiB, checksum included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; REGION_TABLE_SIZE];
        put(&mut b, 0, REGION_SIG);
        put(&mut b, 8, &(self.regions.len() as u32).to_le_bytes());
        for (i, r) in self.regions.iter().enumerate() {
            let at = 16 + i * 32;
            put(&mut b, at, &r.guid);
            put(&mut b, at + 16, &r.offset.to_le_bytes());
            put(&mut b, at + 24, &r.length.to_le_bytes());
            put(&mut b, at + 28, &u32::from(r.required).to_le_bytes());
        }
        let crc = crc32c_skip(&b, 4);
        put(&mut b, 4, &crc.to_le_bytes());
        b
    }

    /// The region `guid`, if the table has it.
    pub fn find(&self, guid: &Guid) -> Option<&Region> {
        self.regions.iter().find(|r| &r.guid == guid)
    }

    /// What is wrong with the entries (places, overlaps, unknown required
    /// regions, missing BAT or metadata), if anything.
    pub fn validate(&self, file_len: u64) -> Result<(), String> {
        let mut spans: Vec<(u64, u64, String)> = Vec::new();
        for (i, r) in self.regions.iter().enumerate() {
            let name = region_name(&r.guid);
            if r.guid != BAT_REGION && r.guid != METADATA_REGION && r.required {
                return Err(format!(
                    "entry {i}: unknown required region {}",
                    super::fields::guid_text(&r.guid)
                ));
            }
            let len = u64::from(r.length);
            if r.offset < HEADER_SECTION || r.offset % ALIGN != 0 || len == 0 || len % ALIGN != 0 {
                return Err(format!(
                    "entry {i} ({name}): offset {} and length {len} are not non-zero multiples of 1 MiB past the header section",
                    r.offset
                ));
            }
            let end = r.offset.saturating_add(len);
            if end > file_len {
                return Err(format!(
                    "entry {i} ({name}): {len} bytes at {} extend past the end of the file ({file_len} bytes)",
                    r.offset
                ));
            }
            if let Some((_, _, other)) = spans.iter().find(|(s, e, _)| r.offset < *e && *s < end) {
                return Err(format!("entry {i} ({name}) overlaps the {other}"));
            }
            if self.regions[..i].iter().any(|o| o.guid == r.guid) {
                return Err(format!("entry {i} ({name}) appears twice"));
            }
            spans.push((r.offset, end, name.to_string()));
        }
        for (g, name) in [(BAT_REGION, "BAT"), (METADATA_REGION, "metadata")] {
            if self.find(&g).is_none() {
                return Err(format!("no {name} region"));
            }
        }
        Ok(())
    }
}

/// A region's name for messages.
pub fn region_name(g: &Guid) -> &'static str {
    if *g == BAT_REGION {
        "BAT region"
    } else if *g == METADATA_REGION {
        "metadata region"
    } else {
        "unknown region"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checksum() {
        let h = Header {
            sequence: 7,
            file_write_guid: [1; 16],
            data_write_guid: [2; 16],
            log_guid: [0; 16],
            log_version: 0,
            version: 1,
            log_length: 1 << 20,
            log_offset: 1 << 20,
        };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        b[100] ^= 1;
        assert!(Header::decode(&b).unwrap_err().contains("checksum"));
    }

    #[test]
    fn region_table_round_trip() {
        let t = RegionTable {
            regions: vec![Region {
                guid: BAT_REGION,
                offset: 2 << 20,
                length: 1 << 20,
                required: true,
            }],
        };
        assert_eq!(RegionTable::decode(&t.encode()), Ok(t));
    }
}
