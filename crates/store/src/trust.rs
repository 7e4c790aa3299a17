//! Signatures on machines, trusted keys, and rollback protection.
//!
//! A machine is signed with Ed25519 over its machine description's digest
//! (the manifest's config). The description names every disk index by
//! digest, each index names every chunk by digest, and a pull refuses layers
//! that no disk uses, so the signature covers every byte of the machine.
//!
//! The signature travels as two annotations of the machine's manifest
//! ([`SIGNATURE`], [`SIGNATURE_KEY`]), not as an OCI referrer: the
//! distribution registry 2.8 has no referrers API and skopeo 1.9 does not copy
//! referrers, so a referrer would be lost whenever a machine is mirrored,
//! while annotations travel with the manifest wherever it is copied. Signing
//! changes the manifest's digest, so `push` signs before it uploads.
//!
//! Rollback: the library records, for each name it pulled a verified machine
//! into, the description's creation time; a later pull into that name of a
//! machine created earlier is refused.

use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::{Error, Result};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Manifest annotation holding the signature (base64).
pub const SIGNATURE: &str = "dev.vmhub.signature";
/// Manifest annotation holding the public key that signed ([`PublicKey`] form).
pub const SIGNATURE_KEY: &str = "dev.vmhub.signature.key";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What is signed for a machine whose description has digest `config`.
fn payload(config: &Digest) -> Vec<u8> {
    format!("vmhub machine signature v1\n{config}\n").into_bytes()
}

/// An Ed25519 public key, written `ed25519:<base64>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// A short id: the first 16 hex digits of the key's SHA-256.
    pub fn id(&self) -> String {
        Digest::of(&self.0).hex().chars().take(16).collect()
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ed25519:{}", B64.encode(self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for PublicKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<PublicKey> {
        let bad = || {
            Error::InvalidArgument(format!(
                "{s:?}: not a public key (ed25519:<base64 of 32 bytes>)"
            ))
        };
        let b = s.trim().strip_prefix("ed25519:").ok_or_else(bad)?;
        let raw = B64.decode(b).map_err(|_| bad())?;
        let key: [u8; 32] = raw.try_into().map_err(|_| bad())?;
        VerifyingKey::from_bytes(&key).map_err(|_| bad())?;
        Ok(PublicKey(key))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A signing key.
pub struct KeyPair {
    key: SigningKey,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    secret: String,
    public: PublicKey,
}

impl KeyPair {
    /// A new random key.
    pub fn generate() -> Result<KeyPair> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| {
            Error::InvalidArgument(format!("cannot get random bytes for a key: {e}"))
        })?;
        Ok(KeyPair {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<KeyPair> {
        let data = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
        let what = path.display().to_string();
        let f: KeyFile = serde_json::from_slice(&data)
            .map_err(|e| Error::corrupt(what.clone(), format!("not a vmhub key file: {e}")))?;
        let secret: [u8; 32] = B64
            .decode(&f.secret)
            .ok()
            .and_then(|s| s.try_into().ok())
            .filter(|_| f.kind == "ed25519")
            .ok_or_else(|| Error::corrupt(what.clone(), "not an Ed25519 secret key"))?;
        let key = SigningKey::from_bytes(&secret);
        if key.verifying_key().to_bytes() != f.public.0 {
            return Err(Error::corrupt(
                what,
                "the public key does not belong to the secret key",
            ));
        }
        Ok(KeyPair { key })
    }

    /// Writes the key to `path` (mode 0600); an existing file is kept unless
    /// `overwrite`.
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let f = KeyFile {
            kind: "ed25519".into(),
            secret: B64.encode(self.key.to_bytes()),
            public: self.public(),
        };
        let data = serde_json::to_vec_pretty(&f).unwrap_or_default();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create folder", e))?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).mode(0o600);
        if overwrite {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        let mut file = opts.open(path).map_err(|e| Error::io(path, "create", e))?;
        file.write_all(&data)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(path, "write", e))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// Signs `manifest` (replacing any signature it had).
    pub fn sign(&self, manifest: &mut Manifest) {
        let sig = self.key.sign(&payload(&manifest.config.digest));
        manifest
            .annotations
            .insert(SIGNATURE.into(), B64.encode(sig.to_bytes()));
        manifest
            .annotations
            .insert(SIGNATURE_KEY.into(), self.public().to_string());
    }
}

/// Whether `manifest` carries a signature by `key` that verifies.
pub fn signed_by(manifest: &Manifest) -> Result<Option<PublicKey>> {
    let (Some(sig), Some(key)) = (
        manifest.annotations.get(SIGNATURE),
        manifest.annotations.get(SIGNATURE_KEY),
    ) else {
        return Ok(None);
    };
    let key: PublicKey = key.parse()?;
    let sig: [u8; 64] = B64
        .decode(sig)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::corrupt("manifest", "the signature is not 64 bytes of base64"))?;
    let vk = VerifyingKey::from_bytes(&key.0)
        .map_err(|_| Error::corrupt("manifest", "the signing key is not a valid Ed25519 key"))?;
    vk.verify(&payload(&manifest.config.digest), &Signature::from_bytes(&sig))
        .map_err(|_| {
            Error::corrupt(
                "manifest",
                format!(
                    "the signature by key {} does not verify: the machine was changed after it was signed",
                    key.id()
                ),
            )
        })?;
    Ok(Some(key))
}

/// A trusted key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// A name for people.
    pub name: String,
    /// The key.
    pub key: PublicKey,
}

