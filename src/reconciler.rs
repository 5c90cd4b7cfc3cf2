//! Reconciles one zone as a short pipeline of named phases, each marked by what it talks to:
//!
//! 1. `members`        (cache)      the objects naming the zone in spec or ownership record
//! 2. `release_forced` (kube)       deleting objects annotated force-orphan go at once
//! 3. `read_zone`      (cloudflare) remote snapshot (cached), catalog (TTL), credential proofs
//! 4. `plan`           (pure)       [`plan_zone`] over [`views`]
//! 5. `record`         (kube)       finalizers and write-ahead intents, one patch per object
//! 6. `write`          (cloudflare) batched deletes, then batched upserts
//! 7. `judge`          (pure)       [`verdict::judge`] per object
//! 8. `publish`        (kube)       status, record prunes, finalizer removal, Events
//! 9. `next_run`       (pure)       when the zone runs again
//!
//! Every decision lives in the pure modules (planner, verdict, status); this file only moves
//! data between them and the two APIs, so a failure of any write is retried with backoff.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::cached::{CachedMapping, MappingCache};
use crate::cloudflare::{classify_item_error, Client, Clients, ErrorKind};
use crate::crd::{DeletionPolicy, OriginCloudRegionMapping, FINALIZER};
use crate::credentials::{CredentialSource, Resolved};
use crate::error::{Action, Problem};
use crate::metrics::Metrics;
use crate::ownership::{self, Entries, Entry, ObjectKey, ENTRIES_ANNOTATION};
use crate::planner::{plan_zone, ObjectView, Step, ZoneFacts, ZonePlan};
use crate::status::{self, Note, Seen};
use crate::tombstones::Tombstones;
use crate::verdict::{self, Judgement, Verdict, WriteResults};
use crate::wire::{Mapping, MappingInput, SupportedRegions, MAX_BATCH};
use crate::zone::{self, AdoptionPolicy, CloudflareZone};
use crate::zone_state::{backoff, TerminalMark, ZoneState, ZoneStates};

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
    /// Cache of every watched mapping object, in its compact form.
    pub store: MappingCache,
    /// Credentials lookup.
    pub creds: CredentialSource,
    /// Objects deleted while our finalizer was still on them, until their entries are released.
    pub tombstones: Tombstones,
    /// Per-zone memory.
    pub zones: ZoneStates,
    /// Who publishes Events (controller and instance names).
    pub reporter: Reporter,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Tunables.
    pub settings: Settings,
    /// With leader election: confirms the Lease before every Cloudflare write batch.
    pub lease: Option<crate::leader::LeaseGuard>,
    /// Declared zones (CloudflareZone); `None` when any zone may be mapped.
    pub governance: Option<Governance>,
}

/// What declared zones need at run time.
pub struct Governance {
    /// Cache of CloudflareZones.
    pub zones: Store<CloudflareZone>,
    /// Cache of Namespaces' metadata (labels, for namespace selectors).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The name this installation claims zones under.
    pub instance: String,
    /// A claim not renewed for this long may be taken over (an uninstalled writer).
    pub claim_stale_after: Duration,
    /// This installation watches every namespace: it keeps the status of every declared
    /// zone, even one no mapping names. A namespace-scoped one touches (and reads) a zone
    /// only for mappings of its namespace that the zone admits.
    pub all_namespaces: bool,
}

/// What the scheduler should do after a zone reconcile.
#[derive(Debug, Default)]
pub struct ZoneOutcome {
    /// Run this zone again after this long; `None` when no object names the zone any more.
    pub requeue_after: Option<Duration>,
    /// The delay is until the next full re-read (a resync), not a retry.
    pub refresh_next: bool,
    /// Other zones that must run now (an object moved between zones).
    pub wake: Vec<String>,
    /// This reconcile read the whole zone from Cloudflare.
    pub listed: bool,
    /// This reconcile wrote to Cloudflare (so the snapshot knows the zone's state).
    pub wrote: bool,
    /// What the zone's next drift check will cost, and on which credential's budget.
    pub drift: Option<DriftCost>,
}

/// The Cloudflare calls one drift check of a zone makes, charged to one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriftCost {
    /// Fingerprint of the credential that reads the zone.
    pub credential: u64,
    /// List pages plus the catalog.
    pub calls: u32,
}

/// One object of the zone with its resolved credentials.
pub struct Member {
    /// The cached object (the full one is made from it only while a write needs it).
    pub obj: Arc<CachedMapping>,
    /// Its key.
    pub key: ObjectKey,
    /// Its credentials, or why it has none.
    pub cred: Result<Resolved, Problem>,
}

/// What one read of the zone learned.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Remote entries by canonical IP (empty when no credential could read the zone).
    pub remote: Arc<BTreeMap<String, Mapping>>,
    /// Supported regions, when known.
    pub catalog: Option<SupportedRegions>,
    /// See [`ZoneState::capacity`].
    pub capacity: Option<usize>,
    /// Credentials that failed to read or prove the zone, by fingerprint.
    pub refused: HashMap<u64, Problem>,
    /// Whether unowned entries may be adopted (the zone's policy).
    pub adopt: bool,
    /// IPs held for a deleted owner's namespace.
    pub reserved: HashMap<String, String>,
}

impl Snapshot {
    /// The facts the planner needs.
    pub fn facts(&self) -> ZoneFacts<'_> {
        ZoneFacts {
            remote: &self.remote,
            catalog: self.catalog.as_ref(),
            capacity: self.capacity,
            adopt: self.adopt,
            reserved: Some(&self.reserved),
        }
    }
}

/// A read of the whole zone failed: the problem and the server's requested wait.
#[derive(Debug)]
pub struct ZoneFailure {
    /// What went wrong.
    pub problem: Problem,
    /// Retry-After, when given.
    pub retry_after: Option<Duration>,
}

