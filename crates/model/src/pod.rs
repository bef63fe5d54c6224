//! The planner's view of a pod: what it asks for, where it may run, who owns it and
//! whether it may be evicted.

use crate::ids::{GangId, NodeName, PodKey, PodUid};
use crate::resources::Resources;
use crate::scheduling::{Labels, NodeAffinity, PodAntiAffinityTerm, Toleration};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The pod's lifecycle phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// A controller's kind, qualified by its API group (`""` for the core group): the
/// same `kind` in two groups is two different controllers (`batch/Job` recreates
/// nothing, `batch.volcano.sh/Job` is Volcano's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnerKind {
    /// The API group: `apps`, `argoproj.io`; empty for the core group (`v1`).
    pub group: String,
    pub kind: String,
}

/// Text that does not name an owner kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerKindParseError {
    pub text: String,
    pub message: &'static str,
}

impl fmt::Display for OwnerKindParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.text, self.message)
    }
}

impl std::error::Error for OwnerKindParseError {}

impl OwnerKind {
    /// A kind of `group` (empty for the core group).
    pub fn new(group: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            kind: kind.into(),
        }
    }

    /// The kind named by an owner reference's `apiVersion` and `kind`: the group is
    /// what precedes the `/` of the apiVersion (`apps/v1` → `apps`; `v1` → core).
    pub fn of_reference(api_version: &str, kind: &str) -> Self {
        let group = api_version
            .rsplit_once('/')
            .map_or("", |(group, _version)| group);
        Self::new(group, kind)
    }

    /// Parses `group/Kind` (`apps/ReplicaSet`, `argoproj.io/Workflow`) or a bare
    /// `Kind` / `core/Kind` for the core group (`ReplicationController`).
    pub fn parse(text: &str) -> Result<Self, OwnerKindParseError> {
        let err = |message| OwnerKindParseError {
            text: text.to_owned(),
            message,
        };
        let trimmed = text.trim();
        let (group, kind) = match trimmed.rsplit_once('/') {
            Some(("core", kind)) => ("", kind),
            Some((group, kind)) => (group, kind),
            None => ("", trimmed),
        };
        if kind.is_empty() {
            return Err(err("expected group/Kind, e.g. apps/ReplicaSet"));
        }
        if group.contains('/') {
            return Err(err(
                "the group must not contain '/' (write group/Kind, without the version)",
            ));
        }
        let valid = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        };
        if !valid(group) || !valid(kind) || !kind.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(err(
                "expected group/Kind with letters, digits, '.' and '-' only",
            ));
        }
        Ok(Self::new(group, kind))
    }
}

impl fmt::Display for OwnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}/{}", self.group, self.kind)
        }
    }
}

/// What created the pod (its `controller: true` owner reference); with the pod's
/// annotations it decides whether the pod may be evicted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Owner {
    /// A `batch/v1` Job: eviction loses the work done so far.
    Job(String),
    /// Any other controller: a ReplicaSet, or a batch controller (Argo `Workflow`,
    /// Kubeflow `PyTorchJob`, a Spark driver `Pod`, …). Whether its pods may be
    /// evicted is the planner's `evictable-owner-kinds`.
    Controller { kind: OwnerKind, name: String },
    /// A DaemonSet pod: runs on every eligible node, ignored for emptiness.
    DaemonSet(String),
    /// A static (mirror) pod of the kubelet.
    Mirror,
    /// No controller: nothing would recreate it.
    Bare,
}

impl Owner {
    /// The owner a controller reference names: `batch` Jobs, `apps` DaemonSets and
    /// core Nodes (mirror pods) have variants of their own, everything else is a
    /// [`Owner::Controller`] of its group-qualified kind.
    pub fn of_controller(api_version: &str, kind: &str, name: &str) -> Self {
        let kind = OwnerKind::of_reference(api_version, kind);
        match (kind.group.as_str(), kind.kind.as_str()) {
            ("batch", "Job") => Self::Job(name.to_owned()),
            ("apps", "DaemonSet") => Self::DaemonSet(name.to_owned()),
            ("", "Node") => Self::Mirror,
            _ => Self::Controller {
                kind,
                name: name.to_owned(),
            },
        }
    }

    /// A controller of `group/Kind` (tests and synthetic workloads).
    pub fn controller(group: &str, kind: &str, name: &str) -> Self {
        Self::Controller {
            kind: OwnerKind::new(group, kind),
            name: name.to_owned(),
        }
    }

