//! The file browser: folders and files inside a machine's disks, read
//! straight from the chunks the hub stores, never reassembling a disk.
//!
//! URLs (every path component percent-encoded; names are names inside the
//! image, never host paths):
//!
//! - `/m/<repo>/<tag>/files/` — the machine's disks;
//! - `/m/<repo>/<tag>/files/<disk>/` — the partitions of disk `<disk>` (its
//!   number in the machine, from 0);
//! - `/m/<repo>/<tag>/files/<disk>/<partition>/<path…>` — a folder listing
//!   or a file (partition numbers as `vmhub fs parts` shows them; 0 for a
//!   disk without a partition table);
//! - the same with `?download` — the file's bytes as an attachment, streamed.
//!
//! A disk is a [`store::ChunkDisk`] whose chunks come from the
//! [`BlobStore`] on demand, each checked against its digests, through one
//! [`ChunkCache`] bounded in bytes that every request shares. The
//! filesystem code is synchronous: it runs on the blocking pool, and the
//! chunk source bridges back to the async store with a runtime handle. A
//! page has a deadline, past which reads fail; a download stops when its
//! client goes away.

use crate::api::{percent_decode, Query};
use crate::digest::Digest;
use crate::error::ApiResult;
use crate::storage::BlobStore;
use crate::web::{esc, human, page};
use crate::{blobs::db_err, names, Hub, MAX_MANIFEST_SIZE};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use store::index::{ChunkRef, DiskIndex, MAX_INDEX_BYTES};
use store::machine::{Machine, MAX_CONFIG_BYTES};
use store::manifest::Manifest;
use store::{ChunkCache, ChunkDisk, ChunkSource};
use tokio::sync::{mpsc, oneshot, Semaphore};
use vfs::{EntryKind, Image, TableKind, Volume};

/// Decompressed chunks kept between requests, at most.
const CACHE_BYTES: u64 = 256 << 20;
const CACHE_CHUNKS: usize = 4096;

/// Disk indexes kept parsed between requests: at most this many, and at
/// most this many chunk and map entries in all.
const INDEXES: usize = 16;
const INDEX_ENTRIES: usize = 2 << 20;

/// Pages worked on at once (each holds a few MiB of filesystem caches), and
/// how long a request waits for its turn.
const PAGE_JOBS: usize = 4;
const QUEUE_WAIT: Duration = Duration::from_secs(20);
/// Downloads streamed at once.
const DOWNLOADS: usize = 16;

/// How long one page may read; a damaged filesystem that sends vmhub round
/// in circles is stopped here.
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// Entries a folder listing shows.
const MAX_LISTED: usize = 5000;

/// Bytes of a file shown inline.
pub const INLINE_CAP: u64 = 256 << 10;

/// Pieces a download streams in, and how many wait between the reader and
/// the connection.
const PIECE: usize = 256 << 10;
const PIECES_QUEUED: usize = 4;

/// What the hub keeps for browsing: chunks, parsed indexes, and the limits
/// on work under way.
pub(crate) struct Browser {
    chunks: Arc<ChunkCache>,
    indexes: Mutex<Vec<(Digest, Arc<DiskIndex>)>>,
    pages: Arc<Semaphore>,
    downloads: Arc<Semaphore>,
}

impl Browser {
    /// Empty caches.
    pub(crate) fn new() -> Browser {
        Browser {
            chunks: Arc::new(ChunkCache::new(CACHE_CHUNKS, CACHE_BYTES)),
            indexes: Mutex::new(Vec::new()),
            pages: Arc::new(Semaphore::new(PAGE_JOBS)),
            downloads: Arc::new(Semaphore::new(DOWNLOADS)),
        }
    }

    fn cached_index(&self, d: &Digest) -> Option<Arc<DiskIndex>> {
        let mut list = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        let i = list.iter().position(|(k, _)| k == d)?;
        // Most recently used last.
        let hit = list.remove(i);
        let index = Arc::clone(&hit.1);
        list.push(hit);
        Some(index)
    }

