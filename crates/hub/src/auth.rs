//! Who may push and pull.
//!
//! Publishers hold tokens minted by `vmhub serve --create-token`: a random
//! secret of which the database keeps only the SHA-256. A token carries
//! scopes such as `push:acme` (every repository under `acme/`) or `pull:*`.
//! Clients present it either as HTTP Basic credentials (user and token) or
//! trade those at the token endpoint (`GET /v2/token`, the distribution
//! "token authentication" flow) for a short-lived bearer token: claims
//! naming the repositories and actions granted, signed with an HMAC key kept
//! in the data folder, so that every hub process sharing the folder accepts
//! the tokens of the others.

use crate::db::Metadata;
use crate::error::{ApiError, ApiResult, Code};
use crate::names;
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `service` the hub names in its challenges and tokens.
pub const SERVICE: &str = "vmhub";

/// How long a bearer token from the token endpoint lasts, in seconds.
pub const BEARER_LIFETIME: u64 = 900;

/// The cap on an `Authorization` header's length.
const MAX_CREDENTIAL_LEN: usize = 16 << 10;

/// The most repository scopes one token request may ask for.
const MAX_REQUESTED_SCOPES: usize = 32;

/// The data folder file holding the key bearer tokens are signed with.
const KEY_FILE: &str = "token.key";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Upload, tag and delete (and read).
    Push,
}

impl Action {
    /// The action as the distribution token scopes spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
        }
    }
}

/// A token's scope: an action over a namespace. `push:acme` allows pushing
/// to `acme` and every repository under `acme/`; `*` is every repository.
/// Push implies pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The action allowed.
    pub action: Action,
    /// The namespace: a repository name prefix, or `*`.
    pub namespace: String,
}

/// Why a scope could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a scope: write push:NAMESPACE or pull:NAMESPACE (NAMESPACE may be *)")]
pub struct ScopeError(String);

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Scope, ScopeError> {
        let bad = || ScopeError(s.to_string());
        let (action, namespace) = s.split_once(':').ok_or_else(bad)?;
        let action = match action {
            "push" => Action::Push,
            "pull" => Action::Pull,
            _ => return Err(bad()),
        };
        if namespace != "*" && !names::valid_name(namespace) {
            return Err(bad());
        }
        Ok(Scope {
            action,
            namespace: namespace.to_string(),
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.action.as_str(), self.namespace)
    }
}

impl Scope {
    /// Whether this scope allows `action` on repository `repo`.
    pub fn covers(&self, repo: &str, action: Action) -> bool {
        let action_ok = self.action == Action::Push || action == Action::Pull;
        let ns = self.namespace.as_str();
        let repo_ok = ns == "*"
            || repo == ns
            || repo
                .strip_prefix(ns)
                .is_some_and(|rest| rest.starts_with('/'));
        action_ok && repo_ok
    }
}

/// Whether `user` may name a token's owner: it goes into Basic credentials,
/// so no `:`; kept to a short plain word.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// A new token secret: `vmhub_` and 64 hex digits (32 random bytes).
pub(crate) fn new_secret() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(format!("vmhub_{}", hex(&b)))
}

/// What the database keeps of a token secret.
pub(crate) fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One repository's grant inside a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// The repository.
    pub name: String,
    /// The actions granted: `pull`, `push`.
    pub actions: Vec<String>,
}

/// What a bearer token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user it was issued to; empty for an anonymous token.
    pub sub: String,
    /// When it stops being accepted, in seconds since the Unix epoch.
    pub exp: u64,
    /// What it grants.
    pub access: Vec<Access>,
    /// The SHA-256 (hex) of the publishing token it was traded for, so that
    /// revoking that token ends it at once; empty for an anonymous token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tok: String,
}

