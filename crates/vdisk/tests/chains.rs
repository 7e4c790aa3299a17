//! Differencing chains, broken and whole.
//!
//! Broken: a corpus of chains, each made from a real child over a real parent
//! and then broken in one way (locators, parent name, parent id, the parent
//! file, a loop, a chain past the depth limit). Opening must refuse each with an
//! error that names the files concerned and says what is wrong; `check` must
//! report it; nothing may panic.
//!
//! Whole: chains of depth 1, 2 and 8 with data in every layer read as a model
//! array says; libvhdi finds each child's parent; flattening and merging give
//! images that pass `check` and that QEMU reads as the model.
//!
//! With `VMHUB_WRITE_CHAIN_CORPUS=dir` set, `write_chain_corpus` writes the
//! child of each case to `dir`, as the seed corpus of the `open_chain` fuzz
//! target, which opens each input beside the same parent.

mod common;
mod corpus;

use corpus::exercise::{self, exercise, reseal, Outcome, CHILD_FILE, PARENT_FILE, PARENT_ID};
use corpus::{ChainBase, Image};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vdisk::vhd::chain::MAX_DEPTH;
use vdisk::vhd::footer::uuid_text;
use vdisk::vhd::header::{DynamicHeader, HEADER_SIZE};
use vdisk::vhd::locator::{encode_utf16le, W2KU, W2RU};
use vdisk::{CreateOptions, OpenOptions};

/// Bytes read from each chain at most; the corpus disks are far smaller.
const BUDGET: u64 = 4 << 20;

// ---------------------------------------------------------------------------
// Broken chains.
// ---------------------------------------------------------------------------

/// What opening the top of a case's chain must do.
enum Open {
    /// Fail with an error that holds every one of the words and names every
    /// one of the files (names in the case's folder).
    Fails(&'static [&'static str], &'static [&'static str]),
    /// Open, and read back exactly this content.
    Reads(Vec<u8>),
}

/// What `check` of the top of a case's chain must report.
enum Check {
    /// Nothing wrong.
    Clean,
    /// A problem in the file itself: in `structure`, with every one of the words.
    File(&'static str, &'static [&'static str]),
    /// A problem of the chain beyond the file (its parent, a loop, the depth):
    /// any problem whose message holds every one of the words.
    Chain(&'static [&'static str]),
}

/// Writes a case's files into the folder given and returns the file to open.
type Make = Box<dyn Fn(&Path) -> PathBuf>;

struct ChainCase {
    name: &'static str,
    make: Make,
    check: Check,
    open: Open,
}

fn write(dir: &Path, name: &str, image: &Image) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, &image.0).unwrap();
    path
}

/// The valid child as made in `dir`: its absolute locator names the parent there.
fn child_in(base: &ChainBase, dir: &Path) -> Image {
    base.child.clone().link(dir, PARENT_FILE, PARENT_ID)
}

/// The parent, and beside it the child as `edit` makes it from the valid one;
/// opens the child.
fn beside_parent(base: &Arc<ChainBase>, edit: impl Fn(Image, &Path) -> Image + 'static) -> Make {
    let base = base.clone();
    Box::new(move |dir| {
        write(dir, PARENT_FILE, &base.parent);
        write(dir, CHILD_FILE, &edit(child_in(&base, dir), dir))
    })
}

/// The child as `edit` makes it from the valid one, without its parent (`edit`
/// may put other files beside it); opens the child.
fn alone(base: &Arc<ChainBase>, edit: impl Fn(Image, &Path) -> Image + 'static) -> Make {
    let base = base.clone();
    Box::new(move |dir| write(dir, CHILD_FILE, &edit(child_in(&base, dir), dir)))
}

