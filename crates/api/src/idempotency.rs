//! `Idempotency-Key` on the POST routes that change something (submit, associate, retry, cancel): the same key
//! and request within 24 hours get the first answer again without writing anything; the same key with another
//! request is 422; keys belong to the caller's tenant. The key is reserved in the store before the request runs,
//! the bulk change it creates is recorded on it in the same transaction, and its answer is kept after (a 2xx or a
//! 409; any other refusal or a failure frees the key).

use std::future::Future;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use engine::ports::IdempotencyStart;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::AppState;
use crate::auth::Caller;
use crate::problem::ApiError;

pub const HEADER: &str = "idempotency-key";
/// Set on an answer that repeats an earlier one.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key is remembered.
const KEEP_HOURS: i64 = 24;
/// A reservation older than this whose request recorded nothing died with its server: it is taken over.
const STALE_SECONDS: i64 = 60;
/// The largest answer kept whole for replays (a 10,000-device submission answers about 1 MB); a larger one is kept
/// as its bulk change id.
const MAX_KEPT_BYTES: usize = 16 * 1024 * 1024;
const MAX_KEY_CHARS: usize = 255;

/// A request's key and the fingerprint of what it asks (method, path and body).
pub struct Key {
    pub value: String,
    hash: String,
}

/// Reads the `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
pub fn key_of(headers: &HeaderMap, method: &str, path: &str, body: &[u8]) -> Result<Option<Key>, ApiError> {
    let Some(raw) = headers.get(HEADER) else { return Ok(None) };
    let value = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_KEY_CHARS && v.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters (a UUID is best)"),
            )
        })?;
    let mut digest = Sha256::new();
    digest.update(method.as_bytes());
    digest.update(b" ");
    digest.update(path.as_bytes());
    digest.update(b"\n");
    digest.update(body);
    let hash = digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(Key { value: value.to_string(), hash }))
}

/// A POST of `path` with `body` under its `Idempotency-Key` (`key_of`, then `once`): `handler` gets the state, the
/// caller and the key, the one way every POST of the API runs.
pub async fn post_once<F, Fut>(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    handler: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(AppState, Caller, Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    let key = key_of(headers, "POST", path, body)?;
    let (st, who) = (state.clone(), caller.clone());
    once(state, caller, key, move |key| handler(st, who, key)).await
}

/// Runs `handler` once per key: a first request runs (given the key, to record on its bulk change) and its
/// answer is kept; a repeat gets that answer back. Without a key, `handler` simply runs.
///
/// A keyed request runs to its end in a task of its own, whether or not its client is still there: a client that
/// hangs up (a closed laptop, a proxy timeout) and sends the request again gets the answer of the one it dropped,
/// once it is kept, instead of finding the key reserved by work that was cut off halfway (a bulk change recorded
/// by a store call the drop could not stop, its answer never kept: 409 for a minute).
pub async fn once<F, Fut>(state: &AppState, caller: &Caller, key: Option<Key>, handler: F) -> Result<Response, ApiError>
where
    F: FnOnce(Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    let Some(key) = key else { return handler(None).await };
    let (state, caller) = (state.clone(), caller.clone());
    tokio::spawn(async move { once_keyed(&state, &caller, key, handler).await })
        .await
        .unwrap_or_else(|e| Err(ApiError::Internal(format!("the request's task ended early: {e}"))))
}

async fn once_keyed<F, Fut>(state: &AppState, caller: &Caller, key: Key, handler: F) -> Result<Response, ApiError>
where
    F: FnOnce(Option<String>) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let now = Utc::now();
    let start = state
        .store
        .begin_idempotent(
            caller.tenant_id,
            &key.value,
            &key.hash,
            now,
            now - chrono::Duration::seconds(STALE_SECONDS),
            now - chrono::Duration::hours(KEEP_HOURS),
        )
        .await?;
    match start {
        IdempotencyStart::New => {
            let mut reservation = Reservation::new(state, caller.tenant_id, &key.value);
            let response = handler(Some(key.value.clone())).await.unwrap_or_else(IntoResponse::into_response);
            let answer = keep(state, caller, &key, response).await;
            reservation.settled();
            answer
        }
        IdempotencyStart::Replay { status, body } => {
            info!(tenant_id = caller.tenant_id, key = ?key.value, status, "idempotent request answered again");
            Ok(replay(status, body))
        }
        IdempotencyStart::Mismatch => Err(ApiError::Unprocessable(format!(
            "Idempotency-Key '{}' was used within the last {KEEP_HOURS} hours for a different request; send a new key for a new request",
            key.value
        ))),
        IdempotencyStart::InProgress { bulk_change_id: Some(id), since }
            if since < now - chrono::Duration::seconds(STALE_SECONDS) =>
        {
            // The first request recorded its bulk change and then died before its answer was kept.
            let status = state.store.bulk_change(Some(caller.tenant_id), id).await?.map(|b| b.status);
            let body = json!({"BulkChangeId": id, "Status": status, "Replayed": true,
                              "Detail": "the first request with this Idempotency-Key created this bulk change; its full answer was lost"})
            .to_string();
            state.store.finish_idempotent(caller.tenant_id, &key.value, 202, &body).await?;
            Ok(replay(202, body))
        }
        IdempotencyStart::InProgress { .. } => Err(ApiError::InProgress(format!(
            "a request with Idempotency-Key '{}' is still being processed; send it again in a moment",
            key.value
        ))),
    }
}

