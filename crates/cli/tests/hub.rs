//! `vmhub serve` against real clients: vmhub's own login, push and pull,
//! skopeo copying an OCI layout in and out, and PyPI's oras, all publishing
//! with tokens minted by `vmhub serve --create-token`. Each test starts the
//! binary on a free 127.0.0.1 port and stops it with SIGTERM.

#[allow(dead_code)]
mod common;

use common::*;
use std::io::{Read, Write};
use std::path::Path;

/// `vmhub serve` on a free port, with this binary's settings folder.
fn start_hub(data: &Path, extra: &[&str]) -> Served {
    settings();
    Served::start(data, extra)
}

/// Mints a token with `vmhub serve --create-token`; returns the secret.
fn mint(data: &Path, user: &str, scopes: &[&str]) -> String {
    settings();
    mint_token(data, user, scopes, &[])
}

/// `vmhub login` to `addr` as `user` with `secret` on standard input.
fn login(addr: &str, user: &str, secret: &str) -> std::process::Output {
    login_with(vmhub_command(), addr, user, secret)
}

/// A plain HTTP/1.0 GET; returns the status line and the headers.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A raw disk of `size` bytes with seeded data in a few places.
fn make_disk(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut image = vec![0u8; size];
    for i in 0..size / (1 << 20) {
        if i % 3 != 1 {
            let at = i << 20;
            rng.fill(&mut image[at..at + (1 << 20)]);
        }
    }
    std::fs::write(path, &image).unwrap();
    image
}

#[test]
fn serve_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(&dir.path().join("data"), &[]);
    // The base endpoint challenges anonymous clients.
    let answer = http_get(&hub.addr, "/v2/");
    assert!(
        answer.starts_with("HTTP/1.0 401") || answer.starts_with("HTTP/1.1 401"),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains(&format!(
            "www-authenticate: bearer realm=\"http://{}/v2/token\",service=\"vmhub\"",
            hub.addr
        )),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("docker-distribution-api-version: registry/2.0"),
        "{answer}"
    );
    let bad = http_get(&hub.addr, "/v2/UPPER/tags/list");
    assert!(
        bad.contains(" 400 ") && bad.contains("NAME_INVALID"),
        "{bad}"
    );
    hub.stop();
    assert!(dir.path().join("data/hub.db").exists());
}

/// A private hub challenges even the blob checks a push starts with, and
/// for pull alone: the client must come back for a push token, not reuse
/// the pull one.
#[test]
fn a_private_hub_takes_a_push_and_a_pull_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = mint(&data, "ann", &["push:acme"]);
    let hub = start_hub(&data, &["--private"]);
    let disk = dir.path().join("disk.raw");
    let image = make_disk(&disk, 4 << 20, 7);
    let (lib1, lib2) = (dir.path().join("lib1"), dir.path().join("lib2"));
    vmhub_ok(["import", p(&disk), "acme/box:1", "--home", p(&lib1)]);
    let remote = format!("{}/acme/box:1", hub.addr);
    // Anonymous pulls are refused by a private hub.
    let out = vmhub(["pull", &remote, "--home", p(&lib2)]);
    assert!(!out.status.success(), "{}", describe(&out));
    let out = login(&hub.addr, "ann", &secret);
    assert!(out.status.success(), "{}", describe(&out));
    vmhub_ok(["push", "acme/box:1", &remote, "--home", p(&lib1)]);
    vmhub_ok(["pull", &remote, "--home", p(&lib2)]);
    assert_exports(&lib2, "acme/box:1", &image);
    hub.stop();
}

