//! End to end: a tiny real machine (built from Debian packages by
//! scripts/tiny-machine.sh, without mounts or root) is turned into a dynamic
//! VHD and booted with `vmhub run --accel tcg`. The guest prints a marker read
//! from its own disk, writes a file and counts its boots on the disk, and
//! powers off. The file must then be in the instance's differencing disk, and
//! the image that was booted must not have changed by a byte. A second boot
//! goes through a two-level chain. Also: a QEMU that cannot start reports its
//! error at once, and SIGINT stops QEMU and the NBD server cleanly.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const VMHUB: &str = env!("CARGO_BIN_EXE_vmhub");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny machine's image and layout, built into `dir`.
struct Tiny {
    raw: PathBuf,
    marker: String,
    root_offset: u64,
    root_size: u64,
}

fn build_tiny(dir: &Path, marker: &str) -> Tiny {
    // Downloaded packages are kept between runs under target/.
    let cache = workspace().join("target/tiny-machine-cache");
    let out = Command::new("bash")
        .arg(workspace().join("scripts/tiny-machine.sh"))
        .arg(dir)
        .arg(marker)
        .env("VMHUB_CACHE", &cache)
        .output()
        .expect("bash must be installed");
    assert!(
        out.status.success(),
        "scripts/tiny-machine.sh failed (scripts/deps.sh installs what it needs):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = std::fs::read_to_string(dir.join("tiny.env")).unwrap();
    let var = |name: &str| -> String {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from tiny.env"))
            .trim_matches('\'')
            .to_string()
    };
    Tiny {
        raw: dir.join("tiny.raw"),
        marker: var("TINY_MARKER"),
        root_offset: var("TINY_ROOT_OFFSET").parse().unwrap(),
        root_size: var("TINY_ROOT_SIZE").parse().unwrap(),
    }
}

fn vmhub(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = Command::new(VMHUB).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "vmhub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Waits for `child` at most `limit`; kills it and fails past that.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGINT to `child`, as Ctrl-C would, and waits for it to end.
fn interrupt(child: &mut Child) -> ExitStatus {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    wait_bounded(child, Duration::from_secs(30), "vmhub run after SIGINT")
}

/// `vmhub run IMAGE --accel tcg ARGS` (unless ARGS name an accelerator), with
/// the console captured; returns
/// (exit status, console text with CRs removed, stderr).
fn boot(image: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let accel = if args.contains(&"--accel") {
        &[][..]
    } else {
        &["--accel", "tcg"][..]
    };
    let mut all: Vec<&std::ffi::OsStr> = vec![image.as_os_str()];
    all.extend(
        accel
            .iter()
            .chain(&["--memory", "256M"])
            .chain(args)
            .map(std::ffi::OsStr::new),
    );
    run(&all)
}

/// `vmhub run ARGS`, with the console captured and a bounded wait; returns
/// (exit status, console text with CRs removed, stderr).
fn run(args: &[&std::ffi::OsStr]) -> (ExitStatus, String, String) {
    let mut child = Command::new(VMHUB)
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, Duration::from_secs(300), "vmhub run");
    (
        status,
        reader.join().unwrap().replace('\r', ""),
        err_reader.join().unwrap(),
    )
}

/// The file `name` of the guest's root filesystem, read from the chain whose
/// top is `image`: flattened by vmhub, the partition cut out, read by debugfs.
fn guest_file(image: &Path, tiny: &Tiny, dir: &Path, name: &str) -> String {
    let flat = dir.join("flat.raw");
    let _ = std::fs::remove_file(&flat);
    vmhub(&[
        "img".as_ref(),
        "convert".as_ref(),
        "--format".as_ref(),
        "raw".as_ref(),
        image.as_os_str(),
        flat.as_os_str(),
    ]);
    let bytes = std::fs::read(&flat).unwrap();
    let part = &bytes[tiny.root_offset as usize..(tiny.root_offset + tiny.root_size) as usize];
    let root = dir.join("root.img");
    std::fs::write(&root, part).unwrap();
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat /{name}")])
        .arg(&root)
        .output()
        .expect("debugfs (e2fsprogs) must be installed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn boots_a_machine_and_a_chain_without_changing_them() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("marker-{}", std::process::id());
    let tiny = build_tiny(dir.path(), &marker);
    let base = dir.path().join("base.vhd");
    vmhub(&[
        "img".as_ref(),
        "convert".as_ref(),
        tiny.raw.as_os_str(),
        base.as_os_str(),
    ]);
    let base_hash = sha256(&base);

    // First boot: base ← first.
    let first = dir.path().join("first.vhd");
    let (status, console, err) = boot(&base, &["--keep", "--instance", first.to_str().unwrap()]);
    assert!(status.success(), "vmhub run failed: {err}\n{console}");
    assert!(
        console
            .lines()
            .any(|l| l == format!("VMHUB-MARKER: {}", tiny.marker)),
        "no marker line on the console:\n{console}"
    );
    assert!(console.lines().any(|l| l == "VMHUB-BOOT: 1"), "{console}");
    assert!(console.lines().any(|l| l == "VMHUB-DONE"), "{console}");
    assert_eq!(sha256(&base), base_hash, "the booted image changed");
    assert_eq!(
        guest_file(&first, &tiny, dir.path(), "written-by-guest.txt"),
        format!("{} ok", tiny.marker)
    );
    // The guest's writes are in the instance only.
    assert_eq!(
        guest_file(&base, &tiny, dir.path(), "written-by-guest.txt"),
        ""
    );
    vmhub(&["img".as_ref(), "check".as_ref(), first.as_os_str()]);

    // Second boot, through a two-level chain base ← first ← second: the
    // guest finds the first boot's count, from the middle of the chain.
    let first_hash = sha256(&first);
    let second = dir.path().join("second.vhd");
    let (status, console, err) = boot(&first, &["--instance", second.to_str().unwrap()]);
    assert!(status.success(), "vmhub run failed: {err}\n{console}");
    assert!(console.lines().any(|l| l == "VMHUB-BOOT: 2"), "{console}");
    assert!(console
        .lines()
        .any(|l| l == format!("VMHUB-MARKER: {}", tiny.marker)));
    assert_eq!(sha256(&base), base_hash, "the base changed");
    assert_eq!(
        sha256(&first),
        first_hash,
        "the middle of the chain changed"
    );
    assert_eq!(guest_file(&second, &tiny, dir.path(), "boots.txt"), "2");

    // --rm leaves nothing behind.
    let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    // --accel auto boots too: with KVM where a probe guest runs on it, else
    // (as on nested machines whose KVM fails) with TCG, saying so.
    let (status, console, err) = boot(&base, &["--rm", "--accel", "auto"]);
    let kvm_usable = !err.contains("KVM is not usable here");
    assert!(
        status.success() && console.contains("VMHUB-BOOT: 1"),
        "--accel auto (KVM usable: {kvm_usable}): {err}\n{console}"
    );
    let after: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(before.len(), after.len(), "--rm left a file behind");
    assert_eq!(sha256(&base), base_hash);
}

#[test]
fn a_qemu_that_cannot_start_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("empty.vhd");
    vmhub(&[
        "img".as_ref(),
        "create".as_ref(),
        image.as_os_str(),
        "16M".as_ref(),
    ]);
    let (status, _, err) = boot(&image, &["--rm", "--", "-device", "no-such-device"]);
    assert!(!status.success());
    assert!(
        err.contains("no-such-device"),
        "QEMU's own error is not shown: {err}"
    );
    assert!(err.contains("exited with status"), "{err}");
    // A raw image, and a missing one: said before anything starts.
    let raw = dir.path().join("disk.img");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let (status, _, err) = boot(&raw, &["--rm"]);
    assert!(!status.success());
    assert!(
        err.contains("disk.img") && err.contains("vmhub img convert"),
        "{err}"
    );
    std::fs::remove_file(&raw).unwrap();
    let (status, _, err) = boot(&dir.path().join("gone.vhd"), &["--rm"]);
    assert!(!status.success());
    assert!(err.contains("gone.vhd"), "{err}");
    // A QEMU binary that does not exist.
    let (status, _, err) = boot(&image, &["--rm", "--qemu", "/nonexistent/qemu"]);
    assert!(!status.success());
    assert!(err.contains("/nonexistent/qemu"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the image should remain");
}

#[test]
fn uefi_firmware_starts() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("blank.vhd");
    vmhub(&[
        "img".as_ref(),
        "create".as_ref(),
        image.as_os_str(),
        "16M".as_ref(),
    ]);
    // OVMF finds nothing to boot on a blank disk and says so on the serial
    // console, which is vmhub's stdout.
    let console = dir.path().join("console.txt");
    let mut child = Command::new(VMHUB)
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg", "--rm", "--firmware", "uefi"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&console).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let seen = |p: &Path| {
        String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).contains("BdsDxe")
    };
    while !seen(&console) {
        if let Some(s) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("vmhub run --firmware uefi ended with {s}: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "no UEFI boot manager output in 90 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    interrupt(&mut child);
}

#[test]
fn sigint_stops_qemu_and_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("blank.vhd");
    vmhub(&[
        "img".as_ref(),
        "create".as_ref(),
        image.as_os_str(),
        "16M".as_ref(),
    ]);
    let hash = sha256(&image);
    let instance = dir.path().join("inst.vhd");
    // A blank disk does not boot: SeaBIOS waits for ever, until interrupted.
    let mut child = Command::new(VMHUB)
        .arg("run")
        .arg(&image)
        .args(["--accel", "tcg", "--instance"])
        .arg(&instance)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "vmhub run ended early");
    let status = interrupt(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("inst.vhd"), "{status:?}: {err}");
    assert_eq!(sha256(&image), hash);
    vmhub(&["img".as_ref(), "check".as_ref(), instance.as_os_str()]);
    // No QEMU is left running on this instance.
    let ps = Command::new("pgrep")
        .args(["-f", instance.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "a process still uses the instance");
}

/// The SHA-256 of every file under `dir`, one `HASH  PATH` line each, sorted.
fn tree_hashes(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . -type f -exec sha256sum {} + | sort")
        .arg("sh")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `.vhd` files in `dir`.
fn vhds(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "vhd"));
    v.sort();
    v
}

