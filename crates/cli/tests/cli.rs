//! Command-line behaviour that needs no peer: progress and the help text.

use std::process::Command;

fn vmhub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmhub"))
}

#[test]
fn progress_without_a_terminal_prints_lines() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("in.raw");
    std::fs::write(&raw, vec![7u8; 3 << 20]).unwrap();
    let out = vmhub()
        .args(["img", "convert", "--progress"])
        .arg(&raw)
        .arg(dir.path().join("out.vhd"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("converting: 100% (3 MiB of 3 MiB)"),
        "stderr: {err}"
    );

    // Without --progress and without a terminal, nothing is printed.
    let out = vmhub()
        .args(["img", "convert"])
        .arg(&raw)
        .arg(dir.path().join("quiet.vhd"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_flags_are_refused_with_usage() {
    let out = vmhub()
        .args(["img", "create", "x.vhd", "1G", "--type", "sparse"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--type") && err.contains("dynamic"),
        "stderr: {err}"
    );
    assert!(!std::path::Path::new("x.vhd").exists());
}

#[test]
fn check_repair_fixes_a_damaged_footer() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.vhd");
    assert!(vmhub()
        .args(["img", "create"])
        .arg(&img)
        .arg("8M")
        .status()
        .unwrap()
        .success());
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(&[0xff; 4], len - 512 + 64).unwrap();
    let out = vmhub().args(["img", "check"]).arg(&img).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = vmhub()
        .args(["img", "check", "--repair"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("repaired") && err.contains("restored the footer"),
        "stderr: {err}"
    );
    let out = vmhub().args(["img", "check"]).arg(&img).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn bench_counts_its_reads_and_refuses_a_bad_size() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    assert!(vmhub()
        .args(["img", "create"])
        .arg(&base)
        .arg("8M")
        .status()
        .unwrap()
        .success());
    assert!(vmhub()
        .args(["img", "create"])
        .arg(&child)
        .arg("--parent")
        .arg(&base)
        .status()
        .unwrap()
        .success());
    for pattern in ["random", "sequential"] {
        let out = vmhub()
            .args(["img", "bench", "--output", "json", "--count", "300"])
            .args(["--size", "8K", "--pattern", pattern])
            .arg(&child)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["reads"], 300, "{v}");
        assert_eq!(v["read-size"], 8192, "{v}");
        assert_eq!(v["bytes"], 300 * 8192, "{v}");
        assert_eq!(v["pattern"], pattern, "{v}");
        assert!(v["seconds"].as_f64().unwrap() >= 0.0, "{v}");
    }

    // Not a whole number of sectors, too small, too large, larger than the disk.
    for size in ["1000", "256", "32M", "16M"] {
        let out = vmhub()
            .args(["img", "bench", "--size", size])
            .arg(&child)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "--size {size}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--size"), "--size {size}: {err}");
    }
    let out = vmhub()
        .args(["img", "bench", "--count", "0"])
        .arg(&child)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_output_format_follows_the_extension_unless_given() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = |args: &[&std::ffi::OsStr]| {
        let out = vmhub().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let tail_is_footer = |p: &std::path::Path| {
        let b = std::fs::read(p).unwrap();
        b.len() >= 512 && &b[b.len() - 512..b.len() - 504] == b"conectix"
    };
    // create: .img is raw, .vhd is VHD, --format wins over the name.
    ok(&[
        "img".as_ref(),
        "create".as_ref(),
        d.join("a.img").as_os_str(),
        "1M".as_ref(),
    ]);
    assert_eq!(std::fs::metadata(d.join("a.img")).unwrap().len(), 1 << 20);
    ok(&[
        "img".as_ref(),
        "create".as_ref(),
        d.join("a.vhd").as_os_str(),
        "1M".as_ref(),
    ]);
    assert!(tail_is_footer(&d.join("a.vhd")));
    ok(&[
        "img".as_ref(),
        "create".as_ref(),
        d.join("b.raw").as_os_str(),
        "1M".as_ref(),
        "--format".as_ref(),
        "vhd".as_ref(),
    ]);
    assert!(tail_is_footer(&d.join("b.raw")));
    // convert: to .raw gives the plain bytes; to an unknown extension, a VHD.
    ok(&[
        "img".as_ref(),
        "convert".as_ref(),
        d.join("a.vhd").as_os_str(),
        d.join("c.raw").as_os_str(),
    ]);
    assert_eq!(std::fs::metadata(d.join("c.raw")).unwrap().len(), 1 << 20);
    ok(&[
        "img".as_ref(),
        "convert".as_ref(),
        d.join("a.img").as_os_str(),
        d.join("c.disk").as_os_str(),
    ]);
    assert!(tail_is_footer(&d.join("c.disk")));
}
