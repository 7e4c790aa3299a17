//! Pulls and pushes against a fake OCI registry that answers with hostile
//! content: blobs longer than their descriptors, decompression bombs, absurd
//! sizes and counts, wrong digests, layers that do not fit the disks, bearer
//! authentication, unsigned machines. Each must be refused with an error that
//! names what is wrong, without filling memory or disk, and must leave the
//! library without the machine's name and without stray files.
//!
//! The registry is a small HTTP/1.1 server written here (one thread per
//! connection, keep-alive, `Content-Length` or chunked request bodies).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::index::{ChunkRef, DiskIndex, CHUNK_MEDIA_TYPE, DISK_INDEX_MEDIA_TYPE};
use store::library::{DiskSource, ImportOptions};
use store::machine::{Machine, MACHINE_CONFIG_MEDIA_TYPE};
use store::manifest::{Descriptor, Manifest, MACHINE_ARTIFACT_TYPE, MANIFEST_MEDIA_TYPE};
use store::oci::auth::Credentials;
use store::oci::{Client, ClientOptions, PullOptions, Pulled, PushOptions, RemoteRef};
use store::trust::{KeyPair, TrustStore};
use store::{Digest, Library, MachineRef};
use vdisk::Disk;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The repository every test uses.
const REPO: &str = "acme/m";

/// Tests that measure the process's peak memory run one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------
// The fake registry
// ---------------------------------------------------------------------------

/// One request as the fake received it.
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What an answer's body is.
enum Payload {
    Bytes(Vec<u8>),
    /// `head`, then `fill` bytes up to `total` bytes in all; with `length`,
    /// that `Content-Length` (true or not), else delimited by closing the
    /// connection. The connection is closed afterwards either way.
    Stream {
        head: Vec<u8>,
        fill: u8,
        total: u64,
        length: Option<u64>,
    },
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    payload: Payload,
}

impl Reply {
    fn bytes(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            payload: Payload::Bytes(body.into()),
        }
    }

    fn stream(head: Vec<u8>, fill: u8, total: u64, length: Option<u64>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            payload: Payload::Stream {
                head,
                fill,
                total,
                length,
            },
        }
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    fn error(status: u16, code: &str) -> Reply {
        Reply::bytes(
            status,
            format!("{{\"errors\":[{{\"code\":\"{code}\",\"message\":\"fake\"}}]}}"),
        )
        .header("Content-Type", "application/json")
    }
}

/// What the registry holds.
#[derive(Clone, Default)]
struct Content {
    /// By tag and by digest.
    manifests: HashMap<String, Vec<u8>>,
    /// By digest.
    blobs: HashMap<String, Vec<u8>>,
}

impl Content {
    /// `manifest` under tag `v1` and its digest, with `blobs`.
    fn new(manifest: &[u8], blobs: impl IntoIterator<Item = Vec<u8>>) -> Content {
        let mut c = Content::default();
        c.manifests.insert("v1".into(), manifest.to_vec());
        c.manifests
            .insert(Digest::of(manifest).to_string(), manifest.to_vec());
        for b in blobs {
            c.blobs.insert(Digest::of(&b).to_string(), b);
        }
        c
    }
}

type Hook = Box<dyn Fn(&Req) -> Option<Reply> + Send + Sync>;

struct Shared {
    addr: String,
    content: Mutex<Content>,
    uploads: Mutex<HashMap<String, Vec<u8>>>,
    next_upload: AtomicU64,
    /// `METHOD TARGET` of every registry request, in order.
    log: Mutex<Vec<String>>,
    /// The target of every token request.
    tokens: Mutex<Vec<String>>,
    /// With bearer authentication: the Basic `Authorization` the token
    /// server wants.
    bearer: Option<String>,
    /// Consulted before the normal answer.
    hook: Option<Hook>,
    /// Bytes written by streamed answers.
    streamed: AtomicU64,
    stop: AtomicBool,
}

struct Fake {
    shared: Arc<Shared>,
}

impl Fake {
    fn start(content: Content, bearer: Option<&Credentials>, hook: Option<Hook>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            addr,
            content: Mutex::new(content),
            uploads: Mutex::new(HashMap::new()),
            next_upload: AtomicU64::new(1),
            log: Mutex::new(Vec::new()),
            tokens: Mutex::new(Vec::new()),
            bearer: bearer.map(Credentials::basic),
            hook,
            streamed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        Fake { shared }
    }

    fn addr(&self) -> &str {
        &self.shared.addr
    }

    fn log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }

    fn tokens(&self) -> Vec<String> {
        self.shared.tokens.lock().unwrap().clone()
    }

    fn streamed(&self) -> u64 {
        self.shared.streamed.load(Ordering::SeqCst)
    }

    fn content(&self) -> Content {
        self.shared.content.lock().unwrap().clone()
    }

    fn client(&self, credentials: Option<Credentials>) -> Client {
        Client::new(
            self.addr(),
            &ClientOptions {
                plain_http: true,
                credentials,
            },
        )
    }

    fn remote(&self, reference: &str) -> RemoteRef {
        format!("{}/{REPO}{reference}", self.addr())
            .parse()
            .unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees `stop`.
        let _ = TcpStream::connect(&self.shared.addr);
    }
}

fn serve(s: &Shared, conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = conn;
    while let Some(req) = read_request(&mut reader) {
        let reply = s.answer(&req);
        if !write_reply(&mut out, &req, reply, &s.streamed) {
            return;
        }
    }
}

