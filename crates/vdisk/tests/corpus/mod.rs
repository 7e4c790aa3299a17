//! A corpus of malformed VHD images, each made from a small valid one by breaking
//! one thing (checksums are recomputed wherever the checksum is not the thing
//! broken), with what `check` and `open` must say about it; and a valid
//! differencing disk over a valid parent, with the edits that break its links,
//! from which the chain tests make their broken chains.

// Each test binary uses only some of these.
#![allow(dead_code)]

pub mod exercise;

use std::path::Path;
use vdisk::vhd::bat::Bat;
use vdisk::vhd::footer::{Footer, FOOTER_SIZE};
use vdisk::vhd::geometry::Geometry;
use vdisk::vhd::header::{DynamicHeader, HEADER_SIZE};
use vdisk::vhd::locator::{encode_parent_name, encode_utf16le, W2KU, W2RU};
use vdisk::{CreateOptions, ImageType, OpenOptions};

/// Virtual size of the fixed base image.
pub const FIXED_SIZE: u64 = 16 << 10;
/// Virtual size of the dynamic base image.
pub const DYNAMIC_SIZE: u64 = 32 << 10;
/// Block size of the dynamic base image: small, so that the image has several
/// allocated blocks and still fits in a few KiB.
pub const BLOCK_SIZE: u64 = 4096;

/// A valid image and the disk content it holds.
#[derive(Clone)]
pub struct Base {
    /// The image file's bytes.
    pub image: Image,
    /// What the disk reads as.
    pub content: Vec<u8>,
}

/// Bytes that differ from one offset to the next, so that a misplaced read shows.
fn pattern(offset: u64, len: u64) -> Vec<u8> {
    exercise::pattern(offset, len, 0x5a)
}

fn make_base(kind: ImageType, size: u64, writes: &[(u64, u64)]) -> Base {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.vhd");
    let opts = CreateOptions {
        image_type: kind,
        block_size: Some(BLOCK_SIZE),
        ..CreateOptions::default()
    };
    vdisk::create(&path, size, &opts, false).unwrap();
    let mut content = vec![0u8; size as usize];
    let mut disk = vdisk::open(&path, OpenOptions { writable: true }).unwrap();
    for &(offset, len) in writes {
        let data = pattern(offset, len);
        disk.write_at(&data, offset).unwrap();
        content[offset as usize..(offset + len) as usize].copy_from_slice(&data);
    }
    disk.flush().unwrap();
    drop(disk);
    Base {
        image: Image(std::fs::read(&path).unwrap()),
        content,
    }
}

/// A fixed disk with data at its start and in its middle.
pub fn fixed_base() -> Base {
    make_base(ImageType::Fixed, FIXED_SIZE, &[(0, 4096), (10_000, 2_000)])
}

/// A dynamic disk with blocks 0, 2, 3 and 5 allocated (a write that straddles
/// blocks 2 and 3 among them), in that order in the file: the BAT holds sectors
/// 4, 13, 22 and 31.
pub fn dynamic_base() -> Base {
    make_base(
        ImageType::Dynamic,
        DYNAMIC_SIZE,
        &[
            (0, 3000),
            (2 * BLOCK_SIZE + 100, 4000),
            (5 * BLOCK_SIZE, 4096),
        ],
    )
}

/// An image file's bytes, with edits that keep every structure but the one
/// edited valid.
#[derive(Clone, Debug)]
pub struct Image(pub Vec<u8>);

impl Image {
    fn end(&self) -> usize {
        self.0.len() - FOOTER_SIZE
    }

    /// The footer at the end of the file.
    pub fn footer(&self) -> Footer {
        Footer::decode(&self.0[self.end()..]).unwrap()
    }

    fn header_at(&self) -> usize {
        self.footer().data_offset as usize
    }

    /// The dynamic header the footer points at.
    pub fn header(&self) -> DynamicHeader {
        let at = self.header_at();
        DynamicHeader::decode(&self.0[at..at + HEADER_SIZE]).unwrap()
    }

    /// The BAT the dynamic header points at.
    pub fn bat(&self) -> Bat {
        let h = self.header();
        let at = h.table_offset as usize;
        Bat::decode(&self.0[at..], h.max_table_entries).unwrap()
    }

