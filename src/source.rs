//! Mappings from workloads: an annotated LoadBalancer Service or Gateway becomes one
//! `OriginCloudRegionMapping` per load-balancer address, in its namespace and owned by it.
//! Pure: the workloads, the Nodes' placement, the zones and the resolved hostnames in; the
//! mappings to apply and to delete, and each workload's problems, out. The controller that
//! feeds it and applies its answer lives in [`crate::source_controller`].
//!
//! The rule that keeps production safe: a workload whose desired set cannot be fully known
//! (zone unknown, cluster placement ambiguous, a hostname not resolved yet) keeps every mapping
//! it has. Only a workload whose whole answer is known loses the mappings it no longer wants.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::cloud::{self, NodeFacts, Placement};
use crate::crd::{
    DeletionPolicy, OriginCloudRegionMapping, OriginCloudRegionMappingSpec, MANAGED_BY,
    MANAGED_BY_LABEL, SOURCE_KIND_LABEL, SOURCE_NAME_LABEL, SOURCE_UID_LABEL,
};
use crate::ownership::ObjectKey;

/// Annotation that opts a workload in: a CloudflareZone's name or a zone id.
pub const ZONE_ANNOTATION: &str = "originregions.io/zone";
/// Annotation that overrides the vendor read from the Nodes.
pub const VENDOR_ANNOTATION: &str = "originregions.io/vendor";
/// Annotation that overrides the region read from the Nodes.
pub const REGION_ANNOTATION: &str = "originregions.io/region";

/// Kinds of workload that carry load-balancer addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    /// A core/v1 Service of type LoadBalancer.
    Service,
    /// A gateway.networking.k8s.io/v1 Gateway.
    Gateway,
}

impl WorkloadKind {
    /// The kind as Kubernetes spells it.
    pub fn kind(self) -> &'static str {
        match self {
            WorkloadKind::Service => "Service",
            WorkloadKind::Gateway => "Gateway",
        }
    }

    /// The apiVersion of the kind, for ownerReferences.
    pub fn api_version(self) -> &'static str {
        match self {
            WorkloadKind::Service => "v1",
            WorkloadKind::Gateway => "gateway.networking.k8s.io/v1",
        }
    }

    /// Prefix of generated mapping names.
    fn prefix(self) -> &'static str {
        match self {
            WorkloadKind::Service => "svc",
            WorkloadKind::Gateway => "gw",
        }
    }
}

/// One address a load balancer publishes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Address {
    /// An IP address, as the status spells it.
    Ip(String),
    /// A DNS name (AWS ELBs publish one instead of an IP).
    Hostname(String),
}

/// What the index needs to know about one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Which kind.
    pub kind: WorkloadKind,
    /// Namespace and name.
    pub key: ObjectKey,
    /// uid, for ownerReferences and the owner label.
    pub uid: String,
    /// Value of [`ZONE_ANNOTATION`], when the workload opts in.
    pub zone: Option<String>,
    /// Value of [`VENDOR_ANNOTATION`].
    pub vendor: Option<String>,
    /// Value of [`REGION_ANNOTATION`].
    pub region: Option<String>,
    /// Published addresses (empty for a Service that is not of type LoadBalancer).
    pub addresses: Vec<Address>,
}

/// A mapping the index found, generated earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// Namespace and name.
    pub key: ObjectKey,
    /// The owner's uid, from [`SOURCE_UID_LABEL`].
    pub owner_uid: String,
    /// The owner's kind, from [`SOURCE_KIND_LABEL`].
    pub owner_kind: Option<WorkloadKind>,
    /// The mapping's spec as it stands.
    pub spec: (String, String, String, String),
    /// Ready=False with a reason: (reason, message), to tell the workload.
    pub not_ready: Option<(String, String)>,
}

