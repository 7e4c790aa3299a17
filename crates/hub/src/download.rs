//! Disk downloads: `GET /m/<repository>/<tag-or-digest>/disks/<n>.<ext>`
//! sends disk `n` (from 0) of a machine as an image file in the format
//! `ext` names (raw, vhd, vhdx, qcow2, vdi), converted while it streams.
//!
//! The image is never built on the hub's disk or held in memory: its layout
//! (vdisk's stream layouts) is computed from the disk index, and the bytes of
//! any range of it are produced from that layout, fetching, checking and
//! decompressing the chunks it needs a few at a time. So every download has
//! a Content-Length, a strong ETag, and answers `Range` requests, which lets
//! clients resume.
//!
//! Every blob is checked against its digest before its bytes are sent. A
//! chunk that fails the check once the answer has started cuts the
//! connection: the client receives fewer bytes than the Content-Length it
//! was promised (curl says "transfer closed with N bytes remaining"), never
//! a complete-looking file with wrong bytes in it.

use crate::api::{check_name, percent_decode};
use crate::auth::{self, Action, BadCredentials};
use crate::blobs::{db_err, io_err, parse_digest};
use crate::digest::Digest;
use crate::error::{ApiError, ApiResult, Code};
use crate::range::Requested;
use crate::{names, Hub};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use store::index::{ChunkRef, DiskIndex, MAX_INDEX_BYTES};
use store::machine::{Machine, MAX_CONFIG_BYTES};
use store::manifest::Manifest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vdisk::stream::vmdk::{self, VmdkEncoder};
use vdisk::stream::{AllocMap, Identity, Layout, Piece, StreamFormat};

/// The most bytes sent in one piece of the body.
const PIECE: usize = 1 << 20;
/// Zeros to send holes from.
static ZEROS: [u8; PIECE] = [0; PIECE];
/// Pieces of the body produced ahead of the client.
const AHEAD: usize = 4;
/// Decompressed chunks kept, for a chunk that straddles two blocks.
const CACHED: usize = 2;
/// Chunks fetched ahead of the one being sent (with [`CACHED`], this bounds
/// what one download holds: a few chunks of at most 16 MiB).
const PREFETCH: usize = 3;

/// The parts of a download path.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    repo: &'a str,
    reference: &'a str,
    disk: &'a str,
    ext: &'a str,
}

/// Takes a download path apart from the end, as repository names may hold
/// slashes: `/m/<repo>/<ref>/disks/<n>.<ext>`.
fn target(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix("/m/")?;
    let (head, file) = rest.rsplit_once('/')?;
    let head = head.strip_suffix("/disks")?;
    let (repo, reference) = head.rsplit_once('/')?;
    let (disk, ext) = file.split_once('.')?;
    if repo.is_empty() || disk.is_empty() || !disk.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Target {
        repo,
        reference,
        disk,
        ext,
    })
}

/// The link to disk `n` of `repo:reference` as `format`.
pub fn link(repo: &str, reference: &str, n: usize, format: Format) -> String {
    format!("/m/{repo}/{reference}/disks/{n}.{}", format.extension())
}

/// The middleware that answers download paths and passes every other
/// request on.
pub(crate) async fn intercept(State(hub): State<Arc<Hub>>, req: Request, next: Next) -> Response {
    let Some(path) = percent_decode(req.uri().path(), false) else {
        return next.run(req).await;
    };
    let Some(t) = target(&path) else {
        return next.run(req).await;
    };
    match answer(&hub, &t, req.method(), req.headers()).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::not_found(Code::ManifestUnknown, message)
}

/// Checks that the request may read `repo`: anyone on a public hub, a
/// token with pull scope on a private one.
async fn authorize(hub: &Hub, repo: &str, headers: &HeaderMap) -> ApiResult<()> {
    let principal = match auth::authenticate(hub.meta.as_ref(), &hub.key, headers).await? {
        Ok(p) => p,
        Err(BadCredentials) => {
            return Err(auth::challenge(
                headers,
                Some((repo, Action::Pull)),
                &auth::unauthorized_message(repo, Action::Pull, true),
            ))
        }
    };
    if !hub.private || principal.allows(repo, Action::Pull) {
        return Ok(());
    }
    Err(if principal.is_anonymous() {
        auth::challenge(
            headers,
            Some((repo, Action::Pull)),
            &auth::unauthorized_message(repo, Action::Pull, false),
        )
    } else {
        auth::denied(repo, Action::Pull)
    })
}

