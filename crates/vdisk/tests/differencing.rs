//! Differencing VHDs: reads fall through to the parent sector by sector, writes
//! go only to the child, the parent's bytes never change, and the chain opens
//! by its relative locator after being moved, and not over a wrong parent.

use std::path::Path;
use std::process::Command;
use vdisk::{CreateOptions, OpenOptions};

mod common;

const SIZE: u64 = 10 << 20;

fn fill(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed ^ (i as u8).wrapping_mul(31) | 1)
        .collect()
}

/// A parent with data, and its contents.
fn parent(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("base.vhd");
    vdisk::create(&path, SIZE, &CreateOptions::default(), false).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let mut d = vdisk::open(&path, OpenOptions { writable: true }).unwrap();
    for (off, len, seed) in [(0u64, 3 << 20, 1u8), ((5 << 20) + 512, 100_000, 2)] {
        let b = fill(len, seed);
        d.write_at(&b, off).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&b);
    }
    d.flush().unwrap();
    (path, model)
}

fn read_all(path: &Path) -> Vec<u8> {
    let d = vdisk::open(path, OpenOptions::default()).unwrap();
    let mut b = vec![0u8; d.virtual_size() as usize];
    d.read_at(&mut b, 0).unwrap();
    b
}

#[test]
fn child_reads_through_and_writes_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mut model) = parent(dir.path());
    let base_bytes = std::fs::read(&base).unwrap();
    let child = dir.path().join("child.vhd");
    vdisk::create_child(&child, &base, 2 << 20, false).unwrap();
    assert!(
        read_all(&child) == model,
        "a new child must read as its parent"
    );

    let mut d = vdisk::open(&child, OpenOptions { writable: true }).unwrap();
    assert_eq!(d.virtual_size(), SIZE);
    let writes: [(u64, usize, u8); 6] = [
        (100, 50, 7),               // inside one sector, over parent data
        ((2 << 20) - 700, 1500, 8), // across a block boundary, unaligned
        (4 << 20, 4096, 9),         // a block the parent never wrote
        ((5 << 20) + 1024, 512, 0), // zeros over parent data must hide it
        (SIZE - 512, 512, 10),      // the last sector
        (1 << 20, 70_000, 11),      // a long run in an allocated block
    ];
    for (i, &(off, len, seed)) in writes.iter().enumerate() {
        let b = if seed == 0 {
            vec![0; len]
        } else {
            fill(len, seed)
        };
        d.write_at(&b, off).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&b);
        if i == 2 {
            d.flush().unwrap();
        }
    }
    let mut got = vec![0u8; SIZE as usize];
    d.read_at(&mut got, 0).unwrap();
    assert!(got == model, "reads before flush differ");
    d.flush().unwrap();
    drop(d);

    assert!(read_all(&child) == model, "reads after reopening differ");
    assert!(
        std::fs::read(&base).unwrap() == base_bytes,
        "the parent changed"
    );
    let report = vdisk::check(&child).unwrap();
    assert!(report.clean, "{:?}", report.problems);

    // Converting the child flattens the chain.
    let flat = dir.path().join("flat.raw");
    let src = vdisk::open(&child, OpenOptions::default()).unwrap();
    vdisk::ops::convert::convert(
        src.as_ref(),
        &flat,
        &CreateOptions {
            format: vdisk::Format::Raw,
            ..Default::default()
        },
        false,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(
        std::fs::read(&flat).unwrap() == model,
        "the flattened disk differs"
    );

    // The chain in info, child first.
    let info = src.info().unwrap();
    let chain: Vec<&str> = info.chain.iter().map(|c| c.kind).collect();
    assert_eq!(chain, ["differencing", "dynamic"]);
    assert!(info.chain[1].file.ends_with("base.vhd"));
}

