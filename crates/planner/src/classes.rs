//! Equivalence classes of pending pods: pods that ask for the same thing in the same
//! way are checked against a node template once, not once each.

use crate::hash::FxHashMap;
use model::{GangId, Labels, NodeAffinity, PodAntiAffinityTerm, PodView, Resources, Toleration};

/// Pods with identical scheduling requirements.
#[derive(Debug, Clone)]
pub(crate) struct PodClass {
    /// Indices into the snapshot's pods, in the order they were given.
    pub members: Vec<usize>,
}

impl PodClass {
    pub fn representative(&self) -> usize {
        self.members[0]
    }
}

#[derive(PartialEq, Eq, Hash)]
struct ClassKey<'p> {
    requests: &'p Resources,
    node_selector: &'p Labels,
    affinity: &'p Option<NodeAffinity>,
    tolerations: &'p [Toleration],
    anti_affinity: &'p [PodAntiAffinityTerm],
    /// Only pods with anti-affinity terms are told apart by labels and namespace:
    /// for everyone else labels do not change where a pod may go.
    identity: Option<(&'p str, &'p Labels)>,
    gang: Option<&'p GangId>,
}

/// Groups `indices` of `pods` into classes, keeping first-seen order (deterministic).
pub(crate) fn group_into_classes(pods: &[PodView], indices: &[usize]) -> Vec<PodClass> {
    let mut by_key: FxHashMap<ClassKey<'_>, usize> = FxHashMap::default();
    let mut classes: Vec<PodClass> = Vec::new();
    for &i in indices {
        let p = &pods[i];
        let anti_affinity_anywhere = !p.anti_affinity.is_empty();
        let key = ClassKey {
            requests: &p.requests,
            node_selector: &p.node_selector,
            affinity: &p.required_affinity,
            tolerations: &p.tolerations,
            anti_affinity: &p.anti_affinity,
            identity: anti_affinity_anywhere.then_some((p.key.namespace.as_str(), &p.labels)),
            gang: p.gang.as_ref().map(|g| &g.gang),
        };
        match by_key.get(&key) {
            Some(&c) => classes[c].members.push(i),
            None => {
                by_key.insert(key, classes.len());
                classes.push(PodClass { members: vec![i] });
            }
        }
    }
    classes
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Owner, PodKey, Time};

    #[test]
    fn same_requests_share_a_class_different_selectors_do_not() {
        let mk = |name: &str, cpu: i64| {
            PodView::new(
                PodKey::new("d", name),
                Resources::cpu_mem(cpu, 1),
                Owner::Job("j".into()),
                Time::ZERO,
            )
        };
        let mut pods = vec![mk("a", 100), mk("b", 100), mk("c", 200), mk("d", 100)];
        pods[3].node_selector.insert("pool", "gpu");
        let classes = group_into_classes(&pods, &[0, 1, 2, 3]);
        let members: Vec<_> = classes.iter().map(|c| c.members.clone()).collect();
        assert_eq!(members, vec![vec![0, 1], vec![2], vec![3]]);
    }
}
