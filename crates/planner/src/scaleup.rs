//! Scale-up: pending pods the scheduler could not place, minus those that fit on
//! existing or upcoming capacity (or on nodes we retired, which are taken back), are
//! packed first-fit-decreasing onto each group's node template; the expander chain
//! picks one option; repeat for what is left until nothing more can be helped.

use crate::classes::group_into_classes;
use crate::events::{GroupReasons, NoScaleUpReason, PlannerEvent};
use crate::expander::{compile_priorities, CompiledPriorities, OptionSummary};
use crate::fit::{self, CapacityIndex, FreeTree, Targets};
use crate::gang::GangLaunch;
use crate::hash::{FxHashMap, FxHashSet};
use crate::placement::{NodeOrigin, PlacementSim, SimNode};
use crate::predicates::{check_anti_affinity, check_labels_and_taints};
use crate::template::{node_template, TemplateNode};
use crate::{Action, Planner, TargetReason};
use model::resources::NVIDIA_GPU;
use model::well_known::{LABEL_ACCELERATOR, TAINT_RETIRING};
use model::{ClusterSnapshot, NodeGroupId, NodeName, PodKey, PodView, Resources, Time};
use std::collections::{BTreeMap, BTreeSet};
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
    pub node_index: FxHashMap<NodeName, usize>,
    /// Nodes whose instance we are terminating.
    pub terminating_nodes: BTreeSet<usize>,
    /// The cluster's priority-expander table, compiled.
    pub cluster_priorities: Option<CompiledPriorities>,
}

impl ClusterView {
    pub(crate) fn new(planner: &mut Planner, now: Time, snapshot: &ClusterSnapshot) -> Self {
        let node_index: FxHashMap<NodeName, usize> = snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut occupants = vec![Vec::new(); snapshot.nodes.len()];
        for (pi, pod) in snapshot.pods.iter().enumerate() {
            if !pod.occupies_node() {
                continue;
            }
            if let Some(&ni) = pod.node.as_ref().and_then(|n| node_index.get(n)) {
                occupants[ni].push(pi);
            }
        }
        let group_index: BTreeMap<NodeGroupId, usize> = snapshot
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.spec.id.clone(), i))
            .collect();
        let terminating_nodes: BTreeSet<usize> = snapshot
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.instance
                    .as_ref()
                    .is_some_and(|i| planner.terminating.contains_key(i))
            })
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
            .map(|g| {
                planner
                    .requested_targets
                    .get(&g.spec.id)
                    .map_or(g.target, |r| r.target)
            })
            .collect();
        let cluster_priorities = match snapshot
            .expander_priorities
            .as_ref()
            .map(compile_priorities)
        {
            Some(Ok(table)) => Some(table),
            Some(Err(message)) => {
                planner.emit(
                    now,
                    PlannerEvent::Warning {
                        message: format!("priority expander ConfigMap ignored: {message}"),
                    },
                );
                None
            }
            None => None,
        };
        Self {
            occupants,
            group_index,
            registered,
            effective_target,
            node_index,
            terminating_nodes,
            cluster_priorities,
        }
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

/// Places every pod of `unit` first-fit on the indexed nodes among `targets`, or none of them.
fn place_unit_indexed(
    sim: &mut PlacementSim<'_>,
    index: &mut CapacityIndex,
    class_of: &[usize],
    unit: &[usize],
    targets: Targets<'_>,
) -> bool {
    let mut placed = Vec::new();
    for &pod in unit {
        match index.first_fit(sim, pod, class_of[pod], targets) {
            Some(node) => {
                sim.place(pod, node);
                index.refresh(sim, node);
                placed.push((pod, node));
            }
            None => {
                for (p, n) in placed {
                    sim.unplace(p, n);
                    index.refresh(sim, n);
                }
                return false;
            }
        }
    }
    true
}

/// Taints that only say a node has not finished starting (see `scale_up`).
pub(crate) const STARTUP_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.cloudprovider.kubernetes.io/uninitialized",
];

/// One group's answer to the remaining pods.
struct GroupOption {
    group: usize,
    new_nodes: u32,
    pods: Vec<usize>,
    waste: f64,
    gangs: BTreeSet<model::GangId>,
}

/// How a group fared in one round, for the reasons of pods no group could take.
enum GroupRound {
    /// Every pod: the group cannot be scaled up at all.
    Rejected(NoScaleUpReason),
    /// Packed per class; a class that passed the label, taint and shape checks and
    /// still found no room hit this limit (or, for a gang, did not fit whole).
    Packed { limit_reason: NoScaleUpReason },
}

