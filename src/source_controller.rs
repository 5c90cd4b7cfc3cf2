//! Runs the workload sources: watches Services and/or Gateways, Nodes, CloudflareZones and the
//! mappings it generated into caches, and on every change asks [`crate::source`] what to apply
//! and delete, then does it and tells each workload what happened through Events.
//!
//! Only the sources that are enabled are watched, so a cluster without the Gateway API CRDs
//! runs the Service source (or nothing) without them. The mapping controller then treats a
//! generated mapping like any other: ownership, conflicts and cleanup follow the same rules.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cloud::{self, NodeFacts};
use crate::crd::{OriginCloudRegionMapping, MANAGED_BY, MANAGED_BY_LABEL};
use crate::dns::HostResolver;
use crate::metrics::Metrics;
use crate::ownership::ObjectKey;
use crate::source::{
    self, Address, Desired, Inputs, SourceProblem, Workload, WorkloadKind, WorkloadRef,
    ZONE_ANNOTATION,
};
use crate::zone::CloudflareZone;

/// Field manager of the source's writes to generated mappings.
pub const FIELD_MANAGER: &str = "origin-region-operator-sources";
/// Every workload is looked at again this often, even without a change (a hand-written
/// mapping that blocked a name may have gone).
const RESYNC: Duration = Duration::from_secs(60);
/// Quiet time after a change, so a burst of watch events is one pass.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How long a name found taken by a hand-written mapping is not tried again.
const NAME_TAKEN_TTL: Duration = Duration::from_secs(60);

/// Which sources run, and how.
#[derive(Debug, Clone, Default)]
pub struct SourceConfig {
    /// Read LoadBalancer Services.
    pub services: bool,
    /// Read Gateway API Gateways.
    pub gateways: bool,
    /// DNS server for load-balancer hostnames; the system's when `None`.
    pub dns_server: Option<SocketAddr>,
    /// Watch only this namespace; all when `None`.
    pub namespace: Option<String>,
    /// Name reported on Events.
    pub reporter: String,
}

impl SourceConfig {
    /// Whether any source is enabled.
    pub fn enabled(&self) -> bool {
        self.services || self.gateways
    }
}

/// The Gateway API's Gateway kind.
pub fn gateway_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
    ))
}

struct Caches {
    services: Option<Store<Service>>,
    gateways: Option<Store<DynamicObject>>,
    nodes: Store<Node>,
    zones: Store<CloudflareZone>,
    generated: Store<OriginCloudRegionMapping>,
}

struct Runner {
    kube: kube::Client,
    config: SourceConfig,
    metrics: Arc<Metrics>,
    caches: Caches,
    resolver: HostResolver,
    /// Names found taken by hand-written mappings, until when.
    taken: HashMap<ObjectKey, Instant>,
    /// Problems already told to each workload (by uid), so an Event is sent once per change.
    told: HashMap<String, BTreeSet<(String, String)>>,
    /// The log has said that a kind of workload is not known yet.
    warned_unknown: bool,
}

