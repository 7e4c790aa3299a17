//! VMware virtual disks (VMDK, Virtual Disk Format 1.1): monolithicSparse,
//! streamOptimized, monolithicFlat and the split (twoGbMaxExtent*) kinds.
//!
//! A disk is a text descriptor (embedded in a sparse extent, or a file of its
//! own) that lists extents: hosted sparse extents ([`sparse`]), flat files, and
//! zero extents. [`header`] and [`descriptor`] parse the structures; [`stream`]
//! writes new stream-optimized images.
//!
//! Extent files named by a descriptor are opened only when they are regular
//! files named by a relative path without `..` (so inside the descriptor's
//! folder or below it).

pub mod compress;
pub mod descriptor;
pub mod header;
pub mod sparse;
pub mod stream;

use crate::format::CreateOptions;
use crate::io::{file_len, host_allocated, prefetch, read_exact_at};
use crate::ops::check::CheckReport;
use crate::{
    check_range, push_extent, push_file_extents, Disk, Error, Extent, ExtentKind, ImageInfo, Result,
};
use descriptor::{Descriptor, ExtentType};
use header::SECTOR;
use serde::Serialize;
use sparse::{Grain, SparseExtent};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// The largest grain accepted, in sectors (1 MiB).
pub const MAX_GRAIN_SECTORS: u64 = 2048;
/// The most entries per grain table accepted.
pub const MAX_GTES_PER_GT: u32 = 1 << 16;
/// The largest capacity accepted, in sectors (64 TiB).
pub const MAX_CAPACITY_SECTORS: u64 = 1 << 37;
/// The most extents a descriptor may list.
pub const MAX_EXTENTS: usize = 4096;
/// The largest descriptor read, in bytes.
pub const MAX_DESCRIPTOR: u64 = 1 << 20;
/// Problems `check` lists per kind at most.
const MAX_LISTED: usize = 20;

/// One extent as `img info` shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VmdkExtentInfo {
    /// RW, RDONLY or NOACCESS.
    pub access: String,
    /// Sectors.
    pub sectors: u64,
    /// SPARSE, FLAT or ZERO.
    #[serde(rename = "type")]
    pub kind: String,
    /// The file, as the descriptor names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Grain size in bytes (sparse extents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grain_size: Option<u64>,
    /// Whether grains are compressed (sparse extents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed: Option<bool>,
}

/// What `img info` shows about a VMDK image beyond what every format shows.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VmdkInfo {
    /// The descriptor's createType ("monolithicSparse", "streamOptimized", ...).
    pub create_type: String,
    /// The content id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// The parent's content id ("ffffffff": none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_cid: Option<String>,
    /// The adapter type of the disk database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter_type: Option<String>,
    /// The extents.
    pub extents: Vec<VmdkExtentInfo>,
}

/// True when `head`, the first bytes of a file (up to 4 KiB, fewer for a
/// short file), start like a VMDK image.
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.starts_with(b"KDMV")
        || head.starts_with(b"COWD")
        || head.starts_with(b"# Disk DescriptorFile")
}

/// Where an extent's data is.
enum Store {
    Sparse(Box<SparseExtent>),
    Flat {
        file: File,
        path: PathBuf,
        offset: u64,
    },
    Zero,
}

/// An extent placed in the disk.
struct Part {
    start: u64,
    len: u64,
    store: Store,
    line: descriptor::ExtentLine,
}

/// An open VMDK image (read-only).
pub struct VmdkDisk {
    path: PathBuf,
    file: File,
    size: u64,
    parts: Vec<Part>,
    descriptor: Descriptor,
}

