//! Explanations: every decision and every non-decision the planner makes, as data
//! that adapters turn into logs, Kubernetes Events, metrics and simulator timelines.

use crate::actions::TerminateReason;
use model::{
    ConditionType, InstanceId, InterruptionKind, LaunchFailureKind, NodeGroupId, NodeName, PodKey,
    PoolKey, Time,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Why a group could not help a pending pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NoScaleUpReason {
    /// The pod does not fit on an empty node of the group.
    ExceedsNodeShape { shortfall: String },
    /// The group's node labels do not satisfy the pod's selector or affinity.
    LabelsDoNotMatch,
    /// The group's nodes carry a taint the pod does not tolerate.
    TaintNotTolerated { taint: String },
    /// The group is at its maximum size.
    GroupAtMax { max: u32 },
    /// Every pool of the group is backed off after launch failures.
    PoolBackedOff {
        until: Time,
        kind: LaunchFailureKind,
    },
    /// A cluster-wide limit (nodes, cores, memory) is reached.
    ClusterLimit { limit: String },
    /// The per-pass cap on new nodes is reached.
    LoopCapReached,
    /// A gang needs more nodes than the group can add.
    GangDoesNotFit { needed_pods: u32 },
    /// Another group was preferred by the expander.
    NotChosen,
    /// The priority expander's table gives the group no priority.
    NoPriority,
    /// The group is launching nodes for a gang: no other launch in it until those
    /// are delivered or rolled back, so that the gang's instances are known exactly.
    GangLaunchInFlight { gang: String },
    /// A gang launches only into a group with no launch of its own under way (its
    /// new instances are then the gang's and no one else's).
    GroupStillLaunching,
}

impl fmt::Display for NoScaleUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExceedsNodeShape { shortfall } => {
                write!(f, "does not fit an empty node: {shortfall}")
            }
            Self::LabelsDoNotMatch => {
                f.write_str("node selector/affinity does not match the group's labels")
            }
            Self::TaintNotTolerated { taint } => write!(f, "taint {taint} not tolerated"),
            Self::GroupAtMax { max } => write!(f, "group at max size {max}"),
            Self::PoolBackedOff { until, kind } => {
                write!(f, "pool backed off until {until} after {}", kind.as_str())
            }
            Self::ClusterLimit { limit } => write!(f, "cluster limit reached: {limit}"),
            Self::LoopCapReached => f.write_str("per-pass new-node cap reached"),
            Self::GangDoesNotFit { needed_pods } => write!(
                f,
                "gang of {needed_pods} pods does not fit in the group's remaining room"
            ),
            Self::NotChosen => f.write_str("another group was chosen by the expander"),
            Self::NoPriority => f.write_str("no priority in the priority expander's table"),
            Self::GangLaunchInFlight { gang } => {
                write!(f, "the group is launching nodes for gang {gang}")
            }
            Self::GroupStillLaunching => {
                f.write_str("a gang waits for the group's launch under way to be delivered")
            }
        }
    }
}

/// Why no group helped a pod: the reason per group. Pods of one equivalence class
/// share one map (an `Arc`): at 100,000 unhelped pods and 200 groups, a map per pod
/// was gigabytes. Reads like the map it holds (`Deref`), prints (`Debug`) and
/// serialises exactly as that map.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GroupReasons(Arc<BTreeMap<NodeGroupId, NoScaleUpReason>>);

impl GroupReasons {
    /// The map itself (a copy, for callers that keep their own).
    pub fn to_map(&self) -> BTreeMap<NodeGroupId, NoScaleUpReason> {
        BTreeMap::clone(&self.0)
    }
}

