//! The catalogue of machines: when a manifest of a vmhub machine is pushed,
//! its description (the config blob) is read and what people search by is
//! kept in the database; `GET /api/search?q=` answers from it.

use crate::api::Query;
use crate::blobs::db_err;
use crate::db::{DiskRow, MachineRow};
use crate::digest::Digest;
use crate::error::{ApiError, ApiResult, Code};
use crate::Hub;
use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde_json::Value;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The artifact type of a vmhub machine's manifest.
pub const MACHINE_ARTIFACT_TYPE: &str = "application/vnd.vmhub.machine.v1+json";

/// The largest machine description read.
const MAX_CONFIG: u64 = 1 << 20;

/// The annotation holding the signing key.
const SIGNATURE_KEY: &str = "dev.vmhub.signature.key";

/// The most results one search answers with, and the default.
pub const MAX_PAGE: u32 = 100;
const DEFAULT_PAGE: u32 = 50;

/// The longest search term.
const MAX_TERM: usize = 200;

/// Caps on what is kept of free text.
const MAX_TEXT: usize = 4096;
const MAX_WORD: usize = 256;
const MAX_DISKS: usize = 16;

/// At most `max` bytes of `s`, cut at a character boundary.
fn capped(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("").to_string()
}

fn text(v: &Value, key: &str, max: usize) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .map(|s| capped(s, max))
        .unwrap_or_default()
}

/// The OS as people name it: the product name, else family, distribution
/// and version.
fn os_name(os: Option<&Value>) -> String {
    let Some(os) = os else {
        return String::new();
    };
    let name = text(os, "name", MAX_WORD);
    if !name.is_empty() {
        return name;
    }
    let parts: Vec<String> = ["distribution", "version"]
        .iter()
        .map(|k| text(os, k, MAX_WORD))
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        text(os, "family", MAX_WORD)
    } else {
        parts.join(" ")
    }
}

/// The current time, RFC 3339 UTC.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the Unix epoch as RFC 3339 UTC (the civil-from-days
/// arithmetic of the proleptic Gregorian calendar).
fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A catalogue entry from a machine's manifest and description; `None` if
/// the description is not one.
pub(crate) fn entry(
    repo: &str,
    tag: &str,
    digest: &str,
    manifest: &Value,
    config: &[u8],
) -> Option<MachineRow> {
    let c: Value = serde_json::from_slice(config).ok()?;
    let name = text(&c, "name", MAX_WORD);
    if name.is_empty() {
        return None;
    }
    let disks = c
        .get("disks")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .take(MAX_DISKS)
                .map(|d| DiskRow {
                    name: text(d, "name", MAX_WORD),
                    size: d.get("size").and_then(Value::as_u64).unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    let size_of = |d: &Value| d.get("size").and_then(Value::as_u64).unwrap_or(0);
    let compressed = manifest
        .get("layers")
        .and_then(Value::as_array)
        .map(|l| l.iter().map(size_of).fold(0u64, u64::saturating_add))
        .unwrap_or(0)
        .saturating_add(manifest.get("config").map(size_of).unwrap_or(0));
    let signed_by = manifest
        .get("annotations")
        .and_then(|a| a.get(SIGNATURE_KEY))
        .and_then(Value::as_str)
        .map(|s| capped(s, MAX_WORD));
    Some(MachineRow {
        repository: repo.to_string(),
        tag: tag.to_string(),
        digest: digest.to_string(),
        name,
        version: text(&c, "version", MAX_WORD),
        description: text(&c, "description", MAX_TEXT),
        os: os_name(c.get("os")),
        architecture: text(&c, "architecture", MAX_WORD),
        firmware: text(&c, "firmware", MAX_WORD),
        cpus: c.get("cpus").and_then(Value::as_u64).unwrap_or(0),
        memory: c.get("memory").and_then(Value::as_u64).unwrap_or(0),
        disks,
        created: text(&c, "created", MAX_WORD),
        signed_by,
        compressed_size: compressed,
        pushed: now_rfc3339(),
    })
}

/// Records a pushed manifest in the catalogue if it is a machine's. The
/// push has succeeded whatever happens here: a description that cannot be
/// read leaves the machine out of the catalogue, and says so in the log.
pub(crate) async fn record(hub: &Arc<Hub>, repo: &str, tag: &str, digest: &str, body: &[u8]) {
    let Ok(manifest) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    if manifest.get("artifactType").and_then(Value::as_str) != Some(MACHINE_ARTIFACT_TYPE) {
        return;
    }
    let Some(config) = manifest
        .get("config")
        .and_then(|c| c.get("digest"))
        .and_then(Value::as_str)
        .and_then(|d| Digest::parse(d).ok())
    else {
        return;
    };
    let bytes = match hub.store.read_small(&config, MAX_CONFIG).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("hub: {repo}:{tag}: cannot read the machine description {config}: {e}");
            return;
        }
    };
    let Some(row) = entry(repo, tag, digest, &manifest, &bytes) else {
        eprintln!("hub: {repo}:{tag}: {config} is not a machine description; not catalogued");
        return;
    };
    if let Err(e) = hub.meta.put_machine(&row).await {
        eprintln!("hub: {repo}:{tag}: cannot catalogue the machine: {e}");
    }
}

