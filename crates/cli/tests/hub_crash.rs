//! Crash safety of uploads: `vmhub serve` runs as a process, a chunked
//! upload gets two chunks in, and the hub is killed with SIGKILL while the
//! body of the third is arriving. Restarted on the same data folder, the hub
//! must show no part of the blob (HEAD and GET answer 404), a fresh upload of
//! the blob must complete with its digest checked, and the old upload must
//! resume from the last chunk it acknowledged (the bytes the killed request
//! left behind are dropped) and complete too.

#[allow(dead_code)]
mod common;

use common::Served;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const REPO: &str = "acme/crash";
const CHUNK: usize = 2 << 20;

/// An answer: status, headers (names in lower case) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

fn head_of(method: &str, path: &str, addr: &str, auth: &str, extra: &[(&str, String)]) -> String {
    let mut h = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nConnection: close\r\n"
    );
    for (k, v) in extra {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// One request on its own connection; the answer is read to its end.
fn request(
    addr: &str,
    auth: &str,
    method: &str,
    path: &str,
    body: &[u8],
    extra: &[(&str, String)],
) -> Answer {
    let mut headers = extra.to_vec();
    headers.push(("Content-Length", body.len().to_string()));
    let mut s = connect(addr);
    s.write_all(head_of(method, path, addr, auth, &headers).as_bytes())
        .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no header end"));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Standard base64 with padding (RFC 4648, section 4), for Basic credentials.
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn seeded(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The size of the upload files in the data folder, summed.
fn upload_bytes(data: &Path) -> u64 {
    std::fs::read_dir(data.join("uploads"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn sigkill_in_a_patch_leaves_no_blob_and_the_upload_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = common::mint_token(&data, "ann", &["push:acme"], &[]);
    let auth = format!("Basic {}", b64(format!("ann:{secret}").as_bytes()));
    let blob = seeded(3 * CHUNK, 7);
    let digest = hub::digest::Digest::of(&blob).to_string();

    let mut hub = Served::start(&data, &[]);
    let addr = hub.addr.clone();
    let a = request(
        &addr,
        &auth,
        "POST",
        &format!("/v2/{REPO}/blobs/uploads/"),
        b"",
        &[],
    );
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    let location = a.header("location").unwrap().to_string();
    for i in 0..2 {
        let chunk = &blob[i * CHUNK..(i + 1) * CHUNK];
        let a = request(
            &addr,
            &auth,
            "PATCH",
            &location,
            chunk,
            &[
                ("Content-Type", "application/octet-stream".into()),
                (
                    "Content-Range",
                    format!("{}-{}", i * CHUNK, (i + 1) * CHUNK - 1),
                ),
            ],
        );
        assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
        assert_eq!(
            a.header("range"),
            Some(format!("0-{}", (i + 1) * CHUNK - 1).as_str())
        );
    }

    // The third chunk: headers and half its body, then the hub dies while
    // it waits for the rest.
    let mut s = connect(&addr);
    let headers = [
        ("Content-Type", "application/octet-stream".to_string()),
        ("Content-Range", format!("{}-{}", 2 * CHUNK, 3 * CHUNK - 1)),
        ("Content-Length", CHUNK.to_string()),
    ];
    s.write_all(head_of("PATCH", &location, &addr, &auth, &headers).as_bytes())
        .unwrap();
    s.write_all(&blob[2 * CHUNK..2 * CHUNK + CHUNK / 2])
        .unwrap();
    // Wait (bounded) until part of that half has reached the upload file, so
    // the kill leaves bytes past what the hub acknowledged.
    let start = Instant::now();
    while upload_bytes(&data) <= (2 * CHUNK) as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the hub wrote none of the third chunk within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    hub.kill();
    drop(s);
    assert!(upload_bytes(&data) > (2 * CHUNK) as u64);

    let hub = Served::start(&data, &[]);
    let addr = hub.addr.clone();
    let blob_path = format!("/v2/{REPO}/blobs/{digest}");
    for method in ["HEAD", "GET"] {
        let a = request(&addr, &auth, method, &blob_path, b"", &[]);
        assert_eq!(a.status, 404, "{method} after the crash");
    }
    // The upload resumes where its last acknowledged chunk ended.
    let a = request(&addr, &auth, "GET", &location, b"", &[]);
    assert_eq!(a.status, 204);
    assert_eq!(
        a.header("range"),
        Some(format!("0-{}", 2 * CHUNK - 1).as_str())
    );

    // A fresh upload of the same blob completes, and its digest checks.
    let a = request(
        &addr,
        &auth,
        "POST",
        &format!("/v2/{REPO}/blobs/uploads/?digest={digest}"),
        &blob,
        &[("Content-Type", "application/octet-stream".into())],
    );
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let a = request(&addr, &auth, "GET", &blob_path, b"", &[]);
    assert_eq!(a.status, 200);
    assert!(a.body == blob, "the blob read back differs");

    // The old upload, resumed: the last chunk again, then the digest.
    let a = request(
        &addr,
        &auth,
        "PATCH",
        &location,
        &blob[2 * CHUNK..],
        &[
            ("Content-Type", "application/octet-stream".into()),
            ("Content-Range", format!("{}-{}", 2 * CHUNK, 3 * CHUNK - 1)),
        ],
    );
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    let sep = if location.contains('?') { '&' } else { '?' };
    let a = request(
        &addr,
        &auth,
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        b"",
        &[],
    );
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let a = request(&addr, &auth, "GET", &blob_path, b"", &[]);
    assert!(
        a.status == 200 && a.body == blob,
        "the resumed blob differs"
    );
    // A resumed upload whose digest is wrong is refused and nothing appears.
    let a = request(
        &addr,
        &auth,
        "POST",
        &format!("/v2/{REPO}/blobs/uploads/"),
        b"",
        &[],
    );
    let other = a.header("location").unwrap().to_string();
    let wrong = hub::digest::Digest::of(b"something else").to_string();
    let a = request(
        &addr,
        &auth,
        "PUT",
        &format!("{other}?digest={wrong}"),
        &blob[..CHUNK],
        &[],
    );
    assert_eq!(a.status, 400);
    let a = request(
        &addr,
        &auth,
        "HEAD",
        &format!("/v2/{REPO}/blobs/{wrong}"),
        b"",
        &[],
    );
    assert_eq!(a.status, 404);
}
