//! Writing the volume: formatting it and copying the folder into it.

use super::probe::{format_options, Geometry};
use super::scan::Tree;
use super::size::Plan;
use crate::fs::fat::FatVolume;
use crate::fs::Volume;
use crate::region::{from_io, Region, SharedDisk};
use crate::{Error, Result};
use std::io::{self, Read, Write};
use std::time::SystemTime;

/// Formats the volume and writes the label into the root directory too,
/// where Windows and mtools read it.
pub(super) fn format_volume(
    disk: &SharedDisk,
    start: u64,
    len: u64,
    name: &str,
    plan: Plan,
    label: Option<[u8; 11]>,
) -> Result<Geometry> {
    let mut region = Region::new(disk.clone(), start, len, name)?;
    fatfs::format_volume(
        &mut region,
        format_options(plan.fat, plan.root_entries, label),
    )
    .map_err(|e| from_io(e, &format!("{name}: formatting {}", plan.fat)))?;
    let mut boot = [0u8; 512];
    region.read_at_checked(&mut boot, 0)?;
    let g = Geometry::read(&boot)
        .filter(|g| g.fat == plan.fat)
        .ok_or_else(|| {
            Error::Corrupt(format!(
                "{name}: the new {} boot sector does not read back",
                plan.fat
            ))
        })?;
    if let Some(l) = label {
        let mut entry = [0u8; 32];
        entry[..11].copy_from_slice(&l);
        entry[11] = 0x08; // ATTR_VOLUME_ID
        let (date, time) = fat_date_time(SystemTime::now());
        entry[22..24].copy_from_slice(&time.to_le_bytes());
        entry[24..26].copy_from_slice(&date.to_le_bytes());
        region.write_at_checked(&entry, g.root_dir)?;
    }
    Ok(g)
}

/// Copies the tree into the formatted volume: folders first, through
/// [`FatVolume`] (which repairs the `.` and `..` entries `fatfs` writes),
/// then the files, streamed, with their modification times.
pub(super) fn copy_tree(
    disk: &SharedDisk,
    start: u64,
    len: u64,
    name: &str,
    tree: &Tree,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let mut vol = FatVolume::open(Region::new(disk.clone(), start, len, name)?)?;
    for d in tree.dirs.iter().skip(1) {
        vol.mkdir(&format!("/{}", d.path))?;
    }
    vol.flush()?;
    drop(vol);

    let fs = fatfs::FileSystem::new(
        Region::new(disk.clone(), start, len, name)?,
        fatfs::FsOptions::new(),
    )
    .map_err(|e| from_io(e, &format!("{name}: mounting the new volume")))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut done = 0u64;
    progress(0, tree.bytes);
    {
        let root = fs.root_dir();
        for d in &tree.dirs {
            let dir = if d.path.is_empty() {
                root.clone()
            } else {
                root.open_dir(&d.path)
                    .map_err(|e| from_io(e, &format!("{name}: /{}", d.path)))?
            };
            for item in &d.entries {
                let Some(info) = &item.file else { continue };
                let at = if d.path.is_empty() {
                    format!("/{}", item.name)
                } else {
                    format!("/{}/{}", d.path, item.name)
                };
                let werr = |e: io::Error| from_io(e, &format!("{name}: {at}"));
                let src = std::fs::File::open(&item.source)
                    .map_err(|e| Error::local(&item.source, "open", e))?;
                let mut src = src.take(info.len);
                let mut file = dir.create_file(&item.name).map_err(werr)?;
                let mut copied = 0u64;
                loop {
                    let n = match src.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Error::local(&item.source, "read", e)),
                    };
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n]).map_err(werr)?;
                    copied += n as u64;
                    done += n as u64;
                    progress(done, tree.bytes);
                }
                if copied != info.len {
                    return Err(Error::Invalid(format!(
                        "{}: shrank from {} to {copied} bytes while being copied",
                        item.source.display(),
                        info.len
                    )));
                }
                if let Some(t) = info.modified {
                    // Set last: every write stamps the time of the write.
                    #[allow(deprecated)]
                    file.set_modified(fat_datetime(t));
                }
                file.flush().map_err(werr)?;
            }
        }
    }
    // Counting the free clusters records the count in the FAT32 FSInfo
    // sector at unmount, instead of leaving it "unknown".
    fs.stats()
        .map_err(|e| from_io(e, &format!("{name}: counting free clusters")))?;
    fs.unmount()
        .map_err(|e| from_io(e, &format!("{name}: unmounting the new volume")))?;
    Ok(())
}

/// A time as FAT stores it: UTC (FAT has no zone; vmhub reads FAT times as
/// UTC too), clamped to the years FAT counts (1980–2107).
fn fat_datetime(t: SystemTime) -> fatfs::DateTime {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let (date, time) = match crate::time::civil_from_unix(secs) {
        ((year, ..), _) if year < 1980 => ((1980, 1, 1), (0, 0, 0)),
        ((year, ..), _) if year > 2107 => ((2107, 12, 31), (23, 59, 58)),
        civil => civil,
    };
    fatfs::DateTime {
        date: fatfs::Date {
            year: date.0 as u16,
            month: date.1 as u16,
            day: date.2 as u16,
        },
        time: fatfs::Time {
            hour: time.0 as u16,
            min: time.1 as u16,
            sec: time.2 as u16,
            millis: 0,
        },
    }
}

/// The on-disk date and time words of a directory entry (FAT specification,
/// "Date and Time Formats").
fn fat_date_time(t: SystemTime) -> (u16, u16) {
    let d = fat_datetime(t);
    let date = ((d.date.year - 1980) << 9) | (d.date.month << 5) | d.date.day;
    let time = (d.time.hour << 11) | (d.time.min << 5) | (d.time.sec / 2);
    (date, time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_209_804);
        let d = fat_datetime(t);
        assert_eq!((d.date.year, d.date.month, d.date.day), (2024, 2, 29));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (12, 30, 4));
        let d = fat_datetime(SystemTime::UNIX_EPOCH);
        assert_eq!((d.date.year, d.date.month, d.date.day), (1980, 1, 1));
    }
}
