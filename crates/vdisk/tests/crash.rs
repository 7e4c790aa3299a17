//! Crash safety: writers, merges, conversions, compactions and resizes are
//! killed with SIGKILL at random, seeded moments (48 of each kind, 432 in all:
//! merges of VHD chains, and of chains with VHDX or qcow2 disks; compactions
//! of VHD and of VHDX; resizes and relinks of VHDX).
//!
//! - A writer of a dynamic or differencing disk: the image must check clean,
//!   read the same in qemu-img, and hold every write acknowledged by a flush;
//!   sectors written after the last flush may hold any of their versions.
//! - A merge: the chain reads as before it, and merging again completes it.
//! - A conversion or compaction: the output (or image) is the old file or the
//!   new one, whole; only hidden temporary files are left behind.
//! - A resize of a VHDX (fixed or dynamic, grown or shrunk): it has the old
//!   size or the new one, checks clean, and reads as before up to the
//!   smaller of the two, zeros after.
//! - A compaction of a VHDX, in place: it checks clean and reads as before.
//! - A relink of a differencing VHDX: it opens through the old parent or the
//!   new one, checks clean and reads as before.
//!
//! A parent's bytes never change.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;
use vdisk::{CreateOptions, OpenOptions};

mod common;

use common::crash::{splitmix, WriteLoad};

const SIZE: u64 = 8 << 20;
const SECTOR: u64 = 512;
const MAX_OPS: u64 = 3000;
const ITERATIONS: u64 = 48;

/// The writes every writer harness makes.
const LOAD: WriteLoad = WriteLoad {
    size: SIZE,
    max_sectors: 128,
    ops: MAX_OPS,
};

/// The writer, run in a child process: writes ops until killed, appending the
/// number of ops done to the ack file after every flush.
#[test]
#[ignore = "run by crash_harness in a child process"]
fn crash_child_writer() {
    if let Some((img, ack, seed)) = common::crash::writer_env() {
        LOAD.write_until_killed(&img, &ack, seed);
    }
}

fn read_all(path: &Path) -> Vec<u8> {
    let d = vdisk::open(path, OpenOptions::default()).unwrap();
    let mut b = vec![0u8; SIZE as usize];
    d.read_at(&mut b, 0).unwrap();
    b
}

/// Runs the ignored test `test` of this binary in a child process, with `env`.
fn spawn(env: &[(&str, &std::ffi::OsStr)], test: &str) -> std::process::Child {
    common::crash::spawn_ignored(test, env)
}

#[test]
fn crash_harness() {
    harness(false);
}

#[test]
fn crash_harness_differencing() {
    harness(true);
}

/// Kills writers of a dynamic disk, or of a differencing disk over a parent
/// that holds data (whose bytes must never change).
fn harness(differencing: bool) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("crash.vhd");
    let opts = CreateOptions {
        block_size: Some(64 << 10),
        ..CreateOptions::default()
    };
    let mut model = vec![0u8; SIZE as usize];
    let base = dir.path().join("base.vhd");
    if differencing {
        vdisk::create(&base, SIZE, &opts, false).unwrap();
        let mut d = vdisk::open(&base, OpenOptions { writable: true }).unwrap();
        for (i, chunk) in model
            .chunks_mut(3 << 16)
            .enumerate()
            .filter(|(i, _)| i % 3 != 1)
        {
            chunk.fill(0x40 + i as u8);
            d.write_at(chunk, (i as u64) * (3 << 16)).unwrap();
        }
        d.flush().unwrap();
        vdisk::create_child(&img, &base, 64 << 10, false).unwrap();
    } else {
        vdisk::create(&img, SIZE, &opts, false).unwrap();
    }
    let base_bytes = differencing.then(|| std::fs::read(&base).unwrap());
    let mut rng = 0x5eed_u64;
    let mut mid_run_kills = 0;
    for iter in 0..ITERATIONS {
        rng = splitmix(rng);
        let seed = rng;
        let done = LOAD.run_and_kill("crash_child_writer", &img, seed, 60);
        if done < MAX_OPS {
            mid_run_kills += 1;
        }

        let report = vdisk::check(&img).unwrap();
        assert!(
            report.clean,
            "iteration {iter} (seed {seed}, {done} ops acked): {:?}",
            report.problems
        );
        let got = read_all(&img);
        let compare_with_qemu = base_bytes.is_none() && iter % 8 == 0;
        let qemu_view = compare_with_qemu.then(|| got.clone());
        LOAD.check_and_advance(seed, done, &mut model, got, &format!("iteration {iter}"));
        if let Some(b) = &base_bytes {
            assert!(
                std::fs::read(&base).unwrap() == *b,
                "iteration {iter}: the parent changed"
            );
        } else if compare_with_qemu {
            // QEMU reads a differencing disk without its parent: compare plain
            // dynamic disks only.
            assert!(
                qemu_view
                    .is_some_and(|v| common::qemu_contents(&img, &dir.path().join("q.raw")) == v),
                "iteration {iter}: qemu-img reads other data than vmhub"
            );
        }
    }
    // The harness is only meaningful if kills land while the writer is busy.
    eprintln!("{mid_run_kills} of {ITERATIONS} writers killed mid-run");
    assert!(
        mid_run_kills >= ITERATIONS / 2,
        "only {mid_run_kills} kills landed mid-run"
    );

    // Leaked, unreferenced blocks from killed runs are harmless: the file is
    // still one qemu-img reads the same.
    let f = std::fs::File::open(&img).unwrap();
    let mut cookie = [0u8; 8];
    f.read_exact_at(&mut cookie, f.metadata().unwrap().len() - 512)
        .unwrap();
    assert_eq!(&cookie, b"conectix");
}

