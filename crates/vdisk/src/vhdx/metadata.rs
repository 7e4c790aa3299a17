//! The metadata region ([MS-VHDX] 2.6): its table and the items vmhub knows.

use super::fields::{guid, guid_at, guid_text, put, u16_at, u32_at, u64_at, Guid};

const SIGNATURE: &[u8; 8] = b"metadata";
/// Bytes reserved for the metadata table at the start of the region.
pub const TABLE_SIZE: usize = 64 << 10;
/// The most entries the table may hold.
pub const MAX_ENTRIES: u16 = 2047;

/// File parameters: block size, LeaveBlocksAllocated, HasParent.
pub const FILE_PARAMETERS: Guid = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
/// The virtual disk size.
pub const VIRTUAL_DISK_SIZE: Guid = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
/// The SCSI page 83 id of the disk.
pub const PAGE_83_DATA: Guid = guid("BECA12AB-B2E6-4523-93EF-C309E000C746");
/// The logical sector size.
pub const LOGICAL_SECTOR_SIZE: Guid = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
/// The physical sector size.
pub const PHYSICAL_SECTOR_SIZE: Guid = guid("CDA348C7-445D-4471-9CC9-E9885251C556");
/// The parent locator of a differencing disk.
pub const PARENT_LOCATOR: Guid = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
/// The locator type of a VHDX parent.
pub const VHDX_PARENT_TYPE: Guid = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913");

/// Smallest and largest block sizes ([MS-VHDX] 2.6.2.1).
pub const MIN_BLOCK: u64 = 1 << 20;
/// See [`MIN_BLOCK`].
pub const MAX_BLOCK: u64 = 256 << 20;
/// The largest virtual disk: 64 TiB.
pub const MAX_SIZE: u64 = 64 << 40;

/// One metadata table entry ([MS-VHDX] 2.6.1.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Which item.
    pub item: Guid,
    /// Where it is, from the start of the region.
    pub offset: u32,
    /// Its length.
    pub length: u32,
    /// A user item (not interpreted by the format).
    pub is_user: bool,
    /// Describes the virtual disk (rather than the file).
    pub is_virtual_disk: bool,
    /// A reader that does not know it must refuse the file.
    pub is_required: bool,
}

/// A parent locator ([MS-VHDX] 2.6.2.6): a type and key/value pairs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ParentLocator {
    /// The locator type.
    pub kind: Guid,
    /// Its pairs, in order.
    pub entries: Vec<(String, String)>,
}

impl ParentLocator {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Encodes the locator item.
    pub fn encode(&self) -> Vec<u8> {
        let mut head = vec![0u8; 20 + 12 * self.entries.len()];
        put(&mut head, 0, &self.kind);
        put(&mut head, 18, &(self.entries.len() as u16).to_le_bytes());
        let mut strings = Vec::new();
        for (i, (k, v)) in self.entries.iter().enumerate() {
            let k: Vec<u8> = k.encode_utf16().flat_map(u16::to_le_bytes).collect();
            let v: Vec<u8> = v.encode_utf16().flat_map(u16::to_le_bytes).collect();
            let ko = head.len() + strings.len();
            strings.extend_from_slice(&k);
            let vo = head.len() + strings.len();
            strings.extend_from_slice(&v);
            let at = 20 + 12 * i;
            put(&mut head, at, &(ko as u32).to_le_bytes());
            put(&mut head, at + 4, &(vo as u32).to_le_bytes());
            put(&mut head, at + 8, &(k.len() as u16).to_le_bytes());
            put(&mut head, at + 10, &(v.len() as u16).to_le_bytes());
        }
        head.extend_from_slice(&strings);
        head
    }

    /// Decodes a locator item.
    pub fn decode(b: &[u8]) -> Result<ParentLocator, String> {
        if b.len() < 20 {
            return Err(format!(
                "parent locator: {} bytes, fewer than its header",
                b.len()
            ));
        }
        let count = usize::from(u16_at(b, 18));
        if 20 + 12 * count > b.len() {
            return Err(format!(
                "parent locator: {count} key/value entries do not fit in its {} bytes",
                b.len()
            ));
        }
        let text = |off: u32, len: u16, what: &str, i: usize| -> Result<String, String> {
            let (off, len) = (off as usize, usize::from(len));
            let s = b
                .get(off..off.saturating_add(len))
                .filter(|_| len % 2 == 0 && len > 0)
                .ok_or_else(|| {
                    format!("parent locator entry {i}: {what} ({len} bytes at {off}) lies outside the item or is empty or odd")
                })?;
            let units: Vec<u16> = s
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units)
                .map_err(|_| format!("parent locator entry {i}: {what} is not valid UTF-16"))
        };
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = 20 + 12 * i;
            let k = text(u32_at(b, at), u16_at(b, at + 8), "key", i)?;
            let v = text(u32_at(b, at + 4), u16_at(b, at + 10), "value", i)?;
            entries.push((k, v));
        }
        Ok(ParentLocator {
            kind: guid_at(b, 0),
            entries,
        })
    }
}

