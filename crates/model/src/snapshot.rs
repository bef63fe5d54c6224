//! The [`ClusterSnapshot`]: everything the planner knows at one instant.

use crate::group::NodeGroupState;
use crate::node::NodeView;
use crate::pod::PodView;
use crate::provreq::ProvisioningRequestView;
use crate::resources::Resources;
use crate::scheduling::{Labels, NodeAffinity, Toleration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A DaemonSet: one pod on every eligible node, so its requests are overhead on every
/// new node it would land on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonSetView {
    pub name: String,
    pub requests: Resources,
    pub node_selector: Labels,
    pub required_affinity: Option<NodeAffinity>,
    pub tolerations: Vec<Toleration>,
}

/// A consistent view of the cluster and its node groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ClusterSnapshot {
    /// Every watch had synced when this was taken. The planner takes no action on an
    /// unsynced snapshot.
    pub synced: bool,
    /// Increases with every snapshot the driver takes; scale-down re-validates a
    /// decision only on a strictly newer revision.
    pub revision: u64,
    pub groups: Vec<NodeGroupState>,
    pub nodes: Vec<NodeView>,
    pub pods: Vec<PodView>,
    pub daemonsets: Vec<DaemonSetView>,
    /// The priority expander's configuration (priority → group-name regexes), from
    /// the `cluster-autoscaler-priority-expander` ConfigMap when present.
    pub expander_priorities: Option<BTreeMap<i32, Vec<String>>>,
    /// ProvisioningRequests of the classes we serve (empty when the feature is off).
    #[serde(default)]
    pub provisioning_requests: Vec<ProvisioningRequestView>,
}
