//! The servers the hub's scale path is checked against, started by the
//! tests themselves on free ports of 127.0.0.1: a private PostgreSQL cluster
//! (Debian's `postgresql`) and moto's S3 server (PyPI's `moto[server]`,
//! in the virtual environment scripts/deps.sh fills). One of each serves
//! every test of a test binary that runs meanwhile, each test with its own
//! database or bucket; the last test to let go stops it.
//!
//! A missing peer skips a test with the reason printed, except under
//! `CI=true`, where it fails it.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The access key the tests give moto (which accepts any).
pub const S3_KEY_ID: &str = "vmhub-test";
/// The secret that goes with it.
pub const S3_SECRET: &str = "vmhub-test-secret";

/// Reports a missing peer: `None` (the test skips) outside CI, a failure
/// under `CI=true`.
pub fn missing<T>(what: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} (scripts/deps.sh installs it)");
    }
    eprintln!("skipped: {what} (scripts/deps.sh installs it)");
    None
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("an address").port()
}

/// A name no other test of this run uses.
fn unique(sep: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "vmhub{sep}{}{sep}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The one running instance of a peer, started by the first test that asks.
fn shared<T>(slot: &Mutex<Weak<T>>, start: impl FnOnce() -> Option<T>) -> Option<Arc<T>> {
    let mut held = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = held.upgrade() {
        return Some(t);
    }
    let t = Arc::new(start()?);
    *held = Arc::downgrade(&t);
    Some(t)
}

fn describe(out: &std::process::Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A private PostgreSQL cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The unprivileged user the cluster runs as, when the tests run as
    /// root (initdb refuses root).
    user: Option<String>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The newest PostgreSQL's programs.
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

impl Postgres {
    /// The shared cluster, started if none runs.
    pub fn get() -> Option<Arc<Postgres>> {
        static SLOT: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
        shared(&SLOT, Postgres::start)
    }

    fn start() -> Option<Postgres> {
        let Some(bin) = postgres_bin() else {
            return missing("no PostgreSQL in /usr/lib/postgresql/*/bin");
        };
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let dir = tempfile::tempdir().expect("tempdir");
        let user = if root {
            let out = Command::new("id").args(["-u", "postgres"]).output();
            let uid = out
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<u32>().ok());
            let Some(uid) = uid else {
                return missing("no postgres user to run PostgreSQL as");
            };
            std::os::unix::fs::chown(dir.path(), Some(uid), None).expect("chown");
            Some("postgres".to_string())
        } else {
            None
        };
        let mut pg = Postgres {
            dir,
            bin,
            user,
            port: free_port(),
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                p(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let log = pg.dir.path().join("log");
        // The free port may be taken again before the server binds it (by
        // another test's peer, say): then it tries another.
        for attempt in 0..3 {
            let options = format!(
                "-F -p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                pg.port,
                p(pg.dir.path())
            );
            let started = pg.output(
                "pg_ctl",
                &[
                    "-D",
                    p(&data),
                    "-l",
                    p(&log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &options,
                    "start",
                ],
            );
            if started.status.success() {
                break;
            }
            assert!(
                attempt < 2,
                "pg_ctl start: {}\n{}",
                describe(&started),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            pg.port = free_port();
        }
        Some(pg)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn output(&self, program: &str, args: &[&str]) -> std::process::Output {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.output(program, args);
        assert!(out.status.success(), "{program}: {}", describe(&out));
    }

    /// A new empty database; its URL.
    pub fn database(&self) -> String {
        let name = unique("_");
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
                &format!("CREATE DATABASE {name}"),
            ],
        );
        format!("postgres://postgres:unused@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", p(&data), "-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// moto's S3 server.
pub struct Moto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Moto {
    /// The shared server, started if none runs.
    pub fn get() -> Option<Arc<Moto>> {
        static SLOT: Mutex<Weak<Moto>> = Mutex::new(Weak::new());
        shared(&SLOT, Moto::start)
    }

    fn start() -> Option<Moto> {
        let venv = std::env::var("VMHUB_VENV").unwrap_or_else(|_| {
            format!(
                "{}/.cache/vmhub-ci/venv",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let program = Path::new(&venv).join("bin/moto_server");
        if !program.exists() {
            return missing(&format!("no {}", program.display()));
        }
        // As for PostgreSQL: another port when the free one was taken.
        for attempt in 0..3 {
            let port = free_port();
            let child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
            let mut moto = Moto { child, port };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(moto);
                }
                if moto.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(attempt < 2, "moto_server did not listen on port {port}");
        }
        unreachable!("the last attempt either returns or fails")
    }

    /// The S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new empty bucket, made through the S3 API (CreateBucket); its
    /// storage URL for `vmhub serve --storage`.
    pub fn bucket(&self) -> String {
        use std::io::{Read, Write};
        let name = unique("-");
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "CreateBucket: {answer}");
        format!(
            "s3://{name}/hub?endpoint={}&region=us-east-1",
            self.endpoint()
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Where a hub under test keeps its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// SQLite in the data folder.
    Sqlite,
    /// A database of the shared PostgreSQL cluster.
    Postgres,
}

/// Where a hub under test keeps its blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blobs {
    /// The data folder.
    Local,
    /// A bucket of the shared moto server.
    S3,
}

/// A hub's backends: a data folder, and a fresh database and bucket when
/// asked for; the peers serving them run while this lives.
pub struct Backend {
    /// The data folder.
    pub dir: tempfile::TempDir,
    /// The `--database` URL, if not SQLite.
    pub database: Option<String>,
    /// The `--storage` URL, if not the data folder.
    pub storage: Option<String>,
    _pg: Option<Arc<Postgres>>,
    _s3: Option<Arc<Moto>>,
}

impl Backend {
    /// Backends of the given kinds; `None` when a peer is missing (outside CI).
    pub fn new(db: Db, blobs: Blobs) -> Option<Backend> {
        let (pg, database) = match db {
            Db::Sqlite => (None, None),
            Db::Postgres => {
                let pg = Postgres::get()?;
                let url = pg.database();
                (Some(pg), Some(url))
            }
        };
        let (s3, storage) = match blobs {
            Blobs::Local => (None, None),
            Blobs::S3 => {
                let s3 = Moto::get()?;
                let url = s3.bucket();
                (Some(s3), Some(url))
            }
        };
        Some(Backend {
            dir: tempfile::tempdir().expect("tempdir"),
            database,
            storage,
            _pg: pg,
            _s3: s3,
        })
    }

    /// A hub configuration over these backends, with data folder `data`
    /// (hubs sharing the database and storage each have their own).
    pub fn config_at(&self, data: &Path) -> hub::Config {
        let mut c = hub::Config::new(data);
        c.database = self.database.clone();
        c.storage = self.storage.as_deref().map(|url| {
            let mut s3 = hub::s3::S3Config::parse(url).expect("a storage URL");
            s3.credentials = Some((S3_KEY_ID.into(), S3_SECRET.into()));
            s3
        });
        c
    }

    /// A hub configuration over these backends and their data folder.
    pub fn config(&self) -> hub::Config {
        self.config_at(self.dir.path())
    }

    /// The `vmhub serve` arguments that select these backends.
    pub fn serve_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(d) = &self.database {
            a.extend(["--database".to_string(), d.clone()]);
        }
        if let Some(s) = &self.storage {
            a.extend(["--storage".to_string(), s.clone()]);
        }
        a
    }

    /// The environment `vmhub serve` reads S3 credentials from.
    pub fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", S3_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
        ]
    }
}
