//! ISO 9660, read-only, with Rock Ridge and Joliet names.
//!
//! A compact reader of its own rather than a crate: `iso9660` 0.1 knows
//! neither Rock Ridge nor Joliet, `cdfs` needs libfuse to build, and
//! `hadris-iso` is a release candidate that brings a family of crates of its
//! own. The format is small enough that a reader which bounds everything it
//! reads (directory sizes, continuation areas, name lengths) is the safer
//! choice.
//!
//! Names come from Rock Ridge (NM, with PX modes, SL links and TF times) when
//! the root directory carries the SUSP "SP" entry, else from the Joliet tree
//! when there is one, else from the primary tree without versions (";1").
//! The on-disk structures are parsed in [`record`].

mod record;

use super::{Entry, EntryKind, FsKind, Volume};
use crate::region::Region;
use crate::{Error, Result};
use record::{Continuation, Record, Susp, FLAG_ASSOCIATED, FLAG_DIR, FLAG_MULTI_EXTENT, SECTOR};
use std::collections::HashMap;
use std::io::Write;

/// Largest directory read (a directory of 64 MiB holds over a million
/// entries; anything larger is taken for damage).
const MAX_DIR: u64 = 64 << 20;
/// Continuation areas followed for one record (SUSP CE).
const MAX_CONTINUATIONS: usize = 16;
/// Volume descriptors looked at before giving up on a terminator.
const MAX_DESCRIPTORS: u64 = 64;
/// Extents one file may be split into (multi-extent files).
const MAX_EXTENTS: usize = 4096;
/// Directories kept parsed.
const CACHED_DIRS: usize = 256;
/// Bytes copied to the writer at a time.
const CHUNK: u64 = 256 << 10;

/// Where the names of a tree come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Names {
    /// Rock Ridge, skipping this many bytes at the start of System Use areas.
    RockRidge(u8),
    /// Joliet (UCS-2 identifiers).
    Joliet,
    /// ISO 9660 identifiers.
    Plain,
}

/// One entry with where its data is.
#[derive(Clone, Debug)]
struct Node {
    entry: Entry,
    /// (first logical block, bytes) of each extent, in order.
    extents: Vec<(u64, u64)>,
    link: Option<String>,
}

/// An ISO 9660 volume.
pub struct IsoVolume {
    region: Region,
    name: String,
    /// Bytes per logical block.
    block: u64,
    root: Node,
    names: Names,
    label: Option<String>,
    dirs: HashMap<(u64, u64), Vec<Node>>,
}

fn le16(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]) as u64)
        .unwrap_or(0)
}

/// A d-characters or a-characters field, without trailing spaces.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

impl IsoVolume {
    /// Opens the ISO 9660 volume in `region`.
    pub fn open(mut region: Region) -> Result<Self> {
        let name = region.name().to_string();
        let bad = |what: String| Error::Corrupt(format!("{name}: ISO 9660: {what}"));
        let mut primary: Option<Vec<u8>> = None;
        let mut joliet: Option<Vec<u8>> = None;
        for i in 0..MAX_DESCRIPTORS {
            let at = (16 + i) * SECTOR as u64;
            if at + SECTOR as u64 > region.len() {
                break;
            }
            let mut vd = vec![0u8; SECTOR];
            region.read_at_checked(&mut vd, at)?;
            if &vd[1..6] != b"CD001" {
                break;
            }
            match vd[0] {
                1 if primary.is_none() => primary = Some(vd),
                // Joliet: a supplementary descriptor with a UCS-2 escape
                // sequence (Joliet specification, 4.2).
                2 if joliet.is_none() && matches!(&vd[88..91], b"%/@" | b"%/C" | b"%/E") => {
                    joliet = Some(vd)
                }
                255 => break,
                _ => {}
            }
        }
        let primary = primary.ok_or_else(|| bad("no primary volume descriptor".into()))?;
        let block = le16(&primary, 128);
        if !matches!(block, 512 | 1024 | 2048) {
            return Err(bad(format!("logical blocks of {block} bytes")));
        }
        let root_of = |vd: &[u8]| -> Result<Record> {
            record::parse_record(&vd[156..190])
                .map_err(|e| bad(format!("root directory record: {e}")))
        };
        let mut vol = IsoVolume {
            region,
            name: name.clone(),
            block,
            root: Node {
                entry: root_entry(None),
                extents: Vec::new(),
                link: None,
            },
            names: Names::Plain,
            label: None,
            dirs: HashMap::new(),
        };
        let root = root_of(&primary)?;
        vol.root = vol.dir_node(&root)?;
        vol.names = match vol.root_sp_skip()? {
            Some(skip) => Names::RockRidge(skip),
            None => Names::Plain,
        };
        vol.label = Some(text(&primary[40..72])).filter(|l| !l.is_empty());
        if vol.names == Names::Plain {
            if let Some(j) = joliet {
                let root = root_of(&j)?;
                vol.root = vol.dir_node(&root)?;
                vol.names = Names::Joliet;
                let label = record::ucs2(&j[40..72])
                    .trim_end_matches([' ', '\0'])
                    .to_string();
                if !label.is_empty() {
                    vol.label = Some(label);
                }
            }
        }
        Ok(vol)
    }