/// The merger, run in a child process: merges `CRASH_IMG` into `CRASH_INTO`.
#[test]
#[ignore = "run by merge_harness in a child process"]
fn crash_child_merger() {
    let (Ok(img), Ok(into)) = (std::env::var("CRASH_IMG"), std::env::var("CRASH_INTO")) else {
        return;
    };
    // Merges into the parent give the child's blocks back as they go, so
    // that kills land among those steps too.
    let options = vdisk::vhd::merge::MergeOptions {
        into: Some(Path::new(&into)),
        release: vdisk::vhd::merge::Release::Always,
        ..Default::default()
    };
    vdisk::vhd::merge::merge_with(Path::new(&img), options, &mut |_, _| {}).unwrap();
}

#[test]
fn merge_harness() {
    // Even runs merge top into base (through mid); odd ones into its parent
    // mid, which gives top's blocks back as the copy goes.
    kill_merges("VHD", 0x3e76, "crash_child_merger", |dir, seed, iter| {
        let (model, names) = any_chain(dir, seed, Chain::Vhd);
        (model, names, (iter % 2) as usize)
    });
}

/// Kills `merger` (a test of this binary run in a child process) at random
/// moments while it merges top into base or mid of a chain that `chain`
/// makes in a new folder (from a seed and the iteration: the model of what
/// top reads, the names of base, mid and top, which of them is the target).
/// A merge killed before it removed anything must leave the chain reading as
/// before, every disk checking clean (leaked qcow2 clusters allowed), and
/// merging again must complete it.
fn kill_merges(
    label: &str,
    seed: u64,
    merger: &str,
    chain: impl Fn(&Path, u64, u64) -> (Vec<u8>, [&'static str; 3], usize),
) {
    let mut rng = seed;
    // Merges killed before they removed anything, those of them killed once
    // the target had changed, and merges that finished.
    let (mut interrupted, mut amid, mut finished) = (0, 0, 0);
    for iter in 0..ITERATIONS {
        rng = splitmix(rng);
        let dir = tempfile::tempdir().unwrap();
        let (model, names, target) = chain(dir.path(), rng, iter);
        let top = dir.path().join(names[2]);
        let target = dir.path().join(names[target]);
        let target_before = std::fs::read(&target).unwrap();
        let mut child = spawn(
            &[
                ("CRASH_IMG", top.as_os_str()),
                ("CRASH_INTO", target.as_os_str()),
            ],
            merger,
        );
        std::thread::sleep(Duration::from_millis(splitmix(rng) % 40));
        let _ = child.kill();
        let _ = child.wait();
        if top.exists() {
            interrupted += 1;
            if std::fs::read(&target).unwrap() != target_before {
                amid += 1;
            }
            assert!(
                read_all(&top) == model,
                "iteration {iter}: the chain reads differently after a killed merge"
            );
            for name in names {
                let report = vdisk::check(&dir.path().join(name)).unwrap();
                assert!(
                    report.clean,
                    "iteration {iter}: {name}: {:?}",
                    report.problems
                );
            }
            let options = vdisk::vhd::merge::MergeOptions {
                into: Some(&target),
                ..Default::default()
            };
            vdisk::ops::merge::merge(&top, options, &mut |_, _| {}).unwrap();
        } else {
            finished += 1;
        }
        assert!(
            read_all(&target) == model,
            "iteration {iter}: the merged disk differs"
        );
        assert!(vdisk::check(&target).unwrap().clean, "iteration {iter}");
        assert!(!top.exists(), "iteration {iter}: the child is still there");
    }
    eprintln!(
        "{interrupted} of {ITERATIONS} {label} merges killed mid-way, {amid} of them with the target changed"
    );
    assert!(
        interrupted >= ITERATIONS / 4,
        "only {interrupted} of {ITERATIONS} {label} merges were killed mid-way ({finished} finished)"
    );
    assert!(
        amid >= ITERATIONS / 8,
        "only {amid} {label} merges were killed after they had written into the target"
    );
}

/// The merger of chains with VHDX or qcow2 disks, run in a child process:
/// merges `CRASH_IMG` into `CRASH_INTO` through the merge for any format.
#[test]
#[ignore = "run by merge_harness_vhdx_qcow2 in a child process"]
fn crash_child_any_merger() {
    let (Ok(img), Ok(into)) = (std::env::var("CRASH_IMG"), std::env::var("CRASH_INTO")) else {
        return;
    };
    let options = vdisk::vhd::merge::MergeOptions {
        into: Some(Path::new(&into)),
        ..Default::default()
    };
    vdisk::ops::merge::merge(Path::new(&img), options, &mut |_, _| {}).unwrap();
}

/// The chains [`any_chain`] makes.
#[derive(Clone, Copy)]
enum Chain {
    /// VHD disks only.
    Vhd,
    /// VHDX disks only.
    Vhdx,
    /// VHDX children over a VHD base.
    VhdxOverVhd,
    /// qcow2 disks, the children made by qemu-img.
    Qcow2,
}

/// base ← mid ← top of `kind`, each layer with data of its own. Returns what
/// top reads and the names of base, mid and top.
fn any_chain(dir: &Path, seed: u64, kind: Chain) -> (Vec<u8>, [&'static str; 3]) {
    let names = match kind {
        Chain::Vhd => ["base.vhd", "mid.vhd", "top.vhd"],
        Chain::Vhdx => ["base.vhdx", "mid.vhdx", "top.vhdx"],
        Chain::VhdxOverVhd => ["base.vhd", "mid.vhdx", "top.vhdx"],
        Chain::Qcow2 => ["base.qcow2", "mid.qcow2", "top.qcow2"],
    };
    let (format, block) = match kind {
        Chain::Vhd => (vdisk::Format::Vhd, 64 << 10),
        Chain::Vhdx => (vdisk::Format::Vhdx, 1 << 20),
        Chain::VhdxOverVhd => (vdisk::Format::Vhd, 1 << 20),
        Chain::Qcow2 => (vdisk::Format::Qcow2, 64 << 10),
    };
    let opts = CreateOptions {
        format,
        block_size: Some(block),
        ..CreateOptions::default()
    };
    vdisk::create(&dir.join(names[0]), SIZE, &opts, false).unwrap();
    let child = |name: &str, parent: &str| match kind {
        Chain::Qcow2 => common::run(
            std::process::Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", parent])
                .arg(dir.join(name)),
        ),
        Chain::Vhd => {
            vdisk::create_child(&dir.join(name), &dir.join(parent), 64 << 10, false).unwrap()
        }
        Chain::Vhdx | Chain::VhdxOverVhd => vdisk::create_child_as(
            vdisk::Format::Vhdx,
            &dir.join(name),
            &dir.join(parent),
            Some(1 << 20),
            false,
        )
        .unwrap(),
    };
    let mut model = vec![0u8; SIZE as usize];
    for (layer, name) in names.iter().enumerate() {
        if layer > 0 {
            child(name, names[layer - 1]);
        }
        let mut d = vdisk::open(&dir.join(name), OpenOptions { writable: true }).unwrap();
        for i in 0..150u64 {
            let o = LOAD.op(seed ^ layer as u64, i);
            let b = LOAD.buffer(seed ^ layer as u64, i);
            d.write_at(&b, o.first * SECTOR).unwrap();
            model[(o.first * SECTOR) as usize..((o.first + o.sectors) * SECTOR) as usize]
                .copy_from_slice(&b);
        }
        d.flush().unwrap();
    }
    (model, names)
}

/// Merges of chains with VHDX or qcow2 disks killed at random moments: VHDX
/// chains, VHDX children over a VHD base, qcow2 chains; into the parent, or
/// through it into the base.
#[test]
fn merge_harness_vhdx_qcow2() {
    kill_merges(
        "VHDX and qcow2",
        0x7d8e,
        "crash_child_any_merger",
        |dir, seed, iter| {
            let kind = [Chain::Vhdx, Chain::VhdxOverVhd, Chain::Qcow2][iter as usize % 3];
            let (model, names) = any_chain(dir, seed, kind);
            (model, names, (iter as usize / 3) % 2)
        },
    );
}

/// Size of the disks converted and compacted: large enough that a run takes
/// tens of milliseconds, so that kills land inside it.
const BIG: u64 = 48 << 20;

/// The converter, compactor or resizer, run in a child process.
#[test]
#[ignore = "run by convert_harness and compact_harness in a child process"]
fn crash_child_rebuilder() {
    let (Ok(job), Ok(img)) = (std::env::var("CRASH_JOB"), std::env::var("CRASH_IMG")) else {
        return;
    };
    let img = Path::new(&img);
    match job.as_str() {
        "compact" => {
            vdisk::vhd::compact::compact(img, &mut |_, _| {}).unwrap();
        }
        "convert-vhd" | "convert-raw" => {
            let out = std::env::var("CRASH_OUT").unwrap();
            let opts = CreateOptions {
                format: if job == "convert-raw" {
                    vdisk::Format::Raw
                } else {
                    vdisk::Format::Vhd
                },
                block_size: Some(512 << 10),
                ..CreateOptions::default()
            };
            let src = vdisk::open(img, OpenOptions::default()).unwrap();
            vdisk::ops::convert::convert(
                src.as_ref(),
                Path::new(&out),
                &opts,
                true,
                &mut |_, _| {},
            )
            .unwrap();
        }
        "compact-vhdx" => {
            vdisk::ops::compact::compact(img, &[], &mut |_, _| {}).unwrap();
        }
        "resize" => {
            let size = std::env::var("CRASH_SIZE").unwrap().parse().unwrap();
            vdisk::ops::resize::resize(img, size, true).unwrap();
        }
        "relink-loop" => {
            // Back and forth between two copies of the parent, until killed.
            let places = [
                std::env::var("CRASH_A").unwrap(),
                std::env::var("CRASH_B").unwrap(),
            ];
            let rounds: usize = std::env::var("CRASH_ROUNDS").unwrap().parse().unwrap();
            for i in 0..rounds {
                vdisk::relink(img, Path::new(&places[i % 2]), false).unwrap();
            }
        }
        other => panic!("unknown job {other}"),
    }
}

/// Writes scattered data, and zeros over some of it, into the disk at `path`
/// (and into `model`); the zeros leave whole blocks that compact drops.
fn scatter(path: &Path, model: &mut [u8], seed: u64) {
    let mut d = vdisk::open(path, OpenOptions { writable: true }).unwrap();
    let mut r = seed;
    for i in 0..400u64 {
        r = splitmix(r);
        let len = (1 + (r >> 8) % 256) * SECTOR;
        let off = ((r >> 24) % (BIG - len) / SECTOR) * SECTOR;
        let b: Vec<u8> = if i % 5 == 0 {
            vec![0; len as usize]
        } else {
            (0..len).map(|k| (splitmix(r ^ k) as u8) | 1).collect()
        };
        d.write_at(&b, off).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&b);
    }
    for block in (0..BIG).step_by(3 << 20) {
        d.write_at(&vec![0; 512 << 10], block).unwrap();
        model[block as usize..block as usize + (512 << 10)].fill(0);
    }
    d.flush().unwrap();
}

fn read_big(path: &Path) -> Vec<u8> {
    let d = vdisk::open(path, OpenOptions::default()).unwrap();
    let mut b = vec![0u8; d.virtual_size() as usize];
    d.read_at(&mut b, 0).unwrap();
    b
}

/// Files in `dir` other than `keep`: each must be a temporary file left by a
/// killed run, named `.NAME.*.tmp`; they are removed.
fn sweep_temps(dir: &Path, keep: &[&str], iter: u64) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if keep.contains(&name.as_str()) {
            continue;
        }
        assert!(
            name.starts_with('.') && name.ends_with(".tmp"),
            "iteration {iter}: unexpected file {name}"
        );
        std::fs::remove_file(dir.join(&name)).unwrap();
        n += 1;
    }
    n
}