/// `a.vhd` and `b.vhd`, copies of the child with unique ids of their own, each
/// linked to the other as its parent, with the other's id. Opens `a.vhd`.
fn two_disk_loop(base: &Arc<ChainBase>) -> Make {
    let base = base.clone();
    Box::new(move |dir| {
        let with_id = |id| base.child.clone().edit_footers(|f| f.unique_id = id);
        let (a, b) = ([0xa0; 16], [0xb0; 16]);
        write(dir, "b.vhd", &with_id(b).link(dir, "a.vhd", a));
        write(dir, "a.vhd", &with_id(a).link(dir, "b.vhd", b))
    })
}

/// The parent and `children` differencing disks over it, each over the one
/// before, named `c1.vhd`…; every child that can be opened writes a sector of
/// its own. Opens the top one; the content is what it reads as.
fn deep_chain(base: &Arc<ChainBase>, children: usize) -> (Make, Vec<u8>) {
    let at = |i: usize| (i as u64 * 512) % exercise::PARENT_SIZE;
    let mut content = base.parent_content.clone();
    for i in (1..=children).filter(|&i| i < MAX_DEPTH) {
        let at = at(i) as usize;
        content[at..at + 512].copy_from_slice(&exercise::pattern(at as u64, 512, i as u8));
    }
    let parent = base.parent.clone();
    let make: Make = Box::new(move |dir| {
        let mut below = write(dir, PARENT_FILE, &parent);
        for i in 1..=children {
            let path = dir.join(format!("c{i}.vhd"));
            vdisk::create_child(&path, &below, corpus::BLOCK_SIZE, false).unwrap();
            // A chain past the limit cannot be opened, to write or to read.
            if i < MAX_DEPTH {
                let mut d = vdisk::open(&path, OpenOptions { writable: true }).unwrap();
                d.write_at(&exercise::pattern(at(i), 512, i as u8), at(i))
                    .unwrap();
                d.flush().unwrap();
            }
            below = path;
        }
        below
    });
    (make, content)
}

/// UTF-16LE `.\base.vhd` with an unpaired surrogate after the `.\`.
fn lone_surrogate(unit: u16) -> Vec<u8> {
    let mut b = encode_utf16le(".\\");
    b.extend_from_slice(&unit.to_le_bytes());
    b.extend(encode_utf16le("base.vhd"));
    b
}