/// Reads one request; `None` at the end of the connection or on nonsense.
fn read_request(r: &mut impl BufRead) -> Option<Req> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    for _ in 0..200 {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut req = Req {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if let Some(n) = req.header("content-length") {
        let n: u64 = n.parse().ok()?;
        assert!(
            n <= 64 * MIB,
            "the fake refuses request bodies of {n} bytes"
        );
        let mut body = vec![0u8; n as usize];
        r.read_exact(&mut body).ok()?;
        req.body = body;
    } else if req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = u64::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            assert!(req.body.len() as u64 + n <= 64 * MIB);
            let mut piece = vec![0u8; n as usize + 2];
            r.read_exact(&mut piece).ok()?;
            piece.truncate(n as usize);
            req.body.extend_from_slice(&piece);
            if n == 0 {
                // Trailers (none expected) end with an empty line.
                let mut end = String::new();
                r.read_line(&mut end).ok()?;
                break;
            }
        }
    }
    Some(req)
}

/// Writes `reply`; returns whether the connection stays open.
fn write_reply(out: &mut TcpStream, req: &Req, reply: Reply, streamed: &AtomicU64) -> bool {
    let mut head = format!("HTTP/1.1 {} Fake\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match reply.payload {
        Payload::Bytes(body) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut all = head.into_bytes();
            if req.method != "HEAD" {
                all.extend_from_slice(&body);
            }
            out.write_all(&all).is_ok()
        }
        Payload::Stream {
            head: first,
            fill,
            total,
            length,
        } => {
            match length {
                Some(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
                None => head.push_str("Connection: close\r\n"),
            }
            head.push_str("\r\n");
            if out.write_all(head.as_bytes()).is_err() || out.write_all(&first).is_err() {
                return false;
            }
            streamed.fetch_add(first.len() as u64, Ordering::SeqCst);
            let buf = vec![fill; MIB as usize];
            let mut left = total.saturating_sub(first.len() as u64);
            while left > 0 {
                let n = left.min(MIB) as usize;
                if out.write_all(&buf[..n]).is_err() {
                    break;
                }
                streamed.fetch_add(n as u64, Ordering::SeqCst);
                left -= n as u64;
            }
            let _ = out.flush();
            false
        }
    }
}

impl Shared {
    fn answer(&self, req: &Req) -> Reply {
        if req.path() == "/token" {
            return self.token(req);
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {}", req.method, req.target));
        if self.bearer.is_some() {
            let need = if matches!(req.method.as_str(), "GET" | "HEAD") {
                "pull"
            } else {
                "push"
            };
            let granted = req
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer tok/"))
                .unwrap_or("");
            let allowed = granted.split(' ').any(|s| {
                s.strip_prefix(&format!("repository:{REPO}:"))
                    .is_some_and(|actions| actions.split(',').any(|a| a == need))
            });
            if !allowed {
                let asked = if need == "pull" { "pull" } else { "pull,push" };
                return Reply::error(401, "UNAUTHORIZED").header(
                    "WWW-Authenticate",
                    format!(
                        "Bearer realm=\"http://{}/token\",service=\"fake\",scope=\"repository:{REPO}:{asked}\"",
                        self.addr
                    ),
                );
            }
        }
        if let Some(hook) = &self.hook {
            if let Some(r) = hook(req) {
                return r;
            }
        }
        self.registry(req)
    }

    fn token(&self, req: &Req) -> Reply {
        self.tokens.lock().unwrap().push(req.target.clone());
        let Some(want) = &self.bearer else {
            return Reply::error(404, "NOT_FOUND");
        };
        if req.header("authorization") != Some(want.as_str()) {
            return Reply::error(401, "UNAUTHORIZED");
        }
        if query(&req.target, "service").as_deref() != Some("fake") {
            return Reply::error(400, "BAD_SERVICE");
        }
        let scope = query(&req.target, "scope").unwrap_or_default();
        let body = serde_json::json!({ "token": format!("tok/{scope}") });
        Reply::bytes(200, body.to_string()).header("Content-Type", "application/json")
    }

    /// A plain OCI distribution registry for one repository.
    fn registry(&self, req: &Req) -> Reply {
        let path = req.path().to_string();
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Reply::error(404, "NOT_FOUND");
        };
        if rest.is_empty() {
            return Reply::bytes(200, "{}");
        }
        let m = req.method.as_str();
        if let Some((repo, id)) = rest.split_once("/blobs/uploads/") {
            assert_eq!(repo, REPO);
            return self.upload(req, id);
        }
        if let Some((repo, r)) = rest.split_once("/manifests/") {
            assert_eq!(repo, REPO);
            let mut content = self.content.lock().unwrap();
            return match m {
                "GET" | "HEAD" => match content.manifests.get(r) {
                    Some(data) => Reply::bytes(200, data.clone())
                        .header("Content-Type", MANIFEST_MEDIA_TYPE)
                        .header("Docker-Content-Digest", Digest::of(data).to_string()),
                    None => Reply::error(404, "MANIFEST_UNKNOWN"),
                },
                "PUT" => {
                    let d = Digest::of(&req.body).to_string();
                    content.manifests.insert(r.to_string(), req.body.clone());
                    content.manifests.insert(d.clone(), req.body.clone());
                    Reply::bytes(201, "").header("Docker-Content-Digest", d)
                }
                _ => Reply::error(405, "UNSUPPORTED"),
            };
        }
        if let Some((repo, d)) = rest.split_once("/blobs/") {
            assert_eq!(repo, REPO);
            let content = self.content.lock().unwrap();
            let Some(data) = content.blobs.get(d) else {
                return Reply::error(404, "BLOB_UNKNOWN");
            };
            let from = req
                .header("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|r| r.parse::<usize>().ok())
                .filter(|&f| f < data.len());
            return match from {
                Some(f) => Reply::bytes(206, data[f..].to_vec()).header(
                    "Content-Range",
                    format!("bytes {f}-{}/{}", data.len() - 1, data.len()),
                ),
                None => Reply::bytes(200, data.clone()),
            };
        }
        Reply::error(404, "NOT_FOUND")
    }

    fn upload(&self, req: &Req, id: &str) -> Reply {
        let mut uploads = self.uploads.lock().unwrap();
        let location = |id: &str| format!("/v2/{REPO}/blobs/uploads/{id}");
        match (req.method.as_str(), id) {
            ("POST", "") => {
                let id = self.next_upload.fetch_add(1, Ordering::SeqCst).to_string();
                uploads.insert(id.clone(), Vec::new());
                Reply::bytes(202, "")
                    .header("Location", location(&id))
                    .header("Docker-Upload-UUID", id)
            }
            ("PATCH", id) => {
                let Some(data) = uploads.get_mut(id) else {
                    return Reply::error(404, "BLOB_UPLOAD_UNKNOWN");
                };
                let start = req
                    .header("content-range")
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(a, _)| a.parse::<usize>().ok());
                if start != Some(data.len()) {
                    return Reply::error(416, "BLOB_UPLOAD_INVALID");
                }
                data.extend_from_slice(&req.body);
                let end = data.len().saturating_sub(1);
                Reply::bytes(202, "")
                    .header("Location", location(id))
                    .header("Range", format!("0-{end}"))
            }
            ("PUT", id) => {
                let Some(mut data) = uploads.remove(id) else {
                    return Reply::error(404, "BLOB_UPLOAD_UNKNOWN");
                };
                data.extend_from_slice(&req.body);
                let d = Digest::of(&data).to_string();
                if query(&req.target, "digest").as_deref() != Some(d.as_str()) {
                    return Reply::error(400, "DIGEST_INVALID");
                }
                self.content.lock().unwrap().blobs.insert(d.clone(), data);
                Reply::bytes(201, "")
                    .header("Location", format!("/v2/{REPO}/blobs/{d}"))
                    .header("Docker-Content-Digest", d)
            }
            _ => Reply::error(405, "UNSUPPORTED"),
        }
    }
}

