//! `push` and `pull`: a library machine to and from an OCI registry, moving
//! only the blobs the other side lacks.
//!
//! Push asks the registry for every blob first (HEAD), mounts what another
//! repository of the same registry holds when told which, uploads the rest
//! (in one request, or in pieces for large blobs) and stores the manifest
//! last, so the tag never names a machine whose blobs are not all there.
//!
//! Pull reads the manifest, checks its digest, then the machine description
//! and the disk indexes (each checked against the manifest before anything
//! else is fetched), then fetches the chunks the library lacks. Each blob is
//! written to a partial file and moved into the library only when its digest
//! is right; an interrupted pull resumes each partial file with a Range
//! request. The machine's name appears in the library last, after everything
//! it needs is stored and synced.

use super::client::Client;
use super::remote::RemoteRef;
use crate::blobs::Blobs;
use crate::chunkdisk::decompress_chunk;
use crate::digest::{Digest, Hasher};
use crate::index::{ChunkRef, DiskIndex, CHUNK_MEDIA_TYPE, DISK_INDEX_MEDIA_TYPE, MAX_INDEX_BYTES};
use crate::library::Library;
use crate::machine::{Machine, MAX_CONFIG_BYTES};
use crate::manifest::{Descriptor, Manifest, MANIFEST_MEDIA_TYPE, MAX_MANIFEST_BYTES};
use crate::reference::MachineRef;
use crate::trust::{signed_by, KeyPair, TrustStore, TrustedKey};
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

/// How to push.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Blobs moved at once.
    pub threads: usize,
    /// Blobs larger than this are uploaded in pieces (PATCH) rather than in
    /// one request.
    pub chunked_above: u64,
    /// The size of those pieces.
    pub piece: u64,
    /// A repository of the same registry to mount blobs from.
    pub mount_from: Option<String>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            threads: 8,
            chunked_above: 32 << 20,
            piece: 8 << 20,
            mount_from: None,
        }
    }
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// The manifest pushed.
    pub manifest: Digest,
    /// Blobs the machine has (config and layers).
    pub blobs: u64,
    /// Blobs uploaded.
    pub uploaded: u64,
    /// Their bytes.
    pub uploaded_bytes: u64,
    /// Blobs mounted from another repository.
    pub mounted: u64,
    /// Blobs the repository already held.
    pub present: u64,
}

/// How to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Blobs fetched at once.
    pub threads: usize,
    /// The keys a machine must be signed by; `None` takes any machine,
    /// signed or not (and skips the rollback check).
    pub trust: Option<TrustStore>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            threads: 8,
            trust: None,
        }
    }
}

/// What a pull did.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The manifest pulled.
    pub manifest: Digest,
    /// The machine.
    pub machine: Machine,
    /// Blobs the machine has.
    pub blobs: u64,
    /// Blobs fetched.
    pub fetched: u64,
    /// Bytes fetched.
    pub fetched_bytes: u64,
    /// Blobs the library already held.
    pub present: u64,
    /// The trusted key that signed it (`None` when not verified).
    pub signer: Option<TrustedKey>,
}

enum BlobMove {
    Present,
    Mounted,
    Moved(u64),
}

