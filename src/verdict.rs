//! Judges each object of a zone after the remote writes: what it now owns, what is applied,
//! and whether it is Ready, blocked, moving or may be released. Pure, so every outcome of
//! every write result is unit-tested without a server.

use std::collections::{HashMap, HashSet};

use crate::error::{Action, Problem};
use crate::ownership::{Entries, Entry, ObjectKey};
use crate::planner::{ObjectPlan, ObjectView, Release, Step, UpsertKind};

/// Results of one zone reconcile's Kubernetes records and Cloudflare writes.
#[derive(Debug, Default, Clone)]
pub struct WriteResults {
    /// Objects whose write-ahead intent is durably recorded.
    pub recorded: HashSet<ObjectKey>,
    /// Result of each delete, by object and IP.
    pub deletes: HashMap<(ObjectKey, String), Result<(), Problem>>,
    /// Result of each upsert, by object.
    pub upserts: HashMap<ObjectKey, Result<(), Problem>>,
    /// The Lease was found lost before a batch: nothing after it was written.
    pub lease_lost: bool,
    /// Objects that changed since the plan's copy was read: no write was made for them and
    /// nothing may be decided from that copy.
    pub stale: HashSet<ObjectKey>,
}

/// The final word on one object after the writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The remote entry equals the spec.
    Ready {
        /// Canonical IP applied.
        ip: String,
        /// The write made, if any.
        wrote: Option<UpsertKind>,
        /// The object took over an entry it did not create.
        adopted: bool,
    },
    /// Not applied, and why.
    NotReady(Problem),
    /// Deleting and nothing is left: remove the finalizer.
    Finalize {
        /// Entries deleted from Cloudflare on the way out.
        deleted: Vec<Entry>,
        /// Entries left in place (orphaned, or now owned by another object).
        kept: Vec<Entry>,
    },
    /// Nothing to report here (the object belongs to another zone's reconcile).
    Untouched,
}

/// What one object is after a zone reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The object.
    pub key: ObjectKey,
    /// Its verdict.
    pub verdict: Verdict,
    /// The entry confirmed applied (to write as status zoneId/originIp).
    pub applied: Option<Entry>,
    /// Everything it owns now: the record minus confirmed releases plus recorded intents.
    pub owned: Entries,
    /// The write-ahead record as it stands after this reconcile's record phase (the object's
    /// annotation plus the intent just recorded), which a prune starts from.
    pub record: Entries,
    /// Other zones that must run now: the other end of a move, and every other zone where
    /// the object still owns entries once one here was released (their reconcile may be what
    /// finalizes it, and no watch event of ours asks for it).
    pub wake: Vec<String>,
}

