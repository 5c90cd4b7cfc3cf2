//! Reconciles one zone: read the objects that name it, make sure the remote snapshot and
//! catalog are known, plan, release old entries in batches, upsert in batches, then write each
//! object's status, Events and finalizer from the per-item results.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::cloudflare::{classify_item_error, Client, Clients, ErrorKind};
use crate::crd::{
    DeletionPolicy, OriginCloudRegionMapping, OriginCloudRegionMappingStatus, FINALIZER, READY,
};
use crate::credentials::{CredentialSource, Resolved};
use crate::error::{Action, Problem};
use crate::metrics::Metrics;
use crate::planner::{plan_zone, ObjectView, Release, Step, UpsertKind, ZonePlan};
use crate::wire::{Mapping, MappingInput, MAX_BATCH};
use crate::zone_state::{backoff, TerminalMark, ZoneStates};

/// Field manager of every write the operator makes.
pub const MANAGER: &str = "origin-region-operator";

/// Tunables of the reconciler.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Full re-read of each zone (drift repair) this often.
    pub resync: Duration,
    /// How long a supported-regions catalog is trusted.
    pub catalog_ttl: Duration,
    /// Kubernetes writes in flight at once.
    pub kube_concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(600),
            catalog_ttl: Duration::from_secs(600),
            kube_concurrency: 32,
        }
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub kube: kube::Client,
    /// Cloudflare client factory.
    pub clients: Clients,
    /// Cache of every watched mapping object.
    pub store: Store<OriginCloudRegionMapping>,
    /// Credentials lookup.
    pub creds: CredentialSource,
    /// Per-zone memory.
    pub zones: ZoneStates,
    /// Who publishes Events (controller and instance names).
    pub reporter: Reporter,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Tunables.
    pub settings: Settings,
}

/// What the scheduler should do after a zone reconcile.
#[derive(Debug, Default)]
pub struct ZoneOutcome {
    /// Run this zone again after this long; `None` when no object names the zone any more.
    pub requeue_after: Option<Duration>,
    /// Force a fresh list on the next run.
    pub refresh_next: bool,
    /// Other zones that must run now (an object moved between zones).
    pub wake: Vec<String>,
}

/// Result of the release of one object's previously owned entry.
type ReleaseResult = Result<(), Problem>;

/// The final word on one object after the writes.
enum Verdict {
    Ready {
        ip: String,
        wrote: Option<UpsertKind>,
        adopted: bool,
    },
    NotReady {
        problem: Problem,
        owned: Option<(String, String)>,
    },
    Finalize {
        released: Option<bool>,
    },
    Untouched,
}

