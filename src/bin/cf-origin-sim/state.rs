//! The mapping store shared by both path families, and its optional file persistence.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use origin_region_operator::ip;
use origin_region_operator::wire::{codes, LegacyMapping, Mapping};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Check};
use crate::envelope::{text, ApiError};

/// One stored mapping (the key, its canonical IP, lives in the zone's map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Cloud vendor.
    pub vendor: String,
    /// Vendor's region.
    pub region: String,
    /// RFC 3339 UTC time of the last real change.
    pub modified_on: String,
}

/// One zone: its mappings ordered by canonical IP string, and its Tiered Cache flag.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Canonical IP → mapping.
    pub mappings: BTreeMap<String, Stored>,
    /// Whether Tiered Cache is enabled (the default).
    pub tiered_cache: bool,
    /// Last time the mapping set changed; `None` once the zone has no mappings.
    pub modified_on: Option<String>,
    /// Per canonical IP, its last API changes ("<time> created aws/us-east-1", "<time>
    /// removed"), so a test that finds a stray or missing entry can say when it came or went.
    /// Not persisted.
    pub history: BTreeMap<String, Vec<String>>,
}

/// Changes kept per IP in [`Zone::history`].
const HISTORY_PER_IP: usize = 16;

impl Default for Zone {
    fn default() -> Zone {
        Zone {
            mappings: BTreeMap::new(),
            tiered_cache: true,
            modified_on: None,
            history: BTreeMap::new(),
        }
    }
}

impl Zone {
    /// The mapping of `ip` in the current family's spelling.
    pub fn mapping(&self, ip: &str) -> Option<Mapping> {
        self.mappings.get(ip).map(|s| to_mapping(ip, s))
    }

    /// Every mapping, ordered by IP, in the older family's spelling.
    pub fn legacy_list(&self) -> Vec<LegacyMapping> {
        self.mappings
            .iter()
            .map(|(ip, s)| to_legacy(ip, s))
            .collect()
    }

    /// Appends a change to `ip`'s history, dropping its oldest past [`HISTORY_PER_IP`].
    fn note(&mut self, ip: &str, change: String) {
        let h = self.history.entry(ip.to_string()).or_default();
        if h.len() == HISTORY_PER_IP {
            h.remove(0);
        }
        h.push(change);
    }

    /// Nothing to keep: no mappings, the default flag, and no history a test may still ask for.
    fn is_pristine(&self) -> bool {
        self.mappings.is_empty() && self.tiered_cache && self.history.is_empty()
    }

    /// Creates or replaces a mapping, enforcing `max` for new IPs only.
    ///
    /// Returns whether anything changed: replacing with the same vendor and region is a
    /// no-op that keeps `modified_on`, so an idempotent PUT causes no churn.
    pub fn upsert(&mut self, item: &Valid, max: usize, now: &str) -> Result<bool, ApiError> {
        if let Some(existing) = self.mappings.get_mut(&item.ip) {
            if existing.vendor == item.vendor && existing.region == item.region {
                return Ok(false);
            }
            existing.vendor.clone_from(&item.vendor);
            existing.region.clone_from(&item.region);
            existing.modified_on = now.to_string();
            self.note(
                &item.ip,
                format!("{now} updated {}/{}", item.vendor, item.region),
            );
        } else {
            if self.mappings.len() >= max {
                return Err(ApiError::zone_limit());
            }
            self.mappings.insert(
                item.ip.clone(),
                Stored {
                    vendor: item.vendor.clone(),
                    region: item.region.clone(),
                    modified_on: now.to_string(),
                },
            );
            self.note(
                &item.ip,
                format!("{now} created {}/{}", item.vendor, item.region),
            );
        }
        self.modified_on = Some(now.to_string());
        Ok(true)
    }

    /// Removes a mapping; the zone's set timestamp goes null with its last mapping, as the
    /// "rule record" is deleted then.
    pub fn remove(&mut self, ip: &str, now: &str) -> Option<Stored> {
        let removed = self.mappings.remove(ip)?;
        self.note(ip, format!("{now} removed"));
        self.modified_on = if self.mappings.is_empty() {
            None
        } else {
            Some(now.to_string())
        };
        Some(removed)
    }
}

/// Converts a stored entry to the current family's wire type.
pub fn to_mapping(ip: &str, s: &Stored) -> Mapping {
    Mapping {
        origin_ip: ip.to_string(),
        vendor: s.vendor.clone(),
        region: s.region.clone(),
        modified_on: Some(s.modified_on.clone()),
    }
}

