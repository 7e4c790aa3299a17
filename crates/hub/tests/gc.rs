//! Garbage collection: blobs no manifest references go (with their links)
//! once manifests are deleted or blob links removed, what manifests name
//! stays and still pulls, idle uploads go, a dry run removes nothing, young
//! blobs are kept, a push that mounts or references a blob while the
//! collection runs keeps it, and one that comes while a blob is being
//! removed is refused or waits, never told the blob is there.

mod common;

use async_trait::async_trait;
use common::*;
use hub::db::{ManifestRow, Metadata, References, SqlMetadata, Stored};
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

/// What a test does at points of a collection, through [`Hooked`].
#[async_trait]
trait Hooks: Send + Sync {
    /// Before the collection reads a manifest.
    async fn before_read_small(&self, _store: &LocalStore) -> io::Result<()> {
        Ok(())
    }
    /// Before the collection removes blob `d` (its links are gone by then).
    async fn before_delete(&self, _store: &LocalStore, _d: &Digest) -> io::Result<()> {
        Ok(())
    }
}

/// A local store that runs a test's [`Hooks`].
struct Hooked<H> {
    inner: LocalStore,
    hooks: H,
}

#[async_trait]
impl<H: Hooks> BlobStore for Hooked<H> {
    async fn size(&self, d: &Digest) -> io::Result<Option<u64>> {
        self.inner.size(d).await
    }
    async fn read(&self, d: &Digest, offset: u64, len: u64) -> io::Result<ByteStream> {
        self.inner.read(d, offset, len).await
    }
    async fn read_small(&self, d: &Digest, max: u64) -> io::Result<Vec<u8>> {
        self.hooks.before_read_small(&self.inner).await?;
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
        self.hooks.before_delete(&self.inner, d).await?;
        self.inner.delete_blob(d).await
    }
    async fn list_uploads(&self) -> io::Result<Vec<StoredUpload>> {
        self.inner.list_uploads().await
    }
    async fn list_blobs(&self) -> io::Result<Vec<StoredBlob>> {
        self.inner.list_blobs().await
    }
}

/// One collection of `data` through a store with the hooks `hooks` makes,
/// given the collection's database handle.
fn gc_hooked<H: Hooks + 'static>(
    data: &Path,
    hooks: impl FnOnce(Arc<SqlMetadata>) -> H,
) -> GcReport {
    rt().block_on(async {
        let path = data.join("hub.db");
        let meta = Arc::new(SqlMetadata::open_sqlite(&path).await.unwrap());
        let store = Hooked {
            inner: LocalStore::open(data).await.unwrap(),
            hooks: hooks(meta.clone()),
        };
        let key = hub::auth::TokenKey::load(data).unwrap();
        let hub = Hub::with(Arc::new(store), meta, key, &Config::new(data));
        hub.gc(&GcOptions {
            grace: Duration::ZERO,
            dry_run: false,
        })
        .await
        .unwrap()
    })
}

/// A manifest row and the references of an image manifest with `config`
/// and `layers` (digests and sizes).
fn manifest_of(config: &[u8], layers: &[(&Digest, usize)]) -> (Vec<u8>, ManifestRow, References) {
    let config_d = Digest::of(config);
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/json", "digest": config_d.to_string(), "size": config.len()},
        "layers": layers.iter().map(|(d, n)| json!({"mediaType": "application/octet-stream", "digest": d.to_string(), "size": n})).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes();
    let row = ManifestRow {
        digest: Digest::of(&m).to_string(),
        media_type: OCI_MANIFEST.into(),
        size: m.len() as i64,
        artifact_type: None,
        subject: None,
        annotations: None,
    };
    let mut blobs = vec![config_d.to_string()];
    blobs.extend(layers.iter().map(|(d, _)| d.to_string()));
    let refs = References {
        blobs,
        manifests: vec![],
    };
    (m, row, refs)
}

