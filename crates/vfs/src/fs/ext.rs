//! ext2, ext3 and ext4, read-only, by the `ext4-view` crate.
//!
//! `ext4-view` reads through [`Ext4Read`], implemented here over a
//! [`Region`]. It does not expose the block bitmaps, so the free space for
//! `compact --fs` is found by reading the superblock, the group descriptors
//! and the block bitmaps directly ([`free_blocks`]). That list is used to
//! discard blocks, so it errs on the side of "in use": a group whose bitmap
//! was never initialized (`BLOCK_UNINIT`) is left out entirely.

use super::{Entry, EntryKind, FsKind, Volume};
use crate::path::split;
use crate::region::Region;
use crate::{Error, Result};
use ext4_view::{Ext4, Ext4Error, Ext4Read, Metadata};
use std::io::Write;

/// The most entries one directory may list before it is taken for damage.
const MAX_ENTRIES: usize = 1 << 22;

/// Bytes copied to the writer at a time by [`Volume::read_file`].
const CHUNK: usize = 256 << 10;

/// An ext2/3/4 volume.
pub struct ExtVolume {
    fs: Ext4,
    kind: FsKind,
    name: String,
    /// A second view of the region, for reading the bitmaps.
    region: Region,
}

/// [`Ext4Read`] over a region of a disk.
struct Reader(Region);

impl Ext4Read for Reader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_at(dst, start_byte).map_err(Box::new)?;
        Ok(())
    }
}

/// The `vfs` error for an `ext4-view` error on `path` of the volume `name`.
fn ext_err(name: &str, path: &str, e: Ext4Error) -> Error {
    match e {
        Ext4Error::NotFound => Error::NotFound(path.to_string()),
        Ext4Error::NotADirectory => Error::NotDir(path.to_string()),
        Ext4Error::IsADirectory => Error::IsDir(path.to_string()),
        Ext4Error::NotASymlink => Error::Invalid(format!("{path}: not a symbolic link")),
        Ext4Error::IsASpecialFile => Error::Invalid(format!("{path}: not a regular file")),
        Ext4Error::Encrypted => Error::Unsupported(format!(
            "{name}: {path}: the file is encrypted, which vmhub cannot read"
        )),
        Ext4Error::Incompatible(i) => Error::Unsupported(format!(
            "{name}: {path}: the filesystem uses features vmhub cannot read: {i}"
        )),
        e @ Ext4Error::Io(_) => Error::Corrupt(format!("{name}: {path}: read failed: {e}")),
        e => Error::Corrupt(format!("{name}: {path}: {e}")),
    }
}

/// The inode number of `file`. ext4-view 1.0 keeps it private but shows it
/// in `Debug` (`File { inode: 12, position: 0, .. }`); `None` if that ever
/// changes, and the file is then read by ext4-view (the tests of block-map
/// holes would catch it). [`super::ext_map::read_file`] checks the inode it
/// finds against the file's size and type before trusting it.
fn inode_number(file: &ext4_view::File) -> Option<u64> {
    let text = format!("{file:?}");
    let (_, rest) = text.split_once("inode: ")?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok().filter(|&n| n > 0)
}

impl ExtVolume {
    /// Opens the ext2/3/4 volume in `region`; `kind` is what detection found.
    pub fn open(region: Region, kind: FsKind) -> Result<Self> {
        let name = region.name().to_string();
        let second = region.reopen()?;
        let fs = Ext4::load(Box::new(Reader(region))).map_err(|e| match e {
            Ext4Error::Incompatible(i) => Error::Unsupported(format!(
                "{name}: the {kind} filesystem uses features vmhub cannot read: {i}"
            )),
            e => Error::Corrupt(format!("{name}: {kind} filesystem: {e}")),
        })?;
        Ok(ExtVolume {
            fs,
            kind,
            name,
            region: second,
        })
    }

    fn entry(&self, name: &str, m: &Metadata) -> Entry {
        let t = m.file_type();
        let kind = if t.is_dir() {
            EntryKind::Dir
        } else if t.is_symlink() {
            EntryKind::Symlink
        } else if t.is_regular_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        Entry {
            name: name.to_string(),
            kind,
            size: if kind == EntryKind::Dir { 0 } else { m.len() },
            modified: Some(m.modified().seconds()),
            mode: Some(u32::from(m.mode())),
        }
    }

