//! vmhub writing into VHDs that qemu-img made and qemu-io filled: qemu-img must
//! then read exactly what a byte array given the same writes holds.

mod common;

use std::process::Command;
use vdisk::OpenOptions;

fn write_into_qemu_image(subformat: &str, force_size: &str) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("q.vhd");
    let raw = dir.path().join("q.raw");
    common::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc", "-o"])
            .arg(format!("subformat={subformat},force_size={force_size}"))
            .arg(&img)
            .arg("20M"),
    );
    common::run(
        Command::new("qemu-io")
            .args([
                "-f",
                "vpc",
                "-c",
                "write -P 0x5a 1M 64k",
                "-c",
                "write -P 0x33 4095k 2k",
            ])
            .arg(&img),
    );
    let mut model = common::qemu_contents(&img, &raw);
    {
        let mut d = vdisk::open(&img, OpenOptions { writable: true }).unwrap();
        assert_eq!(
            d.virtual_size(),
            model.len() as u64,
            "vmhub and qemu disagree on the size"
        );
        let size = d.virtual_size();
        let writes: [(u64, usize, u8); 6] = [
            (0, 512, 1),
            (1 << 20, 4096, 2),           // inside qemu's block
            ((2 << 20) - 512, 1024, 3),   // across a block boundary
            (7 << 20, 300 * 1024, 4),     // a fresh block
            (size - 512, 512, 5),         // the last sector
            ((4095 << 10) + 512, 512, 0), // zeros over qemu's data
        ];
        for (off, len, fill) in writes {
            let buf: Vec<u8> = (0..len)
                .map(|i| if fill == 0 { 0 } else { fill ^ i as u8 })
                .collect();
            d.write_at(&buf, off).unwrap();
            model[off as usize..off as usize + len].copy_from_slice(&buf);
        }
        d.flush().unwrap();
    }
    assert!(
        common::qemu_contents(&img, &raw) == model,
        "qemu-img reads other bytes than were written ({subformat}, force_size={force_size})"
    );
    let report = vdisk::check(&img).unwrap();
    assert!(report.clean, "{:?}", report.problems);
}

#[test]
fn dynamic_rounded() {
    write_into_qemu_image("dynamic", "off");
}

#[test]
fn dynamic_exact() {
    write_into_qemu_image("dynamic", "on");
}

#[test]
fn fixed_rounded() {
    write_into_qemu_image("fixed", "off");
}

#[test]
fn fixed_exact() {
    write_into_qemu_image("fixed", "on");
}