/// The percent-decoded value of query parameter `key` of `target`.
fn query(target: &str, key: &str) -> Option<String> {
    let (_, q) = target.split_once('?')?;
    let raw = q
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?;
    let b = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------
// A valid machine to serve, and ways to bend it
// ---------------------------------------------------------------------------

/// A deterministic pseudo-random generator (xorshift).
struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let v = self.0.to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A machine imported into a library of its own, and its blobs.
struct Source {
    _dir: tempfile::TempDir,
    lib: Library,
    reference: MachineRef,
    json: Vec<u8>,
    manifest: Manifest,
    machine: Machine,
    config: Vec<u8>,
    index: DiskIndex,
    index_json: Vec<u8>,
    /// The chunk blobs, in layer order.
    chunks: Vec<Vec<u8>>,
    /// The disk's bytes.
    image: Vec<u8>,
}

impl Source {
    /// A 4 MiB sparse raw disk with some random data, imported as `acme/m:v1`.
    fn new() -> Source {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let mut image = vec![0u8; 4 * MIB as usize];
        let mut rng = Rng(0x5eed);
        rng.fill(&mut image[..(1536 * KIB) as usize]);
        rng.fill(&mut image[(2560 * KIB) as usize..(3072 * KIB) as usize]);
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(image.len() as u64).unwrap();
        for (i, block) in image.chunks(64 << 10).enumerate() {
            if block.iter().any(|&b| b != 0) {
                f.write_all_at(block, i as u64 * (64 << 10)).unwrap();
            }
        }
        drop(f);
        let lib = Library::open(&dir.path().join("lib")).unwrap();
        let reference: MachineRef = "acme/m:v1".parse().unwrap();
        let disk = vdisk::open(&raw, vdisk::OpenOptions::default()).unwrap();
        lib.import(
            &[DiskSource {
                name: "disk0".into(),
                disk: disk.as_ref(),
            }],
            &reference,
            &ImportOptions::default(),
            &mut |_, _| {},
        )
        .unwrap();
        let (digest, manifest, machine) = lib.resolve(&reference).unwrap();
        let blobs = lib.blobs();
        let json = blobs.read(&digest, u64::MAX).unwrap();
        let config = blobs.read(&manifest.config.digest, u64::MAX).unwrap();
        let index_json = blobs.read(&machine.disks[0].index, u64::MAX).unwrap();
        let index = DiskIndex::from_json(&index_json, "index").unwrap();
        let chunks: Vec<Vec<u8>> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == CHUNK_MEDIA_TYPE)
            .map(|l| blobs.read(&l.digest, l.size).unwrap())
            .collect();
        assert!(chunks.len() >= 2, "the disk has {} chunks", chunks.len());
        Source {
            _dir: dir,
            lib,
            reference,
            json,
            manifest,
            machine,
            config,
            index,
            index_json,
            chunks,
            image,
        }
    }

    /// The registry's content: the machine as imported.
    fn content(&self) -> Content {
        let mut blobs = vec![self.config.clone(), self.index_json.clone()];
        blobs.extend(self.chunks.iter().cloned());
        Content::new(&self.json, blobs)
    }

    /// The machine description with its one disk's index replaced by
    /// `index` (and its size by the index's).
    fn config_for(&self, index: &[u8], size: u64) -> Vec<u8> {
        let mut m = self.machine.clone();
        m.disks[0].index = Digest::of(index);
        m.disks[0].size = size;
        m.to_json()
    }

    /// A machine of `config` whose layers are `layers`, served with `blobs`
    /// (the config and layer blobs are added).
    fn serve(&self, config: &[u8], layers: &[(&str, &[u8])]) -> (Manifest, Content) {
        let manifest = machine_manifest(
            Descriptor::of(MACHINE_CONFIG_MEDIA_TYPE, config),
            layers.iter().map(|(t, b)| Descriptor::of(t, b)).collect(),
        );
        let mut blobs = vec![config.to_vec()];
        blobs.extend(layers.iter().map(|(_, b)| b.to_vec()));
        let content = Content::new(&manifest.to_json(), blobs);
        (manifest, content)
    }

    /// The layers as imported: the index, then the chunks.
    fn layers(&self) -> Vec<(&'static str, &[u8])> {
        let mut l: Vec<(&str, &[u8])> = vec![(DISK_INDEX_MEDIA_TYPE, &self.index_json)];
        l.extend(self.chunks.iter().map(|c| (CHUNK_MEDIA_TYPE, c.as_slice())));
        l
    }
}