/// Runs `job` in a child and kills it after a random delay; returns whether
/// it was killed before it finished.
fn kill_during(job: &str, env: &[(&str, &std::ffi::OsStr)], seed: u64, max_ms: u64) -> bool {
    let mut all = vec![("CRASH_JOB", std::ffi::OsStr::new(job))];
    all.extend_from_slice(env);
    let mut child = spawn(&all, "crash_child_rebuilder");
    std::thread::sleep(Duration::from_millis(splitmix(seed) % max_ms));
    let _ = child.kill();
    let status = child.wait().unwrap();
    !status.success()
}

#[test]
fn convert_harness() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.vhd");
    let opts = CreateOptions {
        block_size: Some(512 << 10),
        ..CreateOptions::default()
    };
    vdisk::create(&src, BIG, &opts, false).unwrap();
    let mut model = vec![0u8; BIG as usize];
    scatter(&src, &mut model, 0xc0de);
    let src_bytes = std::fs::read(&src).unwrap();
    // An older output that a forced conversion replaces: it must survive whole
    // until the new one is complete.
    let old = vec![0x5au8; BIG as usize];
    let mut rng = 0xc0ff_u64;
    let (mut killed, mut temps) = (0, 0);
    for iter in 0..ITERATIONS {
        rng = splitmix(rng);
        let raw = iter % 2 == 0;
        let out = dir.path().join(if raw { "out.raw" } else { "out.vhd" });
        let keep_old = iter % 4 < 2;
        if keep_old {
            std::fs::write(&out, &old).unwrap();
        } else {
            let _ = std::fs::remove_file(&out);
        }
        let job = if raw { "convert-raw" } else { "convert-vhd" };
        killed += kill_during(
            job,
            &[
                ("CRASH_IMG", src.as_os_str()),
                ("CRASH_OUT", out.as_os_str()),
            ],
            rng,
            120,
        ) as u64;
        // The output is the old file, the complete new one, or absent.
        if out.exists() {
            let got = if raw {
                std::fs::read(&out).unwrap()
            } else {
                assert!(vdisk::check(&out).unwrap().clean, "iteration {iter}");
                read_big(&out)
            };
            assert!(
                got == model || (keep_old && got == old),
                "iteration {iter}: the output is neither the old file nor the whole conversion"
            );
        } else {
            assert!(!keep_old, "iteration {iter}: the old output is gone");
        }
        assert!(
            std::fs::read(&src).unwrap() == src_bytes,
            "iteration {iter}: the source changed"
        );
        temps += sweep_temps(dir.path(), &["src.vhd", "out.raw", "out.vhd"], iter);
        let _ = std::fs::remove_file(&out);
    }
    eprintln!("{killed} of {ITERATIONS} conversions killed mid-way");
    assert!(
        killed >= ITERATIONS / 4,
        "only {killed} conversions were killed mid-way ({temps} left temporary files)"
    );
}

