//! Paths that name a place inside an image, `IMAGE[:PARTITION]:/path`, and
//! normalized paths inside a filesystem.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Where a command points: an image file, maybe a partition, a path in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The image file.
    pub image: PathBuf,
    /// The partition number, when given.
    pub partition: Option<u32>,
    /// The normalized absolute path inside the filesystem (`/` when none).
    pub path: String,
}

/// Parses `IMAGE[:PARTITION][:/path]`. The image part is the longest prefix,
/// ending before a `:`, that names an existing file, so image names may hold
/// colons; `IMAGE` alone means its root.
pub fn parse_target(arg: &str) -> Result<Target> {
    let is_image = |p: &str| !p.is_empty() && Path::new(p).exists() && !Path::new(p).is_dir();
    let mut best: Option<Target> = None;
    for (i, _) in arg.match_indices(':') {
        let (image, rest) = (&arg[..i], &arg[i + 1..]);
        if !is_image(image) {
            continue;
        }
        if let Some(t) = parse_rest(image, rest)? {
            best = Some(t);
        }
    }
    if let Some(t) = best {
        return Ok(t);
    }
    if is_image(arg) {
        return Ok(Target {
            image: PathBuf::from(arg),
            partition: None,
            path: "/".into(),
        });
    }
    let image = arg.split(":/").next().unwrap_or(arg);
    Err(Error::NotFound(format!(
        "{image} (expected IMAGE[:PARTITION]:/path with IMAGE an existing image file)"
    )))
}

fn parse_rest(image: &str, rest: &str) -> Result<Option<Target>> {
    let (partition, path) = if rest.is_empty() || rest.starts_with('/') {
        (None, rest)
    } else {
        let (num, path) = match rest.split_once(':') {
            Some((n, p)) => (n, p),
            None => (rest, ""),
        };
        if !(path.is_empty() || path.starts_with('/')) {
            return Ok(None);
        }
        match num.parse::<u32>() {
            Ok(n) => (Some(n), path),
            Err(_) => return Ok(None),
        }
    };
    Ok(Some(Target {
        image: PathBuf::from(image),
        partition,
        path: normalize(if path.is_empty() { "/" } else { path })?,
    }))
}

/// The absolute, normalized form of a path inside a filesystem: `/`-separated,
/// without empty, `.` or `..` components (`..` at the root stays at the root).
/// Refuses NUL bytes.
pub fn normalize(p: &str) -> Result<String> {
    if p.contains('\0') {
        return Err(Error::Invalid(format!(
            "{p:?}: a path cannot hold a NUL byte"
        )));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The parent directory and the last name of a normalized path; `None` for `/`.
pub fn split(p: &str) -> Option<(&str, &str)> {
    let i = p.rfind('/')?;
    let name = &p[i + 1..];
    if name.is_empty() {
        return None;
    }
    Some((if i == 0 { "/" } else { &p[..i] }, name))
}

/// `dir` joined with `name`.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing() {
        assert_eq!(normalize("").unwrap(), "/");
        assert_eq!(normalize("/a//b/./c/").unwrap(), "/a/b/c");
        assert_eq!(normalize("/../../etc/../x").unwrap(), "/x");
        assert_eq!(normalize("a/b").unwrap(), "/a/b");
        assert!(normalize("/a\0b").is_err());
        assert_eq!(split("/a/b"), Some(("/a", "b")));
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/"), None);
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
    }

    #[test]
    fn targets() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("d:1.vhd");
        std::fs::write(&img, b"x").unwrap();
        let s = img.to_str().unwrap();
        let t = parse_target(&format!("{s}:2:/etc/../etc/os-release")).unwrap();
        assert_eq!(t.image, img);
        assert_eq!(t.partition, Some(2));
        assert_eq!(t.path, "/etc/os-release");
        let t = parse_target(&format!("{s}:/boot")).unwrap();
        assert_eq!((t.partition, t.path.as_str()), (None, "/boot"));
        let t = parse_target(s).unwrap();
        assert_eq!((t.partition, t.path.as_str()), (None, "/"));
        let t = parse_target(&format!("{s}:3")).unwrap();
        assert_eq!((t.partition, t.path.as_str()), (Some(3), "/"));
        assert!(parse_target(&format!("{s}x:/a")).is_err());
        assert!(parse_target(&format!("{s}:x:/a")).is_err());
    }
}
