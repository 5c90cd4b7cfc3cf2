//! Renders a [`Judgement`] as what people read: the object's status (Ready condition with an
//! actionable reason, observedGeneration, what is really applied) and the Event to publish.
//! Pure, so status logic is tested without a server.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{OriginCloudRegionMapping, OriginCloudRegionMappingStatus, READY};
use crate::planner::UpsertKind;
use crate::verdict::{Judgement, Verdict};
use crate::wire::{Mapping, SupportedRegions};

/// An Event to publish on an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human text.
    pub text: String,
}

/// What the zone knows that status reports (the snapshot after this reconcile's writes).
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// Remote entries of the zone by canonical IP.
    pub remote: &'a BTreeMap<String, Mapping>,
    /// Supported regions, when known.
    pub catalog: Option<&'a SupportedRegions>,
}

/// The status an object should have after `j`, and the Event to publish; `None` when the
/// verdict writes no status (finalize, untouched).
pub fn render(
    o: &OriginCloudRegionMapping,
    zone: &str,
    j: &Judgement,
    seen: Seen<'_>,
    now: &Time,
) -> Option<(OriginCloudRegionMappingStatus, Option<Note>)> {
    let old = o.status.clone().unwrap_or_default();
    let generation = o.metadata.generation.unwrap_or_default();
    let (zone_id, origin_ip) = j
        .applied
        .clone()
        .map_or((None, None), |e| (Some(e.zone), Some(e.ip)));
    match &j.verdict {
        Verdict::Finalize { .. } | Verdict::Untouched => None,
        Verdict::Ready { ip, wrote, adopted } => {
            let colos = seen
                .catalog
                .and_then(|c| c.region(&o.spec.vendor, &o.spec.region))
                .map(|r| r.upper_tier_colos.clone())
                .or_else(|| old.upper_tier_colos.clone());
            let changed = wrote.is_some() || *adopted || old.origin_ip.as_deref() != Some(ip);
            let message = format!(
                "{zone} {ip} is mapped to {} {}",
                o.spec.vendor, o.spec.region
            );
            let status = OriginCloudRegionMappingStatus {
                observed_generation: Some(generation),
                zone_id,
                origin_ip,
                vendor: Some(o.spec.vendor.clone()),
                region: Some(o.spec.region.clone()),
                upper_tier_colos: colos,
                last_sync_time: if changed {
                    Some(now.clone())
                } else {
                    old.last_sync_time.clone()
                },
                conditions: vec![condition(&old, generation, "True", "Synced", &message, now)],
            };
            let target = format!("{} {}", o.spec.vendor, o.spec.region);
            let note = match (wrote, adopted) {
                (_, true) => Some((
                    "Adopted",
                    format!("adopted existing remote mapping {ip} in zone {zone}"),
                )),
                (Some(UpsertKind::Create), _) => {
                    Some(("Created", format!("created remote mapping {ip} → {target}")))
                }
                (Some(UpsertKind::Update), _) => {
                    Some(("Updated", format!("updated remote mapping {ip} → {target}")))
                }
                (Some(UpsertKind::DriftCorrect), _) => Some((
                    "DriftCorrected",
                    format!("remote mapping {ip} had changed out of band; restored {target}"),
                )),
                _ => None,
            }
            .map(|(reason, text)| Note {
                warning: false,
                reason,
                text,
            });
            Some((status, note))
        }
        Verdict::NotReady(problem) => {
            // What is really applied: the remote entry this object still owns in this zone, as
            // the snapshot shows it; otherwise what status said before, while it still applies.
            let kept = j.applied.as_ref().and_then(|e| {
                if e.zone == zone {
                    seen.remote
                        .get(&e.ip)
                        .map(|m| (m.vendor.clone(), m.region.clone()))
                } else {
                    old.vendor.clone().zip(old.region.clone())
                }
            });
            let mut message = problem.to_string();
            if let (Some(e), Some((v, r))) = (&j.applied, &kept) {
                message.push_str(&format!(
                    "; the remote mapping {} of zone {} is kept as {v} {r}",
                    e.ip, e.zone
                ));
            }
            let (vendor, region) = kept.unzip();
            let status = OriginCloudRegionMappingStatus {
                observed_generation: Some(generation),
                zone_id,
                origin_ip,
                vendor,
                region,
                upper_tier_colos: if j.applied.is_some() {
                    old.upper_tier_colos.clone()
                } else {
                    None
                },
                last_sync_time: old.last_sync_time.clone(),
                conditions: vec![condition(
                    &old,
                    generation,
                    "False",
                    problem.reason(),
                    &message,
                    now,
                )],
            };
            let changed = o
                .ready_condition()
                .is_none_or(|c| c.reason != problem.reason() || c.message != message);
            let note = changed.then(|| Note {
                warning: problem.is_warning(),
                reason: problem.reason(),
                text: message.clone(),
            });
            Some((status, note))
        }
    }
}