#[test]
fn grandchild_and_moved_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mut model) = parent(dir.path());
    let mid = dir.path().join("mid.vhd");
    vdisk::create_child(&mid, &base, 512 << 10, false).unwrap();
    {
        let mut d = vdisk::open(&mid, OpenOptions { writable: true }).unwrap();
        let b = fill(9000, 5);
        d.write_at(&b, 3 << 20).unwrap();
        model[3 << 20..(3 << 20) + 9000].copy_from_slice(&b);
        d.flush().unwrap();
    }
    let top = dir.path().join("top.vhd");
    vdisk::create_child(&top, &mid, 2 << 20, false).unwrap();
    {
        let mut d = vdisk::open(&top, OpenOptions { writable: true }).unwrap();
        let b = fill(1000, 6);
        d.write_at(&b, (3 << 20) + 4000).unwrap();
        model[(3 << 20) + 4000..(3 << 20) + 5000].copy_from_slice(&b);
        d.flush().unwrap();
    }
    assert!(read_all(&top) == model);

    // Move the whole chain: the absolute locators now point nowhere; the
    // relative ones still find the parents.
    let moved = dir.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    for f in ["base.vhd", "mid.vhd", "top.vhd"] {
        std::fs::rename(dir.path().join(f), moved.join(f)).unwrap();
    }
    assert!(
        read_all(&moved.join("top.vhd")) == model,
        "the moved chain reads differently"
    );
    let info = vdisk::open(&moved.join("top.vhd"), OpenOptions::default())
        .unwrap()
        .info()
        .unwrap();
    assert_eq!(info.chain.len(), 3);
    assert!(
        info.chain.iter().all(|c| c.file.contains("/moved/")),
        "{:?}",
        info.chain
    );
}

#[test]
fn missing_and_wrong_parents_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = parent(dir.path());
    let child = dir.path().join("child.vhd");
    vdisk::create_child(&child, &base, 2 << 20, false).unwrap();

    // Another disk in the parent's place has another unique id.
    std::fs::rename(&base, dir.path().join("real.vhd")).unwrap();
    vdisk::create(&base, SIZE, &CreateOptions::default(), false).unwrap();
    let e = vdisk::open(&child, OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("child.vhd") && e.contains("wrong parent") && e.contains("base.vhd"),
        "{e}"
    );

    std::fs::remove_file(&base).unwrap();
    let e = vdisk::open(&child, OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("child.vhd") && e.contains("parent not found") && e.contains("base.vhd"),
        "{e}"
    );
}

#[test]
fn libvhdi_reads_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = parent(dir.path());
    let child = dir.path().join("child.vhd");
    vdisk::create_child(&child, &base, 2 << 20, false).unwrap();
    let out = Command::new("vhdiinfo")
        .arg(&child)
        .output()
        .expect("vhdiinfo must be installed (Debian libvhdi-utils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vhdiinfo failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Differential") || text.contains("Differencing"),
        "{text}"
    );
    assert!(text.contains(&SIZE.to_string()), "{text}");
    assert!(text.contains("base.vhd"), "{text}");
}

#[test]
fn qemu_sees_the_childs_own_sectors() {
    // QEMU reads a differencing VHD as a dynamic one: its own sectors must be
    // where QEMU looks for them.
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = parent(dir.path());
    let child = dir.path().join("child.vhd");
    vdisk::create_child(&child, &base, 2 << 20, false).unwrap();
    let mut d = vdisk::open(&child, OpenOptions { writable: true }).unwrap();
    let b = fill(65536, 3);
    d.write_at(&b, 6 << 20).unwrap();
    d.flush().unwrap();
    drop(d);
    let q = common::qemu_contents(&child, &dir.path().join("q.raw"));
    assert!(q[6 << 20..(6 << 20) + 65536] == b[..]);
}

