//! Which zone runs next, and when: changes first, then drift checks (full re-reads) paced by
//! what is left of each credential's Cloudflare budget.
//!
//! Writes and the reads they need are what users wait for, so a zone with a change is always
//! handed out before a zone that only needs a drift check. Drift checks then take a share of
//! each credential's request budget: when that share cannot cover every zone in one resync
//! interval, the interval stretches (oldest check first, so every zone is still checked) and
//! [`ZoneQueue::effective_resync`] says by how much. A zone's resync clock counts from its last
//! full read, or from its last write, since what the operator just wrote it knows; a zone
//! written without pause is still re-read within two intervals.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::reconciler::{DriftCost, ZoneOutcome};

/// The set of zones to reconcile, each with when it is due and when it next needs a full
/// re-read; a zone is handed to one worker at a time.
#[derive(Default)]
pub struct ZoneQueue {
    entries: Mutex<HashMap<String, Entry>>,
    budget: Mutex<Option<DriftBudget>>,
    notify: Notify,
}

#[derive(Default, Debug)]
struct Entry {
    due: Option<Instant>,
    resync_at: Option<Instant>,
    running: bool,
    /// First change of the burst now being gathered; bounds how long a burst can delay.
    burst_start: Option<Instant>,
    /// The last full read of the zone (or drift check started), and the spread factor drawn
    /// for it.
    last_read: Option<(Instant, f64)>,
    /// The last reconcile that wrote to Cloudflare.
    last_write: Option<Instant>,
    /// What the next drift check costs, and on whose budget.
    drift: Option<DriftCost>,
}

/// A burst of changes postpones a zone by at most this many debounce periods.
const MAX_BURST_DEBOUNCES: u32 = 5;

/// Drift checks' share of each credential's request budget, as a token bucket per
/// credential that may go into debt by one zone's cost (a 3,500-entry zone costs 36 calls,
/// more than a small bucket holds) and is paid back at the share's rate.
#[derive(Debug)]
pub struct DriftBudget {
    per_sec: f64,
    cap: f64,
    buckets: HashMap<u64, (f64, Instant)>,
}

impl DriftBudget {
    /// `share` (0..=1) of `rate` requests per `period`, per credential.
    pub fn new(rate: u32, period: Duration, share: f64) -> DriftBudget {
        let per_sec =
            f64::from(rate.max(1)) / period.as_secs_f64().max(1e-3) * share.clamp(0.01, 1.0);
        DriftBudget {
            per_sec,
            // Ten seconds' worth: enough to start a few checks at once, never a bunch.
            cap: (per_sec * 10.0).max(1.0),
            buckets: HashMap::new(),
        }
    }

    /// Drift-check calls per second allowed for one credential.
    pub fn per_sec(&self) -> f64 {
        self.per_sec
    }

    /// Takes `calls` from `credential`'s bucket when it is not in debt; otherwise says how
    /// long until it is.
    fn take(&mut self, credential: u64, calls: u32, now: Instant) -> Result<(), Duration> {
        let (per_sec, cap) = (self.per_sec, self.cap);
        let (tokens, at) = self.buckets.entry(credential).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(cap);
        *at = now;
        if *tokens > 0.0 {
            *tokens -= f64::from(calls);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((-*tokens + 1e-3) / per_sec))
        }
    }
}

impl ZoneQueue {
    /// A queue whose drift checks are paced by `budget`.
    pub fn with_budget(budget: DriftBudget) -> ZoneQueue {
        ZoneQueue {
            budget: Mutex::new(Some(budget)),
            ..ZoneQueue::default()
        }
    }

