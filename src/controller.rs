//! Runs the operator: watches mappings and Secrets into caches, turns every change into a
//! "zone is dirty" mark, and lets a few workers reconcile dirty zones, never one zone twice at
//! once. The unit of work is the zone, so writes are batched per zone.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cloudflare::Clients;
use crate::crd::OriginCloudRegionMapping;
use crate::credentials::{CredentialSource, API_KEY_KEY, EMAIL_KEY, TOKEN_KEY};
use crate::metrics::Metrics;
use crate::ownership::owned_zones;
use crate::reconciler::{reconcile_zone, Context, Governance, Settings};
use crate::zone::{CloudflareZone, CREDENTIALS_LABEL};
use crate::zone_state::ZoneStates;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Operator-wide credentials Secret, `(namespace, name)`.
    pub default_secret: Option<(String, String)>,
    /// Read Secrets named by `credentialsSecretRef` (needs list/watch on Secrets).
    pub watch_secret_refs: bool,
    /// Zones reconciled at once.
    pub workers: usize,
    /// Wait after a change before reconciling, so a burst of changes becomes one plan.
    pub debounce: Duration,
    /// Reconciler tunables.
    pub settings: Settings,
    /// Name reported on Events.
    pub reporter: String,
    /// With leader election: the check made before every Cloudflare write.
    pub lease: Option<crate::leader::LeaseGuard>,
    /// Zones must be declared by CloudflareZones; `None` maps any zone.
    pub governance: Option<ZoneGovernance>,
    /// How long zones in flight may take to finish after shutdown before they are stopped.
    pub shutdown_grace: Duration,
}

/// How declared zones are run.
#[derive(Debug, Clone)]
pub struct ZoneGovernance {
    /// The operator's namespace, where the zones' credential Secrets live.
    pub operator_namespace: String,
    /// The name this installation claims zones under.
    pub instance: String,
}