/// Reads small blob `d` (at most `max` bytes) and checks it against its digest.
async fn verified(hub: &Hub, d: &Digest, max: u64, what: &str) -> ApiResult<Vec<u8>> {
    let data = hub
        .store
        .read_small(d, max)
        .await
        .map_err(io_err("reading a blob"))?;
    if Digest::of(&data) != *d {
        return Err(ApiError::internal(
            "checking a blob",
            format!("{what} {d} does not match its digest"),
        ));
    }
    Ok(data)
}

fn hub_digest(d: &store::Digest) -> ApiResult<Digest> {
    parse_digest(&d.to_string())
}

/// The formats a disk downloads as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One whose layout is computed in advance: ranges work.
    Laid(StreamFormat),
    /// Stream-optimized VMDK, written front to back: no ranges.
    Vmdk,
}

impl Format {
    /// Every format, in the order pages list them.
    pub fn all() -> Vec<Format> {
        let mut v: Vec<Format> = StreamFormat::ALL.into_iter().map(Format::Laid).collect();
        v.push(Format::Vmdk);
        v
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Laid(f) => f.extension(),
            Format::Vmdk => "vmdk",
        }
    }

    fn from_extension(ext: &str) -> Option<Format> {
        Format::all().into_iter().find(|f| f.extension() == ext)
    }
}

/// What a download sends: the image's layout (none for VMDK) and where its
/// disk bytes come from.
struct Download {
    layout: Option<Layout>,
    map: AllocMap,
    index: DiskIndex,
    id: Identity,
    etag: String,
    filename: String,
}

async fn prepare(hub: &Hub, t: &Target<'_>, format: Format) -> ApiResult<Download> {
    let unknown = || not_found(format!("{}:{} is not on this hub", t.repo, t.reference));
    let digest = if t.reference.contains(':') {
        parse_digest(t.reference)?.to_string()
    } else if names::valid_tag(t.reference) {
        hub.meta
            .tag(t.repo, t.reference)
            .await
            .map_err(db_err("looking up a tag"))?
            .ok_or_else(unknown)?
    } else {
        return Err(unknown());
    };
    hub.meta
        .manifest(t.repo, &digest)
        .await
        .map_err(db_err("looking up a manifest"))?
        .ok_or_else(unknown)?;
    let d = parse_digest(&digest)?;
    let json = verified(hub, &d, crate::MAX_MANIFEST_SIZE, "manifest").await?;
    let manifest = Manifest::machine_from_json(&json, &digest)
        .map_err(|e| not_found(format!("{}:{} is not a machine: {e}", t.repo, t.reference)))?;
    let config = verified(
        hub,
        &hub_digest(&manifest.config.digest)?,
        MAX_CONFIG_BYTES,
        "machine description",
    )
    .await?;
    let machine = Machine::from_json(&config, &manifest.config.digest.to_string())
        .map_err(|e| ApiError::internal("reading a machine description", e))?;
    let n: usize = t
        .disk
        .parse()
        .map_err(|_| not_found(format!("no disk {}", t.disk)))?;
    let disk = machine.disks.get(n).ok_or_else(|| {
        not_found(format!(
            "{}:{} has {} disk(s), numbered from 0; there is no disk {n}",
            t.repo,
            t.reference,
            machine.disks.len()
        ))
    })?;
    // Only an index the manifest lists: the repository holds it.
    if !manifest.layers.iter().any(|l| l.digest == disk.index) {
        return Err(ApiError::internal(
            "reading a machine",
            format!(
                "disk {n}'s index {} is not among the manifest's layers",
                disk.index
            ),
        ));
    }
    let index_json = verified(
        hub,
        &hub_digest(&disk.index)?,
        MAX_INDEX_BYTES,
        "disk index",
    )
    .await?;
    let index = DiskIndex::from_json(&index_json, &disk.index.to_string())
        .map_err(|e| ApiError::internal("reading a disk index", e))?;
    let map = AllocMap::new(
        index.size,
        index
            .map
            .iter()
            .enumerate()
            .map(|(k, &(offset, _))| (offset, index.placed_len(k))),
    )
    .map_err(|e| ApiError::internal("reading a disk index", e))?;
    // The ids in the image follow from the machine and the disk, so that
    // every download of it is the same file.
    let seed = <sha2::Sha256 as sha2::Digest>::digest(format!("{digest}/disks/{n}").as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(seed.get(..16).unwrap_or(&[0; 16]));
    let timestamp = humantime::parse_rfc3339(&machine.created)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let id = Identity {
        seed: id,
        timestamp,
    };
    let (layout, map) = match format {
        Format::Laid(f) => {
            // A large disk's tables take a while to lay out: off the
            // threads that serve requests.
            let size = index.size;
            let (laid, map) = tokio::task::spawn_blocking(move || {
                (vdisk::stream::layout(f, size, &map, &id), map)
            })
            .await
            .map_err(|e| ApiError::internal("laying out an image", e))?;
            let laid = laid.map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Code::Unsupported,
                    format!("disk {n} cannot be made a {} image: {e}", f.extension()),
                )
            })?;
            (Some(laid), map)
        }
        Format::Vmdk => (None, map),
    };
    let label = if t.reference.contains(':') {
        d.hex().get(..12).unwrap_or_default().to_string()
    } else {
        t.reference.to_string()
    };
    let mut filename = format!("{}-{label}", machine.name);
    if n > 0 {
        filename.push('-');
        filename.push_str(&disk.name);
    }
    let filename: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(Download {
        layout,
        map,
        index,
        id,
        // The bytes depend on the manifest, the disk, the format and the
        // layout code of this version of vmhub.
        etag: format!(
            "\"{}-{n}-{}-{}\"",
            d.hex(),
            format.extension(),
            env!("CARGO_PKG_VERSION")
        ),
        filename: format!("{filename}.{}", format.extension()),
    })
}

