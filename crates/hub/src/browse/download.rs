//! Downloads of single files, streamed from the blocking pool.

use super::disk::Opened;
use super::pages::kind_name;
use super::{component, error_page, Failure, Target, PIECE, PIECES_QUEUED};
use crate::Hub;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use vfs::EntryKind;

/// Hands a download's bytes to the connection, a piece at a time.
pub(super) struct Sender {
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
pub(super) async fn download(hub: &Hub, target: Target, opened: Opened) -> Response {
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
        Ok(Err(f)) => return f.page_at(&target),
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
pub(super) fn attachment(name: &str) -> String {
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