/// Converts a stored entry to the older family's wire type.
pub fn to_legacy(ip: &str, s: &Stored) -> LegacyMapping {
    LegacyMapping {
        origin_ip: ip.to_string(),
        vendor: s.vendor.clone(),
        region: s.region.clone(),
        modified_on: Some(s.modified_on.clone()),
    }
}

/// A validated mapping request: canonical IP plus a vendor/region the catalog knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    /// Canonical IP.
    pub ip: String,
    /// Vendor.
    pub vendor: String,
    /// Region.
    pub region: String,
}

/// Validates one item: the IP first (1146), then vendor and region (1157, or 1156 when the
/// region belongs to another vendor).
pub fn validate(
    catalog: &Catalog,
    ip_raw: Option<&str>,
    vendor: Option<&str>,
    region: Option<&str>,
) -> Result<Valid, ApiError> {
    let ip = ip_raw
        .and_then(|s| ip::canonicalize(s).ok())
        .ok_or_else(ApiError::invalid_ip)?;
    let unknown = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::UNKNOWN_VENDOR_OR_REGION,
            text::UNKNOWN_VENDOR_OR_REGION,
        )
    };
    let (vendor, region) = match (vendor, region) {
        (Some(v), Some(r)) => (v, r),
        _ => return Err(unknown()),
    };
    match catalog.check(vendor, region) {
        Check::Known => Ok(Valid {
            ip,
            vendor: vendor.to_string(),
            region: region.to_string(),
        }),
        Check::OtherVendor => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::REGION_VALIDATION_FAILED,
            text::REGION_VALIDATION,
        )),
        Check::Unknown => Err(unknown()),
    }
}

/// Every zone the simulator has seen; unseen zones are empty with Tiered Cache on.
#[derive(Debug, Default)]
pub struct Store {
    zones: HashMap<String, Zone>,
    /// Bumped on every change, so the persister never writes an older snapshot last.
    pub generation: u64,
}

impl Store {
    /// The zone, if it was ever touched.
    pub fn zone(&self, id: &str) -> Option<&Zone> {
        self.zones.get(id)
    }

    /// The zone, created on demand.
    pub fn zone_mut(&mut self, id: &str) -> &mut Zone {
        self.zones.entry(id.to_string()).or_default()
    }

    /// Whether Tiered Cache is on for the zone.
    pub fn tiered_cache(&self, id: &str) -> bool {
        self.zones.get(id).is_none_or(|z| z.tiered_cache)
    }

    /// Drops zones that hold nothing worth keeping, so memory follows real content.
    pub fn tidy(&mut self, id: &str) {
        if self.zones.get(id).is_some_and(Zone::is_pristine) {
            self.zones.remove(id);
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.zones.clear();
    }

    /// The persisted form of the whole store.
    pub fn to_file(&self) -> StateFile {
        let mut zones: BTreeMap<String, ZoneFile> = BTreeMap::new();
        for (id, z) in &self.zones {
            if z.is_pristine() {
                continue;
            }
            zones.insert(
                id.clone(),
                ZoneFile {
                    tiered_cache: z.tiered_cache,
                    modified_on: z.modified_on.clone(),
                    mappings: z.mappings.iter().map(|(ip, s)| to_mapping(ip, s)).collect(),
                },
            );
        }
        StateFile { version: 1, zones }
    }

    /// Rebuilds a store from its persisted form, canonicalising every IP again.
    pub fn from_file(file: StateFile) -> Result<Store, String> {
        let mut store = Store::default();
        for (id, zf) in file.zones {
            let zone = store.zone_mut(&id);
            zone.tiered_cache = zf.tiered_cache;
            for m in zf.mappings {
                let ip = ip::canonicalize(&m.origin_ip).map_err(|e| format!("zone {id}: {e}"))?;
                let modified_on = m.modified_on.unwrap_or_else(now);
                zone.mappings.insert(
                    ip,
                    Stored {
                        vendor: m.vendor,
                        region: m.region,
                        modified_on,
                    },
                );
            }
            zone.modified_on = if zone.mappings.is_empty() {
                None
            } else {
                zf.modified_on
                    .or_else(|| zone.mappings.values().map(|s| s.modified_on.clone()).max())
            };
            store.tidy(&id);
        }
        Ok(store)
    }
}

/// The state file's JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version, 1.
    pub version: u32,
    /// Zone id → its state.
    #[serde(default)]
    pub zones: BTreeMap<String, ZoneFile>,
}

