//! Errors as the distribution spec words them: a status and a body
//! `{"errors":[{"code":...,"message":...,"detail":...}]}` ("Error Codes").

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A spec error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the names are the spec's own
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// Not a spec code (the distribution registry's): try again shortly.
    Unavailable,
    /// Not a spec code: the hub itself failed (storage, database).
    Unknown,
}

impl Code {
    /// The code as it appears in an error body.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOO_MANY_REQUESTS",
            Code::Unavailable => "UNAVAILABLE",
            Code::Unknown => "UNKNOWN",
        }
    }
}

/// An error answer of the registry API (boxed: results stay small).
#[derive(Debug)]
pub struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    code: Code,
    message: String,
    detail: Option<serde_json::Value>,
    headers: Vec<(HeaderName, String)>,
}

/// The result of a registry request handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with `status`, `code` and a message for people.
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> ApiError {
        ApiError(Box::new(Inner {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }))
    }

    /// Adds the spec's `detail` field.
    pub fn detail(mut self, detail: serde_json::Value) -> ApiError {
        self.0.detail = Some(detail);
        self
    }

    /// Adds a header to the answer (a 416's Content-Range, a 401's challenge).
    pub fn header(mut self, name: HeaderName, value: String) -> ApiError {
        self.0.headers.push((name, value));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The spec code.
    pub fn code(&self) -> Code {
        self.0.code
    }

    /// A 400 with `code`.
    pub fn bad(code: Code, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A 404 with `code`.
    pub fn not_found(code: Code, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A 500: the hub's storage or database failed. The cause goes to the
    /// server's log, not to the client.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
        eprintln!("hub: {what}: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unknown,
            format!("{what} failed"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = *self.0;
        let mut entry = serde_json::json!({
            "code": this.code.as_str(),
            "message": this.message,
        });
        if let (Some(d), Some(o)) = (this.detail, entry.as_object_mut()) {
            o.insert("detail".into(), d);
        }
        let body = serde_json::json!({ "errors": [entry] }).to_string();
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = this.status;
        let h = resp.headers_mut();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in this.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}
