//! Request counters by operation and outcome (`GET /__sim/stats`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Every operation name, in the order the stats show them.
pub const OPS: [&str; 15] = [
    "list",
    "get",
    "put",
    "delete",
    "batch_put",
    "batch_delete",
    "supported_regions",
    "legacy_create",
    "legacy_edit",
    "legacy_batch_edit",
    "legacy_list",
    "legacy_get",
    "legacy_delete",
    "legacy_supported_regions",
    "unknown",
];

/// Counts of one operation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpStats {
    /// Requests of this operation.
    pub total: u64,
    /// Requests by HTTP status ("200", "429", ...) or "dropped" / "truncated".
    pub by_status: BTreeMap<String, u64>,
}

/// The JSON of `GET /__sim/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// API requests of any operation.
    pub requests_total: u64,
    /// Operation name → counts; every operation is present, with zeros when unused.
    pub operations: BTreeMap<&'static str, OpStats>,
}

/// Thread-safe counters.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<BTreeMap<&'static str, OpStats>>,
}

impl Stats {
    /// Counts one request of `op` that ended as `outcome`.
    pub fn record(&self, op: &'static str, outcome: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = inner.entry(op).or_default();
        entry.total += 1;
        match entry.by_status.get_mut(outcome) {
            Some(n) => *n += 1,
            None => {
                entry.by_status.insert(outcome.to_string(), 1);
            }
        }
    }

    /// The current counts.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut operations: BTreeMap<&'static str, OpStats> =
            OPS.iter().map(|op| (*op, OpStats::default())).collect();
        let mut requests_total = 0;
        for (op, s) in inner.iter() {
            requests_total += s.total;
            operations.insert(op, s.clone());
        }
        Snapshot {
            requests_total,
            operations,
        }
    }

    /// Zeroes every counter.
    pub fn clear(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
