//! `vmhub inspect`: which machine is in a disk image.

use crate::img::Output;
use crate::size::human;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct InspectArgs {
    /// The image (any format or differencing chain vmhub reads).
    image: PathBuf,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

/// Runs `inspect` and returns the process exit code.
pub fn run(args: InspectArgs) -> ExitCode {
    match inspect(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmhub: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn inspect(args: &InspectArgs) -> Result<()> {
    let img = vfs::Image::open(&args.image, false)
        .with_context(|| format!("cannot open {}", args.image.display()))?;
    let r = vfs::inspect::inspect(&img)
        .with_context(|| format!("cannot inspect {}", args.image.display()))?;
    if args.output == Output::Json {
        out!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let os = &r.os;
    let field = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    out!("{}", args.image.display());
    out!("  os:           {}", os.family);
    if let Some(d) = &os.distribution {
        out!("  distribution: {d}");
    }
    if let Some(n) = &os.name {
        out!("  name:         {n}");
    }
    out!("  version:      {}", field(&os.version));
    out!("  architecture: {}", field(&os.architecture));
    if let Some(h) = &os.hostname {
        out!("  hostname:     {h}");
    }
    if let Some(p) = os.partition {
        out!("  found on:     partition {p}");
    }
    out!("  filesystems:");
    for f in &r.filesystems {
        out!(
            "    {:>2}  {:<8}  {:>10}  {:<16}  {}",
            f.number,
            f.filesystem.to_string(),
            human(f.size),
            f.role.to_string(),
            f.label.clone().unwrap_or_default()
        );
    }
    for n in &r.notes {
        out!("  note: {n}");
    }
    Ok(())
}