/// Every case of the corpus.
fn cases() -> Vec<ChainCase> {
    let base = Arc::new(corpus::chain_base());
    let len = base.child.0.len() as u64;
    let reads = || Open::Reads(base.content.clone());
    let (chain_64, chain_64_content) = deep_chain(&base, MAX_DEPTH - 1);
    let (chain_65, _) = deep_chain(&base, MAX_DEPTH);
    let mut cases = vec![
        ChainCase {
            name: "valid-child",
            make: beside_parent(&base, |c, _| c),
            check: Check::Clean,
            open: reads(),
        },
        // Locator offsets and lengths. Opening stops at a broken locator even
        // when another would find the parent: the file is corrupt.
        ChainCase {
            name: "locator-offset-past-eof",
            make: beside_parent(&base, move |c, _| {
                let i = c.locator_index(W2RU);
                c.edit_header(|h| h.locators[i].platform_data_offset = len + 4096)
            }),
            check: Check::File("parent locator", &["locator 1 (W2ru)", "outside the file"]),
            open: Open::Fails(&["parent locator 1", "outside the file"], &[CHILD_FILE]),
        },
        ChainCase {
            name: "locator-offset-u64-max",
            make: beside_parent(&base, |c, _| {
                let i = c.locator_index(W2KU);
                c.edit_header(|h| h.locators[i].platform_data_offset = u64::MAX)
            }),
            check: Check::File("parent locator", &["locator 0 (W2ku)", "outside the file"]),
            open: Open::Fails(&["parent locator 0", "outside the file"], &[CHILD_FILE]),
        },
        ChainCase {
            name: "locator-length-u32-max",
            make: beside_parent(&base, |c, _| {
                let i = c.locator_index(W2RU);
                c.edit_header(|h| h.locators[i].platform_data_length = u32::MAX)
            }),
            check: Check::File("parent locator", &["locator 1 (W2ru)", "4294967295 bytes"]),
            open: Open::Fails(&["parent locator 1", "4294967295 bytes"], &[CHILD_FILE]),
        },
        ChainCase {
            name: "locator-length-past-eof",
            make: beside_parent(&base, move |c, _| {
                let i = c.locator_index(W2KU);
                c.edit_header(|h| h.locators[i].platform_data_length = len as u32 + 512)
            }),
            check: Check::File("parent locator", &["locator 0 (W2ku)", "outside the file"]),
            open: Open::Fails(&["parent locator 0", "outside the file"], &[CHILD_FILE]),
        },
        ChainCase {
            name: "locator-length-zero",
            make: beside_parent(&base, |c, _| {
                let i = c.locator_index(W2RU);
                c.edit_header(|h| h.locators[i].platform_data_length = 0)
            }),
            check: Check::File("parent locator", &["locator 1 (W2ru)", "names \"\""]),
            open: Open::Fails(&["parent locator 1", "length is zero"], &[CHILD_FILE]),
        },
        // Locator text.
        ChainCase {
            name: "locator-unpaired-high-surrogate",
            make: beside_parent(&base, |c, _| {
                c.set_locator_data(W2RU, &lone_surrogate(0xd800))
            }),
            check: Check::File("parent locator", &["locator 1 (W2ru)", "not UTF-16"]),
            open: Open::Fails(&["parent locator 1", "not UTF-16"], &[CHILD_FILE]),
        },
        ChainCase {
            name: "locator-unpaired-low-surrogate",
            make: beside_parent(&base, |c, _| {
                c.set_locator_data(W2KU, &lone_surrogate(0xdc00))
            }),
            check: Check::File("parent locator", &["locator 0 (W2ku)", "not UTF-16"]),
            open: Open::Fails(&["parent locator 0", "not UTF-16"], &[CHILD_FILE]),
        },
        ChainCase {
            // As Hyper-V writes it: a drive path cannot be followed here, the
            // relative locator can.
            name: "locator-windows-drive-path",
            make: beside_parent(&base, |c, _| {
                c.set_locator_data(W2KU, &encode_utf16le("C:\\VMs\\base.vhd"))
            }),
            check: Check::Clean,
            open: reads(),
        },
        // Where the locators lead.
        ChainCase {
            // Both locators name files that do not exist; the parent's name
            // still finds it beside the child.
            name: "locators-missing-name-beside",
            make: beside_parent(&base, |c, dir| {
                let away = dir.join("away").join(PARENT_FILE);
                c.set_locator_data(W2RU, &encode_utf16le(".\\away\\base.vhd"))
                    .set_locator_data(W2KU, &encode_utf16le(&away.display().to_string()))
            }),
            check: Check::Clean,
            open: reads(),
        },
        ChainCase {
            name: "locators-missing-nothing-beside",
            make: alone(&base, |c, dir| c.link(dir, "gone.vhd", PARENT_ID)),
            check: Check::Chain(&["gone.vhd"]),
            open: Open::Fails(&["parent not found"], &[CHILD_FILE, "gone.vhd"]),
        },
        ChainCase {
            name: "locators-disagree-nothing-found",
            make: alone(&base, |c, dir| {
                let lost = dir.join("lost.vhd");
                c.set_locator_data(W2RU, &encode_utf16le(".\\gone.vhd"))
                    .set_locator_data(W2KU, &encode_utf16le(&lost.display().to_string()))
            }),
            check: Check::File("parent locator", &["gone.vhd", "base.vhd"]),
            open: Open::Fails(
                &["parent not found"],
                &[CHILD_FILE, "gone.vhd", "lost.vhd", PARENT_FILE],
            ),
        },
        ChainCase {
            name: "locators-name-a-directory",
            make: beside_parent(&base, |c, dir| {
                std::fs::create_dir(dir.join("sub.vhd")).unwrap();
                c.link(dir, "sub.vhd", PARENT_ID)
            }),
            check: Check::Chain(&["sub.vhd"]),
            open: Open::Fails(&[], &[CHILD_FILE, "sub.vhd"]),
        },
        ChainCase {
            // The candidates are tried in turn until one has the parent's id:
            // a file that is no VHD at all is not it either.
            name: "locator-names-a-stranger-first",
            make: beside_parent(&base, |c, dir| {
                std::fs::write(dir.join("junk.vhd"), vec![0x5a; 4096]).unwrap();
                c.set_locator_data(W2RU, &encode_utf16le(".\\junk.vhd"))
            }),
            check: Check::File("parent locator", &["junk.vhd", "base.vhd"]),
            open: reads(),
        },
        ChainCase {
            // The relative locator names a sibling: another child of the same
            // parent. It is not the parent (its id differs); the absolute
            // locator then finds the parent, which the sibling's chain holds too.
            name: "locator-names-a-sibling-first",
            make: {
                let base2 = base.clone();
                beside_parent(&base, move |c, dir| {
                    let sibling = child_in(&base2, dir).edit_footers(|f| f.unique_id = [0x5b; 16]);
                    write(dir, "sibling.vhd", &sibling);
                    c.set_locator_data(W2RU, &encode_utf16le(".\\sibling.vhd"))
                })
            },
            check: Check::File("parent locator", &["sibling.vhd", "base.vhd"]),
            open: reads(),
        },
        // The parent's name in the header.
        ChainCase {
            // The locators still find the parent.
            name: "parent-name-not-utf16",
            make: beside_parent(&base, |c, _| {
                c.edit_header(|h| h.parent_unicode_name[..4].copy_from_slice(&[0xdc, 0, 0, 0x41]))
            }),
            check: Check::File("dynamic header", &["parent name", "UTF-16"]),
            open: reads(),
        },
        ChainCase {
            name: "parent-name-not-utf16-no-locators",
            make: beside_parent(&base, |c, _| {
                c.edit_header(|h| {
                    h.parent_unicode_name[..4].copy_from_slice(&[0xd8, 0, 0, 0x41]);
                    h.locators = Default::default();
                })
            }),
            check: Check::File("dynamic header", &["parent name", "UTF-16"]),
            open: Open::Fails(&["parent not found"], &[CHILD_FILE]),
        },
        // The parent file.
        ChainCase {
            name: "parent-missing",
            make: alone(&base, |c, _| c),
            check: Check::Chain(&["base.vhd"]),
            open: Open::Fails(&["parent not found"], &[CHILD_FILE, PARENT_FILE]),
        },
        ChainCase {
            name: "parent-id-mismatch",
            make: beside_parent(&base, |c, _| c.edit_header(|h| h.parent_unique_id[15] ^= 1)),
            check: Check::Chain(&["unique id"]),
            open: Open::Fails(&["wrong parent", "unique id"], &[CHILD_FILE, PARENT_FILE]),
        },
        ChainCase {
            // A chain moved to another folder, where another disk has the
            // parent's name: the absolute locator names the old place.
            name: "parent-id-mismatch-after-move",
            make: beside_parent(&base, |c, dir| {
                let old = dir.join("old").join(PARENT_FILE);
                c.set_locator_data(W2KU, &encode_utf16le(&old.display().to_string()))
                    .edit_header(|h| h.parent_unique_id[15] ^= 1)
            }),
            check: Check::Chain(&["unique id"]),
            open: Open::Fails(&["wrong parent", "unique id"], &[CHILD_FILE, PARENT_FILE]),
        },
        ChainCase {
            name: "parent-not-a-vhd",
            make: alone(&base, |c, dir| {
                std::fs::write(dir.join(PARENT_FILE), vec![0x5a; 32 << 10]).unwrap();
                c
            }),
            check: Check::Chain(&["base.vhd"]),
            open: Open::Fails(&["footer"], &[CHILD_FILE, PARENT_FILE]),
        },
        ChainCase {
            name: "parent-header-checksum",
            make: {
                let parent = base.parent.clone();
                alone(&base, move |c, dir| {
                    write(dir, PARENT_FILE, &parent.clone().poke_header(1000, &[1]));
                    c
                })
            },
            check: Check::Chain(&["base.vhd"]),
            open: Open::Fails(&["dynamic header", "checksum"], &[CHILD_FILE, PARENT_FILE]),
        },
        // Loops and depth.
        ChainCase {
            name: "self-parent",
            make: alone(&base, |c, dir| {
                let own = c.unique_id();
                c.link(dir, CHILD_FILE, own)
            }),
            check: Check::Chain(&["loops"]),
            open: Open::Fails(&["loops"], &[CHILD_FILE]),
        },
        ChainCase {
            name: "two-disk-loop",
            make: two_disk_loop(&base),
            check: Check::Chain(&["loops"]),
            open: Open::Fails(&["loops"], &["a.vhd", "b.vhd"]),
        },
        ChainCase {
            name: "chain-of-64",
            make: chain_64,
            check: Check::Clean,
            open: Open::Reads(chain_64_content),
        },
        ChainCase {
            // The error names the file opened, whose chain is too deep.
            name: "chain-of-65",
            make: chain_65,
            check: Check::Chain(&["deeper than 64"]),
            open: Open::Fails(&["deeper than 64"], &["c64.vhd"]),
        },
    ];
    cases.sort_by_key(|c| c.name);
    cases
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// One case made and exercised.
struct Ran {
    case: ChainCase,
    /// The case's folder.
    dir: PathBuf,
    outcome: std::thread::Result<Outcome>,
}

/// Makes every case in a folder of its own under `root` and exercises it.
fn run_cases(root: &Path) -> Vec<Ran> {
    cases()
        .into_iter()
        .map(|case| {
            let dir = root.join(case.name);
            std::fs::create_dir(&dir).unwrap();
            let top = (case.make)(&dir);
            let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&top, BUDGET)));
            Ran { case, dir, outcome }
        })
        .collect()
}

