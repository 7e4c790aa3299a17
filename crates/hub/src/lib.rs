//! The vmhub hub: an OCI distribution v1.1 registry.
//!
//! Blob bytes live behind [`storage::BlobStore`] (a local folder by default),
//! metadata behind [`db::Metadata`] (SQLite by default). Requests are routed
//! by the `api` module; blobs and uploads are in `blobs`, manifests, tags and
//! referrers in `manifests`.

#![forbid(unsafe_code)]

mod api;
mod blobs;
pub mod db;
pub mod digest;
pub mod error;
mod manifests;
pub mod names;
pub mod storage;

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
    /// The data folder: blobs, uploads and the SQLite database.
    pub data: PathBuf,
    /// The largest blob accepted, in bytes.
    pub max_blob_size: u64,
}

impl Config {
    /// A configuration with the defaults for everything but the data folder.
    pub fn new(data: impl Into<PathBuf>) -> Config {
        Config {
            data: data.into(),
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
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
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadHash>>>>,
}

impl Hub {
    /// Opens the hub of `config`: a local folder and SQLite in `config.data`.
    pub async fn open(config: &Config) -> Result<Arc<Hub>, Error> {
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| Error::Io { path, source }
        };
        tokio::fs::create_dir_all(&config.data)
            .await
            .map_err(io(&config.data))?;
        let store = storage::LocalStore::open(&config.data)
            .await
            .map_err(io(&config.data))?;
        let db_path = config.data.join("hub.db");
        let meta = db::SqlMetadata::open_sqlite(&db_path)
            .await
            .map_err(|source| Error::Db {
                path: db_path.clone(),
                source,
            })?;
        Ok(Hub::with(
            Arc::new(store),
            Arc::new(meta),
            config.max_blob_size,
        ))
    }

    /// A hub over the given storage and metadata.
    pub fn with(
        store: Arc<dyn storage::BlobStore>,
        meta: Arc<dyn db::Metadata>,
        max_blob_size: u64,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            meta,
            max_blob_size,
            uploads: Mutex::new(HashMap::new()),
        })
    }

    /// The HTTP routes of the registry API.
    pub fn router(self: &Arc<Hub>) -> axum::Router {
        api::router(self.clone())
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