/// Reconciles `zone`; `refresh` forces a fresh list of the remote state (resync).
pub async fn reconcile_zone(ctx: &Context, zone: &str, refresh: bool) -> ZoneOutcome {
    let objects: Vec<Arc<OriginCloudRegionMapping>> = ctx
        .store
        .state()
        .into_iter()
        .filter(|o| o.spec.zone_id == zone || owned_zone(o) == Some(zone))
        .collect();
    if objects.is_empty() {
        ctx.metrics.set_zone_mappings(zone, 0, 0);
        return ZoneOutcome::default();
    }
    // Planning on a cache that has not yet seen our last status writes would take our own
    // entries for strangers (a spurious "Adopted" and a second status write): wait for it.
    if objects.iter().any(|o| {
        ctx.zones
            .cache_is_behind(&o.uid().unwrap_or_default(), o.resource_version())
    }) {
        return ZoneOutcome {
            requeue_after: Some(Duration::from_millis(100)),
            refresh_next: false,
            wake: vec![],
        };
    }
    if refresh {
        let uids: Vec<String> = objects.iter().filter_map(|o| o.uid()).collect();
        ctx.zones.clear_terminal(&uids);
    }
    // An object whose finalizer could not be added (e.g. the apiserver is down) gets no
    // remote write yet: deleted before the next attempt, it would vanish without cleanup and
    // orphan what was written. The zone retries with backoff.
    let unguarded = ensure_finalizers(ctx, &objects).await;

    let resolved: HashMap<String, Result<Resolved, Problem>> = objects
        .iter()
        .map(|o| (key_of(o), ctx.creds.resolve(o)))
        .collect();

    // One credential that works lists the zone; writes use each object's own credential.
    let mut state = ctx.zones.get(zone);
    if refresh {
        state.remote = None;
    }
    let listers: Vec<&Resolved> = {
        let mut seen = HashSet::new();
        objects
            .iter()
            .filter_map(|o| resolved[&key_of(o)].as_ref().ok())
            .filter(|r| seen.insert(r.fingerprint))
            .collect()
    };
    let mut unauthorized: HashMap<u64, Problem> = HashMap::new();
    if state.remote.is_none() {
        for lister in &listers {
            let client = ctx.clients.client(lister.credentials.clone());
            match client.list_all(zone).await {
                Ok(list) => {
                    state.remote =
                        Some(list.into_iter().map(|m| (m.origin_ip.clone(), m)).collect());
                    state.listed_at = Some(Instant::now());
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Unauthorized => {
                    unauthorized.insert(lister.fingerprint, Problem::from_error(&e));
                }
                Err(e) => {
                    tracing::warn!(zone, error = %e, "listing the zone failed; will retry");
                    let problem = Problem::from_error(&e);
                    return fail_transient(ctx, zone, &objects, problem, e.retry_after()).await;
                }
            }
        }
    }
    let catalog_stale = state
        .catalog_at
        .is_none_or(|t| t.elapsed() >= ctx.settings.catalog_ttl)
        || refresh;
    if catalog_stale {
        if let Some(lister) = listers
            .iter()
            .find(|l| !unauthorized.contains_key(&l.fingerprint))
        {
            let client = ctx.clients.client(lister.credentials.clone());
            match client.supported_regions(zone).await {
                Ok(c) => state.catalog = Some(c),
                // Without a catalog, Cloudflare still validates each write; the colos are
                // just not reported.
                Err(e) => tracing::info!(zone, error = %e, "supported regions unavailable"),
            }
            state.catalog_at = Some(Instant::now());
        }
    }
    let remote_known = state.remote.is_some();
    let remote = state.remote.clone().unwrap_or_default();
    ctx.zones.put(zone, state.clone());

    // Build the planner's view; objects without usable credentials are blocked, and without a
    // known remote state nothing is released.
    let mut views = Vec::with_capacity(objects.len());
    let mut verdicts: HashMap<String, Verdict> = HashMap::new();
    for o in &objects {
        let key = key_of(o);
        if unguarded.contains(&key) {
            continue;
        }
        let cred = match &resolved[&key] {
            Ok(r) => unauthorized.get(&r.fingerprint).cloned().map_or(Ok(r), Err),
            Err(p) => Err(p.clone()),
        };
        let deleting = o.metadata.deletion_timestamp.is_some();
        if deleting && o.force_orphan() {
            verdicts.insert(
                key,
                Verdict::Finalize {
                    released: Some(false),
                },
            );
            continue;
        }
        let cred_problem = cred.as_ref().err().cloned();
        let problem = match cred {
            Ok(r) if !deleting => {
                ctx.zones
                    .terminal(&o.uid().unwrap_or_default(), generation(o), r.fingerprint)
            }
            Ok(_) => None,
            Err(p) => Some(p),
        };
        if !remote_known || (deleting && cred_problem.is_some()) {
            // Nothing can be released safely: say why and wait. (Without a known remote state
            // some credential problem is always the cause: a working one would have listed.)
            let p = problem.clone().unwrap_or(Problem::NoCredentials);
            let owned = owned_entry(o);
            let p = match (deleting, &owned) {
                (true, Some((z, ip))) if o.spec.deletion_policy == DeletionPolicy::Delete => {
                    Problem::DeletionBlocked {
                        zone: z.clone(),
                        ip: ip.clone(),
                        why: p.to_string(),
                    }
                }
                // Nothing recorded to clean up: release it rather than trap it behind a
                // credential that may never be fixed.
                (true, _) => {
                    verdicts.insert(key, Verdict::Finalize { released: None });
                    continue;
                }
                _ => p,
            };
            verdicts.insert(key, Verdict::NotReady { problem: p, owned });
            continue;
        }
        views.push(view_of(o, problem));
    }

    let plan = plan_zone(zone, &views, &remote, state.catalog.as_ref());
    let by_key: HashMap<String, &Arc<OriginCloudRegionMapping>> =
        objects.iter().map(|o| (key_of(o), o)).collect();
    let client_of = |key: &str| -> Option<(u64, Client)> {
        let r = resolved.get(key)?.as_ref().ok()?;
        Some((r.fingerprint, ctx.clients.client(r.credentials.clone())))
    };

    let mut retry_after: Option<Duration> = None;
    let mut transient = !unguarded.is_empty();
    let releases = run_deletes(ctx, zone, &plan, &client_of, &mut retry_after).await;
    let upserts = run_upserts(ctx, zone, &plan, &releases, &client_of, &mut retry_after).await;

    let mut wake = Vec::new();
    for p in &plan.objects {
        let o = by_key[&p.key];
        let released: Option<ReleaseResult> = match &p.release {
            None => None,
            Some(Release::Forget) => Some(Ok(())),
            Some(Release::Delete(_)) => releases.get(&p.key).cloned().or(Some(Ok(()))),
        };
        let owned_after = match &released {
            Some(Ok(())) => None,
            _ => owned_entry(o),
        };
        if let Some(Err(problem)) = released {
            let problem = if o.metadata.deletion_timestamp.is_some()
                && problem.action() == Action::WaitForChange
            {
                let (z, ip) = owned_entry(o).unwrap_or_default();
                Problem::DeletionBlocked {
                    zone: z,
                    ip,
                    why: problem.to_string(),
                }
            } else {
                problem
            };
            verdicts.insert(
                p.key.clone(),
                Verdict::NotReady {
                    problem,
                    owned: owned_after,
                },
            );
            continue;
        }
        let verdict = match &p.step {
            Step::InSync { adopted } => Verdict::Ready {
                ip: claim_ip(o),
                wrote: None,
                adopted: *adopted,
            },
            Step::Upsert(input, kind) => match upserts.get(&p.key) {
                Some(Ok(())) => Verdict::Ready {
                    ip: input.origin_ip.clone(),
                    wrote: Some(*kind),
                    adopted: *kind == UpsertKind::Adopt,
                },
                Some(Err(problem)) => Verdict::NotReady {
                    problem: problem.clone(),
                    owned: owned_after,
                },
                None => Verdict::NotReady {
                    problem: Problem::CloudflareUnavailable("the write was not attempted".into()),
                    owned: owned_after,
                },
            },
            Step::Blocked(problem) => Verdict::NotReady {
                problem: problem.clone(),
                owned: owned_after,
            },
            Step::WaitForRelease => {
                if let Some((z, _)) = owned_entry(o) {
                    wake.push(z);
                }
                Verdict::Untouched
            }
            Step::Finalize => Verdict::Finalize {
                released: released.map(|_| matches!(p.release, Some(Release::Delete(_)))),
            },
            Step::Skip if released.is_some() => {
                // Moved away from this zone: the old entry is released, the new zone applies.
                wake.push(o.spec.zone_id.clone());
                let (z, ip) = owned_entry(o).unwrap_or_default();
                Verdict::NotReady {
                    problem: Problem::Moving { zone: z, ip },
                    owned: None,
                }
            }
            Step::Skip => Verdict::Untouched,
        };
        verdicts.insert(p.key.clone(), verdict);
    }

    // Terminal API errors are remembered so the next reconcile makes no call for them.
    for (key, v) in &verdicts {
        if let Verdict::NotReady { problem, .. } = v {
            if problem.action() == Action::Retry && !matches!(problem, Problem::Moving { .. }) {
                transient = true;
            }
            let from_api = matches!(
                problem,
                Problem::ZoneLimitReached { .. }
                    | Problem::Unauthorized(_)
                    | Problem::Rejected(_)
                    | Problem::InvalidOriginIp(_)
                    | Problem::RegionNotSupported(_)
            );
            if from_api && upserts.contains_key(key) {
                let o = by_key[key];
                if let Some(Ok(r)) = resolved.get(key) {
                    ctx.zones.mark_terminal(
                        &o.uid().unwrap_or_default(),
                        TerminalMark {
                            generation: generation(o),
                            fingerprint: r.fingerprint,
                            problem: problem.clone(),
                        },
                    );
                }
            }
        }
    }

    let (mut ready, mut not_ready) = (0i64, 0i64);
    for v in verdicts.values() {
        match v {
            Verdict::Ready { .. } => ready += 1,
            Verdict::NotReady { .. } => not_ready += 1,
            _ => {}
        }
    }
    // Each write future is made only when a slot frees up, and all borrow one catalog:
    // collecting them first held a future (~5 KB) and a catalog copy (~2.5 KB) per object,
    // ~28 MB for a zone of 3,500 (issue 7's benchmark, heaptrack).
    let catalog = state.catalog.as_ref();
    let writes = verdicts
        .into_iter()
        .map(|(key, v)| write_outcome(ctx, zone, by_key[&key], v, catalog));
    bounded(writes, ctx.settings.kube_concurrency).await;
    ctx.metrics.set_zone_mappings(zone, ready, not_ready);

    let mut state = ctx.zones.get(zone);
    if transient {
        state.failures += 1;
        let delay = backoff(state.failures, retry_after);
        ctx.zones.put(zone, state);
        ctx.metrics.reconcile("retry");
        ZoneOutcome {
            requeue_after: Some(delay),
            refresh_next: false,
            wake,
        }
    } else {
        state.failures = 0;
        ctx.zones.put(zone, state);
        ctx.metrics.reconcile("ok");
        ZoneOutcome {
            requeue_after: Some(ctx.settings.resync),
            refresh_next: true,
            wake,
        }
    }
}

/// One remote write planned for an object.
enum Write {
    Delete(String),
    Upsert(MappingInput),
}

impl Write {
    fn ip(&self) -> &str {
        match self {
            Write::Delete(ip) => ip,
            Write::Upsert(m) => &m.origin_ip,
        }
    }
}

/// Deletes released entries in batches; returns each object's release result.
async fn run_deletes(
    ctx: &Context,
    zone: &str,
    plan: &ZonePlan,
    client_of: &impl Fn(&str) -> Option<(u64, Client)>,
    retry_after: &mut Option<Duration>,
) -> HashMap<String, ReleaseResult> {
    let writes = plan
        .deletes()
        .map(|(key, ip)| (key.to_string(), Write::Delete(ip.to_string())))
        .collect();
    run_writes(ctx, zone, writes, client_of, retry_after).await
}

/// Writes upserts in batches, skipping objects whose release failed.
async fn run_upserts(
    ctx: &Context,
    zone: &str,
    plan: &ZonePlan,
    releases: &HashMap<String, ReleaseResult>,
    client_of: &impl Fn(&str) -> Option<(u64, Client)>,
    retry_after: &mut Option<Duration>,
) -> HashMap<String, Result<(), Problem>> {
    let writes = plan
        .upserts()
        .filter(|(key, _, _)| !matches!(releases.get(*key), Some(Err(_))))
        .map(|(key, input, _)| (key.to_string(), Write::Upsert(input.clone())))
        .collect();
    run_writes(ctx, zone, writes, client_of, retry_after).await
}

/// Makes writes of one kind, grouped by credential and in batches of at most 100 (a single
/// call for a lone item), keeps the zone's snapshot in step, and returns each object's result.
async fn run_writes(
    ctx: &Context,
    zone: &str,
    writes: Vec<(String, Write)>,
    client_of: &impl Fn(&str) -> Option<(u64, Client)>,
    retry_after: &mut Option<Duration>,
) -> HashMap<String, Result<(), Problem>> {
    let mut results = HashMap::new();
    let mut groups: BTreeMap<u64, (Client, Vec<(String, Write)>)> = BTreeMap::new();
    for (key, write) in writes {
        match client_of(&key) {
            Some((fp, client)) => groups
                .entry(fp)
                .or_insert((client, vec![]))
                .1
                .push((key, write)),
            None => {
                results.insert(key, Err(Problem::NoCredentials));
            }
        }
    }
    for (_, (client, items)) in groups {
        for chunk in items.chunks(MAX_BATCH) {
            let outcomes = call_chunk(&client, zone, chunk, retry_after).await;
            for ((key, write), r) in chunk.iter().zip(outcomes) {
                match (&r, write) {
                    (Ok(()), Write::Delete(ip)) => ctx.zones.update_remote(zone, |m| {
                        m.remove(ip);
                    }),
                    (Ok(()), Write::Upsert(input)) => ctx.zones.update_remote(zone, |m| {
                        m.insert(
                            input.origin_ip.clone(),
                            Mapping {
                                origin_ip: input.origin_ip.clone(),
                                vendor: input.vendor.clone(),
                                region: input.region.clone(),
                                modified_on: None,
                            },
                        );
                    }),
                    // The outcome of a failed call is unknown: read the zone again next time.
                    (Err(p), _) if p.action() == Action::Retry => ctx.zones.invalidate(zone),
                    (Err(_), _) => {}
                }
                results.insert(key.clone(), r);
            }
        }
    }
    results
}

/// Sends one chunk (all deletes or all upserts) and returns a result per item, in order.
/// A delete of an entry that is already gone counts as done.
async fn call_chunk(
    client: &Client,
    zone: &str,
    chunk: &[(String, Write)],
    retry_after: &mut Option<Duration>,
) -> Vec<Result<(), Problem>> {
    let is_delete = matches!(chunk[0].1, Write::Delete(_));
    let mut whole_call_failed = |e: crate::cloudflare::Error| {
        *retry_after = retry_after.or(e.retry_after());
        Problem::from_error(&e)
    };
    let batch = match (chunk, is_delete) {
        ([(_, Write::Delete(ip))], _) => {
            return vec![match client.delete(zone, ip).await {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(whole_call_failed(e)),
                _ => Ok(()),
            }];
        }
        ([(_, Write::Upsert(input))], _) => {
            return vec![client
                .put(zone, input)
                .await
                .map(|_| ())
                .map_err(whole_call_failed)];
        }
        (_, true) => {
            let ips: Vec<String> = chunk.iter().map(|(_, w)| w.ip().to_string()).collect();
            client.batch_delete(zone, &ips).await
        }
        (_, false) => {
            let inputs: Vec<MappingInput> = chunk
                .iter()
                .filter_map(|(_, w)| match w {
                    Write::Upsert(m) => Some(m.clone()),
                    Write::Delete(_) => None,
                })
                .collect();
            client.batch_put(zone, &inputs).await
        }
    };
    let res = match batch {
        Ok(res) => res,
        Err(e) => {
            let p = whole_call_failed(e);
            return chunk.iter().map(|_| Err(p.clone())).collect();
        }
    };
    let ok: HashSet<&str> = res.succeeded.iter().map(|i| i.origin_ip.as_str()).collect();
    let failed: HashMap<&str, &str> = res
        .failed
        .iter()
        .map(|i| (i.origin_ip.as_str(), i.error.as_deref().unwrap_or("")))
        .collect();
    chunk
        .iter()
        .map(|(_, w)| {
            let ip = w.ip();
            if ok.contains(ip) {
                return Ok(());
            }
            let Some(msg) = failed.get(ip) else {
                return Err(Problem::CloudflareUnavailable(format!(
                    "the batch response did not report {ip}"
                )));
            };
            match classify_item_error(msg) {
                ErrorKind::NotFound if is_delete => Ok(()),
                kind => Err(Problem::from_kind(kind, zone, format!("{ip}: {msg}"))),
            }
        })
        .collect()
}

/// Reports a zone-wide transient failure on objects that are not Ready yet, and backs off.
async fn fail_transient(
    ctx: &Context,
    zone: &str,
    objects: &[Arc<OriginCloudRegionMapping>],
    problem: Problem,
    retry_after: Option<Duration>,
) -> ZoneOutcome {
    let pending = objects
        .iter()
        .filter(|o| o.spec.zone_id == zone && !is_ready(o))
        .map(|o| {
            let v = Verdict::NotReady {
                problem: problem.clone(),
                owned: owned_entry(o),
            };
            write_outcome(ctx, zone, o, v, None)
        });
    bounded(pending, ctx.settings.kube_concurrency).await;
    let mut state = ctx.zones.get(zone);
    state.failures += 1;
    let delay = backoff(state.failures, retry_after);
    ctx.zones.put(zone, state);
    ctx.metrics.reconcile("retry");
    ZoneOutcome {
        requeue_after: Some(delay),
        refresh_next: false,
        wake: vec![],
    }
}

/// Writes an object's status, Event and finalizer as its verdict says, each only on change.
async fn write_outcome(
    ctx: &Context,
    zone: &str,
    o: &OriginCloudRegionMapping,
    verdict: Verdict,
    catalog: Option<&crate::wire::SupportedRegions>,
) {
    let api = api_of(ctx, o);
    let name = o.name_any();
    let old = o.status.clone().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let (status, event) = match verdict {
        Verdict::Untouched => return,
        Verdict::Finalize { released } => {
            if o.has_finalizer() && remove_finalizer(ctx, &api, o).await {
                let note = match (released, owned_entry(o)) {
                    (Some(true), Some((z, ip))) => Some((
                        "Deleted",
                        format!("removed remote mapping {ip} from zone {z}"),
                    )),
                    (Some(false), Some((z, ip))) => {
                        Some(("Orphaned", format!("left remote mapping {ip} in zone {z}")))
                    }
                    _ => None,
                };
                if let Some((reason, note)) = note {
                    publish(ctx, o, EventType::Normal, reason, note).await;
                }
            }
            return;
        }
        Verdict::Ready { ip, wrote, adopted } => {
            let colos = catalog
                .and_then(|c| c.region(&o.spec.vendor, &o.spec.region))
                .map(|r| r.upper_tier_colos.clone())
                .or_else(|| old.upper_tier_colos.clone());
            let changed = wrote.is_some() || adopted || old.origin_ip.as_deref() != Some(&ip);
            let message = format!(
                "{} {} is mapped to {} {}",
                zone, ip, o.spec.vendor, o.spec.region
            );
            let status = OriginCloudRegionMappingStatus {
                observed_generation: Some(generation(o)),
                zone_id: Some(zone.to_string()),
                origin_ip: Some(ip.clone()),
                upper_tier_colos: colos,
                last_sync_time: if changed {
                    Some(now.clone())
                } else {
                    old.last_sync_time.clone()
                },
                conditions: vec![condition(&old, o, "True", "Synced", &message, &now)],
            };
            let event = match (wrote, adopted) {
                (_, true) => Some((
                    EventType::Normal,
                    "Adopted",
                    format!("adopted existing remote mapping {ip} in zone {zone}"),
                )),
                (Some(UpsertKind::Create), _) => Some((
                    EventType::Normal,
                    "Created",
                    format!(
                        "created remote mapping {ip} → {} {}",
                        o.spec.vendor, o.spec.region
                    ),
                )),
                (Some(UpsertKind::Update), _) => Some((
                    EventType::Normal,
                    "Updated",
                    format!(
                        "updated remote mapping {ip} → {} {}",
                        o.spec.vendor, o.spec.region
                    ),
                )),
                (Some(UpsertKind::DriftCorrect), _) => Some((
                    EventType::Normal,
                    "DriftCorrected",
                    format!(
                        "remote mapping {ip} had changed out of band; restored {} {}",
                        o.spec.vendor, o.spec.region
                    ),
                )),
                _ => None,
            };
            (status, event)
        }
        Verdict::NotReady { problem, owned } => {
            let (zone_id, origin_ip) = owned.map_or((None, None), |(z, ip)| (Some(z), Some(ip)));
            let status = OriginCloudRegionMappingStatus {
                observed_generation: Some(generation(o)),
                zone_id,
                origin_ip,
                upper_tier_colos: old.upper_tier_colos.clone(),
                last_sync_time: old.last_sync_time.clone(),
                conditions: vec![condition(
                    &old,
                    o,
                    "False",
                    problem.reason(),
                    &problem.to_string(),
                    &now,
                )],
            };
            let reason_changed = o
                .ready_condition()
                .is_none_or(|c| c.reason != problem.reason() || c.message != problem.to_string());
            let event = reason_changed.then(|| {
                let kind = if matches!(problem, Problem::Moving { .. }) {
                    EventType::Normal
                } else {
                    EventType::Warning
                };
                (kind, problem.reason(), problem.to_string())
            });
            (status, event)
        }
    };
    if status != old {
        let patch = apply_body("status", json!(status));
        match api
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(after) => {
                ctx.metrics.kube_write("status");
                ctx.zones.note_write(
                    &o.uid().unwrap_or_default(),
                    o.resource_version(),
                    after.resource_version(),
                );
            }
            Err(e) if is_not_found(&e) => return,
            Err(e) => tracing::warn!(object = %key_of(o), error = %e, "writing status failed"),
        }
    }
    if let Some((kind, reason, note)) = event {
        publish(ctx, o, kind, reason, note).await;
    }
}

