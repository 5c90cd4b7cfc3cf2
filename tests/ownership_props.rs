//! Property tests of the ownership rules: random sequences of spec edits (valid and invalid),
//! credential failures, lost responses, failed writes, refused Kubernetes writes and crashes,
//! played through a model of the reconcile built from the operator's own pure phases
//! (planner → records → writes → verdicts → publish), on a cache that may lag any number of
//! versions behind other clients' changes but never behind the operator's own last write
//! (it waits for that; a restarted or newly elected process starts from a fresh list), with
//! every write to an object conditional on the version it was computed from. Two properties:
//! - no plan ever deletes an entry whose owner still exists and names it;
//! - once every object is deleted (and faults end), nothing the operator ever wrote remains,
//!   and no object is left hanging on its finalizer.

use std::collections::{BTreeMap, BTreeSet};

use origin_region_operator::error::Problem;
use origin_region_operator::ownership::{Entries, Entry, ObjectKey};
use origin_region_operator::planner::{plan_zone, ObjectView, ZoneFacts};
use origin_region_operator::verdict::{self, Verdict, WriteResults};
use origin_region_operator::wire::{Mapping, SupportedRegions};
use proptest::prelude::*;

const ZONES: [&str; 2] = [
    "023e105f4ecef8ad9ca31a8372d0c353",
    "11111111111111111111111111111111",
];
const IPS: [&str; 3] = ["192.0.2.1", "192.0.2.2", "2001:db8::1"];
const REGIONS: [&str; 3] = ["us-east-1", "us-west-2", "us-east-9"];

#[derive(Debug, Clone)]
struct Spec {
    zone: usize,
    ip: Option<usize>,
    region: usize,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// Cloudflare applies the writes but the responses are lost.
    LostResponse,
    /// Cloudflare refuses the writes (they do not happen).
    WriteFails,
    /// The finalizer/intent patch is refused.
    RecordFails,
    /// Status and record writes after the Cloudflare writes are refused.
    PublishFails,
    /// The process dies right after the Cloudflare writes.
    Crash,
    /// A DELETE that read each object before its intent was recorded removes it right after
    /// (the apiserver race that ignores a finalizer added in between): the writes go on for
    /// objects that are gone, and only the watch's last state of them is left.
    DeleteRaces,
}

#[derive(Debug, Clone)]
enum Op {
    Create(usize, Spec),
    Edit(usize, Spec),
    Delete(usize),
    BreakCredential(usize, bool),
    /// Reconcile a zone on a cache that lags this many versions behind each object.
    Reconcile(usize, Fault, usize),
}

#[derive(Debug, Clone)]
struct Obj {
    created: u32,
    spec: Spec,
    deleting: bool,
    cred_ok: bool,
    record: Entries,
    applied: Option<Entry>,
    /// Resource version: every write bumps it, from one counter, as etcd does.
    version: u64,
}

#[derive(Default)]
struct World {
    objects: BTreeMap<usize, Obj>,
    remote: BTreeMap<String, BTreeMap<String, Mapping>>,
    written: Entries,
    clock: u32,
    /// Every version each object has had, oldest first: what a lagging cache may show.
    history: BTreeMap<usize, Vec<Obj>>,
    /// Per object, the oldest version the operator's cache may still show: its own last
    /// write, or what a restarted process listed.
    floor: BTreeMap<usize, u64>,
    versions: u64,
    /// Objects removed under the operator's finalizer, as the watch last showed them, until
    /// what they own is released (the operator's tombstones; lost in a crash, like those).
    /// By a burial number (the operator keys them by UID: a new object of the same name is
    /// another one).
    buried: BTreeMap<u64, (usize, Obj)>,
    /// Entries whose tombstone a crash lost: the one gap the operator has (the racing DELETE
    /// and a crash before the zone's next reconcile), documented, and the only orphans the
    /// end state may show.
    lost_tombstones: Entries,
}

