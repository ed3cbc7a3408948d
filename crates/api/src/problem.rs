//! Every API error as `application/problem+json` (RFC 9457), mapped in this one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::{FieldError, RequestError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be accepted; nothing was written.
    #[error("{0}")]
    Invalid(RequestError),
    #[error("{0}")]
    Unauthorized(String),
    /// 404: not found, or not the caller's tenant's (never 403: we do not reveal that it exists).
    #[error("{0}")]
    NotFound(String),
    /// 409: the request does not fit the resource's current state (e.g. retrying a bulk change still running).
    #[error("{0}")]
    Conflict(String),
    /// 413: more devices than one bulk change may carry.
    #[error("{count} devices; at most {max} per bulk change")]
    TooLarge { count: usize, max: usize },
    /// 500: our failure; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid(RequestError::one("Invalid bulk change request", field, message))
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError::Invalid(e)
    }
}

impl From<engine::StoreError> for ApiError {
    fn from(e: engine::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title, detail, errors): (StatusCode, &str, String, String, Vec<FieldError>) = match self {
            ApiError::Invalid(e) => {
                let detail = e.errors.iter().map(|f| f.message.clone()).collect::<Vec<_>>().join("; ");
                (StatusCode::BAD_REQUEST, "invalid-request", e.title, detail, e.errors)
            }
            ApiError::Unauthorized(why) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "Authentication required".into(), why, vec![])
            }
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, "not-found", "Not found".into(), what, vec![]),
            ApiError::Conflict(what) => (StatusCode::CONFLICT, "conflict", "Conflict".into(), what, vec![]),
            e @ ApiError::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-many-devices",
                "Too many devices".into(),
                e.to_string(),
                vec![FieldError::new("Devices", e.to_string())],
            ),
            ApiError::Internal(why) => {
                tracing::error!(error = %why, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error".into(),
                    "The request could not be completed; it has been logged.".into(),
                    vec![],
                )
            }
        };
        let body = json!({
            "type": format!("/problems/{kind}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
            "errors": errors,
        });
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
