//! Reparse points that are links: what a symbolic link or a junction (mount
//! point) points at, from its $REPARSE_POINT value ([MS-FSCC] 2.1.2.4
//! "Symbolic Link Reparse Data Buffer", 2.1.2.5 "Mount Point Reparse Data
//! Buffer"), and WSL's symbolic links (also made by ntfs-3g mounted with
//! `special_files=wsl`; ntfs-3g, `libntfs-3g/reparse.c`, WSL_LINK_REPARSE_DATA:
//! a 32-bit version, 2, then the target in UTF-8).

/// Reparse tag of a symbolic link.
const TAG_SYMLINK: u32 = 0xA000_000C;
/// Reparse tag of a junction (mount point).
const TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// Reparse tag of a WSL (Linux) symbolic link.
const TAG_LX_SYMLINK: u32 = 0xA000_001D;
/// The only version of WSL symbolic link data.
const LX_SYMLINK_VERSION: u32 = 2;

/// The target of a link reparse point, with `/` for `\` and without the NT
/// `\??\` prefix (so `C:/Users`, or `../x` for a relative link; a WSL
/// link's target is a Linux path already, kept as it is); `None` for
/// other reparse tags (deduplication, cloud files, WSL FIFOs ...) or a malformed
/// buffer.
pub(super) fn link_target(buf: &[u8]) -> Option<String> {
    let le16 = |at: usize| -> Option<usize> {
        Some(u16::from_le_bytes(buf.get(at..at + 2)?.try_into().ok()?) as usize)
    };
    let tag = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?);
    let paths = match tag {
        TAG_SYMLINK => 20,
        TAG_MOUNT_POINT => 16,
        TAG_LX_SYMLINK => return lx_target(buf),
        _ => return None,
    };
    let (sub_off, sub_len) = (le16(8)?, le16(10)?);
    let (print_off, print_len) = (le16(12)?, le16(14)?);
    let name = |off: usize, len: usize| -> Option<String> {
        let raw = buf.get(paths + off..paths + off + len)?;
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(String::from_utf16_lossy(&units))
    };
    let mut target = match name(print_off, print_len) {
        Some(p) if !p.is_empty() => p,
        _ => name(sub_off, sub_len)?,
    };
    if let Some(rest) = target.strip_prefix("\\??\\") {
        target = rest.to_string();
    }
    let target = target.replace('\\', "/");
    (!target.is_empty() && !target.contains('\0')).then_some(target)
}

/// The target of a WSL symbolic link: the reparse data after its version,
/// as UTF-8 and kept as it is (a Linux path).
fn lx_target(buf: &[u8]) -> Option<String> {
    let len = u16::from_le_bytes(buf.get(4..6)?.try_into().ok()?) as usize;
    let data = buf.get(8..8 + len)?;
    let version = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
    if version != LX_SYMLINK_VERSION {
        return None;
    }
    let target = std::str::from_utf8(&data[4..]).ok()?;
    (!target.is_empty() && !target.contains('\0')).then(|| target.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(tag: u32, sub: &str, print: &str) -> Vec<u8> {
        let s: Vec<u8> = sub.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let p: Vec<u8> = print.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut b = tag.to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(s.len() as u16).to_le_bytes());
        b.extend_from_slice(&(s.len() as u16).to_le_bytes());
        b.extend_from_slice(&(p.len() as u16).to_le_bytes());
        if tag == TAG_SYMLINK {
            b.extend_from_slice(&1u32.to_le_bytes());
        }
        b.extend_from_slice(&s);
        b.extend_from_slice(&p);
        b
    }

    #[test]
    fn links_and_junctions() {
        let l = buffer(TAG_SYMLINK, "..\\x\\y", "..\\x\\y");
        assert_eq!(link_target(&l).as_deref(), Some("../x/y"));
        let j = buffer(TAG_MOUNT_POINT, "\\??\\C:\\Users", "");
        assert_eq!(link_target(&j).as_deref(), Some("C:/Users"));
        assert_eq!(link_target(&buffer(0x8000_0013, "a", "a")), None);
        assert_eq!(link_target(&l[..18]), None);
        assert_eq!(link_target(&[]), None);
        let lx = |version: u32, target: &str| {
            let mut b = TAG_LX_SYMLINK.to_le_bytes().to_vec();
            b.extend_from_slice(&(4 + target.len() as u16).to_le_bytes());
            b.extend_from_slice(&[0; 2]);
            b.extend_from_slice(&version.to_le_bytes());
            b.extend_from_slice(target.as_bytes());
            b
        };
        assert_eq!(
            link_target(&lx(2, "../x/日本")).as_deref(),
            Some("../x/日本")
        );
        assert_eq!(link_target(&lx(2, "a\\b")).as_deref(), Some("a\\b"));
        assert_eq!(link_target(&lx(3, "x")), None);
        assert_eq!(link_target(&lx(2, "")), None);
        assert_eq!(link_target(&lx(2, "abc")[..14]), None);
    }
}
