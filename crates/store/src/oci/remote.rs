//! Remote references: `REGISTRY/REPOSITORY[:TAG][@DIGEST]`.

use crate::digest::Digest;
use crate::reference::{check_name, check_tag, DEFAULT_TAG};
use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// A machine in a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRef {
    /// Host and optional port ("registry.example.com", "127.0.0.1:5000").
    pub registry: String,
    /// The repository ("acme/debian").
    pub repository: String,
    /// The tag, when the reference has one.
    pub tag: Option<String>,
    /// The manifest digest, when the reference pins one.
    pub digest: Option<Digest>,
}

impl RemoteRef {
    /// The tag or digest to ask the registry for (the digest when both are given).
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// Whether the registry is this computer, where plain HTTP is the norm
    /// (as docker and skopeo treat localhost).
    pub fn is_local(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.")
    }
}

impl FromStr for RemoteRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<RemoteRef> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "{s:?}: not a registry reference (REGISTRY/REPOSITORY[:TAG][@DIGEST]): {why}"
            ))
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no registry host before the first '/'"))?;
        let host_like = registry.contains('.') || registry.contains(':') || registry == "localhost";
        if !host_like || registry.is_empty() {
            return Err(bad(
                "the first component must be a registry host (with a '.' or a port, or localhost)",
            ));
        }
        if !registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(bad("odd characters in the registry host"));
        }
        let last = path.rsplit('/').next().unwrap_or(path);
        let (repository, tag) = match last.rfind(':') {
            Some(i) => {
                let cut = path.len() - last.len() + i;
                (&path[..cut], Some(path[cut + 1..].to_string()))
            }
            None => (path, None),
        };
        check_name(repository)?;
        if let Some(t) = &tag {
            check_tag(t)?;
        }
        Ok(RemoteRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_references_parse() {
        let r: RemoteRef = "127.0.0.1:5000/acme/box:v1".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "acme/box");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.is_local());
        assert_eq!(r.to_string(), "127.0.0.1:5000/acme/box:v1");
        let r: RemoteRef = "registry.example.com/box".parse().unwrap();
        assert_eq!(r.reference(), "latest");
        assert!(!r.is_local());
        let d = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let r: RemoteRef = format!("localhost/a/b@{d}").parse().unwrap();
        assert_eq!(r.reference(), d);
        for bad in [
            "box",
            "box:1",
            "acme/box",
            "/box",
            "host.com/",
            "host.com/Box",
            "host.com/a/../b",
            "host.com/box:a/b",
            "host.com/box@sha256:12",
            "ho st.com/box",
        ] {
            assert!(bad.parse::<RemoteRef>().is_err(), "{bad}");
        }
    }
}
