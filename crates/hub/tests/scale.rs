//! Two hubs sharing one PostgreSQL database and one S3 bucket (moto), each
//! with its own data folder and its own memory, as two processes behind a
//! load balancer would be: an upload goes on from one to the other, a
//! bearer token of one is good at the other, and S3 storage keeps its
//! contract (a blob appears only under the digest its bytes have; bytes an
//! interrupted request left are dropped).

mod common;
mod peers;

use common::*;
use hub::storage::BlobStore;
use peers::{Backend, Blobs, Db};
use serde_json::json;

/// Two hubs over one database and one bucket.
fn two_hubs() -> Option<(Backend, tempfile::TempDir, Server, Server)> {
    let backend = Backend::new(Db::Postgres, Blobs::S3)?;
    let dirs = tempfile::tempdir().expect("tempdir");
    let a = Server::start_with(backend.config_at(&dirs.path().join("a")));
    let b = Server::start_with(backend.config_at(&dirs.path().join("b")));
    Some((backend, dirs, a, b))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_chunked_upload_moves_between_hubs() {
    let Some((backend, _dirs, a, b)) = two_hubs() else {
        return;
    };
    let (ca, cb) = (a.client(), b.client());
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let d = digest(&data);

    let start = ca.send("POST", "/v2/team/app/blobs/uploads/", &[], Some(b""));
    assert_eq!(start.status, 202);
    let loc = start.header("location").expect("location").to_string();
    let id = start
        .header("docker-upload-uuid")
        .expect("uuid")
        .to_string();
    let p = ca.send(
        "PATCH",
        &loc,
        &[("Content-Range", "0-99999")],
        Some(&data[..100_000]),
    );
    assert_eq!((p.status, p.header("range")), (202, Some("0-99999")));

    // A request that stored its bytes but never recorded them (it broke
    // off): they follow the recorded ones in the bucket.
    let store = hub::s3::S3Store::open(
        backend.config().storage.as_ref().expect("S3"),
        hub::DEFAULT_MAX_BLOB_SIZE,
    )
    .expect("the bucket");
    runtime().block_on(async {
        let mut w = store.upload_writer(&id, 100_000).await.expect("a writer");
        w.write(b"bytes of a request that broke off")
            .await
            .expect("write");
        w.finish().await.expect("finish");
    });

    // B knows the upload and how much it holds, and takes the next chunk.
    let st = cb.get(&loc);
    assert_eq!((st.status, st.header("range")), (204, Some("0-99999")));
    let p = cb.send(
        "PATCH",
        &loc,
        &[("Content-Range", "100000-199999")],
        Some(&data[100_000..200_000]),
    );
    assert_eq!((p.status, p.header("range")), (202, Some("0-199999")));
    // A chunk that does not start where the upload ends is refused at A too.
    let bad = ca.send(
        "PATCH",
        &loc,
        &[("Content-Range", "100000-199999")],
        Some(&data[100_000..200_000]),
    );
    assert_eq!(bad.status, 416);
    // A, whose running digest is out of date, takes the next; B finishes.
    let p = ca.send("PATCH", &loc, &[], Some(&data[200_000..250_000]));
    assert_eq!((p.status, p.header("range")), (202, Some("0-249999")));
    let f = cb.send(
        "PUT",
        &format!("{loc}?digest={d}"),
        &[],
        Some(&data[250_000..]),
    );
    assert_eq!(f.status, 201, "{}", String::from_utf8_lossy(&f.body));

    for c in [&ca, &cb] {
        assert_eq!(c.get(&format!("/v2/team/app/blobs/{d}")).body, data);
        let r = c.send(
            "GET",
            &format!("/v2/team/app/blobs/{d}"),
            &[("Range", "bytes=99990-100009")],
            None,
        );
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &data[99_990..100_010]);
        assert_eq!(c.get(&loc).code(), "BLOB_UPLOAD_UNKNOWN");
    }
    // Nothing of the upload is left in the bucket.
    runtime().block_on(async {
        let mut rest = store.upload_read(&id, 1 << 20).await.expect("read");
        use futures_util::StreamExt;
        assert!(rest.next().await.is_none(), "the upload's segments remain");
    });
}

