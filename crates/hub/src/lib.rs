//! The vmhub hub: an OCI distribution v1.1 registry.
//!
//! Blob bytes live behind [`storage::BlobStore`] (a local folder by default),
//! metadata behind [`db::Metadata`] (SQLite by default). Requests are routed
//! by the `api` module; blobs and uploads are in `blobs`, manifests, tags and
//! referrers in `manifests`.

#![forbid(unsafe_code)]

mod api;
pub mod auth;
mod blobs;
mod browse;
pub mod catalogue;
pub mod db;
pub mod digest;
pub mod download;
pub mod error;
pub mod gc;
mod manifests;
pub mod names;
mod range;
pub mod s3;
pub mod storage;
pub mod web;

use digest::Hasher;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The default cap on one blob's size: 64 GiB.
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 64 << 30;

/// The cap on a manifest's size (the spec suggests registries accept at
/// least 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// How a hub is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data folder: blobs, uploads and the SQLite database, unless
    /// `database` and `storage` say otherwise.
    pub data: PathBuf,
    /// The metadata database's URL (`postgres://USER:PASS@HOST:PORT/DB`);
    /// SQLite in the data folder when absent. Hubs sharing a database also
    /// share the key their bearer tokens are signed with.
    pub database: Option<String>,
    /// S3-compatible object storage for blobs and uploads; the data folder
    /// when absent.
    pub storage: Option<s3::S3Config>,
    /// The largest blob accepted, in bytes.
    pub max_blob_size: u64,
    /// Whether pulls need a token too (else they are anonymous).
    pub private: bool,
}

impl Config {
    /// A configuration with the defaults for everything but the data folder.
    pub fn new(data: impl Into<PathBuf>) -> Config {
        Config {
            data: data.into(),
            database: None,
            storage: None,
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            private: false,
        }
    }
}

/// Why a hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data folder could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The metadata database could not be opened.
    #[error("{path}: cannot open the database: {source}")]
    Db {
        /// The database.
        path: PathBuf,
        /// What went wrong.
        source: db::DbError,
    },
    /// The object storage could not be set up.
    #[error(transparent)]
    Storage(#[from] s3::S3Error),
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The user name is unusable.
    #[error("{0:?} is not a usable user name (letters, digits, '.', '_', '-', '@'; at most 64)")]
    User(String),
    /// No scope was given.
    #[error("a token needs at least one scope (push:NAMESPACE or pull:NAMESPACE)")]
    NoScope,
    /// No random secret could be drawn.
    #[error("cannot draw a random secret: {0}")]
    Random(std::io::Error),
    /// The database refused.
    #[error("cannot store the token: {0}")]
    Db(db::DbError),
}

/// An upload's running digest, kept between requests while the hub runs:
/// the byte count it covers and the hasher. After a restart it is rebuilt
/// from the upload's bytes.
type UploadHash = Option<(u64, Hasher)>;

/// A running registry: storage, metadata and the uploads in progress.
pub struct Hub {
    store: Arc<dyn storage::BlobStore>,
    meta: Arc<dyn db::Metadata>,
    max_blob_size: u64,
    key: auth::TokenKey,
    private: bool,
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadHash>>>>,
    browser: browse::Browser,
}

impl Hub {
    /// Opens the hub of `config`: its database (SQLite in `config.data`
    /// by default) and its blob storage (a folder in `config.data` by
    /// default).
    pub async fn open(config: &Config) -> Result<Arc<Hub>, Error> {
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| Error::Io { path, source }
        };
        tokio::fs::create_dir_all(&config.data)
            .await
            .map_err(io(&config.data))?;
        let store: Arc<dyn storage::BlobStore> = match &config.storage {
            Some(s3) => {
                let store = s3::S3Store::open(s3, config.max_blob_size)?;
                store.check().await?;
                Arc::new(store)
            }
            None => Arc::new(
                storage::LocalStore::open(&config.data)
                    .await
                    .map_err(io(&config.data))?,
            ),
        };
        let (meta, key) = match &config.database {
            Some(url) => {
                let db_err = |source| Error::Db {
                    path: PathBuf::from(db::redact_url(url)),
                    source,
                };
                let meta = db::SqlMetadata::connect(url).await.map_err(db_err)?;
                // Every hub of the database signs with one key, so that a
                // bearer token from one is good at all of them.
                let key = meta.shared_token_key().await.map_err(db_err)?;
                (meta, auth::TokenKey::from_bytes(key))
            }
            None => {
                let db_path = config.data.join("hub.db");
                let meta = db::SqlMetadata::open_sqlite(&db_path)
                    .await
                    .map_err(|source| Error::Db {
                        path: db_path.clone(),
                        source,
                    })?;
                let key = auth::TokenKey::load(&config.data).map_err(io(&config.data))?;
                (meta, key)
            }
        };
        Ok(Hub::with(store, Arc::new(meta), key, config))
    }

    /// A hub over the given storage and metadata, signing bearer tokens
    /// with `key`; `config`'s limits and privacy apply (its data folder is
    /// not used).
    pub fn with(
        store: Arc<dyn storage::BlobStore>,
        meta: Arc<dyn db::Metadata>,
        key: auth::TokenKey,
        config: &Config,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            meta,
            max_blob_size: config.max_blob_size,
            key,
            private: config.private,
            uploads: Mutex::new(HashMap::new()),
            browser: browse::Browser::new(),
        })
    }

    /// Mints a publishing token for `user` with `scopes` and returns its
    /// secret, which is shown this once: the database keeps only its hash.
    pub async fn create_token(
        &self,
        user: &str,
        scopes: &[auth::Scope],
    ) -> Result<String, TokenError> {
        if !auth::valid_user(user) {
            return Err(TokenError::User(user.to_string()));
        }
        if scopes.is_empty() {
            return Err(TokenError::NoScope);
        }
        let secret = auth::new_secret().map_err(TokenError::Random)?;
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.meta
            .create_token(&auth::secret_hash(&secret), user, &scopes.join(" "))
            .await
            .map_err(TokenError::Db)?;
        Ok(secret)
    }

    /// The HTTP routes of the registry API.
    pub fn router(self: &Arc<Hub>) -> axum::Router {
        // Disk downloads are answered before the registry and catalogue
        // routes, whose `/m/` pages they extend.
        api::router(self.clone()).layer(axum::middleware::from_fn_with_state(
            self.clone(),
            download::intercept,
        ))
    }

    /// Serves the registry on `listener` until `shutdown` completes; requests
    /// under way are finished first.
    pub async fn serve(
        self: &Arc<Hub>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// The lock over upload `id`'s running digest; one request at a time
    /// appends to an upload.
    fn upload_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<UploadHash>> {
        let mut map = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }

    fn forget_upload(&self, id: &str) {
        let mut map = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

/// A fresh random id: 32 hex digits.
pub(crate) fn random_id() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