/// Runs until `shutdown` resolves, then finishes in-flight zones and returns.
pub async fn run(
    kube: kube::Client,
    clients: Clients,
    metrics: Arc<Metrics>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) {
    let queue = Arc::new(ZoneQueue::default());
    let mappings: Api<OriginCloudRegionMapping> = match &config.namespace {
        Some(ns) => Api::namespaced(kube.clone(), ns),
        None => Api::all(kube.clone()),
    };
    let (store, writer) = reflector::store();
    let mapping_events = watcher(mappings, watcher::Config::default())
        .default_backoff()
        // The cache never needs managedFields or kubectl's last-applied copy; dropping them
        // roughly halves memory at thousands of objects.
        .modify(|o: &mut OriginCloudRegionMapping| {
            o.metadata.managed_fields = None;
            if let Some(a) = o.metadata.annotations.as_mut() {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        })
        .reflect(writer);

    let (default_store, default_events) = match &config.default_secret {
        Some((ns, name)) => {
            let api: Api<Secret> = Api::namespaced(kube.clone(), ns);
            let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let (s, w) = reflector::store();
            (Some(s), Some(secret_stream(api, cfg, w)))
        }
        None => (None, None),
    };
    let (ref_store, ref_events) = if config.watch_secret_refs {
        let api: Api<Secret> = match &config.namespace {
            Some(ns) => Api::namespaced(kube.clone(), ns),
            None => Api::all(kube.clone()),
        };
        // With declared zones only Secrets their owners opted in are read at all.
        let cfg = match &config.governance {
            Some(_) => watcher::Config::default().labels(&format!("{CREDENTIALS_LABEL}=true")),
            None => watcher::Config::default(),
        };
        let (s, w) = reflector::store();
        (Some(s), Some(secret_stream(api, cfg, w)))
    } else {
        (None, None)
    };
    let (zone_secret_store, zone_secret_events) = match &config.governance {
        Some(g) => {
            let api: Api<Secret> = Api::namespaced(kube.clone(), &g.operator_namespace);
            let (s, w) = reflector::store();
            (
                Some(s),
                Some(secret_stream(api, watcher::Config::default(), w)),
            )
        }
        None => (None, None),
    };
    let creds = CredentialSource {
        default_secret: config.default_secret.clone(),
        default_store: default_store.clone(),
        ref_store: ref_store.clone(),
        zone_secrets: config
            .governance
            .as_ref()
            .zip(zone_secret_store.clone())
            .map(|(g, s)| (g.operator_namespace.clone(), s)),
    };
    let (zone_store, zone_writer) = reflector::store::<CloudflareZone>();
    let (ns_store, ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let governance = config.governance.as_ref().map(|g| Governance {
        zones: zone_store.clone(),
        namespaces: ns_store.clone(),
        instance: g.instance.clone(),
        claim_stale_after: (config.settings.resync * 3).max(Duration::from_secs(60)),
        all_namespaces: config.namespace.is_none(),
    });
    let reporter = Reporter {
        controller: "origin-region-operator".into(),
        instance: Some(config.reporter.clone()),
    };
    let ctx = Arc::new(Context {
        kube,
        clients,
        store: store.clone(),
        creds: creds.clone(),
        zones: ZoneStates::default(),
        reporter,
        metrics: metrics.clone(),
        settings: config.settings.clone(),
        lease: config.lease.clone(),
        governance,
    });

    // Every mapping event marks the zones it names: its spec zone and the zone it owns.
    let debounce = config.debounce;
    let q = queue.clone();
    let mapping_task = tokio::spawn(async move {
        let mut events = std::pin::pin!(mapping_events);
        while let Some(ev) = events.next().await {
            match ev {
                Ok(WatchEvent::Apply(o) | WatchEvent::Delete(o) | WatchEvent::InitApply(o)) => {
                    q.schedule(&o.spec.zone_id, debounce);
                    for z in owned_zones(&o) {
                        q.schedule(&z, debounce);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watching mappings failed; retrying"),
            }
        }
    });
    let secret_tasks: Vec<_> = [default_events, ref_events]
        .into_iter()
        .flatten()
        .map(|events| {
            let (q, store, creds) = (queue.clone(), store.clone(), creds.clone());
            tokio::spawn(async move {
                let mut events = std::pin::pin!(events);
                while let Some(ev) = events.next().await {
                    let secret = match ev {
                        Ok(
                            WatchEvent::Apply(s) | WatchEvent::Delete(s) | WatchEvent::InitApply(s),
                        ) => s,
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "watching Secrets failed; retrying");
                            continue;
                        }
                    };
                    let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
                    for o in store.state() {
                        if creds.uses(&o, &ns, &name) {
                            q.schedule(&o.spec.zone_id, debounce);
                            for z in owned_zones(&o) {
                                q.schedule(&z, debounce);
                            }
                        }
                    }
                }
            })
        })
        .collect();

    let mut governance_tasks = Vec::new();
    if config.governance.is_some() {
        // A zone's change (or its Secret's) re-plans that zone; a namespace's label change
        // re-plans the zones its mappings name.
        let zones_api: Api<CloudflareZone> = Api::all(ctx.kube.clone());
        let zone_events = kube::runtime::watcher(zones_api, watcher::Config::default())
            .default_backoff()
            .reflect(zone_writer);
        let q = queue.clone();
        governance_tasks.push(tokio::spawn(async move {
            let mut events = std::pin::pin!(zone_events);
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(WatchEvent::Apply(z) | WatchEvent::Delete(z) | WatchEvent::InitApply(z)) => {
                        q.schedule(&z.spec.zone_id, debounce)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "watching CloudflareZones failed; retrying")
                    }
                }
            }
        }));
        let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(ctx.kube.clone());
        let ns_events = kube::runtime::watcher(ns_api, watcher::Config::default())
            .default_backoff()
            .reflect(ns_writer);
        let (q, mappings) = (queue.clone(), store.clone());
        governance_tasks.push(tokio::spawn(async move {
            let mut events = std::pin::pin!(ns_events);
            while let Some(ev) = events.next().await {
                let ns = match ev {
                    Ok(WatchEvent::Apply(n) | WatchEvent::Delete(n)) => n.name_any(),
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching Namespaces failed; retrying");
                        continue;
                    }
                };
                for o in mappings.state() {
                    if o.metadata.namespace.as_deref() == Some(ns.as_str()) {
                        q.schedule(&o.spec.zone_id, debounce);
                    }
                }
            }
        }));
        if let Some(events) = zone_secret_events {
            let (q, zones) = (queue.clone(), zone_store.clone());
            governance_tasks.push(tokio::spawn(async move {
                let mut events = std::pin::pin!(events);
                while let Some(ev) = events.next().await {
                    if ev.is_ok() {
                        for z in zones.state() {
                            q.schedule(&z.spec.zone_id, debounce);
                        }
                    }
                }
            }));
        }
    }

    // Caches must be complete before planning, or a missing object would look deleted.
    let governed = config.governance.is_some();
    let ready = async {
        let _ = store.wait_until_ready().await;
        for s in [&default_store, &ref_store, &zone_secret_store]
            .into_iter()
            .flatten()
        {
            let _ = s.wait_until_ready().await;
        }
        if governed {
            let _ = zone_store.wait_until_ready().await;
            let _ = ns_store.wait_until_ready().await;
        }
    };
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        _ = ready => {}
        _ = &mut shutdown => return,
    }
    metrics.set_ready(true);
    tracing::info!(objects = store.state().len(), "caches synced; reconciling");

    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..config.workers.max(1))
        .map(|_| {
            let (ctx, q, stop, stopping) =
                (ctx.clone(), queue.clone(), stop.clone(), stopping.clone());
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        n = q.next() => n,
                        _ = stop.notified() => return,
                    };
                    if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let (zone, refresh) = next;
                    let outcome = reconcile_zone(&ctx, &zone, refresh).await;
                    tracing::debug!(zone, ?outcome, "zone reconciled");
                    for z in &outcome.wake {
                        q.schedule(z, Duration::ZERO);
                    }
                    q.done(&zone, outcome.requeue_after, outcome.refresh_next);
                }
            })
        })
        .collect();
    shutdown.await;
    let grace = config.shutdown_grace;
    tracing::info!(?grace, "shutting down: finishing zones in flight");
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    stop.notify_waiters();
    // A zone whose Cloudflare calls are backing off could hold the process (and a new
    // leader waiting for the Lease) for minutes. Stopping it mid-reconcile is safe: every
    // entry it may have written is already in its object's write-ahead record, which the
    // next leader reads.
    let aborts: Vec<_> = workers.iter().map(|w| w.abort_handle()).collect();
    if tokio::time::timeout(grace, futures::future::join_all(workers))
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "zones still in flight after the shutdown grace (Cloudflare retrying?); stopping them"
        );
        for a in aborts {
            a.abort();
        }
    }
    mapping_task.abort();
    for t in secret_tasks.into_iter().chain(governance_tasks) {
        t.abort();
    }
}

