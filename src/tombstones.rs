//! Objects the apiserver deleted while the operator's finalizer was still on them.
//!
//! A DELETE that reads an object before our finalizer is added, and removes it after, succeeds
//! anyway: the apiserver decides "no finalizers, delete at once" on its first read and its retry
//! does not look again (an open Kubernetes bug, kubernetes/kubernetes#77988, seen here on
//! v1.36). Both requests succeed, so the operator goes on to write the entry it recorded, and
//! the object it would release it from is gone without ever showing a deletion timestamp.
//! The watch's last word on such an object still carries our finalizer and the record, so it
//! is kept here and planned as a deleting object until every entry it owned is released.
//! Only in memory: a crash in that window loses it (the zone then shows the entry as
//! unmanaged).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::cached::CachedMapping;
use crate::crd::{DeletionPolicy, OriginCloudRegionMapping};
use crate::ownership::{self, Entries};

/// The objects deleted under our finalizer whose entries are not all released yet, by UID.
#[derive(Default)]
pub struct Tombstones {
    by_uid: Mutex<HashMap<String, Arc<OriginCloudRegionMapping>>>,
    /// Objects whose finalizer we are removing. The apiserver turns that removal into the
    /// deletion itself, and the watch then shows the last stored state, which still lists our
    /// finalizer and record: only this set tells that deletion from the race.
    releasing: Mutex<HashSet<String>>,
}

/// Whether a deleted object's last state says it went without the operator releasing it: it
/// still lists our finalizer, owns entries, and wanted them deleted.
pub fn deleted_under_finalizer(o: &OriginCloudRegionMapping) -> bool {
    o.has_finalizer()
        && !ownership::owned(o).is_empty()
        && o.spec.deletion_policy != DeletionPolicy::Orphan
        && !o.force_orphan()
}

