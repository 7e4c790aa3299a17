//! `vmhub img bench`: time reads of an image, in the spirit of `qemu-img bench`.
//!
//! The offsets are computed apart from the reading, so that the same arguments
//! read the same offsets on every run and every image of the same size.

use crate::img::Output;
use crate::size::{human, parse_size};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use vdisk::{OpenOptions, SECTOR};

/// The largest read: large enough for any request a guest makes, small enough
/// that the buffer is no concern.
const MAX_READ: u64 = 16 << 20;

/// Arguments of `img bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The image (a differencing disk reads through its chain).
    file: PathBuf,
    /// Number of reads.
    #[arg(long, default_value_t = 75_000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Bytes per read: a multiple of 512, from 512 bytes to 16M.
    #[arg(long, value_parser = parse_size, default_value = "4K")]
    size: u64,
    /// Where the reads go: offsets drawn uniformly over the disk, or one after another.
    #[arg(long, value_enum, default_value_t = Pattern::Random)]
    pattern: Pattern,
    /// Seed of the random offsets; the same seed reads the same offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How to print the results.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

/// The order of the reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Offsets drawn uniformly from the aligned slots of the disk.
    Random,
    /// Slot after slot from the start, wrapping at the end of the disk.
    Sequential,
}

/// What a run measured, as `--output json` prints it.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Report {
    file: String,
    pattern: Pattern,
    seed: Option<u64>,
    read_size: u64,
    reads: u64,
    bytes: u64,
    seconds: f64,
    iops: f64,
    mb_per_s: f64,
}

/// Runs `img bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    let BenchArgs {
        file,
        count,
        size,
        pattern,
        seed,
        output,
    } = args;
    if !(SECTOR..=MAX_READ).contains(&size) || size % SECTOR != 0 {
        bail!(
            "--size {size}: a read must be a multiple of {SECTOR} bytes, from {SECTOR} bytes to {}",
            human(MAX_READ)
        );
    }
    let disk = vdisk::open(&file, OpenOptions::default())?;
    let disk_size = disk.virtual_size();
    if size > disk_size {
        bail!(
            "--size {size}: larger than {}, which is {disk_size} bytes",
            file.display()
        );
    }
    let Some(bytes) = count.checked_mul(size) else {
        bail!("--count {count} of --size {size}: more bytes than can be counted");
    };
    let mut offsets = Offsets::new(pattern, seed, size, disk_size);
    let mut buf = vec![0u8; size as usize];
    let start = Instant::now();
    for _ in 0..count {
        disk.read_at(&mut buf, offsets.next_offset())?;
    }
    let seconds = start.elapsed().as_secs_f64();
    // A run too short for the clock reports no rate rather than infinity.
    let per_second = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let report = Report {
        file: file.display().to_string(),
        pattern,
        seed: (pattern == Pattern::Random).then_some(seed),
        read_size: size,
        reads: count,
        bytes,
        seconds,
        iops: per_second(count),
        mb_per_s: per_second(bytes) / 1e6,
    };
    print_report(&report, output)
}

fn print_report(r: &Report, output: Output) -> Result<()> {
    match output {
        Output::Json => out!("{}", serde_json::to_string_pretty(r)?),
        Output::Human => {
            let order = match r.seed {
                Some(seed) => format!("random, seed {seed}"),
                None => "sequential".to_string(),
            };
            out!(
                "Read {} × {} ({order}) from {}",
                r.reads,
                human(r.read_size),
                r.file
            );
            out!("reads:   {}", r.reads);
            out!("bytes:   {} ({})", r.bytes, human(r.bytes));
            out!("seconds: {:.6}", r.seconds);
            out!("IOPS:    {:.0}", r.iops);
            out!("MB/s:    {:.1}", r.mb_per_s);
        }
    }
    Ok(())
}

/// The offsets of the reads: multiples of the read size that leave room for a
/// whole read before the end of the disk.
struct Offsets {
    pattern: Pattern,
    rng: SplitMix64,
    size: u64,
    /// Aligned places a read fits in (at least 1).
    slots: u64,
    next: u64,
}

impl Offsets {
    fn new(pattern: Pattern, seed: u64, size: u64, disk_size: u64) -> Offsets {
        Offsets {
            pattern,
            rng: SplitMix64(seed),
            size,
            slots: (disk_size / size).max(1),
            next: 0,
        }
    }

    fn next_offset(&mut self) -> u64 {
        let slot = match self.pattern {
            // Lemire's multiply-shift: uniform up to a bias of slots / 2^64.
            Pattern::Random => {
                ((u128::from(self.rng.next_u64()) * u128::from(self.slots)) >> 64) as u64
            }
            Pattern::Sequential => {
                let s = self.next;
                self.next = (s + 1) % self.slots;
                s
            }
        };
        slot * self.size
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a small, fast generator whose
/// output is the same on every platform, which is all a benchmark's offsets need.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pattern: Pattern, seed: u64, size: u64, disk_size: u64, n: usize) -> Vec<u64> {
        let mut o = Offsets::new(pattern, seed, size, disk_size);
        (0..n).map(|_| o.next_offset()).collect()
    }

    #[test]
    fn sequential_steps_and_wraps() {
        let got = offsets(Pattern::Sequential, 0, 4096, 3 * 4096 + 100, 5);
        assert_eq!(got, [0, 4096, 8192, 0, 4096]);
    }

    #[test]
    fn random_offsets_are_aligned_inside_and_spread() {
        let size = 4096;
        let disk = 1 << 30;
        let got = offsets(Pattern::Random, 7, size, disk, 10_000);
        assert!(got.iter().all(|&o| o % size == 0 && o + size <= disk));
        // Each quarter of the disk gets about a quarter of the reads.
        for q in 0..4 {
            let n = got.iter().filter(|&&o| o / (disk / 4) == q).count();
            assert!((2_200..2_800).contains(&n), "quarter {q}: {n} reads");
        }
    }

    #[test]
    fn the_same_seed_reads_the_same_offsets() {
        let a = offsets(Pattern::Random, 42, 512, 1 << 20, 100);
        assert_eq!(a, offsets(Pattern::Random, 42, 512, 1 << 20, 100));
        assert_ne!(a, offsets(Pattern::Random, 43, 512, 1 << 20, 100));
    }

    #[test]
    fn splitmix64_matches_the_reference() {
        // The first outputs for seed 1234567 of the reference splitmix64.c.
        let mut r = SplitMix64(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }
}
