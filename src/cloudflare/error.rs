//! The client's one error type, its classification into [`ErrorKind`], and the reading of
//! Cloudflare's error codes and batch-item messages.

use std::fmt;
use std::time::Duration;

use crate::wire::codes;

/// What kind of failure an [`Error`] is; the controller decides retry-or-wait on this alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The mapping does not exist (code 1142, or HTTP 404 without an error code).
    NotFound,
    /// Cloudflare rejected the origin IP (code 1146).
    InvalidIp,
    /// The vendor or region is not supported (codes 1156, 1157).
    UnsupportedRegion,
    /// The zone holds the maximum number of mappings (code 1164).
    ZoneLimit,
    /// A mapping for the IP already exists (code 1145, older create only).
    AlreadyExists,
    /// Credentials missing, wrong or lacking permission (401, 403, codes 9109, 10000).
    Unauthorized,
    /// Too many requests (HTTP 429, code 10013).
    RateLimited,
    /// Cloudflare's internal error updating the setting (code 1140).
    Internal,
    /// HTTP 5xx.
    Server,
    /// The request never got a complete response: connection error, reset or timeout.
    Transport,
    /// The response could not be understood (bad JSON, wrong shape, too large).
    BadResponse,
    /// Any other 4xx the server returned.
    BadRequest,
    /// The caller's input was refused before any request was made.
    InvalidInput,
}

impl ErrorKind {
    /// Whether trying the same request again later can succeed without anyone changing
    /// anything (the retry table in the module docs).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited | ErrorKind::Internal | ErrorKind::Server | ErrorKind::Transport
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A failed Cloudflare call. Every variant names the operation, zone and (when there is one)
/// IP; none ever carries a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Cloudflare answered with an error (non-2xx, or `success: false`).
    #[error("cloudflare {op} {}: HTTP {status}{}: {message}", target(zone, ip), code_text(*code))]
    Api {
        /// Operation name (list, get, put, delete, batch_put, batch_delete, supported_regions).
        op: &'static str,
        /// Zone identifier.
        zone: String,
        /// Canonical origin IP, for single-IP operations.
        ip: Option<String>,
        /// HTTP status.
        status: u16,
        /// First Cloudflare error code in the envelope, if any.
        code: Option<i64>,
        /// Cloudflare's error messages (or a short body excerpt when the body was not an
        /// envelope).
        message: String,
        /// Parsed `Retry-After` header (sent on some 503s).
        retry_after: Option<Duration>,
    },
    /// HTTP 429 (or code 10013): the credential is over its rate limit.
    #[error("cloudflare {op} {}: rate limited (HTTP {status}){}: {message}", target(zone, ip), retry_text(*retry_after))]
    RateLimited {
        /// Operation name.
        op: &'static str,
        /// Zone identifier.
        zone: String,
        /// Canonical origin IP, for single-IP operations.
        ip: Option<String>,
        /// HTTP status (normally 429).
        status: u16,
        /// How long the server asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
        /// Cloudflare's message, if any.
        message: String,
    },
    /// The request or response failed on the wire (connect, reset, dropped connection).
    #[error("cloudflare {op} {}: transport error: {message}", target(zone, ip))]
    Transport {
        /// Operation name.
        op: &'static str,
        /// Zone identifier.
        zone: String,
        /// Canonical origin IP, for single-IP operations.
        ip: Option<String>,
        /// The error chain as text (reqwest/hyper; holds URLs, never headers).
        message: String,
    },
    /// No complete response arrived within the request timeout (headers and body together).
    #[error(
        "cloudflare {op} {}: no complete response within {after:?}",
        target(zone, ip)
    )]
    Timeout {
        /// Operation name.
        op: &'static str,
        /// Zone identifier.
        zone: String,
        /// Canonical origin IP, for single-IP operations.
        ip: Option<String>,
        /// The timeout that expired.
        after: Duration,
    },
    /// The response arrived but could not be understood.
    #[error(
        "cloudflare {op} {}: bad response (HTTP {status}): {reason}",
        target(zone, ip)
    )]
    Decode {
        /// Operation name.
        op: &'static str,
        /// Zone identifier.
        zone: String,
        /// Canonical origin IP, for single-IP operations.
        ip: Option<String>,
        /// HTTP status of the response.
        status: u16,
        /// What was wrong with it.
        reason: String,
        /// True when the body was empty or ended mid-document, which a retry can fix; false
        /// for a complete body of the wrong shape, which a retry would only repeat.
        truncated: bool,
    },
    /// The caller's input was refused before any request was sent.
    #[error("cloudflare {op} {}: invalid input: {message}", target(zone, ip))]
    InvalidInput {
        /// Operation name.
        op: &'static str,
        /// Zone identifier.
        zone: String,
        /// The offending IP as given, when the IP was the problem.
        ip: Option<String>,
        /// What is wrong, naming the value.
        message: String,
    },
    /// The credentials cannot be sent at all (e.g. a control character in the token). The
    /// secret itself is never included.
    #[error("cloudflare {op} {}: unusable credentials: {reason}", target(zone, ip))]
    Credentials {
        /// Operation name.
        op: &'static str,
        /// Zone identifier.
        zone: String,
        /// Canonical origin IP, for single-IP operations.
        ip: Option<String>,
        /// Why, without the secret.
        reason: &'static str,
    },
}