#[test]
fn manifests_tags_and_tokens_are_shared() {
    let Some((_backend, _dirs, a, b)) = two_hubs() else {
        return;
    };
    let (ca, cb) = (a.client(), b.client());
    let config = br#"{"shared":true}"#.to_vec();
    let layer = vec![5u8; 70_000];
    ca.push_blob("team/app", &config);
    cb.push_blob("team/app", &layer);
    let m = image_manifest(&config, &[&layer], json!({}));
    let md = digest(&m);
    assert_eq!(
        ca.push_manifest("team/app", "v1", OCI_MANIFEST, &m).status,
        201
    );
    let g = cb.get("/v2/team/app/manifests/v1");
    assert_eq!((g.status, g.body.as_slice()), (200, m.as_slice()));
    assert_eq!(g.header("docker-content-digest"), Some(md.as_str()));
    assert_eq!(
        cb.get("/v2/team/app/tags/list").json()["tags"],
        json!(["v1"])
    );

    // A bearer token from A's token endpoint is good at B: they sign with
    // the key kept in the shared database.
    let t = ca.get("/v2/token?service=vmhub&scope=repository:team/app:push,pull");
    assert_eq!(t.status, 200);
    let token = t.json()["token"].as_str().expect("token").to_string();
    let bearer = Client::bearer(&b.base, &token);
    assert_eq!(
        bearer
            .push_manifest("team/app", "v2", OCI_MANIFEST, &m)
            .status,
        201
    );
    let forged = Client::bearer(&b.base, &format!("{token}x"));
    assert_eq!(
        forged
            .push_manifest("team/app", "v3", OCI_MANIFEST, &m)
            .status,
        401
    );

    // Deleted through B: gone at A.
    assert_eq!(
        cb.send("DELETE", &format!("/v2/team/app/manifests/{md}"), &[], None)
            .status,
        202
    );
    assert_eq!(ca.get("/v2/team/app/manifests/v1").status, 404);
}

#[test]
fn s3_commits_only_what_the_digest_names() {
    let Some(backend) = Backend::new(Db::Sqlite, Blobs::S3) else {
        return;
    };
    let config = backend.config();
    let store =
        hub::s3::S3Store::open(config.storage.as_ref().expect("S3"), 1 << 30).expect("the bucket");
    runtime().block_on(async {
        let right = hub::digest::Digest::of(b"the bytes");
        let wrong = hub::digest::Digest::of(b"other bytes");
        let id = "00112233445566778899aabbccddeeff";
        store.upload_create(id).await.expect("create");
        let mut w = store.upload_writer(id, 0).await.expect("writer");
        w.write(b"the ").await.expect("write");
        w.finish().await.expect("finish");
        let mut w = store.upload_writer(id, 4).await.expect("writer");
        w.write(b"bytes").await.expect("write");
        w.finish().await.expect("finish");

        // Whatever the caller believes, the bytes decide.
        let e = store
            .upload_commit(id, &wrong)
            .await
            .expect_err("a wrong digest");
        assert!(e.to_string().contains(&wrong.to_string()), "{e}");
        assert_eq!(store.size(&wrong).await.expect("size"), None);

        use futures_util::StreamExt;
        let mut held = Vec::new();
        let mut s = store.upload_read(id, 6).await.expect("read");
        while let Some(c) = s.next().await {
            held.extend_from_slice(&c.expect("bytes"));
        }
        assert_eq!(held, b"the by", "upload_read stops at its length");

        // A request that broke off after storing its bytes at offset 9;
        // the finishing request (an empty body) writes its segment there
        // too, which ends the upload where its recorded bytes end.
        let mut w = store.upload_writer(id, 9).await.expect("writer");
        w.write(b"junk").await.expect("write");
        w.finish().await.expect("finish");
        let e = store
            .upload_commit(id, &right)
            .await
            .expect_err("junk after the bytes");
        assert!(e.to_string().contains("not stored"), "{e}");
        assert_eq!(store.size(&right).await.expect("size"), None);
        let w = store.upload_writer(id, 9).await.expect("writer");
        w.finish().await.expect("finish");
        store.upload_commit(id, &right).await.expect("commit");
        assert_eq!(store.size(&right).await.expect("size"), Some(9));
        let mut got = Vec::new();
        let mut s = store.read(&right, 4, 3).await.expect("read");
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.expect("bytes"));
        }
        assert_eq!(got, b"byt");
        assert_eq!(
            store.read_small(&right, 4).await.expect("small"),
            b"the ",
            "read_small stops at its cap"
        );
        assert!(store.upload_writer("../x", 0).await.is_err());
    });
}

