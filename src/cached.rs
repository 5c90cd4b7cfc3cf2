//! The compact copy of a mapping that the operator's watch cache keeps.
//!
//! The cache holds every watched object for the life of the process, so its size is the
//! operator's memory at scale: a full `OriginCloudRegionMapping` is ~2.3 KB of heap (an
//! `ObjectMeta` of mostly empty options, a B-tree node for a one-entry annotation map, some
//! twenty small strings), this form under half of that, with the strings many objects repeat
//! shared (see `intern`). It keeps exactly what the reconciler reads, and a reconcile turns a
//! cached object back into a full one only while it works on that object.
//!
//! Dropped on the way in: managedFields and kubectl's last-applied copy (never read),
//! ownerReferences, generateName, selfLink and the deletion grace period (nothing in a
//! reconcile reads them; the sources keep their own cache of the objects they generate).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::ObjectMeta;
use kube::runtime::watcher::Event;

use crate::crd::{
    DeletionPolicy, OriginCloudRegionMapping, OriginCloudRegionMappingSpec,
    OriginCloudRegionMappingStatus, SecretReference, FINALIZER, FORCE_ORPHAN_ANNOTATION, READY,
};
use crate::intern;
use crate::ownership::{self, Entries, ObjectKey, ENTRIES_ANNOTATION};

/// Labels or annotations: a map of a few entries as one small slice, keys shared.
type Pairs = Option<Box<[(Arc<str>, Box<str>)]>>;

/// A mapping as the watch cache keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedMapping {
    name: Option<Box<str>>,
    namespace: Option<Arc<str>>,
    uid: Option<Box<str>>,
    version: Option<Box<str>>,
    generation: Option<i64>,
    created: Option<Time>,
    deleted: Option<Time>,
    finalizers: Option<Arc<[String]>>,
    labels: Pairs,
    annotations: Pairs,
    spec: Spec,
    status: Option<Box<Status>>,
}

#[derive(Clone, Debug, PartialEq)]
struct Spec {
    zone_id: Arc<str>,
    origin_ip: Arc<str>,
    vendor: Arc<str>,
    region: Arc<str>,
    secret: Option<Box<str>>,
    deletion_policy: DeletionPolicy,
}

#[derive(Clone, Debug, PartialEq)]
struct Status {
    observed_generation: Option<i64>,
    zone_id: Option<Arc<str>>,
    origin_ip: Option<Arc<str>>,
    vendor: Option<Arc<str>>,
    region: Option<Arc<str>>,
    colos: Option<Arc<[String]>>,
    last_sync_time: Option<Time>,
    conditions: Box<[Cond]>,
}

#[derive(Clone, Debug, PartialEq)]
struct Cond {
    type_: Arc<str>,
    status: Arc<str>,
    reason: Arc<str>,
    message: Box<str>,
    last_transition_time: Time,
    observed_generation: Option<i64>,
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Box::from)
}

fn pairs(m: &Option<BTreeMap<String, String>>) -> Pairs {
    m.as_ref().map(|m| {
        m.iter()
            .map(|(k, v)| (intern::string(k), Box::from(v.as_str())))
            .collect()
    })
}

