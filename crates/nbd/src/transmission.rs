//! The transmission phase: requests in, replies out.
//!
//! Several workers serve one connection, so that a client with many requests
//! in flight (QEMU keeps up to 16) gets them served in parallel. A worker takes
//! the reading side, reads one whole request (with its payload), lets go of it
//! for the next worker, serves the request and writes the whole reply at once.
//! Replies may leave in any order: the client matches them by cookie.

use crate::conn::Conn;
use crate::handshake::Session;
use crate::proto::{self, cflag, chunk, cmd, errno, state, Request};
use crate::MAX_PAYLOAD;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use vdisk::{Error, ExtentKind};

/// Descriptors in one block status reply at most; the client asks again for
/// the rest.
const MAX_EXTENTS: usize = 1 << 16;
/// Reads at least this long look for holes first and send them as hole
/// chunks, which spares copying and sending zeros (structured replies only).
const SPARSE_MIN: u32 = 16 << 10;
/// A worker keeps a reply buffer up to this size between requests.
const KEEP_BUFFER: usize = 4 << 20;

/// A reply being built. The bytes past the reply are kept from earlier
/// replies rather than cleared, so that a read reply costs no zeroing.
#[derive(Default)]
struct ReplyBuf {
    buf: Vec<u8>,
    len: usize,
}

impl ReplyBuf {
    fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `b`.
    fn put(&mut self, b: &[u8]) {
        self.space(b.len()).copy_from_slice(b);
    }

    /// Appends `n` bytes for the caller to fill (their old contents are not
    /// cleared).
    fn space(&mut self, n: usize) -> &mut [u8] {
        let (start, end) = (self.len, self.len + n);
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.len = end;
        &mut self.buf[start..end]
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Lets go of a large buffer a rare large request needed.
    fn trim(&mut self) {
        if self.buf.len() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
        self.len = 0;
    }
}

/// Serves requests on `conn` with `workers` threads until the client
/// disconnects or breaks the protocol, then flushes the export if this
/// connection wrote to it.
pub(crate) fn serve(conn: &Conn, session: &Session, workers: usize, log: &(dyn Fn(&str) + Sync)) {
    let t = Transmission {
        conn,
        session,
        log,
        reading: Mutex::new(()),
        writing: Mutex::new(()),
        ended: AtomicBool::new(false),
        wrote: AtomicBool::new(false),
    };
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| t.worker());
        }
    });
    if t.wrote.load(Ordering::Acquire) {
        // Writes acknowledged to a client that left without a flush are made
        // durable anyway.
        let e = &session.export;
        if let Err(err) = e.disk.write().map(|mut d| d.flush()).unwrap_or(Ok(())) {
            t.log(&format!("flush after the client left: {err}"));
        }
    }
}

struct Transmission<'a> {
    conn: &'a Conn,
    session: &'a Session,
    /// Where failed requests are told.
    log: &'a (dyn Fn(&str) + Sync),
    /// Held while a request is read off the connection.
    reading: Mutex<()>,
    /// Held while a reply is written.
    writing: Mutex<()>,
    /// The client disconnected or the connection failed.
    ended: AtomicBool,
    /// A write reached the disk through this connection.
    wrote: AtomicBool,
}

/// What was read of a write request's payload.
enum Payload {
    None,
    Read,
    /// Larger than the server accepts: read and dropped.
    TooBig,
}

