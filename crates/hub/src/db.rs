//! The registry's metadata: which repository holds which blobs, manifests
//! and tags, and the uploads in progress. [`Metadata`] is what the registry
//! needs; [`SqlMetadata`] keeps it in SQL that SQLite and PostgreSQL both
//! accept (`$n` parameters, `ON CONFLICT`, plain types), through sqlx's
//! driver-neutral pool. Every query of the hub is in this file.

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::path::Path;

/// A database failure.
pub type DbError = sqlx::Error;
type Result<T> = std::result::Result<T, DbError>;

/// A stored manifest's facts.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    /// Its digest (`sha256:...`).
    pub digest: String,
    /// The media type it was pushed with.
    pub media_type: String,
    /// Its size in bytes.
    pub size: i64,
    /// Its artifact type (the `artifactType` field, else the config's media type).
    pub artifact_type: Option<String>,
    /// The digest its `subject` names.
    pub subject: Option<String>,
    /// Its annotations, as JSON text.
    pub annotations: Option<String>,
}

/// A machine in the catalogue: one tag of a repository whose manifest is a
/// vmhub machine, with what its description says.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MachineRow {
    /// The repository.
    pub repository: String,
    /// The tag (the digest when it was pushed by digest).
    pub tag: String,
    /// The manifest's digest.
    pub digest: String,
    /// The machine's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it is for.
    pub description: String,
    /// The operating system inside.
    pub os: String,
    /// CPU architecture.
    pub architecture: String,
    /// Firmware ("bios", "uefi").
    pub firmware: String,
    /// Virtual CPUs.
    pub cpus: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Its disks: name and virtual size.
    pub disks: Vec<DiskRow>,
    /// When the machine was made, as its description says (RFC 3339).
    pub created: String,
    /// The key that signed it (`ed25519:...`), if the manifest is signed.
    pub signed_by: Option<String>,
    /// The bytes a full pull downloads: config, indexes and chunks.
    pub compressed_size: u64,
    /// When it was pushed to the hub, RFC 3339 UTC.
    pub pushed: String,
}

/// One disk of a catalogued machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskRow {
    /// Its name within the machine.
    pub name: String,
    /// Its virtual size in bytes.
    pub size: u64,
}

/// What a stored manifest references, as recorded with it: the blobs it
/// names (config and layers) and the manifests an index lists. Each must be
/// held by the repository when the manifest is stored.
#[derive(Debug, Clone, Default)]
pub struct References {
    /// Blob digests that must be linked into the repository.
    pub blobs: Vec<String>,
    /// Manifest digests that must be stored in the repository.
    pub manifests: Vec<String>,
}

/// What became of a manifest [`Metadata::put_manifest`] was asked to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// It is stored.
    Stored,
    /// Nothing was stored: the repository does not hold this digest.
    Missing(String),
    /// Nothing was stored: a garbage collection is removing this blob.
    Collecting(String),
}

/// An upload in progress.
#[derive(Debug, Clone)]
pub struct UploadRow {
    /// The repository it is for.
    pub repo: String,
    /// How many bytes it holds.
    pub offset: u64,
}

