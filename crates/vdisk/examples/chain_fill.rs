//! Copies the data of a sparse raw file into an image at the same offsets,
//! leaving the rest of the image as it is: the way `bench/chain.sh` gives the
//! disks of a differencing chain data of their own, which no `vmhub` command
//! writes.
//!
//! ```text
//! cargo run --release -p vdisk --example chain_fill -- IMAGE SOURCE
//! ```
//!
//! IMAGE is any image `vdisk::open` opens for writing (a differencing VHD opens
//! with its parents, read-only); SOURCE is read through `vdisk::open` as well,
//! and only its data extents are copied, so its holes leave IMAGE's sectors
//! untouched (in a differencing disk, still reading from the parent).

use std::path::PathBuf;
use std::process::ExitCode;
use vdisk::{ExtentKind, OpenOptions};

/// The largest read and write.
const CHUNK: u64 = 4 << 20;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [image, source] = args.as_slice() else {
        eprintln!("usage: chain_fill IMAGE SOURCE");
        return ExitCode::from(2);
    };
    match fill(image, source) {
        Ok(bytes) => {
            println!(
                "{}: wrote {bytes} bytes from {}",
                image.display(),
                source.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chain_fill: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Copies the data extents of `source` into `image`; returns the bytes copied.
fn fill(image: &std::path::Path, source: &std::path::Path) -> vdisk::Result<u64> {
    let src = vdisk::open(source, OpenOptions::default())?;
    let mut dst = vdisk::open(image, OpenOptions { writable: true })?;
    if src.virtual_size() > dst.virtual_size() {
        return Err(vdisk::Error::InvalidArgument(format!(
            "{} ({} bytes) is larger than {} ({} bytes)",
            source.display(),
            src.virtual_size(),
            image.display(),
            dst.virtual_size()
        )));
    }
    let mut buf = vec![0u8; CHUNK as usize];
    let mut copied = 0;
    for e in src.map(0, src.virtual_size())? {
        if e.kind != ExtentKind::Data {
            continue;
        }
        let mut off = e.offset;
        while off < e.end() {
            let n = CHUNK.min(e.end() - off) as usize;
            src.read_at(&mut buf[..n], off)?;
            dst.write_at(&buf[..n], off)?;
            off += n as u64;
            copied += n as u64;
        }
    }
    dst.flush()?;
    Ok(copied)
}
