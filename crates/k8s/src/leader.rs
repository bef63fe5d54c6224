//! Leader election on a `coordination.k8s.io/v1` Lease. Several replicas run; one
//! acts. Shards (disjoint `--nodes` / tag filters) use distinct lease names.
//!
//! The rules are client-go's (and so Cluster Autoscaler's): the holder renews every
//! retry period; another replica takes the lease over once it has seen no renewal for
//! a lease duration. What this elector adds is a bound on acting: leadership is
//! published as valid until the start of the last successful renewal plus the renew
//! deadline. The renew deadline is shorter than the lease duration, and every other
//! replica measures the lease duration from a moment after that start, so a replica
//! cut off from the API server stops acting before anyone else can take over, and
//! acts again only after it holds the lease anew.

use driver::Leadership;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Client;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Leader-election settings (CA's flag names: `--leader-elect`, `--leader-elect-lease-duration`, …).
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's identity (the pod name in production).
    pub identity: String,
    /// How long others wait without seeing a renewal before taking over (CA: 15s).
    pub lease_duration: Duration,
    /// How long this replica keeps acting after the start of its last successful
    /// renewal (CA: 10s); shorter than the lease duration.
    pub renew_deadline: Duration,
    /// How often the holder renews and the others try (CA: 2s).
    pub retry_period: Duration,
}

/// A leader-election setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LeaderConfigError {
    pub field: &'static str,
    pub message: String,
}

impl LeaderConfig {
    /// The durations must nest: retry period < renew deadline < lease duration.
    pub fn validate(&self) -> Result<(), LeaderConfigError> {
        let fmt = model::format_duration;
        if self.renew_deadline >= self.lease_duration {
            return Err(LeaderConfigError {
                field: "leader-elect-renew-deadline",
                message: format!(
                    "must be shorter than leader-elect-lease-duration ({} >= {})",
                    fmt(self.renew_deadline),
                    fmt(self.lease_duration)
                ),
            });
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(LeaderConfigError {
                field: "leader-elect-retry-period",
                message: format!(
                    "must be greater than zero and shorter than leader-elect-renew-deadline ({})",
                    fmt(self.renew_deadline)
                ),
            });
        }
        if self.lease_duration.as_secs() < 1 {
            return Err(LeaderConfigError {
                field: "leader-elect-lease-duration",
                message: "must be at least 1s".into(),
            });
        }
        Ok(())
    }
}

/// What this replica knows of the lease between attempts.
#[derive(Debug, Default)]
struct Observed {
    /// The lease's resourceVersion when last read, and when it was first seen.
    record: Option<(String, Instant)>,
}

/// The result of one attempt.
#[derive(Debug, PartialEq)]
enum Attempt {
    /// We hold the lease, renewed by this attempt.
    Held,
    /// Another replica holds it, and its lease has not expired.
    Other(String),
    /// The API server could not be reached or refused: nothing is known.
    Unknown(String),
}

/// Starts competing for the lease. The receiver says until when this replica may act.
pub async fn elect(
    client: Client,
    config: &LeaderConfig,
) -> Result<(watch::Receiver<Leadership>, JoinHandle<()>), LeaderConfigError> {
    config.validate()?;
    let (tx, rx) = watch::channel(Leadership::Follower);
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let config = config.clone();
    let task = tokio::spawn(async move {
        let mut observed = Observed::default();
        let mut leading = false;
        loop {
            let started = Instant::now();
            let attempt = try_acquire_or_renew(&api, &config, &mut observed, started).await;
            match &attempt {
                Attempt::Held => {
                    if !leading {
                        tracing::info!(lease = %config.lease_name, identity = %config.identity, "acquired the lease");
                    }
                    leading = true;
                    let until = (started + config.renew_deadline).into_std();
                    tx.send_replace(Leadership::Leader { until: Some(until) });
                }
                Attempt::Other(holder) => {
                    if leading {
                        tracing::warn!(lease = %config.lease_name, %holder, "lost the lease");
                    }
                    leading = false;
                    tx.send_replace(Leadership::Follower);
                }
                Attempt::Unknown(error) => {
                    // Leadership published earlier runs out on its own (until).
                    tracing::warn!(lease = %config.lease_name, %error, "could not renew or acquire the lease");
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep_until(started + config.retry_period).await;
        }
    });
    Ok((rx, task))
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaderConfig,
    observed: &mut Observed,
    started: Instant,
) -> Attempt {
    let duration_secs = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let current = match api.get_opt(&config.lease_name).await {
        Ok(current) => current,
        Err(e) => return Attempt::Unknown(e.to_string()),
    };
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.lease_name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now_micro()),
                renew_time: Some(now_micro()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Attempt::Held,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Attempt::Other("a replica that created the lease first".into())
            }
            Err(e) => Attempt::Unknown(e.to_string()),
        };
    };
    let rv = lease.metadata.resource_version.clone().unwrap_or_default();
    // The lease's age is measured on our clock, from when we first saw this version
    // of it (clocks of different machines are never compared).
    let first_seen = match &observed.record {
        Some((seen_rv, at)) if *seen_rv == rv => *at,
        _ => started,
    };
    observed.record = Some((rv, first_seen));
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let held_by_us = holder == config.identity;
    let their_duration = spec
        .lease_duration_seconds
        .map_or(config.lease_duration, |s| {
            Duration::from_secs(s.max(0) as u64)
        });
    let expired = holder.is_empty() || started >= first_seen + their_duration;
    if !held_by_us && !expired {
        return Attempt::Other(holder);
    }
    if !held_by_us {
        spec.acquire_time = Some(now_micro());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        spec.holder_identity = Some(config.identity.clone());
    }
    spec.renew_time = Some(now_micro());
    spec.lease_duration_seconds = Some(duration_secs);
    // A patch carrying the resourceVersion read: if anyone wrote in between, 409 (the
    // chart grants get and patch on the lease, and create).
    let body = serde_json::json!({"metadata": {"resourceVersion": lease.metadata.resource_version}, "spec": lease.spec});
    match api
        .patch(
            &config.lease_name,
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => Attempt::Held,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Attempt::Other("a replica that wrote the lease first".into())
        }
        Err(e) => Attempt::Unknown(e.to_string()),
    }
}

/// Leadership without election (`--leader-elect=false`): always the leader.
pub fn always_leader() -> watch::Receiver<Leadership> {
    let (tx, rx) = watch::channel(Leadership::Leader { until: None });
    // Keep the sender alive for the life of the process.
    std::mem::forget(tx);
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(lease: u64, renew: u64, retry: u64) -> LeaderConfig {
        LeaderConfig {
            namespace: "ns".into(),
            lease_name: "l".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn durations_must_nest_and_errors_name_the_flag() {
        assert!(config(15, 10, 2).validate().is_ok());
        assert_eq!(
            config(15, 15, 2).validate().unwrap_err().field,
            "leader-elect-renew-deadline"
        );
        assert_eq!(
            config(15, 20, 2).validate().unwrap_err().field,
            "leader-elect-renew-deadline"
        );
        assert_eq!(
            config(15, 10, 10).validate().unwrap_err().field,
            "leader-elect-retry-period"
        );
        assert_eq!(
            config(15, 10, 0).validate().unwrap_err().field,
            "leader-elect-retry-period"
        );
    }
}
