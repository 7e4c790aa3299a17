//! `vmhub nbd`: serve a disk image (any format, any chain) over NBD.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vdisk::OpenOptions;

#[derive(Subcommand)]
pub enum NbdCommand {
    /// Serve an image over NBD until stopped (Ctrl-C or SIGTERM); prints the
    /// URI clients use.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// The image (a differencing VHD is served with its whole chain; writes go
    /// to it alone).
    pub image: PathBuf,
    /// Refuse writes.
    #[arg(long)]
    pub read_only: bool,
    /// Listen on a Unix socket at PATH.
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    pub socket: Option<PathBuf>,
    /// Listen on TCP at ADDRESS:PORT [default: 127.0.0.1:10809].
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub listen: Option<String>,
    /// The export's name [default: the image's file name].
    #[arg(long, value_name = "NAME")]
    pub export_name: Option<String>,
}

/// Runs an `nbd` subcommand and returns the process exit code.
pub fn run(cmd: NbdCommand) -> ExitCode {
    match cmd {
        NbdCommand::Serve(args) => match serve(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vmhub: error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// The export name for `image` when none is given: its file name.
fn default_export_name(image: &Path) -> String {
    image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A server with one export, `disk` (opened from `image`), that reports
/// failed requests on stderr.
pub fn server_for(
    disk: Box<dyn vdisk::Disk>,
    image: &Path,
    name: &str,
    read_only: bool,
) -> nbd::Server {
    nbd::Server::new(vec![nbd::Export {
        description: image.display().to_string(),
        name: name.to_string(),
        disk,
        read_only,
    }])
    .with_log(|m| eprintln!("vmhub: nbd: {m}"))
}

/// Opens the image and serves it on the listener `args` names, printing the
/// URI, until Ctrl-C or SIGTERM.
fn serve(args: &ServeArgs) -> Result<()> {
    let disk = vdisk::open(
        &args.image,
        OpenOptions {
            writable: !args.read_only,
        },
    )
    .with_context(|| format!("cannot open {}", args.image.display()))?;
    let name = args
        .export_name
        .clone()
        .unwrap_or_else(|| default_export_name(&args.image));
    let listener = match &args.socket {
        Some(p) => nbd::Listener::unix(p),
        None => nbd::Listener::tcp(args.listen.as_deref().unwrap_or("127.0.0.1:10809")),
    }
    .context("cannot listen")?;
    let server = server_for(disk, &args.image, &name, args.read_only);
    let uri = listener.uri(&name);
    let stop = server.stop_handle();
    ctrlc::set_handler(move || stop.stop()).context("cannot install the Ctrl-C handler")?;
    // The URI alone on stdout, for scripts; flushed at once.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{uri}");
    let _ = out.flush();
    eprintln!(
        "vmhub: serving {} at {uri}; Ctrl-C stops",
        args.image.display()
    );
    server
        .run(&listener)
        .with_context(|| format!("serving {}", args.image.display()))
}
