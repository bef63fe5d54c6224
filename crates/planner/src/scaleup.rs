//! Scale-up: pending pods the scheduler could not place, minus those that fit on
//! existing or upcoming capacity (or on nodes we retired, which are taken back), are
//! packed first-fit-decreasing onto each group's node template; the expander chain
//! picks one option; repeat for what is left until nothing more can be helped.

use crate::classes::group_into_classes;
use crate::events::{NoScaleUpReason, PlannerEvent};
use crate::expander::{compile_priorities, CompiledPriorities, OptionSummary};
use crate::gang::GangLaunch;
use crate::placement::{NodeOrigin, PlacementSim, SimNode};
use crate::predicates::check_labels_and_taints;
use crate::template::{node_template, TemplateNode};
use crate::{Action, Planner, TargetReason};
use model::well_known::{LABEL_ACCELERATOR, TAINT_RETIRING};
use model::{ClusterSnapshot, NodeGroupId, NodeName, PodView, Resources, Time};
use model::resources::NVIDIA_GPU;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;


/// Per-pass indexes over a snapshot, shared by scale-up and scale-down.
pub(crate) struct ClusterView {
    /// Pod indices occupying each node (by node index).
    pub occupants: Vec<Vec<usize>>,
    /// Group index by id.
    pub group_index: BTreeMap<NodeGroupId, usize>,
    /// Nodes registered per group (not being terminated).
    pub registered: Vec<u32>,
    /// Target per group, counting requests not yet visible in the snapshot.
    pub effective_target: Vec<u32>,
    /// Node index by name.
    pub node_index: HashMap<NodeName, usize>,
    /// Nodes whose instance we are terminating.
    pub terminating_nodes: BTreeSet<usize>,
    /// The cluster's priority-expander table, compiled.
    pub cluster_priorities: Option<CompiledPriorities>,
}

impl ClusterView {
    pub(crate) fn new(planner: &mut Planner, now: Time, snapshot: &ClusterSnapshot) -> Self {
        let node_index: HashMap<NodeName, usize> = snapshot.nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        let mut occupants = vec![Vec::new(); snapshot.nodes.len()];
        for (pi, pod) in snapshot.pods.iter().enumerate() {
            if !pod.occupies_node() {
                continue;
            }
            if let Some(&ni) = pod.node.as_ref().and_then(|n| node_index.get(n)) {
                occupants[ni].push(pi);
            }
        }
        let group_index: BTreeMap<NodeGroupId, usize> = snapshot.groups.iter().enumerate().map(|(i, g)| (g.spec.id.clone(), i)).collect();
        let terminating_nodes: BTreeSet<usize> = snapshot
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.instance.as_ref().is_some_and(|i| planner.terminating.contains_key(i)))
            .map(|(i, _)| i)
            .collect();
        let mut registered = vec![0u32; snapshot.groups.len()];
        for (ni, node) in snapshot.nodes.iter().enumerate() {
            if terminating_nodes.contains(&ni) {
                continue;
            }
            if let Some(&gi) = node.group.as_ref().and_then(|g| group_index.get(g)) {
                registered[gi] += 1;
            }
        }
        let effective_target = snapshot
            .groups
            .iter()
            .map(|g| planner.requested_targets.get(&g.spec.id).map_or(g.target, |r| r.target))
            .collect();
        let cluster_priorities = match snapshot.expander_priorities.as_ref().map(compile_priorities) {
            Some(Ok(table)) => Some(table),
            Some(Err(message)) => {
                planner.emit(now, PlannerEvent::Warning { message: format!("priority expander ConfigMap ignored: {message}") });
                None
            }
            None => None,
        };
        Self { occupants, group_index, registered, effective_target, node_index, terminating_nodes, cluster_priorities }
    }

    /// Nodes the cloud still owes a group: target minus registered nodes.
    pub(crate) fn upcoming(&self, group: usize) -> u32 {
        self.effective_target[group].saturating_sub(self.registered[group])
    }
}