fn machine_manifest(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
    Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        artifact_type: Some(MACHINE_ARTIFACT_TYPE.into()),
        config,
        layers,
        subject: None,
        annotations: BTreeMap::new(),
    }
}

/// Pulls `REPO` + `reference` (":v1", "@sha256:…") from `fake` into `lib`
/// as `acme/m:v1`.
fn pull_with(
    fake: &Fake,
    lib: &Library,
    reference: &str,
    credentials: Option<Credentials>,
    opts: &PullOptions,
) -> store::Result<Pulled> {
    store::oci::pull(
        lib,
        &fake.remote(reference),
        &"acme/m:v1".parse().unwrap(),
        &fake.client(credentials),
        opts,
        &mut |_, _| {},
    )
}

fn pull(fake: &Fake, lib: &Library) -> store::Result<Pulled> {
    pull_with(fake, lib, ":v1", None, &PullOptions::default())
}

/// Serves `content` (with `hook`) and pulls it into a new library; returns the
/// error, after checking that the library names nothing and holds no stray
/// files, and the fake's request log.
fn refused(content: Content, hook: Option<Hook>) -> (String, Vec<String>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let fake = Fake::start(content, None, hook);
    let err = pull(&fake, &lib)
        .err()
        .unwrap_or_else(|| panic!("the pull succeeded; requests: {:?}", fake.log()))
        .to_string();
    assert_clean(&lib);
    (err, fake.log(), fake.streamed())
}

/// The library names no machine, and holds nothing but its own files, its
/// blobs and resumable partial downloads.
fn assert_clean(lib: &Library) {
    assert!(lib.list().unwrap().is_empty(), "a machine was named");
    let home = lib.home();
    for e in std::fs::read_dir(home).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            [
                "blobs",
                "tmp",
                "index.json",
                "oci-layout",
                ".gc.lock",
                ".index.lock"
            ]
            .contains(&name.as_str()),
            "stray file {name} in the library"
        );
    }
    for e in std::fs::read_dir(home.join("tmp")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with(".part"), "stray file tmp/{name}");
    }
}

/// The library's partial download of `d`, if any.
fn partial(lib: &Library, d: &Digest) -> bool {
    lib.blobs().partial_path(d).exists()
}

/// Only the manifest was asked for.
fn only_manifest(log: &[String]) -> bool {
    !log.is_empty()
        && log
            .iter()
            .all(|l| l.starts_with(&format!("GET /v2/{REPO}/manifests/")))
}

/// No chunk blob was asked for.
fn no_chunk_fetched(src: &Source, log: &[String]) -> bool {
    src.chunks.iter().all(|c| {
        let d = Digest::of(c).to_string();
        !log.iter().any(|l| l.contains(&d))
    })
}