#[test]
fn relink_follows_a_moved_parent_and_refuses_a_stranger() {
    let dir = tempfile::tempdir().unwrap();
    let (base, model) = parent(dir.path());
    let child = dir.path().join("child.vhd");
    vdisk::create_child(&child, &base, 2 << 20, false).unwrap();
    let elsewhere = dir.path().join("store");
    std::fs::create_dir(&elsewhere).unwrap();
    let moved = elsewhere.join("renamed-base.vhd");
    std::fs::rename(&base, &moved).unwrap();
    assert!(vdisk::open(&child, OpenOptions::default()).is_err());

    // A different disk of the same size is refused without --force.
    let stranger = dir.path().join("stranger.vhd");
    vdisk::create(&stranger, SIZE, &CreateOptions::default(), false).unwrap();
    let e = vdisk::relink(&child, &stranger, false)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unique id") && e.contains("stranger.vhd"), "{e}");

    assert!(vdisk::relink(&child, &moved, false).unwrap().is_empty());
    assert!(
        read_all(&child) == model,
        "the relinked child reads differently"
    );
    let report = vdisk::check(&child).unwrap();
    assert!(report.clean, "{:?}", report.problems);
    let info = vdisk::open(&child, OpenOptions::default())
        .unwrap()
        .info()
        .unwrap();
    assert!(
        info.chain[1].file.ends_with("store/renamed-base.vhd"),
        "{:?}",
        info.chain
    );

    // Writes after a relink still go where they belong.
    let mut d = vdisk::open(&child, OpenOptions { writable: true }).unwrap();
    d.write_at(&[0xaa; 4096], 8 << 20).unwrap();
    d.flush().unwrap();
    drop(d);
    let mut expect = model.clone();
    expect[8 << 20..(8 << 20) + 4096].fill(0xaa);
    assert!(read_all(&child) == expect);
    assert!(vdisk::check(&child).unwrap().clean);

    // --force links to another disk, says so, and the child adopts its id.
    let w = vdisk::relink(&child, &stranger, true).unwrap();
    assert!(w.iter().any(|w| w.contains("unique id")), "{w:?}");
    let got = read_all(&child);
    assert!(got[8 << 20..(8 << 20) + 4096].iter().all(|&b| b == 0xaa));
    assert!(
        got[..4096].iter().all(|&b| b == 0),
        "the stranger's (empty) data shows through"
    );
}

#[test]
fn a_looping_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = parent(dir.path());
    let b = dir.path().join("b.vhd");
    let c = dir.path().join("c.vhd");
    vdisk::create_child(&b, &base, 2 << 20, false).unwrap();
    vdisk::create_child(&c, &b, 2 << 20, false).unwrap();
    // Make b's parent c: c → b → c → …
    vdisk::relink(&b, &c, true).unwrap();
    let e = vdisk::open(&c, OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("loops"), "{e}");
}

/// base ← mid ← top, each with data of its own; returns the paths and what top reads.
fn three_layers(
    dir: &Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
    Vec<u8>,
) {
    let (base, mut model) = parent(dir);
    let mid = dir.join("mid.vhd");
    let top = dir.join("top.vhd");
    vdisk::create_child(&mid, &base, 512 << 10, false).unwrap();
    for (path, off, len, seed) in [
        (&mid, (1 << 20) + 100, 300_000usize, 21u8),
        (&top, (1 << 20) + 5000, 4000, 22),
    ] {
        if path == &top {
            vdisk::create_child(&top, &mid, 2 << 20, false).unwrap();
        }
        let mut d = vdisk::open(path, OpenOptions { writable: true }).unwrap();
        let b = fill(len, seed);
        d.write_at(&b, off).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&b);
        // Zeros that hide the base's data must survive a merge too.
        d.write_at(&vec![0; 700], 5 << 20).unwrap();
        model[5 << 20..(5 << 20) + 700].fill(0);
        d.flush().unwrap();
    }
    (base, mid, top, model)
}

#[test]
fn merge_into_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mid, top, model) = three_layers(dir.path());
    let base_bytes = std::fs::read(&base).unwrap();
    let m = vdisk::vhd::merge::merge(&top, None, &mut |_, _| {}).unwrap();
    assert_eq!(m.target, std::fs::canonicalize(&mid).unwrap());
    assert!(!top.exists(), "the merged child is still there");
    assert!(
        read_all(&mid) == model,
        "the parent does not read as the child did"
    );
    assert!(
        std::fs::read(&base).unwrap() == base_bytes,
        "the base changed"
    );
    assert!(vdisk::check(&mid).unwrap().clean);
}

