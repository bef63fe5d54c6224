//! Scale-down, batch-safe. Methods in order — unready nodes, retired nodes whose
//! batch pods are done, empty nodes, under-utilised nodes — and only the first with
//! candidates takes new decisions in a pass. Every destructive step goes decide →
//! wait → re-check on a newer snapshot → act. Pods that must not be evicted (Job and
//! bare pods, `safe-to-evict: false|on-completion`, `do-not-disrupt`) are never
//! evicted: their node is retired (tainted NoSchedule) and removed once they finish.

use crate::actions::{Action, TerminateReason};
use crate::classes::group_into_classes;
use crate::events::PlannerEvent;
use crate::placement::{PlacementSim, SimNode};
use crate::scaleup::ClusterView;
use crate::{PendingRemoval, Planner};
use model::well_known::{
    LABEL_CONTROL_PLANE, LABEL_MASTER, TAINT_CA_TO_BE_DELETED, TAINT_RETIRING,
};
use model::{ClusterSnapshot, NodeName, NodeView, Owner, PodView, Resources, SafeToEvict, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How a pod on a node bears on removing the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodDisposition {
    /// DaemonSet or mirror pod: part of every node, ignored.
    Ignored,
    /// May be evicted: its controller recreates it elsewhere with nothing lost.
    Evictable,
    /// Evictable and below `expendable-pods-priority-cutoff`: evicted like any
    /// evictable pod, but it neither keeps its node busy nor needs room elsewhere.
    Expendable,
    /// Must finish on its own: the node can only be retired.
    MustFinish,
}

/// Classifies a pod for scale-down under the settings' `evictable-owner-kinds` and
/// `expendable-pods-priority-cutoff`.
///
/// Only a pod that something recreates with no lost work may be evicted: one marked
/// `safe-to-evict: "true"`, or one whose controller is on `evictable-owner-kinds`
/// (ReplicaSet, StatefulSet and ReplicationController by default). Every other owner
/// (Job, Argo Workflow, Spark driver Pod, PyTorchJob, RayCluster, a bare pod, a kind we
/// have never heard of) must finish. Priority never overrides that: a low-priority
/// ("scavenger") Job pod must finish like any other; expendable only softens an
/// evictable pod.
pub fn disposition(pod: &PodView, settings: &crate::PlannerSettings) -> PodDisposition {
    if settings.is_node_infrastructure(pod) {
        return PodDisposition::Ignored;
    }
    let evictable = if pod.do_not_disrupt {
        false
    } else {
        match pod.safe_to_evict {
            Some(SafeToEvict::True) => true,
            Some(SafeToEvict::False | SafeToEvict::OnCompletion) => false,
            None => owner_is_evictable(&pod.owner, settings),
        }
    };
    match (
        evictable,
        pod.priority < settings.expendable_pods_priority_cutoff,
    ) {
        (false, _) => PodDisposition::MustFinish,
        (true, false) => PodDisposition::Evictable,
        (true, true) => PodDisposition::Expendable,
    }
}

fn owner_is_evictable(owner: &Owner, settings: &crate::PlannerSettings) -> bool {
    let kinds = &settings.evictable_owner_kinds;
    match owner {
        Owner::Controller { kind, .. } => kinds.contains(kind),
        // A user may list batch/Job too (their Jobs checkpoint): honoured.
        Owner::Job(_) => kinds
            .0
            .iter()
            .any(|k| k.group == "batch" && k.kind == "Job"),
        Owner::Bare | Owner::DaemonSet(_) | Owner::Mirror => false,
    }
}

/// A node the autoscaler may act on: it backs an instance of a group in the snapshot,
/// is not marked `scale-down-disabled` (or the seed's `openai/detached`), and is not
/// a control-plane node.
pub(crate) fn is_managed(node: &NodeView, view: &ClusterView) -> bool {
    node.instance.is_some()
        && node
            .group
            .as_ref()
            .is_some_and(|g| view.group_index.contains_key(g))
        && !node.scale_down_disabled
        && !node.labels.contains_key(LABEL_CONTROL_PLANE)
        && !node.labels.contains_key(LABEL_MASTER)
}

fn group_of_node(node: &NodeView, view: &ClusterView) -> Option<usize> {
    node.group
        .as_ref()
        .and_then(|g| view.group_index.get(g))
        .copied()
}

/// Retired by us, or being deleted by Cluster Autoscaler (recognised for migrations).
pub fn is_retired(node: &NodeView) -> bool {
    node.retired.is_some()
        || node
            .taints
            .iter()
            .any(|t| t.key == TAINT_RETIRING || t.key == TAINT_CA_TO_BE_DELETED)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    Unready,
    RetiredDone,
    Empty,
    Underutilized,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    /// Terminate now (nothing left that must run).
    Terminate(TerminateReason),
    /// Evict the evictable pods (taint first so they do not come back), then terminate.
    Drain,
    /// Taint NoSchedule and wait for the pods that must finish.
    Retire,
}

struct NodeFacts {
    managed: bool,
    must_finish: Vec<usize>,
    /// Evictable pods that need room elsewhere before the node can be drained.
    evictable: Vec<usize>,
    /// Expendable pods: evicted on a drain, but no reason to keep the node.
    expendable: Vec<usize>,
    utilization: f64,
    gpu_node: bool,
}

impl NodeFacts {
    /// Pods a drain evicts.
    fn to_evict(&self) -> impl Iterator<Item = usize> + '_ {
        self.evictable.iter().chain(&self.expendable).copied()
    }

    fn nothing_to_evict(&self) -> bool {
        self.evictable.is_empty() && self.expendable.is_empty()
    }
}

