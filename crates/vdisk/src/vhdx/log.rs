//! The metadata log ([MS-VHDX] 2.3): entries of 4 KiB sectors, each a header,
//! zero and data descriptors, and data sectors that carry the bytes to write
//! with the entry's sequence number split around them. Finding the active
//! sequence and turning it into writes is pure; the disk does the I/O.

use super::fields::{crc32c_skip, guid_at, put, u32_at, u64_at, Guid};

/// Bytes of a log sector.
pub const SECTOR: usize = 4096;
const ENTRY_SIG: &[u8; 4] = b"loge";
const ZERO_SIG: &[u8; 4] = b"zero";
const DATA_DESC_SIG: &[u8; 4] = b"desc";
const DATA_SIG: &[u8; 4] = b"data";
const HEADER_LEN: usize = 64;
const DESC_LEN: usize = 32;

/// One write a log entry makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Where in the file.
    pub offset: u64,
    /// How many bytes.
    pub len: u64,
    /// The 4 KiB to write, or `None` for zeros.
    pub data: Option<Vec<u8>>,
}

/// A valid log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Where it starts in the log.
    pub at: u64,
    /// Its length.
    pub length: u64,
    /// Where the sequence it ends starts in the log.
    pub tail: u64,
    /// Its sequence number.
    pub sequence: u64,
    /// The file size known durable when it was written.
    pub flushed_file_offset: u64,
    /// The file size its structures need.
    pub last_file_offset: u64,
    /// Its writes, in order.
    pub writes: Vec<Write>,
}

/// What replaying the active sequence does.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Replay {
    /// The writes, in order.
    pub writes: Vec<Write>,
    /// The file must be at least this long, else it lost flushed data.
    pub flushed_file_offset: u64,
    /// The file is extended to this length.
    pub last_file_offset: u64,
    /// Entries replayed.
    pub entries: usize,
    /// The sequence number of the last of them.
    pub sequence: u64,
}

/// `len` bytes of the circular log starting at `at`.
fn circular(log: &[u8], at: u64, len: u64) -> Option<Vec<u8>> {
    let n = log.len() as u64;
    if len > n || at >= n {
        return None;
    }
    let first = (n - at).min(len);
    let mut v = log.get(at as usize..(at + first) as usize)?.to_vec();
    v.extend_from_slice(log.get(..(len - first) as usize)?);
    Some(v)
}

/// The entry starting at `at` of the log, if one that belongs to `guid` is
/// valid there ([MS-VHDX] 2.3.1). Checking it costs its length from
/// `budget`; one that costs more than is left is not checked.
pub fn entry_at(log: &[u8], at: u64, guid: &Guid, budget: &mut u64) -> Option<Entry> {
    let head = circular(log, at, SECTOR as u64)?;
    if head.get(..4)? != ENTRY_SIG || guid_at(&head, 32) != *guid {
        return None;
    }
    let length = u64::from(u32_at(&head, 8));
    let tail = u64::from(u32_at(&head, 12));
    let sequence = u64_at(&head, 16);
    let count = u32_at(&head, 24) as usize;
    if length == 0 || length % SECTOR as u64 != 0 || length > log.len() as u64 {
        return None;
    }
    if tail % SECTOR as u64 != 0 || tail >= log.len() as u64 || sequence == 0 {
        return None;
    }
    let desc_sectors = (HEADER_LEN + count.checked_mul(DESC_LEN)?).div_ceil(SECTOR);
    if desc_sectors as u64 * SECTOR as u64 > length {
        return None;
    }
    if length > *budget {
        // Out of budget: the caller sees it spent and gives up.
        *budget = 0;
        return None;
    }
    *budget -= length;
    let bytes = circular(log, at, length)?;
    if u32_at(&bytes, 4) != crc32c_skip(&bytes, 4) {
        return None;
    }
    let mut writes = Vec::with_capacity(count);
    let mut data_sector = desc_sectors;
    for i in 0..count {
        let d = bytes.get(HEADER_LEN + i * DESC_LEN..HEADER_LEN + (i + 1) * DESC_LEN)?;
        let offset = u64_at(d, 16);
        if u64_at(d, 24) != sequence || offset % SECTOR as u64 != 0 {
            return None;
        }
        match d.get(..4)? {
            s if s == ZERO_SIG => {
                let len = u64_at(d, 8);
                if len == 0 || len % SECTOR as u64 != 0 {
                    return None;
                }
                writes.push(Write {
                    offset,
                    len,
                    data: None,
                });
            }
            s if s == DATA_DESC_SIG => {
                let sec = bytes.get(data_sector * SECTOR..(data_sector + 1) * SECTOR)?;
                data_sector += 1;
                if sec.get(..4)? != DATA_SIG
                    || u64::from(u32_at(sec, 4)) != sequence >> 32
                    || u64::from(u32_at(sec, 4092)) != sequence & 0xffff_ffff
                {
                    return None;
                }
                let mut data = vec![0u8; SECTOR];
                put(&mut data, 0, d.get(8..16)?);
                put(&mut data, 8, sec.get(8..4092)?);
                put(&mut data, 4092, d.get(4..8)?);
                writes.push(Write {
                    offset,
                    len: SECTOR as u64,
                    data: Some(data),
                });
            }
            _ => return None,
        }
    }
    if data_sector as u64 * SECTOR as u64 != length {
        return None;
    }
    Some(Entry {
        at,
        length,
        tail,
        sequence,
        flushed_file_offset: u64_at(&head, 48),
        last_file_offset: u64_at(&head, 56),
        writes,
    })
}