/// Reconciles `zone`; `refresh` forces a fresh list of the remote state (resync).
pub async fn reconcile_zone(ctx: &Context, zone: &str, refresh: bool) -> ZoneOutcome {
    let declaration = ctx.governance.as_ref().and_then(|g| {
        let zones = g.zones.state();
        zone::declared(zones.iter().map(|z| z.as_ref()), zone)
            .cloned()
            .map(Arc::new)
    });
    let members = members(ctx, zone, declaration.as_ref());
    let all_namespaces = ctx.governance.as_ref().is_some_and(|g| g.all_namespaces);
    let admitted = members.iter().any(|m| m.cred.is_ok());
    // A namespace-scoped installation with nothing admitted here makes no call for the zone
    // (and claims nothing): its mappings just report why.
    let declaration = declaration.filter(|_| all_namespaces || admitted);
    if members.is_empty() && declaration.is_none() {
        ctx.metrics.set_zone_mappings(zone, 0, 0);
        return ZoneOutcome::default();
    }
    // Planning on a cache that has not yet seen our last writes would take our own entries for
    // strangers (a spurious "Adopted" and a second status write): wait for it.
    if members.iter().any(|m| {
        let uid = m.obj.uid();
        !ctx.tombstones.contains(uid)
            && ctx
                .zones
                .cache_is_behind(uid, m.obj.resource_version().map(String::from))
    }) {
        return ZoneOutcome {
            requeue_after: Some(Duration::from_millis(100)),
            ..Default::default()
        };
    }
    if refresh {
        let uids: Vec<String> = members.iter().map(|m| m.obj.uid().to_string()).collect();
        ctx.zones.clear_terminal(&uids);
    }
    let (members, mut kube_ok) = release_forced(ctx, members).await;
    if let (Some(decl), Some(g)) = (&declaration, &ctx.governance) {
        if let Err(problem) = claim_zone(ctx, g, decl).await {
            let failure = ZoneFailure {
                problem,
                retry_after: None,
            };
            return fail_zone(ctx, zone, &members, failure, kube_ok, false).await;
        }
    }
    let lead = declaration.as_ref().map(|d| ctx.creds.resolve_zone(d));

    let mut state = ctx.zones.get(zone);
    let listed_before = state.listed_wall;
    let snapshot = read_zone(
        &ctx.clients,
        zone,
        &mut state,
        &members,
        lead.as_ref().and_then(|l| l.as_ref().ok()),
        refresh,
        ctx.settings.catalog_ttl,
    )
    .await;
    let listed = state.listed_wall != listed_before;
    let drift = drift_cost(&members, lead.as_ref(), &state);
    ctx.zones.put(zone, state);
    let mut snapshot = match snapshot {
        Ok(s) => s,
        Err(failure) => {
            if let Some(decl) = &declaration {
                let fail = Some(&failure.problem);
                publish_zone(ctx, decl, zone, None, lead.as_ref(), fail).await;
            }
            return fail_zone(ctx, zone, &members, failure, kube_ok, true).await;
        }
    };
    snapshot.adopt = declaration
        .as_ref()
        .is_none_or(|d| d.spec.adoption == AdoptionPolicy::Adopt);

    let views = views(&members, &snapshot, |m| terminal_of(ctx, m));
    let plan = plan_zone(zone, &views, snapshot.facts());
    for ((p, v), m) in plan.objects.iter().zip(&views).zip(&members) {
        if !matches!(p.step, Step::InSync { .. } | Step::Skip) || !p.releases.is_empty() {
            tracing::debug!(object = %p.key, version = ?m.obj.resource_version(), deleting = v.deleting, owned = ?v.owned, step = ?p.step, releases = ?p.releases, intent = ?p.intent, "planned");
        }
    }
    if !plan.is_noop() && !still_leading(ctx).await {
        return lost_lease(ctx);
    }
    let records = record(ctx, &members, &plan).await;
    kube_ok &= records.failed.is_empty() && records.stale.is_empty();
    let mut results = WriteResults {
        recorded: records.recorded,
        stale: records.stale,
        ..Default::default()
    };
    let retry_after = write(ctx, zone, &members, &plan, &records.failed, &mut results).await;
    if results.lease_lost {
        return lost_lease(ctx);
    }

    let judgements: Vec<Judgement> = views
        .iter()
        .zip(&plan.objects)
        .map(|(v, p)| verdict::judge(zone, v, p, &results))
        .collect();
    remember_terminal(ctx, &members, &judgements, &results);
    remember_releases(ctx, zone, &judgements);
    let wrote = !results.upserts.is_empty() || !results.deletes.is_empty();
    // Publishing is the longest phase (a status write per object); what only planning and
    // judging needed (several small strings per object) is not kept through it.
    drop((views, plan, results));
    let state = ctx.zones.get(zone);
    let no_remote = BTreeMap::new();
    let seen = Seen {
        remote: state.remote.as_deref().unwrap_or(&no_remote),
        catalog: snapshot.catalog.as_ref(),
    };
    kube_ok &= publish(ctx, zone, &members, &judgements, &records.versions, seen).await;
    if let Some(decl) = &declaration {
        // Counted from what each object owns after this reconcile's writes, so a create shows
        // as managed in the same status write.
        let owned: HashSet<String> = judgements
            .iter()
            .flat_map(|j| &j.owned)
            .filter(|e| e.zone == zone)
            .map(|e| e.ip.clone())
            .collect();
        let read = Some((&state, &snapshot, &owned));
        kube_ok &= publish_zone(ctx, decl, zone, read, lead.as_ref(), None).await;
    }
    count_readiness(ctx, zone, &judgements);
    let retry = verdict::needs_retry(&judgements) || !kube_ok;
    ZoneOutcome {
        listed,
        wrote,
        drift,
        ..next_run(ctx, zone, retry, "ok", &judgements, retry_after)
    }
}

/// (pure) The cost of the zone's next drift check: a list page per 100 entries (at least one)
/// and the catalog, on the credential that lists it (the zone's own, else the first working
/// one of its objects).
fn drift_cost(
    members: &[Member],
    lead: Option<&Result<Resolved, Problem>>,
    state: &crate::zone_state::ZoneState,
) -> Option<DriftCost> {
    let credential = lead
        .and_then(|l| l.as_ref().ok())
        .or_else(|| members.iter().find_map(|m| m.cred.as_ref().ok()))?
        .fingerprint;
    let entries = state.remote.as_ref().map_or(0, |r| r.len()) as u32;
    let pages = entries.div_ceil(crate::wire::MAX_PER_PAGE).max(1);
    Some(DriftCost {
        credential,
        calls: pages + 1,
    })
}