    fn metadata(&self, path: &str) -> Result<Metadata> {
        self.fs
            .symlink_metadata(path)
            .map_err(|e| ext_err(&self.name, path, e))
    }
}

impl Volume for ExtVolume {
    fn kind(&self) -> FsKind {
        self.kind
    }

    fn label(&self) -> Option<String> {
        let label = self.fs.label().display().to_string();
        let label = label.trim().to_string();
        (!label.is_empty()).then_some(label)
    }

    fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let name = self.name.clone();
        let dir = self
            .fs
            .read_dir(path)
            .map_err(|e| ext_err(&name, path, e))?;
        let mut out = Vec::new();
        for item in dir {
            let e = item.map_err(|e| ext_err(&name, path, e))?;
            let file_name = e.file_name();
            let n = String::from_utf8_lossy(file_name.as_ref()).into_owned();
            if n == "." || n == ".." {
                continue;
            }
            if out.len() >= MAX_ENTRIES {
                return Err(Error::Corrupt(format!(
                    "{name}: directory {path} holds more than {MAX_ENTRIES} entries"
                )));
            }
            let m = e
                .metadata()
                .map_err(|err| ext_err(&name, &crate::path::join(path, &n), err))?;
            out.push(self.entry(&n, &m));
        }
        Ok(out)
    }

    fn stat(&mut self, path: &str) -> Result<Entry> {
        let m = self.metadata(path)?;
        let n = split(path).map(|(_, n)| n).unwrap_or("/");
        Ok(self.entry(n, &m))
    }

    fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let name = self.name.clone();
        // One lookup of the path: the file opened (links followed) tells
        // what it is.
        let mut file = match self.fs.open(path) {
            Ok(f) => f,
            Err(ext4_view::Ext4Error::IsADirectory) => return Err(Error::IsDir(path.to_string())),
            Err(e) => return Err(ext_err(&name, path, e)),
        };
        let md = file.metadata();
        if md.is_dir() {
            return Err(Error::IsDir(path.to_string()));
        }
        if !matches!(md.file_type(), ext4_view::FileType::Regular) {
            return Err(Error::Invalid(format!("{path}: not a regular file")));
        }
        let size = md.len();
        // Files without extents (ext2/3) are read through their block map by
        // vmhub: ext4-view 1.0 fails on holes over a whole indirect block.
        if let Some(inode) = inode_number(&file) {
            let what = format!("{name}: {path}");
            if let Some(n) = super::ext_map::read_file(&mut self.region, inode, size, &what, out)? {
                return Ok(n);
            }
        }
        // Most files are small: a buffer of their size, up to CHUNK.
        let mut buf = vec![0u8; (CHUNK as u64).min(size.max(1)) as usize];
        let mut done = 0u64;
        loop {
            // `read_bytes` stops at block boundaries: fill the buffer first.
            let mut filled = 0;
            while filled < buf.len() {
                let n = file
                    .read_bytes(&mut buf[filled..])
                    .map_err(|e| ext_err(&name, path, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            crate::extract::write_all(out, &buf[..filled], path)?;
            done += filled as u64;
        }
        if done != size {
            return Err(Error::Corrupt(format!(
                "{name}: {path}: the inode records {size} bytes, but {done} could be read"
            )));
        }
        Ok(done)
    }

    fn read_link(&mut self, path: &str) -> Result<String> {
        let target = self
            .fs
            .read_link(path)
            .map_err(|e| ext_err(&self.name, path, e))?;
        Ok(String::from_utf8_lossy(target.as_ref()).into_owned())
    }

    fn free_ranges(&mut self) -> Result<Vec<(u64, u64)>> {
        free_blocks(&mut self.region)
    }
}

/// Superblock feature bits used here (ext4 disk layout, "The Super Block").
pub(super) const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
/// Most block groups handled (16 TiB of 4 KiB blocks needs 131,072).
const MAX_GROUPS: u64 = 1 << 22;
/// Group descriptor flag: the block bitmap is not initialized.
const BG_BLOCK_UNINIT: u16 = 0x2;

/// Where the block groups are, from the superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) block_size: u64,
    pub(super) blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    pub(super) desc_size: u64,
    pub(super) groups: u64,
    free_blocks: u64,
    /// Blocks of one group's inode table.
    pub(super) inode_table_blocks: u64,
    /// Bytes of one inode.
    pub(super) inode_size: u64,
    pub(super) inodes_per_group: u64,
    pub(super) incompat: u32,
    /// With meta_bg, the first group of descriptors kept in its meta group.
    first_meta_bg: u64,
    /// Blocks of the descriptor table (without meta_bg).
    table_blocks: u64,
    /// Blocks at the start of a group holding a superblock copy: the
    /// superblock, the descriptor table and its reserved growth.
    base_meta: u64,
    ro_compat: u32,
    compat: u32,
    /// sparse_super2: the only groups with backups.
    backups: [u64; 2],
}

