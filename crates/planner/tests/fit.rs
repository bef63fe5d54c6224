//! The indexed first-fit of scale-up (`fit.rs`: node buckets, per-signature trees,
//! per-class cursors) must place every pod exactly where the plain
//! `PlacementSim::first_fit` over the same nodes in the same order would. Random small
//! worlds: nodes of two groups, existing and upcoming, some not ready or cordoned or
//! already busy, labels and a taint; pods in repeated shapes (so classes have several
//! members) with selectors, hostname selectors, tolerations and hostname anti-affinity
//! in both directions.

use model::well_known::LABEL_HOSTNAME;
use model::*;
use planner::placement::{NodeOrigin, PlacementSim, SimNode};
use proptest::prelude::*;
use std::sync::Arc;

#[derive(Debug, Clone)]
struct NodeSpec {
    upcoming: bool,
    group: u8,
    zone: u8,
    tainted: bool,
    ready: bool,
    cordoned: bool,
    cpu: i64,
    used_cpu: i64,
    pods: i64,
}

#[derive(Debug, Clone)]
struct PodSpec {
    shape: u8,
    zone_selector: Option<u8>,
    host_selector: Option<u8>,
    tolerates: bool,
    app: u8,
    anti_affinity: bool,
}

fn node_strategy() -> impl Strategy<Value = NodeSpec> {
    (
        any::<bool>(),
        0u8..2,
        0u8..2,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
        1i64..5,
        0i64..4,
        2i64..8,
    )
        .prop_map(
            |(upcoming, group, zone, tainted, ready, cordoned, cpu, used, pods)| NodeSpec {
                upcoming,
                group,
                zone,
                tainted,
                ready,
                cordoned,
                cpu: cpu * 1000,
                used_cpu: (used * 500).min(cpu * 1000),
                pods,
            },
        )
}

fn pod_strategy() -> impl Strategy<Value = PodSpec> {
    (
        0u8..3,
        prop::option::weighted(0.3, 0u8..2),
        prop::option::weighted(0.1, 0u8..12),
        prop::bool::weighted(0.3),
        0u8..2,
        prop::bool::weighted(0.25),
    )
        .prop_map(
            |(shape, zone_selector, host_selector, tolerates, app, anti_affinity)| PodSpec {
                shape,
                zone_selector,
                host_selector,
                tolerates,
                app,
                anti_affinity,
            },
        )
}

fn host(i: usize) -> String {
    format!("n{i}")
}

fn sim_node(i: usize, spec: &NodeSpec) -> SimNode {
    let mut labels = Labels::new();
    labels.insert(LABEL_HOSTNAME.to_owned(), host(i));
    labels.insert("zone".to_owned(), format!("z{}", spec.zone));
    let taints = if spec.tainted {
        vec![Taint::new("dedicated", "x", TaintEffect::NoSchedule)]
    } else {
        Vec::new()
    };
    SimNode {
        name: NodeName::new(host(i)),
        origin: if spec.upcoming {
            NodeOrigin::Upcoming
        } else {
            NodeOrigin::Existing
        },
        group: Some(NodeGroupId::new(format!("g{}", spec.group))),
        labels: Arc::new(labels),
        taints: Arc::new(taints),
        allocatable: Resources {
            pods: spec.pods,
            ..Resources::cpu_mem(spec.cpu, 16 << 30)
        },
        used: Resources::cpu_mem(spec.used_cpu, 0),
        ready: spec.ready,
        cordoned: spec.cordoned,
        residents: Vec::new(),
    }
}

fn pod(i: usize, spec: &PodSpec) -> PodView {
    let cpu = [500, 1000, 1500][spec.shape as usize];
    let mut p = PodView::new(
        PodKey::new("batch", format!("p{i}")),
        Resources::cpu_mem(cpu, 1 << 30),
        Owner::Job("j".into()),
        Time::ZERO,
    );
    p.labels.insert("app".to_owned(), format!("a{}", spec.app));
    if let Some(z) = spec.zone_selector {
        p.node_selector.insert("zone".to_owned(), format!("z{z}"));
    }
    if let Some(h) = spec.host_selector {
        p.node_selector
            .insert(LABEL_HOSTNAME.to_owned(), host(h as usize));
    }
    if spec.tolerates {
        p.tolerations.push(Toleration {
            key: "dedicated".into(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
        });
    }
    if spec.anti_affinity {
        p.anti_affinity.push(PodAntiAffinityTerm {
            selector: LabelSelector {
                match_labels: Labels::from_iter([("app", format!("a{}", spec.app))]),
                match_expressions: Vec::new(),
            },
            namespaces: Vec::new(),
            topology_key: LABEL_HOSTNAME.to_owned(),
        });
    }
    p
}

/// Both first-fits on copies of one world; returns (indexed, plain) placements.
fn both(
    nodes: &[NodeSpec],
    pods: &[PodView],
    nominated_to: Option<&NodeGroupId>,
) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
    let mut sim = PlacementSim::new(pods);
    let slots: Vec<usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| sim.add_node(sim_node(i, n)))
        .collect();
    let order: Vec<usize> = (0..pods.len()).collect();
    let mut plain = sim.clone();
    let indexed = planner::place_in_order_indexed(&mut sim, &slots, &order, nominated_to);
    let allowed: Vec<usize> = slots
        .iter()
        .copied()
        .filter(|&s| {
            let n = plain.node(s);
            nominated_to
                .is_none_or(|g| n.origin == NodeOrigin::Existing || n.group.as_ref() == Some(g))
        })
        .collect();
    let expected = order
        .iter()
        .map(|&p| {
            let node = plain.first_fit(p, allowed.iter().copied())?;
            plain.place(p, node);
            Some(node)
        })
        .collect();
    (indexed, expected)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn indexed_first_fit_places_like_the_plain_one(
        nodes in prop::collection::vec(node_strategy(), 1..12),
        pods in prop::collection::vec(pod_strategy(), 0..40),
    ) {
        let pods: Vec<PodView> = pods.iter().enumerate().map(|(i, p)| pod(i, p)).collect();
        let (indexed, plain) = both(&nodes, &pods, None);
        prop_assert_eq!(indexed, plain);
    }

    #[test]
    fn nominated_pods_are_placed_like_the_plain_first_fit_over_their_targets(
        nodes in prop::collection::vec(node_strategy(), 1..12),
        pods in prop::collection::vec(pod_strategy(), 0..30),
        group in 0u8..2,
    ) {
        let pods: Vec<PodView> = pods.iter().enumerate().map(|(i, p)| pod(i, p)).collect();
        let group = NodeGroupId::new(format!("g{group}"));
        let (indexed, plain) = both(&nodes, &pods, Some(&group));
        prop_assert_eq!(indexed, plain);
    }
}
