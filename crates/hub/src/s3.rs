//! Blobs in S3-compatible object storage, so that several hub processes can
//! share them.
//!
//! Layout under the bucket's prefix:
//! - `blobs/sha256/xx/<hex>`: finished blobs, content addressed and shared
//!   by every repository, written only by a commit that checked the digest;
//! - `uploads/<id>/<start>`: the segments of an upload in progress, one
//!   object per request that appended to it, named by the byte offset it
//!   starts at (20 digits, so that names sort as numbers do).
//!
//! S3 objects cannot be appended to, so each request's bytes become a new
//! segment; the segments live in the bucket, not in one process, so a
//! chunked upload may go on at any hub process. The upload's byte count in
//! the metadata says which segments count: reading walks the chain from
//! offset 0, each segment starting where the previous one ended. A request
//! that resumes an upload at offset `n` writes segment `n`, replacing any
//! segment an interrupted request left there, and always writes it (even
//! empty), so the chain ends where the recorded bytes end.
//!
//! A commit streams the chain into the blob's object (a multipart upload
//! once past one part) while hashing it, and completes the object only when
//! the hash equals the digest: whatever happened to the segments meanwhile
//! (two processes racing on one upload, say), no blob becomes visible under
//! a digest its bytes do not have. Memory stays bounded by a few parts.

use crate::digest::{Digest, Hasher};
use crate::storage::{BlobStore, ByteStream, StoredBlob, StoredUpload, UploadWriter};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use std::io;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// The smallest part of a multipart upload: S3 refuses parts under 5 MiB
/// (but the last), and 8 MiB keeps a 64 GiB blob within S3's 10,000 parts.
const MIN_PART_SIZE: u64 = 8 << 20;

/// The most parts of one multipart upload the hub plans for (S3 allows
/// 10,000; the rest is a margin).
const MAX_PARTS: u64 = 9_000;

/// How many parts of one object are sent at once.
const PART_CONCURRENCY: usize = 2;

/// Why S3 storage could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The storage URL is not one the hub understands.
    #[error("{url:?}: {what}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        what: String,
    },
    /// The bucket could not be read.
    #[error("s3://{bucket}: cannot list the bucket: {source}")]
    Unreachable {
        /// The bucket.
        bucket: String,
        /// What went wrong.
        source: object_store::Error,
    },
    /// The S3 client could not be built.
    #[error("s3://{bucket}: cannot set up the S3 client: {source}")]
    Client {
        /// The bucket.
        bucket: String,
        /// What went wrong.
        source: object_store::Error,
    },
}

