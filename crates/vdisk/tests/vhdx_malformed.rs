//! Hostile VHDX images: a corpus of small valid images each broken in one way
//! (checksums recomputed wherever the checksum is not the thing broken), and
//! random damage to the metadata of a valid image. Nothing may panic or
//! allocate wildly; every error names the file; `open` refuses with the
//! structure and field, or gives a disk whose reads fail cleanly; `check`
//! names the broken structure.

mod corpus;

use corpus::exercise::exercise;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use vdisk::vhdx::bat;
use vdisk::vhdx::fields::crc32c_skip;
use vdisk::vhdx::header::{
    Header, RegionTable, BAT_REGION, HEADER_OFFSETS, METADATA_REGION, REGION_OFFSETS,
};
use vdisk::vhdx::log;
use vdisk::{CreateOptions, Format, ImageType, OpenOptions};

const BUDGET: u64 = 4 << 20;
const SIZE: u64 = 4 << 20;

/// A valid dynamic image with 1 MiB blocks, blocks 0 and 2 written.
fn base(dir: &Path) -> Vec<u8> {
    let p = dir.join("base.vhdx");
    let opts = CreateOptions {
        format: Format::Vhdx,
        image_type: ImageType::Dynamic,
        block_size: Some(1 << 20),
        compat_vpc: false,
    };
    vdisk::create(&p, SIZE, &opts, false).unwrap();
    let mut d = vdisk::open(&p, OpenOptions { writable: true }).unwrap();
    d.write_at(&[0x42; 8192], 0).unwrap();
    d.write_at(&[0x43; 8192], 2 << 20).unwrap();
    d.flush().unwrap();
    drop(d);
    std::fs::read(&p).unwrap()
}

struct Layout {
    slot: usize,
    header: Header,
    table: RegionTable,
    bat: u64,
    meta: u64,
}

fn layout(b: &[u8]) -> Layout {
    let hs: Vec<Header> = HEADER_OFFSETS
        .iter()
        .map(|&o| Header::decode(&b[o as usize..o as usize + 4096]).unwrap())
        .collect();
    let slot = usize::from(hs[1].sequence > hs[0].sequence);
    let table = RegionTable::decode(&b[REGION_OFFSETS[0] as usize..][..64 << 10]).unwrap();
    Layout {
        slot,
        header: hs[slot].clone(),
        bat: table.find(&BAT_REGION).unwrap().offset,
        meta: table.find(&METADATA_REGION).unwrap().offset,
        table,
    }
}

/// Replaces both headers with `h` (resealed).
fn set_headers(b: &mut [u8], h: &Header) {
    for o in HEADER_OFFSETS {
        b[o as usize..o as usize + 4096].copy_from_slice(&h.encode());
    }
}

/// Replaces both region tables with `t` (resealed).
fn set_tables(b: &mut [u8], t: &RegionTable) {
    for o in REGION_OFFSETS {
        b[o as usize..][..64 << 10].copy_from_slice(&t.encode());
    }
}