/// What the registry needs of its metadata store.
#[async_trait]
pub trait Metadata: Send + Sync {
    /// The size of blob `digest` if repository `repo` holds it.
    async fn repo_blob(&self, repo: &str, digest: &str) -> Result<Option<u64>>;
    /// Records that `repo` holds blob `digest` of `size` bytes; false, and
    /// nothing recorded, when a garbage collection has begun removing the
    /// blob or removed it since it was last claimed (see the `gc` module).
    async fn link_blob(&self, repo: &str, digest: &str, size: u64) -> Result<bool>;
    /// Before a push writes the bytes of blob `digest`: marks the blob used,
    /// so that a collection that began earlier keeps it, and takes back one
    /// removed before. False while a collection is removing it.
    async fn claim_blob(&self, digest: &str) -> Result<bool>;
    /// Removes blob `digest` from `repo`; false if it was not there.
    async fn unlink_blob(&self, repo: &str, digest: &str) -> Result<bool>;
    /// Records a new upload.
    async fn create_upload(&self, id: &str, repo: &str) -> Result<()>;
    /// An upload in progress.
    async fn upload(&self, id: &str) -> Result<Option<UploadRow>>;
    /// Records that upload `id` now holds `offset` bytes.
    async fn set_upload_offset(&self, id: &str, offset: u64) -> Result<()>;
    /// Forgets upload `id`.
    async fn delete_upload(&self, id: &str) -> Result<()>;
    /// Stores a manifest in `repo`, and points `tag` at it when given, if
    /// the repository holds everything it references and no collection is
    /// removing any of those blobs or the manifest's own bytes. The check
    /// and the store are one transaction, which marks the blobs used.
    async fn put_manifest(
        &self,
        repo: &str,
        m: &ManifestRow,
        tag: Option<&str>,
        refs: &References,
    ) -> Result<Stored>;
    /// A manifest of `repo` by digest.
    async fn manifest(&self, repo: &str, digest: &str) -> Result<Option<ManifestRow>>;
    /// The digest tag `tag` of `repo` points at.
    async fn tag(&self, repo: &str, tag: &str) -> Result<Option<String>>;
    /// Removes a manifest and the tags pointing at it; false if absent.
    async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<bool>;
    /// Removes a tag; false if absent.
    async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool>;
    /// Every tag of `repo`, in no particular order.
    async fn tags(&self, repo: &str) -> Result<Vec<String>>;
    /// Whether `repo` holds anything at all.
    async fn repo_exists(&self, repo: &str) -> Result<bool>;
    /// The manifests of `repo` whose subject is `digest`.
    async fn referrers(&self, repo: &str, digest: &str) -> Result<Vec<ManifestRow>>;
    /// Records a publishing token: the SHA-256 of its secret (hex), its
    /// owner and its scopes (separated by spaces).
    async fn create_token(&self, hash: &str, user: &str, scopes: &str) -> Result<()>;
    /// The owner and scopes of the token whose secret hashes to `hash`.
    async fn token(&self, hash: &str) -> Result<Option<(String, String)>>;
    /// Records (or replaces) a catalogue entry.
    async fn put_machine(&self, m: &MachineRow) -> Result<()>;
    /// Catalogue entries whose name, description or OS holds `term`
    /// (any entry when empty), most recently pushed first, at most `limit`.
    async fn search(&self, term: &str, limit: u32) -> Result<Vec<MachineRow>>;
    /// The catalogue entries of `repo`, most recently pushed first.
    async fn machines(&self, repo: &str, limit: u32) -> Result<Vec<MachineRow>>;
    /// Every publishing token, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRow>>;
    /// Removes the token whose secret hashes to `hash`; false if absent.
    async fn delete_token(&self, hash: &str) -> Result<bool>;
    /// Every manifest of every repository, as (repository, digest).
    async fn all_manifests(&self) -> Result<Vec<(String, String)>>;
    /// Every blob link of every repository, as (repository, digest).
    async fn all_blob_links(&self) -> Result<Vec<(String, String)>>;
    /// Every blob's guard, by digest (see the `gc` module).
    async fn blob_guards(&self) -> Result<std::collections::HashMap<String, Guard>>;
    /// Garbage collection: marks blob `digest` as being removed, after which
    /// no push can use it; returns its use count, to compare with the one
    /// seen when the collection began.
    async fn doom_blob(&self, digest: &str) -> Result<i64>;
    /// Garbage collection: blob `digest` stays after all (doomed, it is
    /// usable again).
    async fn spare_blob(&self, digest: &str) -> Result<()>;
    /// Garbage collection: blob `digest` (doomed) is removed.
    async fn blob_collected(&self, digest: &str) -> Result<()>;
}

/// How a blob stands with garbage collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// In use, being removed or removed.
    pub state: GuardState,
    /// How many times a push has used it (claimed, linked or referenced).
    pub uses: i64,
}

/// A blob's standing with garbage collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardState {
    /// Usable.
    Live,
    /// A collection is removing it: no push may use it.
    Doomed,
    /// A collection removed it; a push must claim it before writing it again.
    Collected,
}

impl GuardState {
    fn from_db(n: i64) -> GuardState {
        match n {
            LIVE => GuardState::Live,
            DOOMED => GuardState::Doomed,
            _ => GuardState::Collected,
        }
    }
}

