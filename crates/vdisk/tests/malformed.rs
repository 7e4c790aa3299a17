//! Hostile input: a corpus of VHD images each broken in one way, and random damage
//! to the metadata of valid images. Nothing may panic or allocate wildly; `check`
//! must name the broken structure and field; `open` must refuse with an error that
//! names the file and the field, or give a disk whose reads fail cleanly.
//!
//! With `VMHUB_WRITE_CORPUS=dir` set, `write_corpus_when_asked` writes the corpus
//! to `dir` (one file per case), as the seed corpus of the fuzz target.

mod corpus;

use corpus::exercise::{exercise, reseal, Outcome};
use corpus::{Base, Case, Check, Image, Open};
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;
use vdisk::vhd::bat::table_size;
use vdisk::vhd::footer::FOOTER_SIZE;

/// Bytes read from each image at most: the corpus disks are far smaller, and a
/// hostile size must not make a test read terabytes of zeros.
const BUDGET: u64 = 4 << 20;

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// What is wrong with `outcome` for `case`, one sentence each.
fn failures(case: &Case, path: &Path, outcome: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    let shown = path.display().to_string();
    for e in outcome.errors() {
        if !e.contains(&shown) {
            out.push(format!("error does not name the file: {e}"));
        }
    }
    match (&outcome.check, &case.check) {
        (Err(e), _) => out.push(format!("check failed instead of reporting: {e}")),
        (Ok(r), Check::Clean) => {
            if !r.clean || !r.problems.is_empty() {
                out.push(format!("check is not clean: {:?}", r.problems));
            }
        }
        (Ok(r), Check::Problem(structure, words)) => {
            if r.clean {
                out.push(format!("check says clean; notes {:?}", r.notes));
            }
            let found = r
                .problems
                .iter()
                .any(|p| p.structure == *structure && words.iter().all(|w| p.message.contains(w)));
            if !found {
                out.push(format!(
                    "check has no {structure:?} problem with {words:?}; it has {:?}",
                    r.problems
                ));
            }
        }
    }
    let words_missing = |e: &str, words: &[&str]| -> Vec<String> {
        words
            .iter()
            .filter(|w| !e.contains(*w))
            .map(|w| w.to_string())
            .collect()
    };
    match (&outcome.open, &case.open) {
        (Ok(_), Open::Fails(words)) => {
            out.push(format!("open succeeded; it should fail naming {words:?}"))
        }
        (Err(e), Open::Fails(words) | Open::Either(words)) => {
            let missing = words_missing(e, words);
            if !missing.is_empty() {
                out.push(format!("open error lacks {missing:?}: {e}"));
            }
        }
        (Err(e), Open::Reads(_)) => out.push(format!("open failed: {e}")),
        (Ok(o), Open::Reads(content)) => {
            for e in o.read_errors.iter().take(3) {
                out.push(format!("read failed: {e}"));
            }
            if let Err(e) = &o.info {
                out.push(format!("info failed: {e}"));
            }
            if let Err(e) = &o.map {
                out.push(format!("map failed: {e}"));
            }
            if o.read_errors.is_empty() && o.content.as_ref() != Some(content) {
                out.push("the disk does not read back what was written".into());
            }
        }
        (Ok(_), Open::Either(_)) => {}
    }
    out
}

