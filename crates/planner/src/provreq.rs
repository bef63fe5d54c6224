//! ProvisioningRequests: capacity asked for ahead of the pods, answered with status
//! conditions as Cluster Autoscaler writes them (so Kueue's admission check works
//! unchanged).
//!
//! A request is served by turning it into pods the rest of the planner already knows
//! how to handle, in a copy of the snapshot:
//! - an atomic request not yet provisioned becomes a gang of pending pods (template ×
//!   count): scale-up launches it all in one group or not at all, and the gang
//!   machinery rolls back a partial launch (fenced and verified like every removal);
//! - a provisioned request's booking becomes pods bound to the nodes that hold it:
//!   scale-up sees that room as taken, and the booked nodes are kept out of scale-down
//!   until the booking is consumed or expires;
//! - pods that consume a live request (`autoscaling.x-k8s.io/consume-provisioning-request`)
//!   are served by it and never trigger a second, ordinary scale-up.
//!
//! Whether a request is provisioned is judged on registered, Ready nodes only: an
//! atomic request is `Provisioned` once its nodes **have registered**, not when they
//! were asked for.

use crate::actions::Action;
use crate::events::{NoScaleUpReason, PlannerEvent};
use crate::placement::{PlacementSim, SimNode};
use crate::scaledown::is_retired;
use crate::Planner;
use model::{
    ClusterSnapshot, ConditionType, GangId, GangMembership, GangSource, Owner, PodKey, PodPhase,
    PodView, ProvisioningClass, ProvisioningRequestView, RequestCondition, RequestProblem, Time,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A pod set naming a PodTemplate that is not there is failed only after this long: a
/// queue creates the template first, but the two watches may deliver them in either
/// order.
pub const MISSING_TEMPLATE_GRACE: Duration = Duration::from_secs(30);

/// The owner of a request's in-memory pods: not a kind anyone lists as evictable.
pub const REQUEST_OWNER_GROUP: &str = "autoscaling.x-k8s.io";
pub const REQUEST_OWNER_KIND: &str = "ProvisioningRequest";

/// Condition reasons. Cluster Autoscaler's where it has one, so tools that read CA's
/// conditions read ours.
pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const CAPACITY_IS_FOUND: &str = "CapacityIsFound";
    pub const CAPACITY_IS_NOT_FOUND: &str = "CapacityIsNotFound";
    pub const CAPACITY_IS_PROVISIONED: &str = "CapacityIsProvisioned";
    pub const BOOKING_TIME_EXPIRED: &str = "CapacityReservationTimeExpired";
    pub const BOOKING_CONSUMED: &str = "CapacityBookingConsumed";
    /// Atomic: nodes are being launched for the request.
    pub const SCALE_UP_IN_PROGRESS: &str = "ScaleUpInProgress";
    /// Atomic: no node group can hold every pod of the request.
    pub const NOT_PROVISIONABLE: &str = "NotProvisionable";
    /// Atomic: the launch could not be completed and was rolled back.
    pub const SCALE_UP_FAILED: &str = "ScaleUpFailed";
    pub const INVALID: &str = "InvalidRequest";
    pub const POD_TEMPLATE_NOT_FOUND: &str = "PodTemplateNotFound";
    pub const UNSUPPORTED_CLASS: &str = "UnsupportedProvisioningClass";
}

/// What the planner remembers about requests between passes. Everything else is read
/// from the requests' conditions, so a restarted planner picks up where it was.
#[derive(Debug, Default)]
pub(crate) struct RequestBook {
    /// Conditions sent and not yet seen in a snapshot (not sent again meanwhile).
    sent: BTreeMap<PodKey, Vec<RequestCondition>>,
    /// Atomic requests whose launch was rolled back, with why, until `Failed` shows.
    rolled_back: BTreeMap<PodKey, String>,
    /// This pass's in-memory pods, by key, with their request.
    synthetic: BTreeMap<PodKey, PodKey>,
    /// Gangs of this pass's atomic requests.
    gangs: BTreeMap<GangId, PodKey>,
    /// Requests of another provisioner's class, reported once.
    foreign: BTreeSet<PodKey>,
    /// Index of the first event of the current pass (events about in-memory pods are
    /// turned into request events after the pass).
    events_from: usize,
    /// Why each atomic request's gang found no group in this pass.
    unhelped: BTreeMap<PodKey, Vec<(String, NoScaleUpReason)>>,
    /// Requests whose gang triggered a scale-up in this pass.
    launched: BTreeSet<PodKey>,
}