    fn keep_index(&self, d: Digest, index: &Arc<DiskIndex>) {
        let weight = |i: &DiskIndex| i.chunks.len() + i.map.len();
        if weight(index) > INDEX_ENTRIES {
            return;
        }
        let mut list = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        if list.iter().any(|(k, _)| *k == d) {
            return;
        }
        list.push((d, Arc::clone(index)));
        while list.len() > INDEXES
            || list.iter().map(|(_, i)| weight(i)).sum::<usize>() > INDEX_ENTRIES
        {
            list.remove(0);
        }
    }
}

/// Where a browser URL points, once taken apart.
struct Target {
    repo: String,
    tag: String,
    disk: Option<usize>,
    partition: Option<u32>,
    /// Names inside the filesystem, decoded.
    path: Vec<String>,
}

impl Target {
    /// `/m/<repo>/<tag>/files/`.
    fn base(&self) -> String {
        format!("/m/{}/{}/files/", self.repo, self.tag)
    }

    /// The filesystem path, `/`-separated.
    fn fs_path(&self) -> String {
        format!("/{}", self.path.join("/"))
    }

    /// The URL of `names` in this target's partition.
    fn url_of(&self, names: &[String], dir: bool) -> String {
        let mut s = format!(
            "{}{}/{}/",
            self.base(),
            self.disk.unwrap_or(0),
            self.partition.unwrap_or(0)
        );
        let enc: Vec<String> = names.iter().map(|n| component(n)).collect();
        s.push_str(&enc.join("/"));
        if dir && !names.is_empty() {
            s.push('/');
        }
        s
    }

    /// Links to every level above and at this target.
    fn breadcrumbs(&self) -> String {
        let mut s = format!(
            "<nav class=\"crumbs\"><a href=\"/m/{}\">{}</a>:<a href=\"{}\">{}</a>",
            esc(&self.repo),
            esc(&self.repo),
            esc(&self.base()),
            esc(&self.tag)
        );
        let Some(disk) = self.disk else {
            return s + "</nav>";
        };
        let _ = write!(
            s,
            " / <a href=\"{}{disk}/\">disk {disk}</a>",
            esc(&self.base())
        );
        let Some(part) = self.partition else {
            return s + "</nav>";
        };
        let _ = write!(
            s,
            " / <a href=\"{}\">partition {part}</a>",
            esc(&self.url_of(&[], true))
        );
        for i in 0..self.path.len() {
            let names = self.path.get(..=i).unwrap_or_default();
            let name = names.last().map(String::as_str).unwrap_or_default();
            let _ = write!(
                s,
                " / <a href=\"{}\">{}</a>",
                esc(&self.url_of(names, i + 1 < self.path.len())),
                esc(name)
            );
        }
        s + "</nav>"
    }
}

/// A name percent-encoded as one URL path component (a `/` in it too).
fn component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An error page.
fn error_page(status: StatusCode, title: &str, reason: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "<h1>{}</h1><p class=\"error\">{}</p>",
            esc(title),
            esc(reason)
        ),
    )
}

