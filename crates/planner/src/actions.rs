//! What the planner asks the driver to do, and what the driver reports back.

use model::{
    InstanceId, LaunchFailureKind, NodeGroupId, NodeName, NodeView, PodKey, PodUid, PodView,
    PoolKey, RequestCondition, Time,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies an action so its outcome can be reported back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActionId(pub u64);

/// Why a group's target size changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetReason {
    /// New nodes for these pending pods.
    ScaleUp { pods: u32 },
    /// Capacity that the cloud reported it will not deliver is given back.
    GiveBack { undelivered: u32 },
}

/// Why an instance is terminated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TerminateReason {
    /// The node had nothing to do for the unneeded time.
    Empty,
    /// A retired node's last batch pod finished.
    RetiredAndDrained,
    /// Under-utilised, and its evictable pods were moved elsewhere.
    Underutilized,
    /// Unready for longer than the unready time.
    Unready,
    /// The instance never became a node within the provision time.
    LaunchTimeout,
    /// Part of a gang launch that could not be completed.
    GangRollback,
}

impl TerminateReason {
    /// A short, stable name for metrics and events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::RetiredAndDrained => "retired-and-drained",
            Self::Underutilized => "underutilized",
            Self::Unready => "unready",
            Self::LaunchTimeout => "launch-timeout",
            Self::GangRollback => "gang-rollback",
        }
    }
}

/// A persisted pool backoff, so a restarted process does not forget it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffRecord {
    pub pool: PoolKey,
    pub kind: LaunchFailureKind,
    pub until: Time,
    /// The backoff duration that applied, in milliseconds (doubles on repeat failures).
    pub duration_ms: u64,
    pub last_failure: Time,
    pub message: String,
}

/// One thing the driver must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Set a group's desired capacity (never above its max). `from` and `to` are
    /// desired capacities as the cloud sees them: they include instances whose
    /// removal has begun but whose TerminateInstance, which lowers the desired
    /// capacity by one, is still to come.
    SetTargetSize {
        id: ActionId,
        group: NodeGroupId,
        from: u32,
        to: u32,
        reason: TargetReason,
    },
    /// Read, fresh from the source of truth, what runs on the node backing this
    /// instance, and report it as [`Outcome::Evidence`]. The planner asks for this
    /// after it fenced the node (its retiring taint) and before it terminates the
    /// instance: the read must be newer than the fence, so a pod bound between the
    /// planner's snapshot and the fence is seen. `node` is the node the planner
    /// believes backs the instance (`None`: none had registered).
    VerifyRemoval {
        id: ActionId,
        group: NodeGroupId,
        instance: InstanceId,
        node: Option<NodeName>,
        reason: TerminateReason,
    },
    /// Terminate exactly this instance and decrement the group's desired capacity.
    /// Emitted only after a [`Action::VerifyRemoval`] of the instance proved nothing
    /// that must run is on it.
    TerminateInstance {
        id: ActionId,
        group: NodeGroupId,
        instance: InstanceId,
        node: Option<NodeName>,
        reason: TerminateReason,
    },
    /// Taint the node NoSchedule and annotate it: nothing new lands, it goes when empty.
    RetireNode {
        id: ActionId,
        node: NodeName,
        reason: String,
    },
    /// Remove the retirement taint and annotations.
    UnretireNode { id: ActionId, node: NodeName },
    /// Evict a pod through the Eviction API (respecting PodDisruptionBudgets). `uid`
    /// is a precondition (a later pod of the same name is not evicted);
    /// `grace_period` is the pod's own `terminationGracePeriodSeconds`.
    EvictPod {
        id: ActionId,
        pod: PodKey,
        uid: Option<PodUid>,
        node: NodeName,
        grace_period: Option<std::time::Duration>,
    },
    /// Persist (or clear, with `None`) the node's idle-since annotation.
    MarkIdle {
        id: ActionId,
        node: NodeName,
        since: Option<Time>,
    },
    /// Persist a pool backoff (or its end, when `until` has passed).
    PersistBackoff { id: ActionId, record: BackoffRecord },
    /// Take an instance that is being interrupted out of its group and decrement the
    /// group's desired capacity (EC2 Auto Scaling's DetachInstances): the instance runs
    /// on until EC2 takes it, its pods with it, and the group does not replace it a
    /// second time; the replacement is bought by an ordinary scale-up, in the pool the
    /// planner chooses.
    DetachInstance {
        id: ActionId,
        group: NodeGroupId,
        instance: InstanceId,
        node: Option<NodeName>,
    },
    /// Set these conditions in a ProvisioningRequest's status (each replaces the
    /// condition of its type; the others are left as they are).
    UpdateProvisioningRequest {
        id: ActionId,
        request: PodKey,
        conditions: Vec<RequestCondition>,
    },
}