    /// Marks a zone due after `delay`. A zero delay is due at once; otherwise the delay is a
    /// trailing debounce: each change of a burst (a `kubectl apply` of many objects, a mass
    /// delete) pushes the zone back, so the burst becomes one plan and full batches, but never
    /// past `MAX_BURST_DEBOUNCES` delays after the burst's first change. A zone already due
    /// stays due.
    pub fn schedule(&self, zone: &str, delay: Duration) {
        let now = Instant::now();
        let at = now + delay;
        let mut entries = self.entries.lock().expect("queue lock");
        let e = entries.entry(zone.to_string()).or_default();
        e.due = Some(match e.due {
            None if delay.is_zero() => at,
            None => {
                e.burst_start = Some(now);
                at
            }
            Some(d) if d <= now || delay.is_zero() => d.min(at),
            Some(d) => {
                let cap = *e.burst_start.get_or_insert(now) + delay * MAX_BURST_DEBOUNCES;
                d.max(at).min(cap).max(now)
            }
        });
        drop(entries);
        self.notify.notify_waiters();
    }

    /// Waits for a zone to run that no worker holds; returns it and whether it is a drift
    /// check (a full re-read). A zone with a change comes before any drift check; a drift
    /// check waits for its credential's budget.
    pub async fn next(&self) -> (String, bool) {
        loop {
            let wait = {
                let mut entries = self.entries.lock().expect("queue lock");
                let mut budget = self.budget.lock().expect("budget lock");
                let now = Instant::now();
                // The earliest change, and the oldest drift check of a zone with no change.
                let mut change: Option<(&String, Instant)> = None;
                let mut drift: Option<(&String, Instant)> = None;
                for (zone, e) in entries.iter() {
                    if e.running {
                        continue;
                    }
                    let slot = match (e.due, e.resync_at) {
                        (Some(d), _) => Some((&mut change, d)),
                        (None, Some(r)) => Some((&mut drift, r)),
                        (None, None) => None,
                    };
                    if let Some((best, when)) = slot {
                        if best.is_none_or(|(_, t)| when < t) {
                            *best = Some((zone, when));
                        }
                    }
                }
                let mut wait = Duration::from_millis(250);
                let mut pick: Option<(String, bool)> = None;
                if let Some((zone, when)) = change {
                    if when <= now {
                        let e = &entries[zone];
                        // A change that is also due a drift check re-reads only if the
                        // budget allows; otherwise the check stays pending.
                        let refresh = e.resync_at.is_some_and(|t| t <= now)
                            && charge(&mut budget, e.drift, now).is_ok();
                        pick = Some((zone.clone(), refresh));
                    } else {
                        wait = wait.min(when - now);
                    }
                }
                if let (None, Some((zone, when))) = (&pick, drift) {
                    if when <= now {
                        match charge(&mut budget, entries[zone].drift, now) {
                            Ok(()) => pick = Some((zone.clone(), true)),
                            Err(w) => wait = wait.min(w.max(Duration::from_millis(10))),
                        }
                    } else {
                        wait = wait.min(when - now);
                    }
                }
                match pick {
                    Some((zone, refresh)) => {
                        let e = entries.get_mut(&zone).expect("entry just seen");
                        if refresh {
                            // Consumed: a retry after a failed resync is not another resync,
                            // and the clock restarts now whether or not the read succeeds.
                            e.resync_at = None;
                            e.last_read = Some((now, spread()));
                        }
                        e.running = true;
                        e.due = None;
                        e.burst_start = None;
                        return (zone, refresh);
                    }
                    None => wait,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.notify.notified() => {}
            }
        }
    }

    /// Releases a zone after a reconcile, learning from its outcome what it read, wrote and
    /// what its next drift check costs.
    pub fn finished(&self, zone: &str, outcome: &ZoneOutcome) {
        {
            let mut entries = self.entries.lock().expect("queue lock");
            if let Some(e) = entries.get_mut(zone) {
                let now = Instant::now();
                if outcome.listed {
                    e.last_read = Some((now, spread()));
                }
                if outcome.wrote {
                    e.last_write = Some(now);
                }
                if outcome.drift.is_some() {
                    e.drift = outcome.drift;
                }
            }
        }
        self.done(zone, outcome.requeue_after, outcome.refresh_next);
    }

    /// Releases a zone after a reconcile: `requeue_after` of `None` forgets it (unless it was
    /// marked again meanwhile); `resync` says the delay is the resync interval.
    pub fn done(&self, zone: &str, requeue_after: Option<Duration>, resync: bool) {
        let mut entries = self.entries.lock().expect("queue lock");
        let Some(e) = entries.get_mut(zone) else {
            return;
        };
        e.running = false;
        let now = Instant::now();
        match requeue_after {
            None if e.due.is_none() => {
                entries.remove(zone);
            }
            None => {}
            Some(interval) if resync => {
                e.resync_at = Some(match e.last_read {
                    Some((read, spread)) => {
                        let active = e.last_write.map_or(read, |w| w.max(read));
                        let next = (active + interval.mul_f64(spread)).min(read + interval * 2);
                        // A check already pending stays pending (the budget decides when).
                        match e.resync_at {
                            Some(t) if t <= now => t,
                            _ => next,
                        }
                    }
                    None => match e.resync_at {
                        Some(t) if t > now => t,
                        _ => now + interval,
                    },
                });
            }
            Some(d) => {
                let at = now + d;
                e.due = Some(e.due.map_or(at, |t| t.min(at)));
                // A retry's backoff holds whatever the resync schedule says: a resync already
                // due would otherwise hand the failing zone out again at once.
                if let Some(r) = e.resync_at.as_mut() {
                    *r = (*r).max(at);
                }
            }
        }
        drop(entries);
        self.notify.notify_waiters();
    }

    /// The resync interval the budget really allows: `configured`, or longer when one
    /// credential's drift checks of all its zones need more calls per interval than its share.
    pub fn effective_resync(&self, configured: Duration) -> Duration {
        // Same lock order as `next`: entries, then budget.
        let entries = self.entries.lock().expect("queue lock");
        let budget = self.budget.lock().expect("budget lock");
        let Some(b) = budget.as_ref() else {
            return configured;
        };
        let mut calls: HashMap<u64, u64> = HashMap::new();
        for d in entries.values().filter_map(|e| e.drift) {
            *calls.entry(d.credential).or_default() += u64::from(d.calls);
        }
        let needed = calls
            .values()
            .max()
            .map_or(0.0, |c| *c as f64 / b.per_sec());
        configured.max(Duration::from_secs_f64(needed))
    }

    /// Number of zones known to the queue.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("queue lock").len()
    }

