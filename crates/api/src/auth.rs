//! Identity: who calls and for which tenant. Locally an HS256 JWT checked with `BULKCHANGE_JWT_SECRET`; in AWS
//! the HTTP API's JWT authorizer has checked it and the claims arrive in the request context. The tenant always
//! comes from the token, never from the body.

use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::problem::ApiError;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub tenant_id: i64,
    pub user: String,
    pub roles: Vec<String>,
}

/// The claims we read (DESIGN 4.2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub tenant_id: i64,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

pub trait Authenticator: Send + Sync {
    fn authenticate(&self, parts: &Parts) -> Result<Caller, ApiError>;
}

/// Validates `Authorization: Bearer <HS256 JWT>` with a shared secret.
pub struct Hs256 {
    secret: Vec<u8>,
}

type HmacSha256 = Hmac<Sha256>;

impl Hs256 {
    pub fn new(secret: &str) -> Self {
        Self { secret: secret.as_bytes().to_vec() }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        match HmacSha256::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        }
    }

    /// Mints a token (for `bulkchange token` and tests).
    pub fn mint(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Checks signature, algorithm and expiry; returns the claims.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Claims, String> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("token is not a JWT (header.payload.signature)".into());
        };
        let header: serde_json::Value = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or("token header is unreadable")?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err("token algorithm must be HS256".into());
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| "token signature is not base64url")?;
        let mut mac = self.mac();
        mac.update(format!("{header_b64}.{payload}").as_bytes());
        mac.verify_slice(&signature).map_err(|_| "token signature is invalid")?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or("token claims are unreadable or lack tenant_id and sub")?;
        if claims.exp.is_some_and(|exp| exp < now_unix) {
            return Err("token has expired".into());
        }
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
        let claims = self.verify(token.trim(), chrono::Utc::now().timestamp()).map_err(ApiError::Unauthorized)?;
        Ok(Caller { tenant_id: claims.tenant_id, user: claims.sub, roles: claims.roles })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims { tenant_id: 7, sub: "alice".into(), roles: vec![], exp: None }
    }

    #[test]
    fn minted_token_verifies() {
        let auth = Hs256::new("s3cret");
        assert_eq!(auth.verify(&auth.mint(&claims()), 0), Ok(claims()));
    }

    #[test]
    fn other_secret_tampering_and_expiry_are_refused() {
        let auth = Hs256::new("s3cret");
        let token = auth.mint(&claims());
        assert_eq!(Hs256::new("other").verify(&token, 0), Err("token signature is invalid".into()));
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"tenant_id":8,"sub":"alice"}"#);
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &forged_payload;
        assert_eq!(auth.verify(&parts.join("."), 0), Err("token signature is invalid".into()));
        let expired = auth.mint(&Claims { exp: Some(100), ..claims() });
        assert_eq!(auth.verify(&expired, 101), Err("token has expired".into()));
        assert!(auth.verify("abc", 0).is_err());
    }
}