impl Action {
    /// The action's id.
    pub fn id(&self) -> ActionId {
        match self {
            Self::SetTargetSize { id, .. }
            | Self::TerminateInstance { id, .. }
            | Self::VerifyRemoval { id, .. }
            | Self::RetireNode { id, .. }
            | Self::UnretireNode { id, .. }
            | Self::EvictPod { id, .. }
            | Self::MarkIdle { id, .. }
            | Self::PersistBackoff { id, .. }
            | Self::DetachInstance { id, .. }
            | Self::UpdateProvisioningRequest { id, .. } => *id,
        }
    }

    /// Whether carrying it out changes the cluster or the cloud in a way that can
    /// hurt a workload (used by dry-run logs and safety checks).
    pub fn is_destructive(&self) -> bool {
        matches!(self, Self::TerminateInstance { .. } | Self::EvictPod { .. })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SetTargetSize {
                group,
                from,
                to,
                reason,
                ..
            } => match reason {
                TargetReason::ScaleUp { pods } => {
                    write!(f, "scale up {group} {from} -> {to} for {pods} pending pods")
                }
                TargetReason::GiveBack { undelivered } => {
                    write!(
                        f,
                        "give back {undelivered} undelivered nodes of {group}: {from} -> {to}"
                    )
                }
            },
            Self::TerminateInstance {
                group,
                instance,
                node,
                reason,
                ..
            } => {
                let node = node.as_ref().map_or("-".to_owned(), |n| n.to_string());
                write!(
                    f,
                    "terminate {instance} (node {node}) of {group}: {}",
                    reason.as_str()
                )
            }
            Self::VerifyRemoval {
                group,
                instance,
                node,
                reason,
                ..
            } => {
                let node = node.as_ref().map_or("-".to_owned(), |n| n.to_string());
                write!(
                    f,
                    "verify {instance} (node {node}) of {group} can go: {}",
                    reason.as_str()
                )
            }
            Self::RetireNode { node, reason, .. } => write!(f, "retire node {node}: {reason}"),
            Self::UnretireNode { node, .. } => write!(f, "un-retire node {node}"),
            Self::EvictPod { pod, node, .. } => write!(f, "evict {pod} from {node}"),
            Self::MarkIdle { node, since, .. } => match since {
                Some(t) => write!(f, "mark {node} idle since {t}"),
                None => write!(f, "clear idle mark of {node}"),
            },
            Self::PersistBackoff { record, .. } => write!(
                f,
                "persist backoff of {} until {}",
                record.pool, record.until
            ),
            Self::DetachInstance {
                group,
                instance,
                node,
                ..
            } => {
                let node = node.as_ref().map_or("-".to_owned(), |n| n.to_string());
                write!(
                    f,
                    "detach interrupted {instance} (node {node}) from {group}"
                )
            }
            Self::UpdateProvisioningRequest {
                request,
                conditions,
                ..
            } => {
                write!(f, "update provisioning request {request}:")?;
                for c in conditions {
                    write!(
                        f,
                        " {}={} ({})",
                        c.kind,
                        if c.status { "True" } else { "False" },
                        c.reason
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// What a [`Action::VerifyRemoval`] found, read after the node was fenced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovalEvidence {
    /// The Node backing the instance as read now (with its taints), or `None` when
    /// no Node carries the instance's provider id.
    pub node: Option<NodeView>,
    /// Every pod bound to that node, read after the node (so after the fence).
    pub pods: Vec<PodView>,
}

/// The result of an action.
// Evidence is rare (one per removal) and moved, not copied about: not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    /// What a [`Action::VerifyRemoval`] read (any other action reports `Done`).
    Evidence(RemovalEvidence),
    /// The target no longer exists (pod or node gone): treated as done.
    Gone,
    /// Refused for now (PDB 429, conflict, throttling): the planner may try again.
    Retry {
        message: String,
    },
    /// Failed for good.
    Failed {
        message: String,
    },
}