/// The byte range a `Range` header asks for in a file of `len` bytes:
/// `Ok(None)` for the whole file (no header, or one not understood, which
/// RFC 9110 lets a server ignore), `Err(())` when unsatisfiable.
fn range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    match crate::range::requested(headers, len) {
        Requested::Whole | Requested::Invalid => Ok(None),
        Requested::Bytes(start, end) => Ok(Some((start, end))),
        Requested::Unsatisfiable => Err(()),
    }
}

async fn answer(
    hub: &Arc<Hub>,
    t: &Target<'_>,
    method: &Method,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unsupported,
            "downloads answer GET and HEAD only",
        ));
    }
    check_name(t.repo)?;
    authorize(hub, t.repo, headers).await?;
    let format = Format::from_extension(t.ext).ok_or_else(|| {
        not_found(format!(
            "no download format {:?}: choose one of {}",
            t.ext,
            Format::all()
                .iter()
                .map(|f| f.extension())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let dl = prepare(hub, t, format).await?;
    let mut hs: Vec<(header::HeaderName, String)> = vec![
        (header::CONTENT_TYPE, "application/octet-stream".into()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", dl.filename),
        ),
    ];
    let Some(layout) = &dl.layout else {
        // VMDK: its length is known only at its end, so no ranges, and the
        // body is chunked.
        hs.push((header::ACCEPT_RANGES, "none".into()));
        let mut r = response(StatusCode::OK, hs);
        if *method != Method::HEAD {
            *r.body_mut() = spawn_body(hub, dl, 0, 0);
        }
        return Ok(r);
    };
    let len = layout.len();
    hs.push((header::ACCEPT_RANGES, "bytes".into()));
    hs.push((header::ETAG, dl.etag.clone()));
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == dl.etag || t.trim() == "*"));
    if unchanged {
        // The client holds this very file already.
        hs.retain(|(k, _)| *k != header::CONTENT_TYPE && *k != header::CONTENT_DISPOSITION);
        return Ok(response(StatusCode::NOT_MODIFIED, hs));
    }
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == dl.etag.as_bytes());
    let wanted = if if_range_ok {
        range(headers, len)
    } else {
        Ok(None)
    };
    let (status, start, end) = match wanted {
        Err(()) => {
            hs.push((header::CONTENT_RANGE, format!("bytes */{len}")));
            return Ok(response(StatusCode::RANGE_NOT_SATISFIABLE, hs));
        }
        Ok(Some((a, b))) => {
            hs.push((header::CONTENT_RANGE, format!("bytes {a}-{}/{len}", b - 1)));
            (StatusCode::PARTIAL_CONTENT, a, b)
        }
        Ok(None) => (StatusCode::OK, 0, len),
    };
    hs.push((header::CONTENT_LENGTH, (end - start).to_string()));
    let mut r = response(status, hs);
    if *method != Method::HEAD {
        *r.body_mut() = spawn_body(hub, dl, start, end);
    }
    Ok(r)
}