/// Removes the operator's finalizer; true when this call released the object.
///
/// The apply names the object's UID: an apply for an object that is already gone would
/// otherwise be taken as a create (and fail on the required spec), and a same-named object
/// created since must never be touched.
async fn remove_finalizer(
    ctx: &Context,
    api: &Api<OriginCloudRegionMapping>,
    o: &OriginCloudRegionMapping,
) -> bool {
    let name = o.name_any();
    let patch = finalizers_body(o, &[]);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await;
    let result = match applied {
        // Apply drops only what this manager owns: a finalizer another manager also set (a
        // restored or re-applied manifest) would stay and the object would hang. Then take it
        // out of the list directly, guarded by resourceVersion.
        Ok(after) if after.has_finalizer() => {
            let rest: Vec<&String> = after
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .collect();
            let patch = json!({"metadata": {
                "finalizers": rest,
                "resourceVersion": after.resource_version(),
            }});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            ctx.metrics.kube_write("finalizer");
            true
        }
        // Already gone (or replaced by a new object of the same name): nothing to release.
        Err(e) if is_gone(&e) => false,
        Err(e) => {
            tracing::warn!(object = %key_of(o), error = %e, "removing the finalizer failed");
            false
        }
    }
}

/// The Ready condition, keeping lastTransitionTime when the status value did not change.
fn condition(
    old: &OriginCloudRegionMappingStatus,
    o: &OriginCloudRegionMapping,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) -> Condition {
    let previous = old.conditions.iter().find(|c| c.type_ == READY);
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: READY.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: Some(generation(o)),
        last_transition_time,
    }
}

