//! `vmhub`: build, inspect, carry, share and boot whole machines on virtual disks.

#![forbid(unsafe_code)]

#[macro_use]
mod output;
mod img;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Img(c) => img::run(c),
    }
}
