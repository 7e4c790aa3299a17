//! The library folder and what can be done with the machines in it.
//!
//! The folder is an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`): every reference inside it is a digest, never a path, so
//! the folder can be copied anywhere (a USB disk, another computer) and still
//! works, and OCI tools such as `skopeo` read it as `oci:FOLDER:NAME:TAG`.
//! Machines are named in `index.json` by the `org.opencontainers.image.ref.name`
//! annotation of their manifest's descriptor.

use crate::blobs::Blobs;
use crate::chunkdisk::ChunkDisk;
use crate::chunker::{store_disk, Sink, DEFAULT_CHUNKING, DEFAULT_LEVEL};
use crate::digest::Digest;
use crate::index::{ChunkRef, Chunking, DiskIndex, CHUNK_MEDIA_TYPE, DISK_INDEX_MEDIA_TYPE};
use crate::lock::{lock, Lock};
use crate::machine::{Firmware, Machine, MachineDisk, Os, MACHINE_CONFIG_MEDIA_TYPE};
use crate::manifest::{
    Descriptor, ImageIndex, Manifest, MACHINE_ARTIFACT_TYPE, MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES, REF_NAME,
};
use crate::reference::MachineRef;
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use vdisk::Disk;

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";
const INDEX_FILE: &str = "index.json";
/// Shared by writers of blobs, exclusive for `prune`.
const GC_LOCK: &str = ".gc.lock";
/// Exclusive for every change of `index.json`.
const INDEX_LOCK: &str = ".index.lock";
/// The annotation of a name in `index.json` that records the creation time
/// of the newest verified machine pulled into it.
const TRUSTED_CREATED: &str = "dev.vmhub.trusted-created";
/// The largest `index.json` read.
const MAX_INDEX_JSON: u64 = 64 << 20;

/// A machine library.
pub struct Library {
    home: PathBuf,
    blobs: Blobs,
}

/// What goes into a machine besides its disks.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Free-form version.
    pub version: Option<String>,
    /// What the machine is for.
    pub description: Option<String>,
    /// The operating system inside.
    pub os: Option<Os>,
    /// CPU architecture.
    pub architecture: String,
    /// Firmware.
    pub firmware: Firmware,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// Licence.
    pub licence: Option<String>,
    /// How disks are cut.
    pub chunking: Chunking,
    /// zstd level for chunks.
    pub level: i32,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            version: None,
            description: None,
            os: None,
            architecture: "x86_64".into(),
            firmware: Firmware::Bios,
            cpus: 2,
            memory: 1 << 30,
            licence: None,
            chunking: DEFAULT_CHUNKING,
            level: DEFAULT_LEVEL,
        }
    }
}

/// A disk to import.
pub struct DiskSource<'a> {
    /// Its name in the machine.
    pub name: String,
    /// The disk.
    pub disk: &'a dyn Disk,
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The machine's manifest.
    pub manifest: Digest,
    /// Its description.
    pub machine: Machine,
    /// Bytes of data read from the disks.
    pub data_bytes: u64,
    /// Distinct chunks the machine uses.
    pub chunks: u64,
    /// Chunks that were new to the library.
    pub new_chunks: u64,
    /// Compressed bytes written for them.
    pub new_bytes: u64,
}

/// A machine in the library.
#[derive(Clone, Debug)]
pub struct Listed {
    /// Its name and tag.
    pub reference: MachineRef,
    /// Its manifest's digest.
    pub manifest: Digest,
    /// Its description.
    pub machine: Machine,
    /// Bytes of all its blobs (shared ones included).
    pub stored: u64,
}

/// What `prune` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Blobs removed.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Leftover temporary files removed.
    pub temp_files: u64,
}