/// Answers a file browser URL; `None` when `raw_path` (not yet
/// percent-decoded) is not one, and the machine page should answer.
pub(crate) async fn route(
    hub: &Arc<Hub>,
    raw_path: &str,
    query: &Query,
) -> Option<ApiResult<Response>> {
    let rest = raw_path.strip_prefix("/m/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    // Repository names may hold slashes, so `files` is looked for after
    // every possible repository and tag; names cannot be `files`-free of
    // ambiguity, so the first version that exists wins.
    let candidates: Vec<(String, String, usize)> = (2..segs.len())
        .filter(|&i| segs.get(i) == Some(&"files"))
        .filter_map(|i| {
            let repo = segs.get(..i - 1)?.join("/");
            let tag = (*segs.get(i - 1)?).to_string();
            (names::valid_name(&repo) && names::valid_tag(&tag)).then_some((repo, tag, i))
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    Some(answer(hub, &segs, candidates, query).await)
}

async fn answer(
    hub: &Arc<Hub>,
    segs: &[&str],
    candidates: Vec<(String, String, usize)>,
    query: &Query,
) -> ApiResult<Response> {
    let mut found = None;
    for (repo, tag, i) in candidates {
        let digest = hub
            .meta
            .tag(&repo, &tag)
            .await
            .map_err(db_err("reading tags"))?;
        if let Some(d) = digest {
            found = Some((repo, tag, i, d));
            break;
        }
    }
    let Some((repo, tag, i, digest)) = found else {
        return Ok(error_page(
            StatusCode::NOT_FOUND,
            "No such machine",
            "No machine version has that name and tag.",
        ));
    };
    let mut tail = Vec::new();
    for raw in segs.get(i + 1..).unwrap_or_default() {
        let Some(name) = percent_decode(raw, false) else {
            return Ok(error_page(
                StatusCode::BAD_REQUEST,
                "Bad path",
                "The path holds a broken %-escape or is not UTF-8.",
            ));
        };
        if name == "." || name == ".." || name.contains(['/', '\0']) {
            return Ok(error_page(
                StatusCode::BAD_REQUEST,
                "Bad path",
                &format!(
                    "{name:?} cannot be a name in a folder: paths here go down from the root, one name at a time"
                ),
            ));
        }
        if !name.is_empty() {
            tail.push(name);
        }
    }
    let mut tail = tail.into_iter();
    let mut target = Target {
        repo,
        tag,
        disk: None,
        partition: None,
        path: Vec::new(),
    };
    if let Some(d) = tail.next() {
        let Ok(n) = d.parse::<usize>() else {
            return Ok(error_page(
                StatusCode::NOT_FOUND,
                "No such disk",
                &format!("{d:?} is not a disk number"),
            ));
        };
        target.disk = Some(n);
    }
    if let Some(p) = tail.next() {
        let Ok(n) = p.parse::<u32>() else {
            return Ok(error_page(
                StatusCode::NOT_FOUND,
                "No such partition",
                &format!("{p:?} is not a partition number"),
            ));
        };
        target.partition = Some(n);
    }
    target.path = tail.collect();

    let machine = match load_machine(hub, &digest).await {
        Ok(m) => m,
        Err(e) => return Ok(e.page()),
    };
    let Some(n) = target.disk else {
        return Ok(disks_page(&target, &machine.1));
    };
    let Some(disk) = machine.1.disks.get(n) else {
        return Ok(error_page(
            StatusCode::NOT_FOUND,
            "No such disk",
            &format!(
                "{}:{} has no disk {n} (it has {})",
                target.repo,
                target.tag,
                machine.1.disks.len()
            ),
        ));
    };
    let index = match load_index(hub, &machine.0, disk).await {
        Ok(i) => i,
        Err(e) => return Ok(e.page()),
    };
    let name = format!("{}:{} disk {n} ({})", target.repo, target.tag, disk.name);
    let opened = Opened {
        name,
        index,
        store: Arc::clone(&hub.store),
        cache: Arc::clone(&hub.browser.chunks),
        handle: tokio::runtime::Handle::current(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    if query.get("download").is_some() && target.partition.is_some() {
        return Ok(download(hub, target, opened).await);
    }
    Ok(page_job(hub, target, opened).await)
}

/// Why a page could not be made.
struct Failure {
    status: StatusCode,
    title: &'static str,
    reason: String,
}

impl Failure {
    fn new(status: StatusCode, title: &'static str, reason: impl Into<String>) -> Failure {
        Failure {
            status,
            title,
            reason: reason.into(),
        }
    }

    fn broken(reason: impl Into<String>) -> Failure {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot read this machine",
            reason,
        )
    }

    fn page(&self) -> Response {
        error_page(self.status, self.title, &self.reason)
    }

    /// A filesystem error, with the status that says whose fault it is.
    fn from_vfs(e: &vfs::Error, stopped: bool) -> Failure {
        if stopped {
            return Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Stopped",
                format!(
                    "reading took longer than {} s and was stopped (the filesystem may be damaged): {e}",
                    PAGE_DEADLINE.as_secs()
                ),
            );
        }
        let (status, title) = match e {
            vfs::Error::NotFound(_) | vfs::Error::NotDir(_) => (StatusCode::NOT_FOUND, "Not found"),
            vfs::Error::Invalid(_) => (StatusCode::BAD_REQUEST, "Cannot show this"),
            vfs::Error::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Cannot read this"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Cannot read this"),
        };
        Failure::new(status, title, e.to_string())
    }
}

/// Reads a stored blob of at most `max` bytes and checks its digest.
async fn read_checked(
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
fn hub_digest(d: &store::Digest) -> Result<Digest, Failure> {
    Digest::parse(&d.to_string())
        .map_err(|e| Failure::broken(format!("{d} is not a digest the hub stores: {e:?}")))
}

/// The manifest and description of the machine whose manifest is `digest`.
async fn load_machine(hub: &Hub, digest: &str) -> Result<(Manifest, Machine), Failure> {
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
async fn load_index(
    hub: &Hub,
    manifest: &Manifest,
    disk: &store::machine::MachineDisk,
) -> Result<Arc<DiskIndex>, Failure> {
    let d = hub_digest(&disk.index)?;
    let index = match hub.browser.cached_index(&d) {
        Some(i) => i,
        None => {
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

/// `/m/<repo>/<tag>/files/`: the machine's disks.
fn disks_page(t: &Target, machine: &Machine) -> Response {
    let mut body = format!(
        "{}<h1>Files of {}:{}</h1><table><tr><th>Disk</th><th>Name</th><th>Size</th></tr>",
        t.breadcrumbs(),
        esc(&t.repo),
        esc(&t.tag)
    );
    for (n, d) in machine.disks.iter().enumerate() {
        let _ = write!(
            body,
            "<tr><td><a href=\"{}{n}/\">disk {n}</a></td><td>{}</td><td>{}</td></tr>",
            esc(&t.base()),
            esc(&d.name),
            esc(&human(d.size))
        );
    }
    body.push_str("</table>");
    page(
        StatusCode::OK,
        &format!("Files of {}:{}", t.repo, t.tag),
        &body,
    )
}

/// Reads a disk's chunks from the hub's blob storage.
struct StoreSource {
    store: Arc<dyn BlobStore>,
    handle: tokio::runtime::Handle,
}

impl ChunkSource for StoreSource {
    fn blob(&self, c: &ChunkRef) -> store::Result<Vec<u8>> {
        let what = c.blob.to_string();
        let d = Digest::parse(&what)
            .map_err(|e| store::Error::corrupt(what.clone(), format!("not a digest: {e:?}")))?;
        let fail = |p: String| store::Error::corrupt(what.clone(), p);
        // Called from the blocking pool, never from a runtime worker.
        let data = self.handle.block_on(async {
            let mut stream = self
                .store
                .read(&d, 0, c.size)
                .await
                .map_err(|e| fail(format!("chunk cannot be read from storage: {e}")))?;
            // `size` is bounded by the index's checks (a chunk is at most 16 MiB).
            let mut out = Vec::with_capacity(usize::try_from(c.size).unwrap_or(0));
            while let Some(piece) = stream.next().await {
                let piece =
                    piece.map_err(|e| fail(format!("chunk cannot be read from storage: {e}")))?;
                out.extend_from_slice(&piece);
            }
            Ok::<_, store::Error>(out)
        })?;
        if data.len() as u64 != c.size || Digest::of(&data) != d {
            return Err(fail(format!(
                "stored chunk is damaged: {} bytes whose digest is {}, not the {} bytes pushed",
                data.len(),
                Digest::of(&data),
                c.size
            )));
        }
        Ok(data)
    }
}

/// A disk opened for one request: everything the blocking side needs.
struct Opened {
    name: String,
    index: Arc<DiskIndex>,
    store: Arc<dyn BlobStore>,
    cache: Arc<ChunkCache>,
    handle: tokio::runtime::Handle,
    /// Set when the request's time is up or its client went away: reads
    /// fail from then on, which unwinds whatever the filesystem code does.
    stop: Arc<AtomicBool>,
}

impl Opened {
    /// The disk's image with its partition table read (blocking).
    fn image(&self) -> vfs::Result<Image> {
        let disk = ChunkDisk::with_source(
            &self.name,
            Arc::new(StoreSource {
                store: Arc::clone(&self.store),
                handle: self.handle.clone(),
            }),
            Arc::clone(&self.index),
            Arc::clone(&self.cache),
        );
        let guarded = Guarded {
            disk,
            stop: Arc::clone(&self.stop),
        };
        Image::from_disk(Box::new(guarded), &self.name)
    }
}

/// A disk whose reads fail once its request is stopped.
struct Guarded {
    disk: ChunkDisk,
    stop: Arc<AtomicBool>,
}

impl vdisk::Disk for Guarded {
    fn virtual_size(&self) -> u64 {
        self.disk.virtual_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> vdisk::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(vdisk::Error::corrupt(
                self.disk.path(),
                "reading was stopped: the request ran out of time or its client went away",
            ));
        }
        self.disk.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> vdisk::Result<()> {
        self.disk.write_at(buf, offset)
    }

    fn flush(&mut self) -> vdisk::Result<()> {
        Ok(())
    }

    fn map(&self, offset: u64, len: u64) -> vdisk::Result<Vec<vdisk::Extent>> {
        self.disk.map(offset, len)
    }

    fn info(&self) -> vdisk::Result<vdisk::ImageInfo> {
        self.disk.info()
    }

    fn path(&self) -> &Path {
        self.disk.path()
    }
}

/// Makes a page on the blocking pool, within the page deadline.
async fn page_job(hub: &Hub, target: Target, opened: Opened) -> Response {
    let permit = match tokio::time::timeout(
        QUEUE_WAIT,
        Arc::clone(&hub.browser.pages).acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "The hub is reading other disks; try again in a moment.",
            )
        }
    };
    let stop = Arc::clone(&opened.stop);
    let job = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let r = render(&target, &opened);
        r.unwrap_or_else(|f| f.page())
    });
    match tokio::time::timeout(PAGE_DEADLINE, job).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot read this",
            &format!("reading the disk failed: {e}"),
        ),
        Err(_) => {
            // The job sees the flag at its next read and ends.
            stop.store(true, Ordering::Relaxed);
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Stopped",
                &format!(
                    "reading took longer than {} s and was stopped (the filesystem may be damaged)",
                    PAGE_DEADLINE.as_secs()
                ),
            )
        }
    }
}

