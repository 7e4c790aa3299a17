//! Routing of the registry API (OCI distribution spec, "Endpoints"). Names
//! may hold slashes, so paths are taken apart from the end: the last segment
//! is a digest, tag or upload id, and the one before it says which endpoint.

use crate::auth::{self, Action, BadCredentials};
use crate::error::{ApiError, ApiResult, Code};
use crate::{blobs, manifests, names, Hub};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The routes, all under `/v2/`.
pub fn router(hub: Arc<Hub>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(hub)
}

/// Which endpoint a path names.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint<'a> {
    Base,
    Blob(&'a str, &'a str),
    Upload(&'a str, &'a str),
    Manifest(&'a str, &'a str),
    Tags(&'a str),
    Referrers(&'a str, &'a str),
}

fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Endpoint::Base);
    }
    let rest = rest.strip_prefix('/')?;
    let (head, last) = rest.rsplit_once('/')?;
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return Some(Endpoint::Upload(name, last));
    }
    if let Some(name) = head.strip_suffix("/blobs") {
        if last == "uploads" {
            return Some(Endpoint::Upload(name, ""));
        }
        return Some(Endpoint::Blob(name, last));
    }
    if let Some(name) = head.strip_suffix("/manifests") {
        return Some(Endpoint::Manifest(name, last));
    }
    if let Some(name) = head.strip_suffix("/referrers") {
        return Some(Endpoint::Referrers(name, last));
    }
    if let (Some(name), "list") = (head.strip_suffix("/tags"), last) {
        return Some(Endpoint::Tags(name));
    }
    None
}

/// Decodes `%XX` escapes (and `+` as a space in queries); `None` if the
/// result is not UTF-8 or an escape is broken.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The query parameters of a request, decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> ApiResult<Query> {
        let mut out = Vec::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || ApiError::bad(Code::Unsupported, "malformed query string");
            out.push((
                percent_decode(k, true).ok_or_else(bad)?,
                percent_decode(v, true).ok_or_else(bad)?,
            ));
        }
        Ok(Query(out))
    }

    /// The first value of parameter `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of parameter `key`.
    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Drops parameter `key`.
    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }
}

/// Checks a repository name.
pub(crate) fn check_name(name: &str) -> ApiResult<()> {
    if names::valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad(Code::NameInvalid, "invalid repository name")
            .detail(serde_json::json!({ "name": name })))
    }
}

async fn handle(State(hub): State<Arc<Hub>>, req: Request) -> Response {
    let has_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let mut r = answer(&hub, req, has_body).await;
    // Every answer, a challenge included, says which API this is, as
    // clients probing `/v2/` look for it.
    r.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    r
}

async fn answer(hub: &Arc<Hub>, req: Request, has_body: bool) -> Response {
    match route(hub, req).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = e.into_response();
            // A refused request's body may be left unread, and the
            // connection then cannot carry another request: say so, so that
            // clients do not reuse it.
            if has_body {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        }
    }
}

