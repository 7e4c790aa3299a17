//! Field helpers shared by the VHDX structures: GUIDs in their on-disk
//! (mixed-endian) form, CRC-32C, little-endian reads that never panic.

use crate::{Error, Result};
use std::path::Path;

/// A GUID as stored on disk: the first three groups little-endian, the last
/// eight bytes as they are ([MS-VHDX] 2.1, "GUID").
pub type Guid = [u8; 16];

/// The all-zero GUID.
pub const ZERO_GUID: Guid = [0; 16];

/// Where the dashes of a GUID's text form are.
const DASHES: [usize; 4] = [8, 13, 18, 23];

/// The on-disk form of the GUID written `text`
/// (`XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`, as [MS-VHDX] prints them). For
/// constants: text of another form stops the build. [`parse_guid`] takes
/// text from elsewhere.
pub const fn guid(text: &str) -> Guid {
    let t = text.as_bytes();
    assert!(t.len() == 36, "a GUID is written with 36 characters");
    let mut pairs = [0u8; 16];
    let (mut i, mut n) = (0, 0);
    while i < t.len() {
        let c = t[i];
        if i == DASHES[0] || i == DASHES[1] || i == DASHES[2] || i == DASHES[3] {
            assert!(c == b'-', "a GUID's groups are joined by dashes");
        } else {
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'A'..=b'F' => c - b'A' + 10,
                b'a'..=b'f' => c - b'a' + 10,
                _ => panic!("a GUID is written in hexadecimal digits"),
            };
            pairs[n / 2] = pairs[n / 2] << 4 | v;
            n += 1;
        }
        i += 1;
    }
    // The first three groups are stored little-endian, the rest as written.
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut g = [0u8; 16];
    let mut k = 0;
    while k < 16 {
        g[k] = pairs[order[k]];
        k += 1;
    }
    g
}

/// The usual text form of `g`, upper case, without braces.
pub fn guid_text(g: &Guid) -> String {
    let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let d2 = u16::from_le_bytes([g[4], g[5]]);
    let d3 = u16::from_le_bytes([g[6], g[7]]);
    format!(
        "{d1:08X}-{d2:04X}-{d3:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
    )
}

/// Parses a GUID written as text, with or without braces, any case.
pub fn parse_guid(s: &str) -> Option<Guid> {
    let s = s.trim().trim_start_matches('{').trim_end_matches('}');
    let well_formed = s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| {
            if DASHES.contains(&i) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    // `guid` accepts every text that passes this check.
    well_formed.then(|| guid(s))
}

/// A new random (version 4) GUID.
pub fn new_guid(path: &Path) -> Result<Guid> {
    let mut g = [0u8; 16];
    getrandom::fill(&mut g)
        .map_err(|e| Error::io(path, "getrandom", std::io::Error::other(e.to_string())))?;
    // Version 4 in the high nibble of the third group, RFC 4122 variant.
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    Ok(g)
}

const fn crc_table() -> [u32; 256] {
    // CRC-32C (Castagnoli), reflected polynomial.
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32C of `data` ([MS-VHDX] 2.2.2: every checksum of the format).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_skip(data, usize::MAX)
}

/// CRC-32C of `data` with the four bytes at `at` (the checksum field itself)
/// taken as zero.
pub fn crc32c_skip(data: &[u8], at: usize) -> u32 {
    let mut c = !0u32;
    for (i, &b) in data.iter().enumerate() {
        let b = if i >= at && i < at.saturating_add(4) {
            0
        } else {
            b
        };
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The little-endian u16 at `at` of `b`, 0 when `b` is too short.
pub fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .unwrap_or(0)
}

/// The little-endian u32 at `at` of `b`, 0 when `b` is too short.
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// The little-endian u64 at `at` of `b`, 0 when `b` is too short.
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// The GUID at `at` of `b`, zero when `b` is too short.
pub fn guid_at(b: &[u8], at: usize) -> Guid {
    b.get(at..at + 16)
        .and_then(|s| s.try_into().ok())
        .unwrap_or(ZERO_GUID)
}

/// Writes `v` at `at` of `b` (which the caller sized).
pub fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_value() {
        // The check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn guid_text_round_trip() {
        let g = guid("2DC27766-F623-4200-9D64-115E9BFD4A08");
        assert_eq!(
            g,
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
        let t = guid_text(&g);
        assert_eq!(t, "2DC27766-F623-4200-9D64-115E9BFD4A08");
        assert_eq!(parse_guid(&format!("{{{}}}", t.to_lowercase())), Some(g));
    }

    #[test]
    fn malformed_guid_text_is_refused() {
        for bad in [
            "",
            "2DC27766-F623-4200-9D64-115E9BFD4A0",
            "2DC27766-F623-4200-9D64-115E9BFD4A088",
            "2DC27766F623-4200-9D64-115E9BFD4A08-",
            "2DC27766-F623-4200-9D64-115E9BFD4A0G",
            "2DC27766-F623-4200-9D64+115E9BFD4A08",
            "2DC27766-F623-4200-9D64-115E9BFD4A0é",
        ] {
            assert_eq!(parse_guid(bad), None, "{bad:?}");
        }
    }
}
