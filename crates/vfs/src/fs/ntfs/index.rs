//! Directory indexes ($I30) as bytes: the update sequence fixup of an index
//! record, and the entries of one B-tree node.
//!
//! The `ntfs` crate walks indexes itself, but trusts entry lengths and subnode
//! links from the disk (a zero-length entry or a subnode that points back at
//! its own record would make it spin), so nodes are decoded here, where every
//! offset is checked, and the walk in `mod.rs` bounds depth and revisits.
//!
//! Layouts follow the Linux-NTFS documentation ("Index Record", "Index
//! Entry", "Attribute - $INDEX_ROOT", "Attribute - $FILE_NAME").

/// Size of the header before the node header in an $INDEX_ROOT value.
pub(super) const ROOT_HEADER: usize = 16;
/// Offset of the node header in an index record (after "INDX", the update
/// sequence fields, the LSN and the VCN).
pub(super) const RECORD_NODE_HEADER: usize = 24;

/// Index entry flag: a subnode VCN ends the entry.
const HAS_SUBNODE: u16 = 0x01;
/// Index entry flag: the last entry of the node, with no key.
const LAST_ENTRY: u16 = 0x02;

/// $FILE_NAME namespace of a DOS-only 8.3 name.
pub(super) const NAMESPACE_DOS: u8 = 2;

/// One entry of an index node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NodeEntry {
    /// The file's MFT record number (the low 48 bits of the reference).
    pub record: u64,
    /// The name, as UTF-16 code units; `None` for the last (keyless) entry.
    pub name: Option<Vec<u16>>,
    /// The $FILE_NAME namespace (0 POSIX, 1 Win32, 2 DOS, 3 Win32 and DOS).
    pub namespace: u8,
    /// The VCN of the node holding the entries that sort before this one.
    pub subnode: Option<u64>,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The index record size recorded in an $INDEX_ROOT value, and whether the
/// index has an $INDEX_ALLOCATION (the "large index" flag).
pub(super) fn root_info(root: &[u8]) -> Result<(u32, bool), String> {
    let size = le32(root, 8).ok_or("the index root is too short")?;
    let flags = *root
        .get(ROOT_HEADER + 12)
        .ok_or("the index root is too short")?;
    Ok((size, flags & 1 != 0))
}

/// Applies the update sequence array of a multi-sector record (an index
/// record here) in place: the last two bytes of every 512-byte block must
/// hold the update sequence number and are replaced by the saved bytes.
pub(super) fn fixup(rec: &mut [u8], signature: &[u8; 4]) -> Result<(), String> {
    if rec.get(..4) != Some(&signature[..]) {
        return Err(format!(
            "the record has signature {:?} where {:?} was expected",
            String::from_utf8_lossy(rec.get(..4).unwrap_or(&[])),
            String::from_utf8_lossy(signature)
        ));
    }
    let off = le16(rec, 4).ok_or("the record is too short")? as usize;
    let count = le16(rec, 6).ok_or("the record is too short")? as usize;
    if count < 2 || (count - 1) * 512 > rec.len() || off + 2 * count > rec.len() {
        return Err(format!(
            "the update sequence array (offset {off}, {count} entries) does not fit the record of {} bytes",
            rec.len()
        ));
    }
    let usn = [rec[off], rec[off + 1]];
    for i in 1..count {
        let end = i * 512;
        if rec[end - 2..end] != usn {
            return Err(format!(
                "block {i} of the record does not end with its update sequence number (torn write)"
            ));
        }
        let saved = [rec[off + 2 * i], rec[off + 2 * i + 1]];
        rec[end - 2..end].copy_from_slice(&saved);
    }
    Ok(())
}