#[test]
fn merge_into_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mid, top, model) = three_layers(dir.path());
    vdisk::vhd::merge::merge(&top, Some(&base), &mut |_, _| {}).unwrap();
    assert!(!top.exists() && !mid.exists());
    assert!(read_all(&base) == model);
    assert!(vdisk::check(&base).unwrap().clean);
    // The base is a plain dynamic disk again: QEMU agrees.
    assert!(common::qemu_contents(&base, &dir.path().join("q.raw")) == model);
    let e = vdisk::vhd::merge::merge(&base, None, &mut |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a differencing disk"), "{e}");
}

#[test]
fn merge_refuses_to_orphan_siblings_unless_allowed() {
    use vdisk::vhd::merge::{merge, merge_with, MergeOptions};
    let dir = tempfile::tempdir().unwrap();
    let (base, mid, top, model) = three_layers(dir.path());
    // A second child of the base, and a child of the top disk, beside the chain.
    let sibling = dir.path().join("sibling.vhd");
    vdisk::create_child(&sibling, &base, 512 << 10, false).unwrap();
    let before = std::fs::read(&mid).unwrap();
    let e = merge(&top, Some(&base), &mut |_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("sibling.vhd") && e.contains("depend"), "{e}");
    assert!(top.exists() && std::fs::read(&mid).unwrap() == before);
    // Merging top into mid changes mid only: the base's other child is fine,
    // but a child of top would lose its parent.
    let grandchild = dir.path().join("grandchild.vhd");
    vdisk::create_child(&grandchild, &top, 512 << 10, false).unwrap();
    let e = merge(&top, None, &mut |_, _| {}).err().unwrap().to_string();
    assert!(
        e.contains("grandchild.vhd") && !e.contains("sibling.vhd"),
        "{e}"
    );
    let options = MergeOptions {
        allow_orphans: true,
        ..MergeOptions::default()
    };
    let m = merge_with(&top, options, &mut |_, _| {}).unwrap();
    assert_eq!(
        m.orphaned,
        vec![std::fs::canonicalize(&grandchild).unwrap()]
    );
    assert!(read_all(&mid) == model);
}

#[test]
fn check_finds_broken_parent_links() {
    use std::os::unix::fs::FileExt;
    use vdisk::vhd::header::DynamicHeader;
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = parent(dir.path());
    let child = dir.path().join("child.vhd");
    vdisk::create_child(&child, &base, 2 << 20, false).unwrap();
    let pristine = std::fs::read(&child).unwrap();
    let damage = |change: &dyn Fn(&mut DynamicHeader), expect: &[&str]| {
        std::fs::write(&child, &pristine).unwrap();
        let mut h = DynamicHeader::decode(&pristine[512..1536]).unwrap();
        change(&mut h);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&child)
            .unwrap();
        f.write_all_at(&h.encode(), 512).unwrap();
        let r = vdisk::check(&child).unwrap();
        assert!(!r.clean, "{expect:?} not found");
        assert!(
            r.problems
                .iter()
                .any(|p| expect.iter().all(|e| p.message.contains(e))),
            "{expect:?} not in {:?}",
            r.problems
        );
    };
    damage(
        &|h| h.locators[1].platform_code = h.locators[0].platform_code,
        &["second", "W2ku"],
    );
    damage(
        &|h| h.locators[0].platform_data_offset = 1 << 40,
        &["locator 0", "outside the file"],
    );
    damage(
        &|h| h.parent_unicode_name = vdisk::vhd::locator::encode_parent_name("other.vhd").unwrap(),
        &["names \"base.vhd\"", "other.vhd"],
    );
    damage(&|h| h.parent_unique_id = [0; 16], &["parent unique id"]);
    std::fs::write(&child, &pristine).unwrap();
    assert!(vdisk::check(&child).unwrap().clean);
}