/// A key reserved for a request that is running. If the request's task ends before its answer is kept (a panic
/// in the handler), the reservation is freed at once, so the client's retry under the same key runs instead of
/// answering 409 until the reservation goes stale. The store frees only a reservation that recorded no bulk change
/// and kept no answer: what was done stays answered.
struct Reservation {
    store: Option<std::sync::Arc<dyn engine::ports::Store>>,
    tenant_id: i64,
    key: String,
}

impl Reservation {
    fn new(state: &AppState, tenant_id: i64, key: &str) -> Self {
        Self { store: Some(state.store.clone()), tenant_id, key: key.to_string() }
    }

    /// The answer was kept (or the key freed) by `keep`: nothing is left to do on drop.
    fn settled(&mut self) {
        self.store = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (tenant_id, key) = (self.tenant_id, std::mem::take(&mut self.key));
        warn!(tenant_id, key = ?key, "request abandoned before its answer was kept; freeing its Idempotency-Key");
        runtime.spawn(async move {
            if let Err(e) = store.abandon_idempotent(tenant_id, &key).await {
                warn!(tenant_id, key = ?key, error = %e, "the abandoned request's Idempotency-Key was not freed");
            }
        });
    }
}

/// Whether an answer is kept for the key's replays: a success and a 409 (the request met a state: a final bulk
/// change, a device held elsewhere) are; a 5xx (nothing was done, try again) and any other 4xx (the request was
/// refused as written: a client that fixes it may send it again under the same key) free the key instead.
fn kept_for_replay(status: StatusCode) -> bool {
    !(status.is_server_error() || (status.is_client_error() && status != StatusCode::CONFLICT))
}