/// The key bearer tokens are signed with.
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// Loads the key of data folder `data`, making it on first use. Two hubs
    /// starting together over one folder agree on one key: each writes its
    /// candidate aside and links it into place only if none is there yet.
    pub fn load(data: &Path) -> std::io::Result<TokenKey> {
        let path = data.join(KEY_FILE);
        if !path.exists() {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
            let tmp = data.join(format!("{KEY_FILE}.{}", crate::random_id()?));
            let written = (|| {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&b)?;
                f.sync_all()?;
                match std::fs::hard_link(&tmp, &path) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                    _ => Ok(()),
                }
            })();
            let _ = std::fs::remove_file(&tmp);
            written?;
        }
        let bytes = std::fs::read(&path)?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a 32-byte key", path.display()),
            )
        })?;
        Ok(TokenKey(key))
    }

    /// A key from its 32 bytes (hubs sharing a database keep it there).
    pub fn from_bytes(key: [u8; 32]) -> TokenKey {
        TokenKey(key)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// Signs `claims` into a bearer token: the claims' JSON and its HMAC,
    /// each in unpadded base64url, joined by a dot.
    pub fn sign(&self, claims: &Claims) -> String {
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// The claims of a bearer token this key signed, if it has not expired.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        if token.len() > MAX_CREDENTIAL_LEN {
            return None;
        }
        let (body, sig) = token.split_once('.')?;
        let sig = B64.decode(sig).ok()?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&sig).ok()?;
        let claims: Claims = serde_json::from_slice(&B64.decode(body).ok()?).ok()?;
        (claims.exp > now()).then_some(claims)
    }
}

/// Who a request comes from.
#[derive(Debug)]
pub(crate) enum Principal {
    /// No credentials (or an anonymous bearer token).
    Anonymous(Vec<Access>),
    /// A user with a token's scopes (Basic credentials), and the hash of
    /// the token's secret.
    User(String, Vec<Scope>, String),
    /// A user with a bearer token's grants.
    Bearer(Vec<Access>),
}

impl Principal {
    /// Whether the principal may do `action` on `repo`.
    pub(crate) fn allows(&self, repo: &str, action: Action) -> bool {
        match self {
            Principal::User(_, scopes, _) => scopes.iter().any(|s| s.covers(repo, action)),
            Principal::Anonymous(access) | Principal::Bearer(access) => access
                .iter()
                .any(|a| a.name == repo && a.actions.iter().any(|x| x == action.as_str())),
        }
    }

    /// The user name a bearer token is issued to: empty unless the
    /// principal showed Basic credentials.
    pub(crate) fn user(&self) -> &str {
        match self {
            Principal::User(u, _, _) => u,
            _ => "",
        }
    }

    pub(crate) fn is_anonymous(&self) -> bool {
        matches!(self, Principal::Anonymous(_))
    }
}

/// The credentials of a request were presented but are not valid.
#[derive(Debug)]
pub(crate) struct BadCredentials;

/// Reads the `Authorization` header: none is anonymous; Basic credentials
/// are checked against the token table; a bearer token against the key,
/// and a user's bearer token also against the token table, so that it dies
/// with the publishing token it was traded for.
pub(crate) async fn authenticate(
    meta: &dyn Metadata,
    key: &TokenKey,
    headers: &HeaderMap,
) -> ApiResult<Result<Principal, BadCredentials>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Ok(Principal::Anonymous(Vec::new())));
    };
    let Ok(value) = value.to_str() else {
        return Ok(Err(BadCredentials));
    };
    if value.len() > MAX_CREDENTIAL_LEN {
        return Ok(Err(BadCredentials));
    }
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let Some((user, secret)) = basic(rest) else {
            return Ok(Err(BadCredentials));
        };
        let found = meta
            .token(&secret_hash(&secret))
            .await
            .map_err(|e| ApiError::internal("checking a token", e))?;
        return Ok(match found {
            Some((owner, scopes)) if owner == user => Ok(Principal::User(
                owner,
                scopes
                    .split_whitespace()
                    .filter_map(|s| s.parse().ok())
                    .collect(),
                secret_hash(&secret),
            )),
            _ => Err(BadCredentials),
        });
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(match key.verify(rest) {
            Some(c) if c.sub.is_empty() => Ok(Principal::Anonymous(c.access)),
            Some(c) => {
                let live = !c.tok.is_empty()
                    && meta
                        .token(&c.tok)
                        .await
                        .map_err(|e| ApiError::internal("checking a token", e))?
                        .is_some_and(|(owner, _)| owner == c.sub);
                if live {
                    Ok(Principal::Bearer(c.access))
                } else {
                    Err(BadCredentials)
                }
            }
            None => Err(BadCredentials),
        });
    }
    Ok(Err(BadCredentials))
}

