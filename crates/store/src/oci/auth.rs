//! Registry credentials and authentication challenges.
//!
//! Credentials are kept in the format docker and skopeo use
//! (`{"auths": {"HOST": {"auth": base64("user:password")}}}`), so a file
//! written by `docker login` can be read, and vmhub's can be read by them.

use crate::{Error, Result};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A user name and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password or personal token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <hidden>)", self.user)
    }
}

impl Credentials {
    /// The value of a Basic `Authorization` header.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A credentials file.
#[derive(Clone, Debug)]
pub struct CredentialStore {
    path: PathBuf,
    auths: BTreeMap<String, serde_json::Value>,
    rest: serde_json::Map<String, serde_json::Value>,
}

impl CredentialStore {
    /// Reads `path` (an absent file is an empty store).
    pub fn load(path: &Path) -> Result<CredentialStore> {
        let mut store = CredentialStore {
            path: path.to_path_buf(),
            auths: BTreeMap::new(),
            rest: serde_json::Map::new(),
        };
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(Error::io(path, "read", e)),
        };
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&data)
            .map_err(|e| Error::corrupt(path.display().to_string(), format!("not JSON: {e}")))?;
        if let Some(serde_json::Value::Object(a)) = v.remove("auths") {
            store.auths = a.into_iter().collect();
        }
        store.rest = v;
        Ok(store)
    }

    /// The credentials stored for `registry`.
    pub fn get(&self, registry: &str) -> Option<Credentials> {
        let entry = self
            .auths
            .get(registry)
            .or_else(|| self.auths.get(&format!("https://{registry}")))?;
        let encoded = entry.get("auth")?.as_str()?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (user, password) = raw.split_once(':')?;
        Some(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    /// Stores credentials for `registry` and writes the file (mode 0600).
    pub fn set(&mut self, registry: &str, c: &Credentials) -> Result<()> {
        let raw = format!("{}:{}", c.user, c.password);
        let auth = base64::engine::general_purpose::STANDARD.encode(raw);
        self.auths
            .insert(registry.to_string(), serde_json::json!({ "auth": auth }));
        self.save()
    }

    /// Forgets `registry`'s credentials; false when there were none.
    pub fn remove(&mut self, registry: &str) -> Result<bool> {
        let had = self.auths.remove(registry).is_some();
        if had {
            self.save()?;
        }
        Ok(had)
    }

    fn save(&self) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut v = self.rest.clone();
        v.insert(
            "auths".into(),
            serde_json::Value::Object(self.auths.clone().into_iter().collect()),
        );
        let data = serde_json::to_vec_pretty(&v).unwrap_or_default();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create folder", e))?;
        let tmp = dir.join(format!(".auth.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, "create", e))?;
            f.write_all(&data)
                .map_err(|e| Error::io(&tmp, "write", e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, "fsync", e))?;
            std::fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, "rename", e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Send a Basic `Authorization` header.
    Basic,
    /// Fetch a token from `realm` (RFC 6750, as the distribution token spec uses it).
    Bearer {
        /// The token server.
        realm: String,
        /// The service to ask a token for.
        service: Option<String>,
        /// The scope the registry asked for.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        map.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: map.remove("realm")?,
        service: map.remove("service"),
        scope: map.remove("scope"),
    })
}

/// Percent-encodes a query parameter value.
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            encode_query("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn credentials_round_trip_in_docker_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let mut s = CredentialStore::load(&path).unwrap();
        assert!(s.get("r.example").is_none());
        let c = Credentials {
            user: "alice".into(),
            password: "pa:ss".into(),
        };
        s.set("r.example", &c).unwrap();
        let s = CredentialStore::load(&path).unwrap();
        assert_eq!(s.get("r.example"), Some(c.clone()));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["auths"]["r.example"]["auth"], "YWxpY2U6cGE6c3M=");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(c.basic(), "Basic YWxpY2U6cGE6c3M=");
    }
}