/// The page for `t` (blocking).
fn render(t: &Target, opened: &Opened) -> Result<Response, Failure> {
    let stopped = || opened.stop.load(Ordering::Relaxed);
    let img = opened
        .image()
        .map_err(|e| Failure::from_vfs(&e, stopped()))?;
    let Some(part) = t.partition else {
        return Ok(partitions_page(t, &img));
    };
    if img.table().get(part).is_none() {
        let have: Vec<String> = img
            .table()
            .partitions
            .iter()
            .map(|p| p.number.to_string())
            .collect();
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "No such partition",
            format!(
                "{}: no partition {part} (it has {})",
                opened.name,
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ),
        ));
    }
    let mut vol = img
        .volume(Some(part), false)
        .map_err(|e| Failure::from_vfs(&e, stopped()))?;
    let path = t.fs_path();
    let entry = vol
        .stat(&path)
        .map_err(|e| Failure::from_vfs(&e, stopped()))?;
    match entry.kind {
        EntryKind::Dir => {
            folder_page(t, vol.as_mut()).map_err(|e| Failure::from_vfs(&e, stopped()))
        }
        EntryKind::File => {
            file_page(t, vol.as_mut(), entry.size).map_err(|e| Failure::from_vfs(&e, stopped()))
        }
        EntryKind::Symlink => {
            let to = vol
                .read_link(&path)
                .map_err(|e| Failure::from_vfs(&e, stopped()))?;
            Ok(link_page(t, &to))
        }
        EntryKind::Other => Ok(page(
            StatusCode::OK,
            &path,
            &format!(
                "{}<h1>{}</h1><p>A special file (device, FIFO or socket): it holds no data.</p>",
                t.breadcrumbs(),
                esc(&path)
            ),
        )),
    }
}