    /// Whether no zone is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Spread: zones read together are not all due together again.
fn spread() -> f64 {
    0.8 + 0.2 * rand::random::<f64>()
}

/// Charges a drift check to its credential's budget (free when there is no budget, or the
/// cost is not known yet).
fn charge(
    budget: &mut Option<DriftBudget>,
    cost: Option<DriftCost>,
    now: Instant,
) -> Result<(), Duration> {
    match (budget.as_mut(), cost) {
        (Some(b), Some(c)) => b.take(c.credential, c.calls, now),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_zone_is_handed_out_once_until_done() {
        let q = ZoneQueue::default();
        q.schedule("a", Duration::ZERO);
        q.schedule("a", Duration::from_secs(5));
        let (z, refresh) = q.next().await;
        assert_eq!((z.as_str(), refresh), ("a", false));
        q.schedule("a", Duration::ZERO);
        // "a" is running, so a second worker gets nothing until done().
        let second = tokio::time::timeout(Duration::from_secs(1), q.next()).await;
        assert!(second.is_err());
        q.done("a", Some(Duration::from_secs(600)), true);
        let (z, refresh) = q.next().await;
        assert_eq!((z.as_str(), refresh), ("a", false));
        q.done("a", Some(Duration::from_secs(600)), true);
        let start = Instant::now();
        let (z, refresh) = q.next().await;
        assert_eq!((z.as_str(), refresh), ("a", true));
        assert!(start.elapsed() >= Duration::from_secs(590));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_gathered_but_never_postponed_past_the_cap() {
        let q = ZoneQueue::default();
        let debounce = Duration::from_millis(100);
        let start = Instant::now();
        // A change every 50 ms for 2 s: without a cap the zone would wait for all of them.
        let burst = async {
            for _ in 0..40 {
                q.schedule("z", debounce);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let (taken, _) = tokio::join!(
            async {
                q.next().await;
                start.elapsed()
            },
            burst
        );
        assert!(
            taken >= Duration::from_millis(150),
            "gathered the burst: {taken:?}"
        );
        assert!(taken <= debounce * MAX_BURST_DEBOUNCES, "capped: {taken:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_zone_keeps_its_backoff_after_the_resync_time_passed() {
        let q = ZoneQueue::default();
        q.schedule("z", Duration::ZERO);
        let _ = q.next().await;
        q.done("z", Some(Duration::from_secs(10)), true);
        // Resync due at 10 s; from then on every run fails and asks for 150 s of backoff.
        let start = Instant::now();
        let mut runs = 0;
        while start.elapsed() < Duration::from_secs(600) {
            let (_, _) = q.next().await;
            runs += 1;
            q.done("z", Some(Duration::from_secs(150)), false);
        }
        // 10 s, 160 s, 310 s, 460 s, 610 s: five runs, not one per poll.
        assert!(runs <= 5, "{runs} runs in 600 s with a 150 s backoff");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_come_back_after_the_delay_and_gone_zones_are_forgotten() {
        let q = ZoneQueue::default();
        q.schedule("b", Duration::ZERO);
        let _ = q.next().await;
        q.done("b", Some(Duration::from_secs(3)), false);
        let start = Instant::now();
        let _ = q.next().await;
        assert!(start.elapsed() >= Duration::from_secs(3));
        q.done("b", None, false);
        assert!(q.is_empty());
    }

    fn read(interval: Duration, cost: u32) -> ZoneOutcome {
        ZoneOutcome {
            requeue_after: Some(interval),
            refresh_next: true,
            listed: true,
            drift: Some(DriftCost {
                credential: 7,
                calls: cost,
            }),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_runs_before_any_drift_check_even_an_older_one() {
        let q = ZoneQueue::with_budget(DriftBudget::new(1200, Duration::from_secs(300), 0.5));
        for z in ["old", "new"] {
            q.schedule(z, Duration::ZERO);
            let _ = q.next().await;
            q.finished(z, &read(Duration::from_secs(10), 1));
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        // Both are overdue for a drift check; "new" also has a change, made after.
        q.schedule("new", Duration::ZERO);
        let (zone, refresh) = q.next().await;
        assert_eq!(zone, "new");
        // Its overdue check rides along (the budget has room).
        assert!(refresh);
        let (zone, refresh) = q.next().await;
        assert_eq!((zone.as_str(), refresh), ("old", true));
    }

    #[tokio::test(start_paused = true)]
    async fn drift_checks_take_their_share_and_every_zone_is_still_checked() {
        // 1,200 calls per 300 s, half for drift checks: 2 calls/s. 200 zones of 2 calls each
        // want 400 calls per 10 s interval, 20 times the share: the interval stretches to
        // 200 s, and checks are spread instead of bunched.
        let interval = Duration::from_secs(10);
        let q = ZoneQueue::with_budget(DriftBudget::new(1200, Duration::from_secs(300), 0.5));
        let zones: Vec<String> = (0..200).map(|i| format!("z{i:03}")).collect();
        for z in &zones {
            q.schedule(z, Duration::ZERO);
            let _ = q.next().await;
            q.finished(z, &read(interval, 2));
        }
        assert_eq!(q.effective_resync(interval), Duration::from_secs(200));
        let start = Instant::now();
        let mut checks: HashMap<String, u32> = HashMap::new();
        let mut per_window: HashMap<u64, u32> = HashMap::new();
        let mut changes_waited = Duration::ZERO;
        let mut n = 0u32;
        while start.elapsed() < Duration::from_secs(1000) {
            // Every 50th pass a change arrives: it must not wait for the drift checks.
            n += 1;
            if n.is_multiple_of(50) {
                q.schedule("z000", Duration::ZERO);
                let asked = Instant::now();
                let (zone, _) = q.next().await;
                assert_eq!(zone, "z000");
                changes_waited = changes_waited.max(asked.elapsed());
                q.finished(&zone, &read(interval, 2));
                continue;
            }
            let (zone, refresh) = q.next().await;
            assert!(refresh);
            *checks.entry(zone.clone()).or_default() += 1;
            *per_window
                .entry(start.elapsed().as_secs() / 10)
                .or_default() += 2;
            q.finished(&zone, &read(interval, 2));
        }
        assert_eq!(
            changes_waited,
            Duration::ZERO,
            "a change waited on the budget"
        );
        // Paced: never more than the share (20 calls per 10 s) plus the bucket's 10 s burst.
        let busiest = per_window.values().max().copied().unwrap_or(0);
        assert!(
            busiest <= 20 + 20 + 2,
            "{busiest} drift calls in one 10 s window"
        );
        // Every zone checked, each about once per stretched interval (1000 s / 200 s = 5).
        assert_eq!(checks.len(), zones.len(), "a zone was never checked");
        let (least, most) = (
            checks.values().min().copied().unwrap_or(0),
            checks.values().max().copied().unwrap_or(0),
        );
        assert!(
            least >= 3 && most <= 7,
            "checks per zone from {least} to {most}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_zone_just_written_needs_no_re_read_but_is_re_read_within_two_intervals() {
        let interval = Duration::from_secs(100);
        let q = ZoneQueue::default();
        q.schedule("z", Duration::ZERO);
        let _ = q.next().await;
        let start = Instant::now();
        q.finished("z", &read(interval, 1));
        // Written every 30 s: each write pushes the check back, up to two intervals after
        // the read.
        let mut first_check = None;
        while first_check.is_none() {
            let writing = start.elapsed() < Duration::from_secs(400);
            if writing {
                tokio::time::sleep(Duration::from_secs(30)).await;
                q.schedule("z", Duration::ZERO);
            }
            let (_, refresh) = q.next().await;
            if refresh {
                first_check = Some(start.elapsed());
            }
            let outcome = ZoneOutcome {
                requeue_after: Some(interval),
                refresh_next: true,
                wrote: true,
                ..Default::default()
            };
            q.finished("z", &outcome);
        }
        let at = first_check.unwrap();
        assert!(
            at > interval,
            "re-read {at:?} after the read though written since"
        );
        // (The test asks for work every 30 s, so the check runs at the first ask after it
        // fell due.)
        assert!(
            at <= interval * 2 + Duration::from_secs(30),
            "not re-read within two intervals: {at:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_drift_check_waits_a_whole_interval_before_the_next() {
        let interval = Duration::from_secs(60);
        let q = ZoneQueue::default();
        q.schedule("z", Duration::ZERO);
        let _ = q.next().await;
        q.finished("z", &read(interval, 1));
        let start = Instant::now();
        let mut checks = 0;
        while start.elapsed() < Duration::from_secs(600) {
            let (_, refresh) = q.next().await;
            assert!(refresh);
            checks += 1;
            // The read fails terminally (a deleted zone): nothing listed, resync as usual.
            let failed = ZoneOutcome {
                requeue_after: Some(interval),
                refresh_next: true,
                ..Default::default()
            };
            q.finished("z", &failed);
        }
        assert!(
            (9..=13).contains(&checks),
            "{checks} checks in 10 intervals"
        );
    }
}
