//! A tiny deterministic world for planner tests: node groups whose instances become
//! nodes when told, pods placed by hand. No simulator, no I/O: every step is explicit.

#![allow(dead_code)]

use model::well_known::TAINT_RETIRING;
use model::*;
use planner::{Action, Outcome, Planner, PlannerEvent, PlannerSettings};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct World {
    pub now: Time,
    pub revision: u64,
    pub groups: Vec<NodeGroupState>,
    pub nodes: Vec<NodeView>,
    pub pods: Vec<PodView>,
    pub requests: Vec<ProvisioningRequestView>,
    pub synced: bool,
    pub next_instance: u32,
    pub actions: Vec<Action>,
    pub events: Vec<PlannerEvent>,
    /// The settings the planner under test runs with (evictions are checked against them).
    pub settings: PlannerSettings,
    /// Cloud calls that fail (throttled after retries) and change nothing, by kind:
    /// `"DetachInstance"`, `"TerminateInstance"`, `"SetTargetSize"`; `"EvictPod"` is an
    /// eviction refused (a PodDisruptionBudget, a pod stuck terminating).
    pub throttled: Vec<&'static str>,
    /// Cloud calls accepted and never carried out (a dry-run's, or dropped by the
    /// cloud): reported done, nothing changes. Same kinds as `throttled`.
    pub lost: Vec<&'static str>,
    /// Calls the cloud refuses (a validation error): they fail for good and change
    /// nothing. Same kinds as `throttled`.
    pub refused: Vec<&'static str>,
    /// The instance each node name really runs on, whatever its Node object says now
    /// (a providerID not set yet, the object deleted while the kubelet runs on): what a
    /// termination really kills.
    pub machines: std::collections::BTreeMap<NodeName, InstanceId>,
    /// Describes lag: a snapshot shows the groups as the one before it did. A target
    /// below the live instances is then refused, as the AWS adapter refuses it after
    /// its fresh read (without a lag the planner must never ask for one).
    pub describe_lag: bool,
    previous_groups: Option<Vec<NodeGroupState>>,
}

pub fn group(
    name: &str,
    region: &str,
    zone: &str,
    vcpus: u32,
    mem_gib: u64,
    gpus: u32,
    max: u32,
) -> NodeGroupState {
    let shape = NodeShape::for_instance(
        InstanceTypeName::new(format!("{name}-type")),
        "amd64",
        vcpus,
        mem_gib * 1024,
        gpus,
        110,
    );
    NodeGroupState {
        spec: NodeGroupSpec {
            id: NodeGroupId::new(name),
            region: Region::new(region),
            zones: vec![Zone::new(zone)],
            shape,
            min_size: 0,
            max_size: max,
            labels: Labels::new(),
            taints: vec![],
            purchase: PurchaseOption::OnDemand,
            price_per_hour: Some(f64::from(vcpus) * 0.05),
            region_rank: if region == "us-west-2" { 0 } else { 1 },
            capacity_rebalance: false,
        },
        target: 0,
        instances: vec![],
    }
}

pub fn pod(name: &str, cpu_millis: i64, mem_gib: i64, owner: Owner) -> PodView {
    let mut p = PodView::new(
        PodKey::new("batch", name),
        Resources::cpu_mem(cpu_millis, mem_gib << 30),
        owner,
        Time::ZERO,
    );
    p.unschedulable = true;
    p
}

pub fn job_pod(name: &str, cpu_millis: i64, mem_gib: i64) -> PodView {
    pod(name, cpu_millis, mem_gib, Owner::Job("job".into()))
}

impl World {
    pub fn new(groups: Vec<NodeGroupState>) -> Self {
        Self {
            now: Time::from_secs(1_000),
            revision: 0,
            groups,
            nodes: vec![],
            pods: vec![],
            requests: vec![],
            synced: true,
            next_instance: 0,
            actions: vec![],
            events: vec![],
            settings: settings(),
            throttled: vec![],
            lost: vec![],
            refused: vec![],
            machines: std::collections::BTreeMap::new(),
            describe_lag: false,
            previous_groups: None,
        }
    }

    pub fn snapshot(&mut self) -> ClusterSnapshot {
        self.revision += 1;
        let groups = match (&self.previous_groups, self.describe_lag) {
            (Some(previous), true) => previous.clone(),
            _ => self.groups.clone(),
        };
        self.previous_groups = Some(self.groups.clone());
        ClusterSnapshot {
            synced: self.synced,
            revision: self.revision,
            groups,
            nodes: self.nodes.clone(),
            pods: self.pods.clone(),
            daemonsets: vec![],
            expander_priorities: None,
            provisioning_requests: self.requests.clone(),
        }
    }