impl Library {
    /// Opens the library at `home`, creating it when the folder is missing or
    /// empty. A non-empty folder that is not a library is refused.
    pub fn open(home: &Path) -> Result<Library> {
        std::fs::create_dir_all(home).map_err(|e| Error::io(home, "create folder", e))?;
        let layout = home.join(LAYOUT_FILE);
        match std::fs::read(&layout) {
            Ok(content) => {
                let v: serde_json::Value = serde_json::from_slice(&content).map_err(|e| {
                    Error::corrupt(layout.display().to_string(), format!("not JSON: {e}"))
                })?;
                if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
                    return Err(Error::corrupt(
                        layout.display().to_string(),
                        "not an OCI image layout of version 1.0.0",
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut entries =
                    std::fs::read_dir(home).map_err(|e| Error::io(home, "list", e))?;
                if entries.next().is_some() {
                    return Err(Error::InvalidArgument(format!(
                        "{}: not a vmhub library (it has no {LAYOUT_FILE} file) and not empty; choose another folder",
                        home.display()
                    )));
                }
                let blobs = Blobs::open(home)?;
                write_atomic(&home.join(INDEX_FILE), &index_json(&ImageIndex::default()))?;
                write_atomic(&layout, LAYOUT_CONTENT.as_bytes())?;
                return Ok(Library {
                    home: home.to_path_buf(),
                    blobs,
                });
            }
            Err(e) => return Err(Error::io(&layout, "read", e)),
        }
        Ok(Library {
            home: home.to_path_buf(),
            blobs: Blobs::open(home)?,
        })
    }

    /// The library folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Its blobs.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Stores `disks` as machine `reference` (replacing what the reference
    /// named before, which stays stored until `prune`).
    pub fn import(
        &self,
        disks: &[DiskSource],
        reference: &MachineRef,
        opts: &ImportOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Imported> {
        let _gc = self.gc_lock(false)?;
        let known = self.known_chunks()?;
        let mut put = |json: &[u8]| self.blobs.put(json).map(|(d, _)| d);
        let (imported, manifest) = assemble(
            disks,
            reference,
            opts,
            &known,
            Sink::Store(&self.blobs),
            &mut put,
            progress,
        )?;
        // Everything the new reference names must be durable before it appears.
        self.blobs.sync()?;
        self.set_ref(reference, &manifest, None)?;
        Ok(imported)
    }

    /// Opens the library at `home` if there is one: `None` when the folder
    /// is missing or empty (where [`Library::open`] would create one).
    pub fn open_existing(home: &Path) -> Result<Option<Library>> {
        let empty = match std::fs::read_dir(home) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(Error::io(home, "list", e)),
        };
        if empty {
            return Ok(None);
        }
        Library::open(home).map(Some)
    }

    /// Every machine, sorted by name and tag.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        for d in &index.manifests {
            let Some(reference) = ref_of(d) else { continue };
            let (manifest, machine) = self.load(&d.digest, &reference.to_string())?;
            let stored = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
            out.push(Listed {
                reference,
                manifest: d.digest,
                machine,
                stored,
            });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// The manifest and description of `reference`.
    pub fn resolve(&self, reference: &MachineRef) -> Result<(Digest, Manifest, Machine)> {
        let index = self.read_index()?;
        let d = index
            .manifests
            .iter()
            .find(|d| ref_of(d).as_ref() == Some(reference))
            .ok_or_else(|| Error::NotFound(reference.to_string()))?;
        let (m, machine) = self.load(&d.digest, &reference.to_string())?;
        Ok((d.digest, m, machine))
    }

    /// Disk number `n` of `machine`, read from its chunks.
    pub fn disk(&self, reference: &MachineRef, machine: &Machine, n: usize) -> Result<ChunkDisk> {
        let d = machine.disks.get(n).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{reference}: no disk {n} (it has {})",
                machine.disks.len()
            ))
        })?;
        let json = self.blobs.read(&d.index, crate::index::MAX_INDEX_BYTES)?;
        let what = format!("{reference}: index of disk {}", d.name);
        let index = DiskIndex::from_json(&json, &what)?;
        if index.size != d.size {
            return Err(Error::corrupt(
                what,
                format!(
                    "describes {} bytes, the machine says {}",
                    index.size, d.size
                ),
            ));
        }
        Ok(ChunkDisk::new(
            &format!("{reference}:{}", d.name),
            self.blobs.clone(),
            index,
        ))
    }

    /// Removes the name `reference` (its blobs stay until `prune`). Returns
    /// the manifest it named.
    pub fn remove(&self, reference: &MachineRef) -> Result<Digest> {
        self.update_index(|index| {
            let i = index
                .manifests
                .iter()
                .position(|d| ref_of(d).as_ref() == Some(reference))
                .ok_or_else(|| Error::NotFound(reference.to_string()))?;
            Ok(index.manifests.remove(i).digest)
        })
    }

    /// Gives the machine `src` names the name `dst` too (replacing what `dst`
    /// named).
    pub fn tag(&self, src: &MachineRef, dst: &MachineRef) -> Result<Digest> {
        let (digest, _, _) = self.resolve(src)?;
        let json = self.blobs.read(&digest, MAX_MANIFEST_BYTES)?;
        self.set_ref(dst, &json, None)?;
        Ok(digest)
    }

    /// Removes every blob that no named machine uses, and leftover temporary
    /// files. Waits for running imports to finish first.
    pub fn prune(&self) -> Result<Pruned> {
        let _gc = self.gc_lock(true)?;
        let index = self.read_index()?;
        let mut keep: HashSet<Digest> = HashSet::new();
        for d in &index.manifests {
            keep.insert(d.digest);
            let json = self.blobs.read(&d.digest, MAX_MANIFEST_BYTES)?;
            let m: Manifest = serde_json::from_slice(&json).map_err(|e| {
                Error::corrupt(
                    d.digest.to_string(),
                    format!("not an OCI image manifest: {e}"),
                )
            })?;
            keep.insert(m.config.digest);
            keep.extend(m.layers.iter().map(|l| l.digest));
        }
        let mut pruned = Pruned::default();
        for d in self.blobs.list()? {
            if keep.contains(&d) {
                continue;
            }
            pruned.bytes += self.blobs.len(&d).unwrap_or(0);
            self.blobs.remove(&d)?;
            pruned.blobs += 1;
        }
        pruned.temp_files = self.blobs.clear_temp()?;
        Ok(pruned)
    }

    /// Reads and checks a machine manifest and its description.
    fn load(&self, digest: &Digest, what: &str) -> Result<(Manifest, Machine)> {
        let json = self.blobs.read(digest, MAX_MANIFEST_BYTES)?;
        let m = Manifest::machine_from_json(&json, what)?;
        let config = self.blobs.read(&m.config.digest, m.config.size)?;
        let machine = Machine::from_json(&config, &format!("{what}: machine description"))?;
        Ok((m, machine))
    }

    /// Chunks that the library's machines use and whose blobs are stored, by
    /// content digest.
    fn known_chunks(&self) -> Result<HashMap<crate::digest::ContentDigest, ChunkRef>> {
        let mut known = HashMap::new();
        let mut seen = HashSet::new();
        for d in self.read_index()?.manifests {
            let Some(reference) = ref_of(&d) else {
                continue;
            };
            let (_, machine) = self.load(&d.digest, &reference.to_string())?;
            for disk in &machine.disks {
                if !seen.insert(disk.index) {
                    continue;
                }
                let json = self
                    .blobs
                    .read(&disk.index, crate::index::MAX_INDEX_BYTES)?;
                let index = DiskIndex::from_json(&json, &disk.index.to_string())?;
                for c in index.chunks {
                    if self.blobs.has(&c.blob, Some(c.size)) {
                        known.insert(c.content, c);
                    }
                }
            }
        }
        Ok(known)
    }

    /// Points `reference` at the manifest `json` (already stored). With
    /// `trusted_created`, records the creation time of the verified machine
    /// it names (rollback protection); without, keeps what was recorded.
    pub(crate) fn set_ref(
        &self,
        reference: &MachineRef,
        json: &[u8],
        trusted_created: Option<&str>,
    ) -> Result<()> {
        let mut d = Descriptor::of(MANIFEST_MEDIA_TYPE, json);
        d.artifact_type = Some(MACHINE_ARTIFACT_TYPE.into());
        d.annotations.insert(REF_NAME.into(), reference.to_string());
        self.update_index(|index| {
            let old = index
                .manifests
                .iter()
                .find(|m| ref_of(m).as_ref() == Some(reference))
                .and_then(|m| m.annotations.get(TRUSTED_CREATED).cloned());
            if let Some(t) = trusted_created.map(str::to_string).or(old) {
                d.annotations.insert(TRUSTED_CREATED.into(), t);
            }
            index
                .manifests
                .retain(|m| ref_of(m).as_ref() != Some(reference));
            index.manifests.push(d);
            Ok(())
        })
    }

    /// The creation time of the newest verified machine pulled into
    /// `reference`, if any.
    pub fn trusted_created(&self, reference: &MachineRef) -> Result<Option<String>> {
        Ok(self
            .read_index()?
            .manifests
            .iter()
            .find(|m| ref_of(m).as_ref() == Some(reference))
            .and_then(|m| m.annotations.get(TRUSTED_CREATED).cloned()))
    }

    fn read_index(&self) -> Result<ImageIndex> {
        let path = self.home.join(INDEX_FILE);
        let data = read_capped(&path, MAX_INDEX_JSON)?;
        serde_json::from_slice(&data).map_err(|e| {
            Error::corrupt(
                path.display().to_string(),
                format!("not an OCI image index: {e}"),
            )
        })
    }

    fn update_index<T>(&self, change: impl FnOnce(&mut ImageIndex) -> Result<T>) -> Result<T> {
        let _lock = lock(&self.home.join(INDEX_LOCK), true)?;
        let mut index = self.read_index()?;
        let out = change(&mut index)?;
        write_atomic(&self.home.join(INDEX_FILE), &index_json(&index))?;
        Ok(out)
    }

    pub(crate) fn gc_lock(&self, exclusive: bool) -> Result<Lock> {
        lock(&self.home.join(GC_LOCK), exclusive)
    }
}