/// The states of a blob guard as stored.
const LIVE: i64 = 0;
const DOOMED: i64 = 1;
const COLLECTED: i64 = 2;

/// A publishing token as the database keeps it (the secret itself is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// The SHA-256 of its secret, hex.
    pub hash: String,
    /// Its owner.
    pub owner: String,
    /// Its scopes, separated by spaces.
    pub scopes: String,
    /// When it was minted, RFC 3339 UTC (empty if unknown).
    pub created: String,
}

/// Metadata in an SQL database.
pub struct SqlMetadata {
    pool: AnyPool,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS repo_blobs (
        repo TEXT NOT NULL, digest TEXT NOT NULL, size BIGINT NOT NULL,
        PRIMARY KEY (repo, digest))",
    "CREATE TABLE IF NOT EXISTS uploads (
        id TEXT PRIMARY KEY, repo TEXT NOT NULL, size BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS manifests (
        repo TEXT NOT NULL, digest TEXT NOT NULL, media_type TEXT NOT NULL,
        size BIGINT NOT NULL, artifact_type TEXT, subject TEXT, annotations TEXT,
        PRIMARY KEY (repo, digest))",
    "CREATE INDEX IF NOT EXISTS manifests_subject ON manifests (repo, subject)",
    "CREATE TABLE IF NOT EXISTS tags (
        repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,
        PRIMARY KEY (repo, tag))",
    "CREATE TABLE IF NOT EXISTS machines (
        repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,
        name TEXT NOT NULL, version TEXT NOT NULL, description TEXT NOT NULL,
        os TEXT NOT NULL, architecture TEXT NOT NULL, firmware TEXT NOT NULL,
        cpus BIGINT NOT NULL, memory BIGINT NOT NULL, disks TEXT NOT NULL,
        created TEXT NOT NULL, signed_by TEXT, compressed BIGINT NOT NULL,
        pushed TEXT NOT NULL, seq BIGINT NOT NULL,
        PRIMARY KEY (repo, tag))",
    "CREATE INDEX IF NOT EXISTS machines_seq ON machines (seq)",
    "CREATE TABLE IF NOT EXISTS tokens (
        hash TEXT PRIMARY KEY, owner TEXT NOT NULL, scopes TEXT NOT NULL,
        created TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS settings (
        name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    // One row per blob that a push used or a collection doomed: pushes and
    // collections change the same row, so the database orders them.
    "CREATE TABLE IF NOT EXISTS blob_guards (
        digest TEXT PRIMARY KEY, state BIGINT NOT NULL, uses BIGINT NOT NULL)",
];

/// The PostgreSQL advisory lock the schema is made under: `CREATE TABLE IF
/// NOT EXISTS` is not safe against itself there (two hubs starting together
/// may both try to create a table and one fails), so they take turns.
const SCHEMA_LOCK: i64 = 0x766d_6875_6200;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

const MACHINE_COLUMNS: &str = "repo, tag, digest, name, version, description, os,
    architecture, firmware, cpus, memory, disks, created, signed_by, compressed, pushed";

fn machine_row(r: &AnyRow) -> Result<MachineRow> {
    let disks: String = r.try_get("disks")?;
    Ok(MachineRow {
        repository: r.try_get("repo")?,
        tag: r.try_get("tag")?,
        digest: r.try_get("digest")?,
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        description: r.try_get("description")?,
        os: r.try_get("os")?,
        architecture: r.try_get("architecture")?,
        firmware: r.try_get("firmware")?,
        cpus: to_u64(r.try_get("cpus")?),
        memory: to_u64(r.try_get("memory")?),
        disks: serde_json::from_str(&disks).unwrap_or_default(),
        created: r.try_get("created")?,
        signed_by: r.try_get("signed_by")?,
        compressed_size: to_u64(r.try_get("compressed")?),
        pushed: r.try_get("pushed")?,
    })
}

