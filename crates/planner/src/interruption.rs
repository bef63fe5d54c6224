//! Interruption notices: an instance is about to go (a spot interruption warning, a
//! state change), may go (a rebalance recommendation) or will go at a known time (a
//! scheduled event).
//!
//! The response is decided once, on the first snapshot that shows the instance in a
//! managed group, and carried out like everything else, in a copy of the snapshot:
//! - the node is **fenced** (our retiring taint) so nothing new lands on it, and kept
//!   out of scale-down and of being taken back (it is going anyway, and AWS's own
//!   cleanup must not race ours);
//! - for a **replacement**, the pods on it are moved, in the copy, to where they will
//!   run once they are killed: onto room that exists (booked there: the node is kept
//!   out of scale-down) or, where there is none, they become pending pods that
//!   scale-up buys for, in a pool it chooses (often-interrupted pools are backed off).
//!   When the pods really die and their controllers recreate them, the room bought
//!   for them is there; nothing is bought twice;
//! - a spot warning in a group without Capacity Rebalancing also **detaches** the
//!   instance (desired capacity -1): the group would otherwise replace it a second
//!   time once EC2 takes it. A group with Capacity Rebalancing replaces it itself, so
//!   its node is only fenced.
//!
//! A notice is forgotten once neither its node nor its instance is in the snapshot.

