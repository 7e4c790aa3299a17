//! The pages: the disks of a machine, a partition table, a folder, a file,
//! a link. Everything but the list of disks is made on the blocking pool.

use super::disk::Opened;
use super::{error_page, Failure, Target, INLINE_CAP, MAX_LISTED, PAGE_DEADLINE, QUEUE_WAIT};
use crate::web::{esc, human, page};
use crate::Hub;
use axum::http::StatusCode;
use axum::response::Response;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use store::machine::Machine;
use vfs::{EntryKind, Image, TableKind, Volume};

/// `/m/<repo>/<tag>/files/`: the machine's disks.
pub(super) fn disks_page(t: &Target, machine: &Machine) -> Response {
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

/// Makes a page on the blocking pool, within the page deadline.
pub(super) async fn page_job(hub: &Hub, target: Target, opened: Opened) -> Response {
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
        render(&target, &opened).unwrap_or_else(|f| f.page_at(&target))
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
pub(super) fn render(t: &Target, opened: &Opened) -> Result<Response, Failure> {
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
pub(super) fn partitions_page(t: &Target, img: &Image) -> Response {
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
            let to = Target {
                repo: t.repo.clone(),
                tag: t.tag.clone(),
                disk: t.disk,
                partition: Some(p.number),
                path: Vec::new(),
            };
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
pub(super) fn mode_string(kind: EntryKind, mode: Option<u32>) -> String {
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
pub(super) fn when(t: Option<i64>) -> String {
    match t {
        Some(s) if s >= 0 => {
            let at = UNIX_EPOCH + Duration::from_secs(s.unsigned_abs());
            humantime::format_rfc3339_seconds(at).to_string()
        }
        Some(s) => format!("{s} s before 1970"),
        None => String::new(),
    }
}

pub(super) fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "folder",
        EntryKind::Symlink => "link",
        EntryKind::Other => "special",
    }
}

/// A folder listing (blocking).
pub(super) fn folder_page(t: &Target, vol: &mut dyn Volume) -> vfs::Result<Response> {
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
pub(super) struct Capped {
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
pub(super) fn as_text(data: &[u8], cut: bool) -> Option<&str> {
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
pub(super) fn file_page(t: &Target, vol: &mut dyn Volume, size: u64) -> vfs::Result<Response> {
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
pub(super) fn link_page(t: &Target, to: &str) -> Response {
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
