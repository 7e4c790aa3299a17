//! The on-disk pieces of ISO 9660 as pure functions over bytes: directory
//! records (ECMA-119 9.1), their dates (9.1.5), the System Use Sharing
//! Protocol entries that carry Rock Ridge (SUSP 1.12 / RRIP 1.12: SP, CE, NM,
//! PX, SL, TF, CL, RE) and Joliet's UCS-2 names.
//!
//! Nothing here reads the disk, and nothing indexes a slice with a value from
//! the image without checking it first.

/// Bytes per logical sector; directory records never cross one (ECMA-119 6.8.1.1).
pub(super) const SECTOR: usize = 2048;

/// Longest Rock Ridge name kept, in bytes (Linux allows 255; names are
/// refused well past that to bound what a hostile image can make us build).
pub(super) const MAX_NAME: usize = 1024;

/// Longest symbolic link target kept, in bytes (Linux's PATH_MAX).
pub(super) const MAX_LINK: usize = 4096;

/// Directory record flags (ECMA-119 9.1.6).
pub(super) const FLAG_DIR: u8 = 0x02;
/// An associated file (a resource fork), not listed.
pub(super) const FLAG_ASSOCIATED: u8 = 0x04;
/// The file continues in the next record.
pub(super) const FLAG_MULTI_EXTENT: u8 = 0x80;

/// One directory record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    /// First logical block of the extent.
    pub extent: u32,
    /// Bytes in the extent.
    pub size: u32,
    /// Recording date, seconds since the Unix epoch.
    pub recorded: Option<i64>,
    /// File flags.
    pub flags: u8,
    /// The file identifier as stored.
    pub ident: Vec<u8>,
    /// Offset of the System Use area inside the record, and its length.
    pub system_use: (usize, usize),
}

impl Record {
    /// True for the `.` and `..` records (identifier 0x00 or 0x01).
    pub fn is_dot(&self) -> bool {
        matches!(self.ident.as_slice(), [0] | [1])
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses the directory record at the start of `b` (which holds at least the
/// record's length in bytes; the caller checked that it fits its sector).
pub(super) fn parse_record(b: &[u8]) -> Result<Record, String> {
    let len = *b.first().ok_or("an empty directory record")? as usize;
    if len < 34 || len > b.len() {
        return Err(format!("a directory record of {len} bytes"));
    }
    let b = &b[..len];
    let name_len = b[32] as usize;
    let name_end = 33 + name_len;
    if name_len == 0 || name_end > len {
        return Err(format!(
            "a directory record of {len} bytes with a {name_len}-byte name"
        ));
    }
    // A pad byte follows an even-length name (9.1.12).
    let su_start = (name_end + usize::from(name_len % 2 == 0)).min(len);
    Ok(Record {
        extent: le32(b, 2).ok_or("truncated record")?,
        size: le32(b, 10).ok_or("truncated record")?,
        recorded: short_date(&b[18..25]),
        flags: b[25],
        ident: b[33..name_end].to_vec(),
        system_use: (su_start, len - su_start),
    })
}

/// Splits a directory's bytes into records: `(offset, record)` each. A zero
/// length byte ends the records of a sector; no record crosses a sector.
pub(super) fn records(data: &[u8]) -> Result<Vec<(usize, Record)>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let sector_end = ((at / SECTOR) + 1) * SECTOR;
        let len = data[at] as usize;
        if len == 0 {
            at = sector_end;
            continue;
        }
        if at + len > sector_end.min(data.len()) {
            return Err(format!(
                "the directory record at byte {at} is {len} bytes long, past the end of its sector"
            ));
        }
        let r = parse_record(&data[at..at + len]).map_err(|e| format!("byte {at}: {e}"))?;
        out.push((at, r));
        at += len;
    }
    Ok(out)
}

fn seconds(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, offset: i8) -> Option<i64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let local = crate::time::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    // The offset from GMT is in 15-minute units.
    Some(local - i64::from(offset) * 900)
}

/// The 7-byte date of directory records and short-form TF (ECMA-119 9.1.5).
pub(super) fn short_date(b: &[u8]) -> Option<i64> {
    let b: &[u8; 7] = b.get(..7)?.try_into().ok()?;
    if b[..6].iter().all(|&x| x == 0) {
        return None;
    }
    seconds(
        1900 + i64::from(b[0]),
        i64::from(b[1]),
        i64::from(b[2]),
        i64::from(b[3]),
        i64::from(b[4]),
        i64::from(b[5]),
        b[6] as i8,
    )
}

