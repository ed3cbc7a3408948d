//! The API function: the same axum Router as the local server, with the caller read from the claims that the
//! HTTP API's JWT authorizer has already validated (the same `tenant_id`/`sub` claims the local API reads).

use std::sync::Arc;

use ::api::{ApiError, AppState, Authenticator, Caller};
use axum::http::request::Parts;
use lambda_http::request::RequestContext;

use crate::adapters::Adapters;
use crate::observability::EmfMetrics;

/// Reads `tenant_id`, `sub` and `roles` from the authorizer's JWT claims in the request context.
pub struct AuthorizerClaims;

impl Authenticator for AuthorizerClaims {
    fn authenticate(&self, parts: &Parts) -> Result<Caller, ApiError> {
        let claims = match parts.extensions.get::<RequestContext>() {
            Some(RequestContext::ApiGatewayV2(ctx)) => {
                ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|jwt| &jwt.claims)
            }
            _ => None,
        }
        .ok_or_else(|| ApiError::Unauthorized("no JWT claims in the request context".into()))?;
        let tenant_id = claims
            .get("tenant_id")
            .and_then(|t| t.trim().parse::<i64>().ok())
            .ok_or_else(|| ApiError::Unauthorized("the token has no integer tenant_id claim".into()))?;
        let user =
            claims.get("sub").ok_or_else(|| ApiError::Unauthorized("the token has no sub claim".into()))?.clone();
        ::api::auth::check_user(&user).map_err(ApiError::Unauthorized)?;
        // API Gateway flattens array claims to "[a b]".
        let roles = claims
            .get("roles")
            .map(|r| {
                r.trim_matches(|c| c == '[' || c == ']')
                    .split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Caller { tenant_id, user, roles })
    }
}

/// The API's router. With `metrics`, each answer is counted (`Requests`, `ClientErrors`, `ServerErrors` of the
/// `bulk-change-api` function) and flushed as an EMF line: a 5xx is a successful invocation to Lambda, so this is how
/// an alarm sees it.
pub fn app(
    adapters: &Adapters,
    max_devices: usize,
    body_idle: std::time::Duration,
    metrics: Option<Arc<EmfMetrics>>,
) -> axum::Router {
    let router = ::api::router(AppState {
        store: adapters.store.clone(),
        queue: adapters.queue.clone(),
        auth: Arc::new(AuthorizerClaims),
        max_devices,
        body_idle,
        large_exports: adapters.large_exports.clone(),
        webhook_policy: adapters.webhooks.config.policy,
    });
    let Some(metrics) = metrics else { return router };
    router.layer(axum::middleware::map_response(move |response: axum::response::Response| {
        let metrics = metrics.clone();
        async move {
            let status = response.status();
            metrics.count("Requests", 1);
            if status.is_client_error() {
                metrics.count("ClientErrors", 1);
            }
            if status.is_server_error() {
                metrics.count("ServerErrors", 1);
            }
            metrics.flush();
            response
        }
    }))
}
