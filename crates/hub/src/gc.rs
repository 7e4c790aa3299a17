//! Garbage collection (`vmhub serve --gc`): removes the blobs no manifest
//! references any more (after manifests were deleted or blob links removed)
//! and the uploads abandoned for longer than a grace period.
//!
//! It may run while hubs serve the same data, so it never removes what a
//! push under way needs:
//! - a blob written less than the grace period ago is kept, so a push has
//!   that long between uploading a blob and pushing the manifest naming it;
//! - every use of a blob by a push (claiming it before writing its bytes,
//!   linking it into a repository, storing a manifest that names it) counts
//!   on the blob's guard row, in the transaction that records the use. The
//!   collection reads the guards before anything else; before it removes a
//!   blob it dooms it (a write to the same row, so the database orders the
//!   two) and reads the count again. A changed count means a push used the
//!   blob meanwhile, and the blob is spared; once doomed, a push that wants
//!   it waits or is told to try again, and storing a manifest naming it
//!   fails. So no push is told a blob is there while it is removed;
//! - an upload is removed only once nothing has been written to it for the
//!   grace period; its record goes before its bytes, so a crash in between
//!   leaves only bytes for the next collection.
//!
//! A blob's links go before its bytes, and its guard says "collected" only
//! after both; a collection that stops half-way leaves blobs doomed, and the
//! next one finishes or spares them.

use crate::db::GuardState;
use crate::digest::Digest;
use crate::{Hub, MAX_MANIFEST_SIZE};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
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
    /// period or a push used them while the collection ran.
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
    /// Every manifest stored now and what each references: the live blobs.
    async fn mark(&self) -> Result<HashSet<String>, GcError> {
        let mut live = HashSet::new();
        let manifests = self
            .meta
            .all_manifests()
            .await
            .map_err(db("listing manifests"))?;
        for (repo, digest) in manifests {
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
            live.insert(digest);
        }
        Ok(live)
    }

    /// Removes doomed blob `d`: its links (in `repos`), its bytes, then
    /// its guard says so. If the bytes cannot be removed, the blob is spared
    /// (it is whole, and unreferenced as before).
    async fn remove_blob(&self, d: &Digest, repos: &[&str]) -> Result<(), GcError> {
        let digest = d.to_string();
        for repo in repos {
            self.meta
                .unlink_blob(repo, &digest)
                .await
                .map_err(db("removing a blob link"))?;
        }
        if let Err(e) = self.store.delete_blob(d).await {
            // Best effort: if this fails too, the next collection spares it.
            let _ = self.meta.spare_blob(&digest).await;
            return Err(store(format!("removing blob {digest}"))(e));
        }
        self.meta
            .blob_collected(&digest)
            .await
            .map_err(db("recording a removed blob"))
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

        // The guards first: a push that uses a blob after this point changes
        // its count. Then the links: one added later has changed the count.
        let guards = self
            .meta
            .blob_guards()
            .await
            .map_err(db("reading blob guards"))?;
        let all_links = self
            .meta
            .all_blob_links()
            .await
            .map_err(db("listing blob links"))?;
        let mut links: HashMap<&str, Vec<&str>> = HashMap::new();
        for (repo, digest) in &all_links {
            links.entry(digest).or_default().push(repo);
        }
        let blobs = self
            .store
            .list_blobs()
            .await
            .map_err(store("listing blobs"))?;
        let live = self.mark().await?;

        // Blobs doomed by a collection that stopped half-way: removed if
        // their bytes are gone, spared if something references them, and
        // otherwise collected below like any other.
        if !opts.dry_run {
            let stored: HashSet<String> = blobs.iter().map(|b| b.digest.to_string()).collect();
            for (digest, _) in guards.iter().filter(|(_, g)| g.state == GuardState::Doomed) {
                if !stored.contains(digest) {
                    self.meta
                        .blob_collected(digest)
                        .await
                        .map_err(db("finishing an earlier collection"))?;
                } else if live.contains(digest) {
                    self.meta
                        .spare_blob(digest)
                        .await
                        .map_err(db("finishing an earlier collection"))?;
                }
            }
        }

        for b in blobs {
            let digest = b.digest.to_string();
            if live.contains(&digest) {
                continue;
            }
            if b.modified >= cutoff {
                report.kept += 1;
                continue;
            }
            let linked = links.get(digest.as_str()).map_or(&[][..], Vec::as_slice);
            if !opts.dry_run {
                let before = guards.get(&digest).map_or(0, |g| g.uses);
                let now = self
                    .meta
                    .doom_blob(&digest)
                    .await
                    .map_err(db("dooming a blob"))?;
                if now != before {
                    self.meta
                        .spare_blob(&digest)
                        .await
                        .map_err(db("sparing a blob"))?;
                    report.kept += 1;
                    continue;
                }
                self.remove_blob(&b.digest, linked).await?;
            }
            report.links += linked.len();
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