/// The metadata items of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Bytes per payload block.
    pub block_size: u32,
    /// Blocks stay allocated (a fixed disk).
    pub leave_blocks_allocated: bool,
    /// A differencing disk.
    pub has_parent: bool,
    /// The size a guest sees.
    pub virtual_size: u64,
    /// The disk's SCSI id.
    pub page83: Guid,
    /// Logical sector size: 512 or 4096.
    pub logical_sector: u32,
    /// Physical sector size: 512 or 4096.
    pub physical_sector: u32,
    /// Where the parent is, for a differencing disk.
    pub parent: Option<ParentLocator>,
}

/// The table entries of a metadata region.
pub fn decode_table(region: &[u8]) -> Result<Vec<Entry>, String> {
    if region.get(..8) != Some(&SIGNATURE[..]) {
        return Err("metadata table: bad signature (expected \"metadata\")".into());
    }
    let count = u16_at(region, 10);
    if count > MAX_ENTRIES {
        return Err(format!(
            "metadata table: entry count {count} exceeds {MAX_ENTRIES}"
        ));
    }
    let mut out: Vec<Entry> = Vec::new();
    for i in 0..usize::from(count) {
        let at = 32 + 32 * i;
        let flags = u32_at(region, at + 24);
        let e = Entry {
            item: guid_at(region, at),
            offset: u32_at(region, at + 16),
            length: u32_at(region, at + 20),
            is_user: flags & 1 != 0,
            is_virtual_disk: flags & 2 != 0,
            is_required: flags & 4 != 0,
        };
        if e.length > 0 {
            let (start, end) = (
                u64::from(e.offset),
                u64::from(e.offset) + u64::from(e.length),
            );
            if start < TABLE_SIZE as u64 || end > region.len() as u64 {
                return Err(format!(
                    "metadata table entry {i} ({}): {} bytes at {} lie outside the region's items area (64 KiB to {})",
                    item_name(&e.item),
                    e.length,
                    e.offset,
                    region.len()
                ));
            }
            if let Some(o) = out.iter().find(|o| {
                o.length > 0
                    && start < u64::from(o.offset) + u64::from(o.length)
                    && u64::from(o.offset) < end
            }) {
                return Err(format!(
                    "metadata table entry {i} ({}) overlaps the {}",
                    item_name(&e.item),
                    item_name(&o.item)
                ));
            }
        }
        if out
            .iter()
            .any(|o| o.item == e.item && o.is_user == e.is_user)
        {
            return Err(format!(
                "metadata table entry {i} ({}) appears twice",
                item_name(&e.item)
            ));
        }
        out.push(e);
    }
    Ok(out)
}

/// An item's name for messages.
pub fn item_name(g: &Guid) -> String {
    match *g {
        FILE_PARAMETERS => "file parameters".into(),
        VIRTUAL_DISK_SIZE => "virtual disk size".into(),
        PAGE_83_DATA => "page 83 data".into(),
        LOGICAL_SECTOR_SIZE => "logical sector size".into(),
        PHYSICAL_SECTOR_SIZE => "physical sector size".into(),
        PARENT_LOCATOR => "parent locator".into(),
        _ => format!("item {}", guid_text(g)),
    }
}