/// Where the blobs are: a bucket, a prefix inside it, and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The folder inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// The S3 endpoint, for S3-compatible services (addressed path-style);
    /// AWS itself when absent.
    pub endpoint: Option<String>,
    /// The region; else `AWS_REGION` (or `AWS_DEFAULT_REGION`) from the
    /// environment, else `us-east-1`.
    pub region: Option<String>,
    /// An access key id and secret; when absent they come from the standard
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` environment variables.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for S3Config {
    // The secret stays out of logs and error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials.as_ref().map(|_| "…"))
            .finish()
    }
}

impl S3Config {
    /// Reads `s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]`.
    pub fn parse(s: &str) -> Result<S3Config, S3Error> {
        let bad = |what: &str| S3Error::Url {
            url: s.to_string(),
            what: what.to_string(),
        };
        let url = url::Url::parse(s).map_err(|e| bad(&format!("not a URL: {e}")))?;
        if url.scheme() != "s3" {
            return Err(bad("storage URLs start with s3://"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials do not go in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
        }
        let bucket = url.host_str().unwrap_or("").to_string();
        if bucket.is_empty() {
            return Err(bad("no bucket: write s3://BUCKET[/PREFIX]"));
        }
        let prefix = url.path().trim_matches('/').to_string();
        if !prefix.is_empty() && Path::parse(&prefix).is_err() {
            return Err(bad("the prefix is not a usable object path"));
        }
        let mut config = S3Config {
            bucket,
            prefix,
            endpoint: None,
            region: None,
            credentials: None,
        };
        for (k, v) in url.query_pairs() {
            match &*k {
                "endpoint" => {
                    let e = url::Url::parse(&v)
                        .map_err(|e| bad(&format!("endpoint {v:?} is not a URL: {e}")))?;
                    if !matches!(e.scheme(), "http" | "https") {
                        return Err(bad("the endpoint must be an http:// or https:// URL"));
                    }
                    config.endpoint = Some(v.trim_end_matches('/').to_string());
                }
                "region" => config.region = Some(v.into_owned()),
                other => return Err(bad(&format!("unknown setting {other:?}"))),
            }
        }
        Ok(config)
    }
}

/// Blobs in an S3 bucket.
pub struct S3Store {
    s3: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    part_size: usize,
}

fn io_err(what: &str, e: object_store::Error) -> io::Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{what}: {e}"))
}

/// Upload ids are made by the hub (hex), and checked again here so that no
/// id can name an object outside its upload's folder.
fn check_id(id: &str) -> io::Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{id:?} is not an upload id"),
        ));
    }
    Ok(())
}

impl S3Store {
    /// Connects to the bucket of `config`. Blobs may be up to
    /// `max_blob_size` bytes: the part size of multipart uploads is chosen
    /// so that the largest fits in S3's part count.
    pub fn open(config: &S3Config, max_blob_size: u64) -> Result<S3Store, S3Error> {
        // reqwest's rustls is built without a crypto provider of its own;
        // the ring provider the workspace already uses serves the process.
        // An error here only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The standard AWS environment variables first (credentials,
        // region), then what the URL says.
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(region) = &config.region {
            b = b.with_region(region);
        }
        if let Some(e) = &config.endpoint {
            // An explicit endpoint is an S3-compatible service: path-style
            // addressing, and plain http when that is what was asked for.
            b = b
                .with_endpoint(e)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(e.starts_with("http://"));
        }
        if let Some((id, secret)) = &config.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let s3: AmazonS3 = b.build().map_err(|source| S3Error::Client {
            bucket: config.bucket.clone(),
            source,
        })?;
        let part_size = MIN_PART_SIZE
            .max(max_blob_size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20))
            .min(1 << 30);
        Ok(S3Store {
            s3: Arc::new(s3),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
            part_size: usize::try_from(part_size).unwrap_or(MIN_PART_SIZE as usize),
        })
    }

    /// Lists the top of the prefix once, so that a missing bucket, a
    /// wrong endpoint or refused credentials show when the hub starts
    /// rather than at the first push.
    pub async fn check(&self) -> Result<(), S3Error> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        self.s3
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|source| S3Error::Unreachable {
                bucket: self.bucket.clone(),
                source,
            })?;
        Ok(())
    }

    fn key(&self, rest: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn blob_key(&self, d: &Digest) -> Path {
        let hex = d.hex();
        let fan = hex.get(..2).unwrap_or("00");
        self.key(&format!("blobs/sha256/{fan}/{hex}"))
    }

    fn upload_dir(&self, id: &str) -> io::Result<Path> {
        check_id(id)?;
        Ok(self.key(&format!("uploads/{id}")))
    }

    fn segment_key(&self, id: &str, start: u64) -> io::Result<Path> {
        check_id(id)?;
        Ok(self.key(&format!("uploads/{id}/{start:020}")))
    }

    fn writer(&self, key: Path) -> BufWriter {
        BufWriter::with_capacity(self.s3.clone(), key, self.part_size)
            .with_max_concurrency(PART_CONCURRENCY)
    }

    /// The segments of upload `id` that make its bytes: the chain from
    /// offset 0, each starting where the previous ended, up to the first
    /// empty segment or gap. Each is its key and size.
    async fn chain(&self, id: &str) -> io::Result<Vec<(Path, u64)>> {
        let dir = self.upload_dir(id)?;
        let mut found = std::collections::BTreeMap::new();
        let mut list = self.s3.list(Some(&dir));
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| io_err(&format!("listing upload {id}"), e))?;
            // Names that are not offsets (none are written) are no segments.
            if let Some(start) = meta.location.filename().and_then(|n| n.parse::<u64>().ok()) {
                found.insert(start, (meta.location, meta.size));
            }
        }
        let mut chain = Vec::new();
        let mut at = 0u64;
        while let Some((key, size)) = found.remove(&at) {
            if size == 0 {
                break;
            }
            chain.push((key, size));
            at = at.checked_add(size).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("upload {id} overflows"))
            })?;
        }
        Ok(chain)
    }

    /// The bytes of `chain`, in order, at most `len` of them.
    fn chain_stream(&self, chain: Vec<(Path, u64)>, len: u64) -> ByteStream {
        let s3 = self.s3.clone();
        let segments = futures_util::stream::iter(chain);
        let stream = segments
            .then(move |(key, _)| {
                let s3 = s3.clone();
                async move {
                    match s3.get(&key).await {
                        Ok(r) => r
                            .into_stream()
                            .map(move |c| c.map_err(|e| io_err(&format!("reading {key}"), e)))
                            .boxed(),
                        Err(e) => futures_util::stream::once(async move {
                            Err(io_err(&format!("reading {key}"), e))
                        })
                        .boxed(),
                    }
                }
            })
            .flatten()
            .scan(len, |left, c| {
                let next = (*left > 0).then(|| {
                    c.map(|mut b| {
                        if (b.len() as u64) > *left {
                            b.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                        }
                        *left -= b.len() as u64;
                        b
                    })
                });
                futures_util::future::ready(next)
            });
        Box::pin(stream)
    }

    async fn delete_prefix(&self, dir: &Path) -> io::Result<()> {
        let mut list = self.s3.list(Some(dir));
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| io_err(&format!("listing {dir}"), e))?;
            match self.s3.delete(&meta.location).await {
                Err(object_store::Error::NotFound { .. }) | Ok(()) => {}
                Err(e) => return Err(io_err(&format!("deleting {}", meta.location), e)),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn size(&self, d: &Digest) -> io::Result<Option<u64>> {
        match self.s3.head(&self.blob_key(d)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_err(&format!("looking up blob {d}"), e)),
        }
    }

    async fn read(&self, d: &Digest, offset: u64, len: u64) -> io::Result<ByteStream> {
        if len == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let end = offset.checked_add(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "range past the end of a blob")
        })?;
        let key = self.blob_key(d);
        let r = self
            .s3
            .get_opts(
                &key,
                GetOptions::new().with_range(Some(GetRange::Bounded(offset..end))),
            )
            .await
            .map_err(|e| io_err(&format!("reading blob {d}"), e))?;
        let what = format!("reading blob {d}");
        Ok(Box::pin(
            r.into_stream()
                .map(move |c| c.map_err(|e| io_err(&what, e))),
        ))
    }

    async fn read_small(&self, d: &Digest, max: u64) -> io::Result<Vec<u8>> {
        let r = self
            .s3
            .get(&self.blob_key(d))
            .await
            .map_err(|e| io_err(&format!("reading blob {d}"), e))?;
        // Read no more than `max`, whatever size the object claims.
        let mut out = Vec::new();
        let mut s = r.into_stream();
        while let Some(c) = s.next().await {
            let c = c.map_err(|e| io_err(&format!("reading blob {d}"), e))?;
            let room = usize::try_from(max)
                .unwrap_or(usize::MAX)
                .saturating_sub(out.len());
            out.extend_from_slice(c.get(..room.min(c.len())).unwrap_or(&[]));
            if out.len() as u64 >= max {
                break;
            }
        }
        Ok(out)
    }

    async fn put_small(&self, d: &Digest, data: Bytes) -> io::Result<()> {
        if self.size(d).await?.is_some() {
            return Ok(());
        }
        // One PUT: the object appears whole or not at all.
        self.s3
            .put(&self.blob_key(d), PutPayload::from(data))
            .await
            .map_err(|e| io_err(&format!("storing blob {d}"), e))?;
        Ok(())
    }

    async fn upload_create(&self, id: &str) -> io::Result<()> {
        // An upload's segments are its only objects; an empty one has none.
        check_id(id)
    }

    async fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>> {
        let key = self.segment_key(id, offset)?;
        Ok(Box::new(S3Writer {
            w: Some(self.writer(key.clone())),
            key,
        }))
    }

    async fn upload_read(&self, id: &str, len: u64) -> io::Result<ByteStream> {
        let chain = self.chain(id).await?;
        Ok(self.chain_stream(chain, len))
    }

    async fn upload_commit(&self, id: &str, d: &Digest) -> io::Result<()> {
        let chain = self.chain(id).await?;
        if self.size(d).await?.is_none() {
            let total = chain.iter().map(|(_, n)| n).sum::<u64>();
            let mut bytes = self.chain_stream(chain, total);
            let mut w = self.writer(self.blob_key(d));
            let mut h = Hasher::new();
            let copied: io::Result<()> = async {
                while let Some(c) = bytes.next().await {
                    let c = c?;
                    h.update(&c);
                    w.put(c)
                        .await
                        .map_err(|e| io_err(&format!("storing blob {d}"), e))?;
                }
                Ok(())
            }
            .await;
            let got = h.finish();
            if let Err(e) = copied {
                let _ = w.abort().await;
                return Err(e);
            }
            if got != *d {
                let _ = w.abort().await;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("upload {id} holds {got}, not {d}; the blob was not stored"),
                ));
            }
            w.shutdown()
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("storing blob {d}: {e}")))?;
        }
        self.upload_delete(id).await
    }

    async fn upload_delete(&self, id: &str) -> io::Result<()> {
        let dir = self.upload_dir(id)?;
        self.delete_prefix(&dir).await
    }

    async fn list_blobs(&self) -> io::Result<Vec<StoredBlob>> {
        let mut out = Vec::new();
        let dir = self.key("blobs/sha256");
        let mut list = self.s3.list(Some(&dir));
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| io_err("listing blobs", e))?;
            // Only objects named as blobs are blobs; anything else under the
            // prefix is not the store's to judge.
            let Some(digest) = meta.location.filename().and_then(Digest::from_hex) else {
                continue;
            };
            if meta.location != self.blob_key(&digest) {
                continue;
            }
            out.push(StoredBlob {
                digest,
                size: meta.size,
                modified: meta.last_modified.into(),
            });
        }
        Ok(out)
    }

    async fn delete_blob(&self, d: &Digest) -> io::Result<bool> {
        let key = self.blob_key(d);
        if self.size(d).await?.is_none() {
            return Ok(false);
        }
        match self.s3.delete(&key).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io_err(&format!("deleting {key}"), e)),
        }
    }

    async fn list_uploads(&self) -> io::Result<Vec<StoredUpload>> {
        // An upload is its folder of segments: its size is theirs summed, its
        // time that of the newest.
        let mut uploads: std::collections::BTreeMap<String, StoredUpload> = Default::default();
        let dir = self.key("uploads");
        let mut list = self.s3.list(Some(&dir));
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| io_err("listing uploads", e))?;
            let parts: Vec<_> = meta.location.parts().collect();
            let Some(id) = parts.len().checked_sub(2).and_then(|i| parts.get(i)) else {
                continue;
            };
            let id = id.as_ref().to_string();
            if check_id(&id).is_err() {
                continue;
            }
            let modified: std::time::SystemTime = meta.last_modified.into();
            let u = uploads.entry(id.clone()).or_insert(StoredUpload {
                id,
                size: 0,
                modified,
            });
            u.size = u.size.saturating_add(meta.size);
            u.modified = u.modified.max(modified);
        }
        Ok(uploads.into_values().collect())
    }
}

/// Writes one segment of an upload.
struct S3Writer {
    key: Path,
    /// `None` once finished.
    w: Option<BufWriter>,
}

#[async_trait]
impl UploadWriter for S3Writer {
    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let w = self.w.as_mut().ok_or_else(|| {
            io::Error::other(format!("{}: written after it was finished", self.key))
        })?;
        w.put(Bytes::copy_from_slice(data))
            .await
            .map_err(|e| io_err(&format!("writing {}", self.key), e))
    }

    async fn finish(mut self: Box<Self>) -> io::Result<()> {
        let Some(mut w) = self.w.take() else {
            return Ok(());
        };
        // The segment's object appears here, whole (a PUT, or the completion
        // of its multipart upload).
        w.shutdown()
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", self.key)))
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // A request that broke off leaves no half-made multipart upload
        // behind: it is aborted in the background.
        if let (Some(mut w), Ok(rt)) = (self.w.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = w.abort().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls() {
        let c =
            S3Config::parse("s3://bucket/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu")
                .expect("a URL");
        assert_eq!(c.bucket, "bucket");
        assert_eq!(c.prefix, "some/prefix");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region.as_deref(), Some("eu"));
        let c = S3Config::parse("s3://b").expect("a URL");
        assert_eq!((c.prefix.as_str(), c.endpoint, c.region), ("", None, None));
        for bad in [
            "http://b/x",
            "s3:///x",
            "s3://b?color=red",
            "s3://b?endpoint=ftp://x",
            "s3://key:secret@b",
            "not a url",
        ] {
            assert!(S3Config::parse(bad).is_err(), "{bad}");
        }
    }
}