fn put_u32(b: &mut [u8], at: u64, v: u32) {
    b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: u64, v: u64) {
    b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

/// Where the `n`th metadata table entry's offset field is, for the item
/// whose GUID starts with `first4` (the table's order is vmhub's own).
fn meta_item(b: &[u8], meta: u64, n: usize) -> (u64, u64) {
    let e = meta + 32 + 32 * n as u64;
    let off = u32::from_le_bytes(b[e as usize + 16..e as usize + 20].try_into().unwrap());
    (e, meta + u64::from(off))
}

enum Want {
    /// `open` fails with these words.
    OpenFails(&'static [&'static str]),
    /// `open` succeeds; `check` reports a problem in this structure with these words.
    Problem(&'static str, &'static [&'static str]),
    /// Anything but a panic.
    NoPanic,
}

fn cases(base: &[u8]) -> Vec<(&'static str, Vec<u8>, Want)> {
    let l = layout(base);
    let mut v: Vec<(&'static str, Vec<u8>, Want)> = Vec::new();
    let mut case = |name, f: &dyn Fn(&mut Vec<u8>), want| {
        let mut b = base.to_vec();
        f(&mut b);
        v.push((name, b, want));
    };
    case(
        "both headers' checksums",
        &|b| {
            for o in HEADER_OFFSETS {
                b[o as usize + 100] ^= 1;
            }
        },
        Want::OpenFails(&["no valid header", "checksum"]),
    );
    case(
        "current header's checksum",
        &|b| {
            b[HEADER_OFFSETS[l.slot] as usize + 100] ^= 1;
        },
        Want::NoPanic,
    );
    case(
        "header version 2",
        &|b| {
            let mut h = l.header.clone();
            h.version = 2;
            set_headers(b, &h);
        },
        Want::OpenFails(&["version 2"]),
    );
    case(
        "log past the end",
        &|b| {
            let mut h = l.header.clone();
            h.log_length = 0xFFF0_0000;
            set_headers(b, &h);
        },
        Want::OpenFails(&["log", "past the end"]),
    );
    case(
        "log over the BAT",
        &|b| {
            let mut h = l.header.clone();
            h.log_offset = l.bat;
            set_headers(b, &h);
        },
        Want::OpenFails(&["log", "overlaps the BAT region"]),
    );
    case(
        "region tables' checksums",
        &|b| {
            for o in REGION_OFFSETS {
                b[o as usize + 40] ^= 1;
            }
        },
        Want::OpenFails(&["region table 1", "checksum"]),
    );
    case(
        "region count absurd",
        &|b| {
            for o in REGION_OFFSETS {
                put_u32(b, o + 8, 5000);
                let crc = crc32c_skip(&b[o as usize..][..64 << 10], 4);
                put_u32(b, o + 4, crc);
            }
        },
        Want::OpenFails(&["entry count 5000"]),
    );
    case(
        "BAT region past the end",
        &|b| {
            let mut t = l.table.clone();
            t.regions
                .iter_mut()
                .find(|r| r.guid == BAT_REGION)
                .unwrap()
                .offset = 1 << 40;
            set_tables(b, &t);
        },
        Want::OpenFails(&["BAT region", "past the end of the file"]),
    );
    case(
        "regions overlap",
        &|b| {
            let mut t = l.table.clone();
            t.regions
                .iter_mut()
                .find(|r| r.guid == BAT_REGION)
                .unwrap()
                .offset = l.meta;
            set_tables(b, &t);
        },
        Want::OpenFails(&["overlaps"]),
    );
    case(
        "unknown required region",
        &|b| {
            let mut t = l.table.clone();
            let mut r = t.regions[0].clone();
            r.guid = [7; 16];
            r.offset = 64 << 20;
            t.regions.push(r);
            set_tables(b, &t);
        },
        Want::OpenFails(&["unknown required region"]),
    );
    case(
        "metadata signature",
        &|b| {
            b[l.meta as usize] = b'X';
        },
        Want::OpenFails(&["metadata table", "signature"]),
    );
    case(
        "metadata count absurd",
        &|b| {
            b[l.meta as usize + 10..l.meta as usize + 12].copy_from_slice(&u16::MAX.to_le_bytes());
        },
        Want::OpenFails(&["entry count 65535"]),
    );
    case(
        "block size 3 MiB",
        &|b| {
            let (_, item) = meta_item(b, l.meta, 0);
            put_u32(b, item, 3 << 20);
        },
        Want::OpenFails(&["block size"]),
    );
    case(
        "virtual size 2^62",
        &|b| {
            let (_, item) = meta_item(b, l.meta, 1);
            put_u64(b, item, 1 << 62);
        },
        Want::OpenFails(&["virtual disk size"]),
    );
    case(
        "virtual size huge but allowed, BAT too small",
        &|b| {
            let (_, item) = meta_item(b, l.meta, 1);
            put_u64(b, item, 64 << 40);
        },
        Want::OpenFails(&["BAT region", "too small"]),
    );
    case(
        "logical sector 1000",
        &|b| {
            let (_, item) = meta_item(b, l.meta, 3);
            put_u32(b, item, 1000);
        },
        Want::OpenFails(&["logical sector size"]),
    );
    case(
        "metadata item outside the region",
        &|b| {
            let (e, _) = meta_item(b, l.meta, 1);
            put_u32(b, e + 16, 0xFFFF_FF00);
        },
        Want::OpenFails(&["outside the region"]),
    );
    case(
        "metadata items overlap",
        &|b| {
            let (e0, _) = meta_item(b, l.meta, 0);
            let off = u32::from_le_bytes(b[e0 as usize + 16..e0 as usize + 20].try_into().unwrap());
            let (e1, _) = meta_item(b, l.meta, 1);
            put_u32(b, e1 + 16, off + 4);
        },
        Want::OpenFails(&["overlaps"]),
    );
    case(
        "HasParent without a locator",
        &|b| {
            let (_, item) = meta_item(b, l.meta, 0);
            put_u32(b, item + 4, 2);
        },
        Want::OpenFails(&["parent locator"]),
    );
    case(
        "BAT entry past the end",
        &|b| {
            put_u64(b, l.bat, bat::entry(bat::FULLY_PRESENT, 1 << 40));
        },
        Want::Problem("BAT", &["entry 0", "past the end of the file"]),
    );
    case(
        "BAT entry over the metadata",
        &|b| {
            put_u64(b, l.bat + 8, bat::entry(bat::FULLY_PRESENT, l.meta));
        },
        Want::Problem("BAT", &["entry 1", "overlaps the metadata region"]),
    );
    case(
        "BAT entry in the header section",
        &|b| {
            put_u64(b, l.bat + 8, bat::entry(bat::FULLY_PRESENT, 0));
        },
        Want::Problem("BAT", &["entry 1", "header section"]),
    );
    case(
        "two BAT entries share a block",
        &|b| {
            let e = u64::from_le_bytes(b[l.bat as usize..l.bat as usize + 8].try_into().unwrap());
            put_u64(b, l.bat + 24, e);
        },
        Want::Problem("BAT", &["entries", "overlapping"]),
    );
    case(
        "BAT state 4",
        &|b| {
            put_u64(b, l.bat + 8, 4);
        },
        Want::Problem("BAT", &["entry 1", "invalid state 4"]),
    );
    case(
        "partially present without a parent",
        &|b| {
            put_u64(b, l.bat, bat::entry(bat::PARTIALLY_PRESENT, 8 << 20));
        },
        Want::Problem("BAT", &["entry 0", "invalid state 7"]),
    );
    case(
        "dirty log with nothing valid",
        &|b| {
            let mut h = l.header.clone();
            h.log_guid = [3; 16];
            set_headers(b, &h);
        },
        Want::NoPanic,
    );
    case(
        "log entry writing the header section",
        &|b| {
            let mut h = l.header.clone();
            h.log_guid = [3; 16];
            set_headers(b, &h);
            let len = b.len() as u64;
            let e = log::encode_entry(1, 0, &h.log_guid, len, len, &[(4096, vec![1; 4096])]);
            b[h.log_offset as usize..][..e.len()].copy_from_slice(&e);
        },
        Want::OpenFails(&["log", "header section"]),
    );
    case(
        "log entry growing the file absurdly",
        &|b| {
            let mut h = l.header.clone();
            h.log_guid = [3; 16];
            set_headers(b, &h);
            let len = b.len() as u64;
            let e = log::encode_entry(1, 0, &h.log_guid, len, 1 << 50, &[(8 << 20, vec![1; 4096])]);
            b[h.log_offset as usize..][..e.len()].copy_from_slice(&e);
        },
        Want::OpenFails(&["log", "extends the file"]),
    );
    case(
        "log entry needing lost data",
        &|b| {
            let mut h = l.header.clone();
            h.log_guid = [3; 16];
            set_headers(b, &h);
            let len = b.len() as u64;
            let e = log::encode_entry(
                1,
                0,
                &h.log_guid,
                len + (1 << 20),
                len,
                &[(8 << 20, vec![1; 4096])],
            );
            b[h.log_offset as usize..][..e.len()].copy_from_slice(&e);
        },
        Want::OpenFails(&["log", "was lost"]),
    );
    case(
        "truncated to 1.5 MiB",
        &|b| {
            b.truncate(3 << 19);
        },
        Want::OpenFails(&["past the end of the file"]),
    );
    case(
        "truncated to 100 KiB",
        &|b| {
            b.truncate(100 << 10);
        },
        Want::OpenFails(&["shorter than"]),
    );
    v
}

#[test]
fn each_broken_image_is_refused_or_reported() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    let mut failures = Vec::new();
    for (i, (name, bytes, want)) in cases(&base).into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.vhdx"));
        std::fs::write(&path, &bytes).unwrap();
        let before = std::fs::read(&path).unwrap();
        let outcome = match catch_unwind(AssertUnwindSafe(|| exercise(&path, BUDGET))) {
            Ok(o) => o,
            Err(_) => {
                failures.push(format!("{name}: panicked"));
                continue;
            }
        };
        let shown = path.display().to_string();
        for e in outcome.errors() {
            if !e.contains(&shown) {
                failures.push(format!("{name}: error does not name the file: {e}"));
            }
        }
        if std::fs::read(&path).unwrap() != before {
            failures.push(format!("{name}: a read-only open changed the file"));
        }
        let check = match &outcome.check {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: check failed instead of reporting: {e}"));
                continue;
            }
        };
        match want {
            Want::OpenFails(words) => {
                match &outcome.open {
                    Ok(_) => failures.push(format!("{name}: open succeeded")),
                    Err(e) if !words.iter().all(|w| e.contains(w)) => {
                        failures.push(format!("{name}: open error lacks {words:?}: {e}"))
                    }
                    Err(_) => {}
                }
                if check.clean {
                    failures.push(format!("{name}: check says clean"));
                }
            }
            Want::Problem(structure, words) => {
                if let Err(e) = &outcome.open {
                    failures.push(format!("{name}: open failed: {e}"));
                }
                let found = check.problems.iter().any(|p| {
                    p.structure == structure && words.iter().all(|w| p.message.contains(w))
                });
                if !found {
                    failures.push(format!(
                        "{name}: check has no {structure:?} problem with {words:?}: {:?}",
                        check.problems
                    ));
                }
            }
            Want::NoPanic => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A differencing disk whose parent locator names itself: the loop ends with
/// an error, not a stack overflow.
#[test]
fn a_child_that_is_its_own_parent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.vhdx");
    std::fs::write(&p, base(dir.path())).unwrap();
    let c = dir.path().join("c.vhdx");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&c)
        .unwrap();
    drop(vdisk::vhdx::create_child(f, &c, &p, None).unwrap());
    // Point the child at itself: its own name, and its own DataWriteGuid.
    std::fs::remove_file(&p).unwrap();
    std::fs::copy(&c, &p).unwrap();
    let e = vdisk::open(&c, OpenOptions::default())
        .err()
        .expect("opened a loop")
        .to_string();
    assert!(e.contains("c.vhdx"), "{e}");
}

/// Random bytes over the structures of a valid image, with the header and
/// region table checksums recomputed so that the damage reaches the fields.
#[test]
fn random_damage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    let l = layout(&base);
    let path = dir.path().join("damaged.vhdx");
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let areas = [
        (HEADER_OFFSETS[l.slot], 128u64),
        (REGION_OFFSETS[0], 128),
        (l.meta, 512),
        (l.meta + (64 << 10), 128),
        (l.bat, 64),
        (l.header.log_offset, 8192),
    ];
    for round in 0..150 {
        let mut b = base.clone();
        for _ in 0..1 + next() % 4 {
            let (start, len) = areas[(next() % areas.len() as u64) as usize];
            let at = (start + next() % len) as usize;
            b[at] = next() as u8;
        }
        if round % 3 == 0 {
            let mut h = l.header.clone();
            h.log_guid = [0x11; 16];
            let len = b.len() as u64;
            let e = log::encode_entry(
                1 + next() % 3,
                0,
                &h.log_guid,
                len,
                len,
                &[(l.bat, vec![next() as u8; 4096])],
            );
            b[h.log_offset as usize..][..e.len()].copy_from_slice(&e);
            let o = HEADER_OFFSETS[l.slot] as usize;
            b[o..o + 4096].copy_from_slice(&h.encode());
        }
        for o in HEADER_OFFSETS {
            let crc = crc32c_skip(&b[o as usize..][..4096], 4);
            put_u32(&mut b, o + 4, crc);
        }
        for o in REGION_OFFSETS {
            let crc = crc32c_skip(&b[o as usize..][..64 << 10], 4);
            put_u32(&mut b, o + 4, crc);
        }
        std::fs::write(&path, &b).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&path, BUDGET)))
            .unwrap_or_else(|_| panic!("round {round} panicked"));
        outcome.assert_errors_name(&path);
    }
}