/// What is wrong with how opening went, one sentence each. Key words are
/// looked for in the message with the case's folder left out, since the folder
/// is named after the case.
fn open_failures(case: &ChainCase, dir: &Path, outcome: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    match (&outcome.open, &case.open) {
        (Ok(_), Open::Fails(words, _)) => {
            out.push(format!("open succeeded; it should fail with {words:?}"))
        }
        (Err(e), Open::Fails(words, files)) => {
            let text = e.replace(&dir.display().to_string(), "<dir>");
            for w in words.iter().filter(|w| !text.contains(*w)) {
                out.push(format!("open error lacks {w:?}: {e}"));
            }
            for f in files
                .iter()
                .filter(|f| !text.contains(&format!("<dir>/{f}")))
            {
                out.push(format!("open error does not name {f}: {e}"));
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
                out.push("the chain does not read back what was written".into());
            }
        }
    }
    out
}

/// What is wrong with what `check` said, one sentence each; `chain` selects
/// the cases whose problem lies beyond the file, the others are left out.
fn check_failures(case: &ChainCase, outcome: &Outcome, chain: bool) -> Vec<String> {
    let r = match &outcome.check {
        Err(e) => return vec![format!("check failed instead of reporting: {e}")],
        Ok(r) => r,
    };
    let mut out = Vec::new();
    if r.clean != r.problems.is_empty() {
        out.push(format!("check's verdict and its problems disagree: {r:?}"));
    }
    let has = |structure: Option<&str>, words: &[&str]| {
        r.problems.iter().any(|p| {
            structure.is_none_or(|s| p.structure == s)
                && words.iter().all(|w| p.message.contains(w))
        })
    };
    match &case.check {
        Check::Clean if !chain && !r.problems.is_empty() => {
            out.push(format!("check is not clean: {:?}", r.problems))
        }
        Check::File(structure, words) if !chain && !has(Some(structure), words) => {
            out.push(format!(
                "check has no {structure:?} problem with {words:?}: {:?}",
                r.problems
            ))
        }
        Check::Chain(words) if chain && !has(None, words) => out.push(format!(
            "check finds nothing wrong with the chain; a problem with {words:?} is missing: {:?}",
            r.problems
        )),
        _ => {}
    }
    out
}

