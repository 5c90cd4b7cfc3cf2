//! Injected faults, the sliding-window rate limiter, and the broken responses they produce.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde::{Deserialize, Serialize};

/// Faults applied to API requests (`PUT /__sim/faults`); missing fields are 0/false.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability of answering 429 with `Retry-After`.
    pub rate_429: f64,
    /// `Retry-After` seconds of injected 429s.
    pub retry_after_secs: u64,
    /// Probability of a plain 500 (code 10002).
    pub rate_500: f64,
    /// Probability of a 500 with code 1140.
    pub rate_1140: f64,
    /// Probability of closing the connection without a response.
    pub rate_drop: f64,
    /// Latency added to every API request, on top of `--latency-ms`.
    pub latency_ms: u64,
    /// Makes every DELETE (single, batch, legacy) fail 403 / 9109.
    pub refuse_deletes: bool,
    /// Probability of cutting a response body in half (after the request took effect).
    pub truncate_body_rate: f64,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            rate_429: 0.0,
            retry_after_secs: 1,
            rate_500: 0.0,
            rate_1140: 0.0,
            rate_drop: 0.0,
            latency_ms: 0,
            refuse_deletes: false,
            truncate_body_rate: 0.0,
        }
    }
}

impl Faults {
    /// Checks that every rate is a probability.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("rate_429", self.rate_429),
            ("rate_500", self.rate_500),
            ("rate_1140", self.rate_1140),
            ("rate_drop", self.rate_drop),
            ("truncate_body_rate", self.truncate_body_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        Ok(())
    }
}

/// Draws whether a fault of probability `p` fires; 0 and 1 never touch the RNG.
pub fn hit(p: f64) -> bool {
    if p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        rand::random::<f64>() < p
    }
}

/// A sliding-window limiter: at most `limit` admitted requests in any `window`.
#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    admitted: VecDeque<Instant>,
}

impl RateLimiter {
    /// A limiter admitting `limit` requests per `window`.
    pub fn new(limit: usize, window: Duration) -> RateLimiter {
        RateLimiter {
            limit,
            window,
            admitted: VecDeque::with_capacity(limit.min(4096)),
        }
    }

    /// Admits a request, or tells after how many whole seconds one slot frees up.
    ///
    /// Rejected requests do not use up the budget, so a client that backs off as told
    /// gets through.
    pub fn check(&mut self, now: Instant) -> Result<(), u64> {
        while let Some(&t) = self.admitted.front() {
            if now.duration_since(t) >= self.window {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
        if self.admitted.len() < self.limit {
            self.admitted.push_back(now);
            return Ok(());
        }
        let oldest = self.admitted.front().copied().unwrap_or(now);
        let wait = self.window.saturating_sub(now.duration_since(oldest));
        Err(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Forgets every admitted request.
    pub fn clear(&mut self) {
        self.admitted.clear();
    }
}

/// A response whose body fails before the first byte: hyper then closes the connection
/// without having written anything, so the client sees a dropped connection.
pub fn dropped() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("injected fault: drop connection"))
    });
    Response::new(Body::from_stream(stream))
}

/// Re-sends `resp` with its full `Content-Length` but only half the body, then aborts, so
/// the client sees a truncated body.
pub async fn truncated(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let stream = futures::stream::unfold(0u8, move |step| {
        let half = half.clone();
        async move {
            match step {
                0 => Some((Ok(half), 1)),
                1 => {
                    // Give hyper time to flush the head and the first half before aborting.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Some((
                        Err(std::io::Error::other("injected fault: truncated body")),
                        2,
                    ))
                }
                _ => None,
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_window() {
        let mut rl = RateLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(rl.check(t0).is_ok());
        assert!(rl.check(t0).is_ok());
        assert_eq!(rl.check(t0 + Duration::from_millis(500)), Err(10));
        assert_eq!(rl.check(t0 + Duration::from_secs(3)), Err(7));
        assert!(rl.check(t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn faults_parse_with_defaults() {
        let f: Faults = serde_json::from_str(r#"{"rate_429": 1.0}"#).unwrap();
        assert_eq!(f.retry_after_secs, 1);
        assert_eq!(f.rate_429, 1.0);
        assert!(serde_json::from_str::<Faults>(r#"{"rate_42": 1.0}"#).is_err());
        assert!(Faults {
            rate_500: 2.0,
            ..Faults::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn hit_edges() {
        assert!(!hit(0.0));
        assert!(hit(1.0));
    }
}
