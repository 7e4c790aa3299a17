//! The hard disk footer (VHD specification, "Hard Disk Footer Format"): 512
//! big-endian bytes at the end of every VHD, copied at offset 0 of dynamic disks.

use super::geometry::Geometry;

/// Length of a footer.
pub const FOOTER_SIZE: usize = 512;
/// Length of the footer of very old Virtual PC fixed disks, which lacks the last byte.
pub const LEGACY_FOOTER_SIZE: usize = 511;
/// The footer's cookie.
pub const COOKIE: &[u8; 8] = b"conectix";
/// Feature bit the specification says is always set ("reserved").
pub const FEATURE_RESERVED: u32 = 0x2;
/// File format version 1.0.
pub const VERSION_1_0: u32 = 0x0001_0000;
/// Data offset of a fixed disk: none.
pub const NO_DATA_OFFSET: u64 = u64::MAX;
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC).
pub const VHD_EPOCH: u64 = 946_684_800;
/// Host OS code for Windows ("Wi2k").
pub const HOST_WINDOWS: u32 = 0x5769_326B;
/// Host OS code for Macintosh ("Mac ").
pub const HOST_MAC: u32 = 0x4D61_6320;

/// The disk type field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskType {
    /// Type 2: the data is the file's first `current_size` bytes.
    Fixed,
    /// Type 3: data in blocks located through the BAT.
    Dynamic,
    /// Type 4: like dynamic, with sectors missing from the bitmaps read from a parent.
    Differencing,
}

impl DiskType {
    /// The type for a footer value, if it is one of the three in use.
    pub fn from_u32(v: u32) -> Option<DiskType> {
        match v {
            2 => Some(DiskType::Fixed),
            3 => Some(DiskType::Dynamic),
            4 => Some(DiskType::Differencing),
            _ => None,
        }
    }

    /// The footer value.
    pub fn to_u32(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
        }
    }

    /// Lowercase name, as `img info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// A decoded footer, valid or not: [`Footer::problems`] says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Cookie; `conectix` when valid.
    pub cookie: [u8; 8],
    /// Feature flags.
    pub features: u32,
    /// File format version.
    pub version: u32,
    /// Offset of the dynamic header, or all ones for a fixed disk.
    pub data_offset: u64,
    /// Creation time, seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// The application that created the image.
    pub creator_app: [u8; 4],
    /// Its version, major in the high 16 bits.
    pub creator_version: u32,
    /// The host OS it ran on.
    pub creator_host_os: u32,
    /// Size at creation, in bytes.
    pub original_size: u64,
    /// Current size, in bytes.
    pub current_size: u64,
    /// CHS geometry.
    pub geometry: Geometry,
    /// The raw disk type field.
    pub disk_type: u32,
    /// The checksum as stored.
    pub checksum: u32,
    /// The image's unique id.
    pub unique_id: [u8; 16],
    /// Whether the image holds a saved state.
    pub saved_state: u8,
    /// The checksum computed over the bytes this footer was decoded from.
    pub computed_checksum: u32,
}

pub(crate) fn be32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

pub(crate) fn be64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// The one's complement of the byte sum of `bytes`, skipping the four checksum
/// bytes at `checksum_at` (VHD specification: "Checksum").
pub fn checksum(bytes: &[u8], checksum_at: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(checksum_at..checksum_at + 4).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}

impl Footer {
    /// Decodes a 512-byte footer or a 511-byte legacy one. `None` when `bytes`
    /// has another length.
    pub fn decode(bytes: &[u8]) -> Option<Footer> {
        if bytes.len() != FOOTER_SIZE && bytes.len() != LEGACY_FOOTER_SIZE {
            return None;
        }
        let b = bytes;
        let mut cookie = [0; 8];
        cookie.copy_from_slice(&b[0..8]);
        let mut creator_app = [0; 4];
        creator_app.copy_from_slice(&b[28..32]);
        let mut unique_id = [0; 16];
        unique_id.copy_from_slice(&b[68..84]);
        Some(Footer {
            cookie,
            features: be32_at(b, 8),
            version: be32_at(b, 12),
            data_offset: be64_at(b, 16),
            timestamp: be32_at(b, 24),
            creator_app,
            creator_version: be32_at(b, 32),
            creator_host_os: be32_at(b, 36),
            original_size: be64_at(b, 40),
            current_size: be64_at(b, 48),
            geometry: Geometry {
                cylinders: u16::from_be_bytes([b[56], b[57]]),
                heads: b[58],
                sectors: b[59],
            },
            disk_type: be32_at(b, 60),
            checksum: be32_at(b, 64),
            saved_state: b[84],
            unique_id,
            computed_checksum: checksum(b, 64),
        })
    }

