//! Blobs and uploads (OCI distribution spec, "Pulling blobs", "Pushing
//! blobs", "Deleting blobs").
//!
//! An upload's bytes go to the store as they arrive while a running SHA-256
//! follows them; its byte count is recorded in the metadata after every
//! request, so an upload survives a restart (bytes past the recorded count,
//! left by an interrupted request, are dropped when it is resumed). The
//! finished blob is renamed into place only once its digest checks.

use crate::api::Query;
use crate::db::UploadRow;
use crate::digest::{Digest, DigestError, Hasher};
use crate::error::{ApiError, ApiResult, Code};
use crate::range::Requested;
use crate::{Hub, UploadHash};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::OwnedMutexGuard;

/// Parses a digest from a request, with the spec's errors.
pub(crate) fn parse_digest(s: &str) -> ApiResult<Digest> {
    Digest::parse(s).map_err(|e| match e {
        DigestError::Invalid => ApiError::bad(Code::DigestInvalid, "invalid digest")
            .detail(serde_json::json!({ "digest": s })),
        DigestError::Unsupported => {
            ApiError::bad(Code::Unsupported, "only sha256 digests are supported")
                .detail(serde_json::json!({ "digest": s }))
        }
    })
}

pub(crate) fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> ApiError {
    move |e| ApiError::internal(what, e)
}

pub(crate) fn db_err(what: &'static str) -> impl Fn(crate::db::DbError) -> ApiError {
    move |e| ApiError::internal(what, e)
}