/// The round in which no group could take anything: pods still live per class, the
/// live classes in serving order, and how each group fared.
type FinalRound = (Vec<Vec<usize>>, Vec<usize>, Vec<GroupRound>);

/// Reasons shared by pods (the map, and its text to tell whether they changed).
type SharedReasons = (GroupReasons, Arc<str>);

/// Per (class, group): may the class's pods go on the group's template at all (labels,
/// taints, shape)? Templates do not change during a pass, so each is checked once.
struct TemplateVerdicts {
    /// Group-major (`group * n_classes + class`): a group's packing reads its row in order.
    n_classes: usize,
    /// 0: not checked yet; 1: yes; k + 2: no, for `misses[k]`. Equal misses share one
    /// `k`, so equal verdicts are equal numbers.
    verdict: Vec<u32>,
    misses: Vec<NoScaleUpReason>,
    miss_ids: FxHashMap<NoScaleUpReason, u32>,
}

impl TemplateVerdicts {
    fn new(n_classes: usize, n_groups: usize) -> Self {
        Self {
            n_classes,
            verdict: vec![0; n_classes * n_groups],
            misses: Vec::new(),
            miss_ids: FxHashMap::default(),
        }
    }

    fn check(
        &mut self,
        class: usize,
        group: usize,
        rep: &PodView,
        template: &TemplateNode,
    ) -> bool {
        let at = group * self.n_classes + class;
        if self.verdict[at] == 0 {
            let miss = match check_labels_and_taints(rep, &template.labels, &template.taints) {
                Err(crate::predicates::Unfit::TaintNotTolerated { taint }) => {
                    Some(NoScaleUpReason::TaintNotTolerated { taint })
                }
                Err(_) => Some(NoScaleUpReason::LabelsDoNotMatch),
                Ok(()) => rep
                    .requests
                    .fits_in(&template.allocatable)
                    .err()
                    .map(|short| NoScaleUpReason::ExceedsNodeShape {
                        shortfall: short.to_string(),
                    }),
            };
            self.verdict[at] = match miss {
                None => 1,
                Some(miss) => {
                    let misses = &mut self.misses;
                    *self.miss_ids.entry(miss).or_insert_with_key(|miss| {
                        misses.push(miss.clone());
                        misses.len() as u32 + 1
                    })
                }
            };
        }
        self.verdict[at] == 1
    }

    /// The verdict as a number (see `verdict`).
    fn code(&self, class: usize, group: usize) -> u32 {
        self.verdict[group * self.n_classes + class]
    }

    /// Why the class may not go on the group's template, if it was checked and may not.
    fn miss(&self, class: usize, group: usize) -> Option<&NoScaleUpReason> {
        let v = self.code(class, group);
        (v >= 2).then(|| &self.misses[v as usize - 2])
    }
}