/// The first time the collection reads a manifest (after it listed the
/// blobs and began marking), a push happens: blob `mount` is mounted into
/// repository `new/box`, and a manifest naming blob `named` (uploaded to
/// `new/box` before the collection started) is pushed there.
struct PushDuringMarking {
    meta: Arc<SqlMetadata>,
    mount: Digest,
    named: Digest,
    config: Vec<u8>,
    fired: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Hooks for PushDuringMarking {
    async fn before_read_small(&self, store: &LocalStore) -> io::Result<()> {
        if self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let db = |e: hub::db::DbError| io::Error::other(e.to_string());
        let mount_size = store.size(&self.mount).await?.unwrap_or(0);
        let named_size = store.size(&self.named).await?.unwrap_or(0);
        let linked = self
            .meta
            .link_blob("new/box", &self.mount.to_string(), mount_size)
            .await
            .map_err(db)?;
        assert!(linked, "a link before any doom goes in");
        let (m, row, refs) = manifest_of(&self.config, &[(&self.named, named_size as usize)]);
        store.put_small(&Digest::of(&m), m.into()).await?;
        let stored = self
            .meta
            .put_manifest("new/box", &row, Some("1"), &refs)
            .await
            .map_err(db)?;
        assert_eq!(stored, Stored::Stored);
        Ok(())
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
    let r = gc_hooked(data, |meta| PushDuringMarking {
        meta,
        mount: Digest::parse(&mount).unwrap(),
        named: Digest::parse(&named).unwrap(),
        config: config.clone(),
        fired: Default::default(),
    });
    // Only the blob nobody touched went: the mounted one and the named one
    // are kept because the push used them after the collection began.
    assert_eq!(removed(&r), vec![gone.clone()]);
    assert_eq!(r.kept, 2, "{r:?}");
    let s = Server::start(data);
    let c = s.client();
    assert_eq!(head(&c, "new/box", &mount), 200);
    assert_eq!(head(&c, "new/box", &named), 200);
    assert_eq!(head(&c, "old/box", &gone), 404);
    assert_eq!(c.get("/v2/new/box/manifests/1").status, 200);
}

/// When the collection is about to remove blob `doomed` (its links gone), a
/// push wants it: claiming it, linking it and storing a manifest that names
/// it are each refused, and an upload of it over HTTP waits until the
/// removal is over and then stores it whole.
struct PushDuringRemoval {
    meta: Arc<SqlMetadata>,
    doomed: Digest,
    bytes: Vec<u8>,
    config: Vec<u8>,
    base: String,
    token: String,
    upload: Arc<std::sync::Mutex<Option<Upload>>>,
}

/// An HTTP upload under way: its status and Retry-After header.
type Upload = std::thread::JoinHandle<(u16, Option<String>)>;

#[async_trait]
impl Hooks for PushDuringRemoval {
    async fn before_delete(&self, _store: &LocalStore, d: &Digest) -> io::Result<()> {
        assert_eq!(*d, self.doomed, "only the unreferenced blob goes");
        let db = |e: hub::db::DbError| io::Error::other(e.to_string());
        let digest = d.to_string();
        assert!(!self.meta.claim_blob(&digest).await.map_err(db)?);
        let size = self.bytes.len() as u64;
        assert!(!self
            .meta
            .link_blob("other/box", &digest, size)
            .await
            .map_err(db)?);
        let (_, row, refs) = manifest_of(&self.config, &[(d, self.bytes.len())]);
        let stored = self
            .meta
            .put_manifest("old/box", &row, Some("racing"), &refs)
            .await
            .map_err(db)?;
        assert_eq!(stored, Stored::Collecting(digest.clone()));
        // Through the hub: a mount finds no link to take (202, upload it),
        // and an upload waits for the removal.
        let c = Client::basic(&self.base, "tester", &self.token);
        let a = c.send(
            "POST",
            &format!("/v2/mnt/box/blobs/uploads/?mount={digest}&from=old/box"),
            &[],
            None,
        );
        assert_eq!(a.status, 202);
        let (base, token, bytes) = (self.base.clone(), self.token.clone(), self.bytes.clone());
        let upload = std::thread::spawn(move || {
            let a = Client::basic(&base, "tester", &token).send(
                "POST",
                &format!("/v2/new/box/blobs/uploads/?digest={}", Digest::of(&bytes)),
                &[("Content-Type", "application/octet-stream")],
                Some(&bytes),
            );
            (a.status, a.header("retry-after").map(str::to_string))
        });
        *self.upload.lock().unwrap() = Some(upload);
        // Long enough for the upload to reach its claim and wait there.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }
}

#[test]
fn a_push_while_a_blob_is_removed_is_refused_or_waits_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let s = Server::start(data);
    let c = s.client();
    let config = b"{}".to_vec();
    c.push_blob("old/box", &config);
    let m0 = image_manifest(&config, &[], json!({}));
    assert_eq!(
        c.push_manifest("old/box", "0", OCI_MANIFEST, &m0).status,
        201
    );
    let bytes = b"removed while pushed".to_vec();
    let doomed = c.push_blob("old/box", &bytes);
    let upload = Arc::new(std::sync::Mutex::new(None));
    let r = gc_hooked(data, |meta| PushDuringRemoval {
        meta,
        doomed: Digest::parse(&doomed).unwrap(),
        bytes: bytes.clone(),
        config: config.clone(),
        base: s.base.clone(),
        token: s.token.clone(),
        upload: upload.clone(),
    });
    assert_eq!(removed(&r), vec![doomed.clone()]);
    assert_eq!(r.kept, 0, "{r:?}");
    // The waiting upload went ahead once the removal was over.
    let waited = upload.lock().unwrap().take().expect("the hook ran");
    assert_eq!(waited.join().unwrap(), (201, None));
    let a = c.get(&format!("/v2/new/box/blobs/{doomed}"));
    assert_eq!((a.status, a.body), (200, bytes.clone()));
    // Nothing the refused pushes asked for is there.
    assert_eq!(head(&c, "other/box", &doomed), 404);
    assert_eq!(head(&c, "old/box", &doomed), 404);
    assert_eq!(head(&c, "mnt/box", &doomed), 404);
    assert_eq!(c.get("/v2/old/box/manifests/racing").status, 404);
    // And the blob, pushed again where it was, is whole there too.
    c.push_blob("old/box", &bytes);
    assert_eq!(head(&c, "old/box", &doomed), 200);
}

#[test]
fn a_collection_finishes_what_a_stopped_one_left_doomed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let s = Server::start(data);
    let c = s.client();
    let config = b"{}".to_vec();
    c.push_blob("acme/box", &config);
    let layer = b"named by a manifest".to_vec();
    let named = c.push_blob("acme/box", &layer);
    let m = image_manifest(&config, &[&layer], json!({}));
    assert_eq!(
        c.push_manifest("acme/box", "1", OCI_MANIFEST, &m).status,
        201
    );
    let half = c.push_blob("acme/box", b"its bytes went, its record stayed");
    // As a collection stopped half-way would leave them: `named` doomed
    // (it was about to be spared), `half` doomed with its bytes removed.
    rt().block_on(async {
        let meta = SqlMetadata::open_sqlite(&data.join("hub.db"))
            .await
            .unwrap();
        let store = LocalStore::open(data).await.unwrap();
        meta.doom_blob(&named).await.unwrap();
        meta.doom_blob(&half).await.unwrap();
        meta.unlink_blob("acme/box", &half).await.unwrap();
        store
            .delete_blob(&Digest::parse(&half).unwrap())
            .await
            .unwrap();
    });
    // While doomed, `named` cannot be mounted (the client is sent to upload).
    let mount = |d: &str| {
        c.send(
            "POST",
            &format!("/v2/other/box/blobs/uploads/?mount={d}&from=acme/box"),
            &[],
            None,
        )
        .status
    };
    assert_eq!(mount(&named), 202);
    let r = gc(data, Duration::ZERO, false);
    assert!(removed(&r).is_empty(), "{r:?}");
    // Spared, it mounts again; removed, it uploads again at once.
    assert_eq!(mount(&named), 201);
    let a = c.send(
        "POST",
        &format!("/v2/acme/box/blobs/uploads/?digest={half}"),
        &[],
        Some(b"its bytes went, its record stayed"),
    );
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(c.get("/v2/acme/box/manifests/1").status, 200);
}
