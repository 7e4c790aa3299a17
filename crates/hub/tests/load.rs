//! Many clients at once: 10 pushes of overlapping content (shared blobs,
//! the same repository for some) while 50 pulls read, every digest checked.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;

fn blob(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Pushes blob `data` to `repo` in two chunks.
fn push_chunked(c: &Client, repo: &str, data: &[u8]) {
    let d = digest(data);
    let a = c.send(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        Some(b""),
    );
    assert_eq!(a.status, 202);
    let loc = a.header("location").expect("location").to_string();
    let half = data.len() / 2;
    let p = c.send("PATCH", &loc, &[], Some(&data[..half]));
    assert_eq!(p.status, 202);
    let loc = p.header("location").expect("location").to_string();
    let f = c.send(
        "PUT",
        &format!("{loc}?digest={d}"),
        &[],
        Some(&data[half..]),
    );
    assert_eq!(f.status, 201, "{}", String::from_utf8_lossy(&f.body));
}

#[test]
fn concurrent_pushes_and_pulls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let base = Arc::new(server.base.clone());
    let token = Arc::new(server.token.clone());
    let config = b"{}".to_vec();
    // Shared layers every push uses, and one of its own.
    let shared: Vec<Vec<u8>> = (0..4).map(|i| blob(i, 200_000)).collect();

    // A first image, for the pulls to start on.
    let c = Client::basic(&base, "tester", &token);
    c.push_blob("load/seed", &config);
    for s in &shared {
        c.push_blob("load/seed", s);
    }
    let refs: Vec<&[u8]> = shared.iter().map(Vec::as_slice).collect();
    let seed_manifest = image_manifest(&config, &refs, json!({}));
    assert_eq!(
        c.push_manifest("load/seed", "v1", OCI_MANIFEST, &seed_manifest)
            .status,
        201
    );

    let mut handles = Vec::new();
    for i in 0..10u32 {
        let base = base.clone();
        let token = token.clone();
        let shared = shared.clone();
        let config = config.clone();
        handles.push(std::thread::spawn(move || {
            let c = Client::basic(&base, "tester", &token);
            let repo = format!("load/push{}", i % 3);
            let own = blob(100 + i, 150_000);
            push_chunked(&c, &repo, &config);
            for s in &shared {
                push_chunked(&c, &repo, s);
            }
            push_chunked(&c, &repo, &own);
            let mut layers: Vec<&[u8]> = shared.iter().map(Vec::as_slice).collect();
            layers.push(&own);
            let m = image_manifest(&config, &layers, json!({}));
            let a = c.push_manifest(&repo, &format!("v{i}"), OCI_MANIFEST, &m);
            assert_eq!(a.status, 201);
            (repo, format!("v{i}"), digest(&m))
        }));
    }
    let mut pulls = Vec::new();
    for _ in 0..50 {
        let base = base.clone();
        let md = digest(&seed_manifest);
        pulls.push(std::thread::spawn(move || {
            let c = Client::new(&base);
            let m = c.get("/v2/load/seed/manifests/v1");
            assert_eq!(m.status, 200);
            assert_eq!(digest(&m.body), md);
            let v: serde_json::Value = serde_json::from_slice(&m.body).expect("json");
            for l in v["layers"].as_array().expect("layers") {
                let d = l["digest"].as_str().expect("digest");
                let b = c.get(&format!("/v2/load/seed/blobs/{d}"));
                assert_eq!(b.status, 200);
                assert_eq!(digest(&b.body), d);
            }
        }));
    }
    let pushed: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("push"))
        .collect();
    for h in pulls {
        h.join().expect("pull");
    }
    // Every pushed image reads back whole.
    for (repo, tag, md) in pushed {
        let m = c.get(&format!("/v2/{repo}/manifests/{tag}"));
        assert_eq!(digest(&m.body), md);
        let v: serde_json::Value = serde_json::from_slice(&m.body).expect("json");
        for l in v["layers"].as_array().expect("layers") {
            let d = l["digest"].as_str().expect("digest");
            assert_eq!(digest(&c.get(&format!("/v2/{repo}/blobs/{d}")).body), d);
        }
    }
}