/// `/m/<repo>/<tag>/files/<disk>/`: the partition table.
fn partitions_page(t: &Target, img: &Image) -> Response {
    let table = img.table();
    let kind = match table.kind {
        TableKind::Mbr => "MBR partition table",
        TableKind::Gpt => "GUID partition table",
        TableKind::None => "no partition table",
    };
    let mut body = format!(
        "{}<h1>Disk {}</h1><p>{} · {}</p><table><tr><th>Partition</th><th>Type</th>\
         <th>Filesystem</th><th>Label</th><th>Start</th><th>Size</th></tr>",
        t.breadcrumbs(),
        t.disk.unwrap_or(0),
        esc(&human(table.disk_size)),
        kind
    );
    for p in &table.partitions {
        let fs = p.filesystem.to_string();
        let number = if p.filesystem.readable() && !p.extended {
            let mut to = Target {
                repo: t.repo.clone(),
                tag: t.tag.clone(),
                disk: t.disk,
                partition: Some(p.number),
                path: Vec::new(),
            };
            to.path.clear();
            format!(
                "<a href=\"{}\">{}</a>",
                esc(&to.url_of(&[], true)),
                p.number
            )
        } else {
            p.number.to_string()
        };
        let _ = write!(
            body,
            "<tr><td>{number}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.type_name),
            esc(&fs),
            esc(p.label.as_deref().unwrap_or("")),
            p.start,
            esc(&human(p.size)),
        );
    }
    body.push_str("</table>");
    if table.partitions.is_empty() {
        body.push_str("<p>No filesystem was found on this disk.</p>");
    }
    for w in &table.warnings {
        let _ = write!(body, "<p class=\"warning\">{}</p>", esc(w));
    }
    page(
        StatusCode::OK,
        &format!("Disk {}", t.disk.unwrap_or(0)),
        &body,
    )
}