#[test]
fn vmhub_push_and_pull_through_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = mint(&data, "ann", &["push:acme"]);
    let hub = start_hub(&data, &[]);
    let disk = dir.path().join("disk.raw");
    let image = make_disk(&disk, 8 << 20, 1);
    let lib1 = dir.path().join("lib1");
    let lib2 = dir.path().join("lib2");
    vmhub_ok(["import", p(&disk), "acme/box:1", "--home", p(&lib1)]);
    let remote = format!("{}/acme/box:1", hub.addr);

    // Without credentials the push is refused, and says why.
    let out = vmhub(["push", "acme/box:1", &remote, "--home", p(&lib1)]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") || err.contains("403"), "{err}");
    // A wrong token does not log in.
    let out = login(&hub.addr, "ann", "vmhub_wrong");
    assert!(!out.status.success(), "{}", describe(&out));
    let out = login(&hub.addr, "ann", &secret);
    assert!(out.status.success(), "{}", describe(&out));
    // A token for acme does not publish elsewhere.
    vmhub_ok(["tag", "acme/box:1", "other/box:1", "--home", p(&lib1)]);
    let out = vmhub([
        "push",
        "other/box:1",
        &format!("{}/other/box:1", hub.addr),
        "--home",
        p(&lib1),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DENIED") || err.contains("403"), "{err}");

    let pushed = json_of(&vmhub_ok([
        "push",
        "acme/box:1",
        &remote,
        "--home",
        p(&lib1),
        "--output",
        "json",
    ]));
    assert!(u64_field(&pushed, "uploaded") > 2, "{pushed}");
    let pulled = json_of(&vmhub_ok([
        "pull",
        &remote,
        "--home",
        p(&lib2),
        "--output",
        "json",
    ]));
    assert_eq!(pulled["manifest"], pushed["manifest"]);
    assert_exports(&lib2, "acme/box:1", &image);

    // The hub's catalogue has it.
    let hub_url = format!("http://{}", hub.addr);
    let table = vmhub_ok(["search", "box", "--hub", &hub_url]);
    let table = String::from_utf8(table.stdout).unwrap();
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        ["NAME", "VERSION", "OS", "SIZE", "UPDATED"],
        "{table}"
    );
    let row = lines.next().unwrap_or_else(|| panic!("{table}"));
    assert!(row.starts_with("acme/box:1 "), "{table}");
    assert!(row.contains("MiB") || row.contains("KiB"), "{table}");
    let found = json_of(&vmhub_ok([
        "search", "box", "--hub", &hub.addr, "--output", "json",
    ]));
    assert_eq!(found[0]["digest"], pushed["manifest"], "{found}");
    assert!(found[0]["signed_by"]
        .as_str()
        .is_some_and(|k| k.starts_with("ed25519:")));
    let none = vmhub_ok(["search", "no-such-machine", "--hub", &hub_url]);
    assert!(String::from_utf8_lossy(&none.stdout).contains("no machine matches"));

    // Again: nothing to upload.
    let again = json_of(&vmhub_ok([
        "push",
        "acme/box:1",
        &remote,
        "--home",
        p(&lib1),
        "--output",
        "json",
    ]));
    assert_eq!(u64_field(&again, "uploaded"), 0, "{again}");

    // The hub keeps what it holds across a restart.
    hub.stop();
    let hub = start_hub(&dir.path().join("data"), &[]);
    let lib3 = dir.path().join("lib3");
    vmhub_ok([
        "pull",
        &format!("{}/acme/box:1", hub.addr),
        "--home",
        p(&lib3),
    ]);
    assert_exports(&lib3, "acme/box:1", &image);
    hub.stop();
}

#[test]
fn skopeo_copies_an_oci_layout_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = mint(&data, "sky", &["push:mirror"]);
    let hub = start_hub(&data, &[]);
    let disk = dir.path().join("disk.raw");
    let image = make_disk(&disk, 6 << 20, 2);
    let lib1 = dir.path().join("lib1");
    vmhub_ok(["import", p(&disk), "m:1", "--home", p(&lib1)]);
    // The library folder is an OCI layout.
    let dest = format!("docker://{}/mirror/m:1", hub.addr);
    let src = format!("oci:{}:m:1", p(&lib1));
    // Without credentials skopeo is refused.
    let out = peer(
        "skopeo",
        [
            "copy",
            "--dest-tls-verify=false",
            "--dest-no-creds",
            &src,
            &dest,
        ],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let creds = format!("sky:{secret}");
    peer_ok(
        "skopeo",
        [
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &src,
            &dest,
        ],
    );
    let out = dir.path().join("out");
    peer_ok(
        "skopeo",
        [
            "copy",
            "--src-tls-verify=false",
            &dest,
            &format!("oci:{}:m:1", p(&out)),
        ],
    );
    let local = peer_ok(
        "skopeo",
        ["inspect", "--raw", &format!("oci:{}:m:1", p(&lib1))],
    );
    let remote = peer_ok("skopeo", ["inspect", "--raw", "--tls-verify=false", &dest]);
    let back = peer_ok(
        "skopeo",
        ["inspect", "--raw", &format!("oci:{}:m:1", p(&out))],
    );
    assert_eq!(local.stdout, remote.stdout);
    assert_eq!(local.stdout, back.stdout);
    // Every blob came back byte for byte.
    let manifest: serde_json::Value = serde_json::from_slice(&local.stdout).unwrap();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for l in manifest["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in digests {
        let hex = d.strip_prefix("sha256:").unwrap();
        assert_eq!(
            std::fs::read(out.join("blobs/sha256").join(hex)).unwrap(),
            std::fs::read(lib1.join("blobs/sha256").join(hex)).unwrap(),
            "{d}"
        );
    }
    // And vmhub pulls what skopeo pushed (a layout carries no signature).
    let lib2 = dir.path().join("lib2");
    vmhub_ok([
        "pull",
        &format!("{}/mirror/m:1", hub.addr),
        "--home",
        p(&lib2),
        "--insecure-skip-verify",
    ]);
    assert_exports(&lib2, "mirror/m:1", &image);
    hub.stop();
}

#[test]
fn oras_pushes_and_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = mint(&data, "ora", &["push:art"]);
    let hub = start_hub(&data, &[]);
    // scripts/deps.sh installs oras into this virtual environment.
    let venv = std::env::var("VMHUB_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/vmhub-ci/venv", std::env::var("HOME").unwrap()));
    let python = format!("{venv}/bin/python");
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut rng = Rng::new(3);
    let mut content = vec![0u8; 300_000];
    rng.fill(&mut content);
    std::fs::write(files.join("payload.bin"), &content).unwrap();
    let pulled = dir.path().join("pulled");
    let script = format!(
        "import os, oras.provider\n\
         r = oras.provider.Registry(hostname='{addr}', insecure=True)\n\
         r.auth.set_basic_auth('ora', '{secret}')\n\
         os.chdir('{files}')\n\
         r.push(target='{addr}/art/payload:v1', files=['payload.bin'])\n\
         r.pull(target='{addr}/art/payload:v1', outdir='{pulled}')\n",
        addr = hub.addr,
        files = p(&files),
        pulled = p(&pulled),
    );
    peer_ok(&python, ["-c", &script]);
    assert!(std::fs::read(pulled.join("payload.bin")).unwrap() == content);
    hub.stop();
}
