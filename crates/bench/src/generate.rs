//! Synthetic but realistic cluster snapshots, generated deterministically from a seed.
//!
//! The shape of the cluster: node groups of mixed shapes (general-purpose cpu, some of
//! them arm64 or spot with a taint, memory-heavy, GPU with the NVIDIA taint), spread
//! over three zones; nodes at varied utilisation (a fifth nearly idle, some empty with
//! an idle-since mark, a few not ready, a few unmanaged system nodes); three
//! DaemonSets and their pods; running pods owned by Jobs, ReplicaSets and nobody; and
//! pending pods, most of them in large identical batches (equivalence classes), the
//! rest unique, with node selectors, required node affinity, tolerations, hostname
//! anti-affinity and gangs in the mix. Same size and seed, same snapshot.

use model::resources::NVIDIA_GPU;
use model::well_known::{LABEL_ACCELERATOR, LABEL_ARCH, LABEL_HOSTNAME, LABEL_ZONE};
use model::{
    ClusterSnapshot, DaemonSetView, GangId, GangMembership, InstanceId, InstanceState,
    InstanceTypeName, InstanceView, LabelSelector, Labels, NodeAffinity, NodeGroupId,
    NodeGroupSpec, NodeGroupState, NodeName, NodeSelectorRequirement, NodeSelectorTerm, NodeShape,
    NodeView, Operator, Owner, PodAntiAffinityTerm, PodKey, PodPhase, PodView, PurchaseOption,
    Region, Resources, SafeToEvict, Taint, TaintEffect, Time, Toleration, TolerationOperator, Zone,
};
use std::time::Duration;

/// How big a cluster to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSize {
    pub nodes: usize,
    pub pending_pods: usize,
    pub groups: usize,
}

/// The instant the generated snapshot is taken at (an arbitrary day into the axis).
pub const NOW: Time = Time::from_secs(86_400 * 30);

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const GPU_TAINT: &str = "nvidia.com/gpu";
const SPOT_TAINT: &str = "batch.example.com/spot";
const GIB: i64 = 1 << 30;
const MIB: i64 = 1 << 20;

/// SplitMix64: small, fast, and the same sequence on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cpu,
    Arm,
    Spot,
    Memory,
    Gpu,
}

/// The kinds of groups, repeated in this order: 50% cpu (amd64 on-demand), 10% arm64,
/// 10% spot (tainted), 20% memory-heavy, 10% GPU... rounded to a pattern of ten.
const KIND_PATTERN: [Kind; 10] = [
    Kind::Cpu,
    Kind::Memory,
    Kind::Gpu,
    Kind::Cpu,
    Kind::Spot,
    Kind::Cpu,
    Kind::Memory,
    Kind::Arm,
    Kind::Cpu,
    Kind::Gpu,
];

fn instance_types(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Cpu => &[
            "m5.2xlarge",
            "m5.4xlarge",
            "c5.4xlarge",
            "c5.9xlarge",
            "m5.xlarge",
        ],
        Kind::Arm => &["m6g.4xlarge", "m6g.2xlarge"],
        Kind::Spot => &["m5.4xlarge", "c5.4xlarge"],
        Kind::Memory => &["r5.2xlarge", "r5.4xlarge", "r6i.8xlarge"],
        Kind::Gpu => &["g4dn.xlarge", "g4dn.12xlarge", "g5.12xlarge"],
    }
}

fn workload(kind: Kind) -> &'static str {
    match kind {
        Kind::Cpu | Kind::Arm | Kind::Spot => "general",
        Kind::Memory => "memory",
        Kind::Gpu => "gpu",
    }
}

struct GroupPlan {
    kind: Kind,
    spec: NodeGroupSpec,
    /// Template labels in the group's zone (the node's labels minus the hostname).
    labels: Labels,
}

