//! Garbage collection (`vmhub serve --gc`): removes the blobs no manifest
//! references any more (after manifests were deleted or blob links removed)
//! and the uploads abandoned for longer than a grace period.
//!
//! It may run while hubs serve the same data, so it never removes what a
//! push under way still needs:
//! - a blob written less than the grace period ago is kept, so a push has
//!   that long between uploading a blob and pushing the manifest naming it;
//! - before anything is removed, the references are read again: a manifest
//!   pushed since the collection started marks what it names, and a blob
//!   linked into a repository since then (uploaded or mounted) is kept;
//! - an upload is removed only once nothing has been written to it for the
//!   grace period; its record goes before its bytes, so a crash in between
//!   leaves only bytes for the next collection.
//!
//! A blob's links go before its bytes for the same reason. What it cannot
//! close is the moment between that last check and the removal itself, in
//! which a mount of that very blob could slip in; the pusher then sees the
//! blob missing when it pushes the manifest, and uploads it again.

use crate::digest::Digest;
use crate::storage::StoredBlob;
use crate::{Hub, MAX_MANIFEST_SIZE};
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// How old an unreferenced blob or an idle upload must be to go.
    pub grace: Duration,
    /// Report what would go, remove nothing.
    pub dry_run: bool,
}

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Blobs removed, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Repository links of those blobs removed.
    pub links: usize,
    /// Uploads removed, with the bytes they held.
    pub uploads: Vec<(String, u64)>,
    /// Unreferenced blobs kept because they are younger than the grace
    /// period or were linked while the collection ran.
    pub kept: usize,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl GcReport {
    /// The bytes freed (or that would be): blobs and uploads.
    pub fn bytes(&self) -> u64 {
        let b: u64 = self.blobs.iter().map(|(_, n)| n).sum();
        let u: u64 = self.uploads.iter().map(|(_, n)| n).sum();
        b.saturating_add(u)
    }
}

/// Why a collection stopped. It removes nothing it has not checked, so
/// stopping early leaves garbage, never damage.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The metadata database failed.
    #[error("garbage collection: the database failed while {what}: {source}")]
    Db {
        /// What the collection was doing.
        what: &'static str,
        /// What went wrong.
        source: crate::db::DbError,
    },
    /// The blob store failed.
    #[error("garbage collection: the blob store failed while {what}: {source}")]
    Store {
        /// What the collection was doing.
        what: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A manifest could not be read, so what it references is unknown.
    #[error("garbage collection: manifest {digest} of {repo}: {reason}; nothing was removed")]
    Manifest {
        /// Its repository.
        repo: String,
        /// Its digest.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn db(what: &'static str) -> impl Fn(crate::db::DbError) -> GcError {
    move |source| GcError::Db { what, source }
}

fn store(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GcError {
    let what = what.into();
    move |source| GcError::Store { what, source }
}

/// The digests a manifest's JSON names: config, layers, blobs, the
/// manifests of an index and its subject.
fn references(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut take = |d: &Value| {
        if let Some(s) = d.get("digest").and_then(Value::as_str) {
            out.push(s.to_string());
        }
    };
    for one in ["config", "subject"] {
        if let Some(d) = v.get(one) {
            take(d);
        }
    }
    for many in ["layers", "manifests", "blobs"] {
        for d in v.get(many).and_then(Value::as_array).into_iter().flatten() {
            take(d);
        }
    }
    out
}

impl Hub {
    /// Marks as live every manifest stored now and not marked before, and
    /// what it references.
    async fn mark(
        &self,
        marked: &mut HashSet<(String, String)>,
        live: &mut HashSet<String>,
    ) -> Result<(), GcError> {
        let manifests = self
            .meta
            .all_manifests()
            .await
            .map_err(db("listing manifests"))?;
        for (repo, digest) in manifests {
            if marked.contains(&(repo.clone(), digest.clone())) {
                continue;
            }
            let bad = |reason: String| GcError::Manifest {
                repo: repo.clone(),
                digest: digest.clone(),
                reason,
            };
            let d = Digest::parse(&digest).map_err(|_| bad("not a sha256 digest".into()))?;
            let bytes = self
                .store
                .read_small(&d, MAX_MANIFEST_SIZE)
                .await
                .map_err(|e| bad(format!("cannot read it: {e}")))?;
            let v: Value =
                serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
            live.extend(references(&v));
            live.insert(digest.clone());
            marked.insert((repo, digest));
        }
        Ok(())
    }

    /// Collects garbage once: see the module documentation.
    pub async fn gc(&self, opts: &GcOptions) -> Result<GcReport, GcError> {
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        let cutoff = SystemTime::now()
            .checked_sub(opts.grace)
            .unwrap_or(UNIX_EPOCH);

        let uploads = self
            .store
            .list_uploads()
            .await
            .map_err(store("listing uploads"))?;
        for u in uploads.into_iter().filter(|u| u.modified < cutoff) {
            if !opts.dry_run {
                self.meta
                    .delete_upload(&u.id)
                    .await
                    .map_err(db("removing an upload"))?;
                self.store
                    .upload_delete(&u.id)
                    .await
                    .map_err(store(format!("removing upload {}", u.id)))?;
            }
            report.uploads.push((u.id, u.size));
        }

        // The links are read before the blobs are listed, so that a blob
        // stored after this point shows up as a new link below.
        let links_before: HashSet<(String, String)> = self
            .meta
            .all_blob_links()
            .await
            .map_err(db("listing blob links"))?
            .into_iter()
            .collect();
        let blobs = self
            .store
            .list_blobs()
            .await
            .map_err(store("listing blobs"))?;
        let mut live = HashSet::new();
        let mut marked = HashSet::new();
        self.mark(&mut marked, &mut live).await?;
        let unreferenced: Vec<StoredBlob> = blobs
            .into_iter()
            .filter(|b| !live.contains(&b.digest.to_string()))
            .collect();

        // Again, for what pushes did meanwhile.
        self.mark(&mut marked, &mut live).await?;
        let links_now = self
            .meta
            .all_blob_links()
            .await
            .map_err(db("listing blob links"))?;
        let linked_since: HashSet<&str> = links_now
            .iter()
            .filter(|l| !links_before.contains(*l))
            .map(|(_, d)| d.as_str())
            .collect();

        for b in unreferenced {
            let digest = b.digest.to_string();
            if b.modified >= cutoff
                || live.contains(&digest)
                || linked_since.contains(digest.as_str())
            {
                report.kept += 1;
                continue;
            }
            for (repo, _) in links_now.iter().filter(|(_, d)| *d == digest) {
                if !opts.dry_run {
                    self.meta
                        .unlink_blob(repo, &digest)
                        .await
                        .map_err(db("removing a blob link"))?;
                }
                report.links += 1;
            }
            if !opts.dry_run {
                self.store
                    .delete_blob(&b.digest)
                    .await
                    .map_err(store(format!("removing blob {digest}")))?;
            }
            report.blobs.push((b.digest, b.size));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_of_manifests_and_indexes() {
        let v: Value = serde_json::json!({
            "config": {"digest": "sha256:c"},
            "layers": [{"digest": "sha256:l1"}, {"digest": "sha256:l2"}],
            "subject": {"digest": "sha256:s"},
        });
        let mut r = references(&v);
        r.sort();
        assert_eq!(r, ["sha256:c", "sha256:l1", "sha256:l2", "sha256:s"]);
        let v: Value = serde_json::json!({"manifests": [{"digest": "sha256:m"}]});
        assert_eq!(references(&v), ["sha256:m"]);
        assert!(references(&serde_json::json!({"layers": 3})).is_empty());
    }
}