/// Runs the enabled sources until `stop` resolves; returns at once when none is enabled.
pub async fn run(
    kube: kube::Client,
    config: SourceConfig,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    if !config.enabled() {
        return;
    }
    let notify = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    let strip = crate::controller::strip_for_cache;

    let services = config.services.then(|| {
        let api: Api<Service> = namespaced(&kube, &config.namespace);
        let (store, writer) = reflector::store();
        let s = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(move |s: &mut Service| strip(&mut s.metadata))
            .reflect(writer);
        tasks.push(drive(s, notify.clone(), "Services"));
        store
    });
    let gateways = config.gateways.then(|| {
        let ar = gateway_resource();
        let api: Api<DynamicObject> = match &config.namespace {
            Some(ns) => Api::namespaced_with(kube.clone(), ns, &ar),
            None => Api::all_with(kube.clone(), &ar),
        };
        let writer = reflector::store::Writer::new(ar);
        let store = writer.as_reader();
        let s = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(move |g: &mut DynamicObject| strip(&mut g.metadata))
            .reflect(writer);
        tasks.push(drive(s, notify.clone(), "Gateways"));
        store
    });
    let nodes = {
        let (store, writer) = reflector::store();
        // Only providerID and labels are read; a Node's status (images, conditions) is most of
        // its size and changes every few seconds.
        let s = watcher(Api::<Node>::all(kube.clone()), watcher::Config::default())
            .default_backoff()
            .modify(move |n: &mut Node| {
                strip(&mut n.metadata);
                n.status = None;
            })
            .reflect(writer);
        tasks.push(drive(s, notify.clone(), "Nodes"));
        store
    };
    let zones = {
        let (store, writer) = reflector::store();
        let s = watcher(
            Api::<CloudflareZone>::all(kube.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer);
        tasks.push(drive(s, notify.clone(), "CloudflareZones"));
        store
    };
    let generated = {
        let (store, writer) = reflector::store();
        let api: Api<OriginCloudRegionMapping> = namespaced(&kube, &config.namespace);
        let cfg = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        let s = watcher(api, cfg)
            .default_backoff()
            .modify(move |o: &mut OriginCloudRegionMapping| strip(&mut o.metadata))
            .reflect(writer);
        tasks.push(drive(s, notify.clone(), "generated mappings"));
        store
    };

    let mut runner = Runner {
        resolver: HostResolver::new(config.dns_server),
        kube,
        config,
        metrics,
        caches: Caches {
            services,
            gateways,
            nodes,
            zones,
            generated,
        },
        taken: HashMap::new(),
        told: HashMap::new(),
        warned_unknown: false,
    };
    let mut stop = std::pin::pin!(stop);
    tokio::select! {
        _ = &mut stop => { abort(tasks); return; }
        _ = runner.caches_ready() => {}
    }
    tracing::info!(
        services = runner.config.services,
        gateways = runner.config.gateways,
        "workload sources running"
    );
    let mut wake = Instant::now();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(DEBOUNCE) => {}
        }
        // A pass stopped half-way is safe: every write it makes is idempotent.
        let next_dns = tokio::select! {
            _ = &mut stop => break,
            next = runner.sync() => next,
        };
        let resync = Instant::now() + RESYNC;
        wake = next_dns.map_or(resync, |t| t.min(resync));
    }
    abort(tasks);
}

fn abort(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.abort();
    }
}

fn namespaced<K>(kube: &kube::Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(kube.clone(), ns),
        None => Api::all(kube.clone()),
    }
}

/// Runs a reflector stream, waking the loop on every event.
fn drive<T, S>(stream: S, notify: Arc<Notify>, what: &'static str) -> tokio::task::JoinHandle<()>
where
    S: Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(ev) = s.next().await {
            match ev {
                Ok(_) => notify.notify_one(),
                Err(e) => tracing::warn!(error = %e, "watching {what} failed; retrying"),
            }
        }
    })
}