impl Deref for GroupReasons {
    type Target = BTreeMap<NodeGroupId, NoScaleUpReason>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl From<BTreeMap<NodeGroupId, NoScaleUpReason>> for GroupReasons {
    fn from(map: BTreeMap<NodeGroupId, NoScaleUpReason>) -> Self {
        Self(Arc::new(map))
    }
}

impl FromIterator<(NodeGroupId, NoScaleUpReason)> for GroupReasons {
    fn from_iter<I: IntoIterator<Item = (NodeGroupId, NoScaleUpReason)>>(iter: I) -> Self {
        Self(Arc::new(iter.into_iter().collect()))
    }
}

impl fmt::Debug for GroupReasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for GroupReasons {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for GroupReasons {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(Self::from)
    }
}

/// One explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PlannerEvent {
    /// The snapshot was not synced: nothing was decided.
    SnapshotNotSynced,
    /// A group is scaled up for these pods.
    TriggeredScaleUp {
        group: NodeGroupId,
        from: u32,
        to: u32,
        pods: Vec<PodKey>,
    },
    /// A pending pod will be served by capacity that exists or is on its way.
    WaitingForCapacity {
        pod: PodKey,
        group: Option<NodeGroupId>,
    },
    /// A pending pod triggered no scale-up; the reason per group. Reported once per
    /// pod until the set of groups or the reasons change.
    NotTriggerScaleUp { pod: PodKey, reasons: GroupReasons },
    /// A pool was backed off after a launch failure.
    PoolBackedOff {
        pool: PoolKey,
        kind: LaunchFailureKind,
        until: Time,
        message: String,
    },
    /// A pool's backoff ended.
    PoolBackoffExpired { pool: PoolKey },
    /// Desired capacity that will not be delivered was given back.
    CapacityGivenBack { group: NodeGroupId, count: u32 },
    /// A gang's partial launch was rolled back.
    GangRolledBack {
        gang: String,
        group: NodeGroupId,
        launched: u32,
        needed: u32,
    },
    /// A node is being retired: tainted NoSchedule, removed when its batch pods finish.
    NodeRetired { node: NodeName, reason: String },
    /// A retired node is taken back into service for pending pods.
    NodeUnretired { node: NodeName, pods: u32 },
    /// A node became a scale-down candidate (decision taken, awaiting re-validation).
    ScaleDownCandidate {
        node: NodeName,
        reason: TerminateReason,
    },
    /// A decision did not survive re-validation on a newer snapshot.
    ScaleDownCancelled { node: NodeName, why: String },
    /// A node's instance is being terminated.
    ScaleDown {
        node: Option<NodeName>,
        instance: InstanceId,
        group: NodeGroupId,
        reason: TerminateReason,
    },
    /// An instance never registered within the provision time.
    LaunchTimedOut {
        instance: InstanceId,
        group: NodeGroupId,
    },
    /// An action failed.
    ActionFailed { action: String, message: String },
    /// A configuration or data problem that was worked around.
    Warning { message: String },
    /// A gang has fewer pods than its marker's minimum: nothing is bought for it yet.
    GangIncomplete {
        gang: String,
        present: u32,
        size: u32,
    },
    /// A ProvisioningRequest's condition changes.
    ProvisioningRequestUpdated {
        request: PodKey,
        condition: ConditionType,
        status: bool,
        reason: String,
        message: String,
    },
    /// A group is scaled up for a ProvisioningRequest (all its pods, one group).
    ProvisioningRequestScaleUp {
        request: PodKey,
        group: NodeGroupId,
        from: u32,
        to: u32,
    },
    /// A ProvisioningRequest of another provisioner's class: left alone.
    ProvisioningRequestIgnored { request: PodKey, class: String },
    /// An instance of a managed group got an interruption notice; what was done.
    /// `pods` are the pods on its node that lose their place (about to be killed).
    InstanceInterrupted {
        instance: InstanceId,
        group: NodeGroupId,
        node: Option<NodeName>,
        kind: InterruptionKind,
        pool: PoolKey,
        pods: Vec<PodKey>,
        response: InterruptionResponse,
    },
    /// An interruption notice about an instance the autoscaler does not manage (or
    /// with handling off): nothing done.
    InterruptionIgnored {
        instance: InstanceId,
        kind: InterruptionKind,
        why: String,
    },
}

/// What the planner does about an interruption notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterruptionResponse {
    /// The node is fenced and capacity for its pods is found or bought now; with
    /// `detach`, the instance also leaves its group so the group does not replace it
    /// a second time.
    Replace { detach: bool },
    /// The node is fenced; nothing is bought (the group replaces the instance itself,
    /// or the work may finish first).
    Fence { why: String },
    /// Nothing to do.
    Nothing { why: String },
}

impl InterruptionResponse {
    /// A short, stable name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Replace { .. } => "replace",
            Self::Fence { .. } => "fence",
            Self::Nothing { .. } => "nothing",
        }
    }
}

impl fmt::Display for InterruptionResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Replace { detach: true } => f.write_str("fenced; the instance leaves its group and capacity for its pods is provisioned now"),
            Self::Replace { detach: false } => f.write_str("fenced; capacity for its pods is provisioned now"),
            Self::Fence { why } => write!(f, "fenced; no replacement bought: {why}"),
            Self::Nothing { why } => write!(f, "nothing done: {why}"),
        }
    }
}

impl PlannerEvent {
    /// A short, stable name (Kubernetes Event reason, metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SnapshotNotSynced => "SnapshotNotSynced",
            Self::TriggeredScaleUp { .. } => "TriggeredScaleUp",
            Self::WaitingForCapacity { .. } => "WaitingForCapacity",
            Self::NotTriggerScaleUp { .. } => "NotTriggerScaleUp",
            Self::PoolBackedOff { .. } => "PoolBackedOff",
            Self::PoolBackoffExpired { .. } => "PoolBackoffExpired",
            Self::CapacityGivenBack { .. } => "CapacityGivenBack",
            Self::GangRolledBack { .. } => "GangRolledBack",
            Self::NodeRetired { .. } => "NodeRetired",
            Self::NodeUnretired { .. } => "NodeUnretired",
            Self::ScaleDownCandidate { .. } => "ScaleDownCandidate",
            Self::ScaleDownCancelled { .. } => "ScaleDownCancelled",
            Self::ScaleDown { .. } => "ScaleDown",
            Self::LaunchTimedOut { .. } => "LaunchTimedOut",
            Self::ActionFailed { .. } => "ActionFailed",
            Self::Warning { .. } => "Warning",
            Self::ProvisioningRequestUpdated {
                condition, status, ..
            } => match (condition, status) {
                (ConditionType::Provisioned, true) => "Provisioned",
                (ConditionType::Provisioned, false) => "NotProvisioned",
                (ConditionType::Failed, _) => "ProvisioningFailed",
                (ConditionType::BookingExpired, _) => "BookingExpired",
                (ConditionType::Accepted, _) => "Accepted",
                (ConditionType::CapacityRevoked, _) => "CapacityRevoked",
            },
            Self::ProvisioningRequestScaleUp { .. } => "TriggeredScaleUp",
            Self::GangIncomplete { .. } => "GangIncomplete",
            Self::ProvisioningRequestIgnored { .. } => "NotOurClass",
            Self::InstanceInterrupted { kind, .. } => match kind {
                InterruptionKind::SpotInterruption => "SpotInterruption",
                InterruptionKind::RebalanceRecommendation => "RebalanceRecommendation",
                InterruptionKind::StateChange => "InstanceStateChange",
                InterruptionKind::ScheduledChange => "ScheduledInstanceEvent",
            },
            Self::InterruptionIgnored { .. } => "InterruptionIgnored",
        }
    }
}

