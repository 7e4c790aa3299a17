//! Two `vmhub serve` processes sharing one PostgreSQL database and one S3
//! bucket (moto), as behind a load balancer: a machine pushed through one
//! is pulled through the other byte for byte, and found by the other's
//! search. The peers are started and stopped by the test (see
//! crates/hub/tests/peers).

#[allow(dead_code)]
mod common;
#[path = "../../hub/tests/peers/mod.rs"]
mod peers;

use common::*;
use peers::{Backend, Blobs, Db};
use std::path::Path;

/// A settings folder with a signing key, and the environment every vmhub
/// run gets: that folder and the S3 credentials.
fn settings(backend: &Backend) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmhub"))
        .args(["key", "generate"])
        .env("VMHUB_CONFIG", d.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let mut env = vec![("VMHUB_CONFIG".to_string(), p(d.path()).to_string())];
    for (k, v) in backend.env() {
        env.push((k.to_string(), v.to_string()));
    }
    VMHUB_ENV.set(env).unwrap();
    d
}

/// `vmhub serve` over `backend`, with its own data folder.
fn serve(backend: &Backend, data: &Path) -> Served {
    let args = backend.serve_args();
    let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
    Served::start(data, &args)
}

#[test]
fn two_hub_processes_share_postgres_and_s3() {
    let Some(backend) = Backend::new(Db::Postgres, Blobs::S3) else {
        return;
    };
    let _settings = settings(&backend);
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));

    // A token minted through A's command line lives in the shared database.
    let secret = mint_token(&data_a, "ann", &["push:acme"], &backend.serve_args());
    let secret = secret.as_str();

    let a = serve(&backend, &data_a);
    let b = serve(&backend, &data_b);
    // The start line names the backends, never the database password.
    assert!(
        a.line.contains("database postgres://postgres:***@"),
        "{}",
        a.line
    );
    assert!(a.line.contains("blobs in s3://vmhub-"), "{}", a.line);

    // Log in at B, push through A: B's token check reads the same table.
    let out = login_with(vmhub_command(), &a.addr, "ann", secret);
    assert!(out.status.success(), "{}", describe(&out));

    let disk = dir.path().join("disk.raw");
    let mut rng = Rng::new(7);
    let mut image = vec![0u8; 6 << 20];
    rng.fill(&mut image[..3 << 20]);
    std::fs::write(&disk, &image).unwrap();
    let lib1 = dir.path().join("lib1");
    let lib2 = dir.path().join("lib2");
    vmhub_ok(["import", p(&disk), "acme/scale:1", "--home", p(&lib1)]);
    let pushed: serde_json::Value = serde_json::from_slice(
        &vmhub_ok([
            "push",
            "acme/scale:1",
            &format!("{}/acme/scale:1", a.addr),
            "--home",
            p(&lib1),
            "--output",
            "json",
        ])
        .stdout,
    )
    .unwrap();
    assert!(u64_field(&pushed, "uploaded") > 2, "{pushed}");

    // Pulled through B: every digest checked, the disk byte for byte.
    let pulled: serde_json::Value = serde_json::from_slice(
        &vmhub_ok([
            "pull",
            &format!("{}/acme/scale:1", b.addr),
            "--home",
            p(&lib2),
            "--output",
            "json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(pulled["manifest"], pushed["manifest"]);
    let out = dir.path().join("out.raw");
    vmhub_ok([
        "export",
        "acme/scale:1",
        p(&out),
        "--home",
        p(&lib2),
        "--force",
    ]);
    assert!(
        std::fs::read(&out).unwrap() == image,
        "the pulled disk differs"
    );

    // B's search finds what A took in.
    let found: serde_json::Value = serde_json::from_slice(
        &vmhub_ok(["search", "SCALE", "--hub", &b.addr, "--output", "json"]).stdout,
    )
    .unwrap();
    assert_eq!(found[0]["digest"], pushed["manifest"], "{found}");
    assert_eq!(found[0]["repository"], "acme/scale", "{found}");

    a.stop();
    b.stop();
}