/// Peak memory (VmHWM) of this process in bytes, after resetting it to the
/// current use when `reset`.
fn peak(reset: bool) -> u64 {
    if reset {
        // Linux ≥ 4.0: "5" resets the peak resident set size to the current one.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap()
        * KIB
}

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// The fake serves a machine that pulls, reads back byte-exact, and then
/// serves it again from the library without fetching any blob.
#[test]
fn the_fake_registry_serves_a_valid_machine() {
    let src = Source::new();
    let fake = Fake::start(src.content(), None, None);
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let pulled = pull(&fake, &lib).unwrap();
    assert_eq!(pulled.fetched, src.chunks.len() as u64);
    let r: MachineRef = "acme/m:v1".parse().unwrap();
    let (_, _, m) = lib.resolve(&r).unwrap();
    let disk = lib.disk(&r, &m, 0).unwrap();
    let mut back = vec![0u8; src.image.len()];
    disk.read_at(&mut back, 0).unwrap();
    assert!(back == src.image, "the pulled disk differs");
    let again = pull(&fake, &lib).unwrap();
    assert_eq!((again.fetched, again.present), (0, src.chunks.len() as u64));
}

/// Case 1: A blob longer than its descriptor: with a `Content-Length` that says
/// so, it is refused before a byte is stored; without one (the length
/// delimited by closing the connection), the download stops just past the
/// descriptor's size and the partial file is removed.
#[test]
fn a_blob_longer_than_its_descriptor_is_refused() {
    let src = Source::new();
    let victim = src.chunks[0].clone();
    let d = Digest::of(&victim);
    let size = victim.len() as u64;
    let path = format!("/v2/{REPO}/blobs/{d}");

    // Endless data after the real bytes, no Content-Length.
    let (v, p) = (victim.clone(), path.clone());
    let hook: Hook =
        Box::new(move |r| (r.path() == p).then(|| Reply::stream(v.clone(), 0, 256 * MIB, None)));
    let (err, _, streamed) = refused(src.content(), Some(hook));
    assert!(
        err.contains(&d.to_string())
            && err.contains(&format!("sent more than the blob's {size} bytes")),
        "{err}"
    );
    assert!(
        streamed < 64 * MIB,
        "vmhub read on: the fake wrote {streamed} bytes"
    );

    // A Content-Length that admits to more.
    let (v, p) = (victim.clone(), path.clone());
    let hook: Hook = Box::new(move |r| {
        (r.path() == p).then(|| Reply::stream(v.clone(), 0, size + MIB, Some(size + MIB)))
    });
    let (err, _, _) = refused(src.content(), Some(hook));
    assert!(
        err.contains(&d.to_string())
            && err.contains(&format!("sends {} bytes for a blob of {size}", size + MIB)),
        "{err}"
    );

    // Chunked transfer encoding is the same endless stream in another dress:
    // a disk index padded with whitespace past its size (valid JSON still).
    let idx = Digest::of(&src.index_json);
    let mut padded = src.index_json.clone();
    padded.extend(std::iter::repeat_n(b' ', MIB as usize));
    let p = format!("/v2/{REPO}/blobs/{idx}");
    let hook: Hook = Box::new(move |r| {
        (r.path() == p).then(|| {
            let mut body = Vec::new();
            for piece in padded.chunks(64 << 10) {
                body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                body.extend_from_slice(piece);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            Reply::stream(body, 0, 0, None).header("Transfer-Encoding", "chunked")
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let fake = Fake::start(src.content(), None, Some(hook));
    let err = pull(&fake, &lib).unwrap_err().to_string();
    assert!(
        err.contains(&idx.to_string()) && err.contains("sent more than the blob's"),
        "{err}"
    );
    assert!(!partial(&lib, &idx), "the oversized partial file stayed");
    assert!(!lib.blobs().has(&idx, None));
    assert_clean(&lib);
}

/// Case 2: A decompression bomb: a chunk that is a valid zstd frame of 256 MiB of
/// zeros, placed by an index that says it is 512 KiB long. The pull takes it
/// (its digest is right, and chunks are not decompressed while pulling), but
/// reading the disk and exporting it fail, and never allocate the 256 MiB.
#[test]
fn a_decompression_bomb_is_refused_without_allocating_it() {
    let src = Source::new();
    for pledged in [false, true] {
        // Compressed a piece at a time: the test itself must not hold 256 MiB.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        if pledged {
            // The frame header then declares the 256 MiB.
            enc.set_pledged_src_size(Some(256 * MIB)).unwrap();
            enc.include_contentsize(true).unwrap();
        }
        let zeros = vec![0u8; MIB as usize];
        for _ in 0..256 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 64 * KIB as usize, "{} bytes", bomb.len());
        let index = DiskIndex {
            size: src.index.size,
            chunking: src.index.chunking,
            chunks: vec![ChunkRef {
                blob: Digest::of(&bomb),
                size: bomb.len() as u64,
                length: 512 << 10,
                content: store::ContentDigest::of(&vec![0u8; 512 << 10]),
            }],
            map: vec![(0, 0)],
        };
        let index_json = index.to_json();
        let config = src.config_for(&index_json, index.size);
        let (_, content) = src.serve(
            &config,
            &[
                (DISK_INDEX_MEDIA_TYPE, &index_json),
                (CHUNK_MEDIA_TYPE, &bomb),
            ],
        );
        let fake = Fake::start(content, None, None);
        let dir = tempfile::tempdir().unwrap();
        let lib = Library::open(&dir.path().join("lib")).unwrap();

        let _heavy = heavy();
        let before = peak(true);
        // The pull checks each chunk inside, and drops the bomb.
        let err = pull(&fake, &lib).unwrap_err().to_string();
        assert!(
            err.contains(&Digest::of(&bomb).to_string())
                && err.contains("does not decompress to at most 524288 bytes"),
            "{err}"
        );
        assert!(lib.list().unwrap().is_empty());
        assert!(
            !lib.blobs().has(&Digest::of(&bomb), None),
            "the bomb was kept"
        );

        // A bomb that reaches a library some other way is refused when read.
        lib.blobs().put(&bomb).unwrap();
        let disk = store::ChunkDisk::new("bomb", lib.blobs().clone(), index.clone());
        let mut buf = vec![0u8; MIB as usize];
        let err = disk.read_at(&mut buf, 0).unwrap_err().to_string();
        assert!(
            err.contains(&Digest::of(&bomb).to_string())
                && err.contains("does not decompress to at most 524288 bytes"),
            "{err}"
        );
        let out_dir = dir.path().join("export");
        std::fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("out.vhd");
        let err = vdisk::ops::convert::convert(
            &disk,
            &out,
            &vdisk::CreateOptions::default(),
            false,
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not decompress"), "{err}");
        let grew = peak(false).saturating_sub(before);
        assert!(
            grew < 64 * MIB,
            "reading the bomb raised peak memory by {} MiB",
            grew / MIB
        );
        let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
        assert!(left.is_empty(), "the failed export left {left:?}");
    }
}

/// Case 3: Absurd sizes and counts: each is refused from the document that
/// carries it, before anything it would lead to is fetched.
#[test]
fn absurd_sizes_and_counts_are_refused_before_they_are_fetched() {
    let src = Source::new();

    // A layer claiming 1 TiB: only the manifest is read.
    let mut m = src.manifest.clone();
    m.layers[1].size = 1 << 40;
    let content = Content::new(&m.to_json(), []);
    let (err, log, _) = refused(content, None);
    assert!(
        err.contains(&format!(
            "layer 1 ({}) claims 1099511627776 bytes",
            m.layers[1].digest
        )),
        "{err}"
    );
    assert!(only_manifest(&log), "{log:?}");

    // A machine description claiming 1 GiB.
    let mut m = src.manifest.clone();
    m.config.size = 1 << 30;
    let (err, log, _) = refused(Content::new(&m.to_json(), []), None);
    assert!(
        err.contains("machine description of 1073741824 bytes"),
        "{err}"
    );
    assert!(only_manifest(&log), "{log:?}");

    // A machine description with 3,000 disks: read (it is under its cap),
    // refused, and no index is fetched.
    let mut machine = src.machine.clone();
    let disk = machine.disks[0].clone();
    machine.disks = (0..3000)
        .map(|i| {
            let mut d = disk.clone();
            d.name = format!("disk{i}");
            d
        })
        .collect();
    let config = machine.to_json();
    let layers = src.layers();
    let (_, content) = src.serve(&config, &layers);
    let (err, log, _) = refused(content, None);
    assert!(err.contains("3000 disks (a machine has 1 to 16)"), "{err}");
    let idx = Digest::of(&src.index_json).to_string();
    assert!(!log.iter().any(|l| l.contains(&idx)), "{log:?}");

    // Indexes of a million map entries whose last one overlaps the one
    // before, or ends past the disk: refused before any chunk is fetched.
    let c = src.index.chunks[0];
    let len = u64::from(c.length);
    let n = 1_000_000u64;
    for (last, size, want) in [
        (
            (n - 2) * len + 1,
            n * len,
            format!("map entry {} at {} overlaps", n - 1, (n - 2) * len + 1),
        ),
        (
            (n - 1) * len,
            n * len - 1,
            format!("map entry {} ends at {}, past the disk", n - 1, n * len),
        ),
    ] {
        let mut map: Vec<(u64, u32)> = (0..n - 1).map(|k| (k * len, 0)).collect();
        map.push((last, 0));
        let index = DiskIndex {
            size,
            chunking: src.index.chunking,
            chunks: vec![c],
            map,
        };
        let index_json = index.to_json();
        let config = src.config_for(&index_json, size);
        let (_, content) = src.serve(
            &config,
            &[
                (DISK_INDEX_MEDIA_TYPE, &index_json),
                (CHUNK_MEDIA_TYPE, &src.chunks[0]),
            ],
        );
        let (err, log, _) = refused(content, None);
        assert!(err.contains(&want), "{err}");
        assert!(no_chunk_fetched(&src, &log), "{log:?}");
    }
}

/// Case 3: A manifest longer than the cap, sent without `Content-Length`: refused
/// once the cap is passed, without reading the rest; and one whose
/// `Content-Length` says so is refused before a byte of it is read.
#[test]
fn a_manifest_past_the_cap_is_refused_without_reading_it_all() {
    let _heavy = heavy();
    let before = peak(true);
    let hook: Hook = Box::new(|r| {
        r.path()
            .contains("/manifests/")
            .then(|| Reply::stream(b"{\"schemaVersion\":2,".to_vec(), b' ', 1 << 30, None))
    });
    let (err, log, streamed) = refused(Content::default(), Some(hook));
    let grew = peak(false).saturating_sub(before);
    assert!(
        err.contains("cannot read the manifest (at most 67108864 bytes)"),
        "{err}"
    );
    assert!(only_manifest(&log), "{log:?}");
    assert!(
        streamed < 100 * MIB,
        "vmhub read on: the fake wrote {} MiB",
        streamed / MIB
    );
    assert!(
        grew < 160 * MIB,
        "the manifest raised peak memory by {} MiB",
        grew / MIB
    );

    let hook: Hook = Box::new(|r| {
        r.path()
            .contains("/manifests/")
            .then(|| Reply::stream(Vec::new(), b' ', 100 * MIB, Some(100 * MIB)))
    });
    let (err, _, streamed) = refused(Content::default(), Some(hook));
    assert!(
        err.contains("manifest is larger than 67108864 bytes"),
        "{err}"
    );
    assert!(streamed < 64 * MIB, "the fake wrote {} MiB", streamed / MIB);
}

/// Case 4: Content that does not match its digest: a manifest pulled by digest,
/// a machine description, a chunk. Each names the digest wanted and the one
/// got; a wrong blob's partial file is removed.
#[test]
fn content_that_does_not_match_its_digest_is_refused() {
    let src = Source::new();
    let want = Digest::of(&src.json);

    // By digest, the registry sends other bytes (a valid manifest still).
    let mut other = src.json.clone();
    other.push(b'\n');
    let got = Digest::of(&other);
    let mut content = src.content();
    content.manifests.insert(want.to_string(), other);
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let fake = Fake::start(content, None, None);
    let err = pull_with(
        &fake,
        &lib,
        &format!("@{want}"),
        None,
        &PullOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&want.to_string())
            && err.contains(&format!("the registry sent a manifest with digest {got}")),
        "{err}"
    );
    assert!(only_manifest(&fake.log()), "{:?}", fake.log());
    assert_clean(&lib);

    // A chunk, and then the machine description, whose bytes are changed
    // (same length).
    for victim in [src.chunks[1].clone(), src.config.clone()] {
        let d = Digest::of(&victim);
        let mut bad = victim.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        let mut content = src.content();
        content.blobs.insert(d.to_string(), bad.clone());
        let dir = tempfile::tempdir().unwrap();
        let lib = Library::open(&dir.path().join("lib")).unwrap();
        let fake = Fake::start(content, None, None);
        let err = pull(&fake, &lib).unwrap_err().to_string();
        assert!(
            err.contains(&d.to_string())
                && err.contains(&format!(
                    "the registry sent content with digest {}",
                    Digest::of(&bad)
                )),
            "{err}"
        );
        assert!(!partial(&lib, &d), "the wrong content stayed as a partial");
        assert!(!lib.blobs().has(&d, None));
        assert_clean(&lib);
    }
}

/// Case 5: Layers that no disk uses, and an index naming a chunk the manifest
/// does not list (or lists with another size): refused once the indexes are
/// read, before any chunk is fetched.
#[test]
fn layers_and_chunks_that_do_not_fit_are_refused() {
    let src = Source::new();
    let stray = zstd::bulk::compress(b"nobody's chunk", 3).unwrap();
    let mut layers = src.layers();
    layers.push((CHUNK_MEDIA_TYPE, &stray));
    let (_, content) = src.serve(&src.config, &layers);
    let (err, log, _) = refused(content, None);
    assert!(
        err.contains(&format!("layer {} is used by no disk", Digest::of(&stray))),
        "{err}"
    );
    assert!(no_chunk_fetched(&src, &log), "{log:?}");

    // A second disk index that no disk names.
    let mut other = src.index_json.clone();
    other.push(b' ');
    let mut layers = src.layers();
    layers.insert(1, (DISK_INDEX_MEDIA_TYPE, &other));
    let (_, content) = src.serve(&src.config, &layers);
    let (err, _, _) = refused(content, None);
    assert!(
        err.contains(&format!("layer {} is used by no disk", Digest::of(&other))),
        "{err}"
    );

    // The last chunk left out of the manifest.
    let mut layers = src.layers();
    let gone = layers.pop().unwrap().1.to_vec();
    let (_, content) = src.serve(&src.config, &layers);
    let (err, log, _) = refused(content, None);
    assert!(
        err.contains(&format!(
            "uses chunk {} ({} bytes), which the manifest does not list as such",
            Digest::of(&gone),
            gone.len()
        )),
        "{err}"
    );
    assert!(no_chunk_fetched(&src, &log), "{log:?}");

    // A chunk listed as a disk index.
    let mut layers = src.layers();
    layers[1].0 = DISK_INDEX_MEDIA_TYPE;
    let (_, content) = src.serve(&src.config, &layers);
    let (err, _, _) = refused(content, None);
    assert!(
        err.contains("which the manifest does not list as such"),
        "{err}"
    );

    // The disk's index is not a layer at all.
    let layers = src.layers()[1..].to_vec();
    let (_, content) = src.serve(&src.config, &layers);
    let (err, log, _) = refused(content, None);
    assert!(
        err.contains(&format!(
            "names index {}, which is not a layer",
            Digest::of(&src.index_json)
        )),
        "{err}"
    );
    assert!(no_chunk_fetched(&src, &log), "{log:?}");
}

/// A manifest that lists every chunk twice (OCI allows repeated layers)
/// pulls, and fetches each chunk once.
#[test]
fn repeated_chunk_layers_are_fetched_once() {
    let src = Source::new();
    let mut layers = src.layers();
    layers.extend(src.layers()[1..].to_vec());
    layers.extend(src.layers()[1..].to_vec());
    let (_, content) = src.serve(&src.config, &layers);
    let fake = Fake::start(content, None, None);
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let pulled = pull(&fake, &lib).unwrap();
    assert_eq!(pulled.fetched, src.chunks.len() as u64);
    let log = fake.log();
    for c in &src.chunks {
        let d = Digest::of(c).to_string();
        let n = log.iter().filter(|l| l.contains(&d)).count();
        assert_eq!(n, 1, "chunk {d} fetched {n} times: {log:?}");
    }
}

/// Case 6: Bearer tokens: the registry sends a challenge naming its token server,
/// which wants Basic credentials. Right credentials pull and push (the push
/// asks for a pull,push token); wrong or missing ones fail naming the token
/// server.
#[test]
fn bearer_tokens_are_fetched_for_pull_and_push() {
    let src = Source::new();
    let alice = Credentials {
        user: "alice".into(),
        password: "secret".into(),
    };
    let fake = Fake::start(src.content(), Some(&alice), None);
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let token_url = format!("http://{}/token", fake.addr());

    for wrong in [
        None,
        Some(Credentials {
            user: "alice".into(),
            password: "guess".into(),
        }),
    ] {
        let err = pull_with(&fake, &lib, ":v1", wrong, &PullOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&token_url) && err.contains("the token server refused: HTTP 401"),
            "{err}"
        );
        assert_clean(&lib);
    }
    assert!(fake.log().iter().all(|l| l.contains("/manifests/")));

    let pulled = pull_with(
        &fake,
        &lib,
        ":v1",
        Some(alice.clone()),
        &PullOptions::default(),
    )
    .unwrap();
    assert_eq!(pulled.manifest, Digest::of(&src.json));
    let tokens = fake.tokens();
    assert!(
        tokens
            .iter()
            .any(|t| t.contains("scope=repository%3Aacme%2Fm%3Apull")),
        "{tokens:?}"
    );
    let r: MachineRef = "acme/m:v1".parse().unwrap();
    let (_, _, m) = lib.resolve(&r).unwrap();
    let mut back = vec![0u8; src.image.len()];
    lib.disk(&r, &m, 0).unwrap().read_at(&mut back, 0).unwrap();
    assert!(back == src.image, "the pulled disk differs");

    // Push into an empty registry, in pieces (PATCH) for blobs over 256 KiB.
    let empty = Fake::start(Content::default(), Some(&alice), None);
    let client = empty.client(Some(alice.clone()));
    let opts = PushOptions {
        threads: 4,
        chunked_above: 256 * KIB,
        piece: 200 * KIB,
        mount_from: None,
    };
    let pushed = store::oci::push(
        &src.lib,
        &src.reference,
        &empty.remote(":v1"),
        &client,
        None,
        &opts,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(pushed.manifest, Digest::of(&src.json));
    assert_eq!(pushed.uploaded, 2 + src.chunks.len() as u64);
    let tokens = empty.tokens();
    assert!(
        tokens
            .iter()
            .any(|t| t.contains("scope=repository%3Aacme%2Fm%3Apull%2Cpush")),
        "{tokens:?}"
    );
    assert!(
        empty.log().iter().any(|l| l.starts_with("PATCH ")),
        "no piece was sent with PATCH"
    );
    let held = empty.content();
    assert_eq!(held.manifests.get("v1"), Some(&src.json));
    assert_eq!(held.blobs, src.content().blobs);

    // And it pulls back through the same tokens.
    let dir2 = tempfile::tempdir().unwrap();
    let lib2 = Library::open(&dir2.path().join("lib")).unwrap();
    pull_with(
        &empty,
        &lib2,
        ":v1",
        Some(alice.clone()),
        &PullOptions::default(),
    )
    .unwrap();
    let (_, _, m) = lib2.resolve(&r).unwrap();
    lib2.disk(&r, &m, 0).unwrap().read_at(&mut back, 0).unwrap();
    assert!(back == src.image, "the pushed and pulled disk differs");

    // Pushing with wrong credentials fails naming the token server, and
    // stores nothing.
    let other = Fake::start(Content::default(), Some(&alice), None);
    let err = store::oci::push(
        &src.lib,
        &src.reference,
        &other.remote(":v1"),
        &other.client(Some(Credentials {
            user: "mallory".into(),
            password: "secret".into(),
        })),
        None,
        &opts,
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("http://{}/token", other.addr())) && err.contains("refused"),
        "{err}"
    );
    assert!(other.content().manifests.is_empty());
}

/// Threads of one push race for tokens: a HEAD's challenge asks for a pull
/// token, a POST's for a pull,push one, and both are kept under the push's
/// scope. Each request must be retried with the token its own challenge
/// fetched (this failed about one run in twenty before `Client::send` did
/// so: "cannot start an upload: HTTP 401").
#[test]
fn racing_threads_of_a_push_each_use_their_own_token() {
    let src = Source::new();
    let alice = Credentials {
        user: "alice".into(),
        password: "secret".into(),
    };
    let opts = PushOptions {
        threads: 16,
        chunked_above: u64::MAX,
        piece: MIB,
        mount_from: None,
    };
    for _ in 0..8 {
        let fake = Fake::start(Content::default(), Some(&alice), None);
        store::oci::push(
            &src.lib,
            &src.reference,
            &fake.remote(":v1"),
            &fake.client(Some(alice.clone())),
            None,
            &opts,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(fake.content().manifests.get("v1"), Some(&src.json));
    }
}

/// Case 7: With a trust store, an unsigned machine, and one signed by a key not
/// trusted, are refused before any blob is asked for; once the key is
/// trusted, the same machine pulls.
#[test]
fn unverified_machines_are_refused_before_any_blob_is_fetched() {
    let src = Source::new();
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let trust_file = dir.path().join("trusted.json");
    let opts = PullOptions {
        threads: 4,
        trust: Some(TrustStore::load(&trust_file).unwrap()),
    };

    let fake = Fake::start(src.content(), None, None);
    let err = pull_with(&fake, &lib, ":v1", None, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the machine is not signed"), "{err}");
    assert!(only_manifest(&fake.log()), "{:?}", fake.log());
    assert_clean(&lib);

    let key = KeyPair::generate().unwrap();
    let mut signed = src.manifest.clone();
    key.sign(&mut signed);
    let json = signed.to_json();
    let mut content = src.content();
    content.manifests = Content::new(&json, []).manifests;
    let fake = Fake::start(content, None, None);
    let err = pull_with(&fake, &lib, ":v1", None, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("signed by key {}", key.public().id()))
            && err.contains("not trusted here"),
        "{err}"
    );
    assert!(only_manifest(&fake.log()), "{:?}", fake.log());
    assert_clean(&lib);

    let mut trust = TrustStore::load(&trust_file).unwrap();
    trust.add("publisher", key.public()).unwrap();
    let opts = PullOptions {
        threads: 4,
        trust: Some(trust),
    };
    let pulled = pull_with(&fake, &lib, ":v1", None, &opts).unwrap();
    assert_eq!(pulled.signer.map(|s| s.name).as_deref(), Some("publisher"));
    assert_eq!(lib.list().unwrap().len(), 1);
}