fn map(p: &Pairs) -> Option<BTreeMap<String, String>> {
    p.as_ref().map(|p| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// The spec's IP when `ip` spells it the same (the usual case), so the two share one copy.
fn same_or_new(ip: &str, spec_ip: &Arc<str>) -> Arc<str> {
    if &**spec_ip == ip {
        spec_ip.clone()
    } else {
        Arc::from(ip)
    }
}

impl From<&OriginCloudRegionMapping> for CachedMapping {
    fn from(o: &OriginCloudRegionMapping) -> Self {
        let m = &o.metadata;
        let spec = Spec {
            zone_id: intern::string(&o.spec.zone_id),
            origin_ip: Arc::from(o.spec.origin_ip.as_str()),
            vendor: intern::string(&o.spec.vendor),
            region: intern::string(&o.spec.region),
            secret: o
                .spec
                .credentials_secret_ref
                .as_ref()
                .map(|r| Box::from(r.name.as_str())),
            deletion_policy: o.spec.deletion_policy,
        };
        let status = o.status.as_ref().map(|s| {
            Box::new(Status {
                observed_generation: s.observed_generation,
                zone_id: s.zone_id.as_deref().map(intern::string),
                origin_ip: s
                    .origin_ip
                    .as_deref()
                    .map(|ip| same_or_new(ip, &spec.origin_ip)),
                vendor: s.vendor.as_deref().map(intern::string),
                region: s.region.as_deref().map(intern::string),
                colos: s.upper_tier_colos.as_deref().map(intern::list),
                last_sync_time: s.last_sync_time.clone(),
                conditions: s
                    .conditions
                    .iter()
                    .map(|c| Cond {
                        type_: intern::string(&c.type_),
                        status: intern::string(&c.status),
                        reason: intern::string(&c.reason),
                        message: Box::from(c.message.as_str()),
                        last_transition_time: c.last_transition_time.clone(),
                        observed_generation: c.observed_generation,
                    })
                    .collect(),
            })
        });
        CachedMapping {
            name: boxed(&m.name),
            namespace: m.namespace.as_deref().map(intern::string),
            uid: boxed(&m.uid),
            version: boxed(&m.resource_version),
            generation: m.generation,
            created: m.creation_timestamp.clone(),
            deleted: m.deletion_timestamp.clone(),
            finalizers: m.finalizers.as_deref().map(intern::list),
            labels: pairs(&m.labels),
            annotations: pairs(&m.annotations),
            spec,
            status,
        }
    }
}

impl CachedMapping {
    /// The full object again, as the reconciler's builders take it (without the fields this
    /// form drops).
    pub fn to_full(&self) -> OriginCloudRegionMapping {
        let metadata = ObjectMeta {
            name: self.name.as_deref().map(String::from),
            namespace: self.namespace.as_deref().map(String::from),
            uid: self.uid.as_deref().map(String::from),
            resource_version: self.version.as_deref().map(String::from),
            generation: self.generation,
            creation_timestamp: self.created.clone(),
            deletion_timestamp: self.deleted.clone(),
            finalizers: self.finalizers.as_deref().map(<[String]>::to_vec),
            labels: map(&self.labels),
            annotations: map(&self.annotations),
            ..ObjectMeta::default()
        };
        let s = &self.spec;
        let spec = OriginCloudRegionMappingSpec {
            zone_id: s.zone_id.to_string(),
            origin_ip: s.origin_ip.to_string(),
            vendor: s.vendor.to_string(),
            region: s.region.to_string(),
            credentials_secret_ref: s.secret.as_deref().map(|n| SecretReference {
                name: n.to_string(),
            }),
            deletion_policy: s.deletion_policy,
        };
        let status = self
            .status
            .as_deref()
            .map(|s| OriginCloudRegionMappingStatus {
                observed_generation: s.observed_generation,
                zone_id: s.zone_id.as_deref().map(String::from),
                origin_ip: s.origin_ip.as_deref().map(String::from),
                vendor: s.vendor.as_deref().map(String::from),
                region: s.region.as_deref().map(String::from),
                upper_tier_colos: s.colos.as_deref().map(<[String]>::to_vec),
                last_sync_time: s.last_sync_time.clone(),
                conditions: s
                    .conditions
                    .iter()
                    .map(|c| Condition {
                        type_: c.type_.to_string(),
                        status: c.status.to_string(),
                        reason: c.reason.to_string(),
                        message: c.message.to_string(),
                        last_transition_time: c.last_transition_time.clone(),
                        observed_generation: c.observed_generation,
                    })
                    .collect(),
            });
        OriginCloudRegionMapping {
            metadata,
            spec,
            status,
        }
    }

    /// Namespace and name.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            namespace: self.namespace().to_string(),
            name: self.name.as_deref().unwrap_or_default().to_string(),
        }
    }

    /// The name ("" when unset).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// The namespace ("" when unset).
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    /// The UID ("" when unset).
    pub fn uid(&self) -> &str {
        self.uid.as_deref().unwrap_or_default()
    }

    /// The resourceVersion this copy was read at.
    pub fn resource_version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// metadata.generation (0 when unset).
    pub fn generation(&self) -> i64 {
        self.generation.unwrap_or_default()
    }

    /// Whether the object is being deleted.
    pub fn deleting(&self) -> bool {
        self.deleted.is_some()
    }

    /// The zone the spec names.
    pub fn zone_id(&self) -> &str {
        &self.spec.zone_id
    }

    /// The Secret the spec names for credentials, if any.
    pub fn secret_ref(&self) -> Option<&str> {
        self.spec.secret.as_deref()
    }

    /// Whether the object carries the operator's finalizer.
    pub fn has_finalizer(&self) -> bool {
        self.finalizers
            .as_deref()
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
    }

    /// Whether a person asked to release the object without remote cleanup.
    pub fn force_orphan(&self) -> bool {
        self.annotation(FORCE_ORPHAN_ANNOTATION) == Some("true")
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        let a = self.annotations.as_deref()?;
        a.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }

    /// Entries recorded in the ownership annotation.
    pub fn recorded(&self) -> Entries {
        self.annotation(ENTRIES_ANNOTATION)
            .map(ownership::parse_entries)
            .unwrap_or_default()
    }

    /// Ready=True for the object's current generation.
    pub fn ready_now(&self) -> bool {
        self.status.as_deref().is_some_and(|s| {
            s.observed_generation == Some(self.generation())
                && s.conditions
                    .iter()
                    .find(|c| &*c.type_ == READY)
                    .is_some_and(|c| &*c.status == "True")
        })
    }

    /// The entry last confirmed applied (status), as the full object's would be.
    fn applied_zone(&self) -> Option<&str> {
        let s = self.status.as_deref()?;
        s.origin_ip.as_ref()?;
        s.zone_id.as_deref()
    }

    /// Zones in which the object owns an entry (recorded or applied).
    pub fn owned_zones(&self) -> BTreeSet<String> {
        let mut zones: BTreeSet<String> = self.recorded().into_iter().map(|e| e.zone).collect();
        zones.extend(self.applied_zone().map(String::from));
        zones
    }

    /// Whether the object names `zone` in its spec or owns an entry there: whether it is one
    /// of the zone's members.
    pub fn in_zone(&self, zone: &str) -> bool {
        if &*self.spec.zone_id == zone {
            return true;
        }
        if self.applied_zone() == Some(zone) {
            return true;
        }
        // Parsing only when the text could name the zone: this runs over every cached
        // object for every zone reconciled.
        self.annotation(ENTRIES_ANNOTATION).is_some_and(|v| {
            let z = zone.as_bytes();
            v.as_bytes()
                .windows(z.len().max(1))
                .any(|w| w.eq_ignore_ascii_case(z))
                && self.recorded().iter().any(|e| e.zone == zone)
        })
    }
}