#[test]
fn s3_multipart_blobs_round_trip() {
    let Some(backend) = Backend::new(Db::Sqlite, Blobs::S3) else {
        return;
    };
    let server = Server::start_with(backend.config());
    let c = server.client();
    // Past one 8 MiB part, in chunks that are not part-aligned: the
    // segments and the blob go up as multipart uploads.
    let data: Vec<u8> = (0..(19u32 << 20) + 12_345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let d = digest(&data);
    let a = c.send("POST", "/v2/big/blobs/uploads/", &[], Some(b""));
    let loc = a.header("location").expect("location").to_string();
    let cut = 9 << 20;
    assert_eq!(c.send("PATCH", &loc, &[], Some(&data[..cut])).status, 202);
    let f = c.send("PUT", &format!("{loc}?digest={d}"), &[], Some(&data[cut..]));
    assert_eq!(f.status, 201, "{}", String::from_utf8_lossy(&f.body));
    let g = c.get(&format!("/v2/big/blobs/{d}"));
    assert!(g.body == data, "the blob differs");
    let r = c.send(
        "GET",
        &format!("/v2/big/blobs/{d}"),
        &[("Range", "bytes=8388600-8388620")],
        None,
    );
    assert_eq!(r.body, &data[8_388_600..=8_388_620]);
}

#[test]
fn concurrent_pushes_through_both_hubs() {
    let Some((_backend, _dirs, a, b)) = two_hubs() else {
        return;
    };
    let bases = std::sync::Arc::new([
        (a.base.clone(), a.token.clone()),
        (b.base.clone(), b.token.clone()),
    ]);
    let config = b"{}".to_vec();
    // Every push uploads the same shared blobs, so both hubs commit the
    // same digests at once, and points the same tag at its manifest.
    let shared: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 120_000]).collect();
    let mut pushes = Vec::new();
    for i in 0..6usize {
        let bases = bases.clone();
        let (config, shared) = (config.clone(), shared.clone());
        pushes.push(std::thread::spawn(move || {
            // Each chunk goes to the other hub than the one before.
            let hub = |k: usize| {
                let (base, token) = &bases[(i + k) % 2];
                Client::basic(base, "tester", token)
            };
            let own = format!("blob of push {i}").into_bytes();
            let mut blobs = shared.clone();
            blobs.push(own.clone());
            blobs.push(config.clone());
            for data in &blobs {
                let d = digest(data);
                let start = hub(0).send("POST", "/v2/busy/repo/blobs/uploads/", &[], Some(b""));
                assert_eq!(start.status, 202);
                let loc = start.header("location").expect("location").to_string();
                let half = data.len() / 2;
                assert_eq!(
                    hub(1).send("PATCH", &loc, &[], Some(&data[..half])).status,
                    202
                );
                let f = hub(2).send(
                    "PUT",
                    &format!("{loc}?digest={d}"),
                    &[],
                    Some(&data[half..]),
                );
                assert_eq!(f.status, 201, "{}", String::from_utf8_lossy(&f.body));
            }
            let mut layers: Vec<&[u8]> = shared.iter().map(Vec::as_slice).collect();
            layers.push(&own);
            let m = image_manifest(&config, &layers, json!({}));
            for tag in [format!("v{i}"), "latest".to_string()] {
                let a = hub(i).push_manifest("busy/repo", &tag, OCI_MANIFEST, &m);
                assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
            }
            digest(&m)
        }));
    }
    let digests: Vec<String> = pushes
        .into_iter()
        .map(|h| h.join().expect("a push"))
        .collect();
    for (base, token) in bases.iter() {
        let c = Client::basic(base, "tester", token);
        let tags = c.get("/v2/busy/repo/tags/list").json()["tags"].clone();
        assert_eq!(
            tags,
            json!(["latest", "v0", "v1", "v2", "v3", "v4", "v5"]),
            "{base}"
        );
        let latest = c.get("/v2/busy/repo/manifests/latest");
        assert!(digests.contains(&digest(&latest.body)));
        for (i, md) in digests.iter().enumerate() {
            let m = c.get(&format!("/v2/busy/repo/manifests/v{i}"));
            assert_eq!(&digest(&m.body), md);
            let v = m.json();
            for l in v["layers"].as_array().expect("layers") {
                let d = l["digest"].as_str().expect("digest");
                assert_eq!(digest(&c.get(&format!("/v2/busy/repo/blobs/{d}")).body), d);
            }
        }
    }
}

