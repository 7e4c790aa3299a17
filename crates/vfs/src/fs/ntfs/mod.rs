//! NTFS, read-only, by the `ntfs` crate.
//!
//! The crate reads the boot sector, MFT records, attributes (with attribute
//! lists) and attribute values (resident, or data runs with sparse runs read
//! as zeros). Directory indexes are decoded in [`index`] instead, because the
//! crate's index walk follows subnode links from the disk without a bound;
//! in [`dir`] a walk never visits an index record twice and goes at most
//! [`MAX_INDEX_DEPTH`] levels deep.
//!
//! What is listed: the names of the Win32, Win32+DOS and POSIX namespaces
//! (a DOS-only 8.3 alias is a duplicate of one of those), without `.`, and in
//! the root without the metadata files (`$MFT`, `$Bitmap`, `$Extend` ...: the
//! records below [`FIRST_USER_RECORD`] named with a `$`), which users do not
//! expect among their files. They can still be opened by name (`/$Extend`).
//!
//! Symbolic links and junctions are shown as links with their target, and so
//! are the links Linux makes on NTFS: ntfs-3g's Interix files ([`interix`])
//! and WSL reparse points. Compressed (non-resident) and encrypted data is
//! refused rather than read as garbage.
//!
//! The `ntfs` crate indexes its buffers with offsets from the image in a few
//! places; the checks before each call (boot sector fields, index record
//! size, attribute sizes) keep those in range, and as a last line every call
//! into the crate runs under [`guard`], which turns a panic into
//! [`Error::Corrupt`].

mod dir;
mod index;
mod interix;
mod reparse;

use super::{Entry, EntryKind, FsKind, Volume};
use crate::path::split;
use crate::region::{from_io, Region};
use crate::{Error, Result};
use dir::{load, small_value, Dir};
use ntfs::structured_values::NtfsFileAttributeFlags;
use ntfs::{Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsError, NtfsReadSeek};
use std::io::Write;

/// The most entries one directory may list before it is taken for damage.
const MAX_ENTRIES: usize = 1_000_000;
/// The most levels of an index B-tree (real ones have a handful).
const MAX_INDEX_DEPTH: usize = 32;
/// Bytes copied to the writer at a time.
const CHUNK: usize = 256 << 10;
/// The largest $INDEX_ROOT or $REPARSE_POINT value read (both live in one
/// MFT record, at most 4 KiB, or 16 KiB for a reparse buffer).
const MAX_SMALL_VALUE: u64 = 64 << 10;

/// MFT record numbers of the files every NTFS volume has (Linux-NTFS
/// documentation, "Files").
const RECORD_BITMAP: u64 = 6;
const RECORD_ROOT: u64 = 5;
const RECORD_UPCASE: u64 = 10;
/// Records below this one are reserved for metadata files.
const FIRST_USER_RECORD: u64 = 24;

/// Seconds from 1601-01-01 (the NTFS epoch) to 1970-01-01.
const EPOCH_DIFF: i64 = 11_644_473_600;

/// A read-only NTFS volume.
pub struct NtfsVolume {
    ntfs: Ntfs,
    region: Region,
    name: String,
    label: Option<String>,
    /// The volume's $UpCase table (one upper-case code unit per UTF-16 code
    /// unit), for case-insensitive names; `None` when it could not be read,
    /// and Unicode's simple upper-casing is used instead.
    upcase: Option<Vec<u16>>,
}

/// Runs `f`, turning a panic inside the `ntfs` crate into a corruption error
/// of `what`.
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(Error::Corrupt(format!(
            "{what}: the NTFS structures are inconsistent"
        ))),
    }
}

/// The `vfs` error for an `ntfs` crate error while reading `what`.
fn ntfs_err(what: &str, e: NtfsError) -> Error {
    match e {
        NtfsError::Io(io) => from_io(io, what),
        e => Error::Corrupt(format!("{what}: {e}")),
    }
}