async fn publish(
    ctx: &Context,
    o: &OriginCloudRegionMapping,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    // A Recorder per Event: a shared one caches every Event it sent for 6 minutes (to turn
    // repeats into series) and scans that cache on each publish, ~20 MB for 3,500 objects; the
    // operator already publishes only on change, so the cache would buy nothing.
    let recorder = Recorder::new(ctx.kube.clone(), ctx.reporter.clone());
    match recorder.publish(&event, &o.object_ref(&())).await {
        Ok(()) => ctx.metrics.kube_write("event"),
        Err(e) => tracing::debug!(object = %key_of(o), error = %e, "publishing an event failed"),
    }
}

/// Adds the finalizer to live objects of the zone that lack it, before any remote write;
/// returns the keys of those still without it.
async fn ensure_finalizers(
    ctx: &Context,
    objects: &[Arc<OriginCloudRegionMapping>],
) -> HashSet<String> {
    let missing = objects
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none() && !o.has_finalizer())
        .map(|o| async move {
            let api = api_of(ctx, o);
            let name = o.name_any();
            let patch = finalizers_body(o, &[FINALIZER]);
            match api
                .patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(after) => {
                    ctx.zones.note_write(
                        &o.uid().unwrap_or_default(),
                        o.resource_version(),
                        after.resource_version(),
                    );
                    ctx.metrics.kube_write("finalizer");
                    None
                }
                Err(e) => {
                    tracing::warn!(object = %key_of(o), error = %e, "adding the finalizer failed");
                    Some(key_of(o))
                }
            }
        });
    bounded(missing, ctx.settings.kube_concurrency)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Runs the futures of `futures` with at most `limit` in flight, making each only when a slot
