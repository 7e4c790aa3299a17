//! An OCI distribution v1.1 client: the requests push and pull are made of,
//! with authentication (Basic, or Bearer tokens fetched on a challenge).

use super::auth::{encode_query, parse_challenge, Challenge, Credentials};
use crate::digest::Digest;
use crate::{Error, Result};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;
use ureq::http::{self, Response};

/// How to reach a registry.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Speak plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// Credentials to answer challenges with.
    pub credentials: Option<Credentials>,
}

/// A connection to one registry.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    registry: String,
    credentials: Option<Credentials>,
    /// `Authorization` values by scope, once a challenge was answered.
    auth: Mutex<HashMap<String, String>>,
}

/// A request body that can be sent again after an authentication challenge.
pub enum Body<'a> {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(&'a [u8]),
}

/// Largest error or token body read.
const SMALL: u64 = 1 << 20;

impl Client {
    /// A client for `registry` (host and optional port).
    pub fn new(registry: &str, opts: &ClientOptions) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            // A registry that stops sending (or reading) for a minute is gone;
            // no total limit, since a large blob on a slow link takes long.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            .user_agent(concat!("vmhub/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections_per_host(16)
            .build();
        let scheme = if opts.plain_http { "http" } else { "https" };
        Client {
            agent: config.into(),
            base: format!("{scheme}://{registry}"),
            registry: registry.to_string(),
            credentials: opts.credentials.clone(),
            auth: Mutex::new(HashMap::new()),
        }
    }

    /// The registry's host.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The URL of `path` (which starts with `/v2/`), or `path` itself when it
    /// is already absolute (an upload location).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Sends a request, answering one authentication challenge for `scope`
    /// ("repository:NAME:pull" or "…:pull,push").
    pub fn send(
        &self,
        method: http::Method,
        url: &str,
        scope: &str,
        headers: &[(&str, &str)],
        body: &Body,
    ) -> Result<Response<ureq::Body>> {
        let mut answered = false;
        // The answer to this call's challenge: the retry must use it, not
        // what the shared map holds by then (another thread may have stored a
        // token of narrower scope under the same key meanwhile).
        let mut fresh: Option<String> = None;
        loop {
            let mut req = http::Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let known = fresh
                .clone()
                .or_else(|| self.auth.lock().ok().and_then(|a| a.get(scope).cloned()));
            if let Some(a) = &known {
                req = req.header("Authorization", a.as_str());
            }
            let result = match body {
                Body::Empty => req
                    .body(&[][..])
                    .map_err(|e| self.bad_request(url, e))
                    .and_then(|r| self.run(url, r)),
                Body::Bytes(b) => req
                    .body(*b)
                    .map_err(|e| self.bad_request(url, e))
                    .and_then(|r| self.run(url, r)),
            }?;
            if result.status() != http::StatusCode::UNAUTHORIZED || answered {
                return Ok(result);
            }
            answered = true;
            let challenge = result
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
                .ok_or_else(|| {
                    self.error(url, &result, "refused without a challenge vmhub can answer")
                })?;
            let value = self.answer(&challenge, scope, url)?;
            // A bearer token is good for the scope it was asked for, which is
            // the challenge's when it names one (a registry answering a HEAD
            // may ask for pull alone): it is kept under that scope, so that a
            // later request needing more is challenged again, not refused.
            let granted = match &challenge {
                Challenge::Bearer {
                    scope: Some(asked), ..
                } => asked.as_str(),
                _ => scope,
            };
            if let Ok(mut a) = self.auth.lock() {
                a.insert(granted.to_string(), value.clone());
                // Under this call's own scope too when the grant covers it
                // ("push,pull" covers "pull,push"), so the next request of
                // that scope sends it at once: a request with a body that
                // went without would be refused before its body was read.
                if granted != scope && scope_covers(granted, scope) {
                    a.insert(scope.to_string(), value.clone());
                }
            }
            fresh = Some(value);
        }
    }

    fn run(&self, url: &str, req: http::Request<&[u8]>) -> Result<Response<ureq::Body>> {
        self.agent.run(req).map_err(|e| Error::Registry {
            url: url.to_string(),
            problem: format!("cannot connect: {e}"),
        })
    }

    fn bad_request(&self, url: &str, e: http::Error) -> Error {
        Error::Registry {
            url: url.to_string(),
            problem: format!("cannot build the request: {e}"),
        }
    }

    /// The `Authorization` value that answers `challenge`.
    fn answer(&self, challenge: &Challenge, scope: &str, url: &str) -> Result<String> {
        match challenge {
            Challenge::Basic => match &self.credentials {
                Some(c) => Ok(c.basic()),
                None => Err(Error::Registry {
                    url: url.to_string(),
                    problem: format!(
                        "the registry wants a user name and password: run `vmhub login {}`",
                        self.registry
                    ),
                }),
            },
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                let mut token_url = realm.clone();
                let mut sep = if realm.contains('?') { '&' } else { '?' };
                if let Some(s) = service {
                    token_url.push_str(&format!("{sep}service={}", encode_query(s)));
                    sep = '&';
                }
                let scope = asked.as_deref().unwrap_or(scope);
                token_url.push_str(&format!("{sep}scope={}", encode_query(scope)));
                let mut req = http::Request::builder().method("GET").uri(&token_url);
                if let Some(c) = &self.credentials {
                    // The password goes to a token server on the registry's
                    // own host, or to any over HTTPS; never in clear text to
                    // another host the registry names.
                    let same_host = host_of(realm) == host_of(&self.base);
                    if same_host || realm.starts_with("https://") {
                        req = req.header("Authorization", c.basic());
                    }
                }
                let req = req
                    .body(&[][..])
                    .map_err(|e| self.bad_request(&token_url, e))?;
                let mut resp = self.run(&token_url, req)?;
                if !resp.status().is_success() {
                    return Err(self.error(&token_url, &resp, "the token server refused"));
                }
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(SMALL)
                    .read_to_vec()
                    .map_err(|e| Error::Registry {
                        url: token_url.clone(),
                        problem: format!("cannot read the token: {e}"),
                    })?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| Error::Registry {
                        url: token_url.clone(),
                        problem: format!("the token answer is not JSON: {e}"),
                    })?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Error::Registry {
                        url: token_url.clone(),
                        problem: "the token answer holds no token".into(),
                    })?;
                Ok(format!("Bearer {token}"))
            }
        }
    }

    /// An error for an unexpected answer, with the registry's own error
    /// codes when it sent them.
    pub fn error(&self, url: &str, resp: &Response<ureq::Body>, doing: &str) -> Error {
        Error::Registry {
            url: url.to_string(),
            problem: format!("{doing}: HTTP {}", resp.status()),
        }
    }

    /// An error for an unexpected answer, reading the OCI error body.
    pub fn error_with_body(&self, url: &str, mut resp: Response<ureq::Body>, doing: &str) -> Error {
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(SMALL)
            .read_to_vec()
            .unwrap_or_default();
        let mut detail = String::new();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
            if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
                let parts: Vec<String> = errors
                    .iter()
                    .take(5)
                    .map(|e| {
                        format!(
                            "{} {}",
                            e.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
                            e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                        )
                    })
                    .collect();
                detail = format!(" ({})", parts.join("; "));
            }
        }
        Error::Registry {
            url: url.to_string(),
            problem: format!("{doing}: HTTP {status}{detail}"),
        }
    }

    /// Whether the repository holds blob `d` (HEAD).
    pub fn has_blob(&self, repo: &str, d: &Digest, scope: &str) -> Result<Option<u64>> {
        let url = self.url(&format!("/v2/{repo}/blobs/{d}"));
        let resp = self.send(http::Method::HEAD, &url, scope, &[], &Body::Empty)?;
        match resp.status().as_u16() {
            200 => Ok(Some(content_length(&resp).unwrap_or(0))),
            404 => Ok(None),
            _ => Err(self.error(&url, &resp, "cannot ask for a blob")),
        }
    }

    /// Fetches a manifest (at most `max` bytes) by tag or digest; returns its
    /// bytes and the media type the registry gave.
    pub fn get_manifest(&self, repo: &str, reference: &str, max: u64) -> Result<(Vec<u8>, String)> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let scope = format!("repository:{repo}:pull");
        let accept = [(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )];
        let mut resp = self.send(http::Method::GET, &url, &scope, &accept, &Body::Empty)?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(Error::NotFound(format!(
                    "{}/{repo}:{reference}",
                    self.registry
                )))
            }
            _ => return Err(self.error_with_body(&url, resp, "cannot fetch the manifest")),
        }
        if content_length(&resp).is_some_and(|n| n > max) {
            return Err(Error::corrupt(
                url,
                format!("manifest is larger than {max} bytes"),
            ));
        }
        let kind = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .body_mut()
            .with_config()
            .limit(max)
            .read_to_vec()
            .map_err(|e| {
                Error::corrupt(
                    url.clone(),
                    format!("cannot read the manifest (at most {max} bytes): {e}"),
                )
            })?;
        Ok((body, kind))
    }

    /// Stores a manifest under `reference` (a tag or its digest); returns the
    /// digest the registry reports.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        data: &[u8],
    ) -> Result<Option<String>> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let scope = format!("repository:{repo}:pull,push");
        let resp = self.send(
            http::Method::PUT,
            &url,
            &scope,
            &[("Content-Type", media_type)],
            &Body::Bytes(data),
        )?;
        if resp.status().as_u16() != 201 {
            return Err(self.error_with_body(&url, resp, "cannot store the manifest"));
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// Opens a blob for reading from byte `from` on. Returns the response
    /// and whether it starts at `from` (a 206) rather than at 0 (a 200).
    pub fn get_blob(
        &self,
        repo: &str,
        d: &Digest,
        from: u64,
    ) -> Result<(Box<dyn Read + Send>, bool, Option<u64>)> {
        let url = self.url(&format!("/v2/{repo}/blobs/{d}"));
        let scope = format!("repository:{repo}:pull");
        let range = format!("bytes={from}-");
        let headers: Vec<(&str, &str)> = if from > 0 {
            vec![("Range", range.as_str())]
        } else {
            Vec::new()
        };
        let resp = self.send(http::Method::GET, &url, &scope, &headers, &Body::Empty)?;
        let partial = match resp.status().as_u16() {
            200 => false,
            206 => true,
            404 => {
                return Err(Error::corrupt(
                    d.to_string(),
                    format!("the registry has no such blob in {repo}"),
                ))
            }
            _ => return Err(self.error_with_body(&url, resp, "cannot fetch a blob")),
        };
        let len = content_length(&resp);
        Ok((Box::new(resp.into_body().into_reader()), partial, len))
    }

    /// Starts an upload, or mounts `d` from repository `from` when given and
    /// the registry can. Returns `None` when the blob was mounted, else the
    /// upload location.
    pub fn start_upload(
        &self,
        repo: &str,
        mount: Option<(&Digest, &str)>,
    ) -> Result<Option<String>> {
        let path = match mount {
            Some((d, from)) => format!(
                "/v2/{repo}/blobs/uploads/?mount={d}&from={}",
                encode_query(from)
            ),
            None => format!("/v2/{repo}/blobs/uploads/"),
        };
        let url = self.url(&path);
        let scope = match mount {
            Some((_, from)) => format!("repository:{repo}:pull,push repository:{from}:pull"),
            None => format!("repository:{repo}:pull,push"),
        };
        let resp = self.send(http::Method::POST, &url, &scope, &[], &Body::Empty)?;
        match resp.status().as_u16() {
            201 if mount.is_some() => Ok(None),
            202 => Ok(Some(self.location(&url, &resp)?)),
            _ => Err(self.error_with_body(&url, resp, "cannot start an upload")),
        }
    }

    /// Sends `data` as the next piece of an upload at `location`, starting at
    /// byte `at`; returns the next location.
    pub fn patch_upload(&self, location: &str, repo: &str, at: u64, data: &[u8]) -> Result<String> {
        let scope = format!("repository:{repo}:pull,push");
        let range = format!("{at}-{}", at + data.len() as u64 - 1);
        let len = data.len().to_string();
        let resp = self.send(
            http::Method::PATCH,
            location,
            &scope,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
                ("Content-Length", &len),
            ],
            &Body::Bytes(data),
        )?;
        if resp.status().as_u16() != 202 {
            return Err(self.error_with_body(location, resp, "cannot upload a piece of a blob"));
        }
        self.location(location, &resp)
    }

    /// Finishes an upload at `location` with `data` as its last (or only)
    /// bytes and `d` as the blob's digest.
    pub fn finish_upload(&self, location: &str, repo: &str, d: &Digest, data: &[u8]) -> Result<()> {
        let scope = format!("repository:{repo}:pull,push");
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", encode_query(&d.to_string()));
        let len = data.len().to_string();
        let resp = self.send(
            http::Method::PUT,
            &url,
            &scope,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", &len),
            ],
            &Body::Bytes(data),
        )?;
        if resp.status().as_u16() != 201 {
            return Err(self.error_with_body(&url, resp, "cannot finish an upload"));
        }
        Ok(())
    }

    /// The absolute upload location a response names.
    fn location(&self, url: &str, resp: &Response<ureq::Body>) -> Result<String> {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.error(url, resp, "the registry gave no upload location"))?;
        if loc.starts_with('/') {
            Ok(format!("{}{loc}", self.base))
        } else {
            Ok(loc.to_string())
        }
    }

    /// Checks that the registry speaks OCI distribution, answering its
    /// challenge (`vmhub login` uses this to test credentials).
    pub fn ping(&self) -> Result<()> {
        let url = self.url("/v2/");
        let resp = self.send(
            http::Method::GET,
            &url,
            "registry:catalog:*",
            &[],
            &Body::Empty,
        )?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.error_with_body(&url, resp, "the registry refused"))
        }
    }
}