/// A mapping the index wants to exist, exactly so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Namespace and name.
    pub key: ObjectKey,
    /// The workload it comes from.
    pub owner: WorkloadRef,
    /// Zone id.
    pub zone_id: String,
    /// Canonical IP.
    pub ip: String,
    /// Where the load balancer runs.
    pub placement: Placement,
}

/// Identity of a workload, for ownerReferences and Events.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    /// Kind.
    pub kind: WorkloadKind,
    /// Namespace and name.
    pub key: ObjectKey,
    /// uid.
    pub uid: String,
}

/// Why a workload's mappings cannot be computed (or not all of them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceProblem {
    /// The zone annotation names neither a zone id nor a CloudflareZone.
    #[error("annotation originregions.io/zone is {0:?}: not a zone id (32 lowercase hex) and no CloudflareZone has that name")]
    ZoneUnknown(String),
    /// The Nodes give no single vendor and region.
    #[error("{0}")]
    Placement(#[from] cloud::PlacementError),
    /// A load-balancer hostname has not resolved (yet).
    #[error(
        "load-balancer hostname {host:?} did not resolve: {why}; its mappings are kept as they are"
    )]
    Unresolved {
        /// The hostname.
        host: String,
        /// The resolver's answer.
        why: String,
    },
    /// A published address is not a usable IP.
    #[error("load-balancer address {0:?} is not a valid IP address; it is skipped")]
    BadAddress(String),
    /// The derived name is taken by a mapping the operator did not generate.
    #[error("mapping {0} already exists and was not generated from this {1}; it is left alone (rename it or remove the zone annotation)")]
    NameTaken(String, &'static str),
    /// A generated mapping of this workload is not Ready.
    #[error("mapping {key}: {reason}: {message}")]
    MappingNotReady {
        /// The mapping.
        key: String,
        /// Its Ready reason.
        reason: String,
        /// Its Ready message.
        message: String,
    },
}

impl SourceProblem {
    /// Reason for the workload's Event.
    pub fn reason(&self) -> &str {
        match self {
            SourceProblem::ZoneUnknown(_) => "ZoneUnknown",
            SourceProblem::Placement(cloud::PlacementError::SeveralRegions(_))
            | SourceProblem::Placement(cloud::PlacementError::SeveralVendors(_)) => {
                "PlacementAmbiguous"
            }
            SourceProblem::Placement(_) => "PlacementUnknown",
            SourceProblem::Unresolved { .. } => "HostnameUnresolved",
            SourceProblem::BadAddress(_) => "InvalidAddress",
            SourceProblem::NameTaken(..) => "NameTaken",
            SourceProblem::MappingNotReady { reason, .. } => reason,
        }
    }
}

/// Everything the index reads.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Workloads of the enabled sources (annotated or not: a removed annotation is a change).
    pub workloads: &'a [Workload],
    /// Every Node.
    pub nodes: &'a [NodeFacts],
    /// CloudflareZone name → zone id.
    pub zones: &'a HashMap<String, String>,
    /// Hostname → its addresses as last resolved (absent: never resolved).
    pub resolved: &'a HashMap<String, Vec<IpAddr>>,
    /// Hostname → why its latest lookup failed.
    pub resolve_errors: &'a HashMap<String, String>,
    /// Generated mappings that exist.
    pub existing: &'a [Existing],
    /// Every mapping that exists and was not generated (names the index must not take).
    pub hand_written: &'a BTreeSet<ObjectKey>,
    /// Kinds whose workloads are not known yet (their watch has not synced, e.g. the Gateway
    /// API CRDs are missing): their mappings are kept as they are.
    pub unknown_kinds: &'a BTreeSet<WorkloadKind>,
}

/// What to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SourcePlan {
    /// Mappings to create or change (absent or different from what exists).
    pub apply: Vec<Desired>,
    /// Generated mappings no workload wants any more.
    pub delete: Vec<ObjectKey>,
    /// Each workload's problems, to report as Events.
    pub problems: BTreeMap<WorkloadRef, Vec<SourceProblem>>,
}

