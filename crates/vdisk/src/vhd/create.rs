//! Writing new VHDs.
//!
//! # Creator and geometry, so that every reader sees the same size
//! vmhub signs its images with creator application `vmhb` and keeps the exact
//! requested size in `current_size`. The geometry is the specification's CHS for
//! the size when that addresses the disk exactly; otherwise it is the maximum
//! 65535/16/255. QEMU ≥ 10 trusts `current_size` for every creator but `vpc ` and
//! `qemu`; QEMU < 10 trusts the CHS product unless the geometry is the maximum (or
//! the creator is one of a few it knows); Hyper-V, VirtualBox and libvhdi read
//! `current_size`. A floor-rounded CHS would make QEMU < 10 read a smaller disk and
//! silently drop its tail; the maximum geometry makes them all agree. Only Virtual
//! PC cannot use such a disk: `--compat vpc` rounds the size up to what a CHS
//! geometry addresses exactly, as Virtual PC itself does.

use super::bat;
use super::footer::{self, DiskType, Footer};
use super::geometry::Geometry;
use super::header::{block_size_problem, DynamicHeader, HEADER_SIZE};
use super::MAX_SIZE;
use crate::io::write_all_at;
use crate::{Error, Result, SECTOR};
use std::fs::File;
use std::path::Path;

/// vmhub's creator application code.
pub const CREATOR_APP: &[u8; 4] = b"vmhb";

/// What to create.
#[derive(Clone, Debug)]
pub struct NewVhd {
    /// Requested size in bytes.
    pub size: u64,
    /// Fixed or dynamic.
    pub kind: DiskType,
    /// Block size of a dynamic disk.
    pub block_size: u64,
    /// Round the size up to an exact CHS geometry, for Virtual PC.
    pub compat_vpc: bool,
}

/// The size and geometry chosen for a new disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizePlan {
    /// The disk's size in bytes.
    pub size: u64,
    /// The geometry stored in the footer.
    pub geometry: Geometry,
    /// What was adjusted, one sentence each, for the user.
    pub notes: Vec<String>,
}

/// Chooses the size and geometry for a disk of `requested` bytes.
pub fn plan_size(requested: u64, compat_vpc: bool) -> Result<SizePlan> {
    let mut notes = Vec::new();
    if requested == 0 {
        return Err(Error::InvalidArgument(
            "size must be greater than zero".into(),
        ));
    }
    let mut size = requested.div_ceil(SECTOR) * SECTOR;
    if size != requested {
        notes.push(format!(
            "size rounded up from {requested} to {size} bytes, a whole number of 512-byte sectors"
        ));
    }
    if size > MAX_SIZE {
        return Err(Error::InvalidArgument(format!(
            "size {requested} exceeds the VHD maximum of {MAX_SIZE} bytes (2040 GiB)"
        )));
    }
    let geometry = if compat_vpc {
        let (s, g) = Geometry::round_up(size).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "--compat vpc: Virtual PC cannot address {size} bytes; its largest disk is {} bytes (65535×16×255 sectors)",
                Geometry::MAX.size()
            ))
        })?;
        if s != size {
            notes.push(format!(
                "size rounded up from {size} to {s} bytes so that the CHS geometry {}/{}/{} addresses it exactly (Virtual PC)",
                g.cylinders, g.heads, g.sectors
            ));
        }
        size = s;
        g
    } else {
        let g = Geometry::from_sectors(size / SECTOR);
        if g.size() == size {
            g
        } else {
            Geometry::MAX
        }
    };
    Ok(SizePlan {
        size,
        geometry,
        notes,
    })
}

/// The footer of a new disk.
pub fn new_footer(plan: &SizePlan, kind: DiskType) -> Result<Footer> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut unique_id = [0u8; 16];
    getrandom::fill(&mut unique_id).map_err(|e| {
        Error::InvalidArgument(format!("cannot get random bytes for the unique id: {e}"))
    })?;
    // An RFC 4122 version 4 id, as Windows writes.
    unique_id[6] = (unique_id[6] & 0x0f) | 0x40;
    unique_id[8] = (unique_id[8] & 0x3f) | 0x80;
    Ok(Footer {
        cookie: *footer::COOKIE,
        features: footer::FEATURE_RESERVED,
        version: footer::VERSION_1_0,
        data_offset: if kind == DiskType::Fixed {
            footer::NO_DATA_OFFSET
        } else {
            512
        },
        timestamp: u32::try_from(now.saturating_sub(footer::VHD_EPOCH)).unwrap_or(u32::MAX),
        creator_app: *CREATOR_APP,
        creator_version: creator_version(),
        creator_host_os: footer::HOST_WINDOWS,
        original_size: plan.size,
        current_size: plan.size,
        geometry: plan.geometry,
        disk_type: kind.to_u32(),
        checksum: 0,
        unique_id,
        saved_state: 0,
        computed_checksum: 0,
    })
}