/// Decodes and validates the items of a metadata region.
pub fn decode(region: &[u8]) -> Result<Metadata, String> {
    let entries = decode_table(region)?;
    let item = |g: &Guid, len: usize| -> Result<Option<&[u8]>, String> {
        let Some(e) = entries.iter().find(|e| e.item == *g && !e.is_user) else {
            return Ok(None);
        };
        if (e.length as usize) < len {
            return Err(format!(
                "{}: {} bytes, fewer than its {len}",
                item_name(g),
                e.length
            ));
        }
        let start = e.offset as usize;
        Ok(region.get(start..start + e.length as usize))
    };
    for e in &entries {
        let known = [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            PAGE_83_DATA,
            LOGICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR_SIZE,
            PARENT_LOCATOR,
        ];
        if e.is_required && (e.is_user || !known.contains(&e.item)) {
            return Err(format!(
                "unknown required metadata item {}",
                guid_text(&e.item)
            ));
        }
    }
    let need = |g: &Guid, len: usize| -> Result<&[u8], String> {
        item(g, len)?.ok_or_else(|| format!("no {} item", item_name(g)))
    };
    let fp = need(&FILE_PARAMETERS, 8)?;
    let block_size = u32_at(fp, 0);
    let flags = u32_at(fp, 4);
    let virtual_size = u64_at(need(&VIRTUAL_DISK_SIZE, 8)?, 0);
    let page83 = item(&PAGE_83_DATA, 16)?
        .map(|b| guid_at(b, 0))
        .unwrap_or_default();
    let logical_sector = u32_at(need(&LOGICAL_SECTOR_SIZE, 4)?, 0);
    let physical_sector = u32_at(need(&PHYSICAL_SECTOR_SIZE, 4)?, 0);
    let has_parent = flags & 2 != 0;
    let parent = match item(&PARENT_LOCATOR, 20)? {
        Some(b) if has_parent => Some(ParentLocator::decode(b)?),
        _ => None,
    };
    let m = Metadata {
        block_size,
        leave_blocks_allocated: flags & 1 != 0,
        has_parent,
        virtual_size,
        page83,
        logical_sector,
        physical_sector,
        parent,
    };
    m.validate()?;
    Ok(m)
}

impl Metadata {
    /// What is wrong with the values, if anything.
    pub fn validate(&self) -> Result<(), String> {
        let bs = u64::from(self.block_size);
        if !bs.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&bs) {
            return Err(format!(
                "file parameters: block size {bs} is not a power of two from 1 MiB to 256 MiB"
            ));
        }
        for (name, v) in [
            ("logical sector size", self.logical_sector),
            ("physical sector size", self.physical_sector),
        ] {
            if v != 512 && v != 4096 {
                return Err(format!("{name}: {v} is neither 512 nor 4096"));
            }
        }
        if self.virtual_size == 0
            || self.virtual_size > MAX_SIZE
            || self.virtual_size % u64::from(self.logical_sector) != 0
        {
            return Err(format!(
                "virtual disk size: {} is not a non-zero multiple of the logical sector size up to 64 TiB",
                self.virtual_size
            ));
        }
        if self.has_parent && self.parent.is_none() {
            return Err("file parameters: HasParent is set but there is no parent locator".into());
        }
        Ok(())
    }

    /// Encodes a metadata region of `len` bytes holding these items.
    pub fn encode(&self, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        put(&mut b, 0, SIGNATURE);
        let mut fp = [0u8; 8];
        put(&mut fp, 0, &self.block_size.to_le_bytes());
        let flags = u32::from(self.leave_blocks_allocated) | (u32::from(self.has_parent) << 1);
        put(&mut fp, 4, &flags.to_le_bytes());
        let mut items: Vec<(Guid, Vec<u8>, bool)> = vec![
            (FILE_PARAMETERS, fp.to_vec(), false),
            (
                VIRTUAL_DISK_SIZE,
                self.virtual_size.to_le_bytes().to_vec(),
                true,
            ),
            (PAGE_83_DATA, self.page83.to_vec(), true),
            (
                LOGICAL_SECTOR_SIZE,
                self.logical_sector.to_le_bytes().to_vec(),
                true,
            ),
            (
                PHYSICAL_SECTOR_SIZE,
                self.physical_sector.to_le_bytes().to_vec(),
                true,
            ),
        ];
        if let Some(p) = &self.parent {
            items.push((PARENT_LOCATOR, p.encode(), false));
        }
        put(&mut b, 10, &(items.len() as u16).to_le_bytes());
        let mut at = TABLE_SIZE;
        for (i, (g, data, vd)) in items.iter().enumerate() {
            let e = 32 + 32 * i;
            put(&mut b, e, g);
            put(&mut b, e + 16, &(at as u32).to_le_bytes());
            put(&mut b, e + 20, &(data.len() as u32).to_le_bytes());
            let flags = (u32::from(*vd) << 1) | 4;
            put(&mut b, e + 24, &flags.to_le_bytes());
            put(&mut b, at, data);
            // Items on 8-byte boundaries.
            at += data.len().div_ceil(8) * 8;
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trip() {
        let m = Metadata {
            block_size: 32 << 20,
            leave_blocks_allocated: false,
            has_parent: true,
            virtual_size: 10 << 20,
            page83: [3; 16],
            logical_sector: 512,
            physical_sector: 4096,
            parent: Some(ParentLocator {
                kind: VHDX_PARENT_TYPE,
                entries: vec![
                    ("parent_linkage".into(), "{0-0}".into()),
                    ("relative_path".into(), ".\\p.vhdx".into()),
                ],
            }),
        };
        assert_eq!(decode(&m.encode(1 << 20)), Ok(m));
    }
}