/// The user and password of Basic credentials.
fn basic(encoded: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (user, secret) = raw.split_once(':')?;
    Some((user.to_string(), secret.to_string()))
}

/// The host the client reached the hub by, if it is a plain host[:port].
pub(crate) fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost")
        .to_string()
}

/// A 401 with the challenge that sends clients to the token endpoint.
pub(crate) fn challenge(
    headers: &HeaderMap,
    scope: Option<(&str, Action)>,
    message: &str,
) -> ApiError {
    let mut value = format!(
        "Bearer realm=\"http://{}/v2/token\",service=\"{SERVICE}\"",
        host(headers)
    );
    if let Some((repo, action)) = scope {
        let actions = match action {
            Action::Pull => "pull",
            Action::Push => "push,pull",
        };
        value.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
    }
    ApiError::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, message)
        .header(header::WWW_AUTHENTICATE, value)
}

/// The message of a 401 for `action` on `repo`.
pub(crate) fn unauthorized_message(repo: &str, action: Action, bad: bool) -> String {
    let what = match action {
        Action::Push => format!("pushing to {repo} needs a token with push scope on its namespace"),
        Action::Pull => {
            format!("pulling from {repo} needs a token with pull scope on its namespace")
        }
    };
    let how = "(the hub's operator mints one with `vmhub serve --create-token`; give it to `vmhub login`)";
    if bad {
        format!("the credentials are not valid: {what} {how}")
    } else {
        format!("authentication required: {what} {how}")
    }
}

/// The 403 for a valid token without the scope.
pub(crate) fn denied(repo: &str, action: Action) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        Code::Denied,
        format!("the token does not grant {} on {repo}", action.as_str()),
    )
    .detail(serde_json::json!({ "name": repo, "action": action.as_str() }))
}

/// The repository scopes a token request asks for: `repository:NAME:ACTIONS`
/// in one or more `scope` parameters, each maybe holding several separated
/// by spaces. Other resource types (`registry:catalog:*`) are ignored.
pub(crate) fn requested(scopes: &[&str]) -> ApiResult<Vec<(String, Vec<Action>)>> {
    let mut out: Vec<(String, Vec<Action>)> = Vec::new();
    for s in scopes.iter().flat_map(|s| s.split_whitespace()) {
        let Some(rest) = s.strip_prefix("repository:") else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        if !names::valid_name(name) {
            continue;
        }
        if out.len() >= MAX_REQUESTED_SCOPES {
            return Err(ApiError::bad(
                Code::Unsupported,
                "too many scopes requested",
            ));
        }
        let mut acts = Vec::new();
        for a in actions.split(',') {
            let a = match a {
                "pull" => Action::Pull,
                "push" => Action::Push,
                "*" => Action::Push,
                _ => continue,
            };
            if !acts.contains(&a) {
                acts.push(a);
            }
        }
        out.push((name.to_string(), acts));
    }
    Ok(out)
}

/// The claims the token endpoint grants `principal` for `requested`: each
/// action asked for that the principal holds, and pull everywhere on a
/// public hub.
pub(crate) fn grant(
    principal: &Principal,
    requested: &[(String, Vec<Action>)],
    private: bool,
) -> Vec<Access> {
    let mut out = Vec::new();
    for (name, actions) in requested {
        let mut granted: Vec<String> = Vec::new();
        let mut give = |a: Action| {
            if !granted.iter().any(|g| g == a.as_str()) {
                granted.push(a.as_str().to_string());
            }
        };
        for &a in actions {
            if principal.allows(name, a) {
                give(a);
                if a == Action::Push {
                    give(Action::Pull);
                }
            } else if a == Action::Pull && !private {
                give(a);
            }
        }
        if !granted.is_empty() {
            out.push(Access {
                name: name.clone(),
                actions: granted,
            });
        }
    }
    out
}

