//! `vmhub serve`: the hub, an OCI distribution registry over a data folder.

use crate::library::{default_home, finish};
use crate::size::parse_size;
use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// `vmhub serve` arguments.
#[derive(Args)]
pub struct ServeArgs {
    /// The address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The hub's data folder: blobs, uploads and its database [default: a
    /// `vmhub-hub` folder beside the library folder].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The largest blob accepted (K, M, G, T suffixes).
    #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = parse_size)]
    max_blob_size: u64,
}

/// The hub's data folder when none is given: beside the library folder.
fn default_data() -> Result<PathBuf> {
    let home = default_home()?;
    Ok(match home.parent() {
        Some(parent) => parent.join("vmhub-hub"),
        None => home.join("hub"),
    })
}

/// `vmhub serve`.
pub fn run(a: ServeArgs) -> ExitCode {
    finish(serve(a))
}

fn serve(a: ServeArgs) -> Result<()> {
    let data = match a.data {
        Some(d) => d,
        None => default_data()?,
    };
    let config = hub::Config {
        data: data.clone(),
        max_blob_size: a.max_blob_size,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let hub = hub::Hub::open(&config)
            .await
            .with_context(|| format!("cannot open the hub's data folder {}", data.display()))?;
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let addr = listener.local_addr().context("no local address")?;
        let mut out = std::io::stdout();
        writeln!(
            out,
            "vmhub: serving the hub on http://{addr} (data in {})",
            data.display()
        )?;
        out.flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch for SIGTERM")?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        hub.serve(listener, stop).await.context("the hub failed")?;
        eprintln!("vmhub: the hub stopped");
        Ok(())
    })
}