#[test]
fn compact_harness() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CreateOptions {
        block_size: Some(512 << 10),
        ..CreateOptions::default()
    };
    // Templates: a dynamic disk, and a child over a base, each with data and
    // zero blocks; each iteration compacts a fresh copy.
    let (base, dyn_t, child_t) = (
        dir.path().join("base.vhd"),
        dir.path().join("dyn.template"),
        dir.path().join("child.template"),
    );
    vdisk::create(&dyn_t, BIG, &opts, false).unwrap();
    let mut dyn_model = vec![0u8; BIG as usize];
    scatter(&dyn_t, &mut dyn_model, 0xd1);
    vdisk::create(&base, BIG, &opts, false).unwrap();
    let mut child_model = vec![0u8; BIG as usize];
    scatter(&base, &mut child_model, 0xba5e);
    let img = dir.path().join("img.vhd");
    vdisk::create_child(&img, &base, 512 << 10, false).unwrap();
    scatter(&img, &mut child_model, 0xc41d);
    std::fs::rename(&img, &child_t).unwrap();
    let base_bytes = std::fs::read(&base).unwrap();

    let mut rng = 0xc0a7_u64;
    let (mut killed, mut temps) = (0, 0);
    for iter in 0..ITERATIONS {
        rng = splitmix(rng);
        let differencing = iter % 2 == 1;
        let (template, model) = if differencing {
            (&child_t, &child_model)
        } else {
            (&dyn_t, &dyn_model)
        };
        std::fs::copy(template, &img).unwrap();
        let before = std::fs::read(&img).unwrap();
        killed += kill_during("compact", &[("CRASH_IMG", img.as_os_str())], rng, 150) as u64;
        // The image is the old file or the compacted one, either whole.
        let now = std::fs::read(&img).unwrap();
        assert!(
            now == before || now.len() < before.len(),
            "iteration {iter}: the image changed without being replaced"
        );
        assert!(vdisk::check(&img).unwrap().clean, "iteration {iter}");
        assert!(
            read_big(&img) == *model,
            "iteration {iter}: the image reads differently after a killed compact"
        );
        assert!(
            std::fs::read(&base).unwrap() == base_bytes,
            "iteration {iter}: the parent changed"
        );
        temps += sweep_temps(
            dir.path(),
            &["base.vhd", "dyn.template", "child.template", "img.vhd"],
            iter,
        );
    }
    eprintln!("{killed} of {ITERATIONS} compactions killed mid-way");
    assert!(
        killed >= ITERATIONS / 4,
        "only {killed} compactions were killed mid-way ({temps} left temporary files)"
    );
}

