//! The parts of a PE file (Microsoft "PE Format" specification) that tell
//! which Windows it belongs to: the machine field of the COFF header, and the
//! version resource (`VS_VERSIONINFO`, "Version Information" in the Win32
//! resource documentation).
//!
//! Everything here works on byte slices and trusts no offset or length in
//! them.

/// What the headers say, enough to find the resource section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Headers {
    /// The COFF `Machine` field.
    pub machine: u16,
    /// The resource table's RVA and size (data directory 2), when present.
    pub resources: Option<(u32, u32)>,
    /// Sections: virtual address, virtual size, file offset, size in the
    /// file.
    pub sections: Vec<Section>,
}

/// One section header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Section {
    pub va: u32,
    pub vsize: u32,
    pub raw_offset: u32,
    pub raw_size: u32,
}

/// What a version resource holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VersionInfo {
    /// `VS_FIXEDFILEINFO` file version: major, minor, build, revision.
    pub file_version: Option<[u16; 4]>,
    /// `VS_FIXEDFILEINFO` product version.
    pub product_version: Option<[u16; 4]>,
    /// The strings of the first string table ("ProductName", "FileVersion").
    pub strings: Vec<(String, String)>,
}

impl VersionInfo {
    /// The string named `key`.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.strings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([
        *b.get(at)?,
        *b.get(at.checked_add(1)?)?,
    ]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The most sections read (the format allows 96).
const MAX_SECTIONS: usize = 96;

/// Parses the DOS stub pointer, the PE signature, the COFF header, the data
/// directories and the section table from the start of a file.
pub(crate) fn headers(head: &[u8]) -> Option<Headers> {
    if head.get(0..2)? != b"MZ" {
        return None;
    }
    let pe = u32_at(head, 0x3c)? as usize;
    if head.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let coff = pe + 4;
    let machine = u16_at(head, coff)?;
    let nsections = (u16_at(head, coff + 2)? as usize).min(MAX_SECTIONS);
    let opt_size = u16_at(head, coff + 16)? as usize;
    let opt = coff + 20;
    let (count_at, dirs_at) = match u16_at(head, opt) {
        Some(0x10b) => (opt + 92, opt + 96),
        Some(0x20b) => (opt + 108, opt + 112),
        _ => (0, 0),
    };
    let resources = if dirs_at != 0 && u32_at(head, count_at).is_some_and(|n| n > 2) {
        let rva = u32_at(head, dirs_at + 16);
        let size = u32_at(head, dirs_at + 20);
        match (rva, size) {
            (Some(rva), Some(size)) if rva != 0 && size != 0 => Some((rva, size)),
            _ => None,
        }
    } else {
        None
    };
    let table = opt.checked_add(opt_size)?;
    let sections = (0..nsections)
        .map_while(|i| {
            let s = table.checked_add(i * 40)?;
            Some(Section {
                vsize: u32_at(head, s + 8)?,
                va: u32_at(head, s + 12)?,
                raw_size: u32_at(head, s + 16)?,
                raw_offset: u32_at(head, s + 20)?,
            })
        })
        .collect();
    Some(Headers {
        machine,
        resources,
        sections,
    })
}

impl Headers {
    /// Where in the file the resource table is: (offset, length).
    pub fn resource_range(&self) -> Option<(u64, u32)> {
        let (rva, size) = self.resources?;
        let s = self.sections.iter().find(|s| {
            let len = s.vsize.max(s.raw_size);
            rva >= s.va && (rva - s.va) < len
        })?;
        let into = rva - s.va;
        let available = s.raw_size.checked_sub(into)?;
        Some((s.raw_offset as u64 + into as u64, size.min(available)))
    }
}

/// The architecture a PE machine field names.
pub(crate) fn architecture(machine: u16) -> Option<&'static str> {
    Some(match machine {
        0x014c => "i386",
        0x8664 => "x86_64",
        0xaa64 => "aarch64",
        0x01c0 | 0x01c4 => "arm",
        0x0200 => "ia64",
        0x0184 => "alpha",
        0x01f0 => "ppc",
        0x0166 => "mips",
        _ => return None,
    })
}

/// The resource type of version information.
const RT_VERSION: u32 = 16;
/// The most entries looked at in one resource directory.
const MAX_DIR_ENTRIES: usize = 4096;

/// The version resource in the resource table `rsrc`, which starts at `rva`
/// in the image: the first name and first language of type `RT_VERSION`.
pub(crate) fn version_resource(rsrc: &[u8], rva: u32) -> Option<&[u8]> {
    // Resource directory: 16-byte header, then 8-byte entries, named ones
    // first.
    let entries = |dir: usize| -> Option<Vec<(u32, u32)>> {
        let named = u16_at(rsrc, dir + 12)? as usize;
        let ids = u16_at(rsrc, dir + 14)? as usize;
        let n = (named + ids).min(MAX_DIR_ENTRIES);
        (0..n)
            .map(|i| {
                let e = dir + 16 + 8 * i;
                Some((u32_at(rsrc, e)?, u32_at(rsrc, e + 4)?))
            })
            .collect()
    };
    const SUBDIR: u32 = 0x8000_0000;
    let (_, types) = entries(0)?
        .into_iter()
        .find(|&(name, off)| name == RT_VERSION && off & SUBDIR != 0)?;
    let (_, names) = *entries((types & !SUBDIR) as usize)?.first()?;
    if names & SUBDIR == 0 {
        return None;
    }
    let (_, langs) = *entries((names & !SUBDIR) as usize)?.first()?;
    if langs & SUBDIR != 0 {
        return None;
    }
    let data = langs as usize;
    let data_rva = u32_at(rsrc, data)?;
    let size = u32_at(rsrc, data + 4)? as usize;
    let off = data_rva.checked_sub(rva)? as usize;
    rsrc.get(off..off.checked_add(size)?)
}

