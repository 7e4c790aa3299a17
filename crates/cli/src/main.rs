//! `vmhub`: build, inspect, carry, share and boot whole machines on virtual disks.

#![forbid(unsafe_code)]

#[macro_use]
mod output;
mod bench;
mod img;
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
        Command::Nbd(c) => nbd::run(c),
        Command::Run(a) => run::run(a),
    }
}