fn make_group(gi: usize, rng: &mut Rng) -> GroupPlan {
    let kind = KIND_PATTERN[gi % KIND_PATTERN.len()];
    let instance_type = *rng.pick(instance_types(kind));
    let shape = catalog::lookup(instance_type).expect("bench instance types are in the catalog");
    let zone = Zone::new(ZONES[gi % ZONES.len()]);
    let mut labels = Labels::new();
    labels.insert("workload", workload(kind));
    labels.insert("team", format!("team-{}", gi % 4));
    let mut taints = Vec::new();
    match kind {
        Kind::Gpu => {
            labels.insert(LABEL_ACCELERATOR, "nvidia");
            taints.push(Taint::new(GPU_TAINT, "present", TaintEffect::NoSchedule));
        }
        Kind::Spot => taints.push(Taint::new(SPOT_TAINT, "true", TaintEffect::NoSchedule)),
        _ => {}
    }
    let purchase = if kind == Kind::Spot {
        PurchaseOption::Spot
    } else {
        PurchaseOption::OnDemand
    };
    let spec = NodeGroupSpec {
        id: NodeGroupId::new(format!(
            "{}-{}-{gi:03}",
            workload(kind),
            instance_type.replace('.', "-")
        )),
        region: Region::new("us-east-1"),
        zones: vec![zone.clone()],
        shape: NodeShape::for_instance(
            InstanceTypeName::new(instance_type),
            shape.arch.label(),
            shape.vcpus,
            shape.memory_mib,
            shape.gpus,
            model::group::DEFAULT_MAX_PODS,
        ),
        min_size: 0,
        max_size: 0,
        labels,
        taints,
        purchase,
        price_per_hour: catalog::on_demand_price_usd_per_hour(instance_type).map(|p| {
            if kind == Kind::Spot {
                p * 0.35
            } else {
                p
            }
        }),
        region_rank: 0,
        capacity_rebalance: false,
    };
    let labels = spec.template_labels(&zone);
    GroupPlan { kind, spec, labels }
}

fn daemonsets() -> Vec<DaemonSetView> {
    let tolerate_all = vec![Toleration {
        key: String::new(),
        operator: TolerationOperator::Exists,
        value: String::new(),
        effect: None,
    }];
    let requests = |cpu, mem_mib| {
        let mut r = Resources::cpu_mem(cpu, mem_mib * MIB);
        r.pods = 1;
        r
    };
    vec![
        DaemonSetView {
            name: "kube-proxy".into(),
            requests: requests(100, 128),
            node_selector: Labels::new(),
            required_affinity: None,
            tolerations: tolerate_all.clone(),
        },
        DaemonSetView {
            name: "node-exporter".into(),
            requests: requests(50, 64),
            node_selector: Labels::new(),
            required_affinity: None,
            tolerations: tolerate_all,
        },
        DaemonSetView {
            name: "nvidia-device-plugin".into(),
            requests: requests(50, 100),
            node_selector: Labels::from([(LABEL_ACCELERATOR, "nvidia")]),
            required_affinity: None,
            tolerations: vec![Toleration {
                key: GPU_TAINT.into(),
                operator: TolerationOperator::Exists,
                value: String::new(),
                effect: None,
            }],
        },
    ]
}

/// What a batch of pods looks like: requests plus where it may go.
#[derive(Debug, Clone)]
struct PodProfile {
    requests: Resources,
    node_selector: Labels,
    affinity: Option<NodeAffinity>,
    tolerations: Vec<Toleration>,
    anti_affinity: bool,
    priority: i32,
}

fn cpu_mem(cpu: i64, mem: i64) -> Resources {
    let mut r = Resources::cpu_mem(cpu, mem);
    r.pods = 1;
    r
}