/// One node of a version resource: `wLength`, `wValueLength`, `wType`, a
/// NUL-terminated UTF-16 key, padding to 32 bits, the value, padding, the
/// children.
struct Node<'a> {
    key: String,
    value: &'a [u8],
    children: &'a [u8],
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// A UTF-16LE string ending at a NUL (or at the end of `b`), and the offset
/// just past the NUL.
fn utf16z(b: &[u8], from: usize) -> (String, usize) {
    let mut units = Vec::new();
    let mut at = from;
    while let Some(u) = u16_at(b, at) {
        at += 2;
        if u == 0 {
            break;
        }
        units.push(u);
    }
    (String::from_utf16_lossy(&units), at)
}

/// The node at the start of `b` (whose offsets are 32-bit aligned relative
/// to `b`), and its total length.
fn node(b: &[u8]) -> Option<(Node<'_>, usize)> {
    let len = (u16_at(b, 0)? as usize).min(b.len());
    if len < 6 {
        return None;
    }
    let value_len = u16_at(b, 2)? as usize;
    let text = u16_at(b, 4)? == 1;
    let b = b.get(..len)?;
    let (key, after) = utf16z(b, 6);
    let value_at = align4(after).min(len);
    // For text values wValueLength counts UTF-16 units, though some tools
    // write bytes; the value is cut at its NUL below either way.
    let value_bytes = if text { value_len * 2 } else { value_len };
    let value_end = value_at.saturating_add(value_bytes).min(len);
    let value = b.get(value_at..value_end)?;
    let children = b.get(align4(value_end).min(len)..)?;
    Some((
        Node {
            key,
            value,
            children,
        },
        len,
    ))
}

/// The nodes one after another in `b`.
fn nodes(mut b: &[u8]) -> Vec<Node<'_>> {
    let mut out = Vec::new();
    while let Some((n, len)) = node(b) {
        out.push(n);
        b = b.get(align4(len)..).unwrap_or_default();
        if out.len() >= MAX_DIR_ENTRIES {
            break;
        }
    }
    out
}

/// Parses a `VS_VERSIONINFO` block.
pub(crate) fn version_info(b: &[u8]) -> Option<VersionInfo> {
    let (root, _) = node(b)?;
    if root.key != "VS_VERSION_INFO" {
        return None;
    }
    let mut info = VersionInfo::default();
    // VS_FIXEDFILEINFO: signature 0xFEEF04BD, then the file version at 8
    // and the product version at 16 as (major<<16|minor, build<<16|rev).
    if u32_at(root.value, 0) == Some(0xFEEF_04BD) {
        let quad = |at: usize| -> Option<[u16; 4]> {
            let ms = u32_at(root.value, at)?;
            let ls = u32_at(root.value, at + 4)?;
            Some([(ms >> 16) as u16, ms as u16, (ls >> 16) as u16, ls as u16])
        };
        info.file_version = quad(8);
        info.product_version = quad(16);
    }
    for child in nodes(root.children) {
        if child.key != "StringFileInfo" {
            continue;
        }
        if let Some(table) = nodes(child.children).into_iter().next() {
            for s in nodes(table.children) {
                let (value, _) = utf16z(s.value, 0);
                info.strings.push((s.key, value.trim().to_string()));
            }
        }
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    fn pad(b: &mut Vec<u8>) {
        while b.len() % 4 != 0 {
            b.push(0);
        }
    }

    fn block(key: &str, value: &[u8], value_len: u16, text: bool, children: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![0u8; 6];
        b[2..4].copy_from_slice(&value_len.to_le_bytes());
        b[4] = text as u8;
        b.extend(utf16(key));
        pad(&mut b);
        b.extend_from_slice(value);
        for c in children {
            pad(&mut b);
            b.extend_from_slice(c);
        }
        let len = b.len() as u16;
        b[0..2].copy_from_slice(&len.to_le_bytes());
        b
    }

    #[test]
    fn version_block() {
        let s =
            |k: &str, v: &str| block(k, &utf16(v), v.encode_utf16().count() as u16 + 1, true, &[]);
        let table = block(
            "040904B0",
            &[],
            0,
            true,
            &[
                s("ProductName", "Microsoft Windows"),
                s("ProductVersion", "10.0.19041.1"),
            ],
        );
        let sfi = block("StringFileInfo", &[], 0, true, &[table]);
        let mut fixed = Vec::new();
        for v in [
            0xFEEF_04BDu32,
            0x10000,
            0xA_0000,
            0x4A61_0001,
            0xA_0000,
            0x4A61_0002,
        ] {
            fixed.extend(v.to_le_bytes());
        }
        fixed.resize(52, 0);
        let root = block("VS_VERSION_INFO", &fixed, 52, false, &[sfi]);
        let info = version_info(&root).unwrap();
        assert_eq!(info.file_version, Some([10, 0, 19041, 1]));
        assert_eq!(info.product_version, Some([10, 0, 19041, 2]));
        assert_eq!(info.string("ProductName"), Some("Microsoft Windows"));
        assert_eq!(info.string("ProductVersion"), Some("10.0.19041.1"));
        // Cut short anywhere, it still never panics.
        for n in 0..root.len() {
            let _ = version_info(&root[..n]);
        }
    }

    #[test]
    fn garbage_headers() {
        assert_eq!(headers(b"MZ"), None);
        let mut b = vec![0u8; 256];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        assert_eq!(headers(&b), None);
        assert_eq!(version_resource(&[0xff; 40], 0), None);
    }
}
