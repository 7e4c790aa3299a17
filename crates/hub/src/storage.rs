//! Where blob bytes live. [`BlobStore`] is what the registry needs of a
//! storage backend; [`LocalStore`] keeps them in a folder:
//! `blobs/sha256/xx/<hex>` for finished blobs (content addressed, shared by
//! every repository) and `uploads/<id>` for uploads in progress, so that a
//! blob is visible only once renamed into place after its digest checked.
//! [`crate::s3::S3Store`] keeps them in S3-compatible object storage instead.

use crate::digest::Digest;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// A stream of a blob's bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What the registry needs of the place blob bytes are kept.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// The size of blob `d`, if stored.
    async fn size(&self, d: &Digest) -> io::Result<Option<u64>>;
    /// `len` bytes of blob `d` from byte `offset` on.
    async fn read(&self, d: &Digest, offset: u64, len: u64) -> io::Result<ByteStream>;
    /// The whole of a small blob (a manifest), at most `max` bytes.
    async fn read_small(&self, d: &Digest, max: u64) -> io::Result<Vec<u8>>;
    /// Stores a small blob whose digest the caller has checked.
    async fn put_small(&self, d: &Digest, data: Bytes) -> io::Result<()>;
    /// Starts an empty upload `id`.
    async fn upload_create(&self, id: &str) -> io::Result<()>;
    /// Opens upload `id` for appending at `offset`; bytes past `offset` left by
    /// an interrupted request are dropped.
    async fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>>;
    /// The first `len` bytes of upload `id` (to rebuild its digest after a restart).
    async fn upload_read(&self, id: &str, len: u64) -> io::Result<ByteStream>;
    /// Makes upload `id` blob `d`; the caller has checked the digest.
    async fn upload_commit(&self, id: &str, d: &Digest) -> io::Result<()>;
    /// Forgets upload `id`.
    async fn upload_delete(&self, id: &str) -> io::Result<()>;
    /// Every stored blob with its size and when it was last written, for
    /// garbage collection.
    async fn list_blobs(&self) -> io::Result<Vec<StoredBlob>> {
        Err(unsupported("listing blobs"))
    }
    /// Removes blob `d`; false if it was not there.
    async fn delete_blob(&self, _d: &Digest) -> io::Result<bool> {
        Err(unsupported("deleting blobs"))
    }
    /// Every upload in progress (and every half-written file of one), with
    /// its size and when it was last written.
    async fn list_uploads(&self) -> io::Result<Vec<StoredUpload>> {
        Err(unsupported("listing uploads"))
    }
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("this blob store does not support {what}"),
    )
}

/// A stored blob, as [`BlobStore::list_blobs`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: std::time::SystemTime,
}

/// An upload's bytes, as [`BlobStore::list_uploads`] gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpload {
    /// The upload's id.
    pub id: String,
    /// How many bytes it holds.
    pub size: u64,
    /// When it was last written.
    pub modified: std::time::SystemTime,
}

/// Appends to an upload.
#[async_trait]
pub trait UploadWriter: Send {
    /// Appends `data`.
    async fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes everything written durable.
    async fn finish(self: Box<Self>) -> io::Result<()>;
}

/// Blobs in a local folder.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store in `root`, created if missing.
    pub async fn open(root: &Path) -> io::Result<LocalStore> {
        tokio::fs::create_dir_all(root.join("blobs/sha256")).await?;
        tokio::fs::create_dir_all(root.join("uploads")).await?;
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        let fan = hex.get(..2).unwrap_or("00").to_string();
        self.root.join("blobs/sha256").join(fan).join(hex)
    }

    /// Upload ids are made by the hub (hex), and checked again here so that
    /// no id can name a path outside the uploads folder.
    fn upload_path(&self, id: &str) -> io::Result<PathBuf> {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad upload id"));
        }
        Ok(self.root.join("uploads").join(id))
    }

    async fn sync_dir(dir: &Path) -> io::Result<()> {
        tokio::fs::File::open(dir).await?.sync_all().await
    }
}

/// The size of each read of a blob being sent: every read is a trip to
/// tokio's blocking pool, so fewer, larger reads cost less CPU per byte
/// (1 MiB took 40 % less than 256 KiB; BENCHMARKS.md, "The hub"), for about
/// that much memory per download under way.
const READ_SIZE: usize = 1 << 20;

fn file_stream(file: tokio::fs::File, len: u64) -> ByteStream {
    Box::pin(tokio_util::io::ReaderStream::with_capacity(
        file.take(len),
        READ_SIZE,
    ))
}

