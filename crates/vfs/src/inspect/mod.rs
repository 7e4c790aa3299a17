//! Which machine is in a disk image: the operating system (family,
//! distribution, version, architecture, host name) and what each partition
//! holds.
//!
//! Inspection only reads. It never fails because one partition cannot be
//! read: what could not be read, and why no operating system was recognized,
//! goes into [`Report::notes`].

mod dos;
mod elf;
mod linux;
mod pe;
mod reader;
mod windows;

use crate::fs::FsKind;
use crate::image::Image;
use crate::part::{Partition, TableKind};
use crate::Result;
use reader::Reader;
use serde::Serialize;

/// What [`inspect`] found in an image.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The operating system (family `unknown` when none was recognized).
    pub os: Os,
    /// The partition table kind.
    pub partition_table: TableKind,
    /// One entry per partition, in table order.
    pub filesystems: Vec<Filesystem>,
    /// What was found that did not lead to an operating system, and what
    /// could not be read.
    pub notes: Vec<String>,
}

/// An operating system family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Linux (any distribution).
    Linux,
    /// Windows NT and later.
    Windows,
    /// MS-DOS, PC DOS, FreeDOS.
    Dos,
    /// Nothing recognized.
    Unknown,
}

impl Family {
    /// The name shown to users ("linux", "windows", "dos", "unknown").
    pub fn name(self) -> &'static str {
        match self {
            Family::Linux => "linux",
            Family::Windows => "windows",
            Family::Dos => "dos",
            Family::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The operating system found in an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Os {
    /// Linux, Windows, DOS or unknown.
    pub family: Family,
    /// The distribution's short id ("debian", "ubuntu", "fedora", "freedos",
    /// "msdos"), when the family has distributions.
    pub distribution: Option<String>,
    /// Distributions this one derives from (os-release `ID_LIKE`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub distribution_like: Vec<String>,
    /// The product name ("Debian GNU/Linux 12 (bookworm)", "Windows 11").
    pub name: Option<String>,
    /// The version ("12", "10.0.22631.2428", "6.22").
    pub version: Option<String>,
    /// The CPU architecture of its programs ("x86_64", "i386", "aarch64").
    pub architecture: Option<String>,
    /// The host name, where the system records it in a file.
    pub hostname: Option<String>,
    /// The partition it was found on (0 for a disk without a table).
    pub partition: Option<u32>,
}

impl Os {
    /// An operating system of `family` with nothing else known.
    pub fn new(family: Family) -> Os {
        Os {
            family,
            distribution: None,
            distribution_like: Vec::new(),
            name: None,
            version: None,
            architecture: None,
            hostname: None,
            partition: None,
        }
    }

    /// A short description for messages ("linux debian 12").
    fn summary(&self) -> String {
        let mut s = self.family.to_string();
        for part in [&self.distribution, &self.name, &self.version]
            .into_iter()
            .flatten()
        {
            s.push(' ');
            s.push_str(part);
        }
        s
    }
}

/// What a partition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Role {
    /// The root filesystem of a Linux system (it has `/etc`).
    #[serde(rename = "linux root")]
    LinuxRoot,
    /// Kernels and boot loader files without a system (`/boot`, or the
    /// Windows "System Reserved" partition).
    #[serde(rename = "boot")]
    Boot,
    /// An EFI system partition.
    #[serde(rename = "EFI system")]
    EfiSystem,
    /// The partition holding `\Windows`.
    #[serde(rename = "windows system")]
    WindowsSystem,
    /// The partition DOS boots from.
    #[serde(rename = "dos system")]
    DosSystem,
    /// Files, but no system.
    #[serde(rename = "data")]
    Data,
    /// Linux swap space.
    #[serde(rename = "swap")]
    Swap,
    /// An LVM physical volume.
    #[serde(rename = "LVM physical volume")]
    Lvm,
    /// An MBR extended partition (a container of logical ones).
    #[serde(rename = "extended")]
    Extended,
    /// Something vmhub cannot read.
    #[serde(rename = "unreadable")]
    Unreadable,
}

impl Role {
    /// The name shown to users ("linux root", "EFI system").
    pub fn name(self) -> &'static str {
        match self {
            Role::LinuxRoot => "linux root",
            Role::Boot => "boot",
            Role::EfiSystem => "EFI system",
            Role::WindowsSystem => "windows system",
            Role::DosSystem => "dos system",
            Role::Data => "data",
            Role::Swap => "swap",
            Role::Lvm => "LVM physical volume",
            Role::Extended => "extended",
            Role::Unreadable => "unreadable",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One partition of the image and what it holds.
#[derive(Clone, Debug, Serialize)]
pub struct Filesystem {
    /// The partition number (0 for a disk without a table).
    pub number: u32,
    /// The filesystem found in it.
    pub filesystem: FsKind,
    /// The filesystem's label, or else the GPT partition name.
    pub label: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// What it holds.
    pub role: Role,
}

/// Inspects `image`: which operating system it holds and what is on each
/// partition. Fails only when nothing at all can be read; a partition that
/// cannot be opened or read is recorded in the notes.
pub fn inspect(image: &Image) -> Result<Report> {
    let table = image.table();
    let mut filesystems = Vec::new();
    let mut notes: Vec<String> = table.warnings.clone();
    let mut found: Vec<Os> = Vec::new();
    let mut explanations = Vec::new();
    if table.partitions.is_empty() {
        explanations
            .push("the disk has no partition table and no filesystem vmhub recognizes".to_string());
    }
    for p in &table.partitions {
        let out = inspect_partition(image, p);
        notes.extend(
            out.problems
                .into_iter()
                .map(|n| format!("{}: {n}", place(p))),
        );
        if let Some(why) = out.nothing {
            explanations.push(format!("{}: {why}", place(p)));
        }
        if let Some(mut os) = out.os {
            os.partition = Some(p.number);
            found.push(os);
        }
        filesystems.push(Filesystem {
            number: p.number,
            filesystem: p.filesystem,
            label: out.label.or_else(|| p.label.clone()),
            size: p.size,
            role: out.role,
        });
    }
    let os = pick(&mut found);
    for other in &found {
        notes.push(format!(
            "partition {}: another system: {}",
            other.partition.unwrap_or(0),
            other.summary()
        ));
    }
    if os.family == Family::Unknown {
        notes.extend(explanations);
    }
    Ok(Report {
        os,
        partition_table: table.kind,
        filesystems,
        notes,
    })
}

/// "partition 2", or "the disk" for a disk without a table.
fn place(p: &Partition) -> String {
    if p.number == 0 {
        "the disk".to_string()
    } else {
        format!("partition {}", p.number)
    }
}

/// Takes the main system out of `found`: a Linux root first (a disk with a
/// Linux root and a Windows partition is most often booted into Linux by its
/// GRUB), then Windows, then DOS; among equals the first partition.
fn pick(found: &mut Vec<Os>) -> Os {
    let rank = |f: Family| match f {
        Family::Linux => 0,
        Family::Windows => 1,
        Family::Dos => 2,
        Family::Unknown => 3,
    };
    let best = found
        .iter()
        .enumerate()
        .min_by_key(|(i, os)| (rank(os.family), *i))
        .map(|(i, _)| i);
    match best {
        Some(i) => found.remove(i),
        None => Os::new(Family::Unknown),
    }
}

/// What one partition gave.
struct PartitionFindings {
    role: Role,
    label: Option<String>,
    os: Option<Os>,
    /// Why it holds no system, for the notes when none is found anywhere.
    nothing: Option<String>,
    /// Reads that failed.
    problems: Vec<String>,
}

fn inspect_partition(image: &Image, p: &Partition) -> PartitionFindings {
    let mut out = PartitionFindings {
        role: Role::Data,
        label: None,
        os: None,
        nothing: None,
        problems: Vec::new(),
    };
    let fs = p.filesystem;
    if p.extended {
        out.role = Role::Extended;
        return out;
    }
    match fs {
        FsKind::Swap => {
            out.role = Role::Swap;
            out.nothing = Some("swap space".into());
            return out;
        }
        FsKind::Lvm => {
            out.role = Role::Lvm;
            out.nothing = Some("an LVM physical volume, which vmhub cannot read".into());
            return out;
        }
        FsKind::Unknown => {
            out.role = Role::Unreadable;
            out.nothing = Some(format!("no filesystem recognized ({})", p.type_name));
            return out;
        }
        k if !k.readable() => {
            out.role = Role::Unreadable;
            out.nothing = Some(format!("{k}, which vmhub cannot read"));
            return out;
        }
        _ => {}
    }
    let mut vol = match image.volume(Some(p.number), false) {
        Ok(v) => v,
        Err(e) => {
            out.role = Role::Unreadable;
            out.problems.push(format!("{fs} could not be opened: {e}"));
            return out;
        }
    };
    out.label = vol.label();
    let mut r = Reader::new(vol.as_mut());
    let efi_type = p.type_name == "EFI System";

    // The order matters where markers overlap: a Windows system partition
    // can hold DOS-looking files, and an EFI partition can hold kernels.
    if let Some(os) = windows::inspect(&mut r) {
        out.role = Role::WindowsSystem;
        out.os = Some(os);
    } else if let Some(os) = linux::inspect(&mut r) {
        out.role = Role::LinuxRoot;
        out.os = Some(os);
    } else if let Some(os) = dos::inspect(&mut r) {
        out.role = Role::DosSystem;
        out.os = Some(os);
    } else if efi_type || (fs.is_fat() && r.is_dir("/EFI")) {
        out.role = Role::EfiSystem;
        out.nothing = Some(format!("{fs} EFI system partition"));
    } else if linux::is_boot(&mut r) || windows::is_boot(&mut r) {
        out.role = Role::Boot;
        out.nothing = Some(format!(
            "{fs} with boot files (kernels or a boot loader) and no system"
        ));
    } else if r.is_dir("/etc") {
        out.nothing = Some(format!(
            "{fs} with /etc but no os-release, release file or shell vmhub recognizes"
        ));
    } else {
        out.nothing = Some(format!("{fs} with no /etc, \\Windows or DOS system files"));
    }
    out.problems = r.into_problems();
    out
}