impl Geometry {
    /// True when group `g` holds a copy of the superblock (ext4 disk layout,
    /// "Block Group Layout": sparse_super keeps copies in groups 0, 1 and
    /// powers of 3, 5 and 7).
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return self.backups.contains(&g);
        }
        if self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 || g == 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&b| {
            let mut p = b;
            while p < g {
                p *= b;
            }
            p == g
        })
    }
}

impl Geometry {
    /// Parses the 1024-byte superblock `sb` of a volume of `len` bytes.
    pub(super) fn parse(sb: &[u8], len: u64, name: &str) -> Result<Geometry> {
        let bad = |what: String| Error::Corrupt(format!("{name}: ext superblock: {what}"));
        let le16 = |at: usize| {
            sb.get(at..at + 2)
                .map(|s| u16::from_le_bytes([s[0], s[1]]) as u64)
                .unwrap_or(0)
        };
        let le32 = |at: usize| {
            sb.get(at..at + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64)
                .unwrap_or(0)
        };
        if le16(56) != 0xEF53 {
            return Err(bad("bad magic number".into()));
        }
        let log = le32(24);
        if log > 6 {
            return Err(bad(format!("block size 2^(10+{log}) is too large")));
        }
        let block_size = 1024u64 << log;
        let incompat = le32(96) as u32;
        let wide = incompat & INCOMPAT_64BIT != 0;
        let blocks = le32(4) | if wide { le32(0x150) << 32 } else { 0 };
        let free_blocks = le32(12) | if wide { le32(0x158) << 32 } else { 0 };
        let first_data_block = le32(20);
        let blocks_per_group = le32(32);
        let desc_size = if wide { le16(254) } else { 32 };
        if blocks.checked_mul(block_size).is_none_or(|b| b > len) {
            return Err(bad(format!(
                "{blocks} blocks of {block_size} bytes do not fit in the volume's {len} bytes"
            )));
        }
        if first_data_block >= blocks {
            return Err(bad(format!(
                "first data block {first_data_block} is past the end"
            )));
        }
        if blocks_per_group < 8 || blocks_per_group > 8 * block_size || blocks_per_group % 8 != 0 {
            return Err(bad(format!(
                "{blocks_per_group} blocks per group with blocks of {block_size} bytes"
            )));
        }
        if desc_size < 32 || desc_size > block_size || !desc_size.is_power_of_two() {
            return Err(bad(format!("group descriptors of {desc_size} bytes")));
        }
        if free_blocks > blocks {
            return Err(bad(format!("{free_blocks} free blocks of {blocks}")));
        }
        let groups = (blocks - first_data_block).div_ceil(blocks_per_group);
        if groups > MAX_GROUPS {
            return Err(bad(format!("{groups} block groups")));
        }
        let table_blocks = (groups * desc_size).div_ceil(block_size);
        let inode_size = if le32(76) == 0 { 128 } else { le16(88) };
        let inodes_per_group = le32(40);
        if inode_size < 128 || inode_size > block_size || inodes_per_group == 0 {
            return Err(bad(format!(
                "{inodes_per_group} inodes of {inode_size} bytes per group"
            )));
        }
        if (first_data_block + 1 + table_blocks) > blocks {
            return Err(bad(format!(
                "{groups} group descriptors do not fit in the volume"
            )));
        }
        Ok(Geometry {
            block_size,
            blocks,
            first_data_block,
            blocks_per_group,
            desc_size,
            groups,
            free_blocks,
            inode_table_blocks: (inodes_per_group * inode_size).div_ceil(block_size),
            inode_size,
            inodes_per_group,
            incompat,
            first_meta_bg: le32(0x104),
            table_blocks,
            base_meta: 1 + table_blocks + le16(0xCE),
            ro_compat: le32(100) as u32,
            compat: le32(92) as u32,
            backups: [le32(0x24C), le32(0x250)],
        })
    }

