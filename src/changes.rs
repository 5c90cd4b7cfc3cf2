//! Which mapping watch events are changes a zone must be planned again for.
//!
//! Every reconcile writes status (and, on a create or an IP change, the ownership record), and
//! the watch shows each of those writes back. Taken as changes, they queue a second, useless
//! reconcile of every zone just written, and with thousands of zones those follow-ups run
//! (and may re-read their zones) ahead of the edits users are waiting for. So an update
//! counts only when it touches what someone other than the operator changes: the spec (its
//! generation), the deletion, labels, annotations other than the record, finalizers other
//! than ours. A reconcile that needs another run asks for it in its outcome; one whose cache
//! lags its own writes waits for them by version, not by event.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use kube::ResourceExt;

use crate::crd::{OriginCloudRegionMapping, FINALIZER};
use crate::ownership::ENTRIES_ANNOTATION;

/// A hash of what others may change on `o` (not its status, nor the operator's metadata).
pub fn fingerprint(o: &OriginCloudRegionMapping) -> u64 {
    let mut h = DefaultHasher::new();
    o.metadata.generation.hash(&mut h);
    o.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    o.labels().hash(&mut h);
    for (k, v) in o.annotations() {
        if k != ENTRIES_ANNOTATION {
            (k, v).hash(&mut h);
        }
    }
    for f in o.finalizers() {
        if f != FINALIZER {
            f.hash(&mut h);
        }
    }
    h.finish()
}

/// The fingerprint last seen per object, to tell a user's change from an echo of our writes.
#[derive(Default)]
pub struct Changes {
    // Keyed by a hash of the UID (8 bytes, not a 36-character string per object): two UIDs
    // sharing a hash would at worst make one update look unchanged, odds ~1e-10 at 35,000.
    seen: HashMap<u64, u64>,
}

impl Changes {
    /// Notes `o` as seen; true when it is new or differs in what others may change.
    pub fn changed(&mut self, o: &OriginCloudRegionMapping) -> bool {
        let fp = fingerprint(o);
        self.seen.insert(uid_hash(o), fp) != Some(fp)
    }

    /// Forgets a deleted object.
    pub fn forget(&mut self, o: &OriginCloudRegionMapping) {
        self.seen.remove(&uid_hash(o));
    }
}

fn uid_hash(o: &OriginCloudRegionMapping) -> u64 {
    let mut h = DefaultHasher::new();
    o.metadata.uid.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{OriginCloudRegionMappingSpec, OriginCloudRegionMappingStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn mapping() -> OriginCloudRegionMapping {
        let spec: OriginCloudRegionMappingSpec = serde_json::from_value(serde_json::json!({
            "zoneId": "023e105f4ecef8ad9ca31a8372d0c353",
            "originIp": "192.0.2.1",
            "vendor": "aws",
            "region": "us-east-1",
        }))
        .unwrap();
        let mut o = OriginCloudRegionMapping::new("a", spec);
        o.metadata.uid = Some("u-1".into());
        o.metadata.generation = Some(1);
        o
    }

    #[test]
    fn our_status_and_record_writes_are_not_changes() {
        let mut c = Changes::default();
        let mut o = mapping();
        assert!(c.changed(&o), "a new object is a change");
        assert!(!c.changed(&o), "the same object again is not");
        o.metadata.resource_version = Some("42".into());
        o.status = Some(OriginCloudRegionMappingStatus {
            origin_ip: Some("192.0.2.1".into()),
            ..Default::default()
        });
        o.finalizers_mut().push(FINALIZER.into());
        o.annotations_mut()
            .insert(ENTRIES_ANNOTATION.into(), "zone/192.0.2.1".into());
        assert!(!c.changed(&o), "status, record and our finalizer are ours");
    }

    #[test]
    fn what_others_change_is_a_change() {
        type Edit = fn(&mut OriginCloudRegionMapping);
        let edits: Vec<(&str, Edit)> = vec![
            ("spec (generation)", |o| o.metadata.generation = Some(2)),
            ("deletion", |o| {
                o.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()))
            }),
            ("label", |o| {
                o.labels_mut().insert("team".into(), "a".into());
            }),
            ("force-orphan", |o| {
                o.annotations_mut()
                    .insert(crate::crd::FORCE_ORPHAN_ANNOTATION.into(), "true".into());
            }),
            ("another finalizer", |o| {
                o.finalizers_mut().push("example.com/hold".into())
            }),
        ];
        for (what, edit) in edits {
            let mut c = Changes::default();
            let mut o = mapping();
            assert!(c.changed(&o));
            edit(&mut o);
            assert!(c.changed(&o), "{what} is a change");
            assert!(!c.changed(&o), "{what} seen once is not a change again");
        }
    }

    #[test]
    fn a_deleted_object_recreated_is_new() {
        let mut c = Changes::default();
        let o = mapping();
        assert!(c.changed(&o));
        c.forget(&o);
        assert!(c.changed(&o));
    }
}
