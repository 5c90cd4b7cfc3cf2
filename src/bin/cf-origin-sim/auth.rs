//! Credential checks: API tokens (`Authorization: Bearer`) or the legacy email + key pair.

use axum::http::{HeaderMap, StatusCode};
use origin_region_operator::wire::codes;
use serde::Deserialize;

use crate::envelope::ApiError;

/// The credentials the simulator accepts. No `Debug`: it holds secrets.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted bearer tokens.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Accepted `X-Auth-Email`.
    #[serde(default)]
    pub auth_email: Option<String>,
    /// Accepted `X-Auth-Key`.
    #[serde(default)]
    pub auth_key: Option<String>,
}

impl AuthConfig {
    /// Checks that email and key come together.
    pub fn validate(&self) -> Result<(), String> {
        if self.auth_email.is_some() != self.auth_key.is_some() {
            return Err("auth_email and auth_key must be given together".into());
        }
        Ok(())
    }

    /// Accepts the request's credentials, or says 401 (none given) / 403 (wrong ones).
    ///
    /// A bearer token wins when both schemes are present, as it is Cloudflare's preferred
    /// scheme; a lone email or key counts as wrong credentials, not missing ones.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let authz = headers.get("authorization");
        let email = headers.get("x-auth-email");
        let key = headers.get("x-auth-key");
        if let Some(authz) = authz {
            let token = authz
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            return match token {
                Some(t)
                    if self
                        .tokens
                        .iter()
                        .any(|ok| ct_eq(ok.as_bytes(), t.as_bytes())) =>
                {
                    Ok(())
                }
                _ => Err(forbidden()),
            };
        }
        match (email, key) {
            (None, None) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::AUTH_ERROR,
                "Authentication error",
            )),
            (Some(e), Some(k)) => match (&self.auth_email, &self.auth_key) {
                (Some(ok_e), Some(ok_k))
                    // Both compared always, so timing does not tell which one was wrong.
                    if ct_eq(ok_e.as_bytes(), e.as_bytes()) & ct_eq(ok_k.as_bytes(), k.as_bytes()) =>
                {
                    Ok(())
                }
                _ => Err(forbidden()),
            },
            _ => Err(forbidden()),
        }
    }
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        codes::AUTH_ERROR,
        "Authentication error",
    )
}

/// Compares secrets without an early exit on the first differing byte.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cfg() -> AuthConfig {
        AuthConfig {
            tokens: vec!["t1".into(), "t2".into()],
            auth_email: Some("a@example.com".into()),
            auth_key: Some("k".into()),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn schemes() {
        let c = cfg();
        assert!(c.check(&headers(&[("authorization", "Bearer t2")])).is_ok());
        let e = c.check(&headers(&[])).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = c
            .check(&headers(&[("authorization", "Bearer nope")]))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let ok = headers(&[("x-auth-email", "a@example.com"), ("x-auth-key", "k")]);
        assert!(c.check(&ok).is_ok());
        let bad = headers(&[("x-auth-email", "a@example.com"), ("x-auth-key", "x")]);
        assert_eq!(c.check(&bad).unwrap_err().status, StatusCode::FORBIDDEN);
        let lone = headers(&[("x-auth-email", "a@example.com")]);
        assert_eq!(c.check(&lone).unwrap_err().status, StatusCode::FORBIDDEN);
    }
}
