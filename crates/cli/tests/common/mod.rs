//! Running vmhub and the peers it must agree with, and building disk contents
//! whose every byte the test knows, so that results are checked against a model
//! rather than against whatever a tool happens to print.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const SECTOR: u64 = 512;
pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// vmhub's and QEMU's default dynamic VHD block size.
pub const BLOCK: u64 = 2 * MIB;

/// Peers are part of what these tests check; a machine without them must not
/// report a pass, so a missing peer fails with the package that provides it.
fn package_of(program: &str) -> &'static str {
    match program {
        "qemu-img" | "qemu-io" => "qemu-utils",
        "vhdiinfo" => "libvhdi-utils",
        _ => "its package",
    }
}

fn spawn(program: &str, mut cmd: Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{program}` is not installed or not on PATH: the interop tests compare vmhub \
             with it, so they cannot pass without it (install {}, e.g. `apt-get install {}`)",
            package_of(program),
            package_of(program)
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    }
}

/// What a command did, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn show_args<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Environment every vmhub run of this test binary gets (a settings folder,
/// say), set once by the tests that need it.
pub static VMHUB_ENV: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// A command running the vmhub binary built for this test run.
pub fn vmhub_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmhub"));
    for (k, v) in VMHUB_ENV.get().into_iter().flatten() {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the vmhub binary built for this test run.
pub fn vmhub<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = vmhub_command();
    cmd.args(args);
    spawn("vmhub", cmd)
}

/// Runs vmhub and fails the test unless it exits 0.
pub fn vmhub_ok<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let out = vmhub(args.clone());
    assert!(
        out.status.success(),
        "vmhub {} failed: {}",
        show_args(args),
        describe(&out)
    );
    out
}

/// Runs a peer tool (qemu-img, qemu-io, vhdiinfo).
pub fn peer<I, S>(program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    spawn(program, cmd)
}

/// Runs a peer tool and fails the test unless it exits 0.
pub fn peer_ok<I, S>(program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let out = peer(program, args.clone());
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        show_args(args),
        describe(&out)
    );
    out
}

fn parse_json(what: &str, out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what} did not print JSON ({e}): {}", describe(out)))
}

pub fn vmhub_info(path: &Path) -> Value {
    let args = [
        OsStr::new("img"),
        OsStr::new("info"),
        path.as_os_str(),
        OsStr::new("--output"),
        OsStr::new("json"),
    ];
    parse_json("vmhub img info", &vmhub_ok(args))
}

pub fn vmhub_map(path: &Path) -> Vec<Extent> {
    let args = [
        OsStr::new("img"),
        OsStr::new("map"),
        path.as_os_str(),
        OsStr::new("--output"),
        OsStr::new("json"),
    ];
    let json = parse_json("vmhub img map", &vmhub_ok(args));
    let list = json
        .as_array()
        .unwrap_or_else(|| panic!("vmhub img map printed {json}, not a list of extents"));
    list.iter()
        .map(|e| Extent {
            offset: u64_field(e, "offset"),
            length: u64_field(e, "length"),
            kind: e["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("extent {e} has no string `kind`"))
                .to_owned(),
        })
        .collect()
}

/// `qemu-img info` always with `-f vpc`: its probe looks only at offset 0 and
/// would call a fixed VHD raw.
pub fn qemu_info(path: &Path) -> Value {
    let args = [
        OsStr::new("info"),
        OsStr::new("-f"),
        OsStr::new("vpc"),
        OsStr::new("--output"),
        OsStr::new("json"),
        path.as_os_str(),
    ];
    parse_json("qemu-img info", &peer_ok("qemu-img", args))
}

pub fn u64_field(json: &Value, key: &str) -> u64 {
    json[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no unsigned integer `{key}` in {json}"))
}

pub fn str_field<'a>(json: &'a Value, key: &str) -> &'a str {
    json[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{key}` in {json}"))
}

/// What vhdiinfo reports, parsed from its text output.
pub struct VhdiInfo {
    pub media_size: u64,
    pub disk_type: String,
}

pub fn vhdiinfo(path: &Path) -> VhdiInfo {
    let out = peer_ok("vhdiinfo", [path]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let value_of = |label: &str| -> String {
        text.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == label).then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("vhdiinfo printed no `{label}` line:\n{text}"))
    };
    // "Media size : 50 MiB (52428800 bytes)": the exact figure is in parentheses.
    let media = value_of("Media size");
    let media_size = media
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(" bytes)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read a byte count from vhdiinfo's `{media}`"));
    VhdiInfo {
        media_size,
        disk_type: value_of("Disk type"),
    }
}