/// A unit of placement: one pod, or all pending pods of a gang.
fn placement_units(pods: &[PodView], candidates: &[usize]) -> Vec<Vec<usize>> {
    let mut gangs: BTreeMap<&model::GangId, Vec<usize>> = BTreeMap::new();
    let mut units = Vec::new();
    let mut gang_slot: BTreeMap<&model::GangId, usize> = BTreeMap::new();
    for &i in candidates {
        match &pods[i].gang {
            Some(g) => {
                if !gang_slot.contains_key(&g.gang) {
                    gang_slot.insert(&g.gang, units.len());
                    units.push(Vec::new());
                }
                gangs.entry(&g.gang).or_default().push(i);
            }
            None => units.push(vec![i]),
        }
    }
    for (gang, slot) in gang_slot {
        units[slot] = gangs.remove(gang).unwrap_or_default();
    }
    units
}

/// Places every pod of `unit` on `candidates` first-fit, or none of them.
fn place_unit_all_or_nothing(sim: &mut PlacementSim<'_>, unit: &[usize], candidates: &[usize]) -> bool {
    let mut placed = Vec::new();
    for &pod in unit {
        match sim.first_fit(pod, candidates.iter().copied()) {
            Some(node) => {
                sim.place(pod, node);
                placed.push((pod, node));
            }
            None => {
                for (p, n) in placed {
                    sim.unplace(p, n);
                }
                return false;
            }
        }
    }
    true
}

/// Taints that only say a node has not finished starting (see `scale_up`).
const STARTUP_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.cloudprovider.kubernetes.io/uninitialized"];

/// One group's answer to the remaining pods.
struct GroupOption {
    group: usize,
    new_nodes: u32,
    pods: Vec<usize>,
    waste: f64,
    gangs: BTreeSet<model::GangId>,
}