/// What importing `disks` as `reference` into `library` (or into a new,
/// empty library when `None`) would store, found the way an import finds it:
/// every chunk is cut, hashed and compressed, and counted as new unless the
/// library holds it. Nothing is written; the manifest digest returned is the
/// one the import would make (but for its creation time).
pub fn dry_import(
    library: Option<&Library>,
    disks: &[DiskSource],
    reference: &MachineRef,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Imported> {
    let _gc = library.map(|lib| lib.gc_lock(false)).transpose()?;
    let known = match library {
        Some(lib) => lib.known_chunks()?,
        None => HashMap::new(),
    };
    let counted = std::sync::Mutex::new(HashSet::new());
    let mut put = |json: &[u8]| Ok(Digest::of(json));
    assemble(
        disks,
        reference,
        opts,
        &known,
        Sink::Measure(library.map(|lib| &lib.blobs), &counted),
        &mut put,
        progress,
    )
    .map(|(imported, _)| imported)
}

/// Cuts `disks` into `sink` and builds the machine: what the import did and
/// the manifest's JSON. `put` stores (or only names) each disk index, the
/// configuration and the manifest.
fn assemble(
    disks: &[DiskSource],
    reference: &MachineRef,
    opts: &ImportOptions,
    known: &HashMap<crate::digest::ContentDigest, ChunkRef>,
    sink: Sink,
    put: &mut dyn FnMut(&[u8]) -> Result<Digest>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Imported, Vec<u8>)> {
    if disks.is_empty() || disks.len() > crate::machine::MAX_DISKS {
        return Err(Error::InvalidArgument(format!(
            "a machine has 1 to {} disks, not {}",
            crate::machine::MAX_DISKS,
            disks.len()
        )));
    }
    let mut machine_disks = Vec::new();
    let mut layers = Vec::new();
    let mut chunk_layers: Vec<Descriptor> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    let (mut data_bytes, mut new_chunks, mut new_bytes) = (0, 0, 0);
    for source in disks {
        let stored = store_disk(
            source.disk,
            sink,
            known,
            opts.chunking,
            opts.level,
            progress,
        )?;
        data_bytes += stored.data_bytes;
        new_chunks += stored.new_chunks;
        new_bytes += stored.new_bytes;
        for c in &stored.index.chunks {
            if seen.insert(c.blob) {
                chunk_layers.push(Descriptor {
                    media_type: CHUNK_MEDIA_TYPE.into(),
                    digest: c.blob,
                    size: c.size,
                    artifact_type: None,
                    annotations: BTreeMap::new(),
                });
            }
        }
        let json = stored.index.to_json();
        let digest = put(&json)?;
        layers.push(Descriptor::of(DISK_INDEX_MEDIA_TYPE, &json));
        let info = source.disk.info()?;
        machine_disks.push(MachineDisk {
            name: source.name.clone(),
            size: source.disk.virtual_size(),
            format: info.format.to_string(),
            index: digest,
        });
    }
    let chunks = chunk_layers.len() as u64;
    layers.extend(chunk_layers);
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let machine = Machine {
        name: reference.name.clone(),
        version: opts.version.clone(),
        description: opts.description.clone(),
        os: opts.os.clone(),
        architecture: opts.architecture.clone(),
        firmware: opts.firmware,
        cpus: opts.cpus,
        memory: opts.memory,
        licence: opts.licence.clone(),
        created: created.clone(),
        disks: machine_disks,
    };
    machine.validate(&reference.to_string())?;
    let config = machine.to_json();
    put(&config)?;
    let mut annotations = BTreeMap::new();
    annotations.insert("org.opencontainers.image.created".into(), created);
    annotations.insert(
        "org.opencontainers.image.title".into(),
        reference.name.clone(),
    );
    if let Some(v) = &opts.version {
        annotations.insert("org.opencontainers.image.version".into(), v.clone());
    }
    if let Some(d) = &opts.description {
        annotations.insert("org.opencontainers.image.description".into(), d.clone());
    }
    if let Some(l) = &opts.licence {
        annotations.insert("org.opencontainers.image.licenses".into(), l.clone());
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        artifact_type: Some(MACHINE_ARTIFACT_TYPE.into()),
        config: Descriptor::of(MACHINE_CONFIG_MEDIA_TYPE, &config),
        layers,
        subject: None,
        annotations,
    };
    let json = manifest.to_json();
    let digest = put(&json)?;
    Ok((
        Imported {
            manifest: digest,
            machine,
            data_bytes,
            chunks,
            new_chunks,
            new_bytes,
        },
        json,
    ))
}

/// The machine reference a layout entry names, if it names a valid one.
fn ref_of(d: &Descriptor) -> Option<MachineRef> {
    d.annotations.get(REF_NAME)?.parse().ok()
}

fn index_json(index: &ImageIndex) -> Vec<u8> {
    serde_json::to_vec_pretty(index).unwrap_or_default()
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut data = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(path, "read", e))?;
    if data.len() as u64 > max {
        return Err(Error::corrupt(
            path.display().to_string(),
            format!("larger than {max} bytes"),
        ));
    }
    Ok(data)
}