fn key(i: usize) -> ObjectKey {
    ObjectKey {
        namespace: "ns".into(),
        name: format!("o{i}"),
    }
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

fn view(i: usize, o: &Obj) -> ObjectView {
    let mut owned = o.record.clone();
    owned.extend(o.applied.clone());
    ObjectView {
        key: key(i),
        created: format!("{:05}", o.created),
        zone_id: ZONES[o.spec.zone].into(),
        ip: o
            .spec
            .ip
            .map(|i| IPS[i].to_string())
            .ok_or("not an IP".into()),
        vendor: "aws".into(),
        region: REGIONS[o.spec.region].into(),
        deleting: o.deleting,
        orphan: false,
        owned,
        applied: o.applied.clone(),
        recorded: o.record.clone(),
        was_ready: false,
        blocked: (!o.cred_ok).then(|| Problem::Unauthorized("refused".into())),
        // Half the objects rank as generated: the rules must hold whatever the ranking.
        generated: i % 2 == 1,
    }
}

impl World {
    /// Stores a change of object `i` as a new version; `ours` when the operator made it.
    fn bump(&mut self, i: usize, ours: bool) -> u64 {
        self.versions += 1;
        let v = self.versions;
        let o = self.objects.get_mut(&i).unwrap();
        o.version = v;
        self.history.entry(i).or_default().push(o.clone());
        if ours {
            self.floor.insert(i, v);
        }
        v
    }

    /// What a cache `lag` versions behind shows of each existing object.
    fn cached(&self, lag: usize) -> BTreeMap<usize, Obj> {
        self.objects
            .keys()
            .map(|i| {
                let h = &self.history[i];
                let floor = self.floor.get(i).copied().unwrap_or(0);
                let oldest = h.iter().position(|o| o.version >= floor).unwrap_or(0);
                let mut seen = h[h.len().saturating_sub(1 + lag).max(oldest)].clone();
                // Credentials live in Secrets, not in the object's versions.
                seen.cred_ok = self.objects[i].cred_ok;
                (*i, seen)
            })
            .collect()
    }

    fn reconcile(&mut self, z: usize, fault: Fault, lag: usize) -> Result<(), TestCaseError> {
        let zone = ZONES[z];
        let cache = self.cached(lag);
        let members: Vec<usize> = cache
            .iter()
            .filter(|(_, o)| {
                o.spec.zone == z
                    || o.record
                        .iter()
                        .chain(o.applied.iter())
                        .any(|e| e.zone == zone)
            })
            .map(|(i, _)| *i)
            .collect();
        let mut views: Vec<ObjectView> = members.iter().map(|i| view(*i, &cache[i])).collect();
        for (id, (i, o)) in &self.buried {
            if o.record.iter().any(|e| e.zone == zone) {
                views.push(ObjectView {
                    key: buried_key(*i, *id),
                    ..view(*i, o)
                });
            }
        }
        // Each write to an object is conditional on the version this reconcile last saw of it.
        let mut base: BTreeMap<usize, u64> =
            members.iter().map(|i| (*i, cache[i].version)).collect();
        let remote = self.remote.entry(zone.to_string()).or_default().clone();
        let c = catalog();
        let plan = plan_zone(
            zone,
            &views,
            ZoneFacts {
                remote: &remote,
                catalog: Some(&c),
                capacity: None,
                adopt: true,
                reserved: None,
            },
        );
        // Property 1: nothing deleted that a live owner still names.
        for (k, ip) in plan.deletes() {
            for v in &views {
                let names = !v.deleting && v.zone_id == zone && v.ip.as_deref() == Ok(ip);
                let owns = v.owned.contains(&Entry::new(zone, ip));
                prop_assert!(
                    !(names && owns),
                    "{k} deletes {ip} that live owner {} names",
                    v.key
                );
            }
        }
        // Records (finalizer + intent) before any write, each from the cached copy's record.
        let mut results = WriteResults::default();
        let mut unrecorded = BTreeSet::new();
        for p in &plan.objects {
            if let Some(intent) = &p.intent {
                let i = index(&p.key);
                if matches!(fault, Fault::RecordFails) {
                    unrecorded.insert(p.key.clone());
                } else if base[&i] != self.objects[&i].version {
                    results.stale.insert(p.key.clone());
                } else {
                    let mut record = cache[&i].record.clone();
                    record.insert(intent.clone());
                    self.objects.get_mut(&i).unwrap().record = record;
                    base.insert(i, self.bump(i, true));
                    results.recorded.insert(p.key.clone());
                }
            }
        }
        if matches!(fault, Fault::DeleteRaces) {
            for k in &results.recorded {
                let i = index(k);
                if let Some(mut o) = self.objects.remove(&i) {
                    o.deleting = true;
                    // The record is what it owns from now on.
                    o.record.extend(o.applied.take());
                    self.versions += 1;
                    self.buried.insert(self.versions, (i, o));
                }
            }
        }
        let applies = !matches!(fault, Fault::WriteFails);
        let answered = matches!(
            fault,
            Fault::None
                | Fault::RecordFails
                | Fault::PublishFails
                | Fault::Crash
                | Fault::DeleteRaces
        );
        let r = |ok: bool| -> Result<(), Problem> {
            if ok {
                Ok(())
            } else {
                Err(Problem::CloudflareUnavailable("fault".into()))
            }
        };
        let zone_remote = self.remote.get_mut(zone).unwrap();
        for (k, ip) in plan.deletes() {
            if results.stale.contains(k) {
                continue;
            }
            if unrecorded.contains(k) {
                let p = Problem::KubernetesWriteFailed {
                    what: "the record",
                    why: "fault".into(),
                };
                results.deletes.insert((k.clone(), ip.to_string()), Err(p));
                continue;
            }
            if applies {
                zone_remote.remove(ip);
            }
            results
                .deletes
                .insert((k.clone(), ip.to_string()), r(applies && answered));
        }
        for (k, input, _) in plan.upserts() {
            if unrecorded.contains(k)
                || results.stale.contains(k)
                || results
                    .deletes
                    .iter()
                    .any(|((dk, _), res)| dk == k && res.is_err())
            {
                continue;
            }
            if applies {
                zone_remote.insert(
                    input.origin_ip.clone(),
                    Mapping {
                        origin_ip: input.origin_ip.clone(),
                        vendor: input.vendor.clone(),
                        region: input.region.clone(),
                        modified_on: None,
                    },
                );
                self.written.insert(Entry::new(zone, &input.origin_ip));
            }
            results.upserts.insert(k.clone(), r(applies && answered));
        }
        if matches!(fault, Fault::Crash) {
            // The restarted process lists every object afresh; tombstones are memory.
            self.floor = self.objects.iter().map(|(i, o)| (*i, o.version)).collect();
            for (_, o) in std::mem::take(&mut self.buried).into_values() {
                self.lost_tombstones.extend(o.record);
            }
            return Ok(());
        }
        for (v, p) in views.iter().zip(&plan.objects) {
            let j = verdict::judge(zone, v, p, &results);
            let i = index(&v.key);
            if let Some(id) = v
                .key
                .name
                .split_once('@')
                .map(|(_, id)| id.parse::<u64>().unwrap())
            {
                // Nothing to write to: it keeps what it still owns, and goes once that is nothing.
                let (_, o) = self.buried.get_mut(&id).unwrap();
                let mut left: Entries = o
                    .record
                    .iter()
                    .filter(|e| e.zone != zone)
                    .cloned()
                    .collect();
                left.extend(j.owned.iter().filter(|e| e.zone == zone).cloned());
                if left.is_empty() {
                    self.buried.remove(&id);
                } else {
                    o.record = left;
                }
                continue;
            }
            if !self.objects.contains_key(&i) {
                // Removed by a racing DELETE during this reconcile: gone, nothing to publish.
                continue;
            }
            let current = |w: &World, i: usize, base: &BTreeMap<usize, u64>| {
                w.objects.get(&i).is_some_and(|o| o.version == base[&i])
            };
            if let Verdict::Finalize { .. } = j.verdict {
                if !matches!(fault, Fault::PublishFails) && current(self, i, &base) {
                    self.objects.remove(&i);
                }
                continue;
            }
            if matches!(fault, Fault::PublishFails) {
                continue;
            }
            // Status writes are conditional too: one from a stale copy would hand the prune
            // below a version it never saw.
            if !matches!(j.verdict, Verdict::Untouched) && cache[&i].applied != j.applied {
                if !current(self, i, &base) {
                    continue;
                }
                self.objects.get_mut(&i).unwrap().applied = j.applied.clone();
                base.insert(i, self.bump(i, true));
            }
            // The prune starts from what the reconcile itself computes as the record now, as
            // the operator does, so a wrong base (a stale read) would orphan here too.
            if let Some(rec) = verdict::record_to_prune(&j.record, &j.owned) {
                if current(self, i, &base) {
                    self.objects.get_mut(&i).unwrap().record = rec;
                    base.insert(i, self.bump(i, true));
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Create(i, spec) => {
                if !self.objects.contains_key(i) {
                    self.clock += 1;
                    self.objects.insert(
                        *i,
                        Obj {
                            created: self.clock,
                            spec: spec.clone(),
                            deleting: false,
                            cred_ok: true,
                            record: Entries::new(),
                            applied: None,
                            version: 0,
                        },
                    );
                    // A new object starts a new history.
                    self.history.remove(i);
                    self.floor.remove(i);
                    self.bump(*i, false);
                }
            }
            Op::Edit(i, spec) => {
                if let Some(o) = self.objects.get_mut(i) {
                    if !o.deleting {
                        o.spec = spec.clone();
                        self.bump(*i, false);
                    }
                }
            }
            Op::Delete(i) => {
                if let Some(o) = self.objects.get_mut(i) {
                    if !o.deleting {
                        o.deleting = true;
                        self.bump(*i, false);
                    }
                }
            }
            Op::BreakCredential(i, broken) => {
                if let Some(o) = self.objects.get_mut(i) {
                    o.cred_ok = !broken;
                }
            }
            Op::Reconcile(z, fault, lag) => self.reconcile(*z, *fault, *lag)?,
        }
        Ok(())
    }
}

fn index(k: &ObjectKey) -> usize {
    k.name[1..].split('@').next().unwrap().parse().unwrap()
}

/// A buried object's key: never that of a live object of the same name.
fn buried_key(i: usize, id: u64) -> ObjectKey {
    ObjectKey {
        namespace: "ns".into(),
        name: format!("o{i}@{id}"),
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![3 => Just(0usize), 1 => Just(1usize)],
        prop_oneof![6 => (0usize..3).prop_map(Some), 1 => Just(None)],
        prop_oneof![3 => Just(0usize), 2 => Just(1usize), 1 => Just(2usize)],
    )
        .prop_map(|(zone, ip, region)| Spec { zone, ip, region })
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        2 => Just(Fault::LostResponse),
        1 => Just(Fault::WriteFails),
        1 => Just(Fault::RecordFails),
        1 => Just(Fault::PublishFails),
        1 => Just(Fault::Crash),
        1 => Just(Fault::DeleteRaces),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3, spec()).prop_map(|(i, s)| Op::Create(i, s)),
        3 => (0usize..3, spec()).prop_map(|(i, s)| Op::Edit(i, s)),
        1 => (0usize..3).prop_map(Op::Delete),
        1 => (0usize..3, any::<bool>()).prop_map(|(i, b)| Op::BreakCredential(i, b)),
        6 => (0usize..2, fault(), prop_oneof![3 => Just(0usize), 1 => 1usize..4])
            .prop_map(|(z, f, lag)| Op::Reconcile(z, f, lag)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn ownership_never_loses_orphans_or_steals(ops in prop::collection::vec(op(), 1..40)) {
        let mut w = World::default();
        for op in &ops {
            w.apply(op)?;
        }
        // The storm ends: credentials work, everything is deleted, the operator catches up.
        let all: Vec<usize> = w.objects.keys().copied().collect();
        for i in all {
            w.apply(&Op::BreakCredential(i, false))?;
            w.apply(&Op::Delete(i))?;
        }
        for (_, o) in w.buried.values_mut() {
            o.cred_ok = true;
        }
        for _ in 0..6 {
            for z in 0..ZONES.len() {
                w.reconcile(z, Fault::None, 0)?;
            }
        }
        prop_assert!(w.objects.is_empty(), "objects left hanging: {:?}", w.objects);
        prop_assert!(w.buried.is_empty(), "tombstones left: {:?}", w.buried);
        for e in w.written.iter().filter(|e| !w.lost_tombstones.contains(e)) {
            let left = w.remote.get(&e.zone).is_some_and(|r| r.contains_key(&e.ip));
            prop_assert!(!left, "orphaned {e} after {ops:?}");
        }
    }
}
