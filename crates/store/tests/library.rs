//! The library end to end through its API: import, export byte-exact, sharing
//! between versions, tags, prune, a copied library, damaged blobs.

use std::path::Path;
use store::index::{ChunkAlgorithm, Chunking};
use store::library::{DiskSource, ImportOptions};
use store::{Library, MachineRef};
use vdisk::Disk;

const MIB: u64 = 1 << 20;

/// A deterministic pseudo-random generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A sparse raw disk of `size` bytes: runs of random data, runs of text-like
/// (compressible) data, a run of zeros written as data, and holes.
fn make_disk(path: &Path, size: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut image = vec![0u8; size as usize];
    for i in 0..24u64 {
        let len = (rng.next() % (2 * MIB)) as usize + 1;
        let at = (rng.next() % (size - len as u64)) as usize;
        let run = &mut image[at..at + len];
        if i % 3 == 0 {
            for (k, b) in run.iter_mut().enumerate() {
                *b = b"the quick brown fox jumps over the lazy dog\n"[k % 44];
            }
        } else {
            rng.fill(run);
        }
    }
    write_sparse(path, &image);
    image
}

/// Writes `image` as a raw file whose zero 64 KiB blocks are holes, except one
/// block of zeros written as data.
fn write_sparse(path: &Path, image: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(image.len() as u64).unwrap();
    for (i, block) in image.chunks(64 << 10).enumerate() {
        if block.iter().any(|&b| b != 0) || i == 3 {
            f.write_all_at(block, (i as u64) * (64 << 10)).unwrap();
        }
    }
}

fn import(lib: &Library, path: &Path, r: &str) -> store::library::Imported {
    let disk = vdisk::open(path, vdisk::OpenOptions::default()).unwrap();
    let sources = [DiskSource {
        name: "disk0".into(),
        disk: disk.as_ref(),
    }];
    lib.import(
        &sources,
        &r.parse().unwrap(),
        &small_chunks(),
        &mut |_, _| {},
    )
    .unwrap()
}

/// What importing `path` into `lib` (or a new library) would store.
fn dry_import(lib: Option<&Library>, path: &Path, r: &str) -> store::library::Imported {
    let disk = vdisk::open(path, vdisk::OpenOptions::default()).unwrap();
    let sources = [DiskSource {
        name: "disk0".into(),
        disk: disk.as_ref(),
    }];
    store::library::dry_import(
        lib,
        &sources,
        &r.parse().unwrap(),
        &small_chunks(),
        &mut |_, _| {},
    )
    .unwrap()
}

/// Small chunks, so that these small disks have many of them whatever the
/// default size is.
fn small_chunks() -> ImportOptions {
    ImportOptions {
        chunking: Chunking {
            algorithm: ChunkAlgorithm::FastCdc2020,
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        },
        ..ImportOptions::default()
    }
}

/// Overwrites 4 KiB of `image` with random bytes in `places` random places.
fn scribble(image: &mut [u8], places: usize, seed: u64) {
    let mut rng = Rng(seed);
    for _ in 0..places {
        let at = (rng.next() % (image.len() as u64 - 4096)) as usize;
        rng.fill(&mut image[at..at + 4096]);
    }
}

fn read_all(lib: &Library, r: &str) -> Vec<u8> {
    let r: MachineRef = r.parse().unwrap();
    let (_, _, m) = lib.resolve(&r).unwrap();
    let d = lib.disk(&r, &m, 0).unwrap();
    let mut out = vec![0u8; d.virtual_size() as usize];
    // Odd-sized reads cross chunk edges at every alignment.
    let mut at = 0;
    while at < out.len() {
        let n = (1_000_003).min(out.len() - at);
        d.read_at(&mut out[at..at + n], at as u64).unwrap();
        at += n;
    }
    out
}