/// Writes `data` to `path` through a temporary file, synced, then renamed.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
        f.write_all(data).map_err(|e| Error::io(&tmp, "write", e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, "fsync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "rename", e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The library's cache: disks materialized from their chunks as dynamic VHDs,
/// for `vmhub run` to put differencing disks over. It lives inside the library
/// so that the folder stays portable; it can be deleted at any time and is
/// rebuilt when needed.
impl Library {
    /// The cache's folder in the library.
    const CACHE_DIR: &'static str = "cache";
    /// Exclusive while a disk is being materialized into the cache, so that
    /// two runs of one machine write it once.
    const CACHE_LOCK: &'static str = ".lock";

    /// Disk `n` of `machine` as a dynamic VHD, `cache/HEX.vhd` in the library
    /// (HEX: the hex of the disk's index digest), written the first time it is
    /// asked for and reused from then on. It is only ever read: differencing
    /// disks go over it. `progress` sees the writing, if any.
    ///
    /// The VHD's unique id is derived from the index digest, so a cache file
    /// deleted and rebuilt is still the parent that differencing disks made
    /// over the earlier file expect.
    pub fn base_image(
        &self,
        reference: &MachineRef,
        machine: &Machine,
        n: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PathBuf> {
        let d = machine.disks.get(n).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{reference}: no disk {n} (it has {})",
                machine.disks.len()
            ))
        })?;
        let dir = self.home.join(Self::CACHE_DIR);
        let hex = d.index.hex();
        let path = dir.join(format!("{hex}.vhd"));
        if path.is_file() {
            return Ok(path);
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create folder", e))?;
        // `prune` must not remove the chunks being read (nor this disk's
        // half-written file); and a concurrent run of the same machine waits
        // here, then finds the file written.
        let _gc = self.gc_lock(false)?;
        let _cache = lock(&dir.join(Self::CACHE_LOCK), true)?;
        if path.is_file() {
            return Ok(path);
        }
        let disk = self.disk(reference, machine, n)?;
        let tmp = dir.join(format!(".{hex}.vhd.{}.tmp", std::process::id()));
        let result = (|| {
            vdisk::ops::convert::convert(
                &disk,
                &tmp,
                &vdisk::CreateOptions::default(),
                true,
                progress,
            )?;
            Self::set_unique_id(&tmp, Self::cache_unique_id(&d.index))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, "rename", e))?;
            if let Ok(f) = std::fs::File::open(&dir) {
                let _ = f.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| path)
    }

    /// Removes the cached disks (see [`Library::base_image`]) that no named
    /// machine uses any more, and the files that interrupted writes left in
    /// the cache. Returns how many files were removed. Other files are left
    /// alone.
    pub fn prune_cache(&self) -> Result<u64> {
        let dir = self.home.join(Self::CACHE_DIR);
        if !dir.is_dir() {
            return Ok(0);
        }
        // No disk is being materialized meanwhile.
        let _gc = self.gc_lock(true)?;
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, "list", e))?;
        let used: HashSet<Digest> = self
            .list()?
            .iter()
            .flat_map(|l| l.machine.disks.iter().map(|d| d.index))
            .collect();
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, "list", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let unused = match name.strip_suffix(".vhd") {
                Some(hex) => Digest::from_hex(hex).is_some_and(|d| !used.contains(&d)),
                None => name.starts_with('.') && name.ends_with(".tmp"),
            };
            if unused {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, "remove", e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The unique id of the cached VHD of the disk whose index is `index`: the
    /// index digest's first 16 bytes, marked as an RFC 9562 version 8 (custom)
    /// UUID.
    fn cache_unique_id(index: &Digest) -> [u8; 16] {
        let mut id = [0u8; 16];
        id.copy_from_slice(&index.bytes()[..16]);
        id[6] = (id[6] & 0x0f) | 0x80;
        id[8] = (id[8] & 0x3f) | 0x80;
        id
    }

    /// Sets the unique id of the dynamic VHD at `path` in both copies of its
    /// footer (VHD spec: "Hard Disk Footer Format"; a dynamic disk keeps a copy
    /// at offset 0), and makes the change durable.
    fn set_unique_id(path: &Path, id: [u8; 16]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        use vdisk::vhd::footer::{Footer, FOOTER_SIZE};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, "open", e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        let size = FOOTER_SIZE as u64;
        if len < 2 * size {
            return Err(Error::corrupt(
                path.display().to_string(),
                "too small for a dynamic VHD",
            ));
        }
        for at in [0, len - size] {
            let mut b = [0u8; FOOTER_SIZE];
            file.read_exact_at(&mut b, at)
                .map_err(|e| Error::io(path, "read footer", e))?;
            let mut footer = Footer::decode(&b).filter(Footer::is_valid).ok_or_else(|| {
                Error::corrupt(
                    path.display().to_string(),
                    format!("no valid footer at offset {at}"),
                )
            })?;
            footer.unique_id = id;
            file.write_all_at(&footer.encode(), at)
                .map_err(|e| Error::io(path, "write footer", e))?;
        }
        file.sync_all().map_err(|e| Error::io(path, "fsync", e))
    }
}
