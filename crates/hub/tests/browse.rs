//! The file browser against a machine pushed to a hub: an MBR disk with a
//! FAT partition (mkfs.vfat, mcopy) and an ext4 root (mke2fs -d), looked
//! into through the hub's pages, which read the stored chunks.

mod common;
mod machines;

use common::{Answer, Server};
use machines::{build_disk, have_tools, push, BIG, HELLO, OS_RELEASE, TOOLS};

fn text(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

/// `s` escaped as the pages escape text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

struct Fixture {
    _dir: tempfile::TempDir,
    server: Server,
    big: Vec<u8>,
    blob: Vec<u8>,
    data: std::path::PathBuf,
    manifest: store::manifest::Manifest,
}

fn fixture() -> Option<Fixture> {
    if !have_tools(TOOLS) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, big, blob) = build_disk(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let (_, manifest) = push(
        &server.client(),
        &dir.path().join("lib"),
        &disk,
        "acme/box:1",
    );
    Some(Fixture {
        _dir: dir,
        server,
        big,
        blob,
        data,
        manifest,
    })
}

const BASE: &str = "/m/acme/box/1/files";

#[test]
fn folders_files_links_and_partitions_are_shown() {
    let Some(f) = fixture() else { return };
    let c = common::Client::new(&f.server.base);

    // The machine page links to the browser.
    let a = c.get("/m/acme/box");
    assert_eq!(a.status, 200, "{}", text(&a));
    assert!(
        text(&a).contains(&format!("href=\"{BASE}/\"")),
        "{}",
        text(&a)
    );

    let a = c.get(&format!("{BASE}/"));
    assert_eq!(a.status, 200, "{}", text(&a));
    assert!(
        text(&a).contains(&format!("href=\"{BASE}/0/\"")),
        "{}",
        text(&a)
    );
    assert!(text(&a).contains("disk0"));

    // The partition table: FAT in 1, ext4 in 2.
    let a = c.get(&format!("{BASE}/0/"));
    assert_eq!(a.status, 200, "{}", text(&a));
    let page = text(&a);
    assert!(page.contains("MBR partition table"), "{page}");
    assert!(page.contains(&format!("href=\"{BASE}/0/1/\"")), "{page}");
    assert!(page.contains(&format!("href=\"{BASE}/0/2/\"")), "{page}");
    assert!(page.contains("FAT16") && page.contains("ext4"), "{page}");

    // The root of ext4.
    let a = c.get(&format!("{BASE}/0/2/"));
    assert_eq!(a.status, 200, "{}", text(&a));
    let page = text(&a);
    for want in [
        format!("href=\"{BASE}/0/2/etc/\""),
        format!("href=\"{BASE}/0/2/bin/\""),
        format!("href=\"{BASE}/0/2/big.txt\""),
        "300.0 KiB".to_string(),
        "drwxr-xr-x".to_string(),
    ] {
        assert!(page.contains(&want), "no {want} in {page}");
    }
    assert_eq!(
        a.header("content-security-policy")
            .map(|v| v.contains("default-src 'none'")),
        Some(true)
    );

    // /etc, with a name that needs escaping in HTML and in URLs.
    let a = c.get(&format!("{BASE}/0/2/etc/"));
    assert_eq!(a.status, 200, "{}", text(&a));
    let page = text(&a);
    assert!(
        page.contains(&format!("href=\"{BASE}/0/2/etc/os-release\"")),
        "{page}"
    );
    assert!(
        page.contains(&format!("href=\"{BASE}/0/2/etc/odd/\"")),
        "{page}"
    );
    // Breadcrumbs lead back up.
    assert!(page.contains(&format!("href=\"{BASE}/0/2/\"")), "{page}");
    let a = c.get(&format!("{BASE}/0/2/etc/odd/"));
    let page = text(&a);
    let href = format!("{BASE}/0/2/etc/odd/a%20b%26%3Cc%3E.txt");
    assert!(page.contains(&format!("href=\"{href}\"")), "{page}");
    assert!(page.contains("a b&amp;&lt;c&gt;.txt"), "{page}");
    assert!(!page.contains("<c>"), "{page}");
    let a = c.get(&href);
    assert_eq!(a.status, 200, "{}", text(&a));
    assert!(
        text(&a).contains("<pre class=\"file\">odd\n</pre>"),
        "{}",
        text(&a)
    );

    // A text file is shown inline, escaped, with a download link.
    let a = c.get(&format!("{BASE}/0/2/etc/os-release"));
    assert_eq!(a.status, 200, "{}", text(&a));
    let page = text(&a);
    assert!(page.contains(&esc(OS_RELEASE)), "{page}");
    let dl = format!("{BASE}/0/2/etc/os-release?download");
    assert!(page.contains(&format!("href=\"{dl}\"")), "{page}");
    let a = c.get(&dl);
    assert_eq!(a.status, 200);
    assert_eq!(a.body, OS_RELEASE.as_bytes());
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));
    assert!(a
        .header("content-disposition")
        .is_some_and(|v| v.starts_with("attachment;") && v.contains("os-release")));

    // The symlink shows its target in the listing and links to it.
    let a = c.get(&format!("{BASE}/0/2/bin/"));
    let page = text(&a);
    assert!(
        page.contains("→ <span class=\"target\">../etc/os-release</span>"),
        "{page}"
    );
    let a = c.get(&format!("{BASE}/0/2/bin/release"));
    assert_eq!(a.status, 200, "{}", text(&a));
    assert!(
        text(&a).contains(&format!("href=\"{BASE}/0/2/etc/os-release\"")),
        "{}",
        text(&a)
    );

    // A binary file is a download link, and downloads whole.
    let a = c.get(&format!("{BASE}/0/2/bin/blob"));
    assert_eq!(a.status, 200, "{}", text(&a));
    assert!(text(&a).contains("binary file"), "{}", text(&a));
    assert!(!text(&a).contains("<pre"));
    let a = c.get(&format!("{BASE}/0/2/bin/blob?download"));
    assert_eq!(a.status, 200);
    assert!(a.body == f.blob, "the download differs from the file");

    // FAT on partition 1.
    let a = c.get(&format!("{BASE}/0/1/"));
    assert_eq!(a.status, 200, "{}", text(&a));
    assert!(text(&a).contains("HELLO.TXT"), "{}", text(&a));
    let a = c.get(&format!("{BASE}/0/1/HELLO.TXT?download"));
    assert_eq!(a.status, 200);
    assert_eq!(a.body, HELLO.as_bytes());
}