/// vmhub's version as a footer creator version: major in the high 16 bits.
fn creator_version() -> u32 {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major << 16) | (minor & 0xffff)
}

/// Writes a new, empty VHD into `file` (which must be empty); `path` names it in
/// messages. Returns the size plan used.
pub fn write_new(file: &File, path: &Path, new: &NewVhd) -> Result<SizePlan> {
    let plan = plan_size(new.size, new.compat_vpc)?;
    let footer = new_footer(&plan, new.kind)?;
    let fb = footer.encode();
    match new.kind {
        DiskType::Fixed => {
            // Sparse, as qemu-img creates fixed disks: the data area reads as zeros.
            file.set_len(plan.size)
                .map_err(|e| Error::io(path, "resize", e))?;
            write_all_at(file, path, &fb, plan.size)?;
        }
        DiskType::Dynamic => {
            if let Some(why) = block_size_problem(new.block_size) {
                return Err(Error::InvalidArgument(why));
            }
            let entries = too_many_blocks(plan.size, new.block_size)?;
            let header =
                DynamicHeader::new(512 + HEADER_SIZE as u64, entries, new.block_size as u32);
            super::meta::write_empty_dynamic(file, path, &footer, &header, &[])?;
        }
        DiskType::Differencing => {
            return Err(Error::InvalidArgument(
                "differencing disks are created from a parent".into(),
            ));
        }
    }
    Ok(plan)
}

/// The BAT entries for `size` bytes in `block_size`-byte blocks, or the error
/// that says there are too many.
fn too_many_blocks(size: u64, block_size: u64) -> Result<u32> {
    bat::entries_for(size, block_size).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{} blocks of {block_size} bytes are too many for one BAT; use a larger --block-size",
            size.div_ceil(block_size.max(1))
        ))
    })
}

/// Writes a new differencing disk over the VHD at `parent` into `file` (which
/// must be empty). `path` is where the child will live: its relative locator is
/// computed from there. Returns the size plan (the parent's size).
pub fn write_child(file: &File, path: &Path, parent: &Path, block_size: u64) -> Result<SizePlan> {
    if crate::format::sniff(parent)? != crate::Format::Vhd {
        return Err(Error::InvalidArgument(format!(
            "{}: a parent must be a VHD",
            parent.display()
        )));
    }
    if let Some(why) = block_size_problem(block_size) {
        return Err(Error::InvalidArgument(why));
    }
    let base = super::VhdDisk::open(parent, false)?;
    let plan = plan_size(crate::Disk::virtual_size(&base), false)?;
    let footer = new_footer(&plan, DiskType::Differencing)?;
    let parent_abs = std::fs::canonicalize(parent).map_err(|e| Error::io(parent, "resolve", e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let child_dir = std::fs::canonicalize(&dir).map_err(|e| Error::io(&dir, "resolve", e))?;
    let entries = too_many_blocks(plan.size, block_size)?;
    let table_offset = 512 + HEADER_SIZE as u64;
    // Locator data right after the BAT.
    let links = super::locator::links(
        &child_dir,
        &parent_abs,
        table_offset + bat::table_size(entries),
    )
    .map_err(Error::InvalidArgument)?;
    let mut header = DynamicHeader::new(table_offset, entries, block_size as u32);
    header.parent_unique_id = base.footer().unique_id;
    header.parent_timestamp = links.timestamp;
    header.parent_unicode_name = links.name;
    header.locators = links.locators;
    super::meta::write_empty_dynamic(file, path, &footer, &header, &links.data)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sizes_stay_exact() {
        for s in [52428800u64, 1000000000, 4 << 30, 1 << 20, 512] {
            let p = plan_size(s, false).unwrap();
            assert_eq!(p.size, s);
            assert!(p.geometry.is_max() || p.geometry.size() == s);
            assert!(p.notes.is_empty());
        }
    }

    #[test]
    fn vpc_compat_rounds_up_and_says_so() {
        let p = plan_size(52428800, true).unwrap();
        assert_eq!(p.size, 52432896);
        assert_eq!(p.geometry.size(), p.size);
        assert_eq!(p.notes.len(), 1);
        assert!(plan_size(200 << 30, true).is_err());
    }

    #[test]
    fn odd_and_bad_sizes() {
        assert_eq!(plan_size(1000, false).unwrap().size, 1024);
        assert!(plan_size(0, false).is_err());
        assert!(plan_size(MAX_SIZE + 1, false).is_err());
        assert_eq!(plan_size(MAX_SIZE, false).unwrap().size, MAX_SIZE);
    }
}