/// `term` as a LIKE pattern matching it anywhere, `!` escaping wildcards
/// (not `\`, which a PostgreSQL without `standard_conforming_strings`
/// would read as an escape inside the SQL string itself).
fn like_pattern(term: &str) -> String {
    let mut p = String::with_capacity(term.len() + 2);
    p.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '!') {
            p.push('!');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn manifest_row(r: &AnyRow) -> Result<ManifestRow> {
    Ok(ManifestRow {
        digest: r.try_get("digest")?,
        media_type: r.try_get("media_type")?,
        size: r.try_get("size")?,
        artifact_type: r.try_get("artifact_type")?,
        subject: r.try_get("subject")?,
        annotations: r.try_get("annotations")?,
    })
}

/// A 32-byte key from its 64 hex digits.
fn key_from_hex(s: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// `url` with its password, if any, replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Counts a use of blob `digest` in transaction `tx` unless a collection
/// is removing it or removed it: `None` when counted, else the blob's state.
/// A blob never seen before gets its guard here.
async fn use_blob(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    digest: &str,
) -> Result<Option<GuardState>> {
    let r = sqlx::query(
        "INSERT INTO blob_guards (digest, state, uses) VALUES ($1, $2, 1)
         ON CONFLICT (digest) DO UPDATE SET uses = blob_guards.uses + 1
         WHERE blob_guards.state = $2",
    )
    .bind(digest)
    .bind(LIVE)
    .execute(&mut **tx)
    .await?;
    if r.rows_affected() > 0 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT state FROM blob_guards WHERE digest = $1")
        .bind(digest)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some(GuardState::from_db(row.try_get("state")?)))
}

impl SqlMetadata {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<SqlMetadata> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let m = SqlMetadata::connect(&url).await?;
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&m.pool)
            .await?;
        Ok(m)
    }

    /// Connects to the database at `url` (`sqlite:` or `postgres:`) and
    /// creates the tables.
    pub async fn connect(url: &str) -> Result<SqlMetadata> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let postgres = url.starts_with("postgres:") || url.starts_with("postgresql:");
        if !sqlite {
            // One plain connection first: the pool would retry a refused or
            // refusing server until it times out, and hide why.
            use sqlx::Connection;
            sqlx::AnyConnection::connect(url).await?.close().await?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Writers wait for each other rather than fail.
                        sqlx::query("PRAGMA busy_timeout = 30000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let mut tx = pool.begin().await?;
        if postgres {
            // Through a subquery, since the lock's own result (void) has no
            // value the driver-neutral rows can hold.
            sqlx::query("SELECT COUNT(*) AS n FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(SCHEMA_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(SqlMetadata { pool })
    }

    /// Moves blob `digest`'s guard from state `from` to `to`.
    async fn set_guard(&self, digest: &str, from: i64, to: i64) -> Result<()> {
        sqlx::query("UPDATE blob_guards SET state = $1 WHERE digest = $2 AND state = $3")
            .bind(to)
            .bind(digest)
            .bind(from)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The key every hub of this database signs bearer tokens with: made
    /// by the first hub that asks, shared by all.
    pub async fn shared_token_key(&self) -> Result<[u8; 32]> {
        let mut candidate = [0u8; 32];
        getrandom::fill(&mut candidate)
            .map_err(|e| DbError::Protocol(format!("cannot draw a random key: {e}")))?;
        let hex: String = candidate.iter().map(|x| format!("{x:02x}")).collect();
        let stored = self.shared_setting("token-key", &hex).await?;
        key_from_hex(&stored)
            .ok_or_else(|| DbError::Protocol("settings: token-key is not 64 hex digits".into()))
    }

    /// The setting `name`: the value stored first wins, `candidate` when
    /// there is none yet. Hubs sharing the database agree on it even when
    /// they start together.
    pub async fn shared_setting(&self, name: &str, candidate: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        row.try_get("value")
    }
}

#[async_trait]
impl Metadata for SqlMetadata {
    async fn repo_blob(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM repo_blobs WHERE repo = $1 AND digest = $2")
            .bind(repo)
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get::<i64, _>("size").map(to_u64))
            .transpose()
    }

    async fn link_blob(&self, repo: &str, digest: &str, size: u64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if use_blob(&mut tx, digest).await?.is_some() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO repo_blobs (repo, digest, size) VALUES ($1, $2, $3)
             ON CONFLICT (repo, digest) DO NOTHING",
        )
        .bind(repo)
        .bind(digest)
        .bind(to_i64(size))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_blob(&self, digest: &str) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO blob_guards (digest, state, uses) VALUES ($1, $2, 1)
             ON CONFLICT (digest) DO UPDATE SET state = $2, uses = blob_guards.uses + 1
             WHERE blob_guards.state <> $3",
        )
        .bind(digest)
        .bind(LIVE)
        .bind(DOOMED)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn unlink_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2")
            .bind(repo)
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn create_upload(&self, id: &str, repo: &str) -> Result<()> {
        sqlx::query("INSERT INTO uploads (id, repo, size) VALUES ($1, $2, 0)")
            .bind(id)
            .bind(repo)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadRow>> {
        let row = sqlx::query("SELECT repo, size FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(UploadRow {
                repo: r.try_get("repo")?,
                offset: to_u64(r.try_get("size")?),
            })
        })
        .transpose()
    }

    async fn set_upload_offset(&self, id: &str, offset: u64) -> Result<()> {
        sqlx::query("UPDATE uploads SET size = $1 WHERE id = $2")
            .bind(to_i64(offset))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn put_manifest(
        &self,
        repo: &str,
        m: &ManifestRow,
        tag: Option<&str>,
        refs: &References,
    ) -> Result<Stored> {
        let mut tx = self.pool.begin().await?;
        // The guards first: they are writes, so that SQLite takes its write
        // lock before this transaction reads anything. In sorted order, so
        // that two pushes naming the same blobs never wait for each other in
        // a circle. The manifest's own bytes were claimed before they were
        // written: if they are collected since, it is pushed again.
        let guarded: std::collections::BTreeSet<&String> = refs
            .blobs
            .iter()
            .chain(&refs.manifests)
            .chain(std::iter::once(&m.digest))
            .collect();
        for d in guarded {
            match use_blob(&mut tx, d).await? {
                None => {}
                Some(GuardState::Collected) if *d != m.digest => {
                    return Ok(Stored::Missing(d.clone()))
                }
                Some(_) => return Ok(Stored::Collecting(d.clone())),
            }
        }
        for (digests, q) in [
            (
                &refs.blobs,
                "SELECT 1 AS one FROM repo_blobs WHERE repo = $1 AND digest = $2",
            ),
            (
                &refs.manifests,
                "SELECT 1 AS one FROM manifests WHERE repo = $1 AND digest = $2",
            ),
        ] {
            for d in digests {
                let held = sqlx::query(q)
                    .bind(repo)
                    .bind(d)
                    .fetch_optional(&mut *tx)
                    .await?;
                if held.is_none() {
                    return Ok(Stored::Missing(d.clone()));
                }
            }
        }
        sqlx::query(
            "INSERT INTO manifests
               (repo, digest, media_type, size, artifact_type, subject, annotations)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (repo, digest) DO UPDATE SET media_type = excluded.media_type",
        )
        .bind(repo)
        .bind(&m.digest)
        .bind(&m.media_type)
        .bind(m.size)
        .bind(m.artifact_type.clone())
        .bind(m.subject.clone())
        .bind(m.annotations.clone())
        .execute(&mut *tx)
        .await?;
        if let Some(tag) = tag {
            sqlx::query(
                "INSERT INTO tags (repo, tag, digest) VALUES ($1, $2, $3)
                 ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest",
            )
            .bind(repo)
            .bind(tag)
            .bind(&m.digest)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Stored::Stored)
    }

    async fn manifest(&self, repo: &str, digest: &str) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, subject, annotations
             FROM manifests WHERE repo = $1 AND digest = $2",
        )
        .bind(repo)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(manifest_row).transpose()
    }

    async fn tag(&self, repo: &str, tag: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT digest FROM tags WHERE repo = $1 AND tag = $2")
            .bind(repo)
            .bind(tag)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("digest")).transpose()
    }

    async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("DELETE FROM manifests WHERE repo = $1 AND digest = $2")
            .bind(repo)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tags WHERE repo = $1 AND digest = $2")
            .bind(repo)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM machines WHERE repo = $1 AND digest = $2")
            .bind(repo)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("DELETE FROM tags WHERE repo = $1 AND tag = $2")
            .bind(repo)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM machines WHERE repo = $1 AND tag = $2")
            .bind(repo)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT tag FROM tags WHERE repo = $1")
            .bind(repo)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| r.try_get("tag")).collect()
    }

    async fn repo_exists(&self, repo: &str) -> Result<bool> {
        for q in [
            "SELECT 1 AS one FROM manifests WHERE repo = $1 LIMIT 1",
            "SELECT 1 AS one FROM repo_blobs WHERE repo = $1 LIMIT 1",
        ] {
            if sqlx::query(q)
                .bind(repo)
                .fetch_optional(&self.pool)
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn referrers(&self, repo: &str, digest: &str) -> Result<Vec<ManifestRow>> {
        let rows = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, subject, annotations
             FROM manifests WHERE repo = $1 AND subject = $2",
        )
        .bind(repo)
        .bind(digest)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(manifest_row).collect()
    }

    async fn create_token(&self, hash: &str, user: &str, scopes: &str) -> Result<()> {
        sqlx::query("INSERT INTO tokens (hash, owner, scopes, created) VALUES ($1, $2, $3, $4)")
            .bind(hash)
            .bind(user)
            .bind(scopes)
            .bind(crate::catalogue::now_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn token(&self, hash: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT owner, scopes FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("owner")?, r.try_get("scopes")?)))
            .transpose()
    }

    async fn put_machine(&self, m: &MachineRow) -> Result<()> {
        let disks = serde_json::to_string(&m.disks).unwrap_or_else(|_| "[]".into());
        // A running number orders pushes, whatever the clocks of the hubs;
        // one statement takes it and inserts, so concurrent pushes do not race.
        sqlx::query(&format!(
            "INSERT INTO machines ({MACHINE_COLUMNS}, seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     (SELECT COALESCE(MAX(seq), 0) + 1 FROM machines))
             ON CONFLICT (repo, tag) DO UPDATE SET
               digest = excluded.digest, name = excluded.name, version = excluded.version,
               description = excluded.description, os = excluded.os,
               architecture = excluded.architecture, firmware = excluded.firmware,
               cpus = excluded.cpus, memory = excluded.memory, disks = excluded.disks,
               created = excluded.created, signed_by = excluded.signed_by,
               compressed = excluded.compressed, pushed = excluded.pushed, seq = excluded.seq"
        ))
        .bind(&m.repository)
        .bind(&m.tag)
        .bind(&m.digest)
        .bind(&m.name)
        .bind(&m.version)
        .bind(&m.description)
        .bind(&m.os)
        .bind(&m.architecture)
        .bind(&m.firmware)
        .bind(to_i64(m.cpus))
        .bind(to_i64(m.memory))
        .bind(disks)
        .bind(&m.created)
        .bind(m.signed_by.clone())
        .bind(to_i64(m.compressed_size))
        .bind(&m.pushed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn search(&self, term: &str, limit: u32) -> Result<Vec<MachineRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines
             WHERE LOWER(name) LIKE $1 ESCAPE '!' OR LOWER(description) LIKE $1 ESCAPE '!'
                OR LOWER(os) LIKE $1 ESCAPE '!' OR LOWER(repo) LIKE $1 ESCAPE '!'
             ORDER BY seq DESC LIMIT $2"
        ))
        // SQLite's LIKE ignores ASCII case and PostgreSQL's does not: both
        // sides are lowered so that a search finds the same on either.
        .bind(like_pattern(&term.to_lowercase()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(machine_row).collect()
    }

    async fn machines(&self, repo: &str, limit: u32) -> Result<Vec<MachineRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE repo = $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(repo)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(machine_row).collect()
    }
    async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
        let rows =
            sqlx::query("SELECT hash, owner, scopes, created FROM tokens ORDER BY created, hash")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenRow {
                    hash: r.try_get("hash")?,
                    owner: r.try_get("owner")?,
                    scopes: r.try_get("scopes")?,
                    created: r.try_get("created")?,
                })
            })
            .collect()
    }

    async fn delete_token(&self, hash: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM tokens WHERE hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn all_manifests(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT repo, digest FROM manifests")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("repo")?, r.try_get("digest")?)))
            .collect()
    }

    async fn all_blob_links(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT repo, digest FROM repo_blobs")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("repo")?, r.try_get("digest")?)))
            .collect()
    }

    async fn blob_guards(&self) -> Result<std::collections::HashMap<String, Guard>> {
        let rows = sqlx::query("SELECT digest, state, uses FROM blob_guards")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("digest")?,
                    Guard {
                        state: GuardState::from_db(r.try_get("state")?),
                        uses: r.try_get("uses")?,
                    },
                ))
            })
            .collect()
    }

    async fn doom_blob(&self, digest: &str) -> Result<i64> {
        sqlx::query(
            "INSERT INTO blob_guards (digest, state, uses) VALUES ($1, $2, 0)
             ON CONFLICT (digest) DO UPDATE SET state = $2",
        )
        .bind(digest)
        .bind(DOOMED)
        .execute(&self.pool)
        .await?;
        // Read after the doom is committed: any use counted later failed.
        let row = sqlx::query("SELECT uses FROM blob_guards WHERE digest = $1")
            .bind(digest)
            .fetch_one(&self.pool)
            .await?;
        row.try_get("uses")
    }

    async fn spare_blob(&self, digest: &str) -> Result<()> {
        self.set_guard(digest, DOOMED, LIVE).await
    }

    async fn blob_collected(&self, digest: &str) -> Result<()> {
        self.set_guard(digest, DOOMED, COLLECTED).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact_url("postgres://ann:s3cr@t@db:5432/hub"),
            "postgres://ann:***@db:5432/hub"
        );
        assert_eq!(redact_url("postgres://db/hub"), "postgres://db/hub");
        assert_eq!(redact_url("postgres://ann@db/hub"), "postgres://ann@db/hub");
    }

    #[test]
    fn keys_from_hex() {
        let hex = "00ff".repeat(16);
        let key = key_from_hex(&hex).expect("a key");
        assert_eq!((key[0], key[1], key[31]), (0, 255, 255));
        assert!(key_from_hex(&hex[1..]).is_none());
        assert!(key_from_hex(&"zz".repeat(32)).is_none());
        assert!(key_from_hex(&"é".repeat(32)).is_none());
    }

    #[tokio::test]
    async fn hubs_of_one_database_agree_on_the_token_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.db");
        let a = SqlMetadata::open_sqlite(&path).await.expect("open");
        let b = SqlMetadata::open_sqlite(&path).await.expect("open");
        let ka = a.shared_token_key().await.expect("a key");
        assert_eq!(b.shared_token_key().await.expect("a key"), ka);
        assert_ne!(ka, [0u8; 32]);
    }

    #[tokio::test]
    async fn search_ignores_ascii_case_and_escapes_wildcards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = SqlMetadata::open_sqlite(&dir.path().join("hub.db"))
            .await
            .expect("open");
        let row = |repo: &str, name: &str| MachineRow {
            repository: repo.into(),
            tag: "1".into(),
            digest: "sha256:00".into(),
            name: name.into(),
            version: "1".into(),
            description: String::new(),
            os: "Debian".into(),
            architecture: "x86_64".into(),
            firmware: "bios".into(),
            cpus: 1,
            memory: 1 << 30,
            disks: Vec::new(),
            created: String::new(),
            signed_by: None,
            compressed_size: 0,
            pushed: String::new(),
        };
        m.put_machine(&row("acme/web", "Web_Server"))
            .await
            .expect("put");
        m.put_machine(&row("acme/db", "WebXServer"))
            .await
            .expect("put");
        let names = |v: Vec<MachineRow>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(m.search("web_", 10).await.expect("search")),
            ["Web_Server"]
        );
        assert_eq!(
            names(m.search("DEBIAN", 10).await.expect("search")).len(),
            2
        );
        assert!(m.search("%", 10).await.expect("search").is_empty());
        assert!(m.search("!", 10).await.expect("search").is_empty());
        m.put_machine(&row("acme/bang", "Hello!"))
            .await
            .expect("put");
        assert_eq!(names(m.search("o!", 10).await.expect("search")), ["Hello!"]);
    }
}
