//! Manifests, tags and referrers (OCI distribution spec, "Pulling
//! manifests", "Pushing manifests", "Content discovery", "Deleting
//! manifests"). A manifest's exact bytes are kept as a blob; the metadata
//! holds its media type, subject and artifact type, and the tags.

use crate::api::Query;
use crate::blobs::{self, db_err, empty, io_err, parse_digest};
use crate::db::{ManifestRow, References, Stored};
use crate::digest::Digest;
use crate::error::{ApiError, ApiResult, Code};
use crate::{catalogue, names, Hub, MAX_MANIFEST_SIZE};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;

/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A manifest reference: a tag or a digest.
enum Reference<'a> {
    Tag(&'a str),
    Digest(Digest),
}

fn reference(r: &str) -> ApiResult<Reference<'_>> {
    if r.contains(':') {
        return parse_digest(r).map(Reference::Digest);
    }
    if names::valid_tag(r) {
        Ok(Reference::Tag(r))
    } else {
        Err(ApiError::bad(Code::ManifestInvalid, "invalid tag").detail(json!({ "tag": r })))
    }
}

fn manifest_unknown(r: &str) -> ApiError {
    ApiError::not_found(Code::ManifestUnknown, "manifest unknown to registry")
        .detail(json!({ "reference": r }))
}

/// The media type without parameters, in lower case.
fn base_type(t: &str) -> String {
    t.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether an `Accept` header admits `media_type`: no header, a wildcard or
/// the type itself does.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let want = base_type(media_type);
    let mut any = false;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for t in v.split(',') {
            let t = base_type(t);
            if t.is_empty() {
                continue;
            }
            any = true;
            if t == "*/*" || t == "application/*" || t == want {
                return true;
            }
        }
    }
    !any
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
pub async fn get(
    hub: &Arc<Hub>,
    name: &str,
    r: &str,
    headers: &HeaderMap,
    head: bool,
) -> ApiResult<Response> {
    let digest = match reference(r).map_err(|_| manifest_unknown(r))? {
        Reference::Digest(d) => d.to_string(),
        Reference::Tag(t) => hub
            .meta
            .tag(name, t)
            .await
            .map_err(db_err("looking up a tag"))?
            .ok_or_else(|| manifest_unknown(r))?,
    };
    let row = hub
        .meta
        .manifest(name, &digest)
        .await
        .map_err(db_err("looking up a manifest"))?
        .ok_or_else(|| manifest_unknown(r))?;
    if !accepts(headers, &row.media_type) {
        return Err(ApiError::not_found(
            Code::ManifestUnknown,
            format!(
                "the manifest is a {}, which the request does not accept",
                row.media_type
            ),
        ));
    }
    let d = parse_digest(&row.digest)?;
    let body = if head {
        Body::empty()
    } else {
        let bytes = hub
            .store
            .read_small(&d, MAX_MANIFEST_SIZE)
            .await
            .map_err(io_err("reading a manifest"))?;
        Body::from(bytes)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    let mut set = |k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set("content-type", &row.media_type);
    set("content-length", &row.size.to_string());
    set("docker-content-digest", &row.digest);
    Ok(resp)
}

/// Reads a request body of at most `max` bytes.
async fn read_capped(body: Body, max: u64) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad(
                Code::ManifestInvalid,
                format!("the request body broke off: {e}"),
            )
        })?;
        if (out.len() + chunk.len()) as u64 > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::SizeInvalid,
                format!("manifests are limited to {max} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad(Code::ManifestInvalid, message)
}

/// A descriptor's digest and media type, checked for form.
fn descriptor(v: &Value, what: &str) -> ApiResult<(Digest, String)> {
    let media = v
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what}: no mediaType")))?;
    let d = v
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what}: no digest")))?;
    let d = Digest::parse(d).map_err(|_| invalid(format!("{what}: unusable digest {d:?}")))?;
    v.get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid(format!("{what}: no size")))?;
    Ok((d, media.to_string()))
}

fn blob_missing(d: impl std::fmt::Display) -> ApiError {
    ApiError::bad(
        Code::ManifestBlobUnknown,
        "the manifest references content the repository does not hold",
    )
    .detail(json!({ "digest": d.to_string() }))
}

/// What a pushed manifest says about itself, once checked.
struct Checked {
    refs: References,
    artifact_type: Option<String>,
    subject: Option<String>,
    annotations: Option<String>,
}

