//! Why a mapping is not Ready: one enum, each variant with the reason a person reads and the
//! action the controller takes (wait for a change, or retry with backoff).

use crate::cloudflare::{self, ErrorKind};

/// What the controller does about a [`Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing will change until the object, its Secret or the zone changes: no retries.
    WaitForChange,
    /// The cause may pass by itself: retry with exponential backoff and jitter.
    Retry,
}

/// A reason a mapping cannot be made Ready, as shown in its `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The origin IP is not a single valid address.
    #[error("{0}")]
    InvalidOriginIp(String),
    /// Cloudflare does not offer the region for the vendor.
    #[error("{0}")]
    RegionNotSupported(String),
    /// The zone already holds its maximum number of mappings.
    #[error("zone {zone} holds the maximum number of origin mappings; delete unused mappings (of this or other tools) to make room")]
    ZoneLimitReached {
        /// Zone identifier.
        zone: String,
    },
    /// An older object claims the same zone and IP.
    #[error("origin IP {ip} of zone {zone} is already claimed by {winner}; only the oldest object is applied")]
    Conflict {
        /// Zone identifier.
        zone: String,
        /// Canonical IP.
        ip: String,
        /// namespace/name of the object that owns the IP.
        winner: String,
    },
    /// The referenced Secret does not exist.
    #[error(
        "Secret {namespace}/{name} not found; create it with key apiToken (or email and apiKey)"
    )]
    CredentialsMissing {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
    },
    /// The Secret exists but its keys are unusable.
    #[error("Secret {namespace}/{name}: {why}")]
    CredentialsInvalid {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// What is wrong (names the key, never its value).
        why: String,
    },
    /// The object references a Secret but the operator does not read per-object Secrets.
    #[error("credentialsSecretRef {name:?} is set but the operator was installed without per-namespace Secret access (--watch-secret-refs / helm value credentials.perNamespaceSecrets)")]
    SecretRefsDisabled {
        /// Name of the referenced Secret.
        name: String,
    },
    /// No Secret is referenced and the operator has no default credentials.
    #[error(
        "no credentialsSecretRef and the operator was started without --default-credentials-secret"
    )]
    NoCredentials,
    /// Cloudflare refused the credentials.
    #[error("Cloudflare refused the credentials: {0}; check the token's permissions (Zone > Cache Settings: Edit) and zone")]
    Unauthorized(String),
    /// Cloudflare rejected the request for another reason no retry can fix.
    #[error("Cloudflare rejected the mapping: {0}")]
    Rejected(String),
    /// Deleting the remote mapping failed; the object stays until it succeeds or is released.
    #[error("cannot delete remote mapping {ip} in zone {zone}: {why}; {}annotate originregions.io/force-orphan=\"true\" to release the object and leave the remote mapping", if *.retrying { "retrying; or " } else { "fix the cause, or " })]
    DeletionBlocked {
        /// Zone identifier.
        zone: String,
        /// Canonical IP.
        ip: String,
        /// The error.
        why: String,
        /// The cause may pass by itself (an outage): the operator keeps retrying.
        retrying: bool,
    },
    /// Cloudflare is unavailable or rate limiting; the operator is retrying.
    #[error("Cloudflare API unavailable, retrying: {0}")]
    CloudflareUnavailable(String),
    /// The object moved to another zone or IP; the old remote entry is released first.
    #[error(
        "releasing the previous remote mapping {ip} in zone {zone} before applying the new one"
    )]
    Moving {
        /// Previous zone.
        zone: String,
        /// Previous IP.
        ip: String,
    },
    /// The object moved away from a zone that cannot be read right now.
    #[error("cannot release the previous remote mapping {ip} in zone {zone} yet: {why}")]
    MoveBlocked {
        /// Previous zone.
        zone: String,
        /// Previous IP.
        ip: String,
        /// The error.
        why: String,
    },
    /// The zone cannot be read, and no retry will change that (a wrong or deleted zone).
    #[error("zone {zone} cannot be read: {why}; check spec.zoneId and the token's zone access")]
    ZoneNotFound {
        /// Zone identifier.
        zone: String,
        /// The error.
        why: String,
    },
    /// No CloudflareZone declares the zone, and the operator requires declarations.
    #[error("zone {zone} is not declared: a cluster admin must create a CloudflareZone with spec.zoneId {zone} before mappings may use it")]
    ZoneNotDeclared {
        /// Zone identifier.
        zone: String,
    },
    /// The zone's CloudflareZone does not admit the mapping's namespace.
    #[error("CloudflareZone {zone} does not admit namespace {namespace}: {rule}")]
    NamespaceNotAdmitted {
        /// CloudflareZone name.
        zone: String,
        /// The mapping's namespace.
        namespace: String,
        /// The zone's rule, in words.
        rule: String,
    },
    /// The mapping names a Secret of its namespace but the zone does not allow that.
    #[error("credentialsSecretRef {name:?} is set but CloudflareZone {zone} does not allow namespace credentials (spec.allowNamespaceCredentials); remove the reference to use the zone's credentials")]
    NamespaceCredentialsNotAllowed {
        /// CloudflareZone name.
        zone: String,
        /// The referenced Secret.
        name: String,
    },
    /// The referenced Secret does not carry the opt-in label (or does not exist).
    #[error("Secret {namespace}/{name} not found among Secrets labelled originregions.io/credentials=true; its owner must label it before mappings may use it")]
    SecretNotOptedIn {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
    },
    /// The entry exists in Cloudflare, no object owns it, and the zone refuses adoption.
    #[error("zone {zone} already maps {ip} (made outside this cluster) and its CloudflareZone's adoption policy is Never; delete the entry in Cloudflare, or set spec.adoption: Adopt")]
    AdoptionRefused {
        /// Zone identifier.
        zone: String,
        /// Canonical IP.
        ip: String,
    },
    /// The IP was just released by an object of another namespace and is held for it.
    #[error("origin IP {ip} of zone {zone} was released by a deleted object of namespace {namespace} and is held for that namespace for a minute (a replace); retrying")]
    Reserved {
        /// Zone identifier.
        zone: String,
        /// Canonical IP.
        ip: String,
        /// Namespace it is held for.
        namespace: String,
    },
    /// Another operator instance writes the zone.
    #[error(
        "zone {zone} is written by operator instance {writer}; this instance writes nothing to it"
    )]
    OtherWriter {
        /// Zone identifier.
        zone: String,
        /// The other instance.
        writer: String,
    },
    /// A Kubernetes write the operator needs before or after a remote write failed.
    #[error("writing {what} to Kubernetes failed, retrying: {why}")]
    KubernetesWriteFailed {
        /// What was being written (finalizer, ownership record, status).
        what: &'static str,
        /// The error.
        why: String,
    },
}

