//! Leader election on a coordination.k8s.io Lease (crate kube-lease-manager), so several
//! replicas can run and only one writes to Cloudflare and to status.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};

use crate::metrics::Metrics;

/// Where and as whom to campaign.
pub struct Election {
    /// Kubernetes client.
    pub client: kube::Client,
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub duration: Duration,
}

/// Confirms, right before Cloudflare writes, that this process still holds the Lease: a process
/// paused past its lease (a frozen VM, a stopped container) must not write from a stale cache
/// while another replica leads. It reads the Lease itself rather than trusting the lease
/// manager's flag, which a paused process has had no chance to update.
#[derive(Clone)]
pub struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaseGuard {
    /// A guard for the Lease `namespace/name` held as `identity`.
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> LeaseGuard {
        LeaseGuard {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
        }
    }

    /// Whether the Lease names this process as holder and has not expired; false when it
    /// cannot be read.
    pub async fn holds(&self) -> bool {
        let lease = match self.api.get(&self.name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "reading the Lease failed; not writing");
                return false;
            }
        };
        let Some(spec) = lease.spec else { return false };
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        ours && valid_until(&spec).is_some_and(|t| t > jiff::Timestamp::now())
    }
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish()
    }
}

/// How often a standby looks whether the Lease was released.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// Whether nobody holds the Lease (released, or never taken) or its holder let it expire.
async fn lease_is_free(api: &Api<Lease>, name: &str) -> bool {
    let Ok(Some(lease)) = api.get_opt(name).await else {
        return false;
    };
    let Some(spec) = lease.spec else { return true };
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    valid_until(&spec).is_some_and(|t| t < jiff::Timestamp::now())
}

/// When the Lease's last renewal runs out; `None` when it does not say.
fn valid_until(spec: &k8s_openapi::api::coordination::v1::LeaseSpec) -> Option<jiff::Timestamp> {
    let renewed = spec.renew_time.as_ref()?;
    let secs = spec.lease_duration_seconds?;
    Some(renewed.0 + jiff::SignedDuration::from_secs(i64::from(secs)))
}

/// A future that resolves when the controller must stop.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Waits for leadership, then runs `work` until `shutdown` or until leadership is lost, then
/// releases the Lease. Losing leadership is an error so the process exits and restarts clean.
pub async fn run_as_leader<F, Fut>(
    election: Election,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    work: F,
) -> Result<(), String>
where
    F: FnOnce(StopSignal) -> Fut,
    Fut: Future<Output = ()>,
{
    let duration = election.duration.as_secs().max(2);
    // Renew a third of the way before expiry, so one slow renewal does not cost the lease.
    let grace = (duration / 3).max(1);
    let build = || async {
        LeaseManagerBuilder::new(election.client.clone(), &election.name)
            .with_namespace(&election.namespace)
            .with_parameters(
                LeaseParams::new(&election.identity, duration, grace).with_field_manager(format!(
                    "origin-region-operator-lease-{}",
                    election.identity
                )),
            )
            .build()
            .await
            .map_err(|e| {
                format!(
                    "leader election on Lease {}/{}: {e}",
                    election.namespace, election.name
                )
            })
    };
    let lease_api: Api<Lease> = Api::namespaced(election.client.clone(), &election.namespace);
    let (mut leading, mut task) = build().await?.watch().await;
    metrics.set_ready(true);
    tracing::info!(identity = %election.identity, lease = %election.name, "waiting for leadership");
    let mut shutdown = Box::pin(shutdown);
    let mut poll = tokio::time::interval(STANDBY_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    return Err("the lease manager stopped".into());
                }
            }
            _ = poll.tick() => {
                // The lease manager on standby sleeps until the expiry it last read, so a
                // Lease its leader released on shutdown would sit free for up to a lease
                // duration. Seen free: a fresh manager takes it at once.
                if lease_is_free(&lease_api, &election.name).await {
                    tracing::info!(lease = %election.name, "the Lease is free; campaigning now");
                    drop(leading);
                    let _ = task.await;
                    (leading, task) = build().await?.watch().await;
                }
            }
            _ = &mut shutdown => {
                drop(leading);
                let _ = task.await;
                return Ok(());
            }
        }
    }
    tracing::info!(identity = %election.identity, "became leader");
    metrics.leader.set(1);
    metrics.set_ready(false);
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lost_flag = lost.clone();
    let stop: StopSignal = Box::pin(async move {
        let lost_lease = async {
            loop {
                if leading.changed().await.is_err() || !*leading.borrow() {
                    lost_flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        };
        tokio::select! {
            _ = lost_lease => {}
            _ = shutdown => {}
        }
    });
    work(stop).await;
    metrics.leader.set(0);
    // The stop future (and with it the last receiver) is gone: the manager releases the Lease.
    let _ = task.await;
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        Err("lost leadership; exiting so a fresh process can campaign again".into())
    } else {
        tracing::info!("released leadership");
        Ok(())
    }
}