impl Planner {
    /// Pods that may trigger a scale-up, in the order they are served.
    fn scale_up_candidates(&self, snapshot: &ClusterSnapshot) -> Vec<usize> {
        let s = &self.settings;
        let mut out: Vec<usize> = snapshot
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.is_unbound_pending()
                    && p.unschedulable
                    && p.priority >= s.expendable_pods_priority_cutoff
                    && s.pod_namespace.as_ref().is_none_or(|ns| *ns == p.key.namespace)
            })
            .map(|(i, _)| i)
            .collect();
        let pods = &snapshot.pods;
        out.sort_by(|&a, &b| serving_order(&pods[a], &pods[b]));
        out
    }

    /// Templates per group (in the first zone whose pool is not backed off).
    fn templates(&self, now: Time, snapshot: &ClusterSnapshot) -> Vec<Option<TemplateNode>> {
        snapshot
            .groups
            .iter()
            .map(|g| {
                let zone = g.spec.zones.iter().find(|z| self.pools.backed_off(&g.spec.pool(z), now).is_none()).or(g.spec.zones.first())?;
                Some(node_template(&g.spec, zone, &snapshot.daemonsets))
            })
            .collect()
    }

    /// Runs the scale-up pass; returns whether any group was scaled up.
    pub(crate) fn scale_up(&mut self, now: Time, snapshot: &ClusterSnapshot, view: &ClusterView) -> bool {
        let candidates = self.scale_up_candidates(snapshot);
        let candidate_keys: BTreeSet<_> = candidates.iter().map(|&i| snapshot.pods[i].key.clone()).collect();
        self.reported_unhelpable.retain(|k, _| candidate_keys.contains(k));
        if candidates.is_empty() {
            return false;
        }
        let pods = &snapshot.pods;
        let templates = self.templates(now, snapshot);
        let mut sim = PlacementSim::new(pods);
        let mut node_slots = Vec::new();
        for (ni, node) in snapshot.nodes.iter().enumerate() {
            if view.terminating_nodes.contains(&ni) {
                continue;
            }
            // A node still booting will be ready soon: count it as capacity.
            let young = now.saturating_since(node.created) < self.settings.max_node_provision_time;
            let booting = !node.ready && young;
            // So are the taints a node starts with: the node lifecycle controller's
            // not-ready (until the kubelet reports Ready, and a few seconds after) and the
            // cloud provider's uninitialized. On a young node they mean "not yet": kept,
            // they made the pass buy a second node for pods the new one will take.
            let taints = if young {
                node.taints.iter().filter(|t| !STARTUP_TAINTS.contains(&t.key.as_str())).cloned().collect()
            } else {
                node.taints.clone()
            };
            let mut allocatable = node.allocatable.clone();
            let group = node.group.as_ref().and_then(|g| view.group_index.get(g)).copied();
            if node.labels.contains_key(LABEL_ACCELERATOR) && allocatable.gpus() == 0 {
                // The device plugin has not advertised the GPUs yet: they are coming.
                if let Some(t) = group.and_then(|gi| templates[gi].as_ref()) {
                    allocatable.set_extended(NVIDIA_GPU, t.allocatable.gpus());
                }
            }
            let mut used = Resources::zero();
            for &p in &view.occupants[ni] {
                used.add(&pods[p].requests);
            }
            node_slots.push(sim.add_node(SimNode {
                name: node.name.clone(),
                origin: NodeOrigin::Existing,
                group: node.group.clone(),
                labels: Arc::new(node.labels.clone()),
                taints: Arc::new(taints),
                allocatable,
                used,
                ready: node.ready || booting,
                cordoned: node.cordoned,
                residents: view.occupants[ni].clone(),
            }));
        }
        for (gi, g) in snapshot.groups.iter().enumerate() {
            let Some(t) = &templates[gi] else { continue };
            for k in 0..view.upcoming(gi) {
                node_slots.push(sim.add_node(template_sim_node(&g.spec.id, t, k, NodeOrigin::Upcoming)));
            }
        }

        // Pods a recent scale-up bought nodes for go first, onto those nodes: bin
        // packing is not monotone, so re-packing them together with newcomers could
        // come out one node short and buy again for the same pods.
        let upcoming_by_group: BTreeMap<NodeGroupId, Vec<usize>> = node_slots
            .iter()
            .filter(|&&n| sim.node(n).origin == NodeOrigin::Upcoming)
            .fold(BTreeMap::new(), |mut m, &n| {
                m.entry(sim.node(n).group.clone().expect("template nodes have a group")).or_insert_with(Vec::new).push(n);
                m
            });
        let existing: Vec<usize> = node_slots.iter().copied().filter(|&n| sim.node(n).origin == NodeOrigin::Existing).collect();
        let provision_time = self.settings.max_node_provision_time;
        self.nominated.retain(|key, (group, at)| {
            candidate_keys.contains(key) && now.saturating_since(*at) < provision_time && upcoming_by_group.contains_key(group)
        });
        let mut remaining: Vec<Vec<usize>> = Vec::new();
        let mut fresh = Vec::new();
        for unit in placement_units(pods, &candidates) {
            let nominated_to = self.nominated.get(&pods[unit[0]].key).map(|(g, _)| g.clone());
            match nominated_to {
                Some(group) => {
                    let mut targets = existing.clone();
                    targets.extend(upcoming_by_group.get(&group).into_iter().flatten().copied());
                    // Served by the nodes bought for it, even if first-fit would now
                    // pack it differently.
                    let _ = place_unit_all_or_nothing(&mut sim, &unit, &targets);
                }
                None => fresh.push(unit),
            }
        }
        for unit in fresh {
            if !place_unit_all_or_nothing(&mut sim, &unit, &node_slots) {
                remaining.push(unit);
            }
        }

        // Nodes we retired are taken back before anything new is bought.
        if !remaining.is_empty() {
            remaining = self.unretire_for(now, snapshot, view, &mut sim, remaining);
        }

        let mut scaled = false;
        let mut reasons: BTreeMap<usize, BTreeMap<NodeGroupId, NoScaleUpReason>> = BTreeMap::new();
        let mut new_nodes_this_pass = 0u32;
        let mut effective_target = view.effective_target.clone();
        let (mut cores_now, mut memory_gib_now, mut nodes_now) = cluster_totals(snapshot, &effective_target);
        let (_, cores_max) = crate::parse_min_max("cores-total", &self.settings.cores_total).unwrap_or((0, u64::MAX));
        let (_, memory_max) = crate::parse_min_max("memory-total", &self.settings.memory_total).unwrap_or((0, u64::MAX));
        while !remaining.is_empty() {
            let flat: Vec<usize> = remaining.iter().flatten().copied().collect();
            let classes = group_into_classes(pods, &flat);
            let mut options = Vec::new();
            for (gi, g) in snapshot.groups.iter().enumerate() {
                let spec = &g.spec;
                let reject = |reason: NoScaleUpReason, reasons: &mut BTreeMap<usize, BTreeMap<NodeGroupId, NoScaleUpReason>>| {
                    for &p in &flat {
                        reasons.entry(p).or_default().insert(spec.id.clone(), reason.clone());
                    }
                };
                let Some(template) = &templates[gi] else {
                    reject(NoScaleUpReason::LabelsDoNotMatch, &mut reasons);
                    continue;
                };
                if let Some(b) = spec.zones.iter().filter_map(|z| self.pools.backed_off(&spec.pool(z), now)).min_by_key(|b| b.until) {
                    if spec.zones.iter().all(|z| self.pools.backed_off(&spec.pool(z), now).is_some()) {
                        reject(NoScaleUpReason::PoolBackedOff { until: b.until, kind: b.kind }, &mut reasons);
                        continue;
                    }
                }
                if self.expander.uses_priority()
                    && (view.cluster_priorities.is_some() || self.settings.expander_priorities.is_some())
                    && self.expander.priority_of(&spec.id, view.cluster_priorities.as_ref()).is_none()
                {
                    reject(NoScaleUpReason::NoPriority, &mut reasons);
                    continue;
                }
                let room_in_group = spec.max_size.saturating_sub(effective_target[gi]);
                let per_node_cores = (spec.shape.capacity.cpu_millis / 1000).max(1) as u64;
                let per_node_gib = ((spec.shape.capacity.memory_bytes >> 30).max(1)) as u64;
                let mut limits = vec![
                    (room_in_group, NoScaleUpReason::GroupAtMax { max: spec.max_size }),
                    (self.settings.max_nodes_per_scaleup.saturating_sub(new_nodes_this_pass), NoScaleUpReason::LoopCapReached),
                    (
                        (cores_max.saturating_sub(cores_now) / per_node_cores).min(u64::from(u32::MAX)) as u32,
                        NoScaleUpReason::ClusterLimit { limit: format!("cores-total max {cores_max}") },
                    ),
                    (
                        (memory_max.saturating_sub(memory_gib_now) / per_node_gib).min(u64::from(u32::MAX)) as u32,
                        NoScaleUpReason::ClusterLimit { limit: format!("memory-total max {memory_max} GiB") },
                    ),
                ];
                if self.settings.max_nodes_total > 0 {
                    limits.push((
                        self.settings.max_nodes_total.saturating_sub(nodes_now),
                        NoScaleUpReason::ClusterLimit { limit: format!("max-nodes-total {}", self.settings.max_nodes_total) },
                    ));
                }
                let (headroom, limit_reason) = limits.iter().min_by_key(|(n, _)| *n).cloned().expect("limits");
                let option = pack_onto_template(pods, &classes, &spec.id, gi, template, headroom, &limit_reason, &mut reasons);
                if !option.pods.is_empty() {
                    options.push(option);
                }
            }
            if options.is_empty() {
                break;
            }
            let summaries: Vec<OptionSummary> = options
                .iter()
                .map(|o| {
                    let spec = &snapshot.groups[o.group].spec;
                    OptionSummary {
                        group: spec.id.clone(),
                        new_nodes: o.new_nodes,
                        pods: o.pods.len() as u32,
                        waste: o.waste,
                        price_per_hour: spec.price_per_hour,
                        region_rank: spec.region_rank,
                    }
                })
                .collect();
            let chosen = self.expander.choose(&summaries, view.cluster_priorities.as_ref());
            let option = &options[chosen];
            for o in &options {
                if o.group != option.group {
                    for &p in &o.pods {
                        if !option.pods.contains(&p) {
                            reasons.entry(p).or_default().insert(snapshot.groups[o.group].spec.id.clone(), NoScaleUpReason::NotChosen);
                        }
                    }
                }
            }
            let split = self.balance(now, snapshot, option.group, option.new_nodes, &effective_target, &templates);
            let helped: Vec<_> = option.pods.iter().map(|&p| pods[p].key.clone()).collect();
            for (gi, n) in split {
                let spec = &snapshot.groups[gi].spec;
                let from = effective_target[gi];
                let to = from + n;
                let id = self.next_id();
                self.actions.push_back(Action::SetTargetSize {
                    id,
                    group: spec.id.clone(),
                    from,
                    to,
                    reason: TargetReason::ScaleUp { pods: option.pods.len() as u32 },
                });
                self.requested_targets.insert(spec.id.clone(), crate::TargetRequest { target: to, at: now });
                self.emit(now, PlannerEvent::TriggeredScaleUp { group: spec.id.clone(), from, to, pods: helped.clone() });
                effective_target[gi] = to;
                new_nodes_this_pass += n;
                nodes_now += n;
                cores_now += u64::from(n) * (spec.shape.capacity.cpu_millis / 1000) as u64;
                memory_gib_now += u64::from(n) * (spec.shape.capacity.memory_bytes >> 30) as u64;
                if !option.gangs.is_empty() && gi == option.group {
                    let before: BTreeSet<model::InstanceId> = snapshot.groups[gi].instances.iter().map(|i| i.id.clone()).collect();
                    for gang in &option.gangs {
                        self.gangs.start(GangLaunch {
                            gang: gang.clone(),
                            group: spec.id.clone(),
                            nodes: n,
                            started: now,
                            instances_before: before.clone(),
                        });
                    }
                    self.wake(now + self.settings.gang_provision_timeout);
                }
            }
            scaled = true;
            self.last_scale_up = Some(now);
            for &p in &option.pods {
                self.nominated.insert(pods[p].key.clone(), (snapshot.groups[option.group].spec.id.clone(), now));
            }
            let placed: BTreeSet<usize> = option.pods.iter().copied().collect();
            for p in &placed {
                reasons.remove(p);
                self.reported_unhelpable.remove(&pods[*p].key);
            }
            remaining.retain(|unit| !unit.iter().any(|p| placed.contains(p)));
        }

        for unit in &remaining {
            for &p in unit {
                let pod_reasons = reasons.remove(&p).unwrap_or_default();
                let summary: String = pod_reasons.iter().map(|(g, r)| format!("{g}:{r};")).collect();
                let key = pods[p].key.clone();
                if self.reported_unhelpable.get(&key) != Some(&summary) {
                    self.reported_unhelpable.insert(key.clone(), summary);
                    self.emit(now, PlannerEvent::NotTriggerScaleUp { pod: key, reasons: pod_reasons });
                }
            }
        }
        scaled
    }

    /// Tries the remaining units on nodes we retired (without our taint); un-retires
    /// the nodes that take some. Returns what is still unplaced.
    fn unretire_for(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        view: &ClusterView,
        sim: &mut PlacementSim<'_>,
        remaining: Vec<Vec<usize>>,
    ) -> Vec<Vec<usize>> {
        let mut retired_slots = Vec::new();
        for (ni, node) in snapshot.nodes.iter().enumerate() {
            if node.retired.is_none() || !node.ready || view.terminating_nodes.contains(&ni) || self.draining_since.contains_key(&node.name) {
                continue;
            }
            let taints: Vec<_> = node.taints.iter().filter(|t| t.key != TAINT_RETIRING).cloned().collect();
            let mut used = Resources::zero();
            for &p in &view.occupants[ni] {
                used.add(&snapshot.pods[p].requests);
            }
            let slot = sim.add_node(SimNode {
                name: node.name.clone(),
                origin: NodeOrigin::Existing,
                group: node.group.clone(),
                labels: Arc::new(node.labels.clone()),
                taints: Arc::new(taints),
                allocatable: node.allocatable.clone(),
                used,
                ready: true,
                cordoned: node.cordoned,
                residents: view.occupants[ni].clone(),
            });
            retired_slots.push((slot, view.occupants[ni].len()));
        }
        if retired_slots.is_empty() {
            return remaining;
        }
        let slots: Vec<usize> = retired_slots.iter().map(|(s, _)| *s).collect();
        let mut still = Vec::new();
        for unit in remaining {
            if !place_unit_all_or_nothing(sim, &unit, &slots) {
                still.push(unit);
            }
        }
        for (slot, before) in retired_slots {
            let node = sim.node(slot);
            let taken = node.residents.len() - before;
            if taken > 0 {
                let name = node.name.clone();
                let id = self.next_id();
                self.pending_removals.remove(&name);
                self.actions.push_back(Action::UnretireNode { id, node: name.clone() });
                self.emit(now, PlannerEvent::NodeUnretired { node: name, pods: taken as u32 });
            }
        }
        still
    }

    /// Splits `new_nodes` of group `chosen` across similar groups when balancing is on.
    fn balance(
        &self,
        now: Time,
        snapshot: &ClusterSnapshot,
        chosen: usize,
        new_nodes: u32,
        effective_target: &[u32],
        templates: &[Option<TemplateNode>],
    ) -> Vec<(usize, u32)> {
        if !self.settings.balance_similar_node_groups {
            return vec![(chosen, new_nodes)];
        }
        let base = &snapshot.groups[chosen].spec;
        let similar: Vec<usize> = snapshot
            .groups
            .iter()
            .enumerate()
            .filter(|(gi, g)| {
                let s = &g.spec;
                s.shape.allocatable == base.shape.allocatable
                    && s.taints == base.taints
                    && s.labels == base.labels
                    && s.purchase == base.purchase
                    && s.region == base.region
                    && templates[*gi].is_some()
                    && s.zones.iter().any(|z| self.pools.backed_off(&s.pool(z), now).is_none())
            })
            .map(|(gi, _)| gi)
            .collect();
        let mut targets: BTreeMap<usize, u32> = similar.iter().map(|&gi| (gi, effective_target[gi])).collect();
        let mut added: BTreeMap<usize, u32> = BTreeMap::new();
        for _ in 0..new_nodes {
            // Give the next node to the smallest group that still has room.
            let Some((&gi, _)) = targets
                .iter()
                .filter(|(gi, t)| **t < snapshot.groups[**gi].spec.max_size)
                .min_by_key(|(gi, t)| (**t, snapshot.groups[**gi].spec.id.clone()))
            else {
                break;
            };
            *targets.get_mut(&gi).expect("present") += 1;
            *added.entry(gi).or_default() += 1;
        }
        added.into_iter().collect()
    }
}