/// The watch cache of mappings: every watched object, in its compact form.
///
/// kube's reflector store keys each object by an `ObjectRef` holding four more strings and
/// ~100 bytes of table slot (~11 MB at 35,000 objects); here the table holds only the shared
/// pointers, found by hashing the objects' own namespace and name.
#[derive(Clone)]
pub struct MappingCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    objects: RwLock<HashTable<Arc<CachedMapping>>>,
    hasher: RandomState,
    ready: tokio::sync::watch::Sender<bool>,
}

impl Default for MappingCache {
    fn default() -> Self {
        MappingCache {
            inner: Arc::new(CacheInner {
                objects: RwLock::new(HashTable::new()),
                hasher: RandomState::new(),
                ready: tokio::sync::watch::Sender::new(false),
            }),
        }
    }
}

fn insert(table: &mut HashTable<Arc<CachedMapping>>, hasher: &RandomState, o: Arc<CachedMapping>) {
    let hash = hasher.hash_one((o.namespace(), o.name()));
    let same = |x: &Arc<CachedMapping>| x.namespace() == o.namespace() && x.name() == o.name();
    match table.find_mut(hash, same) {
        Some(slot) => *slot = o,
        None => {
            table.insert_unique(hash, o, |x| hasher.hash_one((x.namespace(), x.name())));
        }
    }
}

