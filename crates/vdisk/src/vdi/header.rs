//! The VDI pre-header and header (version 1.1), as laid out by VirtualBox: a
//! 64-byte text line, the signature and version, then the header proper, all
//! little-endian, in the first 512 bytes of the file.

/// The signature at offset 0x40.
pub const SIGNATURE: u32 = 0xbeda_107f;
/// Version 1.1 (major in the high half).
pub const VERSION_1_1: u32 = 0x0001_0001;
/// Bytes the pre-header and header occupy at the start of the file.
pub const HEADER_AREA: usize = 512;
/// Where the header proper starts (after the text and the signature/version).
const HEADER_START: usize = 0x48;
/// The size of a version 1.1 header without the legacy geometry.
pub const HEADER_1_1_SIZE: u32 = 0x180;
/// The largest header that fits before the block map of a 512-byte header area.
pub const MAX_HEADER_SIZE: u32 = (HEADER_AREA - HEADER_START) as u32;
/// The text line VirtualBox writes at the start of its images.
pub const TEXT: &[u8] = b"<<< Oracle VM VirtualBox Disk Image >>>\n";
/// Block-map entry of a block the image holds nothing for.
pub const UNALLOCATED: u32 = 0xffff_ffff;
/// Block-map entry of a block that reads as zeros without space in the file.
pub const ZERO_BLOCK: u32 = 0xffff_fffe;
/// The sector size a VDI header must name.
pub const SECTOR_SIZE: u32 = 512;

/// How the image stores its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageType {
    /// Blocks are allocated as they are written ("normal" in VirtualBox).
    Dynamic,
    /// Every block has its place from the start ("fixed").
    Static,
    /// Undo image (unsupported).
    Undo,
    /// Differencing image (a VirtualBox snapshot): blocks it does not hold
    /// read from the image whose UUID it links to.
    Diff,
}

impl ImageType {
    /// The value of the header's image-type field.
    pub fn code(self) -> u32 {
        match self {
            ImageType::Dynamic => 1,
            ImageType::Static => 2,
            ImageType::Undo => 3,
            ImageType::Diff => 4,
        }
    }

    /// The type named by an image-type field.
    pub fn from_code(code: u32) -> Option<ImageType> {
        Some(match code {
            1 => ImageType::Dynamic,
            2 => ImageType::Static,
            3 => ImageType::Undo,
            4 => ImageType::Diff,
            _ => return None,
        })
    }

    /// The name `img info` shows.
    pub fn name(self) -> &'static str {
        match self {
            ImageType::Dynamic => "dynamic",
            ImageType::Static => "static",
            ImageType::Undo => "undo",
            ImageType::Diff => "differencing",
        }
    }
}

/// The fields of a VDI header that vmhub reads or writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The text line at offset 0 (up to 64 bytes).
    pub text: [u8; 64],
    /// Must be [`SIGNATURE`].
    pub signature: u32,
    /// Must be [`VERSION_1_1`].
    pub version: u32,
    /// Bytes of the header after the signature and version.
    pub header_size: u32,
    /// Image type code (see [`ImageType`]).
    pub image_type: u32,
    /// Image flags (none are defined for the supported types).
    pub flags: u32,
    /// Free-text comment.
    pub comment: [u8; 256],
    /// File offset of the block map.
    pub offset_blocks: u32,
    /// File offset of the first block's data.
    pub offset_data: u32,
    /// Legacy geometry: cylinders, heads, sectors.
    pub chs: [u32; 3],
    /// Bytes per sector; must be 512.
    pub sector_size: u32,
    /// The virtual size in bytes.
    pub disk_size: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// Bytes of extra data before each block (must be 0).
    pub block_extra: u32,
    /// Blocks in the disk (entries of the block map).
    pub blocks: u32,
    /// Blocks that have space in the file.
    pub blocks_allocated: u32,
    /// The image's UUID.
    pub uuid_image: [u8; 16],
    /// UUID of the image's last modification.
    pub uuid_last_snap: [u8; 16],
    /// UUID of the image this one links to (differencing images).
    pub uuid_link: [u8; 16],
    /// UUID of the parent's modification (differencing images).
    pub uuid_parent: [u8; 16],
}

fn u32_at(b: &[u8; HEADER_AREA], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8; HEADER_AREA], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn uuid_at(b: &[u8; HEADER_AREA], at: usize) -> [u8; 16] {
    let mut v = [0u8; 16];
    v.copy_from_slice(&b[at..at + 16]);
    v
}