async fn route(hub: &Arc<Hub>, req: Request) -> ApiResult<Response> {
    let raw_path = req.uri().path().to_string();
    let path = percent_decode(&raw_path, false)
        .ok_or_else(|| ApiError::bad(Code::NameInvalid, "malformed path"))?;
    let mut query = Query::parse(req.uri().query())?;
    let method = req.method().clone();
    let catalogue_path =
        path == "/" || path == "/search" || path == "/api/search" || path.starts_with("/m/");
    if catalogue_path && hub.private {
        // A private hub does not publish what it holds.
        return Err(ApiError::not_found(
            Code::Unsupported,
            "this hub is private: its catalogue is not published",
        ));
    }
    if catalogue_path && !matches!(method, Method::GET | Method::HEAD) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unsupported,
            "the catalogue answers GET only",
        ));
    }
    if path == "/" {
        return crate::web::home(hub).await;
    }
    if path == "/search" {
        return crate::web::search(hub, &query).await;
    }
    if let Some(r) = crate::browse::route(hub, &raw_path, &query).await {
        return r;
    }
    if let Some(repo) = path.strip_prefix("/m/") {
        return crate::web::machine(hub, repo, req.headers()).await;
    }
    if path == "/api/search" {
        return match method {
            Method::GET => crate::catalogue::search(hub, &query).await,
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unsupported,
                "search answers GET only",
            )),
        };
    }
    if path == "/v2/token" {
        return match method {
            Method::GET => token(hub, req.headers(), &query).await,
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unsupported,
                "the token endpoint answers GET only",
            )),
        };
    }
    let not_found = || ApiError::not_found(Code::Unsupported, "no such endpoint");
    let ep = endpoint(&path).ok_or_else(not_found)?;
    authorize(hub, &ep, &method, &mut query, req.headers()).await?;
    let m = method.to_string();
    let unsupported = || {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unsupported,
            format!("{m} is not supported here"),
        )
    };
    match ep {
        Endpoint::Base => match method {
            Method::GET | Method::HEAD => Ok(base()),
            _ => Err(unsupported()),
        },
        Endpoint::Blob(name, d) => {
            check_name(name)?;
            match method {
                Method::GET => blobs::get(hub, name, d, req.headers(), false).await,
                Method::HEAD => blobs::get(hub, name, d, req.headers(), true).await,
                Method::DELETE => blobs::delete(hub, name, d).await,
                _ => Err(unsupported()),
            }
        }
        Endpoint::Upload(name, id) => {
            check_name(name)?;
            match (method, id) {
                (Method::POST, "") => blobs::start(hub, name, &query, req).await,
                (Method::PATCH, id) if !id.is_empty() => blobs::patch(hub, name, id, req).await,
                (Method::PUT, id) if !id.is_empty() => {
                    blobs::finish(hub, name, id, &query, req).await
                }
                (Method::GET, id) if !id.is_empty() => blobs::status(hub, name, id).await,
                (Method::DELETE, id) if !id.is_empty() => blobs::cancel(hub, name, id).await,
                _ => Err(unsupported()),
            }
        }
        Endpoint::Manifest(name, reference) => {
            check_name(name)?;
            match method {
                Method::GET => manifests::get(hub, name, reference, req.headers(), false).await,
                Method::HEAD => manifests::get(hub, name, reference, req.headers(), true).await,
                Method::PUT => manifests::put(hub, name, reference, req).await,
                Method::DELETE => manifests::delete(hub, name, reference).await,
                _ => Err(unsupported()),
            }
        }
        Endpoint::Tags(name) => {
            check_name(name)?;
            match method {
                Method::GET => manifests::tags(hub, name, &query).await,
                _ => Err(unsupported()),
            }
        }
        Endpoint::Referrers(name, d) => {
            check_name(name)?;
            match method {
                Method::GET => manifests::referrers(hub, name, d, &query).await,
                _ => Err(unsupported()),
            }
        }
    }
}