/// Watches Secrets into a cache, keeping only the credential keys so memory stays small.
fn secret_stream(
    api: Api<Secret>,
    cfg: watcher::Config,
    writer: reflector::store::Writer<Secret>,
) -> impl Stream<Item = Result<WatchEvent<Secret>, watcher::Error>> + Send + 'static {
    watcher(api, cfg)
        .default_backoff()
        .modify(|s: &mut Secret| {
            s.metadata.managed_fields = None;
            s.metadata.annotations = None;
            s.string_data = None;
            if let Some(d) = s.data.as_mut() {
                d.retain(|k, _| [TOKEN_KEY, EMAIL_KEY, API_KEY_KEY].contains(&k.as_str()));
            }
        })
        .reflect(writer)
        .map_err(|e| e)
}

fn watcher<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> impl Stream<Item = Result<WatchEvent<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    kube::runtime::watcher(api, cfg)
}

/// The set of zones to reconcile, each with when it is due and when it next needs a full
/// re-read; a zone is handed to one worker at a time.
#[derive(Default)]
pub struct ZoneQueue {
    entries: Mutex<HashMap<String, Entry>>,
    notify: Notify,
}

#[derive(Default, Debug)]
struct Entry {
    due: Option<Instant>,
    resync_at: Option<Instant>,
    running: bool,
    /// First change of the burst now being gathered; bounds how long a burst can delay.
    burst_start: Option<Instant>,
}

/// A burst of changes postpones a zone by at most this many debounce periods.
const MAX_BURST_DEBOUNCES: u32 = 5;

impl ZoneQueue {
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

    /// Waits for a due zone that no worker holds; returns it and whether it is a resync.
    pub async fn next(&self) -> (String, bool) {
        loop {
            let wait = {
                let mut entries = self.entries.lock().expect("queue lock");
                let now = Instant::now();
                let mut best: Option<(&String, Instant)> = None;
                for (zone, e) in entries.iter() {
                    if e.running {
                        continue;
                    }
                    let when = match (e.due, e.resync_at) {
                        (Some(a), Some(b)) => a.min(b),
                        (a, b) => match a.or(b) {
                            Some(t) => t,
                            None => continue,
                        },
                    };
                    if best.is_none_or(|(_, t)| when < t) {
                        best = Some((zone, when));
                    }
                }
                match best {
                    Some((zone, when)) if when <= now => {
                        let zone = zone.clone();
                        let e = entries.get_mut(&zone).expect("entry just seen");
                        let refresh = e.resync_at.is_some_and(|t| t <= now);
                        if refresh {
                            // Consumed: a retry after a failed resync is not another resync.
                            e.resync_at = None;
                        }
                        e.running = true;
                        e.due = None;
                        e.burst_start = None;
                        return (zone, refresh);
                    }
                    Some((_, when)) => (when - now).min(Duration::from_millis(250)),
                    None => Duration::from_millis(250),
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.notify.notified() => {}
            }
        }
    }

    /// Releases a zone after a reconcile: `requeue_after` of `None` forgets it (unless it was
    /// marked again meanwhile); `resync` says the delay is until the next full re-read.
    pub fn done(&self, zone: &str, requeue_after: Option<Duration>, resync: bool) {
        let mut entries = self.entries.lock().expect("queue lock");
        let Some(e) = entries.get_mut(zone) else {
            return;
        };
        e.running = false;
        match requeue_after {
            None if e.due.is_none() => {
                entries.remove(zone);
            }
            None => {}
            Some(d) if resync => {
                let at = Instant::now() + d;
                if e.resync_at.is_none_or(|t| t <= Instant::now()) {
                    e.resync_at = Some(at);
                }
            }
            Some(d) => {
                let at = Instant::now() + d;
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

    /// Number of zones known to the queue.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("queue lock").len()
    }

    /// Whether no zone is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