/// The zone id an annotation names.
pub fn zone_id(annotation: &str, zones: &HashMap<String, String>) -> Option<String> {
    let a = annotation.trim();
    if a.len() == 32
        && a.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Some(a.to_string());
    }
    zones.get(a).cloned()
}

/// The stable name of the mapping for `ip` of a workload: readable, a valid object name, and
/// different for every (kind, workload, IP).
pub fn mapping_name(kind: WorkloadKind, workload: &str, ip: &IpAddr) -> String {
    let slug: String = ip
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    // An IPv6 address ending in "::" would end the name in '-', which names refuse.
    let slug = if slug.ends_with('-') {
        format!("{slug}0")
    } else {
        slug
    };
    let name = format!("{}-{workload}-{slug}", kind.prefix());
    if name.len() <= 253 {
        return name;
    }
    // Too long: keep the start readable and make it unique with a hash of the whole.
    let hash = fnv1a(name.as_bytes());
    let keep = 253 - 1 - 16 - slug.len() - 1;
    let head = name[..keep].trim_end_matches(['-', '.']);
    format!("{head}-{hash:016x}-{slug}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Computes what to apply and delete.
pub fn plan(inputs: &Inputs) -> SourcePlan {
    let mut out = SourcePlan::default();
    let mut wanted: BTreeSet<&ObjectKey> = BTreeSet::new();
    let mut wanted_keys: Vec<ObjectKey> = Vec::new();
    let mut held: BTreeSet<&str> = BTreeSet::new();
    let existing: HashMap<&ObjectKey, &Existing> =
        inputs.existing.iter().map(|e| (&e.key, e)).collect();

    for w in inputs.workloads {
        let owner = WorkloadRef {
            kind: w.kind,
            key: w.key.clone(),
            uid: w.uid.clone(),
        };
        let mut problems = Vec::new();
        let Some(zone_annotation) = w.zone.as_deref().filter(|z| !z.trim().is_empty()) else {
            continue;
        };
        let Some(zone_id) = zone_id(zone_annotation, inputs.zones) else {
            problems.push(SourceProblem::ZoneUnknown(zone_annotation.to_string()));
            held.insert(w.uid.as_str());
            out.problems.insert(owner, problems);
            continue;
        };
        let placement = match cloud::placement(
            inputs.nodes,
            w.vendor.as_deref().filter(|v| !v.trim().is_empty()),
            w.region.as_deref().filter(|r| !r.trim().is_empty()),
        ) {
            Ok(p) => p,
            Err(e) => {
                problems.push(e.into());
                held.insert(w.uid.as_str());
                out.problems.insert(owner, problems);
                continue;
            }
        };
        let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
        for a in &w.addresses {
            match a {
                Address::Ip(s) => match crate::ip::parse(s) {
                    Ok(ip) => {
                        ips.insert(ip);
                    }
                    Err(_) => problems.push(SourceProblem::BadAddress(s.clone())),
                },
                Address::Hostname(h) => {
                    // The last good answer still counts; a failed lookup holds the rest.
                    if let Some(addrs) = inputs.resolved.get(h) {
                        ips.extend(addrs.iter().copied());
                    }
                    let why = inputs.resolve_errors.get(h);
                    if why.is_some() || !inputs.resolved.contains_key(h) {
                        problems.push(SourceProblem::Unresolved {
                            host: h.clone(),
                            why: why.cloned().unwrap_or_else(|| "no answer yet".into()),
                        });
                        held.insert(w.uid.as_str());
                    }
                }
            }
        }
        for ip in ips {
            let canonical = ip.to_string();
            let key = ObjectKey {
                namespace: w.key.namespace.clone(),
                name: mapping_name(w.kind, &w.key.name, &ip),
            };
            if inputs.hand_written.contains(&key) {
                problems.push(SourceProblem::NameTaken(key.to_string(), w.kind.kind()));
                continue;
            }
            let d = Desired {
                key: key.clone(),
                owner: owner.clone(),
                zone_id: zone_id.clone(),
                ip: canonical,
                placement: placement.clone(),
            };
            let up_to_date = existing.get(&key).is_some_and(|e| {
                e.owner_uid == w.uid
                    && e.spec
                        == (
                            d.zone_id.clone(),
                            d.ip.clone(),
                            d.placement.vendor.clone(),
                            d.placement.region.clone(),
                        )
            });
            if !up_to_date {
                out.apply.push(d);
            }
            wanted_keys.push(key);
        }
        for e in inputs.existing.iter().filter(|e| e.owner_uid == w.uid) {
            if let Some((reason, message)) = &e.not_ready {
                problems.push(SourceProblem::MappingNotReady {
                    key: e.key.to_string(),
                    reason: reason.clone(),
                    message: message.clone(),
                });
            }
        }
        if !problems.is_empty() {
            out.problems.insert(owner, problems);
        }
    }
    wanted.extend(wanted_keys.iter());
    for e in inputs.existing {
        let kind_unknown = e
            .owner_kind
            .is_some_and(|k| inputs.unknown_kinds.contains(&k));
        if !wanted.contains(&e.key) && !held.contains(e.owner_uid.as_str()) && !kind_unknown {
            out.delete.push(e.key.clone());
        }
    }
    out
}

/// The mapping object for a desired entry, ready for server-side apply.
pub fn to_object(d: &Desired) -> OriginCloudRegionMapping {
    let mut m = OriginCloudRegionMapping::new(
        &d.key.name,
        OriginCloudRegionMappingSpec {
            zone_id: d.zone_id.clone(),
            origin_ip: d.ip.clone(),
            vendor: d.placement.vendor.clone(),
            region: d.placement.region.clone(),
            credentials_secret_ref: None,
            deletion_policy: DeletionPolicy::Delete,
        },
    );
    m.metadata.namespace = Some(d.key.namespace.clone());
    m.metadata.labels = Some(
        [
            (MANAGED_BY_LABEL, MANAGED_BY.to_string()),
            (SOURCE_KIND_LABEL, d.owner.kind.kind().to_string()),
            (SOURCE_NAME_LABEL, label_value(&d.owner.key.name)),
            (SOURCE_UID_LABEL, d.owner.uid.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    m.metadata.owner_references = Some(vec![OwnerReference {
        api_version: d.owner.kind.api_version().into(),
        kind: d.owner.kind.kind().into(),
        name: d.owner.key.name.clone(),
        uid: d.owner.uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    m
}

/// A workload name as a label value (at most 63 characters, alphanumeric at both ends).
fn label_value(name: &str) -> String {
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.', '_']).to_string()
}

/// What the index needs to know about an existing generated mapping.
pub fn existing_of(o: &OriginCloudRegionMapping) -> Option<Existing> {
    if !o.is_generated() || o.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let labels = o.metadata.labels.as_ref()?;
    let not_ready = o.ready_condition().and_then(|c| {
        let current =
            o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation;
        (c.status == "False" && current).then(|| (c.reason.clone(), c.message.clone()))
    });
    let owner_kind = match labels.get(SOURCE_KIND_LABEL).map(String::as_str) {
        Some("Service") => Some(WorkloadKind::Service),
        Some("Gateway") => Some(WorkloadKind::Gateway),
        _ => None,
    };
    Some(Existing {
        key: ObjectKey::of(o),
        owner_uid: labels.get(SOURCE_UID_LABEL)?.clone(),
        owner_kind,
        spec: (
            o.spec.zone_id.clone(),
            o.spec.origin_ip.clone(),
            o.spec.vendor.clone(),
            o.spec.region.clone(),
        ),
        not_ready,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const Z: &str = "0123456789abcdef0123456789abcdef";

    fn aws_nodes() -> Vec<NodeFacts> {
        vec![NodeFacts {
            name: "n1".into(),
            provider_id: Some("aws:///us-east-1a/i-0abc".into()),
            region: Some("us-east-1".into()),
        }]
    }

    fn svc(name: &str, uid: &str, ips: &[&str]) -> Workload {
        Workload {
            kind: WorkloadKind::Service,
            key: ObjectKey {
                namespace: "ns".into(),
                name: name.into(),
            },
            uid: uid.into(),
            zone: Some(Z.into()),
            vendor: None,
            region: None,
            addresses: ips.iter().map(|s| Address::Ip(s.to_string())).collect(),
        }
    }

    fn existing_from(d: &Desired) -> Existing {
        existing_of(&to_object(d)).unwrap()
    }

    struct World {
        workloads: Vec<Workload>,
        nodes: Vec<NodeFacts>,
        zones: HashMap<String, String>,
        resolved: HashMap<String, Vec<IpAddr>>,
        existing: Vec<Existing>,
        hand: BTreeSet<ObjectKey>,
        unknown: BTreeSet<WorkloadKind>,
    }

    impl World {
        fn new(workloads: Vec<Workload>) -> World {
            World {
                workloads,
                nodes: aws_nodes(),
                zones: HashMap::new(),
                resolved: HashMap::new(),
                existing: vec![],
                hand: BTreeSet::new(),
                unknown: BTreeSet::new(),
            }
        }
        fn plan(&self) -> SourcePlan {
            plan(&Inputs {
                workloads: &self.workloads,
                nodes: &self.nodes,
                zones: &self.zones,
                resolved: &self.resolved,
                resolve_errors: &HashMap::new(),
                existing: &self.existing,
                hand_written: &self.hand,
                unknown_kinds: &self.unknown,
            })
        }
        /// Applies a plan as the controller would, returning it.
        fn step(&mut self) -> SourcePlan {
            let p = self.plan();
            self.existing.retain(|e| !p.delete.contains(&e.key));
            for d in &p.apply {
                self.existing.retain(|e| e.key != d.key);
                self.existing.push(existing_from(d));
            }
            p
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = self.existing.iter().map(|e| e.key.name.clone()).collect();
            v.sort();
            v
        }
    }

    #[test]
    fn one_mapping_per_address_then_follows_changes() {
        let mut w = World::new(vec![svc("web", "u1", &["203.0.113.7"])]);
        let p = w.step();
        assert_eq!(p.apply.len(), 1);
        let d = &p.apply[0];
        assert_eq!(d.key.name, "svc-web-203-0-113-7");
        assert_eq!(d.zone_id, Z);
        assert_eq!(
            (d.placement.vendor.as_str(), d.placement.region.as_str()),
            ("aws", "us-east-1")
        );
        // Steady: nothing to do.
        assert_eq!(w.step(), SourcePlan::default());
        // The IP changes: the new one is applied, the old one deleted.
        w.workloads[0].addresses = vec![Address::Ip("203.0.113.8".into())];
        let p = w.step();
        assert_eq!(p.apply.len(), 1);
        assert_eq!(p.delete.len(), 1);
        assert_eq!(w.names(), ["svc-web-203-0-113-8"]);
        // A second address: a second mapping.
        w.workloads[0]
            .addresses
            .push(Address::Ip("2001:db8::".into()));
        w.step();
        assert_eq!(w.names(), ["svc-web-2001-db8--0", "svc-web-203-0-113-8"]);
        // Annotation removed: all go.
        w.workloads[0].zone = None;
        let p = w.step();
        assert_eq!(p.delete.len(), 2);
        assert!(w.names().is_empty());
    }

    #[test]
    fn a_deleted_workload_loses_its_mappings_and_a_recreated_one_takes_them_over() {
        let mut w = World::new(vec![svc("web", "u1", &["203.0.113.7"])]);
        w.step();
        w.workloads.clear();
        let p = w.step();
        assert_eq!(p.delete.len(), 1);
        // Recreated under the same name (new uid) before the old mapping went: re-parented,
        // not deleted.
        let mut w = World::new(vec![svc("web", "u1", &["203.0.113.7"])]);
        w.step();
        w.workloads = vec![svc("web", "u2", &["203.0.113.7"])];
        let p = w.step();
        assert_eq!(p.apply.len(), 1);
        assert_eq!(p.apply[0].owner.uid, "u2");
        assert!(p.delete.is_empty());
    }

    #[test]
    fn an_ambiguous_cluster_writes_nothing_and_keeps_what_exists() {
        let mut w = World::new(vec![svc("web", "u1", &["203.0.113.7"])]);
        w.step();
        w.nodes.push(NodeFacts {
            name: "n2".into(),
            provider_id: Some("aws:///eu-west-1a/i-2".into()),
            region: Some("eu-west-1".into()),
        });
        w.workloads[0].addresses = vec![Address::Ip("203.0.113.9".into())];
        let p = w.step();
        assert!(p.apply.is_empty() && p.delete.is_empty(), "{p:?}");
        let problems = &p.problems.values().next().unwrap();
        assert_eq!(problems[0].reason(), "PlacementAmbiguous");
        assert!(problems[0].to_string().contains("eu-west-1, us-east-1"));
        assert_eq!(w.names(), ["svc-web-203-0-113-7"]);
        // The override resolves it.
        w.workloads[0].region = Some("eu-west-1".into());
        let p = w.step();
        assert_eq!(p.apply[0].placement.region, "eu-west-1");
        assert_eq!(w.names(), ["svc-web-203-0-113-9"]);
    }

    #[test]
    fn zones_by_name_or_id() {
        let zones: HashMap<String, String> = [("prod".to_string(), Z.to_string())].into();
        assert_eq!(zone_id("prod", &zones).as_deref(), Some(Z));
        assert_eq!(zone_id(Z, &HashMap::new()).as_deref(), Some(Z));
        assert_eq!(zone_id("nope", &zones), None);
        assert_eq!(zone_id(&Z.to_uppercase(), &HashMap::new()), None);
        let mut w = World::new(vec![svc("web", "u1", &["203.0.113.7"])]);
        w.step();
        w.workloads[0].zone = Some("nope".into());
        let p = w.step();
        assert!(p.delete.is_empty(), "an unknown zone keeps what exists");
        assert_eq!(
            p.problems.values().next().unwrap()[0].reason(),
            "ZoneUnknown"
        );
    }

    #[test]
    fn hostnames_wait_for_their_answer_and_follow_it() {
        let mut web = svc("web", "u1", &[]);
        web.addresses = vec![Address::Hostname("lb.example.test".into())];
        let mut w = World::new(vec![web]);
        let p = w.step();
        assert!(p.apply.is_empty());
        assert_eq!(
            p.problems.values().next().unwrap()[0].reason(),
            "HostnameUnresolved"
        );
        w.resolved.insert(
            "lb.example.test".into(),
            vec!["192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap()],
        );
        w.step();
        assert_eq!(w.names(), ["svc-web-192-0-2-10", "svc-web-192-0-2-11"]);
        // An answer lost (a resolver outage) holds every mapping of the workload.
        w.resolved.clear();
        let p = w.step();
        assert!(p.delete.is_empty());
        // A failed refresh with the last answer still known: reported, and nothing deleted.
        w.resolved.insert(
            "lb.example.test".into(),
            vec!["192.0.2.10".parse().unwrap()],
        );
        let errors: HashMap<String, String> =
            [("lb.example.test".to_string(), "timed out".to_string())].into();
        let p = plan(&Inputs {
            workloads: &w.workloads,
            nodes: &w.nodes,
            zones: &w.zones,
            resolved: &w.resolved,
            resolve_errors: &errors,
            existing: &w.existing,
            hand_written: &w.hand,
            unknown_kinds: &w.unknown,
        });
        assert!(p.delete.is_empty() && p.apply.is_empty(), "{p:?}");
        let problem = &p.problems.values().next().unwrap()[0];
        assert!(problem.to_string().contains("timed out"), "{problem}");
        // A changed answer moves them.
        w.resolved.insert(
            "lb.example.test".into(),
            vec!["192.0.2.12".parse().unwrap()],
        );
        w.step();
        assert_eq!(w.names(), ["svc-web-192-0-2-12"]);
    }

    #[test]
    fn a_hand_written_name_is_never_taken() {
        let mut w = World::new(vec![svc("web", "u1", &["203.0.113.7"])]);
        w.hand.insert(ObjectKey {
            namespace: "ns".into(),
            name: "svc-web-203-0-113-7".into(),
        });
        let p = w.step();
        assert!(p.apply.is_empty());
        assert_eq!(p.problems.values().next().unwrap()[0].reason(), "NameTaken");
    }

    #[test]
    fn a_hand_edit_of_a_generated_mapping_is_put_back() {
        let mut w = World::new(vec![svc("web", "u1", &["203.0.113.7"])]);
        w.step();
        w.existing[0].spec.3 = "us-west-2".into();
        let p = w.step();
        assert_eq!(p.apply.len(), 1);
        assert_eq!(p.apply[0].placement.region, "us-east-1");
    }

    #[test]
    fn bad_addresses_are_reported_and_skipped() {
        let mut w = World::new(vec![svc(
            "web",
            "u1",
            &["203.0.113.7", "not-an-ip", "010.0.0.1"],
        )]);
        let p = w.step();
        assert_eq!(p.apply.len(), 1);
        let problems = p.problems.values().next().unwrap();
        assert_eq!(problems.len(), 2);
        assert!(problems.iter().all(|p| p.reason() == "InvalidAddress"));
    }

    #[test]
    fn names_are_valid_and_distinct() {
        let long = "a".repeat(250);
        let ips: Vec<IpAddr> = ["192.0.2.1", "2001:db8::1", "2001:db8::", "::"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut seen = BTreeSet::new();
        for w in ["web", long.as_str()] {
            for kind in [WorkloadKind::Service, WorkloadKind::Gateway] {
                for ip in &ips {
                    let n = mapping_name(kind, w, ip);
                    assert!(n.len() <= 253, "{n}");
                    assert!(
                        n.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                        "{n}"
                    );
                    assert!(!n.ends_with('-') && !n.starts_with('-'), "{n}");
                    assert!(seen.insert(n.clone()), "duplicate {n}");
                }
            }
        }
    }

    #[test]
    fn generated_objects_carry_owner_and_labels() {
        let mut w = World::new(vec![svc("web", "u1", &["203.0.113.7"])]);
        let p = w.step();
        let o = to_object(&p.apply[0]);
        assert!(o.is_generated());
        let r = &o.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.uid.as_str()),
            ("Service", "web", "u1")
        );
        assert_eq!(r.controller, Some(true));
        assert_eq!(
            o.metadata.labels.as_ref().unwrap()[SOURCE_NAME_LABEL],
            "web"
        );
    }

    #[test]
    fn mappings_of_a_kind_not_known_yet_are_kept() {
        let mut gw = svc("public", "g1", &["198.51.100.9"]);
        gw.kind = WorkloadKind::Gateway;
        let mut w = World::new(vec![gw, svc("web", "u1", &["203.0.113.7"])]);
        w.step();
        assert_eq!(w.names(), ["gw-public-198-51-100-9", "svc-web-203-0-113-7"]);
        // The Gateway watch is down (its CRDs were removed): Gateways look absent.
        w.workloads.retain(|x| x.kind == WorkloadKind::Service);
        w.unknown.insert(WorkloadKind::Gateway);
        let p = w.step();
        assert!(p.delete.is_empty(), "{p:?}");
        // Known again, and really gone: now it goes.
        w.unknown.clear();
        let p = w.step();
        assert_eq!(p.delete.len(), 1);
        assert_eq!(w.names(), ["svc-web-203-0-113-7"]);
    }
}
