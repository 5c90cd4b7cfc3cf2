//! What the operator remembers between reconciles of a zone: the remote snapshot (so steady
//! state makes no list calls), the supported-regions catalog, the retry backoff, and the
//! terminal errors that must not be retried until something changes.

use std::collections::{BTreeMap, HashMap};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Problem;
use crate::wire::{Mapping, SupportedRegions};

/// Remembered state of one zone.
#[derive(Debug, Default, Clone)]
pub struct ZoneState {
    /// Remote mappings by canonical IP, as last listed and then updated by our own writes.
    /// Shared with the reconcile that reads it (a zone of 3,500 entries is ~1 MB, and every
    /// reconcile takes a copy of the state); a write copies it only while that reader holds it.
    pub remote: Option<Arc<BTreeMap<String, Mapping>>>,
    /// Supported regions of the zone, when they could be read.
    pub catalog: Option<SupportedRegions>,
    /// When the catalog was last fetched (also after a failed fetch, to avoid hammering).
    pub catalog_at: Option<Instant>,
    /// Consecutive reconciles that ended in a transient error.
    pub failures: u32,
    /// Entries the zone held when Cloudflare refused a create as over its limit (code 1164):
    /// no create is sent while the snapshot is at least this full.
    pub capacity: Option<usize>,
    /// Credential fingerprints proven against this zone since the last full re-read.
    pub proven: std::collections::HashSet<u64>,
    /// Wall-clock time of the last full list (reported in the CloudflareZone's status).
    pub listed_wall: Option<jiff::Timestamp>,
    /// Why the catalog could not be read, when it could not (e.g. Tiered Cache off).
    pub catalog_error: Option<String>,
    /// IPs a deleted owner released, with its namespace and when: held for that namespace
    /// for [`RESERVATION`].
    pub released: HashMap<String, (String, Instant)>,
}

/// How long an IP released by a deleted owner stays with the owner's namespace.
pub const RESERVATION: Duration = Duration::from_secs(60);

impl ZoneState {
    /// The IPs still held for a namespace, by IP.
    pub fn reservations(&self) -> HashMap<String, String> {
        self.released
            .iter()
            .filter(|(_, (_, at))| at.elapsed() < RESERVATION)
            .map(|(ip, (ns, _))| (ip.clone(), ns.clone()))
            .collect()
    }
}

/// A terminal error remembered for one object until its generation or credentials change.
#[derive(Debug, Clone)]
pub struct TerminalMark {
    /// Generation the error was seen at.
    pub generation: i64,
    /// Credential fingerprint the error was seen with.
    pub fingerprint: u64,
    /// The error.
    pub problem: Problem,
}

/// All zones' state, and the terminal marks by object UID.
#[derive(Default)]
pub struct ZoneStates {
    zones: Mutex<HashMap<String, ZoneState>>,
    terminal: Mutex<HashMap<String, TerminalMark>>,
    /// UID → the versions our own writes produced and replaced, to spot a stale cache.
    written: Mutex<HashMap<String, Written>>,
}

/// Versions of one object around the operator's own writes.
#[derive(Debug, Default)]
struct Written {
    /// Versions that one of our writes replaced: a cache showing one of them is behind.
    superseded: Vec<String>,
    /// The version our latest write produced.
    last: String,
}

impl ZoneStates {
    /// A copy of a zone's state (default when unknown).
    pub fn get(&self, zone: &str) -> ZoneState {
        self.zones
            .lock()
            .expect("zone state lock")
            .get(zone)
            .cloned()
            .unwrap_or_default()
    }

    /// Replaces a zone's state.
    pub fn put(&self, zone: &str, state: ZoneState) {
        self.zones
            .lock()
            .expect("zone state lock")
            .insert(zone.to_string(), state);
    }

    /// Changes a zone's state in place (default state when unknown).
    pub fn update(&self, zone: &str, f: impl FnOnce(&mut ZoneState)) {
        f(self
            .zones
            .lock()
            .expect("zone state lock")
            .entry(zone.to_string())
            .or_default())
    }

    /// Forgets a zone's snapshot so the next reconcile lists it again.
    pub fn invalidate(&self, zone: &str) {
        if let Some(z) = self.zones.lock().expect("zone state lock").get_mut(zone) {
            z.remote = None;
        }
    }