    /// Advances the clock, runs one pass, applies its actions; returns them.
    pub fn step(&mut self, planner: &mut Planner, secs: u64) -> Vec<Action> {
        self.step_racing(planner, secs, &mut |_| {})
    }

    /// Like [`World::step`], but the world moves on while the planner's actions are
    /// carried out: `race` runs before each action is applied (pods bound, pods
    /// finished), so actions land on a state newer than the snapshot they were
    /// planned on, as in a real cluster.
    pub fn step_racing(
        &mut self,
        planner: &mut Planner,
        secs: u64,
        race: &mut dyn FnMut(&mut World),
    ) -> Vec<Action> {
        self.now = self.now + Duration::from_secs(secs);
        let snap = self.snapshot();
        planner.handle_snapshot(self.now, &snap);
        let mut out = vec![];
        while let Some(a) = planner.poll_action() {
            race(self);
            let outcome = self.apply(&a);
            planner.handle_outcome(self.now, a.id(), outcome);
            out.push(a);
        }
        while let Some((_, e)) = planner.poll_event() {
            self.events.push(e);
        }
        self.actions.extend(out.clone());
        out
    }

    /// A scheduler working from a stale cache binds pending pod `pod` to node `node`:
    /// it ignores a retiring taint younger than the settings' `fence-settle-time`
    /// (it has not seen it yet), and respects older ones (and resources are not
    /// checked: a racing binder is not a careful one). Returns whether it bound.
    pub fn bind_racing(&mut self, pod: usize, node: usize) -> bool {
        let (Some(p), Some(n)) = (self.pods.get(pod), self.nodes.get(node)) else {
            return false;
        };
        if !p.is_unbound_pending() {
            return false;
        }
        let fence_seen = n
            .retired
            .as_ref()
            .is_some_and(|r| self.now.saturating_since(r.since) >= self.settings.fence_settle_time);
        if fence_seen {
            return false;
        }
        let name = n.name.clone();
        let now = self.now;
        let p = &mut self.pods[pod];
        p.node = Some(name);
        p.phase = PodPhase::Running;
        p.started = Some(now);
        p.unschedulable = false;
        true
    }

    pub fn group_mut(&mut self, name: &str) -> &mut NodeGroupState {
        self.groups
            .iter_mut()
            .find(|g| g.spec.id.as_str() == name)
            .expect("group")
    }

