//! The server's one error type: an HTTP status, a stable code (proto/sync-v1.md §7)
//! and a message. 5xx messages stay generic; the detail goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sidak_core::wire::ErrorBody;

use crate::db::DbError;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// What happened, in words.
    pub message: String,
    /// Seconds after which the request may succeed, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

macro_rules! constructors {
    ($($name:ident => $status:ident, $code:literal;)*) => {
        impl ApiError {
            $(
                #[doc = concat!("`", $code, "`")]
                pub fn $name(message: impl Into<String>) -> ApiError {
                    ApiError { status: StatusCode::$status, code: $code, message: message.into(), retry_after: None }
                }
            )*
        }
    };
}

constructors! {
    malformed_json => BAD_REQUEST, "malformed_json";
    bad_query => BAD_REQUEST, "bad_query";
    bad_cursor => BAD_REQUEST, "bad_cursor";
    unsupported_protocol => BAD_REQUEST, "unsupported_protocol";
    unauthorized => UNAUTHORIZED, "unauthorized";
    role_forbidden => FORBIDDEN, "role_forbidden";
    scope_forbidden => FORBIDDEN, "scope_forbidden";
    origin_forbidden => FORBIDDEN, "origin_forbidden";
    not_found => NOT_FOUND, "not_found";
    method_not_allowed => METHOD_NOT_ALLOWED, "method_not_allowed";
    reset_required => CONFLICT, "reset_required";
    offset_mismatch => CONFLICT, "offset_mismatch";
    size_mismatch => CONFLICT, "size_mismatch";
    body_too_large => PAYLOAD_TOO_LARGE, "body_too_large";
    too_many_ops => PAYLOAD_TOO_LARGE, "too_many_ops";
    evidence_too_large => PAYLOAD_TOO_LARGE, "evidence_too_large";
    unsupported_media_type => UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type";
    invalid_body => UNPROCESSABLE_ENTITY, "invalid_body";
    evidence_mismatch => UNPROCESSABLE_ENTITY, "evidence_mismatch";
    invalid_correction => UNPROCESSABLE_ENTITY, "invalid_correction";
    shutting_down => SERVICE_UNAVAILABLE, "shutting_down";
}

impl ApiError {
    /// `too_many_failures`: this source address failed to authenticate too often; it
    /// may try again after `retry_after` seconds.
    pub fn too_many_failures(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_failures",
            message: message.into(),
            retry_after: Some(retry_after),
        }
    }
}

impl ApiError {
    /// `internal`: logs the detail, answers a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; the server log has the details".into(),
            retry_after: None,
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        ApiError::internal(e)
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> ApiError {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { code: self.code.to_owned(), message: self.message };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