impl Planner {
    pub(crate) fn scale_down(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        view: &ClusterView,
        scaled_up: bool,
    ) {
        let s = self.settings.clone();
        let pods = &snapshot.pods;
        let keep_empty = self.empty_keep_times(snapshot, view);
        let facts: Vec<NodeFacts> = snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(ni, n)| self.node_facts(now, snapshot, view, ni, n))
            .collect();

        // Idle tracking (persisted as an annotation so a restart resumes the count).
        for (ni, node) in snapshot.nodes.iter().enumerate() {
            if !facts[ni].managed {
                continue;
            }
            let empty = facts[ni].must_finish.is_empty() && facts[ni].evictable.is_empty();
            if empty {
                // The later of the persisted mark and our memory: a node taken back
                // from retirement restarts its idle time, whatever its old annotation.
                let remembered = self.idle_since.get(&node.name).copied();
                let since = match (node.idle_since, remembered) {
                    (Some(a), Some(m)) => a.max(m),
                    (a, m) => a.or(m).unwrap_or(now),
                };
                self.idle_since.insert(node.name.clone(), since);
                if node.idle_since != Some(since) {
                    let id = self.next_id();
                    self.actions.push_back(Action::MarkIdle {
                        id,
                        node: node.name.clone(),
                        since: Some(since),
                    });
                }
                let gi = group_of_node(node, view).expect("managed");
                self.wake(since + keep_empty[gi]);
            } else {
                self.idle_since.remove(&node.name);
                if node.idle_since.is_some() {
                    let id = self.next_id();
                    self.actions.push_back(Action::MarkIdle {
                        id,
                        node: node.name.clone(),
                        since: None,
                    });
                }
            }
            if facts[ni].utilization < self.threshold(&facts[ni]) && !empty {
                let entry = self
                    .unneeded_since
                    .entry(node.name.clone())
                    .or_insert((node.created, now));
                if entry.0 != node.created {
                    *entry = (node.created, now);
                }
            } else {
                self.unneeded_since.remove(&node.name);
            }
        }

        if !s.scale_down_enabled {
            return;
        }
        // Under `auto` a scale-up pauses nothing: a node a pending pod could use is
        // kept anyway (see `candidates`), and other groups have nothing to wait for.
        let paused_by_add = s
            .scale_down_delay_after_add
            .fixed()
            .is_some_and(|delay| scaled_up || self.last_scale_up.is_some_and(|t| now < t + delay));
        let paused = paused_by_add
            || self
                .last_scale_down
                .is_some_and(|t| now < t + s.scale_down_delay_after_delete)
            || self
                .last_scale_down_failure
                .is_some_and(|t| now < t + s.scale_down_delay_after_failure);

        // Drains in progress: keep evicting, give up after max-pod-eviction-time.
        self.continue_drains(now, snapshot, view, &facts);