fn assert_no_failures(report: Vec<String>, cases: usize) {
    assert!(
        report.is_empty(),
        "{} failures in {cases} cases:\n{}",
        report.len(),
        report.join("\n")
    );
}

#[test]
fn broken_chains_are_refused_by_name_and_none_panics() {
    let root = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(root.path()).unwrap();
    let ran = run_cases(&root);
    let mut report = Vec::new();
    for r in &ran {
        match &r.outcome {
            Err(p) => report.push(format!("{}: PANIC: {}", r.case.name, panic_text(&**p))),
            Ok(o) => {
                let failures = open_failures(&r.case, &r.dir, o)
                    .into_iter()
                    .chain(check_failures(&r.case, o, false));
                report.extend(failures.map(|f| format!("{}: {f}", r.case.name)));
            }
        }
    }
    assert_no_failures(report, ran.len());
}

/// `check` of a child whose chain cannot be opened must not call it clean:
/// what check passes, open must read.
#[test]
fn check_reports_what_breaks_the_chain() {
    let root = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(root.path()).unwrap();
    let ran = run_cases(&root);
    let mut report = Vec::new();
    for r in &ran {
        if let Ok(o) = &r.outcome {
            let failures = check_failures(&r.case, o, true);
            report.extend(
                failures
                    .into_iter()
                    .map(|f| format!("{}: {f}", r.case.name)),
            );
        }
    }
    assert_no_failures(report, ran.len());
}

