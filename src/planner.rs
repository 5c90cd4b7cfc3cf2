//! Plans one zone: desired state (the objects) against actual state (the zone's remote
//! mappings) gives upserts, releases, no-ops, conflicts and blocked objects. Pure: no I/O, so
//! every rule here is unit- and property-tested without a server.
//!
//! Rules, in the order they apply:
//! - An object *owns* the entries in its record (status ∪ write-ahead annotation, see
//!   [`crate::ownership`]). It keeps them, untouched, while it exists and still names that zone
//!   and IP, whatever else is wrong (invalid spec, refused credential, unknown catalog,
//!   Cloudflare down). Only deletion or an identity change (zoneId/originIp) releases an entry,
//!   and an identity change within a zone releases the old entry only once the new claim can
//!   be applied (make-before-break of the *decision*: a typo never deletes production).
//! - Candidates for (zone, IP) are the live objects naming them with a valid IP. An owner among
//!   them wins (the oldest, when a crash left two records); with no owner, the oldest candidate
//!   that is not blocked wins, hand-written objects before generated ones. The others report
//!   `Conflict` and cause no writes, so a blocked owner never loses its entry to a newer object.
//! - A release deletes the remote entry unless the object orphans it or another object now
//!   wins that IP; the delete is sent even when the cached list lacks the entry (a list paged
//!   while the zone changed can miss one; 404 counts as done).
//! - A winner whose remote entry equals its spec is a no-op; otherwise it is upserted
//!   (created, updated, adopted or drift-corrected: the kind only changes the Event). An
//!   upsert of an entry the object does not own yet carries an *intent* that the reconciler
//!   records durably before the write.
//! - A zone known to be full (Cloudflare answered 1164 at some size) gets no create beyond the
//!   room the plan's own deletes leave; updates of existing entries still go through.

use std::collections::{BTreeMap, HashMap};

use crate::error::Problem;
use crate::ownership::{Entries, Entry, ObjectKey};
use crate::wire::{Mapping, MappingInput, SupportedRegions};

/// What the planner needs to know about one object.
#[derive(Debug, Clone)]
pub struct ObjectView {
    /// The object.
    pub key: ObjectKey,
    /// Creation time as RFC 3339 text (sorts chronologically), oldest wins conflicts.
    pub created: String,
    /// The spec's zone.
    pub zone_id: String,
    /// Canonical IP, or why the spec's IP is invalid.
    pub ip: Result<String, String>,
    /// Spec vendor.
    pub vendor: String,
    /// Spec region.
    pub region: String,
    /// The object has a deletionTimestamp.
    pub deleting: bool,
    /// Remote entries are left in place when released (policy Orphan or force-orphan).
    pub orphan: bool,
    /// Every entry the object owns, in any zone (applied ∪ recorded intent).
    pub owned: Entries,
    /// The entry confirmed applied (status), one of `owned`.
    pub applied: Option<Entry>,
    /// The write-ahead record (annotation) as the object holds it, part of `owned`.
    pub recorded: Entries,
    /// Ready=True for the current generation, with the applied entry equal to the claim.
    pub was_ready: bool,
    /// A problem found before planning (credentials, remembered terminal error).
    pub blocked: Option<Problem>,
    /// Made by the operator from a Service or Gateway: a hand-written object wins an IP
    /// nobody owns yet over a generated one, whatever their ages.
    pub generated: bool,
}

/// What the planner knows about the zone itself.
#[derive(Debug, Clone, Copy)]
pub struct ZoneFacts<'a> {
    /// Remote entries by canonical IP.
    pub remote: &'a BTreeMap<String, Mapping>,
    /// Supported regions, when known.
    pub catalog: Option<&'a SupportedRegions>,
    /// Entries the zone held when Cloudflare last refused a create as over the limit.
    pub capacity: Option<usize>,
    /// Whether an existing entry that no object owns may be taken over (adopted).
    pub adopt: bool,
    /// IPs recently released by a deleted owner, held for the owner's namespace a while (a
    /// GitOps replace deletes and recreates): namespace by IP.
    pub reserved: Option<&'a HashMap<String, String>>,
}

/// Why an upsert is made; only the Event differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertKind {
    /// No remote entry existed.
    Create,
    /// The spec changed.
    Update,
    /// A remote entry existed before the object claimed it.
    Adopt,
    /// The remote entry changed out of band while the object was Ready.
    DriftCorrect,
}

/// What happens to one entry the object gives up in this zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Delete the remote entry at this IP (404 counts as done).
    Delete(String),
    /// Drop it from the record without a remote call (orphaned, or another object wins it).
    Forget(String),
}

impl Release {
    /// The IP released.
    pub fn ip(&self) -> &str {
        match self {
            Release::Delete(ip) | Release::Forget(ip) => ip,
        }
    }
}