/// (cache) The objects naming `zone` in spec or in their ownership record, with the
/// credentials each may use here: with declared zones, only when the zone's CloudflareZone
/// admits its namespace (otherwise the reason, and no Cloudflare call for it).
fn members(ctx: &Context, zone: &str, declaration: Option<&Arc<CloudflareZone>>) -> Vec<Member> {
    let labels_of = |ns: &str| -> BTreeMap<String, String> {
        ctx.governance
            .as_ref()
            .and_then(|g| g.namespaces.get(&ObjectRef::new(ns)))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    };
    ctx.store
        .state()
        .into_iter()
        .filter(|o| o.in_zone(zone))
        // Planned as deleting objects, so what they recorded is released like any deletion.
        .chain(ctx.tombstones.in_zone(zone))
        .map(|obj| {
            let governed = ctx.governance.is_some();
            let cred = credentials_for(
                &ctx.creds,
                governed,
                declaration.map(|d| d.as_ref()),
                zone,
                &obj.to_full(),
                &labels_of(obj.namespace()),
            );
            Member {
                key: obj.key(),
                cred,
                obj,
            }
        })
        .collect()
}

/// (pure, over caches) The credentials `obj` may use in `zone`: its own or the operator-wide
/// ones when zones need no declaration; with declarations, only when the zone's CloudflareZone
/// admits its namespace (with these labels), else the reason and no Cloudflare call for it.
pub fn credentials_for(
    creds: &CredentialSource,
    governed: bool,
    declaration: Option<&CloudflareZone>,
    zone: &str,
    obj: &OriginCloudRegionMapping,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<Resolved, Problem> {
    match (governed, declaration) {
        (false, _) => creds.resolve(obj),
        (true, None) => Err(Problem::ZoneNotDeclared {
            zone: zone.to_string(),
        }),
        (true, Some(d)) => {
            let ns = obj.metadata.namespace.clone().unwrap_or_default();
            zone::admit(d, &ns, namespace_labels).and_then(|()| creds.resolve_in(d, obj))
        }
    }
}

/// (kube) Claims the zone for this installation in the CloudflareZone's status, unless another
/// installation holds a fresh claim (then the problem every mapping reports). The claim is a
/// status patch guarded by resourceVersion, so two installations never both win it.
async fn claim_zone(ctx: &Context, g: &Governance, decl: &CloudflareZone) -> Result<(), Problem> {
    let now = jiff::Timestamp::now();
    let status = decl.status.as_ref();
    if let Err(writer) = zone::writer_check(status, &g.instance, now, g.claim_stale_after) {
        return Err(Problem::OtherWriter {
            zone: decl.spec.zone_id.clone(),
            writer,
        });
    }
    let renew_after = jiff::SignedDuration::try_from(g.claim_stale_after / 3).unwrap_or_default();
    let fresh = status.is_some_and(|s| {
        s.writer.as_deref() == Some(g.instance.as_str())
            && s.writer_renewed
                .as_ref()
                .is_some_and(|t| now.duration_since(t.0) < renew_after)
    });
    if fresh {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"resourceVersion": decl.resource_version()},
        "status": {"writer": g.instance, "writerRenewed": Time(now)},
    });
    match patch_zone_status(ctx, decl, &patch).await {
        Ok(()) => Ok(()),
        Err(e) => Err(Problem::KubernetesWriteFailed {
            what: "the zone claim",
            why: e.to_string(),
        }),
    }
}

/// Merge-patches a CloudflareZone's status (a `metadata.resourceVersion` in `patch` makes it
/// conditional) and counts the write.
async fn patch_zone_status(
    ctx: &Context,
    decl: &CloudflareZone,
    patch: &serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<CloudflareZone> = Api::all(ctx.kube.clone());
    api.patch_status(
        &decl.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    ctx.metrics.kube_write("zone");
    Ok(())
}

/// (kube) Writes the CloudflareZone's status when it changed: readiness, entries managed and
/// unmanaged, headroom, the catalog, the last full read and the writer.
async fn publish_zone(
    ctx: &Context,
    decl: &CloudflareZone,
    zone_id: &str,
    read: Option<(&ZoneState, &Snapshot, &HashSet<String>)>,
    lead: Option<&Result<Resolved, Problem>>,
    failure: Option<&Problem>,
) -> bool {
    let Some(g) = &ctx.governance else {
        return true;
    };
    let old = decl.status.clone().unwrap_or_default();
    let lead_problem = match lead {
        Some(Err(p)) => Some(p.clone()),
        Some(Ok(r)) => read.and_then(|(_, snap, _)| snap.refused.get(&r.fingerprint).cloned()),
        None => None,
    };
    let catalog_error = read.and_then(|(state, _, _)| state.catalog_error.clone());
    let (ready, reason, message) = match (failure, &lead_problem, catalog_error) {
        (Some(p), _, _) => ("False", "ZoneUnreadable", p.to_string()),
        (None, Some(p), _) => ("False", "CredentialsRefused", p.to_string()),
        (None, None, Some(e)) => (
            "False",
            "CatalogUnavailable",
            format!("supported regions cannot be read (is Tiered Cache on?): {e}"),
        ),
        _ => (
            "True",
            "Ready",
            format!("zone {zone_id} is readable with its credentials"),
        ),
    };
    let mut status = zone::CloudflareZoneStatus {
        observed_generation: decl.metadata.generation,
        writer: Some(g.instance.clone()),
        ..old.clone()
    };
    if let Some((state, snap, owned)) = read {
        // The zone as it stands after this reconcile's writes (the snapshot read before them
        // when a failed write made the operator forget it).
        let remote = state.remote.as_deref().unwrap_or(&snap.remote);
        let managed = remote.keys().filter(|ip| owned.contains(*ip)).count() as i64;
        let total = remote.len() as i64;
        let limit = snap.capacity.map_or(zone::ZONE_LIMIT, |c| c as i64);
        status.managed = Some(managed);
        status.unmanaged = Some(total - managed);
        status.limit = Some(limit);
        status.headroom = Some((limit - total).max(0));
        status.supported_regions = snap.catalog.as_ref().map(|c| {
            c.vendors
                .iter()
                .map(|(v, rs)| (v.clone(), rs.iter().map(|r| r.name.clone()).collect()))
                .collect()
        });
        status.last_full_read = state.listed_wall.map(Time);
    }
    let generation = decl.metadata.generation.unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let previous = crate::crd::OriginCloudRegionMappingStatus {
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    status.conditions = vec![status::condition(
        &previous, generation, ready, reason, &message, &now,
    )];
    if status == old {
        return true;
    }
    match patch_zone_status(ctx, decl, &json!({ "status": status })).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(zone = zone_id, error = %e, "writing the CloudflareZone status failed; retrying");
            false
        }
    }
}

