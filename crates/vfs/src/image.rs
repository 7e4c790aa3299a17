//! An image opened for looking inside: its disk, its partition table, and the
//! filesystems in it.

use crate::fs::{open_volume, Volume};
use crate::part::{read_table, Partition, Table};
use crate::region::{share, Region, SharedDisk};
use crate::{Error, Result};
use std::path::Path;

/// A disk image with its partition table read.
pub struct Image {
    disk: SharedDisk,
    table: Table,
    name: String,
}

impl Image {
    /// Opens the image at `path` (any format and chain vdisk reads), for
    /// writing when `writable` (then only the top of a chain is written).
    pub fn open(path: &Path, writable: bool) -> Result<Image> {
        let disk = vdisk::open(path, vdisk::OpenOptions { writable })?;
        Image::from_disk(disk, &path.display().to_string())
    }

    /// Looks into an already open disk; `name` names it in messages.
    pub fn from_disk(disk: Box<dyn vdisk::Disk>, name: &str) -> Result<Image> {
        let disk = share(disk);
        let table = read_table(&disk, name)?;
        Ok(Image {
            disk,
            table,
            name: name.to_string(),
        })
    }

    /// The partition table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The disk.
    pub fn disk(&self) -> &SharedDisk {
        &self.disk
    }

    /// The partition `number`, or when `None`, the only filesystem vmhub can
    /// read on the disk; an error that lists the choices otherwise.
    pub fn partition(&self, number: Option<u32>) -> Result<&Partition> {
        let parts = &self.table.partitions;
        if let Some(n) = number {
            return self.table.get(n).ok_or_else(|| {
                let have: Vec<String> = parts.iter().map(|p| p.number.to_string()).collect();
                Error::NotFound(format!(
                    "{}: partition {n} (the disk has {})",
                    self.name,
                    if have.is_empty() {
                        "no partitions".to_string()
                    } else {
                        format!("partitions {}", have.join(", "))
                    }
                ))
            });
        }
        let readable: Vec<&Partition> = parts.iter().filter(|p| p.filesystem.readable()).collect();
        match readable.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::Unsupported(format!(
                "{}: no filesystem vmhub can read was found on the disk{}",
                self.name,
                if parts.is_empty() {
                    String::new()
                } else {
                    let found: Vec<String> = parts
                        .iter()
                        .map(|p| format!("{}: {}", p.number, p.filesystem))
                        .collect();
                    format!(" (partitions {})", found.join(", "))
                }
            ))),
            many => {
                let list: Vec<String> = many
                    .iter()
                    .map(|p| format!("{} ({})", p.number, p.filesystem))
                    .collect();
                Err(Error::Invalid(format!(
                    "{}: the disk holds several filesystems, name one as {}:PARTITION:/path with PARTITION one of {}",
                    self.name,
                    self.name,
                    list.join(", ")
                )))
            }
        }
    }

    /// The region of partition `number` (see [`Image::partition`]).
    pub fn region(&self, number: Option<u32>) -> Result<Region> {
        let p = self.partition(number)?;
        let name = if self.table.kind == crate::TableKind::None {
            self.name.clone()
        } else {
            format!("{} partition {}", self.name, p.number)
        };
        if p.extended {
            return Err(Error::Invalid(format!(
                "{name}: an extended partition holds other partitions, not files"
            )));
        }
        Region::new(self.disk.clone(), p.start, p.size, name)
    }

    /// Opens the filesystem of partition `number` (see [`Image::partition`]).
    pub fn volume(&self, number: Option<u32>, writable: bool) -> Result<Box<dyn Volume>> {
        open_volume(self.region(number)?, writable)
    }

    /// The byte ranges of the disk that the filesystems in it hold as free
    /// space, for `img compact --fs`. Partitions whose filesystem vmhub cannot
    /// read, or cannot find the free space of, are kept whole and named in
    /// the notes.
    pub fn free_space(&self) -> Result<FreeSpace> {
        let mut out = FreeSpace::default();
        let table_kind = self.table.kind;
        for p in &self.table.partitions {
            let which = if table_kind == crate::TableKind::None {
                "the disk".to_string()
            } else {
                format!("partition {}", p.number)
            };
            if p.extended {
                continue;
            }
            if !p.filesystem.readable() {
                out.notes
                    .push(format!("{which}: {} kept whole", p.filesystem));
                continue;
            }
            let number = (table_kind != crate::TableKind::None).then_some(p.number);
            let ranges = self.volume(number, false).and_then(|mut v| v.free_ranges());
            match ranges {
                Ok(r) => {
                    for (s, n) in r {
                        if s.checked_add(n).is_some_and(|e| e <= p.size) {
                            out.ranges.push((p.start + s, n));
                            out.bytes += n;
                        }
                    }
                }
                Err(e) => out.notes.push(format!("{which}: kept whole ({e})")),
            }
        }
        out.ranges.sort_unstable();
        Ok(out)
    }

    /// Makes every write durable.
    pub fn flush(&self) -> Result<()> {
        let mut d = self
            .disk
            .lock()
            .map_err(|_| Error::Invalid("the disk was left in an unknown state".into()))?;
        d.flush()?;
        Ok(())
    }
}

/// Free space found by [`Image::free_space`].
#[derive(Clone, Debug, Default)]
pub struct FreeSpace {
    /// (offset, length) on the disk, sorted.
    pub ranges: Vec<(u64, u64)>,
    /// Their total in bytes.
    pub bytes: u64,
    /// Partitions kept whole, and why.
    pub notes: Vec<String>,
}