impl MappingCache {
    /// Every cached object.
    pub fn state(&self) -> Vec<Arc<CachedMapping>> {
        let objects = self.inner.objects.read().unwrap_or_else(|e| e.into_inner());
        objects.iter().cloned().collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.inner
            .objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached object `namespace/name`, if any.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CachedMapping>> {
        let objects = self.inner.objects.read().unwrap_or_else(|e| e.into_inner());
        let hash = self.inner.hasher.hash_one((namespace, name));
        objects
            .find(hash, |x| x.namespace() == namespace && x.name() == name)
            .cloned()
    }

    /// Resolves once the first complete list is in.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.inner.ready.subscribe();
        // The sender lives in the cache itself, so this cannot fail.
        let _ = ready.wait_for(|r| *r).await;
    }

    /// The writer that feeds this cache from the watch (one per cache).
    pub fn writer(&self) -> CacheWriter {
        CacheWriter {
            cache: self.clone(),
            listing: None,
        }
    }
}

/// Applies watch events to a [`MappingCache`]; a (re-)list is gathered aside and replaces the
/// cache whole when complete, so objects deleted meanwhile disappear.
pub struct CacheWriter {
    cache: MappingCache,
    listing: Option<HashTable<Arc<CachedMapping>>>,
}

impl CacheWriter {
    /// Applies one watch event.
    pub fn apply(&mut self, ev: &Event<OriginCloudRegionMapping>) {
        let inner = &self.cache.inner;
        match ev {
            Event::Apply(o) => {
                let mut objects = inner.objects.write().unwrap_or_else(|e| e.into_inner());
                insert(&mut objects, &inner.hasher, Arc::new(o.into()));
            }
            Event::Delete(o) => {
                let (ns, name) = (o.metadata.namespace.as_deref(), o.metadata.name.as_deref());
                let (ns, name) = (ns.unwrap_or_default(), name.unwrap_or_default());
                let mut objects = inner.objects.write().unwrap_or_else(|e| e.into_inner());
                let hash = inner.hasher.hash_one((ns, name));
                if let Ok(entry) =
                    objects.find_entry(hash, |x| x.namespace() == ns && x.name() == name)
                {
                    entry.remove();
                }
            }
            Event::Init => self.listing = Some(HashTable::new()),
            Event::InitApply(o) => {
                let listing = self.listing.get_or_insert_with(HashTable::new);
                insert(listing, &inner.hasher, Arc::new(o.into()));
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                *inner.objects.write().unwrap_or_else(|e| e.into_inner()) = listed;
                inner.ready.send_replace(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ZONES: [&str; 3] = [
        "023e105f4ecef8ad9ca31a8372d0c353",
        "1f8c1b2d3e4f5a6b7c8d9e0f1a2b3c4d",
        "ffffffffffffffffffffffffffffffff",
    ];

    fn zone() -> impl Strategy<Value = String> {
        prop::sample::select(&ZONES[..]).prop_map(String::from)
    }

    fn time() -> impl Strategy<Value = Time> {
        (0i64..2_000_000_000).prop_map(|s| Time(jiff::Timestamp::from_second(s).unwrap()))
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-z0-9./:-]{0,12}"
    }

    /// Record tokens as people and the operator write them: valid, upper-case, junk.
    fn record() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            (zone(), 0u8..4).prop_map(|(z, i)| format!("{z}/192.0.2.{i}")),
            (zone(), 0u8..4).prop_map(|(z, i)| format!("{}/2001:DB8::{i}", z.to_uppercase())),
            text(),
        ];
        prop::collection::vec(token, 0..4).prop_map(|t| t.join(" "))
    }

    fn map(
        extra: impl Strategy<Value = (String, String)>,
    ) -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
        let pairs = (
            prop::collection::btree_map(text(), text(), 0..3),
            prop::collection::vec(extra, 0..2),
        );
        prop::option::of(pairs.prop_map(|(mut m, extra)| {
            m.extend(extra);
            m
        }))
    }