impl Runner {
    /// Waits for every cache the first pass depends on. Neither CloudflareZones nor Gateways
    /// are waited for: a zone name not known yet holds its workload's mappings as they are,
    /// and so do Gateways until their watch has synced (a cluster without the Gateway API CRDs
    /// still runs the Service source).
    async fn caches_ready(&self) {
        let c = &self.caches;
        let wait = async {
            if let Some(s) = &c.services {
                let _ = s.wait_until_ready().await;
            }
            let _ = c.nodes.wait_until_ready().await;
            let _ = c.generated.wait_until_ready().await;
        };
        let mut wait = std::pin::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => return,
                _ = tokio::time::sleep(Duration::from_secs(30)) => {
                    tracing::warn!("workload sources still waiting for their caches");
                }
            }
        }
    }

    /// Kinds whose watch has not synced yet.
    fn unknown_kinds(&self) -> BTreeSet<WorkloadKind> {
        use futures::FutureExt;
        let mut out = BTreeSet::new();
        if let Some(s) = &self.caches.gateways {
            if s.wait_until_ready().now_or_never().is_none() {
                out.insert(WorkloadKind::Gateway);
            }
        }
        out
    }

    fn workloads(&self) -> Vec<Workload> {
        let mut out = Vec::new();
        if let Some(store) = &self.caches.services {
            out.extend(store.state().iter().filter_map(|s| service_workload(s)));
        }
        if let Some(store) = &self.caches.gateways {
            out.extend(store.state().iter().filter_map(|g| gateway_workload(g)));
        }
        out
    }

    /// One pass; returns when the soonest DNS answer runs out.
    async fn sync(&mut self) -> Option<Instant> {
        let workloads = self.workloads();
        let hosts: BTreeSet<String> = workloads
            .iter()
            .flat_map(|w| &w.addresses)
            .filter_map(|a| match a {
                Address::Hostname(h) => Some(h.clone()),
                Address::Ip(_) => None,
            })
            .collect();
        let answers = self.resolver.answers(&hosts).await;
        let nodes: Vec<NodeFacts> = self
            .caches
            .nodes
            .state()
            .iter()
            .map(|n| cloud::node_facts(n))
            .collect();
        let zones: HashMap<String, String> = self
            .caches
            .zones
            .state()
            .iter()
            .map(|z| (z.name_any(), z.spec.zone_id.clone()))
            .collect();
        let generated = self.caches.generated.state();
        let existing: Vec<source::Existing> = generated
            .iter()
            .filter_map(|o| source::existing_of(o))
            .collect();
        let present: HashSet<ObjectKey> = generated.iter().map(|o| ObjectKey::of(o)).collect();
        let deleting: HashSet<ObjectKey> = generated
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_some())
            .map(|o| ObjectKey::of(o))
            .collect();
        let now = Instant::now();
        self.taken.retain(|_, until| *until > now);
        let hand_written: BTreeSet<ObjectKey> = self.taken.keys().cloned().collect();
        let unknown_kinds = self.unknown_kinds();
        if !unknown_kinds.is_empty() && !self.warned_unknown {
            tracing::warn!(
                "Gateways are not known yet (are the Gateway API CRDs installed?): mappings \
                 generated from Gateways are kept as they are until they are"
            );
            self.warned_unknown = true;
        }
        let mut plan = source::plan(&Inputs {
            workloads: &workloads,
            nodes: &nodes,
            zones: &zones,
            resolved: &answers.addrs,
            resolve_errors: &answers.errors,
            existing: &existing,
            hand_written: &hand_written,
            unknown_kinds: &unknown_kinds,
        });

        let mut notes: Vec<(WorkloadRef, EventType, &'static str, String)> = Vec::new();
        for d in &plan.apply {
            // Wait for a deleting object to go before writing its name again.
            if deleting.contains(&d.key) {
                continue;
            }
            match self.write(d, present.contains(&d.key)).await {
                Ok(created) => {
                    let (reason, verb) = if created {
                        ("MappingCreated", "created")
                    } else {
                        ("MappingUpdated", "updated")
                    };
                    let text = format!(
                        "{verb} mapping {} for {} in zone {} ({} {})",
                        d.key, d.ip, d.zone_id, d.placement.vendor, d.placement.region
                    );
                    tracing::info!(workload = %d.owner.key, mapping = %d.key, "{text}");
                    notes.push((d.owner.clone(), EventType::Normal, reason, text));
                }
                Err(WriteError::NameTaken) => {
                    self.taken.insert(d.key.clone(), now + NAME_TAKEN_TTL);
                    plan.problems.entry(d.owner.clone()).or_default().push(
                        SourceProblem::NameTaken(d.key.to_string(), d.owner.kind.kind()),
                    );
                }
                Err(WriteError::Kube(e)) => {
                    tracing::warn!(mapping = %d.key, error = %e, "writing a generated mapping failed; retrying");
                    notes.push((
                        d.owner.clone(),
                        EventType::Warning,
                        "MappingWriteFailed",
                        format!("writing mapping {} failed: {e}", d.key),
                    ));
                }
            }
        }
        let owners: HashMap<&str, &Workload> =
            workloads.iter().map(|w| (w.uid.as_str(), w)).collect();
        for key in &plan.delete {
            if deleting.contains(key) {
                continue;
            }
            let api: Api<OriginCloudRegionMapping> =
                Api::namespaced(self.kube.clone(), &key.namespace);
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => {
                    self.metrics.kube_write("source");
                    tracing::info!(mapping = %key, "deleted a generated mapping its workload no longer wants");
                    let owner = existing
                        .iter()
                        .find(|e| &e.key == key)
                        .and_then(|e| owners.get(e.owner_uid.as_str()));
                    if let Some(w) = owner {
                        let r = WorkloadRef {
                            kind: w.kind,
                            key: w.key.clone(),
                            uid: w.uid.clone(),
                        };
                        let text = format!("deleted mapping {key}: its address is gone or the zone annotation was removed");
                        notes.push((r, EventType::Normal, "MappingDeleted", text));
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(mapping = %key, error = %e, "deleting a generated mapping failed; retrying")
                }
            }
        }
        for (w, problems) in &plan.problems {
            let now: BTreeSet<(String, String)> = problems
                .iter()
                .map(|p| (p.reason().to_string(), p.to_string()))
                .collect();
            let told = self.told.remove(&w.uid).unwrap_or_default();
            for (reason, text) in now.difference(&told) {
                tracing::warn!(workload = %w.key, kind = w.kind.kind(), reason = %reason, "{text}");
                self.event(w, EventType::Warning, reason, text.clone())
                    .await;
            }
            self.told.insert(w.uid.clone(), now);
        }
        let with_problems: HashSet<&str> = plan.problems.keys().map(|w| w.uid.as_str()).collect();
        self.told
            .retain(|uid, _| with_problems.contains(uid.as_str()));
        for (w, type_, reason, text) in notes {
            self.event(&w, type_, reason, text).await;
        }
        answers.next_refresh
    }

    /// Creates or updates one generated mapping; `Ok(true)` when it was created.
    async fn write(&self, d: &Desired, present: bool) -> Result<bool, WriteError> {
        let api: Api<OriginCloudRegionMapping> =
            Api::namespaced(self.kube.clone(), &d.key.namespace);
        let obj = source::to_object(d);
        if !present {
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match api.create(&pp, &obj).await {
                Ok(_) => {
                    self.metrics.kube_write("source");
                    return Ok(true);
                }
                // Created by an earlier pass the cache has not seen yet, or written by hand.
                Err(kube::Error::Api(e)) if e.code == 409 => match api.get(&d.key.name).await {
                    Ok(o) if o.is_generated() => {}
                    Ok(_) => return Err(WriteError::NameTaken),
                    Err(e) => return Err(WriteError::Kube(e)),
                },
                Err(e) => return Err(WriteError::Kube(e)),
            }
        }
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&d.key.name, &pp, &Patch::Apply(&obj))
            .await
            .map_err(WriteError::Kube)?;
        self.metrics.kube_write("source");
        Ok(false)
    }

    async fn event(&self, w: &WorkloadRef, type_: EventType, reason: &str, note: String) {
        let reporter = Reporter {
            controller: "origin-region-operator".into(),
            instance: Some(self.config.reporter.clone()),
        };
        let recorder = Recorder::new(self.kube.clone(), reporter);
        let reference = ObjectReference {
            api_version: Some(w.kind.api_version().into()),
            kind: Some(w.kind.kind().into()),
            name: Some(w.key.name.clone()),
            namespace: Some(w.key.namespace.clone()),
            uid: Some(w.uid.clone()),
            ..Default::default()
        };
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        match recorder.publish(&event, &reference).await {
            Ok(()) => self.metrics.kube_write("event"),
            Err(e) => tracing::debug!(workload = %w.key, error = %e, "publishing an event failed"),
        }
    }
}