/// Checks that the request's credentials allow what it does: pushes need
/// a token with push scope, pulls one with pull scope on a private hub. The
/// base endpoint answers only authenticated clients, so that `login` tests
/// its credentials there.
async fn authorize(
    hub: &Hub,
    ep: &Endpoint<'_>,
    method: &Method,
    query: &mut Query,
    headers: &axum::http::HeaderMap,
) -> ApiResult<()> {
    let principal = auth::authenticate(hub.meta.as_ref(), &hub.key, headers).await?;
    let repo = match ep {
        Endpoint::Base => {
            return match principal {
                Ok(_) if headers.contains_key(axum::http::header::AUTHORIZATION) => Ok(()),
                Ok(_) => Err(auth::challenge(headers, None, "authentication required")),
                Err(BadCredentials) => Err(auth::challenge(
                    headers,
                    None,
                    "the credentials are not valid",
                )),
            };
        }
        Endpoint::Blob(n, _)
        | Endpoint::Upload(n, _)
        | Endpoint::Manifest(n, _)
        | Endpoint::Tags(n)
        | Endpoint::Referrers(n, _) => *n,
    };
    // Names are checked before anything else is said about them.
    check_name(repo)?;
    let action = match *method {
        Method::GET | Method::HEAD if !matches!(ep, Endpoint::Upload(..)) => Action::Pull,
        _ => Action::Push,
    };
    let principal = match principal {
        Ok(p) => p,
        Err(BadCredentials) => {
            return Err(auth::challenge(
                headers,
                Some((repo, action)),
                &auth::unauthorized_message(repo, action, true),
            ))
        }
    };
    let allowed =
        |r: &str, a: Action| (a == Action::Pull && !hub.private) || principal.allows(r, a);
    if !allowed(repo, action) {
        return Err(if principal.is_anonymous() {
            auth::challenge(
                headers,
                Some((repo, action)),
                &auth::unauthorized_message(repo, action, false),
            )
        } else {
            auth::denied(repo, action)
        });
    }
    // A cross-repository mount reads the source: without pull there, the
    // client gets an ordinary upload session instead (distribution spec,
    // "Mounting a blob from another repository").
    if let Some(from) = query.get("from") {
        if !names::valid_name(from) || !allowed(from, Action::Pull) {
            query.remove("mount");
            query.remove("from");
        }
    }
    Ok(())
}

/// `GET /v2/token?service=&scope=repository:NAME:ACTIONS`: trades Basic
/// credentials (or none, for pulls from a public hub) for a bearer token
/// granting what was asked for and is allowed.
async fn token(hub: &Hub, headers: &axum::http::HeaderMap, query: &Query) -> ApiResult<Response> {
    let basic_challenge = |message: &str| {
        ApiError::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, message).header(
            header::WWW_AUTHENTICATE,
            format!("Basic realm=\"{}\"", auth::SERVICE),
        )
    };
    let is_bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("bearer"));
    if is_bearer {
        return Err(basic_challenge(
            "the token endpoint takes a user name and token (Basic credentials)",
        ));
    }
    let principal = match auth::authenticate(hub.meta.as_ref(), &hub.key, headers).await? {
        Ok(p) => p,
        Err(BadCredentials) => return Err(basic_challenge("the user name or token is not valid")),
    };
    if hub.private && principal.is_anonymous() {
        return Err(basic_challenge("this hub needs a user name and token"));
    }
    let requested = auth::requested(&query.all("scope"))?;
    let access = auth::grant(&principal, &requested, hub.private);
    let token = auth::issue(&hub.key, &principal, access);
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": auth::BEARER_LIFETIME,
    });
    let mut r = Response::new(Body::from(body.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

fn base() -> Response {
    let mut r = Response::new(Body::from("{}"));
    let h = r.headers_mut();
    h.insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("/v2/"), Some(Endpoint::Base));
        assert_eq!(endpoint("/v2"), Some(Endpoint::Base));
        assert_eq!(
            endpoint("/v2/a/b/blobs/uploads/"),
            Some(Endpoint::Upload("a/b", ""))
        );
        assert_eq!(
            endpoint("/v2/a/blobs/uploads/12"),
            Some(Endpoint::Upload("a", "12"))
        );
        assert_eq!(
            endpoint("/v2/a/blobs/sha256:1"),
            Some(Endpoint::Blob("a", "sha256:1"))
        );
        assert_eq!(
            endpoint("/v2/blobs/manifests/latest"),
            Some(Endpoint::Manifest("blobs", "latest"))
        );
        assert_eq!(endpoint("/v2/x/tags/list"), Some(Endpoint::Tags("x")));
        assert_eq!(
            endpoint("/v2/x/referrers/sha256:1"),
            Some(Endpoint::Referrers("x", "sha256:1"))
        );
        assert_eq!(endpoint("/v3/x"), None);
        assert_eq!(endpoint("/v2/x/other/y"), None);
    }

    #[test]
    fn decoding() {
        assert_eq!(
            percent_decode("sha256%3Aab", true).as_deref(),
            Some("sha256:ab")
        );
        assert_eq!(percent_decode("%zz", true), None);
        assert_eq!(percent_decode("%4", true), None);
    }
}