#[async_trait]
impl BlobStore for LocalStore {
    async fn size(&self, d: &Digest) -> io::Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(d)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn read(&self, d: &Digest, offset: u64, len: u64) -> io::Result<ByteStream> {
        let mut f = tokio::fs::File::open(self.blob_path(d)).await?;
        f.seek(io::SeekFrom::Start(offset)).await?;
        Ok(file_stream(f, len))
    }

    async fn read_small(&self, d: &Digest, max: u64) -> io::Result<Vec<u8>> {
        let f = tokio::fs::File::open(self.blob_path(d)).await?;
        let mut out = Vec::new();
        f.take(max).read_to_end(&mut out).await?;
        Ok(out)
    }

    async fn put_small(&self, d: &Digest, data: Bytes) -> io::Result<()> {
        let path = self.blob_path(d);
        if tokio::fs::try_exists(&path).await? {
            return Ok(());
        }
        let id = crate::random_id()?;
        let tmp = self.upload_path(&id)?;
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(&data).await?;
        f.sync_all().await?;
        drop(f);
        self.place(&tmp, &path).await
    }

    async fn upload_create(&self, id: &str) -> io::Result<()> {
        let f = tokio::fs::File::create(self.upload_path(id)?).await?;
        f.sync_all().await?;
        Self::sync_dir(&self.root.join("uploads")).await
    }

    async fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>> {
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.upload_path(id)?)
            .await?;
        f.set_len(offset).await?;
        f.seek(io::SeekFrom::Start(offset)).await?;
        Ok(Box::new(LocalWriter {
            file: tokio::io::BufWriter::with_capacity(256 * 1024, f),
        }))
    }

    async fn upload_read(&self, id: &str, len: u64) -> io::Result<ByteStream> {
        let f = tokio::fs::File::open(self.upload_path(id)?).await?;
        Ok(file_stream(f, len))
    }

    async fn upload_commit(&self, id: &str, d: &Digest) -> io::Result<()> {
        let from = self.upload_path(id)?;
        self.place(&from, &self.blob_path(d)).await
    }

    async fn upload_delete(&self, id: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.upload_path(id)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    async fn list_blobs(&self) -> io::Result<Vec<StoredBlob>> {
        let mut out = Vec::new();
        let mut fans = tokio::fs::read_dir(self.root.join("blobs/sha256")).await?;
        while let Some(fan) = fans.next_entry().await? {
            if !fan.file_type().await?.is_dir() {
                continue;
            }
            let mut files = tokio::fs::read_dir(fan.path()).await?;
            while let Some(f) = files.next_entry().await? {
                // Only files named as blobs are blobs; anything else here is
                // not the store's to judge.
                let Some(digest) = f
                    .file_name()
                    .to_str()
                    .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
                else {
                    continue;
                };
                let m = f.metadata().await?;
                if m.is_file() {
                    out.push(StoredBlob {
                        digest,
                        size: m.len(),
                        modified: m.modified()?,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn delete_blob(&self, d: &Digest) -> io::Result<bool> {
        let path = self.blob_path(d);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    Self::sync_dir(dir).await?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_uploads(&self) -> io::Result<Vec<StoredUpload>> {
        let mut out = Vec::new();
        let mut files = tokio::fs::read_dir(self.root.join("uploads")).await?;
        while let Some(f) = files.next_entry().await? {
            let Some(id) = f.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if self.upload_path(&id).is_err() {
                continue;
            }
            let m = f.metadata().await?;
            if m.is_file() {
                out.push(StoredUpload {
                    id,
                    size: m.len(),
                    modified: m.modified()?,
                });
            }
        }
        Ok(out)
    }
}

impl LocalStore {
    /// Renames a synced file into its place among the blobs and syncs the
    /// folder, so the blob appears whole or not at all.
    async fn place(&self, from: &Path, to: &Path) -> io::Result<()> {
        let dir = to
            .parent()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "blob path"))?;
        tokio::fs::create_dir_all(dir).await?;
        tokio::fs::rename(from, to).await?;
        Self::sync_dir(dir).await
    }
}

struct LocalWriter {
    file: tokio::io::BufWriter<tokio::fs::File>,
}

#[async_trait]
impl UploadWriter for LocalWriter {
    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data).await
    }

    async fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.file.flush().await?;
        self.file.get_ref().sync_all().await
    }
}
