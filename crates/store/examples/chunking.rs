//! Measures chunk sizes on two versions of a disk: how much of the second
//! version is new to a library that holds the first, and what each chunk size
//! costs in blobs (requests) and manifest bytes.
//!
//! ```text
//! cargo run --release -p store --example chunking -- V1 V2 [SPEC ...]
//! ```
//!
//! V1 and V2 are images `vdisk::open` reads (raw or VHD). A SPEC is
//! `MIN/AVG/MAX` (content-defined chunks, sizes in bytes or with a K or M
//! suffix) or `fixed:SIZE` (blocks at multiples of SIZE from the disk's start).
//! Without specs, five FastCDC triples from 8/32/128K to 256K/1M/4M and fixed
//! 64K blocks are measured.
//!
//! Content-defined chunks go through the library's real import: for each
//! triple a fresh library in a temporary folder imports V1, then V2, with
//! `ImportOptions::chunking` set to the triple, and the numbers are read back
//! from the two disk indexes and V2's manifest. Fixed blocks have no import
//! path, so they are read, hashed (SHA-256) and compressed (zstd level 3)
//! here, as the library would treat them, and their manifest is estimated at
//! the mean descriptor size the content-defined runs measured. The libraries
//! are made under `$TMPDIR` and need about V1's compressed size free.
//!
//! Printed as a Markdown table, one row per spec:
//! - `v1 chunks`: distinct non-zero chunks of V1 (blobs a pull of V1 fetches);
//! - `KiB/chunk`: V1's data bytes over its placed chunks;
//! - `v2 new`: V2's chunks absent from V1 (the blobs an update pull
//!   fetches), their bytes uncompressed and as zstd blobs, and the
//!   uncompressed share of V2's data;
//! - `v2 manifest`: bytes of V2's manifest JSON (one descriptor per chunk),
//!   and the data a 4 MiB manifest could describe at that rate;
//! - `s/GiB`: wall-clock seconds per GiB of data for V1's import (read, cut,
//!   hash, compress, write blobs, fsync).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;
use store::chunker::{data_runs, DEFAULT_LEVEL};
use store::index::{ChunkAlgorithm, Chunking, DiskIndex};
use store::library::{DiskSource, ImportOptions};
use store::manifest::Manifest;
use store::{Digest, Library, MachineRef};
use vdisk::Disk;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The manifest size registries commonly accept.
const MANIFEST_CAP: f64 = (4 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

/// What to measure.
#[derive(Clone, Copy, Debug)]
enum Spec {
    Cdc(Chunking),
    Fixed(u64),
}

/// One measurement.
struct Row {
    label: String,
    v1_chunks: u64,
    v2_chunks: u64,
    v1_placed: u64,
    v1_data: u64,
    v2_data: u64,
    new_chunks: u64,
    new_raw: u64,
    new_zst: u64,
    manifest: u64,
    manifest_estimated: bool,
    secs: f64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("chunking: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(v1), Some(v2)) = (args.first(), args.get(1)) else {
        return Err("usage: chunking V1 V2 [MIN/AVG/MAX | fixed:SIZE ...]".into());
    };
    let specs: Vec<Spec> = if args.len() > 2 {
        args.get(2..)
            .unwrap_or_default()
            .iter()
            .map(|s| parse_spec(s))
            .collect::<Res<_>>()?
    } else {
        [
            "8K/32K/128K",
            "16K/64K/256K",
            "32K/128K/512K",
            "64K/256K/1M",
            "256K/1M/4M",
            "fixed:64K",
        ]
        .iter()
        .map(|s| parse_spec(s))
        .collect::<Res<_>>()?
    };
    let open = |p: &str| -> Res<Box<dyn Disk>> {
        vdisk::open(Path::new(p), vdisk::OpenOptions { writable: false })
            .map_err(|e| format!("{p}: {e}").into())
    };
    let (d1, d2) = (open(v1)?, open(v2)?);
    let scratch = tempfile::Builder::new()
        .prefix("vmhub-chunking.")
        .tempdir()?;
    let mut rows = Vec::new();
    let mut per_descriptor = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        eprintln!("chunking: measuring {} ...", label(spec));
        let row = match *spec {
            Spec::Cdc(c) => {
                let home = scratch.path().join(format!("lib{i}"));
                let row = measure_cdc(&home, &*d1, &*d2, c)?;
                std::fs::remove_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
                row
            }
            Spec::Fixed(size) => measure_fixed(&*d1, &*d2, size)?,
        };
        if !row.manifest_estimated {
            // The manifest is one descriptor per distinct v2 chunk plus a few.
            per_descriptor.push(row.manifest as f64 / (row.v2_chunks.max(1) as f64));
        }
        rows.push(row);
    }
    // Fixed blocks: estimate the manifest from the descriptor size measured.
    let desc = if per_descriptor.is_empty() {
        130.0
    } else {
        per_descriptor.iter().sum::<f64>() / per_descriptor.len() as f64
    };
    for r in rows.iter_mut().filter(|r| r.manifest_estimated) {
        r.manifest = (r.manifest as f64 * desc) as u64;
    }
    print_table(v1, v2, &rows, d1.virtual_size(), d2.virtual_size());
    Ok(())
}

