//! The `Range: bytes=` header of blob and disk downloads (RFC 9110, 14.2).

use axum::http::{header, HeaderMap};

/// What a request's `Range` header asks of a body of some length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The whole body: no header, another unit, or several ranges (which a
    /// server may answer with the whole body).
    Whole,
    /// Bytes `start..end` (end excluded, never empty, within the body).
    Bytes(u64, u64),
    /// A single range that does not parse, or ends before it starts: a
    /// server may ignore it or refuse it.
    Invalid,
    /// A range past the end of the body, or an empty suffix: 416.
    Unsatisfiable,
}

/// What `headers` ask of a body of `len` bytes.
pub fn requested(headers: &HeaderMap, len: u64) -> Requested {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Requested::Whole;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Requested::Whole;
    };
    if spec.contains(',') {
        return Requested::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Requested::Invalid;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let Some(start) = parse(a) else {
                return Requested::Invalid;
            };
            let end = if b.is_empty() {
                len
            } else {
                match parse(b) {
                    Some(last) if last >= start => last.saturating_add(1).min(len),
                    _ => return Requested::Invalid,
                }
            };
            (start, end)
        }
        (true, false) => match parse(b) {
            Some(0) => return Requested::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len),
            None => return Requested::Invalid,
        },
        (true, true) => return Requested::Invalid,
    };
    if start >= len {
        return Requested::Unsatisfiable;
    }
    Requested::Bytes(start, end)
}
