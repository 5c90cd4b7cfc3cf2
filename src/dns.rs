//! Load-balancer hostnames to addresses (AWS ELBs publish a name, not an IP), re-resolved when
//! the answer's TTL runs out, so a changed address moves its mapping.
//!
//! A failed lookup keeps the last good answer: a resolver outage must not look like a load
//! balancer that lost its addresses, or the operator would delete production mappings.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

/// Shortest time an answer is kept: a TTL of 0 must not become a hot loop.
const MIN_TTL: Duration = Duration::from_secs(2);
/// Longest time an answer is kept, whatever its TTL says.
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Wait before asking again after a failure.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

struct Cached {
    /// The last good answer, if any.
    addrs: Option<Vec<IpAddr>>,
    /// The last failure, kept until the next good answer.
    error: Option<String>,
    /// When to ask again.
    refresh_at: Instant,
}

/// Resolves hostnames and remembers the answers until their TTL.
pub struct HostResolver {
    resolver: Result<TokioResolver, String>,
    cache: Mutex<HashMap<String, Cached>>,
}

/// The answers for a set of hostnames.
#[derive(Debug, Default)]
pub struct Answers {
    /// Hostname → addresses, for every host with a good answer (possibly an old one).
    pub addrs: HashMap<String, Vec<IpAddr>>,
    /// Hostname → why the latest lookup failed.
    pub errors: HashMap<String, String>,
    /// When the soonest answer runs out.
    pub next_refresh: Option<Instant>,
}

impl HostResolver {
    /// A resolver asking `server` (UDP and TCP), or the system's resolv.conf when `None`.
    pub fn new(server: Option<SocketAddr>) -> HostResolver {
        let resolver = match server {
            Some(addr) => {
                let mut config = ResolverConfig::new();
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
                let mut b =
                    TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
                b.options_mut().timeout = Duration::from_secs(2);
                b.options_mut().attempts = 2;
                Ok(b.build())
            }
            None => TokioResolver::builder_tokio()
                .map(|b| b.build())
                .map_err(|e| format!("reading the system resolver configuration: {e}")),
        };
        HostResolver {
            resolver,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Answers for `hosts`, looking up those never asked or whose answer ran out; hosts no
    /// longer asked for are forgotten.
    pub async fn answers(&self, hosts: &BTreeSet<String>) -> Answers {
        let now = Instant::now();
        let due: Vec<String> = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|h, _| hosts.contains(h));
            hosts
                .iter()
                .filter(|h| cache.get(*h).is_none_or(|c| c.refresh_at <= now))
                .cloned()
                .collect()
        };
        let lookups = due.into_iter().map(|h| async move {
            let r = self.lookup(&h).await;
            (h, r)
        });
        let results = futures::future::join_all(lookups).await;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for (host, result) in results {
            let entry = cache.entry(host.clone()).or_insert(Cached {
                addrs: None,
                error: None,
                refresh_at: now,
            });
            match result {
                Ok((addrs, ttl)) => {
                    if entry.addrs.as_ref() != Some(&addrs) {
                        tracing::info!(%host, ?addrs, "load-balancer hostname resolved");
                    }
                    entry.addrs = Some(addrs);
                    entry.error = None;
                    entry.refresh_at = Instant::now() + ttl.clamp(MIN_TTL, MAX_TTL);
                }
                Err(e) => {
                    tracing::warn!(%host, error = %e, "resolving a load-balancer hostname failed");
                    entry.error = Some(e);
                    entry.refresh_at = Instant::now() + RETRY_AFTER_FAILURE;
                }
            }
        }
        let mut out = Answers::default();
        for (host, c) in cache.iter() {
            if let Some(a) = &c.addrs {
                out.addrs.insert(host.clone(), a.clone());
            }
            if let Some(e) = &c.error {
                out.errors.insert(host.clone(), e.clone());
            }
            out.next_refresh = Some(
                out.next_refresh
                    .map_or(c.refresh_at, |t| t.min(c.refresh_at)),
            );
        }
        out
    }

    async fn lookup(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), String> {
        let resolver = self.resolver.as_ref().map_err(Clone::clone)?;
        // Fully qualified, so no search domain of the pod's resolv.conf is tried first.
        let fqdn = if host.ends_with('.') {
            host.to_string()
        } else {
            format!("{host}.")
        };
        let lookup = resolver.lookup_ip(fqdn).await.map_err(|e| e.to_string())?;
        let mut addrs: Vec<IpAddr> = lookup.iter().collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err("no A or AAAA records".into());
        }
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(std::time::Instant::now());
        Ok((addrs, ttl))
    }
}