impl fmt::Display for PlannerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SnapshotNotSynced => f.write_str("snapshot not synced: no decision taken"),
            Self::TriggeredScaleUp {
                group,
                from,
                to,
                pods,
            } => {
                write!(
                    f,
                    "scale-up of {group} {from} -> {to} for {} pods",
                    pods.len()
                )
            }
            Self::WaitingForCapacity { pod, group } => match group {
                Some(g) => write!(f, "{pod} waits for upcoming capacity in {g}"),
                None => write!(f, "{pod} fits on existing capacity"),
            },
            Self::NotTriggerScaleUp { pod, reasons } => {
                write!(f, "{pod} did not trigger scale-up")?;
                if reasons.is_empty() {
                    f.write_str(": no node groups")?;
                }
                for (group, reason) in reasons.iter() {
                    write!(f, "; {group}: {reason}")?;
                }
                Ok(())
            }
            Self::PoolBackedOff {
                pool,
                kind,
                until,
                message,
            } => {
                write!(
                    f,
                    "pool {pool} backed off until {until} ({}): {message}",
                    kind.as_str()
                )
            }
            Self::PoolBackoffExpired { pool } => write!(f, "pool {pool} backoff expired"),
            Self::CapacityGivenBack { group, count } => {
                write!(f, "gave back {count} undelivered nodes of {group}")
            }
            Self::GangRolledBack {
                gang,
                group,
                launched,
                needed,
            } => {
                write!(
                    f,
                    "gang {gang}: {group} delivered {launched} of {needed} nodes, rolled back"
                )
            }
            Self::NodeRetired { node, reason } => write!(f, "retiring {node}: {reason}"),
            Self::NodeUnretired { node, pods } => {
                write!(f, "un-retired {node} for {pods} pending pods")
            }
            Self::ScaleDownCandidate { node, reason } => {
                write!(f, "{node} is a scale-down candidate ({})", reason.as_str())
            }
            Self::ScaleDownCancelled { node, why } => {
                write!(f, "scale-down of {node} cancelled: {why}")
            }
            Self::ScaleDown {
                node,
                instance,
                group,
                reason,
            } => {
                let node = node.as_ref().map_or("-".to_owned(), |n| n.to_string());
                write!(
                    f,
                    "removing {node} ({instance}) from {group}: {}",
                    reason.as_str()
                )
            }
            Self::LaunchTimedOut { instance, group } => {
                write!(f, "{instance} of {group} never became a node")
            }
            Self::ActionFailed { action, message } => write!(f, "{action} failed: {message}"),
            Self::Warning { message } => write!(f, "warning: {message}"),
            Self::ProvisioningRequestUpdated {
                request,
                condition,
                status,
                reason,
                message,
            } => {
                write!(
                    f,
                    "provisioning request {request}: {condition}={} ({reason}): {message}",
                    if *status { "True" } else { "False" }
                )
            }
            Self::ProvisioningRequestScaleUp {
                request,
                group,
                from,
                to,
            } => {
                write!(
                    f,
                    "scale-up of {group} {from} -> {to} for provisioning request {request}"
                )
            }
            Self::GangIncomplete {
                gang,
                present,
                size,
            } => {
                write!(
                    f,
                    "gang {gang} has {present} of its {size} pods: no scale-up until all are there"
                )
            }
            Self::ProvisioningRequestIgnored { request, class } => {
                write!(f, "provisioning request {request} has class {class}, served by another provisioner: left alone")
            }
            Self::InstanceInterrupted {
                instance,
                group,
                node,
                kind,
                pool,
                pods,
                response,
            } => {
                let node = node.as_ref().map_or("-".to_owned(), |n| n.to_string());
                write!(f, "{kind} for {instance} (node {node}) of {group} in pool {pool}, {} pods on it: {response}", pods.len())
            }
            Self::InterruptionIgnored {
                instance,
                kind,
                why,
            } => write!(f, "{kind} for {instance} ignored: {why}"),
        }
    }
}