/// Pushes library machine `local` to `remote`, signed with `key` when given
/// (the library's name then names the signed manifest, as pushed).
pub fn push(
    lib: &Library,
    local: &MachineRef,
    remote: &RemoteRef,
    client: &Client,
    key: Option<&KeyPair>,
    opts: &PushOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Pushed> {
    let (mut digest, mut manifest, _) = lib.resolve(local)?;
    let mut json = lib.blobs().read(&digest, MAX_MANIFEST_BYTES)?;
    if let Some(key) = key {
        if signed_by(&manifest).ok().flatten() != Some(key.public()) {
            key.sign(&mut manifest);
            json = manifest.to_json();
            digest = lib.blobs().put(&json)?.0;
            lib.blobs().sync()?;
            lib.set_ref(local, &json, None)?;
        }
    }
    let repo = remote.repository.as_str();
    let scope = format!("repository:{repo}:pull,push");
    let mut all: Vec<Descriptor> = vec![manifest.config.clone()];
    all.extend(manifest.layers.iter().cloned());
    let total: u64 = all.iter().map(|d| d.size).sum();
    let blobs = lib.blobs();
    let moved = parallel(&all, opts.threads, total, progress, |d, report| {
        if client.has_blob(repo, &d.digest, &scope)?.is_some() {
            report(d.size);
            return Ok(BlobMove::Present);
        }
        let mount = opts
            .mount_from
            .as_deref()
            .filter(|from| *from != repo)
            .map(|from| (&d.digest, from));
        let Some(location) = client.start_upload(repo, mount)? else {
            report(d.size);
            return Ok(BlobMove::Mounted);
        };
        let data = blobs.read(&d.digest, d.size)?;
        if data.len() as u64 > opts.chunked_above {
            let mut location = location;
            let mut at = 0usize;
            for piece in data.chunks(opts.piece.max(1) as usize) {
                location = client.patch_upload(&location, repo, at as u64, piece)?;
                at += piece.len();
                report(piece.len() as u64);
            }
            client.finish_upload(&location, repo, &d.digest, &[])?;
        } else {
            client.finish_upload(&location, repo, &d.digest, &data)?;
            report(d.size);
        }
        Ok(BlobMove::Moved(d.size))
    })?;
    // The tag last: it names the machine only once every blob is there.
    let reference = match (&remote.digest, &remote.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => local.tag.clone(),
    };
    let told = client.put_manifest(repo, &reference, MANIFEST_MEDIA_TYPE, &json)?;
    if let Some(told) = told {
        if told != digest.to_string() {
            return Err(Error::Registry {
                url: client.url(&format!("/v2/{repo}/manifests/{reference}")),
                problem: format!("stored the manifest as {told}, not {digest}"),
            });
        }
    }
    let mut out = Pushed {
        manifest: digest,
        blobs: all.len() as u64,
        uploaded: 0,
        uploaded_bytes: 0,
        mounted: 0,
        present: 0,
    };
    for m in moved {
        match m {
            BlobMove::Present => out.present += 1,
            BlobMove::Mounted => out.mounted += 1,
            BlobMove::Moved(n) => {
                out.uploaded += 1;
                out.uploaded_bytes += n;
            }
        }
    }
    Ok(out)
}

/// Pulls `remote` into the library as `local`.
pub fn pull(
    lib: &Library,
    remote: &RemoteRef,
    local: &MachineRef,
    client: &Client,
    opts: &PullOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Pulled> {
    let _gc = lib.gc_lock(false)?;
    let repo = remote.repository.as_str();
    let what = remote.to_string();
    let (json, _) = client.get_manifest(repo, &remote.reference(), MAX_MANIFEST_BYTES)?;
    let digest = Digest::of(&json);
    if let Some(want) = &remote.digest {
        if *want != digest {
            return Err(Error::corrupt(
                what,
                format!("the registry sent a manifest with digest {digest}"),
            ));
        }
    }
    let manifest = Manifest::machine_from_json(&json, &what)?;
    // The signature before anything else is fetched.
    let signer = match &opts.trust {
        Some(t) => Some(t.verify(&manifest, &what)?),
        None => None,
    };
    let blobs = lib.blobs();
    // The small documents first: each is checked before it leads to more.
    let mut fetched_bytes = fetch(client, blobs, repo, &manifest.config, &mut |_| {})?;
    let config = blobs.read(&manifest.config.digest, MAX_CONFIG_BYTES)?;
    let machine = Machine::from_json(&config, &format!("{what}: machine description"))?;
    if signer.is_some() {
        if let Some(before) = lib.trusted_created(local)? {
            let time = |t: &str| humantime::parse_rfc3339(t).ok();
            match (time(&machine.created), time(&before)) {
                (Some(new), Some(old)) if new >= old => {}
                (Some(_), Some(_)) => {
                    return Err(Error::Untrusted(format!(
                        "{what}: this machine was made {}, before the one already trusted as {local} (made {before}): refusing a rollback",
                        machine.created
                    )))
                }
                _ => {
                    return Err(Error::corrupt(
                        what,
                        format!("creation time {:?} is not an RFC 3339 time", machine.created),
                    ))
                }
            }
        }
    }
    let sizes: HashMap<Digest, &Descriptor> =
        manifest.layers.iter().map(|l| (l.digest, l)).collect();
    let mut used: HashSet<Digest> = HashSet::new();
    let mut chunk_of: HashMap<Digest, ChunkRef> = HashMap::new();
    for disk in &machine.disks {
        let layer = sizes
            .get(&disk.index)
            .filter(|l| l.media_type == DISK_INDEX_MEDIA_TYPE)
            .ok_or_else(|| {
                Error::corrupt(
                    what.clone(),
                    format!(
                        "disk {:?} names index {}, which is not a layer",
                        disk.name, disk.index
                    ),
                )
            })?;
        used.insert(disk.index);
        fetched_bytes += fetch(client, blobs, repo, layer, &mut |_| {})?;
        let data = blobs.read(&disk.index, MAX_INDEX_BYTES.min(layer.size))?;
        let index = DiskIndex::from_json(&data, &format!("{what}: index of disk {}", disk.name))?;
        if index.size != disk.size {
            return Err(Error::corrupt(
                what.clone(),
                format!(
                    "disk {:?} is {} bytes but its index describes {}",
                    disk.name, disk.size, index.size
                ),
            ));
        }
        for c in &index.chunks {
            match sizes.get(&c.blob) {
                Some(l) if l.size == c.size && l.media_type == CHUNK_MEDIA_TYPE => {
                    used.insert(c.blob);
                    chunk_of.insert(c.blob, *c);
                }
                _ => {
                    return Err(Error::corrupt(
                        what.clone(),
                        format!(
                            "disk {:?} uses chunk {} ({} bytes), which the manifest does not list as such",
                            disk.name, c.blob, c.size
                        ),
                    ))
                }
            }
        }
    }
    if let Some(l) = manifest.layers.iter().find(|l| !used.contains(&l.digest)) {
        return Err(Error::corrupt(
            what,
            format!("layer {} is used by no disk", l.digest),
        ));
    }
    // Each chunk once, as the descriptor checked above: OCI allows a layer
    // to be listed twice, and two threads fetching one blob would share its
    // partial file.
    let mut listed: HashSet<Digest> = HashSet::new();
    let chunks: Vec<Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == CHUNK_MEDIA_TYPE && listed.insert(l.digest))
        .filter_map(|l| sizes.get(&l.digest).map(|d| (*d).clone()))
        .collect();
    let total: u64 = chunks.iter().map(|c| c.size).sum();
    let moved = parallel(&chunks, opts.threads, total, progress, |d, report| {
        if blobs.has(&d.digest, Some(d.size)) {
            report(d.size);
            return Ok(None);
        }
        let n = fetch(client, blobs, repo, d, &mut |n| report(n))?;
        // A chunk is also checked inside: it must decompress, within its
        // declared length, to the content its index names, or it is dropped.
        if let Some(c) = chunk_of.get(&d.digest) {
            if let Err(e) = decompress_chunk(blobs, c) {
                let _ = blobs.remove(&d.digest);
                return Err(e);
            }
        }
        Ok(Some(n))
    })?;
    let (mut fetched, mut present) = (0u64, 0u64);
    for m in &moved {
        match m {
            Some(n) => {
                fetched += 1;
                fetched_bytes += n;
            }
            None => present += 1,
        }
    }
    blobs.put(&json)?;
    blobs.sync()?;
    let trusted_created = signer.as_ref().map(|_| machine.created.as_str());
    lib.set_ref(local, &json, trusted_created)?;
    Ok(Pulled {
        manifest: digest,
        machine,
        blobs: 1 + manifest.layers.len() as u64,
        fetched,
        fetched_bytes,
        present,
        signer,
    })
}

/// Fetches blob `d` into the library unless it is there, resuming a partial
/// download; returns the bytes fetched.
fn fetch(
    client: &Client,
    blobs: &Blobs,
    repo: &str,
    d: &Descriptor,
    report: &mut dyn FnMut(u64),
) -> Result<u64> {
    if blobs.has(&d.digest, Some(d.size)) {
        return Ok(0);
    }
    let partial = blobs.partial_path(&d.digest);
    // One download per blob at a time, across threads and processes: the
    // partial file is locked, and whoever gets the lock second finds the
    // blob stored, or the partial file replaced, and acts on that.
    let mut attempt = 0;
    let file = loop {
        attempt += 1;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)
            .map_err(|e| Error::io(&partial, "open", e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io(&partial, "lock", e.into()))?;
        if blobs.has(&d.digest, Some(d.size)) {
            return Ok(0);
        }
        use std::os::unix::fs::MetadataExt;
        let held = file
            .metadata()
            .map_err(|e| Error::io(&partial, "stat", e))?;
        let named = std::fs::metadata(&partial).ok();
        if named.is_some_and(|m| m.ino() == held.ino() && m.dev() == held.dev()) {
            break file;
        }
        if attempt >= 8 {
            return Err(Error::io(
                &partial,
                "lock",
                std::io::Error::other("the partial download keeps being replaced"),
            ));
        }
    };
    let mut file = file;
    let mut have = file.metadata().map_or(0, |m| m.len());
    if have >= d.size {
        have = 0;
    }
    let (mut body, ranged, len) = client.get_blob(repo, &d.digest, have)?;
    if have > 0 && !ranged {
        have = 0;
    }
    if let Some(len) = len {
        if have.saturating_add(len) > d.size {
            return Err(Error::corrupt(
                d.digest.to_string(),
                format!(
                    "the registry sends {} bytes for a blob of {}",
                    have.saturating_add(len),
                    d.size
                ),
            ));
        }
    }
    let mut hasher = Hasher::new();
    if have > 0 {
        // Hash what is already there, then append to it.
        let mut buf = vec![0u8; 1 << 20];
        let mut left = have;
        let mut f = (&file).take(have);
        while left > 0 {
            let n = f
                .read(&mut buf)
                .map_err(|e| Error::io(&partial, "read", e))?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
            left -= n as u64;
        }
    }
    file.set_len(have)
        .map_err(|e| Error::io(&partial, "truncate", e))?;
    file.seek(std::io::SeekFrom::Start(have))
        .map_err(|e| Error::io(&partial, "seek", e))?;
    let mut got = have;
    let mut buf = vec![0u8; 256 << 10];
    let mut fetched = 0u64;
    loop {
        let n = body.read(&mut buf).map_err(|e| Error::Registry {
            url: format!("{}/{repo}@{}", client.registry(), d.digest),
            problem: format!("download broke off after {got} of {} bytes: {e}", d.size),
        })?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > d.size {
            drop(file);
            let _ = std::fs::remove_file(&partial);
            return Err(Error::corrupt(
                d.digest.to_string(),
                format!("the registry sent more than the blob's {} bytes", d.size),
            ));
        }
        let piece = buf.get(..n).unwrap_or_default();
        hasher.update(piece);
        file.write_all(piece)
            .map_err(|e| Error::io(&partial, "write", e))?;
        fetched += n as u64;
        report(n as u64);
    }
    if got != d.size {
        return Err(Error::Registry {
            url: format!("{}/{repo}@{}", client.registry(), d.digest),
            problem: format!("download ended after {got} of {} bytes", d.size),
        });
    }
    let digest = hasher.finish();
    if digest != d.digest {
        drop(file);
        let _ = std::fs::remove_file(&partial);
        return Err(Error::corrupt(
            d.digest.to_string(),
            format!("the registry sent content with digest {digest}"),
        ));
    }
    drop(file);
    blobs.adopt(&partial, &d.digest)?;
    Ok(fetched)
}

/// Runs `work` on every item with `threads` threads; `work` reports bytes
/// done, and `progress` gets the running total of `total`. Stops at the
/// first error.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
    work: impl Fn(&T, &dyn Fn(u64)) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = Mutex::new(0usize);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    let (tx, rx) = mpsc::channel::<Result<u64>>();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, 64).min(items.len().max(1)) {
            let tx = tx.clone();
            let (next, failed, results, work) = (&next, &failed, &results, &work);
            scope.spawn(move || loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let i = match next.lock() {
                    Ok(mut n) => {
                        let i = *n;
                        *n += 1;
                        i
                    }
                    Err(_) => return,
                };
                let Some(item) = items.get(i) else { return };
                let report = |n: u64| {
                    let _ = tx.send(Ok(n));
                };
                match work(item, &report) {
                    Ok(r) => {
                        if let Ok(mut all) = results.lock() {
                            if let Some(slot) = all.get_mut(i) {
                                *slot = Some(r);
                            }
                        }
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut done = 0u64;
        let mut first_error = None;
        for msg in rx {
            match msg {
                Ok(n) => {
                    done += n;
                    progress(done.min(total), total);
                }
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })?;
    let all = results
        .into_inner()
        .map_err(|_| Error::InvalidArgument("a transfer thread failed".into()))?;
    Ok(all.into_iter().flatten().collect())
}