impl Planner {
    /// Pods that may trigger a scale-up, in the order they are served.
    fn scale_up_candidates(&mut self, now: Time, snapshot: &ClusterSnapshot) -> Vec<usize> {
        let incomplete = self.incomplete_gangs(now, snapshot);
        let s = &self.settings;
        let out: Vec<usize> = snapshot
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.is_unbound_pending()
                    && p.unschedulable
                    && p.priority >= s.expendable_pods_priority_cutoff
                    && s.pod_namespace
                        .as_ref()
                        .is_none_or(|ns| *ns == p.key.namespace)
                    && p.gang.as_ref().is_none_or(|g| {
                        !incomplete.contains(&g.gang) && !self.requests.gang_failed(&g.gang)
                    })
            })
            .map(|(i, _)| i)
            .collect();
        let pods = &snapshot.pods;
        // `serving_order`, with its numeric part read once per pod rather than once per
        // comparison (`gpus()` is a map lookup): the same order.
        let mut keyed: Vec<(ServingKey, usize)> =
            out.iter().map(|&i| (serving_key(&pods[i]), i)).collect();
        keyed.sort_by(|(ka, a), (kb, b)| ka.cmp(kb).then_with(|| pods[*a].key.cmp(&pods[*b].key)));
        keyed.into_iter().map(|(_, i)| i).collect()
    }

    /// Templates per group (in the first zone whose pool is not backed off).
    fn templates(&self, now: Time, snapshot: &ClusterSnapshot) -> Vec<Option<TemplateNode>> {
        snapshot
            .groups
            .iter()
            .map(|g| {
                let zone = g
                    .spec
                    .zones
                    .iter()
                    .find(|z| self.pools.backed_off(&g.spec.pool(z), now).is_none())
                    .or(g.spec.zones.first())?;
                Some(node_template(&g.spec, zone, &snapshot.daemonsets))
            })
            .collect()
    }

    /// Runs the scale-up pass; returns whether any group was scaled up.
    pub(crate) fn scale_up(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        view: &ClusterView,
    ) -> bool {
        let candidates = self.scale_up_candidates(now, snapshot);
        let candidate_keys: FxHashSet<&PodKey> =
            if self.reported_unhelpable.is_empty() && self.nominated.is_empty() {
                FxHashSet::default()
            } else {
                candidates.iter().map(|&i| &snapshot.pods[i].key).collect()
            };
        self.reported_unhelpable
            .retain(|k, _| candidate_keys.contains(k));
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
                node.taints
                    .iter()
                    .filter(|t| !STARTUP_TAINTS.contains(&t.key.as_str()))
                    .cloned()
                    .collect()
            } else {
                node.taints.clone()
            };
            let mut allocatable = node.allocatable.clone();
            let group = node
                .group
                .as_ref()
                .and_then(|g| view.group_index.get(g))
                .copied();
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
                node_slots.push(sim.add_node(template_sim_node(
                    &g.spec.id,
                    t,
                    k,
                    NodeOrigin::Upcoming,
                )));
            }
        }

        // Pods a recent scale-up bought nodes for go first, onto those nodes: bin
        // packing is not monotone, so re-packing them together with newcomers could
        // come out one node short and buy again for the same pods.
        let upcoming_by_group: BTreeMap<NodeGroupId, Vec<usize>> = node_slots
            .iter()
            .filter(|&&n| sim.node(n).origin == NodeOrigin::Upcoming)
            .fold(BTreeMap::new(), |mut m, &n| {
                m.entry(
                    sim.node(n)
                        .group
                        .clone()
                        .expect("template nodes have a group"),
                )
                .or_insert_with(Vec::new)
                .push(n);
                m
            });
        let provision_time = self.settings.max_node_provision_time;
        self.nominated.retain(|key, (group, at)| {
            candidate_keys.contains(key)
                && now.saturating_since(*at) < provision_time
                && upcoming_by_group.contains_key(group)
        });

        // Equivalence classes, once per pass: label/taint verdicts, first-fit cursors
        // and the packing onto templates all work per class.
        let classes = group_into_classes(pods, &candidates);
        let mut class_of = vec![usize::MAX; pods.len()];
        for (c, class) in classes.iter().enumerate() {
            for &p in &class.members {
                class_of[p] = c;
            }
        }
        let reps: Vec<usize> = classes.iter().map(|c| c.representative()).collect();
        let mut index = CapacityIndex::new(&sim, &node_slots, &reps);
        let mut remaining: Vec<Vec<usize>> = Vec::new();
        let mut fresh = Vec::new();
        for unit in placement_units(pods, &candidates) {
            let nominated_to = self
                .nominated
                .get(&pods[unit[0]].key)
                .map(|(g, _)| g.clone());
            match nominated_to {
                Some(group) => {
                    // Served by the nodes bought for it, even if first-fit would now
                    // pack it differently.
                    let _ = place_unit_indexed(
                        &mut sim,
                        &mut index,
                        &class_of,
                        &unit,
                        Targets::ExistingAnd(&group),
                    );
                }
                None => fresh.push(unit),
            }
        }
        for unit in fresh {
            if !place_unit_indexed(&mut sim, &mut index, &class_of, &unit, Targets::All) {
                remaining.push(unit);
            }
        }
        drop(index);

        // Nodes we retired are taken back before anything new is bought.
        if !remaining.is_empty() {
            remaining =
                self.unretire_for(now, snapshot, view, &mut sim, remaining, &class_of, &reps);
        }

        let mut scaled = false;
        let mut new_nodes_this_pass = 0u32;
        let mut effective_target = view.effective_target.clone();
        let (mut cores_now, mut memory_gib_now, mut nodes_now) =
            cluster_totals(snapshot, &effective_target);
        let (_, cores_max) = crate::parse_min_max("cores-total", &self.settings.cores_total)
            .unwrap_or((0, u64::MAX));
        let (_, memory_max) = crate::parse_min_max("memory-total", &self.settings.memory_total)
            .unwrap_or((0, u64::MAX));
        // Pods still to serve, in serving order (a gang's pods together, where its first
        // pod stands); `done` marks those a chosen option took.
        let flat: Vec<usize> = remaining.iter().flatten().copied().collect();
        drop(remaining);
        let mut done = vec![false; pods.len()];
        let mut verdicts = TemplateVerdicts::new(classes.len(), snapshot.groups.len());
        // A property of the snapshot's pods, not of a round: scanned once per pass.
        let anti_affinity_in_play = sim.anti_affinity_in_play();
        // Each round serves every remaining pod once per group, so a pod's reasons are
        // those of the last round, the one in which no group could take anything:
        // they are built only then (per class: in that round a class fares alike).
        let mut final_round: Option<FinalRound> = None;
        loop {
            let mut live: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
            let mut live_classes = Vec::new();
            for &p in flat.iter().filter(|&&p| !done[p]) {
                let c = class_of[p];
                if live[c].is_empty() {
                    live_classes.push(c);
                }
                live[c].push(p);
            }
            if live_classes.is_empty() {
                break;
            }
            // Same order as placement on existing and upcoming capacity: a later pass must
            // find room on the nodes bought here for exactly the pods they were bought for.
            live_classes.sort_by(|&a, &b| serving_order(&pods[live[a][0]], &pods[live[b][0]]));
            let n_live: usize = live_classes.iter().map(|&c| live[c].len()).sum();
            let live_info: Vec<LiveClass<'_>> = live_classes
                .iter()
                .map(|&c| {
                    let rep = &pods[live[c][0]];
                    LiveClass {
                        class: c,
                        rep: reps[c],
                        members: &live[c],
                        requests: &rep.requests,
                        want: fit::key_of(&rep.requests),
                        has_terms: !rep.anti_affinity.is_empty(),
                        gang: rep.gang.as_ref().map(|g| &g.gang),
                    }
                })
                .collect();
            let mut options = Vec::new();
            let mut rounds = Vec::with_capacity(snapshot.groups.len());
            for (gi, g) in snapshot.groups.iter().enumerate() {
                let spec = &g.spec;
                let Some(template) = &templates[gi] else {
                    rounds.push(GroupRound::Rejected(NoScaleUpReason::LabelsDoNotMatch));
                    continue;
                };
                if let Some(b) = spec
                    .zones
                    .iter()
                    .filter_map(|z| self.pools.backed_off(&spec.pool(z), now))
                    .min_by_key(|b| b.until)
                {
                    if spec
                        .zones
                        .iter()
                        .all(|z| self.pools.backed_off(&spec.pool(z), now).is_some())
                    {
                        rounds.push(GroupRound::Rejected(NoScaleUpReason::PoolBackedOff {
                            until: b.until,
                            kind: b.kind,
                        }));
                        continue;
                    }
                }
                if self.expander.uses_priority()
                    && (view.cluster_priorities.is_some()
                        || self.settings.expander_priorities.is_some())
                    && self
                        .expander
                        .priority_of(&spec.id, view.cluster_priorities.as_ref())
                        .is_none()
                {
                    rounds.push(GroupRound::Rejected(NoScaleUpReason::NoPriority));
                    continue;
                }
                if let Some(gang) = self.gangs.in_flight(&spec.id) {
                    rounds.push(GroupRound::Rejected(NoScaleUpReason::GangLaunchInFlight {
                        gang: gang.to_string(),
                    }));
                    continue;
                }
                // Instances being removed hold their place under max until their
                // TerminateInstance lowers the desired capacity.
                let room_in_group = spec
                    .max_size
                    .saturating_sub(effective_target[gi] + self.decrements_to_come(&spec.id));
                let per_node_cores = (spec.shape.capacity.cpu_millis / 1000).max(1) as u64;
                let per_node_gib = ((spec.shape.capacity.memory_bytes >> 30).max(1)) as u64;
                let mut limits = vec![
                    (
                        room_in_group,
                        NoScaleUpReason::GroupAtMax { max: spec.max_size },
                    ),
                    (
                        self.settings
                            .max_nodes_per_scaleup
                            .saturating_sub(new_nodes_this_pass),
                        NoScaleUpReason::LoopCapReached,
                    ),
                    (
                        (cores_max.saturating_sub(cores_now) / per_node_cores)
                            .min(u64::from(u32::MAX)) as u32,
                        NoScaleUpReason::ClusterLimit {
                            limit: format!("cores-total max {cores_max}"),
                        },
                    ),
                    (
                        (memory_max.saturating_sub(memory_gib_now) / per_node_gib)
                            .min(u64::from(u32::MAX)) as u32,
                        NoScaleUpReason::ClusterLimit {
                            limit: format!("memory-total max {memory_max} GiB"),
                        },
                    ),
                ];
                if self.settings.max_nodes_total > 0 {
                    limits.push((
                        self.settings.max_nodes_total.saturating_sub(nodes_now),
                        NoScaleUpReason::ClusterLimit {
                            limit: format!("max-nodes-total {}", self.settings.max_nodes_total),
                        },
                    ));
                }
                let (headroom, limit_reason) = limits
                    .iter()
                    .min_by_key(|(n, _)| *n)
                    .cloned()
                    .expect("limits");
                let option = pack_onto_template(
                    pods,
                    anti_affinity_in_play,
                    &live_info,
                    n_live,
                    gi,
                    template,
                    headroom,
                    &mut verdicts,
                );
                let live_instances = g
                    .instances
                    .iter()
                    .filter(|i| i.state != model::InstanceState::Terminating)
                    .count() as u32;
                if !option.gangs.is_empty() && effective_target[gi] > live_instances {
                    // Instances of an earlier launch are still to come: they could not
                    // be told from the gang's. The gang waits (seconds) for them.
                    rounds.push(GroupRound::Rejected(NoScaleUpReason::GroupStillLaunching));
                    self.wake(now + std::time::Duration::from_secs(5));
                    continue;
                }
                if !option.pods.is_empty() {
                    options.push(option);
                }
                rounds.push(GroupRound::Packed { limit_reason });
            }
            if options.is_empty() {
                final_round = Some((live, live_classes, rounds));
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
            let chosen = self
                .expander
                .choose(&summaries, view.cluster_priorities.as_ref());
            let option = &options[chosen];
            let split = self.balance(
                now,
                snapshot,
                option.group,
                option.new_nodes,
                &effective_target,
                &templates,
            );
            let helped: Vec<_> = option.pods.iter().map(|&p| pods[p].key.clone()).collect();
            for (gi, n) in split {
                let spec = &snapshot.groups[gi].spec;
                let from = effective_target[gi];
                let to = from + n;
                self.push_target_size(
                    &spec.id,
                    from,
                    to,
                    TargetReason::ScaleUp {
                        pods: option.pods.len() as u32,
                    },
                );
                self.requested_targets.insert(
                    spec.id.clone(),
                    crate::TargetRequest {
                        target: to,
                        at: now,
                    },
                );
                self.emit(
                    now,
                    PlannerEvent::TriggeredScaleUp {
                        group: spec.id.clone(),
                        from,
                        to,
                        pods: helped.clone(),
                    },
                );
                effective_target[gi] = to;
                new_nodes_this_pass += n;
                nodes_now += n;
                cores_now += u64::from(n) * (spec.shape.capacity.cpu_millis / 1000) as u64;
                memory_gib_now += u64::from(n) * (spec.shape.capacity.memory_bytes >> 30) as u64;
                if !option.gangs.is_empty() && gi == option.group {
                    let before: BTreeSet<model::InstanceId> = snapshot.groups[gi]
                        .instances
                        .iter()
                        .map(|i| i.id.clone())
                        .collect();
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
                self.nominated.insert(
                    pods[p].key.clone(),
                    (snapshot.groups[option.group].spec.id.clone(), now),
                );
            }
            for &p in &option.pods {
                done[p] = true;
                self.reported_unhelpable.remove(&pods[p].key);
            }
        }

        if let Some((live, live_classes, rounds)) = final_round {
            // One set of reasons per class, shared by its pods, and by every class whose
            // verdicts and gang size are the same (the reasons are a function of those).
            let mut per_class: Vec<Option<SharedReasons>> = vec![None; classes.len()];
            let mut by_verdicts: FxHashMap<(Vec<u32>, Option<usize>), SharedReasons> =
                FxHashMap::default();
            for &c in &live_classes {
                let rep = &pods[live[c][0]];
                let verdict_row: Vec<u32> =
                    (0..rounds.len()).map(|gi| verdicts.code(c, gi)).collect();
                let key = (verdict_row, rep.gang.as_ref().map(|_| live[c].len()));
                if let Some(shared) = by_verdicts.get(&key) {
                    per_class[c] = Some(shared.clone());
                    continue;
                }
                let mut pod_reasons = BTreeMap::new();
                for (gi, round) in rounds.iter().enumerate() {
                    let reason = match round {
                        GroupRound::Rejected(reason) => reason.clone(),
                        GroupRound::Packed { limit_reason } => match verdicts.miss(c, gi) {
                            Some(miss) => miss.clone(),
                            None if rep.gang.is_some() => NoScaleUpReason::GangDoesNotFit {
                                needed_pods: live[c].len() as u32,
                            },
                            None => limit_reason.clone(),
                        },
                    };
                    pod_reasons.insert(snapshot.groups[gi].spec.id.clone(), reason);
                }
                let summary: String = pod_reasons
                    .iter()
                    .map(|(g, r)| format!("{g}:{r};"))
                    .collect();
                let shared = (GroupReasons::from(pod_reasons), Arc::<str>::from(summary));
                per_class[c] = Some(shared.clone());
                by_verdicts.insert(key, shared);
            }
            for &p in flat.iter().filter(|&&p| !done[p]) {
                let (pod_reasons, summary) = per_class[class_of[p]].as_ref().expect("live class");
                let key = &pods[p].key;
                if self.reported_unhelpable.get(key) != Some(summary) {
                    self.reported_unhelpable
                        .insert(key.clone(), summary.clone());
                    self.emit(
                        now,
                        PlannerEvent::NotTriggerScaleUp {
                            pod: key.clone(),
                            reasons: pod_reasons.clone(),
                        },
                    );
                }
            }
        }
        scaled
    }

    /// Tries the remaining units on nodes we retired (without our taint); un-retires
    /// the nodes that take some. Returns what is still unplaced.
    #[allow(clippy::too_many_arguments)]
    fn unretire_for(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        view: &ClusterView,
        sim: &mut PlacementSim<'_>,
        remaining: Vec<Vec<usize>>,
        class_of: &[usize],
        class_reps: &[usize],
    ) -> Vec<Vec<usize>> {
        let mut retired_slots = Vec::new();
        for (ni, node) in snapshot.nodes.iter().enumerate() {
            // Only our own retirements of nodes we manage: never a node of another
            // group, a scale-down-disabled or detached one, or one on its way out.
            if node.retired.is_none()
                || !node.ready
                || !crate::scaledown::is_managed(node, view)
                || view.terminating_nodes.contains(&ni)
                || self.draining_since.contains_key(&node.name)
            {
                continue;
            }
            let taints: Vec<_> = node
                .taints
                .iter()
                .filter(|t| t.key != TAINT_RETIRING)
                .cloned()
                .collect();
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
        let mut index = CapacityIndex::new(sim, &slots, class_reps);
        let mut still = Vec::new();
        for unit in remaining {
            if !place_unit_indexed(sim, &mut index, class_of, &unit, Targets::All) {
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
                self.actions.push_back(Action::UnretireNode {
                    id,
                    node: name.clone(),
                });
                // Taken back for work: its idle time starts again now (the pods bound
                // to it may take a while to show up).
                self.idle_since.insert(name.clone(), now);
                self.unneeded_since.remove(&name);
                self.emit(
                    now,
                    PlannerEvent::NodeUnretired {
                        node: name,
                        pods: taken as u32,
                    },
                );
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
                    && s.zones
                        .iter()
                        .any(|z| self.pools.backed_off(&s.pool(z), now).is_none())
            })
            .map(|(gi, _)| gi)
            .collect();
        let mut targets: BTreeMap<usize, u32> = similar
            .iter()
            .map(|&gi| (gi, effective_target[gi]))
            .collect();
        // Room under max: instances being removed hold their place until terminated.
        let max_target: BTreeMap<usize, u32> = similar
            .iter()
            .map(|&gi| {
                let spec = &snapshot.groups[gi].spec;
                (
                    gi,
                    spec.max_size
                        .saturating_sub(self.decrements_to_come(&spec.id)),
                )
            })
            .collect();
        let mut added: BTreeMap<usize, u32> = BTreeMap::new();
        for _ in 0..new_nodes {
            // Give the next node to the smallest group that still has room.
            let Some((&gi, _)) = targets
                .iter()
                .filter(|(gi, t)| **t < max_target[*gi])
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

/// The part of `serving_order` before the pod key, as one comparable value.
type ServingKey = (
    std::cmp::Reverse<i32>,
    std::cmp::Reverse<i64>,
    std::cmp::Reverse<i64>,
    std::cmp::Reverse<i64>,
    Time,
);

fn serving_key(p: &PodView) -> ServingKey {
    use std::cmp::Reverse;
    (
        Reverse(p.priority),
        Reverse(p.requests.gpus()),
        Reverse(p.requests.cpu_millis),
        Reverse(p.requests.memory_bytes),
        p.created,
    )
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

pub(crate) fn template_sim_node(
    group: &NodeGroupId,
    t: &TemplateNode,
    k: u32,
    origin: NodeOrigin,
) -> SimNode {
    let label = if origin == NodeOrigin::Upcoming {
        "upcoming"
    } else {
        "new"
    };
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

/// A class with pods still to serve in a round, with what packing reads of it: built
/// once per round and walked in order by every group (reading the pods themselves per
/// class and group was cache misses at 100,000 pods and 200 groups).
struct LiveClass<'a> {
    class: usize,
    /// A member standing for the class (its template verdict is the class's).
    rep: usize,
    /// The members still to serve, in serving order.
    members: &'a [usize],
    requests: &'a Resources,
    want: fit::Key,
    has_terms: bool,
    gang: Option<&'a model::GangId>,
}

/// A new node of the group being packed.
struct Bin {
    used: Resources,
    pods: u32,
    /// Residents, kept only while some pod has anti-affinity terms.
    residents: Vec<usize>,
    /// Some resident has anti-affinity terms (its verdict may differ between members of
    /// a class without terms, whose labels may differ).
    anti_affinity_resident: bool,
}

/// How many pods asking for `request` fit in what `used` leaves of `allocatable`.
fn how_many_fit(
    request: &Resources,
    allocatable: &Resources,
    used: &Resources,
    at_most: usize,
) -> usize {
    let mut n = at_most as i64;
    let mut limit = |requested: i64, have: i64| {
        if requested > 0 {
            n = n.min((have / requested).max(0));
        }
    };
    limit(
        request.cpu_millis,
        allocatable.cpu_millis.saturating_sub(used.cpu_millis),
    );
    limit(
        request.memory_bytes,
        allocatable.memory_bytes.saturating_sub(used.memory_bytes),
    );
    limit(
        request.ephemeral_storage_bytes,
        allocatable
            .ephemeral_storage_bytes
            .saturating_sub(used.ephemeral_storage_bytes),
    );
    limit(request.pods, allocatable.pods.saturating_sub(used.pods));
    for (name, v) in &request.extended {
        limit(
            *v,
            allocatable
                .extended(name)
                .saturating_sub(used.extended(name)),
        );
    }
    n as usize
}

/// Saturating, like all arithmetic on amounts read from the cluster.
fn add_times(used: &mut Resources, request: &Resources, times: i64) {
    used.cpu_millis = used
        .cpu_millis
        .saturating_add(request.cpu_millis.saturating_mul(times));
    used.memory_bytes = used
        .memory_bytes
        .saturating_add(request.memory_bytes.saturating_mul(times));
    used.ephemeral_storage_bytes = used
        .ephemeral_storage_bytes
        .saturating_add(request.ephemeral_storage_bytes.saturating_mul(times));
    used.pods = used.pods.saturating_add(request.pods.saturating_mul(times));
    for (name, v) in &request.extended {
        used.add_extended(name, v.saturating_mul(times));
    }
}

/// First-fit-decreasing of the remaining pods onto new nodes of one group: classes in
/// serving order, each class's pods in order, each onto the first new node that takes
/// it, a new node opened while `headroom` allows. The same placements as trying every
/// pod on every node in turn, found faster: identical pods fill a node in one step
/// (the first that took one is the first for the next, until it is full), and a
/// max-tree of free room skips full nodes. A class's pods that found room are always a
/// prefix of its pods (an identical pod cannot fit where its predecessor did not),
/// unless anti-affinity with their own labels, which may differ, refused them.
#[allow(clippy::too_many_arguments)]
fn pack_onto_template(
    pods: &[PodView],
    anti_affinity_in_play: bool,
    live: &[LiveClass<'_>],
    n_live: usize,
    group_index: usize,
    template: &TemplateNode,
    headroom: u32,
    verdicts: &mut TemplateVerdicts,
) -> GroupOption {
    let max_bins = (headroom as usize).min(n_live);
    let alloc = &template.allocatable;
    let mut bins: Vec<Bin> = Vec::new();
    let mut tree = FreeTree::new(max_bins);
    let mut placed = Vec::new();
    let mut gangs = BTreeSet::new();
    // (bin, how many) placed for the current class, to roll a gang back.
    let mut steps: Vec<(usize, usize)> = Vec::new();
    let mut placed_here: Vec<usize> = Vec::new();
    for class in live {
        if !verdicts.check(class.class, group_index, &pods[class.rep], template) || max_bins == 0 {
            continue;
        }
        let members = class.members;
        let (requests, want, class_has_terms) = (class.requests, &class.want, class.has_terms);
        steps.clear();
        placed_here.clear();
        let mut i = 0;
        // No bin before `cursor` takes a pod of this class.
        let mut cursor = 0;
        let mut failed = false;
        while i < members.len() {
            let pod = members[i];
            let mut uncertain: Option<usize> = None;
            let mut found = None;
            let mut from = cursor;
            while let Some(b) = tree.first_at_or_after(from, want) {
                if b >= bins.len() {
                    break;
                }
                let bin = &bins[b];
                if fit::fits(requests, alloc, &bin.used) {
                    let blocked = anti_affinity_in_play
                        && check_anti_affinity(&pods[pod], bin.residents.iter().map(|&r| &pods[r]))
                            .is_err();
                    if !blocked {
                        found = Some(b);
                        break;
                    }
                    if !class_has_terms {
                        uncertain.get_or_insert(b);
                    }
                }
                from = b + 1;
            }
            let end = found.unwrap_or(bins.len());
            cursor = uncertain.map_or(end, |u| u.min(end));
            let b = match found {
                Some(b) => b,
                None if bins.len() < max_bins => {
                    bins.push(Bin {
                        used: Resources::zero(),
                        pods: 0,
                        residents: Vec::new(),
                        anti_affinity_resident: false,
                    });
                    bins.len() - 1
                }
                None if class.gang.is_none() && uncertain.is_some() => {
                    // Refused only for anti-affinity with this pod's own labels: the
                    // next pod of the class may differ there. Skip just this one.
                    i += 1;
                    continue;
                }
                None => {
                    // No room for this pod, so for none of the identical pods after it.
                    failed = true;
                    break;
                }
            };
            let bin = &mut bins[b];
            let take = if class_has_terms || bin.anti_affinity_resident {
                1
            } else {
                how_many_fit(requests, alloc, &bin.used, members.len() - i).max(1)
            };
            add_times(&mut bin.used, requests, take as i64);
            bin.pods += take as u32;
            if anti_affinity_in_play {
                bin.residents.extend_from_slice(&members[i..i + take]);
                bin.anti_affinity_resident |= class_has_terms;
            }
            tree.set(b, fit::free_key(alloc, &bin.used));
            steps.push((b, take));
            placed_here.extend_from_slice(&members[i..i + take]);
            i += take;
        }
        if failed && class.gang.is_some() {
            for &(b, take) in steps.iter().rev() {
                let bin = &mut bins[b];
                add_times(&mut bin.used, requests, -(take as i64));
                bin.pods -= take as u32;
                if anti_affinity_in_play {
                    bin.residents.truncate(bin.residents.len() - take);
                    bin.anti_affinity_resident = bin
                        .residents
                        .iter()
                        .any(|&r| !pods[r].anti_affinity.is_empty());
                }
                tree.set(b, fit::free_key(alloc, &bin.used));
            }
            continue;
        }
        if let Some(gang) = class.gang {
            gangs.insert(gang.clone());
        }
        placed.extend_from_slice(&placed_here);
    }
    // Nodes opened for a gang that was then rolled back stay empty: drop them.
    let (mut new_nodes, mut used_cpu, mut used_mem) = (0u32, 0i64, 0i64);
    for bin in bins.iter().filter(|b| b.pods > 0) {
        new_nodes += 1;
        used_cpu += bin.used.cpu_millis;
        used_mem += bin.used.memory_bytes;
    }
    let (alloc_cpu, alloc_mem) = (
        alloc.cpu_millis * i64::from(new_nodes),
        alloc.memory_bytes * i64::from(new_nodes),
    );
    let frac = |used: i64, alloc: i64| {
        if alloc > 0 {
            1.0 - used as f64 / alloc as f64
        } else {
            0.0
        }
    };
    GroupOption {
        group: group_index,
        new_nodes,
        pods: placed,
        waste: frac(used_cpu, alloc_cpu) + frac(used_mem, alloc_mem),
        gangs,
    }
}
