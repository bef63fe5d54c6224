//! The scheduling predicates: the one implementation of "may this pod run on this
//! node", shared by scale-up, scale-down and the simulator's scheduler.
//!
//! Simulated exactly: resource fit of the effective request, nodeSelector, required
//! node affinity, taints and tolerations (NoSchedule/NoExecute block, PreferNoSchedule
//! does not), required pod anti-affinity on `kubernetes.io/hostname` (both
//! directions), not-ready and cordoned nodes. Approximated: anti-affinity on other
//! topology keys is checked per node (stricter than per zone would be permissive
//! only across nodes of one zone). Ignored: topology spread constraints, preferred
//! (soft) affinities, pod affinity, volume topology, host ports.

use model::resources::Shortfall;
use model::{Labels, PodView, Resources, Taint};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a pod cannot be placed on a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Unfit {
    NodeNotReady,
    NodeCordoned,
    TaintNotTolerated {
        taint: String,
    },
    NodeSelectorMismatch,
    NodeAffinityMismatch,
    Insufficient {
        resource: String,
        requested: i64,
        available: i64,
    },
    PodAntiAffinity,
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeNotReady => f.write_str("node not ready"),
            Self::NodeCordoned => f.write_str("node cordoned"),
            Self::TaintNotTolerated { taint } => write!(f, "taint {taint} not tolerated"),
            Self::NodeSelectorMismatch => f.write_str("node selector does not match"),
            Self::NodeAffinityMismatch => f.write_str("required node affinity does not match"),
            Self::Insufficient {
                resource,
                requested,
                available,
            } => {
                write!(
                    f,
                    "insufficient {resource} (requested {requested}, available {available})"
                )
            }
            Self::PodAntiAffinity => f.write_str("pod anti-affinity"),
        }
    }
}

impl From<Shortfall> for Unfit {
    fn from(s: Shortfall) -> Self {
        Self::Insufficient {
            resource: s.resource,
            requested: s.requested,
            available: s.available,
        }
    }
}

/// The first taint among `taints` that blocks scheduling and that `pod` does not tolerate.
pub fn untolerated_taint<'t>(
    pod_tolerations: &[model::Toleration],
    taints: &'t [Taint],
) -> Option<&'t Taint> {
    taints
        .iter()
        .filter(|t| t.effect.blocks_scheduling())
        .find(|t| !pod_tolerations.iter().any(|tol| tol.tolerates(t)))
}

/// Label and taint predicates: everything that depends only on the node's labels and
/// taints, so it can be evaluated once per (pod class, node signature).
pub fn check_labels_and_taints(
    pod: &PodView,
    labels: &Labels,
    taints: &[Taint],
) -> Result<(), Unfit> {
    if !labels.contains_all(&pod.node_selector) {
        return Err(Unfit::NodeSelectorMismatch);
    }
    if let Some(affinity) = &pod.required_affinity {
        if !affinity.matches(labels) {
            return Err(Unfit::NodeAffinityMismatch);
        }
    }
    if let Some(taint) = untolerated_taint(&pod.tolerations, taints) {
        return Err(Unfit::TaintNotTolerated {
            taint: taint.to_string(),
        });
    }
    Ok(())
}

/// Resource fit of the pod's effective request against what is left on a node.
pub fn check_resources(
    pod: &PodView,
    allocatable: &Resources,
    used: &Resources,
) -> Result<(), Unfit> {
    pod.requests
        .fits_in_remaining(allocatable, used)
        .map_err(Unfit::from)
}

/// Required pod anti-affinity between `pod` and the pods already on the node, both
/// directions.
pub fn check_anti_affinity<'p>(
    pod: &PodView,
    residents: impl IntoIterator<Item = &'p PodView>,
) -> Result<(), Unfit> {
    for resident in residents {
        let pod_rejects = pod.anti_affinity.iter().any(|t| {
            t.selects(
                &pod.key.namespace,
                &resident.key.namespace,
                &resident.labels,
            )
        });
        let resident_rejects = resident
            .anti_affinity
            .iter()
            .any(|t| t.selects(&resident.key.namespace, &pod.key.namespace, &pod.labels));
        if pod_rejects || resident_rejects {
            return Err(Unfit::PodAntiAffinity);
        }
    }
    Ok(())
}