    /// A ReplicaSet (a Deployment's pods), for tests and synthetic workloads.
    pub fn replica_set(name: &str) -> Self {
        Self::controller("apps", "ReplicaSet", name)
    }

    /// The group-qualified kind of the controller, if there is one.
    pub fn kind(&self) -> Option<OwnerKind> {
        match self {
            Self::Job(_) => Some(OwnerKind::new("batch", "Job")),
            Self::Controller { kind, .. } => Some(kind.clone()),
            Self::DaemonSet(_) => Some(OwnerKind::new("apps", "DaemonSet")),
            Self::Mirror | Self::Bare => None,
        }
    }
}

/// Cluster Autoscaler's `safe-to-evict` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SafeToEvict {
    True,
    False,
    /// Not evictable, but the node may be removed once the pod completes.
    OnCompletion,
}

/// Membership of a gang: pods that must all run together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GangMembership {
    pub gang: GangId,
    /// How many pods the gang needs at once (its minimum member count); 0 when the
    /// marker does not say (then every pod of the gang present is needed).
    pub size: u32,
    /// Which marker made the pod a gang member.
    #[serde(default)]
    pub source: GangSource,
}

impl GangMembership {
    /// Membership from our own annotations.
    pub fn new(gang: GangId, size: u32) -> Self {
        Self {
            gang,
            size,
            source: GangSource::Annotation,
        }
    }
}

/// The marker a gang comes from: the batch ecosystem has several, and users write
/// the one their queue or scheduler understands.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum GangSource {
    /// `batch-autoscaler.io/gang*` annotations.
    #[default]
    Annotation,
    /// Kueue plain-pod groups: label `kueue.x-k8s.io/pod-group-name` and annotation
    /// `kueue.x-k8s.io/pod-group-total-count`.
    KueuePodGroup,
    /// scheduler-plugins coscheduling: label `scheduling.x-k8s.io/pod-group` and a
    /// `scheduling.x-k8s.io` `PodGroup`'s `spec.minMember`.
    Coscheduling,
    /// Volcano: annotation `scheduling.k8s.io/group-name` and a
    /// `scheduling.volcano.sh` `PodGroup`'s `spec.minMember`.
    Volcano,
    /// The Kubernetes Workload API: `spec.schedulingGroup` and a
    /// `scheduling.k8s.io` `PodGroup` with a gang policy's `minCount`.
    WorkloadApi,
    /// The pods of a ProvisioningRequest (built in memory, all or nothing).
    ProvisioningRequest,
}

impl GangSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Annotation => "annotation",
            Self::KueuePodGroup => "kueue-pod-group",
            Self::Coscheduling => "coscheduling",
            Self::Volcano => "volcano",
            Self::WorkloadApi => "workload-api",
            Self::ProvisioningRequest => "provisioning-request",
        }
    }
}

/// A pod as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodView {
    pub key: PodKey,
    /// `metadata.uid`, when known: evictions carry it as a precondition.
    pub uid: Option<PodUid>,
    pub labels: Labels,
    /// The effective request: max(init containers) vs. sum(containers), plus overhead,
    /// plus one pod slot.
    pub requests: Resources,
    pub node_selector: Labels,
    pub required_affinity: Option<NodeAffinity>,
    pub tolerations: Vec<Toleration>,
    pub anti_affinity: Vec<PodAntiAffinityTerm>,
    pub owner: Owner,
    pub phase: PodPhase,
    /// The node the pod is bound to.
    pub node: Option<NodeName>,
    /// The scheduler reported `PodScheduled=False` with reason `Unschedulable`.
    pub unschedulable: bool,
    pub priority: i32,
    pub safe_to_evict: Option<SafeToEvict>,
    /// `karpenter.sh/do-not-disrupt` or the seed's `openai/do-not-drain`.
    pub do_not_disrupt: bool,
    pub gang: Option<GangMembership>,
    pub created: Time,
    pub started: Option<Time>,
    pub active_deadline: Option<Duration>,
    pub expected_duration: Option<Duration>,
    /// `spec.terminationGracePeriodSeconds`: an eviction gives the pod this long.
    pub termination_grace: Option<Duration>,
    /// The ProvisioningRequest (in the pod's namespace) whose booked capacity the pod
    /// consumes: `autoscaling.x-k8s.io/consume-provisioning-request`.
    #[serde(default)]
    pub consumes_request: Option<String>,
    /// `metadata.deletionTimestamp`: the pod is being deleted and should be gone by
    /// then (the deletion time plus its grace period).
    #[serde(default)]
    pub deletion_deadline: Option<Time>,
    /// `status.nominatedNodeName`: a scheduler has chosen this node for the pod but not
    /// bound it yet (preemption, volume binding, a coscheduling permit wait).
    #[serde(default)]
    pub nominated_node: Option<NodeName>,
}