    /// The remembered terminal problem of an object, if still current.
    pub fn terminal(&self, uid: &str, generation: i64, fingerprint: u64) -> Option<Problem> {
        let marks = self.terminal.lock().expect("terminal lock");
        marks
            .get(uid)
            .filter(|m| m.generation == generation && m.fingerprint == fingerprint)
            .map(|m| m.problem.clone())
    }

    /// Remembers a terminal problem of an object.
    pub fn mark_terminal(&self, uid: &str, mark: TerminalMark) {
        self.terminal
            .lock()
            .expect("terminal lock")
            .insert(uid.to_string(), mark);
    }

    /// Forgets terminal problems of the given objects (a resync gives them one more try).
    pub fn clear_terminal(&self, uids: &[String]) {
        let mut marks = self.terminal.lock().expect("terminal lock");
        for uid in uids {
            marks.remove(uid);
        }
    }

    /// Records that our write moved an object from `before` (as we saw it) to `after`. A write
    /// the server found to be a no-op (same version) supersedes nothing, since no newer
    /// version will come.
    pub fn note_write(&self, uid: &str, before: Option<String>, after: Option<String>) {
        let Some(after) = after else { return };
        let mut written = self.written.lock().expect("writes lock");
        let w = written.entry(uid.to_string()).or_insert_with(|| Written {
            superseded: Vec::new(),
            last: after.clone(),
        });
        let previous = std::mem::replace(&mut w.last, after.clone());
        for v in [before, Some(previous)].into_iter().flatten() {
            if v != after && !w.superseded.contains(&v) {
                w.superseded.push(v);
            }
        }
    }

    /// The watch cache now holds `version` of `uid`: forgets our writes to it once the cache
    /// has caught up with them. Without this the record of every object written stayed until
    /// its zone's next reconcile, which with nothing to change is the next resync: ~10 MB for
    /// 35,000 objects, held at the busiest time.
    pub fn cache_holds(&self, uid: &str, version: Option<&str>) {
        self.cache_is_behind(uid, version.map(String::from));
    }

    /// Whether the cached object is older than our latest write to it; forgets the record once
    /// the cache has caught up.
    ///
    /// Versions are compared as Kubernetes defines it (comparable resource versions, stable
    /// since 1.35): a cache can show a version that none of our writes replaced and that is
    /// still older than our last write (another client's change we have not seen yet, made
    /// after we read the object and before we wrote it), and planning on it would undo our
    /// write. When a server's versions are not comparable, the versions our writes replaced
    /// are all we can recognise.
    pub fn cache_is_behind(&self, uid: &str, cached: Option<String>) -> bool {
        let mut written = self.written.lock().expect("writes lock");
        let Some(w) = written.get(uid) else {
            return false;
        };
        let behind = match &cached {
            Some(v) => match compare_versions(v, &w.last) {
                Some(order) => order == std::cmp::Ordering::Less,
                None => w.superseded.contains(v),
            },
            None => false,
        };
        if !behind {
            written.remove(uid);
        }
        behind
    }
}

