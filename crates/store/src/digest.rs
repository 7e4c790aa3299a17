//! Digests: SHA-256 in the OCI form `sha256:<64 lowercase hex digits>` for
//! blobs, and [`ContentDigest`] for the content of chunks.

use crate::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// The algorithm prefix of every digest vmhub writes.
const PREFIX: &str = "sha256:";

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// The digest's bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Parses a digest as an OCI registry meets it: `sha256:<64 lowercase
    /// hex>`. The grammar of the OCI image spec ("Digests": `algorithm ":"
    /// encoded`, algorithm components `[a-z0-9]+` joined by `+._-`, encoded
    /// `[a-zA-Z0-9=_-]+`) tells a well-formed digest of another algorithm
    /// ([`DigestError::Unsupported`]) from junk ([`DigestError::Invalid`]).
    pub fn parse(s: &str) -> std::result::Result<Digest, DigestError> {
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
        Digest::from_hex(enc).ok_or(DigestError::Invalid)
    }

    /// Parses the 64 hex digits of a SHA-256 digest (lowercase only, as OCI
    /// requires of the encoded part).
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let b = hex.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            let hi = nibble(*pair.first()?)?;
            let lo = nibble(*pair.get(1)?)?;
            *o = hi << 4 | lo;
        }
        Some(Digest(out))
    }
}

/// Why a string is not a digest [`Digest::parse`] accepts.
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

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest> {
        let bad = || {
            Error::InvalidArgument(format!(
                "{s:?}: not a digest (expected sha256: and 64 lowercase hex digits)"
            ))
        };
        let hex = s.strip_prefix(PREFIX).ok_or_else(bad)?;
        Digest::from_hex(hex).ok_or_else(bad)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A digest computed piece by piece.
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

/// The digest of a chunk's content (uncompressed), as a disk index records it:
/// `blake3:<64 hex digits>` for chunks vmhub stores now, `sha256:…` for chunks
/// stored by earlier versions (still read and checked).
///
/// Chunks are recognised by their content before they are compressed, so a
/// chunk the library already holds costs one hash and no compression. BLAKE3
/// hashes about three times faster than SHA-256 with SHA-NI on the same core
/// (BENCHMARKS.md, "Import"), and every byte imported is hashed this way;
/// blobs keep SHA-256, which OCI requires.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentDigest {
    /// BLAKE3, 256 bits.
    Blake3([u8; 32]),
    /// SHA-256.
    Sha256([u8; 32]),
}

impl ContentDigest {
    /// The digest vmhub gives `data` now (BLAKE3).
    pub fn of(data: &[u8]) -> ContentDigest {
        ContentDigest::Blake3(*blake3::hash(data).as_bytes())
    }

    /// Whether `data` has this digest, with this digest's algorithm.
    pub fn matches(&self, data: &[u8]) -> bool {
        match self {
            ContentDigest::Blake3(d) => blake3::hash(data).as_bytes() == d,
            ContentDigest::Sha256(d) => Digest::of(data).bytes() == d,
        }
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentDigest::Blake3(d) => write!(f, "blake3:{}", Digest(*d).hex()),
            ContentDigest::Sha256(d) => fmt::Display::fmt(&Digest(*d), f),
        }
    }
}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ContentDigest {
    type Err = Error;

    fn from_str(s: &str) -> Result<ContentDigest> {
        if let Some(hex) = s.strip_prefix("blake3:") {
            if let Some(d) = Digest::from_hex(hex) {
                return Ok(ContentDigest::Blake3(d.0));
            }
        } else if let Ok(d) = s.parse::<Digest>() {
            return Ok(ContentDigest::Sha256(d.0));
        }
        Err(Error::InvalidArgument(format!(
            "{s:?}: not a content digest (expected blake3: or sha256: and 64 lowercase hex digits)"
        )))
    }
}

impl serde::Serialize for ContentDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ContentDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ContentDigest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_digests_parse_and_foreign_ones_are_told_from_junk() {
        let d = Digest::of(b"");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&s), Ok(d));
        assert_eq!(Digest::parse("sha256:abc"), Err(DigestError::Invalid));
        assert_eq!(Digest::parse("nonsense"), Err(DigestError::Invalid));
        assert_eq!(Digest::parse("sha256:../../etc"), Err(DigestError::Invalid));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert_eq!(Digest::parse(&upper), Err(DigestError::Invalid));
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert_eq!(Digest::parse(&sha512), Err(DigestError::Unsupported));
    }

    #[test]
    fn known_digest_round_trips() {
        let d = Digest::of(b"abc");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        let mut h = Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), d);
    }

    #[test]
    fn content_digests_round_trip() {
        let d = ContentDigest::of(b"abc");
        let s = d.to_string();
        // The BLAKE3 test vector for "abc".
        assert_eq!(
            s,
            "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(s.parse::<ContentDigest>().unwrap(), d);
        assert!(d.matches(b"abc") && !d.matches(b"abd"));
        let old: ContentDigest = Digest::of(b"abc").to_string().parse().unwrap();
        assert_eq!(old, ContentDigest::Sha256(*Digest::of(b"abc").bytes()));
        assert!(old.matches(b"abc") && !old.matches(b"ab"));
        for bad in [
            "blake3:",
            "blake3:6437B3AC38465133FFB63B75273A8DB548C558465D79DB03FD359C6CD5BD9D85",
            "blake2:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
        ] {
            assert!(bad.parse::<ContentDigest>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_digests_are_refused() {
        for bad in [
            "",
            "sha256:",
            "sha512:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015adz",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a\u{e9}",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?}");
        }
    }
}
