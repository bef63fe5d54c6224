//! Node templates: what a new node of a group would look like, so pods can be placed
//! on nodes that do not exist yet. Template = the group's shape (instance minus
//! kubelet/system reserve) minus the requests of DaemonSets that would run on it,
//! with the group's labels and taints.

use crate::predicates::untolerated_taint;
use model::{DaemonSetView, Labels, NodeGroupSpec, Resources, Taint, Zone};
use std::sync::Arc;

/// A would-be node of a group in one zone.
#[derive(Debug, Clone)]
pub struct TemplateNode {
    pub zone: Zone,
    pub labels: Arc<Labels>,
    pub taints: Arc<Vec<Taint>>,
    /// What pods can use: allocatable minus DaemonSet overhead.
    pub allocatable: Resources,
    /// The DaemonSet requests already subtracted.
    pub daemonset_overhead: Resources,
}

/// Whether a DaemonSet would run a pod on a node with these labels and taints.
pub fn daemonset_runs_on(ds: &DaemonSetView, labels: &Labels, taints: &[Taint]) -> bool {
    labels.contains_all(&ds.node_selector)
        && ds
            .required_affinity
            .as_ref()
            .is_none_or(|a| a.matches(labels))
        && untolerated_taint(&ds.tolerations, taints).is_none()
}

/// The template of `spec` in `zone`, given the cluster's DaemonSets.
pub fn node_template(
    spec: &NodeGroupSpec,
    zone: &Zone,
    daemonsets: &[DaemonSetView],
) -> TemplateNode {
    let labels = spec.template_labels(zone);
    let mut overhead = Resources::zero();
    for ds in daemonsets
        .iter()
        .filter(|ds| daemonset_runs_on(ds, &labels, &spec.taints))
    {
        overhead.add(&ds.requests);
        overhead.pods += i64::from(ds.requests.pods == 0);
    }
    let mut allocatable = spec.shape.allocatable.clone();
    allocatable.sub(&overhead);
    TemplateNode {
        zone: zone.clone(),
        labels: Arc::new(labels),
        taints: Arc::new(spec.taints.clone()),
        allocatable,
        daemonset_overhead: overhead,
    }
}
