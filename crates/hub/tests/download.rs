//! Disk downloads: a machine pushed by vmhub's own client downloads in
//! every format, converted while it streams; each file passes `qemu-img
//! check` and compares equal to the pushed disk; ranges resume; a damaged
//! chunk cuts the connection; private hubs ask for a token.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use store::library::{DiskSource, ImportOptions};
use store::oci::auth::Credentials;
use store::oci::{Client as OciClient, ClientOptions, PushOptions, RemoteRef};
use store::{Library, MachineRef};

const FORMATS: [(&str, &str); 5] = [
    ("raw", "raw"),
    ("vhd", "vpc"),
    ("vhdx", "vhdx"),
    ("qcow2", "qcow2"),
    ("vdi", "vdi"),
];

/// A raw disk of `size` bytes: random runs of random bytes between holes.
fn sparse_disk(path: &Path, size: usize, mut seed: u64) {
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut bytes = vec![0u8; size];
    let mut pos = (next() % (1 << 20)) as usize;
    while pos < size {
        let len = (1 + next() as usize % (400 << 10)).min(size - pos);
        for b in &mut bytes[pos..pos + len] {
            *b = next() as u8;
        }
        pos += len + (next() % (5 << 20)) as usize;
    }
    std::fs::write(path, &bytes).unwrap();
}

