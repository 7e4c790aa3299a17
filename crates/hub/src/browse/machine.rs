//! Finding a machine version's description and a disk's index in storage,
//! each checked against its digest.

use super::{Failure, QUEUE_WAIT};
use crate::digest::Digest;
use crate::storage::BlobStore;
use crate::{Hub, MAX_MANIFEST_SIZE};
use axum::http::StatusCode;
use std::collections::HashSet;
use std::sync::Arc;
use store::index::{DiskIndex, MAX_INDEX_BYTES};
use store::machine::{Machine, MAX_CONFIG_BYTES};
use store::manifest::Manifest;

/// Reads a stored blob of at most `max` bytes and checks its digest.
pub(super) async fn read_checked(
    store: &dyn BlobStore,
    d: &Digest,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, Failure> {
    let data = store
        .read_small(d, max.saturating_add(1))
        .await
        .map_err(|e| Failure::broken(format!("{what} ({d}) cannot be read: {e}")))?;
    if data.len() as u64 > max {
        return Err(Failure::broken(format!(
            "{what} ({d}) is larger than the {max} bytes allowed for it"
        )));
    }
    if Digest::of(&data) != *d {
        return Err(Failure::broken(format!(
            "{what} ({d}) is damaged in storage: its content has another digest"
        )));
    }
    Ok(data)
}

/// The hub's digest of a store digest (both SHA-256).
pub(super) fn hub_digest(d: &store::Digest) -> Result<Digest, Failure> {
    Digest::parse(&d.to_string())
        .map_err(|e| Failure::broken(format!("{d} is not a digest the hub stores: {e:?}")))
}

/// The manifest and description of the machine whose manifest is `digest`.
pub(super) async fn load_machine(hub: &Hub, digest: &str) -> Result<(Manifest, Machine), Failure> {
    let d = Digest::parse(digest)
        .map_err(|e| Failure::broken(format!("tag names {digest:?}: {e:?}")))?;
    let json = read_checked(hub.store.as_ref(), &d, MAX_MANIFEST_SIZE, "the manifest").await?;
    let manifest: Manifest = serde_json::from_slice(&json)
        .map_err(|e| Failure::broken(format!("manifest {d} cannot be read: {e}")))?;
    if manifest.artifact_type.as_deref() != Some(store::manifest::MACHINE_ARTIFACT_TYPE) {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "Not a machine",
            format!("manifest {d} is not a vmhub machine, so it has no disks to look into"),
        ));
    }
    let cd = hub_digest(&manifest.config.digest)?;
    let config = read_checked(
        hub.store.as_ref(),
        &cd,
        MAX_CONFIG_BYTES,
        "the machine description",
    )
    .await?;
    let machine = Machine::from_json(&config, &format!("machine description {cd}"))
        .map_err(|e| Failure::broken(e.to_string()))?;
    Ok((manifest, machine))
}

/// The index of `disk`, parsed and checked: every chunk it names must be a
/// layer of `manifest` (so that a machine reads only blobs pushed with it).
pub(super) async fn load_index(
    hub: &Hub,
    manifest: &Manifest,
    disk: &store::machine::MachineDisk,
) -> Result<Arc<DiskIndex>, Failure> {
    let d = hub_digest(&disk.index)?;
    let index = match hub.browser.cached_index(&d) {
        Some(i) => i,
        None => {
            // An index may take a few hundred MiB to read and parse: these
            // take turns with the pages, so that their memory stays bounded.
            let _turn =
                tokio::time::timeout(QUEUE_WAIT, Arc::clone(&hub.browser.pages).acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .ok_or_else(|| {
                        Failure::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "Busy",
                            "The hub is reading other disks; try again in a moment.",
                        )
                    })?;
            let what = format!("the index of disk {}", disk.name);
            let json = read_checked(hub.store.as_ref(), &d, MAX_INDEX_BYTES, &what).await?;
            // Parsing half a million chunks takes a while: off the workers.
            let index = tokio::task::spawn_blocking(move || DiskIndex::from_json(&json, &what))
                .await
                .map_err(|e| Failure::broken(format!("reading a disk index failed: {e}")))?
                .map_err(|e| Failure::broken(e.to_string()))?;
            let index = Arc::new(index);
            hub.browser.keep_index(d, &index);
            index
        }
    };
    if index.size != disk.size {
        return Err(Failure::broken(format!(
            "the index of disk {} describes {} bytes, the machine says {}",
            disk.name, index.size, disk.size
        )));
    }
    let layers: HashSet<store::Digest> = manifest.layers.iter().map(|l| l.digest).collect();
    if let Some(c) = index.chunks.iter().find(|c| !layers.contains(&c.blob)) {
        return Err(Failure::broken(format!(
            "the index of disk {} names chunk {}, which the manifest does not list",
            disk.name, c.blob
        )));
    }
    Ok(index)
}
