//! The planner's view of a pod: what it asks for, where it may run, who owns it and
//! whether it may be evicted.

use crate::ids::{GangId, NodeName, PodKey};
use crate::resources::Resources;
use crate::scheduling::{Labels, NodeAffinity, PodAntiAffinityTerm, Toleration};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The pod's lifecycle phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// What created the pod; decides whether it can be recreated after an eviction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Owner {
    /// A batch Job: eviction loses the work done so far.
    Job(String),
    /// A ReplicaSet / Deployment / StatefulSet or similar controller that recreates pods.
    Replicated { kind: String, name: String },
    /// A DaemonSet pod: runs on every eligible node, ignored for emptiness.
    DaemonSet(String),
    /// A static (mirror) pod of the kubelet.
    Mirror,
    /// No controller: nothing would recreate it.
    Bare,
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
    /// How many pods the gang needs at once.
    pub size: u32,
}

/// A pod as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodView {
    pub key: PodKey,
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
}

impl PodView {
    /// A minimal pending pod with `requests`, for tests and synthetic workloads.
    pub fn new(key: PodKey, requests: Resources, owner: Owner, created: Time) -> Self {
        let mut requests = requests;
        if requests.pods == 0 {
            requests.pods = 1;
        }
        Self {
            key,
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
        }
    }

    /// Still occupies its node's resources (bound and not finished).
    pub fn occupies_node(&self) -> bool {
        self.node.is_some() && matches!(self.phase, PodPhase::Pending | PodPhase::Running)
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
