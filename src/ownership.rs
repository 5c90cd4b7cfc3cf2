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
pub fn parse_entries(value: &str) -> BTreeSet<Entry> {
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
pub fn format_entries(entries: &BTreeSet<Entry>) -> String {
    entries
        .iter()
        .map(Entry::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Entries recorded in the object's annotation (write-ahead intents not yet released).
pub fn recorded(o: &OriginCloudRegionMapping) -> BTreeSet<Entry> {
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
pub fn owned(o: &OriginCloudRegionMapping) -> BTreeSet<Entry> {
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

    #[test]
    fn entries_round_trip_and_garbage_is_ignored() {
        let set: BTreeSet<Entry> = [Entry::new(Z, "192.0.2.1"), Entry::new(Z, "2001:db8::1")]
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
