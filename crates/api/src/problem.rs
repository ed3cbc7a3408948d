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
    /// 409 with `Retry-After`: the first request with this `Idempotency-Key` is still running.
    #[error("{0}")]
    InProgress(String),
    /// 422: the request is well formed but cannot be taken as sent (an `Idempotency-Key` reused for another
    /// request).
    #[error("{0}")]
    Unprocessable(String),
    /// Any other status, for the router's own refusals (405, 413, query errors) turned into problem+json.
    #[error("{detail}")]
    Http { status: StatusCode, detail: String },
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
        match e {
            engine::StoreError::Conflict(why) => ApiError::Conflict(why),
            other => ApiError::Internal(other.to_string()),
        }
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
            ApiError::InProgress(what) => {
                (StatusCode::CONFLICT, "request-in-progress", "Request in progress".into(), what, vec![])
            }
            ApiError::Unprocessable(what) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused".into(),
                what.clone(),
                vec![FieldError::new("Idempotency-Key", what)],
            ),
            ApiError::Http { status, detail } => (
                status,
                "http",
                status.canonical_reason().unwrap_or("Error").to_string(),
                if detail.trim().is_empty() {
                    status.canonical_reason().unwrap_or("Error").to_string()
                } else {
                    detail
                },
                vec![],
            ),
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
        if kind == "request-in-progress" {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Turns every error answer that is not problem+json yet (axum's own: 405, 413 from the body limit, query
/// and path parse errors) into one, keeping its status, its text as the detail and its `Allow` header.
pub async fn problem_for_every_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| domain::rules::bounded_text(String::from_utf8_lossy(&b).trim(), 500))
        .unwrap_or_default();
    let mut problem = ApiError::Http { status, detail: text }.into_response();
    if let Some(allow) = allow {
        problem.headers_mut().insert(header::ALLOW, allow);
    }
    problem
}
