//! `vmhub img`: the disk image toolkit.

use crate::output::{print_check, print_info, print_map, Progress};
use crate::size::{human, parse_size};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vdisk::ops::compare::{compare, Comparison};
use vdisk::ops::convert::convert;
use vdisk::{CreateOptions, Format, ImageType, OpenOptions};

#[derive(Subcommand)]
pub enum ImgCommand {
    /// Create an empty disk image, or a differencing disk over a parent.
    Create {
        /// The new image.
        file: PathBuf,
        /// Size in bytes, or with a K, M, G or T suffix (powers of 1024); a
        /// differencing disk takes its parent's.
        #[arg(value_parser = parse_size, required_unless_present = "parent")]
        size: Option<u64>,
        /// Make a differencing VHD whose unwritten sectors read from PARENT (a VHD).
        #[arg(long, conflicts_with = "size")]
        parent: Option<PathBuf>,
        #[command(flatten)]
        out: OutputFormat,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Show what an image is: format, type, sizes, creator, geometry.
    Info {
        /// The image.
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Copy an image into a new one of any format, keeping it sparse.
    Convert {
        /// The source image (any supported format).
        input: PathBuf,
        /// The new image.
        output: PathBuf,
        #[command(flatten)]
        out: OutputFormat,
        /// Show a progress bar (shown anyway when stderr is a terminal).
        #[arg(long)]
        progress: bool,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Check an image's structures: exit 0 when clean, 2 when corrupt, 1 when it cannot be checked.
    Check {
        /// The image.
        file: PathBuf,
        /// First repair what can be repaired without guessing at data: a damaged
        /// footer or footer copy, trailing garbage, BAT entries past the end of the file.
        #[arg(long)]
        repair: bool,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Compare the contents of two images: exit 0 when identical, 1 when different, 2 on error.
    Compare {
        /// First image.
        a: PathBuf,
        /// Second image.
        b: PathBuf,
        /// Images of different sizes differ (by default the larger one's extra part must read as zeros).
        #[arg(long)]
        strict: bool,
        /// Show a progress bar (shown anyway when stderr is a terminal).
        #[arg(long)]
        progress: bool,
    },
    /// Write a differencing disk's data (VHD, VHDX, qcow2) into its parent (or an ancestor) and remove it.
    Merge {
        /// The differencing disk.
        child: PathBuf,
        /// Merge into this ancestor instead of the parent; the disks between are removed too.
        #[arg(long)]
        into: Option<PathBuf>,
        /// Merge even though other differencing disks beside the chain depend on
        /// a disk that changes (they will no longer read what they did).
        #[arg(long)]
        force: bool,
        /// Show a progress bar (shown anyway when stderr is a terminal).
        #[arg(long)]
        progress: bool,
    },
    /// Drop the blocks of a dynamic VHD or VHDX that read as zeros, and shrink the file.
    Compact {
        /// The image.
        file: PathBuf,
        /// Also drop what the filesystems inside hold as free space (FAT, ext,
        /// NTFS), like Optimize-VHD.
        #[arg(long)]
        fs: bool,
        /// Show a progress bar (shown anyway when stderr is a terminal).
        #[arg(long)]
        progress: bool,
    },
    /// Grow a fixed or dynamic VHD or VHDX, or shrink it when the part cut off holds no data.
    Resize {
        /// The image.
        file: PathBuf,
        /// The new size, in bytes or with a K, M, G or T suffix.
        #[arg(value_parser = parse_size)]
        size: u64,
        /// Shrink even when the part cut off holds data.
        #[arg(long)]
        force: bool,
    },
    /// Point a differencing VHD or VHDX at its moved or copied parent.
    Relink {
        /// The differencing disk.
        child: PathBuf,
        /// Its parent, where it is now.
        parent: PathBuf,
        /// Link even to a disk whose unique id or size differs from the one the child was made over.
        #[arg(long)]
        force: bool,
    },
    /// List the extents of an image: data, zero, or unallocated.
    Map {
        /// The image.
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Time reads of an image: IOPS and throughput of N reads of SIZE bytes.
    Bench(crate::bench::BenchArgs),
    /// Make a disk image holding a copy of a folder: a FAT filesystem in one
    /// MBR or GPT partition, or alone on the disk.
    FromDir(FromDirArgs),
}

/// `img from-dir`.
#[derive(Args)]
pub struct FromDirArgs {
    /// The folder to copy.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The new image.
    #[arg(value_name = "OUT")]
    image: PathBuf,
    /// Image size [default: what the files need, with 10% to spare].
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Filesystem [default: by volume size: FAT12 below 16 MiB, FAT16
    /// below 512 MiB, else FAT32].
    #[arg(long, value_enum)]
    fs: Option<FsArg>,
    /// Partition table; `none` puts the filesystem at sector 0.
    #[arg(long, value_enum, default_value_t = TableArg::Mbr)]
    table: TableArg,
    /// Volume label (up to 11 characters).
    #[arg(long)]
    label: Option<String>,
    #[command(flatten)]
    out: OutputFormat,
    /// Show a progress bar (shown anyway when stderr is a terminal).
    #[arg(long)]
    progress: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
enum FsArg {
    Fat12,
    Fat16,
    Fat32,
}

#[derive(Clone, Copy, ValueEnum)]
enum TableArg {
    Mbr,
    Gpt,
    None,
}

/// How results are printed.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// For people.
    Human,
    /// For programs.
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Vhd,
    Vhdx,
    Qcow2,
    Vmdk,
    Vdi,
    Raw,
}

#[derive(Clone, Copy, ValueEnum)]
enum TypeArg {
    Dynamic,
    Fixed,
}

#[derive(Clone, Copy, ValueEnum)]
enum Compat {
    /// Round the size up to an exact CHS geometry, as Virtual PC computes disk sizes.
    Vpc,
}

/// Options that say what kind of image to write.
#[derive(Args)]
pub struct OutputFormat {
    /// Image format [default: from the file's extension: `.vhdx`, `.qcow2`,
    /// `.vmdk`, `.vdi`; `.raw`, `.img` or `.bin` for raw; else vhd].
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Fixed (every byte has its place in the file) or dynamic (space taken as
    /// data is written).
    #[arg(long = "type", value_enum, default_value = "dynamic")]
    kind: TypeArg,
    /// Block size of a dynamic image, a power of two [default: the format's:
    /// 2M for VHD, 32M for VHDX, 64K clusters for qcow2, 1M for VDI].
    #[arg(long, value_parser = parse_size)]
    block_size: Option<u64>,
    /// Size the disk for an older program's arithmetic.
    #[arg(long, value_enum)]
    compat: Option<Compat>,
}

impl OutputFormat {
    /// The options for writing the image `file`.
    pub(crate) fn options(&self, file: &Path) -> CreateOptions {
        let by_name = || {
            let ext = file
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            match ext.as_str() {
                "raw" | "img" | "bin" => FormatArg::Raw,
                "vhdx" | "avhdx" => FormatArg::Vhdx,
                "qcow2" | "qcow" => FormatArg::Qcow2,
                "vmdk" => FormatArg::Vmdk,
                "vdi" => FormatArg::Vdi,
                _ => FormatArg::Vhd,
            }
        };
        CreateOptions {
            format: match self.format.unwrap_or_else(by_name) {
                FormatArg::Vhd => Format::Vhd,
                FormatArg::Vhdx => Format::Vhdx,
                FormatArg::Qcow2 => Format::Qcow2,
                FormatArg::Vmdk => Format::Vmdk,
                FormatArg::Vdi => Format::Vdi,
                FormatArg::Raw => Format::Raw,
            },
            image_type: match self.kind {
                TypeArg::Dynamic => ImageType::Dynamic,
                TypeArg::Fixed => ImageType::Fixed,
            },
            block_size: self.block_size,
            compat_vpc: matches!(self.compat, Some(Compat::Vpc)),
        }
    }
}

fn fail(code: u8, e: anyhow::Error) -> ExitCode {
    eprintln!("vmhub: error: {e:#}");
    ExitCode::from(code)
}

/// Runs an `img` subcommand and returns the process exit code.
pub fn run(cmd: ImgCommand) -> ExitCode {
    match cmd {
        ImgCommand::Check {
            file,
            output,
            repair,
        } => match repair_then_check(&file, repair) {
            Ok(report) => {
                print_check(&report, output);
                ExitCode::from(if report.clean { 0 } else { 2 })
            }
            Err(e) => fail(1, anyhow::Error::new(e).context("cannot check the image")),
        },
        ImgCommand::Compare {
            a,
            b,
            strict,
            progress,
        } => match run_compare(&a, &b, strict, progress) {
            Ok(code) => ExitCode::from(code),
            Err(e) => fail(2, e),
        },
        other => match run_other(other) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        },
    }
}

fn repair_then_check(file: &Path, repair: bool) -> vdisk::Result<vdisk::ops::check::CheckReport> {
    if repair {
        let done = vdisk::repair(file)?;
        if done.is_empty() {
            eprintln!("vmhub: nothing to repair in {}", file.display());
        }
        for d in &done {
            eprintln!("vmhub: repaired {}: {d}", file.display());
        }
    }
    vdisk::check(file)
}

fn run_compare(a: &Path, b: &Path, strict: bool, progress: bool) -> Result<u8> {
    let da = vdisk::open(a, OpenOptions::default())?;
    let db = vdisk::open(b, OpenOptions::default())?;
    let mut bar = Progress::new(progress, "comparing");
    let result = compare(da.as_ref(), db.as_ref(), strict, &mut |done, total| {
        bar.set(done, total)
    })?;
    bar.finish();
    Ok(match result {
        Comparison::Identical => {
            out!("Images are identical.");
            0
        }
        Comparison::Differ { offset } => {
            out!("Content mismatch at offset {offset}!");
            1
        }
        Comparison::SizeMismatch { a: sa, b: sb } => {
            out!(
                "Image size mismatch: {} is {sa} bytes, {} is {sb} bytes",
                a.display(),
                b.display()
            );
            1
        }
    })
}

fn run_other(cmd: ImgCommand) -> Result<()> {
    match cmd {
        ImgCommand::Create {
            file,
            size: _,
            parent: Some(parent),
            out,
            force,
        } => {
            let opts = out.options(&file);
            vdisk::create_child_as(opts.format, &file, &parent, opts.block_size, force)?;
            let disk = vdisk::open(&file, OpenOptions::default())?;
            let v = disk.virtual_size();
            out!(
                "Created {} (differencing over {}, {}, {} bytes)",
                file.display(),
                parent.display(),
                human(v),
                v
            );
        }
        ImgCommand::Create {
            file,
            size: Some(size),
            parent: None,
            out,
            force,
        } => {
            let opts = out.options(&file);
            let notes = vdisk::create(&file, size, &opts, force)?;
            for n in &notes {
                eprintln!("vmhub: note: {n}");
            }
            let disk = vdisk::open(&file, OpenOptions::default())?;
            let v = disk.virtual_size();
            out!("Created {} ({}, {} bytes)", file.display(), human(v), v);
        }
        ImgCommand::Info { file, output } => {
            let disk = vdisk::open(&file, OpenOptions::default())?;
            print_info(&disk.info()?, output)?;
        }
        ImgCommand::Convert {
            input,
            output,
            out,
            progress,
            force,
        } => {
            if !input.exists() {
                bail!("{}: no such file", input.display());
            }
            let src = vdisk::open(&input, OpenOptions::default())?;
            let mut bar = Progress::new(progress, "converting");
            let notes = convert(
                src.as_ref(),
                &output,
                &out.options(&output),
                force,
                &mut |d, t| bar.set(d, t),
            )
            .with_context(|| format!("converting {} to {}", input.display(), output.display()))?;
            bar.finish();
            for n in &notes {
                eprintln!("vmhub: note: {n}");
            }
        }
        ImgCommand::Map { file, output } => {
            let disk = vdisk::open(&file, OpenOptions::default())?;
            let extents = disk.map(0, disk.virtual_size())?;
            print_map(&extents, output)?;
        }
        ImgCommand::Bench(args) => crate::bench::run(args)?,
        ImgCommand::FromDir(a) => run_from_dir(a)?,
        ImgCommand::Resize { file, size, force } => {
            for n in vdisk::ops::resize::resize(&file, size, force)? {
                eprintln!("vmhub: note: {n}");
            }
            let v = vdisk::open(&file, OpenOptions::default())?.virtual_size();
            out!("Resized {} to {} ({} bytes)", file.display(), human(v), v);
        }
        ImgCommand::Compact { file, fs, progress } => {
            let free = if fs {
                let img = vfs::Image::open(&file, false)
                    .with_context(|| format!("cannot look into {}", file.display()))?;
                let free = img.free_space()?;
                for n in &free.notes {
                    eprintln!("vmhub: note: {n}");
                }
                eprintln!("free space in the filesystems: {}", human(free.bytes));
                free.ranges
            } else {
                Vec::new()
            };
            let mut bar = Progress::new(progress, "compacting");
            let mut show = |d, t| bar.set(d, t);
            let (before, after) = vdisk::ops::compact::compact(&file, &free, &mut show)?;
            bar.finish();
            out!(
                "Compacted {}: {} → {}",
                file.display(),
                human(before),
                human(after)
            );
        }
        ImgCommand::Merge {
            child,
            into,
            force,
            progress,
        } => {
            let mut bar = Progress::new(progress, "merging");
            let options = vdisk::vhd::merge::MergeOptions {
                into: into.as_deref(),
                allow_orphans: force,
                ..Default::default()
            };
            let m = vdisk::ops::merge::merge(&child, options, &mut |d, t| bar.set(d, t))?;
            bar.finish();
            for p in &m.orphaned {
                eprintln!(
                    "vmhub: warning: {} depended on a disk this merge changed and no longer reads what it did",
                    p.display()
                );
            }
            let removed: Vec<String> = m.removed.iter().map(|p| p.display().to_string()).collect();
            out!(
                "Merged {} into {} ({} written); removed {}",
                child.display(),
                m.target.display(),
                human(m.bytes),
                removed.join(", ")
            );
        }
        ImgCommand::Relink {
            child,
            parent,
            force,
        } => {
            for w in vdisk::relink(&child, &parent, force)? {
                eprintln!("vmhub: warning: {w}");
            }
            let disk = vdisk::open(&child, OpenOptions::default())?;
            out!("{} now reads through {}", child.display(), parent.display());
            drop(disk);
        }
        ImgCommand::Create {
            size: None,
            parent: None,
            ..
        } => bail!("a size is needed (or --parent)"),
        ImgCommand::Check { .. } | ImgCommand::Compare { .. } => unreachable!("handled by run"),
    }
    Ok(())
}

/// `img from-dir`.
fn run_from_dir(a: FromDirArgs) -> Result<()> {
    let FromDirArgs {
        dir,
        image,
        size,
        fs,
        table,
        label,
        out,
        progress,
        force,
        output,
    } = a;
    let fat = fs.map(|f| match f {
        FsArg::Fat12 => vfs::build::FatType::Fat12,
        FsArg::Fat16 => vfs::build::FatType::Fat16,
        FsArg::Fat32 => vfs::build::FatType::Fat32,
    });
    let table = match table {
        TableArg::Mbr => vfs::TableKind::Mbr,
        TableArg::Gpt => vfs::TableKind::Gpt,
        TableArg::None => vfs::TableKind::None,
    };
    let opts = vfs::build::FromDirOptions {
        size,
        fat,
        table,
        image: out.options(&image),
        label,
        overwrite: force,
    };
    let mut bar = Progress::new(progress, "copying");
    let s = vfs::build::from_dir(&dir, &image, &opts, &mut |d, t| bar.set(d, t))
        .with_context(|| format!("making {} from {}", image.display(), dir.display()))?;
    bar.finish();
    for w in &s.warnings {
        eprintln!("vmhub: warning: {w}");
    }
    for n in &s.notes {
        eprintln!("vmhub: note: {n}");
    }
    if output == Output::Json {
        out!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let place = match s.table {
        vfs::TableKind::Mbr => "in an MBR partition at 1 MiB",
        vfs::TableKind::Gpt => "in a GPT partition at 1 MiB",
        vfs::TableKind::None => "at sector 0, no partition table",
    };
    out!(
        "Created {} ({}, {} bytes): {} {place}{}",
        image.display(),
        human(s.image_size),
        s.image_size,
        s.fs,
        s.label
            .as_ref()
            .map(|l| format!(", label {l}"))
            .unwrap_or_default()
    );
    out!(
        "Copied {} file{} and {} folder{}, {} ({} bytes); clusters of {} bytes",
        s.files,
        if s.files == 1 { "" } else { "s" },
        s.dirs,
        if s.dirs == 1 { "" } else { "s" },
        human(s.bytes),
        s.bytes,
        s.cluster_size
    );
    Ok(())
}
