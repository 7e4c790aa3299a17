//! The machine library commands: `import`, `export`, `ls`, `show`, `rm`, `tag`
//! and `prune`.

use crate::img::{Output, OutputFormat};
use crate::output::Progress;
use crate::size::{human, parse_size};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use store::library::{DiskSource, ImportOptions};
use store::machine::{Firmware, Machine, Os};
use store::{Library, MachineRef};

/// Where the library is.
#[derive(Args, Clone)]
pub struct HomeArg {
    /// The library folder [default: $VMHUB_HOME, else $XDG_DATA_HOME/vmhub,
    /// else ~/.local/share/vmhub].
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
}

impl HomeArg {
    fn path(&self) -> Result<PathBuf> {
        match &self.home {
            Some(h) => Ok(h.clone()),
            None => default_home(),
        }
    }

    pub fn open(&self) -> Result<Library> {
        let home = self.path()?;
        Library::open(&home).with_context(|| format!("cannot open the library {}", home.display()))
    }

    /// The library if there is one, without creating it.
    fn open_existing(&self) -> Result<Option<Library>> {
        let home = self.path()?;
        Library::open_existing(&home)
            .with_context(|| format!("cannot open the library {}", home.display()))
    }
}

/// The library folder when none is given.
pub fn default_home() -> Result<PathBuf> {
    user_folder(
        "VMHUB_HOME",
        "XDG_DATA_HOME",
        ".local/share",
        "library folder",
    )
}

/// A per-user folder of vmhub's: `$OWN_VAR`, else `$XDG_VAR/vmhub`, else
/// `~/UNDER_HOME/vmhub` (the XDG base directory rules).
pub fn user_folder(own_var: &str, xdg_var: &str, under_home: &str, what: &str) -> Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var(own_var) {
        return Ok(p);
    }
    if let Some(d) = var(xdg_var) {
        return Ok(d.join("vmhub"));
    }
    match var("HOME") {
        Some(h) => Ok(h.join(under_home).join("vmhub")),
        None => bail!("no {what}: set {own_var} or HOME"),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum FirmwareArg {
    Bios,
    Uefi,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The disk image (any format or chain vmhub reads).
    disk: PathBuf,
    /// The machine's name and tag, NAME[:TAG] (tag "latest" when left out).
    reference: String,
    /// The operating system's name [default: what `vmhub inspect` finds].
    #[arg(long, value_name = "NAME")]
    os: Option<String>,
    /// Memory.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    memory: u64,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Firmware [default: uefi when the disk has an EFI system partition and
    /// a GPT, else bios].
    #[arg(long, value_enum)]
    firmware: Option<FirmwareArg>,
    /// CPU architecture [default: what `vmhub inspect` finds, else x86_64].
    #[arg(long)]
    arch: Option<String>,
    /// A free-form version.
    #[arg(long = "machine-version", value_name = "VERSION")]
    version: Option<String>,
    /// What the machine is for.
    #[arg(long)]
    description: Option<String>,
    /// Licence (an SPDX expression).
    #[arg(long)]
    licence: Option<String>,
    /// zstd level for the chunks (negative levels are faster and compress less).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-7..=19), default_value_t = store::chunker::DEFAULT_LEVEL)]
    compression_level: i32,
    /// Cut, hash and compress the disk as an import does and say what it
    /// would add to the library, writing nothing.
    #[arg(long)]
    dry_run: bool,
    /// Show progress even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    home: HomeArg,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The machine, NAME[:TAG].
    reference: String,
    /// The image file to write.
    out: PathBuf,
    /// Which of the machine's disks (0 is the boot disk).
    #[arg(long, default_value_t = 0)]
    disk: usize,
    #[command(flatten)]
    format: OutputFormat,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Show progress even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    #[command(flatten)]
    home: HomeArg,
}

#[derive(Args)]
pub struct LsArgs {
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    home: HomeArg,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The machine, NAME[:TAG].
    reference: String,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    home: HomeArg,
}

#[derive(Args)]
pub struct RmArgs {
    /// The machines, NAME[:TAG] each.
    #[arg(required = true)]
    references: Vec<String>,
    #[command(flatten)]
    home: HomeArg,
}

#[derive(Args)]
pub struct TagArgs {
    /// The machine, NAME[:TAG].
    source: String,
    /// Its new name, NAME[:TAG].
    target: String,
    #[command(flatten)]
    home: HomeArg,
}

#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    home: HomeArg,
}