impl Transmission<'_> {
    fn log(&self, message: &str) {
        (self.log)(&format!("export {:?}: {message}", self.session.export.name));
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.conn.shutdown();
    }

    fn worker(&self) {
        let mut payload = Vec::new();
        let mut out = ReplyBuf::default();
        loop {
            let (req, got) = {
                let Ok(_g) = self.reading.lock() else { return };
                if self.ended.load(Ordering::Acquire) {
                    return;
                }
                match self.read_request(&mut payload) {
                    Some(r) => r,
                    None => {
                        // After a disconnect request the reading side was
                        // closed on purpose, and replies still go out.
                        if !self.ended.load(Ordering::Acquire) {
                            self.end();
                        }
                        return;
                    }
                }
            };
            if req.kind == cmd::DISC {
                // Requests in flight are still answered; the reading side is
                // closed so that no worker waits for another request.
                self.ended.store(true, Ordering::Release);
                self.conn.shutdown_read();
                return;
            }
            out.clear();
            self.handle(&req, &payload, got, &mut out);
            let sent = match self.writing.lock() {
                Ok(_g) => self.conn.write_all(out.bytes()).is_ok(),
                Err(_) => false,
            };
            out.trim();
            if !sent {
                self.end();
                return;
            }
        }
    }

    /// Reads a request and, for a write, its payload into `payload`. `None`
    /// when the connection ended or the request has no valid magic (the
    /// stream cannot be trusted past it).
    fn read_request(&self, payload: &mut Vec<u8>) -> Option<(Request, Payload)> {
        let mut h = [0u8; proto::REQUEST_SIZE];
        self.conn.read_exact(&mut h).ok()?;
        let req = Request::decode(&h)?;
        if req.kind != cmd::WRITE {
            return Some((req, Payload::None));
        }
        if req.length > MAX_PAYLOAD {
            self.conn.skip(u64::from(req.length)).ok()?;
            return Some((req, Payload::TooBig));
        }
        payload.resize(req.length as usize, 0);
        self.conn.read_exact(payload).ok()?;
        Some((req, Payload::Read))
    }

    /// Serves `req`, putting the whole reply into `out`.
    fn handle(&self, req: &Request, payload: &[u8], got: Payload, out: &mut ReplyBuf) {
        let e = &self.session.export;
        let len = u64::from(req.length);
        let inside = req.offset.checked_add(len).is_some_and(|end| end <= e.size);
        let writes = matches!(req.kind, cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES);
        let too_big =
            matches!(got, Payload::TooBig) || (req.kind == cmd::READ && req.length > MAX_PAYLOAD);
        let refusal = if too_big {
            Some((
                errno::EINVAL,
                format!("requests are limited to {MAX_PAYLOAD} bytes"),
            ))
        } else if writes && e.read_only {
            Some((errno::EPERM, "the export is read-only".to_string()))
        } else if !inside {
            let code = if writes { errno::ENOSPC } else { errno::EINVAL };
            Some((
                code,
                format!(
                    "{} bytes at offset {} lie past the end of the export ({} bytes)",
                    len, req.offset, e.size
                ),
            ))
        } else {
            None
        };
        if let Some((code, msg)) = refusal {
            self.fail(req, code, &msg, out);
            return;
        }
        let fua = req.flags & cflag::FUA != 0;
        let result = match req.kind {
            cmd::READ => return self.read(req, out),
            cmd::BLOCK_STATUS => return self.block_status(req, out),
            cmd::WRITE => self.mutate(fua, |d| d.write_at(payload, req.offset)),
            cmd::WRITE_ZEROES if req.flags & cflag::FAST_ZERO != 0 => {
                // Zeroing may mean writing them (a differencing disk must
                // hide its parent's data): never promised to be fast.
                return self.fail(req, errno::ENOTSUP, "zeroing is not fast here", out);
            }
            cmd::WRITE_ZEROES | cmd::TRIM => self.mutate(fua, |d| d.discard(req.offset, len)),
            cmd::FLUSH => e
                .disk
                .write()
                .map_err(|_| poisoned())
                .and_then(|mut d| d.flush()),
            cmd::CACHE => {
                if let Ok(d) = e.disk.read() {
                    d.prefetch(req.offset, len);
                }
                Ok(())
            }
            _ => {
                return self.fail(
                    req,
                    errno::EINVAL,
                    &format!("unknown command {}", req.kind),
                    out,
                )
            }
        };
        match result {
            Ok(()) => out.put(&proto::simple_reply(0, req.cookie)),
            Err(err) => {
                self.log(&err.to_string());
                self.fail(req, error_code(&err), &err.to_string(), out);
            }
        }
    }

    /// Applies a change to the disk, and makes it durable first when `fua`.
    fn mutate(
        &self,
        fua: bool,
        change: impl FnOnce(&mut dyn vdisk::Disk) -> vdisk::Result<()>,
    ) -> vdisk::Result<()> {
        let mut d = self.session.export.disk.write().map_err(|_| poisoned())?;
        self.wrote.store(true, Ordering::Release);
        change(d.as_mut())?;
        if fua {
            d.flush()?;
        }
        Ok(())
    }

    fn read(&self, req: &Request, out: &mut ReplyBuf) {
        let e = &self.session.export;
        let structured = self.session.structured;
        if req.length == 0 && structured {
            out.put(&proto::chunk_header(
                chunk::FLAG_DONE,
                chunk::NONE,
                req.cookie,
                0,
            ));
            return;
        }
        let Ok(d) = e.disk.read() else {
            let err = poisoned();
            return self.fail(req, error_code(&err), &err.to_string(), out);
        };
        let mut runs = vec![(req.offset, u64::from(req.length), true)];
        if structured && req.flags & cflag::DF == 0 && req.length >= SPARSE_MIN {
            if let Ok(extents) = d.map(req.offset, u64::from(req.length)) {
                runs = data_runs(&extents, req.offset, u64::from(req.length));
            }
        }
        let result = if structured {
            structured_read(d.as_ref(), req.cookie, &runs, out)
        } else {
            out.put(&proto::simple_reply(0, req.cookie));
            d.read_at(out.space(req.length as usize), req.offset)
        };
        if let Err(err) = result {
            self.log(&err.to_string());
            self.fail(req, error_code(&err), &err.to_string(), out);
        }
    }

    fn block_status(&self, req: &Request, out: &mut ReplyBuf) {
        if !self.session.allocation {
            return self.fail(
                req,
                errno::EINVAL,
                "no metadata context was chosen (base:allocation)",
                out,
            );
        }
        if req.length == 0 {
            return self.fail(req, errno::EINVAL, "block status of zero bytes", out);
        }
        let e = &self.session.export;
        let map = match e.disk.read() {
            Ok(d) => d.map(req.offset, u64::from(req.length)),
            Err(_) => Err(poisoned()),
        };
        let extents = match map {
            Ok(m) => m,
            Err(err) => {
                self.log(&err.to_string());
                return self.fail(req, error_code(&err), &err.to_string(), out);
            }
        };
        let one = req.flags & cflag::REQ_ONE != 0;
        let mut descriptors: Vec<(u32, u32)> = Vec::new();
        let end = req.offset + u64::from(req.length);
        for x in &extents {
            let flags = match x.kind {
                ExtentKind::Data => 0,
                ExtentKind::Zero | ExtentKind::Unallocated => state::HOLE | state::ZERO,
            };
            // Clipped to the request, so each length fits in 32 bits.
            let start = x.offset.max(req.offset);
            let stop = x.end().min(end);
            if stop <= start {
                continue;
            }
            let length = (stop - start) as u32;
            match descriptors.last_mut() {
                Some(last) if last.1 == flags => last.0 += length,
                _ => {
                    if descriptors.len() == MAX_EXTENTS || (one && !descriptors.is_empty()) {
                        break;
                    }
                    descriptors.push((length, flags));
                }
            }
        }
        if descriptors.is_empty() {
            return self.fail(req, errno::EIO, "the image mapped no extents", out);
        }
        out.put(&proto::chunk_header(
            chunk::FLAG_DONE,
            chunk::BLOCK_STATUS,
            req.cookie,
            (4 + 8 * descriptors.len()) as u32,
        ));
        out.put(&proto::BASE_ALLOCATION_ID.to_be_bytes());
        for (length, flags) in descriptors {
            out.put(&length.to_be_bytes());
            out.put(&flags.to_be_bytes());
        }
    }

    /// An error reply: a structured error chunk for the commands whose replies
    /// are structured, a simple reply otherwise.
    fn fail(&self, req: &Request, code: u32, message: &str, out: &mut ReplyBuf) {
        out.clear();
        let structured_kind = matches!(req.kind, cmd::READ | cmd::BLOCK_STATUS);
        if self.session.structured && structured_kind {
            out.put(&proto::error_chunk(req.cookie, code, message));
        } else {
            out.put(&proto::simple_reply(code, req.cookie));
        }
    }
}

