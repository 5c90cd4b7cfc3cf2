//! Leader election on a coordination.k8s.io Lease (crate kube-lease-manager), so several
//! replicas can run and only one writes to Cloudflare and to status.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

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
    let manager = LeaseManagerBuilder::new(election.client, &election.name)
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
        })?;
    let (mut leading, task) = manager.watch().await;
    metrics.set_ready(true);
    tracing::info!(identity = %election.identity, lease = %election.name, "waiting for leadership");
    let mut shutdown = Box::pin(shutdown);
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