    /// Byte offset of the descriptor of group `group` in the descriptor
    /// table after the superblock; `None` past the last group, or where
    /// meta_bg keeps it in its meta group (ext4 disk layout, "Meta Block
    /// Groups"; ext4-view 1.0 does not open such volumes).
    pub(super) fn descriptor_at(&self, group: u64) -> Option<u64> {
        let per_block = self.block_size / self.desc_size;
        if group >= self.groups
            || (self.incompat & INCOMPAT_META_BG != 0 && group / per_block >= self.first_meta_bg)
        {
            return None;
        }
        Some((self.first_data_block + 1) * self.block_size + group * self.desc_size)
    }
}

/// The fields of a group descriptor used here (ext4 disk layout, "Block
/// Group Descriptors").
pub(super) struct Descriptor {
    block_bitmap: u64,
    inode_bitmap: u64,
    pub(super) inode_table: u64,
    free: u64,
    flags: u16,
}

impl Descriptor {
    /// Parses a descriptor of 32 or more bytes; the high halves are read
    /// from descriptors of 64 or more.
    pub(super) fn parse(d: &[u8]) -> Descriptor {
        let wide = d.len() >= 64;
        let lo32 = |at: usize| {
            d.get(at..at + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64)
                .unwrap_or(0)
        };
        let lo16 = |at: usize| {
            d.get(at..at + 2)
                .map(|s| u16::from_le_bytes([s[0], s[1]]) as u64)
                .unwrap_or(0)
        };
        let hi32 = |at: usize| if wide { lo32(at) << 32 } else { 0 };
        let hi16 = |at: usize| if wide { lo16(at) << 16 } else { 0 };
        Descriptor {
            block_bitmap: lo32(0) | hi32(0x20),
            inode_bitmap: lo32(4) | hi32(0x24),
            inode_table: lo32(8) | hi32(0x28),
            free: lo16(0x0C) | hi16(0x2C),
            flags: lo16(0x12) as u16,
        }
    }
}