        let mut candidates = self.candidates(now, snapshot, view, &facts, &keep_empty);
        // A node whose drain failed lately is left alone (an empty one still goes).
        candidates.retain(|(ni, _, plan)| {
            !(matches!(plan, Plan::Drain)
                && self.drain_backoffs.holds(&snapshot.nodes[*ni].name, now))
        });
        let candidate_map: BTreeMap<usize, (Method, Plan)> = candidates
            .iter()
            .map(|(ni, m, p)| (*ni, (*m, p.clone())))
            .collect();

        // Re-validate decisions on this (newer) snapshot; act on those that hold.
        let mut acted = 0u32;
        let in_progress = (self.terminating.len() + self.draining_since.len()) as u32;
        let mut budget = s.max_scale_down_parallelism.saturating_sub(in_progress);
        let mut empty_budget = s.max_empty_bulk_delete;
        let pending: Vec<_> = self
            .pending_removals
            .iter()
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        for (name, decision) in pending {
            let Some(&ni) = view.node_index.get(&name) else {
                self.pending_removals.remove(&name);
                continue;
            };
            match candidate_map.get(&ni) {
                None => {
                    self.pending_removals.remove(&name);
                    self.emit(
                        now,
                        PlannerEvent::ScaleDownCancelled {
                            node: name,
                            why: "no longer a candidate on a newer snapshot".into(),
                        },
                    );
                }
                Some((_, plan)) => {
                    let confirmed = snapshot.revision > decision.decided_revision
                        && now >= decision.decided_at + s.scale_down_confirm_delay;
                    if !confirmed {
                        self.wake(decision.decided_at + s.scale_down_confirm_delay);
                        continue;
                    }
                    if paused {
                        continue;
                    }
                    let uses_budget = !matches!(plan, Plan::Retire);
                    if uses_budget && budget == 0 {
                        continue;
                    }
                    if matches!(plan, Plan::Terminate(TerminateReason::Empty)) {
                        if empty_budget == 0 {
                            continue;
                        }
                        empty_budget -= 1;
                    }
                    self.pending_removals.remove(&name);
                    if self.act(now, snapshot, &facts, ni, plan.clone(), pods) && uses_budget {
                        budget -= 1;
                        acted += 1;
                    }
                }
            }
        }
        let _ = acted;
        if paused {
            return;
        }