/// A body produced by a task of its own, a few pieces ahead of the client:
/// bytes `[start, end)` of the image (the whole of a VMDK, whatever they say).
fn spawn_body(hub: &Arc<Hub>, dl: Download, start: u64, end: u64) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(AHEAD);
    let hub = hub.clone();
    tokio::spawn(async move {
        let mut src = Chunks {
            hub,
            index: dl.index,
            cache: Vec::new(),
            pending: VecDeque::new(),
        };
        let sent = match &dl.layout {
            Some(layout) => send(layout, start, end, &mut src, &tx).await,
            None => send_vmdk(&dl.map, &dl.filename, &dl.id, &mut src, &tx).await,
        };
        if let Err(e) = sent {
            // The body ends in an error: the connection is cut short of the
            // Content-Length (or of the chunked body's end), which is how the
            // client learns of it.
            eprintln!("vmhub hub: download of {} stopped: {e}", dl.filename);
            let _ = tx.send(Err(e)).await;
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }))
}

/// Grains deflated per blocking task.
const GRAINS_AT_ONCE: usize = 16;

/// Sends the stream-optimized VMDK of the disk, front to back.
async fn send_vmdk(
    map: &AllocMap,
    name: &str,
    id: &Identity,
    src: &mut Chunks,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let size = src.index.size;
    let cid = u32::from_le_bytes([id.seed[0], id.seed[1], id.seed[2], id.seed[3]]);
    let (mut enc, head) = VmdkEncoder::start(size, name, cid).map_err(io::Error::other)?;
    put(tx, Bytes::from(head)).await?;
    let grains = map.blocks(vmdk::GRAIN);
    for batch in grains.chunks(GRAINS_AT_ONCE) {
        let mut data = Vec::with_capacity(batch.len());
        for &g in batch {
            let mut buf = vec![0u8; enc.grain_len(g)];
            let at = g * vmdk::GRAIN;
            let avail = size.saturating_sub(at).min(buf.len() as u64) as usize;
            if let Some(b) = buf.get_mut(..avail) {
                src.fill(at, b).await?;
            }
            data.push((g, buf));
        }
        let (back, out) = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (g, d) in &data {
                out.extend_from_slice(&enc.grain(*g, d).map_err(io::Error::other)?);
            }
            Ok::<_, io::Error>((enc, out))
        })
        .await
        .map_err(io::Error::other)??;
        enc = back;
        put(tx, Bytes::from(out)).await?;
    }
    put(tx, Bytes::from(enc.finish().map_err(io::Error::other)?)).await
}

/// An answer with `status`, `headers` and (for now) no body.
fn response(status: StatusCode, headers: Vec<(header::HeaderName, String)>) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

/// The client went away: nothing more to send.
fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
}

async fn put(tx: &mpsc::Sender<io::Result<Bytes>>, b: Bytes) -> io::Result<()> {
    tx.send(Ok(b)).await.map_err(|_| gone())
}

async fn zeros(tx: &mpsc::Sender<io::Result<Bytes>>, mut n: u64) -> io::Result<()> {
    while n > 0 {
        let k = n.min(PIECE as u64) as usize;
        put(tx, Bytes::from_static(&ZEROS[..k])).await?;
        n -= k as u64;
    }
    Ok(())
}