    fn corrupt(&self, what: String) -> Error {
        Error::Corrupt(format!("{}: ISO 9660: {what}", self.name))
    }

    /// The node of a directory from its record (the root's, or a CL target's).
    fn dir_node(&self, r: &Record) -> Result<Node> {
        let ext = (u64::from(r.extent), u64::from(r.size));
        self.check_extent(ext, "directory")?;
        Ok(Node {
            entry: root_entry(r.recorded),
            extents: vec![ext],
            link: None,
        })
    }

    /// Checks that an extent lies inside the volume.
    fn check_extent(&self, (block, len): (u64, u64), what: &str) -> Result<()> {
        let end = block
            .checked_mul(self.block)
            .and_then(|s| s.checked_add(len));
        match end {
            Some(end) if end <= self.region.len() => Ok(()),
            _ => Err(self.corrupt(format!(
                "a {what} extent at block {block} of {len} bytes lies past the end of the volume ({} bytes)",
                self.region.len()
            ))),
        }
    }

    /// The SUSP skip length when the root's `.` record starts with "SP"
    /// (SUSP 5.3), which is how Rock Ridge announces itself.
    fn root_sp_skip(&mut self) -> Result<Option<u8>> {
        let Some(&(block, len)) = self.root.extents.first() else {
            return Ok(None);
        };
        let n = len.min(SECTOR as u64) as usize;
        if n == 0 {
            return Ok(None);
        }
        let mut head = vec![0u8; n];
        self.read(&mut head, block * self.block)?;
        let Ok(r) = record::parse_record(&head) else {
            return Ok(None);
        };
        let (at, len) = r.system_use;
        let area = head.get(at..at + len).unwrap_or(&[]);
        let mut s = Susp::default();
        s.parse(area);
        Ok(s.sp_skip)
    }

    fn read(&mut self, buf: &mut [u8], off: u64) -> Result<()> {
        self.region.read_at_checked(buf, off)
    }

    /// The entries of the directory at `ext`.
    fn read_dir(&mut self, ext: (u64, u64), path: &str) -> Result<Vec<Node>> {
        if let Some(d) = self.dirs.get(&ext) {
            return Ok(d.clone());
        }
        if ext.1 > MAX_DIR {
            return Err(self.corrupt(format!(
                "directory {path} is {} bytes long, more than the {MAX_DIR} read here",
                ext.1
            )));
        }
        self.check_extent(ext, "directory")?;
        let mut data = vec![0u8; ext.1 as usize];
        self.read(&mut data, ext.0 * self.block)?;
        let recs =
            record::records(&data).map_err(|e| self.corrupt(format!("directory {path}: {e}")))?;
        let mut out: Vec<Node> = Vec::new();
        // The identifier of the last record when it said the file goes on.
        let mut open: Option<Vec<u8>> = None;
        for (at, r) in recs {
            if r.is_dot() || r.flags & FLAG_ASSOCIATED != 0 {
                continue;
            }
            let piece = (u64::from(r.extent), u64::from(r.size));
            if let Some(ident) = open.take() {
                if ident == r.ident {
                    if let Some(last) = out.last_mut() {
                        if last.extents.len() >= MAX_EXTENTS {
                            return Err(self.corrupt(format!(
                                "directory {path}: a file in more than {MAX_EXTENTS} extents"
                            )));
                        }
                        last.extents.push(piece);
                        last.entry.size = last.entry.size.saturating_add(piece.1);
                    }
                    if r.flags & FLAG_MULTI_EXTENT != 0 {
                        open = Some(r.ident);
                    }
                    continue;
                }
            }
            let Some(node) = self.node(&data, at, &r, path)? else {
                continue;
            };
            if r.flags & FLAG_MULTI_EXTENT != 0 {
                open = Some(r.ident.clone());
            }
            out.push(node);
        }
        if self.dirs.len() >= CACHED_DIRS {
            self.dirs.clear();
        }
        self.dirs.insert(ext, out.clone());
        Ok(out)
    }

