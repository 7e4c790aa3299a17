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
    /// Keep the metadata in this database instead of SQLite in the data
    /// folder: postgres://USER:PASS@HOST:PORT/DB. Hub processes sharing it
    /// (and the storage) serve the same registry.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Keep blobs and uploads in S3-compatible object storage instead of the
    /// data folder: s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION].
    /// Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, value_name = "URL", value_parser = parse_storage)]
    storage: Option<hub::s3::S3Config>,
    /// The largest blob accepted (K, M, G, T suffixes).
    #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = parse_size)]
    max_blob_size: u64,
    /// Pulls need a token too (with pull or push scope on the namespace).
    #[arg(long)]
    private: bool,
    /// Mint a publishing token for USER, print it once and exit (the hub
    /// keeps only its hash). Clients give USER and the token as their user
    /// name and password (`vmhub login`).
    #[arg(long, value_name = "USER", requires = "scope")]
    create_token: Option<String>,
    /// A scope of the token made by --create-token: push:NAMESPACE (push
    /// and pull to NAMESPACE and everything under NAMESPACE/) or
    /// pull:NAMESPACE; `*` is every repository. May be repeated.
    #[arg(long, value_name = "SCOPE", requires = "create_token")]
    scope: Vec<hub::auth::Scope>,

    // Operator tasks: each runs once on the data folder and exits.
    /// List the publishing tokens (id, user, scopes, when minted; never the
    /// secret) and exit.
    #[arg(long, conflicts_with_all = ["create_token", "revoke_token", "gc"])]
    list_tokens: bool,
    /// Revoke the tokens of user USER, or the token with id ID (from
    /// --list-tokens), and exit. Requests with them, and bearer tokens
    /// traded for them, are refused at once.
    #[arg(long, value_name = "USER_OR_ID", conflicts_with_all = ["create_token", "gc"])]
    revoke_token: Option<String>,
    /// Collect garbage and exit: remove the blobs no manifest references
    /// and the uploads idle for longer than --upload-ttl; print what went
    /// and the bytes freed. Safe while hubs serve the same data.
    #[arg(long, conflicts_with = "create_token")]
    gc: bool,
    /// With --gc: say what would be removed, remove nothing.
    #[arg(long, requires = "gc")]
    dry_run: bool,
    /// With --gc: how long an upload must be idle, and an unreferenced blob
    /// old, before it is removed (s, m, h, d suffixes).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    upload_ttl: std::time::Duration,
}

/// A duration: a whole number with an optional unit, s (the default), m, h or d.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90s, 30m, 24h or 7d"))?;
    n.checked_mul(scale)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

fn parse_storage(s: &str) -> Result<hub::s3::S3Config, String> {
    hub::s3::S3Config::parse(s).map_err(|e| e.to_string())
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
        database: a.database,
        storage: a.storage,
        max_blob_size: a.max_blob_size,
        private: a.private,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let hub = hub::Hub::open(&config)
            .await
            .context("cannot open the hub")?;
        if a.list_tokens {
            return list_tokens(&hub).await;
        }
        if let Some(who) = &a.revoke_token {
            return revoke_token(&hub, who).await;
        }
        if a.gc {
            return gc(&hub, a.upload_ttl, a.dry_run).await;
        }
        if let Some(user) = &a.create_token {
            let secret = hub.create_token(user, &a.scope).await?;
            let scopes: Vec<String> = a.scope.iter().map(|s| s.to_string()).collect();
            eprintln!(
                "vmhub: a token for {user} ({}); it is shown only this once:",
                scopes.join(", ")
            );
            let mut out = std::io::stdout();
            writeln!(out, "{secret}")?;
            out.flush()?;
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let addr = listener.local_addr().context("no local address")?;
        let mut out = std::io::stdout();
        let database = match &config.database {
            Some(url) => hub::db::redact_url(url),
            None => data.join("hub.db").display().to_string(),
        };
        let blobs = match &config.storage {
            Some(s3) if s3.prefix.is_empty() => format!("s3://{}", s3.bucket),
            Some(s3) => format!("s3://{}/{}", s3.bucket, s3.prefix),
            None => data.display().to_string(),
        };
        writeln!(
            out,
            "vmhub: serving the hub on http://{addr} (database {database}, blobs in {blobs})"
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

/// `--list-tokens`: one line a token.
async fn list_tokens(hub: &hub::Hub) -> Result<()> {
    let tokens = hub.list_tokens().await.context("cannot list the tokens")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<12}  {:<20}  {:<20}  SCOPES",
        "ID", "USER", "CREATED"
    )?;
    for t in &tokens {
        let created = if t.created.is_empty() {
            "-"
        } else {
            &t.created
        };
        writeln!(
            out,
            "{:<12}  {:<20}  {:<20}  {}",
            t.id,
            t.user,
            created,
            t.scopes.join(" ")
        )?;
    }
    out.flush()?;
    Ok(())
}

/// `--revoke-token`.
async fn revoke_token(hub: &hub::Hub, who: &str) -> Result<()> {
    let revoked = hub
        .revoke_tokens(who)
        .await
        .with_context(|| format!("cannot revoke the tokens of {who}"))?;
    if revoked.is_empty() {
        anyhow::bail!("no token of user {who:?} or with id {who:?} (see --list-tokens)");
    }
    for t in &revoked {
        eprintln!(
            "vmhub: revoked token {} of {} ({})",
            t.id,
            t.user,
            t.scopes.join(" ")
        );
    }
    Ok(())
}

/// `--gc [--dry-run]`.
async fn gc(hub: &hub::Hub, grace: std::time::Duration, dry_run: bool) -> Result<()> {
    let report = hub.gc(&hub::gc::GcOptions { grace, dry_run }).await?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = std::io::stdout().lock();
    for (d, n) in &report.blobs {
        writeln!(out, "{verb} blob {d} ({n} bytes)")?;
    }
    for (id, n) in &report.uploads {
        writeln!(out, "{verb} upload {id} ({n} bytes)")?;
    }
    writeln!(
        out,
        "vmhub: {verb} {} blob(s), {} blob link(s) and {} upload(s): {} bytes {}; \
         kept {} unreferenced blob(s) younger than {}s or used by a push meanwhile",
        report.blobs.len(),
        report.links,
        report.uploads.len(),
        report.bytes(),
        if dry_run { "to free" } else { "freed" },
        report.kept,
        grace.as_secs(),
    )?;
    out.flush()?;
    Ok(())
}