impl Header {
    /// The header of a new image of `disk_size` bytes (whole sectors) in
    /// `blocks` blocks of `block_size` bytes, `allocated` of them with space
    /// in the file: version 1.1, the block map right after the header area,
    /// the data from `offset_data`, image ids `ids`.
    pub fn new_image(
        kind: ImageType,
        disk_size: u64,
        block_size: u32,
        blocks: u32,
        allocated: u32,
        offset_data: u32,
        ids: [[u8; 16]; 2],
    ) -> Header {
        let mut text = [0u8; 64];
        text[..TEXT.len()].copy_from_slice(TEXT);
        Header {
            text,
            signature: SIGNATURE,
            version: VERSION_1_1,
            header_size: HEADER_1_1_SIZE,
            image_type: kind.code(),
            flags: 0,
            comment: [0u8; 256],
            offset_blocks: HEADER_AREA as u32,
            offset_data,
            chs: [0; 3],
            sector_size: SECTOR_SIZE,
            disk_size,
            block_size,
            block_extra: 0,
            blocks,
            blocks_allocated: allocated,
            uuid_image: ids[0],
            uuid_last_snap: ids[1],
            uuid_link: [0; 16],
            uuid_parent: [0; 16],
        }
    }

    /// Reads the header from the first 512 bytes of a file. Every field is
    /// taken as it is; [`Header::problems`] says what is wrong with them.
    pub fn decode(b: &[u8; HEADER_AREA]) -> Header {
        let mut text = [0u8; 64];
        text.copy_from_slice(&b[..64]);
        let mut comment = [0u8; 256];
        comment.copy_from_slice(&b[0x54..0x154]);
        Header {
            text,
            signature: u32_at(b, 0x40),
            version: u32_at(b, 0x44),
            header_size: u32_at(b, 0x48),
            image_type: u32_at(b, 0x4c),
            flags: u32_at(b, 0x50),
            comment,
            offset_blocks: u32_at(b, 0x154),
            offset_data: u32_at(b, 0x158),
            chs: [u32_at(b, 0x15c), u32_at(b, 0x160), u32_at(b, 0x164)],
            sector_size: u32_at(b, 0x168),
            disk_size: u64_at(b, 0x170),
            block_size: u32_at(b, 0x178),
            block_extra: u32_at(b, 0x17c),
            blocks: u32_at(b, 0x180),
            blocks_allocated: u32_at(b, 0x184),
            uuid_image: uuid_at(b, 0x188),
            uuid_last_snap: uuid_at(b, 0x198),
            uuid_link: uuid_at(b, 0x1a8),
            uuid_parent: uuid_at(b, 0x1b8),
        }
    }