fn target(zone: &str, ip: &Option<String>) -> String {
    match ip {
        Some(ip) => format!("zone {zone} ip {ip}"),
        None => format!("zone {zone}"),
    }
}

fn code_text(code: Option<i64>) -> String {
    code.map(|c| format!(" code {c}")).unwrap_or_default()
}

fn retry_text(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|d| format!(", retry after {}s", d.as_secs_f64()))
        .unwrap_or_default()
}

impl Error {
    /// The classification the controller acts on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Api { status, code, .. } => kind_for(*status, code.iter().copied()),
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::Transport { .. } | Error::Timeout { .. } => ErrorKind::Transport,
            Error::Decode { .. } => ErrorKind::BadResponse,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Credentials { .. } => ErrorKind::Unauthorized,
        }
    }

    /// Whether the same request may succeed later unchanged (the client already retried it
    /// up to `max_attempts`; the controller should requeue with backoff).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Decode { truncated, .. } => *truncated,
            other => other.kind().is_transient(),
        }
    }

    /// How long the server asked us to wait before the next call, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The operation that failed.
    pub fn op(&self) -> &'static str {
        match self {
            Error::Api { op, .. }
            | Error::RateLimited { op, .. }
            | Error::Transport { op, .. }
            | Error::Timeout { op, .. }
            | Error::Decode { op, .. }
            | Error::InvalidInput { op, .. }
            | Error::Credentials { op, .. } => op,
        }
    }

    /// The zone the failed call was about.
    pub fn zone(&self) -> &str {
        match self {
            Error::Api { zone, .. }
            | Error::RateLimited { zone, .. }
            | Error::Transport { zone, .. }
            | Error::Timeout { zone, .. }
            | Error::Decode { zone, .. }
            | Error::InvalidInput { zone, .. }
            | Error::Credentials { zone, .. } => zone,
        }
    }

    /// The IP the failed call was about, for single-IP operations.
    pub fn ip(&self) -> Option<&str> {
        match self {
            Error::Api { ip, .. }
            | Error::RateLimited { ip, .. }
            | Error::Transport { ip, .. }
            | Error::Timeout { ip, .. }
            | Error::Decode { ip, .. }
            | Error::InvalidInput { ip, .. }
            | Error::Credentials { ip, .. } => ip.as_deref(),
        }
    }

    /// The HTTP status, when a response arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. }
            | Error::RateLimited { status, .. }
            | Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Cloudflare's error code, when the response carried one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Error::Api { code, .. } => *code,
            _ => None,
        }
    }
}

/// The kind a Cloudflare error code stands for, if the code is one this client knows.
pub fn kind_of_code(code: i64) -> Option<ErrorKind> {
    Some(match code {
        codes::INTERNAL => ErrorKind::Internal,
        codes::NOT_FOUND => ErrorKind::NotFound,
        codes::ALREADY_EXISTS => ErrorKind::AlreadyExists,
        codes::INVALID_IP => ErrorKind::InvalidIp,
        codes::REGION_VALIDATION_FAILED | codes::UNKNOWN_VENDOR_OR_REGION => {
            ErrorKind::UnsupportedRegion
        }
        codes::ZONE_LIMIT => ErrorKind::ZoneLimit,
        // 9109: "Unauthorized to access requested resource"; 9103/9106/6003/6111: Cloudflare's
        // malformed/missing auth header codes; 10000: "Authentication error".
        9103 | 9106 | 9109 | 6003 | 6111 | codes::AUTH_ERROR => ErrorKind::Unauthorized,
        codes::RATE_LIMITED | 971 => ErrorKind::RateLimited,
        // 7000 "No route for that URI", 7003 "Could not route ... identifier is invalid": the
        // zone id is wrong. Must not read as NotFound, or a get on a bad zone would report
        // "no mapping" and a delete would count as done.
        7000 | 7003 | codes::BAD_REQUEST => ErrorKind::BadRequest,
        _ => return None,
    })
}