/// The plan for one object in this zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The remote entry already equals the spec; `adopted` when first seen by this object.
    InSync {
        /// The object took over an entry it did not create.
        adopted: bool,
    },
    /// Write the object's mapping.
    Upsert(MappingInput, UpsertKind),
    /// The object cannot be applied; no API call is made for it and what it owns is kept.
    Blocked(Problem),
    /// The object owns entries in another zone: that zone releases them first.
    WaitForRelease,
    /// Deleting, and nothing is left to release anywhere once this zone's releases are done.
    Finalize,
    /// The object now names another zone: only its releases happen here.
    MoveOut,
    /// The object has nothing to do with this zone.
    Skip,
}

/// The plan for one object: releases first, then a step.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectPlan {
    /// The object.
    pub key: ObjectKey,
    /// Entries of this zone given up, done before `step`.
    pub releases: Vec<Release>,
    /// Entry to record durably before the upsert, when the object does not own it yet.
    pub intent: Option<Entry>,
    /// What follows the releases.
    pub step: Step,
}

/// Plan of one zone.
#[derive(Debug, Clone, Default)]
pub struct ZonePlan {
    /// One entry per object given, in the order given.
    pub objects: Vec<ObjectPlan>,
}

impl ZonePlan {
    /// Mappings to write, with the object each belongs to.
    pub fn upserts(&self) -> impl Iterator<Item = (&ObjectKey, &MappingInput, UpsertKind)> {
        self.objects.iter().filter_map(|p| match &p.step {
            Step::Upsert(m, k) => Some((&p.key, m, *k)),
            _ => None,
        })
    }

    /// IPs to delete, with the object each is released for.
    pub fn deletes(&self) -> impl Iterator<Item = (&ObjectKey, &str)> {
        self.objects.iter().flat_map(|p| {
            p.releases.iter().filter_map(move |r| match r {
                Release::Delete(ip) => Some((&p.key, ip.as_str())),
                Release::Forget(_) => None,
            })
        })
    }

    /// Whether the plan makes no Cloudflare write.
    pub fn is_noop(&self) -> bool {
        self.upserts().next().is_none() && self.deletes().next().is_none()
    }
}