/// A child's parent locator broken in one way each: the open fails with an
/// error naming the child and what is wrong; nothing panics.
#[test]
fn broken_parent_locators_are_refused() {
    use vdisk::vhdx::metadata::{ParentLocator, PARENT_LOCATOR, VHDX_PARENT_TYPE};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.vhdx");
    std::fs::write(&p, base(dir.path())).unwrap();
    let c = dir.path().join("c.vhdx");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&c)
        .unwrap();
    drop(vdisk::vhdx::create_child(f, &c, &p, None).unwrap());
    let good = std::fs::read(&c).unwrap();
    let l = layout(&good);
    // The locator item: the table entry whose GUID is the locator's.
    let (entry, item) = (0..6)
        .map(|n| meta_item(&good, l.meta, n))
        .find(|(e, _)| good[*e as usize..*e as usize + 16] == PARENT_LOCATOR)
        .unwrap();
    let item_len = u32::from_le_bytes(
        good[entry as usize + 20..entry as usize + 24]
            .try_into()
            .unwrap(),
    );
    let with_locator = |loc: &ParentLocator| {
        let mut b = good.clone();
        let bytes = loc.encode();
        b[item as usize..item as usize + bytes.len()].copy_from_slice(&bytes);
        put_u32(&mut b, entry + 20, bytes.len() as u32);
        b
    };
    let entries = |pairs: &[(&str, &str)]| ParentLocator {
        kind: VHDX_PARENT_TYPE,
        entries: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let linkage = {
        let d = vdisk::open(&p, OpenOptions::default()).unwrap();
        match d.info().unwrap().details {
            Some(vdisk::FormatDetails::Vhdx(v)) => format!("{{{}}}", v.data_write_guid),
            _ => unreachable!(),
        }
    };
    let mut cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "value past the item",
            {
                let mut b = good.clone();
                put_u32(&mut b, item + 20 + 4, item_len + 100);
                b
            },
            &["parent locator entry 0", "outside the item"],
        ),
        (
            "count past the item",
            {
                let mut b = good.clone();
                b[item as usize + 18..item as usize + 20].copy_from_slice(&u16::MAX.to_le_bytes());
                b
            },
            &["key/value entries do not fit"],
        ),
        (
            "unknown locator type",
            with_locator(&ParentLocator {
                kind: [1; 16],
                ..entries(&[("parent_linkage", &linkage)])
            }),
            &["unknown locator type"],
        ),
        (
            "no linkage",
            with_locator(&entries(&[("relative_path", "p.vhdx")])),
            &["no parent_linkage"],
        ),
        (
            "linkage not a GUID",
            with_locator(&entries(&[
                ("parent_linkage", "nope"),
                ("relative_path", "p.vhdx"),
            ])),
            &["parent_linkage", "not a GUID"],
        ),
        (
            "no path",
            with_locator(&entries(&[("parent_linkage", &linkage)])),
            &["cannot find the parent"],
        ),
        (
            "missing parent",
            with_locator(&entries(&[
                ("parent_linkage", &linkage),
                ("relative_path", "gone.vhdx"),
                ("absolute_win32_path", "/nonexistent/gone.vhdx"),
            ])),
            &["cannot find the parent", "gone.vhdx"],
        ),
        (
            "wrong linkage",
            with_locator(&entries(&[
                ("parent_linkage", "{00000000-0000-0000-0000-000000000001}"),
                ("relative_path", "p.vhdx"),
            ])),
            &["DataWriteGuid"],
        ),
        (
            "parent is a directory",
            with_locator(&entries(&[
                ("parent_linkage", &linkage),
                ("relative_path", "."),
            ])),
            &["cannot find the parent"],
        ),
    ];
    // Windows paths from another machine: the parent is found beside the child.
    cases.push((
        "Windows paths",
        with_locator(&entries(&[
            ("parent_linkage", &linkage),
            ("relative_path", "..\\VMs\\p.vhdx"),
            (
                "volume_path",
                "\\\\?\\Volume{26A21BDA-A627-11D7-9931-806E6F6E6963}\\VMs\\p.vhdx",
            ),
            ("absolute_win32_path", "C:\\VMs\\p.vhdx"),
        ])),
        &[],
    ));
    // The locator as written opens: the cases above break only what they say.
    cases.push((
        "as written",
        with_locator(&entries(&[
            ("parent_linkage", &linkage),
            ("relative_path", ".\\p.vhdx"),
        ])),
        &[],
    ));
    for (name, bytes, words) in cases {
        std::fs::write(&c, &bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&c, BUDGET)))
            .unwrap_or_else(|_| panic!("{name}: panicked"));
        outcome.assert_errors_name(&c);
        match (&outcome.open, words.is_empty()) {
            (Ok(_), true) => {}
            (Ok(_), false) => panic!("{name}: opened"),
            (Err(e), true) => panic!("{name}: {e}"),
            (Err(e), false) => assert!(words.iter().all(|w| e.contains(w)), "{name}: {e}"),
        }
    }
}
