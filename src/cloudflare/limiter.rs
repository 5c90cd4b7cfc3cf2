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
    /// `rate` requests per `period`: a steady replenish of one cell every `period / rate`
    /// with a burst of `rate`, which is how Cloudflare's "1,200 per 5 minutes" window behaves
    /// at worst (a full window spent at once, then a steady trickle).
    pub(crate) fn new(rate: u32, period: Duration) -> Self {
        let burst = NonZeroU32::new(rate.max(1)).expect("max(1) is non-zero");
        let interval = (period / burst.get()).max(Duration::from_nanos(1));
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

    #[tokio::test]
    async fn shared_per_fingerprint_and_paced() {
        let l = Limiters::new(2, Duration::from_millis(200));
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