/// A parent locator that names a FIFO: opening it for reading would wait for
/// a writer for ever. Opening the child must fail, naming it, and not hang.
#[test]
fn a_locator_naming_a_fifo_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    let fifo = dir.join("pipe.vhd");
    common::run(Command::new("mkfifo").arg(&fifo));
    let base = corpus::chain_base();
    let child = write(
        &dir,
        CHILD_FILE,
        &base.child.link(&dir, "pipe.vhd", PARENT_ID),
    );
    let (done, finished) = std::sync::mpsc::channel();
    let opener = child.clone();
    std::thread::spawn(move || {
        let r = vdisk::open(&opener, OpenOptions::default()).map(|_| ());
        let _ = done.send(r.map_err(|e| e.to_string()));
    });
    let waited = finished.recv_timeout(std::time::Duration::from_secs(5));
    if waited.is_err() {
        // Let an open blocked on the FIFO go on (it then sees an empty file).
        // Non-blocking: with no reader waiting, this fails instead of waiting.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo);
    }
    let e = waited
        .expect("opening a child whose parent locator names a FIFO hangs")
        .expect_err("a FIFO cannot be a parent");
    assert!(e.contains(&child.display().to_string()), "{e}");
}

#[test]
fn reseal_covers_the_differencing_header() {
    let base = corpus::chain_base();
    let mut b = base.child.0.clone();
    // A locator field changed without its checksum.
    b[512 + 576 + 16] ^= 0x40;
    let broken = DynamicHeader::decode(&b[512..512 + HEADER_SIZE]).unwrap();
    assert!(!broken.is_valid());
    reseal(&mut b);
    let sealed = DynamicHeader::decode(&b[512..512 + HEADER_SIZE]).unwrap();
    assert!(sealed.is_valid());
    assert_eq!(sealed.locators, broken.locators);

    let mut adopted = base.child.0.clone();
    assert!(exercise::adopt_parent(&mut adopted, &[7; 16]));
    let h = DynamicHeader::decode(&adopted[512..512 + HEADER_SIZE]).unwrap();
    assert!(h.is_valid());
    assert_eq!(h.parent_unique_id, [7; 16]);
}

