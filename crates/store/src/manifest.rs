//! OCI image manifests and descriptors, and the machine manifest built from them.
//!
//! A machine version is an image manifest (OCI image spec v1.1) with
//! `artifactType` [`MACHINE_ARTIFACT_TYPE`]; its config is the machine
//! description, its layers are the disk index blobs (one per disk, in disk
//! order) followed by every chunk blob the disks use, each once.

use crate::digest::Digest;
use crate::index::{CHUNK_MEDIA_TYPE, DISK_INDEX_MEDIA_TYPE};
use crate::machine::MACHINE_CONFIG_MEDIA_TYPE;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The artifact type of a machine manifest.
pub const MACHINE_ARTIFACT_TYPE: &str = "application/vnd.vmhub.machine.v1+json";
/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The largest manifest read.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// The annotation that names a manifest in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the content is.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// For manifests: the artifact type they carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor of `data` as `media_type`.
    pub fn of(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: Digest::of(data),
            size: data.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// An OCI image manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    #[serde(default)]
    pub media_type: Option<String>,
    /// [`MACHINE_ARTIFACT_TYPE`] for a machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The machine description.
    pub config: Descriptor,
    /// Disk indexes, then chunks.
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (signatures point at the machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations (`org.opencontainers.image.*`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// Parses a manifest and checks that it is a machine's (`what` names it).
    pub fn machine_from_json(data: &[u8], what: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(what, format!("not an OCI image manifest: {e}")))?;
        let bad = |p: String| Err(Error::corrupt(what, p));
        if m.schema_version != 2 {
            return bad(format!("schemaVersion {}, not 2", m.schema_version));
        }
        if m.media_type
            .as_deref()
            .is_some_and(|t| t != MANIFEST_MEDIA_TYPE)
        {
            return bad(format!(
                "media type {:?} is not an image manifest",
                m.media_type
            ));
        }
        if m.artifact_type.as_deref() != Some(MACHINE_ARTIFACT_TYPE)
            || m.config.media_type != MACHINE_CONFIG_MEDIA_TYPE
        {
            return bad(format!(
                "not a vmhub machine (artifact type {:?}, config {:?})",
                m.artifact_type, m.config.media_type
            ));
        }
        if m.config.size > crate::machine::MAX_CONFIG_BYTES {
            return bad(format!("machine description of {} bytes", m.config.size));
        }
        for (i, l) in m.layers.iter().enumerate() {
            let limit = match l.media_type.as_str() {
                DISK_INDEX_MEDIA_TYPE => crate::index::MAX_INDEX_BYTES,
                CHUNK_MEDIA_TYPE => u64::from(crate::index::MAX_CHUNK) * 2,
                other => return bad(format!("layer {i} has unknown media type {other:?}")),
            };
            if l.size > limit {
                return bad(format!("layer {i} ({}) claims {} bytes", l.digest, l.size));
            }
        }
        Ok(m)
    }

    /// The manifest as compact JSON (a machine lists thousands of chunks, and
    /// registries cap manifests at a few MiB).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// An OCI image index (the `index.json` of a layout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// [`INDEX_MEDIA_TYPE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
}

impl Default for ImageIndex {
    fn default() -> Self {
        ImageIndex {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.to_string()),
            manifests: Vec::new(),
        }
    }
}