    /// The node a record stands for, or `None` for one not listed (a
    /// relocated directory's original place).
    fn node(&mut self, data: &[u8], at: usize, r: &Record, path: &str) -> Result<Option<Node>> {
        let mut kind = if r.flags & FLAG_DIR != 0 {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        let mut ext = (u64::from(r.extent), u64::from(r.size));
        let mut modified = r.recorded;
        let mut mode = None;
        let mut link = None;
        let name = match self.names {
            Names::Plain => record::plain_name(&String::from_utf8_lossy(&r.ident)),
            Names::Joliet => record::plain_name(&record::ucs2(&r.ident)),
            Names::RockRidge(skip) => {
                let s = self.susp(data, at, r, skip, path)?;
                if s.relocated {
                    return Ok(None);
                }
                if s.too_long {
                    return Err(self.corrupt(format!(
                        "directory {path}: a Rock Ridge name or link target is longer than the limits ({} / {} bytes)",
                        record::MAX_NAME,
                        record::MAX_LINK
                    )));
                }
                if let Some(child) = s.child {
                    // A directory moved elsewhere to keep the tree shallow;
                    // its own `.` record has its size (RRIP 4.1.5.1).
                    kind = EntryKind::Dir;
                    ext = self.relocated(u64::from(child), path)?;
                }
                modified = s.modified.or(modified);
                if let Some(m) = s.mode {
                    mode = Some(m & 0o7777);
                    kind = match m & 0o170000 {
                        0o040000 => EntryKind::Dir,
                        0o100000 => EntryKind::File,
                        0o120000 => EntryKind::Symlink,
                        0 => kind,
                        _ => EntryKind::Other,
                    };
                }
                link = s.link();
                if link.is_some() && kind == EntryKind::File {
                    kind = EntryKind::Symlink;
                }
                match s.name {
                    Some(n) => String::from_utf8_lossy(&n).into_owned(),
                    None => record::plain_name(&String::from_utf8_lossy(&r.ident)),
                }
            }
        };
        if name.is_empty() {
            return Err(self.corrupt(format!(
                "directory {path}: the record at byte {at} has an empty name"
            )));
        }
        let size = match (kind, &link) {
            (EntryKind::Dir, _) => 0,
            (EntryKind::Symlink, Some(t)) => t.len() as u64,
            _ => ext.1,
        };
        if kind == EntryKind::Symlink && link.is_none() {
            link = Some(String::new());
        }
        Ok(Some(Node {
            entry: Entry {
                name,
                kind,
                size,
                modified,
                mode,
            },
            extents: vec![ext],
            link,
        }))
    }

    /// The SUSP entries of the record at `at` of `data`, following CE.
    fn susp(&mut self, data: &[u8], at: usize, r: &Record, skip: u8, path: &str) -> Result<Susp> {
        let (su, len) = r.system_use;
        let start = at + su + usize::from(skip);
        let end = at + su + len;
        let area = data.get(start..end).unwrap_or(&[]);
        let mut s = Susp::default();
        let mut next = s.parse(area);
        let mut followed = 0;
        while let Some(Continuation { block, offset, len }) = next {
            followed += 1;
            if followed > MAX_CONTINUATIONS {
                return Err(self.corrupt(format!(
                    "directory {path}: a record's system use area continues more than {MAX_CONTINUATIONS} times"
                )));
            }
            let (offset, len) = (u64::from(offset), u64::from(len));
            if offset + len > self.block {
                return Err(self.corrupt(format!(
                    "directory {path}: a continuation area of {len} bytes at offset {offset} runs past its block"
                )));
            }
            let pos = u64::from(block) * self.block + offset;
            self.check_extent((u64::from(block), offset + len), "continuation area")?;
            let mut buf = vec![0u8; len as usize];
            self.read(&mut buf, pos)?;
            next = s.parse(&buf);
        }
        Ok(s)
    }

    /// The extent of a relocated directory from its `.` record.
    fn relocated(&mut self, block: u64, path: &str) -> Result<(u64, u64)> {
        self.check_extent((block, SECTOR as u64), "relocated directory")?;
        let mut head = vec![0u8; SECTOR];
        self.read(&mut head, block * self.block)?;
        let r = record::parse_record(&head)
            .map_err(|e| self.corrupt(format!("directory {path}: relocated directory: {e}")))?;
        Ok((u64::from(r.extent), u64::from(r.size)))
    }

    /// The node at `path`, walking down from the root.
    fn find(&mut self, path: &str) -> Result<Node> {
        let mut cur = self.root.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if cur.entry.kind != EntryKind::Dir {
                return Err(Error::NotFound(path.to_string()));
            }
            let ext = cur.extents.first().copied().unwrap_or((0, 0));
            let entries = self.read_dir(ext, path)?;
            let plain = self.names == Names::Plain;
            cur = entries
                .into_iter()
                .find(|n| {
                    n.entry.name == part || (plain && n.entry.name.eq_ignore_ascii_case(part))
                })
                .ok_or_else(|| Error::NotFound(path.to_string()))?;
        }
        Ok(cur)
    }
}