    /// The 512 bytes of the header area. Bytes past the fields (the legacy
    /// geometry of longer headers) come from `old`, so that rewriting a header
    /// keeps what vmhub does not interpret.
    pub fn encode(&self, old: &[u8; HEADER_AREA]) -> [u8; HEADER_AREA] {
        let mut b = *old;
        b[..64].copy_from_slice(&self.text);
        let put32 = |b: &mut [u8; HEADER_AREA], at: usize, v: u32| {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes())
        };
        put32(&mut b, 0x40, self.signature);
        put32(&mut b, 0x44, self.version);
        put32(&mut b, 0x48, self.header_size);
        put32(&mut b, 0x4c, self.image_type);
        put32(&mut b, 0x50, self.flags);
        b[0x54..0x154].copy_from_slice(&self.comment);
        put32(&mut b, 0x154, self.offset_blocks);
        put32(&mut b, 0x158, self.offset_data);
        put32(&mut b, 0x15c, self.chs[0]);
        put32(&mut b, 0x160, self.chs[1]);
        put32(&mut b, 0x164, self.chs[2]);
        put32(&mut b, 0x168, self.sector_size);
        b[0x170..0x178].copy_from_slice(&self.disk_size.to_le_bytes());
        put32(&mut b, 0x178, self.block_size);
        put32(&mut b, 0x17c, self.block_extra);
        put32(&mut b, 0x180, self.blocks);
        put32(&mut b, 0x184, self.blocks_allocated);
        b[0x188..0x198].copy_from_slice(&self.uuid_image);
        b[0x198..0x1a8].copy_from_slice(&self.uuid_last_snap);
        b[0x1a8..0x1b8].copy_from_slice(&self.uuid_link);
        b[0x1b8..0x1c8].copy_from_slice(&self.uuid_parent);
        b
    }

    /// The block map's length in bytes.
    pub fn block_map_len(&self) -> u64 {
        u64::from(self.blocks) * 4
    }

    /// What is wrong with the header for a file of `file_len` bytes, as
    /// (field, message, is it merely unsupported rather than malformed).
    pub fn problems(&self, file_len: u64) -> Vec<(&'static str, String, bool)> {
        let mut out = Vec::new();
        let mut bad = |field, msg: String| out.push((field, msg, false));
        if self.signature != SIGNATURE {
            bad(
                "signature",
                format!("is {:#010x}, not {SIGNATURE:#010x}", self.signature),
            );
            return out;
        }
        if self.version >> 16 != 1 {
            out.push((
                "version",
                format!(
                    "{}.{} is not supported (only 1.1)",
                    self.version >> 16,
                    self.version & 0xffff
                ),
                true,
            ));
            return out;
        }
        if self.version != VERSION_1_1 {
            out.push((
                "version",
                format!("1.{} is not supported (only 1.1)", self.version & 0xffff),
                true,
            ));
            return out;
        }
        let mut bad = |field, msg: String| out.push((field, msg, false));
        if self.header_size < HEADER_1_1_SIZE || self.header_size > MAX_HEADER_SIZE {
            bad(
                "header size",
                format!(
                    "is {} bytes; a version 1.1 header has {HEADER_1_1_SIZE} to {MAX_HEADER_SIZE}",
                    self.header_size
                ),
            );
        }
        if self.sector_size != SECTOR_SIZE {
            bad(
                "sector size",
                format!("is {}, not {SECTOR_SIZE}", self.sector_size),
            );
        }
        if self.block_size == 0
            || self.block_size % SECTOR_SIZE != 0
            || self.block_size > super::MAX_BLOCK_SIZE
        {
            bad(
                "block size",
                format!(
                    "is {} bytes; it must be a multiple of 512 up to {}",
                    self.block_size,
                    super::MAX_BLOCK_SIZE
                ),
            );
        }
        if self.blocks_allocated > self.blocks {
            bad(
                "allocated blocks",
                format!(
                    "{} allocated blocks are more than the disk's {} blocks",
                    self.blocks_allocated, self.blocks
                ),
            );
        }
        if self.disk_size > u64::from(self.blocks) * u64::from(self.block_size) {
            bad(
                "disk size",
                format!(
                    "{} bytes do not fit in {} blocks of {} bytes",
                    self.disk_size, self.blocks, self.block_size
                ),
            );
        }
        if self.blocks > super::MAX_BLOCKS {
            bad(
                "blocks",
                format!(
                    "{} blocks are more than the {} supported",
                    self.blocks,
                    super::MAX_BLOCKS
                ),
            );
        }
        let map_start = u64::from(self.offset_blocks);
        let map_end = map_start + self.block_map_len();
        if map_start < HEADER_START as u64 + u64::from(self.header_size.min(MAX_HEADER_SIZE)) {
            bad(
                "offset of blocks",
                format!("block map at {map_start} overlaps the header"),
            );
        }
        if map_end > file_len {
            bad(
                "offset of blocks",
                format!(
                    "block map at {map_start} ({} bytes) extends past the end of the file ({file_len} bytes)",
                    self.block_map_len()
                ),
            );
        }
        if u64::from(self.offset_data) < map_end {
            bad(
                "offset of data",
                format!(
                    "data at {} overlaps the block map ({map_start}..{map_end})",
                    self.offset_data
                ),
            );
        }
        match ImageType::from_code(self.image_type) {
            None => out.push((
                "image type",
                format!("{} is not a VDI image type", self.image_type),
                false,
            )),
            Some(t @ ImageType::Undo) => out.push((
                "image type",
                format!("{} images are not supported", t.name()),
                true,
            )),
            Some(_) => {}
        }
        if self.block_extra != 0 {
            out.push((
                "block extra",
                format!(
                    "{} bytes of extra data per block are not supported",
                    self.block_extra
                ),
                true,
            ));
        }
        out
    }
}

/// A UUID as text, in the byte order VirtualBox shows (the first three fields
/// little-endian).
pub fn uuid_text(u: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u[3], u[2], u[1], u[0], u[5], u[4], u[7], u[6], u[8], u[9], u[10], u[11], u[12], u[13],
        u[14], u[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = [0u8; HEADER_AREA];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8;
        }
        let h = Header::decode(&b);
        assert_eq!(h.encode(&b), b);
        assert_eq!(h.signature, u32::from_le_bytes([0x40, 0x41, 0x42, 0x43]));
    }
}