use crate::actions::{Action, ActionId, BackoffRecord, Outcome};
use crate::events::{InterruptionResponse, PlannerEvent};
use crate::placement::{PlacementSim, SimNode};
use crate::scaledown::{disposition, is_retired, PodDisposition};
use crate::Planner;
use model::well_known::TAINT_RETIRING;
use model::{
    ClusterSnapshot, InstanceId, InstanceState, InterruptionKind, InterruptionNotice, PodPhase,
    PoolKey, Taint, TaintEffect, Time,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Interruptions of one capacity pool, for the status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInterruptions {
    pub pool: PoolKey,
    /// Spot interruption warnings since the process started.
    pub total: u64,
    /// Of those, within `spot-interruption-window`.
    pub recent: u32,
    pub last: Time,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct InterruptionBook {
    tracked: BTreeMap<InstanceId, Tracked>,
    /// Interruption times per pool, within the window.
    recent: BTreeMap<PoolKey, Vec<Time>>,
    totals: BTreeMap<PoolKey, (u64, Time)>,
}

#[derive(Debug, Clone)]
struct Tracked {
    notice: InterruptionNotice,
    /// Decided on the first snapshot that shows the instance.
    response: Option<InterruptionResponse>,
    /// The node whose fence is written (or was there already).
    fenced: Option<model::NodeName>,
    detach: Detach,
    /// The detach in flight lowered the group's remembered target request (a request
    /// the cloud does not show yet would otherwise still count the instance).
    lowered_request: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detach {
    NotWanted,
    Wanted,
    InFlight(ActionId),
    Done,
}

/// How long a rebalance recommendation is acted on. EC2 sends one when the risk of an
/// interruption rises, typically minutes before a warning if one comes at all; after an
/// hour without one it is stale.
const REBALANCE_RECOMMENDATION_LIFETIME: Duration = Duration::from_secs(3600);

/// Which notice wins when an instance has several: the more urgent.
fn urgency(kind: InterruptionKind) -> u8 {
    match kind {
        InterruptionKind::RebalanceRecommendation => 0,
        InterruptionKind::ScheduledChange => 1,
        InterruptionKind::StateChange => 2,
        InterruptionKind::SpotInterruption => 3,
    }
}

impl Planner {
    /// An interruption notice from the cloud (see the module docs for what follows).
    pub fn handle_interruption(&mut self, now: Time, notice: InterruptionNotice) {
        if !self.settings.interruption_handling {
            self.emit(
                now,
                PlannerEvent::InterruptionIgnored {
                    instance: notice.instance,
                    kind: notice.kind,
                    why: "interruption handling is off".into(),
                },
            );
            return;
        }
        match self.interruptions.tracked.get_mut(&notice.instance) {
            Some(t) if urgency(notice.kind) > urgency(t.notice.kind) => {
                // Decided afresh; what was already done (fence, detach) stays done.
                t.notice = notice;
                t.response = None;
            }
            Some(_) => {}
            None => {
                let id = notice.instance.clone();
                self.interruptions.tracked.insert(
                    id,
                    Tracked {
                        notice,
                        response: None,
                        fenced: None,
                        detach: Detach::NotWanted,
                        lowered_request: false,
                    },
                );
            }
        }
        self.wake(now);
    }

    /// Interruptions per pool (status report).
    pub fn interruptions(&self, now: Time) -> Vec<PoolInterruptions> {
        let window = self.settings.spot_interruption_window;
        self.interruptions
            .totals
            .iter()
            .map(|(pool, &(total, last))| PoolInterruptions {
                pool: pool.clone(),
                total,
                recent: self.interruptions.recent.get(pool).map_or(0, |v| {
                    v.iter()
                        .filter(|t| now.saturating_since(**t) < window)
                        .count() as u32
                }),
                last,
            })
            .collect()
    }

    /// Decides and carries out the response to new notices, and returns the snapshot
    /// the rest of the pass plans on (the module docs say what changes in it).
    pub(crate) fn prepare_interruptions(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
    ) -> Option<ClusterSnapshot> {
        // A recommendation is no warning: most are never followed by an interruption.
        // Forgotten after a while; a node fenced for one keeps its fence and goes the
        // ordinary way once its pods are done.
        self.interruptions.tracked.retain(|_, t| {
            t.notice.kind != InterruptionKind::RebalanceRecommendation
                || now.saturating_since(t.notice.at) < REBALANCE_RECOMMENDATION_LIFETIME
        });
        if self.interruptions.tracked.is_empty() {
            return None;
        }
        let mut out = snapshot.clone();
        let mut doomed: BTreeSet<usize> = BTreeSet::new();
        let mut moving: Vec<usize> = Vec::new();
        let ids: Vec<InstanceId> = self.interruptions.tracked.keys().cloned().collect();
        for id in ids {
            let node_index = snapshot
                .nodes
                .iter()
                .position(|n| n.instance.as_ref() == Some(&id));
            let in_group = snapshot.groups.iter().enumerate().find_map(|(gi, g)| {
                g.instances
                    .iter()
                    .position(|i| i.id == id)
                    .map(|ii| (gi, ii))
            });
            let tracked = self.interruptions.tracked[&id].clone();
            if node_index.is_none() && in_group.is_none() {
                if tracked.response.is_none() {
                    self.emit(
                        now,
                        PlannerEvent::InterruptionIgnored {
                            instance: id.clone(),
                            kind: tracked.notice.kind,
                            why: "no managed group has this instance".into(),
                        },
                    );
                }
                self.interruptions.tracked.remove(&id);
                continue;
            }
            let response = match tracked.response.clone() {
                Some(r) => r,
                None => {
                    let Some((gi, ii)) = in_group else {
                        self.emit(
                            now,
                            PlannerEvent::InterruptionIgnored {
                                instance: id.clone(),
                                kind: tracked.notice.kind,
                                why: "its node is not in a group the autoscaler manages".into(),
                            },
                        );
                        self.interruptions.tracked.remove(&id);
                        continue;
                    };
                    let r = self.decide_interruption(
                        now,
                        snapshot,
                        &tracked.notice,
                        gi,
                        ii,
                        node_index,
                    );
                    let t = self.interruptions.tracked.get_mut(&id).expect("tracked");
                    t.response = Some(r.clone());
                    if matches!(r, InterruptionResponse::Replace { detach: true })
                        && t.detach == Detach::NotWanted
                    {
                        t.detach = Detach::Wanted;
                    }
                    r
                }
            };
            if let InterruptionResponse::Nothing { .. } = response {
                self.interruptions.tracked.remove(&id);
                continue;
            }
            let kind = tracked.notice.kind;
            if let Some(ni) = node_index {
                let node = &snapshot.nodes[ni];
                let t = self.interruptions.tracked.get_mut(&id).expect("tracked");
                if t.fenced.is_none() {
                    t.fenced = Some(node.name.clone());
                    if !is_retired(node) {
                        let reason = match tracked.notice.detail.as_str() {
                            "" => kind.as_str().to_owned(),
                            detail => format!("{kind}: {detail}"),
                        };
                        let action_id = self.next_id();
                        self.actions.push_back(Action::RetireNode {
                            id: action_id,
                            node: node.name.clone(),
                            reason,
                        });
                    }
                }
                let fenced = &mut out.nodes[ni];
                if !fenced.taints.iter().any(|t| t.key == TAINT_RETIRING) {
                    fenced.taints.push(Taint {
                        key: TAINT_RETIRING.into(),
                        value: String::new(),
                        effect: TaintEffect::NoSchedule,
                    });
                }
                // A node with a scheduled retirement, or a recommendation that may never
                // be followed by an interruption, goes the ordinary (verified) way once
                // its pods are done; any other is going anyway: hands off.
                if !matches!(
                    kind,
                    InterruptionKind::ScheduledChange | InterruptionKind::RebalanceRecommendation
                ) {
                    fenced.scale_down_disabled = true;
                }
                doomed.insert(ni);
                if let InterruptionResponse::Replace { .. } = response {
                    moving.extend(
                        snapshot
                            .pods
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| {
                                p.node.as_ref() == Some(&node.name)
                                    && p.occupies_node()
                                    && !self.settings.is_node_infrastructure(p)
                            })
                            .map(|(pi, _)| pi),
                    );
                }
            }
            if let (InterruptionResponse::Replace { detach: true }, Some((gi, _))) =
                (&response, in_group)
            {
                let group = snapshot.groups[gi].spec.id.clone();
                let mut detach = self.interruptions.tracked[&id].detach;
                if detach == Detach::Wanted {
                    let action_id = self.next_id();
                    detach = Detach::InFlight(action_id);
                    // The detach lowers the desired capacity by one, whatever was
                    // asked before: a remembered request must lose the instance too.
                    let lowered_request = match self.requested_targets.get_mut(&group) {
                        Some(r) => {
                            r.target = r.target.saturating_sub(1);
                            true
                        }
                        None => false,
                    };
                    let t = self.interruptions.tracked.get_mut(&id).expect("tracked");
                    t.detach = detach;
                    t.lowered_request = lowered_request;
                    let node = node_index.map(|ni| snapshot.nodes[ni].name.clone());
                    self.actions.push_back(Action::DetachInstance {
                        id: action_id,
                        group,
                        instance: id.clone(),
                        node,
                    });
                }
                if detach != Detach::NotWanted {
                    // Plan on the group as it is once the instance has left it.
                    let g = &mut out.groups[gi];
                    // Still listed while it leaves (`Detaching`): the cloud lowered the
                    // desired capacity with the detach already; lowering it again here
                    // would plan below the instances that stay.
                    let left_already = g
                        .instances
                        .iter()
                        .any(|i| i.id == id && i.state == InstanceState::Terminating);
                    // By id: an earlier notice of this pass may have removed another.
                    g.instances.retain(|i| i.id != id);
                    if !left_already {
                        g.target = g.target.saturating_sub(1);
                    }
                    if let Some(ni) = node_index {
                        out.nodes[ni].group = None;
                    }
                }
            }
        }
        if !moving.is_empty() {
            self.move_doomed_pods(now, snapshot, &mut out, &doomed, &moving);
        }
        Some(out)
    }

    fn decide_interruption(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        notice: &InterruptionNotice,
        gi: usize,
        ii: usize,
        node_index: Option<usize>,
    ) -> InterruptionResponse {
        let group = &snapshot.groups[gi];
        let spec = &group.spec;
        let pool = spec.pool(&group.instances[ii].zone);
        let node = node_index.map(|ni| &snapshot.nodes[ni]);
        let pods: Vec<&model::PodView> = node.map_or_else(Vec::new, |n| {
            snapshot
                .pods
                .iter()
                .filter(|p| {
                    p.node.as_ref() == Some(&n.name)
                        && p.occupies_node()
                        && !self.settings.is_node_infrastructure(p)
                })
                .collect()
        });
        let rebalancing = "the group's Capacity Rebalancing launches the replacement".to_owned();
        let launching = group.instances[ii].state == model::InstanceState::Pending;
        let response = match notice.kind {
            InterruptionKind::SpotInterruption if spec.capacity_rebalance => {
                InterruptionResponse::Fence { why: rebalancing }
            }
            // EC2 Auto Scaling detaches only InService instances; one still launching
            // carries no work yet, and its group replaces it.
            InterruptionKind::SpotInterruption if launching => InterruptionResponse::Fence {
                why: "the instance is still launching: its group replaces it".into(),
            },
            // Its removal has begun (the node was empty): the TerminateInstance to come
            // takes it off the desired capacity; a detach would count it twice.
            InterruptionKind::SpotInterruption
                if self.terminating.contains_key(&notice.instance) =>
            {
                InterruptionResponse::Fence {
                    why: "its removal is under way: the termination takes it off its group".into(),
                }
            }
            InterruptionKind::SpotInterruption => InterruptionResponse::Replace { detach: true },
            InterruptionKind::RebalanceRecommendation => {
                let going = node.is_some_and(|n| {
                    is_retired(n)
                        || self.draining_since.contains_key(&n.name)
                        || self.terminating.contains_key(&notice.instance)
                });
                let must_finish = pods
                    .iter()
                    .any(|p| disposition(p, &self.settings) == PodDisposition::MustFinish);
                if spec.capacity_rebalance {
                    InterruptionResponse::Fence { why: rebalancing }
                } else if node.is_none() {
                    InterruptionResponse::Nothing {
                        why: "no node has registered for the instance yet".into(),
                    }
                } else if going {
                    InterruptionResponse::Nothing {
                        why: "the node is already on its way out".into(),
                    }
                } else if !must_finish {
                    InterruptionResponse::Nothing {
                        why: "no must-finish pod on the node: its work can move if the instance is interrupted".into(),
                    }
                } else {
                    InterruptionResponse::Replace { detach: false }
                }
            }
            InterruptionKind::StateChange => InterruptionResponse::Fence {
                why: format!(
                    "the instance is {}: its group replaces it",
                    detail_or(&notice.detail, "going")
                ),
            },
            InterruptionKind::ScheduledChange => InterruptionResponse::Fence {
                why: format!(
                    "{} scheduled: the node takes no new work and goes once its pods are done",
                    detail_or(&notice.detail, "an event")
                ),
            },
        };
        if notice.kind == InterruptionKind::SpotInterruption {
            self.count_interruption(now, pool.clone());
        }
        self.emit(
            now,
            PlannerEvent::InstanceInterrupted {
                instance: notice.instance.clone(),
                group: spec.id.clone(),
                node: node.map(|n| n.name.clone()),
                kind: notice.kind,
                pool,
                pods: pods.iter().map(|p| p.key.clone()).collect(),
                response: response.clone(),
            },
        );
        response
    }

    /// Puts the pods of doomed nodes, in the copy, where they will run once they are
    /// killed: on room that exists (booked: that node stays out of scale-down), else
    /// pending, for scale-up to buy.
    fn move_doomed_pods(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        out: &mut ClusterSnapshot,
        doomed: &BTreeSet<usize>,
        moving: &[usize],
    ) {
        let moving_set: BTreeSet<usize> = moving.iter().copied().collect();
        let node_index: crate::hash::FxHashMap<&model::NodeName, usize> = snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (&n.name, i))
            .collect();
        let mut occupants: Vec<Vec<usize>> = vec![Vec::new(); snapshot.nodes.len()];
        for (pi, p) in snapshot.pods.iter().enumerate() {
            if moving_set.contains(&pi) {
                continue;
            }
            if let Some(&ni) = p
                .node
                .as_ref()
                .filter(|_| p.occupies_node())
                .and_then(|n| node_index.get(n))
            {
                occupants[ni].push(pi);
            }
        }
        // Where the pods may go: schedulable nodes that are staying, Ready or still
        // within their provision time (a replacement that has just registered).
        let provision = self.settings.max_node_provision_time;
        let mut sim = PlacementSim::new(&snapshot.pods);
        let mut slot_node = BTreeMap::new();
        for (ni, n) in snapshot.nodes.iter().enumerate() {
            let young = now.saturating_since(n.created) < provision;
            let leaving = n
                .instance
                .as_ref()
                .is_some_and(|i| self.terminating.contains_key(i));
            if doomed.contains(&ni) || n.cordoned || is_retired(n) || leaving || !(n.ready || young)
            {
                continue;
            }
            let mut sim_node = SimNode::existing(n, &snapshot.pods, &occupants[ni]);
            sim_node.ready = true;
            if young {
                // A replacement that has just registered still carries the startup
                // taints: they mean "not yet", not "never" (as in scale-up).
                sim_node.taints = std::sync::Arc::new(
                    n.taints
                        .iter()
                        .filter(|t| !crate::scaleup::STARTUP_TAINTS.contains(&t.key.as_str()))
                        .cloned()
                        .collect(),
                );
            }
            let slot = sim.add_node(sim_node);
            slot_node.insert(slot, ni);
        }
        let slots: Vec<usize> = slot_node.keys().copied().collect();
        let mut booked = BTreeSet::new();
        for &pi in moving {
            let p = &mut out.pods[pi];
            // The replacement pod is one pod, not a gang to launch again or a
            // request's consumer.
            p.gang = None;
            p.consumes_request = None;
            match sim.first_fit(pi, slots.iter().copied()) {
                Some(slot) => {
                    sim.place(pi, slot);
                    let ni = slot_node[&slot];
                    p.node = Some(snapshot.nodes[ni].name.clone());
                    booked.insert(ni);
                }
                None => {
                    p.node = None;
                    p.phase = PodPhase::Pending;
                    p.started = None;
                    p.unschedulable = true;
                }
            }
        }
        for ni in booked {
            // Held for the pods: out of scale-down, and not idle. Its idle time starts
            // afresh once the booking ends (the pods died and their retries are on the
            // way), so time spent waiting for them never makes it removable.
            let node = &mut out.nodes[ni];
            node.scale_down_disabled = true;
            self.idle_since.remove(&node.name);
            self.unneeded_since.remove(&node.name);
            if node.idle_since.take().is_some() {
                let id = self.next_id();
                self.actions.push_back(Action::MarkIdle {
                    id,
                    node: node.name.clone(),
                    since: None,
                });
            }
        }
    }

    /// A spot interruption counts against its pool; repeated ones back it off.
    fn count_interruption(&mut self, now: Time, pool: PoolKey) {
        let s = &self.settings;
        let (window, threshold) = (s.spot_interruption_window, s.spot_interruption_threshold);
        let (initial, max) = (s.spot_interruption_backoff, s.max_spot_interruption_backoff);
        let total = self
            .interruptions
            .totals
            .entry(pool.clone())
            .or_insert((0, now));
        *total = (total.0 + 1, now);
        let recent = self.interruptions.recent.entry(pool.clone()).or_default();
        recent.retain(|t| now.saturating_since(*t) < window);
        recent.push(now);
        let count = recent.len() as u32;
        if threshold > 0 && count >= threshold {
            let message = format!(
                "{count} spot interruptions within {}",
                model::format_duration(window)
            );
            let record: BackoffRecord = self
                .pools
                .record_interruptions(now, pool, initial, max, &message);
            self.announce_backoff(now, record);
        }
    }

    /// Outcomes of the actions this module emits. Returns whether it was one of them.
    pub(crate) fn interruption_outcome(
        &mut self,
        now: Time,
        action: &Action,
        outcome: &Outcome,
    ) -> bool {
        let failed = matches!(outcome, Outcome::Retry { .. } | Outcome::Failed { .. });
        match action {
            Action::DetachInstance {
                id,
                instance,
                group,
                ..
            } => {
                if let Some(t) = self
                    .interruptions
                    .tracked
                    .get_mut(instance)
                    .filter(|t| t.detach == Detach::InFlight(*id))
                {
                    let lowered_request = std::mem::take(&mut t.lowered_request);
                    if failed {
                        self.withdraw_target_change(now, group, instance, lowered_request);
                    }
                    let t = self
                        .interruptions
                        .tracked
                        .get_mut(instance)
                        .expect("tracked");
                    t.detach = match outcome {
                        Outcome::Retry { .. } => Detach::Wanted,
                        // Failed for good (or the instance already gone): the group
                        // replaces the instance itself; the capacity bought for its
                        // pods goes once it is unneeded.
                        Outcome::Failed { .. } => Detach::NotWanted,
                        _ => Detach::Done,
                    };
                }
                false
            }
            Action::RetireNode { node, .. } if failed => {
                // The fence is written again on the next pass.
                match self
                    .interruptions
                    .tracked
                    .values_mut()
                    .find(|t| t.fenced.as_ref() == Some(node))
                {
                    Some(t) => {
                        t.fenced = None;
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }
}

impl Planner {
    /// A detach failed: the desired capacity queued for its group this pass counted on
    /// the instance having left (and its decrement), so sent now it could be below the
    /// instances still running, and AWS would pick which to terminate. It is withdrawn
    /// (the driver reports each outcome before it takes the next action), and the
    /// group is planned again on the next pass, from what the cloud then shows.
    /// A request lowered for the detach gets its instance back.
    fn withdraw_target_change(
        &mut self,
        now: Time,
        group: &model::NodeGroupId,
        instance: &InstanceId,
        lowered_request: bool,
    ) {
        let before = self.actions.len();
        self.actions
            .retain(|a| !matches!(a, Action::SetTargetSize { group: g, .. } if g == group));
        if self.actions.len() == before {
            if lowered_request {
                if let Some(r) = self.requested_targets.get_mut(group) {
                    r.target += 1;
                }
            }
            return;
        }
        self.requested_targets.remove(group);
        self.nominated.retain(|_, (g, _)| g != group);
        self.emit(
            now,
            PlannerEvent::Warning {
                message: format!(
                    "the desired capacity of {group} planned this pass was not sent: it counted on the detach of {instance}, which failed; planned again on the next pass"
                ),
            },
        );
    }
}

fn detail_or<'a>(detail: &'a str, default: &'a str) -> &'a str {
    if detail.is_empty() {
        default
    } else {
        detail
    }
}