/// The host (and port) of an http(s) URL.
fn host_of(url: &str) -> &str {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

fn content_length(resp: &Response<ureq::Body>) -> Option<u64> {
    resp.headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether the scopes `granted` (space-separated `TYPE:NAME:ACTIONS`, as in
/// the token spec) include every action of every scope in `wanted`.
fn scope_covers(granted: &str, wanted: &str) -> bool {
    let split = |s: &str| -> Option<(String, Vec<String>)> {
        let (resource, actions) = s.rsplit_once(':')?;
        Some((
            resource.to_string(),
            actions.split(',').map(str::to_string).collect(),
        ))
    };
    let granted: Vec<_> = granted.split_whitespace().filter_map(split).collect();
    wanted.split_whitespace().all(|w| {
        split(w).is_some_and(|(resource, actions)| {
            granted
                .iter()
                .any(|(r, a)| *r == resource && actions.iter().all(|x| a.contains(x)))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::scope_covers;

    #[test]
    fn scopes_cover_what_they_grant() {
        let push = "repository:acme/box:pull,push";
        assert!(scope_covers("repository:acme/box:push,pull", push));
        assert!(scope_covers(push, "repository:acme/box:pull"));
        assert!(!scope_covers("repository:acme/box:pull", push));
        assert!(!scope_covers("repository:acme/other:pull,push", push));
        let mount = "repository:acme/box:pull,push repository:acme/base:pull";
        assert!(scope_covers(mount, push));
        assert!(!scope_covers(push, mount));
        assert!(!scope_covers("", push));
    }
}