        // New decisions: only the first method with candidates decides this pass.
        let Some(first_method) = candidates.iter().map(|(_, m, _)| *m).min() else {
            return;
        };
        for (ni, method, plan) in candidates {
            if method != first_method {
                continue;
            }
            let name = snapshot.nodes[ni].name.clone();
            // Already being removed (its removal began earlier in this pass).
            let removing = snapshot.nodes[ni]
                .instance
                .as_ref()
                .is_some_and(|i| self.terminating.contains_key(i));
            if self.pending_removals.contains_key(&name) || removing {
                continue;
            }
            let reason = match &plan {
                Plan::Terminate(r) => r.clone(),
                Plan::Drain => TerminateReason::Underutilized,
                Plan::Retire => TerminateReason::RetiredAndDrained,
            };
            self.pending_removals.insert(
                name.clone(),
                PendingRemoval {
                    decided_at: now,
                    decided_revision: snapshot.revision,
                },
            );
            self.emit(now, PlannerEvent::ScaleDownCandidate { node: name, reason });
            self.wake(now + s.scale_down_confirm_delay);
        }
    }

    /// Per group: how long an empty node is kept (`scale-down-unneeded-time`, or
    /// under `auto` the ski-rental break-even of [`crate::keep`]).
    fn empty_keep_times(&self, snapshot: &ClusterSnapshot, view: &ClusterView) -> Vec<Duration> {
        let setting = self.settings.scale_down_unneeded_time;
        let boots = if setting.fixed().is_some() {
            vec![None; snapshot.groups.len()]
        } else {
            crate::keep::observed_boot_times(snapshot, view, self.settings.max_node_provision_time)
        };
        boots
            .into_iter()
            .map(|b| crate::keep::empty_keep_time(&self.settings, b))
            .collect()
    }

    fn threshold(&self, facts: &NodeFacts) -> f64 {
        if facts.gpu_node {
            self.settings.scale_down_gpu_utilization_threshold
        } else {
            self.settings.scale_down_utilization_threshold
        }
    }

    fn node_facts(
        &self,
        now: Time,
        snapshot: &ClusterSnapshot,
        view: &ClusterView,
        ni: usize,
        node: &NodeView,
    ) -> NodeFacts {
        let managed = is_managed(node, view) && !view.terminating_nodes.contains(&ni);
        let mut must_finish = Vec::new();
        let mut evictable = Vec::new();
        let mut expendable = Vec::new();
        let mut used = Resources::zero();
        for &p in &view.occupants[ni] {
            let pod = &snapshot.pods[p];
            if !node.ready && pod.stuck_terminating(now) {
                // Its kubelet is gone: it will never finish, nor hold anything.
                continue;
            }
            match disposition(pod, &self.settings) {
                PodDisposition::Ignored => continue,
                PodDisposition::Expendable => {
                    expendable.push(p);
                    continue;
                }
                PodDisposition::Evictable => evictable.push(p),
                PodDisposition::MustFinish => must_finish.push(p),
            }
            used.add(&pod.requests);
        }
        let alloc = &node.allocatable;
        let gpu_node = alloc.gpus() > 0;
        let ratio = |u: i64, a: i64| if a > 0 { u as f64 / a as f64 } else { 0.0 };
        let utilization = if gpu_node {
            ratio(used.gpus(), alloc.gpus())
        } else {
            ratio(used.cpu_millis, alloc.cpu_millis)
                .max(ratio(used.memory_bytes, alloc.memory_bytes))
        };
        NodeFacts {
            managed,
            must_finish,
            evictable,
            expendable,
            utilization,
            gpu_node,
        }
    }

    /// Nodes that could be removed now, with the method and the plan.
    fn candidates(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        view: &ClusterView,
        facts: &[NodeFacts],
        keep_empty: &[Duration],
    ) -> Vec<(usize, Method, Plan)> {
        let s = &self.settings;
        let underutilized_time = crate::keep::underutilized_time(s);
        let mut out = Vec::new();
        // Room per group above its min size, counting nodes already on their way out.
        let mut room: BTreeMap<usize, u32> = BTreeMap::new();
        for (gi, g) in snapshot.groups.iter().enumerate() {
            let retired = snapshot
                .nodes
                .iter()
                .enumerate()
                .filter(|(ni, n)| {
                    is_retired(n)
                        && !view.terminating_nodes.contains(ni)
                        && n.group.as_ref() == Some(&g.spec.id)
                })
                .count() as u32;
            room.insert(
                gi,
                view.effective_target[gi]
                    .saturating_sub(g.spec.min_size)
                    .saturating_sub(retired),
            );
        }
        let group_of = |n: &NodeView| group_of_node(n, view);
        let take_room = |room: &mut BTreeMap<usize, u32>, gi: usize| -> bool {
            match room.get_mut(&gi) {
                Some(r) if *r > 0 => {
                    *r -= 1;
                    true
                }
                _ => false,
            }
        };

        // Retired nodes whose must-finish pods are done: their room was reserved when retired.
        for (ni, node) in snapshot.nodes.iter().enumerate() {
            let f = &facts[ni];
            if f.managed
                && is_retired(node)
                && f.must_finish.is_empty()
                && !self.draining_since.contains_key(&node.name)
            {
                let plan = if f.nothing_to_evict() {
                    Plan::Terminate(TerminateReason::RetiredAndDrained)
                } else {
                    Plan::Drain
                };
                out.push((ni, Method::RetiredDone, plan));
            }
        }
        for (ni, node) in snapshot.nodes.iter().enumerate() {
            let f = &facts[ni];
            if !f.managed || is_retired(node) || node.ready || !f.must_finish.is_empty() {
                continue;
            }
            if now.saturating_since(node.ready_changed) >= s.scale_down_unready_time
                && take_room(&mut room, group_of(node).expect("managed"))
            {
                out.push((
                    ni,
                    Method::Unready,
                    if f.nothing_to_evict() {
                        Plan::Terminate(TerminateReason::Unready)
                    } else {
                        Plan::Drain
                    },
                ));
            }
        }
        // Empty nodes, longest idle first; each group may keep one warm spare.
        let mut empties: Vec<(Time, usize)> = snapshot
            .nodes
            .iter()
            .enumerate()
            .filter(|(ni, n)| {
                let f = &facts[*ni];
                f.managed
                    && n.ready
                    && !is_retired(n)
                    && f.must_finish.is_empty()
                    && f.evictable.is_empty()
            })
            .filter_map(|(ni, n)| self.idle_since.get(&n.name).map(|t| (*t, ni)))
            .collect();
        empties.sort();
        let mut spare_taken: BTreeSet<usize> = BTreeSet::new();
        if !s.type_idle_threshold.is_zero() {
            // The most recently idle node of each group is the spare.
            for &(since, ni) in empties.iter().rev() {
                let gi = group_of(&snapshot.nodes[ni]).expect("managed");
                if !spare_taken.contains(&gi) && now.saturating_since(since) < s.type_idle_threshold
                {
                    spare_taken.insert(gi);
                    self.spares.insert(ni);
                }
            }
        }
        // Pending pods, one per equivalence class (members fit the same nodes).
        let pending: Vec<usize> = snapshot
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.is_unbound_pending() && p.priority >= s.expendable_pods_priority_cutoff
            })
            .map(|(i, _)| i)
            .collect();
        let pending: Vec<usize> = group_into_classes(&snapshot.pods, &pending)
            .iter()
            .map(|c| c.representative())
            .collect();
        for (since, ni) in empties {
            if self.spares.remove(&ni) {
                continue;
            }
            let gi = group_of(&snapshot.nodes[ni]).expect("managed");
            if now.saturating_since(since) < keep_empty[gi] {
                continue;
            }
            // Under `auto` (no pause after a scale-up), a pending pod that could use it
            // keeps it: the scheduler has not bound it yet, and removing the node would
            // only make us buy another. (CA's fixed pause covers this otherwise.)
            let guard = s.scale_down_delay_after_add.fixed().is_none();
            if guard && !pending.is_empty() {
                let node = &snapshot.nodes[ni];
                let mut one = PlacementSim::new(&snapshot.pods);
                let slot =
                    one.add_node(SimNode::existing(node, &snapshot.pods, &view.occupants[ni]));
                if pending.iter().any(|&p| one.can_place(p, slot).is_ok()) {
                    continue;
                }
            }
            if take_room(&mut room, gi) {
                let plan = if facts[ni].expendable.is_empty() {
                    Plan::Terminate(TerminateReason::Empty)
                } else {
                    Plan::Drain
                };
                out.push((ni, Method::Empty, plan));
            }
        }
        self.spares.clear();

        // Under-utilised nodes.
        let under: Vec<usize> = snapshot
            .nodes
            .iter()
            .enumerate()
            .filter(|(ni, n)| {
                let f = &facts[*ni];
                f.managed
                    && n.ready
                    && !is_retired(n)
                    && !(f.must_finish.is_empty() && f.evictable.is_empty())
                    && self
                        .unneeded_since
                        .get(&n.name)
                        .is_some_and(|(created, t)| {
                            *created == n.created && now.saturating_since(*t) >= underutilized_time
                        })
            })
            .map(|(ni, _)| ni)
            .collect();
        if under.is_empty() {
            return out;
        }
        // Where could evicted pods go? Every other ready, schedulable, non-retired node.
        let pods = &snapshot.pods;
        let mut sim = PlacementSim::new(pods);
        let mut slot_of = BTreeMap::new();
        for (ni, n) in snapshot.nodes.iter().enumerate() {
            if !n.ready || is_retired(n) || view.terminating_nodes.contains(&ni) {
                continue;
            }
            let slot = sim.add_node(SimNode::existing(n, pods, &view.occupants[ni]));
            slot_of.insert(ni, slot);
        }
        let retired_now = snapshot.nodes.iter().filter(|n| is_retired(n)).count();
        let managed_nodes = facts.iter().filter(|f| f.managed).count();
        let retire_cap = ((s.max_scale_in_fraction * managed_nodes as f64).ceil() as usize).max(1);
        let mut retire_budget = retire_cap.saturating_sub(retired_now);
        let mut receivers: BTreeSet<usize> = BTreeSet::new();
        let mut ranked: Vec<(Duration, usize)> = under
            .iter()
            .map(|&ni| (self.expected_time_to_empty(now, pods, &facts[ni]), ni))
            .collect();
        ranked.sort();
        for ni in self.bounded_rotation(snapshot, ranked.into_iter().map(|(_, ni)| ni).collect()) {
            let f = &facts[ni];
            let node = &snapshot.nodes[ni];
            let Some(&slot) = slot_of.get(&ni) else {
                continue;
            };
            // Pending pods that could use this node keep it.
            // A node that takes another candidate's pods in this simulation stays.
            if receivers.contains(&slot) {
                continue;
            }
            if pending.iter().any(|&p| sim.can_place(p, slot).is_ok()) {
                continue;
            }
            // From here on nothing may land on it in the simulation.
            sim.node_mut(slot).cordoned = true;
            let gi = group_of(node).expect("managed");
            if f.must_finish.is_empty() {
                // Everything evictable: only if it all fits elsewhere.
                let others: Vec<usize> = slot_of
                    .iter()
                    .filter(|(n, _)| **n != ni)
                    .map(|(_, s)| *s)
                    .collect();
                let mut placed = Vec::new();
                let mut ok = true;
                for &p in &f.evictable {
                    match sim.first_fit(p, others.iter().copied()) {
                        Some(to) => {
                            sim.place(p, to);
                            placed.push((p, to));
                            receivers.insert(to);
                        }
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if ok && take_room(&mut room, gi) {
                    out.push((ni, Method::Underutilized, Plan::Drain));
                } else {
                    for (p, to) in placed {
                        sim.unplace(p, to);
                    }
                    sim.node_mut(slot).cordoned = snapshot.nodes[ni].cordoned;
                }
            } else if self.retiring_pays_off(now, pods, f)
                && retire_budget > 0
                && take_room(&mut room, gi)
            {
                retire_budget -= 1;
                out.push((ni, Method::Underutilized, Plan::Retire));
            } else {
                sim.node_mut(slot).cordoned = snapshot.nodes[ni].cordoned;
            }
        }
        out
    }

    /// Which of the `ranked` under-utilised nodes this pass checks. Each check is a
    /// drain simulation over the whole cluster, so a pass checks at most
    /// `scale_down_non_empty_candidates_count` (CA's flag) and the rest are carried
    /// over: decisions awaiting confirmation first (they must be re-validated), then
    /// nodes not checked since the rotation began, in rank order; once every node has
    /// had its turn the rotation starts again.
    fn bounded_rotation(&mut self, snapshot: &ClusterSnapshot, ranked: Vec<usize>) -> Vec<usize> {
        let cap = self.settings.scale_down_non_empty_candidates_count;
        if cap <= 0 || ranked.len() <= cap as usize {
            self.checked_for_scale_down.clear();
            return ranked;
        }
        let cap = cap as usize;
        let name = |ni: usize| &snapshot.nodes[ni].name;
        // Nodes that left the list (removed, busy again) leave the rotation too.
        let under: BTreeSet<&NodeName> = ranked.iter().map(|&ni| name(ni)).collect();
        self.checked_for_scale_down.retain(|n| under.contains(n));
        let (awaiting, rest): (Vec<usize>, Vec<usize>) = ranked
            .into_iter()
            .partition(|&ni| self.pending_removals.contains_key(name(ni)));
        let (checked, unchecked): (Vec<usize>, Vec<usize>) = rest
            .into_iter()
            .partition(|&ni| self.checked_for_scale_down.contains(name(ni)));
        let mut turn = awaiting;
        let room = cap.saturating_sub(turn.len());
        if unchecked.len() <= room {
            // The rotation is complete: start the next one with what is left of the room.
            self.checked_for_scale_down.clear();
            let more = room - unchecked.len();
            turn.extend(unchecked);
            turn.extend(checked.into_iter().take(more));
        } else {
            turn.extend(unchecked.into_iter().take(room));
        }
        for &ni in &turn {
            self.checked_for_scale_down.insert(name(ni).clone());
        }
        turn
    }

    /// How long until the node's must-finish pods are expected to be done: the
    /// latest of their deadlines / expected durations; unknown ones rank by age.
    /// Completion-aware retirement (see [`crate::keep::retiring_pays_off`]).
    fn retiring_pays_off(&self, now: Time, pods: &[PodView], facts: &NodeFacts) -> bool {
        let known_hold = facts
            .must_finish
            .iter()
            .filter_map(|&p| {
                let pod = &pods[p];
                let start = pod.started.unwrap_or(pod.created);
                pod.expected_duration
                    .or(pod.active_deadline)
                    .map(|d| (start + d).saturating_since(now))
            })
            .max();
        crate::keep::retiring_pays_off(&self.settings, known_hold)
    }

    fn expected_time_to_empty(&self, now: Time, pods: &[PodView], facts: &NodeFacts) -> Duration {
        const UNKNOWN: Duration = Duration::from_secs(365 * 24 * 3600);
        facts
            .must_finish
            .iter()
            .map(|&p| {
                let pod = &pods[p];
                let start = pod.started.unwrap_or(pod.created);
                match pod.expected_duration.or(pod.active_deadline) {
                    Some(d) => (start + d).saturating_since(now),
                    None => UNKNOWN.saturating_sub(now.saturating_since(start)),
                }
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Carries out a confirmed plan. Returns whether a termination or drain started.
    #[allow(clippy::too_many_arguments)]
    fn act(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        facts: &[NodeFacts],
        ni: usize,
        plan: Plan,
        pods: &[PodView],
    ) -> bool {
        let node = &snapshot.nodes[ni];
        let f = &facts[ni];
        match plan {
            Plan::Terminate(_) | Plan::Drain
                if node
                    .instance
                    .as_ref()
                    .is_some_and(|i| self.terminating.contains_key(i)) =>
            {
                false
            }
            Plan::Terminate(reason) => {
                // The invariant, checked at the last moment on this fresh snapshot.
                if !f.must_finish.is_empty() || !f.nothing_to_evict() {
                    self.emit(
                        now,
                        PlannerEvent::ScaleDownCancelled {
                            node: node.name.clone(),
                            why: "pods appeared on the node".into(),
                        },
                    );
                    return false;
                }
                self.terminate_node(now, snapshot, ni, reason);
                true
            }
            Plan::Drain => {
                if !f.must_finish.is_empty() {
                    return false;
                }
                self.draining_since.insert(node.name.clone(), now);
                if !is_retired(node) {
                    // Evictions wait for the taint: an evicted pod must not come back
                    // to this node, and a failed retirement must stop the drain.
                    let id = self.next_id();
                    self.actions.push_back(Action::RetireNode {
                        id,
                        node: node.name.clone(),
                        reason: "draining: under-utilised, pods fit elsewhere".into(),
                    });
                    self.drains_awaiting_taint.insert(node.name.clone());
                    self.wake(now + Duration::from_secs(1));
                    return true;
                }
                for p in f.to_evict() {
                    let id = self.next_id();
                    self.actions.push_back(Action::EvictPod {
                        id,
                        pod: pods[p].key.clone(),
                        uid: pods[p].uid.clone(),
                        node: node.name.clone(),
                        grace_period: pods[p].termination_grace,
                    });
                }
                true
            }
            Plan::Retire => {
                let reason = format!(
                    "under-utilised ({:.0}%), {} pod(s) must finish first",
                    f.utilization * 100.0,
                    f.must_finish.len()
                );
                let id = self.next_id();
                self.actions.push_back(Action::RetireNode {
                    id,
                    node: node.name.clone(),
                    reason: reason.clone(),
                });
                self.emit(
                    now,
                    PlannerEvent::NodeRetired {
                        node: node.name.clone(),
                        reason,
                    },
                );
                false
            }
        }
    }

    fn terminate_node(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        ni: usize,
        reason: TerminateReason,
    ) {
        let node = &snapshot.nodes[ni];
        let (Some(instance), Some(group)) = (node.instance.clone(), node.group.clone()) else {
            return;
        };
        self.begin_removal(now, &group, &instance, Some(node), reason);
    }

    /// Drains under way: re-issue evictions refused so far, terminate when empty (on
    /// this fresh snapshot), give up after max-pod-eviction-time.
    fn continue_drains(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        view: &ClusterView,
        facts: &[NodeFacts],
    ) {
        let draining: Vec<_> = self
            .draining_since
            .iter()
            .map(|(n, t)| (n.clone(), *t))
            .collect();
        for (name, since) in draining {
            let Some(&ni) = view.node_index.get(&name) else {
                continue;
            };
            let f = &facts[ni];
            if !f.must_finish.is_empty() {
                // Something that must finish landed here (a race with the scheduler):
                // stop draining; the node stays retired until it finishes.
                self.draining_since.remove(&name);
                continue;
            }
            if f.nothing_to_evict() {
                self.terminate_node(now, snapshot, ni, TerminateReason::Underutilized);
                continue;
            }
            if !is_retired(&snapshot.nodes[ni]) {
                // The taint is not there (yet): no eviction until it is.
                self.wake(now + Duration::from_secs(1));
                continue;
            }
            // max-pod-eviction-time counts from the first eviction, not from the taint.
            let since = if self.drains_awaiting_taint.remove(&name) {
                self.draining_since.insert(name.clone(), now);
                now
            } else {
                since
            };
            if now.saturating_since(since) >= self.settings.max_pod_eviction_time {
                self.draining_since.remove(&name);
                let id = self.next_id();
                self.actions.push_back(Action::UnretireNode {
                    id,
                    node: name.clone(),
                });
                let until = self.drain_backoffs.failed(&name, now);
                self.emit(
                    now,
                    PlannerEvent::ScaleDownCancelled {
                        node: name,
                        why: format!(
                            "evictions refused for longer than max-pod-eviction-time; not drained again before {} from now",
                            model::time::format_duration(until.saturating_since(now))
                        ),
                    },
                );
                self.last_scale_down_failure = Some(now);
                continue;
            }
            for p in f.to_evict() {
                let id = self.next_id();
                let pod = &snapshot.pods[p];
                self.actions.push_back(Action::EvictPod {
                    id,
                    pod: pod.key.clone(),
                    uid: pod.uid.clone(),
                    node: name.clone(),
                    grace_period: pod.termination_grace,
                });
            }
            self.wake(now + Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{PodKey, Resources};

    #[test]
    fn dispositions() {
        let s = crate::PlannerSettings::default();
        let mk = |owner| {
            PodView::new(
                PodKey::new("d", "p"),
                Resources::cpu_mem(1, 1),
                owner,
                Time::ZERO,
            )
        };
        assert_eq!(
            disposition(&mk(Owner::Job("j".into())), &s),
            PodDisposition::MustFinish
        );
        assert_eq!(
            disposition(&mk(Owner::Bare), &s),
            PodDisposition::MustFinish
        );
        assert_eq!(
            disposition(&mk(Owner::replica_set("r")), &s),
            PodDisposition::Evictable
        );
        assert_eq!(
            disposition(&mk(Owner::DaemonSet("ds".into())), &s),
            PodDisposition::Ignored
        );
        let mut marked = mk(Owner::Job("j".into()));
        marked.safe_to_evict = Some(SafeToEvict::True);
        assert_eq!(disposition(&marked, &s), PodDisposition::Evictable);
        let mut pinned = mk(Owner::replica_set("r"));
        pinned.safe_to_evict = Some(SafeToEvict::OnCompletion);
        assert_eq!(disposition(&pinned, &s), PodDisposition::MustFinish);
        pinned.safe_to_evict = None;
        pinned.do_not_disrupt = true;
        assert_eq!(disposition(&pinned, &s), PodDisposition::MustFinish);
        // Issue 12: priority never overrides protection; it only softens evictable pods.
        let mut scavenger = mk(Owner::Job("j".into()));
        scavenger.priority = -20;
        assert_eq!(disposition(&scavenger, &s), PodDisposition::MustFinish);
        let mut filler = mk(Owner::replica_set("r"));
        filler.priority = -20;
        assert_eq!(disposition(&filler, &s), PodDisposition::Expendable);
        // Issue 12: an owner we do not know recreates nothing we know of.
        for owner in [
            Owner::controller("argoproj.io", "Workflow", "w"),
            Owner::of_controller("v1", "Pod", "driver"),
            Owner::controller("batch.volcano.sh", "Job", "v"),
        ] {
            assert_eq!(
                disposition(&mk(owner.clone()), &s),
                PodDisposition::MustFinish,
                "{owner:?}"
            );
        }
        let mut with_argo = s.clone();
        with_argo.evictable_owner_kinds = crate::OwnerKinds::parse("argoproj.io/Workflow").unwrap();
        assert_eq!(
            disposition(
                &mk(Owner::controller("argoproj.io", "Workflow", "w")),
                &with_argo
            ),
            PodDisposition::Evictable
        );
        assert_eq!(
            disposition(&mk(Owner::replica_set("r")), &with_argo),
            PodDisposition::MustFinish,
            "the list replaces the default"
        );
    }
}