impl RequestBook {
    pub(crate) fn gang_rolled_back(&mut self, gang: &GangId, why: String) {
        if let Some(request) = self.gangs.get(gang).cloned() {
            self.rolled_back.insert(request, why);
        }
    }

    /// The gang stands for a request whose launch was rolled back: the request fails
    /// (its queue retries with a new one), so nothing more is bought for it, not even
    /// in the pass that rolled it back.
    pub(crate) fn gang_failed(&self, gang: &GangId) -> bool {
        self.gangs
            .get(gang)
            .is_some_and(|r| self.rolled_back.contains_key(r))
    }

    /// A status update failed: send it again on the next pass.
    pub(crate) fn update_failed(&mut self, request: &PodKey) {
        self.sent.remove(request);
    }

    /// The pod is one of a request's in-memory pods (this pass).
    pub(crate) fn is_synthetic(&self, pod: &PodKey) -> bool {
        self.synthetic.contains_key(pod)
    }
}

/// The gang an atomic request's pods form.
pub fn request_gang(request: &PodKey) -> GangId {
    GangId::new(format!("provisioning-request:{request}"))
}

enum Verdict {
    /// Nothing to change (also a terminal request: its consumers are ordinary pods).
    Leave,
    Set(Vec<(ConditionType, bool, &'static str, String)>),
}

impl Planner {
    /// Before a pass: answers what can be answered from the snapshot alone and returns
    /// the snapshot the rest of the pass plans on (`None`: the snapshot as it is).
    pub(crate) fn prepare_requests(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
    ) -> Option<ClusterSnapshot> {
        let book = &mut self.requests;
        book.synthetic.clear();
        book.gangs.clear();
        book.unhelped.clear();
        book.launched.clear();
        book.events_from = self.events.len();
        if snapshot.provisioning_requests.is_empty() {
            book.sent.clear();
            book.rolled_back.clear();
            return None;
        }
        let live: BTreeSet<&PodKey> = snapshot
            .provisioning_requests
            .iter()
            .map(|r| &r.key)
            .collect();
        book.sent.retain(|k, sent| {
            live.contains(k)
                && !snapshot
                    .provisioning_requests
                    .iter()
                    .find(|r| &r.key == k)
                    .is_some_and(|r| {
                        sent.iter()
                            .all(|c| r.condition(c.kind).is_some_and(|have| have.same_verdict(c)))
                    })
        });
        book.rolled_back.retain(|k, _| live.contains(k));
        book.foreign.retain(|k| live.contains(k));

        let mut out = snapshot.clone();
        // Consumers bound (or done) per request; a booking shrinks as its pods arrive.
        let mut consumed: BTreeMap<PodKey, usize> = BTreeMap::new();
        for p in &snapshot.pods {
            if let Some(r) = &p.consumes_request {
                if p.node.is_some() || matches!(p.phase, PodPhase::Running | PodPhase::Succeeded) {
                    *consumed
                        .entry(PodKey::new(p.key.namespace.clone(), r.clone()))
                        .or_default() += 1;
                }
            }
        }

        // Registered, Ready, schedulable nodes that are not on their way out: where
        // capacity is found and booked.
        let eligible: Vec<usize> = snapshot
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.ready
                    && !n.cordoned
                    && !is_retired(n)
                    && n.instance
                        .as_ref()
                        .is_none_or(|i| !self.terminating.contains_key(i))
            })
            .map(|(i, _)| i)
            .collect();

        // Requests in creation order, provisioned ones first: an existing booking holds
        // its room before a newer request looks for some.
        let mut order: Vec<&ProvisioningRequestView> =
            snapshot.provisioning_requests.iter().collect();
        order.sort_by(|a, b| {
            let unprovisioned = |r: &ProvisioningRequestView| !r.is(ConditionType::Provisioned);
            unprovisioned(a)
                .cmp(&unprovisioned(b))
                .then(a.created.cmp(&b.created))
                .then(a.key.cmp(&b.key))
        });

        // The in-memory pods of every request, after the snapshot's pods.
        let mut pods: Vec<PodView> = snapshot.pods.clone();
        let base = pods.len();
        let mut first_pod: BTreeMap<PodKey, usize> = BTreeMap::new();
        for r in &order {
            first_pod.insert(r.key.clone(), pods.len());
            pods.extend(r.pods.iter().map(|p| in_memory_pod(r, p)));
        }
        let mut sim = PlacementSim::new(&pods);
        let mut slot_of_node = BTreeMap::new();
        // Residents per node, through a name index (not a scan of the nodes per pod).
        let node_index: crate::hash::FxHashMap<&model::NodeName, usize> = snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (&n.name, i))
            .collect();
        let mut occupants: Vec<Vec<usize>> = vec![Vec::new(); snapshot.nodes.len()];
        for (pi, p) in snapshot.pods.iter().enumerate() {
            if let Some(&ni) = p
                .node
                .as_ref()
                .filter(|_| p.occupies_node())
                .and_then(|n| node_index.get(n))
            {
                occupants[ni].push(pi);
            }
        }
        for &ni in &eligible {
            let slot = sim.add_node(SimNode::existing(
                &snapshot.nodes[ni],
                &snapshot.pods,
                &occupants[ni],
            ));
            slot_of_node.insert(slot, ni);
        }
        let slots: Vec<usize> = slot_of_node.keys().copied().collect();