enum WriteError {
    /// A mapping the operator did not generate has the name.
    NameTaken,
    /// The API refused or failed.
    Kube(kube::Error),
}

fn annotations_of(meta: &kube::core::ObjectMeta) -> BTreeMap<String, String> {
    meta.annotations.clone().unwrap_or_default()
}

fn workload_of(
    kind: WorkloadKind,
    meta: &kube::core::ObjectMeta,
    addresses: Vec<Address>,
) -> Option<Workload> {
    let a = annotations_of(meta);
    // Workloads without the annotation are none of our business (their generated mappings,
    // if any, are then no longer wanted and go).
    let zone = a.get(ZONE_ANNOTATION).cloned()?;
    Some(Workload {
        kind,
        key: ObjectKey {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        },
        uid: meta.uid.clone().unwrap_or_default(),
        zone: Some(zone),
        vendor: a.get(source::VENDOR_ANNOTATION).cloned(),
        region: a.get(source::REGION_ANNOTATION).cloned(),
        addresses,
    })
}

/// An annotated Service as a workload; only type LoadBalancer has addresses.
pub fn service_workload(s: &Service) -> Option<Workload> {
    if s.metadata.deletion_timestamp.is_some() {
        return workload_of(WorkloadKind::Service, &s.metadata, vec![]);
    }
    let lb = s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("LoadBalancer");
    let addresses = if lb {
        s.status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ingress| {
                ingress
                    .iter()
                    .filter_map(|i| match (&i.ip, &i.hostname) {
                        (Some(ip), _) if !ip.is_empty() => Some(Address::Ip(ip.clone())),
                        (_, Some(h)) if !h.is_empty() => Some(Address::Hostname(h.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![]
    };
    workload_of(WorkloadKind::Service, &s.metadata, addresses)
}

/// An annotated Gateway as a workload, from `status.addresses`.
pub fn gateway_workload(g: &DynamicObject) -> Option<Workload> {
    let addresses = if g.metadata.deletion_timestamp.is_some() {
        vec![]
    } else {
        g.data
            .pointer("/status/addresses")
            .and_then(|a| a.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|a| {
                        let value = a.get("value")?.as_str()?.to_string();
                        match a
                            .get("type")
                            .and_then(|t| t.as_str())
                            .unwrap_or("IPAddress")
                        {
                            "IPAddress" => Some(Address::Ip(value)),
                            "Hostname" => Some(Address::Hostname(value)),
                            // Implementation-specific types name nothing we can map.
                            _ => None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    workload_of(WorkloadKind::Gateway, &g.metadata, addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_give_addresses_only_as_load_balancers() {
        let mut s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1",
                         "annotations": {ZONE_ANNOTATION: "prod"}},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "203.0.113.7"}, {"hostname": "lb.example.test"}, {}
            ]}}
        }))
        .unwrap();
        let w = service_workload(&s).unwrap();
        assert_eq!(
            w.addresses,
            [
                Address::Ip("203.0.113.7".into()),
                Address::Hostname("lb.example.test".into())
            ]
        );
        assert_eq!(w.zone.as_deref(), Some("prod"));
        s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(service_workload(&s).unwrap().addresses.is_empty());
        s.metadata.annotations = None;
        assert!(service_workload(&s).is_none());
    }

    #[test]
    fn gateways_give_ip_and_hostname_addresses() {
        let g: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "ns", "uid": "u2",
                         "annotations": {ZONE_ANNOTATION: "prod",
                                         source::REGION_ANNOTATION: "eu-west-1"}},
            "status": {"addresses": [
                {"type": "IPAddress", "value": "198.51.100.4"},
                {"value": "198.51.100.5"},
                {"type": "Hostname", "value": "gw.example.test"},
                {"type": "example.com/custom", "value": "x"}
            ]}
        }))
        .unwrap();
        let w = gateway_workload(&g).unwrap();
        assert_eq!(w.kind, WorkloadKind::Gateway);
        assert_eq!(w.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            w.addresses,
            [
                Address::Ip("198.51.100.4".into()),
                Address::Ip("198.51.100.5".into()),
                Address::Hostname("gw.example.test".into())
            ]
        );
    }
}
