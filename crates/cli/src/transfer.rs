//! `push`, `pull`, `login`, `logout` and `key`: machines through OCI
//! registries, signed and verified.

use crate::img::Output;
use crate::library::{finish, HomeArg};
use crate::output::Progress;
use crate::size::human;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use store::oci::auth::{CredentialStore, Credentials};
use store::oci::{Client, ClientOptions, PullOptions, PushOptions, RemoteRef};
use store::trust::{KeyPair, PublicKey, TrustStore};
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
    /// Push without a signature (pullers must then skip verification).
    #[arg(long)]
    unsigned: bool,
    /// Upload blobs larger than this in pieces (PATCH requests of this size)
    /// rather than in one request.
    #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size, default_value = "32M")]
    upload_pieces_above: u64,
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
    /// Take the machine even when it is unsigned, signed by a key not
    /// trusted here, or older than the one already under its name.
    #[arg(long)]
    insecure_skip_verify: bool,
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

/// vmhub's settings folder: $VMHUB_CONFIG, else $XDG_CONFIG_HOME/vmhub, else
/// ~/.config/vmhub. It holds auth.json (registry credentials), key.json (the
/// signing key) and trusted.json (the keys pulls accept).
fn config_dir() -> Result<PathBuf> {
    crate::library::user_folder(
        "VMHUB_CONFIG",
        "XDG_CONFIG_HOME",
        ".config",
        "settings folder",
    )
}

fn auth_path() -> Result<PathBuf> {
    Ok(config_dir()?.join("auth.json"))
}

fn key_path() -> Result<PathBuf> {
    Ok(config_dir()?.join("key.json"))
}

fn trust_store() -> Result<TrustStore> {
    Ok(TrustStore::load(&config_dir()?.join("trusted.json"))?)
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
            chunked_above: a.upload_pieces_above,
            piece: a.upload_pieces_above.max(1),
        };
        let key = if a.unsigned {
            None
        } else {
            let path = key_path()?;
            if !path.exists() {
                bail!(
                    "no signing key at {}: run `vmhub key generate` first, or push with --unsigned",
                    path.display()
                );
            }
            Some(KeyPair::load(&path)?)
        };
        let mut progress = Progress::new(a.registry.progress, "push");
        let done = store::oci::push(
            &lib,
            &local,
            &remote,
            &client,
            key.as_ref(),
            &opts,
            &mut |d, t| progress.set(d, t),
        )
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
        let trust = if a.insecure_skip_verify {
            eprintln!("vmhub: warning: not verifying the machine's signature");
            None
        } else {
            Some(trust_store()?)
        };
        let opts = PullOptions {
            threads: a.registry.threads,
            trust,
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
                "signed-by": done.signer.as_ref().map(|k| k.key.to_string()),
            });
            out!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            if let Some(k) = &done.signer {
                out!("signed by {} (key {})", k.name, k.key.id());
            }
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

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Make this computer's signing key (and trust it for pulls).
    Generate {
        /// Replace an existing key (machines it signed will no longer verify
        /// where only it is trusted).
        #[arg(long)]
        force: bool,
    },
    /// Print this computer's public key, to give to those who pull.
    Show,
    /// Accept machines signed by a key.
    Trust {
        /// The public key, ed25519:BASE64.
        key: String,
        /// A name for it.
        #[arg(long, default_value = "trusted")]
        name: String,
    },
    /// Stop accepting machines signed by a key.
    Untrust {
        /// The public key, ed25519:BASE64.
        key: String,
    },
    /// List the trusted keys.
    Ls,
}

/// `vmhub key`.
pub fn key(c: KeyCommand) -> ExitCode {
    finish((|| {
        match c {
            KeyCommand::Generate { force } => {
                let path = key_path()?;
                if path.exists() && !force {
                    bail!(
                        "{} exists: this computer has a key already (`vmhub key show`; --force replaces it)",
                        path.display()
                    );
                }
                let k = KeyPair::generate()?;
                k.save(&path, force)?;
                trust_store()?.add("this computer", k.public())?;
                out!("{}", k.public());
            }
            KeyCommand::Show => {
                let path = key_path()?;
                let k = KeyPair::load(&path)
                    .with_context(|| "no signing key here: run `vmhub key generate`".to_string())?;
                out!("{}", k.public());
            }
            KeyCommand::Trust { key, name } => {
                let k: PublicKey = key.parse()?;
                trust_store()?.add(&name, k)?;
                out!("trusting key {} ({name})", k.id());
            }
            KeyCommand::Untrust { key } => {
                let k: PublicKey = key.parse()?;
                if trust_store()?.remove(&k)? {
                    out!("no longer trusting key {}", k.id());
                } else {
                    bail!("key {} was not trusted", k.id());
                }
            }
            KeyCommand::Ls => {
                for k in trust_store()?.keys {
                    out!("{}  {}  {}", k.key.id(), k.key, k.name);
                }
            }
        }
        Ok(())
    })())
}