/// The 17-byte digits-and-offset date of volume descriptors and long-form TF
/// (ECMA-119 8.4.26.1).
pub(super) fn long_date(b: &[u8]) -> Option<i64> {
    let b = b.get(..17)?;
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(b.get(r)?).ok()?.parse().ok()
    };
    let y = num(0..4)?;
    if y == 0 {
        return None;
    }
    seconds(
        y,
        num(4..6)?,
        num(6..8)?,
        num(8..10)?,
        num(10..12)?,
        num(12..14)?,
        b[16] as i8,
    )
}

/// A Joliet identifier (UCS-2, big-endian) as a string.
pub(super) fn ucs2(b: &[u8]) -> String {
    let units = b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// A plain ISO 9660 or Joliet name without its version (";1") and without
/// the trailing dot of a name with no extension.
pub(super) fn plain_name(s: &str) -> String {
    let s = match s.rfind(';') {
        Some(i) => &s[..i],
        None => s,
    };
    s.strip_suffix('.').unwrap_or(s).to_string()
}

/// Where a System Use area continues (SUSP 5.1, CE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Continuation {
    /// Logical block.
    pub block: u32,
    /// Byte offset in the block.
    pub offset: u32,
    /// Bytes.
    pub len: u32,
}

/// What the SUSP entries of one record say, gathered over its continuations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Susp {
    /// SP: the bytes to skip at the start of every other System Use area.
    pub sp_skip: Option<u8>,
    /// An RRIP entry was seen (PX, NM, SL, TF, ...).
    pub rock_ridge: bool,
    /// NM: the name.
    pub name: Option<Vec<u8>>,
    /// NM with the CURRENT or PARENT flag.
    pub name_is_dot: bool,
    /// PX: the POSIX mode.
    pub mode: Option<u32>,
    /// SL: the target's components; a component is open while the last SL
    /// component said it continues.
    link: Option<Vec<Vec<u8>>>,
    link_root: bool,
    link_open: bool,
    /// TF: the modification time.
    pub modified: Option<i64>,
    /// CL: the block of a directory relocated away from here.
    pub child: Option<u32>,
    /// RE: this is a relocated directory, listed at its CL instead.
    pub relocated: bool,
    /// Set when a name or link grew past its limit.
    pub too_long: bool,
}

impl Susp {
    /// The symbolic link target, when SL entries were seen.
    pub fn link(&self) -> Option<String> {
        let parts = self.link.as_ref()?;
        let joined: Vec<String> = parts
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let body = joined.join("/");
        Some(if self.link_root {
            format!("/{body}")
        } else {
            body
        })
    }

    /// Reads the entries of one System Use area (or continuation area);
    /// returns where it continues, if it does.
    pub fn parse(&mut self, mut area: &[u8]) -> Option<Continuation> {
        let mut next = None;
        while area.len() >= 4 {
            let sig = [area[0], area[1]];
            let len = area[2] as usize;
            if len < 4 || len > area.len() {
                break;
            }
            let data = &area[4..len];
            match &sig {
                b"SP" if data.len() >= 3 && data[0] == 0xBE && data[1] == 0xEF => {
                    self.sp_skip = Some(data[2]);
                }
                b"ST" => break,
                b"CE" if data.len() >= 24 => {
                    next = Some(Continuation {
                        block: le32(data, 0)?,
                        offset: le32(data, 8)?,
                        len: le32(data, 16)?,
                    });
                }
                b"PX" if data.len() >= 8 => {
                    self.rock_ridge = true;
                    self.mode = le32(data, 0);
                }
                b"NM" if !data.is_empty() => {
                    self.rock_ridge = true;
                    let flags = data[0];
                    if flags & 0x06 != 0 {
                        self.name_is_dot = true;
                    } else {
                        let name = self.name.get_or_insert_with(Vec::new);
                        if name.len() + data.len() > MAX_NAME {
                            self.too_long = true;
                        } else {
                            name.extend_from_slice(&data[1..]);
                        }
                    }
                }
                b"SL" if !data.is_empty() => {
                    self.rock_ridge = true;
                    self.symlink_components(&data[1..]);
                }
                b"TF" if !data.is_empty() => {
                    self.rock_ridge = true;
                    self.times(data);
                }
                b"CL" if data.len() >= 8 => {
                    self.rock_ridge = true;
                    self.child = le32(data, 0);
                }
                b"RE" => {
                    self.rock_ridge = true;
                    self.relocated = true;
                }
                b"RR" | b"PN" | b"ER" => self.rock_ridge = true,
                _ => {}
            }
            area = &area[len..];
        }
        next
    }