/// The entry of a directory reached from a volume descriptor or a CL link.
fn root_entry(modified: Option<i64>) -> Entry {
    Entry {
        name: "/".into(),
        kind: EntryKind::Dir,
        size: 0,
        modified,
        mode: None,
    }
}

impl Volume for IsoVolume {
    fn kind(&self) -> FsKind {
        FsKind::Iso9660
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let node = self.find(path)?;
        if node.entry.kind != EntryKind::Dir {
            return Err(Error::NotDir(path.to_string()));
        }
        let ext = node.extents.first().copied().unwrap_or((0, 0));
        Ok(self
            .read_dir(ext, path)?
            .into_iter()
            .map(|n| n.entry)
            .collect())
    }

    fn stat(&mut self, path: &str) -> Result<Entry> {
        Ok(self.find(path)?.entry)
    }

    fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let node = self.find(path)?;
        match node.entry.kind {
            EntryKind::File => {}
            EntryKind::Dir => return Err(Error::IsDir(path.to_string())),
            EntryKind::Symlink => {
                return Err(Error::Invalid(format!(
                    "{path}: a symbolic link (to {:?}); read its target instead",
                    node.link.unwrap_or_default()
                )))
            }
            EntryKind::Other => return Err(Error::Invalid(format!("{path}: not a regular file"))),
        }
        for &ext in &node.extents {
            self.check_extent(ext, &format!("file {path}"))?;
        }
        let mut buf = vec![0u8; CHUNK.min(node.entry.size) as usize];
        let mut done = 0u64;
        for (block, len) in node.extents {
            let mut left = len;
            let mut pos = block * self.block;
            while left > 0 {
                let n = CHUNK.min(left) as usize;
                self.read(&mut buf[..n], pos)?;
                crate::extract::write_all(out, &buf[..n], path)?;
                pos += n as u64;
                left -= n as u64;
                done += n as u64;
            }
        }
        Ok(done)
    }

    fn read_link(&mut self, path: &str) -> Result<String> {
        let node = self.find(path)?;
        match node.link {
            Some(t) if node.entry.kind == EntryKind::Symlink => Ok(t),
            _ => Err(Error::Invalid(format!("{path}: not a symbolic link"))),
        }
    }
}