#[test]
fn every_malformed_image_is_reported_and_none_panics() {
    let dir = tempfile::tempdir().unwrap();
    let cases = corpus::cases();
    let mut report = Vec::new();
    for case in &cases {
        let path = dir.path().join(format!("{}.vhd", case.name));
        std::fs::write(&path, &case.image.0).unwrap();
        match catch_unwind(AssertUnwindSafe(|| exercise(&path, BUDGET))) {
            Err(p) => report.push(format!("{}: PANIC: {}", case.name, panic_text(&*p))),
            Ok(outcome) => {
                for f in failures(case, &path, &outcome) {
                    report.push(format!("{}: {f}", case.name));
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "{} of {} cases failed:\n{}",
        report.len(),
        cases.len(),
        report.join("\n")
    );
}

#[test]
fn damaged_end_footer_falls_back_on_the_copy_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let base = corpus::dynamic_base();
    let path = dir.path().join("d.vhd");
    std::fs::write(&path, &base.image.clone().poke_end_footer(100, &[1]).0).unwrap();
    let disk = vdisk::open(&path, vdisk::OpenOptions::default()).unwrap();
    let vhd = disk.info().unwrap().vhd.unwrap();
    assert!(vhd.footer.contains("copy at offset 0"), "{}", vhd.footer);
    assert!(
        vhd.warnings.iter().any(|w| w.contains("checksum")),
        "{:?}",
        vhd.warnings
    );
    let mut content = vec![0u8; base.content.len()];
    disk.read_at(&mut content, 0).unwrap();
    assert_eq!(content, base.content);
}

#[test]
fn legacy_footer_is_used_and_noted() {
    let dir = tempfile::tempdir().unwrap();
    let base = corpus::fixed_base();
    let len = base.image.0.len();
    let path = dir.path().join("legacy.vhd");
    std::fs::write(&path, &base.image.remove(len - 1, 1).0).unwrap();
    let disk = vdisk::open(&path, vdisk::OpenOptions::default()).unwrap();
    assert_eq!(disk.virtual_size(), corpus::FIXED_SIZE);
    let vhd = disk.info().unwrap().vhd.unwrap();
    assert!(vhd.footer.contains("511-byte"), "{}", vhd.footer);
    let r = vdisk::check(&path).unwrap();
    assert!(r.clean, "{:?}", r.problems);
    assert!(
        r.notes.iter().any(|n| n.contains("511-byte")),
        "{:?}",
        r.notes
    );
}

/// Writes the corpus as fuzzing seeds into `$VMHUB_WRITE_CORPUS`.
#[test]
#[ignore = "writes the fuzz seed corpus; scripts/fuzz.sh runs it"]
fn write_corpus() {
    let dir = std::env::var_os("VMHUB_WRITE_CORPUS")
        .expect("VMHUB_WRITE_CORPUS names the corpus directory");
    std::fs::create_dir_all(&dir).unwrap();
    for case in corpus::cases() {
        let path = Path::new(&dir).join(format!("{}.vhd", case.name));
        std::fs::write(path, &case.image.0).unwrap();
    }
}

// Random damage to valid images.

fn bases() -> &'static (Base, Base) {
    static BASES: OnceLock<(Base, Base)> = OnceLock::new();
    BASES.get_or_init(|| (corpus::fixed_base(), corpus::dynamic_base()))
}

/// Where damage lands: the metadata of a VHD lies in these regions.
#[derive(Clone, Copy, Debug)]
enum Region {
    /// The first 2 KiB: footer copy, dynamic header and BAT of a dynamic disk.
    Head,
    /// The last 512 bytes: the footer.
    Tail,
    /// The BAT of a dynamic disk (the footer of a fixed one).
    Bat,
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Xor(u8),
    Set(u8),
    /// Four bytes of one value: 0x00, 0xff and 0x80 make the extreme values of a
    /// 32- or 64-bit field.
    Word(u8),
}

#[derive(Clone, Copy, Debug)]
struct Edit {
    region: Region,
    at: u16,
    damage: Damage,
}

fn edit() -> impl Strategy<Value = Edit> {
    let region = prop_oneof![Just(Region::Head), Just(Region::Tail), Just(Region::Bat)];
    let damage = prop_oneof![
        any::<u8>().prop_map(Damage::Xor),
        any::<u8>().prop_map(Damage::Set),
        prop_oneof![Just(0u8), Just(0xff), Just(0x80)].prop_map(Damage::Word),
    ];
    (region, any::<u16>(), damage).prop_map(|(region, at, damage)| Edit { region, at, damage })
}

fn damage(image: &Image, dynamic: bool, edits: &[Edit]) -> Vec<u8> {
    let mut b = image.0.clone();
    let len = b.len();
    let bat = if dynamic {
        let h = image.header();
        let start = h.table_offset as usize;
        start..start + table_size(h.max_table_entries) as usize
    } else {
        len - FOOTER_SIZE..len
    };
    for e in edits {
        let range = match e.region {
            Region::Head => 0..2048,
            Region::Tail => len - FOOTER_SIZE..len,
            Region::Bat => bat.clone(),
        };
        let at = range.start + usize::from(e.at) % range.len();
        match e.damage {
            Damage::Xor(x) => b[at] ^= x,
            Damage::Set(x) => b[at] = x,
            Damage::Word(x) => {
                let end = (at + 4).min(range.end);
                b[at..end].fill(x);
            }
        }
    }
    b
}

// 256 cases by default; PROPTEST_CASES=n for a longer run.
proptest! {
    #[test]
    fn damaged_metadata_never_panics(
        dynamic in any::<bool>(),
        edits in proptest::collection::vec(edit(), 1..12),
        resealed in any::<bool>(),
    ) {
        let (fixed, dynamic_base) = bases();
        let base = if dynamic { dynamic_base } else { fixed };
        let mut bytes = damage(&base.image, dynamic, &edits);
        if resealed {
            reseal(&mut bytes);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged.vhd");
        std::fs::write(&path, &bytes).unwrap();
        let outcome = exercise(&path, BUDGET);
        outcome.assert_errors_name(&path);
        if let Ok(r) = &outcome.check {
            prop_assert_eq!(r.clean, r.problems.is_empty());
            // What check passes, open must read: anything else is a problem check missed.
            if r.clean && r.format == "vhd" {
                match &outcome.open {
                    Err(e) => prop_assert!(e.contains("not supported"), "check is clean but open fails: {}", e),
                    Ok(o) => prop_assert!(o.read_errors.is_empty(), "check is clean but reads fail: {:?}", o.read_errors),
                }
            }
        }
    }
}
