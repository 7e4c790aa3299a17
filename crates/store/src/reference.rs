//! Machine references, `NAME[:TAG]`, with the rules OCI distribution sets for
//! repository names and tags, so every name in a library can be pushed as is.

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The tag a reference without one gets.
pub const DEFAULT_TAG: &str = "latest";

/// A machine's name and tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineRef {
    /// Lowercase path components joined by `/` (OCI repository name rules).
    pub name: String,
    /// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    pub tag: String,
}

impl MachineRef {
    /// A reference from a name and tag, both checked.
    pub fn new(name: &str, tag: &str) -> Result<MachineRef> {
        check_name(name)?;
        check_tag(tag)?;
        Ok(MachineRef {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl FromStr for MachineRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<MachineRef> {
        // A tag never contains `/`, so the tag is what follows the last `:`
        // after the last `/`.
        let last = s.rsplit('/').next().unwrap_or(s);
        match last.rfind(':') {
            Some(i) => {
                let cut = s.len() - last.len() + i;
                MachineRef::new(&s[..cut], &s[cut + 1..])
            }
            None => MachineRef::new(s, DEFAULT_TAG),
        }
    }
}

impl fmt::Display for MachineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// Checks a repository name: components of `[a-z0-9]+` joined by `.`, `_`,
/// `__` or runs of `-`, separated by `/`.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "{name:?}: not a machine name: {why}"
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 255 {
        return bad("longer than 255 characters");
    }
    for component in name.split('/') {
        if !component_ok(component) {
            return bad("use lowercase letters and digits, joined by single '.', '_' or '__', or by '-', with '/' between path components");
        }
    }
    Ok(())
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let x = b[i];
        if alnum(x) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or one or more "-", then alphanumerics.
        let start = i;
        match x {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !b.get(i).is_some_and(|&n| alnum(n)) {
            return false;
        }
    }
    true
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<()> {
    let b = tag.as_bytes();
    let word = |x: &u8| x.is_ascii_alphanumeric() || *x == b'_';
    let ok = !b.is_empty()
        && b.len() <= 128
        && b.first().is_some_and(word)
        && b.iter().all(|x| word(x) || *x == b'.' || *x == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{tag:?}: not a tag: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r: MachineRef = "debian".parse().unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_str()), ("debian", "latest"));
        let r: MachineRef = "acme/debian-12.x:v1.2".parse().unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_str()),
            ("acme/debian-12.x", "v1.2")
        );
        assert_eq!(r.to_string(), "acme/debian-12.x:v1.2");
        for good in ["a", "a__b", "a--b", "a.b/c_d", "0"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a b", "..", "a/../b", "é",
            "a.", "_a",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
        assert!("debian:".parse::<MachineRef>().is_err());
        assert!("debian:a:b".parse::<MachineRef>().is_err());
    }
}