    /// Overwrites bytes at `at`, leaving checksums as they are.
    pub fn poke(mut self, at: usize, bytes: &[u8]) -> Image {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
        self
    }

    /// Overwrites bytes at `at` inside the footer at the end, leaving its checksum.
    pub fn poke_end_footer(self, at: usize, bytes: &[u8]) -> Image {
        let base = self.end();
        self.poke(base + at, bytes)
    }

    /// Overwrites bytes at `at` inside the dynamic header, leaving its checksum.
    pub fn poke_header(self, at: usize, bytes: &[u8]) -> Image {
        let base = self.header_at();
        self.poke(base + at, bytes)
    }

    /// Edits the footer at the end and re-encodes it with a fresh checksum.
    pub fn edit_end_footer(self, edit: impl FnOnce(&mut Footer)) -> Image {
        let mut f = self.footer();
        edit(&mut f);
        let base = self.end();
        self.poke(base, &f.encode())
    }

    /// Edits the footer copy at offset 0 and re-encodes it with a fresh checksum.
    pub fn edit_footer_copy(self, edit: impl FnOnce(&mut Footer)) -> Image {
        let mut f = Footer::decode(&self.0[..FOOTER_SIZE]).unwrap();
        edit(&mut f);
        self.poke(0, &f.encode())
    }

    /// Edits the footer, and its copy at offset 0 when the disk is not fixed, the
    /// same way: readers fall back on an intact copy, so both must be broken for
    /// a broken field to be seen.
    pub fn edit_footers(self, edit: impl Fn(&mut Footer)) -> Image {
        let has_copy = self.footer().disk_type != 2;
        let img = self.edit_end_footer(&edit);
        if has_copy {
            img.edit_footer_copy(&edit)
        } else {
            img
        }
    }

    /// Edits the dynamic header and re-encodes it with a fresh checksum.
    pub fn edit_header(self, edit: impl FnOnce(&mut DynamicHeader)) -> Image {
        let mut h = self.header();
        edit(&mut h);
        let at = self.header_at();
        self.poke(at, &h.encode())
    }

    /// Points BAT entry `index` at `sector`.
    pub fn set_bat(self, index: usize, sector: u32) -> Image {
        let mut bat = self.bat();
        let table_at = self.header().table_offset as usize;
        bat.set(index, sector).unwrap();
        self.poke(table_at, &bat.encode())
    }

    /// Inserts `bytes` at `at`, moving everything after it.
    pub fn insert(mut self, at: usize, bytes: &[u8]) -> Image {
        self.0.splice(at..at, bytes.iter().copied());
        self
    }

    /// Removes `len` bytes at `at`.
    pub fn remove(mut self, at: usize, len: usize) -> Image {
        self.0.drain(at..at + len);
        self
    }

    /// The unique id in the footer.
    pub fn unique_id(&self) -> [u8; 16] {
        self.footer().unique_id
    }

    /// The index of the parent locator with platform code `code` (`W2ku`, `W2ru`).
    pub fn locator_index(&self, code: u32) -> usize {
        self.header()
            .locators
            .iter()
            .position(|l| l.platform_code == code)
            .unwrap()
    }

    /// Replaces the data of the parent locator with platform code `code` by
    /// `data`, inside the space the locator reserves, and sets its length.
    pub fn set_locator_data(self, code: u32, data: &[u8]) -> Image {
        let i = self.locator_index(code);
        let l = self.header().locators[i];
        let space = l.platform_data_space as usize;
        assert!(
            data.len() <= space,
            "{} bytes do not fit in {space}",
            data.len()
        );
        let at = l.platform_data_offset as usize;
        let mut bytes = data.to_vec();
        bytes.resize(space, 0);
        self.poke(at, &bytes)
            .edit_header(|h| h.locators[i].platform_data_length = data.len() as u32)
    }