#[test]
fn a_file_past_the_inline_cap_is_cut_and_downloads_whole() {
    let Some(f) = fixture() else { return };
    let c = common::Client::new(&f.server.base);
    let a = c.get(&format!("{BASE}/0/2/big.txt"));
    assert_eq!(a.status, 200, "{}", text(&a));
    let page = text(&a);
    assert!(
        page.contains("The first 256.0 KiB of 300.0 KiB are shown."),
        "{}",
        &page[..400.min(page.len())]
    );
    let shown = std::str::from_utf8(&f.big[..256 << 10]).unwrap();
    assert!(page.contains(&format!("<pre class=\"file\">{shown}</pre>")));
    let a = c.get(&format!("{BASE}/0/2/big.txt?download"));
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-length"), Some(BIG.to_string().as_str()));
    assert!(a.body == f.big, "the download differs from the file");
}

#[test]
fn bad_paths_and_unknown_places_are_refused() {
    let Some(f) = fixture() else { return };
    let c = common::Client::new(&f.server.base);
    for path in [
        format!("{BASE}/0/2/etc/../etc/os-release"),
        format!("{BASE}/0/2/%2e%2e/etc"),
        format!("{BASE}/0/2/etc/%2E%2E"),
        format!("{BASE}/0/2/./etc"),
        format!("{BASE}/0/2/a%2Fb"),
        format!("{BASE}/0/2/a%00b"),
    ] {
        let a = c.get(&path);
        assert_eq!(a.status, 400, "{path}: {}", text(&a));
        assert!(text(&a).contains("Bad path"), "{path}: {}", text(&a));
    }
    // A broken escape is refused before the browser sees the path.
    assert_eq!(c.get(&format!("{BASE}/0/2/%zz")).status, 400);
    for (path, want) in [
        (format!("{BASE}/3/"), "no disk 3"),
        (format!("{BASE}/x/"), "not a disk number"),
        (format!("{BASE}/0/9/"), "no partition 9"),
        (format!("{BASE}/0/2/no-such-file"), "no such file"),
        ("/m/acme/box/2/files/".to_string(), "No machine"),
        ("/m/acme/nothing/1/files/0/2/".to_string(), "No machine"),
    ] {
        let a = c.get(&path);
        assert_eq!(a.status, 404, "{path}: {}", text(&a));
        assert!(text(&a).contains(want), "{path}: {}", text(&a));
    }
    // Pages answer GET only.
    let a = c.send("POST", &format!("{BASE}/0/2/"), &[], Some(b"x"));
    assert_eq!(a.status, 405);
}

