//! Finds the Cloudflare credentials of a mapping: its own Secret (`credentialsSecretRef`, same
//! namespace) or the operator-wide Secret given at start.
//!
//! Secret keys: `apiToken`, or `email` + `apiKey`. When both a token and a key are present the
//! token wins (tokens are scoped; a global key is not). Values are trimmed, so a Secret made
//! with `kubectl create secret --from-file` (trailing newline) works.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

use crate::cloudflare::Credentials;
use crate::crd::OriginCloudRegionMapping;
use crate::error::Problem;
use crate::zone::{CloudflareZone, CREDENTIALS_LABEL};

/// Keys of a credentials Secret.
pub const TOKEN_KEY: &str = "apiToken";
/// Account email key of a credentials Secret (with [`API_KEY_KEY`]).
pub const EMAIL_KEY: &str = "email";
/// Global API key key of a credentials Secret (with [`EMAIL_KEY`]).
pub const API_KEY_KEY: &str = "apiKey";

/// Where credentials come from, backed by watched Secret caches.
#[derive(Clone)]
pub struct CredentialSource {
    /// The operator-wide Secret, `(namespace, name)`.
    pub default_secret: Option<(String, String)>,
    /// Cache of the operator-wide Secret (a single-object watch).
    pub default_store: Option<Store<Secret>>,
    /// Cache of Secrets mappings may name: every Secret of the watched namespaces (undeclared
    /// zones), or only those labelled [`crate::zone::CREDENTIALS_LABEL`] (declared zones);
    /// `None` when per-object Secrets are disabled.
    pub ref_store: Option<Store<Secret>>,
    /// With declared zones: the operator's namespace and the cache of its Secrets, where
    /// CloudflareZones' credentials live.
    pub zone_secrets: Option<(String, Store<Secret>)>,
}

/// Credentials resolved for one object, with the Secret they came from.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The credentials.
    pub credentials: Credentials,
    /// Stable per-process fingerprint, to notice rotation.
    pub fingerprint: u64,
}

impl CredentialSource {
    /// Resolves the credentials an object uses, or the problem that stops it.
    pub fn resolve(&self, obj: &OriginCloudRegionMapping) -> Result<Resolved, Problem> {
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let (namespace, name, store) = match &obj.spec.credentials_secret_ref {
            Some(r) => match &self.ref_store {
                Some(store) => (ns, r.name.clone(), store),
                None => {
                    return Err(Problem::SecretRefsDisabled {
                        name: r.name.clone(),
                    })
                }
            },
            None => match (&self.default_secret, &self.default_store) {
                (Some((n, s)), Some(store)) => (n.clone(), s.clone(), store),
                _ => return Err(Problem::NoCredentials),
            },
        };
        let secret: Option<Arc<Secret>> = store.get(&ObjectRef::new(&name).within(&namespace));
        let secret = secret.ok_or_else(|| Problem::CredentialsMissing {
            namespace: namespace.clone(),
            name: name.clone(),
        })?;
        resolved(&secret, namespace, name)
    }

    /// Resolves the credentials an object uses against a declared zone: its own Secret only
    /// when the zone allows namespace credentials and the Secret opted in; otherwise the
    /// zone's Secret, or the operator-wide one.
    pub fn resolve_in(
        &self,
        zone: &CloudflareZone,
        obj: &OriginCloudRegionMapping,
    ) -> Result<Resolved, Problem> {
        let Some(r) = &obj.spec.credentials_secret_ref else {
            return self.resolve_zone(zone);
        };
        if !zone.spec.allow_namespace_credentials {
            return Err(Problem::NamespaceCredentialsNotAllowed {
                zone: zone.name_any(),
                name: r.name.clone(),
            });
        }
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let opted_in =
            |s: &Secret| s.labels().get(CREDENTIALS_LABEL).map(String::as_str) == Some("true");
        let secret = self
            .ref_store
            .as_ref()
            .and_then(|store| store.get(&ObjectRef::new(&r.name).within(&ns)))
            .filter(|s| opted_in(s))
            .ok_or_else(|| Problem::SecretNotOptedIn {
                namespace: ns.clone(),
                name: r.name.clone(),
            })?;
        resolved(&secret, ns, r.name.clone())
    }

    /// The credentials a declared zone itself is read and written with.
    pub fn resolve_zone(&self, zone: &CloudflareZone) -> Result<Resolved, Problem> {
        let Some(r) = &zone.spec.credentials_secret_ref else {
            return self.resolve_default();
        };
        let Some((ns, store)) = &self.zone_secrets else {
            return Err(Problem::NoCredentials);
        };
        let secret = store
            .get(&ObjectRef::new(&r.name).within(ns))
            .ok_or_else(|| Problem::CredentialsMissing {
                namespace: ns.clone(),
                name: r.name.clone(),
            })?;
        resolved(&secret, ns.clone(), r.name.clone())
    }