/// frees up; returns their outputs in completion order. Collecting the futures first (what
/// `stream::iter(v.collect()).buffer_unordered(n)` does) holds one per object at once.
async fn bounded<F: std::future::Future>(
    mut futures: impl Iterator<Item = F>,
    limit: usize,
) -> Vec<F::Output> {
    let mut out = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < limit.max(1) {
            let Some(f) = futures.next() else { break };
            in_flight.push(f);
        }
        match in_flight.next().await {
            Some(x) => out.push(x),
            None => return out,
        }
    }
}

/// The planner's view of an object.
pub fn view_of(o: &OriginCloudRegionMapping, blocked: Option<Problem>) -> ObjectView {
    let ip = crate::ip::canonicalize(&o.spec.origin_ip).map_err(|e| e.to_string());
    let owned = owned_entry(o);
    let was_ready = is_ready(o)
        && o.status.as_ref().and_then(|s| s.observed_generation) == Some(generation(o))
        && owned
            .as_ref()
            .is_some_and(|(z, i)| *z == o.spec.zone_id && Ok(i) == ip.as_ref());
    ObjectView {
        key: key_of(o),
        created: o
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        zone_id: o.spec.zone_id.clone(),
        ip,
        vendor: o.spec.vendor.clone(),
        region: o.spec.region.clone(),
        deleting: o.metadata.deletion_timestamp.is_some(),
        orphan: o.spec.deletion_policy == DeletionPolicy::Orphan || o.force_orphan(),
        owned,
        was_ready,
        blocked,
    }
}