/// (kube) Releases deleting objects annotated force-orphan without any Cloudflare call, so an
/// outage never traps them; returns the other members and whether every write succeeded.
async fn release_forced(ctx: &Context, members: Vec<Member>) -> (Vec<Member>, bool) {
    let (forced, rest): (Vec<Member>, Vec<Member>) = members
        .into_iter()
        .partition(|m| m.obj.deleting() && m.obj.force_orphan());
    let releases = forced
        .iter()
        .filter(|m| m.obj.has_finalizer())
        .map(|m| async move {
            let o = m.obj.to_full();
            if !remove_finalizer(ctx, &o, m.obj.resource_version()).await {
                return false;
            }
            let kept: Vec<Entry> = ownership::owned(&o).into_iter().collect();
            let j = Judgement {
                key: m.key.clone(),
                verdict: Verdict::Finalize {
                    deleted: vec![],
                    kept,
                },
                applied: None,
                owned: Entries::new(),
                record: Entries::new(),
                wake: Vec::new(),
            };
            if let Some(note) = status::finalize_note(&j) {
                publish_note(ctx, &o, note).await;
            }
            true
        });
    let ok = bounded(releases, ctx.settings.kube_concurrency)
        .await
        .into_iter()
        .all(|ok| ok);
    (rest, ok)
}

