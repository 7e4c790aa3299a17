//! `vmhub`: build, inspect, carry, share and boot whole machines on virtual disks.

#![forbid(unsafe_code)]

#[macro_use]
mod output;
mod bench;
mod fs;
mod img;
mod inspect;
mod library;
mod nbd;
mod run;
mod search;
mod serve;
mod size;
mod transfer;

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
    /// Store a disk image in the machine library as NAME[:TAG], in chunks
    /// shared with every other machine there.
    Import(library::ImportArgs),
    /// Write a library machine's disk as an image file (vhd or raw).
    Export(library::ExportArgs),
    /// List the machines in the library.
    Ls(library::LsArgs),
    /// Show a library machine: OS, firmware, memory, disks, digests.
    Show(library::ShowArgs),
    /// Remove machine names from the library (`prune` frees their space).
    Rm(library::RmArgs),
    /// Give a library machine another name or tag.
    Tag(library::TagArgs),
    /// Free the space of chunks no machine in the library uses.
    Prune(library::PruneArgs),
    /// Send a library machine to an OCI registry, uploading only the chunks
    /// the registry lacks.
    Push(transfer::PushArgs),
    /// Fetch a machine from an OCI registry into the library, downloading
    /// only the chunks the library lacks.
    Pull(transfer::PullArgs),
    /// Store credentials for a registry.
    Login(transfer::LoginArgs),
    /// Forget the credentials for a registry.
    Logout(transfer::LogoutArgs),
    /// Signing keys: this computer's, and the ones pulls trust.
    #[command(subcommand)]
    Key(transfer::KeyCommand),
    /// Run the hub: an OCI distribution registry that any OCI client can
    /// push machines to and pull them from.
    Serve(serve::ServeArgs),
    /// Find machines in a hub's catalogue by name, description or OS.
    Search(search::SearchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Img(c) => img::run(c),
        Command::Fs(c) => fs::run(c),
        Command::Inspect(a) => inspect::run(a),
        Command::Nbd(c) => nbd::run(c),
        Command::Run(a) => run::run(a),
        Command::Import(a) => library::import(a),
        Command::Export(a) => library::export(a),
        Command::Ls(a) => library::ls(a),
        Command::Show(a) => library::show(a),
        Command::Rm(a) => library::rm(a),
        Command::Tag(a) => library::tag(a),
        Command::Prune(a) => library::prune(a),
        Command::Push(a) => transfer::push(a),
        Command::Pull(a) => transfer::pull(a),
        Command::Login(a) => transfer::login(a),
        Command::Logout(a) => transfer::logout(a),
        Command::Key(c) => transfer::key(c),
        Command::Serve(a) => serve::run(a),
        Command::Search(a) => search::run(a),
    }
}
