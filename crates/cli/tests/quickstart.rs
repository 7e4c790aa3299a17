//! The README's first command, `scripts/quickstart.sh`, in its check mode:
//! it builds the tiny machine, starts `vmhub serve`, publishes the machine
//! with a minted token, and must find the machine's page answering and a
//! `vmhub pull` from the hub giving back the same disk. It runs this test's
//! own vmhub binary (`VMHUB_BIN`) rather than building another.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tools scripts/tiny-machine.sh builds the machine with.
const TOOLS: &[&str] = &[
    "syslinux",
    "mcopy",
    "mkfs.vfat",
    "mke2fs",
    "debugfs",
    "cpio",
    "sfdisk",
    "curl",
];

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "PATH=\"$PATH:/usr/sbin:/sbin\" command -v {tool} >/dev/null"
        ))
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn quickstart_publishes_a_machine_that_pulls_back_identical() {
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        let why = format!(
            "the quickstart needs {} (scripts/deps.sh installs them)",
            missing.join(", ")
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("quickstart.log");
    let mut child = Command::new("bash")
        .arg(workspace().join("scripts/quickstart.sh"))
        .args(["--check", "--port", "0", "--work"])
        .arg(work.path().join("qs"))
        .env("VMHUB_BIN", env!("CARGO_BIN_EXE_vmhub"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(work.path().join("quickstart.err")).unwrap())
        // Its own process group, so that a timeout ends the hub it started too.
        .process_group(0)
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(600);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let group = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let err = std::fs::read_to_string(work.path().join("quickstart.err")).unwrap_or_default();
    let status = status
        .unwrap_or_else(|| panic!("the quickstart did not finish within {limit:?}\n{out}\n{err}"));
    assert!(
        status.success(),
        "quickstart failed: {status}\n{out}\n{err}"
    );
    assert!(
        out.contains("quickstart: ok") && out.contains("pulled disk identical"),
        "{out}\n{err}"
    );
    // The hub it started has stopped: its data folder holds the database.
    assert!(work.path().join("qs/hub/hub.db").exists());
}