/// Runs the rebuilder job `env` names to its end, and returns a quarter more
/// than the milliseconds it took (the child's start included): the window
/// over which kills of that job are spread.
fn span_of(env: &[(&str, &std::ffi::OsStr)]) -> u64 {
    let started = std::time::Instant::now();
    assert!(spawn(env, "crash_child_rebuilder")
        .wait()
        .unwrap()
        .success());
    (started.elapsed().as_millis() as u64 * 5 / 4).max(1)
}

#[test]
fn resize_harness() {
    let dir = tempfile::tempdir().unwrap();
    // Templates: a dynamic and a fixed VHDX with scattered data; each
    // iteration grows or shrinks a fresh copy of one.
    let mut templates = Vec::new();
    for (name, image_type) in [
        ("dynamic.template", vdisk::ImageType::Dynamic),
        ("fixed.template", vdisk::ImageType::Fixed),
    ] {
        let t = dir.path().join(name);
        let opts = CreateOptions {
            format: vdisk::Format::Vhdx,
            image_type,
            block_size: Some(1 << 20),
            ..CreateOptions::default()
        };
        vdisk::create(&t, BIG, &opts, false).unwrap();
        let mut model = vec![0u8; BIG as usize];
        scatter(&t, &mut model, 0x5e7 ^ image_type as u64);
        templates.push((t, model));
    }
    let img = dir.path().join("img.vhdx");
    std::fs::copy(&templates[0].0, &img).unwrap();
    let span = span_of(&[
        ("CRASH_JOB", std::ffi::OsStr::new("resize")),
        ("CRASH_IMG", img.as_os_str()),
        ("CRASH_SIZE", std::ffi::OsStr::new("1048576")),
    ]);
    let mut rng = 0x7e512e_u64;
    let (mut killed, mut inside, mut resized, mut replayed) = (0, 0, 0, 0);
    for iter in 0..ITERATIONS {
        rng = splitmix(rng);
        let (template, model) = &templates[(iter % 2) as usize];
        // Grown to twice the size, or shrunk to half (forced: data is cut).
        let target = if iter / 2 % 2 == 0 { 2 * BIG } else { BIG / 2 };
        std::fs::copy(template, &img).unwrap();
        let size_arg = target.to_string();
        let was_killed = kill_during(
            "resize",
            &[
                ("CRASH_IMG", img.as_os_str()),
                ("CRASH_SIZE", std::ffi::OsStr::new(&size_arg)),
            ],
            rng,
            span,
        );
        killed += was_killed as u64;
        // Killed after the resize had begun to write (its first write is a
        // header; they all come before the process ends).
        inside +=
            (was_killed && std::fs::read(&img).unwrap() != std::fs::read(template).unwrap()) as u64;
        // Opening for writing replays what the kill left in the log.
        let info = vdisk::open(&img, OpenOptions { writable: true })
            .unwrap()
            .info()
            .unwrap();
        if let Some(vdisk::FormatDetails::Vhdx(v)) = &info.details {
            replayed += (v.log_state == "replayed") as u64;
        }
        assert!(vdisk::check(&img).unwrap().clean, "iteration {iter}");
        let now = read_big(&img);
        let size = now.len() as u64;
        assert!(
            size == BIG || size == target,
            "iteration {iter}: {size} bytes, neither {BIG} nor {target}"
        );
        resized += (size == target) as u64;
        let kept = size.min(BIG) as usize;
        assert!(
            now[..kept] == model[..kept],
            "iteration {iter}: the disk reads differently after a killed resize"
        );
        assert!(
            now[kept..].iter().all(|&b| b == 0),
            "iteration {iter}: the grown part is not zeros"
        );
    }
    eprintln!(
        "{killed} of {ITERATIONS} resizes killed within {span} ms, {inside} of them after the image had changed ({resized} left at the new size, {replayed} finished by replaying the log)"
    );
    assert!(
        inside >= ITERATIONS / 8,
        "only {inside} resizes were killed after the image had changed"
    );
}