/// `ls -l`'s permission string for `mode`.
fn mode_string(kind: EntryKind, mode: Option<u32>) -> String {
    let Some(m) = mode else {
        return String::new();
    };
    let mut s = String::from(match kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::File => '-',
        EntryKind::Other => '?',
    });
    for shift in [6u32, 3, 0] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    format!("{s} ({:04o})", m & 0o7777)
}

/// Seconds since the epoch as RFC 3339 UTC.
fn when(t: Option<i64>) -> String {
    match t {
        Some(s) if s >= 0 => {
            let at = UNIX_EPOCH + Duration::from_secs(s.unsigned_abs());
            humantime::format_rfc3339_seconds(at).to_string()
        }
        Some(s) => format!("{s} s before 1970"),
        None => String::new(),
    }
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "folder",
        EntryKind::Symlink => "link",
        EntryKind::Other => "special",
    }
}

/// A folder listing (blocking).
fn folder_page(t: &Target, vol: &mut dyn Volume) -> vfs::Result<Response> {
    let path = t.fs_path();
    let mut entries = vol.list(&path)?;
    // Folders first, then by name, as file managers show them.
    entries.sort_by(|a, b| {
        (a.kind != EntryKind::Dir, &a.name).cmp(&(b.kind != EntryKind::Dir, &b.name))
    });
    let total = entries.len();
    let mut body = format!(
        "{}<h1>{}</h1><p>{} {}</p><table class=\"files\"><tr><th>Name</th><th>Type</th>\
         <th>Size</th><th>Mode</th><th>Modified</th></tr>",
        t.breadcrumbs(),
        esc(&path),
        total,
        if total == 1 { "entry" } else { "entries" }
    );
    for e in entries.iter().take(MAX_LISTED) {
        let mut names = t.path.clone();
        names.push(e.name.clone());
        let dir = e.kind == EntryKind::Dir;
        let mut name = format!(
            "<a href=\"{}\">{}{}</a>",
            esc(&t.url_of(&names, dir)),
            esc(&e.name),
            if dir { "/" } else { "" }
        );
        if e.kind == EntryKind::Symlink {
            let full = format!("/{}", names.join("/"));
            match vol.read_link(&full) {
                Ok(to) => {
                    let _ = write!(name, " → <span class=\"target\">{}</span>", esc(&to));
                }
                Err(err) => {
                    let _ = write!(
                        name,
                        " → <span class=\"error\">{}</span>",
                        esc(&err.to_string())
                    );
                }
            }
        }
        let size = if dir { String::new() } else { human(e.size) };
        let _ = write!(
            body,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            kind_name(e.kind),
            esc(&size),
            esc(&mode_string(e.kind, e.mode)),
            esc(&when(e.modified)),
        );
    }
    body.push_str("</table>");
    if total > MAX_LISTED {
        let _ = write!(
            body,
            "<p>The first {MAX_LISTED} of {total} entries are shown.</p>"
        );
    }
    Ok(page(StatusCode::OK, &path, &body))
}

