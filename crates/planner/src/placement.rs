//! The placement simulation: a set of nodes (existing, upcoming or imagined from a
//! group's template) with their free resources and residents, on which pods are
//! checked (`can_place`) and then committed (`place`). Scale-up, scale-down and the
//! simulator's scheduler all place pods through this one type.

use crate::predicates::{check_anti_affinity, check_labels_and_taints, check_resources, Unfit};
use model::{Labels, NodeGroupId, NodeName, NodeView, PodView, Resources, Taint};
use std::sync::Arc;

/// Index of a node in a [`PlacementSim`].
pub type NodeIdx = usize;

/// What a simulated node stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOrigin {
    /// A registered node.
    Existing,
    /// A node the cloud is launching (counted in the group's target, not registered yet).
    Upcoming,
    /// A node that would exist if the group were scaled up.
    Template,
}

/// A node in the simulation.
#[derive(Debug, Clone)]
pub struct SimNode {
    pub name: NodeName,
    pub origin: NodeOrigin,
    pub group: Option<NodeGroupId>,
    pub labels: Arc<Labels>,
    pub taints: Arc<Vec<Taint>>,
    pub allocatable: Resources,
    pub used: Resources,
    /// Ready and not cordoned.
    pub ready: bool,
    pub cordoned: bool,
    /// Indices (into the simulation's pod slice) of pods on the node.
    pub residents: Vec<usize>,
}

impl SimNode {
    /// A registered, Ready node with these residents (indices into `pods`), their
    /// requests counted as used.
    pub fn existing(node: &NodeView, pods: &[PodView], residents: &[usize]) -> Self {
        let mut used = Resources::zero();
        for &p in residents {
            used.add(&pods[p].requests);
        }
        Self {
            name: node.name.clone(),
            origin: NodeOrigin::Existing,
            group: node.group.clone(),
            labels: Arc::new(node.labels.clone()),
            taints: Arc::new(node.taints.clone()),
            allocatable: node.allocatable.clone(),
            used,
            ready: true,
            cordoned: node.cordoned,
            residents: residents.to_vec(),
        }
    }

    /// What is still free.
    pub fn free(&self) -> Resources {
        let mut free = self.allocatable.clone();
        free.sub(&self.used);
        free
    }
}

/// Nodes and the pods placed on them.
#[derive(Debug, Clone)]
pub struct PlacementSim<'p> {
    pods: &'p [PodView],
    nodes: Vec<SimNode>,
    /// No pod has anti-affinity: resident checks are skipped entirely.
    anti_affinity_in_play: bool,
}

impl<'p> PlacementSim<'p> {
    /// An empty simulation over `pods` (pods are referred to by index).
    pub fn new(pods: &'p [PodView]) -> Self {
        let anti_affinity_in_play = pods.iter().any(|p| !p.anti_affinity.is_empty());
        Self {
            pods,
            nodes: Vec::new(),
            anti_affinity_in_play,
        }
    }

