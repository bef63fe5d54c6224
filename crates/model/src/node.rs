//! The planner's view of a Kubernetes Node.

use crate::ids::{InstanceId, NodeGroupId, NodeName};
use crate::resources::Resources;
use crate::scheduling::{Labels, Taint};
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// The autoscaler's own retirement mark, read back from the Node so a restart resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireMark {
    pub since: Time,
    pub reason: String,
}

/// A node as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: NodeName,
    /// The EC2 instance behind the node (from `spec.providerID`), if it is an AWS node.
    pub instance: Option<InstanceId>,
    /// The node group that owns the instance; `None` for nodes the autoscaler does not manage.
    pub group: Option<NodeGroupId>,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    pub ready: bool,
    /// Since when the node has been in its current readiness (for unready timeouts).
    pub ready_changed: Time,
    /// `spec.unschedulable` (cordoned).
    pub cordoned: bool,
    pub created: Time,
    /// Persisted idle-since annotation, if any.
    pub idle_since: Option<Time>,
    /// Persisted retirement (our NoSchedule taint plus annotations), if any.
    pub retired: Option<RetireMark>,
    /// `scale-down-disabled` annotation or the seed's `openai/detached` label: hands off.
    pub scale_down_disabled: bool,
}

impl NodeView {
    /// A ready, schedulable node, for tests and simulations.
    pub fn new(name: NodeName, allocatable: Resources, created: Time) -> Self {
        let mut labels = Labels::new();
        labels.insert(crate::well_known::LABEL_HOSTNAME.to_owned(), name.0.clone());
        Self {
            name,
            instance: None,
            group: None,
            labels,
            taints: Vec::new(),
            allocatable,
            ready: true,
            ready_changed: created,
            cordoned: false,
            created,
            idle_since: None,
            retired: None,
            scale_down_disabled: false,
        }
    }
}