/// How long past its deletion deadline a pod on a node that is not Ready is taken as
/// gone: no kubelet is there to finish the deletion (Cluster Autoscaler's
/// long-terminating threshold is the same 30 s).
pub const LONG_TERMINATING_AFTER: Duration = Duration::from_secs(30);

impl PodView {
    /// A minimal pending pod with `requests`, for tests and synthetic workloads.
    pub fn new(key: PodKey, requests: Resources, owner: Owner, created: Time) -> Self {
        let mut requests = requests;
        if requests.pods == 0 {
            requests.pods = 1;
        }
        Self {
            key,
            uid: None,
            labels: Labels::new(),
            requests,
            node_selector: Labels::new(),
            required_affinity: None,
            tolerations: Vec::new(),
            anti_affinity: Vec::new(),
            owner,
            phase: PodPhase::Pending,
            node: None,
            unschedulable: false,
            priority: 0,
            safe_to_evict: None,
            do_not_disrupt: false,
            gang: None,
            created,
            started: None,
            active_deadline: None,
            expected_duration: None,
            termination_grace: None,
            consumes_request: None,
            deletion_deadline: None,
            nominated_node: None,
        }
    }

    /// Deleted, and more than [`LONG_TERMINATING_AFTER`] past its deletion deadline. On
    /// a node that is not Ready such a pod no longer holds the node: nothing will run
    /// it down, and waiting for it would keep a dead node for ever.
    pub fn stuck_terminating(&self, now: Time) -> bool {
        self.deletion_deadline
            .is_some_and(|d| now.saturating_since(d) > LONG_TERMINATING_AFTER)
    }

    /// Still occupies its node's resources (bound and not finished).
    pub fn occupies_node(&self) -> bool {
        self.node.is_some() && matches!(self.phase, PodPhase::Pending | PodPhase::Running)
    }

    /// Placed by a scheduler on `nominated_node` but not bound yet: as good as bound
    /// there for a removal's last check.
    pub fn is_nominated(&self) -> bool {
        self.node.is_none() && self.phase == PodPhase::Pending && self.nominated_node.is_some()
    }

    /// Waiting to be placed: not bound, not finished.
    pub fn is_unbound_pending(&self) -> bool {
        self.node.is_none() && self.phase == PodPhase::Pending
    }

    /// A DaemonSet or mirror pod: part of every node, not a workload.
    pub fn is_node_infrastructure(&self) -> bool {
        matches!(self.owner, Owner::DaemonSet(_) | Owner::Mirror)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_kinds_are_group_qualified() {
        assert_eq!(
            Owner::of_controller("batch/v1", "Job", "j"),
            Owner::Job("j".into())
        );
        assert_eq!(
            Owner::of_controller("apps/v1", "DaemonSet", "d"),
            Owner::DaemonSet("d".into())
        );
        assert_eq!(Owner::of_controller("v1", "Node", "n"), Owner::Mirror);
        assert_eq!(
            Owner::of_controller("apps/v1", "ReplicaSet", "r"),
            Owner::replica_set("r")
        );
        // Same kind, another group: not a batch/v1 Job.
        assert_eq!(
            Owner::of_controller("batch.volcano.sh/v1alpha1", "Job", "v"),
            Owner::controller("batch.volcano.sh", "Job", "v")
        );
        // A Spark executor's owner is its driver pod (core group).
        assert_eq!(
            Owner::of_controller("v1", "Pod", "driver"),
            Owner::controller("", "Pod", "driver")
        );
        assert_eq!(
            Owner::of_controller("", "Weird", "w"),
            Owner::controller("", "Weird", "w")
        );
    }

    #[test]
    fn owner_kind_parse_and_display_round_trip() {
        for text in [
            "apps/ReplicaSet",
            "ReplicationController",
            "argoproj.io/Workflow",
            "kubeflow.org/PyTorchJob",
        ] {
            assert_eq!(OwnerKind::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            OwnerKind::parse("core/ReplicationController").unwrap(),
            OwnerKind::new("", "ReplicationController")
        );
        for bad in ["", "apps/", "apps/v1/ReplicaSet", "apps/Replica Set", "/"] {
            assert!(OwnerKind::parse(bad).is_err(), "{bad:?}");
        }
    }
}
