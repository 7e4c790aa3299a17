//! Garbage collection: blobs no manifest references go (with their links)
//! once manifests are deleted or blob links removed, what manifests name
//! stays and still pulls, idle uploads go, a dry run removes nothing, young
//! blobs are kept, and a push that mounts or references a blob while the
//! collection runs keeps it.

mod common;

use async_trait::async_trait;
use common::*;
use hub::db::{ManifestRow, Metadata, SqlMetadata};
use hub::digest::Digest;
use hub::gc::{GcOptions, GcReport};
use hub::storage::{BlobStore, ByteStream, LocalStore, StoredBlob, StoredUpload, UploadWriter};
use hub::{Config, Hub};
use serde_json::json;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One collection on a second handle of the data folder, as
/// `vmhub serve --gc` would run beside a serving hub.
fn gc(data: &Path, grace: Duration, dry_run: bool) -> GcReport {
    rt().block_on(async {
        let hub = Hub::open(&Config::new(data)).await.unwrap();
        hub.gc(&GcOptions { grace, dry_run }).await.unwrap()
    })
}

fn removed(r: &GcReport) -> Vec<String> {
    let mut v: Vec<String> = r.blobs.iter().map(|(d, _)| d.to_string()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn head(c: &Client, repo: &str, d: &str) -> u16 {
    c.send("HEAD", &format!("/v2/{repo}/blobs/{d}"), &[], None)
        .status
}

#[test]
fn unreferenced_blobs_and_idle_uploads_go_referenced_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let s = Server::start(data);
    let c = s.client();
    let config = br#"{"name":"box"}"#.as_slice();
    let shared = vec![1u8; 5000];
    let only_v2 = vec![2u8; 7000];
    let stray = vec![3u8; 300];
    for b in [config, &shared, &only_v2] {
        c.push_blob("acme/box", b);
    }
    let m1 = image_manifest(config, &[&shared], json!({}));
    let m2 = image_manifest(config, &[&shared, &only_v2], json!({}));
    assert_eq!(
        c.push_manifest("acme/box", "v1", OCI_MANIFEST, &m1).status,
        201
    );
    assert_eq!(
        c.push_manifest("acme/box", "v2", OCI_MANIFEST, &m2).status,
        201
    );
    // A blob uploaded but never named by a manifest, in two repositories.
    let stray_d = c.push_blob("acme/box", &stray);
    c.push_blob("acme/other", &stray);
    // An upload begun and left.
    let a = c.send("POST", "/v2/acme/box/blobs/uploads/", &[], Some(b""));
    let location = a.header("location").unwrap().to_string();
    let a = c.send("PATCH", &location, &[], Some(&[9u8; 1234]));
    assert_eq!(a.status, 202);

    // Young things are kept.
    let r = gc(data, Duration::from_secs(3600), false);
    assert!(r.blobs.is_empty() && r.uploads.is_empty(), "{r:?}");
    assert_eq!(r.kept, 1);

    // A dry run says what would go and removes nothing.
    let r = gc(data, Duration::ZERO, true);
    assert_eq!(removed(&r), vec![stray_d.clone()]);
    assert_eq!(r.links, 2);
    assert_eq!(r.uploads.len(), 1);
    assert_eq!(r.bytes(), 300 + 1234);
    assert_eq!(head(&c, "acme/box", &stray_d), 200);
    assert_eq!(c.get(&location).status, 204);

    // The manifest of v2 goes: the layer only it named goes too.
    let m2_d = digest(&m2);
    let a = c.send(
        "DELETE",
        &format!("/v2/acme/box/manifests/{m2_d}"),
        &[],
        None,
    );
    assert_eq!(a.status, 202);
    let r = gc(data, Duration::ZERO, false);
    assert_eq!(
        removed(&r),
        sorted(vec![stray_d.clone(), digest(&only_v2), m2_d.clone()])
    );
    assert_eq!(r.bytes(), 300 + 7000 + m2.len() as u64 + 1234);
    assert_eq!(r.uploads.len(), 1);
    for (repo, d) in [
        ("acme/box", &stray_d),
        ("acme/other", &stray_d),
        ("acme/box", &digest(&only_v2)),
    ] {
        assert_eq!(head(&c, repo, d), 404, "{repo} {d}");
    }
    assert_eq!(c.get(&location).status, 404);
    // v1 still pulls whole.
    let m = c.get("/v2/acme/box/manifests/v1");
    assert_eq!(m.status, 200);
    assert_eq!(m.body, m1);
    for b in [config, &shared] {
        let a = c.get(&format!("/v2/acme/box/blobs/{}", digest(b)));
        assert_eq!((a.status, a.body.as_slice()), (200, b));
    }
    // Nothing left to collect.
    let r = gc(data, Duration::ZERO, false);
    assert!(r.blobs.is_empty() && r.uploads.is_empty(), "{r:?}");

    // A blob link removed by its repository: the blob goes once no
    // repository holds it and no manifest names it.
    let lone = c.push_blob("acme/box", b"lone blob");
    let a = c.send("DELETE", &format!("/v2/acme/box/blobs/{lone}"), &[], None);
    assert_eq!(a.status, 202);
    assert_eq!(
        removed(&gc(data, Duration::ZERO, false)),
        vec![lone.clone()]
    );
    // Pushed again after the collection, it is whole again.
    c.push_blob("acme/box", b"lone blob");
    let a = c.get(&format!("/v2/acme/box/blobs/{lone}"));
    assert_eq!(
        (a.status, a.body.as_slice()),
        (200, b"lone blob".as_slice())
    );
}

/// A local store that lets a push happen the first time the collection
/// reads a manifest (after it listed the blobs and began marking): blob
/// `mount` is mounted into repository `new/box`, and a manifest naming blob
/// `named` (uploaded to `new/box` before the collection started) is pushed
/// there.
struct PushDuringMarking {
    inner: LocalStore,
    meta: Arc<SqlMetadata>,
    mount: Digest,
    named: Digest,
    config: Vec<u8>,
    fired: std::sync::atomic::AtomicBool,
}

impl PushDuringMarking {
    async fn push(&self) -> io::Result<()> {
        let db = |e: hub::db::DbError| io::Error::other(e.to_string());
        let mount_size = self.inner.size(&self.mount).await?.unwrap_or(0);
        let named_size = self.inner.size(&self.named).await?.unwrap_or(0);
        self.meta
            .link_blob("new/box", &self.mount.to_string(), mount_size)
            .await
            .map_err(db)?;
        let config_d = Digest::of(&self.config);
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/json", "digest": config_d.to_string(), "size": self.config.len()},
            "layers": [{"mediaType": "application/octet-stream", "digest": self.named.to_string(), "size": named_size}],
        })
        .to_string()
        .into_bytes();
        let md = Digest::of(&m);
        let row = ManifestRow {
            digest: md.to_string(),
            media_type: OCI_MANIFEST.into(),
            size: m.len() as i64,
            artifact_type: None,
            subject: None,
            annotations: None,
        };
        self.inner.put_small(&md, m.into()).await?;
        self.meta
            .put_manifest("new/box", &row, Some("1"))
            .await
            .map_err(db)
    }
}