#[test]
fn a_disk_comes_back_byte_exact_and_versions_share_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let v1 = dir.path().join("v1.raw");
    let mut image = make_disk(&v1, 64 * MIB, 7);
    let first = import(&lib, &v1, "acme/box:v1");
    assert_eq!(read_all(&lib, "acme/box:v1"), image);
    assert!(first.new_chunks > 0 && first.new_chunks == first.chunks);
    // Holes and zeros are not stored: the data imported is far less than the disk.
    assert!(first.data_bytes < 40 * MIB, "{}", first.data_bytes);

    // Change 64 KiB in 16 places: only the chunks around them are new.
    scribble(&mut image, 16, 99);
    let v2 = dir.path().join("v2.raw");
    write_sparse(&v2, &image);
    let second = import(&lib, &v2, "acme/box:v2");
    assert_eq!(read_all(&lib, "acme/box:v2"), image);
    assert_eq!(read_all(&lib, "acme/box:v1").len(), image.len());
    assert!(
        second.new_bytes * 5 < first.new_bytes,
        "v2 stored {} new bytes against v1's {}",
        second.new_bytes,
        first.new_bytes
    );
    assert!(
        second.new_chunks <= 16 * 3,
        "{} new chunks",
        second.new_chunks
    );
    // Importing the same disk again stores nothing.
    assert_eq!(import(&lib, &v2, "acme/box:again").new_chunks, 0);
}

/// Every file under `dir`, with its length and modification time.
fn files(
    dir: &Path,
) -> std::collections::BTreeMap<std::path::PathBuf, (u64, std::time::SystemTime)> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.insert(e.path(), (m.len(), m.modified().unwrap()));
        }
    }
    out
}

#[test]
fn a_dry_run_counts_what_an_import_stores_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("lib");
    let v1 = dir.path().join("v1.raw");
    let mut image = make_disk(&v1, 32 * MIB, 11);
    // No library yet: none is made.
    let dry = dry_import(None, &v1, "m:v1");
    assert!(!home.exists());
    let lib = Library::open(&home).unwrap();
    let real = import(&lib, &v1, "m:v1");
    let counts = |i: &store::library::Imported| (i.data_bytes, i.chunks, i.new_chunks, i.new_bytes);
    assert_eq!(counts(&dry), counts(&real));
    assert!(real.new_bytes > 0);
    let first_chunks = real.new_chunks;

    // A second version, measured against the library that holds the first.
    scribble(&mut image, 8, 5);
    let v2 = dir.path().join("v2.raw");
    write_sparse(&v2, &image);
    let before = files(&home);
    let dry = dry_import(Some(&lib), &v2, "m:v2");
    assert_eq!(files(&home), before, "a dry run changed the library");
    assert!(dry.new_chunks > 0 && dry.new_chunks < dry.chunks, "{dry:?}");
    let real = import(&lib, &v2, "m:v2");
    assert_eq!(counts(&dry), counts(&real));
    assert_eq!(read_all(&lib, "m:v2"), image);

    // Two disks of one machine that share most chunks: each counts once.
    let disks = [&v1, &v2].map(|p| vdisk::open(p, vdisk::OpenOptions::default()).unwrap());
    let sources = disks.each_ref().map(|d| DiskSource {
        name: "disk".into(),
        disk: d.as_ref(),
    });
    let r: MachineRef = "two:1".parse().unwrap();
    let dry =
        store::library::dry_import(None, &sources, &r, &small_chunks(), &mut |_, _| {}).unwrap();
    let fresh = Library::open(&dir.path().join("fresh")).unwrap();
    let real = fresh
        .import(&sources, &r, &small_chunks(), &mut |_, _| {})
        .unwrap();
    assert_eq!(counts(&dry), counts(&real));
    assert!(real.new_chunks < 2 * first_chunks, "{real:?}");
}

