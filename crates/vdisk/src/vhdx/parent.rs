//! Finding and opening the parent of a differencing disk through its parent
//! locator ([MS-VHDX] 2.6.2.6).

use super::fields::{self, guid_text, ZERO_GUID};
use super::{corrupt, metadata, VhdxDisk, VhdxParentInfo};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

impl VhdxDisk {
    /// Finds and opens the parent through the parent locator: the relative
    /// path first, then the absolute one, each checked against parent_linkage.
    pub(super) fn open_parent(&mut self) -> Result<()> {
        let path = self.store.path.clone();
        let loc = self.meta.parent.clone().ok_or_else(|| {
            corrupt(
                &path,
                "file parameters: HasParent is set but there is no parent locator",
            )
        })?;
        if loc.kind != metadata::VHDX_PARENT_TYPE {
            return Err(Error::unsupported(
                &path,
                format!(
                    "parent locator: unknown locator type {}",
                    guid_text(&loc.kind)
                ),
            ));
        }
        let linkage = loc
            .get("parent_linkage")
            .ok_or_else(|| corrupt(&path, "parent locator: no parent_linkage entry"))?
            .to_string();
        let want = fields::parse_guid(&linkage).ok_or_else(|| {
            corrupt(
                &path,
                format!("parent locator: parent_linkage {linkage:?} is not a GUID"),
            )
        })?;
        let want2 = loc.get("parent_linkage2").and_then(fields::parse_guid);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut tried = Vec::new();
        // Like Windows: the relative path first, so that a chain moved as a
        // whole still opens; then the absolute one (a drive-letter path means
        // nothing here); then a file of the parent's name beside the child.
        // parent_linkage tells the right parent from a namesake.
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(r) = loc.get("relative_path") {
            candidates.push(dir.join(windows_path(r)));
        }
        if let Some(a) = loc.get("absolute_win32_path") {
            let a = windows_path(a);
            if a.starts_with('/') {
                candidates.push(PathBuf::from(&a));
            }
        }
        for key in ["relative_path", "absolute_win32_path", "volume_path"] {
            if let Some(name) = loc
                .get(key)
                .and_then(|v| v.rsplit(['\\', '/']).next())
                .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            {
                candidates.push(dir.join(name));
            }
        }
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|p| seen.insert(p.clone()));
        let depth = crate::format::parent_depth(&path)?;
        for c in candidates {
            if !c.is_file() {
                tried.push(format!("{} (not found)", c.display()));
                continue;
            }
            let parent = match crate::format::open_parent(&c) {
                Ok(p) => p,
                // The user opened this file: say so first. Deeper links pass
                // their error up unchanged, so that it is prefixed once.
                Err(e) if depth == 0 => return Err(parent_error(&path, &c, e)),
                Err(e) => return Err(e),
            };
            if parent.virtual_size() < self.meta.virtual_size {
                tried.push(format!(
                    "{} (its {} bytes are fewer than the child's {})",
                    c.display(),
                    parent.virtual_size(),
                    self.meta.virtual_size
                ));
                continue;
            }
            if let Some(crate::FormatDetails::Vhdx(pi)) = parent.info()?.details {
                let got = fields::parse_guid(&pi.data_write_guid).unwrap_or(ZERO_GUID);
                if got != want && Some(got) != want2 {
                    tried.push(format!(
                        "{} (its DataWriteGuid {} is not the parent_linkage {}: it changed since the child was made)",
                        c.display(),
                        pi.data_write_guid,
                        guid_text(&want)
                    ));
                    continue;
                }
            }
            self.parent_info = Some(Box::new(VhdxParentInfo {
                file: c.display().to_string(),
                parent_linkage: linkage,
                relative_path: loc.get("relative_path").map(str::to_string),
                absolute_win32_path: loc.get("absolute_win32_path").map(str::to_string),
                volume_path: loc.get("volume_path").map(str::to_string),
            }));
            self.parent = Some(parent);
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "{}: cannot find the parent disk: tried {}",
            path.display(),
            if tried.is_empty() {
                "no path (the locator has none)".to_string()
            } else {
                tried.join(", ")
            }
        )))
    }
}

/// A path from a parent locator, with Windows separators turned into '/'
/// and a leading "./" dropped.
fn windows_path(p: &str) -> String {
    let p = p.replace('\\', "/");
    match p.strip_prefix("./") {
        Some(rest) => rest.to_string(),
        None => p,
    }
}

/// `e`, from opening `parent` of `child`, told as an error of `child`.
fn parent_error(child: &Path, parent: &Path, e: Error) -> Error {
    let shown = parent.display();
    match e {
        Error::Corrupt { path, what } => {
            Error::corrupt(child, format!("parent {shown}: {}: {what}", path.display()))
        }
        Error::Unsupported { path, what } => {
            Error::unsupported(child, format!("parent {shown}: {}: {what}", path.display()))
        }
        Error::InvalidArgument(what) => {
            Error::InvalidArgument(format!("{}: parent {shown}: {what}", child.display()))
        }
        other => other,
    }
}