/// The exit code of a command that ended with `r`, printing its error.
pub(crate) fn finish(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmhub: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn parse_ref(s: &str) -> Result<MachineRef> {
    Ok(s.parse::<MachineRef>()?)
}

/// `vmhub import`.
pub fn import(a: ImportArgs) -> ExitCode {
    finish(do_import(&a))
}

fn do_import(a: &ImportArgs) -> Result<()> {
    let reference = parse_ref(&a.reference)?;
    let disk = vdisk::open(&a.disk, vdisk::OpenOptions::default())
        .with_context(|| format!("cannot open {}", a.disk.display()))?;
    // What the disk holds fills in what the user left out; a disk vmhub cannot
    // look into is still imported.
    let report = vfs::Image::open(&a.disk, false)
        .ok()
        .and_then(|img| vfs::inspect::inspect(&img).ok());
    let found = report.as_ref().map(|r| &r.os);
    let mut os = found.map(|o| Os {
        family: o.family.name().to_string(),
        distribution: o.distribution.clone(),
        name: o.name.clone(),
        version: o.version.clone(),
    });
    if let Some(name) = &a.os {
        let o = os.get_or_insert_with(|| Os {
            family: "unknown".into(),
            ..Os::default()
        });
        o.name = Some(name.clone());
    }
    let uefi = report.as_ref().is_some_and(|r| {
        r.partition_table == vfs::TableKind::Gpt
            && r.filesystems
                .iter()
                .any(|f| f.role == vfs::inspect::Role::EfiSystem)
    });
    let firmware = match a.firmware {
        Some(FirmwareArg::Bios) => Firmware::Bios,
        Some(FirmwareArg::Uefi) => Firmware::Uefi,
        None if uefi => Firmware::Uefi,
        None => Firmware::Bios,
    };
    let architecture = a
        .arch
        .clone()
        .or_else(|| found.and_then(|o| o.architecture.clone()))
        .unwrap_or_else(|| "x86_64".into());
    let opts = ImportOptions {
        version: a.version.clone(),
        description: a.description.clone(),
        os,
        architecture,
        firmware,
        cpus: a.cpus,
        memory: a.memory,
        licence: a.licence.clone(),
        level: a.compression_level,
        ..ImportOptions::default()
    };
    let mut progress = Progress::new(a.progress, "import");
    let sources = [DiskSource {
        name: "disk0".into(),
        disk: disk.as_ref(),
    }];
    let mut show = |d, t| progress.set(d, t);
    let done = if a.dry_run {
        let lib = a.home.open_existing()?;
        store::library::dry_import(lib.as_ref(), &sources, &reference, &opts, &mut show)
    } else {
        a.home
            .open()?
            .import(&sources, &reference, &opts, &mut show)
    }
    .with_context(|| format!("cannot import {} as {reference}", a.disk.display()))?;
    progress.finish();
    if a.output == Output::Json {
        let mut v = serde_json::json!({
            "reference": reference.to_string(),
            "data-bytes": done.data_bytes,
            "chunks": done.chunks,
            "new-chunks": done.new_chunks,
            "new-bytes": done.new_bytes,
            "dry-run": a.dry_run,
        });
        if !a.dry_run {
            v["manifest"] = serde_json::json!(done.manifest);
        }
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else if a.dry_run {
        out!(
            "{reference}: {} of data in {} chunks, {} new ({} would be stored); nothing written",
            human(done.data_bytes),
            done.chunks,
            done.new_chunks,
            human(done.new_bytes)
        );
    } else {
        out!(
            "{reference}: {} of data in {} chunks, {} new ({} stored)",
            human(done.data_bytes),
            done.chunks,
            done.new_chunks,
            human(done.new_bytes)
        );
        out!("manifest: {}", done.manifest);
    }
    Ok(())
}

/// `vmhub export`.
pub fn export(a: ExportArgs) -> ExitCode {
    finish(do_export(&a))
}

fn do_export(a: &ExportArgs) -> Result<()> {
    let reference = parse_ref(&a.reference)?;
    let lib = a.home.open()?;
    let (_, _, machine) = lib.resolve(&reference)?;
    let disk = lib.disk(&reference, &machine, a.disk)?;
    let mut progress = Progress::new(a.progress, "export");
    let notes = vdisk::ops::convert::convert(
        &disk,
        &a.out,
        &a.format.options(&a.out),
        a.force,
        &mut |d, t| progress.set(d, t),
    )
    .with_context(|| format!("cannot export {reference} to {}", a.out.display()))?;
    progress.finish();
    for n in notes {
        eprintln!("vmhub: note: {n}");
    }
    Ok(())
}

fn machine_json(
    r: &MachineRef,
    manifest: &store::Digest,
    m: &Machine,
    stored: u64,
) -> serde_json::Value {
    serde_json::json!({
        "reference": r.to_string(),
        "manifest": manifest,
        "stored-bytes": stored,
        "machine": m,
    })
}

/// `vmhub ls`.
pub fn ls(a: LsArgs) -> ExitCode {
    finish((|| {
        let lib = a.home.open()?;
        let all = lib.list()?;
        if a.output == Output::Json {
            let v: Vec<_> = all
                .iter()
                .map(|l| machine_json(&l.reference, &l.manifest, &l.machine, l.stored))
                .collect();
            out!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        let rows: Vec<[String; 5]> = all
            .iter()
            .map(|l| {
                let os = l
                    .machine
                    .os
                    .as_ref()
                    .map(|o| o.name.clone().unwrap_or_else(|| o.family.clone()))
                    .unwrap_or_else(|| "unknown".into());
                let size: u64 = l.machine.disks.iter().map(|d| d.size).sum();
                [
                    l.reference.to_string(),
                    l.manifest.hex().get(..12).unwrap_or_default().to_string(),
                    os,
                    human(size),
                    human(l.stored),
                ]
            })
            .collect();
        let header = ["MACHINE", "MANIFEST", "OS", "DISK", "STORED"].map(String::from);
        let mut width = [0usize; 5];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            out!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                w0 = width[0],
                w1 = width[1],
                w2 = width[2],
                w3 = width[3],
                w4 = width[4]
            );
        }
        Ok(())
    })())
}

/// `vmhub show`.
pub fn show(a: ShowArgs) -> ExitCode {
    finish((|| {
        let reference = parse_ref(&a.reference)?;
        let lib = a.home.open()?;
        let (digest, manifest, m) = lib.resolve(&reference)?;
        let stored = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        if a.output == Output::Json {
            out!(
                "{}",
                serde_json::to_string_pretty(&machine_json(&reference, &digest, &m, stored))?
            );
            return Ok(());
        }
        out!("{reference}");
        out!("  manifest:     {digest}");
        if let Some(v) = &m.version {
            out!("  version:      {v}");
        }
        if let Some(d) = &m.description {
            out!("  description:  {d}");
        }
        if let Some(os) = &m.os {
            let mut s = os.name.clone().unwrap_or_else(|| os.family.clone());
            if let Some(v) = &os.version {
                s.push_str(&format!(" (version {v})"));
            }
            out!("  os:           {s}");
        }
        out!("  architecture: {}", m.architecture);
        out!(
            "  firmware:     {}",
            match m.firmware {
                Firmware::Bios => "bios",
                Firmware::Uefi => "uefi",
            }
        );
        out!("  cpus:         {}", m.cpus);
        out!("  memory:       {}", human(m.memory));
        if let Some(l) = &m.licence {
            out!("  licence:      {l}");
        }
        out!("  created:      {}", m.created);
        out!(
            "  stored:       {} in {} blobs",
            human(stored),
            manifest.layers.len() + 1
        );
        out!("  disks:");
        for d in &m.disks {
            out!(
                "    {:<8} {:>10}  from {:<6} index {}",
                d.name,
                human(d.size),
                d.format,
                d.index
            );
        }
        Ok(())
    })())
}

/// `vmhub rm`.
pub fn rm(a: RmArgs) -> ExitCode {
    finish((|| {
        let lib = a.home.open()?;
        for r in &a.references {
            let reference = parse_ref(r)?;
            lib.remove(&reference)?;
            out!("removed {reference}");
        }
        Ok(())
    })())
}

/// `vmhub tag`.
pub fn tag(a: TagArgs) -> ExitCode {
    finish((|| {
        let src = parse_ref(&a.source)?;
        let dst = parse_ref(&a.target)?;
        let lib = a.home.open()?;
        lib.tag(&src, &dst)?;
        Ok(())
    })())
}

/// `vmhub prune`.
pub fn prune(a: PruneArgs) -> ExitCode {
    finish((|| {
        let lib = a.home.open()?;
        let p = lib.prune()?;
        out!("removed {} blobs ({})", p.blobs, human(p.bytes));
        let cached = lib.prune_cache()?;
        if cached > 0 {
            out!("removed {cached} files from the cache of disks for `vmhub run`");
        }
        Ok(())
    })())
}
