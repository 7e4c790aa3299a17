//! Reading and writing a dynamic disk's metadata in its file: the dynamic
//! header, the BAT, and the layout of a new, empty disk. Every tool that edits a
//! dynamic or differencing disk goes through these.

use super::bat::{self, Bat};
use super::footer::Footer;
use super::header::{DynamicHeader, HEADER_SIZE};
use crate::io::{read_exact_at, write_all_at};
use crate::{Error, Result};
use std::fs::File;
use std::path::Path;

/// Reads the dynamic header the footer points at, in a file of `len` bytes,
/// and refuses one whose own fields are wrong.
pub(crate) fn read_header(
    file: &File,
    path: &Path,
    footer: &Footer,
    len: u64,
) -> Result<DynamicHeader> {
    let ho = footer.data_offset;
    if ho
        .checked_add(HEADER_SIZE as u64)
        .is_none_or(|end| end > len)
    {
        return Err(Error::corrupt(
            path,
            format!("footer: data offset {ho} puts the dynamic header past the end of the file ({len} bytes)"),
        ));
    }
    let mut hb = vec![0u8; HEADER_SIZE];
    read_exact_at(file, path, &mut hb, ho, "dynamic header")?;
    let header = DynamicHeader::decode(&hb)
        .ok_or_else(|| Error::corrupt(path, "dynamic header: short read"))?;
    let problems = header.problems();
    if !problems.is_empty() {
        return Err(Error::corrupt(
            path,
            format!("dynamic header at offset {ho}: {}", problems.join("; ")),
        ));
    }
    Ok(header)
}

/// Reads the BAT `header` locates, in a file of `len` bytes. The table is at
/// most [`bat::MAX_ENTRIES`] entries and must lie inside the file, which bounds
/// the allocation.
pub(crate) fn read_bat(file: &File, path: &Path, header: &DynamicHeader, len: u64) -> Result<Bat> {
    let entries = header.max_table_entries;
    if entries > bat::MAX_ENTRIES {
        return Err(Error::unsupported(
            path,
            format!(
                "dynamic header: max table entries is {entries}, more than the {} supported",
                bat::MAX_ENTRIES
            ),
        ));
    }
    let table_len = bat::table_size(entries);
    let to = header.table_offset;
    if to.checked_add(table_len).is_none_or(|end| end > len) {
        return Err(Error::corrupt(
            path,
            format!("dynamic header: the BAT ({table_len} bytes at offset {to}) extends past the end of the file ({len} bytes)"),
        ));
    }
    let mut tb = vec![0u8; table_len as usize];
    read_exact_at(file, path, &mut tb, to, "BAT")?;
    Bat::decode(&tb, entries).ok_or_else(|| Error::corrupt(path, "BAT: short read"))
}

/// Writes the table sectors `sectors` of `table`, stored at `table_offset`.
pub(crate) fn write_bat_sectors(
    file: &File,
    path: &Path,
    table: &Bat,
    table_offset: u64,
    sectors: impl IntoIterator<Item = usize>,
) -> Result<()> {
    for s in sectors {
        write_all_at(
            file,
            path,
            &table.encode_sector(s),
            table_offset + s as u64 * 512,
        )?;
    }
    Ok(())
}

/// Writes an empty dynamic or differencing disk into `file`, laid out as
/// Hyper-V and QEMU write one: footer copy, `header`, an empty BAT, `extra`
/// (parent locator data), footer.
pub(crate) fn write_empty_dynamic(
    file: &File,
    path: &Path,
    footer: &Footer,
    header: &DynamicHeader,
    extra: &[u8],
) -> Result<()> {
    let fb = footer.encode();
    let mut buf = Vec::new();
    buf.extend_from_slice(&fb);
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(&Bat::new(header.max_table_entries).encode());
    buf.extend_from_slice(extra);
    buf.extend_from_slice(&fb);
    write_all_at(file, path, &buf, 0)
}