/// Free byte ranges of the ext volume in `region`, from its block bitmaps.
fn free_blocks(region: &mut Region) -> Result<Vec<(u64, u64)>> {
    let name = region.name().to_string();
    let mut sb = [0u8; 1024];
    region.read_at_checked(&mut sb, 1024)?;
    let g = Geometry::parse(&sb, region.len(), &name)?;
    if g.incompat & INCOMPAT_RECOVER != 0 {
        // Blocks allocated by transactions still in the journal may not
        // be marked in the bitmaps yet.
        return Err(Error::Unsupported(format!(
            "{name}: the ext journal needs recovery (the volume was not cleanly unmounted), so its bitmaps cannot be trusted for free space"
        )));
    }
    if g.incompat & INCOMPAT_META_BG != 0 && g.first_meta_bg < g.table_blocks {
        // With meta_bg, descriptor blocks past s_first_meta_bg live
        // inside the groups; not followed here.
        return Err(Error::Unsupported(format!(
            "{name}: finding free space on ext with meta_bg is not supported"
        )));
    }
    let table = (g.first_data_block + 1) * g.block_size;
    let mut desc = vec![0u8; g.desc_size as usize];
    let mut bitmap = vec![0u8; g.block_size as usize];
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut total = 0u64;
    let mut groups = Vec::with_capacity(g.groups as usize);
    for group in 0..g.groups {
        region.read_at_checked(&mut desc, table + group * g.desc_size)?;
        groups.push(Descriptor::parse(&desc));
    }
    // Blocks of every group's bitmaps and inode table, for the groups whose
    // bitmap is not initialized (where the kernel takes them as the only
    // blocks in use besides the superblock copy).
    let mut meta: Vec<(u64, u64)> = groups
        .iter()
        .flat_map(|d| {
            [
                (d.block_bitmap, 1),
                (d.inode_bitmap, 1),
                (d.inode_table, g.inode_table_blocks),
            ]
        })
        .collect();
    meta.sort_unstable();
    for (group, d) in groups.iter().enumerate() {
        let group = group as u64;
        let first = g.first_data_block + group * g.blocks_per_group;
        let count = g.blocks_per_group.min(g.blocks - first);
        if d.flags & BG_BLOCK_UNINIT != 0 {
            let base = if g.has_super(group) { g.base_meta } else { 0 };
            let used = |b: u64| {
                b < first + base
                    || meta
                        .iter()
                        .take_while(|m| m.0 <= b)
                        .any(|&(s, n)| b < s.saturating_add(n))
            };
            let free: Vec<u64> = (first..first + count).filter(|&b| !used(b)).collect();
            if free.len() as u64 > d.free {
                return Err(Error::Corrupt(format!(
                    "{name}: ext group {group}: {} blocks are free by its layout, the group descriptor says {}",
                    free.len(),
                    d.free
                )));
            }
            for b in free {
                let off = b * g.block_size;
                total += 1;
                match out.last_mut() {
                    Some(last) if last.0 + last.1 == off => last.1 += g.block_size,
                    _ => out.push((off, g.block_size)),
                }
            }
            continue;
        }
        let at = d.block_bitmap;
        if at == 0 || at >= g.blocks {
            return Err(Error::Corrupt(format!(
                "{name}: ext group descriptor {group}: block bitmap at block {at}, outside the volume's {} blocks",
                g.blocks
            )));
        }
        region.read_at_checked(&mut bitmap, at * g.block_size)?;
        let recorded = d.free;
        let clear = (0..count)
            .filter(|&i| {
                bitmap.get((i / 8) as usize).copied().unwrap_or(0xFF) & (1 << (i % 8)) == 0
            })
            .count() as u64;
        // A bitmap with more free blocks than its group records cannot be
        // trusted to discard by.
        if clear > recorded {
            return Err(Error::Corrupt(format!(
                "{name}: ext group {group}: the block bitmap shows {clear} free blocks, the group descriptor {recorded}"
            )));
        }
        for i in 0..count {
            let byte = bitmap.get((i / 8) as usize).copied().unwrap_or(0xFF);
            if byte & (1 << (i % 8)) != 0 {
                continue;
            }
            let off = (first + i) * g.block_size;
            total += 1;
            match out.last_mut() {
                Some(last) if last.0 + last.1 == off => last.1 += g.block_size,
                _ => out.push((off, g.block_size)),
            }
        }
    }
    // The bitmaps and the superblock's count disagree when the volume was
    // not cleanly unmounted; more free blocks than recorded means a bitmap
    // cannot be trusted.
    if total > g.free_blocks {
        return Err(Error::Corrupt(format!(
            "{name}: the block bitmaps show {total} free blocks, more than the superblock's {}",
            g.free_blocks
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(blocks: u32, log: u32, per_group: u32) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[4..8].copy_from_slice(&blocks.to_le_bytes());
        sb[12..16].copy_from_slice(&10u32.to_le_bytes());
        sb[20..24].copy_from_slice(&u32::from(log == 0).to_le_bytes());
        sb[24..28].copy_from_slice(&log.to_le_bytes());
        sb[32..36].copy_from_slice(&per_group.to_le_bytes());
        sb[40..44].copy_from_slice(&2048u32.to_le_bytes());
        sb[56..58].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb
    }

    #[test]
    fn geometry_of_a_small_volume() {
        let g = Geometry::parse(&superblock(16384, 2, 32768), 64 << 20, "t").unwrap();
        assert_eq!(g.block_size, 4096);
        assert_eq!(g.groups, 1);
        assert_eq!(g.desc_size, 32);
        let g = Geometry::parse(&superblock(65536, 0, 8192), 64 << 20, "t").unwrap();
        assert_eq!((g.first_data_block, g.groups), (1, 8));
    }

    #[test]
    fn impossible_superblocks_are_refused() {
        assert!(Geometry::parse(&superblock(16384, 2, 32768), 1 << 20, "t").is_err());
        assert!(Geometry::parse(&superblock(16384, 9, 32768), 64 << 30, "t").is_err());
        assert!(Geometry::parse(&superblock(16384, 2, 0), 64 << 20, "t").is_err());
        assert!(Geometry::parse(&superblock(16384, 2, 1 << 20), 64 << 20, "t").is_err());
        let mut sb = superblock(16384, 2, 32768);
        sb[56] = 0;
        assert!(Geometry::parse(&sb, 64 << 20, "t").is_err());
        assert!(Geometry::parse(&sb[..10], 64 << 20, "t").is_err());
    }
}
