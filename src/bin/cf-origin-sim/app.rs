//! Shared simulator state: configuration, store, credentials, faults, limiter and stats.

use std::sync::{Mutex, MutexGuard, RwLock};

use crate::auth::AuthConfig;
use crate::catalog::Catalog;
use crate::faults::{Faults, RateLimiter};
use crate::state::{Persister, Store};
use crate::stats::Stats;

/// Everything a request handler may touch.
pub struct App {
    /// Supported regions.
    pub catalog: Catalog,
    /// `--max-mappings`.
    pub max_mappings: usize,
    /// `--latency-ms`.
    pub latency_ms: u64,
    /// Credentials given at start, restored by `POST /__sim/reset`.
    pub start_auth: AuthConfig,
    /// Credentials accepted now.
    pub auth: RwLock<AuthConfig>,
    /// Current faults.
    pub faults: RwLock<Faults>,
    /// `--rate-limit`, when given.
    pub limiter: Option<Mutex<RateLimiter>>,
    /// Request counters.
    pub stats: Stats,
    /// Zones deleted through `DELETE /__sim/zones/{zone}`: the API answers them as unknown
    /// (404 / 7003) until they are seeded again.
    pub gone: RwLock<std::collections::HashSet<String>>,
    store: Mutex<Store>,
    persister: Option<Persister>,
}

impl App {
    /// Builds the state; `store` is what the state file held (or empty).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        catalog: Catalog,
        max_mappings: usize,
        latency_ms: u64,
        auth: AuthConfig,
        limiter: Option<RateLimiter>,
        store: Store,
        persister: Option<Persister>,
    ) -> App {
        App {
            catalog,
            max_mappings,
            latency_ms,
            auth: RwLock::new(auth.clone()),
            start_auth: auth,
            faults: RwLock::new(Faults::default()),
            limiter: limiter.map(Mutex::new),
            stats: Stats::default(),
            gone: RwLock::default(),
            store: Mutex::new(store),
            persister,
        }
    }

    /// Whether the zone was deleted (and not seeded since).
    pub fn is_gone(&self, zone: &str) -> bool {
        self.gone
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(zone)
    }

    /// The current faults.
    pub fn faults(&self) -> Faults {
        *self.faults.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Read access to the store (hold it briefly: every request shares it).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-applied mapping behind (every
        // mutation is a single map operation), so a poisoned lock is safe to reuse.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the store; when it reports a change, persists the new state before
    /// returning, so an answered request is durable.
    pub fn mutate<R>(&self, f: impl FnOnce(&mut Store) -> (R, bool)) -> R {
        let mut store = self.store();
        let (result, changed) = f(&mut store);
        if changed {
            store.generation += 1;
            if let Some(p) = &self.persister {
                let generation = store.generation;
                let snapshot = serde_json::to_vec_pretty(&store.to_file());
                drop(store);
                match snapshot {
                    Ok(bytes) => p.write(generation, &bytes),
                    Err(e) => tracing::error!(error = %e, "serialising state failed"),
                }
            }
        }
        result
    }
}