#[test]
fn compact_harness_vhdx() {
    let dir = tempfile::tempdir().unwrap();
    // A dynamic VHDX with scattered data and whole blocks of zeros among it,
    // so that compaction drops blocks and moves others; each iteration
    // compacts a fresh copy.
    let template = dir.path().join("vhdx.template");
    vdisk::create(&template, BIG, &vhdx_1m(), false).unwrap();
    let mut model = vec![0u8; BIG as usize];
    scatter(&template, &mut model, 0xc0c0);
    {
        let mut d = vdisk::open(&template, OpenOptions { writable: true }).unwrap();
        for block in (0..BIG).step_by(4 << 20) {
            d.write_at(&vec![0; 1 << 20], block).unwrap();
            model[block as usize..(block + (1 << 20)) as usize].fill(0);
        }
        d.flush().unwrap();
    }
    kill_vhdx_compactions(dir.path(), &template, &model, "", 0xc0ac7);
}

#[test]
fn compact_harness_vhdx_differencing() {
    let dir = tempfile::tempdir().unwrap();
    // A differencing VHDX over a dynamic one: scattered data of its own
    // (some of its blocks partly present), and blocks written whole or in
    // part with what the parent holds there, which compaction drops.
    let base = dir.path().join("base.vhdx");
    vdisk::create(&base, BIG, &vhdx_1m(), false).unwrap();
    let mut parent = vec![0u8; BIG as usize];
    scatter(&base, &mut parent, 0xba5e);
    let template = dir.path().join("child.template");
    vdisk::create_child_as(vdisk::Format::Vhdx, &template, &base, Some(1 << 20), false).unwrap();
    let mut model = parent.clone();
    scatter(&template, &mut model, 0xd1ff);
    {
        let mut d = vdisk::open(&template, OpenOptions { writable: true }).unwrap();
        for (i, block) in (0..BIG).step_by(4 << 20).enumerate() {
            let len = if i % 2 == 0 { 1 << 20 } else { 300 << 10 };
            let range = block as usize..block as usize + len;
            d.write_at(&parent[range.clone()], block).unwrap();
            model[range.clone()].copy_from_slice(&parent[range]);
        }
        d.flush().unwrap();
    }
    kill_vhdx_compactions(dir.path(), &template, &model, " differencing", 0xd1ac7);
}

