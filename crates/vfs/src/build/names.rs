//! Names FAT can hold: file and folder names, and the volume label.

use crate::{Error, Result};
use std::path::Path;

/// Refuses names a FAT long name cannot hold, or that `fatfs` does not write.
///
/// The FAT specification forbids `" * / : < > ? \ |` and control characters;
/// Windows drops trailing dots and spaces, so such a file could not be opened
/// there. `fatfs` 0.3 further takes at most 255 bytes of UTF-8 and only
/// characters of the Basic Multilingual Plane.
pub(super) fn check_name(name: &str, path: &Path) -> Result<()> {
    let bad = |why: String| Err(Error::Invalid(format!("{}: {why}", path.display())));
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric()
            || ('\u{80}'..='\u{FFFF}').contains(&c)
            || "$%'-_@~`!(){}. +,;=[]^#&".contains(c);
        if !ok {
            return if (c as u32) > 0xFFFF {
                bad(format!(
                    "the name holds {c:?}, outside the Basic Multilingual Plane, which the FAT writer cannot store"
                ))
            } else {
                bad(format!("FAT names cannot hold {c:?}"))
            };
        }
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return bad("FAT names cannot end with a dot or a space".into());
    }
    if name.len() > 255 {
        return bad(format!(
            "the name is {} bytes of UTF-8; the FAT writer takes at most 255",
            name.len()
        ));
    }
    Ok(())
}

/// The 11 bytes of a volume label: upper-case, padded with spaces.
pub(super) fn label_bytes(label: &str) -> Result<[u8; 11]> {
    let up = label.to_ascii_uppercase();
    if up.is_empty() || up.len() > 11 {
        return Err(Error::Invalid(format!(
            "label {label:?}: a FAT label has 1 to 11 characters"
        )));
    }
    if let Some(c) = up
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " !#$%&'()-@^_`{}~".contains(*c)))
    {
        return Err(Error::Invalid(format!(
            "label {label:?}: a FAT label holds letters, digits, spaces and ! # $ % & ' ( ) - @ ^ _ ` {{ }} ~, not {c:?}"
        )));
    }
    if up.starts_with(' ') {
        return Err(Error::Invalid(format!(
            "label {label:?}: a FAT label cannot start with a space"
        )));
    }
    let mut out = [b' '; 11];
    out[..up.len()].copy_from_slice(up.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fat_cannot_hold_are_refused() {
        let p = Path::new("x");
        for ok in [
            "a.txt",
            "résumé été.txt",
            "日本語.txt",
            "a b [1] (2) {3}.tar.gz",
            ".hidden",
        ] {
            check_name(ok, p).unwrap();
        }
        for bad in [
            "a:b", "a*", "q?", "\"", "<", ">", "|", "a\\b", "dot.", "space ", "\u{1}", "😀",
        ] {
            assert!(check_name(bad, p).is_err(), "{bad:?}");
        }
        assert!(check_name(&"é".repeat(128), p).is_err());
    }

    #[test]
    fn labels() {
        assert_eq!(&label_bytes("data").unwrap(), b"DATA       ");
        assert!(label_bytes("twelve chars").is_err());
        assert!(label_bytes("a.b").is_err());
        assert!(label_bytes("").is_err());
    }
}