/// Checks a manifest's JSON against its media type and that everything it
/// references is in repository `name`.
async fn check(hub: &Arc<Hub>, name: &str, media_type: &str, body: &[u8]) -> ApiResult<Checked> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the manifest is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(invalid("the manifest is not a JSON object"));
    }
    if let Some(mt) = v.get("mediaType") {
        if mt.as_str().map(base_type) != Some(base_type(media_type)) {
            return Err(invalid(
                "the manifest's mediaType differs from its Content-Type",
            ));
        }
    }
    let t = base_type(media_type);
    let mut artifact_type = v
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let known = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST].contains(&t.as_str());
    let mut refs = References::default();
    if known && v.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    if t == OCI_MANIFEST || t == DOCKER_MANIFEST {
        let config = v.get("config").ok_or_else(|| invalid("no config"))?;
        let (cd, cmedia) = descriptor(config, "config")?;
        if artifact_type.is_none() {
            artifact_type = Some(cmedia);
        }
        let layers = v
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no layers"))?;
        let mut wanted = vec![cd];
        for (i, l) in layers.iter().enumerate() {
            let (d, _) = descriptor(l, &format!("layer {i}"))?;
            // Layers held elsewhere ("urls", foreign layers) need not be here.
            if l.get("urls").is_none() {
                wanted.push(d);
            }
        }
        for d in &wanted {
            let held = hub
                .meta
                .repo_blob(name, &d.to_string())
                .await
                .map_err(db_err("checking a manifest"))?;
            if held.is_none() {
                return Err(blob_missing(d));
            }
        }
        refs.blobs = wanted.iter().map(Digest::to_string).collect();
    } else if t == OCI_INDEX || t == DOCKER_LIST {
        let list = v
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no manifests"))?;
        for (i, m) in list.iter().enumerate() {
            let (d, _) = descriptor(m, &format!("manifest {i}"))?;
            let held = hub
                .meta
                .manifest(name, &d.to_string())
                .await
                .map_err(db_err("checking a manifest"))?;
            if held.is_none() {
                return Err(blob_missing(d));
            }
            refs.manifests.push(d.to_string());
        }
    }
    let subject = match v.get("subject") {
        Some(s) => Some(descriptor(s, "subject")?.0.to_string()),
        None => None,
    };
    let annotations = match v.get("annotations") {
        Some(a) if a.is_object() => Some(a.to_string()),
        Some(_) => return Err(invalid("annotations must be an object")),
        None => None,
    };
    Ok(Checked {
        refs,
        artifact_type,
        subject,
        annotations,
    })
}

/// `PUT /v2/<name>/manifests/<reference>`.
pub async fn put(hub: &Arc<Hub>, name: &str, r: &str, req: Request) -> ApiResult<Response> {
    let reference = reference(r)?;
    let media_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_capped(req.into_body(), MAX_MANIFEST_SIZE).await?;
    let media_type = match media_type {
        Some(m) if !m.trim().is_empty() => m,
        _ => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .ok_or_else(|| invalid("no Content-Type and no mediaType"))?,
    };
    let d = Digest::of(&body);
    let tag = match reference {
        Reference::Digest(want) if want != d => {
            return Err(ApiError::bad(
                Code::DigestInvalid,
                "the manifest does not match the digest it was pushed under",
            )
            .detail(json!({ "expected": want.to_string(), "computed": d.to_string() })))
        }
        Reference::Digest(_) => None,
        Reference::Tag(t) => Some(t),
    };
    let checked = check(hub, name, &media_type, &body).await?;
    let size = i64::try_from(body.len()).unwrap_or(i64::MAX);
    let body = bytes::Bytes::from(body);
    blobs::claim(hub, &d).await?;
    hub.store
        .put_small(&d, body.clone())
        .await
        .map_err(io_err("storing a manifest"))?;
    let row = ManifestRow {
        digest: d.to_string(),
        media_type,
        size,
        artifact_type: checked.artifact_type,
        subject: checked.subject.clone(),
        annotations: checked.annotations,
    };
    // Checked again with the store, in one transaction: a garbage
    // collection may have removed a blob since.
    match hub
        .meta
        .put_manifest(name, &row, tag, &checked.refs)
        .await
        .map_err(db_err("storing a manifest"))?
    {
        Stored::Stored => {}
        Stored::Missing(d) => return Err(blob_missing(d)),
        Stored::Collecting(d) => return Err(blobs::collecting(d)),
    }
    if row.artifact_type.as_deref() == Some(catalogue::MACHINE_ARTIFACT_TYPE) {
        let digest = d.to_string();
        catalogue::record(hub, name, tag.unwrap_or(&digest), &digest, &body).await;
    }
    let mut headers = vec![
        ("location", format!("/v2/{name}/manifests/{d}")),
        ("docker-content-digest", d.to_string()),
    ];
    if let Some(s) = checked.subject {
        headers.push(("oci-subject", s));
    }
    Ok(empty(StatusCode::CREATED, &headers))
}