/// Validates an object's vendor and region against the catalog, when the catalog is known.
pub fn check_region(
    catalog: Option<&SupportedRegions>,
    vendor: &str,
    region: &str,
) -> Option<Problem> {
    let catalog = catalog?;
    if catalog.region(vendor, region).is_some() {
        return None;
    }
    let supported: Vec<String> = catalog
        .vendors
        .get(vendor)
        .map(|rs| rs.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default();
    Some(Problem::region_not_supported(vendor, region, &supported))
}

/// Plans `zone` given every object that names it in spec or record, and the zone's facts.
pub fn plan_zone(zone: &str, objects: &[ObjectView], facts: ZoneFacts<'_>) -> ZonePlan {
    let here = |o: &ObjectView, ip: &str| o.owned.contains(&Entry::new(zone, ip));
    // The problem that stops each live object naming this zone (None: it may be applied).
    let problems: HashMap<&ObjectKey, Option<Problem>> = objects
        .iter()
        .filter(|o| !o.deleting && o.zone_id == zone)
        .map(|o| {
            let p = match &o.ip {
                Err(why) => Some(Problem::InvalidOriginIp(why.clone())),
                Ok(_) => o
                    .blocked
                    .clone()
                    .or_else(|| check_region(facts.catalog, &o.vendor, &o.region)),
            };
            (&o.key, p)
        })
        .collect();

    // An IP stays with its owner's namespace while the owner is being deleted, and a while
    // after (`facts.reserved`): another namespace's object never takes it over in that window.
    let mut reserved: HashMap<&str, &str> = facts
        .reserved
        .map(|r| {
            r.iter()
                .map(|(ip, ns)| (ip.as_str(), ns.as_str()))
                .collect()
        })
        .unwrap_or_default();
    for o in objects.iter().filter(|o| o.deleting) {
        for e in o.owned.iter().filter(|e| e.zone == zone) {
            reserved.insert(e.ip.as_str(), o.key.namespace.as_str());
        }
    }
    let allowed =
        |o: &ObjectView, ip: &str| reserved.get(ip).is_none_or(|ns| *ns == o.key.namespace);

    // Winners: an owner first, else the oldest candidate that is not blocked.
    let mut candidates: BTreeMap<&str, Vec<&ObjectView>> = BTreeMap::new();
    for o in objects {
        if let (false, true, Ok(ip)) = (o.deleting, o.zone_id == zone, &o.ip) {
            candidates.entry(ip.as_str()).or_default().push(o);
        }
    }
    let mut winners: HashMap<&str, &ObjectKey> = HashMap::new();
    for (ip, list) in &mut candidates {
        list.sort_by(|a, b| {
            (a.generated, &a.created, &a.key).cmp(&(b.generated, &b.created, &b.key))
        });
        let winner = list.iter().find(|o| here(o, ip)).or_else(|| {
            list.iter()
                .find(|o| problems[&o.key].is_none() && allowed(o, ip))
        });
        if let Some(w) = winner {
            winners.insert(ip, &w.key);
        }
    }
    let owners: HashMap<&ObjectKey, &ObjectView> = objects.iter().map(|o| (&o.key, o)).collect();
    // Another object wins `ip` and already records it: the entry is theirs now.
    let taken_over = |o: &ObjectView, ip: &str| {
        winners
            .get(ip)
            .is_some_and(|w| **w != o.key && owners.get(*w).is_some_and(|w| here(w, ip)))
    };
    // `None`: hold it. Another object wins the IP but has not recorded it yet; forgetting now
    // would leave the entry recorded nowhere if its record write fails.
    let release_of = |o: &ObjectView, ip: &str| -> Option<Release> {
        let other_wins = winners.get(ip).is_some_and(|w| **w != o.key);
        if o.orphan || taken_over(o, ip) {
            Some(Release::Forget(ip.to_string()))
        } else if other_wins {
            None
        } else {
            Some(Release::Delete(ip.to_string()))
        }
    };

    let mut plan = ZonePlan::default();
    for o in objects {
        let owned_here: Vec<&str> = o
            .owned
            .iter()
            .filter(|e| e.zone == zone)
            .map(|e| e.ip.as_str())
            .collect();
        let owned_elsewhere = o.owned.iter().any(|e| e.zone != zone);
        let names_zone = o.zone_id == zone;
        // Entries here that another object has taken over are never ours to keep.
        let forget_contested = || -> Vec<Release> {
            owned_here
                .iter()
                .filter(|ip| taken_over(o, ip))
                .map(|ip| Release::Forget(ip.to_string()))
                .collect()
        };
        let release_all = |except: Option<&str>| -> (Vec<Release>, bool) {
            let mut held = false;
            let releases = owned_here
                .iter()
                .filter(|ip| Some(**ip) != except)
                .filter_map(|ip| {
                    let r = release_of(o, ip);
                    held |= r.is_none();
                    r
                })
                .collect();
            (releases, held)
        };

        let (releases, intent, step) = if o.deleting {
            if !names_zone && owned_here.is_empty() {
                (vec![], None, Step::Skip)
            } else {
                let (releases, held) = release_all(None);
                let deletes = releases.iter().any(|r| matches!(r, Release::Delete(_)));
                match (&o.blocked, deletes) {
                    // The deletes would use a credential that does not work: report, keep all.
                    (Some(p), true) => {
                        let ip = owned_here.first().copied().unwrap_or_default();
                        let p = Problem::DeletionBlocked {
                            zone: zone.to_string(),
                            ip: ip.to_string(),
                            why: p.to_string(),
                            retrying: p.action() == crate::error::Action::Retry,
                        };
                        (vec![], None, Step::Blocked(p))
                    }
                    _ if owned_elsewhere || held => (releases, None, Step::Skip),
                    _ => (releases, None, Step::Finalize),
                }
            }
        } else if !names_zone {
            match (&o.blocked, owned_here.is_empty()) {
                (_, true) => (vec![], None, Step::Skip),
                (Some(p), false) => {
                    let p = Problem::MoveBlocked {
                        zone: zone.to_string(),
                        ip: owned_here[0].to_string(),
                        why: p.to_string(),
                    };
                    (forget_contested(), None, Step::Blocked(p))
                }
                (None, false) => (release_all(None).0, None, Step::MoveOut),
            }
        } else {
            match (&o.ip, problems[&o.key].clone()) {
                (_, Some(p)) => (forget_contested(), None, Step::Blocked(p)),
                (Err(_), None) => unreachable!("an invalid IP is always a problem"),
                (Ok(ip), None) => {
                    let ip = ip.as_str();
                    match winners.get(ip) {
                        None if !allowed(o, ip) => {
                            let p = Problem::Reserved {
                                zone: zone.to_string(),
                                ip: ip.to_string(),
                                namespace: reserved[ip].to_string(),
                            };
                            (forget_contested(), None, Step::Blocked(p))
                        }
                        Some(w) if **w != o.key => {
                            let p = Problem::Conflict {
                                zone: zone.to_string(),
                                ip: ip.to_string(),
                                winner: w.to_string(),
                            };
                            (forget_contested(), None, Step::Blocked(p))
                        }
                        _ if owned_elsewhere => (forget_contested(), None, Step::WaitForRelease),
                        _ if !here(o, ip) && !facts.adopt && facts.remote.contains_key(ip) => {
                            let p = Problem::AdoptionRefused {
                                zone: zone.to_string(),
                                ip: ip.to_string(),
                            };
                            (forget_contested(), None, Step::Blocked(p))
                        }
                        _ => {
                            let first_time = !here(o, ip);
                            let step = match facts.remote.get(ip) {
                                Some(m) if matches(m, o) => Step::InSync {
                                    adopted: first_time,
                                },
                                existing => {
                                    let kind = match existing {
                                        Some(_) if first_time => UpsertKind::Adopt,
                                        _ if o.was_ready && !first_time => UpsertKind::DriftCorrect,
                                        Some(_) => UpsertKind::Update,
                                        None => UpsertKind::Create,
                                    };
                                    Step::Upsert(
                                        MappingInput {
                                            origin_ip: ip.to_string(),
                                            vendor: o.vendor.clone(),
                                            region: o.region.clone(),
                                        },
                                        kind,
                                    )
                                }
                            };
                            let intent = (matches!(step, Step::Upsert(..)) && first_time)
                                .then(|| Entry::new(zone, ip));
                            (release_all(Some(ip)).0, intent, step)
                        }
                    }
                }
            }
        };
        plan.objects.push(ObjectPlan {
            key: o.key.clone(),
            releases,
            intent,
            step,
        });
    }
    limit_creates(zone, &mut plan, objects, facts);
    plan
}

/// Blocks the creates a full zone has no room for (oldest objects first); such an object
/// keeps what it owns, so its releases are held too.
fn limit_creates(zone: &str, plan: &mut ZonePlan, objects: &[ObjectView], facts: ZoneFacts<'_>) {
    let Some(capacity) = facts.capacity else {
        return;
    };
    let freed = plan
        .deletes()
        .filter(|(_, ip)| facts.remote.contains_key(*ip))
        .count();
    let mut room = capacity.saturating_sub(facts.remote.len().saturating_sub(freed));
    let created: HashMap<&ObjectKey, &str> = objects
        .iter()
        .map(|o| (&o.key, o.created.as_str()))
        .collect();
    let mut creates: Vec<usize> = plan
        .objects
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(&p.step, Step::Upsert(_, UpsertKind::Create)))
        .map(|(i, _)| i)
        .collect();
    creates.sort_by_key(|&i| (created[&plan.objects[i].key], plan.objects[i].key.clone()));
    for i in creates {
        if room > 0 {
            room -= 1;
            continue;
        }
        let p = &mut plan.objects[i];
        p.step = Step::Blocked(Problem::ZoneLimitReached {
            zone: zone.to_string(),
        });
        p.intent = None;
        p.releases.retain(|r| matches!(r, Release::Forget(_)));
    }
}

