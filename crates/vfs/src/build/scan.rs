//! The folder: walked and checked before anything is written.

use super::names::check_name;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The largest file FAT records (a 32-bit size).
const MAX_FILE: u64 = u32::MAX as u64;

// ---------------------------------------------------------------------------
// The folder.

/// The folder to copy, scanned and checked.
pub(super) struct Tree {
    /// Its folders, each after its parent; `dirs[0]` is the root.
    pub(super) dirs: Vec<Dir>,
    pub(super) files: u64,
    pub(super) bytes: u64,
    pub(super) warnings: Vec<String>,
}

pub(super) struct Dir {
    /// Path in the volume, `/`-separated, empty for the root.
    pub(super) path: String,
    pub(super) source: PathBuf,
    /// The real path, to notice symbolic links that lead back up.
    pub(super) real: PathBuf,
    pub(super) parent: usize,
    pub(super) entries: Vec<Item>,
}

pub(super) struct Item {
    pub(super) name: String,
    pub(super) source: PathBuf,
    /// `None` for a folder.
    pub(super) file: Option<FileInfo>,
}

pub(super) struct FileInfo {
    pub(super) len: u64,
    pub(super) modified: Option<SystemTime>,
}

pub(super) fn scan(src: &Path) -> Result<Tree> {
    let meta = std::fs::metadata(src).map_err(|e| Error::local(src, "stat", e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!("{}: not a folder", src.display())));
    }
    let root_real = std::fs::canonicalize(src).map_err(|e| Error::local(src, "resolve", e))?;
    let mut tree = Tree {
        dirs: vec![Dir {
            path: String::new(),
            source: src.to_path_buf(),
            real: root_real.clone(),
            parent: 0,
            entries: Vec::new(),
        }],
        files: 0,
        bytes: 0,
        warnings: Vec::new(),
    };
    let mut i = 0;
    while i < tree.dirs.len() {
        let source = tree.dirs[i].source.clone();
        let mut listing = Vec::new();
        for e in std::fs::read_dir(&source).map_err(|e| Error::local(&source, "read folder", e))? {
            listing.push(
                e.map_err(|e| Error::local(&source, "read folder", e))?
                    .path(),
            );
        }
        listing.sort();
        // FAT compares names without case: upper-cased name → name.
        let mut taken: HashMap<String, String> = HashMap::new();
        let mut entries = Vec::new();
        for path in listing {
            let Some(name) = path.file_name().map(|n| n.to_os_string()) else {
                continue;
            };
            let name = name.into_string().map_err(|_| {
                Error::Invalid(format!(
                    "{}: the name is not UTF-8, so it has no FAT long name",
                    path.display()
                ))
            })?;
            let lmeta =
                std::fs::symlink_metadata(&path).map_err(|e| Error::local(&path, "stat", e))?;
            let (meta, real) = if lmeta.file_type().is_symlink() {
                match std::fs::canonicalize(&path) {
                    Ok(t) if t.starts_with(&root_real) => {
                        let m =
                            std::fs::metadata(&path).map_err(|e| Error::local(&path, "stat", e))?;
                        (m, t)
                    }
                    Ok(t) => {
                        tree.warnings.push(format!(
                            "{}: skipped: a symbolic link to {}, outside {}",
                            path.display(),
                            t.display(),
                            src.display()
                        ));
                        continue;
                    }
                    Err(_) => {
                        tree.warnings.push(format!(
                            "{}: skipped: a broken symbolic link",
                            path.display()
                        ));
                        continue;
                    }
                }
            } else {
                (lmeta, PathBuf::new())
            };
            let file = if meta.is_file() {
                let len = meta.len();
                if len > MAX_FILE {
                    return Err(Error::Invalid(format!(
                        "{}: {len} bytes, more than the {MAX_FILE} a FAT file can hold",
                        path.display()
                    )));
                }
                Some(FileInfo {
                    len,
                    modified: meta.modified().ok(),
                })
            } else if meta.is_dir() {
                None
            } else {
                tree.warnings.push(format!(
                    "{}: skipped: not a regular file or folder (a device, FIFO or socket)",
                    path.display()
                ));
                continue;
            };
            check_name(&name, &path)?;
            if let Some(other) = taken.insert(name.to_uppercase(), name.clone()) {
                return Err(Error::Invalid(format!(
                    "{}: FAT names ignore case, and {other:?} in the same folder has the same name",
                    path.display()
                )));
            }
            if let Some(f) = &file {
                tree.files += 1;
                tree.bytes += f.len;
            } else {
                let real = if real.as_os_str().is_empty() {
                    std::fs::canonicalize(&path).map_err(|e| Error::local(&path, "resolve", e))?
                } else {
                    real
                };
                // A link to a folder this one is inside would copy for ever.
                let mut up = Some(i);
                while let Some(k) = up {
                    if tree.dirs[k].real == real {
                        tree.warnings.push(format!(
                            "{}: skipped: a symbolic link to {}, a folder it is inside",
                            path.display(),
                            real.display()
                        ));
                        break;
                    }
                    up = (k != 0).then_some(tree.dirs[k].parent);
                }
                if up.is_some() {
                    continue;
                }
                let parent_path = &tree.dirs[i].path;
                tree.dirs.push(Dir {
                    path: if parent_path.is_empty() {
                        name.clone()
                    } else {
                        format!("{parent_path}/{name}")
                    },
                    source: path.clone(),
                    real,
                    parent: i,
                    entries: Vec::new(),
                });
            }
            entries.push(Item {
                name,
                source: path,
                file,
            });
        }
        tree.dirs[i].entries = entries;
        i += 1;
    }
    Ok(tree)
}