/// Reads an embedded or separate descriptor's text.
fn read_descriptor(file: &File, path: &Path, at: u64, len: u64) -> Result<Descriptor> {
    if len > MAX_DESCRIPTOR {
        return Err(Error::corrupt(
            path,
            format!("VMDK descriptor: {len} bytes are more than the {MAX_DESCRIPTOR} supported"),
        ));
    }
    let mut b = vec![0u8; len as usize];
    read_exact_at(file, path, &mut b, at, "VMDK descriptor")?;
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let text = String::from_utf8_lossy(&b[..end]);
    Descriptor::parse(&text).map_err(|e| Error::corrupt(path, format!("VMDK descriptor: {e}")))
}

/// Opens an extent file named `name` by the descriptor at `desc`.
fn open_extent_file(desc: &Path, i: usize, name: &str) -> Result<(File, PathBuf)> {
    let p = Path::new(name);
    let inside = !name.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(Error::unsupported(
            desc,
            format!(
                "VMDK descriptor: extent {i} names {name:?}; only files named by a relative \
                 path inside the descriptor's folder are opened"
            ),
        ));
    }
    let full = desc.parent().unwrap_or(Path::new("")).join(p);
    let meta = std::fs::metadata(&full).map_err(|e| {
        Error::corrupt(
            desc,
            format!("VMDK descriptor: extent {i} file {name:?} cannot be opened: {e}"),
        )
    })?;
    if !meta.is_file() {
        return Err(Error::corrupt(
            desc,
            format!("VMDK descriptor: extent {i} file {name:?} is not a regular file"),
        ));
    }
    let f = File::open(&full).map_err(|e| Error::io(&full, "open", e))?;
    Ok((f, full))
}

