//! API errors: every failure answers `{"error": {"code": "...", "message": "..."}}`
//! with a fitting status, so clients never parse free text. Bad input is always a
//! 4xx; only storage and internal faults are 5xx, and their details go to the log,
//! not to the client.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`bad_parameter`, `not_found`, `agent_not_active`, ...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending query or path parameter, for `bad_parameter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

/// An error a handler returns; converts into the JSON error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub parameter: Option<String>,
}

/// Longest slice of a client-supplied value echoed back in a message.
const ECHO_MAX: usize = 64;

/// A client value fit to quote in a message: truncated, and debug-escaped so
/// control characters cannot forge log lines or terminal output.
pub fn echo(value: &str) -> String {
    if value.chars().count() <= ECHO_MAX {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(ECHO_MAX).collect();
        format!("{head:?}... ({} bytes)", value.len())
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), parameter: None }
    }

    /// 400 `bad_parameter`; the message always starts with the parameter's name.
    pub fn bad_parameter(name: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_parameter",
            message: format!("invalid parameter {name:?}: {reason}"),
            parameter: Some(name.to_owned()),
        }
    }

    /// 400 `bad_request`: a body that is not what the endpoint takes.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `storage_error`. The cause is logged here; the client gets no details
    /// (they may name files or SQL).
    pub fn storage(err: &StoreError) -> Self {
        tracing::error!(error = %err, "API request failed on storage");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            "the manager's storage failed; see its log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::storage(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                parameter: self.parameter,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Fallback for unknown routes.
pub async fn not_found_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", echo(uri.path())))
}

/// Fallback for a known route with a method it does not take.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", echo(method.as_str()), echo(uri.path())),
    )
}

/// A JSON request body, with every way it can be wrong as a clear 4xx: a body over the
/// size limit is a 413, anything else malformed a 400 (not axum's 415 or 422).
pub fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(b)) => Ok(b),
        Err(JsonRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than {} bytes", super::MAX_BODY_BYTES),
            ))
        }
        Err(JsonRejection::MissingJsonContentType(_)) => {
            Err(ApiError::bad_request("expected a JSON body with Content-Type: application/json"))
        }
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON body: {}", e.body_text()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_truncates_and_escapes() {
        assert_eq!(echo("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(10_000);
        let e = echo(&long);
        assert!(e.len() < 100, "{e}");
        assert!(e.ends_with("(10000 bytes)"));
    }
}