/// Imports `raw` into a library in `home` as `box:1` and pushes it to
/// `repo:1` on the hub at `base`, as `vmhub push` does.
fn push(home: &Path, raw: &Path, base: &str, token: &str, repo: &str) {
    let lib = Library::open(home).unwrap();
    let disk = vdisk::open(raw, vdisk::OpenOptions::default()).unwrap();
    let local = MachineRef::new("box", "1").unwrap();
    lib.import(
        &[DiskSource {
            name: "disk0".into(),
            disk: &*disk,
        }],
        &local,
        &ImportOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let host = base.trim_start_matches("http://");
    let client = OciClient::new(
        host,
        &ClientOptions {
            plain_http: true,
            credentials: Some(Credentials {
                user: "tester".into(),
                password: token.into(),
            }),
        },
    );
    let remote: RemoteRef = format!("{host}/{repo}:1").parse().unwrap();
    store::oci::push(
        &lib,
        &local,
        &remote,
        &client,
        None,
        &PushOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
}

fn qemu(args: &[&str], files: &[&Path]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .args(files)
        .output()
        .expect("qemu-img must be installed (scripts/deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "qemu-img {args:?} {files:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn every_format_downloads_checks_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("hub"));
    let raw = dir.path().join("disk.raw");
    let size = 24 << 20;
    sparse_disk(&raw, size, 0x9e37_79b9_7f4a_7c15);
    push(&dir.path().join("lib"), &raw, &s.base, &s.token, "acme/box");
    let c = Client::new(&s.base);

    // The machine page links every format.
    let page = String::from_utf8(c.get("/m/acme/box").body).unwrap();
    for ext in FORMATS.iter().map(|f| f.0).chain(["vmdk"]) {
        assert!(
            page.contains(&format!("href=\"/m/acme/box/1/disks/0.{ext}\"")),
            "no {ext} link in {page}"
        );
    }

    for (ext, qfmt) in FORMATS {
        let path = format!("/m/acme/box/1/disks/0.{ext}");
        let a = c.get(&path);
        assert_eq!(a.status, 200, "{ext}: {}", String::from_utf8_lossy(&a.body));
        let len = a.body.len();
        assert_eq!(a.header("content-length"), Some(len.to_string().as_str()));
        assert_eq!(a.header("accept-ranges"), Some("bytes"));
        assert_eq!(
            a.header("content-disposition"),
            Some(format!("attachment; filename=\"box-1.{ext}\"").as_str())
        );
        let etag = a.header("etag").unwrap().to_string();
        assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
        let img = dir.path().join(format!("down.{ext}"));
        std::fs::write(&img, &a.body).unwrap();
        if !matches!(qfmt, "raw" | "vpc") {
            let report = qemu(&["check", "-f", qfmt], &[&img]);
            assert!(report.contains("No errors"), "{ext}: {report}");
        }
        assert!(vdisk::check(&img).unwrap().clean, "{ext}: vmhub's check");
        qemu(&["compare", "-f", qfmt, "-F", "raw"], &[&img, &raw]);

        // The same file again, byte for byte, and HEAD says the same.
        assert_eq!(
            c.get(&path).body,
            a.body,
            "{ext}: a second download differs"
        );
        let h = c.send("HEAD", &path, &[], None);
        assert_eq!(h.status, 200);
        assert_eq!(h.header("content-length"), Some(len.to_string().as_str()));
        assert_eq!(h.header("etag"), Some(etag.as_str()));

        // Resumed in three pieces, the last open-ended.
        let (x, y) = (len / 3 + 5, 2 * len / 3 + 777);
        let mut joined = Vec::new();
        for (range, want) in [
            (format!("bytes=0-{}", x - 1), (0, x)),
            (format!("bytes={x}-{}", y - 1), (x, y)),
            (format!("bytes={y}-"), (y, len)),
        ] {
            let p = c.send(
                "GET",
                &path,
                &[("Range", &range), ("If-Range", &etag)],
                None,
            );
            assert_eq!(p.status, 206, "{ext} {range}");
            assert_eq!(
                p.header("content-range"),
                Some(format!("bytes {}-{}/{len}", want.0, want.1 - 1).as_str())
            );
            assert_eq!(p.body.len(), want.1 - want.0);
            joined.extend_from_slice(&p.body);
        }
        assert!(joined == a.body, "{ext}: the pieces differ from the whole");
        // A suffix range, and one past the end.
        let tail = c.send("GET", &path, &[("Range", "bytes=-1000")], None);
        assert_eq!((tail.status, &tail.body[..]), (206, &a.body[len - 1000..]));
        let past = c.send("GET", &path, &[("Range", &format!("bytes={len}-"))], None);
        assert_eq!(past.status, 416);
        assert_eq!(
            past.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
        // A client that holds the file is told so.
        let same = c.send("GET", &path, &[("If-None-Match", &etag)], None);
        assert_eq!((same.status, same.body.len()), (304, 0));
        assert_eq!(same.header("etag"), Some(etag.as_str()));
        // A stale If-Range gets the whole file.
        let stale = c.send(
            "GET",
            &path,
            &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
            None,
        );
        assert_eq!((stale.status, stale.body.len()), (200, len));
    }

    // VMDK (stream-optimized) comes whole, front to back, without ranges.
    let path = "/m/acme/box/1/disks/0.vmdk";
    let v = c.send("GET", path, &[("Range", "bytes=0-99")], None);
    assert_eq!(v.status, 200, "{}", String::from_utf8_lossy(&v.body));
    assert_eq!(v.header("accept-ranges"), Some("none"));
    assert_eq!(v.header("content-length"), None);
    assert_eq!(
        v.header("content-disposition"),
        Some("attachment; filename=\"box-1.vmdk\"")
    );
    let img = dir.path().join("down.vmdk");
    std::fs::write(&img, &v.body).unwrap();
    let report = qemu(&["check", "-f", "vmdk"], &[&img]);
    assert!(report.contains("No errors"), "vmdk: {report}");
    qemu(&["compare", "-f", "vmdk", "-F", "raw"], &[&img, &raw]);
    assert_eq!(c.get(path).body, v.body, "vmdk: a second download differs");
    let h = c.send("HEAD", path, &[], None);
    assert_eq!((h.status, h.header("accept-ranges")), (200, Some("none")));

    // The digest names the same machine; the file name shows the digest.
    let digest = c
        .send(
            "HEAD",
            "/v2/acme/box/manifests/1",
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            None,
        )
        .header("docker-content-digest")
        .unwrap()
        .to_string();
    let by_digest = c.get(&format!("/m/acme/box/{digest}/disks/0.raw"));
    assert_eq!(by_digest.status, 200);
    assert_eq!(by_digest.body, std::fs::read(&raw).unwrap());
    let short = &digest["sha256:".len()..][..12];
    assert_eq!(
        by_digest.header("content-disposition"),
        Some(format!("attachment; filename=\"box-{short}.raw\"").as_str())
    );

    // Wrong names get clear 404s.
    let bad = c.get("/m/acme/box/1/disks/0.iso");
    assert_eq!(bad.status, 404);
    let msg = String::from_utf8_lossy(&bad.body).into_owned();
    assert!(
        msg.contains("no download format \\\"iso\\\"") && msg.contains("qcow2"),
        "{msg}"
    );
    let no_disk = c.get("/m/acme/box/1/disks/3.raw");
    assert_eq!(no_disk.status, 404);
    assert!(String::from_utf8_lossy(&no_disk.body).contains("no disk 3"));
    let no_tag = c.get("/m/acme/box/9/disks/0.raw");
    assert_eq!(no_tag.status, 404);
    assert!(String::from_utf8_lossy(&no_tag.body).contains("acme/box:9 is not on this hub"));
    assert_eq!(
        c.send("POST", "/m/acme/box/1/disks/0.raw", &[], None)
            .status,
        405
    );
}

/// Sends a GET over a plain socket and reads until the server closes:
/// the announced Content-Length (none for a chunked body) and the body
/// bytes that came, as sent.
fn raw_get(base: &str, path: &str) -> (Option<u64>, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    // Ends at EOF; a stalled server fails the read by its timeout.
    sock.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&all[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse().unwrap());
    if len.is_none() {
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
    }
    (len, all[split..].to_vec())
}

/// Whether a chunked body ends with its last chunk, as a whole one does.
fn chunked_whole(body: &[u8]) -> bool {
    body.ends_with(b"\r\n0\r\n\r\n") || body == b"0\r\n\r\n"
}

#[test]
fn a_damaged_chunk_cuts_the_download() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let s = Server::start(&data);
    let raw = dir.path().join("disk.raw");
    sparse_disk(&raw, 8 << 20, 77);
    push(&dir.path().join("lib"), &raw, &s.base, &s.token, "acme/bad");
    let (len, got) = raw_get(&s.base, "/m/acme/bad/1/disks/0.vhd");
    assert_eq!(Some(got.len() as u64), len, "an intact download is whole");
    let (_, got) = raw_get(&s.base, "/m/acme/bad/1/disks/0.vmdk");
    assert!(chunked_whole(&got), "an intact VMDK download is whole");

    // Damage the chunk blob placed last on the disk: same length, other bytes.
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let (_, _, machine) = lib.resolve(&MachineRef::new("box", "1").unwrap()).unwrap();
    let index = lib
        .disk(&MachineRef::new("box", "1").unwrap(), &machine, 0)
        .unwrap()
        .index()
        .clone();
    let &(_, n) = index.map.last().unwrap();
    let hex = index.chunks[n as usize].blob.to_string()["sha256:".len()..].to_string();
    let blob = data.join("blobs/sha256").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&blob).unwrap();
    for b in &mut bytes {
        *b ^= 0x55;
    }
    std::fs::write(&blob, &bytes).unwrap();

    for ext in ["raw", "vhd", "qcow2"] {
        let (len, got) = raw_get(&s.base, &format!("/m/acme/bad/1/disks/0.{ext}"));
        let len = len.unwrap();
        assert!(
            (got.len() as u64) < len,
            "{ext}: {} of {len} bytes came although a chunk is damaged",
            got.len()
        );
    }
    // A chunked VMDK body stops without its last chunk.
    let (_, got) = raw_get(&s.base, "/m/acme/bad/1/disks/0.vmdk");
    assert!(!chunked_whole(&got), "the VMDK download ended as if whole");
}

#[test]
fn a_private_hub_asks_for_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    sparse_disk(&raw, 4 << 20, 5);
    // Pushed while the hub is public, then served from the same folder by a
    // private hub.
    let public = Server::start(&dir.path().join("hub"));
    push(
        &dir.path().join("lib"),
        &raw,
        &public.base,
        &public.token,
        "acme/secret",
    );
    drop(public);
    let mut config = hub::Config::new(dir.path().join("hub"));
    config.private = true;
    let s = Server::start_with(config);
    let path = "/m/acme/secret/1/disks/0.qcow2";
    let anon = Client::new(&s.base).get(path);
    assert_eq!(anon.status, 401);
    assert!(anon.header("www-authenticate").is_some());
    let wrong = Client::basic(&s.base, "tester", "not-the-token").get(path);
    assert_eq!(wrong.status, 401);
    let ok = Client::basic(&s.base, "tester", &s.token).get(path);
    assert_eq!(ok.status, 200);
    let img = dir.path().join("secret.qcow2");
    std::fs::write(&img, &ok.body).unwrap();
    qemu(&["compare", "-f", "qcow2", "-F", "raw"], &[&img, &raw]);
}