/// A response with `status`, headers and an empty body.
pub(crate) fn empty(status: StatusCode, headers: &[(&'static str, String)]) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    let h = r.headers_mut();
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(*k, v);
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// A single byte range of a `Range: bytes=` header, resolved against `size`
/// (last byte included): `Ok(None)` when there is no usable header (the
/// whole blob is sent), `Err` when it cannot be satisfied or does not parse.
fn byte_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    match crate::range::requested(headers, size) {
        Requested::Whole => Ok(None),
        Requested::Bytes(start, end) => Ok(Some((start, end - 1))),
        Requested::Invalid | Requested::Unsatisfiable => Err(()),
    }
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`.
pub async fn get(
    hub: &Arc<Hub>,
    name: &str,
    d: &str,
    headers: &HeaderMap,
    head: bool,
) -> ApiResult<Response> {
    let d = parse_digest(d)?;
    let unknown = || {
        ApiError::not_found(Code::BlobUnknown, "blob unknown to registry")
            .detail(serde_json::json!({ "digest": d.to_string() }))
    };
    let digest = d.to_string();
    hub.meta
        .repo_blob(name, &digest)
        .await
        .map_err(db_err("looking up a blob"))?
        .ok_or_else(unknown)?;
    let size = hub
        .store
        .size(&d)
        .await
        .map_err(io_err("looking up a blob"))?
        .ok_or_else(unknown)?;
    let range = byte_range(headers, size).map_err(|()| {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            Code::BlobUnknown,
            "requested range not satisfiable",
        )
        .header(header::CONTENT_RANGE, format!("bytes */{size}"))
    })?;
    let (status, start, len) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, size),
    };
    let body = if head {
        Body::empty()
    } else {
        let stream = hub
            .store
            .read(&d, start, len)
            .await
            .map_err(io_err("reading a blob"))?;
        Body::from_stream(stream)
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    let mut set = |k: header::HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(header::CONTENT_LENGTH, len.to_string());
    set(header::CONTENT_TYPE, "application/octet-stream".into());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(
        header::HeaderName::from_static("docker-content-digest"),
        digest,
    );
    if let Some((s, e)) = range {
        set(header::CONTENT_RANGE, format!("bytes {s}-{e}/{size}"));
    }
    Ok(r)
}

/// `DELETE /v2/<name>/blobs/<digest>`: the repository stops holding the
/// blob (its bytes stay while other repositories hold it).
pub async fn delete(hub: &Arc<Hub>, name: &str, d: &str) -> ApiResult<Response> {
    let d = parse_digest(d)?;
    let gone = hub
        .meta
        .unlink_blob(name, &d.to_string())
        .await
        .map_err(db_err("deleting a blob"))?;
    if !gone {
        return Err(
            ApiError::not_found(Code::BlobUnknown, "blob unknown to registry")
                .detail(serde_json::json!({ "digest": d.to_string() })),
        );
    }
    Ok(empty(StatusCode::ACCEPTED, &[]))
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// The `Range` header of an upload holding `n` bytes (inclusive end).
fn held(n: u64) -> String {
    format!("0-{}", n.saturating_sub(1))
}

fn upload_answer(status: StatusCode, name: &str, id: &str, n: u64) -> Response {
    empty(
        status,
        &[
            ("location", upload_location(name, id)),
            ("range", held(n)),
            ("docker-upload-uuid", id.to_string()),
        ],
    )
}

fn blob_created(name: &str, d: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/blobs/{d}")),
            ("docker-content-digest", d.to_string()),
        ],
    )
}

async fn new_upload(hub: &Arc<Hub>, name: &str) -> ApiResult<String> {
    let id = crate::random_id().map_err(io_err("starting an upload"))?;
    hub.store
        .upload_create(&id)
        .await
        .map_err(io_err("starting an upload"))?;
    hub.meta
        .create_upload(&id, name)
        .await
        .map_err(db_err("starting an upload"))?;
    Ok(id)
}

async fn drop_upload(hub: &Arc<Hub>, id: &str) -> ApiResult<()> {
    hub.meta
        .delete_upload(id)
        .await
        .map_err(db_err("removing an upload"))?;
    hub.store
        .upload_delete(id)
        .await
        .map_err(io_err("removing an upload"))?;
    hub.forget_upload(id);
    Ok(())
}

/// `POST /v2/<name>/blobs/uploads/`: starts an upload; with `digest=` the
/// body is the whole blob; with `mount=` (and `from=`) the blob is taken
/// from another repository of this registry when it is there.
pub async fn start(hub: &Arc<Hub>, name: &str, q: &Query, req: Request) -> ApiResult<Response> {
    if let Some(m) = q.get("mount") {
        let d = parse_digest(m)?;
        if let Some(from) = q.get("from").filter(|f| crate::names::valid_name(f)) {
            let digest = d.to_string();
            let linked = hub
                .meta
                .repo_blob(from, &digest)
                .await
                .map_err(db_err("mounting a blob"))?;
            let stored = hub
                .store
                .size(&d)
                .await
                .map_err(io_err("mounting a blob"))?;
            if let (Some(_), Some(size)) = (linked, stored) {
                // Refused while a garbage collection removes it: then the
                // client uploads it, as when it is not there.
                if hub
                    .meta
                    .link_blob(name, &digest, size)
                    .await
                    .map_err(db_err("mounting a blob"))?
                {
                    return Ok(blob_created(name, &d));
                }
            }
        }
    }
    if let Some(ds) = q.get("digest") {
        let d = parse_digest(ds)?;
        check_length(hub, req.headers(), 0)?;
        let id = new_upload(hub, name).await?;
        let lock = hub.upload_lock(&id);
        let mut state = lock.lock_owned().await;
        let result = complete(hub, name, &id, 0, &mut state, &d, req.into_body(), None).await;
        if result.is_err() {
            drop(state);
            drop_upload(hub, &id).await?;
        }
        return result;
    }
    let id = new_upload(hub, name).await?;
    Ok(upload_answer(StatusCode::ACCEPTED, name, &id, 0))
}

/// Checks a declared Content-Length against the size cap before reading.
fn check_length(hub: &Hub, headers: &HeaderMap, offset: u64) -> ApiResult<()> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared {
        if offset.checked_add(n).is_none_or(|t| t > hub.max_blob_size) {
            return Err(too_large(hub));
        }
    }
    Ok(())
}

fn too_large(hub: &Hub) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Code::SizeInvalid,
        format!("blobs are limited to {} bytes", hub.max_blob_size),
    )
}

fn upload_unknown() -> ApiError {
    ApiError::not_found(Code::BlobUploadUnknown, "blob upload unknown to registry")
}

/// Locks upload `id` of repository `name` and reads its record.
async fn lock_upload(
    hub: &Arc<Hub>,
    name: &str,
    id: &str,
) -> ApiResult<(OwnedMutexGuard<UploadHash>, UploadRow)> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(upload_unknown());
    }
    let guard = hub.upload_lock(id).lock_owned().await;
    let row = hub
        .meta
        .upload(id)
        .await
        .map_err(db_err("looking up an upload"))?;
    match row {
        Some(row) if row.repo == name => Ok((guard, row)),
        _ => {
            drop(guard);
            hub.forget_upload(id);
            Err(upload_unknown())
        }
    }
}

/// The running digest of an upload holding `offset` bytes: the one kept in
/// memory, else rebuilt by reading the bytes back.
async fn hasher_at(
    hub: &Arc<Hub>,
    id: &str,
    offset: u64,
    state: &mut UploadHash,
) -> ApiResult<Hasher> {
    if let Some((n, h)) = state.take() {
        if n == offset {
            return Ok(h);
        }
    }
    let mut h = Hasher::new();
    let mut s = hub
        .store
        .upload_read(id, offset)
        .await
        .map_err(io_err("reading an upload"))?;
    let mut seen = 0u64;
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(io_err("reading an upload"))?;
        seen += chunk.len() as u64;
        h.update(&chunk);
    }
    if seen != offset {
        return Err(ApiError::internal(
            "reading an upload",
            format!("upload {id} holds {seen} bytes, {offset} recorded"),
        ));
    }
    Ok(h)
}

/// The `Content-Range` of a chunk: `start-end`, inclusive (a `bytes `
/// prefix is tolerated).
fn chunk_range(headers: &HeaderMap) -> ApiResult<Option<(u64, u64)>> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || ApiError::bad(Code::BlobUploadInvalid, "malformed Content-Range");
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes").map(str::trim_start).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if b < a {
        return Err(bad());
    }
    Ok(Some((a, b)))
}

/// Appends a request body to upload `id`, which holds `offset` bytes;
/// returns the new byte count and running digest. Nothing is recorded
/// unless the whole body arrived within the size cap.
async fn append(
    hub: &Arc<Hub>,
    name: &str,
    id: &str,
    offset: u64,
    mut hasher: Hasher,
    body: Body,
    declared: Option<(u64, u64)>,
) -> ApiResult<(u64, Hasher)> {
    if let Some((start, _)) = declared {
        if start != offset {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                Code::BlobUploadInvalid,
                format!("the upload holds {offset} bytes; a chunk must start there"),
            )
            .header(header::RANGE, held(offset))
            .header(header::LOCATION, upload_location(name, id)));
        }
    }
    let mut w = hub
        .store
        .upload_writer(id, offset)
        .await
        .map_err(io_err("writing an upload"))?;
    let mut n = offset;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad(
                Code::BlobUploadInvalid,
                format!("the request body broke off: {e}"),
            )
        })?;
        n = n
            .checked_add(chunk.len() as u64)
            .filter(|t| *t <= hub.max_blob_size)
            .ok_or_else(|| too_large(hub))?;
        hasher.update(&chunk);
        w.write(&chunk).await.map_err(io_err("writing an upload"))?;
    }
    w.finish().await.map_err(io_err("writing an upload"))?;
    if let Some((start, end)) = declared {
        if n - offset != end - start + 1 {
            return Err(ApiError::bad(
                Code::BlobUploadInvalid,
                "the chunk's length differs from its Content-Range",
            ));
        }
    }
    hub.meta
        .set_upload_offset(id, n)
        .await
        .map_err(db_err("recording an upload"))?;
    Ok((n, hasher))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: appends a chunk.
pub async fn patch(hub: &Arc<Hub>, name: &str, id: &str, req: Request) -> ApiResult<Response> {
    let (mut state, row) = lock_upload(hub, name, id).await?;
    let declared = chunk_range(req.headers())?;
    check_length(hub, req.headers(), row.offset)?;
    let hasher = hasher_at(hub, id, row.offset, &mut state).await?;
    let (n, hasher) = append(hub, name, id, row.offset, hasher, req.into_body(), declared).await?;
    *state = Some((n, hasher));
    Ok(upload_answer(StatusCode::ACCEPTED, name, id, n))
}

/// Appends the last body, checks the digest and makes the blob visible.
#[allow(clippy::too_many_arguments)]
async fn complete(
    hub: &Arc<Hub>,
    name: &str,
    id: &str,
    offset: u64,
    state: &mut UploadHash,
    d: &Digest,
    body: Body,
    declared: Option<(u64, u64)>,
) -> ApiResult<Response> {
    let hasher = hasher_at(hub, id, offset, state).await?;
    let (n, hasher) = append(hub, name, id, offset, hasher, body, declared).await?;
    let got = hasher.finish();
    if got != *d {
        return Err(ApiError::bad(
            Code::DigestInvalid,
            "the uploaded content does not match the digest",
        )
        .detail(serde_json::json!({ "expected": d.to_string(), "computed": got.to_string() })));
    }
    claim(hub, d).await?;
    hub.store
        .upload_commit(id, d)
        .await
        .map_err(io_err("storing a blob"))?;
    let linked = hub
        .meta
        .link_blob(name, &d.to_string(), n)
        .await
        .map_err(db_err("storing a blob"))?;
    // The bytes have left the upload either way.
    hub.meta
        .delete_upload(id)
        .await
        .map_err(db_err("storing a blob"))?;
    hub.forget_upload(id);
    if !linked {
        // A collection doomed the blob between the claim and the link, and
        // may have removed the bytes just written.
        return Err(collecting(d));
    }
    Ok(blob_created(name, d))
}

/// How many times, and how long apart, a push asks for a blob that a
/// garbage collection is removing before it gives up.
const CLAIM_TRIES: u32 = 50;
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Claims blob `d` before its bytes are written (see the `gc` module),
/// waiting a few seconds at most while a garbage collection removes it.
pub(crate) async fn claim(hub: &Hub, d: &Digest) -> ApiResult<()> {
    let digest = d.to_string();
    for _ in 0..CLAIM_TRIES {
        if hub
            .meta
            .claim_blob(&digest)
            .await
            .map_err(db_err("claiming a blob"))?
        {
            return Ok(());
        }
        tokio::time::sleep(CLAIM_WAIT).await;
    }
    Err(collecting(d))
}

/// A 503: blob `d` is being removed by a garbage collection.
pub(crate) fn collecting(d: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Code::Unavailable,
        format!("blob {d} is being removed by a garbage collection; push it again"),
    )
    .header(header::RETRY_AFTER, "1".into())
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: finishes an upload, with an
/// optional last chunk as the body. A digest mismatch ends the upload.
pub async fn finish(
    hub: &Arc<Hub>,
    name: &str,
    id: &str,
    q: &Query,
    req: Request,
) -> ApiResult<Response> {
    let d = parse_digest(q.get("digest").unwrap_or(""))?;
    let (mut state, row) = lock_upload(hub, name, id).await?;
    let declared = chunk_range(req.headers())?;
    check_length(hub, req.headers(), row.offset)?;
    let result = complete(
        hub,
        name,
        id,
        row.offset,
        &mut state,
        &d,
        req.into_body(),
        declared,
    )
    .await;
    if let Err(e) = &result {
        if e.code() == Code::DigestInvalid {
            drop(state);
            drop_upload(hub, id).await?;
        }
    }
    result
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how much an upload holds.
pub async fn status(hub: &Arc<Hub>, name: &str, id: &str) -> ApiResult<Response> {
    let (_state, row) = lock_upload(hub, name, id).await?;
    Ok(upload_answer(StatusCode::NO_CONTENT, name, id, row.offset))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: abandons an upload.
pub async fn cancel(hub: &Arc<Hub>, name: &str, id: &str) -> ApiResult<Response> {
    let (state, _row) = lock_upload(hub, name, id).await?;
    drop(state);
    drop_upload(hub, id).await?;
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).map_err(|_| ())?);
        byte_range(&h, size)
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(range("bytes=100-", 100), Err(()));
        assert_eq!(range("bytes=5-2", 100), Err(()));
        assert_eq!(range("bytes=x-2", 100), Err(()));
        assert_eq!(range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(range("items=0-1", 100), Ok(None));
    }
}