/// The entries of the node whose header starts at `header` in `buf` (an
/// $INDEX_ROOT value or a fixed-up index record).
pub(super) fn node_entries(buf: &[u8], header: usize) -> Result<Vec<NodeEntry>, String> {
    let short = || format!("the index node header at byte {header} lies past the end");
    let first = le32(buf, header).ok_or_else(short)? as usize;
    let used = le32(buf, header + 4).ok_or_else(short)? as usize;
    let start = header.checked_add(first).ok_or_else(short)?;
    let end = header.checked_add(used).ok_or_else(short)?;
    if start > end || end > buf.len() {
        return Err(format!(
            "the index node's entries (bytes {start}..{end}) do not fit its {} bytes",
            buf.len()
        ));
    }
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let bad = |what: &str| format!("index entry at byte {at}: {what}");
        if at + 16 > end {
            return Err(bad("its header runs past the node's end"));
        }
        let reference = le64(buf, at).ok_or_else(|| bad("truncated"))?;
        let len = le16(buf, at + 8).ok_or_else(|| bad("truncated"))? as usize;
        let key_len = le16(buf, at + 10).ok_or_else(|| bad("truncated"))? as usize;
        let flags = le16(buf, at + 12).ok_or_else(|| bad("truncated"))?;
        if len < 16 || len % 8 != 0 || at + len > end {
            return Err(bad(&format!(
                "length {len} is not a multiple of 8 from 16 up to the node's end"
            )));
        }
        let subnode = if flags & HAS_SUBNODE != 0 {
            if len < 24 {
                return Err(bad("too short to hold its subnode VCN"));
            }
            let vcn = le64(buf, at + len - 8).ok_or_else(|| bad("truncated"))?;
            if vcn > i64::MAX as u64 {
                return Err(bad("negative subnode VCN"));
            }
            Some(vcn)
        } else {
            None
        };
        let last = flags & LAST_ENTRY != 0;
        let (name, namespace) = if last {
            (None, 0)
        } else {
            let key = buf
                .get(at + 16..at + 16 + key_len)
                .filter(|_| 16 + key_len <= len);
            let key =
                key.ok_or_else(|| bad(&format!("key of {key_len} bytes does not fit the entry")))?;
            let n = *key
                .get(64)
                .ok_or_else(|| bad("the file name key is too short"))? as usize;
            let namespace = key[65];
            let raw = key
                .get(66..66 + 2 * n)
                .ok_or_else(|| bad("the name runs past the key"))?;
            let name: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            (Some(name), namespace)
        };
        out.push(NodeEntry {
            record: reference & 0x0000_FFFF_FFFF_FFFF,
            name,
            namespace,
            subnode,
        });
        if last {
            break;
        }
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(record: u64, name: &str, flags: u16, vcn: Option<u64>) -> Vec<u8> {
        let units: Vec<u16> = name.encode_utf16().collect();
        let key_len = if flags & LAST_ENTRY != 0 {
            0
        } else {
            66 + 2 * units.len()
        };
        let mut len = (16 + key_len).div_ceil(8) * 8;
        if vcn.is_some() {
            len += 8;
        }
        let mut e = vec![0u8; len];
        e[..8].copy_from_slice(&(record | 1 << 48).to_le_bytes());
        e[8..10].copy_from_slice(&(len as u16).to_le_bytes());
        e[10..12].copy_from_slice(&(key_len as u16).to_le_bytes());
        e[12..14].copy_from_slice(&flags.to_le_bytes());
        if key_len > 0 {
            e[16 + 64] = units.len() as u8;
            e[16 + 65] = 1;
            for (i, u) in units.iter().enumerate() {
                e[16 + 66 + 2 * i..16 + 68 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        if let Some(v) = vcn {
            e[len - 8..].copy_from_slice(&v.to_le_bytes());
        }
        e
    }

    fn node(entries: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let mut n = vec![0u8; 16];
        n[0..4].copy_from_slice(&16u32.to_le_bytes());
        n[4..8].copy_from_slice(&(16 + body.len() as u32).to_le_bytes());
        n.extend_from_slice(&body);
        n
    }

    #[test]
    fn entries_of_a_node() {
        let n = node(&[
            entry(64, "a.txt", 0, None),
            entry(0, "", LAST_ENTRY | HAS_SUBNODE, Some(3)),
        ]);
        let e = node_entries(&n, 0).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].record, 64);
        assert_eq!(
            e[0].name.as_deref(),
            Some(&"a.txt".encode_utf16().collect::<Vec<_>>()[..])
        );
        assert_eq!(e[1].name, None);
        assert_eq!(e[1].subnode, Some(3));
    }

    #[test]
    fn bad_entries_are_errors() {
        // A zero length would never advance.
        let mut n = node(&[entry(64, "a", 0, None)]);
        n[16 + 8] = 0;
        n[16 + 9] = 0;
        assert!(node_entries(&n, 0).is_err());
        // A key longer than its entry.
        let mut n = node(&[entry(64, "a", 0, None)]);
        n[16 + 10] = 0xFF;
        assert!(node_entries(&n, 0).is_err());
        // A name longer than its key.
        let mut n = node(&[entry(64, "a", 0, None)]);
        n[16 + 16 + 64] = 200;
        assert!(node_entries(&n, 0).is_err());
        // Entries past the buffer.
        let mut n = node(&[entry(64, "a", 0, None)]);
        n[4] = 0xF0;
        assert!(node_entries(&n, 0).is_err());
        assert!(node_entries(&[0u8; 4], 0).is_err());
    }

    #[test]
    fn fixups() {
        let mut r = vec![0u8; 1024];
        r[..4].copy_from_slice(b"INDX");
        r[4] = 40;
        r[6] = 3;
        r[40..42].copy_from_slice(&[7, 7]);
        r[42..44].copy_from_slice(&[1, 2]);
        r[44..46].copy_from_slice(&[3, 4]);
        r[510..512].copy_from_slice(&[7, 7]);
        r[1022..1024].copy_from_slice(&[7, 7]);
        let mut ok = r.clone();
        fixup(&mut ok, b"INDX").unwrap();
        assert_eq!(&ok[510..512], &[1, 2]);
        assert_eq!(&ok[1022..1024], &[3, 4]);
        let mut torn = r.clone();
        torn[1023] = 0;
        assert!(fixup(&mut torn, b"INDX").is_err());
        let mut big = r.clone();
        big[6] = 9;
        assert!(fixup(&mut big, b"INDX").is_err());
        assert!(fixup(&mut r, b"FILE").is_err());
    }
}
