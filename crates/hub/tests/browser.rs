//! The hub's pages in a real browser: Debian's Chromium, headless, driven by
//! npm's playwright-core (scripts/deps.sh installs both) through
//! tests/browser/browse.cjs. A machine whose disk holds an ext4 root with
//! /etc/os-release is pushed to a hub on 127.0.0.1; the browser searches for
//! it, opens it, browses into /etc and reads os-release, then downloads the
//! disk as a VHD from the machine page, which vmhub checks and qemu-img
//! compares with the original.

mod common;
mod machines;

use common::Server;
use machines::{build_disk, have_tools, push, which, OS_RELEASE, TOOLS};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the whole browser run may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);

/// Where scripts/deps.sh puts playwright-core.
fn node_prefix() -> PathBuf {
    match std::env::var_os("VMHUB_NODE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cache/vmhub-ci/node"),
    }
}

/// Chromium, node and playwright-core, or why they cannot be used.
fn browser_peers() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("VMHUB_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    let node = which("node").ok_or("node is not on PATH")?;
    let modules = node_prefix().join("node_modules");
    if !modules.join("playwright-core/package.json").is_file() {
        return Err(format!(
            "playwright-core is not installed in {}",
            modules.display()
        ));
    }
    Ok((chromium, node, modules))
}

/// Runs `cmd`, killing it past `limit`; returns whether it succeeded and
/// what it printed.
fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String) {
    let out_path = std::env::temp_dir().join(format!("vmhub-browser-{}.log", std::process::id()));
    let log = std::fs::File::create(&out_path).unwrap();
    cmd.stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let printed = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    match status {
        Some(s) => (s.success(), printed),
        None => (
            false,
            format!("{printed}\n(killed after {} s)", limit.as_secs()),
        ),
    }
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run qemu-img (qemu-utils): {e}"));
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_browser_finds_a_machine_and_reads_a_file_inside_it() {
    let (chromium, node, modules) = match browser_peers() {
        Ok(p) => p,
        Err(why) => {
            let why = format!("{why} (scripts/deps.sh installs chromium and playwright-core)");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{why}");
            }
            eprintln!("skipped: {why}");
            return;
        }
    };
    if !have_tools(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, _, _) = build_disk(dir.path());
    let server = Server::start(&dir.path().join("data"));
    push(
        &server.client(),
        &dir.path().join("lib"),
        &disk,
        "acme/box:1",
    );

    let saved = dir.path().join("downloaded.vhd");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/browse.cjs");
    let mut cmd = Command::new(node);
    cmd.arg(&script)
        .env("NODE_PATH", &modules)
        .env("HUB_URL", &server.base)
        .env("CHROMIUM", &chromium)
        .env("EXPECT_TEXT", OS_RELEASE)
        .env("DOWNLOAD_TO", &saved)
        // Chromium keeps its profile and caches under HOME.
        .env("HOME", dir.path());
    let (ok, printed) = run_bounded(cmd, BROWSER_TIMEOUT);
    assert!(ok, "the browser run failed:\n{printed}");
    eprintln!("{printed}");
    assert!(
        printed.contains("browser: ok: /etc/os-release is shown with its exact text"),
        "{printed}"
    );
    assert!(printed.contains("browser: done"), "{printed}");

    assert!(printed.contains("the disk downloads as"), "{printed}");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // qemu-img cannot check VHDs: vmhub's own check does, and qemu-img
    // reads it the same as the original.
    let report = vdisk::check(&saved).unwrap();
    assert!(report.clean, "the downloaded VHD: {:?}", report.problems);
    qemu_img(&["compare", "-f", "raw", "-F", "vpc", &s(&disk), &s(&saved)]);
}
