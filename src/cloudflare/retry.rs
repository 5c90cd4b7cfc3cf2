//! Backoff policy and `Retry-After` handling.

use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::{ClientConfig, Error};

/// The longest `Retry-After` the client sleeps through itself. A longer one (Cloudflare's
/// window is 5 minutes) is returned to the caller at once as `RateLimited` with
/// `retry_after`, so a reconcile worker is not parked for minutes; the controller requeues.
pub const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Exponential backoff with jitter; `max_attempts` counts the first try.
pub(crate) fn backoff(config: &ClientConfig) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(config.min_backoff)
        .with_max_delay(config.max_backoff)
        .with_max_times(config.max_attempts.saturating_sub(1))
}

/// The delay before the next attempt: backon's proposal (None once attempts are spent)
/// capped at `max_backoff` (backon's jitter can add up to 100%), raised to at least the
/// server's `Retry-After`.
pub(crate) fn next_delay(
    config: &ClientConfig,
    err: &Error,
    proposed: Option<Duration>,
) -> Option<Duration> {
    let delay = proposed?.min(config.max_backoff);
    match err.retry_after() {
        Some(ra) if ra > MAX_INLINE_RETRY_AFTER.max(config.max_backoff) => None,
        Some(ra) => Some(delay.max(ra)),
        None => Some(delay),
    }
}

/// Parses `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = raw.parse::<f64>() {
        // Not allowed by the RFC, but some proxies send "1.5"; negative or NaN is garbage.
        // try_: "1e300" or "NaN" must not panic (from_secs_f64 would).
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(raw)
        .ok()?;
    let when = SystemTime::from(when);
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(&headers("7")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after(&headers(" 0 ")), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(&headers("1.5")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after(&headers("-3")), None);
        assert_eq!(parse_retry_after(&headers("1e300")), None);
        assert_eq!(parse_retry_after(&headers("NaN")), None);
        assert_eq!(parse_retry_after(&headers("soon")), None);
        assert_eq!(parse_retry_after(&HeaderMap::new()), None);
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        let future = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let text = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&future)
            .unwrap();
        let d = parse_retry_after(&headers(&text)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }

    #[test]
    fn delay_honours_retry_after_and_caps() {
        let cfg = ClientConfig {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..ClientConfig::default()
        };
        let rl = |secs| Error::RateLimited {
            op: "get",
            zone: "z".into(),
            ip: None,
            status: 429,
            retry_after: Some(Duration::from_secs(secs)),
            message: String::new(),
        };
        let p = Some(Duration::from_millis(90));
        assert_eq!(next_delay(&cfg, &rl(2), p), Some(Duration::from_secs(2)));
        assert_eq!(next_delay(&cfg, &rl(3600), p), None);
        assert_eq!(next_delay(&cfg, &rl(2), None), None);
        let t = Error::Timeout {
            op: "get",
            zone: "z".into(),
            ip: None,
            after: Duration::from_secs(1),
        };
        assert_eq!(next_delay(&cfg, &t, p), Some(Duration::from_millis(50)));
    }
}
