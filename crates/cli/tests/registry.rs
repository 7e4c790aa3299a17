//! `push` and `pull` against real registries: Debian's docker-registry (the
//! CNCF distribution registry) started on 127.0.0.1 by each test, skopeo
//! copying a pushed machine between two registries, and PyPI's oras fetching
//! a chunk. Byte counts come from the registry's own request log.

#[allow(dead_code)]
mod common;

use common::*;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A docker-registry serving from a folder on a free 127.0.0.1 port.
struct Registry {
    child: Child,
    addr: String,
    log: PathBuf,
    data: PathBuf,
}

impl Registry {
    /// Starts a registry; with `htpasswd`, it wants Basic authentication.
    fn start(dir: &Path, name: &str, htpasswd: Option<&Path>) -> Registry {
        settings();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let data = dir.join(format!("{name}-data"));
        let log = dir.join(format!("{name}.log"));
        let auth = match htpasswd {
            Some(h) => format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                h.display()
            ),
            None => String::new(),
        };
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{auth}http:\n  addr: {addr}\n",
                data.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start docker-registry ({e}): install Debian's docker-registry (scripts/deps.sh does)")
            });
        let r = Registry {
            child,
            addr,
            log,
            data,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&r.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}",
                r.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// The request log lines so far ("response completed").
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("msg=\"response completed\""))
            .map(str::to_string)
            .collect()
    }

    /// Bytes the registry sent in answers to blob GETs, by its log.
    fn blob_bytes_sent(&self) -> u64 {
        self.requests()
            .iter()
            .filter(|l| l.contains("http.request.method=GET") && l.contains("/blobs/sha256:"))
            .map(|l| field(l, "http.response.written").parse::<u64>().unwrap())
            .sum()
    }

    /// Bytes of the blobs whose uploads the registry completed, by its log
    /// (the digest of each finished upload) and the sizes it stored them with.
    fn blob_bytes_received(&self) -> u64 {
        self.requests()
            .iter()
            .filter(|l| l.contains("http.request.method=PUT") && l.contains("/blobs/uploads/"))
            .filter(|l| field(l, "http.response.status") == "201")
            .map(|l| {
                let uri = field(l, "http.request.uri");
                let hex = uri
                    .split("digest=sha256%3A")
                    .nth(1)
                    .unwrap_or_else(|| panic!("no digest in {uri}"))
                    .get(..64)
                    .unwrap()
                    .to_string();
                let data = self
                    .data
                    .join("docker/registry/v2/blobs/sha256")
                    .join(&hex[..2])
                    .join(&hex)
                    .join("data");
                std::fs::metadata(&data).unwrap().len()
            })
            .sum()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=value` or `key="value"` in a logfmt line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len()
        + 2;
    let rest = &line[start..];
    if let Some(q) = rest.strip_prefix('"') {
        &q[..q.find('"').unwrap()]
    } else {
        rest.split(' ').next().unwrap()
    }
}

/// A sparse raw disk of `size` bytes holding `data` bytes of random data in
/// 1 MiB runs at seeded places; returns the disk's bytes.
fn make_disk(path: &Path, size: u64, data: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut image = vec![0u8; size as usize];
    let runs = data / MIB;
    let slots = size / MIB;
    let mut used = std::collections::BTreeSet::new();
    while (used.len() as u64) < runs {
        used.insert(rng.next_u64() % slots);
    }
    for slot in used {
        let at = (slot * MIB) as usize;
        rng.fill(&mut image[at..at + MIB as usize]);
    }
    write_sparse(path, &image);
    image
}

fn write_sparse(path: &Path, image: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(image.len() as u64).unwrap();
    for (i, block) in image.chunks(MIB as usize).enumerate() {
        if block.iter().any(|&b| b != 0) {
            f.write_all_at(block, i as u64 * MIB).unwrap();
        }
    }
}

#[test]
fn push_then_pull_gives_the_same_disk_and_moves_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path(), "reg", None);
    let disk = dir.path().join("disk.raw");
    let image = make_disk(&disk, 64 * MIB, 12 * MIB, 1);
    let lib1 = dir.path().join("lib1");
    let lib2 = dir.path().join("lib2");
    vmhub_ok(["import", p(&disk), "acme/box:1", "--home", p(&lib1)]);
    let remote = format!("{}/acme/box:1", reg.addr);
    let pushed = json_of(&vmhub_ok([
        "push",
        "acme/box:1",
        &remote,
        "--home",
        p(&lib1),
        "--output",
        "json",
    ]));
    assert!(u64_field(&pushed, "uploaded") > 10, "{pushed}");
    // The registry received every byte of the machine's blobs, once.
    let received = reg.blob_bytes_received();
    assert_eq!(received, u64_field(&pushed, "uploaded-bytes"));
    assert!(received > 12 * MIB && received < 13 * MIB, "{received}");

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
    // An exported VHD agrees with qemu-img too.
    let vhd = dir.path().join("out.vhd");
    vmhub_ok(["export", "acme/box:1", p(&vhd), "--home", p(&lib2)]);
    assert_qemu_equal("raw", &disk, "vpc", &vhd);

    // Again: nothing to upload, nothing to download.
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
    let sent_before = reg.blob_bytes_sent();
    let again = json_of(&vmhub_ok([
        "pull",
        &remote,
        "--home",
        p(&lib2),
        "--output",
        "json",
    ]));
    assert_eq!(u64_field(&again, "fetched"), 0, "{again}");
    assert_eq!(
        reg.blob_bytes_sent(),
        sent_before,
        "a pull of what is there fetched blobs"
    );

    // Mounting from another repository uploads nothing either.
    let other = format!("{}/acme/copy:1", reg.addr);
    let mounted = json_of(&vmhub_ok([
        "push",
        "acme/box:1",
        &other,
        "--home",
        p(&lib1),
        "--mount-from",
        "acme/box",
        "--output",
        "json",
    ]));
    assert_eq!(u64_field(&mounted, "uploaded"), 0, "{mounted}");
    assert_eq!(
        u64_field(&mounted, "mounted"),
        u64_field(&mounted, "blobs"),
        "{mounted}"
    );
    let lib3 = dir.path().join("lib3");
    vmhub_ok(["pull", &other, "--home", p(&lib3)]);
    assert_exports(&lib3, "acme/copy:1", &image);

    // Uploads in pieces (POST, PATCH with Content-Range, PUT) store the same blobs.
    let fresh = Registry::start(dir.path(), "fresh", None);
    let pieces = format!("{}/acme/pieces:1", fresh.addr);
    vmhub_ok([
        "push",
        "acme/box:1",
        &pieces,
        "--home",
        p(&lib2),
        "--upload-pieces-above",
        "100K",
    ]);
    let patches = fresh
        .requests()
        .iter()
        .filter(|l| {
            l.contains("http.request.method=PATCH") && l.contains("http.response.status=202")
        })
        .count();
    assert!(patches > 20, "only {patches} PATCH requests");
    let lib4 = dir.path().join("lib4");
    vmhub_ok(["pull", &pieces, "--home", p(&lib4)]);
    assert_exports(&lib4, "acme/pieces:1", &image);

    // Errors name what is wrong.
    let out = vmhub([
        "pull",
        &format!("{}/acme/none:1", reg.addr),
        "--home",
        p(&lib2),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("acme/none:1") && err.contains("no such machine"),
        "{err}"
    );
    let out = vmhub(["push", "acme/nothing", &remote, "--home", p(&lib1)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("acme/nothing:latest"));
    let out = vmhub(["pull", "acme/box:1", "--home", p(&lib2)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("registry host"));
}

#[test]
fn versions_move_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path(), "reg", None);
    let v1 = dir.path().join("v1.raw");
    let mut image = make_disk(&v1, GIB, 256 * MIB, 2);
    let lib1 = dir.path().join("lib1");
    let lib2 = dir.path().join("lib2");
    vmhub_ok(["import", p(&v1), "os:1", "--home", p(&lib1)]);
    let r1 = format!("{}/acme/os:1", reg.addr);
    let r2 = format!("{}/acme/os:2", reg.addr);
    vmhub_ok(["push", "os:1", &r1, "--home", p(&lib1)]);
    let full_up = reg.blob_bytes_received();
    vmhub_ok(["pull", &r1, "--home", p(&lib2)]);
    let full_down = reg.blob_bytes_sent();

    // 8 MiB changed in 256 scattered writes of 32 KiB, inside the data and
    // outside it.
    let mut rng = Rng::new(3);
    for _ in 0..256 {
        let at = (rng.next_u64() % (GIB - 32 * KIB)) as usize / 4096 * 4096;
        rng.fill(&mut image[at..at + 32 * KIB as usize]);
    }
    let v2 = dir.path().join("v2.raw");
    write_sparse(&v2, &image);
    vmhub_ok(["import", p(&v2), "os:2", "--home", p(&lib1)]);
    vmhub_ok(["push", "os:2", &r2, "--home", p(&lib1)]);
    let up = reg.blob_bytes_received() - full_up;
    vmhub_ok(["pull", &r2, "--home", p(&lib2)]);
    let down = reg.blob_bytes_sent() - full_down;
    assert_exports(&lib2, "acme/os:2", &image);
    let (up_ratio, down_ratio) = (up as f64 / full_down as f64, down as f64 / full_down as f64);
    eprintln!(
        "full pull {full_down} bytes; v2 uploaded {up} ({up_ratio:.3}), downloaded {down} ({down_ratio:.3})"
    );
    assert!(
        up_ratio <= 0.4 && down_ratio <= 0.4,
        "{up_ratio} {down_ratio}"
    );
    // The new version cannot be free: 8 MiB of new random data must move.
    assert!(up >= 8 * MIB && down >= 8 * MIB, "{up} {down}");
}

#[test]
fn skopeo_copies_a_machine_and_oras_fetches_a_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let reg1 = Registry::start(dir.path(), "one", None);
    let reg2 = Registry::start(dir.path(), "two", None);
    let disk = dir.path().join("disk.raw");
    let image = make_disk(&disk, 32 * MIB, 6 * MIB, 4);
    let lib1 = dir.path().join("lib1");
    let lib2 = dir.path().join("lib2");
    vmhub_ok(["import", p(&disk), "m:1", "--home", p(&lib1)]);
    let src = format!("{}/acme/m:1", reg1.addr);
    vmhub_ok(["push", "m:1", &src, "--home", p(&lib1)]);
    peer_ok(
        "skopeo",
        [
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{src}"),
            &format!("docker://{}/mirror/m:1", reg2.addr),
        ],
    );
    vmhub_ok([
        "pull",
        &format!("{}/mirror/m:1", reg2.addr),
        "--home",
        p(&lib2),
    ]);
    assert_exports(&lib2, "mirror/m:1", &image);
    // skopeo reads the library folder itself as an OCI layout.
    let raw = peer_ok(
        "skopeo",
        ["inspect", "--raw", &format!("oci:{}:m:1", p(&lib1))],
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.vmhub.machine.v1+json"
    );

    // oras (PyPI) fetches a chunk blob vmhub pushed, byte for byte.
    let chunk = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // scripts/deps.sh installs oras into this virtual environment.
    let venv = std::env::var("VMHUB_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/vmhub-ci/venv", std::env::var("HOME").unwrap()));
    let python = format!("{venv}/bin/python");
    let fetched = dir.path().join("chunk.bin");
    let script = format!(
        "import oras.provider\nr = oras.provider.Registry(hostname='{}', insecure=True)\nr.download_blob('{}/acme/m', '{chunk}', '{}')\n",
        reg1.addr,
        reg1.addr,
        p(&fetched)
    );
    peer_ok(&python, ["-c", &script]);
    let hex = chunk.strip_prefix("sha256:").unwrap();
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(lib1.join("blobs/sha256").join(hex)).unwrap()
    );
}

#[test]
fn an_interrupted_pull_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path(), "reg", None);
    let disk = dir.path().join("disk.raw");
    let image = make_disk(&disk, 256 * MIB, 96 * MIB, 5);
    let lib1 = dir.path().join("lib1");
    let lib2 = dir.path().join("lib2");
    vmhub_ok(["import", p(&disk), "big:1", "--home", p(&lib1)]);
    let remote = format!("{}/acme/big:1", reg.addr);
    vmhub_ok(["push", "big:1", &remote, "--home", p(&lib1)]);

    // Kill the client once it has stored some blobs, but not all.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmhub"))
        .args(["pull", &remote, "--home", p(&lib2), "--threads", "1"])
        .env("VMHUB_CONFIG", settings())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let blobs = lib2.join("blobs/sha256");
    let count = || std::fs::read_dir(&blobs).map_or(0, |d| d.count());
    let deadline = Instant::now() + Duration::from_secs(60);
    while count() < 20 {
        assert!(
            Instant::now() < deadline,
            "the pull stored no blobs in time"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let had = count();
    // Nothing is named yet: the machine appears only when complete.
    let ls = vmhub_ok(["ls", "--home", p(&lib2), "--output", "json"]);
    assert_eq!(json_of(&ls), serde_json::json!([]));

    // A partial download of one more blob, as a kill in the middle of it leaves.
    let manifest: serde_json::Value = serde_json::from_slice(
        &peer_ok(
            "skopeo",
            ["inspect", "--raw", &format!("oci:{}:big:1", p(&lib1))],
        )
        .stdout,
    )
    .unwrap();
    let missing = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap()
                .to_string()
        })
        .find(|h| !blobs.join(h).exists())
        .unwrap();
    let whole = std::fs::read(lib1.join("blobs/sha256").join(&missing)).unwrap();
    let mut part = std::fs::File::create(lib2.join("tmp").join(format!("{missing}.part"))).unwrap();
    part.write_all(&whole[..whole.len() / 2]).unwrap();
    drop(part);

    let resumed = json_of(&vmhub_ok([
        "pull",
        &remote,
        "--home",
        p(&lib2),
        "--output",
        "json",
    ]));
    assert!(
        u64_field(&resumed, "present") as usize >= had - 3,
        "the second pull fetched again what the first stored: {resumed}"
    );
    assert_exports(&lib2, "acme/big:1", &image);
    // The partial blob was finished with a Range request (a 206 answer).
    let ranged = reg
        .requests()
        .iter()
        .any(|l| l.contains(&missing) && l.contains("http.response.status=206"));
    assert!(ranged, "no ranged request for the partial blob {missing}");
}

#[test]
fn logins_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let out = peer_ok("htpasswd", ["-Bbn", "alice", "s3cret"]);
    std::fs::write(&htpasswd, &out.stdout).unwrap();
    let reg = Registry::start(dir.path(), "reg", Some(&htpasswd));
    let disk = dir.path().join("disk.raw");
    make_disk(&disk, 8 * MIB, 2 * MIB, 6);
    let lib = dir.path().join("lib");
    vmhub_ok(["import", p(&disk), "m", "--home", p(&lib)]);
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::copy(settings().join("key.json"), config.join("key.json")).unwrap();
    std::fs::copy(settings().join("trusted.json"), config.join("trusted.json")).unwrap();
    let auth = config.join("auth.json");
    let remote = format!("{}/acme/m:1", reg.addr);
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vmhub"))
            .args(args)
            .env("VMHUB_CONFIG", &config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(c.stdin.take());
        c.wait_with_output().unwrap()
    };
    let out = run(&["push", "m", &remote, "--home", p(&lib)], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vmhub login"), "{err}");
    let out = run(
        &["login", &reg.addr, "-u", "alice", "--password-stdin"],
        Some("wrong\n"),
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!auth.exists(), "a refused login was stored");
    let out = run(
        &["login", &reg.addr, "-u", "alice", "--password-stdin"],
        Some("s3cret\n"),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let out = run(&["push", "m", &remote, "--home", p(&lib)], None);
    assert!(out.status.success(), "{}", describe(&out));
    let out = run(
        &["pull", &remote, "--home", p(&dir.path().join("lib2"))],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let out = run(&["logout", &reg.addr], None);
    assert!(out.status.success());
    let out = run(
        &["pull", &remote, "--home", p(&dir.path().join("lib3"))],
        None,
    );
    assert!(!out.status.success());
}

/// Runs vmhub with the settings folder `config`.
fn vmhub_with(config: &Path, args: &[&str]) -> std::process::Output {
    vmhub_command()
        .args(args)
        .env("VMHUB_CONFIG", config)
        .output()
        .unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn signatures_keep_out_strangers_tampering_and_rollbacks() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(dir.path(), "reg", None);
    let lib1 = dir.path().join("lib1");
    let disk = dir.path().join("m.raw");
    let image = make_disk(&disk, 16 * MIB, 3 * MIB, 7);
    vmhub_ok(["import", p(&disk), "m:1", "--home", p(&lib1)]);
    let remote = format!("{}/acme/m:1", reg.addr);
    vmhub_ok(["push", "m:1", &remote, "--home", p(&lib1)]);

    // Someone who does not trust the key is told how to.
    let stranger = dir.path().join("stranger");
    let lib2 = dir.path().join("lib2");
    let out = vmhub_with(&stranger, &["pull", &remote, "--home", p(&lib2)]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("not trusted") && err.contains("vmhub key trust ed25519:"),
        "{err}"
    );
    let public = String::from_utf8(vmhub_ok(["key", "show"]).stdout).unwrap();
    let out = vmhub_with(
        &stranger,
        &["key", "trust", public.trim(), "--name", "acme"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let out = vmhub_with(&stranger, &["pull", &remote, "--home", p(&lib2)]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("signed by acme"));
    assert_exports(&lib2, "acme/m:1", &image);

    // Unsigned machines need an explicit skip.
    let other = dir.path().join("n.raw");
    make_disk(&other, 16 * MIB, 3 * MIB, 8);
    vmhub_ok(["import", p(&other), "n:1", "--home", p(&lib1)]);
    let unsigned = format!("{}/acme/m:unsigned", reg.addr);
    vmhub_ok(["push", "n:1", &unsigned, "--home", p(&lib1), "--unsigned"]);
    let lib3 = dir.path().join("lib3");
    let out = vmhub(["pull", &unsigned, "--home", p(&lib3)]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("not signed"),
        "{}",
        stderr_of(&out)
    );
    vmhub_ok([
        "pull",
        &unsigned,
        "--home",
        p(&lib3),
        "--insecure-skip-verify",
    ]);

    // A signed manifest whose config was swapped for another machine's.
    let raw = peer_ok(
        "skopeo",
        ["inspect", "--raw", &format!("oci:{}:m:1", p(&lib1))],
    );
    let mut manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let raw_n = peer_ok(
        "skopeo",
        ["inspect", "--raw", &format!("oci:{}:n:1", p(&lib1))],
    );
    let manifest_n: serde_json::Value = serde_json::from_slice(&raw_n.stdout).unwrap();
    manifest["config"] = manifest_n["config"].clone();
    manifest["layers"] = manifest_n["layers"].clone();
    let evil = dir.path().join("evil.json");
    std::fs::write(&evil, serde_json::to_vec(&manifest).unwrap()).unwrap();
    peer_ok(
        "curl",
        [
            "-fsS",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", p(&evil)),
            &format!("http://{}/v2/acme/m/manifests/evil", reg.addr),
        ],
    );
    let lib4 = dir.path().join("lib4");
    let out = vmhub([
        "pull",
        &format!("{}/acme/m:evil", reg.addr),
        "--home",
        p(&lib4),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("does not verify"),
        "{}",
        stderr_of(&out)
    );

    // A chunk changed in the registry's storage.
    let chunk = manifest_n["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let stored = reg
        .data
        .join("docker/registry/v2/blobs/sha256")
        .join(&chunk[..2])
        .join(&chunk)
        .join("data");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let lib5 = dir.path().join("lib5");
    let out = vmhub([
        "pull",
        &unsigned,
        "--home",
        p(&lib5),
        "--insecure-skip-verify",
    ]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains(&chunk), "{}", stderr_of(&out));
    let ls = vmhub_ok(["ls", "--home", p(&lib5), "--output", "json"]);
    assert_eq!(json_of(&ls), serde_json::json!([]));

    // Rollback: an older signed version under a name that held a newer one.
    // (Disks of their own: a chunk of n's is damaged in the registry now.)
    let old = dir.path().join("old.raw");
    make_disk(&old, 8 * MIB, 2 * MIB, 9);
    let newer = dir.path().join("new.raw");
    make_disk(&newer, 8 * MIB, 2 * MIB, 10);
    vmhub_ok(["import", p(&old), "r:old", "--home", p(&lib1)]);
    std::thread::sleep(Duration::from_millis(1100));
    vmhub_ok(["import", p(&newer), "r:new", "--home", p(&lib1)]);
    let stable = format!("{}/acme/r:stable", reg.addr);
    let lib6 = dir.path().join("lib6");
    vmhub_ok(["push", "r:new", &stable, "--home", p(&lib1)]);
    vmhub_ok(["pull", &stable, "--home", p(&lib6)]);
    vmhub_ok(["push", "r:old", &stable, "--home", p(&lib1)]);
    let out = vmhub(["pull", &stable, "--home", p(&lib6)]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("rollback"), "{}", stderr_of(&out));
    // The newer one is still what the name holds.
    let show = json_of(&vmhub_ok([
        "show",
        "acme/r:stable",
        "--home",
        p(&lib6),
        "--output",
        "json",
    ]));
    let new = json_of(&vmhub_ok([
        "show",
        "r:new",
        "--home",
        p(&lib1),
        "--output",
        "json",
    ]));
    assert_eq!(show["machine"]["created"], new["machine"]["created"]);
}