    /// Points a child at the file `name` in the folder `dir`, with unique id
    /// `id`: the header's parent name and id, and the locators `.\name`
    /// (`W2ru`) and `dir/name` (`W2ku`), as a child made over that file has them.
    pub fn link(self, dir: &Path, name: &str, id: [u8; 16]) -> Image {
        let absolute = dir.join(name).display().to_string();
        self.set_locator_data(W2RU, &encode_utf16le(&format!(".\\{name}")))
            .set_locator_data(W2KU, &encode_utf16le(&absolute))
            .edit_header(|h| {
                h.parent_unicode_name = encode_parent_name(name).unwrap();
                h.parent_unique_id = id;
            })
    }
}

/// What `vdisk::check` must report.
#[derive(Debug)]
pub enum Check {
    /// Nothing wrong.
    Clean,
    /// A problem in `structure` whose message holds every one of the words.
    Problem(&'static str, &'static [&'static str]),
}

/// What `vdisk::open` must do.
#[derive(Debug)]
pub enum Open {
    /// Fail, with an error that names the file and holds every one of the words.
    Fails(&'static [&'static str]),
    /// Open, and read back exactly this content without an error.
    Reads(Vec<u8>),
    /// Either fail as [`Open::Fails`] says, or open; reads may then fail, with
    /// errors that name the file.
    Either(&'static [&'static str]),
}

/// One image of the corpus and what must be said about it.
#[derive(Debug)]
pub struct Case {
    /// A file name for it, without extension.
    pub name: &'static str,
    /// The image.
    pub image: Image,
    /// What `check` must report.
    pub check: Check,
    /// What `open` must do.
    pub open: Open,
}