/// The keys whose signatures `pull` accepts.
#[derive(Clone, Debug)]
pub struct TrustStore {
    path: PathBuf,
    /// The keys.
    pub keys: Vec<TrustedKey>,
}

impl TrustStore {
    /// Reads `path` (an absent file trusts nothing).
    pub fn load(path: &Path) -> Result<TrustStore> {
        let keys = match std::fs::read(path) {
            Ok(d) => serde_json::from_slice(&d).map_err(|e| {
                Error::corrupt(
                    path.display().to_string(),
                    format!("not a list of trusted keys: {e}"),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path, "read", e)),
        };
        Ok(TrustStore {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The entry for `key`, if trusted.
    pub fn find(&self, key: &PublicKey) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.key == *key)
    }

    /// Trusts `key` under `name` and writes the file.
    pub fn add(&mut self, name: &str, key: PublicKey) -> Result<()> {
        self.keys.retain(|k| k.key != key);
        self.keys.push(TrustedKey {
            name: name.to_string(),
            key,
        });
        self.save()
    }

    /// Stops trusting `key`; false when it was not trusted.
    pub fn remove(&mut self, key: &PublicKey) -> Result<bool> {
        let before = self.keys.len();
        self.keys.retain(|k| k.key != *key);
        if self.keys.len() == before {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    fn save(&self) -> Result<()> {
        let data = serde_json::to_vec_pretty(&self.keys).unwrap_or_default();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create folder", e))?;
        }
        crate::library::write_atomic(&self.path, &data)
    }

    /// Checks that `manifest` is signed by a trusted key; returns the key.
    pub fn verify(&self, manifest: &Manifest, what: &str) -> Result<TrustedKey> {
        let key = signed_by(manifest)
            .map_err(|e| match e {
                Error::Corrupt { problem, .. } => Error::corrupt(what, problem),
                other => other,
            })?
            .ok_or_else(|| {
                Error::Untrusted(format!(
                    "{what}: the machine is not signed (pull with --insecure-skip-verify to take it anyway)"
                ))
            })?;
        self.find(&key).cloned().ok_or_else(|| {
            Error::Untrusted(format!(
                "{what}: signed by key {} ({key}), which is not trusted here; if it is the publisher's, run `vmhub key trust {key}`",
                key.id()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Descriptor;

    fn manifest() -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: None,
            artifact_type: None,
            config: Descriptor::of("x", b"config"),
            layers: vec![],
            subject: None,
            annotations: Default::default(),
        }
    }

    #[test]
    fn signatures_verify_and_detect_changes() {
        let dir = tempfile::tempdir().unwrap();
        let k = KeyPair::generate().unwrap();
        let path = dir.path().join("key.json");
        k.save(&path, false).unwrap();
        assert!(
            k.save(&path, false).is_err(),
            "an existing key was overwritten"
        );
        let k2 = KeyPair::load(&path).unwrap();
        assert_eq!(k2.public(), k.public());
        assert_eq!(
            k.public().to_string().parse::<PublicKey>().unwrap(),
            k.public()
        );

        let mut m = manifest();
        assert_eq!(signed_by(&m).unwrap(), None);
        k.sign(&mut m);
        assert_eq!(signed_by(&m).unwrap(), Some(k.public()));
        let mut trust = TrustStore::load(&dir.path().join("trusted.json")).unwrap();
        let err = trust.verify(&m, "m").unwrap_err().to_string();
        assert!(err.contains("vmhub key trust ed25519:"), "{err}");
        trust.add("me", k.public()).unwrap();
        let trust = TrustStore::load(&dir.path().join("trusted.json")).unwrap();
        assert_eq!(trust.verify(&m, "m").unwrap().name, "me");

        let mut tampered = m.clone();
        tampered.config = Descriptor::of("x", b"other config");
        let err = trust.verify(&tampered, "m").unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");
        let mut unsigned = m.clone();
        unsigned.annotations.clear();
        let err = trust.verify(&unsigned, "m").unwrap_err().to_string();
        assert!(err.contains("not signed"), "{err}");
        let mut bad = m.clone();
        bad.annotations.insert(SIGNATURE.into(), "AAAA".into());
        assert!(trust.verify(&bad, "m").is_err());
        for s in ["", "ed25519:", "ed25519:AAAA", "rsa:abc"] {
            assert!(s.parse::<PublicKey>().is_err(), "{s}");
        }
    }
}