/// A random profile for a pending batch (or a unique pod).
fn pending_profile(rng: &mut Rng, n_groups: usize) -> PodProfile {
    let mut profile = PodProfile {
        requests: cpu_mem(rng.range(1, 40) * 100, rng.range(1, 32) * 512 * MIB),
        node_selector: Labels::new(),
        affinity: None,
        tolerations: Vec::new(),
        anti_affinity: false,
        priority: if rng.chance(15) { 100 } else { 0 },
    };
    match rng.below(100) {
        // Plain cpu work that may run on any untainted node.
        0..=34 => {}
        // amd64 images only.
        35..=49 => {
            profile.node_selector.insert(LABEL_ARCH, "amd64");
        }
        // A team's own groups.
        50..=59 => {
            profile.node_selector.insert(
                "team",
                format!("team-{}", rng.below(4.min(n_groups as u64))),
            );
        }
        // Two of the three zones.
        60..=67 => {
            let skip = rng.below(3) as usize;
            let zones: Vec<String> = ZONES
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, z)| (*z).to_owned())
                .collect();
            profile.affinity = Some(NodeAffinity {
                terms: vec![NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement {
                        key: LABEL_ZONE.into(),
                        operator: Operator::In,
                        values: zones,
                    }],
                }],
            });
        }
        // Memory-heavy work on memory nodes.
        68..=79 => {
            profile.requests = cpu_mem(rng.range(1, 8) * 500, rng.range(16, 100) * GIB);
            profile.node_selector.insert("workload", "memory");
        }
        // Spot-tolerant, cost-sensitive work.
        80..=87 => {
            profile.tolerations.push(Toleration {
                key: SPOT_TAINT.into(),
                operator: TolerationOperator::Equal,
                value: "true".into(),
                effect: Some(TaintEffect::NoSchedule),
            });
        }
        // GPU work.
        88..=96 => {
            profile.requests = cpu_mem(rng.range(2, 12) * 1000, rng.range(8, 48) * GIB);
            profile
                .requests
                .add_extended(NVIDIA_GPU, *rng.pick(&[1, 1, 1, 2, 4]));
            profile.node_selector.insert("workload", "gpu");
            profile.tolerations.push(Toleration {
                key: GPU_TAINT.into(),
                operator: TolerationOperator::Exists,
                value: String::new(),
                effect: None,
            });
        }
        // One per host.
        _ => profile.anti_affinity = true,
    }
    profile
}

fn make_pod(key: PodKey, app: &str, profile: &PodProfile, owner: Owner, created: Time) -> PodView {
    let mut pod = PodView::new(key, profile.requests.clone(), owner, created);
    pod.labels.insert("app", app);
    pod.node_selector = profile.node_selector.clone();
    pod.required_affinity = profile.affinity.clone();
    pod.tolerations = profile.tolerations.clone();
    pod.priority = profile.priority;
    if profile.anti_affinity {
        pod.anti_affinity.push(PodAntiAffinityTerm {
            selector: LabelSelector {
                match_labels: Labels::from([("app", app)]),
                match_expressions: Vec::new(),
            },
            namespaces: Vec::new(),
            topology_key: LABEL_HOSTNAME.into(),
        });
    }
    pod
}