    /// Encodes the footer, with a freshly computed checksum.
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[0..8].copy_from_slice(&self.cookie);
        b[8..12].copy_from_slice(&self.features.to_be_bytes());
        b[12..16].copy_from_slice(&self.version.to_be_bytes());
        b[16..24].copy_from_slice(&self.data_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        b[28..32].copy_from_slice(&self.creator_app);
        b[32..36].copy_from_slice(&self.creator_version.to_be_bytes());
        b[36..40].copy_from_slice(&self.creator_host_os.to_be_bytes());
        b[40..48].copy_from_slice(&self.original_size.to_be_bytes());
        b[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        b[56..58].copy_from_slice(&self.geometry.cylinders.to_be_bytes());
        b[58] = self.geometry.heads;
        b[59] = self.geometry.sectors;
        b[60..64].copy_from_slice(&self.disk_type.to_be_bytes());
        b[68..84].copy_from_slice(&self.unique_id);
        b[84] = self.saved_state;
        let sum = checksum(&b, 64);
        b[64..68].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Whether the cookie and checksum are right: the footer can be trusted.
    pub fn is_valid(&self) -> bool {
        &self.cookie == COOKIE && self.checksum == self.computed_checksum
    }

    /// The disk type, if known.
    pub fn kind(&self) -> Option<DiskType> {
        DiskType::from_u32(self.disk_type)
    }

    /// What is wrong with this footer, one sentence each (empty when nothing is).
    pub fn problems(&self) -> Vec<String> {
        let Some(mut p) =
            seal_problems(&self.cookie, COOKIE, self.checksum, self.computed_checksum)
        else {
            return vec![cookie_problem(&self.cookie, COOKIE)];
        };
        if self.version >> 16 != 1 {
            p.push(format!(
                "file format version is 0x{:08x}, expected 0x00010000",
                self.version
            ));
        }
        match self.kind() {
            None => p.push(format!(
                "disk type is {}, expected 2 (fixed), 3 (dynamic) or 4 (differencing)",
                self.disk_type
            )),
            Some(DiskType::Fixed) => {}
            Some(_) => {
                if self.data_offset == NO_DATA_OFFSET || self.data_offset % 512 != 0 {
                    p.push(format!(
                        "data offset is 0x{:x}, expected the sector-aligned offset of the dynamic header",
                        self.data_offset
                    ));
                }
            }
        }
        p
    }

    /// The creator application as text, with trailing spaces and NULs kept visible.
    pub fn creator_app_text(&self) -> String {
        self.creator_app
            .iter()
            .map(|&c| {
                if c.is_ascii_graphic() || c == b' ' {
                    (c as char).to_string()
                } else {
                    format!("\\x{c:02x}")
                }
            })
            .collect()
    }

    /// The host OS as text ("Wi2k", "Mac ") or hexadecimal.
    pub fn host_os_text(&self) -> String {
        let b = self.creator_host_os.to_be_bytes();
        if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
            b.iter().map(|&c| c as char).collect()
        } else {
            format!("0x{:08x}", self.creator_host_os)
        }
    }

    /// The unique id in the usual 8-4-4-4-12 form (bytes in stored order).
    pub fn unique_id_text(&self) -> String {
        uuid_text(&self.unique_id)
    }
}

/// Why a cookie is wrong.
pub(crate) fn cookie_problem(cookie: &[u8; 8], expected: &[u8; 8]) -> String {
    format!(
        "cookie is {:?}, expected {:?}",
        String::from_utf8_lossy(cookie),
        String::from_utf8_lossy(expected)
    )
}

/// The checksum problem of a structure whose cookie is right, or `None` when
/// the cookie is wrong (then nothing else in it is worth a message).
pub(crate) fn seal_problems(
    cookie: &[u8; 8],
    expected: &[u8; 8],
    stored: u32,
    computed: u32,
) -> Option<Vec<String>> {
    if cookie != expected {
        return None;
    }
    let mut p = Vec::new();
    if stored != computed {
        p.push(format!(
            "checksum is 0x{stored:08x}, computed 0x{computed:08x}"
        ));
    }
    Some(p)
}

/// A 16-byte id in 8-4-4-4-12 hexadecimal form, bytes in stored order.
pub fn uuid_text(id: &[u8; 16]) -> String {
    let h: Vec<String> = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Footer {
        Footer {
            cookie: *COOKIE,
            features: FEATURE_RESERVED,
            version: VERSION_1_0,
            data_offset: 512,
            timestamp: 12345,
            creator_app: *b"vmhb",
            creator_version: 1,
            creator_host_os: HOST_WINDOWS,
            original_size: 52428800,
            current_size: 52428800,
            geometry: Geometry::MAX,
            disk_type: 3,
            checksum: 0,
            unique_id: [7; 16],
            saved_state: 0,
            computed_checksum: 0,
        }
    }

    #[test]
    fn round_trip() {
        let b = sample().encode();
        let f = Footer::decode(&b).unwrap();
        assert!(f.is_valid());
        assert!(f.problems().is_empty(), "{:?}", f.problems());
        assert_eq!(f.encode(), b);
        assert_eq!(f.current_size, 52428800);
        assert_eq!(f.kind(), Some(DiskType::Dynamic));
    }

    #[test]
    fn legacy_511_byte_footer_decodes() {
        let b = sample().encode();
        let f = Footer::decode(&b[..511]).unwrap();
        // The missing byte is reserved and zero, so the sum is unchanged.
        assert!(f.is_valid());
    }

    #[test]
    fn damage_is_named() {
        let mut b = sample().encode();
        b[50] ^= 1;
        let f = Footer::decode(&b).unwrap();
        assert!(!f.is_valid());
        assert!(f.problems()[0].contains("checksum"));
        b[0] = b'x';
        assert!(Footer::decode(&b).unwrap().problems()[0].contains("cookie"));
        assert!(Footer::decode(&b[..100]).is_none());
    }

    #[test]
    fn checksum_of_qemu_footer() {
        // The first 0x54 bytes of a footer qemu-img 10 wrote, checksum ffffee97.
        let hex = "636f6e6563746978000000020001000000000000000002003297ac3071656d75\
                   000500035769326b00000000032010000000000003201000\
                   03ec061100000003ffffee97fa06ab9c895f4fe9a31f1dbf1388dd58";
        let mut b = [0u8; 512];
        for i in 0..hex.len() / 2 {
            b[i] = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        let f = Footer::decode(&b).unwrap();
        assert_eq!(f.checksum, 0xffffee97);
        assert!(f.is_valid());
        assert_eq!(
            f.geometry,
            Geometry {
                cylinders: 1004,
                heads: 6,
                sectors: 17
            }
        );
    }
}
