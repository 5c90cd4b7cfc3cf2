//! Credentials and the headers that carry them.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

/// How the operator authenticates to Cloudflare.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// An API token, sent as `Authorization: Bearer <token>` (preferred).
    ApiToken(String),
    /// A global API key with its account email, sent as `X-Auth-Email` + `X-Auth-Key`.
    ApiKey {
        /// Account email.
        email: String,
        /// Global API key.
        key: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The email is not secret, but it identifies a person, and a Debug print of the enum
        // should be safe to paste anywhere.
        match self {
            Credentials::ApiToken(_) => f.write_str("ApiToken(<redacted>)"),
            Credentials::ApiKey { .. } => f.write_str("ApiKey { <redacted> }"),
        }
    }
}

impl Credentials {
    /// A hash of the credential, stable for the life of this process, for keying rate
    /// limiters and noticing rotation.
    ///
    /// The hasher is SipHash with a per-process random key, so the value cannot be
    /// precomputed or compared across processes, which is what makes it safe to keep in maps
    /// or debug logs.
    pub fn fingerprint(&self) -> u64 {
        static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        let mut h = KEY.get_or_init(Default::default).build_hasher();
        match self {
            Credentials::ApiToken(t) => ("token", t.trim()).hash(&mut h),
            Credentials::ApiKey { email, key } => ("key", email.trim(), key.trim()).hash(&mut h),
        }
        h.finish()
    }

    /// The secret strings, so server-provided text can be scrubbed of them.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        let v = match self {
            Credentials::ApiToken(t) => vec![t.trim()],
            Credentials::ApiKey { key, .. } => vec![key.trim()],
        };
        // Scrubbing a 1-3 character "secret" would mangle every message; such a credential
        // is rejected by Cloudflare anyway.
        v.into_iter().filter(|s| s.len() >= 4).collect()
    }

    /// The auth headers, marked sensitive so hyper's and reqwest's Debug output hides them.
    ///
    /// Surrounding whitespace is trimmed: a trailing newline is the usual artefact of
    /// `kubectl create secret --from-file`, and no token or key contains whitespace.
    pub(crate) fn headers(&self) -> Result<HeaderMap, &'static str> {
        let mut map = HeaderMap::new();
        match self {
            Credentials::ApiToken(token) => {
                let token = token.trim();
                if token.is_empty() {
                    return Err("the API token is empty");
                }
                let value = sensitive(&format!("Bearer {token}"))
                    .ok_or("the API token contains characters not allowed in an HTTP header")?;
                map.insert(AUTHORIZATION, value);
            }
            Credentials::ApiKey { email, key } => {
                let (email, key) = (email.trim(), key.trim());
                if email.is_empty() || key.is_empty() {
                    return Err("the API email or key is empty");
                }
                let email = sensitive(email)
                    .ok_or("the API email contains characters not allowed in an HTTP header")?;
                let key = sensitive(key)
                    .ok_or("the API key contains characters not allowed in an HTTP header")?;
                map.insert(HeaderName::from_static("x-auth-email"), email);
                map.insert(HeaderName::from_static("x-auth-key"), key);
            }
        }
        Ok(map)
    }
}

fn sensitive(s: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(s).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let t = Credentials::ApiToken("sekrit-token-123".into());
        let k = Credentials::ApiKey {
            email: "me@example.com".into(),
            key: "sekrit-key-456".into(),
        };
        for (c, secret) in [(&t, "sekrit-token-123"), (&k, "sekrit-key-456")] {
            let d = format!("{c:?} {c:#?}");
            assert!(!d.contains(secret), "{d}");
            assert!(d.contains("<redacted>"), "{d}");
        }
        assert!(!format!("{k:?}").contains("me@example.com"));
    }

    #[test]
    fn headers_are_sensitive_and_trimmed() {
        let h = Credentials::ApiToken("abc-def\n".into()).headers().unwrap();
        let v = h.get(AUTHORIZATION).unwrap();
        assert!(v.is_sensitive());
        assert_eq!(v, "Bearer abc-def");
        assert!(!format!("{h:?}").contains("abc-def"));

        let h = Credentials::ApiKey {
            email: "a@b.c".into(),
            key: "k123".into(),
        }
        .headers()
        .unwrap();
        assert_eq!(h.get("x-auth-email").unwrap(), "a@b.c");
        assert!(h.get("x-auth-key").unwrap().is_sensitive());

        assert!(Credentials::ApiToken("".into()).headers().is_err());
        let err = Credentials::ApiToken("a\u{7f}b-secret".into())
            .headers()
            .unwrap_err();
        assert!(!err.contains("secret"));
    }

    #[test]
    fn fingerprint_is_stable_and_discriminating() {
        let a = Credentials::ApiToken("t1".into());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_eq!(
            a.fingerprint(),
            Credentials::ApiToken("t1\n".into()).fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            Credentials::ApiToken("t2".into()).fingerprint()
        );
        let k = |e: &str, k: &str| Credentials::ApiKey {
            email: e.into(),
            key: k.into(),
        };
        assert_ne!(k("ab", "c").fingerprint(), k("a", "bc").fingerprint());
        assert_ne!(k("a", "t1").fingerprint(), a.fingerprint());
    }
}