    /// Carries out an action on the world; what it reports back to the planner.
    pub fn apply(&mut self, action: &Action) -> Outcome {
        let kind = match action {
            Action::DetachInstance { .. } => "DetachInstance",
            Action::TerminateInstance { .. } => "TerminateInstance",
            Action::SetTargetSize { .. } => "SetTargetSize",
            Action::EvictPod { .. } => "EvictPod",
            _ => "",
        };
        if self.throttled.contains(&kind) {
            return Outcome::Retry {
                message: format!("{kind}: throttled by AWS after retries"),
            };
        }
        if self.lost.contains(&kind) {
            return Outcome::Done;
        }
        if self.refused.contains(&kind) {
            return Outcome::Failed {
                message: format!("{kind}: refused by AWS (ValidationError)"),
            };
        }
        match action {
            Action::SetTargetSize { group, to, .. } => {
                let now = self.now;
                let g = self
                    .groups
                    .iter_mut()
                    .find(|g| &g.spec.id == group)
                    .expect("group");
                assert!(
                    *to <= g.spec.max_size,
                    "target {to} above max {}",
                    g.spec.max_size
                );
                // Below the running instances EC2 Auto Scaling would choose which to
                // terminate, running pods and all: the planner never asks for that.
                let live = g
                    .instances
                    .iter()
                    .filter(|i| i.state != InstanceState::Terminating)
                    .count() as u32;
                if self.describe_lag && *to < live {
                    // A planner that saw a stale describe cannot know better: the AWS
                    // adapter reads the group afresh and refuses (defence in depth).
                    return Outcome::Failed {
                        message: format!(
                            "refused: desired capacity {to} is below the {live} live instances"
                        ),
                    };
                }
                assert!(
                    *to >= live,
                    "desired capacity {to} asked for {group} while {live} instances run"
                );
                while (g.instances.len() as u32) < *to {
                    self.next_instance += 1;
                    g.instances.push(InstanceView {
                        id: InstanceId::new(format!("i-{:04}", self.next_instance)),
                        zone: g.spec.zones[0].clone(),
                        state: InstanceState::Pending,
                        launched_at: now,
                    });
                }
                g.target = *to;
            }
            Action::TerminateInstance {
                group, instance, ..
            } => {
                let g = self
                    .groups
                    .iter_mut()
                    .find(|g| &g.spec.id == group)
                    .expect("group");
                // An instance no longer in the group (EC2 took it back) is refused:
                // nothing is decremented.
                if !g.instances.iter().any(|i| &i.id == instance) {
                    return Outcome::Gone;
                }
                g.instances.retain(|i| &i.id != instance);
                g.target = g.target.saturating_sub(1);
                // Every node name the instance really runs, its Node object as it
                // says or not (no providerID, deleted): their pods die with it.
                let mut gone: Vec<(NodeName, bool)> = self
                    .nodes
                    .iter()
                    .filter(|n| n.instance.as_ref() == Some(instance))
                    .map(|n| (n.name.clone(), n.ready))
                    .collect();
                for (name, machine) in &self.machines {
                    if machine == instance && !gone.iter().any(|(n, _)| n == name) {
                        let ready = self
                            .nodes
                            .iter()
                            .find(|n| &n.name == name)
                            .is_none_or(|n| n.ready);
                        gone.push((name.clone(), ready));
                    }
                }
                self.machines.retain(|_, m| m != instance);
                self.nodes.retain(|n| {
                    n.instance.as_ref() != Some(instance)
                        && !gone.iter().any(|(name, _)| name == &n.name)
                });
                let now = self.now;
                for (name, ready) in gone {
                    for p in self
                        .pods
                        .iter_mut()
                        .filter(|p| p.node.as_ref() == Some(&name))
                    {
                        // No workload at all may be on a node when its instance goes:
                        // every removal is fenced and verified first. (A pod stuck
                        // terminating on a dead node is gone already in all but name.)
                        assert!(
                            !p.occupies_node()
                                || p.is_node_infrastructure()
                                || (!ready && p.stuck_terminating(now)),
                            "terminated node {name} while pod {} ran on it",
                            p.key
                        );
                    }
                    self.pods.retain(|p| p.node.as_ref() != Some(&name));
                }
            }
            Action::DetachInstance {
                group, instance, ..
            } => {
                // The instance leaves its group (desired -1) and runs on, its node and
                // pods with it, until the cloud takes it back.
                let g = self
                    .groups
                    .iter_mut()
                    .find(|g| &g.spec.id == group)
                    .expect("group");
                g.instances.retain(|i| &i.id != instance);
                g.target = g.target.saturating_sub(1);
                for n in self
                    .nodes
                    .iter_mut()
                    .filter(|n| n.instance.as_ref() == Some(instance))
                {
                    n.group = None;
                }
            }
            Action::RetireNode { node, reason, .. } => {
                let now = self.now;
                let n = self
                    .nodes
                    .iter_mut()
                    .find(|n| &n.name == node)
                    .expect("node");
                n.taints
                    .push(Taint::new(TAINT_RETIRING, "", TaintEffect::NoSchedule));
                n.retired = Some(RetireMark {
                    since: now,
                    reason: reason.clone(),
                });
            }
            Action::UnretireNode { node, .. } => {
                let n = self
                    .nodes
                    .iter_mut()
                    .find(|n| &n.name == node)
                    .expect("node");
                n.taints.retain(|t| t.key != TAINT_RETIRING);
                n.retired = None;
            }
            Action::VerifyRemoval { instance, node, .. } => {
                // As the Kubernetes adapter reads it: the node backing the instance,
                // and the pods bound to it and to the name decided on.
                let found = self
                    .nodes
                    .iter()
                    .find(|n| n.instance.as_ref() == Some(instance))
                    .cloned();
                let mut names: Vec<&NodeName> = found.iter().map(|n| &n.name).collect();
                if let Some(expected) = node.as_ref().filter(|n| !names.contains(n)) {
                    names.push(expected);
                }
                let pods = self
                    .pods
                    .iter()
                    .filter(|p| p.node.as_ref().is_some_and(|n| names.contains(&n)))
                    .cloned()
                    .collect();
                return Outcome::Evidence(planner::RemovalEvidence { node: found, pods });
            }
            Action::EvictPod { pod, .. } => {
                let p = self.pods.iter().find(|p| &p.key == pod).expect("pod");
                assert!(
                    matches!(
                        planner::disposition(p, &self.settings),
                        planner::PodDisposition::Evictable | planner::PodDisposition::Expendable
                    ),
                    "evicted a pod that must finish: {pod} ({:?})",
                    p.owner
                );
                self.pods.retain(|p| &p.key != pod);
            }
            Action::MarkIdle { node, since, .. } => {
                if let Some(n) = self.nodes.iter_mut().find(|n| &n.name == node) {
                    n.idle_since = *since;
                }
            }
            Action::PersistBackoff { .. } => {}
            Action::UpdateProvisioningRequest {
                request,
                conditions,
                ..
            } => {
                let Some(r) = self.requests.iter_mut().find(|r| &r.key == request) else {
                    return Outcome::Gone;
                };
                for c in conditions {
                    r.conditions.retain(|have| have.kind != c.kind);
                    r.conditions.push(c.clone());
                }
            }
        }
        Outcome::Done
    }