/// (cloudflare) Reads what the zone holds: the snapshot (listed when not cached), the catalog
/// (when older than its TTL), and a proof that every live object's credential may read the
/// zone (a list page of one item), so nothing is Ready on another object's token.
pub async fn read_zone(
    clients: &Clients,
    zone: &str,
    state: &mut ZoneState,
    members: &[Member],
    lead: Option<&Resolved>,
    refresh: bool,
    catalog_ttl: Duration,
) -> Result<Snapshot, ZoneFailure> {
    let mut snap = Snapshot {
        adopt: true,
        ..Default::default()
    };
    // The zone's own credential (a declared zone) lists first.
    let mut creds: Vec<&Resolved> = lead.into_iter().collect();
    let mut live: HashSet<u64> = HashSet::new();
    for m in members {
        if let Ok(r) = &m.cred {
            if !creds.iter().any(|c| c.fingerprint == r.fingerprint) {
                creds.push(r);
            }
            if !m.obj.deleting() && m.obj.zone_id() == zone {
                live.insert(r.fingerprint);
            }
        }
    }
    if refresh {
        state.remote = None;
        state.proven.clear();
    }
    let fail = |e: &crate::cloudflare::Error| ZoneFailure {
        problem: Problem::from_list_error(e),
        retry_after: e.retry_after(),
    };
    if state.remote.is_none() {
        for r in &creds {
            match clients.client(r.credentials.clone()).list_all(zone).await {
                Ok(list) => {
                    let remote = list.into_iter().map(|m| (m.origin_ip.clone(), m)).collect();
                    state.remote = Some(Arc::new(remote));
                    state.listed_wall = Some(jiff::Timestamp::now());
                    state.proven.insert(r.fingerprint);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Unauthorized => {
                    state.proven.remove(&r.fingerprint);
                    snap.refused.insert(r.fingerprint, Problem::from_error(&e));
                }
                Err(e) => {
                    tracing::warn!(zone, error = %e, "listing the zone failed");
                    return Err(fail(&e));
                }
            }
        }
    }
    let working = creds
        .iter()
        .find(|r| !snap.refused.contains_key(&r.fingerprint) && state.remote.is_some());
    if let Some(r) = working {
        // A change plans with the catalog it has: only a drift check refreshes a good one once
        // it is older than its TTL. Refreshing it on every change after the TTL cost one call
        // per zone whenever changes outran drift checks (2,000 zones: ~1,000 extra calls, and
        // edits queued behind them).
        let expired = state.catalog_at.is_none_or(|t| t.elapsed() >= catalog_ttl);
        let stale = state.catalog_at.is_none() || (expired && (refresh || state.catalog.is_none()));
        if stale {
            match clients
                .client(r.credentials.clone())
                .supported_regions(zone)
                .await
            {
                Ok(c) => {
                    state.catalog = Some(c);
                    state.catalog_error = None;
                }
                // Without a catalog, Cloudflare still validates each write; the colos are just
                // not reported.
                Err(e) => {
                    tracing::info!(zone, error = %e, "supported regions unavailable");
                    state.catalog_error = Some(e.to_string());
                }
            }
            state.catalog_at = Some(Instant::now());
        }
    }
    if state.remote.is_some() {
        for r in &creds {
            let fp = r.fingerprint;
            if !live.contains(&fp) || state.proven.contains(&fp) || snap.refused.contains_key(&fp) {
                continue;
            }
            match clients
                .client(r.credentials.clone())
                .list_page(zone, 1, 1)
                .await
            {
                Ok(_) => {
                    state.proven.insert(fp);
                }
                Err(e) => {
                    snap.refused.insert(fp, Problem::from_list_error(&e));
                }
            }
        }
    }
    snap.remote = state.remote.clone().unwrap_or_default();
    snap.reserved = state.reservations();
    snap.catalog = state.catalog.clone();
    snap.capacity = state.capacity;
    Ok(snap)
}

/// (pure) The planner's view of every member: its spec, record and what blocks it.
pub fn views(
    members: &[Member],
    snap: &Snapshot,
    terminal: impl Fn(&Member) -> Option<Problem>,
) -> Vec<ObjectView> {
    members
        .iter()
        .map(|m| {
            let blocked = match &m.cred {
                Err(p) => Some(p.clone()),
                Ok(r) => snap
                    .refused
                    .get(&r.fingerprint)
                    .cloned()
                    .or_else(|| (!m.obj.deleting()).then(|| terminal(m)).flatten()),
            };
            view_of(&m.obj.to_full(), blocked)
        })
        .collect()
}

fn terminal_of(ctx: &Context, m: &Member) -> Option<Problem> {
    let r = m.cred.as_ref().ok()?;
    ctx.zones
        .terminal(m.obj.uid(), m.obj.generation(), r.fingerprint)
}

/// What the record phase achieved.
#[derive(Default)]
struct Records {
    /// Objects whose write-ahead intent is durably recorded.
    recorded: HashSet<ObjectKey>,
    /// Objects whose patch failed: no Cloudflare write for them this time.
    failed: HashSet<ObjectKey>,
    /// Objects that changed since the cache showed them: nothing is decided for them until
    /// the cache shows the change.
    stale: HashSet<ObjectKey>,
    /// The version each patch produced, the base of this reconcile's later record writes.
    versions: HashMap<ObjectKey, String>,
}

/// (kube) Adds the finalizer and records write-ahead intents, one patch per object that needs
/// either. Each patch is conditional on the version the plan was made from, so a record
/// computed from a stale copy never replaces a newer one.
async fn record(ctx: &Context, members: &[Member], plan: &ZonePlan) -> Records {
    let intents: HashMap<&ObjectKey, &Entry> = plan
        .objects
        .iter()
        .filter_map(|p| Some((&p.key, p.intent.as_ref()?)))
        .collect();
    let patches = members
        .iter()
        .filter(|m| !m.obj.deleting())
        .filter_map(|m| {
            let intent = intents.get(&m.key).copied();
            if m.obj.has_finalizer() && intent.is_none() {
                return None;
            }
            let mut entries = m.obj.recorded();
            entries.extend(intent.cloned());
            Some(async move {
                let base = m.obj.resource_version();
                let o = m.obj.to_full();
                let wrote = apply_metadata(ctx, &o, base, true, &entries, "finalizer").await;
                (m.key.clone(), intent.is_some(), wrote)
            })
        });
    let mut out = Records::default();
    for (key, had_intent, wrote) in bounded(patches, ctx.settings.kube_concurrency).await {
        match wrote {
            Wrote::Done(version) => {
                if had_intent {
                    out.recorded.insert(key.clone());
                }
                if let Some(v) = version {
                    out.versions.insert(key, v);
                }
            }
            Wrote::Stale => {
                out.stale.insert(key);
            }
            Wrote::Failed => {
                out.failed.insert(key);
            }
        }
    }
    out
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

/// (cloudflare) Deletes released entries, then upserts, in batches per credential; fills
/// `results` and returns the longest Retry-After seen. An object whose finalizer and intent
/// could not be recorded (`unrecorded`), or that changed since it was read, gets no write at
/// all (an IP move keeps its old entry until the new one can be written); one whose release
/// failed gets no upsert.
async fn write(
    ctx: &Context,
    zone: &str,
    members: &[Member],
    plan: &ZonePlan,
    unrecorded: &HashSet<ObjectKey>,
    results: &mut WriteResults,
) -> Option<Duration> {
    let creds: HashMap<&ObjectKey, &Result<Resolved, Problem>> =
        members.iter().map(|m| (&m.key, &m.cred)).collect();
    let mut retry_after = None;
    let not_recorded = || Problem::KubernetesWriteFailed {
        what: "the finalizer and ownership record",
        why: "the patch was refused or failed".into(),
    };
    let mut deletes: Vec<(ObjectKey, Write)> = Vec::new();
    for (k, ip) in plan.deletes() {
        if results.stale.contains(k) {
            continue;
        }
        if unrecorded.contains(k) {
            results
                .deletes
                .insert((k.clone(), ip.to_string()), Err(not_recorded()));
            continue;
        }
        deletes.push((k.clone(), Write::Delete(ip.to_string())));
    }
    for ((key, w), r) in run_writes(
        ctx,
        zone,
        deletes,
        &creds,
        &mut retry_after,
        &mut results.lease_lost,
    )
    .await
    {
        results.deletes.insert((key, w.ip().to_string()), r);
    }
    let release_failed: HashSet<&ObjectKey> = results
        .deletes
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|((k, _), _)| k)
        .collect();
    let mut upserts = Vec::new();
    for (key, input, _) in plan.upserts() {
        if release_failed.contains(key) || results.stale.contains(key) {
            continue;
        }
        if unrecorded.contains(key) {
            results.upserts.insert(key.clone(), Err(not_recorded()));
            continue;
        }
        upserts.push((key.clone(), Write::Upsert(input.clone())));
    }
    if results.lease_lost {
        return retry_after;
    }
    let lost = &mut results.lease_lost;
    for ((key, _), r) in run_writes(ctx, zone, upserts, &creds, &mut retry_after, lost).await {
        results.upserts.insert(key, r);
    }
    retry_after
}

/// Makes writes of one kind, grouped by credential and in batches of at most 100 (a single
/// call for a lone item), keeps the zone's snapshot in step, and returns each item's result.
async fn run_writes(
    ctx: &Context,
    zone: &str,
    writes: Vec<(ObjectKey, Write)>,
    creds: &HashMap<&ObjectKey, &Result<Resolved, Problem>>,
    retry_after: &mut Option<Duration>,
    lease_lost: &mut bool,
) -> Vec<((ObjectKey, Write), Result<(), Problem>)> {
    let mut out = Vec::new();
    let mut groups: BTreeMap<u64, (Client, Vec<(ObjectKey, Write)>)> = BTreeMap::new();
    for (key, w) in writes {
        match creds.get(&key) {
            Some(Ok(r)) => groups
                .entry(r.fingerprint)
                .or_insert_with(|| (ctx.clients.client(r.credentials.clone()), vec![]))
                .1
                .push((key, w)),
            Some(Err(p)) => out.push(((key, w), Err(p.clone()))),
            None => out.push(((key, w), Err(Problem::NoCredentials))),
        }
    }
    for (fp, (client, items)) in groups {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<(ObjectKey, Write)> = items.by_ref().take(MAX_BATCH).collect();
            if !still_leading(ctx).await {
                *lease_lost = true;
                return out;
            }
            let outcomes = call_chunk(&client, zone, &chunk, retry_after).await;
            for ((key, w), r) in chunk.into_iter().zip(outcomes) {
                note_result(ctx, zone, fp, &w, &r);
                out.push(((key, w), r));
            }
        }
    }
    out
}