/// One zone in the state file.
#[derive(Debug, Serialize, Deserialize)]
pub struct ZoneFile {
    /// Tiered Cache flag.
    #[serde(default = "yes")]
    pub tiered_cache: bool,
    /// Time the mapping set last changed.
    #[serde(default)]
    pub modified_on: Option<String>,
    /// The mappings.
    #[serde(default)]
    pub mappings: Vec<Mapping>,
}

fn yes() -> bool {
    true
}

/// Now as RFC 3339 UTC with millisecond precision (enough to tell two quick changes apart).
pub fn now() -> String {
    let ts = jiff::Timestamp::now();
    ts.round(jiff::Unit::Millisecond).unwrap_or(ts).to_string()
}

/// Loads the state file; a missing file is an empty store.
pub fn load(path: &Path) -> Result<Store, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Store::default()),
        Err(e) => return Err(format!("reading state file {}: {e}", path.display())),
    };
    let file: StateFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("parsing state file {}: {e}", path.display()))?;
    Store::from_file(file)
}

/// Writes snapshots atomically (temp file + rename), never replacing a newer one.
#[derive(Debug)]
pub struct Persister {
    path: PathBuf,
    written: std::sync::Mutex<u64>,
}

impl Persister {
    /// A persister for `path`.
    pub fn new(path: PathBuf) -> Persister {
        Persister {
            path,
            written: std::sync::Mutex::new(0),
        }
    }

    /// Writes `bytes`, the snapshot of `generation`, unless a newer one is already on disk.
    pub fn write(&self, generation: u64, bytes: &[u8]) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if *written >= generation {
            return;
        }
        match write_atomic(&self.path, bytes) {
            Ok(()) => *written = generation,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "writing state file failed")
            }
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(ip: &str, vendor: &str, region: &str) -> Valid {
        Valid {
            ip: ip.into(),
            vendor: vendor.into(),
            region: region.into(),
        }
    }

    #[test]
    fn validation_order_and_codes() {
        let c = Catalog::default();
        let e = validate(&c, Some("nope"), Some("x"), Some("y")).unwrap_err();
        assert_eq!(e.code, codes::INVALID_IP);
        let e = validate(&c, None, Some("aws"), Some("us-east-1")).unwrap_err();
        assert_eq!(e.code, codes::INVALID_IP);
        let e = validate(&c, Some("192.0.2.1"), Some("ibm"), Some("us-east-1")).unwrap_err();
        assert_eq!(e.code, codes::UNKNOWN_VENDOR_OR_REGION);
        let e = validate(&c, Some("192.0.2.1"), Some("aws"), Some("us-central1")).unwrap_err();
        assert_eq!(e.code, codes::REGION_VALIDATION_FAILED);
        let v = validate(&c, Some("2001:DB8::1"), Some("aws"), Some("us-east-1")).unwrap();
        assert_eq!(v.ip, "2001:db8::1");
    }

    #[test]
    fn upsert_limit_and_noop() {
        let mut z = Zone::default();
        assert!(z
            .upsert(&valid("192.0.2.1", "aws", "us-east-1"), 1, "t1")
            .unwrap());
        assert!(!z
            .upsert(&valid("192.0.2.1", "aws", "us-east-1"), 1, "t2")
            .unwrap());
        assert_eq!(z.mappings["192.0.2.1"].modified_on, "t1");
        assert!(z
            .upsert(&valid("192.0.2.1", "aws", "us-west-2"), 1, "t3")
            .unwrap());
        let e = z
            .upsert(&valid("192.0.2.2", "aws", "us-east-1"), 1, "t4")
            .unwrap_err();
        assert_eq!(e.code, codes::ZONE_LIMIT);
        assert!(z.remove("192.0.2.1", "t5").is_some());
        assert_eq!(z.modified_on, None);
    }

    #[test]
    fn file_round_trip() {
        let mut s = Store::default();
        s.zone_mut("a")
            .upsert(&valid("192.0.2.1", "aws", "us-east-1"), 10, "t1")
            .unwrap();
        s.zone_mut("b").tiered_cache = false;
        s.zone_mut("c");
        let file = s.to_file();
        assert_eq!(file.zones.len(), 2);
        let back = Store::from_file(file).unwrap();
        assert_eq!(back.zone("a").unwrap().mappings.len(), 1);
        assert!(!back.tiered_cache("b"));
        assert!(back.tiered_cache("c"));
    }
}