/// A QEMU that notes each command line in `log` and runs the real one.
fn logging_qemu(dir: &Path, log: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join("qemu-logged");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec qemu-system-x86_64 \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// The last command line the logging QEMU was started with.
fn last_qemu_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

#[test]
fn boots_a_library_machine_with_its_own_settings() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("lib-marker-{}", std::process::id());
    let tiny = build_tiny(dir.path(), &marker);
    let home = dir.path().join("library");
    vmhub(&[
        "import".as_ref(),
        tiny.raw.as_os_str(),
        "tiny:1".as_ref(),
        "--memory".as_ref(),
        "256M".as_ref(),
        "--cpus".as_ref(),
        "1".as_ref(),
        "--home".as_ref(),
        home.as_os_str(),
    ]);
    let blobs = tree_hashes(&home.join("blobs"));
    let log = dir.path().join("qemu.log");
    let qemu = logging_qemu(dir.path(), &log);
    let common: Vec<&std::ffi::OsStr> = vec![
        "--accel".as_ref(),
        "tcg".as_ref(),
        "--home".as_ref(),
        home.as_os_str(),
        "--qemu".as_ref(),
        qemu.as_os_str(),
    ];

    // First run: the machine's disk is unpacked into the cache, and its
    // memory and CPUs reach QEMU.
    let mut args: Vec<&std::ffi::OsStr> = vec!["tiny:1".as_ref(), "--rm".as_ref()];
    args.extend(&common);
    let (status, console, err) = run(&args);
    assert!(
        status.success(),
        "vmhub run tiny:1 failed: {err}\n{console}"
    );
    assert!(
        console
            .lines()
            .any(|l| l == format!("VMHUB-MARKER: {}", tiny.marker)),
        "no marker line on the console:\n{console}"
    );
    assert!(console.lines().any(|l| l == "VMHUB-BOOT: 1"), "{console}");
    assert!(console.lines().any(|l| l == "VMHUB-DONE"), "{console}");
    let line = last_qemu_line(&log);
    assert!(
        line.contains("-m 256M") && line.contains("-smp 1"),
        "the machine's settings are not on QEMU's command line: {line}"
    );
    let cached = vhds(&home.join("cache"));
    assert_eq!(cached.len(), 1, "{cached:?}");
    let meta = std::fs::metadata(&cached[0]).unwrap();
    assert!(
        !home.join("instances").exists(),
        "--rm put an instance in the library"
    );

    // Second run: the cache is reused as it is, an option overrides the
    // machine's memory, and the kept instance lands in the library.
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["tiny:1".as_ref(), "--memory".as_ref(), "320M".as_ref()];
    args.extend(&common);
    let (status, console, err) = run(&args);
    assert!(status.success(), "second run failed: {err}\n{console}");
    assert!(console.lines().any(|l| l == "VMHUB-BOOT: 1"), "{console}");
    let line = last_qemu_line(&log);
    assert!(line.contains("-m 320M"), "--memory did not win: {line}");
    assert_eq!(vhds(&home.join("cache")), cached);
    let again = std::fs::metadata(&cached[0]).unwrap();
    assert_eq!(
        (again.ino(), again.mtime(), again.mtime_nsec()),
        (meta.ino(), meta.mtime(), meta.mtime_nsec()),
        "the cached disk was written again"
    );
    let instances = vhds(&home.join("instances"));
    assert_eq!(instances.len(), 1, "{instances:?}");
    let name = instances[0].file_name().unwrap().to_string_lossy();
    assert!(name.starts_with("tiny-1-"), "{name}");
    assert!(err.contains(&*name), "{err}");
    assert_eq!(
        tree_hashes(&home.join("blobs")),
        blobs,
        "the machine's blobs changed"
    );

    // The library folder is copied elsewhere (as to a USB disk) and the
    // original removed: in the copy, the machine still lists, exports and
    // runs, and the instance finds the cached disk by its relative locator.
    let moved = dir.path().join("usb").join("machines");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&home)
        .arg(&moved)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::remove_dir_all(&home).unwrap();
    let listed = vmhub(&["ls".as_ref(), "--home".as_ref(), moved.as_os_str()]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("tiny:1"), "{listed}");
    let exported = dir.path().join("exported.raw");
    vmhub(&[
        "export".as_ref(),
        "tiny:1".as_ref(),
        exported.as_os_str(),
        "--home".as_ref(),
        moved.as_os_str(),
    ]);
    assert!(
        std::fs::read(&exported).unwrap() == std::fs::read(&tiny.raw).unwrap(),
        "the copied library exports other bytes"
    );
    let mut args: Vec<&std::ffi::OsStr> = vec!["tiny:1".as_ref(), "--rm".as_ref()];
    let copied_common: Vec<&std::ffi::OsStr> = vec![
        "--accel".as_ref(),
        "tcg".as_ref(),
        "--home".as_ref(),
        moved.as_os_str(),
        "--qemu".as_ref(),
        qemu.as_os_str(),
    ];
    args.extend(&copied_common);
    let (status, console, err) = run(&args);
    assert!(
        status.success(),
        "run in the copied library failed: {err}\n{console}"
    );
    assert!(console.lines().any(|l| l == "VMHUB-DONE"), "{console}");
    let instance = moved.join("instances").join(&*name);
    assert_eq!(guest_file(&instance, &tiny, dir.path(), "boots.txt"), "1");

    // Once no machine uses it, prune removes the cached disk.
    let home = moved;
    vmhub(&[
        "rm".as_ref(),
        "tiny:1".as_ref(),
        "--home".as_ref(),
        home.as_os_str(),
    ]);
    vmhub(&["prune".as_ref(), "--home".as_ref(), home.as_os_str()]);
    assert_eq!(vhds(&home.join("cache")), Vec::<PathBuf>::new());
}

#[test]
fn a_name_neither_file_nor_machine_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("library");
    let (status, _, err) = run(&[
        "nosuch:1".as_ref(),
        "--rm".as_ref(),
        "--home".as_ref(),
        home.as_os_str(),
    ]);
    assert!(!status.success());
    assert!(
        err.contains("nosuch:1")
            && err.contains("no such image file")
            && err.contains("no machine")
            && err.contains(home.to_str().unwrap()),
        "{err}"
    );
    // Not a machine name either.
    let (status, _, err) = run(&["No Such.vhd".as_ref(), "--home".as_ref(), home.as_os_str()]);
    assert!(!status.success());
    assert!(
        err.contains("No Such.vhd") && err.contains("not a machine name"),
        "{err}"
    );
}