impl Tombstones {
    /// Notes that we are about to remove our finalizer from `uid` (before the request: its
    /// deletion can be seen before the answer).
    pub fn releasing(&self, uid: &str) {
        self.releasing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string());
    }

    /// The watch saw `o` deleted: buries it when it went without our release (true), forgets
    /// it otherwise.
    pub fn deleted(&self, o: &OriginCloudRegionMapping) -> bool {
        let uid = o.uid().unwrap_or_default();
        let released = self
            .releasing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        let bury = !released && deleted_under_finalizer(o);
        if bury {
            self.bury(o);
        }
        bury
    }

    /// Keeps a deleted object (its last state from the watch) to release what it owned; it is
    /// planned as deleting from now on.
    pub fn bury(&self, o: &OriginCloudRegionMapping) {
        let Some(uid) = o.uid() else { return };
        let mut o = o.clone();
        // A new object may take the name at once: the buried one gets a key of its own, so the
        // planner and the write results never mix the two up.
        o.metadata.name = Some(format!("{}@{uid}", o.name_any()));
        if o.metadata.deletion_timestamp.is_none() {
            o.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        }
        self.lock().insert(uid, Arc::new(o));
    }

    /// The buried objects that own entries in `zone`, in the form the zone's members take.
    pub fn in_zone(&self, zone: &str) -> Vec<Arc<CachedMapping>> {
        self.lock()
            .values()
            .filter(|o| ownership::owned_zones(o).contains(zone))
            .map(|o| Arc::new(CachedMapping::from(&**o)))
            .collect()
    }

    /// Whether `uid` is buried.
    pub fn contains(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// What the buried object still owns after a reconcile of `zone`: it is forgotten once it
    /// owns nothing anywhere.
    pub fn settle(&self, uid: &str, zone: &str, owned_after: &Entries) {
        let mut all = self.lock();
        let Some(o) = all.get(uid) else { return };
        let mut left: Entries = ownership::owned(o)
            .into_iter()
            .filter(|e| e.zone != zone)
            .collect();
        left.extend(owned_after.iter().filter(|e| e.zone == zone).cloned());
        if left.is_empty() {
            all.remove(uid);
            return;
        }
        let mut next = (**o).clone();
        // The record is the whole of what it owns now; status no longer adds to it.
        next.status = None;
        next.annotations_mut().insert(
            ownership::ENTRIES_ANNOTATION.to_string(),
            ownership::format_entries(&left),
        );
        all.insert(uid.to_string(), Arc::new(next));
    }

    /// Number of buried objects.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is buried.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OriginCloudRegionMapping>>> {
        self.by_uid.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{OriginCloudRegionMappingSpec, FINALIZER};
    use crate::ownership::Entry;

    const Z: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const Z2: &str = "11111111111111111111111111111111";

    fn gone(entries: &[(&str, &str)]) -> OriginCloudRegionMapping {
        let spec: OriginCloudRegionMappingSpec = serde_json::from_value(serde_json::json!({
            "zoneId": Z, "originIp": "192.0.2.1", "vendor": "aws", "region": "us-east-1",
        }))
        .unwrap();
        let mut o = OriginCloudRegionMapping::new("a", spec);
        o.metadata.namespace = Some("ns".into());
        o.metadata.uid = Some("u-1".into());
        o.finalizers_mut().push(FINALIZER.into());
        let set: Entries = entries.iter().map(|(z, i)| Entry::new(*z, *i)).collect();
        if !set.is_empty() {
            o.annotations_mut().insert(
                ownership::ENTRIES_ANNOTATION.into(),
                ownership::format_entries(&set),
            );
        }
        o
    }

    #[test]
    fn only_an_object_gone_with_our_finalizer_and_entries_is_buried() {
        assert!(deleted_under_finalizer(&gone(&[(Z, "192.0.2.1")])));
        assert!(!deleted_under_finalizer(&gone(&[])), "nothing owned");
        let mut released = gone(&[(Z, "192.0.2.1")]);
        released.finalizers_mut().clear();
        assert!(
            !deleted_under_finalizer(&released),
            "our finalizer removal ends a normal deletion"
        );
        let mut orphan = gone(&[(Z, "192.0.2.1")]);
        orphan.spec.deletion_policy = DeletionPolicy::Orphan;
        assert!(!deleted_under_finalizer(&orphan));
    }

    #[test]
    fn our_own_release_is_not_a_race_however_the_watch_shows_it() {
        let t = Tombstones::default();
        let o = gone(&[(Z, "192.0.2.1")]);
        t.releasing("u-1");
        assert!(
            !t.deleted(&o),
            "we removed the finalizer: a normal deletion"
        );
        assert!(t.is_empty());
        assert!(
            t.deleted(&o),
            "the same last state without our release is the race"
        );
        assert_eq!(t.in_zone(Z).len(), 1);
    }

    #[test]
    fn a_buried_object_is_deleting_and_forgotten_once_it_owns_nothing() {
        let t = Tombstones::default();
        t.bury(&gone(&[(Z, "192.0.2.1"), (Z2, "192.0.2.9")]));
        let here = t.in_zone(Z);
        assert_eq!(here.len(), 1);
        assert!(here[0].deleting());
        assert_eq!(
            here[0].key().name,
            "a@u-1",
            "never the key of a new object named a"
        );
        assert_eq!(t.in_zone(Z2).len(), 1);
        // Released in Z: still owns the Z2 entry.
        t.settle("u-1", Z, &Entries::new());
        assert!(t.in_zone(Z).is_empty());
        assert_eq!(t.in_zone(Z2).len(), 1);
        // A failed release in Z2 keeps it.
        let kept: Entries = [Entry::new(Z2, "192.0.2.9")].into_iter().collect();
        t.settle("u-1", Z2, &kept);
        assert!(t.contains("u-1"));
        t.settle("u-1", Z2, &Entries::new());
        assert!(t.is_empty());
    }
}
