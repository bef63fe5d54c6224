//! Leader election on a `coordination.k8s.io/v1` Lease. Several replicas run; one
//! acts. Shards (disjoint `--nodes` / tag filters) use distinct lease names.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Leader-election settings (CA's flag names: `--leader-elect`, `--leader-elect-lease-duration`, …).
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's identity (the pod name in production).
    pub identity: String,
    pub lease_duration: Duration,
    /// How long before expiry the holder renews (lease duration minus renew deadline).
    pub renew_grace: Duration,
}

/// Starts competing for the lease. The receiver says whether this replica leads now;
/// it turns false as soon as the lease is lost.
pub async fn elect(client: Client, config: &LeaderConfig) -> Result<(watch::Receiver<bool>, JoinHandle<()>), kube_lease_manager::LeaseManagerError> {
    let duration = config.lease_duration.as_secs().max(2);
    let grace = config.renew_grace.as_secs().clamp(1, duration - 1);
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.namespace)
        .with_parameters(LeaseParams::new(&config.identity, duration, grace))
        .build()
        .await?;
    let (receiver, task) = manager.watch().await;
    let handle = tokio::spawn(async move {
        match task.await {
            Ok(Ok(_)) => tracing::info!("leader election ended"),
            Ok(Err(e)) => tracing::error!(error = %e, "leader election failed"),
            Err(e) => tracing::error!(error = %e, "leader election task panicked"),
        }
    });
    Ok((receiver, handle))
}

/// Leadership without election (`--leader-elect=false`): always the leader.
pub fn always_leader() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(true);
    // Keep the sender alive for the life of the process.
    std::mem::forget(tx);
    rx
}
