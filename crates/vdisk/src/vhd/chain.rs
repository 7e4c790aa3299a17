//! Finding and opening the parent of a differencing disk.
//!
//! Like Windows, the relative locator (`W2ru`) is tried first, so that a chain
//! moved or copied as a whole still opens; then the absolute one (`W2ku`); then a
//! file of the parent's name beside the child. A candidate is the parent only if
//! its unique id is the one the child recorded.

use super::header::{DynamicHeader, ParentLocator};
use super::locator::{decode_parent_name, decode_utf16le, locator_path, W2KU, W2RU};
use super::VhdDisk;
use crate::io::{file_len, read_exact_at};
use crate::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The deepest chain opened: a guard against hostile or looping chains.
pub const MAX_DEPTH: usize = 64;
/// The longest locator text read (UTF-16LE bytes).
const MAX_LOCATOR: u64 = 64 << 10;

/// The files of a chain being opened, from the top child down.
#[derive(Default)]
pub(crate) struct Opening {
    pub files: Vec<PathBuf>,
}

/// Where the locators of `header` say the parent of `path` is, best first.
pub fn parent_candidates(file: &File, path: &Path, header: &DynamicHeader) -> Result<Vec<PathBuf>> {
    let child = std::fs::canonicalize(path).map_err(|e| Error::io(path, "resolve", e))?;
    let dir = child.parent().unwrap_or(Path::new("/")).to_path_buf();
    let len = file_len(file, path)?;
    let mut out = Vec::new();
    for code in [W2RU, W2KU] {
        for (i, l) in header
            .locators
            .iter()
            .enumerate()
            .filter(|(_, l)| l.platform_code == code)
        {
            let data = read_locator(file, path, i, l, len)?;
            let text = decode_utf16le(&data).ok_or_else(|| {
                Error::corrupt(path, format!("parent locator {i}: not UTF-16 text"))
            })?;
            if let Some(p) = locator_path(&dir, code, &text) {
                out.push(p);
            }
        }
    }
    if let Some(name) = decode_parent_name(&header.parent_unicode_name).filter(|n| !n.is_empty()) {
        // Only the file name: a path in this field is taken as a name beside the child.
        let base = name.rsplit(['\\', '/']).next().unwrap_or(&name).to_string();
        if !base.is_empty() {
            out.push(dir.join(base));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    Ok(out)
}

/// The data of parent locator `i`, `l`, of `path` (a file of `len` bytes):
/// at most [`MAX_LOCATOR`] bytes, inside the file.
pub(crate) fn read_locator(
    file: &File,
    path: &Path,
    i: usize,
    l: &ParentLocator,
    len: u64,
) -> Result<Vec<u8>> {
    let n = u64::from(l.platform_data_length);
    if n == 0 {
        return Err(Error::corrupt(
            path,
            format!("parent locator {i}: its data length is zero"),
        ));
    }
    if n > MAX_LOCATOR
        || l.platform_data_offset
            .checked_add(n)
            .is_none_or(|e| e > len)
    {
        return Err(Error::corrupt(
            path,
            format!(
                "parent locator {i}: {n} bytes at offset {} lie outside the file",
                l.platform_data_offset
            ),
        ));
    }
    let mut data = vec![0u8; n as usize];
    read_exact_at(
        file,
        path,
        &mut data,
        l.platform_data_offset,
        "parent locator",
    )?;
    Ok(data)
}

/// Opens the parent of the differencing disk at `path`, read-only.
pub(crate) fn open_parent(
    file: &File,
    path: &Path,
    header: &DynamicHeader,
    opening: &mut Opening,
) -> Result<VhdDisk> {
    if opening.files.len() >= MAX_DEPTH {
        return Err(Error::unsupported(
            path,
            format!("the chain is deeper than {MAX_DEPTH} disks"),
        ));
    }
    let candidates = parent_candidates(file, path, header)?;
    let want = super::footer::uuid_text(&header.parent_unique_id);
    // Why each candidate was not the parent, to name them all if none is.
    let mut rejected: Vec<String> = Vec::new();
    let mut looped = None;
    for c in &candidates {
        let Ok(canon) = std::fs::canonicalize(c) else {
            rejected.push(format!("{} does not exist", c.display()));
            continue;
        };
        // Only the footer decides whether a file is the parent; its own chain
        // is opened only then, so that a stranger's broken chain, or a file
        // that is no VHD at all, is passed over rather than reported.
        let id = match unique_id_of(&canon) {
            Ok(id) => id,
            Err(e) => {
                rejected.push(format!("{} is not a VHD ({})", c.display(), describe(&e)));
                continue;
            }
        };
        if id != header.parent_unique_id {
            rejected.push(format!(
                "{} has unique id {}",
                c.display(),
                super::footer::uuid_text(&id)
            ));
            continue;
        }
        if opening.files.contains(&canon) {
            looped = Some(c.clone());
            continue;
        }
        return VhdDisk::open_in_chain(&canon, false, opening);
    }
    if let Some(c) = looped {
        return Err(Error::corrupt(
            path,
            format!(
                "the chain loops: its parent {} is already in the chain",
                c.display()
            ),
        ));
    }
    let wrong_id = rejected.iter().any(|r| r.contains("has unique id"));
    Err(Error::corrupt(
        path,
        if candidates.is_empty() {
            "parent not found: no parent locator or parent name leads to a file".to_string()
        } else if wrong_id {
            format!(
                "wrong parent: the child expects unique id {want}, but {}",
                rejected.join("; ")
            )
        } else {
            format!("parent not found: {}", rejected.join("; "))
        },
    ))
}

/// The unique id in the footer of the VHD at `path`.
fn unique_id_of(path: &Path) -> Result<[u8; 16]> {
    let file = crate::format::open_file(path, false)?;
    let len = file_len(&file, path)?;
    let (footer, _, _) = super::read_footer(&file, path, len)?;
    Ok(footer.unique_id)
}

/// An error with the system's reason when it has one.
pub(crate) fn describe(e: &Error) -> String {
    match e {
        Error::Io { source, .. } => format!("{e}: {source}"),
        _ => e.to_string(),
    }
}

/// An error met while opening the chain of `top`, naming `top` too when it
/// is about another file of the chain.
pub(crate) fn in_chain_of(top: &Path, e: Error) -> Error {
    let about = match &e {
        Error::Io { path, .. }
        | Error::Corrupt { path, .. }
        | Error::Unsupported { path, .. }
        | Error::OutOfRange { path, .. }
        | Error::ReadOnly { path } => Some(path.clone()),
        Error::InvalidArgument(_) => None,
    };
    match about {
        Some(p) if p != top => {
            Error::corrupt(top, format!("in its chain of parents: {}", describe(&e)))
        }
        _ => e,
    }
}