    /// The pods this simulation indexes into.
    pub fn pods(&self) -> &'p [PodView] {
        self.pods
    }

    /// Whether any pod of the simulation has anti-affinity terms (else resident checks are skipped).
    pub fn anti_affinity_in_play(&self) -> bool {
        self.anti_affinity_in_play
    }

    /// Adds a node; returns its index.
    pub fn add_node(&mut self, node: SimNode) -> NodeIdx {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The nodes.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, idx: NodeIdx) -> &SimNode {
        &self.nodes[idx]
    }

    /// Mutable access to one node (to cordon or un-cordon it in a what-if).
    pub fn node_mut(&mut self, idx: NodeIdx) -> &mut SimNode {
        &mut self.nodes[idx]
    }

    /// Checks every predicate for pod `pod` on node `node`; changes nothing.
    pub fn can_place(&self, pod: usize, node: NodeIdx) -> Result<(), Unfit> {
        let p = &self.pods[pod];
        let n = &self.nodes[node];
        if !n.ready {
            return Err(Unfit::NodeNotReady);
        }
        if n.cordoned {
            return Err(Unfit::NodeCordoned);
        }
        check_resources(p, &n.allocatable, &n.used)?;
        check_labels_and_taints(p, &n.labels, &n.taints)?;
        if self.anti_affinity_in_play {
            check_anti_affinity(p, n.residents.iter().map(|&i| &self.pods[i]))?;
        }
        Ok(())
    }

    /// Like [`can_place`](Self::can_place) but only the parts that vary with
    /// occupancy (resources and anti-affinity), for callers that already checked
    /// labels and taints for the pod's class.
    pub fn can_place_dynamic(&self, pod: usize, node: NodeIdx) -> Result<(), Unfit> {
        let p = &self.pods[pod];
        let n = &self.nodes[node];
        check_resources(p, &n.allocatable, &n.used)?;
        if self.anti_affinity_in_play {
            check_anti_affinity(p, n.residents.iter().map(|&i| &self.pods[i]))?;
        }
        Ok(())
    }

    /// Commits a placement checked with `can_place`.
    pub fn place(&mut self, pod: usize, node: NodeIdx) {
        let n = &mut self.nodes[node];
        n.used.add(&self.pods[pod].requests);
        n.residents.push(pod);
    }

    /// Removes a pod from a node (a what-if of its eviction).
    pub fn unplace(&mut self, pod: usize, node: NodeIdx) {
        let n = &mut self.nodes[node];
        if let Some(pos) = n.residents.iter().position(|&i| i == pod) {
            n.residents.swap_remove(pos);
            n.used.sub(&self.pods[pod].requests);
        }
    }

    /// The first node among `candidates` that takes the pod.
    pub fn first_fit(
        &self,
        pod: usize,
        candidates: impl IntoIterator<Item = NodeIdx>,
    ) -> Option<NodeIdx> {
        candidates
            .into_iter()
            .find(|&n| self.can_place(pod, n).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Owner, PodKey, Time};

    fn node(cpu: i64) -> SimNode {
        SimNode {
            name: NodeName::new("n"),
            origin: NodeOrigin::Existing,
            group: None,
            labels: Arc::new(Labels::new()),
            taints: Arc::new(Vec::new()),
            allocatable: Resources {
                pods: 110,
                ..Resources::cpu_mem(cpu, 1 << 34)
            },
            used: Resources::zero(),
            ready: true,
            cordoned: false,
            residents: Vec::new(),
        }
    }

    #[test]
    fn place_consumes_and_unplace_restores() {
        let pods = vec![PodView::new(
            PodKey::new("d", "a"),
            Resources::cpu_mem(600, 1),
            Owner::Bare,
            Time::ZERO,
        )];
        let mut sim = PlacementSim::new(&pods);
        let n = sim.add_node(node(1000));
        assert!(sim.can_place(0, n).is_ok());
        sim.place(0, n);
        assert!(matches!(
            sim.can_place(0, n),
            Err(Unfit::Insufficient { .. })
        ));
        sim.unplace(0, n);
        assert!(sim.can_place(0, n).is_ok());
    }

    #[test]
    fn not_ready_and_cordoned_nodes_take_nothing() {
        let pods = vec![PodView::new(
            PodKey::new("d", "a"),
            Resources::cpu_mem(1, 1),
            Owner::Bare,
            Time::ZERO,
        )];
        let mut sim = PlacementSim::new(&pods);
        let a = sim.add_node(SimNode {
            ready: false,
            ..node(1000)
        });
        let b = sim.add_node(SimNode {
            cordoned: true,
            ..node(1000)
        });
        assert_eq!(sim.can_place(0, a), Err(Unfit::NodeNotReady));
        assert_eq!(sim.can_place(0, b), Err(Unfit::NodeCordoned));
        let c = sim.add_node(node(1000));
        assert_eq!(sim.first_fit(0, [a, b, c]), Some(c));
    }
}
