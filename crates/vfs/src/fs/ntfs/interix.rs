//! Interix symbolic links: how ntfs-3g (by default) and Services for Unix
//! store a symbolic link, as a file with the system attribute whose data is
//! the magic `IntxLNK\x01` followed by the target in UTF-16LE (ntfs-3g,
//! `include/ntfs-3g/layout.h`, `INTX_FILE`).

/// The magic that starts the data of an Interix symbolic link.
const MAGIC: &[u8; 8] = b"IntxLNK\x01";

/// The most bytes of data an Interix link is read for: the magic and a
/// target of 4096 code units (PATH_MAX).
pub(super) const MAX_LEN: u64 = 8 + 2 * 4096;

/// Whether a system file of `len` bytes may be an Interix link (and is worth
/// reading).
pub(super) fn may_be_link(len: u64) -> bool {
    len > MAGIC.len() as u64 && len <= MAX_LEN && len % 2 == 0
}

/// The target of the Interix symbolic link whose data is `data`; `None`
/// when it is not one (other Interix files, device nodes and FIFOs, or a
/// system file that merely starts alike), or the target is malformed.
pub(super) fn link_target(data: &[u8]) -> Option<String> {
    let raw = data.strip_prefix(MAGIC)?;
    if raw.is_empty() || raw.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let target = String::from_utf16(&units).ok()?;
    (!target.contains('\0')).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(target: &str) -> Vec<u8> {
        let mut d = MAGIC.to_vec();
        d.extend(target.encode_utf16().flat_map(u16::to_le_bytes));
        d
    }

    #[test]
    fn interix_links() {
        assert_eq!(link_target(&link("../a/b")).as_deref(), Some("../a/b"));
        assert_eq!(
            link_target(&link("/abs/日本")).as_deref(),
            Some("/abs/日本")
        );
        assert!(may_be_link(link("x").len() as u64));
        assert!(!may_be_link(8) && !may_be_link(MAX_LEN + 2) && !may_be_link(11));
        // Empty targets, odd lengths, other Interix types, lone surrogates.
        assert_eq!(link_target(&link("")), None);
        assert_eq!(link_target(&link("ab")[..11]), None);
        assert_eq!(link_target(b"IntxCHR\0\x01\0\0\0\x02\0\0\0"), None);
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&0xD800u16.to_le_bytes());
        assert_eq!(link_target(&bad), None);
        assert_eq!(link_target(&link("a\0b")), None);
    }
}
