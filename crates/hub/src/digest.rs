//! Content digests in the OCI form `algorithm:encoded` (OCI image spec,
//! "Digests"). The hub stores SHA-256 only; a well-formed digest of another
//! algorithm is recognised so that it can be refused as unsupported rather
//! than as malformed.

use sha2::{Digest as _, Sha256};
use std::fmt;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a digest the hub can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestError {
    /// Not of the digest grammar at all, or a sha256 digest of the wrong form.
    Invalid,
    /// Of the digest grammar, with an algorithm other than sha256.
    Unsupported,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// The 64 lowercase hex digits, without the algorithm.
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Parses `sha256:<64 lowercase hex>`. The grammar of the OCI image spec
    /// (`algorithm ":" encoded`, algorithm components `[a-z0-9]+` joined by
    /// `+._-`, encoded `[a-zA-Z0-9=_-]+`) tells a foreign algorithm from junk.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (alg, enc) = s.split_once(':').ok_or(DigestError::Invalid)?;
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let enc_ok = !enc.is_empty()
            && enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
        if !alg_ok || !enc_ok {
            return Err(DigestError::Invalid);
        }
        if alg != "sha256" {
            return Err(DigestError::Unsupported);
        }
        let b = enc.as_bytes();
        if b.len() != 64 {
            return Err(DigestError::Invalid);
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            let hi = pair
                .first()
                .and_then(|c| nibble(*c))
                .ok_or(DigestError::Invalid)?;
            let lo = pair
                .get(1)
                .and_then(|c| nibble(*c))
                .ok_or(DigestError::Invalid)?;
            *o = hi << 4 | lo;
        }
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A SHA-256 computed piece by piece as bytes stream in.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A new, empty hasher.
    pub fn new() -> Hasher {
        Hasher(Sha256::new())
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&s), Ok(d));
    }

    #[test]
    fn refuses_bad_forms() {
        assert_eq!(Digest::parse("sha256:abc"), Err(DigestError::Invalid));
        assert_eq!(Digest::parse("nonsense"), Err(DigestError::Invalid));
        assert_eq!(Digest::parse("sha256:../../etc"), Err(DigestError::Invalid));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert_eq!(Digest::parse(&upper), Err(DigestError::Invalid));
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert_eq!(Digest::parse(&sha512), Err(DigestError::Unsupported));
    }
}