/// Classifies a response: the first known Cloudflare code wins, then the HTTP status.
/// A 404 is NotFound only when it carries no code at all (see [`kind_of_code`] for 7003).
pub fn kind_for(status: u16, codes: impl IntoIterator<Item = i64>) -> ErrorKind {
    let mut any_code = false;
    for code in codes {
        any_code = true;
        if let Some(kind) = kind_of_code(code) {
            return kind;
        }
    }
    match status {
        429 => ErrorKind::RateLimited,
        401 | 403 => ErrorKind::Unauthorized,
        404 if !any_code => ErrorKind::NotFound,
        500..=599 => ErrorKind::Server,
        400..=499 => ErrorKind::BadRequest,
        // `success: false` on a 2xx/3xx with no code we know: the body contradicts the status.
        _ => ErrorKind::BadResponse,
    }
}

/// Classifies the `error` text of a failed batch item (items carry no numeric code).
///
/// A Cloudflare code mentioned in the text ("(code 1157)", "1157: ...") wins; otherwise the
/// message texts of the API reference are matched; anything unrecognised is `BadRequest`.
pub fn classify_item_error(message: &str) -> ErrorKind {
    if let Some(kind) = mentioned_codes(message).find_map(kind_of_code) {
        return kind;
    }
    let m = message.to_ascii_lowercase();
    let has = |s: &str| m.contains(s);
    // Order matters: the internal-error and already-exists texts mention
    // "origin_public_cloud_region", so they are tested before the vendor/region texts.
    if has("maximum number of ip mappings") || (has("limit") && has("mapping")) {
        ErrorKind::ZoneLimit
    } else if has("internal error") {
        ErrorKind::Internal
    } else if has("already exists") {
        ErrorKind::AlreadyExists
    } else if (has("vendor")
        && (has("does not exist")
            || has("doesn't exist")
            || has("failed to validate")
            || has("not supported")
            || has("unsupported")
            || has("unknown")
            || has("invalid")
            || has("not valid")))
        || (has("region")
            && (has("unsupported")
                || has("not supported")
                || has("invalid region")
                || has("unknown region")))
    {
        ErrorKind::UnsupportedRegion
    } else if (has("ip") && (has("invalid") || has("missing") || has("malformed")))
        || has("not a valid ip")
        || ((has("origin_ip") || has("origin ip")) && has("does not match"))
    {
        ErrorKind::InvalidIp
    } else if has("not found")
        || has("does not exist")
        || has("doesn't exist")
        || has("no such")
        || has("no mapping")
        || (m.starts_with("no ") && has("exists"))
    {
        ErrorKind::NotFound
    } else if has("rate limit") || has("too many requests") {
        ErrorKind::RateLimited
    } else if has("authentication") || has("unauthorized") || has("forbidden") {
        ErrorKind::Unauthorized
    } else {
        ErrorKind::BadRequest
    }
}