fn vhdx_1m() -> CreateOptions {
    CreateOptions {
        format: vdisk::Format::Vhdx,
        block_size: Some(1 << 20),
        ..CreateOptions::default()
    }
}

/// Kills compactions of fresh copies of `template` (made in `dir`, beside
/// its parent if it has one) at random moments: each must leave a disk
/// that checks clean and reads as `model` once opened for writing (which
/// replays what the kill left in the log).
fn kill_vhdx_compactions(dir: &Path, template: &Path, model: &[u8], label: &str, seed: u64) {
    let template_bytes = std::fs::read(template).unwrap();
    let img = dir.join("img.vhdx");
    std::fs::copy(template, &img).unwrap();
    assert!(read_big(&img) == model);
    let span = span_of(&[
        ("CRASH_JOB", std::ffi::OsStr::new("compact-vhdx")),
        ("CRASH_IMG", img.as_os_str()),
    ]);
    let compacted = std::fs::metadata(&img).unwrap().len();
    assert!(compacted < template_bytes.len() as u64);
    assert!(read_big(&img) == model);

    let mut rng = seed;
    let (mut killed, mut inside, mut done) = (0, 0, 0);
    for iter in 0..ITERATIONS {
        rng = splitmix(rng);
        std::fs::copy(template, &img).unwrap();
        let was_killed = kill_during("compact-vhdx", &[("CRASH_IMG", img.as_os_str())], rng, span);
        killed += was_killed as u64;
        inside += (was_killed && std::fs::read(&img).unwrap() != template_bytes) as u64;
        // Opening for writing replays what the kill left in the log.
        drop(vdisk::open(&img, OpenOptions { writable: true }).unwrap());
        done += (std::fs::metadata(&img).unwrap().len() == compacted) as u64;
        assert!(vdisk::check(&img).unwrap().clean, "iteration {iter}");
        assert!(
            read_big(&img) == model,
            "iteration {iter}: the disk reads differently after a killed compaction"
        );
    }
    eprintln!(
        "{killed} of {ITERATIONS}{label} VHDX compactions killed within {span} ms, {inside} of them after the image had changed ({done} left compacted)"
    );
    assert!(
        inside >= ITERATIONS / 8,
        "only {inside}{label} compactions were killed after the image had changed"
    );
}