/// One `qemu-io` write: a pattern byte over a range.
#[derive(Clone, Copy, Debug)]
pub struct Write {
    pub pattern: u8,
    pub offset: u64,
    pub len: u64,
}

/// Writes through qemu-io and checks that each write was acknowledged in full,
/// so a write that was refused or cut short cannot pass as data to compare.
pub fn qemu_io_write(path: &Path, writes: &[Write]) {
    let mut args: Vec<String> = vec!["-f".into(), "vpc".into()];
    for w in writes {
        args.push("-c".into());
        args.push(format!(
            "write -P {:#04x} {} {}",
            w.pattern, w.offset, w.len
        ));
    }
    args.push(path.to_string_lossy().into_owned());
    let out = peer_ok("qemu-io", &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for w in writes {
        let line = format!("wrote {}/{} bytes at offset {}", w.len, w.len, w.offset);
        assert!(
            stdout.contains(&line),
            "qemu-io did not confirm {w:?} on {}: {}",
            path.display(),
            describe(&out)
        );
    }
}

/// Checks that a raw file holds each write's pattern and zeros on both sides of
/// it, so a reader that shifted, dropped or smeared data is caught.
pub fn assert_raw_holds_writes(raw: &Path, writes: &[Write]) {
    let file = File::open(raw).unwrap_or_else(|e| panic!("{}: {e}", raw.display()));
    let size = file.metadata().unwrap().len();
    for w in writes {
        let got = read_at(&file, w.offset, w.len as usize);
        if let Some(i) = got.iter().position(|&b| b != w.pattern) {
            panic!(
                "{}: byte {} is {:#04x}, expected {:#04x} written by {w:?}",
                raw.display(),
                w.offset + i as u64,
                got[i],
                w.pattern
            );
        }
        if w.offset > 0 {
            let before = read_at(&file, w.offset - 1, 1)[0];
            assert_eq!(
                before,
                0,
                "{}: byte {} just before {w:?} is not zero",
                raw.display(),
                w.offset - 1
            );
        }
        if w.offset + w.len < size {
            let after = read_at(&file, w.offset + w.len, 1)[0];
            assert_eq!(
                after,
                0,
                "{}: byte {} just after {w:?} is not zero",
                raw.display(),
                w.offset + w.len
            );
        }
    }
}

pub fn read_at(file: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("reading {len} bytes at {offset}: {e}"));
    buf
}

pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all_at(bytes, offset)
        .unwrap_or_else(|e| panic!("{}: writing at {offset}: {e}", path.display()));
}

/// Bytes the file system holds for a file, to tell holes from written zeros.
pub fn host_allocated(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .blocks()
        * 512
}

/// Fails with the first differing offset unless the file holds exactly `expected`.
pub fn assert_file_equals(path: &Path, expected: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        got.len(),
        expected.len(),
        "{} is {} bytes, expected {}",
        path.display(),
        got.len(),
        expected.len()
    );
    if let Some(i) = got.iter().zip(expected).position(|(a, b)| a != b) {
        panic!(
            "{} differs from the expected contents at offset {i}: {:#04x} instead of {:#04x}",
            path.display(),
            got[i],
            expected[i]
        );
    }
}

/// Runs `qemu-img compare` with both formats given, and returns its exit code.
pub fn qemu_compare(fmt_a: &str, a: &Path, fmt_b: &str, b: &Path) -> Output {
    let args = [
        OsStr::new("compare"),
        OsStr::new("-f"),
        OsStr::new(fmt_a),
        OsStr::new("-F"),
        OsStr::new(fmt_b),
        a.as_os_str(),
        b.as_os_str(),
    ];
    peer("qemu-img", args)
}

pub fn assert_qemu_equal(fmt_a: &str, a: &Path, fmt_b: &str, b: &Path) {
    let out = qemu_compare(fmt_a, a, fmt_b, b);
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img compare -f {fmt_a} -F {fmt_b} {} {} does not find them equal: {}",
        a.display(),
        b.display(),
        describe(&out)
    );
}

/// One entry of `vmhub img map --output json`.
#[derive(Debug)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub kind: String,
}

