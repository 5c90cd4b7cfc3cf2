//! The durable record of which remote entries an object owns.
//!
//! Two places together hold it, and the union is what the object owns:
//! - `status.zoneId` + `status.originIp`: the entry last confirmed applied;
//! - the annotation [`ENTRIES_ANNOTATION`]: entries the object may have written and not yet
//!   released. It is written *before* any Cloudflare write that may create an entry (in the
//!   same patch as the finalizer on create), so a crash, a lost response or a refused status
//!   write can never leave an entry that nothing records. An entry leaves it only after its
//!   release was confirmed (the delete succeeded or answered 404, or it was orphaned).

use std::collections::BTreeSet;
use std::fmt;

use kube::ResourceExt;

use crate::crd::OriginCloudRegionMapping;

/// Annotation listing the entries an object may own, as space-separated `zone/ip` tokens.
pub const ENTRIES_ANNOTATION: &str = "originregions.io/entries";

/// One remote entry: a zone and a canonical IP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// Zone identifier.
    pub zone: String,
    /// Canonical IP.
    pub ip: String,
}

impl Entry {
    /// An entry of `zone` at `ip`.
    pub fn new(zone: impl Into<String>, ip: impl Into<String>) -> Entry {
        Entry {
            zone: zone.into(),
            ip: ip.into(),
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.zone, self.ip)
    }
}

/// A small set of entries (an object owns one, two during a move): a sorted vector, because
/// the planner and the verdicts hold several per object for every object of a zone at once,
/// and a B-tree set allocates a whole node (about half a kilobyte) even for one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries(Vec<Entry>);

/// Up to this many entries a set holds no spare capacity.
const SMALL: usize = 8;

impl Entries {
    /// No entries.
    pub fn new() -> Entries {
        Entries(Vec::new())
    }

    /// Whether `e` is in the set.
    pub fn contains(&self, e: &Entry) -> bool {
        self.0.binary_search(e).is_ok()
    }

    /// Adds `e`; false when it was already there.
    pub fn insert(&mut self, e: Entry) -> bool {
        match self.0.binary_search(&e) {
            Ok(_) => false,
            Err(at) => {
                // A set is usually one or two entries and the verdicts of a whole zone hold
                // two per object: growing by one (not to four, a Vec's first step) keeps
                // them from being mostly spare capacity.
                if self.0.len() == self.0.capacity() && self.0.len() < SMALL {
                    self.0.reserve_exact(1);
                }
                self.0.insert(at, e);
                true
            }
        }
    }

    /// Removes `e`; false when it was not there.
    pub fn remove(&mut self, e: &Entry) -> bool {
        match self.0.binary_search(e) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// The entries, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.0.iter()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.0.clear()
    }

    /// The entries also in `other`, in order.
    pub fn intersection<'a>(&'a self, other: &'a Entries) -> impl Iterator<Item = &'a Entry> {
        self.0.iter().filter(|e| other.contains(e))
    }
}

impl FromIterator<Entry> for Entries {
    fn from_iter<I: IntoIterator<Item = Entry>>(iter: I) -> Entries {
        let mut v: Vec<Entry> = iter.into_iter().collect();
        v.sort();
        v.dedup();
        if v.len() < SMALL {
            v.shrink_to_fit();
        }
        Entries(v)
    }
}

impl Extend<Entry> for Entries {
    fn extend<I: IntoIterator<Item = Entry>>(&mut self, iter: I) {
        for e in iter {
            self.insert(e);
        }
    }
}

