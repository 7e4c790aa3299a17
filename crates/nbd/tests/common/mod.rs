//! A server on a Unix socket in a temporary folder, and a raw protocol client.
#![allow(dead_code)]

use nbd::proto::{self, opt, Request};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use vdisk::{CreateOptions, OpenOptions};

/// A running server over one image.
pub struct Running {
    pub dir: Option<tempfile::TempDir>,
    pub image: PathBuf,
    pub socket: PathBuf,
    stop: nbd::StopHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Stops the server and waits until it has flushed and returned.
    pub fn stop(mut self) -> Stopped {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
        Stopped {
            _dir: self.dir.take(),
            image: self.image.clone(),
        }
    }

    pub fn uri(&self) -> String {
        format!("nbd+unix:///disk?socket={}", self.socket.display())
    }

    pub fn connect(&self) -> Client {
        Client {
            s: UnixStream::connect(&self.socket).unwrap(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The image of a stopped server, and the folder that keeps it.
pub struct Stopped {
    _dir: Option<tempfile::TempDir>,
    pub image: PathBuf,
}

impl std::ops::Deref for Stopped {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.image
    }
}

impl AsRef<Path> for Stopped {
    fn as_ref(&self) -> &Path {
        &self.image
    }
}

/// A dynamic VHD of `size` bytes in a new folder, with `data` written at
/// offset 0, served as export "disk".
pub fn serve_new(size: u64, data: &[u8], read_only: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.vhd");
    let opts = CreateOptions {
        block_size: Some(1 << 20),
        ..CreateOptions::default()
    };
    vdisk::create(&image, size, &opts, false).unwrap();
    if !data.is_empty() {
        let mut d = vdisk::open(&image, OpenOptions { writable: true }).unwrap();
        d.write_at(data, 0).unwrap();
        d.flush().unwrap();
    }
    serve_in(dir, image, read_only)
}

/// Serves `image` (in `dir`) as export "disk".
pub fn serve_in(dir: tempfile::TempDir, image: PathBuf, read_only: bool) -> Running {
    let disk = vdisk::open(
        &image,
        OpenOptions {
            writable: !read_only,
        },
    )
    .unwrap();
    let socket = dir.path().join("nbd.sock");
    let listener = nbd::Listener::unix(&socket).unwrap();
    let server = nbd::Server::new(vec![nbd::Export {
        name: "disk".into(),
        description: "a test disk".into(),
        disk,
        read_only,
    }]);
    let stop = server.stop_handle();
    let thread = std::thread::spawn(move || server.run(&listener));
    Running {
        dir: Some(dir),
        image,
        socket,
        stop,
        thread: Some(thread),
    }
}

/// A client speaking the protocol byte by byte.
pub struct Client {
    pub s: UnixStream,
}

/// An option reply.
#[derive(Debug)]
pub struct OptReply {
    pub option: u32,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// A transmission reply: simple, or one structured chunk.
#[derive(Debug)]
pub struct Reply {
    pub structured: bool,
    pub flags: u16,
    pub kind: u16,
    pub error: u32,
    pub cookie: u64,
    pub data: Vec<u8>,
}

impl Client {
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).unwrap();
        b
    }

    /// Whether the server closed the connection (reads end of file).
    pub fn closed(&mut self) -> bool {
        self.s
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }

    /// Reads the greeting and sends the client flags.
    pub fn hello(&mut self, flags: u32) -> u16 {
        let g = self.read_n(18);
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        self.s.write_all(&flags.to_be_bytes()).unwrap();
        u16::from_be_bytes([g[16], g[17]])
    }

    pub fn send_option(&mut self, option: u32, data: &[u8]) {
        let mut b = proto::IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).unwrap();
    }

    pub fn opt_reply(&mut self) -> OptReply {
        let h = self.read_n(20);
        assert_eq!(h[..8], proto::REPLY_MAGIC.to_be_bytes());
        let option = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let data = self.read_n(len as usize);
        OptReply { option, kind, data }
    }

    /// Option replies up to and including the final one (an ACK or an error).
    pub fn opt_replies(&mut self) -> Vec<OptReply> {
        let mut out = Vec::new();
        loop {
            let r = self.opt_reply();
            let last = r.kind == proto::rep::ACK || r.kind & (1 << 31) != 0;
            out.push(r);
            if last {
                return out;
            }
        }
    }

    /// Handshake to transmission by GO; with structured replies and
    /// base:allocation when `structured`. Returns (size, transmission flags).
    pub fn go(&mut self, structured: bool) -> (u64, u16) {
        self.hello(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES);
        if structured {
            self.send_option(opt::STRUCTURED_REPLY, &[]);
            assert_eq!(self.opt_reply().kind, proto::rep::ACK);
            self.send_option(
                opt::SET_META_CONTEXT,
                &meta_data("disk", &["base:allocation"]),
            );
            let r = self.opt_replies();
            assert_eq!(r.len(), 2, "{r:?}");
            assert_eq!(r[0].kind, proto::rep::META_CONTEXT);
        }
        self.send_option(opt::GO, &info_data("disk", &[]));
        let r = self.opt_replies();
        let export = r
            .iter()
            .find(|r| r.kind == proto::rep::INFO && r.data[..2] == [0, 0])
            .expect("NBD_INFO_EXPORT");
        assert_eq!(r.last().unwrap().kind, proto::rep::ACK);
        (
            u64::from_be_bytes(export.data[2..10].try_into().unwrap()),
            u16::from_be_bytes(export.data[10..12].try_into().unwrap()),
        )
    }

    pub fn request(&mut self, kind: u16, flags: u16, cookie: u64, offset: u64, length: u32) {
        let r = Request {
            flags,
            kind,
            cookie,
            offset,
            length,
        };
        self.s.write_all(&r.encode()).unwrap();
    }

    /// A simple reply, with `data_len` bytes of data when it succeeded.
    pub fn simple(&mut self, data_len: usize) -> Reply {
        let r = self.any_reply(data_len);
        assert!(
            !r.structured,
            "a structured reply where a simple one was due: {r:?}"
        );
        r
    }

    /// A simple or structured reply (one chunk), told apart by its magic.
    pub fn any_reply(&mut self, read_len: usize) -> Reply {
        let m = self.read_n(4);
        if m == proto::SIMPLE_REPLY_MAGIC.to_be_bytes() {
            let h = self.read_n(12);
            let error = u32::from_be_bytes(h[0..4].try_into().unwrap());
            let cookie = u64::from_be_bytes(h[4..12].try_into().unwrap());
            let data = if error == 0 {
                self.read_n(read_len)
            } else {
                Vec::new()
            };
            return Reply {
                structured: false,
                flags: 0,
                kind: 0,
                error,
                cookie,
                data,
            };
        }
        assert_eq!(m, proto::STRUCTURED_REPLY_MAGIC.to_be_bytes());
        let h = self.read_n(16);
        let flags = u16::from_be_bytes([h[0], h[1]]);
        let kind = u16::from_be_bytes([h[2], h[3]]);
        let cookie = u64::from_be_bytes(h[4..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let data = self.read_n(len as usize);
        let error = if kind & (1 << 15) != 0 {
            u32::from_be_bytes(data[0..4].try_into().unwrap())
        } else {
            0
        };
        Reply {
            structured: true,
            flags,
            kind,
            error,
            cookie,
            data,
        }
    }
}

/// Data of INFO/GO for `name` asking for `wanted`.
pub fn info_data(name: &str, wanted: &[u16]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&(wanted.len() as u16).to_be_bytes());
    for w in wanted {
        d.extend_from_slice(&w.to_be_bytes());
    }
    d
}

/// Data of LIST/SET_META_CONTEXT for `name` with `queries`.
pub fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend_from_slice(&(q.len() as u32).to_be_bytes());
        d.extend_from_slice(q.as_bytes());
    }
    d
}

/// Every byte of the image at `path`, read by vdisk.
pub fn contents(path: &Path) -> Vec<u8> {
    let d = vdisk::open(path, OpenOptions::default()).unwrap();
    let mut b = vec![0u8; d.virtual_size() as usize];
    d.read_at(&mut b, 0).unwrap();
    b
}

/// Bytes distinct per offset and seed.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 9) as u8)
        .collect()
}
