//! The write load of the crash harnesses: a seeded sequence of sector writes
//! with flushes among them, run by a child process that is killed at a random
//! moment, and the check of what the disk holds afterwards.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use vdisk::OpenOptions;

const SECTOR: u64 = 512;

/// A fast, seedable mixer (SplitMix64).
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One write of the load.
pub struct Op {
    /// First sector written.
    pub first: u64,
    /// Sectors written.
    pub sectors: u64,
    /// Whether it writes zeros.
    pub zero: bool,
    /// Whether a flush follows it.
    pub flush_after: bool,
}

/// A seeded write load over a disk of `size` bytes: `ops` writes of 1 to
/// `max_sectors` sectors each, one in 7 of zeros, one in 5 followed by a flush.
#[derive(Clone, Copy)]
pub struct WriteLoad {
    pub size: u64,
    pub max_sectors: u64,
    pub ops: u64,
}

impl WriteLoad {
    /// Op `i` of run `seed`.
    pub fn op(&self, seed: u64, i: u64) -> Op {
        let r = splitmix(seed ^ splitmix(i));
        let sectors = 1 + (r >> 8) % self.max_sectors;
        let first = (r >> 24) % (self.size / SECTOR - sectors + 1);
        Op {
            first,
            sectors,
            zero: r % 7 == 0,
            flush_after: (r >> 4) % 5 == 0,
        }
    }

    /// What op `i` of run `seed` writes into `sector`: distinct for every
    /// (run, op, sector).
    pub fn sector(seed: u64, i: u64, sector: u64, zero: bool) -> Vec<u8> {
        if zero {
            return vec![0; SECTOR as usize];
        }
        let mut s = vec![(seed as u8) ^ (i as u8) ^ (sector as u8) | 1; SECTOR as usize];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..16].copy_from_slice(&i.to_le_bytes());
        s[16..24].copy_from_slice(&sector.to_le_bytes());
        s
    }

    /// The bytes op `i` of run `seed` writes.
    pub fn buffer(&self, seed: u64, i: u64) -> Vec<u8> {
        let o = self.op(seed, i);
        (o.first..o.first + o.sectors)
            .flat_map(|s| Self::sector(seed, i, s, o.zero))
            .collect()
    }

    /// The child's side: writes the ops of run `seed` into `img` until killed,
    /// appending the number of ops done to `ack` after every flush.
    pub fn write_until_killed(&self, img: &Path, ack: &Path, seed: u64) {
        use std::io::Write;
        let mut disk = vdisk::open(img, OpenOptions { writable: true }).unwrap();
        let ack = std::fs::OpenOptions::new().append(true).open(ack).unwrap();
        for i in 0..self.ops {
            let o = self.op(seed, i);
            disk.write_at(&self.buffer(seed, i), o.first * SECTOR)
                .unwrap();
            if o.flush_after {
                disk.flush().unwrap();
                (&ack).write_all(format!("{}\n", i + 1).as_bytes()).unwrap();
            }
        }
        disk.flush().unwrap();
        (&ack)
            .write_all(format!("{}\n", self.ops).as_bytes())
            .unwrap();
    }

    /// The parent's side: runs the ignored test `test` of this binary (which
    /// calls [`WriteLoad::write_until_killed`]) on `img` with run `seed`, kills
    /// it with SIGKILL after 5 to 5 + `max_ms` milliseconds, and returns the
    /// number of ops it acknowledged. A writer that finished must have
    /// succeeded.
    pub fn run_and_kill(&self, test: &str, img: &Path, seed: u64, max_ms: u64) -> u64 {
        let ack = img.with_extension("ack");
        std::fs::write(&ack, b"").unwrap();
        let mut child = spawn_ignored(
            test,
            &[
                ("CRASH_IMG", img.as_os_str()),
                ("CRASH_ACK", ack.as_os_str()),
                ("CRASH_SEED", seed.to_string().as_ref()),
            ],
        );
        std::thread::sleep(std::time::Duration::from_millis(
            5 + splitmix(seed) % max_ms,
        ));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let done = std::fs::read_to_string(&ack)
            .unwrap()
            .lines()
            .filter_map(|l| l.parse().ok())
            .max()
            .unwrap_or(0);
        if done >= self.ops {
            assert!(
                status.success(),
                "seed {seed}: the writer failed without being killed"
            );
        }
        done
    }

    /// Checks what a killed writer left: `got` must hold every op of run
    /// `seed` up to `done` written over `model` and, in sectors later ops
    /// wrote, either that or one of the later versions. Then `model` becomes
    /// `got`, the base of the next run.
    pub fn check_and_advance(
        &self,
        seed: u64,
        done: u64,
        model: &mut Vec<u8>,
        got: Vec<u8>,
        what: &str,
    ) {
        for i in 0..done {
            let o = self.op(seed, i);
            model[(o.first * SECTOR) as usize..((o.first + o.sectors) * SECTOR) as usize]
                .copy_from_slice(&self.buffer(seed, i));
        }
        let mut later: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
        for i in done..self.ops {
            let o = self.op(seed, i);
            for s in o.first..o.first + o.sectors {
                later
                    .entry(s)
                    .or_default()
                    .push(Self::sector(seed, i, s, o.zero));
            }
        }
        assert_eq!(got.len(), model.len(), "{what}: size");
        for s in 0..self.size / SECTOR {
            let r = (s * SECTOR) as usize..((s + 1) * SECTOR) as usize;
            let ok = got[r.clone()] == model[r.clone()]
                || later
                    .get(&s)
                    .is_some_and(|v| v.iter().any(|c| c[..] == got[r.clone()]));
            assert!(ok, "{what} (seed {seed}): sector {s} holds data never written there after the last flush ({done} ops acked)");
        }
        *model = got;
    }
}

/// The run of a child writer, from its environment: (image, ack file, seed),
/// or `None` when the ignored test runs on its own.
pub fn writer_env() -> Option<(std::path::PathBuf, std::path::PathBuf, u64)> {
    let img = std::env::var_os("CRASH_IMG")?;
    let ack = std::env::var_os("CRASH_ACK")?;
    let seed = std::env::var("CRASH_SEED").ok()?.parse().ok()?;
    Some((img.into(), ack.into(), seed))
}

/// Runs the ignored test `test` of this test binary in a child process, with
/// `env` added.
pub fn spawn_ignored(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