#[test]
fn search_reads_the_same_on_postgres() {
    let Some(backend) = Backend::new(Db::Postgres, Blobs::Local) else {
        return;
    };
    use hub::db::{MachineRow, Metadata, SqlMetadata};
    let url = backend.database.clone().expect("a database");
    runtime().block_on(async {
        let m = SqlMetadata::connect(&url).await.expect("connect");
        let row = |repo: &str, name: &str| MachineRow {
            repository: repo.into(),
            tag: "1".into(),
            digest: "sha256:00".into(),
            name: name.into(),
            version: "1".into(),
            description: "a 100% test".into(),
            os: "Debian".into(),
            architecture: "x86_64".into(),
            firmware: "bios".into(),
            cpus: 1,
            memory: 1 << 30,
            disks: Vec::new(),
            created: String::new(),
            signed_by: None,
            compressed_size: 0,
            pushed: String::new(),
        };
        for (repo, name) in [
            ("acme/web", "Web_Server"),
            ("acme/db", "WebXServer"),
            ("acme/bang", "Hello!"),
        ] {
            m.put_machine(&row(repo, name)).await.expect("put");
        }
        let names = |v: Vec<MachineRow>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
        // Wildcards are plain characters; case does not matter; newest first.
        assert_eq!(
            names(m.search("web_", 10).await.expect("search")),
            ["Web_Server"]
        );
        assert_eq!(names(m.search("o!", 10).await.expect("search")), ["Hello!"]);
        assert_eq!(
            names(m.search("DEBIAN", 10).await.expect("search")),
            ["Hello!", "WebXServer", "Web_Server"]
        );
        assert_eq!(m.search("100%", 10).await.expect("search").len(), 3);
        assert!(m.search("1_0", 10).await.expect("search").is_empty());
        // A second connection (another hub) agrees on the token key.
        let other = SqlMetadata::connect(&url).await.expect("connect");
        assert_eq!(
            m.shared_token_key().await.expect("key"),
            other.shared_token_key().await.expect("key")
        );
    });
}

#[test]
fn a_missing_bucket_stops_the_hub_at_start() {
    let Some(backend) = Backend::new(Db::Sqlite, Blobs::S3) else {
        return;
    };
    let mut config = backend.config();
    if let Some(s3) = config.storage.as_mut() {
        s3.bucket = "no-such-bucket".into();
    }
    let e = runtime()
        .block_on(hub::Hub::open(&config))
        .err()
        .expect("no hub over a missing bucket");
    let e = e.to_string();
    assert!(
        e.contains("s3://no-such-bucket: cannot list the bucket"),
        "{e}"
    );
}

/// Garbage collection over the shared bucket: run by a third hub handle,
/// it removes what no manifest names and an idle upload's segments, from
/// S3, and what the manifest names still pulls through either hub.
#[test]
fn garbage_collection_works_on_s3() {
    let Some((backend, dirs, a, b)) = two_hubs() else {
        return;
    };
    let (ca, cb) = (a.client(), b.client());
    let config = br#"{"name":"box"}"#.as_slice();
    let layer = vec![4u8; 6000];
    let stray = vec![5u8; 700];
    for blob in [config, &layer] {
        ca.push_blob("team/gc", blob);
    }
    let m = image_manifest(config, &[&layer], json!({}));
    assert_eq!(
        ca.push_manifest("team/gc", "v1", OCI_MANIFEST, &m).status,
        201
    );
    let stray_d = cb.push_blob("team/gc", &stray);
    let up = ca.send("POST", "/v2/team/gc/blobs/uploads/", &[], Some(b""));
    let location = up.header("location").expect("location").to_string();
    assert_eq!(
        cb.send("PATCH", &location, &[], Some(&[7u8; 999])).status,
        202
    );

    let report = runtime().block_on(async {
        let hub = hub::Hub::open(&backend.config_at(&dirs.path().join("c")))
            .await
            .expect("a third hub");
        hub.gc(&hub::gc::GcOptions {
            grace: std::time::Duration::ZERO,
            dry_run: false,
        })
        .await
        .expect("gc")
    });
    let removed: Vec<String> = report.blobs.iter().map(|(d, _)| d.to_string()).collect();
    assert_eq!(removed, vec![stray_d.clone()], "{report:?}");
    assert_eq!(report.uploads.len(), 1, "{report:?}");
    assert_eq!(report.bytes(), 700 + 999);
    for c in [&ca, &cb] {
        let gone = c.send("HEAD", &format!("/v2/team/gc/blobs/{stray_d}"), &[], None);
        assert_eq!(gone.status, 404);
        assert_eq!(c.get(&location).status, 404);
        let got = c.get(&format!("/v2/team/gc/blobs/{}", digest(&layer)));
        assert_eq!((got.status, got.body.as_slice()), (200, layer.as_slice()));
        assert_eq!(c.get("/v2/team/gc/manifests/v1").body, m);
    }
    // Removed, the blob can be pushed again, and is whole.
    cb.push_blob("team/gc", &stray);
    let got = ca.get(&format!("/v2/team/gc/blobs/{stray_d}"));
    assert_eq!((got.status, got.body), (200, stray));
}
