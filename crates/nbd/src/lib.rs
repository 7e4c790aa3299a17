//! An NBD server that exports any [`vdisk::Disk`]: every format and chain
//! vdisk reads becomes usable by QEMU, qemu-img, qemu-io, nbdkit's tools and the
//! kernel's nbd client.
//!
//! It speaks the fixed newstyle handshake (options `EXPORT_NAME`, `INFO`, `GO`,
//! `LIST`, `ABORT`, `STRUCTURED_REPLY`, `LIST_META_CONTEXT` and
//! `SET_META_CONTEXT` with `base:allocation`) and the commands `READ`, `WRITE`
//! (with FUA), `FLUSH`, `TRIM`, `WRITE_ZEROES`, `CACHE`, `BLOCK_STATUS` and
//! `DISC`. Several clients may use one export at once: they share one open
//! disk, so a flush on any connection covers the writes of all of them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod handshake;
pub mod proto;
mod transmission;

use conn::Conn;
use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use vdisk::Disk;

/// The largest read or write payload served (32 MiB), as advertised in
/// `NBD_INFO_BLOCK_SIZE`.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// Clients served at once; more are turned away.
const MAX_CLIENTS: usize = 64;
/// Threads serving each connection's requests.
const WORKERS: usize = 4;
/// How often the accept loop looks for a stop request.
const STOP_POLL: Duration = Duration::from_millis(100);

/// A disk offered to clients under a name.
pub struct Export {
    /// The export name clients ask for (the empty name asks for the first export).
    pub name: String,
    /// A description for humans, sent with the name when asked.
    pub description: String,
    /// The disk; open it writable unless `read_only`.
    pub disk: Box<dyn Disk>,
    /// Refuse writes.
    pub read_only: bool,
}

type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// An export as the connections share it.
pub(crate) struct Shared {
    name: String,
    description: String,
    size: u64,
    read_only: bool,
    disk: RwLock<Box<dyn Disk>>,
}

/// Where the server listens.
pub enum Listener {
    /// A Unix socket; its file is removed when the listener is dropped.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Its path.
        path: PathBuf,
    },
    /// A TCP socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Listens on a Unix socket at `path`. A socket file left there by a server
    /// that is gone is replaced; a live one, or any other file, is an error.
    pub fn unix(path: &Path) -> io::Result<Listener> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            let stale = meta.file_type().is_socket()
                && std::os::unix::net::UnixStream::connect(path).is_err();
            if !stale {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: already exists", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Listener::Unix {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Listens on TCP at `addr` (such as `127.0.0.1:10809`; port 0 picks a free one).
    pub fn tcp(addr: &str) -> io::Result<Listener> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))?;
        Ok(Listener::Tcp(listener))
    }

    /// The NBD URI a client uses to reach `export` here.
    pub fn uri(&self, export: &str) -> String {
        match self {
            Listener::Unix { path, .. } => {
                format!("nbd+unix:///{export}?socket={}", path.display())
            }
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("nbd://{a}/{export}"),
                Err(_) => format!("nbd://?/{export}"),
            },
        }
    }

    fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Unix { listener, .. } => Ok(Conn::Unix(listener.accept()?.0)),
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                // Replies are written whole; small ones must not wait.
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
        }
    }

    /// Waits up to `timeout` for a client; whether one is waiting.
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let n = match self {
            Listener::Unix { listener, .. } => {
                poll(&mut [PollFd::new(listener, PollFlags::IN)], Some(&ts))
            }
            Listener::Tcp(l) => poll(&mut [PollFd::new(l, PollFlags::IN)], Some(&ts)),
        };
        match n {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Asks a running server to stop; cheap to clone and usable from a signal
/// handler thread.
#[derive(Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the server to stop: it closes every connection, flushes its disks
    /// and returns from [`Server::run`].
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a stop was asked for.
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// An NBD server over a set of exports.
pub struct Server {
    exports: Vec<Arc<Shared>>,
    stop: StopHandle,
    log: Option<Log>,
}

impl Server {
    /// A server offering `exports`.
    pub fn new(exports: Vec<Export>) -> Server {
        let exports = exports
            .into_iter()
            .map(|e| {
                Arc::new(Shared {
                    size: e.disk.virtual_size(),
                    name: e.name,
                    description: e.description,
                    read_only: e.read_only,
                    disk: RwLock::new(e.disk),
                })
            })
            .collect();
        Server {
            exports,
            stop: StopHandle::default(),
            log: None,
        }
    }

    /// Sends messages about failed requests and connections to `log`.
    pub fn with_log(mut self, log: impl Fn(&str) + Send + Sync + 'static) -> Server {
        self.log = Some(Arc::new(log));
        self
    }

    /// A handle that stops [`Server::run`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Accepts and serves clients on `listener` until stopped, then closes
    /// every connection and flushes the writable exports.
    pub fn run(&self, listener: &Listener) -> io::Result<()> {
        let live: Mutex<HashMap<u64, Conn>> = Mutex::new(HashMap::new());
        let ids = AtomicU64::new(0);
        let result = std::thread::scope(|scope| -> io::Result<()> {
            while !self.stop.stopped() {
                if !listener.wait(STOP_POLL)? {
                    continue;
                }
                let conn = match listener.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        self.log(&format!("accept: {e}"));
                        continue;
                    }
                };
                let id = ids.fetch_add(1, Ordering::Relaxed);
                {
                    let Ok(mut l) = live.lock() else { break };
                    if l.len() >= MAX_CLIENTS {
                        self.log("too many clients: one turned away");
                        continue;
                    }
                    if let Ok(c) = conn.try_clone() {
                        l.insert(id, c);
                    }
                }
                let live = &live;
                scope.spawn(move || {
                    self.client(&conn);
                    if let Ok(mut l) = live.lock() {
                        l.remove(&id);
                    }
                });
            }
            if let Ok(l) = live.lock() {
                for c in l.values() {
                    c.shutdown();
                }
            }
            Ok(())
        });
        let flushed = self.flush();
        result?;
        flushed.map_err(|e| io::Error::other(e.to_string()))
    }

    fn client(&self, conn: &Conn) {
        match handshake::negotiate(conn, &self.exports) {
            Ok(Some(session)) => transmission::serve(conn, &session, WORKERS, &|m| self.log(m)),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            Err(e) => self.log(&format!("handshake: {e}")),
        }
        conn.shutdown();
    }

    /// Makes every write to the writable exports durable.
    pub fn flush(&self) -> vdisk::Result<()> {
        for e in self.exports.iter().filter(|e| !e.read_only) {
            let mut d = e.disk.write().map_err(|_| {
                vdisk::Error::InvalidArgument(format!(
                    "export {:?}: a request failed while holding the disk",
                    e.name
                ))
            })?;
            d.flush()?;
        }
        Ok(())
    }

    fn log(&self, message: &str) {
        if let Some(log) = &self.log {
            log(message);
        }
    }
}