/// Finds the active sequence of the log for `guid` ([MS-VHDX] 2.3.3): of the
/// valid sequences (entries with consecutive numbers, each right after the
/// other, running from the tail their last entry names to that entry), the
/// one whose last entry has the largest sequence number. `Ok(None)` when
/// there is no valid sequence; an error when a hostile log would take too
/// long to search (entries overlapping many times over).
pub fn active_sequence(log: &[u8], guid: &Guid) -> Result<Option<Vec<Entry>>, String> {
    let n = log.len() as u64;
    // Valid entries do not overlap, so checking them all costs about the
    // log's length; stale entries of earlier passes add a little.
    let mut budget = 8 * n + (16 << 20);
    let entries: std::collections::BTreeMap<u64, Entry> = (0..n / SECTOR as u64)
        .filter_map(|i| entry_at(log, i * SECTOR as u64, guid, &mut budget))
        .map(|e| (e.at, e))
        .collect();
    if budget < SECTOR as u64 {
        return Err("log: too many overlapping entries to search".into());
    }
    // The latest head first: the first valid sequence found is the active one.
    let mut heads: Vec<&Entry> = entries.values().collect();
    heads.sort_by_key(|e| std::cmp::Reverse(e.sequence));
    let mut steps: u64 = 0;
    for head in heads {
        let mut seq = Vec::new();
        let mut at = head.tail;
        while let Some(e) = entries.get(&at) {
            steps += 1;
            if steps > 1 << 20 {
                return Err("log: too many entries to search for the active sequence".into());
            }
            if let Some(prev) = seq.last().map(|p: &Entry| p.sequence) {
                if prev.checked_add(1) != Some(e.sequence) {
                    break;
                }
            }
            if e.sequence > head.sequence || seq.len() >= entries.len() {
                break;
            }
            seq.push(e.clone());
            if e.at == head.at && e.sequence == head.sequence {
                return Ok(Some(seq));
            }
            at = (e.at + e.length) % n;
        }
    }
    Ok(None)
}

/// What replaying `seq` does.
pub fn replay(seq: &[Entry]) -> Replay {
    let mut r = Replay::default();
    for e in seq {
        r.writes.extend(e.writes.iter().cloned());
    }
    if let Some(last) = seq.last() {
        r.flushed_file_offset = last.flushed_file_offset;
        r.last_file_offset = last.last_file_offset;
        r.sequence = last.sequence;
    }
    r.entries = seq.len();
    r
}

/// How many data sectors one entry can carry in a log of `log_len` bytes.
pub fn capacity(log_len: u64) -> usize {
    let sectors = (log_len / SECTOR as u64) as usize;
    (0..sectors)
        .rev()
        .find(|&n| n + (HEADER_LEN + n * DESC_LEN).div_ceil(SECTOR) <= sectors)
        .unwrap_or(0)
}