/// `[offset, offset+len)` as runs of (start, length, holds data), from the
/// disk's extents: what reads as zeros without being stored becomes a hole.
fn data_runs(extents: &[vdisk::Extent], offset: u64, len: u64) -> Vec<(u64, u64, bool)> {
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    let end = offset + len;
    for x in extents {
        let (s, t) = (x.offset.max(offset), x.end().min(end));
        if t <= s {
            continue;
        }
        let data = x.kind == ExtentKind::Data;
        match runs.last_mut() {
            Some(last) if last.2 == data && last.0 + last.1 == s => last.1 += t - s,
            _ => runs.push((s, t - s, data)),
        }
    }
    // The extents cover the request exactly; if they did not, read it all.
    let covered: u64 = runs.iter().map(|r| r.1).sum();
    if runs.first().map(|r| r.0) != Some(offset) || covered != len {
        return vec![(offset, len, true)];
    }
    runs
}

/// A structured read reply: a data chunk per run of data, a hole chunk per
/// run of zeros, the last one marked done.
fn structured_read(
    disk: &dyn vdisk::Disk,
    cookie: u64,
    runs: &[(u64, u64, bool)],
    out: &mut ReplyBuf,
) -> vdisk::Result<()> {
    for (i, &(start, len, data)) in runs.iter().enumerate() {
        let flags = if i + 1 == runs.len() {
            chunk::FLAG_DONE
        } else {
            0
        };
        // Each run is part of one request, so its length fits in 32 bits.
        if data {
            out.put(&proto::chunk_header(
                flags,
                chunk::OFFSET_DATA,
                cookie,
                (8 + len) as u32,
            ));
            out.put(&start.to_be_bytes());
            disk.read_at(out.space(len as usize), start)?;
        } else {
            out.put(&proto::chunk_header(flags, chunk::OFFSET_HOLE, cookie, 12));
            out.put(&start.to_be_bytes());
            out.put(&(len as u32).to_be_bytes());
        }
    }
    Ok(())
}

/// The NBD error for a failed disk operation.
fn error_code(err: &Error) -> u32 {
    match err {
        Error::ReadOnly { .. } => errno::EPERM,
        Error::OutOfRange { .. } | Error::InvalidArgument(_) => errno::EINVAL,
        Error::Io { source, .. } if source.raw_os_error() == Some(28) => errno::ENOSPC,
        Error::Io { source, .. } if source.raw_os_error() == Some(12) => errno::ENOMEM,
        Error::Unsupported { .. } => errno::ENOTSUP,
        _ => errno::EIO,
    }
}

fn poisoned() -> Error {
    Error::InvalidArgument("an earlier request failed while holding the disk".into())
}