/// A writer that keeps the first `cap` bytes and then refuses more, so that
/// a file is read only as far as it is shown.
struct Capped {
    data: Vec<u8>,
    cap: usize,
    full: bool,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.cap - self.data.len();
        if room == 0 {
            self.full = true;
            return Err(std::io::Error::other(
                "enough of the file was read to show it",
            ));
        }
        let n = buf.len().min(room);
        self.data
            .extend_from_slice(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The text of `data` when it looks like text: UTF-8 (maybe cut inside a
/// character at the end) without NUL bytes.
fn as_text(data: &[u8], cut: bool) -> Option<&str> {
    if data.contains(&0) {
        return None;
    }
    match std::str::from_utf8(data) {
        Ok(s) => Some(s),
        Err(e) if cut && e.error_len().is_none() => {
            std::str::from_utf8(data.get(..e.valid_up_to())?).ok()
        }
        Err(_) => None,
    }
}

/// A file: its text inline when it is text, and a download link (blocking).
fn file_page(t: &Target, vol: &mut dyn Volume, size: u64) -> vfs::Result<Response> {
    let path = t.fs_path();
    let download = format!("{}?download", t.url_of(&t.path, false));
    let mut body = format!(
        "{}<h1>{}</h1><p>{} · <a href=\"{}\" download>download</a></p>",
        t.breadcrumbs(),
        esc(&path),
        esc(&human(size)),
        esc(&download)
    );
    let cap = usize::try_from(size.min(INLINE_CAP)).unwrap_or(0);
    let mut shown = Capped {
        data: Vec::with_capacity(cap),
        cap,
        full: false,
    };
    match vol.read_file(&path, &mut shown) {
        Ok(_) => {}
        Err(_) if shown.full => {}
        Err(e) => return Err(e),
    }
    let cut = size > shown.data.len() as u64;
    match as_text(&shown.data, cut) {
        _ if size == 0 => body.push_str("<p>The file is empty.</p>"),
        Some(text) => {
            if cut {
                let _ = write!(
                    body,
                    "<p>The first {} of {} are shown.</p>",
                    esc(&human(shown.data.len() as u64)),
                    esc(&human(size))
                );
            }
            let _ = write!(body, "<pre class=\"file\">{}</pre>", esc(text));
        }
        None => body.push_str("<p>A binary file: download it to look inside.</p>"),
    }
    Ok(page(StatusCode::OK, &path, &body))
}

/// A symbolic link: where it points, linked when that is inside the volume.
fn link_page(t: &Target, to: &str) -> Response {
    let path = t.fs_path();
    let parent = t
        .path
        .get(..t.path.len().saturating_sub(1))
        .unwrap_or_default();
    let joined = if to.starts_with('/') {
        to.to_string()
    } else {
        format!("/{}/{to}", parent.join("/"))
    };
    let link = vfs::normalize(&joined).ok().map(|p| {
        let names: Vec<String> = p
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        t.url_of(&names, false)
    });
    let to_html = match link {
        Some(href) => format!("<a href=\"{}\">{}</a>", esc(&href), esc(to)),
        None => esc(to),
    };
    page(
        StatusCode::OK,
        &path,
        &format!(
            "{}<h1>{}</h1><p>A symbolic link to <code>{to_html}</code>.</p>",
            t.breadcrumbs(),
            esc(&path)
        ),
    )
}

/// Hands a download's bytes to the connection, a piece at a time.
struct Sender {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: u64,
    limit: u64,
}

impl Sender {
    fn push(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.tx.blocking_send(Ok(piece)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for Sender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sent = self.sent.saturating_add(buf.len() as u64);
        if self.sent > self.limit {
            return Err(std::io::Error::other(
                "the file holds more bytes than its size says",
            ));
        }
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= PIECE {
            self.push()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.push()
    }
}

/// `…?download`: the file's bytes as an attachment, streamed from the
/// blocking pool through a short queue, so a slow client slows the reads.
async fn download(hub: &Hub, target: Target, opened: Opened) -> Response {
    let Ok(permit) = Arc::clone(&hub.browser.downloads).try_acquire_owned() else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "Too many downloads are under way; try again in a moment.",
        );
    };
    let (head_tx, head_rx) = oneshot::channel::<Result<u64, Failure>>();
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(PIECES_QUEUED);
    let stop = Arc::clone(&opened.stop);
    let path = target.fs_path();
    let name = target.path.last().cloned().unwrap_or_else(|| "file".into());
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let stopped = || opened.stop.load(Ordering::Relaxed);
        let opened_vol = opened
            .image()
            .and_then(|img| img.volume(target.partition, false))
            .and_then(|mut vol| vol.stat(&path).map(|e| (vol, e)));
        let (mut vol, entry) = match opened_vol {
            Ok(v) => v,
            Err(e) => {
                let _ = head_tx.send(Err(Failure::from_vfs(&e, stopped())));
                return;
            }
        };
        if entry.kind != EntryKind::File {
            let _ = head_tx.send(Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "Not a file",
                format!("{path} is a {}, not a file", kind_name(entry.kind)),
            )));
            return;
        }
        if head_tx.send(Ok(entry.size)).is_err() {
            return;
        }
        let mut out = Sender {
            tx: tx.clone(),
            buf: Vec::with_capacity(PIECE),
            sent: 0,
            limit: entry.size,
        };
        let r = vol.read_file(&path, &mut out).and_then(|n| {
            out.flush().map_err(|e| vfs::Error::Local {
                path: path.clone(),
                op: "send",
                source: e,
            })?;
            Ok(n)
        });
        let short = matches!(r, Ok(n) if n != entry.size);
        if let Err(e) = r {
            // The connection is cut short: the client sees an incomplete
            // download rather than a complete-looking wrong one.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        } else if short {
            let _ = tx.blocking_send(Err(std::io::Error::other(
                "the file holds fewer bytes than its size says",
            )));
        }
    });
    let size = match head_rx.await {
        Ok(Ok(size)) => size,
        Ok(Err(f)) => return f.page(),
        Err(_) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot read this",
                "reading the disk failed",
            )
        }
    };
    // When the client goes away the stream is dropped; the reader then
    // fails to send and stops (and the flag stops any read in between).
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let guard = StopOnDrop(stop);
    let stream = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|item| (item, (rx, guard)))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&attachment(&name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    r
}