impl Problem {
    /// The `Ready` condition's reason: CamelCase, stable, something a person can search for.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::InvalidOriginIp(_) => "InvalidOriginIP",
            Problem::RegionNotSupported(_) => "RegionNotSupported",
            Problem::ZoneLimitReached { .. } => "ZoneLimitReached",
            Problem::Conflict { .. } => "Conflict",
            Problem::CredentialsMissing { .. } => "CredentialsMissing",
            Problem::CredentialsInvalid { .. } => "CredentialsInvalid",
            Problem::NoCredentials => "NoCredentials",
            Problem::SecretRefsDisabled { .. } => "SecretRefsDisabled",
            Problem::Unauthorized(_) => "CloudflareAuthFailed",
            Problem::Rejected(_) => "CloudflareRejected",
            Problem::DeletionBlocked { .. } => "DeletionBlocked",
            Problem::CloudflareUnavailable(_) => "CloudflareUnavailable",
            Problem::Moving { .. } => "Moving",
            Problem::MoveBlocked { .. } => "MoveBlocked",
            Problem::ZoneNotFound { .. } => "ZoneNotFound",
            Problem::KubernetesWriteFailed { .. } => "KubernetesWriteFailed",
            Problem::ZoneNotDeclared { .. } => "ZoneNotDeclared",
            Problem::NamespaceNotAdmitted { .. } => "NamespaceNotAdmitted",
            Problem::NamespaceCredentialsNotAllowed { .. } => "NamespaceCredentialsNotAllowed",
            Problem::SecretNotOptedIn { .. } => "SecretNotOptedIn",
            Problem::AdoptionRefused { .. } => "AdoptionRefused",
            Problem::OtherWriter { .. } => "OtherWriter",
            Problem::Reserved { .. } => "Reserved",
        }
    }

    /// Whether the controller retries on its own or waits for a change.
    pub fn action(&self) -> Action {
        match self {
            Problem::DeletionBlocked { retrying: true, .. } | Problem::Reserved { .. } => {
                Action::Retry
            }
            Problem::CloudflareUnavailable(_)
            | Problem::Moving { .. }
            | Problem::KubernetesWriteFailed { .. } => Action::Retry,
            _ => Action::WaitForChange,
        }
    }

    /// Maps a Cloudflare error kind (of a call or a batch item) about one mapping to a problem.
    pub fn from_kind(kind: ErrorKind, zone: &str, message: String) -> Problem {
        match kind {
            ErrorKind::InvalidIp => Problem::InvalidOriginIp(message),
            ErrorKind::ZoneLimit => Problem::ZoneLimitReached {
                zone: zone.to_string(),
            },
            ErrorKind::UnsupportedRegion => Problem::RegionNotSupported(message),
            ErrorKind::Unauthorized => Problem::Unauthorized(message),
            k if k.is_transient() => Problem::CloudflareUnavailable(message),
            _ => Problem::Rejected(message),
        }
    }

    /// Maps a whole-call client error to a problem.
    pub fn from_error(err: &cloudflare::Error) -> Problem {
        // An empty or cut-short body is BadResponse, yet retryable: the next answer may be whole.
        // Classifying it by kind alone made it a terminal CloudflareRejected (or DeletionBlocked).
        if err.is_retryable() {
            return Problem::CloudflareUnavailable(err.to_string());
        }
        Problem::from_kind(err.kind(), err.zone(), err.to_string())
    }

    /// Whether the problem is a remembered answer of Cloudflare to one write, worth not
    /// repeating until the object's generation or credentials change.
    pub fn is_remembered(&self) -> bool {
        matches!(
            self,
            Problem::Unauthorized(_)
                | Problem::Rejected(_)
                | Problem::InvalidOriginIp(_)
                | Problem::RegionNotSupported(_)
        )
    }

    /// Whether the problem is reported as a Warning Event (a move in progress is Normal).
    pub fn is_warning(&self) -> bool {
        !matches!(self, Problem::Moving { .. })
    }

    /// Maps a failed read of the whole zone (list) to a problem.
    pub fn from_list_error(err: &cloudflare::Error) -> Problem {
        match err.kind() {
            _ if err.is_retryable() => Problem::CloudflareUnavailable(err.to_string()),
            // 7000/7003: Cloudflare cannot route to the zone id; a bare 404: no such zone.
            _ if err.kind() == ErrorKind::NotFound || matches!(err.code(), Some(7000 | 7003)) => {
                Problem::ZoneNotFound {
                    zone: err.zone().to_string(),
                    why: err.to_string(),
                }
            }
            _ => Problem::from_error(err),
        }
    }

    /// The problem of a region the catalog does not list for the vendor.
    pub fn region_not_supported(vendor: &str, region: &str, supported: &[String]) -> Problem {
        Problem::RegionNotSupported(format!(
            "region {region:?} is not offered for vendor {vendor}; supported: {}",
            supported.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_kinds_retry_and_terminal_kinds_wait() {
        for kind in [
            ErrorKind::RateLimited,
            ErrorKind::Server,
            ErrorKind::Internal,
            ErrorKind::Transport,
        ] {
            assert_eq!(
                Problem::from_kind(kind, "z", "m".into()).action(),
                Action::Retry,
                "{kind:?}"
            );
        }
        for kind in [
            ErrorKind::InvalidIp,
            ErrorKind::ZoneLimit,
            ErrorKind::Unauthorized,
            ErrorKind::UnsupportedRegion,
            ErrorKind::BadRequest,
        ] {
            assert_eq!(
                Problem::from_kind(kind, "z", "m".into()).action(),
                Action::WaitForChange,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_truncated_body_is_transient_and_a_wrong_shape_is_not() {
        let decode = |truncated| cloudflare::Error::Decode {
            op: "put",
            zone: "z".into(),
            ip: None,
            status: 200,
            reason: "empty body".into(),
            truncated,
        };
        let p = Problem::from_error(&decode(true));
        assert_eq!(p.reason(), "CloudflareUnavailable");
        assert_eq!(p.action(), Action::Retry);
        let p = Problem::from_error(&decode(false));
        assert_eq!(p.reason(), "CloudflareRejected");
        assert_eq!(p.action(), Action::WaitForChange);
    }

    #[test]
    fn reasons_are_actionable() {
        let p = Problem::region_not_supported(
            "gcp",
            "us-central9",
            &["us-central1".to_string(), "us-east1".to_string()],
        );
        assert_eq!(p.reason(), "RegionNotSupported");
        assert_eq!(
            p.to_string(),
            "region \"us-central9\" is not offered for vendor gcp; supported: us-central1, us-east1"
        );
    }
}