/// Judges one object from its view, its plan and the zone's write results.
pub fn judge(
    zone: &str,
    view: &ObjectView,
    plan: &ObjectPlan,
    results: &WriteResults,
) -> Judgement {
    let key = &view.key;
    if results.stale.contains(key) {
        return Judgement {
            key: key.clone(),
            verdict: Verdict::Untouched,
            applied: view.applied.clone(),
            owned: view.owned.clone(),
            record: view.recorded.clone(),
            wake: Vec::new(),
        };
    }
    let mut released: Vec<(&Release, Entry)> = Vec::new();
    let mut failure: Option<(String, Problem)> = None;
    for r in &plan.releases {
        let entry = Entry::new(zone, r.ip());
        match r {
            Release::Forget(_) => released.push((r, entry)),
            Release::Delete(ip) => match results.deletes.get(&(key.clone(), ip.clone())) {
                Some(Ok(())) => released.push((r, entry)),
                Some(Err(p)) => {
                    failure.get_or_insert((ip.clone(), p.clone()));
                }
                None => {
                    let p = Problem::CloudflareUnavailable("the delete was not attempted".into());
                    failure.get_or_insert((ip.clone(), p));
                }
            },
        }
    }
    let mut owned = view.owned.clone();
    for (_, e) in &released {
        owned.remove(e);
    }
    let mut record = view.recorded.clone();
    if let Some(intent) = &plan.intent {
        if results.recorded.contains(key) {
            owned.insert(intent.clone());
            record.insert(intent.clone());
        }
    }
    let mut applied = view
        .applied
        .clone()
        .filter(|a| !released.iter().any(|(_, e)| e == a));
    let mut wake = Vec::new();

    let verdict = if let Some((ip, p)) = failure {
        if view.deleting {
            Verdict::NotReady(Problem::DeletionBlocked {
                zone: zone.to_string(),
                ip,
                why: p.to_string(),
                retrying: p.action() == Action::Retry,
            })
        } else {
            Verdict::NotReady(p)
        }
    } else {
        match &plan.step {
            Step::InSync { adopted } => {
                let ip = view.ip.clone().unwrap_or_default();
                applied = Some(Entry::new(zone, &ip));
                Verdict::Ready {
                    ip,
                    wrote: None,
                    adopted: *adopted,
                }
            }
            Step::Upsert(input, kind) => match results.upserts.get(key) {
                Some(Ok(())) => {
                    applied = Some(Entry::new(zone, &input.origin_ip));
                    Verdict::Ready {
                        ip: input.origin_ip.clone(),
                        wrote: Some(*kind),
                        adopted: *kind == UpsertKind::Adopt,
                    }
                }
                Some(Err(p)) => Verdict::NotReady(p.clone()),
                None => Verdict::NotReady(Problem::CloudflareUnavailable(
                    "the write was not attempted".into(),
                )),
            },
            Step::Blocked(p) => Verdict::NotReady(p.clone()),
            Step::WaitForRelease => match owned.iter().find(|e| e.zone != zone) {
                Some(e) => {
                    wake.push(e.zone.clone());
                    Verdict::NotReady(Problem::Moving {
                        zone: e.zone.clone(),
                        ip: e.ip.clone(),
                    })
                }
                None => Verdict::Untouched,
            },
            Step::Finalize => {
                let (deleted, kept) = released
                    .iter()
                    .partition::<Vec<_>, _>(|(r, _)| matches!(r, Release::Delete(_)));
                Verdict::Finalize {
                    deleted: deleted.into_iter().map(|(_, e)| e.clone()).collect(),
                    kept: kept.into_iter().map(|(_, e)| e.clone()).collect(),
                }
            }
            Step::MoveOut => {
                wake.push(view.zone_id.clone());
                let (z, ip) = released
                    .first()
                    .map(|(_, e)| (e.zone.clone(), e.ip.clone()))
                    .unwrap_or_else(|| (zone.to_string(), String::new()));
                Verdict::NotReady(Problem::Moving { zone: z, ip })
            }
            Step::Skip => Verdict::Untouched,
        }
    };
    if !released.is_empty() {
        let others = owned.iter().map(|e| &e.zone).filter(|z| *z != zone);
        for z in others.chain((!view.deleting && view.zone_id != zone).then_some(&view.zone_id)) {
            if !wake.contains(z) {
                wake.push(z.clone());
            }
        }
    }
    Judgement {
        key: key.clone(),
        verdict,
        applied,
        owned,
        record,
        wake,
    }
}

/// The record to write back when entries left it: `Some(new record)` only when a confirmed
/// release must be dropped (never just to add what status already records, so a create costs
/// no extra write).
pub fn record_to_prune(recorded: &Entries, owned: &Entries) -> Option<Entries> {
    let stale = recorded.iter().any(|e| !owned.contains(e));
    stale.then(|| recorded.intersection(owned).cloned().collect())
}