/// `DELETE /v2/<name>/manifests/<reference>`: by digest the manifest goes
/// (with its tags), by tag only the tag.
pub async fn delete(hub: &Arc<Hub>, name: &str, r: &str) -> ApiResult<Response> {
    let gone = match reference(r)? {
        Reference::Digest(d) => hub.meta.delete_manifest(name, &d.to_string()).await,
        Reference::Tag(t) => hub.meta.delete_tag(name, t).await,
    }
    .map_err(db_err("deleting a manifest"))?;
    if gone {
        Ok(empty(StatusCode::ACCEPTED, &[]))
    } else {
        Err(manifest_unknown(r))
    }
}

fn json_response(status: StatusCode, content_type: &str, v: &Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r
}

/// `GET /v2/<name>/tags/list[?n=&last=]`: tags in lexical order, `n` at a
/// time after `last`, with a `Link` to the next page.
pub async fn tags(hub: &Arc<Hub>, name: &str, q: &Query) -> ApiResult<Response> {
    let n = match q.get("n") {
        Some(s) => Some(s.parse::<usize>().map_err(|_| {
            ApiError::bad(Code::Unsupported, "n must be a number").detail(json!({ "n": s }))
        })?),
        None => None,
    };
    let last = q.get("last");
    let mut tags = hub.meta.tags(name).await.map_err(db_err("listing tags"))?;
    if tags.is_empty()
        && !hub
            .meta
            .repo_exists(name)
            .await
            .map_err(db_err("listing tags"))?
    {
        return Err(ApiError::not_found(
            Code::NameUnknown,
            "repository name not known to registry",
        )
        .detail(json!({ "name": name })));
    }
    // Byte order, whatever the database's collation.
    tags.sort();
    if let Some(last) = last {
        tags.retain(|t| t.as_str() > last);
    }
    let mut more = false;
    if let Some(n) = n {
        more = tags.len() > n;
        tags.truncate(n);
    }
    let mut resp = json_response(
        StatusCode::OK,
        "application/json",
        &json!({ "name": name, "tags": tags }),
    );
    if let (true, Some(n), Some(last)) = (more, n, tags.last()) {
        let link = format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(resp)
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=]`: an image index of
/// the manifests whose subject is the digest.
pub async fn referrers(hub: &Arc<Hub>, name: &str, d: &str, q: &Query) -> ApiResult<Response> {
    let d = parse_digest(d)?;
    let filter = q.get("artifactType");
    let rows = hub
        .meta
        .referrers(name, &d.to_string())
        .await
        .map_err(db_err("listing referrers"))?;
    let mut list: Vec<Value> = Vec::new();
    for row in rows {
        if filter.is_some_and(|f| row.artifact_type.as_deref() != Some(f)) {
            continue;
        }
        let mut desc = json!({
            "mediaType": row.media_type,
            "digest": row.digest,
            "size": row.size,
        });
        if let Some(o) = desc.as_object_mut() {
            if let Some(t) = row.artifact_type {
                o.insert("artifactType".into(), Value::String(t));
            }
            if let Some(a) = row.annotations.and_then(|a| serde_json::from_str(&a).ok()) {
                o.insert("annotations".into(), a);
            }
        }
        list.push(desc);
    }
    list.sort_by(|a, b| {
        let key = |v: &Value| v.get("digest").and_then(Value::as_str).map(str::to_string);
        key(a).cmp(&key(b))
    });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": list,
    });
    let mut resp = json_response(StatusCode::OK, OCI_INDEX, &index);
    if filter.is_some() {
        resp.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