/// Imports both disks into a fresh library with chunking `c`.
fn measure_cdc(home: &Path, d1: &dyn Disk, d2: &dyn Disk, c: Chunking) -> Res<Row> {
    let lib = Library::open(home)?;
    let opts = ImportOptions {
        chunking: c,
        ..ImportOptions::default()
    };
    let r1 = MachineRef::new("bench", "v1")?;
    let r2 = MachineRef::new("bench", "v2")?;
    let start = Instant::now();
    let i1 = lib.import(&[source(d1)], &r1, &opts, &mut |_, _| {})?;
    let secs = start.elapsed().as_secs_f64();
    let i2 = lib.import(&[source(d2)], &r2, &opts, &mut |_, _| {})?;
    let x1 = index_of(&lib, &r1)?;
    let x2 = index_of(&lib, &r2)?;
    let in_v1: HashSet<store::ContentDigest> = x1.chunks.iter().map(|c| c.content).collect();
    let new: Vec<_> = x2
        .chunks
        .iter()
        .filter(|c| !in_v1.contains(&c.content))
        .collect();
    let new_zst: u64 = new.iter().map(|c| c.size).sum();
    if new_zst != i2.new_bytes {
        return Err(format!(
            "{}: the import wrote {} new bytes, the indexes say {new_zst}",
            label(&Spec::Cdc(c)),
            i2.new_bytes
        )
        .into());
    }
    let manifest = lib
        .blobs()
        .len(&i2.manifest)
        .ok_or("v2's manifest is missing")?;
    Ok(Row {
        label: label(&Spec::Cdc(c)),
        v1_chunks: i1.chunks,
        v2_chunks: i2.chunks,
        v1_placed: x1.map.len() as u64,
        v1_data: x1.data_bytes(),
        v2_data: x2.data_bytes(),
        new_chunks: new.len() as u64,
        new_raw: new.iter().map(|c| u64::from(c.length)).sum(),
        new_zst,
        manifest,
        manifest_estimated: false,
        secs,
    })
}

fn source(disk: &dyn Disk) -> DiskSource<'_> {
    DiskSource {
        name: "disk0".into(),
        disk,
    }
}

/// The index of `reference`'s only disk.
fn index_of(lib: &Library, reference: &MachineRef) -> Res<DiskIndex> {
    let (_, manifest, machine): (_, Manifest, _) = lib.resolve(reference)?;
    let layer = manifest.layers.first().ok_or("a manifest without layers")?;
    let d = machine.disks.first().ok_or("a machine without disks")?;
    if layer.digest != d.index {
        return Err("the first layer is not the disk index".into());
    }
    let json = lib.blobs().read(&d.index, store::index::MAX_INDEX_BYTES)?;
    Ok(DiskIndex::from_json(&json, "index")?)
}

/// The non-zero blocks of `disk`, cut at multiples of `size` from offset 0:
/// content digest to (length, compressed length when `compress`).
struct Blocks {
    distinct: HashMap<Digest, (u64, u64)>,
    placed: u64,
    data: u64,
}

fn fixed_blocks(disk: &dyn Disk, size: u64, compress: bool, skip: &Blocks) -> Res<Blocks> {
    let mut out = Blocks {
        distinct: HashMap::new(),
        placed: 0,
        data: 0,
    };
    let mut z = zstd::bulk::Compressor::new(DEFAULT_LEVEL)?;
    let mut buf = vec![0u8; size as usize];
    let mut last_block = None;
    for (start, end) in data_runs(disk)? {
        let mut block = start / size * size;
        while block < end {
            if last_block != Some(block) {
                last_block = Some(block);
                let len = size.min(disk.virtual_size() - block) as usize;
                let b = buf.get_mut(..len).unwrap_or_default();
                disk.read_at(b, block)?;
                if !vdisk::io::is_zero(b) {
                    out.placed += 1;
                    out.data += len as u64;
                    let d = Digest::of(b);
                    if let std::collections::hash_map::Entry::Vacant(e) = out.distinct.entry(d) {
                        let zst = if compress && !skip.distinct.contains_key(&d) {
                            z.compress(b)?.len() as u64
                        } else {
                            0
                        };
                        e.insert((len as u64, zst));
                    }
                }
            }
            block += size;
        }
    }
    Ok(out)
}