impl VmdkDisk {
    /// Opens the VMDK image in `file` (a sparse extent or a text descriptor).
    pub fn from_file(file: File, path: &Path) -> Result<VmdkDisk> {
        let len = file_len(&file, path)?;
        let mut head = [0u8; 4];
        read_exact_at(&file, path, &mut head, 0, "VMDK signature")?;
        if &head == b"COWD" {
            return Err(Error::unsupported(
                path,
                "VMDK: COWD (VMware Workstation 3 / ESX 2) sparse extents are not supported",
            ));
        }
        let (descriptor, parts) = if sparse::is_sparse(&head) {
            let ext = SparseExtent::open(
                file.try_clone().map_err(|e| Error::io(path, "dup", e))?,
                path,
            )?;
            let h = &ext.header;
            let descriptor = if h.descriptor_offset != 0 && h.descriptor_size != 0 {
                let at = h.descriptor_offset.saturating_mul(SECTOR);
                let n = h.descriptor_size.saturating_mul(SECTOR);
                if at.saturating_add(n) > len {
                    return Err(Error::corrupt(
                        path,
                        format!(
                            "VMDK descriptor at sector {} ({} sectors) extends past the end of the file",
                            h.descriptor_offset, h.descriptor_size
                        ),
                    ));
                }
                read_descriptor(&file, path, at, n)?
            } else {
                Descriptor::default()
            };
            let line = descriptor
                .extents
                .first()
                .cloned()
                .unwrap_or(descriptor::ExtentLine {
                    access: "RW".into(),
                    sectors: h.capacity,
                    kind: ExtentType::Sparse,
                    file: path.file_name().map(|n| n.to_string_lossy().into_owned()),
                    offset: 0,
                });
            if descriptor.extents.len() > 1 {
                return Err(Error::unsupported(
                    path,
                    "VMDK descriptor: an embedded descriptor lists more than one extent",
                ));
            }
            let part = Part {
                start: 0,
                len: ext.capacity(),
                store: Store::Sparse(Box::new(ext)),
                line,
            };
            (descriptor, vec![part])
        } else {
            let d = read_descriptor(&file, path, 0, len)?;
            let mut parts = Vec::new();
            let mut start = 0u64;
            for (i, line) in d.extents.iter().enumerate() {
                if line.sectors > MAX_CAPACITY_SECTORS {
                    return Err(Error::corrupt(
                        path,
                        format!(
                            "VMDK descriptor: extent {i} has {} sectors, more than supported",
                            line.sectors
                        ),
                    ));
                }
                let bytes = line.sectors * SECTOR;
                let store = match &line.kind {
                    ExtentType::Zero => Store::Zero,
                    ExtentType::Other(t) => {
                        return Err(Error::unsupported(
                            path,
                            format!(
                                "VMDK descriptor: extent {i} has type {t}, which is not supported"
                            ),
                        ))
                    }
                    ExtentType::Flat => {
                        let (f, full) =
                            open_extent_file(path, i, line.file.as_deref().unwrap_or(""))?;
                        let offset = line
                            .offset
                            .checked_mul(SECTOR)
                            .filter(|o| *o <= MAX_CAPACITY_SECTORS * SECTOR);
                        let Some(offset) = offset else {
                            return Err(Error::corrupt(
                                path,
                                format!(
                                    "VMDK descriptor: extent {i} offset {} is absurd",
                                    line.offset
                                ),
                            ));
                        };
                        let flen = file_len(&f, &full)?;
                        if offset + bytes > flen {
                            return Err(Error::corrupt(
                                path,
                                format!(
                                    "VMDK descriptor: extent {i} ({} sectors at sector {}) extends past the end of {} ({flen} bytes)",
                                    line.sectors, line.offset, full.display()
                                ),
                            ));
                        }
                        Store::Flat {
                            file: f,
                            path: full,
                            offset,
                        }
                    }
                    ExtentType::Sparse => {
                        let (f, full) =
                            open_extent_file(path, i, line.file.as_deref().unwrap_or(""))?;
                        let ext = SparseExtent::open(f, &full)?;
                        if ext.capacity() < bytes {
                            return Err(Error::corrupt(
                                &full,
                                format!(
                                    "VMDK sparse extent header: capacity {} sectors is less than the descriptor's {} for extent {i}",
                                    ext.header.capacity, line.sectors
                                ),
                            ));
                        }
                        Store::Sparse(Box::new(ext))
                    }
                };
                parts.push(Part {
                    start,
                    len: bytes,
                    store,
                    line: line.clone(),
                });
                start += bytes;
                if start > MAX_CAPACITY_SECTORS * SECTOR {
                    return Err(Error::corrupt(
                        path,
                        "VMDK descriptor: the extents add up to more than the supported capacity",
                    ));
                }
            }
            if parts.is_empty() {
                return Err(Error::corrupt(path, "VMDK descriptor: lists no extents"));
            }
            (d, parts)
        };
        if let Some(parent) = descriptor.get("parentFileNameHint") {
            return Err(Error::unsupported(
                path,
                format!("VMDK: delta links (parent {parent:?}) are not supported"),
            ));
        }
        let size = parts.iter().map(|p| p.len).sum();
        Ok(VmdkDisk {
            path: path.to_path_buf(),
            file,
            size,
            parts,
            descriptor,
        })
    }

    /// Calls `f` with each part overlapping `[offset, offset+len)`, the offset
    /// in the part, and the offset and length relative to `offset`.
    fn each_part(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&Part, u64, u64, u64) -> Result<()>,
    ) -> Result<()> {
        let end = offset + len;
        for p in &self.parts {
            let s = p.start.max(offset);
            let e = (p.start + p.len).min(end);
            if s < e {
                f(p, s - p.start, s - offset, e - s)?;
            }
        }
        Ok(())
    }
}

