//! `vmhub nbd serve` as a user runs it: the URI on stdout, clients through
//! it, a clean stop on SIGTERM or SIGINT (socket removed, writes flushed), and
//! clear errors for what cannot be served.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VMHUB: &str = env!("CARGO_BIN_EXE_vmhub");

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `vmhub nbd serve ARGS` and returns it with the URI it printed.
fn serve(args: &[&str], image: &Path) -> (Child, String) {
    let mut child = Command::new(VMHUB)
        .args(["nbd", "serve"])
        .arg(image)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("nbd"), "no URI printed: {line:?}");
    (child, line.trim().to_string())
}

fn stop(mut child: Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(
                s.success(),
                "vmhub nbd serve exited with {s} after {signal}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "vmhub nbd serve did not stop on {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serves_until_stopped_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("d.vhd");
    run_ok(
        Command::new(VMHUB)
            .args(["img", "create"])
            .arg(&image)
            .arg("32M"),
    );
    let socket = dir.path().join("s.sock");
    let (child, uri) = serve(&["--socket", socket.to_str().unwrap()], &image);
    assert_eq!(
        uri,
        format!("nbd+unix:///d.vhd?socket={}", socket.display())
    );
    run_ok(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x5e 1M 2M", &uri]));
    stop(child, "-TERM");
    assert!(!socket.exists(), "the socket was left behind");
    // What the client wrote is in the image, and it checks clean.
    let out = run_ok(
        Command::new("qemu-io")
            .args(["-f", "vpc", "-r", "-c", "read -P 0x5e 1M 2M"])
            .arg(&image),
    );
    assert!(!out.contains("failed"), "{out}");
    run_ok(Command::new(VMHUB).args(["img", "check"]).arg(&image));

    // TCP, read-only, a named export; SIGINT stops it too.
    let (child, uri) = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--read-only",
            "--export-name",
            "x",
        ],
        &image,
    );
    assert!(
        uri.starts_with("nbd://127.0.0.1:") && uri.ends_with("/x"),
        "{uri}"
    );
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 512", &uri])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // qemu-io sees the read-only flag and refuses to open the export for writing.
    assert!(
        !out.status.success(),
        "a write to a read-only export went through: {text}"
    );
    assert!(text.contains("Permission denied"), "{text}");
    let out =
        run_ok(Command::new("qemu-io").args(["-f", "raw", "-r", "-c", "read -P 0x5e 1M 2M", &uri]));
    assert!(!out.contains("failed"), "{out}");
    stop(child, "-INT");
}

#[test]
fn what_cannot_be_served_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.vhd");
    let out = Command::new(VMHUB)
        .args(["nbd", "serve"])
        .arg(&missing)
        .args(["--socket", dir.path().join("s").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.vhd"));

    // A socket path where a file already is.
    let image = dir.path().join("d.vhd");
    run_ok(
        Command::new(VMHUB)
            .args(["img", "create"])
            .arg(&image)
            .arg("1M"),
    );
    let taken = dir.path().join("taken");
    std::fs::write(&taken, b"x").unwrap();
    let out = Command::new(VMHUB)
        .args(["nbd", "serve"])
        .arg(&image)
        .args(["--socket", taken.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("taken") && err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&taken).unwrap(), b"x");
}