/// Sends bytes `[start, end)` of `layout`.
async fn send(
    layout: &Layout,
    start: u64,
    end: u64,
    src: &mut Chunks,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    for p in layout.pieces(start, end) {
        match p {
            Piece::Bytes(b) => {
                for part in b.chunks(PIECE) {
                    put(tx, Bytes::copy_from_slice(part)).await?;
                }
            }
            Piece::Zeros(n) => zeros(tx, n).await?,
            Piece::Fill { byte, mut len } => {
                while len > 0 {
                    let k = len.min(PIECE as u64) as usize;
                    put(tx, Bytes::from(vec![byte; k])).await?;
                    len -= k as u64;
                }
            }
            Piece::Disk { offset, len } => src.send(offset, len, tx).await?,
        }
    }
    Ok(())
}

/// The disk's bytes, from its chunks in the blob store.
struct Chunks {
    hub: Arc<Hub>,
    index: DiskIndex,
    cache: Vec<(u32, Bytes)>,
    /// Chunks being fetched ahead of need, in map order.
    pending: VecDeque<(u32, JoinHandle<io::Result<Bytes>>)>,
}

impl Drop for Chunks {
    fn drop(&mut self) {
        // A download that ends (or whose client goes) wants nothing more.
        for (_, h) in &self.pending {
            h.abort();
        }
    }
}

impl Chunks {
    /// Sends the disk's bytes `[offset, offset+len)`.
    async fn send(
        &mut self,
        offset: u64,
        len: u64,
        tx: &mpsc::Sender<io::Result<Bytes>>,
    ) -> io::Result<()> {
        let end = offset + len;
        let mut pos = offset;
        let mut k = self.index.first_after(offset);
        while pos < end {
            let Some(&(at, n)) = self.index.map.get(k).filter(|&&(at, _)| at < end) else {
                return zeros(tx, end - pos).await;
            };
            if at > pos {
                zeros(tx, at - pos).await?;
                pos = at;
            }
            let data = self.chunk_at(k, n).await?;
            let to = end.min(at + data.len() as u64);
            // (`at` may lie before `pos` for the first chunk.)
            if to > pos {
                let part = data.slice((pos - at) as usize..(to - at) as usize);
                for i in (0..part.len()).step_by(PIECE) {
                    put(tx, part.slice(i..part.len().min(i + PIECE))).await?;
                }
                pos = to;
            }
            k += 1;
        }
        Ok(())
    }

    /// Fills `buf` with the disk's bytes from `offset`.
    async fn fill(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        let end = offset + buf.len() as u64;
        let mut k = self.index.first_after(offset);
        while let Some(&(at, n)) = self.index.map.get(k).filter(|&&(at, _)| at < end) {
            let data = self.chunk_at(k, n).await?;
            let from = offset.max(at);
            let to = end.min(at + data.len() as u64);
            if let (Some(dst), Some(src)) = (
                buf.get_mut((from - offset) as usize..(to - offset) as usize),
                data.get((from - at) as usize..(to - at) as usize),
            ) {
                dst.copy_from_slice(src);
            }
            k += 1;
        }
        Ok(())
    }

    /// Chunk `n`, placed by map entry `k`; the chunks of the next few
    /// entries start downloading meanwhile.
    async fn chunk_at(&mut self, k: usize, n: u32) -> io::Result<Bytes> {
        for j in k..k + PREFETCH {
            let Some(&(_, m)) = self.index.map.get(j) else {
                break;
            };
            let known = self.cache.iter().any(|(c, _)| *c == m)
                || self.pending.iter().any(|(c, _)| *c == m);
            if !known {
                let Some(&c) = self.index.chunks.get(m as usize) else {
                    break;
                };
                let hub = self.hub.clone();
                self.pending
                    .push_back((m, tokio::spawn(async move { fetch(&hub, m, c).await })));
            }
        }
        if let Some((_, b)) = self.cache.iter().find(|(c, _)| *c == n) {
            return Ok(b.clone());
        }
        let data = match self.pending.iter().position(|(c, _)| *c == n) {
            Some(i) => match self.pending.remove(i) {
                Some((_, h)) => h.await.map_err(io::Error::other)??,
                None => return Err(io::Error::other(format!("chunk {n} went missing"))),
            },
            None => {
                let c = *self.index.chunks.get(n as usize).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the disk index has no chunk {n}"),
                    )
                })?;
                fetch(&self.hub, n, c).await?
            }
        };
        if self.cache.len() >= CACHED {
            self.cache.remove(0);
        }
        self.cache.push((n, data.clone()));
        Ok(data)
    }
}