/// Keeps the zone's memory in step with one write's result.
fn note_result(ctx: &Context, zone: &str, fp: u64, w: &Write, r: &Result<(), Problem>) {
    match (r, w) {
        (Ok(()), Write::Delete(ip)) => ctx.zones.update(zone, |s| {
            if let Some(m) = s.remote.as_mut().map(Arc::make_mut) {
                m.remove(ip);
            }
            s.proven.insert(fp);
        }),
        (Ok(()), Write::Upsert(input)) => ctx.zones.update(zone, |s| {
            if let Some(m) = s.remote.as_mut().map(Arc::make_mut) {
                m.insert(
                    input.origin_ip.clone(),
                    Mapping {
                        origin_ip: input.origin_ip.clone(),
                        vendor: input.vendor.clone(),
                        region: input.region.clone(),
                        modified_on: None,
                    },
                );
            }
            s.proven.insert(fp);
        }),
        // The zone is full at its current size: no create is sent until it has room.
        (Err(Problem::ZoneLimitReached { .. }), _) => ctx.zones.update(zone, |s| {
            s.capacity = s.remote.as_ref().map(|m| m.len());
        }),
        (Err(Problem::Unauthorized(_)), _) => ctx.zones.update(zone, |s| {
            s.proven.remove(&fp);
        }),
        // The outcome of a failed call is unknown: read the zone again next time.
        (Err(p), _) if p.action() == Action::Retry => ctx.zones.invalidate(zone),
        (Err(_), _) => {}
    }
}