/// Checks that a map tiles the disk from 0 to `size` with known kinds, and
/// returns the indexes of the blocks that hold any `data` extent.
pub fn data_blocks(map: &[Extent], size: u64, block: u64) -> BTreeSet<u64> {
    let mut next = 0;
    let mut blocks = BTreeSet::new();
    for e in map {
        assert_eq!(e.offset, next, "map has a gap or overlap before {e:?}");
        assert!(e.length > 0, "map has an empty extent {e:?}");
        assert!(
            ["data", "zero", "unallocated"].contains(&e.kind.as_str()),
            "map has an extent of unknown kind {e:?}"
        );
        if e.kind == "data" {
            blocks.extend(e.offset / block..=(e.offset + e.length - 1) / block);
        }
        next = e.offset + e.length;
    }
    assert_eq!(next, size, "map ends at {next}, the disk at {size}");
    blocks
}

/// Deterministic pseudo-random bytes (SplitMix64), so that a failure reproduces
/// from the same seed without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Temporary paths are ASCII, and `&str` lets paths and flags share one argument list.
pub fn p(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
}

/// `vmhub serve` run as a process on a free port of 127.0.0.1. Dropped while
/// it still runs, it gets SIGTERM and is waited for.
#[allow(dead_code)]
pub struct Served {
    /// The process.
    pub child: std::process::Child,
    /// `HOST:PORT` it listens on.
    pub addr: String,
    /// The first line it printed (the one with the address).
    pub line: String,
}

#[allow(dead_code)]
impl Served {
    /// `vmhub serve --listen 127.0.0.1:0 --data DATA EXTRA…`.
    pub fn start(data: &Path, extra: &[&str]) -> Served {
        let mut cmd = vmhub_command();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data", p(data)])
            .args(extra);
        Served::spawn(cmd)
    }

    /// Runs `cmd`, a `vmhub serve` on port 0, and reads the address it prints.
    pub fn spawn(mut cmd: Command) -> Served {
        use std::io::{BufRead, BufReader};
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Served { child, addr, line }
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, signal);
    }

    /// Stops it with SIGTERM; it must exit cleanly.
    pub fn stop(mut self) {
        self.signal(rustix::process::Signal::TERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "vmhub serve ended with {status}");
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.signal(rustix::process::Signal::KILL);
        self.child.wait().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(rustix::process::Signal::TERM);
            let _ = self.child.wait();
        }
    }
}

#[allow(dead_code)]
/// Runs `cmd` (a vmhub command) as `vmhub login ADDR --username USER
/// --password-stdin`, with `secret` on its standard input.
pub fn login_with(mut cmd: Command, addr: &str, user: &str, secret: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .args(["login", addr, "--username", user, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(secret.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A settings folder for every vmhub run of a test process (through
/// [`VMHUB_ENV`]): its own signing key, made once. It lives in the build's
/// scratch folder, not the system's temporary one (a static is never
/// dropped, so it is not removed at exit); those of earlier runs, an hour
/// old or more, are removed when the next is made.
pub fn settings() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmhub-test-settings");
        std::fs::create_dir_all(&root).unwrap();
        for e in std::fs::read_dir(&root).unwrap().flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
            if old {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = tempfile::tempdir_in(&root).unwrap().keep();
        let out = Command::new(env!("CARGO_BIN_EXE_vmhub"))
            .args(["key", "generate"])
            .env("VMHUB_CONFIG", &dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        VMHUB_ENV
            .set(vec![("VMHUB_CONFIG".into(), p(&dir).to_string())])
            .unwrap();
        dir
    });
    dir
}

/// The JSON a command printed.
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(out)))
}

/// Exports `r` from library `home` as raw and checks it equals `image`.
pub fn assert_exports(home: &Path, r: &str, image: &[u8]) {
    let out = home.with_extension(format!("{}.raw", r.replace(['/', ':'], "_")));
    vmhub_ok(["export", r, p(&out), "--home", p(home), "--force"]);
    assert_file_equals(&out, image);
    std::fs::remove_file(out).unwrap();
}

/// Mints a token with `vmhub serve --data DATA --create-token USER`, a
/// `--scope` per scope and the `extra` arguments (a database, say); returns
/// the secret.
pub fn mint_token(data: &Path, user: &str, scopes: &[&str], extra: &[String]) -> String {
    let mut args = vec![
        "serve".to_string(),
        "--data".into(),
        p(data).into(),
        "--create-token".into(),
        user.into(),
    ];
    for s in scopes {
        args.push("--scope".into());
        args.push(s.to_string());
    }
    args.extend_from_slice(extra);
    let out = vmhub_ok(args);
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("vmhub_"), "{secret:?}");
    secret
}