/// Chunk `n` (`c`): its blob checked against its digest, decompressed
/// (never past its declared length) and checked against its content digest.
async fn fetch(hub: &Hub, n: u32, c: ChunkRef) -> io::Result<Bytes> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let d = Digest::parse(&c.blob.to_string())
        .map_err(|_| bad(format!("chunk {n}: digest {} is not sha256", c.blob)))?;
    // The index bounds `c.size` (a chunk's length plus a little), so
    // this allocation is bounded too.
    let mut blob = Vec::with_capacity(c.size as usize);
    let mut s = hub.store.read(&d, 0, c.size).await?;
    while let Some(part) = s.next().await {
        let part = part?;
        if blob.len() + part.len() > c.size as usize {
            return Err(bad(format!(
                "chunk blob {d} is longer than {} bytes",
                c.size
            )));
        }
        blob.extend_from_slice(&part);
    }
    if blob.len() as u64 != c.size || Digest::of(&blob) != d {
        return Err(bad(format!(
            "chunk blob {d} does not match its digest: the stored blob is damaged"
        )));
    }
    tokio::task::spawn_blocking(move || {
        let data = zstd::bulk::decompress(&blob, c.length as usize).map_err(|e| {
            bad(format!(
                "chunk blob {d} does not decompress to at most {} bytes: {e}",
                c.length
            ))
        })?;
        if data.len() != c.length as usize || !c.content.matches(&data) {
            return Err(bad(format!(
                "chunk blob {d} does not hold the {} bytes with digest {}",
                c.length, c.content
            )));
        }
        Ok(Bytes::from(data))
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            target("/m/acme/box/12/disks/0.vhd"),
            Some(Target {
                repo: "acme/box",
                reference: "12",
                disk: "0",
                ext: "vhd"
            })
        );
        assert_eq!(
            target("/m/a/sha256:ab/disks/3.qcow2").map(|t| (t.repo, t.reference)),
            Some(("a", "sha256:ab"))
        );
        assert_eq!(target("/m/acme/box"), None);
        assert_eq!(target("/m/acme/disks/0.raw"), None);
        assert_eq!(target("/m/a/1/disks/x.raw"), None);
        assert_eq!(target("/m/a/1/disks/0"), None);
        assert_eq!(Format::from_extension("vmdk"), Some(Format::Vmdk));
        assert_eq!(
            Format::from_extension("qcow2"),
            Some(Format::Laid(StreamFormat::Qcow2))
        );
        assert_eq!(Format::from_extension("iso"), None);
        assert_eq!(Format::all().len(), 6);
        assert_eq!(
            link("a/b", "1", 2, Format::Laid(StreamFormat::Vdi)),
            "/m/a/b/1/disks/2.vdi"
        );
    }

    #[test]
    fn ranges() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(range(&HeaderMap::new(), 100), Ok(None));
        assert_eq!(range(&h("bytes=0-9"), 100), Ok(Some((0, 10))));
        assert_eq!(range(&h("bytes=90-"), 100), Ok(Some((90, 100))));
        assert_eq!(range(&h("bytes=90-500"), 100), Ok(Some((90, 100))));
        assert_eq!(range(&h("bytes=-10"), 100), Ok(Some((90, 100))));
        assert_eq!(range(&h("bytes=-1000"), 100), Ok(Some((0, 100))));
        assert_eq!(range(&h("bytes=100-"), 100), Err(()));
        assert_eq!(range(&h("bytes=-0"), 100), Err(()));
        assert_eq!(range(&h("bytes=5-2"), 100), Ok(None));
        assert_eq!(range(&h("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(range(&h("items=0-1"), 100), Ok(None));
    }
}