impl IntoIterator for Entries {
    type Item = Entry;
    type IntoIter = std::vec::IntoIter<Entry>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Entries {
    type Item = &'a Entry;
    type IntoIter = std::slice::Iter<'a, Entry>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A namespaced object's identity, used as the key of every per-object record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a mapping object.
    pub fn of(o: &OriginCloudRegionMapping) -> ObjectKey {
        ObjectKey {
            namespace: o.metadata.namespace.clone().unwrap_or_default(),
            name: o.name_any(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Parses the annotation's value; tokens that are not `zone/ip` with a 32-hex zone and a
/// valid IP are ignored (a hand-edited annotation must not make the operator delete text).
pub fn parse_entries(value: &str) -> Entries {
    value
        .split_whitespace()
        .filter_map(|token| {
            let (zone, ip) = token.split_once('/')?;
            let zone_ok = zone.len() == 32 && zone.bytes().all(|b| b.is_ascii_hexdigit());
            let ip = crate::ip::canonicalize(ip).ok()?;
            zone_ok.then(|| Entry::new(zone.to_ascii_lowercase(), ip))
        })
        .collect()
}

/// Renders entries as the annotation's value (sorted, so equal sets give equal text).
pub fn format_entries(entries: &Entries) -> String {
    entries
        .iter()
        .map(Entry::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Entries recorded in the object's annotation (write-ahead intents not yet released).
pub fn recorded(o: &OriginCloudRegionMapping) -> Entries {
    o.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ENTRIES_ANNOTATION))
        .map(|v| parse_entries(v))
        .unwrap_or_default()
}

/// The entry last confirmed applied, from the object's status.
pub fn applied(o: &OriginCloudRegionMapping) -> Option<Entry> {
    let s = o.status.as_ref()?;
    Some(Entry::new(s.zone_id.clone()?, s.origin_ip.clone()?))
}

/// Everything the object owns: applied ∪ recorded.
pub fn owned(o: &OriginCloudRegionMapping) -> Entries {
    let mut set = recorded(o);
    set.extend(applied(o));
    set
}

/// Zones in which the object owns an entry.
pub fn owned_zones(o: &OriginCloudRegionMapping) -> BTreeSet<String> {
    owned(o).into_iter().map(|e| e.zone).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const Z: &str = "023e105f4ecef8ad9ca31a8372d0c353";

    proptest::proptest! {
        #[test]
        fn entries_behave_as_a_set(ops in proptest::collection::vec((0u8..20, proptest::bool::ANY), 0..60)) {
            let entry = |i: u8| Entry::new(Z, format!("192.0.2.{i}"));
            let mut ours = Entries::new();
            let mut model = std::collections::BTreeSet::new();
            for (i, add) in ops {
                if add {
                    proptest::prop_assert_eq!(ours.insert(entry(i)), model.insert(entry(i)));
                } else {
                    proptest::prop_assert_eq!(ours.remove(&entry(i)), model.remove(&entry(i)));
                }
                proptest::prop_assert!(ours.iter().eq(model.iter()));
                proptest::prop_assert_eq!(ours.contains(&entry(0)), model.contains(&entry(0)));
            }
        }
    }

    #[test]
    fn small_sets_hold_no_spare_capacity() {
        let entry = |i: u8| Entry::new(Z, format!("192.0.2.{i}"));
        let mut set = Entries::new();
        for i in 0..SMALL as u8 {
            set.insert(entry(i));
            assert_eq!(set.0.capacity(), set.len(), "after {} inserts", i + 1);
        }
        let collected: Entries = (0..20u8)
            .map(entry)
            .filter(|e| e.ip.ends_with('1'))
            .collect();
        assert_eq!(collected.0.capacity(), collected.len());
        // Past the small size it grows as a Vec does, ahead of need (no copy per insert for a
        // big set).
        set.insert(entry(SMALL as u8));
        assert!(set.0.capacity() > set.len(), "grown by one past {SMALL}");
        for i in SMALL as u8 + 1..40 {
            set.insert(entry(i));
        }
        assert_eq!(set.len(), 40);
    }

    #[test]
    fn entries_round_trip_and_garbage_is_ignored() {
        let set: Entries = [Entry::new(Z, "192.0.2.1"), Entry::new(Z, "2001:db8::1")]
            .into_iter()
            .collect();
        assert_eq!(parse_entries(&format_entries(&set)), set);
        let messy = format!("{Z}/2001:DB8:0::1  junk {Z}/999.1.1.1 abc/192.0.2.1 {Z}/");
        assert_eq!(
            parse_entries(&messy),
            [Entry::new(Z, "2001:db8::1")].into_iter().collect()
        );
    }
}