#[async_trait]
impl BlobStore for PushDuringMarking {
    async fn size(&self, d: &Digest) -> io::Result<Option<u64>> {
        self.inner.size(d).await
    }
    async fn read(&self, d: &Digest, offset: u64, len: u64) -> io::Result<ByteStream> {
        self.inner.read(d, offset, len).await
    }
    async fn read_small(&self, d: &Digest, max: u64) -> io::Result<Vec<u8>> {
        if !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.push().await?;
        }
        self.inner.read_small(d, max).await
    }
    async fn put_small(&self, d: &Digest, data: bytes::Bytes) -> io::Result<()> {
        self.inner.put_small(d, data).await
    }
    async fn upload_create(&self, id: &str) -> io::Result<()> {
        self.inner.upload_create(id).await
    }
    async fn upload_writer(&self, id: &str, offset: u64) -> io::Result<Box<dyn UploadWriter>> {
        self.inner.upload_writer(id, offset).await
    }
    async fn upload_read(&self, id: &str, len: u64) -> io::Result<ByteStream> {
        self.inner.upload_read(id, len).await
    }
    async fn upload_commit(&self, id: &str, d: &Digest) -> io::Result<()> {
        self.inner.upload_commit(id, d).await
    }
    async fn upload_delete(&self, id: &str) -> io::Result<()> {
        self.inner.upload_delete(id).await
    }
    async fn delete_blob(&self, d: &Digest) -> io::Result<bool> {
        self.inner.delete_blob(d).await
    }
    async fn list_uploads(&self) -> io::Result<Vec<StoredUpload>> {
        self.inner.list_uploads().await
    }
    async fn list_blobs(&self) -> io::Result<Vec<StoredBlob>> {
        self.inner.list_blobs().await
    }
}

#[test]
fn a_push_during_the_collection_keeps_its_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let config = b"{}".to_vec();
    let (mount, named, gone) = {
        let s = Server::start(data);
        let c = s.client();
        c.push_blob("old/box", &config);
        let m0 = image_manifest(&config, &[], json!({}));
        assert_eq!(
            c.push_manifest("old/box", "0", OCI_MANIFEST, &m0).status,
            201
        );
        c.push_blob("new/box", &config);
        (
            c.push_blob("old/box", b"to be mounted"),
            c.push_blob("new/box", b"to be named by a new manifest"),
            c.push_blob("old/box", b"garbage"),
        )
    };
    let r = rt().block_on(async {
        let meta = Arc::new(
            SqlMetadata::open_sqlite(&data.join("hub.db"))
                .await
                .unwrap(),
        );
        let store = PushDuringMarking {
            inner: LocalStore::open(data).await.unwrap(),
            meta: meta.clone(),
            mount: Digest::parse(&mount).unwrap(),
            named: Digest::parse(&named).unwrap(),
            config: config.clone(),
            fired: Default::default(),
        };
        let key = hub::auth::TokenKey::load(data).unwrap();
        let hub = Hub::with(Arc::new(store), meta, key, &Config::new(data));
        hub.gc(&GcOptions {
            grace: Duration::ZERO,
            dry_run: false,
        })
        .await
        .unwrap()
    });
    // Only the blob nobody touched went: the mounted one is kept because it
    // was linked meanwhile, the named one because the references were read
    // again before anything was removed.
    assert_eq!(removed(&r), vec![gone.clone()]);
    assert_eq!(r.kept, 2, "{r:?}");
    let s = Server::start(data);
    let c = s.client();
    assert_eq!(head(&c, "new/box", &mount), 200);
    assert_eq!(head(&c, "new/box", &named), 200);
    assert_eq!(head(&c, "old/box", &gone), 404);
    assert_eq!(c.get("/v2/new/box/manifests/1").status, 200);
}
