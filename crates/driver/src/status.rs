//! The status report written each loop (the `batch-autoscaler-status` ConfigMap in
//! production): per group target/registered/ready/upcoming/backoff, the last scale-up
//! and scale-down, and the cluster's health. Plain data, built from what the loop
//! already has; it never reads anything itself.

use model::{LaunchFailureKind, NodeGroupId, NodeGroupState, NodeView, Time};
use planner::BackoffRecord;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// How the last loop went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ClusterHealth {
    /// The views were complete and the planner ran.
    Healthy,
    /// Some watch had not synced: nothing was decided.
    Unsynced,
    /// The cloud could not be read: nothing was decided.
    CloudUnavailable { message: String },
}

impl ClusterHealth {
    /// A short, stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unsynced => "unsynced",
            Self::CloudUnavailable { .. } => "cloud-unavailable",
        }
    }
}

/// A backoff in force on one of a group's pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GroupBackoff {
    /// The pool, `region/zone/instance-type/purchase`.
    pub pool: String,
    pub kind: LaunchFailureKind,
    pub until: Time,
    /// The launch error that caused it.
    pub error: String,
}

/// One node group's line in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GroupStatus {
    pub group: NodeGroupId,
    pub min: u32,
    pub max: u32,
    /// Desired capacity.
    pub target: u32,
    /// Nodes of the group known to Kubernetes.
    pub registered: u32,
    /// Of those, Ready.
    pub ready: u32,
    /// Asked for and not registered yet: target minus registered.
    pub upcoming: u32,
    /// Backoffs in force on the group's pools.
    pub backoffs: Vec<GroupBackoff>,
}

/// Spot interruptions of one capacity pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PoolInterruptionStatus {
    /// The pool, `region/zone/instance-type/purchase`.
    pub pool: String,
    /// Since the process started.
    pub total: u64,
    /// Within `spot-interruption-window` (what backs a pool off).
    pub recent: u32,
    pub last: Time,
}

/// What the status ConfigMap shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StatusReport {
    /// When the loop that wrote it ran.
    pub last_loop: Time,
    pub health: ClusterHealth,
    pub dry_run: bool,
    pub pending_unschedulable_pods: u32,
    pub last_scale_up: Option<Time>,
    pub last_scale_down: Option<Time>,
    pub groups: Vec<GroupStatus>,
    /// Spot interruptions per pool (empty without interruption notices).
    #[serde(default)]
    pub interruptions: Vec<PoolInterruptionStatus>,
}

impl StatusReport {
    /// Builds the report from the loop's inputs. Times are on the driver's axis
    /// (milliseconds since the Unix epoch in production).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        now: Time,
        health: ClusterHealth,
        dry_run: bool,
        groups: &[NodeGroupState],
        nodes: &[NodeView],
        backoffs: &[BackoffRecord],
        pending_unschedulable_pods: u32,
        last_scale_up: Option<Time>,
        last_scale_down: Option<Time>,
    ) -> Self {
        let groups = groups
            .iter()
            .map(|group| {
                let id = &group.spec.id;
                let members = nodes.iter().filter(|n| n.group.as_ref() == Some(id));
                let (registered, ready) =
                    members.fold((0u32, 0u32), |(r, ok), n| (r + 1, ok + u32::from(n.ready)));
                let pools: Vec<_> = group
                    .spec
                    .zones
                    .iter()
                    .map(|z| group.spec.pool(z))
                    .collect();
                let backoffs = backoffs
                    .iter()
                    .filter(|b| pools.contains(&b.pool))
                    .map(|b| GroupBackoff {
                        pool: b.pool.to_string(),
                        kind: b.kind,
                        until: b.until,
                        error: b.message.clone(),
                    })
                    .collect();
                GroupStatus {
                    group: id.clone(),
                    min: group.spec.min_size,
                    max: group.spec.max_size,
                    target: group.target,
                    registered,
                    ready,
                    upcoming: group.target.saturating_sub(registered),
                    backoffs,
                }
            })
            .collect();
        Self {
            last_loop: now,
            health,
            dry_run,
            pending_unschedulable_pods,
            last_scale_up,
            last_scale_down,
            groups,
            interruptions: Vec::new(),
        }
    }

    /// A human-readable rendering (the ConfigMap's `status` key), with times as Unix
    /// milliseconds so it needs no date library.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let opt = |t: Option<Time>| t.map_or_else(|| "never".to_owned(), |t| t.0.to_string());
        let _ = writeln!(out, "health: {}", self.health.as_str());
        if let ClusterHealth::CloudUnavailable { message } = &self.health {
            let _ = writeln!(out, "cloud error: {message}");
        }
        let _ = writeln!(out, "last loop (unix ms): {}", self.last_loop.0);
        let _ = writeln!(out, "dry run: {}", self.dry_run);
        let _ = writeln!(
            out,
            "pending unschedulable pods: {}",
            self.pending_unschedulable_pods
        );
        let _ = writeln!(out, "last scale-up (unix ms): {}", opt(self.last_scale_up));
        let _ = writeln!(
            out,
            "last scale-down (unix ms): {}",
            opt(self.last_scale_down)
        );
        for g in &self.groups {
            let _ = writeln!(
                out,
                "group {}: target={} registered={} ready={} upcoming={} min={} max={}",
                g.group, g.target, g.registered, g.ready, g.upcoming, g.min, g.max
            );
            for b in &g.backoffs {
                let _ = writeln!(
                    out,
                    "  backoff {} ({}) until (unix ms) {}: {}",
                    b.pool,
                    b.kind.as_str(),
                    b.until.0,
                    b.error
                );
            }
        }
        for i in &self.interruptions {
            let _ = writeln!(
                out,
                "interruptions of pool {}: {} ({} recent), last (unix ms) {}",
                i.pool, i.total, i.recent, i.last.0
            );
        }
        out
    }
}