/// Every case of the corpus.
pub fn cases() -> Vec<Case> {
    let fixed = fixed_base();
    let dynamic = dynamic_base();
    let f = || fixed.image.clone();
    let d = || dynamic.image.clone();
    let fixed_reads = || Open::Reads(fixed.content.clone());
    let dynamic_reads = || Open::Reads(dynamic.content.clone());
    let footer_len = FOOTER_SIZE;
    let data_end = fixed.image.0.len() - footer_len;
    // Layout of the dynamic base: footer copy, header at 512, BAT at 1536, blocks
    // from 3584 (sector 7) on, each bitmap just before a page of data.
    let table_at = 1536;
    let first_block_sector = 7;
    let mut cases = vec![
        // Valid images, so that every case below differs from a clean one by its
        // one defect.
        Case {
            name: "valid-fixed",
            image: f(),
            check: Check::Clean,
            open: fixed_reads(),
        },
        Case {
            name: "valid-dynamic",
            image: d(),
            check: Check::Clean,
            open: dynamic_reads(),
        },
        // Very old Virtual PC fixed disks end with a 511-byte footer.
        Case {
            name: "valid-legacy-511-byte-footer",
            image: f().remove(fixed.image.0.len() - 1, 1),
            check: Check::Clean,
            open: fixed_reads(),
        },
        // Footer.
        Case {
            name: "footer-cookie",
            image: d().poke_end_footer(0, b"notafoot"),
            check: Check::Problem("footer", &["end of the file", "cookie"]),
            open: dynamic_reads(),
        },
        Case {
            name: "footer-checksum-fixed",
            image: f().poke_end_footer(100, &[1]),
            check: Check::Problem("footer", &["checksum"]),
            open: Open::Fails(&["footer", "checksum"]),
        },
        Case {
            name: "footer-checksum-dynamic",
            image: d().poke_end_footer(100, &[1]),
            check: Check::Problem("footer", &["end of the file", "checksum"]),
            open: dynamic_reads(),
        },
        Case {
            name: "footer-version-fixed",
            image: f().edit_footers(|f| f.version = 0x0002_0000),
            check: Check::Problem("footer", &["version"]),
            open: Open::Fails(&["footer", "version"]),
        },
        Case {
            name: "footer-copy-differs",
            image: d().edit_footer_copy(|f| f.unique_id[0] ^= 1),
            check: Check::Problem("footer copy", &["differs"]),
            open: dynamic_reads(),
        },
        Case {
            name: "footer-copy-checksum",
            image: d().poke(100, &[1]),
            check: Check::Problem("footer copy", &["offset 0", "checksum"]),
            open: dynamic_reads(),
        },
        Case {
            name: "footer-copy-cookie",
            image: d().poke(0, b"notafoot"),
            check: Check::Problem("footer copy", &["offset 0", "cookie"]),
            open: dynamic_reads(),
        },
        Case {
            name: "disk-type-unknown-fixed",
            image: f().edit_footers(|f| f.disk_type = 7),
            check: Check::Problem("footer", &["disk type is 7"]),
            open: Open::Fails(&["disk type"]),
        },
        Case {
            name: "disk-type-unknown-dynamic",
            image: d().edit_footers(|f| f.disk_type = 7),
            check: Check::Problem("footer", &["disk type is 7"]),
            open: Open::Fails(&["disk type"]),
        },
        Case {
            name: "data-offset-past-eof",
            image: d().edit_footers(|f| f.data_offset = 1 << 40),
            check: Check::Problem("footer", &["data offset 1099511627776"]),
            open: Open::Fails(&["data offset"]),
        },
        Case {
            name: "data-offset-zero",
            image: d().edit_footers(|f| f.data_offset = 0),
            check: Check::Problem("dynamic header", &["cookie"]),
            open: Open::Fails(&["dynamic header", "cookie"]),
        },
        // Dynamic header.
        Case {
            name: "header-cookie",
            image: d().edit_header(|h| h.cookie = *b"cxsparsX"),
            check: Check::Problem("dynamic header", &["cookie"]),
            open: Open::Fails(&["dynamic header", "cookie"]),
        },
        Case {
            // A reserved byte past the parent locators: only the checksum is wrong.
            name: "header-checksum",
            image: d().poke_header(1000, &[1]),
            check: Check::Problem("dynamic header", &["checksum"]),
            open: Open::Fails(&["dynamic header", "checksum"]),
        },
        Case {
            name: "header-version",
            image: d().edit_header(|h| h.header_version = 0x0002_0000),
            check: Check::Problem("dynamic header", &["version"]),
            open: Open::Fails(&["dynamic header", "version"]),
        },
        Case {
            name: "block-size-not-power-of-two",
            image: d().edit_header(|h| h.block_size = 3000),
            check: Check::Problem("dynamic header", &["block size 3000", "power of two"]),
            open: Open::Fails(&["dynamic header", "block size 3000"]),
        },
        Case {
            name: "block-size-below-512",
            image: d().edit_header(|h| h.block_size = 256),
            check: Check::Problem("dynamic header", &["block size 256"]),
            open: Open::Fails(&["dynamic header", "block size 256"]),
        },
        Case {
            name: "block-size-zero",
            image: d().edit_header(|h| h.block_size = 0),
            check: Check::Problem("dynamic header", &["block size 0"]),
            open: Open::Fails(&["dynamic header", "block size 0"]),
        },
        Case {
            name: "bat-too-small",
            image: d().edit_header(|h| h.max_table_entries = 2),
            check: Check::Problem("dynamic header", &["max table entries is 2", "too few"]),
            open: Open::Fails(&["max table entries is 2"]),
        },
        Case {
            name: "table-offset-unaligned",
            image: d().edit_header(|h| h.table_offset = 1537),
            check: Check::Problem("dynamic header", &["table offset 1537"]),
            open: Open::Fails(&["table offset 1537"]),
        },
        Case {
            // The BAT is read from the footer copy, whose words point far past the end.
            name: "table-offset-zero",
            image: d().edit_header(|h| h.table_offset = 0),
            check: Check::Problem("BAT", &["offset 0 overlaps the footer copy"]),
            open: Open::Either(&["BAT"]),
        },
        Case {
            name: "parent-id-on-dynamic",
            image: d().edit_header(|h| h.parent_unique_id = [1; 16]),
            check: Check::Problem("dynamic header", &["parent"]),
            open: Open::Either(&["parent"]),
        },
        Case {
            name: "parent-locator-on-dynamic",
            image: d().edit_header(|h| {
                h.locators[0].platform_code = u32::from_be_bytes(*b"W2ru");
                h.locators[0].platform_data_space = 512;
                h.locators[0].platform_data_length = 24;
                h.locators[0].platform_data_offset = 1 << 40;
            }),
            check: Check::Problem("dynamic header", &["parent"]),
            open: Open::Either(&["parent"]),
        },
        // BAT.
        Case {
            name: "bat-entry-past-eof",
            image: d().set_bat(1, 0x10_0000),
            check: Check::Problem("BAT", &["entry 1", "past the end"]),
            open: Open::Either(&["BAT"]),
        },
        Case {
            name: "bat-entry-on-footer-copy",
            image: d().set_bat(1, 0),
            check: Check::Problem("BAT", &["entry 1", "footer copy"]),
            open: Open::Either(&["BAT"]),
        },
        Case {
            name: "bat-entry-on-header",
            image: d().set_bat(1, 1),
            check: Check::Problem("BAT", &["entry 1", "dynamic header"]),
            open: Open::Either(&["BAT"]),
        },
        Case {
            name: "bat-entry-on-bat",
            image: d().set_bat(1, (table_at / 512) as u32),
            check: Check::Problem("BAT", &["entry 1", "overlaps the BAT"]),
            open: Open::Either(&["BAT"]),
        },
        Case {
            name: "bat-entries-overlap",
            image: d().set_bat(1, first_block_sector + 1),
            check: Check::Problem("BAT", &["entries 0 and 1", "overlap"]),
            open: Open::Either(&["BAT"]),
        },
        Case {
            name: "bat-entries-same-block",
            image: d().set_bat(1, first_block_sector),
            check: Check::Problem("BAT", &["overlap"]),
            open: Open::Either(&["BAT"]),
        },
        Case {
            // A disk shrunk to two blocks that still has blocks 2, 3 and 5.
            name: "bat-entry-past-disk-end",
            image: d().edit_footers(|f| f.current_size = 2 * BLOCK_SIZE),
            check: Check::Problem("BAT", &["entry 2", "past the disk's last block"]),
            open: Open::Either(&["BAT"]),
        },
        // File size.
        Case {
            name: "fixed-truncated",
            image: f().remove(data_end - 4096, 4096),
            check: Check::Problem("file size", &["fixed disk", "needs"]),
            open: Open::Fails(&["truncated"]),
        },
        Case {
            name: "fixed-bytes-before-footer",
            image: f().insert(data_end, &[0xab; 4096]),
            check: Check::Problem("file size", &["belong to nothing"]),
            open: fixed_reads(),
        },
        Case {
            name: "dynamic-size-not-sector-multiple",
            image: d().insert(dynamic.image.0.len() - footer_len, &[0; 100]),
            check: Check::Problem("file size", &["not a whole number of sectors"]),
            open: Open::Either(&["file"]),
        },
        Case {
            name: "file-too-small",
            image: Image(b"conectix and nothing else".to_vec()),
            check: Check::Problem("file", &["too small"]),
            open: Open::Fails(&["too small"]),
        },
        // Hostile values: each would ask a careless reader for a huge allocation,
        // a huge loop or an overflowing sum.
        Case {
            name: "hostile-max-table-entries-u32-max",
            image: d().edit_header(|h| h.max_table_entries = u32::MAX),
            check: Check::Problem("dynamic header", &["max table entries is 4294967295"]),
            open: Open::Fails(&["max table entries is 4294967295"]),
        },
        Case {
            name: "hostile-max-table-entries-largest-supported",
            image: d().edit_header(|h| h.max_table_entries = 1 << 24),
            check: Check::Problem("BAT", &["past the end of the file"]),
            open: Open::Fails(&["BAT", "past the end of the file"]),
        },
        Case {
            name: "hostile-current-size-u64-max-dynamic",
            image: d().edit_footers(|f| {
                f.current_size = u64::MAX;
                f.geometry = Geometry::MAX;
            }),
            check: Check::Problem("footer", &["disk size", "exceeds"]),
            open: Open::Fails(&["footer", "disk size"]),
        },
        Case {
            name: "hostile-current-size-u64-max-fixed",
            image: f().edit_footers(|f| {
                f.current_size = u64::MAX;
                f.geometry = Geometry::MAX;
            }),
            check: Check::Problem("footer", &["disk size", "exceeds"]),
            open: Open::Fails(&["footer", "disk size"]),
        },
        Case {
            // Virtual PC's creator makes the CHS product the size: about 127 GiB.
            name: "hostile-chs-size-beyond-bat",
            image: d().edit_footers(|f| {
                f.creator_app = *b"vpc ";
                f.geometry = Geometry {
                    cylinders: 65535,
                    heads: 16,
                    sectors: 254,
                };
            }),
            check: Check::Problem("dynamic header", &["max table entries", "too few"]),
            open: Open::Fails(&["max table entries"]),
        },
        Case {
            name: "hostile-block-size-2-gib",
            image: d().edit_header(|h| h.block_size = 0x8000_0000),
            check: Check::Problem("dynamic header", &["block size 2147483648"]),
            open: Open::Fails(&["dynamic header", "block size 2147483648"]),
        },
        Case {
            name: "hostile-table-offset-near-u64-max",
            image: d().edit_header(|h| h.table_offset = u64::MAX - 511),
            check: Check::Problem("BAT", &["offset 18446744073709551104"]),
            open: Open::Fails(&["BAT", "offset 18446744073709551104"]),
        },
        Case {
            name: "hostile-data-offset-u64-max-minus-10",
            image: d().edit_footers(|f| f.data_offset = u64::MAX - 10),
            check: Check::Problem("footer", &["data offset"]),
            open: Open::Fails(&["footer", "data offset"]),
        },
        Case {
            name: "hostile-data-offset-near-u64-max-aligned",
            image: d().edit_footers(|f| f.data_offset = u64::MAX - 511),
            check: Check::Problem("footer", &["data offset"]),
            open: Open::Fails(&["footer", "data offset"]),
        },
        Case {
            name: "hostile-bat-entry-largest-sector",
            image: d().set_bat(1, u32::MAX - 1),
            check: Check::Problem("BAT", &["entry 1", "past the end"]),
            open: Open::Either(&["BAT"]),
        },
        Case {
            name: "hostile-locator-offset-u64-max",
            image: d().edit_header(|h| {
                h.locators[0].platform_code = u32::from_be_bytes(*b"W2ku");
                h.locators[0].platform_data_space = u32::MAX;
                h.locators[0].platform_data_length = u32::MAX;
                h.locators[0].platform_data_offset = u64::MAX;
            }),
            check: Check::Problem("dynamic header", &["parent"]),
            open: Open::Either(&["parent"]),
        },
    ];
    cases.sort_by_key(|c| c.name);
    cases
}