/// `namespace/name` of an object.
pub fn key_of(o: &OriginCloudRegionMapping) -> String {
    format!(
        "{}/{}",
        o.metadata.namespace.as_deref().unwrap_or_default(),
        o.name_any()
    )
}

/// The (zone, IP) the operator last applied for an object, from its status.
pub fn owned_entry(o: &OriginCloudRegionMapping) -> Option<(String, String)> {
    let s = o.status.as_ref()?;
    Some((s.zone_id.clone()?, s.origin_ip.clone()?))
}

/// The zone of the entry an object owns.
pub fn owned_zone(o: &OriginCloudRegionMapping) -> Option<&str> {
    o.status.as_ref()?.zone_id.as_deref()
}

/// The canonical IP an object claims, or its spec text when that is not a valid IP.
pub fn claim_ip(o: &OriginCloudRegionMapping) -> String {
    crate::ip::canonicalize(&o.spec.origin_ip).unwrap_or_else(|_| o.spec.origin_ip.clone())
}

fn is_ready(o: &OriginCloudRegionMapping) -> bool {
    o.ready_condition().is_some_and(|c| c.status == "True")
}

fn generation(o: &OriginCloudRegionMapping) -> i64 {
    o.metadata.generation.unwrap_or_default()
}

fn api_of(ctx: &Context, o: &OriginCloudRegionMapping) -> Api<OriginCloudRegionMapping> {
    Api::namespaced(
        ctx.kube.clone(),
        o.metadata.namespace.as_deref().unwrap_or_default(),
    )
}

/// A server-side apply body that sets one top-level part (`status`, `metadata`) of a mapping.
fn apply_body(part: &str, value: serde_json::Value) -> serde_json::Value {
    let mut body = json!({
        "apiVersion": OriginCloudRegionMapping::api_version(&()),
        "kind": OriginCloudRegionMapping::kind(&()),
    });
    body[part] = value;
    body
}

/// The apply body owning exactly `finalizers` on this object. It names the UID so an apply
/// for an object that is gone (or replaced under the same name) fails instead of creating.
fn finalizers_body(o: &OriginCloudRegionMapping, finalizers: &[&str]) -> serde_json::Value {
    apply_body(
        "metadata",
        json!({"name": o.name_any(), "uid": o.uid(), "finalizers": finalizers}),
    )
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// 404, or 409 from a UID precondition: the object this write was for no longer exists.
fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}