/// `Content-Disposition` for a download named `name`: an ASCII fallback and
/// the exact name (RFC 6266, RFC 8187).
fn attachment(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        component(name)
    )
}

/// The link to the file browser for the machine page.
pub(crate) fn machine_link(repo: &str, tag: &str) -> String {
    format!(
        "<h2>Files</h2><p><a class=\"files\" href=\"/m/{}/{}/files/\">Browse the files of {}:{}</a></p>",
        esc(repo),
        esc(tag),
        esc(repo),
        esc(tag)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_whole() {
        assert_eq!(component("a b/c%"), "a%20b%2Fc%25");
        assert_eq!(component("é"), "%C3%A9");
        assert_eq!(
            attachment("os \"release\".txt"),
            "attachment; filename=\"os__release_.txt\"; filename*=UTF-8''os%20%22release%22.txt"
        );
    }

    #[test]
    fn modes_and_text() {
        assert_eq!(
            mode_string(EntryKind::File, Some(0o100644)),
            "-rw-r--r-- (0644)"
        );
        assert_eq!(
            mode_string(EntryKind::Dir, Some(0o755)),
            "drwxr-xr-x (0755)"
        );
        assert_eq!(mode_string(EntryKind::Dir, None), "");
        assert_eq!(as_text(b"hi\n", false), Some("hi\n"));
        assert_eq!(as_text(b"a\0b", false), None);
        // "é" cut after its first byte.
        assert_eq!(as_text(&[b'a', 0xC3], true), Some("a"));
        assert_eq!(as_text(&[b'a', 0xC3], false), None);
        assert_eq!(as_text(&[0xFF, b'a'], true), None);
        assert_eq!(when(Some(0)), "1970-01-01T00:00:00Z");
    }
}