// Differencing chains.

/// A differencing disk with data of its own over the parent that
/// [`exercise::write_parent`] writes, and what each reads as.
#[derive(Clone)]
pub struct ChainBase {
    /// The parent's bytes; its file is [`exercise::PARENT_FILE`].
    pub parent: Image,
    /// What the parent reads as.
    pub parent_content: Vec<u8>,
    /// The child's bytes; it finds the parent beside it by its relative locator
    /// and its parent name.
    pub child: Image,
    /// What the child reads as.
    pub content: Vec<u8>,
}

/// A child over the fixed parent, with sectors of its own inside blocks the
/// parent holds and in a block it does not, and zeros that hide parent data.
pub fn chain_base() -> ChainBase {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join(exercise::PARENT_FILE);
    let parent_content = exercise::write_parent(&parent).unwrap();
    let child = dir.path().join(exercise::CHILD_FILE);
    vdisk::create_child(&child, &parent, BLOCK_SIZE, false).unwrap();
    let mut content = parent_content.clone();
    let mut disk = vdisk::open(&child, OpenOptions { writable: true }).unwrap();
    for (offset, len, seed) in [
        (100, 50, 0x11),                    // inside one sector, over parent data
        (BLOCK_SIZE - 700, 1500, 0x22),     // across a block boundary, unaligned
        (4 * BLOCK_SIZE, BLOCK_SIZE, 0x33), // a block the parent does not hold
        (5 * BLOCK_SIZE + 1024, 512, 0),    // zeros over parent data
    ] {
        let data = if seed == 0 {
            vec![0; len as usize]
        } else {
            exercise::pattern(offset, len, seed)
        };
        disk.write_at(&data, offset).unwrap();
        content[offset as usize..(offset + len) as usize].copy_from_slice(&data);
    }
    disk.flush().unwrap();
    drop(disk);
    ChainBase {
        parent: Image(std::fs::read(&parent).unwrap()),
        parent_content,
        child: Image(std::fs::read(&child).unwrap()),
        content,
    }
}
