//! Plans one zone: desired state (the objects) against actual state (the zone's remote
//! mappings) gives upserts, deletes, no-ops, conflicts and blocked objects. Pure: no I/O, so
//! every rule here is unit-tested without a server.
//!
//! Rules, in the order they apply:
//! - An object *claims* (zone, canonical IP) when it is live, names this zone, has a valid IP
//!   and is not blocked. Among claimants of one IP the oldest (creation time, then
//!   namespace/name) wins; the others report `Conflict` and cause no writes.
//! - An object *owns* the entry recorded in its status (zone, IP). When what it owns differs
//!   from what it claims (moved, deleted) it first *releases* the owned entry: deleted remotely
//!   unless its policy is Orphan, it is force-orphaned, another object claims that IP, or the
//!   entry is already gone. Only then is the new claim applied, so a move never orphans.
//! - A winner whose remote entry equals its spec is a no-op; otherwise it is upserted
//!   (created, updated, adopted or drift-corrected: the kind only changes the Event).

use std::collections::{BTreeMap, HashMap};

use crate::error::Problem;
use crate::wire::{Mapping, MappingInput, SupportedRegions};

/// What the planner needs to know about one object.
#[derive(Debug, Clone)]
pub struct ObjectView {
    /// `namespace/name`.
    pub key: String,
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
    /// The entry the operator last applied for it (status zoneId, originIp).
    pub owned: Option<(String, String)>,
    /// Ready=True for the current generation, with the owned entry equal to the claim.
    pub was_ready: bool,
    /// A problem found before planning (credentials, remembered terminal error).
    pub blocked: Option<Problem>,
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

/// What happens to the object's previously owned entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Delete the remote entry at this IP of the planned zone.
    Delete(String),
    /// Forget it without a remote call (orphaned, claimed by another, or already gone).
    Forget,
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
    /// The object cannot be applied; no API call is made for it.
    Blocked(Problem),
    /// Owned entry lives in another zone: that zone releases it first.
    WaitForRelease,
    /// Deleting, nothing left to release here: drop the finalizer.
    Finalize,
    /// The object is about another zone; nothing to do here.
    Skip,
}

/// The plan for one object: first a release (maybe), then a step.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectPlan {
    /// `namespace/name`.
    pub key: String,
    /// Release of the previously owned entry in this zone, done before `step`.
    pub release: Option<Release>,
    /// What follows the release.
    pub step: Step,
}

/// Plan of one zone.
#[derive(Debug, Clone, Default)]
pub struct ZonePlan {
    /// One entry per object given.
    pub objects: Vec<ObjectPlan>,
}

impl ZonePlan {
    /// Mappings to write, with the object each belongs to.
    pub fn upserts(&self) -> impl Iterator<Item = (&str, &MappingInput, UpsertKind)> {
        self.objects.iter().filter_map(|p| match &p.step {
            Step::Upsert(m, k) => Some((p.key.as_str(), m, *k)),
            _ => None,
        })
    }