/// Orders two resource versions of one resource the way Kubernetes defines it: both must be
/// positive decimal integers without leading zeros (of any length); `None` otherwise.
pub fn compare_versions(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let valid =
        |v: &str| !v.is_empty() && !v.starts_with('0') && v.bytes().all(|c| c.is_ascii_digit());
    (valid(a) && valid(b)).then(|| a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
}

/// Longest server-requested wait honoured (Cloudflare's rate-limit window is 5 minutes); a
/// larger `Retry-After` (up to u64::MAX seconds) would overflow the scheduler's `Instant`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Backoff before retrying a zone after `failures` transient errors in a row: exponential from
/// 1 s to 5 min with full jitter in the upper half, and never shorter than `retry_after`
/// (capped at [`MAX_RETRY_AFTER`]).
pub fn backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1u32 << failures.min(9).saturating_sub(1));
    let capped = base.min(Duration::from_secs(300));
    let jitter = rand::random::<f64>() * 0.5 + 0.5;
    capped
        .mul_f64(jitter)
        .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        assert!(backoff(1, None) <= Duration::from_secs(1));
        assert!(backoff(1, None) >= Duration::from_millis(500));
        assert!(backoff(5, None) >= Duration::from_secs(8));
        assert!(backoff(30, None) <= Duration::from_secs(300));
        assert!(backoff(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        assert_eq!(
            backoff(1, Some(Duration::from_secs(u64::MAX))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn the_cache_is_behind_until_it_shows_a_version_past_our_write() {
        let s = ZoneStates::default();
        s.note_write("u", Some("5".into()), Some("6".into()));
        assert!(s.cache_is_behind("u", Some("5".into())));
        assert!(!s.cache_is_behind("u", Some("6".into())));
        assert!(
            !s.cache_is_behind("u", Some("5".into())),
            "forgotten once caught up"
        );
        // A no-op write (version unchanged) must never make the cache look behind forever.
        s.note_write("v", Some("7".into()), Some("7".into()));
        assert!(!s.cache_is_behind("v", Some("7".into())));
        // Two writes in one reconcile (finalizer, then status), both computed from version 1:
        // the version between them is behind too.
        s.note_write("w", Some("1".into()), Some("2".into()));
        s.note_write("w", Some("1".into()), Some("3".into()));
        assert!(s.cache_is_behind("w", Some("1".into())));
        assert!(s.cache_is_behind("w", Some("2".into())));
        assert!(!s.cache_is_behind("w", Some("3".into())));
    }

    #[test]
    fn our_writes_are_forgotten_as_soon_as_the_watch_shows_them() {
        let s = ZoneStates::default();
        s.note_write("u", Some("5".into()), Some("6".into()));
        s.note_write("v", Some("5".into()), Some("7".into()));
        s.cache_holds("u", Some("5"));
        assert!(
            s.cache_is_behind("u", Some("5".into())),
            "5 is still older than our 6"
        );
        s.cache_holds("u", Some("6"));
        s.cache_holds("v", Some("8"));
        assert!(s.written.lock().unwrap().is_empty());
        // An echo seen before the write's answer is noted: the next reconcile forgets it.
        s.cache_holds("w", Some("9"));
        s.note_write("w", Some("8".into()), Some("9".into()));
        assert!(!s.cache_is_behind("w", Some("9".into())));
    }

    #[test]
    fn a_version_older_than_our_write_is_behind_even_if_no_write_of_ours_replaced_it() {
        // We read version 10 and wrote 12; meanwhile another client made 11 (a deletion, say).
        // A cache showing 11 has not seen our write: planning on it would drop what we wrote.
        let s = ZoneStates::default();
        s.note_write("u", Some("10".into()), Some("12".into()));
        assert!(s.cache_is_behind("u", Some("11".into())));
        assert!(s.cache_is_behind("u", Some("9".into())));
        assert!(!s.cache_is_behind("u", Some("13".into())));
        assert!(
            !s.cache_is_behind("u", Some("11".into())),
            "forgotten once caught up"
        );
        // Longer is newer, whatever the digits.
        s.note_write("v", Some("99".into()), Some("100".into()));
        assert!(s.cache_is_behind("v", Some("99".into())));
        assert!(!s.cache_is_behind("v", Some("100".into())));
        // Versions that are not comparable fall back to the ones our writes replaced.
        s.note_write("w", Some("a".into()), Some("c".into()));
        assert!(s.cache_is_behind("w", Some("a".into())));
        assert!(!s.cache_is_behind("w", Some("b".into())));
    }

    #[test]
    fn versions_compare_as_kubernetes_defines() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("9", "10"), Some(Less));
        assert_eq!(compare_versions("123", "123"), Some(Equal));
        assert_eq!(compare_versions("124", "123"), Some(Greater));
        for bad in ["", "0", "012", "12a", "-1", " 1"] {
            assert_eq!(compare_versions(bad, "1"), None, "{bad:?}");
            assert_eq!(compare_versions("1", bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn version_order_is_the_integer_order(a in 1u128.., b in 1u128..) {
            proptest::prop_assert_eq!(
                compare_versions(&a.to_string(), &b.to_string()),
                Some(a.cmp(&b))
            );
        }
    }

    #[test]
    fn terminal_marks_expire_with_generation_or_credentials() {
        let s = ZoneStates::default();
        let p = Problem::NoCredentials;
        s.mark_terminal(
            "u",
            TerminalMark {
                generation: 2,
                fingerprint: 9,
                problem: p.clone(),
            },
        );
        assert_eq!(s.terminal("u", 2, 9), Some(p));
        assert_eq!(s.terminal("u", 3, 9), None);
        assert_eq!(s.terminal("u", 2, 8), None);
        s.clear_terminal(&["u".into()]);
        assert_eq!(s.terminal("u", 2, 9), None);
    }
}