/// Writes the child of every case into `$VMHUB_WRITE_CHAIN_CORPUS`.
#[test]
#[ignore = "writes the fuzz seed corpus of open_chain; scripts/fuzz.sh runs it"]
fn write_chain_corpus() {
    let out = std::env::var_os("VMHUB_WRITE_CHAIN_CORPUS")
        .expect("VMHUB_WRITE_CHAIN_CORPUS names the corpus directory");
    std::fs::create_dir_all(&out).unwrap();
    let root = tempfile::tempdir().unwrap();
    for case in cases() {
        let dir = root.path().join(case.name);
        std::fs::create_dir(&dir).unwrap();
        let top = (case.make)(&dir);
        let seed = Path::new(&out).join(format!("{}.vhd", case.name));
        std::fs::copy(&top, seed).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Whole chains.
// ---------------------------------------------------------------------------

/// Virtual size of the layered chains.
const SIZE: u64 = 4 << 20;
/// Block size of the children: 8 blocks, so that writes cross block boundaries.
const CHILD_BLOCK: u64 = 512 << 10;

/// Bytes of seed `seed` that differ from one offset to the next.
fn fill(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(29) ^ (i as u8).wrapping_mul(31) | 1)
        .collect()
}

/// A chain `l0.vhd` (a dynamic disk) ← `l1.vhd` ← …, and what each layer reads as.
struct Layers {
    /// The files, base first.
    paths: Vec<PathBuf>,
    /// What each reads as, base first.
    models: Vec<Vec<u8>>,
}

impl Layers {
    fn top(&self) -> &Path {
        self.paths.last().unwrap()
    }

    fn model(&self) -> &[u8] {
        self.models.last().unwrap()
    }
}

/// Writes layer `i`'s own data through vdisk and into `model`: a long unaligned
/// run across block boundaries that overlaps the layer below's, a few bytes
/// inside one sector, and zeros over data of the layer below.
fn write_layer(path: &Path, i: u64, model: &mut [u8]) {
    let big = |i: u64| (i * 389_120 + 1000) % (SIZE - 500_000);
    let mut writes = vec![
        (big(i), fill(500_000, i as u8 + 1)),
        (i * 28_672 + 13, fill(50, 99)),
    ];
    if i > 0 {
        writes.push((big(i - 1) + 10_000, vec![0; 3000]));
    }
    let mut d = vdisk::open(path, OpenOptions { writable: true }).unwrap();
    for (at, data) in writes {
        d.write_at(&data, at).unwrap();
        model[at as usize..at as usize + data.len()].copy_from_slice(&data);
    }
    d.flush().unwrap();
}

fn layers(dir: &Path, depth: usize) -> Layers {
    let base = dir.join("l0.vhd");
    let opts = CreateOptions {
        block_size: Some(1 << 20),
        ..CreateOptions::default()
    };
    vdisk::create(&base, SIZE, &opts, false).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    write_layer(&base, 0, &mut model);
    let mut l = Layers {
        paths: vec![base],
        models: vec![model.clone()],
    };
    for i in 1..=depth {
        let path = dir.join(format!("l{i}.vhd"));
        vdisk::create_child(&path, l.top(), CHILD_BLOCK, false).unwrap();
        write_layer(&path, i as u64, &mut model);
        l.paths.push(path);
        l.models.push(model.clone());
    }
    l
}

fn read_all(path: &Path) -> Vec<u8> {
    let d = vdisk::open(path, OpenOptions::default()).unwrap();
    let mut b = vec![0u8; d.virtual_size() as usize];
    d.read_at(&mut b, 0).unwrap();
    b
}

fn assert_reads(path: &Path, model: &[u8]) {
    let got = read_all(path);
    let first = got.iter().zip(model).position(|(a, b)| a != b);
    assert!(
        got.len() == model.len() && first.is_none(),
        "{} differs from its model (length {} vs {}, first difference at {first:?})",
        path.display(),
        got.len(),
        model.len()
    );
}

fn assert_clean(path: &Path) {
    let r = vdisk::check(path).unwrap();
    assert!(r.clean, "{}: {:?}", path.display(), r.problems);
}

/// `qemu-img compare` of the VHD `img` with the raw `model`: exit status 0
/// means the same content.
fn assert_qemu_equal(img: &Path, model: &Path) {
    common::run(
        Command::new("qemu-img")
            .args(["compare", "-f", "vpc", "-F", "raw"])
            .arg(img)
            .arg(model),
    );
}

/// The value of `field` in vhdiinfo's output for `path`.
fn vhdiinfo_field(path: &Path, field: &str) -> String {
    let out = Command::new("vhdiinfo")
        .arg(path)
        .output()
        .expect("vhdiinfo must be installed (Debian libvhdi-utils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vhdiinfo {}: {text} {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == field)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("vhdiinfo {}: no {field:?} in\n{text}", path.display()))
}

/// Reads, libvhdi's view of the links, flattening and merging of a chain of
/// `depth` children; `into_parent_first` merges the top into its parent
/// before merging what is left into the base.
fn whole_chain(depth: usize, into_parent_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut l = layers(dir.path(), depth);
    for (path, model) in l.paths.iter().zip(&l.models) {
        assert_reads(path, model);
    }
    let raw = dir.path().join("model.raw");
    std::fs::write(&raw, l.model()).unwrap();

    // libvhdi finds each child's parent by the name and id vmhub wrote.
    for pair in l.paths.windows(2) {
        let (parent, child) = (&pair[0], &pair[1]);
        let name = parent.file_name().unwrap().to_str().unwrap();
        assert_eq!(vhdiinfo_field(child, "Parent filename"), name);
        let id = vdisk::vhd::VhdDisk::open(parent, false)
            .unwrap()
            .footer()
            .unique_id;
        assert_eq!(vhdiinfo_field(child, "Parent identifier"), uuid_text(&id));
    }

    // Flattened: a standalone dynamic VHD with the chain's content.
    let flat = dir.path().join("flat.vhd");
    let src = vdisk::open(l.top(), OpenOptions::default()).unwrap();
    vdisk::ops::convert::convert(
        src.as_ref(),
        &flat,
        &CreateOptions::default(),
        false,
        &mut |_, _| {},
    )
    .unwrap();
    drop(src);
    assert_clean(&flat);
    assert_reads(&flat, l.model());
    assert_qemu_equal(&flat, &raw);

    // Merged into the base.
    if into_parent_first {
        let m = vdisk::vhd::merge::merge(l.top(), None, &mut |_, _| {}).unwrap();
        l.paths.pop();
        assert_eq!(m.target, std::fs::canonicalize(l.top()).unwrap());
        assert_clean(l.top());
        assert_reads(l.top(), &l.models[depth]);
    }
    let base = l.paths[0].clone();
    let m = vdisk::vhd::merge::merge(l.top(), Some(&base), &mut |_, _| {}).unwrap();
    assert_eq!(m.target, std::fs::canonicalize(&base).unwrap());
    for p in &l.paths[1..] {
        assert!(!p.exists(), "{} was merged but is still there", p.display());
    }
    assert_clean(&base);
    assert_reads(&base, &l.models[depth]);
    assert_qemu_equal(&base, &raw);
}

#[test]
fn chain_of_depth_1() {
    whole_chain(1, false);
}

#[test]
fn chain_of_depth_2() {
    whole_chain(2, true);
}

#[test]
fn chain_of_depth_8() {
    whole_chain(8, false);
}
