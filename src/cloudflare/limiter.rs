//! One client-side rate limiter per credential, shared by every [`super::Client`] built for
//! that credential.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Limiters keyed by credential fingerprint.
pub(crate) struct Limiters {
    quota: Quota,
    by_credential: Mutex<HashMap<u64, Arc<DefaultDirectRateLimiter>>>,
}

impl Limiters {
    /// At most `rate` requests in any window of `period`, as Cloudflare counts ("1,200 per 5
    /// minutes"). A cell bucket lets through at most `burst + period × refill` in any window,
    /// so the burst is a tenth of the rate and the refill the other nine tenths: a burst of
    /// `rate` refilled at `rate / period` (what this was) let twice the limit through in the
    /// first window and earned hundreds of 429s.
    pub(crate) fn new(rate: u32, period: Duration) -> Self {
        let rate = rate.max(1);
        let burst = NonZeroU32::new((rate / 10).max(1)).expect("max(1) is non-zero");
        let refill = (rate - burst.get()).max(1);
        let interval = (period / refill).max(Duration::from_nanos(1));
        let quota = Quota::with_period(interval)
            .expect("interval is non-zero")
            .allow_burst(burst);
        Limiters {
            quota,
            by_credential: Mutex::new(HashMap::new()),
        }
    }

    /// The limiter of one credential, created on first use.
    pub(crate) fn get(&self, fingerprint: u64) -> Arc<DefaultDirectRateLimiter> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still
        // usable, so recover rather than spread the panic.
        let mut map = self.by_credential.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(fingerprint)
            .or_insert_with(|| Arc::new(RateLimiter::direct(self.quota)))
            .clone()
    }
}

/// Waits for a cell; returns how long it waited, or `None` when a cell was free at once.
pub(crate) async fn acquire(limiter: &DefaultDirectRateLimiter) -> Option<Duration> {
    if limiter.check().is_ok() {
        return None;
    }
    let start = Instant::now();
    limiter.until_ready().await;
    Some(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_window_of_the_period_exceeds_the_rate() {
        // Cloudflare's limit, scaled down in time: 1,200 per second.
        let period = Duration::from_secs(1);
        let l = Limiters::new(1200, period);
        let limiter = l.get(1);
        let start = Instant::now();
        let mut admitted: Vec<Instant> = Vec::new();
        // As fast as the limiter allows for 2.5 periods, spinning on check() (no sleeps, so
        // the clock is the real one governor reads).
        while start.elapsed() < period * 5 / 2 {
            if limiter.check().is_ok() {
                admitted.push(Instant::now());
            }
        }
        let mut worst = 0;
        let mut lo = 0;
        for hi in 0..admitted.len() {
            while admitted[hi].duration_since(admitted[lo]) >= period {
                lo += 1;
            }
            worst = worst.max(hi - lo + 1);
        }
        assert!(
            worst <= 1200,
            "{worst} requests in one window of the period"
        );
        // And it does not starve: close to the rate over the whole run.
        assert!(
            admitted.len() >= 2400,
            "only {} in 2.5 periods",
            admitted.len()
        );
    }

    #[tokio::test]
    async fn shared_per_fingerprint_and_paced() {
        let l = Limiters::new(20, Duration::from_secs(2));
        assert!(Arc::ptr_eq(&l.get(1), &l.get(1)));
        assert!(!Arc::ptr_eq(&l.get(1), &l.get(2)));
        let a = l.get(7);
        assert_eq!(acquire(&a).await, None);
        assert_eq!(acquire(&a).await, None);
        let waited = acquire(&a).await.expect("third call must wait");
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        // Another credential is not slowed by the first one's spending.
        assert_eq!(acquire(&l.get(8)).await, None);
    }
}