/// Numbers of 3 to 5 digits standing alone in `message`. Words are split on anything but
/// alphanumerics, ':' and '.', so the groups of an IP address ("2001:db8::1140",
/// "10.0.11.40") never count as codes, while "1157:" and "1140." (punctuation) do.
fn mentioned_codes(message: &str) -> impl Iterator<Item = i64> + '_ {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':' || c == '.'))
        .map(|w| w.trim_end_matches([':', '.']))
        .filter(|w| (3..=5).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|w| w.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<i64>) -> Error {
        Error::Api {
            op: "put",
            zone: "z".into(),
            ip: Some("192.0.2.1".into()),
            status,
            code,
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn kind_for_each_code() {
        let table = [
            (400, Some(1140), ErrorKind::Internal, true),
            (500, Some(1140), ErrorKind::Internal, true),
            (404, Some(1142), ErrorKind::NotFound, false),
            (400, Some(1145), ErrorKind::AlreadyExists, false),
            (400, Some(1146), ErrorKind::InvalidIp, false),
            (400, Some(1156), ErrorKind::UnsupportedRegion, false),
            (400, Some(1157), ErrorKind::UnsupportedRegion, false),
            (403, Some(1164), ErrorKind::ZoneLimit, false),
            (403, Some(9109), ErrorKind::Unauthorized, false),
            (403, Some(10000), ErrorKind::Unauthorized, false),
            (401, Some(10000), ErrorKind::Unauthorized, false),
            (401, None, ErrorKind::Unauthorized, false),
            (403, None, ErrorKind::Unauthorized, false),
            (404, None, ErrorKind::NotFound, false),
            (404, Some(7003), ErrorKind::BadRequest, false),
            (404, Some(4242), ErrorKind::BadRequest, false),
            (400, Some(10001), ErrorKind::BadRequest, false),
            (429, None, ErrorKind::RateLimited, true),
            (400, Some(10013), ErrorKind::RateLimited, true),
            (500, None, ErrorKind::Server, true),
            (502, Some(4242), ErrorKind::Server, true),
            (503, None, ErrorKind::Server, true),
            (409, None, ErrorKind::BadRequest, false),
            (200, None, ErrorKind::BadResponse, false),
            (200, Some(4242), ErrorKind::BadResponse, false),
            (200, Some(1164), ErrorKind::ZoneLimit, false),
        ];
        for (status, code, kind, retry) in table {
            let e = api(status, code);
            assert_eq!(e.kind(), kind, "{status} {code:?}");
            assert_eq!(e.is_retryable(), retry, "{status} {code:?}");
        }
    }

    #[test]
    fn other_variants() {
        let rl = Error::RateLimited {
            op: "get",
            zone: "z".into(),
            ip: None,
            status: 429,
            retry_after: Some(Duration::from_secs(3)),
            message: String::new(),
        };
        assert_eq!(rl.kind(), ErrorKind::RateLimited);
        assert!(rl.is_retryable());
        assert_eq!(rl.retry_after(), Some(Duration::from_secs(3)));
        assert!(rl.to_string().contains("retry after 3s"), "{rl}");

        let dec = |truncated| Error::Decode {
            op: "list",
            zone: "z".into(),
            ip: None,
            status: 200,
            reason: "x".into(),
            truncated,
        };
        assert_eq!(dec(true).kind(), ErrorKind::BadResponse);
        assert!(dec(true).is_retryable());
        assert!(!dec(false).is_retryable());

        let t = Error::Timeout {
            op: "get",
            zone: "z".into(),
            ip: Some("::1".into()),
            after: Duration::from_secs(1),
        };
        assert_eq!(t.kind(), ErrorKind::Transport);
        assert!(t.is_retryable());
        assert!(t.to_string().contains("zone z ip ::1"), "{t}");

        let i = Error::InvalidInput {
            op: "get",
            zone: "z".into(),
            ip: Some("1.2.3".into()),
            message: "bad".into(),
        };
        assert_eq!(i.kind(), ErrorKind::InvalidInput);
        assert!(!i.is_retryable());
    }

    #[test]
    fn display_names_op_zone_ip_and_code() {
        let s = api(403, Some(1164)).to_string();
        assert_eq!(
            s,
            "cloudflare put zone z ip 192.0.2.1: HTTP 403 code 1164: m"
        );
    }

    #[test]
    fn item_errors_from_seed_texts() {
        let table = [
            (
                "Invalid or missing origin IP address.",
                ErrorKind::InvalidIp,
            ),
            (
                "The vendor provided doesn't exist or the region provided does not exist for \
                 the specified cloud vendor",
                ErrorKind::UnsupportedRegion,
            ),
            (
                "Failed to validate region against cloud vendor",
                ErrorKind::UnsupportedRegion,
            ),
            (
                "Maximum number of IP mappings configured for zone.",
                ErrorKind::ZoneLimit,
            ),
            (
                "Unable to update origin_public_cloud_region setting value. Internal error.",
                ErrorKind::Internal,
            ),
            (
                "Unable to create new origin_public_cloud_region setting. The zone setting \
                 already exists.",
                ErrorKind::AlreadyExists,
            ),
            ("mapping not found", ErrorKind::NotFound),
            ("no mapping for 192.0.2.1", ErrorKind::NotFound),
            (
                "No origin cloud region mapping exists for the specified IP.",
                ErrorKind::NotFound,
            ),
            ("region mapping does not exist", ErrorKind::NotFound),
            (
                "The origin_ip in the request body does not match the origin IP in the URL path.",
                ErrorKind::InvalidIp,
            ),
            ("unsupported region eu-mars-1", ErrorKind::UnsupportedRegion),
            (
                "invalid per_page parameter, must be between 1 and 100 (code 1146)",
                ErrorKind::InvalidIp,
            ),
            ("something odd (code 1157)", ErrorKind::UnsupportedRegion),
            ("1164: zone full", ErrorKind::ZoneLimit),
            ("error 1142", ErrorKind::NotFound),
            ("code 1140.", ErrorKind::Internal),
            ("Authentication error", ErrorKind::Unauthorized),
            ("totally unexpected", ErrorKind::BadRequest),
            ("", ErrorKind::BadRequest),
        ];
        for (msg, kind) in table {
            assert_eq!(classify_item_error(msg), kind, "{msg}");
        }
    }

    #[test]
    fn ip_groups_are_not_codes() {
        // IPv6 groups and IPv4 octets that happen to look like codes must not be read as
        // codes; the text decides.
        assert_eq!(
            classify_item_error("nothing stored for 1140::1164"),
            ErrorKind::BadRequest
        );
        assert_eq!(
            classify_item_error("weird 10.11.40.1"),
            ErrorKind::BadRequest
        );
        assert_eq!(
            classify_item_error("origin IP 1157::1 is invalid"),
            ErrorKind::InvalidIp
        );
    }
}