/// The order in which pending pods are served, everywhere: higher priority first,
/// then larger first (first-fit-decreasing by gpu, cpu, memory), then older first.
pub(crate) fn serving_order(a: &PodView, b: &PodView) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then(b.requests.gpus().cmp(&a.requests.gpus()))
        .then(b.requests.cpu_millis.cmp(&a.requests.cpu_millis))
        .then(b.requests.memory_bytes.cmp(&a.requests.memory_bytes))
        .then(a.created.cmp(&b.created))
        .then(a.key.cmp(&b.key))
}

/// Totals the cluster would have at the given targets: (cores, GiB, nodes).
fn cluster_totals(snapshot: &ClusterSnapshot, targets: &[u32]) -> (u64, u64, u32) {
    let (mut cores, mut gib, mut nodes) = (0u64, 0u64, 0u32);
    for (gi, g) in snapshot.groups.iter().enumerate() {
        cores += u64::from(targets[gi]) * (g.spec.shape.capacity.cpu_millis / 1000) as u64;
        gib += u64::from(targets[gi]) * (g.spec.shape.capacity.memory_bytes >> 30) as u64;
        nodes += targets[gi];
    }
    for n in snapshot.nodes.iter().filter(|n| n.group.is_none()) {
        cores += (n.allocatable.cpu_millis / 1000).max(0) as u64;
        gib += (n.allocatable.memory_bytes >> 30).max(0) as u64;
        nodes += 1;
    }
    (cores, gib, nodes)
}

