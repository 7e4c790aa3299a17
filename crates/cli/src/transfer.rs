//! `push`, `pull`, `login` and `logout`: machines through OCI registries.

use crate::img::Output;
use crate::library::HomeArg;
use crate::output::Progress;
use crate::size::human;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use store::oci::auth::{CredentialStore, Credentials};
use store::oci::{Client, ClientOptions, PullOptions, PushOptions, RemoteRef};
use store::MachineRef;

/// How to reach the registry.
#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// Speak plain HTTP (the default for localhost and 127.0.0.0/8 only).
    #[arg(long)]
    plain_http: bool,
    /// Blobs moved at once.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Show progress even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

#[derive(Args)]
pub struct PushArgs {
    /// The library machine, NAME[:TAG].
    machine: String,
    /// Where to, REGISTRY/REPOSITORY[:TAG] (the machine's tag when left out).
    remote: String,
    /// Another repository of the same registry that holds some of the blobs:
    /// they are mounted from it instead of uploaded.
    #[arg(long, value_name = "REPOSITORY")]
    mount_from: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    home: HomeArg,
}

#[derive(Args)]
pub struct PullArgs {
    /// REGISTRY/REPOSITORY[:TAG][@DIGEST].
    remote: String,
    /// The name to give it in the library [default: REPOSITORY:TAG].
    #[arg(long = "as", value_name = "NAME[:TAG]")]
    local: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    home: HomeArg,
}

#[derive(Args)]
pub struct LoginArgs {
    /// The registry host (and port).
    registry: String,
    /// User name.
    #[arg(short, long)]
    username: String,
    /// Read the password (or token) from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Speak plain HTTP (the default for localhost and 127.0.0.0/8 only).
    #[arg(long)]
    plain_http: bool,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// The registry host (and port).
    registry: String,
}

/// The credentials file: $VMHUB_AUTH, else $XDG_CONFIG_HOME/vmhub/auth.json,
/// else ~/.config/vmhub/auth.json.
fn auth_path() -> Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("VMHUB_AUTH") {
        return Ok(p);
    }
    if let Some(d) = var("XDG_CONFIG_HOME") {
        return Ok(d.join("vmhub/auth.json"));
    }
    match var("HOME") {
        Some(h) => Ok(h.join(".config/vmhub/auth.json")),
        None => bail!("no place for credentials: set VMHUB_AUTH or HOME"),
    }
}

fn client(remote: &RemoteRef, plain_http: bool) -> Result<Client> {
    let store = CredentialStore::load(&auth_path()?)?;
    Ok(Client::new(
        &remote.registry,
        &ClientOptions {
            plain_http: plain_http || remote.is_local(),
            credentials: store.get(&remote.registry),
        },
    ))
}

fn finish(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmhub: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `vmhub push`.
pub fn push(a: PushArgs) -> ExitCode {
    finish((|| {
        let local: MachineRef = a.machine.parse()?;
        let remote: RemoteRef = a.remote.parse()?;
        let lib = a.home.open()?;
        let client = client(&remote, a.registry.plain_http)?;
        let opts = PushOptions {
            threads: a.registry.threads,
            mount_from: a.mount_from.clone(),
            ..PushOptions::default()
        };
        let mut progress = Progress::new(a.registry.progress, "push");
        let done = store::oci::push(&lib, &local, &remote, &client, &opts, &mut |d, t| {
            progress.set(d, t)
        })
        .with_context(|| format!("cannot push {local} to {remote}"))?;
        progress.finish();
        if a.registry.output == Output::Json {
            let v = serde_json::json!({
                "manifest": done.manifest,
                "blobs": done.blobs,
                "uploaded": done.uploaded,
                "uploaded-bytes": done.uploaded_bytes,
                "mounted": done.mounted,
                "present": done.present,
            });
            out!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            out!(
                "pushed {local} to {remote}: {} blobs, {} uploaded ({}), {} mounted, {} already there",
                done.blobs,
                done.uploaded,
                human(done.uploaded_bytes),
                done.mounted,
                done.present
            );
            out!("manifest: {}", done.manifest);
        }
        Ok(())
    })())
}

/// `vmhub pull`.
pub fn pull(a: PullArgs) -> ExitCode {
    finish((|| {
        let remote: RemoteRef = a.remote.parse()?;
        let local = match &a.local {
            Some(l) => l.parse()?,
            None => MachineRef::new(
                &remote.repository,
                remote
                    .tag
                    .as_deref()
                    .unwrap_or(store::reference::DEFAULT_TAG),
            )?,
        };
        let lib = a.home.open()?;
        let client = client(&remote, a.registry.plain_http)?;
        let opts = PullOptions {
            threads: a.registry.threads,
        };
        let mut progress = Progress::new(a.registry.progress, "pull");
        let done = store::oci::pull(&lib, &remote, &local, &client, &opts, &mut |d, t| {
            progress.set(d, t)
        })
        .with_context(|| format!("cannot pull {remote}"))?;
        progress.finish();
        if a.registry.output == Output::Json {
            let v = serde_json::json!({
                "reference": local.to_string(),
                "manifest": done.manifest,
                "blobs": done.blobs,
                "fetched": done.fetched,
                "fetched-bytes": done.fetched_bytes,
                "present": done.present,
            });
            out!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            out!(
                "pulled {remote} as {local}: {} blobs, {} fetched ({}), {} already here",
                done.blobs,
                done.fetched,
                human(done.fetched_bytes),
                done.present
            );
            out!("manifest: {}", done.manifest);
        }
        Ok(())
    })())
}

/// `vmhub login`.
pub fn login(a: LoginArgs) -> ExitCode {
    finish((|| {
        if !a.password_stdin {
            bail!("give the password on standard input with --password-stdin");
        }
        let mut password = String::new();
        std::io::stdin()
            .take(64 << 10)
            .read_to_string(&mut password)
            .context("cannot read the password from standard input")?;
        let password = password.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!("the password on standard input is empty");
        }
        let creds = Credentials {
            user: a.username.clone(),
            password,
        };
        let probe: RemoteRef = format!("{}/probe", a.registry).parse()?;
        let client = Client::new(
            &a.registry,
            &ClientOptions {
                plain_http: a.plain_http || probe.is_local(),
                credentials: Some(creds.clone()),
            },
        );
        client
            .ping()
            .with_context(|| format!("cannot log in to {}", a.registry))?;
        let path = auth_path()?;
        let mut store = CredentialStore::load(&path)?;
        store.set(&a.registry, &creds)?;
        out!("logged in to {} as {}", a.registry, a.username);
        Ok(())
    })())
}

/// `vmhub logout`.
pub fn logout(a: LogoutArgs) -> ExitCode {
    finish((|| {
        let path = auth_path()?;
        let mut store = CredentialStore::load(&path)?;
        if store.remove(&a.registry)? {
            out!("logged out of {}", a.registry);
        } else {
            out!("not logged in to {}", a.registry);
        }
        Ok(())
    })())
}