/// Encodes an entry that writes each 4 KiB of `writes` at its offset.
pub fn encode_entry(
    sequence: u64,
    tail: u64,
    guid: &Guid,
    flushed_file_offset: u64,
    last_file_offset: u64,
    writes: &[(u64, Vec<u8>)],
) -> Vec<u8> {
    let desc_sectors = (HEADER_LEN + writes.len() * DESC_LEN).div_ceil(SECTOR);
    let length = (desc_sectors + writes.len()) * SECTOR;
    let mut b = vec![0u8; length];
    put(&mut b, 0, ENTRY_SIG);
    put(&mut b, 8, &(length as u32).to_le_bytes());
    put(&mut b, 12, &(tail as u32).to_le_bytes());
    put(&mut b, 16, &sequence.to_le_bytes());
    put(&mut b, 24, &(writes.len() as u32).to_le_bytes());
    put(&mut b, 32, guid);
    put(&mut b, 48, &flushed_file_offset.to_le_bytes());
    put(&mut b, 56, &last_file_offset.to_le_bytes());
    for (i, (offset, data)) in writes.iter().enumerate() {
        let d = HEADER_LEN + i * DESC_LEN;
        put(&mut b, d, DATA_DESC_SIG);
        put(&mut b, d + 4, data.get(4092..4096).unwrap_or(&[0; 4]));
        put(&mut b, d + 8, data.get(0..8).unwrap_or(&[0; 8]));
        put(&mut b, d + 16, &offset.to_le_bytes());
        put(&mut b, d + 24, &sequence.to_le_bytes());
        let s = (desc_sectors + i) * SECTOR;
        put(&mut b, s, DATA_SIG);
        put(&mut b, s + 4, &((sequence >> 32) as u32).to_le_bytes());
        put(&mut b, s + 8, data.get(8..4092).unwrap_or(&[]));
        put(&mut b, s + 4092, &(sequence as u32).to_le_bytes());
    }
    let crc = crc32c_skip(&b, 4);
    put(&mut b, 4, &crc.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sector(fill: u8) -> Vec<u8> {
        let mut v = vec![fill; SECTOR];
        v[0] = 0xAA;
        v[4095] = 0xBB;
        v
    }

    #[test]
    fn an_entry_round_trips_and_is_the_active_sequence() {
        let guid = [9u8; 16];
        let mut log = vec![0u8; 1 << 20];
        let e = encode_entry(5, 0, &guid, 4 << 20, 5 << 20, &[(3 << 20, sector(1))]);
        log[..e.len()].copy_from_slice(&e);
        let seq = active_sequence(&log, &guid).unwrap().unwrap();
        assert_eq!(seq.len(), 1);
        let r = replay(&seq);
        assert_eq!(r.writes[0].offset, 3 << 20);
        assert_eq!(r.writes[0].data.as_deref(), Some(&sector(1)[..]));
        assert_eq!(r.last_file_offset, 5 << 20);
        // Another log id, or a damaged byte: nothing to replay.
        assert_eq!(active_sequence(&log, &[8u8; 16]), Ok(None));
        log[5000] ^= 1;
        assert_eq!(active_sequence(&log, &guid), Ok(None));
    }

    #[test]
    fn the_latest_sequence_wins_and_wraps() {
        let guid = [9u8; 16];
        let mut log = vec![0u8; 64 << 10];
        // An old entry at 0, then a two-entry sequence that wraps the end.
        let old = encode_entry(1, 0, &guid, 0, 0, &[(1 << 20, sector(1))]);
        log[..old.len()].copy_from_slice(&old);
        let a = encode_entry(7, 56 << 10, &guid, 0, 0, &[(2 << 20, sector(2))]);
        log[56 << 10..64 << 10].copy_from_slice(&a);
        let b = encode_entry(8, 56 << 10, &guid, 0, 0, &[(2 << 20, sector(3))]);
        log[..b.len()].copy_from_slice(&b);
        let seq = active_sequence(&log, &guid).unwrap().unwrap();
        assert_eq!(seq.iter().map(|e| e.sequence).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(capacity(1 << 20), 254);
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    #[test]
    fn a_log_of_entries_that_all_claim_the_whole_log_is_refused_quickly() {
        let guid = [9u8; 16];
        let n = 4 << 20;
        let mut log = vec![0u8; n];
        for at in (0..n).step_by(SECTOR) {
            log[at..at + 4].copy_from_slice(ENTRY_SIG);
            log[at + 8..at + 12].copy_from_slice(&(n as u32).to_le_bytes());
            log[at + 16] = 1;
            log[at + 32..at + 48].copy_from_slice(&guid);
        }
        let t = std::time::Instant::now();
        assert!(active_sequence(&log, &guid).is_err());
        assert!(t.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn a_long_chain_of_small_entries_is_searched_quickly() {
        // Every sector an entry of one sector, numbered in order, each naming
        // the first as its tail: the latest is the head, found at once.
        let guid = [9u8; 16];
        let n = 1 << 20;
        let mut log = vec![0u8; n];
        for (i, at) in (0..n).step_by(SECTOR).enumerate() {
            let e = encode_entry(i as u64 + 1, 0, &guid, 0, 0, &[]);
            log[at..at + SECTOR].copy_from_slice(&e);
        }
        let seq = active_sequence(&log, &guid).unwrap().unwrap();
        assert_eq!(seq.len(), n / SECTOR);
    }
}
