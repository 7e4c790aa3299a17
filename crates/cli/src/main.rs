//! `vmhub`: build, inspect, carry, share and boot whole machines on virtual disks.

#![forbid(unsafe_code)]

#[macro_use]
mod output;
mod bench;
mod fs;
mod img;
mod inspect;
mod nbd;
mod run;
mod size;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "vmhub",
    version,
    about = "Build, inspect, carry, share and boot whole machines on virtual disks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, inspect, convert, check and compare disk images.
    #[command(subcommand)]
    Img(img::ImgCommand),
    /// Files inside disk images: list, read, copy out and in (FAT), no VM, no root.
    #[command(subcommand)]
    Fs(fs::FsCommand),
    /// Tell which machine is in a disk image: OS, version, architecture, hostname,
    /// and what each filesystem holds.
    Inspect(inspect::InspectArgs),
    /// Serve disk images over NBD.
    #[command(subcommand)]
    Nbd(nbd::NbdCommand),
    /// Boot a disk image in QEMU; the image is never modified (the instance
    /// writes to a differencing disk over it).
    Run(run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Img(c) => img::run(c),
        Command::Fs(c) => fs::run(c),
        Command::Inspect(a) => inspect::run(a),
        Command::Nbd(c) => nbd::run(c),
        Command::Run(a) => run::run(a),
    }
}
