//! Parent names and locators of differencing disks, as Windows writes them: the
//! parent's file name in the header in UTF-16BE, and in the locators' data an
//! absolute path (`W2ku`) and a relative one (`W2ru`, like `.\parent.vhd`), both
//! UTF-16LE.

use super::header::ParentLocator;
use std::path::{Component, Path, PathBuf};

/// Platform code of a locator holding an absolute Windows path, UTF-16LE.
pub const W2KU: u32 = u32::from_be_bytes(*b"W2ku");
/// Platform code of a locator holding a path relative to the child, UTF-16LE.
pub const W2RU: u32 = u32::from_be_bytes(*b"W2ru");

/// The header's parent name field: `name` in UTF-16BE, NUL padded. `None` when it
/// does not fit in 256 code units.
pub fn encode_parent_name(name: &str) -> Option<[u8; 512]> {
    let mut out = [0u8; 512];
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > 256 {
        return None;
    }
    for (i, u) in units.iter().enumerate() {
        out[2 * i..2 * i + 2].copy_from_slice(&u.to_be_bytes());
    }
    Some(out)
}

/// The parent name from the header field, up to its first NUL; `None` when it is
/// not valid UTF-16.
pub fn decode_parent_name(field: &[u8; 512]) -> Option<String> {
    let units: Vec<u16> = field
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// `text` in UTF-16LE, as locator data holds it.
pub fn encode_utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Locator data back to text, up to any NUL; `None` when it is not valid UTF-16.
pub fn decode_utf16le(data: &[u8]) -> Option<String> {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// The `W2ru` text for reaching `parent` from a child in `child_dir`, with
/// Windows separators: `.\parent.vhd`, `..\base\parent.vhd`. Both paths must be
/// absolute; `None` when no relative path exists or a name is not UTF-8.
pub fn relative_text(child_dir: &Path, parent: &Path) -> Option<String> {
    let rel = pathdiff::diff_paths(parent, child_dir)?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?.to_string()),
            Component::ParentDir => parts.push("..".to_string()),
            _ => return None,
        }
    }
    if parts.first().map(String::as_str) != Some("..") {
        parts.insert(0, ".".to_string());
    }
    Some(parts.join("\\"))
}

/// Where a locator's text points, for a child in `child_dir`: relative texts
/// are taken from the child's folder, absolute ones as they are. Windows drive
/// paths (`C:\…`) cannot be followed here: `None`, and the caller falls back on
/// the parent's name beside the child.
pub fn locator_path(child_dir: &Path, code: u32, text: &str) -> Option<PathBuf> {
    let unix = text.replace('\\', "/");
    if code == W2RU {
        let rel = unix.trim_start_matches("./");
        if rel.is_empty() || Path::new(rel).is_absolute() {
            return None;
        }
        return Some(child_dir.join(rel));
    }
    if code == W2KU && unix.starts_with('/') {
        return Some(PathBuf::from(unix));
    }
    None
}

/// How a child names its parent: the header's parent name, timestamp and
/// locators, and the locator data they point at.
pub struct ParentLinks {
    /// The parent's file name, UTF-16BE, for the header.
    pub name: [u8; 512],
    /// The parent file's modification time, seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// `W2ku` then `W2ru`, the other entries unused.
    pub locators: [ParentLocator; 8],
    /// The locator data, in whole sectors, to be written where the locators say.
    pub data: Vec<u8>,
}

/// The links from a child in `child_dir` to the file `parent` (both absolute),
/// with the locator data placed at file offset `data_at`: the absolute path,
/// then the relative one, each in whole sectors, as Windows writes them.
pub fn links(child_dir: &Path, parent: &Path, data_at: u64) -> Result<ParentLinks, String> {
    let not_text = || format!("{}: the path is not valid UTF-8", parent.display());
    let abs = parent.to_str().ok_or_else(not_text)?.to_string();
    let rel = relative_text(child_dir, parent).ok_or_else(not_text)?;
    let file_name = parent
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(not_text)?;
    let name = encode_parent_name(file_name)
        .ok_or_else(|| format!("{file_name}: longer than 256 characters"))?;
    let secs = std::fs::metadata(parent)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let timestamp =
        u32::try_from(secs.saturating_sub(super::footer::VHD_EPOCH)).unwrap_or(u32::MAX);
    let mut locators = [ParentLocator::default(); 8];
    let mut data = Vec::new();
    let mut at = data_at;
    for (i, (code, text)) in [(W2KU, &abs), (W2RU, &rel)].into_iter().enumerate() {
        let bytes = encode_utf16le(text);
        let space = (bytes.len() as u64).max(1).div_ceil(512) * 512;
        locators[i] = ParentLocator {
            platform_code: code,
            platform_data_space: u32::try_from(space).unwrap_or(u32::MAX),
            platform_data_length: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            reserved: 0,
            platform_data_offset: at,
        };
        data.extend_from_slice(&bytes);
        data.resize(data.len() + (space as usize - bytes.len()), 0);
        at += space;
    }
    Ok(ParentLinks {
        name,
        timestamp,
        locators,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let f = encode_parent_name("Wïn 7 base.vhd").unwrap();
        assert_eq!(&f[..4], &[0, b'W', 0, 0xef]);
        assert_eq!(decode_parent_name(&f).unwrap(), "Wïn 7 base.vhd");
        assert!(encode_parent_name(&"x".repeat(257)).is_none());
        let le = encode_utf16le(".\\base.vhd");
        assert_eq!(&le[..4], &[b'.', 0, b'\\', 0]);
        assert_eq!(decode_utf16le(&le).unwrap(), ".\\base.vhd");
        assert_eq!(decode_utf16le(&[b'a', 0, 0, 0, b'b', 0]).unwrap(), "a");
        assert!(decode_utf16le(&[0x00, 0xd8]).is_none()); // a lone surrogate
    }

    #[test]
    fn relative_texts_use_windows_separators() {
        let t = |c: &str, p: &str| relative_text(Path::new(c), Path::new(p));
        assert_eq!(t("/vm", "/vm/base.vhd").unwrap(), ".\\base.vhd");
        assert_eq!(t("/vm/kids", "/vm/base/b.vhd").unwrap(), "..\\base\\b.vhd");
        assert_eq!(t("/vm", "/vm/sub/b.vhd").unwrap(), ".\\sub\\b.vhd");
    }

    #[test]
    fn locators_to_paths() {
        let dir = Path::new("/lib/m");
        assert_eq!(
            locator_path(dir, W2RU, ".\\base.vhd").unwrap(),
            Path::new("/lib/m/base.vhd")
        );
        assert_eq!(
            locator_path(dir, W2RU, "..\\b\\base.vhd").unwrap(),
            Path::new("/lib/m/../b/base.vhd")
        );
        assert_eq!(
            locator_path(dir, W2KU, "/srv/base.vhd").unwrap(),
            Path::new("/srv/base.vhd")
        );
        assert!(locator_path(dir, W2KU, "C:\\VMs\\base.vhd").is_none());
        assert!(locator_path(dir, W2RU, "").is_none());
        assert!(locator_path(dir, 0x4d616320, "x").is_none());
    }
}
