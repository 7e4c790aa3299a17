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
use crate::web::{esc, page};
use crate::{blobs::db_err, names, Hub};
use axum::http::StatusCode;
use axum::response::Response;
use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::index::DiskIndex;
use store::ChunkCache;
use tokio::sync::Semaphore;

mod disk;
mod download;
mod machine;
mod pages;

use disk::Opened;
use download::download;
use machine::{load_index, load_machine};
use pages::{disks_page, page_job};

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
const INLINE_CAP: u64 = 256 << 10;

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
    // Repository names may hold slashes, and even a component `files`: every
    // `files` segment after a repository and a tag is a possible split, and
    // the first whose machine version exists wins.
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
        Err(e) => return Ok(e.page_at(&target)),
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
        Err(e) => return Ok(e.page_at(&target)),
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

    /// The error page for `t`, with the breadcrumbs that lead back up.
    fn page_at(&self, t: &Target) -> Response {
        page(
            self.status,
            self.title,
            &format!(
                "{}<h1>{}</h1><p class=\"error\">{}</p>",
                t.breadcrumbs(),
                esc(self.title),
                esc(&self.reason)
            ),
        )
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
    use super::download::attachment;
    use super::pages::{as_text, mode_string, when};
    use super::*;
    use vfs::EntryKind;

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