#[test]
fn a_tampered_chunk_gives_an_error_page() {
    let Some(f) = fixture() else { return };
    // Damage every chunk the hub stores, keeping each blob's length, before
    // anything reads them.
    for l in &f.manifest.layers {
        if l.media_type != store::index::CHUNK_MEDIA_TYPE {
            continue;
        }
        let hex = l.digest.hex();
        let path = f.data.join("blobs/sha256").join(&hex[..2]).join(&hex);
        let mut data = std::fs::read(&path).unwrap();
        for b in data.iter_mut().skip(10).step_by(97) {
            *b ^= 0x5a;
        }
        std::fs::write(&path, data).unwrap();
    }
    let c = common::Client::new(&f.server.base);
    let a = c.get(&format!("{BASE}/0/2/etc/"));
    assert_eq!(a.status, 500, "{}", text(&a));
    let page = text(&a);
    assert!(page.contains("stored chunk is damaged"), "{page}");
    assert!(page.contains("acme/box:1 disk 0"), "{page}");
    // The hub still answers.
    assert_eq!(c.get("/m/acme/box").status, 200);
}

#[test]
fn chunks_read_once_serve_later_requests() {
    let Some(f) = fixture() else { return };
    let c = common::Client::new(&f.server.base);
    let path = format!("{BASE}/0/2/etc/os-release");
    let a = c.get(&path);
    assert_eq!(a.status, 200, "{}", text(&a));
    // With the chunks gone from storage, the same page still comes from the
    // cache every request shares...
    for l in &f.manifest.layers {
        if l.media_type == store::index::CHUNK_MEDIA_TYPE {
            let hex = l.digest.hex();
            std::fs::remove_file(f.data.join("blobs/sha256").join(&hex[..2]).join(&hex)).unwrap();
        }
    }
    let a = c.get(&path);
    assert_eq!(a.status, 200, "{}", text(&a));
    assert!(text(&a).contains(&esc(OS_RELEASE)));
    // ...which a hub started afresh over the same storage does not have.
    drop(f.server);
    let server = Server::start(&f.data);
    let a = common::Client::new(&server.base).get(&path);
    assert_eq!(a.status, 500, "{}", text(&a));
    assert!(
        text(&a).contains("cannot be read from storage"),
        "{}",
        text(&a)
    );
}

#[test]
fn a_damaged_filesystem_gives_error_pages_not_a_panic() {
    if !have_tools(&["mke2fs", "debugfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), OS_RELEASE).unwrap();
    let img = dir.path().join("bad.raw");
    let mke2fs = machines::which("mke2fs").unwrap();
    let out = std::process::Command::new(mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(&root)
        .arg(&img)
        .arg("8M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Where the inode of /etc is, and garbage over it.
    let debugfs = machines::which("debugfs").unwrap();
    let out = std::process::Command::new(debugfs)
        .args(["-R", "imap /etc"])
        .arg(&img)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let block: u64 = said
        .split("located at block ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no block in {said:?}"));
    let offset = said
        .split("offset 0x")
        .nth(1)
        .and_then(|r| u64::from_str_radix(r.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no offset in {said:?}"));
    let mut data = std::fs::read(&img).unwrap();
    let at = (block * 4096 + offset) as usize;
    let mut x = 0x9e37_79b9u32;
    for b in &mut data[at..at + 256] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(&img, &data).unwrap();

    let server = Server::start(&dir.path().join("data"));
    push(
        &server.client(),
        &dir.path().join("lib"),
        &img,
        "acme/bad:1",
    );
    let c = common::Client::new(&server.base);
    let a = c.get("/m/acme/bad/1/files/0/");
    assert_eq!(a.status, 200, "{}", text(&a));
    assert!(text(&a).contains("no partition table"), "{}", text(&a));
    for path in [
        "/m/acme/bad/1/files/0/0/",
        "/m/acme/bad/1/files/0/0/etc/",
        "/m/acme/bad/1/files/0/0/etc/os-release",
    ] {
        let a = c.get(path);
        let page = text(&a);
        if path.ends_with("/0/0/") && a.status == 200 {
            // The root may list without reading the damaged inode.
            continue;
        }
        assert!(
            a.status >= 400 && a.status != 503,
            "{path}: {} {page}",
            a.status
        );
        assert!(page.contains("<p class=\"error\">"), "{path}: {page}");
        assert!(!page.contains("panicked"), "{path}: {page}");
    }
    // The hub still answers.
    assert_eq!(c.get("/m/acme/bad").status, 200);
}

#[test]
fn a_private_hub_shows_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = hub::Config::new(dir.path().join("data"));
    config.private = true;
    let server = Server::start_with(config);
    let a = common::Client::new(&server.base).get(&format!("{BASE}/0/2/etc/"));
    assert_eq!(a.status, 404, "{}", text(&a));
    assert!(text(&a).contains("private"), "{}", text(&a));
}