/// A snapshot of `size`, deterministic in `seed`. Pending pods are unschedulable (the
/// scheduler gave up on them) and not bound.
pub fn generate(size: ClusterSize, seed: u64) -> ClusterSnapshot {
    let mut rng = Rng::new(seed ^ 0x6261_7463_682d_6173);
    let n_groups = size.groups.max(1);
    let groups: Vec<GroupPlan> = (0..n_groups).map(|gi| make_group(gi, &mut rng)).collect();
    let daemonsets = daemonsets();
    let mut snapshot = ClusterSnapshot {
        synced: true,
        revision: 1,
        daemonsets,
        ..ClusterSnapshot::default()
    };

    // Nodes per group: GPU groups are smaller, memory groups a bit smaller.
    let weight = |k: Kind| match k {
        Kind::Gpu => 1,
        Kind::Memory => 2,
        _ => 3,
    };
    let total_weight: usize = groups.iter().map(|g| weight(g.kind)).sum();
    let mut node_counts: Vec<usize> = groups
        .iter()
        .map(|g| size.nodes * weight(g.kind) / total_weight)
        .collect();
    let mut short = size.nodes.saturating_sub(node_counts.iter().sum::<usize>());
    let mut gi = 0;
    while short > 0 {
        node_counts[gi % n_groups] += 1;
        short -= 1;
        gi += 1;
    }
    // A handful of unmanaged system nodes (control-plane add-ons): not in any group.
    let system_nodes = (size.nodes / 200).min(node_counts.iter().copied().max().unwrap_or(0));
    if let Some(biggest) = (0..n_groups).max_by_key(|&g| node_counts[g]) {
        node_counts[biggest] -= system_nodes;
    }

    let mut instance_seq = 0u64;
    let mut node_of_group: Vec<Vec<usize>> = vec![Vec::new(); n_groups];
    for (gi, plan) in groups.iter().enumerate() {
        let mut instances = Vec::with_capacity(node_counts[gi]);
        for _ in 0..node_counts[gi] {
            instance_seq += 1;
            let instance = InstanceId::new(format!("i-{instance_seq:017x}"));
            let name = NodeName::new(format!(
                "ip-10-{}-{}-{}.ec2.internal",
                instance_seq >> 16,
                (instance_seq >> 8) & 255,
                instance_seq & 255
            ));
            let created =
                NOW.saturating_sub(Duration::from_secs(rng.range(1_200, 7 * 86_400) as u64));
            let mut node = NodeView::new(name, plan.spec.shape.allocatable.clone(), created);
            node.labels.extend(plan.labels.iter());
            node.taints = plan.spec.taints.clone();
            node.instance = Some(instance.clone());
            node.group = Some(plan.spec.id.clone());
            if rng.chance(1) {
                node.ready = false;
                node.ready_changed =
                    NOW.saturating_sub(Duration::from_secs(rng.range(60, 3_600) as u64));
            }
            instances.push(InstanceView {
                id: instance,
                zone: plan.spec.zones[0].clone(),
                state: InstanceState::InService,
                launched_at: created,
            });
            node_of_group[gi].push(snapshot.nodes.len());
            snapshot.nodes.push(node);
        }
        let mut spec = plan.spec.clone();
        let n = node_counts[gi] as u32;
        spec.max_size = n + 200 + n / 2;
        spec.min_size = (n / 20).min(2);
        snapshot.groups.push(NodeGroupState {
            spec,
            target: n,
            instances,
        });
    }
    for s in 0..system_nodes {
        let mut node = NodeView::new(
            NodeName::new(format!("system-{s}")),
            NodeShape::for_instance(
                InstanceTypeName::new("m5.xlarge"),
                "amd64",
                4,
                16_384,
                0,
                110,
            )
            .allocatable,
            NOW.saturating_sub(Duration::from_secs(30 * 86_400)),
        );
        node.labels.insert("workload", "system");
        snapshot.nodes.push(node);
    }

    // DaemonSet pods and running workload at varied utilisation.
    let mut pod_seq = 0u64;
    let mut next_key = |ns: &str, prefix: &str| {
        pod_seq += 1;
        PodKey::new(ns, format!("{prefix}-{pod_seq:x}"))
    };
    for ni in 0..snapshot.nodes.len() {
        let node_labels = snapshot.nodes[ni].labels.clone();
        let node_taints = snapshot.nodes[ni].taints.clone();
        let node_name = snapshot.nodes[ni].name.clone();
        let allocatable = snapshot.nodes[ni].allocatable.clone();
        let created = snapshot.nodes[ni].created;
        let mut used = Resources::zero();
        for ds in &snapshot.daemonsets {
            if !planner::daemonset_runs_on(ds, &node_labels, &node_taints) {
                continue;
            }
            let mut pod = PodView::new(
                next_key("kube-system", &ds.name),
                ds.requests.clone(),
                Owner::DaemonSet(ds.name.clone()),
                created,
            );
            pod.labels.insert("app", ds.name.as_str());
            pod.tolerations = ds.tolerations.clone();
            pod.node = Some(node_name.clone());
            pod.phase = PodPhase::Running;
            pod.started = Some(created);
            used.add(&pod.requests);
            snapshot.pods.push(pod);
        }
        if snapshot.nodes[ni].group.is_none() {
            continue;
        }
        // A fifth nearly idle, a twentieth empty (with an idle-since mark), the rest busy.
        let target = match rng.below(100) {
            0..=4 => {
                snapshot.nodes[ni].idle_since =
                    Some(NOW.saturating_sub(Duration::from_secs(rng.range(0, 1_800) as u64)));
                continue;
            }
            5..=24 => rng.range(5, 40),
            25..=39 => rng.range(40, 60),
            _ => rng.range(60, 95),
        };
        let gpus = allocatable.gpus();
        let cpu_goal = allocatable.cpu_millis * target / 100;
        let mut gpus_left = gpus * target / 100;
        if gpus > 0 && gpus_left == 0 && target >= 40 {
            gpus_left = 1;
        }
        let mut tries = 0;
        while used.cpu_millis < cpu_goal && tries < 40 {
            tries += 1;
            let mut requests = cpu_mem(rng.range(1, 16) * 250, rng.range(1, 16) * 512 * MIB);
            if gpus > 0 {
                if gpus_left == 0 {
                    break;
                }
                let g = rng.range(1, gpus_left);
                requests.add_extended(NVIDIA_GPU, g);
                gpus_left -= g;
            }
            if requests.fits_in_remaining(&allocatable, &used).is_err() {
                continue;
            }
            let (owner, ns) = match rng.below(100) {
                0..=64 => (Owner::Job(format!("train-{}", rng.below(5_000))), "batch"),
                65..=94 => (
                    Owner::replica_set(&format!("svc-{}", rng.below(500))),
                    "services",
                ),
                _ => (Owner::Bare, "adhoc"),
            };
            let started = NOW.saturating_sub(Duration::from_secs(rng.range(60, 6 * 3_600) as u64));
            let mut pod = PodView::new(next_key(ns, "run"), requests, owner, started);
            pod.labels.insert("app", format!("app-{}", rng.below(300)));
            pod.node = Some(node_name.clone());
            pod.phase = PodPhase::Running;
            pod.started = Some(started);
            if rng.chance(30) {
                pod.expected_duration = Some(Duration::from_secs(rng.range(600, 8 * 3_600) as u64));
            }
            if rng.chance(5) {
                pod.safe_to_evict = Some(if rng.chance(50) {
                    SafeToEvict::True
                } else {
                    SafeToEvict::False
                });
            }
            if gpus > 0 {
                pod.tolerations.push(Toleration {
                    key: GPU_TAINT.into(),
                    operator: TolerationOperator::Exists,
                    value: String::new(),
                    effect: None,
                });
            }
            used.add(&pod.requests);
            snapshot.pods.push(pod);
        }
    }

    // Pending pods: one in twenty unique (hand-submitted, its own requests), the rest
    // in gangs and in batches of identical pods (equivalence classes).
    let mut pending = 0usize;
    let mut batch = 0u64;
    while pending < size.pending_pods / 20 {
        batch += 1;
        let created = NOW.saturating_sub(Duration::from_secs(rng.range(5, 1_800) as u64));
        let profile = pending_profile(&mut rng, n_groups);
        let app = format!("solo-{batch}");
        let mut pod = make_pod(
            next_key("adhoc", "solo"),
            &app,
            &profile,
            Owner::Job(app.clone()),
            created,
        );
        pod.unschedulable = true;
        snapshot.pods.push(pod);
        pending += 1;
    }
    while pending < size.pending_pods {
        batch += 1;
        let left = size.pending_pods - pending;
        let created = NOW.saturating_sub(Duration::from_secs(rng.range(5, 1_800) as u64));
        match rng.below(100) {
            // A gang (distributed training): all or nothing.
            0..=4 => {
                let n = (rng.range(4, 32) as usize).min(left);
                let mut profile = pending_profile(&mut rng, n_groups);
                profile.anti_affinity = false;
                let app = format!("gang-{batch}");
                for _ in 0..n {
                    let key = next_key("training", "worker");
                    let mut pod = make_pod(key, &app, &profile, Owner::Job(app.clone()), created);
                    pod.gang = Some(GangMembership::new(
                        GangId::new(format!("training/{app}")),
                        n as u32,
                    ));
                    pod.unschedulable = true;
                    snapshot.pods.push(pod);
                }
                pending += n;
            }
            // A batch Job's pods, identical: one equivalence class.
            _ => {
                let n = (*rng.pick(&[10i64, 20, 50, 100, 200, 500, 1000, 2000]) as usize).min(left);
                let mut profile = pending_profile(&mut rng, n_groups);
                if profile.anti_affinity {
                    // One-per-host jobs are small in practice.
                    profile.requests = cpu_mem(rng.range(1, 4) * 500, rng.range(1, 8) * GIB);
                }
                let app = format!("job-{batch}");
                for _ in 0..n {
                    let key = next_key("batch", &app);
                    let mut pod = make_pod(key, &app, &profile, Owner::Job(app.clone()), created);
                    pod.unschedulable = true;
                    snapshot.pods.push(pod);
                }
                pending += n;
            }
        }
    }
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_snapshot_other_seed_other_snapshot() {
        let size = ClusterSize {
            nodes: 60,
            pending_pods: 300,
            groups: 10,
        };
        assert_eq!(generate(size, 7), generate(size, 7));
        assert_ne!(generate(size, 7), generate(size, 8));
    }

    #[test]
    fn sizes_are_as_asked_and_the_mix_is_there() {
        let size = ClusterSize {
            nodes: 400,
            pending_pods: 10_000,
            groups: 20,
        };
        let s = generate(size, 1);
        assert_eq!(s.nodes.len(), 400);
        assert_eq!(s.groups.len(), 20);
        assert_eq!(
            s.pods.iter().filter(|p| p.is_unbound_pending()).count(),
            10_000
        );
        assert!(s
            .groups
            .iter()
            .any(|g| g.spec.shape.allocatable.gpus() > 0 && !g.spec.taints.is_empty()));
        assert!(s
            .pods
            .iter()
            .any(|p| p.is_unbound_pending() && !p.anti_affinity.is_empty()));
        // Gangs are one batch in twenty: some seed has one.
        assert!((1..=5).any(|seed| generate(size, seed)
            .pods
            .iter()
            .any(|p| p.is_unbound_pending() && p.gang.is_some())));
        assert!(s
            .pods
            .iter()
            .any(|p| p.is_unbound_pending() && p.required_affinity.is_some()));
        assert!(s
            .pods
            .iter()
            .any(|p| p.is_unbound_pending() && !p.tolerations.is_empty()));
        assert!(s.pods.iter().any(|p| p.is_node_infrastructure()));
        // Every running pod fits its node.
        let mut used: std::collections::BTreeMap<&NodeName, Resources> =
            std::collections::BTreeMap::new();
        for p in s.pods.iter().filter(|p| p.occupies_node()) {
            used.entry(p.node.as_ref().expect("bound"))
                .or_default()
                .add(&p.requests);
        }
        for n in &s.nodes {
            if let Some(u) = used.get(&n.name) {
                assert!(
                    u.fits_in(&n.allocatable).is_ok(),
                    "{} overcommitted",
                    n.name
                );
            }
        }
    }
}