impl Disk for VmdkDisk {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.path, offset, buf.len() as u64, self.size)?;
        self.each_part(offset, buf.len() as u64, |p, at, s, n| {
            let b = &mut buf[s as usize..(s + n) as usize];
            match &p.store {
                Store::Sparse(x) => x.read(b, at),
                Store::Flat { file, path, offset } => {
                    read_exact_at(file, path, b, offset + at, "VMDK flat extent")
                }
                Store::Zero => {
                    b.fill(0);
                    Ok(())
                }
            }
        })
    }

    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> Result<()> {
        Err(Error::ReadOnly {
            path: self.path.clone(),
        })
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn prefetch(&self, offset: u64, len: u64) {
        if check_range(&self.path, offset, len, self.size).is_err() {
            return;
        }
        let _ = self.each_part(offset, len, |p, at, _, n| {
            if let Store::Flat { file, offset, .. } = &p.store {
                prefetch(file, offset + at, n);
            }
            Ok(())
        });
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(&self.path, offset, len, self.size)?;
        let mut out = Vec::new();
        self.each_part(offset, len, |p, at, s, n| {
            let guest = offset + s;
            match &p.store {
                Store::Zero => push_extent(
                    &mut out,
                    Extent {
                        offset: guest,
                        length: n,
                        kind: ExtentKind::Zero,
                    },
                ),
                Store::Flat { file, offset, .. } => {
                    push_file_extents(&mut out, file, offset + at, n, guest)
                }
                Store::Sparse(x) => {
                    let mut pos = at;
                    while pos < at + n {
                        let g = pos / x.grain;
                        let m = (x.grain - pos % x.grain).min(at + n - pos);
                        let kind = match x.grain(g)? {
                            Grain::At(_) => ExtentKind::Data,
                            Grain::Zero => ExtentKind::Zero,
                            Grain::Unallocated => ExtentKind::Unallocated,
                        };
                        push_extent(
                            &mut out,
                            Extent {
                                offset: guest + (pos - at),
                                length: m,
                                kind,
                            },
                        );
                        pos += m;
                    }
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn info(&self) -> Result<ImageInfo> {
        let mut allocated = 0u64;
        let mut host = host_allocated(&self.file, &self.path)?;
        let mut extents = Vec::new();
        for p in &self.parts {
            let (grain_size, compressed) = match &p.store {
                Store::Sparse(x) => {
                    allocated += x.allocated_bytes(p.len)?;
                    if x.path != self.path {
                        host += host_allocated(&x.file, &x.path)?;
                    }
                    (Some(x.grain), Some(x.header.compressed()))
                }
                Store::Flat { file, path, .. } => {
                    allocated += p.len;
                    host += host_allocated(file, path)?;
                    (None, None)
                }
                Store::Zero => (None, None),
            };
            extents.push(VmdkExtentInfo {
                access: p.line.access.clone(),
                sectors: p.line.sectors,
                kind: match &p.line.kind {
                    ExtentType::Sparse => "SPARSE".into(),
                    ExtentType::Flat => "FLAT".into(),
                    ExtentType::Zero => "ZERO".into(),
                    ExtentType::Other(t) => t.clone(),
                },
                file: p.line.file.clone(),
                grain_size,
                compressed,
            });
        }
        let d = &self.descriptor;
        let create_type = d
            .get("createType")
            .unwrap_or("monolithicSparse")
            .to_string();
        Ok(ImageInfo {
            file: self.path.display().to_string(),
            format: "vmdk",
            virtual_size: self.size,
            file_size: file_len(&self.file, &self.path)?,
            allocated_bytes: allocated,
            host_allocated_bytes: host,
            chain: vec![crate::ChainLink {
                file: self.path.display().to_string(),
                format: "vmdk",
                kind: if self
                    .parts
                    .iter()
                    .all(|p| matches!(p.store, Store::Flat { .. } | Store::Zero))
                {
                    "fixed"
                } else {
                    "dynamic"
                },
                unique_id: d.get("CID").map(str::to_string),
            }],
            vhd: None,
            details: Some(crate::FormatDetails::Vmdk(VmdkInfo {
                create_type,
                cid: d.get("CID").map(str::to_string),
                parent_cid: d.get("parentCID").map(str::to_string),
                adapter_type: d.get("ddb.adapterType").map(str::to_string),
                extents,
            })),
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens the VMDK image in `file`, for writing when `writable`.
pub(crate) fn open(file: File, path: &Path, writable: bool) -> Result<Box<dyn Disk>> {
    if writable {
        return Err(Error::unsupported(
            path,
            "writing into existing VMDK images is not supported (convert the image to change it)",
        ));
    }
    Ok(Box::new(VmdkDisk::from_file(file, path)?))
}

/// Makes an empty stream-optimized VMDK image of `size` bytes in `file` (new
/// and empty), and returns it open for writing in ascending order.
pub(crate) fn create(
    file: File,
    path: &Path,
    size: u64,
    opts: &CreateOptions,
) -> Result<(Box<dyn Disk>, Vec<String>)> {
    let (w, notes) = stream::StreamWriter::create(file, path, size, opts)?;
    Ok((Box::new(w), notes))
}

/// Checks the grain tables of a sparse extent.
fn check_sparse(x: &SparseExtent, r: &mut CheckReport, allocated: &mut u64) -> Result<()> {
    let gt_bytes = x.header.gt_bytes();
    let mut tables: Vec<(u64, u64, usize)> = Vec::new();
    let (mut past_end, mut markers) = (0usize, 0usize);
    let per = u64::from(x.header.gtes_per_gt);
    for (i, &s) in x.gd.iter().enumerate() {
        if s == 0 {
            continue;
        }
        let at = u64::from(s) * SECTOR;
        tables.push((at, at + gt_bytes, i));
        let Some(gt) = x.grain_table(i)? else {
            continue;
        };
        for (j, &e) in gt.iter().enumerate() {
            if e <= header::GTE_ZERO {
                continue;
            }
            let g = i as u64 * per + j as u64;
            if g * x.grain >= x.capacity() {
                continue;
            }
            *allocated += 1;
            let at = u64::from(e) * SECTOR;
            let end = if x.header.compressed() {
                at + 12
            } else {
                at + x.grain
            };
            if end > x.file_len {
                past_end += 1;
                if past_end <= MAX_LISTED {
                    r.problem(
                        "grain table",
                        format!("grain table {i}: entry {j} points past the end of the file (sector {e})"),
                    );
                }
                continue;
            }
            if x.header.compressed() && x.header.flags & header::FLAG_MARKERS != 0 {
                let mut m = [0u8; 8];
                read_exact_at(&x.file, &x.path, &mut m, at, "VMDK grain marker")?;
                let lba = u64::from_le_bytes(m);
                if lba != g * x.header.grain_size {
                    markers += 1;
                    if markers <= MAX_LISTED {
                        r.problem(
                            "grain marker",
                            format!(
                                "grain table {i}: entry {j}: the grain marker names sector {lba}, not {}",
                                g * x.header.grain_size
                            ),
                        );
                    }
                }
            }
        }
    }
    tables.sort_unstable();
    let mut overlaps = 0;
    for w in tables.windows(2) {
        if w[1].0 < w[0].1 {
            overlaps += 1;
            if overlaps <= MAX_LISTED {
                r.problem(
                    "grain directory",
                    format!("grain tables {} and {} overlap", w[0].2, w[1].2),
                );
            }
        }
    }
    Ok(())
}

/// Checks the VMDK image in `file`.
pub(crate) fn check_file(file: &File, path: &Path) -> Result<CheckReport> {
    let mut r = CheckReport::new(path, "vmdk");
    let handle = file.try_clone().map_err(|e| Error::io(path, "dup", e))?;
    let disk = match VmdkDisk::from_file(handle, path) {
        Ok(d) => d,
        Err(Error::Corrupt { what, .. }) => {
            r.problem("header", what);
            return Ok(r);
        }
        Err(e) => return Err(e),
    };
    r.virtual_size = Some(disk.size);
    let mut allocated = 0;
    for p in &disk.parts {
        if let Store::Sparse(x) = &p.store {
            if let Err(e) = check_sparse(x, &mut r, &mut allocated) {
                match e {
                    Error::Corrupt { what, .. } => r.problem("grain table", what),
                    e => return Err(e),
                }
            }
        }
    }
    r.allocated_blocks = Some(allocated);
    Ok(r)
}