#[test]
fn relink_harness_vhdx() {
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 8 << 20;
    let opts = CreateOptions {
        format: vdisk::Format::Vhdx,
        block_size: Some(1 << 20),
        ..CreateOptions::default()
    };
    let base = dir.path().join("base.vhdx");
    vdisk::create(&base, size, &opts, false).unwrap();
    {
        let mut d = vdisk::open(&base, OpenOptions { writable: true }).unwrap();
        d.write_at(&vec![0xA5; 3 << 20], 1 << 20).unwrap();
        d.flush().unwrap();
    }
    let child = dir.path().join("child.vhdx");
    vdisk::create_child_as(vdisk::Format::Vhdx, &child, &base, Some(1 << 20), false).unwrap();
    {
        let mut c = vdisk::open(&child, OpenOptions { writable: true }).unwrap();
        c.write_at(&vec![0x5A; 1 << 20], 3 << 20).unwrap();
        c.flush().unwrap();
    }
    let model = read_all(&child);
    // The same parent in two places, the second under long folder names so
    // that its locator does not fit where the first one's is.
    let far = dir.path().join("p".repeat(120)).join("q".repeat(120));
    std::fs::create_dir_all(&far).unwrap();
    let (a, b) = (dir.path().join("base-a.vhdx"), far.join("base-b.vhdx"));
    std::fs::copy(&base, &a).unwrap();
    std::fs::rename(&base, &b).unwrap();
    let env = |rounds: &'static str| {
        vec![
            ("CRASH_JOB", std::ffi::OsStr::new("relink-loop")),
            ("CRASH_IMG", child.as_os_str()),
            ("CRASH_A", a.as_os_str()),
            ("CRASH_B", b.as_os_str()),
            ("CRASH_ROUNDS", std::ffi::OsStr::new(rounds)),
        ]
    };
    let span = span_of(&env("40"));
    let mut rng = 0x2e11_u64;
    let (mut killed, mut changed, mut replayed) = (0, 0, 0);
    for iter in 0..ITERATIONS {
        rng = splitmix(rng);
        let before = std::fs::read(&child).unwrap();
        let was_killed = kill_during("relink-loop", &env("1000")[1..], rng, span);
        killed += was_killed as u64;
        changed += (was_killed && std::fs::read(&child).unwrap() != before) as u64;
        // Opening for writing replays what the kill left in the log.
        let info = vdisk::open(&child, OpenOptions { writable: true })
            .unwrap()
            .info()
            .unwrap();
        if let Some(vdisk::FormatDetails::Vhdx(v)) = &info.details {
            replayed += (v.log_state == "replayed") as u64;
        }
        let parent = Path::new(&info.chain[1].file).canonicalize().unwrap();
        assert!(
            parent == a.canonicalize().unwrap() || parent == b.canonicalize().unwrap(),
            "iteration {iter}: the child reads through {}",
            parent.display()
        );
        let report = vdisk::check(&child).unwrap();
        assert!(report.clean, "iteration {iter}: {:?}", report.problems);
        assert!(
            read_all(&child) == model,
            "iteration {iter}: the child reads differently after a killed relink"
        );
    }
    eprintln!(
        "{killed} of {ITERATIONS} relink loops killed within {span} ms, {changed} of them after the child had changed ({replayed} finished by replaying the log)"
    );
    assert!(
        changed >= ITERATIONS / 4,
        "only {changed} relink loops were killed after the child had changed"
    );
}