/// The Event for a released object, when it owned anything.
pub fn finalize_note(j: &Judgement) -> Option<Note> {
    let Verdict::Finalize { deleted, kept } = &j.verdict else {
        return None;
    };
    let list = |es: &[crate::ownership::Entry]| {
        es.iter()
            .map(|e| format!("{} in zone {}", e.ip, e.zone))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !deleted.is_empty() {
        Some(Note {
            warning: false,
            reason: "Deleted",
            text: format!("removed remote mapping {}", list(deleted)),
        })
    } else if !kept.is_empty() {
        Some(Note {
            warning: false,
            reason: "Orphaned",
            text: format!("left remote mapping {}", list(kept)),
        })
    } else {
        None
    }
}

/// The Ready condition, keeping lastTransitionTime when the status value did not change.
pub fn condition(
    old: &OriginCloudRegionMappingStatus,
    generation: i64,
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
        observed_generation: Some(generation),
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::OriginCloudRegionMappingSpec;
    use crate::error::Problem;
    use crate::ownership::Entries;
    use crate::ownership::{Entry, ObjectKey};

    const Z: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    fn object(region: &str, generation: i64) -> OriginCloudRegionMapping {
        let mut o = OriginCloudRegionMapping::new(
            "a",
            OriginCloudRegionMappingSpec {
                zone_id: Z.into(),
                origin_ip: "192.0.2.1".into(),
                vendor: "aws".into(),
                region: region.into(),
                credentials_secret_ref: None,
                deletion_policy: Default::default(),
            },
        );
        o.metadata.namespace = Some("ns".into());
        o.metadata.generation = Some(generation);
        o
    }

    fn judgement(verdict: Verdict, applied: Option<Entry>) -> Judgement {
        Judgement {
            key: ObjectKey::default(),
            verdict,
            owned: applied.iter().cloned().collect::<Entries>(),
            record: Entries::new(),
            applied,
            wake: Vec::new(),
        }
    }

    fn remote(region: &str) -> BTreeMap<String, Mapping> {
        [(
            "192.0.2.1".to_string(),
            Mapping {
                origin_ip: "192.0.2.1".into(),
                vendor: "aws".into(),
                region: region.into(),
                modified_on: None,
            },
        )]
        .into_iter()
        .collect()
    }

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    #[test]
    fn a_blocked_edit_reports_the_problem_and_what_is_kept() {
        let o = object("us-east-9", 2);
        let r = remote("us-east-1");
        let j = judgement(
            Verdict::NotReady(Problem::region_not_supported(
                "aws",
                "us-east-9",
                &["us-east-1".into()],
            )),
            Some(Entry::new(Z, "192.0.2.1")),
        );
        let (s, note) = render(
            &o,
            Z,
            &j,
            Seen {
                remote: &r,
                catalog: None,
            },
            &now(),
        )
        .unwrap();
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.origin_ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(s.zone_id.as_deref(), Some(Z));
        assert_eq!(
            s.region.as_deref(),
            Some("us-east-1"),
            "what is really applied"
        );
        let c = &s.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RegionNotSupported")
        );
        assert!(
            c.message.contains("is kept as aws us-east-1"),
            "{}",
            c.message
        );
        let note = note.unwrap();
        assert!(note.warning);
        assert_eq!(note.reason, "RegionNotSupported");
    }

    #[test]
    fn ready_is_current_and_an_unchanged_status_publishes_nothing_again() {
        let mut o = object("us-east-1", 3);
        let r = remote("us-east-1");
        let seen = Seen {
            remote: &r,
            catalog: None,
        };
        let j = judgement(
            Verdict::Ready {
                ip: "192.0.2.1".into(),
                wrote: Some(UpsertKind::Create),
                adopted: false,
            },
            Some(Entry::new(Z, "192.0.2.1")),
        );
        let (s, note) = render(&o, Z, &j, seen, &now()).unwrap();
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions[0].observed_generation, Some(3));
        assert_eq!(note.unwrap().reason, "Created");
        o.status = Some(s.clone());
        let steady = judgement(
            Verdict::Ready {
                ip: "192.0.2.1".into(),
                wrote: None,
                adopted: false,
            },
            Some(Entry::new(Z, "192.0.2.1")),
        );
        let later = Time(jiff::Timestamp::from_second(1_900_000_000).unwrap());
        let (s2, note) = render(&o, Z, &steady, seen, &later).unwrap();
        assert_eq!(s2, s, "steady state writes nothing");
        assert_eq!(note, None);
        // The same problem twice: one Event.
        let blocked = judgement(Verdict::NotReady(Problem::NoCredentials), None);
        let (s3, note) = render(&o, Z, &blocked, seen, &later).unwrap();
        assert!(note.is_some());
        o.status = Some(s3);
        let (_, note) = render(&o, Z, &blocked, seen, &later).unwrap();
        assert_eq!(note, None);
    }

    #[test]
    fn a_released_object_says_what_was_deleted_or_kept() {
        let e = Entry::new(Z, "192.0.2.1");
        let j = judgement(
            Verdict::Finalize {
                deleted: vec![e.clone()],
                kept: vec![],
            },
            None,
        );
        assert_eq!(finalize_note(&j).unwrap().reason, "Deleted");
        let j = judgement(
            Verdict::Finalize {
                deleted: vec![],
                kept: vec![e],
            },
            None,
        );
        assert_eq!(finalize_note(&j).unwrap().reason, "Orphaned");
        let j = judgement(
            Verdict::Finalize {
                deleted: vec![],
                kept: vec![],
            },
            None,
        );
        assert_eq!(finalize_note(&j), None);
    }
}