    /// IPs to delete, with the object each is released for.
    pub fn deletes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.objects.iter().filter_map(|p| match &p.release {
            Some(Release::Delete(ip)) => Some((p.key.as_str(), ip.as_str())),
            _ => None,
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

/// Plans `zone` given every object that names it in spec or status, and its remote entries.
pub fn plan_zone(
    zone: &str,
    objects: &[ObjectView],
    remote: &BTreeMap<String, Mapping>,
    catalog: Option<&SupportedRegions>,
) -> ZonePlan {
    // Claims: live objects of this zone with a valid IP and nothing blocking them.
    let mut blocked: HashMap<&str, Problem> = HashMap::new();
    let mut claims: BTreeMap<&str, Vec<&ObjectView>> = BTreeMap::new();
    for o in objects {
        if o.deleting || o.zone_id != zone {
            continue;
        }
        let problem = match &o.ip {
            Err(why) => Some(Problem::InvalidOriginIp(why.clone())),
            Ok(_) => o
                .blocked
                .clone()
                .or_else(|| check_region(catalog, &o.vendor, &o.region)),
        };
        match (problem, &o.ip) {
            (Some(p), _) => {
                blocked.insert(&o.key, p);
            }
            (None, Ok(ip)) => claims.entry(ip.as_str()).or_default().push(o),
            (None, Err(_)) => unreachable!("an invalid IP is always a problem"),
        }
    }
    let mut winners: HashMap<&str, &ObjectView> = HashMap::new();
    for (ip, list) in &mut claims {
        list.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
        winners.insert(ip, list[0]);
    }

    let mut plan = ZonePlan::default();
    for o in objects {
        let claim = match (&o.ip, o.deleting || o.zone_id != zone) {
            (Ok(ip), false) if !blocked.contains_key(o.key.as_str()) => Some(ip.as_str()),
            _ => None,
        };
        // Release whatever this object owns here that it no longer claims.
        let owned_here = o
            .owned
            .as_ref()
            .filter(|(z, _)| z == zone)
            .map(|(_, ip)| ip.as_str());
        let release = match owned_here {
            Some(ip) if Some(ip) != claim => Some(release_of(o, ip, &winners, remote)),
            _ => None,
        };
        let owned_elsewhere = o.owned.as_ref().is_some_and(|(z, _)| z != zone);

        let step = if o.deleting {
            if owned_elsewhere && o.zone_id == zone {
                Step::Skip
            } else if o.zone_id == zone && matches!(release, None | Some(Release::Forget)) {
                // A crash between write and status can leave an entry that equals the spec but
                // was never recorded: for a new object, or for an originIp edit whose old entry
                // was already deleted (so the recorded one is gone). Remove it unless someone
                // else claims it.
                match (&o.ip, o.orphan) {
                    (Ok(ip), false)
                        if owned_here != Some(ip.as_str())
                            && !winners.contains_key(ip.as_str())
                            && remote.get(ip).is_some_and(|m| matches(m, o)) =>
                    {
                        plan.objects.push(ObjectPlan {
                            key: o.key.clone(),
                            release: Some(Release::Delete(ip.clone())),
                            step: Step::Finalize,
                        });
                        continue;
                    }
                    _ => Step::Finalize,
                }
            } else if owned_here.is_some() || o.zone_id == zone {
                Step::Finalize
            } else {
                Step::Skip
            }
        } else if o.zone_id != zone {
            Step::Skip
        } else if let Some(p) = blocked.get(o.key.as_str()) {
            Step::Blocked(p.clone())
        } else if owned_elsewhere {
            Step::WaitForRelease
        } else {
            let ip = claim.expect("a live, unblocked object of this zone claims its IP");
            let winner = winners[ip];
            if winner.key != o.key {
                Step::Blocked(Problem::Conflict {
                    zone: zone.to_string(),
                    ip: ip.to_string(),
                    winner: winner.key.clone(),
                })
            } else {
                let first_time = owned_here != Some(ip);
                match remote.get(ip) {
                    Some(m) if matches(m, o) => Step::InSync {
                        adopted: first_time && release.is_none(),
                    },
                    existing => {
                        let kind = match existing {
                            Some(_) if first_time && release.is_none() => UpsertKind::Adopt,
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
                }
            }
        };
        plan.objects.push(ObjectPlan {
            key: o.key.clone(),
            release,
            step,
        });
    }
    plan
}

fn matches(m: &Mapping, o: &ObjectView) -> bool {
    m.vendor == o.vendor && m.region == o.region
}

fn release_of(
    o: &ObjectView,
    ip: &str,
    winners: &HashMap<&str, &ObjectView>,
    remote: &BTreeMap<String, Mapping>,
) -> Release {
    let claimed_by_other = winners.get(ip).is_some_and(|w| w.key != o.key);
    if o.orphan || claimed_by_other || !remote.contains_key(ip) {
        Release::Forget
    } else {
        Release::Delete(ip.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Z: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const Z2: &str = "11111111111111111111111111111111";

    fn obj(key: &str, created: &str, ip: &str, region: &str) -> ObjectView {
        ObjectView {
            key: key.into(),
            created: created.into(),
            zone_id: Z.into(),
            ip: Ok(ip.into()),
            vendor: "aws".into(),
            region: region.into(),
            deleting: false,
            orphan: false,
            owned: None,
            was_ready: false,
            blocked: None,
        }
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

    fn step_of<'a>(plan: &'a ZonePlan, key: &str) -> &'a ObjectPlan {
        plan.objects.iter().find(|p| p.key == key).unwrap()
    }

    #[test]
    fn absent_entry_is_created_and_equal_entry_is_a_noop() {
        let mut a = obj("ns/a", "1", "192.0.2.1", "us-east-1");
        a.owned = Some((Z.into(), "192.0.2.1".into()));
        let b = obj("ns/b", "2", "192.0.2.2", "us-east-1");
        let plan = plan_zone(Z, &[a, b], &remote(&[("192.0.2.1", "us-east-1")]), None);
        assert_eq!(step_of(&plan, "ns/a").step, Step::InSync { adopted: false });
        assert!(matches!(
            step_of(&plan, "ns/b").step,
            Step::Upsert(_, UpsertKind::Create)
        ));
        assert_eq!(plan.upserts().count(), 1);
    }

    #[test]
    fn steady_state_plans_no_writes() {
        let objects: Vec<ObjectView> = (0..50)
            .map(|i| {
                let mut o = obj(
                    &format!("ns/o{i}"),
                    "1",
                    &format!("192.0.2.{i}"),
                    "us-east-1",
                );
                o.owned = Some((Z.into(), format!("192.0.2.{i}")));
                o.was_ready = true;
                o
            })
            .collect();
        let entries: Vec<(String, &str)> = (0..50)
            .map(|i| (format!("192.0.2.{i}"), "us-east-1"))
            .collect();
        let refs: Vec<(&str, &str)> = entries.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        assert!(plan_zone(Z, &objects, &remote(&refs), None).is_noop());
    }

    #[test]
    fn pre_existing_entry_is_adopted() {
        let a = obj("ns/a", "1", "192.0.2.1", "us-east-1");
        let plan = plan_zone(
            Z,
            std::slice::from_ref(&a),
            &remote(&[("192.0.2.1", "us-east-1")]),
            None,
        );
        assert_eq!(step_of(&plan, "ns/a").step, Step::InSync { adopted: true });
        let plan = plan_zone(Z, &[a], &remote(&[("192.0.2.1", "us-west-2")]), None);
        assert!(matches!(
            step_of(&plan, "ns/a").step,
            Step::Upsert(_, UpsertKind::Adopt)
        ));
    }

    #[test]
    fn drift_on_a_ready_object_is_corrected() {
        let mut a = obj("ns/a", "1", "192.0.2.1", "us-east-1");
        a.owned = Some((Z.into(), "192.0.2.1".into()));
        a.was_ready = true;
        let plan = plan_zone(
            Z,
            std::slice::from_ref(&a),
            &remote(&[("192.0.2.1", "us-west-2")]),
            None,
        );
        assert!(matches!(
            step_of(&plan, "ns/a").step,
            Step::Upsert(_, UpsertKind::DriftCorrect)
        ));
        let plan = plan_zone(Z, &[a], &remote(&[]), None);
        assert!(matches!(
            step_of(&plan, "ns/a").step,
            Step::Upsert(_, UpsertKind::DriftCorrect)
        ));
    }

    #[test]
    fn oldest_claimant_wins_a_conflict() {
        let a = obj("ns/a", "2026-01-02T00:00:00Z", "192.0.2.1", "us-east-1");
        let b = obj("ns/b", "2026-01-01T00:00:00Z", "192.0.2.1", "us-west-2");
        let plan = plan_zone(Z, &[a, b], &remote(&[]), None);
        assert!(matches!(
            step_of(&plan, "ns/b").step,
            Step::Upsert(_, UpsertKind::Create)
        ));
        match &step_of(&plan, "ns/a").step {
            Step::Blocked(Problem::Conflict { winner, .. }) => assert_eq!(winner, "ns/b"),
            other => panic!("{other:?}"),
        }
        assert_eq!(plan.upserts().count(), 1);
    }

    #[test]
    fn ip_change_in_zone_deletes_the_old_entry_then_creates() {
        let mut a = obj("ns/a", "1", "192.0.2.2", "us-east-1");
        a.owned = Some((Z.into(), "192.0.2.1".into()));
        let plan = plan_zone(Z, &[a], &remote(&[("192.0.2.1", "us-east-1")]), None);
        let p = step_of(&plan, "ns/a");
        assert_eq!(p.release, Some(Release::Delete("192.0.2.1".into())));
        assert!(matches!(p.step, Step::Upsert(_, UpsertKind::Create)));
    }

    #[test]
    fn orphan_policy_forgets_instead_of_deleting() {
        let mut a = obj("ns/a", "1", "192.0.2.1", "us-east-1");
        a.owned = Some((Z.into(), "192.0.2.1".into()));
        a.deleting = true;
        a.orphan = true;
        let plan = plan_zone(Z, &[a], &remote(&[("192.0.2.1", "us-east-1")]), None);
        let p = step_of(&plan, "ns/a");
        assert_eq!(p.release, Some(Release::Forget));
        assert_eq!(p.step, Step::Finalize);
        assert!(plan.is_noop());
    }

    #[test]
    fn deleting_owner_deletes_unless_another_object_claims_the_ip() {
        let mut a = obj("ns/a", "1", "192.0.2.1", "us-east-1");
        a.owned = Some((Z.into(), "192.0.2.1".into()));
        a.deleting = true;
        let r = remote(&[("192.0.2.1", "us-east-1")]);
        let plan = plan_zone(Z, std::slice::from_ref(&a), &r, None);
        assert_eq!(
            step_of(&plan, "ns/a").release,
            Some(Release::Delete("192.0.2.1".into()))
        );
        let b = obj("ns/b", "2", "192.0.2.1", "us-west-2");
        let plan = plan_zone(Z, &[a, b], &r, None);
        assert_eq!(step_of(&plan, "ns/a").release, Some(Release::Forget));
        assert!(matches!(
            step_of(&plan, "ns/b").step,
            Step::Upsert(_, UpsertKind::Adopt)
        ));
    }

    #[test]
    fn zone_move_waits_for_the_old_zone_to_release() {
        let mut a = obj("ns/a", "1", "192.0.2.1", "us-east-1");
        a.owned = Some((Z2.into(), "192.0.2.1".into()));
        let plan_new = plan_zone(Z, std::slice::from_ref(&a), &remote(&[]), None);
        assert_eq!(step_of(&plan_new, "ns/a").step, Step::WaitForRelease);
        let plan_old = plan_zone(Z2, &[a], &remote(&[("192.0.2.1", "us-east-1")]), None);
        let p = step_of(&plan_old, "ns/a");
        assert_eq!(p.release, Some(Release::Delete("192.0.2.1".into())));
        assert_eq!(p.step, Step::Skip);
    }

    #[test]
    fn unsupported_region_is_blocked_without_a_write() {
        let catalog: SupportedRegions = serde_json::from_value(serde_json::json!({
            "obtained_codes": true,
            "vendors": {"aws": [{"name": "us-east-1", "upper_tier_colos": ["IAD"]}]}
        }))
        .unwrap();
        let a = obj("ns/a", "1", "192.0.2.1", "us-east-9");
        let plan = plan_zone(Z, &[a], &remote(&[]), Some(&catalog));
        match &step_of(&plan, "ns/a").step {
            Step::Blocked(p @ Problem::RegionNotSupported(_)) => {
                assert!(p.to_string().contains("supported: us-east-1"), "{p}")
            }
            other => panic!("{other:?}"),
        }
        assert!(plan.is_noop());
    }

    #[test]
    fn deleting_object_that_never_recorded_ownership_removes_its_exact_entry() {
        let mut a = obj("ns/a", "1", "192.0.2.1", "us-east-1");
        a.deleting = true;
        let plan = plan_zone(
            Z,
            std::slice::from_ref(&a),
            &remote(&[("192.0.2.1", "us-east-1")]),
            None,
        );
        assert_eq!(
            step_of(&plan, "ns/a").release,
            Some(Release::Delete("192.0.2.1".into()))
        );
        let plan = plan_zone(Z, &[a], &remote(&[("192.0.2.1", "us-west-2")]), None);
        assert_eq!(step_of(&plan, "ns/a").release, None);
        assert_eq!(step_of(&plan, "ns/a").step, Step::Finalize);
    }

    #[test]
    fn deleting_after_an_unrecorded_ip_edit_removes_the_new_entry() {
        // Status still names .1, whose entry the edit already deleted; .2 was written but the
        // status write never happened (crash).
        let mut a = obj("ns/a", "1", "192.0.2.2", "us-east-1");
        a.owned = Some((Z.into(), "192.0.2.1".into()));
        a.deleting = true;
        let r = remote(&[("192.0.2.2", "us-east-1")]);
        let plan = plan_zone(Z, std::slice::from_ref(&a), &r, None);
        let p = step_of(&plan, "ns/a");
        assert_eq!(p.release, Some(Release::Delete("192.0.2.2".into())));
        assert_eq!(p.step, Step::Finalize);
        // The recorded entry still exists: then the edit's write never happened (the old
        // entry is deleted first, the new one written only after that succeeded).
        let r = remote(&[("192.0.2.1", "us-east-1"), ("192.0.2.2", "us-east-1")]);
        let plan = plan_zone(Z, std::slice::from_ref(&a), &r, None);
        assert_eq!(
            step_of(&plan, "ns/a").release,
            Some(Release::Delete("192.0.2.1".into()))
        );
        // Another live object claims .2: it is theirs.
        let b = obj("ns/b", "2", "192.0.2.2", "us-east-1");
        let plan = plan_zone(Z, &[a, b], &remote(&[("192.0.2.2", "us-east-1")]), None);
        assert_eq!(step_of(&plan, "ns/a").release, Some(Release::Forget));
    }
}