#[test]
fn tags_remove_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let a = dir.path().join("a.raw");
    let b = dir.path().join("b.raw");
    let image_a = make_disk(&a, 16 * MIB, 1);
    let image_b = make_disk(&b, 16 * MIB, 2);
    import(&lib, &a, "a");
    import(&lib, &b, "b:1");
    lib.tag(&"b:1".parse().unwrap(), &"b:stable".parse().unwrap())
        .unwrap();
    let names: Vec<String> = lib
        .list()
        .unwrap()
        .iter()
        .map(|l| l.reference.to_string())
        .collect();
    assert_eq!(names, ["a:latest", "b:1", "b:stable"]);

    // Nothing unused: prune removes nothing.
    assert_eq!(lib.prune().unwrap().blobs, 0);
    let before = lib.blobs().list().unwrap().len();
    lib.remove(&"a".parse().unwrap()).unwrap();
    let err = lib.remove(&"a".parse().unwrap()).unwrap_err().to_string();
    assert!(
        err.contains("a:latest") && err.contains("no such machine"),
        "{err}"
    );
    let p = lib.prune().unwrap();
    assert!(p.blobs > 2 && p.bytes > 0, "{p:?}");
    assert_eq!(lib.blobs().list().unwrap().len(), before - p.blobs as usize);
    // b survives, under both names, until its last name goes.
    assert_eq!(read_all(&lib, "b:stable"), image_b);
    lib.remove(&"b:1".parse().unwrap()).unwrap();
    assert_eq!(lib.prune().unwrap().blobs, 0);
    assert_eq!(read_all(&lib, "b:stable"), image_b);
    lib.remove(&"b:stable".parse().unwrap()).unwrap();
    lib.prune().unwrap();
    assert!(lib.blobs().list().unwrap().is_empty());
    drop(image_a);
}

/// Copies a folder tree (files and folders only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn a_copied_library_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("lib");
    let lib = Library::open(&home).unwrap();
    let a = dir.path().join("a.raw");
    let image = make_disk(&a, 8 * MIB, 5);
    import(&lib, &a, "m:1");
    drop(lib);
    let elsewhere = dir.path().join("usb").join("machines");
    copy_tree(&home, &elsewhere);
    std::fs::remove_dir_all(&home).unwrap();
    let lib = Library::open(&elsewhere).unwrap();
    assert_eq!(lib.list().unwrap().len(), 1);
    assert_eq!(read_all(&lib, "m:1"), image);
}

#[test]
fn damage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::open(&dir.path().join("lib")).unwrap();
    let a = dir.path().join("a.raw");
    make_disk(&a, 8 * MIB, 3);
    import(&lib, &a, "m");
    let r: MachineRef = "m".parse().unwrap();
    let (_, manifest, m) = lib.resolve(&r).unwrap();
    // A damaged chunk: reads that need it fail, naming the blob.
    let chunk = manifest.layers.last().unwrap().digest;
    let path = lib.blobs().path(&chunk);
    let mut data = std::fs::read(&path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 1;
    std::fs::write(&path, &data).unwrap();
    let d = lib.disk(&r, &m, 0).unwrap();
    let mut buf = vec![0u8; d.virtual_size() as usize];
    let err = d.read_at(&mut buf, 0).unwrap_err().to_string();
    assert!(
        err.contains(&chunk.hex()) && err.contains("damaged"),
        "{err}"
    );
    // A missing index.
    std::fs::remove_file(lib.blobs().path(&m.disks[0].index)).unwrap();
    let err = lib.disk(&r, &m, 0).err().unwrap().to_string();
    assert!(err.contains("missing"), "{err}");
    // A folder that is not a library is refused rather than written into.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    let err = Library::open(&other).err().unwrap().to_string();
    assert!(err.contains("not a vmhub library"), "{err}");
    // A damaged index.json.
    std::fs::write(dir.path().join("lib/index.json"), b"{").unwrap();
    let err = lib.list().unwrap_err().to_string();
    assert!(err.contains("index.json"), "{err}");
}