/// The page size asked for by `n`, within bounds.
pub(crate) fn page_size(q: &Query) -> ApiResult<u32> {
    match q.get("n") {
        None => Ok(DEFAULT_PAGE),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| n.min(MAX_PAGE))
            .ok_or_else(|| ApiError::bad(Code::Unsupported, "n must be a positive number")),
    }
}

/// The search term `q`, trimmed and bounded.
pub(crate) fn term(q: &Query) -> ApiResult<String> {
    let t = q.get("q").unwrap_or("").trim();
    if t.len() > MAX_TERM {
        return Err(ApiError::bad(
            Code::Unsupported,
            format!("the search term is limited to {MAX_TERM} bytes"),
        ));
    }
    Ok(t.to_string())
}

/// Searches the catalogue.
pub(crate) async fn find(hub: &Hub, term: &str, n: u32) -> ApiResult<Vec<MachineRow>> {
    hub.meta
        .search(term, n)
        .await
        .map_err(db_err("searching the catalogue"))
}

/// `GET /api/search?q=TERM[&n=]`: a JSON list of machines whose name,
/// description or OS holds the term, most recently pushed first.
pub(crate) async fn search(hub: &Hub, q: &Query) -> ApiResult<Response> {
    let rows = find(hub, &term(q)?, page_size(q)?).await?;
    let body = serde_json::to_string(&rows)
        .map_err(|e| ApiError::internal("writing search results", e))?;
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_764_003_723), "2025-11-24T17:02:03Z");
    }

    #[test]
    fn capping_keeps_characters_whole() {
        assert_eq!(capped("héllo", 2), "h");
        assert_eq!(capped("abc", 10), "abc");
    }

    #[test]
    fn entries() {
        let m = serde_json::json!({
            "config": {"size": 10},
            "layers": [{"size": 5}, {"size": 7}],
            "annotations": {"dev.vmhub.signature.key": "ed25519:AAAA"}
        });
        let c = br#"{"name":"deb","os":{"family":"linux","name":"Debian 12"},"cpus":2,
            "memory":1024,"disks":[{"name":"disk0","size":99}]}"#;
        let e = entry("a/b", "1", "sha256:x", &m, c).unwrap();
        assert_eq!(e.compressed_size, 22);
        assert_eq!(e.os, "Debian 12");
        assert_eq!(e.signed_by.as_deref(), Some("ed25519:AAAA"));
        assert_eq!(e.disks.len(), 1);
        assert!(entry("a", "1", "d", &m, b"[]").is_none());
        assert!(entry("a", "1", "d", &m, b"not json").is_none());
    }
}