    /// Every launched instance becomes a ready node.
    pub fn register_all(&mut self) {
        let now = self.now;
        for g in &mut self.groups {
            for inst in &mut g.instances {
                inst.state = InstanceState::InService;
                let name = NodeName::new(format!("node-{}", inst.id));
                // Registered already (a node without providerID still holds the name;
                // a deleted Node object is registered again by its kubelet).
                if self
                    .nodes
                    .iter()
                    .any(|n| n.instance.as_ref() == Some(&inst.id) || n.name == name)
                {
                    continue;
                }
                let mut node = NodeView::new(name.clone(), g.spec.shape.allocatable.clone(), now);
                node.labels.extend(g.spec.template_labels(&inst.zone));
                node.taints = g.spec.taints.clone();
                node.instance = Some(inst.id.clone());
                node.group = Some(g.spec.id.clone());
                self.machines.insert(name, inst.id.clone());
                self.nodes.push(node);
            }
        }
    }

    /// Binds pending pods first-fit to ready nodes (a stand-in scheduler).
    pub fn schedule(&mut self) {
        let snapshot = self.snapshot();
        let mut sim = planner::placement::PlacementSim::new(&snapshot.pods);
        for n in &snapshot.nodes {
            let mut used = Resources::zero();
            let residents: Vec<usize> = snapshot
                .pods
                .iter()
                .enumerate()
                .filter(|(_, p)| p.occupies_node() && p.node.as_ref() == Some(&n.name))
                .map(|(i, _)| i)
                .collect();
            for &i in &residents {
                used.add(&snapshot.pods[i].requests);
            }
            sim.add_node(planner::placement::SimNode {
                name: n.name.clone(),
                origin: planner::placement::NodeOrigin::Existing,
                group: n.group.clone(),
                labels: std::sync::Arc::new(n.labels.clone()),
                taints: std::sync::Arc::new(n.taints.clone()),
                allocatable: n.allocatable.clone(),
                used,
                ready: n.ready,
                cordoned: n.cordoned,
                residents,
            });
        }
        let all: Vec<usize> = (0..sim.nodes().len()).collect();
        // Largest first, as a bin-packing scheduler profile would.
        let mut order: Vec<usize> = (0..snapshot.pods.len())
            .filter(|&i| snapshot.pods[i].is_unbound_pending())
            .collect();
        order.sort_by_key(|&i| {
            std::cmp::Reverse((
                snapshot.pods[i].requests.gpus(),
                snapshot.pods[i].requests.cpu_millis,
                snapshot.pods[i].requests.memory_bytes,
            ))
        });
        for i in order {
            if let Some(n) = sim.first_fit(i, all.iter().copied()) {
                sim.place(i, n);
                let name = sim.node(n).name.clone();
                let pod = &mut self.pods[i];
                pod.node = Some(name);
                pod.phase = PodPhase::Running;
                pod.started = Some(self.now);
                pod.unschedulable = false;
            } else {
                self.pods[i].unschedulable = true;
            }
        }
    }

    pub fn finish(&mut self, name: &str) {
        let p = self
            .pods
            .iter_mut()
            .find(|p| p.key.name == name)
            .expect("pod");
        p.phase = PodPhase::Succeeded;
    }

    pub fn scale_ups(actions: &[Action]) -> Vec<(String, u32, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SetTargetSize {
                    group,
                    from,
                    to,
                    reason: planner::TargetReason::ScaleUp { .. },
                    ..
                } => Some((group.to_string(), *from, *to)),
                _ => None,
            })
            .collect()
    }

    pub fn terminations(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::TerminateInstance { instance, .. } => Some(instance.to_string()),
                _ => None,
            })
            .collect()
    }
}

/// Cluster Autoscaler's fixed scale-down timers (10 minutes unneeded, no pause after a
/// scale-up), which most tests are written against; `batch_defaults()` has `auto`.
pub fn settings() -> PlannerSettings {
    PlannerSettings {
        scale_down_delay_after_add: Duration::ZERO.into(),
        scale_down_unneeded_time: Duration::from_secs(600).into(),
        ..PlannerSettings::default()
    }
}