/// Whether the zone must be retried with backoff after these judgements.
pub fn needs_retry<'a>(judgements: impl IntoIterator<Item = &'a Judgement>) -> bool {
    judgements.into_iter().any(|j| match &j.verdict {
        Verdict::NotReady(p) => p.action() == Action::Retry && !matches!(p, Problem::Moving { .. }),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MappingInput;

    const Z: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const Z2: &str = "11111111111111111111111111111111";

    fn key() -> ObjectKey {
        ObjectKey {
            namespace: "ns".into(),
            name: "a".into(),
        }
    }

    fn view(ip: &str, owned: &[(&str, &str)]) -> ObjectView {
        let owned: Entries = owned.iter().map(|(z, i)| Entry::new(*z, *i)).collect();
        ObjectView {
            key: key(),
            created: "1".into(),
            zone_id: Z.into(),
            ip: Ok(ip.into()),
            vendor: "aws".into(),
            region: "us-east-1".into(),
            deleting: false,
            orphan: false,
            applied: owned.iter().next().cloned(),
            recorded: Entries::new(),
            owned,
            was_ready: false,
            blocked: None,
            generated: false,
        }
    }

    fn plan(releases: Vec<Release>, intent: Option<Entry>, step: Step) -> ObjectPlan {
        ObjectPlan {
            key: key(),
            releases,
            intent,
            step,
        }
    }

    fn upsert(ip: &str) -> Step {
        Step::Upsert(
            MappingInput {
                origin_ip: ip.into(),
                vendor: "aws".into(),
                region: "us-east-1".into(),
            },
            UpsertKind::Create,
        )
    }

    #[test]
    fn a_confirmed_move_owns_only_the_new_entry() {
        let v = view("192.0.2.2", &[(Z, "192.0.2.1")]);
        let p = plan(
            vec![Release::Delete("192.0.2.1".into())],
            Some(Entry::new(Z, "192.0.2.2")),
            upsert("192.0.2.2"),
        );
        let mut r = WriteResults::default();
        r.recorded.insert(key());
        r.deletes.insert((key(), "192.0.2.1".into()), Ok(()));
        r.upserts.insert(key(), Ok(()));
        let j = judge(Z, &v, &p, &r);
        assert!(matches!(j.verdict, Verdict::Ready { .. }));
        assert_eq!(j.applied, Some(Entry::new(Z, "192.0.2.2")));
        assert_eq!(j.owned, [Entry::new(Z, "192.0.2.2")].into_iter().collect());
    }

    #[test]
    fn a_move_whose_write_was_lost_keeps_the_new_intent_in_the_record() {
        // Recorded: .1 (from its create); the move records .2, deletes .1, and the PUT of .2
        // loses its answer. The prune must start from the record as written now ({.1, .2}),
        // not as the object was read ({.1}), or .2 would be recorded nowhere.
        let mut v = view("192.0.2.2", &[(Z, "192.0.2.1")]);
        v.recorded = [Entry::new(Z, "192.0.2.1")].into_iter().collect();
        let p = plan(
            vec![Release::Delete("192.0.2.1".into())],
            Some(Entry::new(Z, "192.0.2.2")),
            upsert("192.0.2.2"),
        );
        let mut r = WriteResults::default();
        r.recorded.insert(key());
        r.deletes.insert((key(), "192.0.2.1".into()), Ok(()));
        r.upserts.insert(
            key(),
            Err(Problem::CloudflareUnavailable("cut short".into())),
        );
        let j = judge(Z, &v, &p, &r);
        let new = record_to_prune(&j.record, &j.owned).expect(".1 leaves the record");
        assert_eq!(new, [Entry::new(Z, "192.0.2.2")].into_iter().collect());
    }

    #[test]
    fn a_lost_response_keeps_the_intent_and_the_old_applied_entry() {
        let v = view("192.0.2.1", &[]);
        let p = plan(
            vec![],
            Some(Entry::new(Z, "192.0.2.1")),
            upsert("192.0.2.1"),
        );
        let mut r = WriteResults::default();
        r.recorded.insert(key());
        r.upserts.insert(
            key(),
            Err(Problem::CloudflareUnavailable("cut short".into())),
        );
        let j = judge(Z, &v, &p, &r);
        assert!(matches!(
            j.verdict,
            Verdict::NotReady(Problem::CloudflareUnavailable(_))
        ));
        assert_eq!(j.owned, [Entry::new(Z, "192.0.2.1")].into_iter().collect());
        assert_eq!(j.applied, None);
        assert!(needs_retry([&j]));
    }

    #[test]
    fn a_failed_delete_keeps_the_entry_and_a_terminal_one_blocks_deletion() {
        let mut v = view("192.0.2.1", &[(Z, "192.0.2.1")]);
        v.deleting = true;
        let p = plan(
            vec![Release::Delete("192.0.2.1".into())],
            None,
            Step::Finalize,
        );
        let mut r = WriteResults::default();
        r.deletes.insert(
            (key(), "192.0.2.1".into()),
            Err(Problem::Rejected("refused".into())),
        );
        let j = judge(Z, &v, &p, &r);
        match &j.verdict {
            Verdict::NotReady(p @ Problem::DeletionBlocked { .. }) => {
                assert!(p.to_string().contains("force-orphan"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(j.owned.len(), 1);
        assert_eq!(j.applied, v.applied);
        r.deletes.insert((key(), "192.0.2.1".into()), Ok(()));
        let j = judge(Z, &v, &p, &r);
        assert_eq!(
            j.verdict,
            Verdict::Finalize {
                deleted: vec![Entry::new(Z, "192.0.2.1")],
                kept: vec![]
            }
        );
        assert!(j.owned.is_empty());
    }

    #[test]
    fn a_release_here_wakes_the_other_zones_the_object_still_owns_entries_in() {
        // Deleting, with entries here and in Z2: Z2's reconcile is the one that finalizes,
        // and only this zone knows it should run now.
        let mut v = view("192.0.2.1", &[(Z, "192.0.2.1"), (Z2, "192.0.2.9")]);
        v.deleting = true;
        let mut r = WriteResults::default();
        r.deletes.insert((key(), "192.0.2.1".into()), Ok(()));
        let release = || vec![Release::Delete("192.0.2.1".into())];
        let j = judge(Z, &v, &plan(release(), None, Step::Skip), &r);
        assert_eq!(j.wake, [Z2]);
        // A release that failed changed nothing elsewhere: no wake.
        r.deletes.insert(
            (key(), "192.0.2.1".into()),
            Err(Problem::CloudflareUnavailable("500".into())),
        );
        let j = judge(Z, &v, &plan(release(), None, Step::Skip), &r);
        assert!(j.wake.is_empty(), "{:?}", j.wake);
        // A live object that names Z2 and moved out of Z wakes Z2 once.
        let mut v = view("192.0.2.1", &[(Z, "192.0.2.1")]);
        v.zone_id = Z2.into();
        r.deletes.insert((key(), "192.0.2.1".into()), Ok(()));
        let j = judge(Z, &v, &plan(release(), None, Step::MoveOut), &r);
        assert_eq!(j.wake, [Z2]);
    }

    #[test]
    fn waiting_for_another_zone_reports_moving_and_wakes_it() {
        let v = view("192.0.2.1", &[(Z2, "192.0.2.1")]);
        let j = judge(
            Z,
            &v,
            &plan(vec![], None, Step::WaitForRelease),
            &WriteResults::default(),
        );
        assert_eq!(j.wake, [Z2]);
        assert!(matches!(
            j.verdict,
            Verdict::NotReady(Problem::Moving { .. })
        ));
        assert!(
            !needs_retry([&j]),
            "the other zone's release wakes this one"
        );
    }

    #[test]
    fn an_object_changed_since_it_was_read_is_left_as_it_is() {
        // Its release was planned from the old copy, but the copy was stale: nothing was
        // written, so nothing leaves what it owns and nothing is published.
        let v = view("192.0.2.2", &[(Z, "192.0.2.1")]);
        let p = plan(
            vec![Release::Delete("192.0.2.1".into())],
            Some(Entry::new(Z, "192.0.2.2")),
            upsert("192.0.2.2"),
        );
        let results = WriteResults {
            stale: [key()].into_iter().collect(),
            ..Default::default()
        };
        let j = judge(Z, &v, &p, &results);
        assert_eq!(j.verdict, Verdict::Untouched);
        assert_eq!(j.owned, v.owned);
        assert_eq!(record_to_prune(&j.record, &j.owned), None);
        assert!(
            !needs_retry([&j]),
            "the zone retries through its failed record write"
        );
    }

    #[test]
    fn a_blocked_object_keeps_what_it_owns() {
        let v = view("192.0.2.1", &[(Z, "192.0.2.1")]);
        let p = plan(vec![], None, Step::Blocked(Problem::NoCredentials));
        let j = judge(Z, &v, &p, &WriteResults::default());
        assert_eq!(j.applied, v.applied);
        assert_eq!(j.owned, v.owned);
        assert!(!needs_retry([&j]));
    }

    #[test]
    fn only_released_entries_are_pruned_from_the_record() {
        let e1 = Entry::new(Z, "192.0.2.1");
        let e2 = Entry::new(Z, "192.0.2.2");
        let rec: Entries = [e1.clone(), e2.clone()].into_iter().collect();
        let owned: Entries = [e2.clone()].into_iter().collect();
        assert_eq!(record_to_prune(&rec, &owned), Some(owned.clone()));
        assert_eq!(record_to_prune(&owned, &rec), None, "never just to add");
        assert_eq!(record_to_prune(&Entries::new(), &owned), None);
    }
}
