//! `vmhub fs`: files inside disk images, without a VM and without root.

use crate::img::Output;
use crate::size::human;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vfs::path::{join, parse_target};
use vfs::{EntryKind, Image, Target, Volume};

#[derive(Subcommand)]
pub enum FsCommand {
    /// Show the partition table (MBR or GPT) and the filesystem in each partition.
    Parts {
        /// The image (any format or differencing chain vmhub reads).
        image: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// List a directory: IMAGE[:PARTITION]:/dir (PARTITION from `fs parts`;
    /// leave it out when the disk holds one filesystem).
    Ls {
        /// IMAGE[:PARTITION]:/dir
        target: String,
        /// Long listing: type, size, modification time.
        #[arg(short = 'l')]
        long: bool,
        /// List subdirectories too.
        #[arg(short = 'R')]
        recursive: bool,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Write a file to standard output.
    Cat {
        /// IMAGE[:PARTITION]:/file
        target: String,
    },
    /// Copy a file or a whole tree out of an image.
    Get {
        /// IMAGE[:PARTITION]:/path
        target: String,
        /// Where to put it (into it, when it is an existing folder).
        local: PathBuf,
    },
    /// Copy a local file or folder into an image (FAT filesystems). Only the
    /// top disk of a differencing chain is written.
    Put {
        /// The local file or folder.
        local: PathBuf,
        /// IMAGE[:PARTITION]:/path (into it, when it is an existing directory).
        target: String,
    },
    /// Make a directory in an image (FAT).
    Mkdir {
        /// IMAGE[:PARTITION]:/dir
        target: String,
        /// Make missing parents too, and accept an existing directory.
        #[arg(short = 'p')]
        parents: bool,
    },
    /// Remove a file or an empty directory from an image (FAT).
    Rm {
        /// IMAGE[:PARTITION]:/path
        target: String,
        /// Remove a directory and everything in it.
        #[arg(short = 'r')]
        recursive: bool,
    },
}

/// Runs an `fs` subcommand and returns the process exit code.
pub fn run(cmd: FsCommand) -> ExitCode {
    match run_inner(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmhub: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(cmd: FsCommand) -> Result<()> {
    match cmd {
        FsCommand::Parts { image, output } => parts(&image, output),
        FsCommand::Ls {
            target,
            long,
            recursive,
            output,
        } => ls(&target, long, recursive, output),
        FsCommand::Cat { target } => {
            let (t, _img, mut vol) = open(&target, false)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match vol.read_file(&t.path, &mut out) {
                Ok(_) => {}
                Err(vfs::Error::Local { source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    return Ok(())
                }
                Err(e) => return Err(e).context(describe(&t)),
            }
            if let Err(e) = out.flush() {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e).context("writing to standard output");
                }
            }
            Ok(())
        }
        FsCommand::Get { target, local } => {
            let (t, _img, mut vol) = open(&target, false)?;
            let done = vfs::extract::extract(vol.as_mut(), &t.path, &local)
                .with_context(|| format!("cannot copy {} to {}", describe(&t), local.display()))?;
            for s in &done.skipped {
                eprintln!("vmhub: warning: skipped {s}");
            }
            eprintln!(
                "copied {} file(s), {} folder(s), {} link(s), {}",
                done.files,
                done.dirs,
                done.links,
                human(done.bytes)
            );
            Ok(())
        }
        FsCommand::Put { local, target } => {
            let (t, img, mut vol) = open(&target, true)?;
            let r = put(vol.as_mut(), &local, &t.path);
            // Whatever was written is made durable, also after a failure.
            let flushed = vol.flush().and_then(|()| img.flush());
            let (files, bytes) = r.with_context(|| {
                format!("cannot copy {} into {}", local.display(), describe(&t))
            })?;
            flushed.with_context(|| format!("cannot write {}", t.image.display()))?;
            eprintln!("copied {files} file(s), {}", human(bytes));
            Ok(())
        }
        FsCommand::Mkdir { target, parents } => {
            let (t, img, mut vol) = open(&target, true)?;
            let r = mkdir(vol.as_mut(), &t.path, parents);
            let flushed = vol.flush().and_then(|()| img.flush());
            r.with_context(|| format!("cannot make {}", describe(&t)))?;
            flushed.with_context(|| format!("cannot write {}", t.image.display()))?;
            Ok(())
        }
        FsCommand::Rm { target, recursive } => {
            let (t, img, mut vol) = open(&target, true)?;
            if t.path == "/" {
                bail!("{}: the root directory cannot be removed", describe(&t));
            }
            let r = remove(vol.as_mut(), &t.path, recursive, 0);
            let flushed = vol.flush().and_then(|()| img.flush());
            r.with_context(|| format!("cannot remove {}", describe(&t)))?;
            flushed.with_context(|| format!("cannot write {}", t.image.display()))?;
            Ok(())
        }
    }
}

/// `IMAGE[:N]:/path` as the user wrote it, normalized.
fn describe(t: &Target) -> String {
    match t.partition {
        Some(n) => format!("{}:{n}:{}", t.image.display(), t.path),
        None => format!("{}:{}", t.image.display(), t.path),
    }
}

fn open(target: &str, writable: bool) -> Result<(Target, Image, Box<dyn Volume>)> {
    let t = parse_target(target)?;
    let img = Image::open(&t.image, writable)
        .with_context(|| format!("cannot open {}", t.image.display()))?;
    let vol = img.volume(t.partition, writable)?;
    Ok((t, img, vol))
}

fn parts(image: &Path, output: Output) -> Result<()> {
    let img =
        Image::open(image, false).with_context(|| format!("cannot open {}", image.display()))?;
    let table = img.table();
    if output == Output::Json {
        out!("{}", serde_json::to_string_pretty(table)?);
        return Ok(());
    }
    let kind = match table.kind {
        vfs::TableKind::Mbr => "MBR",
        vfs::TableKind::Gpt => "GPT",
        vfs::TableKind::None => "none",
    };
    out!(
        "{}: {} disk, partition table: {kind}{}",
        image.display(),
        human(table.disk_size),
        table
            .disk_id
            .as_deref()
            .map(|i| format!(" (id {i})"))
            .unwrap_or_default()
    );
    if table.partitions.is_empty() {
        out!("no partitions and no filesystem found");
    } else {
        out!(
            "{:>3}  {:>12}  {:>10}  {:<10}  {:<24}  {}",
            "#",
            "start",
            "size",
            "filesystem",
            "type",
            "label"
        );
        for p in &table.partitions {
            let ty = if p.type_id.is_empty() {
                p.type_name.clone()
            } else {
                format!("{} ({})", p.type_name, short_id(&p.type_id))
            };
            let label = p.label.clone().unwrap_or_default();
            let boot = if p.bootable { " *boot" } else { "" };
            out!(
                "{:>3}  {:>12}  {:>10}  {:<10}  {:<24}  {label}{boot}",
                p.number,
                p.start,
                human(p.size),
                if p.extended {
                    "-".to_string()
                } else {
                    p.filesystem.to_string()
                },
                ty
            );
        }
    }
    for w in &table.warnings {
        eprintln!("vmhub: warning: {w}");
    }
    Ok(())
}

/// A GPT GUID is long: its first group is enough in a table row.
fn short_id(id: &str) -> &str {
    if id.len() > 8 {
        id.split('-').next().unwrap_or(id)
    } else {
        id
    }
}

#[derive(serde::Serialize)]
struct Listed {
    path: String,
    #[serde(flatten)]
    entry: vfs::Entry,
}

fn ls(target: &str, long: bool, recursive: bool, output: Output) -> Result<()> {
    let (t, _img, mut vol) = open(target, false)?;
    let top = vol.stat(&t.path).with_context(|| describe(&t))?;
    let mut listed = Vec::new();
    if top.kind != EntryKind::Dir {
        listed.push(Listed {
            path: t.path.clone(),
            entry: top,
        });
        print_listing(&listed, long, output);
        return Ok(());
    }
    let mut dirs = vec![(t.path.clone(), 0usize)];
    let mut first = true;
    let mut all = Vec::new();
    while let Some((dir, depth)) = dirs.pop() {
        if depth >= vfs::extract::MAX_DEPTH {
            bail!(
                "{dir}: directories nested more than {} deep (a loop in the directory tree?)",
                vfs::extract::MAX_DEPTH
            );
        }
        let entries = vol
            .list(&dir)
            .with_context(|| format!("cannot list {dir}"))?;
        let mut sub = Vec::new();
        let rows: Vec<Listed> = entries
            .into_iter()
            .map(|e| {
                let path = join(&dir, &e.name);
                if recursive && e.kind == EntryKind::Dir {
                    sub.push((path.clone(), depth + 1));
                }
                Listed { path, entry: e }
            })
            .collect();
        if output == Output::Json {
            all.extend(rows);
        } else {
            if recursive {
                if !first {
                    out!("");
                }
                out!("{dir}:");
            }
            print_listing(&rows, long, output);
        }
        first = false;
        // Depth first, in the directory's order.
        dirs.extend(sub.into_iter().rev());
    }
    if output == Output::Json {
        out!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}

fn print_listing(rows: &[Listed], long: bool, output: Output) {
    if output == Output::Json {
        if let Ok(s) = serde_json::to_string_pretty(rows) {
            out!("{s}");
        }
        return;
    }
    // One write for the whole listing: a line at a time costs a system call
    // per entry.
    let mut text = String::new();
    for r in rows {
        let e = &r.entry;
        let name = match e.kind {
            EntryKind::Dir => format!("{}/", e.name),
            _ => e.name.clone(),
        };
        if long {
            let t = match e.kind {
                EntryKind::Dir => 'd',
                EntryKind::File => '-',
                EntryKind::Symlink => 'l',
                EntryKind::Other => '?',
            };
            let mode = e
                .mode
                .map(|m| format!("{:04o}", m & 0o7777))
                .unwrap_or_else(|| "    ".into());
            let when = e
                .modified
                .map(vfs::time::format_utc)
                .unwrap_or_else(|| " ".repeat(19));
            text.push_str(&format!("{t} {mode} {:>12}  {when}  {name}\n", e.size));
        } else {
            text.push_str(&name);
            text.push('\n');
        }
    }
    if let Some(t) = text.strip_suffix('\n') {
        out!("{t}");
    }
}

/// Copies `local` into the volume at `dest`; returns files and bytes copied.
fn put(vol: &mut dyn Volume, local: &Path, dest: &str) -> Result<(u64, u64)> {
    let meta = std::fs::metadata(local).with_context(|| format!("{}", local.display()))?;
    let base = local
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string);
    let dest_is_dir = matches!(vol.stat(dest), Ok(e) if e.kind == EntryKind::Dir);
    let into = |base: &Option<String>| -> Result<String> {
        match base {
            Some(b) => Ok(join(dest, b)),
            None => bail!("{}: cannot tell the name to give it", local.display()),
        }
    };
    let mut files = 0;
    let mut bytes = 0;
    if meta.is_dir() {
        let root = if dest_is_dir {
            into(&base)?
        } else {
            dest.to_string()
        };
        if !matches!(vol.stat(&root), Ok(e) if e.kind == EntryKind::Dir) {
            vol.mkdir(&root)?;
        }
        put_tree(vol, local, &root, 0, &mut files, &mut bytes)?;
    } else {
        let to = if dest_is_dir {
            into(&base)?
        } else {
            dest.to_string()
        };
        bytes += put_file(vol, local, &to, meta.len())?;
        files += 1;
    }
    Ok((files, bytes))
}

fn put_tree(
    vol: &mut dyn Volume,
    dir: &Path,
    dest: &str,
    depth: usize,
    files: &mut u64,
    bytes: &mut u64,
) -> Result<()> {
    if depth >= vfs::extract::MAX_DEPTH {
        bail!("{}: folders nested too deep", dir.display());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("{}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            bail!("{}: the name is not valid UTF-8", path.display());
        };
        let to = join(dest, &name);
        let meta = std::fs::metadata(&path).with_context(|| format!("{}", path.display()))?;
        if meta.is_dir() {
            if !matches!(vol.stat(&to), Ok(e) if e.kind == EntryKind::Dir) {
                vol.mkdir(&to)?;
            }
            put_tree(vol, &path, &to, depth + 1, files, bytes)?;
        } else if meta.is_file() {
            *bytes += put_file(vol, &path, &to, meta.len())?;
            *files += 1;
        } else {
            eprintln!(
                "vmhub: warning: skipped {} (not a file or folder)",
                path.display()
            );
        }
    }
    Ok(())
}

fn put_file(vol: &mut dyn Volume, local: &Path, to: &str, len: u64) -> Result<u64> {
    let mut f = std::fs::File::open(local).with_context(|| format!("{}", local.display()))?;
    vol.write_file(to, &mut f, len)?;
    Ok(len)
}

fn mkdir(vol: &mut dyn Volume, path: &str, parents: bool) -> Result<()> {
    if !parents {
        vol.mkdir(path)?;
        return Ok(());
    }
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at = join(if at.is_empty() { "/" } else { &at }, part);
        match vol.stat(&at) {
            Ok(e) if e.kind == EntryKind::Dir => {}
            Ok(_) => bail!("{at}: exists and is not a directory"),
            Err(vfs::Error::NotFound(_)) => vol.mkdir(&at)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn remove(vol: &mut dyn Volume, path: &str, recursive: bool, depth: usize) -> Result<()> {
    let e = vol.stat(path)?;
    if e.kind == EntryKind::Dir && recursive {
        if depth >= vfs::extract::MAX_DEPTH {
            bail!("{path}: directories nested too deep (a loop in the directory tree?)");
        }
        for child in vol.list(path)? {
            remove(vol, &join(path, &child.name), true, depth + 1)?;
        }
    }
    vol.remove(path)?;
    Ok(())
}
