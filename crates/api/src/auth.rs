//! Identity: who calls and for which tenant. Locally an HS256 JWT checked with `BULKCHANGE_JWT_SECRET` (by the
//! `jsonwebtoken` crate); in AWS the HTTP API's JWT authorizer has checked it and the claims arrive in the request
//! context. The tenant always comes from the token, never from the body.

use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::problem::ApiError;

/// The shortest HS256 secret the local API accepts: 256 bits, the size of the HMAC-SHA256 output (RFC 7518 3.2).
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: u64 = 30;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub tenant_id: i64,
    pub user: String,
    pub roles: Vec<String>,
}

/// The claims we read (the portal's tokens). `exp` is required; `nbf` and `iat` are checked when present.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub tenant_id: i64,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

impl Claims {
    /// Claims for `user` of `tenant_id`, issued now and valid for `lifetime_seconds`.
    pub fn new(tenant_id: i64, user: &str, lifetime_seconds: i64) -> Self {
        let now = chrono::Utc::now().timestamp();
        Self { tenant_id, sub: user.to_string(), roles: vec![], exp: now + lifetime_seconds, nbf: None, iat: Some(now) }
    }
}

pub trait Authenticator: Send + Sync {
    fn authenticate(&self, parts: &Parts) -> Result<Caller, ApiError>;
}

/// A user name we accept: not empty, no control characters (it goes to logs and to `CreatedBy`), 200 at most.
pub fn check_user(sub: &str) -> Result<(), String> {
    if sub.trim().is_empty() {
        return Err("the token's sub claim is empty".into());
    }
    if sub.chars().any(char::is_control) {
        return Err("the token's sub claim contains control characters".into());
    }
    if sub.chars().count() > 200 {
        return Err("the token's sub claim is longer than 200 characters".into());
    }
    Ok(())
}

/// Validates `Authorization: Bearer <HS256 JWT>` with a shared secret.
pub struct Hs256 {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Hs256 {
    /// Refuses a secret shorter than [`MIN_SECRET_BYTES`]: a short HMAC key can be guessed offline from one token.
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "BULKCHANGE_JWT_SECRET has {} bytes; it needs at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let bad_key =
            |e: jsonwebtoken::errors::Error| format!("BULKCHANGE_JWT_SECRET is not usable as an HS256 key: {e}");
        Ok(Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()).map_err(bad_key)?,
            decoding: DecodingKey::from_secret(secret.as_bytes()).map_err(bad_key)?,
            validation,
        })
    }

    /// Mints a token (for `bulkchange token` and tests).
    pub fn mint(&self, claims: &Claims) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| format!("could not sign the token: {e}"))
    }

    /// Checks signature, algorithm, `exp`, `nbf`, `iat` and `sub`; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => "token has expired".to_string(),
                ErrorKind::ImmatureSignature => "token is not valid yet (nbf)".to_string(),
                ErrorKind::InvalidSignature => "token signature is invalid".to_string(),
                ErrorKind::InvalidAlgorithm => "token algorithm must be HS256".to_string(),
                ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim} claim"),
                ErrorKind::Json(_) => "token claims are unreadable or lack tenant_id, sub or exp".to_string(),
                _ => "token is not a valid JWT".to_string(),
            })?;
        let claims = data.claims;
        let now = chrono::Utc::now().timestamp();
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECONDS as i64) {
            return Err("token is issued in the future (iat)".into());
        }
        check_user(&claims.sub)?;
        Ok(claims)
    }
}

impl Authenticator for Hs256 {
    fn authenticate(&self, parts: &Parts) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::Unauthorized("Authorization must be a Bearer token".into()))?;
        let claims = self.verify(token.trim()).map_err(ApiError::Unauthorized)?;
        Ok(Caller { tenant_id: claims.tenant_id, user: claims.sub, roles: claims.roles })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

    fn auth() -> Hs256 {
        Hs256::new(SECRET).expect("long enough")
    }

    /// A token signed with `SECRET` whatever its claims (the library's `encode` needs our `Claims`).
    fn signed(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn minted_token_verifies() {
        let claims = Claims::new(7, "alice", 3600);
        assert_eq!(auth().verify(&auth().mint(&claims).expect("mint")), Ok(claims));
    }

    #[test]
    fn short_secrets_are_refused() {
        for secret in ["", "x", "31-bytes-31-bytes-31-bytes-31-b"] {
            assert!(Hs256::new(secret).is_err(), "{secret:?}");
        }
        assert!(Hs256::new("32-bytes-32-bytes-32-bytes-32-by").is_ok());
    }

    #[test]
    fn other_secret_tampering_and_expiry_are_refused() {
        let token = auth().mint(&Claims::new(7, "alice", 3600)).expect("mint");
        let other = Hs256::new("another-secret-of-at-least-32-bytes!").expect("long");
        assert_eq!(other.verify(&token), Err("token signature is invalid".into()));
        let forged_payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"tenant_id":8,"sub":"alice","exp":{}}}"#, now() + 60));
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &forged_payload;
        assert_eq!(auth().verify(&parts.join(".")), Err("token signature is invalid".into()));
        let expired = signed(serde_json::json!({"tenant_id": 7, "sub": "alice", "exp": now() - 120}));
        assert_eq!(auth().verify(&expired), Err("token has expired".into()));
        assert!(auth().verify("abc").is_err());
    }

    #[test]
    fn tokens_without_exp_with_future_nbf_or_iat_or_empty_sub_are_refused() {
        let cases = [
            (serde_json::json!({"tenant_id": 7, "sub": "alice"}), "exp"),
            (serde_json::json!({"tenant_id": 7, "sub": "alice", "exp": now() + 600, "nbf": now() + 300}), "nbf"),
            (serde_json::json!({"tenant_id": 7, "sub": "alice", "exp": now() + 600, "iat": now() + 300}), "iat"),
            (serde_json::json!({"tenant_id": 7, "sub": "", "exp": now() + 600}), "sub"),
            (serde_json::json!({"tenant_id": 7, "sub": "eve\nINFO forged line", "exp": now() + 600}), "control"),
            (serde_json::json!({"sub": "alice", "exp": now() + 600}), "tenant_id"),
        ];
        for (claims, why) in cases {
            let err = auth().verify(&signed(claims.clone())).expect_err(why);
            assert!(err.contains(why), "{claims}: {err}");
        }
        let within_leeway = serde_json::json!({"tenant_id": 7, "sub": "alice", "exp": now() + 600, "nbf": now() + 5});
        assert!(auth().verify(&signed(within_leeway)).is_ok(), "a few seconds of clock skew are allowed");
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"tenant_id":7,"sub":"alice","exp":{}}}"#, now() + 60));
        assert!(auth().verify(&format!("{header}.{payload}.")).is_err());
    }
}