    fn resolve_default(&self) -> Result<Resolved, Problem> {
        let (Some((ns, name)), Some(store)) = (&self.default_secret, &self.default_store) else {
            return Err(Problem::NoCredentials);
        };
        let secret = store.get(&ObjectRef::new(name).within(ns)).ok_or_else(|| {
            Problem::CredentialsMissing {
                namespace: ns.clone(),
                name: name.clone(),
            }
        })?;
        resolved(&secret, ns.clone(), name.clone())
    }

    /// Whether a Secret event concerns the credentials of an object in `obj_namespace` naming
    /// `secret_ref` (its spec's credentialsSecretRef).
    pub fn uses(
        &self,
        obj_namespace: &str,
        secret_ref: Option<&str>,
        namespace: &str,
        name: &str,
    ) -> bool {
        match secret_ref {
            Some(r) => obj_namespace == namespace && r == name,
            None => self
                .default_secret
                .as_ref()
                .is_some_and(|(n, s)| n == namespace && s == name),
        }
    }
}

fn resolved(secret: &Secret, namespace: String, name: String) -> Result<Resolved, Problem> {
    let credentials = from_secret(secret).map_err(|why| Problem::CredentialsInvalid {
        namespace,
        name,
        why,
    })?;
    Ok(Resolved {
        fingerprint: credentials.fingerprint(),
        credentials,
    })
}

/// Reads credentials from a Secret's data; the error names the key, never a value.
pub fn from_secret(secret: &Secret) -> Result<Credentials, String> {
    let data = secret.data.as_ref();
    let read = |key: &str| -> Result<Option<String>, String> {
        match data.and_then(|d| d.get(key)) {
            None => Ok(None),
            Some(bytes) => {
                let text = std::str::from_utf8(&bytes.0)
                    .map_err(|_| format!("key {key} is not valid UTF-8"))?;
                let text = text.trim();
                if text.is_empty() {
                    Err(format!("key {key} is empty"))
                } else {
                    Ok(Some(text.to_string()))
                }
            }
        }
    };
    // Tokens and keys are printable ASCII; anything else would be sent as raw header bytes and
    // come back as a puzzling "authentication error" instead of naming the key.
    let printable = |key: &str, value: &str| {
        if value.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(())
        } else {
            Err(format!(
                "key {key} contains whitespace, control or non-ASCII characters"
            ))
        }
    };
    if let Some(token) = read(TOKEN_KEY)? {
        printable(TOKEN_KEY, &token)?;
        return Ok(Credentials::ApiToken(token));
    }
    match (read(EMAIL_KEY)?, read(API_KEY_KEY)?) {
        (Some(email), Some(key)) => {
            printable(API_KEY_KEY, &key)?;
            Ok(Credentials::ApiKey { email, key })
        }
        (Some(_), None) => Err(format!(
            "key {EMAIL_KEY} is set but {API_KEY_KEY} is missing"
        )),
        (None, Some(_)) => Err(format!(
            "key {API_KEY_KEY} is set but {EMAIL_KEY} is missing"
        )),
        (None, None) => Err(format!(
            "no key {TOKEN_KEY} (or {EMAIL_KEY} and {API_KEY_KEY}) in the Secret"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn token_is_trimmed_and_wins_over_a_key() {
        let s = secret(&[
            ("apiToken", b"tok-123\n"),
            ("email", b"a@b.c"),
            ("apiKey", b"k"),
        ]);
        assert_eq!(from_secret(&s), Ok(Credentials::ApiToken("tok-123".into())));
    }

    #[test]
    fn email_and_key_pair() {
        let s = secret(&[("email", b"a@b.c"), ("apiKey", b"key-1")]);
        assert_eq!(
            from_secret(&s),
            Ok(Credentials::ApiKey {
                email: "a@b.c".into(),
                key: "key-1".into()
            })
        );
    }

    #[test]
    fn bad_secrets_name_the_key_and_never_the_value() {
        let cases: Vec<(Secret, &str)> = vec![
            (secret(&[]), "no key apiToken"),
            (secret(&[("apiToken", b"")]), "key apiToken is empty"),
            (secret(&[("apiToken", b"  \n")]), "key apiToken is empty"),
            (
                secret(&[("apiToken", &[0xff, 0xfe, 0x41])]),
                "not valid UTF-8",
            ),
            (secret(&[("apiToken", b"ab cd-secretish")]), "whitespace"),
            (
                secret(&[("apiToken", "t\u{f6}k-secretish".as_bytes())]),
                "key apiToken contains whitespace, control or non-ASCII",
            ),
            (
                secret(&[
                    ("email", b"a@b.c"),
                    ("apiKey", "k\u{e9}y-secretish".as_bytes()),
                ]),
                "key apiKey contains whitespace, control or non-ASCII",
            ),
            (secret(&[("email", b"a@b.c")]), "apiKey is missing"),
            (secret(&[("apiKey", b"secretish-key")]), "email is missing"),
            (Secret::default(), "no key apiToken"),
        ];
        for (s, want) in cases {
            let err = from_secret(&s).unwrap_err();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(!err.contains("secretish"), "{err:?} leaks the value");
        }
    }
}