    fn symlink_components(&mut self, mut comps: &[u8]) {
        let parts = self.link.get_or_insert_with(Vec::new);
        let mut total: usize = parts.iter().map(|p| p.len() + 1).sum();
        while comps.len() >= 2 {
            let (flags, len) = (comps[0], comps[1] as usize);
            let Some(content) = comps.get(2..2 + len) else {
                break;
            };
            comps = &comps[2 + len..];
            total += len + 1;
            if total > MAX_LINK {
                self.too_long = true;
                return;
            }
            let piece: &[u8] = if flags & 0x02 != 0 {
                b"."
            } else if flags & 0x04 != 0 {
                b".."
            } else if flags & 0x08 != 0 {
                if parts.is_empty() {
                    self.link_root = true;
                    self.link_open = false;
                    continue;
                }
                b""
            } else {
                content
            };
            match parts.last_mut() {
                Some(last) if self.link_open => last.extend_from_slice(piece),
                _ => parts.push(piece.to_vec()),
            }
            self.link_open = flags & 0x01 != 0;
        }
    }

    fn times(&mut self, data: &[u8]) {
        let flags = data[0];
        let width = if flags & 0x80 != 0 { 17 } else { 7 };
        let mut at = 1usize;
        // Stamps appear in the order of their flag bits: creation,
        // modification, access, attributes, backup, expiration, effective.
        for bit in 0..7 {
            if flags & (1 << bit) == 0 {
                continue;
            }
            let Some(stamp) = data.get(at..at + width) else {
                return;
            };
            if bit == 1 {
                self.modified = if width == 17 {
                    long_date(stamp)
                } else {
                    short_date(stamp)
                };
            }
            at += width;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &[u8], su: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; 33];
        r.extend_from_slice(name);
        if name.len() % 2 == 0 {
            r.push(0);
        }
        r.extend_from_slice(su);
        r[0] = r.len() as u8;
        r[2..6].copy_from_slice(&20u32.to_le_bytes());
        r[10..14].copy_from_slice(&5u32.to_le_bytes());
        r[18..25].copy_from_slice(&[124, 2, 29, 12, 30, 4, 0]);
        r[32] = name.len() as u8;
        r
    }

    #[test]
    fn records_and_dates() {
        let r = parse_record(&record(b"HELLO.TXT;1", &[])).unwrap();
        assert_eq!((r.extent, r.size), (20, 5));
        assert_eq!(r.recorded, Some(1_709_209_804));
        assert_eq!(
            plain_name(std::str::from_utf8(&r.ident).unwrap()),
            "HELLO.TXT"
        );
        assert_eq!(plain_name("NOEXT.;1"), "NOEXT");
        assert_eq!(long_date(b"2024022912300400\0"), Some(1_709_209_804));
        assert_eq!(ucs2(&[0, b'a', 0x00, 0xE9]), "aé");
    }

    #[test]
    fn records_that_do_not_fit_are_refused() {
        let mut r = record(b"A", &[]);
        r[32] = 200;
        assert!(parse_record(&r).is_err());
        let mut dir = vec![0u8; SECTOR + 20];
        dir[SECTOR] = 40;
        assert!(records(&dir).unwrap_err().contains("past the end"));
        assert!(parse_record(&[10]).is_err());
        assert!(parse_record(&[]).is_err());
    }

    #[test]
    fn rock_ridge_entries() {
        let mut su = Vec::new();
        su.extend_from_slice(&[b'N', b'M', 9, 1, 1, b'l', b'o', b'n', b'g']);
        su.extend_from_slice(&[b'N', b'M', 7, 1, 0, b'e', b'r']);
        su.extend_from_slice(&[b'P', b'X', 44, 1]);
        su.extend_from_slice(&0o120777u32.to_le_bytes());
        su.extend_from_slice(&[0; 36]);
        // SL: root, "usr" continued by "lib", then "..".
        su.extend_from_slice(&[
            b'S', b'L', 19, 1, 0, 8, 0, 1, 3, b'u', b's', b'r', 0, 3, b'l', b'i', b'b', 4, 0,
        ]);
        let mut s = Susp::default();
        assert_eq!(s.parse(&su), None);
        assert_eq!(s.name.as_deref(), Some(&b"longer"[..]));
        assert_eq!(s.mode, Some(0o120777));
        assert_eq!(s.link().as_deref(), Some("/usrlib/.."));
        // Bad lengths stop parsing without panicking.
        let mut s = Susp::default();
        s.parse(&[b'N', b'M', 200, 1, 0, b'x']);
        s.parse(&[b'S', b'L', 8, 1, 0, 0, 9, 1]);
        s.parse(&[b'T', b'F', 6, 1, 0x82, 1]);
        assert_eq!(s.name, None);
    }
}
