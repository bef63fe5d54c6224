//! Bookkeeping between passes: target requests until the snapshot shows them, launch
//! failures (pool backoff and giving back undelivered capacity), launch timeouts,
//! and action outcomes.

use crate::actions::{Action, BackoffRecord, Outcome, TargetReason, TerminateReason};
use crate::events::PlannerEvent;
use crate::{ActionId, Planner, TargetRequest};
use model::{ClusterSnapshot, InstanceState, LaunchFailure, LaunchFailureKind, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a requested target is trusted over a snapshot that does not show it yet:
/// a describe right after SetDesiredCapacity may still show the old value. Past this
/// grace a describe that contradicts the request is the truth (someone else set the
/// desired capacity, a scheduled action ran, a call was accepted and not applied).
const TARGET_REQUEST_GRACE: Duration = Duration::from_secs(30);

/// How long a request that the planner's own removals explain (the cloud's desired
/// capacity still counts instances whose TerminateInstance is to come) is kept.
const TARGET_REQUEST_TRUST: Duration = Duration::from_secs(120);

impl Planner {
    pub(crate) fn announce_backoff(&mut self, now: Time, record: BackoffRecord) {
        self.wake(record.until);
        self.emit(
            now,
            PlannerEvent::PoolBackedOff {
                pool: record.pool.clone(),
                kind: record.kind,
                until: record.until,
                message: record.message.clone(),
            },
        );
        let id = self.next_id();
        self.actions
            .push_back(Action::PersistBackoff { id, record });
    }

    pub(crate) fn expire_backoffs(&mut self, now: Time) {
        for pool in self.pools.take_expired(now) {
            self.emit(now, PlannerEvent::PoolBackoffExpired { pool });
        }
        if let Some(at) = self.pools.next_expiry(now) {
            self.wake(at);
        }
    }

    /// Forgets target requests the snapshot now shows, and those it contradicts past
    /// the describe-lag grace (explained by no removal of ours still to come).
    pub(crate) fn reconcile_requests(&mut self, now: Time, snapshot: &ClusterSnapshot) {
        let decrements: BTreeMap<_, u32> = self
            .requested_targets
            .keys()
            .map(|g| (g.clone(), self.decrements_to_come(g)))
            .collect();
        let mut contradicted = Vec::new();
        self.requested_targets
            .retain(|group, TargetRequest { target, at }| {
                let seen = snapshot
                    .groups
                    .iter()
                    .find(|g| &g.spec.id == group)
                    .map(|g| g.target);
                let Some(seen) = seen else { return false };
                let age = now.saturating_since(*at);
                let to_come = decrements.get(group).copied().unwrap_or(0);
                if seen == *target {
                    false
                } else if age < TARGET_REQUEST_GRACE {
                    true
                } else if seen == *target + to_come && to_come > 0 {
                    age < TARGET_REQUEST_TRUST
                } else {
                    contradicted.push((group.clone(), *target, seen, age));
                    false
                }
            });
        for (group, asked, seen, age) in contradicted {
            self.emit(
                now,
                PlannerEvent::Warning {
                    message: format!(
                        "group {group} shows desired capacity {seen}, not the {asked} asked for {}s ago: planning on what the cloud shows",
                        age.as_secs()
                    ),
                },
            );
        }
        self.forget_unapplied_terminations(now, snapshot);
        // Instances we asked to terminate and that are gone need no more tracking.
        let live: BTreeSet<_> = snapshot
            .groups
            .iter()
            .flat_map(|g| {
                g.instances
                    .iter()
                    .filter(|i| i.state != InstanceState::Terminating)
                    .map(|i| &i.id)
            })
            .collect();
        self.terminating.retain(|id, _| live.contains(id));
        self.timed_out.retain(|id| live.contains(id));
        self.known_nodes.retain(|id, _| live.contains(id));
        for n in &snapshot.nodes {
            if let Some(instance) = n.instance.as_ref().filter(|i| live.contains(i)) {
                self.known_nodes
                    .insert(instance.clone(), (n.name.clone(), now));
            }
        }
        let names: BTreeSet<_> = snapshot.nodes.iter().map(|n| &n.name).collect();
        self.idle_since.retain(|n, _| names.contains(n));
        self.unneeded_since.retain(|n, _| names.contains(n));
        self.pending_removals.retain(|n, _| names.contains(n));
        self.draining_since.retain(|n, _| names.contains(n));
        self.drain_backoffs.retain_nodes(&names);
        let draining = &self.draining_since;
        self.drains_awaiting_taint
            .retain(|n| draining.contains_key(n));
    }

    /// A cloud adapter reported failed launches: back the pool off and give back the
    /// desired capacity that will not be delivered.
    pub(crate) fn on_launch_failure(&mut self, now: Time, failure: LaunchFailure) {
        let Some(spec) = self.last_specs.get(&failure.group).cloned() else {
            if self.last_revision.is_none() {
                // Reported before the first snapshot: handle it once groups are known.
                self.early_failures.push(failure);
            } else {
                self.emit(
                    now,
                    PlannerEvent::Warning {
                        message: format!(
                            "launch failure for unknown group {}: {}",
                            failure.group, failure.message
                        ),
                    },
                );
            }
            return;
        };
        let zones: Vec<_> = match &failure.zone {
            Some(z) => vec![z.clone()],
            None => spec.zones.clone(),
        };
        for zone in zones {
            let record =
                self.pools
                    .record_failure(now, spec.pool(&zone), failure.kind, &failure.message);
            self.announce_backoff(now, record);
        }
        self.gangs.group_failed(&failure.group);
        // Pods waiting for this group's nodes must be planned again.
        self.nominated
            .retain(|_, (group, _)| *group != failure.group);
        let target = self
            .requested_targets
            .get(&failure.group)
            .map(|r| r.target)
            .or(self.last_targets.get(&failure.group).copied());
        let live = self
            .last_instance_counts
            .get(&failure.group)
            .copied()
            .unwrap_or(0);
        if let Some(target) = target {
            let undelivered = failure.count.min(target.saturating_sub(live));
            if undelivered > 0 {
                self.give_back(now, &failure.group, target, undelivered);
            }
        }
    }

    /// Asks the cloud to move `group` from the planner's target `from` to `to`. The
    /// desired capacity sent adds the group's removals still to reach
    /// TerminateInstance: their decrements come after this action, while `from` and
    /// `to` count those instances as gone already.
    pub(crate) fn push_target_size(
        &mut self,
        group: &model::NodeGroupId,
        from: u32,
        to: u32,
        reason: TargetReason,
    ) {
        let pending = self.decrements_to_come(group);
        let id = self.next_id();
        self.actions.push_back(Action::SetTargetSize {
            id,
            group: group.clone(),
            from: from + pending,
            to: to + pending,
            reason,
        });
    }

    /// Lowers a group's target from `from` by `undelivered` nodes the cloud will not
    /// deliver, and remembers the new target until a snapshot shows it.
    /// Never below the group's live instances: lowering the desired capacity under
    /// them would let AWS pick instances to terminate, running pods and all.
    pub(crate) fn give_back(
        &mut self,
        now: Time,
        group: &model::NodeGroupId,
        from: u32,
        undelivered: u32,
    ) {
        // Instances being removed are not staying (`from` leaves them out already).
        let live = self
            .last_instance_counts
            .get(group)
            .copied()
            .unwrap_or(0)
            .saturating_sub(self.decrements_to_come(group));
        let to = from.saturating_sub(undelivered).max(live.min(from));
        let undelivered = from - to;
        if undelivered > 0 {
            self.push_target_size(group, from, to, TargetReason::GiveBack { undelivered });
            self.emit(
                now,
                PlannerEvent::CapacityGivenBack {
                    group: group.clone(),
                    count: undelivered,
                },
            );
        }
        self.requested_targets.insert(
            group.clone(),
            TargetRequest {
                target: to,
                at: now,
            },
        );
    }

    /// Instances that never became nodes within the provision time are terminated and
    /// their pool backed off.
    pub(crate) fn handle_launch_timeouts(&mut self, now: Time, snapshot: &ClusterSnapshot) {
        let registered: BTreeSet<_> = snapshot
            .nodes
            .iter()
            .filter_map(|n| n.instance.as_ref())
            .collect();
        let limit = self.settings.max_node_provision_time;
        // Nodes that no instance is known to back: a node registers before the cloud
        // controller sets its providerID, and one may never get it.
        let provider_less: Vec<&model::NodeView> = snapshot
            .nodes
            .iter()
            .filter(|n| n.instance.is_none())
            .collect();
        // Pods bound to a name no Node object has (deleted while its kubelet runs on)
        // and that no instance is known to have had: they may run on any instance that
        // has no node. None of those is removed until the pod garbage collector has
        // deleted such orphans (within a minute of the Node's deletion).
        let names: BTreeSet<&model::NodeName> = snapshot.nodes.iter().map(|n| &n.name).collect();
        let known_names: BTreeSet<&model::NodeName> =
            self.known_nodes.values().map(|(n, _)| n).collect();
        let unknown_orphans = snapshot.pods.iter().any(|p| {
            p.occupies_node()
                && !self.settings.is_node_infrastructure(p)
                && p.node
                    .as_ref()
                    .is_some_and(|n| !names.contains(n) && !known_names.contains(n))
        });
        for group in &snapshot.groups {
            for instance in &group.instances {
                if instance.state == InstanceState::Terminating
                    || registered.contains(&instance.id)
                    || self.terminating.contains_key(&instance.id)
                    || unknown_orphans
                {
                    continue;
                }
                // Such a node may be this instance, pods and all: it is not timed out
                // while one could be (only nodes that could: a Fargate node or one in
                // another zone holds up nothing).
                if provider_less
                    .iter()
                    .any(|n| could_be_instance(n, &group.spec, instance))
                {
                    continue;
                }
                // It was a node once and its Node object went (deleted, or its
                // providerID lost): not a launch that failed. Its kubelet gets the
                // provision time to register again; then it is removed like any node
                // that is not ready, on the evidence of the name it had, and its pool
                // is not blamed.
                let known = self.known_nodes.get(&instance.id).map(|(_, seen)| *seen);
                let deadline = known.unwrap_or(instance.launched_at) + limit;
                if now < deadline {
                    self.wake(deadline);
                    continue;
                }
                self.begin_removal(
                    now,
                    &group.spec.id,
                    &instance.id,
                    None,
                    if known.is_some() {
                        TerminateReason::Unready
                    } else {
                        TerminateReason::LaunchTimeout
                    },
                );
                if known.is_some() || !self.timed_out.insert(instance.id.clone()) {
                    // Blamed when it first timed out; this is another try at removing it.
                    continue;
                }
                self.emit(
                    now,
                    PlannerEvent::LaunchTimedOut {
                        instance: instance.id.clone(),
                        group: group.spec.id.clone(),
                    },
                );
                let record = self.pools.record_failure(
                    now,
                    group.spec.pool(&instance.zone),
                    LaunchFailureKind::LaunchTimeout,
                    &format!(
                        "instance {} did not become a node within {}",
                        instance.id,
                        model::format_duration(limit)
                    ),
                );
                self.announce_backoff(now, record);
            }
        }
    }

    pub(crate) fn on_outcome(&mut self, now: Time, id: ActionId, outcome: Outcome) {
        let Some(action) = self.in_flight.remove(&id) else {
            return;
        };
        if self.removal_outcome(now, &action, &outcome) {
            return;
        }
        if self.interruption_outcome(now, &action, &outcome) {
            if let Outcome::Retry { message } | Outcome::Failed { message } = outcome {
                self.emit(
                    now,
                    PlannerEvent::ActionFailed {
                        action: action.to_string(),
                        message,
                    },
                );
            }
            return;
        }
        match outcome {
            Outcome::Done | Outcome::Gone | Outcome::Evidence(_) => {}
            Outcome::Retry { message } | Outcome::Failed { message } => {
                self.emit(
                    now,
                    PlannerEvent::ActionFailed {
                        action: action.to_string(),
                        message,
                    },
                );
                match action {
                    Action::SetTargetSize { group, .. } => {
                        self.requested_targets.remove(&group);
                    }
                    Action::TerminateInstance {
                        instance,
                        node,
                        group,
                        ..
                    } => {
                        self.terminating.remove(&instance);
                        // Beginning the removal took the instance off the target; it
                        // is still there. Without this a removal retried every pass
                        // drifts the target down until a scale-up asks for less than
                        // runs.
                        self.adjust_requested_target(now, &group, 1);
                        if let Some(node) = node {
                            self.draining_since.remove(&node);
                        }
                        self.last_scale_down_failure = Some(now);
                    }
                    Action::EvictPod { .. } => {
                        // Refused evictions are retried on the next pass, bounded by
                        // max-pod-eviction-time (see scale-down).
                    }
                    Action::RetireNode { node, .. } => {
                        self.pending_removals.remove(&node);
                        // A drain does not go on without its taint.
                        self.draining_since.remove(&node);
                        self.last_scale_down_failure = Some(now);
                    }
                    Action::UpdateProvisioningRequest { request, .. } => {
                        self.requests.update_failed(&request)
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Whether `node`, which no instance is known to back, could be `instance` of a group
/// with `spec`: what the node says of its zone, region and instance type does not
/// contradict the instance, it is no Fargate node, and it registered after the
/// instance launched (a minute's slack for clocks).
fn could_be_instance(
    node: &model::NodeView,
    spec: &model::NodeGroupSpec,
    instance: &model::InstanceView,
) -> bool {
    use model::well_known::{LABEL_INSTANCE_TYPE, LABEL_REGION, LABEL_ZONE};
    let agrees = |key: &str, value: &str| node.labels.get(key).is_none_or(|v| v == value);
    node.labels.get(LABEL_FARGATE_COMPUTE_TYPE) != Some("fargate")
        && agrees(LABEL_ZONE, instance.zone.as_str())
        && agrees(LABEL_REGION, spec.region.as_str())
        && agrees(LABEL_INSTANCE_TYPE, spec.shape.instance_type.as_str())
        && node.created + Duration::from_secs(60) >= instance.launched_at
}

/// EKS labels the nodes it runs Fargate pods on with this (value `fargate`).
const LABEL_FARGATE_COMPUTE_TYPE: &str = "eks.amazonaws.com/compute-type";