    fn condition() -> impl Strategy<Value = Condition> {
        (
            prop::sample::select(vec!["Ready", "Other"]),
            prop::sample::select(vec!["True", "False", "Unknown"]),
            text(),
            text(),
            time(),
            prop::option::of(0i64..4),
        )
            .prop_map(|(t, s, reason, message, at, g)| Condition {
                type_: t.into(),
                status: s.into(),
                reason,
                message,
                last_transition_time: at,
                observed_generation: g,
            })
    }

    fn status() -> impl Strategy<Value = OriginCloudRegionMappingStatus> {
        (
            prop::option::of(0i64..4),
            prop::option::of(zone()),
            prop::option::of(prop::sample::select(vec![
                "192.0.2.1",
                "192.0.2.2",
                "2001:db8::1",
            ])),
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(prop::collection::vec("[A-Z]{3}", 0..3)),
            prop::option::of(time()),
            prop::collection::vec(condition(), 0..3),
        )
            .prop_map(|(g, z, ip, v, r, colos, sync, conditions)| {
                OriginCloudRegionMappingStatus {
                    observed_generation: g,
                    zone_id: z,
                    origin_ip: ip.map(String::from),
                    vendor: v,
                    region: r,
                    upper_tier_colos: colos,
                    last_sync_time: sync,
                    conditions,
                }
            })
    }

