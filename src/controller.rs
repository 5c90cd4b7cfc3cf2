//! Runs the operator: watches mappings and Secrets into caches, turns every change into a
//! "zone is dirty" mark, and lets a few workers reconcile dirty zones, never one zone twice at
//! once. The unit of work is the zone, so writes are batched per zone.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};

use crate::cached::MappingCache;
use crate::changes::Changes;
use crate::cloudflare::Clients;
use crate::crd::OriginCloudRegionMapping;
use crate::credentials::{CredentialSource, API_KEY_KEY, EMAIL_KEY, TOKEN_KEY};
use crate::metrics::Metrics;
use crate::ownership::{owned_zones, ObjectKey};
use crate::reconciler::{reconcile_zone, Context, Governance, Settings};
use crate::schedule::{DriftBudget, ZoneQueue};
use crate::tombstones::Tombstones;
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
    /// Each credential's Cloudflare budget (requests per period) and the share of it drift
    /// checks may use; `None` leaves drift checks unpaced.
    pub drift_budget: Option<(u32, Duration, f64)>,
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
    let queue = Arc::new(match config.drift_budget {
        Some((rate, period, share)) => {
            ZoneQueue::with_budget(DriftBudget::new(rate, period, share))
        }
        None => ZoneQueue::default(),
    });
    let mappings: Api<OriginCloudRegionMapping> = match &config.namespace {
        Some(ns) => Api::namespaced(kube.clone(), ns),
        None => Api::all(kube.clone()),
    };
    // The cache keeps the compact form; the task below feeds it, so each event is seen whole
    // (what changed, what a deletion left behind) before only the compact copy is kept.
    let store = MappingCache::default();
    let mut writer = store.writer();
    let mapping_events = watcher(mappings, watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut OriginCloudRegionMapping| strip_for_cache(&mut o.metadata));

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
        tombstones: Tombstones::default(),
        reporter,
        metrics: metrics.clone(),
        settings: config.settings.clone(),
        lease: config.lease.clone(),
        governance,
    });

    // Every mapping change marks the zones it names: its spec zone and the zones it owns. An
    // update that only echoes our own writes is no change; a (re-)list counts every object.
    let debounce = config.debounce;
    let q = queue.clone();
    let task_ctx = ctx.clone();
    let mapping_task = tokio::spawn(async move {
        let mut events = std::pin::pin!(mapping_events);
        let mut changes = Changes::default();
        while let Some(ev) = events.next().await {
            if let Ok(ev) = &ev {
                writer.apply(ev);
                if let WatchEvent::Apply(o) | WatchEvent::InitApply(o) = ev {
                    let uid = o.metadata.uid.as_deref().unwrap_or_default();
                    task_ctx
                        .zones
                        .cache_holds(uid, o.metadata.resource_version.as_deref());
                }
            }
            let o = match ev {
                Ok(WatchEvent::Apply(o)) if !changes.changed(&o) => continue,
                Ok(WatchEvent::Apply(o)) => o,
                Ok(WatchEvent::InitApply(o)) => {
                    changes.changed(&o);
                    o
                }
                Ok(WatchEvent::Delete(o)) => {
                    changes.forget(&o);
                    if task_ctx.tombstones.deleted(&o) {
                        tracing::warn!(object = %ObjectKey::of(&o), "deleted while the operator's finalizer was still on it (an apiserver race); releasing what it owned");
                    }
                    o
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "watching mappings failed; retrying");
                    continue;
                }
            };
            q.schedule(&o.spec.zone_id, debounce);
            for z in owned_zones(&o) {
                q.schedule(&z, debounce);
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
                        if creds.uses(o.namespace(), o.secret_ref(), &ns, &name) {
                            q.schedule(o.zone_id(), debounce);
                            for z in o.owned_zones() {
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
                    if o.namespace() == ns {
                        q.schedule(o.zone_id(), debounce);
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
        store.wait_until_ready().await;
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
    tracing::info!(objects = store.len(), "caches synced; reconciling");
    let interval_task = tokio::spawn(report_resync_interval(
        queue.clone(),
        metrics.clone(),
        config.settings.resync,
    ));

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
                    q.finished(&zone, &outcome);
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
    interval_task.abort();
    for t in secret_tasks.into_iter().chain(governance_tasks) {
        t.abort();
    }
}

/// Drops what no cache of ours reads: managedFields and kubectl's last-applied copy, which
/// together are roughly half of an object at thousands of objects.
pub fn strip_for_cache(meta: &mut kube::core::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
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

/// Publishes the resync interval the drift budget allows, and says so in the log whenever it
/// stretches past the configured one (or comes back).
async fn report_resync_interval(
    queue: Arc<ZoneQueue>,
    metrics: Arc<Metrics>,
    configured: Duration,
) {
    let mut told = configured;
    loop {
        let effective = queue.effective_resync(configured);
        metrics
            .resync_interval_effective
            .set(effective.as_secs_f64());
        let changed = effective.as_secs_f64() > told.as_secs_f64() * 1.1
            || effective.as_secs_f64() < told.as_secs_f64() * 0.9;
        if changed && effective > configured {
            tracing::warn!(
                configured_secs = configured.as_secs(),
                effective_secs = effective.as_secs(),
                zones = queue.len(),
                "drift checks of every zone need more Cloudflare calls per resync interval than \
                 their share of the budget: the resync interval is stretched"
            );
            told = effective;
        } else if changed {
            tracing::info!(
                configured_secs = configured.as_secs(),
                "resync interval back to the configured one"
            );
            told = effective;
        }
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
}