fn measure_fixed(d1: &dyn Disk, d2: &dyn Disk, size: u64) -> Res<Row> {
    let none = Blocks {
        distinct: HashMap::new(),
        placed: 0,
        data: 0,
    };
    let start = Instant::now();
    let b1 = fixed_blocks(d1, size, false, &none)?;
    let secs = start.elapsed().as_secs_f64();
    let b2 = fixed_blocks(d2, size, true, &b1)?;
    let (mut new_chunks, mut new_raw, mut new_zst) = (0, 0, 0);
    for (d, (len, zst)) in &b2.distinct {
        if !b1.distinct.contains_key(d) {
            new_chunks += 1;
            new_raw += len;
            new_zst += zst;
        }
    }
    Ok(Row {
        label: label(&Spec::Fixed(size)),
        v1_chunks: b1.distinct.len() as u64,
        v2_chunks: b2.distinct.len() as u64,
        v1_placed: b1.placed,
        v1_data: b1.data,
        v2_data: b2.data,
        new_chunks,
        new_raw,
        new_zst,
        // Descriptors, multiplied by the measured mean size later.
        manifest: b2.distinct.len() as u64,
        manifest_estimated: true,
        secs,
    })
}

fn print_table(v1: &str, v2: &str, rows: &[Row], s1: u64, s2: u64) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "v1: {v1} ({:.0} MiB, {:.1} MiB of data)",
        mib(s1),
        rows.first().map_or(0.0, |r| mib(r.v1_data))
    );
    println!(
        "v2: {v2} ({:.0} MiB, {:.1} MiB of data)",
        mib(s2),
        rows.first().map_or(0.0, |r| mib(r.v2_data))
    );
    println!();
    println!("| chunks min/avg/max | v1 chunks | KiB/chunk | chunks per GiB | v2 new chunks | v2 new (MiB) | v2 new zstd (MiB) | new / v2 data | v2 manifest (KiB) | data per 4 MiB manifest (GiB) | s/GiB (v1) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let per_gib = r.v1_placed as f64 / (r.v1_data.max(1) as f64 / GIB);
        let kib = r.v1_data as f64 / 1024.0 / r.v1_placed.max(1) as f64;
        let cap = MANIFEST_CAP / r.manifest.max(1) as f64 * r.v2_data as f64 / GIB;
        let share = 100.0 * r.new_raw as f64 / r.v2_data.max(1) as f64;
        let per = r.secs / (r.v1_data.max(1) as f64 / GIB);
        let est = if r.manifest_estimated { " (est.)" } else { "" };
        println!(
            "| {} | {} | {kib:.1} | {per_gib:.0} | {} | {:.1} | {:.1} | {share:.1} % | {:.0}{est} | {cap:.1} | {per:.2} |",
            r.label,
            r.v1_chunks,
            r.new_chunks,
            mib(r.new_raw),
            mib(r.new_zst),
            r.manifest as f64 / 1024.0,
        );
    }
}

fn label(spec: &Spec) -> String {
    match spec {
        Spec::Cdc(c) => format!("{}/{}/{}", human(c.min), human(c.avg), human(c.max)),
        Spec::Fixed(s) => format!("fixed {}", human(*s as u32)),
    }
}

fn human(n: u32) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{}M", n >> 20)
    } else if n % 1024 == 0 {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

fn parse_size(s: &str) -> Res<u32> {
    let (num, shift) = match s.strip_suffix(['K', 'k']) {
        Some(n) => (n, 10),
        None => match s.strip_suffix(['M', 'm']) {
            Some(n) => (n, 20),
            None => (s, 0),
        },
    };
    let n: u32 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a size (bytes, or a number with K or M)"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("{s:?}: too large").into())
}

fn parse_spec(s: &str) -> Res<Spec> {
    if let Some(size) = s.strip_prefix("fixed:") {
        let size = parse_size(size)?;
        if !(4096..=16 << 20).contains(&size) {
            return Err(format!("{s:?}: fixed blocks are 4K to 16M").into());
        }
        return Ok(Spec::Fixed(u64::from(size)));
    }
    let parts: Vec<u32> = s.split('/').map(parse_size).collect::<Res<_>>()?;
    let [min, avg, max] = parts[..] else {
        return Err(format!("{s:?}: expected MIN/AVG/MAX or fixed:SIZE").into());
    };
    // The bounds `fastcdc::v2020::FastCDC::new` asserts.
    use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX};
    let fits = min <= avg
        && avg <= max
        && (64..=MINIMUM_MAX).contains(&min)
        && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
        && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max);
    if !fits {
        return Err(format!(
            "{s:?}: FastCDC needs min ≤ avg ≤ max, min 64..={MINIMUM_MAX}, \
             avg {AVERAGE_MIN}..={AVERAGE_MAX}, max {MAXIMUM_MIN}..={MAXIMUM_MAX}"
        )
        .into());
    }
    Ok(Spec::Cdc(Chunking {
        algorithm: ChunkAlgorithm::FastCdc2020,
        min,
        avg,
        max,
    }))
}
