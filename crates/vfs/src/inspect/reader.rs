//! Bounded, forgiving reads from a volume for inspection: paths looked up
//! case-insensitively where the filesystem is, symbolic links followed inside
//! the volume, every read capped, and every failure other than "not there"
//! kept as a problem rather than returned.

use crate::fs::{Entry, EntryKind, Volume};
use crate::{Error, Result};
use std::io::Write;

/// The most symbolic links followed for one path (Linux's own limit).
const MAX_LINKS: usize = 40;
/// The most path components looked up for one path, links included.
const MAX_STEPS: usize = 256;

/// Reads files of one volume for inspection.
pub(crate) struct Reader<'a> {
    vol: &'a mut dyn Volume,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    /// A reader of `vol`.
    pub(crate) fn new(vol: &'a mut dyn Volume) -> Self {
        Reader {
            vol,
            problems: Vec::new(),
        }
    }

    /// The reads that failed for a reason other than a missing file.
    pub(crate) fn into_problems(self) -> Vec<String> {
        self.problems
    }

    /// Records a failure unless it says the path is not there.
    fn keep<T>(&mut self, r: Result<Option<T>>) -> Option<T> {
        match r {
            Ok(v) => v,
            Err(Error::NotFound(_)) | Err(Error::NotDir(_)) => None,
            Err(e) => {
                self.problems.push(e.to_string());
                None
            }
        }
    }

    /// The entry `name` of the directory `dir`: the exact name, or else a
    /// name that differs only in ASCII case (Windows and DOS files are looked
    /// up that way whatever the filesystem does).
    fn lookup(&mut self, dir: &str, name: &str) -> Result<Option<Entry>> {
        match self.vol.stat(&join(dir, name)) {
            Ok(mut e) => {
                e.name = name.to_string();
                return Ok(Some(e));
            }
            Err(Error::NotFound(_)) | Err(Error::NotDir(_)) => {}
            Err(e) => return Err(e),
        }
        let entries = match self.vol.list(dir) {
            Ok(v) => v,
            Err(Error::NotFound(_)) | Err(Error::NotDir(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(entries
            .into_iter()
            .find(|e| e.name.eq_ignore_ascii_case(name)))
    }

    /// Resolves `path` to the path of what it names, every symbolic link on
    /// the way followed inside the volume (an absolute target starts again at
    /// the volume's root).
    fn resolve(&mut self, path: &str) -> Result<Option<(String, Entry)>> {
        let mut pending: Vec<String> = components(path).rev().map(str::to_string).collect();
        let mut done: Vec<String> = Vec::new();
        let mut last: Option<Entry> = None;
        let (mut links, mut steps) = (0usize, 0usize);
        while let Some(comp) = pending.pop() {
            steps += 1;
            if steps > MAX_STEPS {
                return Err(Error::Invalid(format!("{path}: too many path components")));
            }
            if comp == ".." {
                done.pop();
                last = None;
                continue;
            }
            let dir = join_all(&done);
            let Some(e) = self.lookup(&dir, &comp)? else {
                return Ok(None);
            };
            if e.kind == EntryKind::Symlink {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::Invalid(format!(
                        "{path}: more than {MAX_LINKS} symbolic links"
                    )));
                }
                let target = self.vol.read_link(&join(&dir, &e.name))?;
                if target.starts_with('/') {
                    done.clear();
                }
                pending.extend(components(&target).rev().map(str::to_string));
                continue;
            }
            if !pending.is_empty() && e.kind != EntryKind::Dir {
                return Ok(None);
            }
            done.push(e.name.clone());
            last = Some(e);
        }
        let resolved = join_all(&done);
        let entry = match last {
            Some(e) => e,
            // The root, or a path that ended in "..".
            None => self.vol.stat(&resolved)?,
        };
        Ok(Some((resolved, entry)))
    }

    /// The entry at `path`, links followed, with its resolved path.
    pub(crate) fn find(&mut self, path: &str) -> Option<(String, Entry)> {
        let r = self.resolve(path);
        self.keep(r)
    }

    /// True when `path` is a directory (links followed).
    pub(crate) fn is_dir(&mut self, path: &str) -> bool {
        matches!(self.find(path), Some((_, e)) if e.kind == EntryKind::Dir)
    }

    /// True when `path` is a regular file (links followed).
    pub(crate) fn is_file(&mut self, path: &str) -> bool {
        matches!(self.find(path), Some((_, e)) if e.kind == EntryKind::File)
    }

    /// The names in the directory `path` (links followed); empty when it is
    /// not there.
    pub(crate) fn names(&mut self, path: &str) -> Vec<String> {
        let Some((dir, e)) = self.find(path) else {
            return Vec::new();
        };
        if e.kind != EntryKind::Dir {
            return Vec::new();
        }
        let r = self.vol.list(&dir).map(Some);
        self.keep(r)
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    /// Bytes `[start, start + len)` of the file `path` (links followed),
    /// fewer when the file is shorter; `None` when it is not a regular file or
    /// cannot be read.
    pub(crate) fn read_range(&mut self, path: &str, start: u64, len: usize) -> Option<Vec<u8>> {
        let (resolved, e) = self.find(path)?;
        if e.kind != EntryKind::File {
            return None;
        }
        let mut w = Window {
            pos: 0,
            start,
            out: Vec::with_capacity(len.min(1 << 20)),
            len,
        };
        match self.vol.read_file(&resolved, &mut w) {
            Ok(_) => {}
            // The window refuses bytes past its end to stop the copy early.
            Err(_) if w.full() => {}
            Err(e) => {
                self.problems.push(e.to_string());
                return None;
            }
        }
        Some(w.out)
    }

    /// The first `len` bytes of `path` (fewer when it is shorter).
    pub(crate) fn read_head(&mut self, path: &str, len: usize) -> Option<Vec<u8>> {
        self.read_range(path, 0, len)
    }

    /// The text of the small file `path`: at most `max` bytes, decoded
    /// leniently.
    pub(crate) fn read_text(&mut self, path: &str, max: usize) -> Option<String> {
        let b = self.read_head(path, max)?;
        Some(String::from_utf8_lossy(&b).into_owned())
    }
}

/// A writer that keeps the bytes of one window of a stream and refuses the
/// stream once the window is full, so a long file is not read to its end.
struct Window {
    pos: u64,
    start: u64,
    out: Vec<u8>,
    len: usize,
}

impl Window {
    fn full(&self) -> bool {
        self.out.len() >= self.len
    }
}

impl Write for Window {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.full() {
            return Err(std::io::Error::other("enough read"));
        }
        let end = self.pos.saturating_add(buf.len() as u64);
        if end > self.start {
            let from = self.start.saturating_sub(self.pos) as usize;
            let want = self.len - self.out.len();
            let slice = buf.get(from..).unwrap_or_default();
            let take = slice.len().min(want);
            self.out
                .extend_from_slice(slice.get(..take).unwrap_or_default());
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The components of `path`, without empty ones and `.`.
fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn join_all(parts: &[String]) -> String {
    if parts.is_empty() {
        "/".to_string()
    } else {
        format!("/{}", parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_only_its_range() {
        let mut w = Window {
            pos: 0,
            start: 3,
            out: Vec::new(),
            len: 4,
        };
        w.write_all(b"01").unwrap();
        w.write_all(b"2345").unwrap();
        w.write_all(b"6789").unwrap();
        assert!(w.write_all(b"x").is_err());
        assert_eq!(w.out, b"3456");
    }

    #[test]
    fn paths() {
        assert_eq!(
            components("/a//b/./c\\d").collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(join("/", "etc"), "/etc");
        assert_eq!(join("/etc", "x"), "/etc/x");
        assert_eq!(join_all(&[]), "/");
    }
}