/// Sends one chunk (all deletes or all upserts) and returns a result per item, in order.
/// A delete of an entry that is already gone counts as done.
async fn call_chunk(
    client: &Client,
    zone: &str,
    chunk: &[(ObjectKey, Write)],
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

/// Holds the IPs of objects released now for their namespace a while, so an object of another
/// namespace does not take them over while the owner is being replaced.
fn remember_releases(ctx: &Context, zone: &str, judgements: &[Judgement]) {
    let released: Vec<(String, String)> = judgements
        .iter()
        .filter_map(|j| match &j.verdict {
            Verdict::Finalize { deleted, kept } => Some(
                deleted
                    .iter()
                    .chain(kept)
                    .filter(|e| e.zone == zone)
                    .map(|e| (e.ip.clone(), j.key.namespace.clone()))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    if released.is_empty() {
        return;
    }
    ctx.zones.update(zone, |s| {
        s.released
            .retain(|_, (_, at)| at.elapsed() < crate::zone_state::RESERVATION);
        for (ip, ns) in released {
            s.released.insert(ip, (ns, Instant::now()));
        }
    });
}

/// Whether this process may write: always without leader election, else it must still hold
/// the Lease right now.
async fn still_leading(ctx: &Context) -> bool {
    match &ctx.lease {
        None => true,
        Some(guard) => guard.holds().await,
    }
}

/// The Lease is gone: write nothing more (not even status, from what may be a stale cache) and
/// come back later; the lease manager stops this process meanwhile.
fn lost_lease(ctx: &Context) -> ZoneOutcome {
    tracing::warn!("this process no longer holds the Lease; not writing");
    ctx.metrics.reconcile("lease-lost");
    ZoneOutcome {
        requeue_after: Some(Duration::from_secs(1)),
        ..Default::default()
    }
}

/// Remembers Cloudflare's terminal answers to upserts, so the next reconcile makes no call for
/// them until the object's generation or credentials change.
fn remember_terminal(
    ctx: &Context,
    members: &[Member],
    judgements: &[Judgement],
    results: &WriteResults,
) {
    let by_key: HashMap<&ObjectKey, &Member> = members.iter().map(|m| (&m.key, m)).collect();
    for j in judgements {
        let Verdict::NotReady(problem) = &j.verdict else {
            continue;
        };
        let attempted = matches!(results.upserts.get(&j.key), Some(Err(p)) if p == problem);
        if !(attempted && problem.is_remembered()) {
            continue;
        }
        let m = by_key[&j.key];
        if let Ok(r) = &m.cred {
            ctx.zones.mark_terminal(
                m.obj.uid(),
                TerminalMark {
                    generation: m.obj.generation(),
                    fingerprint: r.fingerprint,
                    problem: problem.clone(),
                },
            );
        }
    }
}

/// (kube) Writes each object's status, record prune, finalizer removal and Event as its
/// judgement says, each only on change; false when any write failed (the zone then retries).
async fn publish(
    ctx: &Context,
    zone: &str,
    members: &[Member],
    judgements: &[Judgement],
    versions: &HashMap<ObjectKey, String>,
    seen: Seen<'_>,
) -> bool {
    let by_key: HashMap<&ObjectKey, &Member> = members.iter().map(|m| (&m.key, m)).collect();
    let now = Time(jiff::Timestamp::now());
    // A buried object has nothing left to write to: what it still owns is all there is to keep.
    let (buried, live): (Vec<&Judgement>, Vec<&Judgement>) = judgements
        .iter()
        .partition(|j| ctx.tombstones.contains(by_key[&j.key].obj.uid()));
    for j in buried {
        ctx.tombstones
            .settle(by_key[&j.key].obj.uid(), zone, &j.owned);
    }
    let writes = live.into_iter().map(|j| {
        let cached = &by_key[&j.key].obj;
        // Writes are conditional on the version this reconcile last produced (or read).
        let base = versions
            .get(&j.key)
            .cloned()
            .or_else(|| cached.resource_version().map(String::from));
        // Made here, lazily: only the objects being written are ever full at once.
        let now = &now;
        async move {
            let o = cached.to_full();
            publish_one(ctx, zone, &o, base, j, seen, now).await
        }
    });
    bounded(writes, ctx.settings.kube_concurrency)
        .await
        .into_iter()
        .all(|ok| ok)
}

async fn publish_one(
    ctx: &Context,
    zone: &str,
    o: &OriginCloudRegionMapping,
    mut base: Option<String>,
    j: &Judgement,
    seen: Seen<'_>,
    now: &Time,
) -> bool {
    if let Verdict::Finalize { .. } = j.verdict {
        if !o.has_finalizer() {
            return true;
        }
        if !remove_finalizer(ctx, o, base.as_deref()).await {
            return false;
        }
        if let Some(note) = status::finalize_note(j) {
            publish_note(ctx, o, note).await;
        }
        return true;
    }
    let mut note = None;
    if let Some((new, n)) = status::render(o, zone, j, seen, now) {
        if o.status.as_ref() != Some(&new) {
            match write_status(ctx, o, base.as_deref(), &new).await {
                Wrote::Done(Some(v)) => base = Some(v),
                Wrote::Done(None) => return true,
                Wrote::Stale | Wrote::Failed => return false,
            }
        }
        note = n;
    }
    if let Some(entries) = verdict::record_to_prune(&j.record, &j.owned) {
        // The apply owns the finalizer too: a live object keeps it even when the cached copy
        // predates this reconcile's record patch that added it (omitting it would remove it).
        let finalizer = o.metadata.deletion_timestamp.is_none() || o.has_finalizer();
        let wrote = apply_metadata(ctx, o, base.as_deref(), finalizer, &entries, "record").await;
        if !matches!(wrote, Wrote::Done(_)) {
            return false;
        }
    }
    if let Some(note) = note {
        publish_note(ctx, o, note).await;
    }
    true
}

/// (kube, pure decisions) A read of the zone failed: nothing is written to Cloudflare. Every
/// member is planned as blocked by the failure, so owned entries are kept, deletions report
/// `DeletionBlocked` (naming force-orphan) and moves `MoveBlocked`, while objects that need no
/// call (nothing recorded, or orphaning) are still released. Objects Ready for their current
/// generation keep Ready: the outage says nothing about their entries.
async fn fail_zone(
    ctx: &Context,
    zone: &str,
    members: &[Member],
    failure: ZoneFailure,
    kube_ok: bool,
    keep_ready: bool,
) -> ZoneOutcome {
    let snap = Snapshot::default();
    let problem = failure.problem.clone();
    let views = views(members, &snap, |_| None)
        .into_iter()
        .map(|mut v| {
            v.blocked = Some(problem.clone());
            v
        })
        .collect::<Vec<_>>();
    let plan = plan_zone(zone, &views, snap.facts());
    debug_assert!(plan.is_noop(), "a failed zone plans no Cloudflare write");
    let results = WriteResults::default();
    let judgements: Vec<Judgement> = views
        .iter()
        .zip(&plan.objects)
        .zip(members)
        .map(|((v, p), m)| {
            let mut j = verdict::judge(zone, v, p, &results);
            if keep_ready && m.obj.ready_now() && !v.deleting && v.zone_id == zone {
                j.verdict = Verdict::Untouched;
            }
            j
        })
        .collect();
    let seen = Seen {
        remote: &snap.remote,
        catalog: None,
    };
    let versions = HashMap::new();
    let kube_ok = publish(ctx, zone, members, &judgements, &versions, seen).await && kube_ok;
    // A permanent error (a wrong zone id) is retried only at resync or on a change.
    let transient = problem.action() == Action::Retry || !kube_ok;
    next_run(
        ctx,
        zone,
        transient,
        "error",
        &judgements,
        failure.retry_after,
    )
}

fn count_readiness(ctx: &Context, zone: &str, judgements: &[Judgement]) {
    let (mut ready, mut not_ready) = (0i64, 0i64);
    for j in judgements {
        match j.verdict {
            Verdict::Ready { .. } => ready += 1,
            Verdict::NotReady(_) => not_ready += 1,
            _ => {}
        }
    }
    ctx.metrics.set_zone_mappings(zone, ready, not_ready);
}

/// Retry with backoff when `retry`, otherwise come back at the next resync (`settled` names
/// that outcome in metrics); wakes the zones the judgements name.
fn next_run(
    ctx: &Context,
    zone: &str,
    retry: bool,
    settled: &'static str,
    judgements: &[Judgement],
    retry_after: Option<Duration>,
) -> ZoneOutcome {
    let mut wake: Vec<String> = Vec::new();
    for z in judgements.iter().flat_map(|j| &j.wake) {
        if !wake.contains(z) {
            wake.push(z.clone());
        }
    }
    // In place: a copy of the zone's state would copy its whole snapshot to bump a counter.
    let mut failures = 0;
    ctx.zones.update(zone, |s| {
        s.failures = if retry { s.failures + 1 } else { 0 };
        failures = s.failures;
    });
    if retry {
        ctx.metrics.reconcile("retry");
        ZoneOutcome {
            requeue_after: Some(backoff(failures, retry_after)),
            refresh_next: false,
            wake,
            ..Default::default()
        }
    } else {
        ctx.metrics.reconcile(settled);
        ZoneOutcome {
            requeue_after: Some(ctx.settings.resync),
            refresh_next: true,
            wake,
            ..Default::default()
        }
    }
}

/// Records a successful write of ours: its metric, and the version it produced, so a cache
/// that has not shown it yet is noticed.
fn noted(
    ctx: &Context,
    o: &OriginCloudRegionMapping,
    after: &OriginCloudRegionMapping,
    kind: &'static str,
) {
    ctx.metrics.kube_write(kind);
    ctx.zones.note_write(
        &o.uid().unwrap_or_default(),
        o.resource_version(),
        after.resource_version(),
    );
}

/// What one write of ours to an object came to.
enum Wrote {
    /// Written (or, for a status, the object is gone: `None`); the version it produced.
    Done(Option<String>),
    /// Refused because the object changed since the version the write was computed from.
    Stale,
    /// Failed otherwise (refused, or the apiserver unreachable).
    Failed,
}

/// Writes a status by server-side apply, only if the object is still at version `base` (when
/// given): the status records the applied entry, and one computed from a stale copy would
/// also hand the prune that follows a version it never saw.
async fn write_status(
    ctx: &Context,
    o: &OriginCloudRegionMapping,
    base: Option<&str>,
    status: &crate::crd::OriginCloudRegionMappingStatus,
) -> Wrote {
    let body = guarded(apply_body("status", json!(status)), base);
    apply(ctx, o, true, body, "status").await
}

/// Applies the operator's metadata: its finalizer (when `finalizer`) and the ownership record,
/// only if the object is still at version `base` (when given). `kind` names the write in
/// metrics.
async fn apply_metadata(
    ctx: &Context,
    o: &OriginCloudRegionMapping,
    base: Option<&str>,
    finalizer: bool,
    entries: &Entries,
    kind: &'static str,
) -> Wrote {
    let finalizers: &[&str] = if finalizer { &[FINALIZER] } else { &[] };
    let body = metadata_body(o, base, finalizers, entries);
    apply(ctx, o, false, body, kind).await
}

/// One server-side apply of ours, to the object or its status.
async fn apply(
    ctx: &Context,
    o: &OriginCloudRegionMapping,
    status: bool,
    body: serde_json::Value,
    kind: &'static str,
) -> Wrote {
    let api = api_of(ctx, o);
    let params = PatchParams::apply(MANAGER).force();
    let patch = Patch::Apply(&body);
    let applied = if status {
        api.patch_status(&o.name_any(), &params, &patch).await
    } else {
        api.patch(&o.name_any(), &params, &patch).await
    };
    match applied {
        Ok(after) => {
            tracing::debug!(object = %ObjectKey::of(o), write = kind, from = ?o.resource_version(), to = ?after.resource_version(), "written");
            noted(ctx, o, &after, kind);
            Wrote::Done(after.resource_version())
        }
        Err(e) if status && is_not_found(&e) => {
            tracing::debug!(object = %ObjectKey::of(o), write = kind, "the object is gone");
            Wrote::Done(None)
        }
        Err(e) if is_conflict(&e) => {
            tracing::info!(object = %ObjectKey::of(o), write = kind, "the object changed since it was read; planning it again");
            Wrote::Stale
        }
        Err(e) => {
            tracing::warn!(object = %ObjectKey::of(o), error = %e, write = kind, "writing to Kubernetes failed; retrying");
            Wrote::Failed
        }
    }
}

/// Removes the operator's finalizer (and its record) if the object is still at version `base`;
/// true when released or already gone.
///
/// The apply names the object's UID: an apply for an object that is already gone would
/// otherwise be taken as a create (and fail on the required spec), and a same-named object
/// created since must never be touched. The version guard matters as much: a release decided
/// on a copy that predates an intent recorded since would forget an entry we wrote.
async fn remove_finalizer(ctx: &Context, o: &OriginCloudRegionMapping, base: Option<&str>) -> bool {
    ctx.tombstones.releasing(&o.uid().unwrap_or_default());
    let api = api_of(ctx, o);
    let name = o.name_any();
    let patch = metadata_body(o, base, &[], &Entries::new());
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
            tracing::debug!(object = %ObjectKey::of(o), base = ?base, "finalizer removed");
            ctx.metrics.kube_write("finalizer");
            true
        }
        Err(e) if is_not_found(&e) => true,
        // Changed since it was read, or replaced by a new object of the same name (the UID
        // guard): either way the next reconcile decides from a fresher copy.
        Err(e) if is_conflict(&e) => {
            tracing::info!(object = %ObjectKey::of(o), "the object changed since it was read; planning its release again");
            false
        }
        Err(e) => {
            tracing::warn!(object = %ObjectKey::of(o), error = %e, "removing the finalizer failed; retrying");
            false
        }
    }
}

async fn publish_note(ctx: &Context, o: &OriginCloudRegionMapping, note: Note) {
    let event = Event {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.to_string(),
        note: Some(note.text),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    // A Recorder per Event: a shared one caches every Event it sent for 6 minutes (to turn
    // repeats into series) and scans that cache on each publish, ~20 MB for 3,500 objects; the
    // operator already publishes only on change, so the cache would buy nothing.
    let recorder = Recorder::new(ctx.kube.clone(), ctx.reporter.clone());
    match recorder.publish(&event, &o.object_ref(&())).await {
        Ok(()) => ctx.metrics.kube_write("event"),
        Err(e) => {
            tracing::debug!(object = %ObjectKey::of(o), error = %e, "publishing an event failed")
        }
    }
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
    let applied = ownership::applied(o);
    let was_ready = ready_now(o)
        && applied
            .as_ref()
            .is_some_and(|e| e.zone == o.spec.zone_id && Ok(&e.ip) == ip.as_ref());
    ObjectView {
        key: ObjectKey::of(o),
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
        owned: ownership::owned(o),
        recorded: ownership::recorded(o),
        applied,
        was_ready,
        blocked,
        generated: o.is_generated(),
    }
}

/// Ready=True for the object's current generation.
fn ready_now(o: &OriginCloudRegionMapping) -> bool {
    o.ready_condition().is_some_and(|c| c.status == "True")
        && o.status.as_ref().and_then(|s| s.observed_generation) == Some(generation(o))
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

/// The apply body owning exactly `finalizers` and the ownership record on this object. It
/// names the UID so an apply for an object that is gone (or replaced under the same name)
/// fails instead of creating.
fn metadata_body(
    o: &OriginCloudRegionMapping,
    base: Option<&str>,
    finalizers: &[&str],
    entries: &Entries,
) -> serde_json::Value {
    let mut meta = json!({"name": o.name_any(), "uid": o.uid(), "finalizers": finalizers});
    if !entries.is_empty() {
        meta["annotations"] = json!({ ENTRIES_ANNOTATION: ownership::format_entries(entries) });
    }
    guarded(apply_body("metadata", meta), base)
}

/// `body` made conditional on the object still being at version `base` (when given): the one
/// place every write of ours gets its guard against a stale copy.
fn guarded(mut body: serde_json::Value, base: Option<&str>) -> serde_json::Value {
    if let Some(v) = base {
        body["metadata"]["resourceVersion"] = json!(v);
    }
    body
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// 409: a precondition failed (the object changed since the version named, or its UID is not
/// the one named).
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