fn le16(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]) as u64)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Checks the boot sector fields the `ntfs` crate relies on (Linux-NTFS
/// documentation, "$Boot"), so that a hostile one is refused with a clear
/// message before any large buffer is sized from it.
fn check_boot(b: &[u8], len: u64, name: &str) -> Result<()> {
    let bad = |what: String| Error::Corrupt(format!("{name}: NTFS boot sector: {what}"));
    if b.get(3..11) != Some(b"NTFS    ") {
        return Err(bad("no \"NTFS\" signature".into()));
    }
    let sector = le16(b, 11);
    if !(256..=4096).contains(&sector) || !sector.is_power_of_two() {
        return Err(bad(format!("{sector} bytes per sector")));
    }
    let spc = b.get(13).copied().unwrap_or(0);
    let per_cluster = match spc {
        0 => return Err(bad("zero sectors per cluster".into())),
        1..=0x80 if spc.is_power_of_two() => spc as u64,
        // Larger clusters store the negated power of two (Windows 10 1903).
        0xF4..=0xFF => 1u64 << (256 - spc as u32),
        _ => return Err(bad(format!("sectors per cluster field {spc:#04x}"))),
    };
    let cluster = sector * per_cluster;
    if cluster > 2 << 20 {
        return Err(bad(format!("clusters of {cluster} bytes (at most 2 MiB)")));
    }
    let total = le64(b, 0x28);
    let size = total
        .checked_mul(sector)
        .filter(|&s| s <= len)
        .ok_or_else(|| {
            bad(format!(
                "{total} sectors do not fit the {len} bytes of the volume"
            ))
        })?;
    let mft = le64(b, 0x30);
    if mft == 0 || mft.checked_mul(cluster).is_none_or(|at| at >= size) {
        return Err(bad(format!(
            "the MFT at cluster {mft} lies outside the volume"
        )));
    }
    let info = b.get(0x40).copied().unwrap_or(0) as i8;
    let record = if info > 0 {
        cluster * info as u64
    } else {
        1u64.checked_shl(info.unsigned_abs() as u32).unwrap_or(0)
    };
    if !(1024..=4096).contains(&record) {
        return Err(bad(format!(
            "MFT records of {record} bytes (1024 to 4096 expected)"
        )));
    }
    Ok(())
}

/// Seconds since the Unix epoch of an NTFS time (100 ns units since 1601).
fn unix_time(nt: u64) -> Option<i64> {
    (nt != 0).then(|| (nt / 10_000_000) as i64 - EPOCH_DIFF)
}

/// What a file record says about one directory entry.
struct Info {
    entry: Entry,
    /// The target of a link reparse point.
    link: Option<String>,
}

impl NtfsVolume {
    /// Opens the NTFS volume in `region`: checks the boot sector, reads the
    /// label and the $UpCase table, and checks that the root directory can be
    /// read.
    pub fn open(mut region: Region) -> Result<Self> {
        let name = region.name().to_string();
        let mut boot = [0u8; 512];
        region.read_at_checked(&mut boot, 0)?;
        check_boot(&boot, region.len(), &name)?;
        let ntfs = guard(&name, || {
            Ntfs::new(&mut region).map_err(|e| ntfs_err(&format!("{name}: NTFS boot sector"), e))
        })?;
        let mut vol = NtfsVolume {
            ntfs,
            region,
            name,
            label: None,
            upcase: None,
        };
        vol.upcase = vol.read_upcase().ok();
        vol.label = vol.read_label()?;
        vol.dir_entries(RECORD_ROOT, "/")?;
        Ok(vol)
    }

    fn read_upcase(&mut self) -> Result<Vec<u16>> {
        let what = format!("{}: $UpCase", self.name);
        let Self { ntfs, region, .. } = self;
        guard(&what, || {
            let file = load(ntfs, region, RECORD_UPCASE, &what)?;
            let raw = small_value(&file, region, NtfsAttributeType::Data, "", 128 << 10, &what)?
                .ok_or_else(|| Error::Corrupt(format!("{what}: no data")))?;
            if raw.len() != 128 << 10 {
                return Err(Error::Corrupt(format!(
                    "{what}: {} bytes, not 131072",
                    raw.len()
                )));
            }
            Ok(raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect())
        })
    }

    fn read_label(&mut self) -> Result<Option<String>> {
        let what = format!("{}: $Volume", self.name);
        let Self { ntfs, region, .. } = self;
        guard(&what, || match ntfs.volume_name(region) {
            None => Ok(None),
            Some(Err(e)) => Err(ntfs_err(&what, e)),
            Some(Ok(n)) => {
                let label = n.name().to_string_lossy();
                Ok((!label.is_empty()).then_some(label))
            }
        })
    }

    /// The listed entries of directory `record` (at `path`): names with their
    /// MFT record numbers.
    fn dir_entries(&mut self, record: u64, path: &str) -> Result<Vec<(String, u64)>> {
        let what = format!("{}: {path}", self.name);
        let Self { ntfs, region, .. } = self;
        let raw = guard(&what, || {
            Dir::open(ntfs, region, record, path.to_string())?.all()
        })
        .map_err(|e| self.named(e))?;
        let mut out = Vec::new();
        for e in raw {
            let Some(units) = e.name else { continue };
            if e.namespace == index::NAMESPACE_DOS {
                continue;
            }
            let name = String::from_utf16_lossy(&units);
            if name == "." || name == ".." || name.is_empty() {
                continue;
            }
            if record == RECORD_ROOT && e.record < FIRST_USER_RECORD && name.starts_with('$') {
                continue;
            }
            out.push((name, e.record));
        }
        Ok(out)
    }

    /// Adds the volume's name to a corruption message that lacks it.
    fn named(&self, e: Error) -> Error {
        match e {
            Error::Corrupt(m) if !m.starts_with(&self.name) => {
                Error::Corrupt(format!("{}: {m}", self.name))
            }
            e => e,
        }
    }

    /// The MFT record number of `path`.
    fn resolve(&mut self, path: &str) -> Result<u64> {
        let mut record = RECORD_ROOT;
        let mut at = String::new();
        for (depth, part) in path.split('/').filter(|p| !p.is_empty()).enumerate() {
            if depth >= crate::extract::MAX_DEPTH {
                return Err(Error::Invalid(format!(
                    "{path}: more than {} levels deep",
                    crate::extract::MAX_DEPTH
                )));
            }
            let dir = if at.is_empty() {
                "/".to_string()
            } else {
                at.clone()
            };
            at.push('/');
            at.push_str(part);
            let units: Vec<u16> = part.encode_utf16().collect();
            let what = format!("{}: {dir}", self.name);
            let Self {
                ntfs,
                region,
                upcase,
                ..
            } = self;
            let table = upcase.as_deref();
            let found = guard(&what, || {
                Dir::open(ntfs, region, record, dir.clone())?.find(&units, table)
            });
            match found {
                Ok(Some(e)) => record = e.record,
                Ok(None) | Err(Error::NotDir(_)) => return Err(Error::NotFound(path.to_string())),
                Err(e) => return Err(self.named(e)),
            }
        }
        Ok(record)
    }

    /// The entry for MFT record `record`, shown as `name`.
    fn info(&mut self, record: u64, name: &str, path: &str) -> Result<Info> {
        let what = format!("{}: {path}", self.name);
        let Self { ntfs, region, .. } = self;
        guard(&what, || {
            let err = |e| ntfs_err(&what, e);
            let file = load(ntfs, region, record, &what)?;
            let std = file.info().map_err(err)?;
            let attrs = std.file_attributes();
            let is_dir = file.is_directory();
            let mut link = None;
            if attrs.contains(NtfsFileAttributeFlags::REPARSE_POINT) {
                let buf = small_value(
                    &file,
                    region,
                    NtfsAttributeType::ReparsePoint,
                    "",
                    MAX_SMALL_VALUE,
                    &what,
                )?;
                link = buf.as_deref().and_then(reparse::link_target);
            }
            let mut size = 0;
            if !is_dir && link.is_none() {
                let mut stored = false;
                if let Some(item) = file.data(region, "") {
                    let item = item.map_err(err)?;
                    let a = item.to_attribute().map_err(err)?;
                    size = a.value_length();
                    stored = !a
                        .flags()
                        .intersects(NtfsAttributeFlags::COMPRESSED | NtfsAttributeFlags::ENCRYPTED);
                }
                // ntfs-3g makes symbolic links as Interix system files by
                // default (not reparse points).
                if stored
                    && attrs.contains(NtfsFileAttributeFlags::SYSTEM)
                    && interix::may_be_link(size)
                {
                    let data = small_value(
                        &file,
                        region,
                        NtfsAttributeType::Data,
                        "",
                        interix::MAX_LEN,
                        &what,
                    )?;
                    link = data.as_deref().and_then(interix::link_target);
                    if link.is_some() {
                        size = 0;
                    }
                }
            }
            let kind = match (&link, is_dir) {
                (Some(_), _) => EntryKind::Symlink,
                (None, true) => EntryKind::Dir,
                (None, false) => EntryKind::File,
            };
            Ok(Info {
                entry: Entry {
                    name: name.to_string(),
                    kind,
                    size,
                    modified: unix_time(std.modification_time().nt_timestamp()),
                    mode: None,
                },
                link,
            })
        })
    }

    fn stat_info(&mut self, path: &str) -> Result<Info> {
        let record = self.resolve(path)?;
        let name = split(path).map_or("/", |(_, n)| n).to_string();
        self.info(record, &name, path)
    }
}

impl Volume for NtfsVolume {
    fn kind(&self) -> FsKind {
        FsKind::Ntfs
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let record = self.resolve(path)?;
        let info = self.info(record, "", path)?;
        if info.entry.kind != EntryKind::Dir {
            return Err(Error::NotDir(path.to_string()));
        }
        let names = self.dir_entries(record, path)?;
        let mut out = Vec::with_capacity(names.len());
        for (name, rec) in names {
            let child = crate::path::join(path, &name);
            out.push(self.info(rec, &name, &child)?.entry);
        }
        Ok(out)
    }

    fn stat(&mut self, path: &str) -> Result<Entry> {
        Ok(self.stat_info(path)?.entry)
    }

    fn read_link(&mut self, path: &str) -> Result<String> {
        self.stat_info(path)?
            .link
            .ok_or_else(|| Error::Invalid(format!("{path}: not a symbolic link or junction")))
    }

    fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let record = self.resolve(path)?;
        let info = self.info(record, "", path)?;
        match info.entry.kind {
            EntryKind::File => {}
            EntryKind::Dir => return Err(Error::IsDir(path.to_string())),
            _ => return Err(Error::Invalid(format!("{path}: not a regular file"))),
        }
        let what = format!("{}: {path}", self.name);
        let Self { ntfs, region, .. } = self;
        guard(&what, || {
            let err = |e| ntfs_err(&what, e);
            let file = load(ntfs, region, record, &what)?;
            let Some(item) = file.data(region, "") else {
                return Ok(0);
            };
            let item = item.map_err(err)?;
            let a = item.to_attribute().map_err(err)?;
            // Resident data is never compressed, whatever the flag says
            // (ntfs-3g sets it on small files in a compressed folder).
            let flags = a.flags();
            if flags.contains(NtfsAttributeFlags::ENCRYPTED)
                || (flags.contains(NtfsAttributeFlags::COMPRESSED) && !a.is_resident())
            {
                return Err(Error::Unsupported(format!(
                    "{what}: the file is compressed or encrypted, which vmhub cannot read"
                )));
            }
            let len = a.value_length();
            let mut v = a.value(region).map_err(err)?;
            let mut buf = vec![0u8; CHUNK];
            let mut done = 0u64;
            while done < len {
                let want = (len - done).min(CHUNK as u64) as usize;
                let n = v.read(region, &mut buf[..want]).map_err(err)?;
                if n == 0 {
                    return Err(Error::Corrupt(format!(
                        "{what}: the data ends after {done} of its {len} bytes"
                    )));
                }
                crate::extract::write_all(out, &buf[..n], path)?;
                done += n as u64;
            }
            Ok(done)
        })
    }

    fn free_ranges(&mut self) -> Result<Vec<(u64, u64)>> {
        let what = format!("{}: $Bitmap", self.name);
        let region_len = self.region.len();
        let Self { ntfs, region, .. } = self;
        guard(&what, || {
            let err = |e| ntfs_err(&what, e);
            let cluster = ntfs.cluster_size() as u64;
            // Only clusters wholly inside both the filesystem and the region.
            let clusters = ntfs.size().min(region_len) / cluster;
            let file = load(ntfs, region, RECORD_BITMAP, &what)?;
            let item = file
                .data(region, "")
                .ok_or_else(|| Error::Corrupt(format!("{what}: no data")))?
                .map_err(err)?;
            let a = item.to_attribute().map_err(err)?;
            // Clusters past the bitmap's end count as used.
            let covered = clusters.min(a.value_length().saturating_mul(8));
            let mut v = a.value(region).map_err(err)?;
            let mut buf = vec![0u8; CHUNK];
            let mut out: Vec<(u64, u64)> = Vec::new();
            let mut c = 0u64;
            while c < covered {
                let want = (covered - c).div_ceil(8).min(CHUNK as u64) as usize;
                let n = v.read(region, &mut buf[..want]).map_err(err)?;
                if n == 0 {
                    break;
                }
                for &byte in &buf[..n] {
                    for bit in 0..8 {
                        // Cluster 0 holds the boot sector whatever the bitmap says.
                        if c >= covered {
                            break;
                        }
                        if byte >> bit & 1 == 0 && c != 0 {
                            let off = c * cluster;
                            match out.last_mut() {
                                Some(last) if last.0 + last.1 == off => last.1 += cluster,
                                _ => out.push((off, cluster)),
                            }
                        }
                        c += 1;
                    }
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::dir::collate;
    use super::*;
    use std::cmp::Ordering;

    fn boot() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[3..11].copy_from_slice(b"NTFS    ");
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 8;
        b[0x28..0x30].copy_from_slice(&131_071u64.to_le_bytes());
        b[0x30..0x38].copy_from_slice(&4u64.to_le_bytes());
        b[0x40] = 0xF6;
        b
    }

    #[test]
    fn boot_sector_checks() {
        let len = 64 << 20;
        check_boot(&boot(), len, "v").unwrap();
        let mut b = boot();
        b[13] = 3;
        assert!(check_boot(&b, len, "v").is_err());
        let mut b = boot();
        b[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check_boot(&b, len, "v")
            .unwrap_err()
            .to_string()
            .contains("do not fit"));
        let mut b = boot();
        b[0x30..0x38].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(check_boot(&b, len, "v")
            .unwrap_err()
            .to_string()
            .contains("MFT"));
        let mut b = boot();
        b[0x40] = 0x7F;
        assert!(check_boot(&b, len, "v").is_err());
        let mut b = boot();
        b[3] = b'X';
        assert!(check_boot(&b, len, "v").is_err());
    }

    #[test]
    fn names_and_times() {
        let a: Vec<u16> = "Straße.TXT".encode_utf16().collect();
        let b: Vec<u16> = "STRAßE.txt".encode_utf16().collect();
        assert_eq!(collate(&a, &b, None), Ordering::Equal);
        let c: Vec<u16> = "b".encode_utf16().collect();
        assert_eq!(collate(&a, &c, None), Ordering::Greater);
        assert_eq!(unix_time(116_444_736_000_000_000), Some(0));
        assert_eq!(unix_time(0), None);
    }
}