/// A bearer token for `principal` with `access`, valid for
/// [`BEARER_LIFETIME`] or until the publishing token behind it is revoked.
pub(crate) fn issue(key: &TokenKey, principal: &Principal, access: Vec<Access>) -> String {
    let tok = match principal {
        Principal::User(_, _, hash) => hash.clone(),
        _ => String::new(),
    };
    key.sign(&Claims {
        sub: principal.user().to_string(),
        exp: now().saturating_add(BEARER_LIFETIME),
        access,
        tok,
    })
}

/// How many hex digits of a token's hash make its id.
const ID_LEN: usize = 12;

/// A publishing token as `vmhub serve --list-tokens` shows it: never its
/// secret, nor the whole hash of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// A short id: the first hex digits of the hash of its secret.
    pub id: String,
    /// Its owner.
    pub user: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it was minted, RFC 3339 UTC (empty if unknown).
    pub created: String,
}

impl TokenInfo {
    fn of(row: &crate::db::TokenRow) -> TokenInfo {
        TokenInfo {
            id: row.hash.get(..ID_LEN).unwrap_or(&row.hash).to_string(),
            user: row.owner.clone(),
            scopes: row.scopes.split_whitespace().map(str::to_string).collect(),
            created: row.created.clone(),
        }
    }
}

impl crate::Hub {
    /// Every publishing token, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, crate::db::DbError> {
        let rows = self.meta.list_tokens().await?;
        Ok(rows.iter().map(TokenInfo::of).collect())
    }

    /// Revokes the tokens of user `who`, or the token whose id (or a longer
    /// prefix of its hash, at least [`ID_LEN`] hex digits) is `who`; returns
    /// what was revoked, nothing when none matched. Basic credentials with
    /// a revoked token are refused at once, and so are the bearer tokens
    /// traded for it.
    pub async fn revoke_tokens(&self, who: &str) -> Result<Vec<TokenInfo>, crate::db::DbError> {
        let by_id = who.len() >= ID_LEN && who.bytes().all(|b| b.is_ascii_hexdigit());
        let who_hex = who.to_ascii_lowercase();
        let mut revoked = Vec::new();
        for row in self.meta.list_tokens().await? {
            let hit = row.owner == who || (by_id && row.hash.starts_with(&who_hex));
            if hit && self.meta.delete_token(&row.hash).await? {
                revoked.push(TokenInfo::of(&row));
            }
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let s: Scope = "push:acme".parse().unwrap();
        assert!(s.covers("acme", Action::Push));
        assert!(s.covers("acme/box", Action::Pull));
        assert!(!s.covers("acmeco/box", Action::Push));
        assert!(!s.covers("other", Action::Push));
        let s: Scope = "pull:*".parse().unwrap();
        assert!(s.covers("x/y", Action::Pull));
        assert!(!s.covers("x/y", Action::Push));
        assert!("push:".parse::<Scope>().is_err());
        assert!("admin:x".parse::<Scope>().is_err());
        assert!("push:UPPER".parse::<Scope>().is_err());
        assert_eq!("push:a/b".parse::<Scope>().unwrap().to_string(), "push:a/b");
    }

    #[test]
    fn bearer_round_trip_and_forgery() {
        let dir = tempfile::tempdir().unwrap();
        let key = TokenKey::load(dir.path()).unwrap();
        let again = TokenKey::load(dir.path()).unwrap();
        let ann = Principal::User("ann".into(), vec![], "ab".into());
        let t = issue(&key, &ann, vec![]);
        assert_eq!(again.verify(&t).map(|c| c.sub), Some("ann".to_string()));
        let expired = key.sign(&Claims {
            sub: "ann".into(),
            exp: 1,
            access: vec![],
            tok: String::new(),
        });
        assert!(key.verify(&expired).is_none());
        let (body, _) = t.split_once('.').unwrap();
        assert!(key.verify(&format!("{body}.AAAA")).is_none());
        assert!(key.verify("nonsense").is_none());
    }

    #[test]
    fn requested_scopes() {
        let r = requested(&[
            "repository:a/b:push,pull registry:catalog:*",
            "repository:c:pull",
        ])
        .unwrap();
        assert_eq!(
            r,
            vec![
                ("a/b".to_string(), vec![Action::Push, Action::Pull]),
                ("c".to_string(), vec![Action::Pull])
            ]
        );
    }
}
