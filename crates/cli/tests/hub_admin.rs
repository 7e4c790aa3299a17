//! The operator's flags of `vmhub serve`: `--list-tokens` and
//! `--revoke-token` against a running hub and `vmhub login`, and `--gc`
//! with `--dry-run` and `--upload-ttl`.

#[allow(dead_code)]
mod common;

use common::Served;
use std::path::Path;
use std::process::{Command, Output};

const VMHUB: &str = env!("CARGO_BIN_EXE_vmhub");

fn vmhub(data: &Path, args: &[&str]) -> Output {
    Command::new(VMHUB)
        .args(["serve", "--data"])
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mint(data: &Path, user: &str, scope: &str) -> String {
    let out = vmhub(data, &["--create-token", user, "--scope", scope]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn login(config: &Path, addr: &str, user: &str, secret: &str) -> Output {
    let mut cmd = Command::new(VMHUB);
    cmd.env("VMHUB_CONFIG", config);
    common::login_with(cmd, addr, user, secret)
}

#[test]
fn tokens_are_listed_without_secrets_and_revoked_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config");
    let ann = mint(&data, "ann", "push:acme");
    let bob = mint(&data, "bob", "pull:*");
    let out = vmhub(&data, &["--list-tokens"]);
    assert!(out.status.success(), "{}", text(&out));
    let list = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("SCOPES"),
        "{list}"
    );
    assert!(list.contains("ann") && list.contains("push:acme"), "{list}");
    assert!(list.contains("bob") && list.contains("pull:*"), "{list}");
    assert!(
        !list.contains(&ann[6..]) && !list.contains(&bob[6..]),
        "{list}"
    );
    let bob_id = lines
        .iter()
        .find(|l| l.contains("bob"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();

    let hub = Served::start(&data, &[]);
    let out = login(&config, &hub.addr, "ann", &ann);
    assert!(out.status.success(), "{}", text(&out));
    let out = vmhub(&data, &["--revoke-token", "ann"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("revoked token"), "{}", text(&out));
    // The running hub refuses it at once.
    let out = login(&config, &hub.addr, "ann", &ann);
    assert!(!out.status.success(), "{}", text(&out));
    let out = login(&config, &hub.addr, "bob", &bob);
    assert!(out.status.success(), "{}", text(&out));
    // By id; then nothing is left to revoke.
    let out = vmhub(&data, &["--revoke-token", &bob_id]);
    assert!(out.status.success(), "{}", text(&out));
    let out = vmhub(&data, &["--revoke-token", "ann"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no token"), "{}", text(&out));
    let out = vmhub(&data, &["--list-tokens"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
}

#[test]
fn gc_reports_and_removes_idle_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    mint(&data, "ann", "push:acme");
    // The bytes of an upload whose request never finished.
    let id = "0123456789abcdef0123456789abcdef";
    std::fs::write(data.join("uploads").join(id), vec![7u8; 4096]).unwrap();

    let out = vmhub(&data, &["--gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("removed 0 blob(s)"), "{}", text(&out));
    assert!(data.join("uploads").join(id).exists(), "younger than 24h");

    let out = vmhub(&data, &["--gc", "--dry-run", "--upload-ttl", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("would remove upload {id} (4096 bytes)")),
        "{}",
        text(&out)
    );
    assert!(data.join("uploads").join(id).exists());

    let out = vmhub(&data, &["--gc", "--upload-ttl", "0s"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4096 bytes freed"), "{}", text(&out));
    assert!(!data.join("uploads").join(id).exists());

    let out = vmhub(&data, &["--gc", "--upload-ttl", "soon"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("soon"), "{}", text(&out));
}