fn matches(m: &Mapping, o: &ObjectView) -> bool {
    m.vendor == o.vendor && m.region == o.region
}

#[cfg(test)]
mod tests {
    use super::*;

    const Z: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const Z2: &str = "11111111111111111111111111111111";

    fn key(s: &str) -> ObjectKey {
        let (namespace, name) = s.split_once('/').unwrap();
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn obj(k: &str, created: &str, ip: &str, region: &str) -> ObjectView {
        ObjectView {
            key: key(k),
            created: created.into(),
            zone_id: Z.into(),
            ip: Ok(ip.into()),
            vendor: "aws".into(),
            region: region.into(),
            deleting: false,
            orphan: false,
            owned: Entries::new(),
            applied: None,
            recorded: Entries::new(),
            was_ready: false,
            blocked: None,
            generated: false,
        }
    }

    fn owning(mut o: ObjectView, zone: &str, ip: &str) -> ObjectView {
        o.owned.insert(Entry::new(zone, ip));
        o
    }

    fn remote(entries: &[(&str, &str)]) -> BTreeMap<String, Mapping> {
        entries
            .iter()
            .map(|(ip, region)| {
                (
                    ip.to_string(),
                    Mapping {
                        origin_ip: ip.to_string(),
                        vendor: "aws".into(),
                        region: region.to_string(),
                        modified_on: None,
                    },
                )
            })
            .collect()
    }

    fn catalog() -> SupportedRegions {
        serde_json::from_value(serde_json::json!({
            "obtained_codes": true,
            "vendors": {"aws": [
                {"name": "us-east-1", "upper_tier_colos": ["IAD"]},
                {"name": "us-west-2", "upper_tier_colos": ["SEA"]}
            ]}
        }))
        .unwrap()
    }

    fn plan(objects: &[ObjectView], r: &BTreeMap<String, Mapping>) -> ZonePlan {
        plan_in(Z, objects, r)
    }

    fn plan_in(zone: &str, objects: &[ObjectView], r: &BTreeMap<String, Mapping>) -> ZonePlan {
        let c = catalog();
        plan_zone(
            zone,
            objects,
            ZoneFacts {
                remote: r,
                catalog: Some(&c),
                capacity: None,
                adopt: true,
                reserved: None,
            },
        )
    }

    fn step_of<'a>(plan: &'a ZonePlan, k: &str) -> &'a ObjectPlan {
        plan.objects.iter().find(|p| p.key == key(k)).unwrap()
    }

    #[test]
    fn absent_entry_is_created_with_an_intent_and_equal_entry_is_a_noop() {
        let a = owning(obj("ns/a", "1", "192.0.2.1", "us-east-1"), Z, "192.0.2.1");
        let b = obj("ns/b", "2", "192.0.2.2", "us-east-1");
        let p = plan(&[a, b], &remote(&[("192.0.2.1", "us-east-1")]));
        assert_eq!(step_of(&p, "ns/a").step, Step::InSync { adopted: false });
        assert_eq!(step_of(&p, "ns/a").intent, None);
        let b = step_of(&p, "ns/b");
        assert!(matches!(b.step, Step::Upsert(_, UpsertKind::Create)));
        assert_eq!(b.intent, Some(Entry::new(Z, "192.0.2.2")));
        assert_eq!(p.upserts().count(), 1);
    }

    #[test]
    fn steady_state_plans_no_writes() {
        let objects: Vec<ObjectView> = (0..50)
            .map(|i| {
                let ip = format!("192.0.2.{i}");
                let mut o = owning(obj(&format!("ns/o{i}"), "1", &ip, "us-east-1"), Z, &ip);
                o.was_ready = true;
                o
            })
            .collect();
        let entries: Vec<(String, &str)> = (0..50)
            .map(|i| (format!("192.0.2.{i}"), "us-east-1"))
            .collect();
        let refs: Vec<(&str, &str)> = entries.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        assert!(plan(&objects, &remote(&refs)).is_noop());
    }

    #[test]
    fn pre_existing_entry_is_adopted() {
        let a = obj("ns/a", "1", "192.0.2.1", "us-east-1");
        let p = plan(
            std::slice::from_ref(&a),
            &remote(&[("192.0.2.1", "us-east-1")]),
        );
        assert_eq!(step_of(&p, "ns/a").step, Step::InSync { adopted: true });
        let p = plan(&[a], &remote(&[("192.0.2.1", "us-west-2")]));
        assert!(matches!(
            step_of(&p, "ns/a").step,
            Step::Upsert(_, UpsertKind::Adopt)
        ));
    }

    #[test]
    fn adoption_never_refuses_an_unowned_entry_but_not_an_owned_one() {
        let r = remote(&[("192.0.2.1", "us-east-1")]);
        let c = catalog();
        let facts = ZoneFacts {
            remote: &r,
            catalog: Some(&c),
            capacity: None,
            adopt: false,
            reserved: None,
        };
        for region in ["us-east-1", "us-west-2"] {
            let a = obj("ns/a", "1", "192.0.2.1", region);
            let p = plan_zone(Z, &[a], facts);
            assert!(p.is_noop());
            assert!(matches!(
                step_of(&p, "ns/a").step,
                Step::Blocked(Problem::AdoptionRefused { .. })
            ));
        }
        // Its own entry (recorded, e.g. after a lost response) is not an adoption.
        let a = owning(obj("ns/a", "1", "192.0.2.1", "us-west-2"), Z, "192.0.2.1");
        let p = plan_zone(Z, &[a], facts);
        assert!(matches!(
            step_of(&p, "ns/a").step,
            Step::Upsert(_, UpsertKind::Update)
        ));
        // A new entry is no adoption either.
        let b = obj("ns/b", "1", "192.0.2.2", "us-east-1");
        let p = plan_zone(Z, &[b], facts);
        assert!(matches!(
            step_of(&p, "ns/b").step,
            Step::Upsert(_, UpsertKind::Create)
        ));
    }

    #[test]
    fn another_namespace_never_takes_over_an_ip_while_its_owner_is_replaced() {
        let mut b = owning(
            obj("team-b/web", "2", "192.0.2.1", "us-east-1"),
            Z,
            "192.0.2.1",
        );
        b.deleting = true;
        let a = obj("team-a/squat", "1", "192.0.2.1", "us-west-2");
        let r = remote(&[("192.0.2.1", "us-east-1")]);
        let p = plan(&[b.clone(), a.clone()], &r);
        // b deletes its entry as if nobody claimed it; a waits.
        assert_eq!(
            step_of(&p, "team-b/web").releases,
            vec![Release::Delete("192.0.2.1".into())]
        );
        assert!(matches!(
            step_of(&p, "team-a/squat").step,
            Step::Blocked(Problem::Reserved { .. })
        ));
        // After b is gone the IP stays reserved for team-b: its recreated object wins.
        let reserved: HashMap<String, String> =
            [("192.0.2.1".to_string(), "team-b".to_string())].into();
        let b2 = obj("team-b/web", "3", "192.0.2.1", "us-east-1");
        let c = catalog();
        let empty = remote(&[]);
        let facts = ZoneFacts {
            remote: &empty,
            catalog: Some(&c),
            capacity: None,
            adopt: true,
            reserved: Some(&reserved),
        };
        let p = plan_zone(Z, &[a.clone(), b2], facts);
        assert!(matches!(
            step_of(&p, "team-b/web").step,
            Step::Upsert(_, UpsertKind::Create)
        ));
        assert!(matches!(
            step_of(&p, "team-a/squat").step,
            Step::Blocked(Problem::Conflict { .. })
        ));
        // The same namespace may take over at once (one team renaming its object).
        let mut b = owning(
            obj("team-b/web", "2", "192.0.2.1", "us-east-1"),
            Z,
            "192.0.2.1",
        );
        b.deleting = true;
        let sibling = obj("team-b/new", "1", "192.0.2.1", "us-east-1");
        let p = plan(&[b, sibling], &r);
        assert!(matches!(
            step_of(&p, "team-b/new").step,
            Step::InSync { adopted: true }
        ));
    }

    #[test]
    fn drift_on_a_ready_object_is_corrected() {
        let mut a = owning(obj("ns/a", "1", "192.0.2.1", "us-east-1"), Z, "192.0.2.1");
        a.was_ready = true;
        for r in [remote(&[("192.0.2.1", "us-west-2")]), remote(&[])] {
            let p = plan(std::slice::from_ref(&a), &r);
            assert!(matches!(
                step_of(&p, "ns/a").step,
                Step::Upsert(_, UpsertKind::DriftCorrect)
            ));
            assert_eq!(step_of(&p, "ns/a").intent, None, "already owned");
        }
    }

    #[test]
    fn oldest_claimant_wins_a_conflict_without_owners() {
        let a = obj("ns/a", "2026-01-02T00:00:00Z", "192.0.2.1", "us-east-1");
        let b = obj("ns/b", "2026-01-01T00:00:00Z", "192.0.2.1", "us-west-2");
        let p = plan(&[a, b], &remote(&[]));
        assert!(matches!(
            step_of(&p, "ns/b").step,
            Step::Upsert(_, UpsertKind::Create)
        ));
        match &step_of(&p, "ns/a").step {
            Step::Blocked(Problem::Conflict { winner, .. }) => assert_eq!(winner, "ns/b"),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.upserts().count(), 1);
    }

    #[test]
    fn a_blocked_owner_keeps_its_entry_against_a_newer_claimant() {
        let mut b = owning(obj("ns/b", "1", "192.0.2.1", "us-east-1"), Z, "192.0.2.1");
        b.blocked = Some(Problem::CredentialsMissing {
            namespace: "ns".into(),
            name: "s".into(),
        });
        let a = obj("ns/a", "2", "192.0.2.1", "us-west-2");
        let p = plan(&[b, a], &remote(&[("192.0.2.1", "us-east-1")]));
        assert!(p.is_noop(), "{p:?}");
        assert!(matches!(
            step_of(&p, "ns/b").step,
            Step::Blocked(Problem::CredentialsMissing { .. })
        ));
        assert!(step_of(&p, "ns/b").releases.is_empty());
        assert!(matches!(
            step_of(&p, "ns/a").step,
            Step::Blocked(Problem::Conflict { .. })
        ));
    }

    #[test]
    fn a_hand_written_object_wins_a_free_ip_over_an_older_generated_one() {
        let mut generated = obj("ns/svc-web", "1", "192.0.2.1", "us-east-1");
        generated.generated = true;
        let hand = obj("ns/hand", "2", "192.0.2.1", "us-west-2");
        let p = plan(&[generated.clone(), hand.clone()], &remote(&[]));
        assert!(matches!(step_of(&p, "ns/hand").step, Step::Upsert(..)));
        match &step_of(&p, "ns/svc-web").step {
            Step::Blocked(Problem::Conflict { winner, .. }) => assert_eq!(winner, "ns/hand"),
            s => panic!("{s:?}"),
        }
        // Once the generated one owns the entry, ownership still comes first: a newer
        // hand-written object does not take it.
        let owner = owning(generated, Z, "192.0.2.1");
        let p = plan(&[owner, hand], &remote(&[("192.0.2.1", "us-east-1")]));
        assert_eq!(
            step_of(&p, "ns/svc-web").step,
            Step::InSync { adopted: false }
        );
        assert!(matches!(
            step_of(&p, "ns/hand").step,
            Step::Blocked(Problem::Conflict { .. })
        ));
    }

    #[test]
    fn an_owner_wins_over_an_older_stranger() {
        let old = obj("ns/old", "1", "192.0.2.1", "us-west-2");
        let owner = owning(
            obj("ns/owner", "2", "192.0.2.1", "us-east-1"),
            Z,
            "192.0.2.1",
        );
        let p = plan(&[old, owner], &remote(&[("192.0.2.1", "us-east-1")]));
        assert_eq!(
            step_of(&p, "ns/owner").step,
            Step::InSync { adopted: false }
        );
        assert!(matches!(
            step_of(&p, "ns/old").step,
            Step::Blocked(Problem::Conflict { .. })
        ));
        // Two records of one entry (a crash): the older owner wins, the other forgets it.
        let twin = owning(
            obj("ns/twin", "3", "192.0.2.1", "us-east-1"),
            Z,
            "192.0.2.1",
        );
        let owner = owning(
            obj("ns/owner", "2", "192.0.2.1", "us-east-1"),
            Z,
            "192.0.2.1",
        );
        let p = plan(&[twin, owner], &remote(&[("192.0.2.1", "us-east-1")]));
        assert_eq!(
            step_of(&p, "ns/twin").releases,
            vec![Release::Forget("192.0.2.1".into())]
        );
        assert!(p.is_noop());
    }

    #[test]
    fn an_invalid_edit_keeps_the_entry() {
        let base = owning(obj("ns/a", "1", "192.0.2.1", "us-east-1"), Z, "192.0.2.1");
        let r = remote(&[("192.0.2.1", "us-east-1")]);
        // Unsupported region, wrong vendor, invalid IP, refused credential, terminal error.
        let mut edits = vec![];
        let mut e = base.clone();
        e.region = "us-east-9".into();
        edits.push(e);
        let mut e = base.clone();
        e.vendor = "gcp".into();
        edits.push(e);
        let mut e = base.clone();
        e.ip = Err("not an IP".into());
        edits.push(e);
        let mut e = base.clone();
        e.blocked = Some(Problem::Unauthorized("403".into()));
        edits.push(e);
        // A new IP that cannot be applied (bad region) keeps the old entry too.
        let mut e = base.clone();
        e.ip = Ok("192.0.2.9".into());
        e.region = "us-east-9".into();
        edits.push(e);
        for e in edits {
            let p = plan(std::slice::from_ref(&e), &r);
            assert!(p.is_noop(), "{e:?} → {p:?}");
            assert!(matches!(step_of(&p, "ns/a").step, Step::Blocked(_)));
            assert!(step_of(&p, "ns/a").releases.is_empty());
        }
    }

    #[test]
    fn ip_change_in_zone_deletes_the_old_entry_then_creates() {
        let a = owning(obj("ns/a", "1", "192.0.2.2", "us-east-1"), Z, "192.0.2.1");
        let p = plan(&[a], &remote(&[("192.0.2.1", "us-east-1")]));
        let a = step_of(&p, "ns/a");
        assert_eq!(a.releases, vec![Release::Delete("192.0.2.1".into())]);
        assert!(matches!(a.step, Step::Upsert(_, UpsertKind::Create)));
        assert_eq!(a.intent, Some(Entry::new(Z, "192.0.2.2")));
    }

    #[test]
    fn a_release_never_trusts_absence() {
        // The cached list does not show .1, yet the object's record does: delete anyway.
        let mut a = owning(obj("ns/a", "1", "192.0.2.1", "us-east-1"), Z, "192.0.2.1");
        a.deleting = true;
        let p = plan(&[a], &remote(&[]));
        assert_eq!(
            step_of(&p, "ns/a").releases,
            vec![Release::Delete("192.0.2.1".into())]
        );
        assert_eq!(step_of(&p, "ns/a").step, Step::Finalize);
    }

    #[test]
    fn orphan_policy_forgets_instead_of_deleting() {
        let mut a = owning(obj("ns/a", "1", "192.0.2.1", "us-east-1"), Z, "192.0.2.1");
        a.deleting = true;
        a.orphan = true;
        let p = plan(&[a], &remote(&[("192.0.2.1", "us-east-1")]));
        let a = step_of(&p, "ns/a");
        assert_eq!(a.releases, vec![Release::Forget("192.0.2.1".into())]);
        assert_eq!(a.step, Step::Finalize);
        assert!(p.is_noop());
    }

    #[test]
    fn deleting_owner_deletes_unless_another_object_wins_the_ip() {
        let mut a = owning(obj("ns/a", "1", "192.0.2.1", "us-east-1"), Z, "192.0.2.1");
        a.deleting = true;
        let r = remote(&[("192.0.2.1", "us-east-1")]);
        let p = plan(std::slice::from_ref(&a), &r);
        assert_eq!(
            step_of(&p, "ns/a").releases,
            vec![Release::Delete("192.0.2.1".into())]
        );
        // A live object claims the IP: a hands it over, but only once b records it, so the
        // entry is recorded somewhere at every moment.
        let b = obj("ns/b", "2", "192.0.2.1", "us-west-2");
        let p = plan(&[a.clone(), b.clone()], &r);
        assert!(step_of(&p, "ns/a").releases.is_empty(), "held");
        assert_eq!(step_of(&p, "ns/a").step, Step::Skip);
        let pb = step_of(&p, "ns/b");
        assert!(matches!(pb.step, Step::Upsert(_, UpsertKind::Adopt)));
        assert_eq!(pb.intent, Some(Entry::new(Z, "192.0.2.1")));
        let b = owning(b, Z, "192.0.2.1");
        let p = plan(&[a, b], &r);
        assert_eq!(
            step_of(&p, "ns/a").releases,
            vec![Release::Forget("192.0.2.1".into())]
        );
        assert_eq!(step_of(&p, "ns/a").step, Step::Finalize);
    }

    #[test]
    fn a_deleting_object_with_a_broken_credential_is_blocked_and_keeps_its_entry() {
        let mut a = owning(obj("ns/a", "1", "192.0.2.1", "us-east-1"), Z, "192.0.2.1");
        a.deleting = true;
        a.blocked = Some(Problem::NoCredentials);
        let p = plan(std::slice::from_ref(&a), &remote(&[]));
        assert!(p.is_noop());
        assert!(matches!(
            step_of(&p, "ns/a").step,
            Step::Blocked(Problem::DeletionBlocked { .. })
        ));
        // Nothing recorded: released without a call, whatever the credential.
        a.owned.clear();
        let p = plan(&[a], &remote(&[("192.0.2.1", "us-east-1")]));
        assert_eq!(step_of(&p, "ns/a").step, Step::Finalize);
        assert!(p.is_noop(), "an unrecorded entry is never deleted");
    }

    #[test]
    fn zone_move_waits_for_the_old_zone_to_release() {
        let a = owning(obj("ns/a", "1", "192.0.2.1", "us-east-1"), Z2, "192.0.2.1");
        let p_new = plan(std::slice::from_ref(&a), &remote(&[]));
        assert_eq!(step_of(&p_new, "ns/a").step, Step::WaitForRelease);
        assert!(p_new.is_noop());
        let p_old = plan_in(Z2, &[a], &remote(&[("192.0.2.1", "us-east-1")]));
        let p = step_of(&p_old, "ns/a");
        assert_eq!(p.releases, vec![Release::Delete("192.0.2.1".into())]);
        assert_eq!(p.step, Step::MoveOut);
    }

    #[test]
    fn a_deleting_object_owning_entries_in_two_zones_finalizes_in_the_last() {
        let mut a = owning(obj("ns/a", "1", "192.0.2.1", "us-east-1"), Z, "192.0.2.1");
        a = owning(a, Z2, "192.0.2.1");
        a.deleting = true;
        let p = plan(std::slice::from_ref(&a), &remote(&[]));
        assert_eq!(step_of(&p, "ns/a").step, Step::Skip);
        assert_eq!(step_of(&p, "ns/a").releases.len(), 1);
        a.owned.remove(&Entry::new(Z, "192.0.2.1"));
        let p = plan_in(Z2, &[a], &remote(&[]));
        assert_eq!(step_of(&p, "ns/a").step, Step::Finalize);
    }

    #[test]
    fn unsupported_region_is_blocked_without_a_write() {
        let a = obj("ns/a", "1", "192.0.2.1", "us-east-9");
        let p = plan(&[a], &remote(&[]));
        match &step_of(&p, "ns/a").step {
            Step::Blocked(p @ Problem::RegionNotSupported(_)) => {
                assert!(p.to_string().contains("supported: us-east-1"), "{p}")
            }
            other => panic!("{other:?}"),
        }
        assert!(p.is_noop());
    }

    #[test]
    fn a_full_zone_gets_no_creates_beyond_the_room_its_deletes_make() {
        let r = remote(&[("192.0.2.1", "us-east-1"), ("192.0.2.2", "us-east-1")]);
        let mut gone = owning(
            obj("ns/gone", "0", "192.0.2.1", "us-east-1"),
            Z,
            "192.0.2.1",
        );
        gone.deleting = true;
        let upd = owning(obj("ns/upd", "0", "192.0.2.2", "us-west-2"), Z, "192.0.2.2");
        let new1 = obj("ns/new1", "1", "192.0.2.3", "us-east-1");
        let new2 = obj("ns/new2", "2", "192.0.2.4", "us-east-1");
        let c = catalog();
        let facts = ZoneFacts {
            remote: &r,
            catalog: Some(&c),
            capacity: Some(2),
            adopt: true,
            reserved: None,
        };
        let p = plan_zone(Z, &[gone, upd, new1, new2], facts);
        assert!(matches!(
            step_of(&p, "ns/upd").step,
            Step::Upsert(_, UpsertKind::Update)
        ));
        assert!(matches!(
            step_of(&p, "ns/new1").step,
            Step::Upsert(_, UpsertKind::Create)
        ));
        assert!(matches!(
            step_of(&p, "ns/new2").step,
            Step::Blocked(Problem::ZoneLimitReached { .. })
        ));
        assert_eq!(step_of(&p, "ns/new2").intent, None);
    }
}