    prop_compose! {
        fn mapping()(
            name in prop::option::of("[a-z]{1,8}"),
            namespace in prop::option::of("[a-z]{1,8}"),
            uid in prop::option::of("[a-f0-9-]{36}"),
            version in prop::option::of("[0-9]{1,8}"),
            generation in prop::option::of(0i64..4),
            created in prop::option::of(time()),
            deleted in prop::option::of(time()),
            finalizers in prop::option::of(prop::collection::vec(
                prop::sample::select(vec![FINALIZER, "other.io/hold", "x"]).prop_map(String::from), 0..3)),
            labels in map((text(), text())),
            annotations in map(prop_oneof![
                record().prop_map(|r| (ENTRIES_ANNOTATION.to_string(), r)),
                prop::sample::select(vec!["true", "false"])
                    .prop_map(|v| (FORCE_ORPHAN_ANNOTATION.to_string(), v.to_string())),
            ]),
            zone_id in zone(),
            origin_ip in prop::sample::select(vec!["192.0.2.1", "192.0.2.01", "2001:DB8::1", "junk"]),
            vendor in text(),
            region in text(),
            secret in prop::option::of("[a-z]{1,8}"),
            orphan in any::<bool>(),
            status in prop::option::of(status()),
        ) -> OriginCloudRegionMapping {
            OriginCloudRegionMapping {
                metadata: ObjectMeta {
                    name, namespace, uid, resource_version: version, generation,
                    creation_timestamp: created, deletion_timestamp: deleted,
                    finalizers, labels, annotations, ..ObjectMeta::default()
                },
                spec: OriginCloudRegionMappingSpec {
                    zone_id, origin_ip: origin_ip.into(), vendor, region,
                    credentials_secret_ref: secret.map(|name| SecretReference { name }),
                    deletion_policy: if orphan { DeletionPolicy::Orphan } else { DeletionPolicy::Delete },
                },
                status,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_compact_form_keeps_everything_a_reconcile_reads(o in mapping()) {
            let c = CachedMapping::from(&o);
            prop_assert_eq!(serde_json::to_value(c.to_full()).unwrap(), serde_json::to_value(&o).unwrap());
            prop_assert_eq!(c.key(), ObjectKey::of(&o));
            prop_assert_eq!(c.recorded(), ownership::recorded(&o));
            prop_assert_eq!(c.owned_zones(), ownership::owned_zones(&o));
            prop_assert_eq!(c.has_finalizer(), o.has_finalizer());
            prop_assert_eq!(c.force_orphan(), o.force_orphan());
            let ready = o.ready_condition().is_some_and(|c| c.status == "True")
                && o.status.as_ref().and_then(|s| s.observed_generation)
                    == Some(o.metadata.generation.unwrap_or_default());
            prop_assert_eq!(c.ready_now(), ready);
            for z in ZONES {
                let member = o.spec.zone_id == z || ownership::owned_zones(&o).contains(z);
                prop_assert_eq!(c.in_zone(z), member, "zone {}", z);
            }
        }
    }

    fn named(ns: &str, name: &str, version: &str) -> OriginCloudRegionMapping {
        let mut o = OriginCloudRegionMapping::new(
            name,
            OriginCloudRegionMappingSpec {
                zone_id: ZONES[0].into(),
                origin_ip: "192.0.2.1".into(),
                vendor: "aws".into(),
                region: "us-east-1".into(),
                credentials_secret_ref: None,
                deletion_policy: DeletionPolicy::Delete,
            },
        );
        o.metadata.namespace = Some(ns.into());
        o.metadata.resource_version = Some(version.into());
        o
    }

    #[tokio::test]
    async fn the_cache_follows_the_watch_and_a_relist_replaces_it_whole() {
        let cache = MappingCache::default();
        let mut w = cache.writer();
        let waiting = tokio::spawn({
            let cache = cache.clone();
            async move { cache.wait_until_ready().await }
        });
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(named("a", "x", "1")));
        w.apply(&Event::InitApply(named("b", "x", "2")));
        assert!(
            cache.is_empty(),
            "nothing is visible before the list is complete"
        );
        assert!(!waiting.is_finished());
        w.apply(&Event::InitDone);
        waiting.await.unwrap();
        assert_eq!(cache.len(), 2);
        // Same name in another namespace is another object; an update replaces in place.
        w.apply(&Event::Apply(named("a", "x", "3")));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a", "x").unwrap().resource_version(), Some("3"));
        assert_eq!(cache.get("b", "x").unwrap().resource_version(), Some("2"));
        w.apply(&Event::Delete(named("b", "x", "4")));
        assert!(cache.get("b", "x").is_none());
        assert_eq!(cache.len(), 1);
        // A re-list after a lost watch: what it does not show is gone, the rest updated.
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(named("c", "y", "9")));
        assert_eq!(cache.get("a", "x").unwrap().resource_version(), Some("3"));
        w.apply(&Event::InitDone);
        assert!(cache.get("a", "x").is_none());
        assert_eq!(cache.state().len(), 1);
        assert_eq!(cache.state()[0].key().to_string(), "c/y");
        cache.wait_until_ready().await;
    }

    #[test]
    fn fields_no_reconcile_reads_are_dropped() {
        let mut o = named("n", "a", "1");
        o.metadata.generate_name = Some("a-".into());
        o.metadata.self_link = Some("/x".into());
        o.metadata.deletion_grace_period_seconds = Some(30);
        o.metadata.owner_references = Some(vec![Default::default()]);
        let back = CachedMapping::from(&o).to_full();
        assert_eq!(back.metadata.generate_name, None);
        assert_eq!(back.metadata.owner_references, None);
        assert_eq!(back.spec, o.spec);
    }
}