/// Keeps a first answer for the key's replays, or frees the key (`kept_for_replay`). Freeing never drops a key
/// that recorded a bulk change: the store frees only a reservation with none.
async fn keep(state: &AppState, caller: &Caller, key: &Key, response: Response) -> Result<Response, ApiError> {
    let (parts, body) = response.into_parts();
    // Our own answer, already in memory: read whole, whatever its size.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(format!("answer could not be read to keep it: {e}")))?;
    let kept = if !kept_for_replay(parts.status) {
        state.store.abandon_idempotent(caller.tenant_id, &key.value).await
    } else {
        let text = String::from_utf8_lossy(&bytes);
        let text = if bytes.len() <= MAX_KEPT_BYTES { text } else { too_large_to_keep(&text, bytes.len()).into() };
        state.store.finish_idempotent(caller.tenant_id, &key.value, parts.status.as_u16(), &text).await
    };
    if let Err(e) = kept {
        // The work is done and answered; only a replay of this answer is lost (a replay then rebuilds it).
        warn!(tenant_id = caller.tenant_id, key = ?key.value, error = %e, "idempotent answer not kept");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// What a replay answers instead of a first answer too large to keep: the bulk change it made, if any (a replay of
/// a 202 then points at its status as the first did).
fn too_large_to_keep(answer: &str, bytes: usize) -> String {
    let id = serde_json::from_str::<serde_json::Value>(answer).ok().and_then(|v| v.get("BulkChangeId")?.as_i64());
    warn!(bytes, bulk_change_id = id, "idempotent answer too large to keep whole; its bulk change id is kept");
    json!({"BulkChangeId": id, "Replayed": true,
           "Detail": format!("the first answer ({bytes} bytes) was too large to keep; read the bulk change's status for its rows")})
    .to_string()
}

/// A kept answer again, with the headers of the first that matter: a 202 (only an accepted bulk change answers
/// 202) points at its status as the first did.
fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_client_error() || status.is_server_error() {
        "application/problem+json"
    } else {
        "application/json"
    };
    let location = (status == StatusCode::ACCEPTED)
        .then(|| serde_json::from_str::<serde_json::Value>(&body).ok()?.get("BulkChangeId")?.as_i64())
        .flatten()
        .and_then(crate::status_location);
    let mut response = (status, body).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_str(key).expect("header"));
        h
    }

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let k = |method, path, body: &[u8]| key_of(&headers("k"), method, path, body).expect("ok").expect("key").hash;
        assert_eq!(k("POST", "/a", b"{}"), k("POST", "/a", b"{}"));
        assert_ne!(k("POST", "/a", b"{}"), k("POST", "/a", b"{ }"));
        assert_ne!(k("POST", "/a", b"{}"), k("POST", "/b", b"{}"));
    }

    #[test]
    fn an_answer_too_large_to_keep_is_kept_as_its_bulk_change() {
        let devices: Vec<String> =
            (0..500_000).map(|i| format!("{{\"ICCID\":\"8901{i:016}\",\"Valid\":true}}")).collect();
        let answer = format!("{{\"BulkChangeId\":77,\"Status\":\"NEW\",\"Devices\":[{}]}}", devices.join(","));
        assert!(answer.len() > MAX_KEPT_BYTES);
        let kept = too_large_to_keep(&answer, answer.len());
        assert!(kept.len() < 1024, "{kept}");
        let replayed = replay(202, kept);
        assert_eq!(
            replayed.headers().get(header::LOCATION).map(|v| v.as_bytes()),
            Some(&b"/M2M/BulkChangeStatus/77"[..]),
            "the replay points at the same bulk change"
        );
    }

    #[test]
    fn a_replayed_acceptance_points_at_its_bulk_change_like_the_first() {
        let accepted = replay(202, r#"{"BulkChangeId":42,"Status":"NEW"}"#.to_string());
        assert_eq!(
            accepted.headers().get(header::LOCATION).map(|v| v.as_bytes()),
            Some(&b"/M2M/BulkChangeStatus/42"[..])
        );
        assert_eq!(accepted.headers().get(REPLAYED).map(|v| v.as_bytes()), Some(&b"true"[..]));
        let refused = replay(422, r#"{"BulkChangeId":42}"#.to_string());
        assert!(refused.headers().get(header::LOCATION).is_none(), "only an acceptance has a Location");
        assert!(replay(202, "not json".to_string()).headers().get(header::LOCATION).is_none());
    }

    #[test]
    fn successes_and_conflicts_are_kept_other_refusals_and_failures_free_the_key() {
        for kept in [200, 202, 409] {
            assert!(kept_for_replay(StatusCode::from_u16(kept).expect("status")), "{kept}");
        }
        for freed in [400, 404, 413, 422, 500, 503] {
            assert!(!kept_for_replay(StatusCode::from_u16(freed).expect("status")), "{freed}");
        }
    }

    #[test]
    fn keys_must_be_short_visible_ascii() {
        assert!(key_of(&HeaderMap::new(), "POST", "/a", b"").expect("ok").is_none());
        for bad in ["", "has space", &"x".repeat(256)] {
            assert!(key_of(&headers(bad), "POST", "/a", b"").is_err(), "{bad:?}");
        }
        assert!(key_of(&headers("7f9c2ba4-e88f-11ee-8c90-0242ac120002"), "POST", "/a", b"").is_ok());
    }
}