        let booking = self.settings.provisioning_request_booking_time;
        let mut bookings: Vec<(usize, usize)> = Vec::new(); // (pod index, node index)
        let mut pending_gangs: Vec<usize> = Vec::new(); // pod indices
        let mut served: BTreeSet<PodKey> = BTreeSet::new();
        let mut updates: Vec<(PodKey, Vec<(ConditionType, bool, &'static str, String)>)> =
            Vec::new();
        for r in &order {
            let start = first_pod[&r.key];
            let count = r.pods.len();
            let verdict = if r.is(ConditionType::Failed) || r.is(ConditionType::BookingExpired) {
                Verdict::Leave
            } else if !r.class.is_ours() {
                if self.requests.foreign.insert(r.key.clone()) {
                    self.events.push_back((
                        now,
                        PlannerEvent::ProvisioningRequestIgnored {
                            request: r.key.clone(),
                            class: r.class.as_str().to_owned(),
                        },
                    ));
                }
                Verdict::Leave
            } else if let ProvisioningClass::Other(name) = &r.class {
                Verdict::Set(vec![(
                    ConditionType::Failed,
                    true,
                    reason::UNSUPPORTED_CLASS,
                    format!(
                        "provisioning class {name} is not supported; supported: {}, {}",
                        model::provreq::CLASS_CHECK_CAPACITY,
                        model::provreq::CLASS_BEST_EFFORT_ATOMIC
                    ),
                )])
            } else if let Some(problem) = &r.problem {
                match problem {
                    RequestProblem::MissingPodTemplate { .. }
                        if now.saturating_since(r.created) < MISSING_TEMPLATE_GRACE =>
                    {
                        self.wake(r.created + MISSING_TEMPLATE_GRACE);
                        Verdict::Leave
                    }
                    RequestProblem::MissingPodTemplate { .. } => Verdict::Set(vec![(
                        ConditionType::Failed,
                        true,
                        reason::POD_TEMPLATE_NOT_FOUND,
                        problem.to_string(),
                    )]),
                    RequestProblem::Invalid { .. } => Verdict::Set(vec![(
                        ConditionType::Failed,
                        true,
                        reason::INVALID,
                        problem.to_string(),
                    )]),
                }
            } else if let Some(provisioned) =
                r.condition(ConditionType::Provisioned).filter(|c| c.status)
            {
                let used = consumed.get(&r.key).copied().unwrap_or(0);
                let ends = provisioned.since + booking;
                if now >= ends {
                    Verdict::Set(vec![(
                        ConditionType::BookingExpired,
                        true,
                        reason::BOOKING_TIME_EXPIRED,
                        "capacity reservation time is expired".into(),
                    )])
                } else if used >= count {
                    Verdict::Set(vec![(
                        ConditionType::BookingExpired,
                        true,
                        reason::BOOKING_CONSUMED,
                        format!("all {count} pods of the request are scheduled"),
                    )])
                } else {
                    // The booking holds room for the pods still to come.
                    self.wake(ends);
                    served.insert(r.key.clone());
                    for pod in start..start + (count - used) {
                        if let Some(slot) = sim.first_fit(pod, slots.iter().copied()) {
                            sim.place(pod, slot);
                            bookings.push((pod, slot_of_node[&slot]));
                        }
                    }
                    Verdict::Leave
                }
            } else {
                served.insert(r.key.clone());
                let mut set = Vec::new();
                if !r.is(ConditionType::Accepted) {
                    set.push((
                        ConditionType::Accepted,
                        true,
                        reason::ACCEPTED,
                        "ProvisioningRequest is accepted by batch-autoscaler".into(),
                    ));
                }
                let placed = place_all(&mut sim, start..start + count, &slots);
                let check = r.class == ProvisioningClass::CheckCapacity;
                match placed {
                    Some(placements) => {
                        for (pod, slot) in placements {
                            bookings.push((pod, slot_of_node[&slot]));
                        }
                        let (why, message) = if check {
                            (
                                reason::CAPACITY_IS_FOUND,
                                "capacity is found in the cluster".to_owned(),
                            )
                        } else {
                            (
                                reason::CAPACITY_IS_PROVISIONED,
                                format!("capacity for {count} pods is registered and booked"),
                            )
                        };
                        set.push((ConditionType::Provisioned, true, why, message));
                    }
                    None if check && r.no_retry => set.push((
                        ConditionType::Failed,
                        true,
                        reason::CAPACITY_IS_NOT_FOUND,
                        "capacity is not found and the request asks for no retry".into(),
                    )),
                    None if check => set.push((
                        ConditionType::Provisioned,
                        false,
                        reason::CAPACITY_IS_NOT_FOUND,
                        "capacity is not found; checked again on every pass".into(),
                    )),
                    None => match self.requests.rolled_back.get(&r.key) {
                        Some(why) => set.push((
                            ConditionType::Failed,
                            true,
                            reason::SCALE_UP_FAILED,
                            why.clone(),
                        )),
                        None => pending_gangs.extend(start..start + count),
                    },
                }
                if set.is_empty() {
                    Verdict::Leave
                } else {
                    Verdict::Set(set)
                }
            };
            match verdict {
                Verdict::Set(set) => updates.push((r.key.clone(), set)),
                Verdict::Leave => {}
            }
        }

        // The copy the pass plans on: bookings bound to their nodes, atomic gangs
        // pending, consumers of a live request served by it.
        let booked_nodes: BTreeSet<usize> = bookings.iter().map(|&(_, ni)| ni).collect();
        for &(pod, ni) in &bookings {
            let mut p = pods[pod].clone();
            p.node = Some(snapshot.nodes[ni].name.clone());
            self.requests
                .synthetic
                .insert(p.key.clone(), request_of(&p));
            out.pods.push(p);
        }
        for &pod in &pending_gangs {
            let mut p = pods[pod].clone();
            let request = request_of(&p);
            p.unschedulable = true;
            p.gang = Some(GangMembership {
                gang: request_gang(&request),
                size: 0,
                source: GangSource::ProvisioningRequest,
            });
            self.requests
                .gangs
                .insert(request_gang(&request), request.clone());
            self.requests.synthetic.insert(p.key.clone(), request);
            out.pods.push(p);
        }
        for ni in booked_nodes {
            // Kept out of scale-down while its booking lasts.
            out.nodes[ni].scale_down_disabled = true;
        }
        for p in out.pods[..base].iter_mut() {
            if p.consumes_request
                .as_ref()
                .is_some_and(|r| served.contains(&PodKey::new(p.key.namespace.clone(), r.clone())))
            {
                p.unschedulable = false;
            }
        }
        for (request, set) in updates {
            self.update_request(now, snapshot, &request, set);
        }
        Some(out)
    }

    /// After a pass: events about in-memory pods become request verdicts.
    pub(crate) fn finish_requests(&mut self, now: Time, snapshot: &ClusterSnapshot) {
        if self.requests.synthetic.is_empty() {
            return;
        }
        let from = self.requests.events_from.min(self.events.len());
        let tail: Vec<(Time, PlannerEvent)> = self.events.drain(from..).collect();
        for (at, event) in tail {
            match event {
                PlannerEvent::NotTriggerScaleUp { pod, reasons }
                    if self.requests.is_synthetic(&pod) =>
                {
                    let request = self.requests.synthetic[&pod].clone();
                    self.requests.unhelped.entry(request).or_insert_with(|| {
                        reasons
                            .iter()
                            .map(|(g, r)| (g.to_string(), r.clone()))
                            .collect()
                    });
                }
                PlannerEvent::WaitingForCapacity { pod, .. }
                    if self.requests.is_synthetic(&pod) => {}
                PlannerEvent::TriggeredScaleUp {
                    group,
                    from,
                    to,
                    pods,
                } => {
                    let (ours, theirs): (Vec<PodKey>, Vec<PodKey>) = pods
                        .into_iter()
                        .partition(|p| self.requests.is_synthetic(p));
                    let mut requests: BTreeSet<PodKey> = BTreeSet::new();
                    for p in &ours {
                        requests.insert(self.requests.synthetic[p].clone());
                    }
                    for request in requests {
                        self.events.push_back((
                            at,
                            PlannerEvent::ProvisioningRequestScaleUp {
                                request: request.clone(),
                                group: group.clone(),
                                from,
                                to,
                            },
                        ));
                        self.requests.launched.insert(request);
                    }
                    if !theirs.is_empty() {
                        self.events.push_back((
                            at,
                            PlannerEvent::TriggeredScaleUp {
                                group,
                                from,
                                to,
                                pods: theirs,
                            },
                        ));
                    }
                }
                other => self.events.push_back((at, other)),
            }
        }
        // Atomic requests still waiting: a launch under way, a rollback, or no group at all.
        let waiting: BTreeSet<PodKey> = self.requests.gangs.values().cloned().collect();
        for request in waiting {
            let Some(r) = snapshot
                .provisioning_requests
                .iter()
                .find(|r| r.key == request)
            else {
                continue;
            };
            let count = r.pods.len();
            if let Some(why) = self.requests.rolled_back.get(&request).cloned() {
                self.update_request(
                    now,
                    snapshot,
                    &request,
                    vec![(ConditionType::Failed, true, reason::SCALE_UP_FAILED, why)],
                );
            } else if self.requests.launched.contains(&request) {
                self.update_request(
                    now,
                    snapshot,
                    &request,
                    vec![(
                        ConditionType::Provisioned,
                        false,
                        reason::SCALE_UP_IN_PROGRESS,
                        format!("nodes for {count} pods are being launched"),
                    )],
                );
            } else if let Some(reasons) = self.requests.unhelped.get(&request).cloned() {
                let text: Vec<String> = reasons.iter().map(|(g, r)| format!("{g}: {r}")).collect();
                let text = if text.is_empty() {
                    "no node groups".to_owned()
                } else {
                    text.join("; ")
                };
                let permanent = reasons.iter().all(|(_, r)| is_permanent(r));
                if permanent {
                    self.update_request(
                        now,
                        snapshot,
                        &request,
                        vec![(
                            ConditionType::Failed,
                            true,
                            reason::NOT_PROVISIONABLE,
                            format!("no node group can hold all {count} pods: {text}"),
                        )],
                    );
                } else {
                    self.update_request(
                        now,
                        snapshot,
                        &request,
                        vec![(
                            ConditionType::Provisioned,
                            false,
                            reason::CAPACITY_IS_NOT_FOUND,
                            format!("capacity for {count} pods is not found yet: {text}"),
                        )],
                    );
                }
            }
        }
    }

    /// Sends the conditions that differ from the request's status (and from what was
    /// sent and not yet seen), with an event per change.
    fn update_request(
        &mut self,
        now: Time,
        snapshot: &ClusterSnapshot,
        request: &PodKey,
        set: Vec<(ConditionType, bool, &'static str, String)>,
    ) {
        let Some(r) = snapshot
            .provisioning_requests
            .iter()
            .find(|r| &r.key == request)
        else {
            return;
        };
        let sent = self.requests.sent.get(request);
        let mut changed = Vec::new();
        for (kind, status, why, message) in set {
            let since = match r.condition(kind) {
                Some(have) if have.status == status => have.since,
                _ => now,
            };
            let wanted = RequestCondition {
                kind,
                status,
                reason: why.to_owned(),
                message,
                since,
            };
            let shown = r
                .condition(kind)
                .is_some_and(|have| have.same_verdict(&wanted));
            let pending = sent.is_some_and(|s| s.iter().any(|c| c.same_verdict(&wanted)));
            if !shown && !pending {
                changed.push(wanted);
            }
        }
        if changed.is_empty() {
            return;
        }
        for c in &changed {
            self.emit(
                now,
                PlannerEvent::ProvisioningRequestUpdated {
                    request: request.clone(),
                    condition: c.kind,
                    status: c.status,
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                },
            );
        }
        let mut memo = self.requests.sent.remove(request).unwrap_or_default();
        memo.retain(|m| !changed.iter().any(|c| c.kind == m.kind));
        memo.extend(changed.iter().cloned());
        self.requests.sent.insert(request.clone(), memo);
        let id = self.next_id();
        self.actions.push_back(Action::UpdateProvisioningRequest {
            id,
            request: request.clone(),
            conditions: changed,
        });
    }
}

/// A reason that will not go away by waiting: the request can never be served as it
/// stands (a backoff, a launch under way or the loop cap pass).
fn is_permanent(reason: &NoScaleUpReason) -> bool {
    !matches!(
        reason,
        NoScaleUpReason::PoolBackedOff { .. }
            | NoScaleUpReason::LoopCapReached
            | NoScaleUpReason::NotChosen
            | NoScaleUpReason::GangLaunchInFlight { .. }
            | NoScaleUpReason::GroupStillLaunching
    )
}

/// One of a request's pods as the planner handles it.
fn in_memory_pod(request: &ProvisioningRequestView, template: &PodView) -> PodView {
    let mut p = template.clone();
    p.key = PodKey::new(
        request.key.namespace.clone(),
        format!("{}{}", synthetic_prefix(&request.key), template.key.name),
    );
    p.owner = Owner::controller(REQUEST_OWNER_GROUP, REQUEST_OWNER_KIND, &request.key.name);
    p.node = None;
    p.phase = PodPhase::Pending;
    p.unschedulable = false;
    p.gang = None;
    p.consumes_request = None;
    p.created = request.created;
    p
}

fn synthetic_prefix(request: &PodKey) -> String {
    format!("provisioning-request:{}:", request.name)
}

fn request_of(pod: &PodView) -> PodKey {
    match &pod.owner {
        Owner::Controller { name, .. } => PodKey::new(pod.key.namespace.clone(), name.clone()),
        _ => pod.key.clone(),
    }
}

/// Places every pod of `pods` first-fit, or none (the simulation is left as it was).
fn place_all(
    sim: &mut PlacementSim<'_>,
    pods: std::ops::Range<usize>,
    slots: &[usize],
) -> Option<Vec<(usize, usize)>> {
    let mut placed = Vec::new();
    for pod in pods {
        match sim.first_fit(pod, slots.iter().copied()) {
            Some(slot) => {
                sim.place(pod, slot);
                placed.push((pod, slot));
            }
            None => {
                for (p, s) in placed {
                    sim.unplace(p, s);
                }
                return None;
            }
        }
    }
    Some(placed)
}