pub(crate) fn template_sim_node(group: &NodeGroupId, t: &TemplateNode, k: u32, origin: NodeOrigin) -> SimNode {
    let label = if origin == NodeOrigin::Upcoming { "upcoming" } else { "new" };
    SimNode {
        name: NodeName::new(format!("{group}-{label}-{k}")),
        origin,
        group: Some(group.clone()),
        labels: t.labels.clone(),
        taints: t.taints.clone(),
        allocatable: t.allocatable.clone(),
        used: Resources::zero(),
        ready: true,
        cordoned: false,
        residents: Vec::new(),
    }
}

/// First-fit-decreasing of the remaining pods onto new nodes of one group.
#[allow(clippy::too_many_arguments)]
fn pack_onto_template(
    pods: &[PodView],
    classes: &[crate::classes::PodClass],
    group: &NodeGroupId,
    group_index: usize,
    template: &TemplateNode,
    headroom: u32,
    limit_reason: &NoScaleUpReason,
    reasons: &mut BTreeMap<usize, BTreeMap<NodeGroupId, NoScaleUpReason>>,
) -> GroupOption {
    // Same order as placement on existing and upcoming capacity: a later pass must
    // find room on the nodes bought here for exactly the pods they were bought for.
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by(|&a, &b| serving_order(&pods[classes[a].representative()], &pods[classes[b].representative()]).then(a.cmp(&b)));
    let mut sim = PlacementSim::new(pods);
    let mut opened: Vec<usize> = Vec::new();
    let mut placed = Vec::new();
    let mut gangs = BTreeSet::new();
    let mut reject = |members: &[usize], reason: NoScaleUpReason| {
        for &p in members {
            reasons.entry(p).or_default().insert(group.clone(), reason.clone());
        }
    };
    for c in order {
        let class = &classes[c];
        let rep = &pods[class.representative()];
        if let Err(unfit) = check_labels_and_taints(rep, &template.labels, &template.taints) {
            let reason = match unfit {
                crate::predicates::Unfit::TaintNotTolerated { taint } => NoScaleUpReason::TaintNotTolerated { taint },
                _ => NoScaleUpReason::LabelsDoNotMatch,
            };
            reject(&class.members, reason);
            continue;
        }
        if let Err(short) = rep.requests.fits_in(&template.allocatable) {
            reject(&class.members, NoScaleUpReason::ExceedsNodeShape { shortfall: short.to_string() });
            continue;
        }
        let is_gang = rep.gang.is_some();
        let mut placed_here = Vec::new();
        let mut failed = false;
        for &pod in &class.members {
            let node = match sim.first_fit(pod, opened.iter().copied()) {
                Some(n) => n,
                None if (opened.len() as u32) < headroom => {
                    let n = sim.add_node(template_sim_node(group, template, opened.len() as u32, NodeOrigin::Template));
                    opened.push(n);
                    if sim.can_place(pod, n).is_err() {
                        // Anti-affinity with itself on an empty node cannot happen, but stay safe.
                        failed = true;
                        break;
                    }
                    n
                }
                None => {
                    failed = true;
                    if !is_gang {
                        reject(&[pod], limit_reason.clone());
                        continue;
                    }
                    break;
                }
            };
            sim.place(pod, node);
            placed_here.push((pod, node));
        }
        if is_gang && failed {
            for &(p, n) in &placed_here {
                sim.unplace(p, n);
            }
            reject(&class.members, NoScaleUpReason::GangDoesNotFit { needed_pods: class.members.len() as u32 });
            continue;
        }
        if is_gang {
            gangs.insert(rep.gang.as_ref().expect("gang").gang.clone());
        }
        placed.extend(placed_here.iter().map(|(p, _)| *p));
    }
    // Nodes opened for a gang that was then rolled back stay empty: drop them.
    let used_nodes: Vec<&SimNode> = opened.iter().map(|&n| sim.node(n)).filter(|n| !n.residents.is_empty()).collect();
    let (mut alloc_cpu, mut alloc_mem, mut used_cpu, mut used_mem) = (0i64, 0i64, 0i64, 0i64);
    for n in &used_nodes {
        alloc_cpu += n.allocatable.cpu_millis;
        alloc_mem += n.allocatable.memory_bytes;
        used_cpu += n.used.cpu_millis;
        used_mem += n.used.memory_bytes;
    }
    let frac = |used: i64, alloc: i64| if alloc > 0 { 1.0 - used as f64 / alloc as f64 } else { 0.0 };
    GroupOption {
        group: group_index,
        new_nodes: used_nodes.len() as u32,
        pods: placed,
        waste: frac(used_cpu, alloc_cpu) + frac(used_mem, alloc_mem),
        gangs,
    }
}
