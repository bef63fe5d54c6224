//! The sans-IO core of batch-autoscaler.
//!
//! A [`Planner`] is fed [`ClusterSnapshot`]s, action outcomes and launch failures, each
//! with the current [`Time`]; it answers with [`Action`]s to carry out, [`PlannerEvent`]s
//! that explain every decision, and the time it next wants to be woken. It never reads
//! a clock, never does I/O and never draws an unseeded random number: the same inputs
//! give the same outputs, which is what lets the simulator and the production driver
//! share it.
//!
//! Driving order (quinn-proto's pattern):
//! 1. `handle_launch_failure` / `handle_outcome` as the adapters report them;
//! 2. `handle_snapshot(now, &snapshot)` once per loop (scan interval, a batching window
//!    after a pod turned unschedulable, or `poll_timeout`);
//! 3. drain `poll_action` and carry the actions out, reporting each with `handle_outcome`;
//! 4. drain `poll_event` into logs, Events and metrics;
//! 5. sleep until `poll_timeout` (or the next scan).

pub mod actions;
mod classes;
mod drain_backoff;
pub mod events;
mod expander;
pub mod explain;
mod fit;
mod gang;
mod hash;
mod interruption;
pub mod keep;
mod lifecycle;
pub mod placement;
mod pools;
pub mod predicates;
pub mod provreq;
mod removal;
pub mod scaledown;
mod scaleup;
pub mod settings;
mod template;

pub use actions::{
    Action, ActionId, BackoffRecord, Outcome, RemovalEvidence, TargetReason, TerminateReason,
};
pub use events::{GroupReasons, InterruptionResponse, NoScaleUpReason, PlannerEvent};
pub use expander::ExpanderChain;
pub use explain::{explain, explain_request, PodExplanation, RequestExplanation};
#[doc(hidden)]
pub use fit::place_in_order_indexed;
pub use interruption::PoolInterruptions;
pub use scaledown::{disposition, PodDisposition};
pub use settings::{AutoDuration, OwnerKinds, PlannerSettings};
pub use template::{daemonset_runs_on, node_template, TemplateNode};

use model::{ClusterSnapshot, InstanceId, LaunchFailure, NodeGroupId, NodeName, PodKey, Time};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

/// A setting that cannot be used; names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for SettingsError {}

/// What the planner remembers about a target-size request until the snapshot shows it.
#[derive(Debug, Clone)]
struct TargetRequest {
    target: u32,
    at: Time,
}

/// A scale-down decision waiting for re-validation on a newer snapshot.
#[derive(Debug, Clone)]
struct PendingRemoval {
    decided_at: Time,
    decided_revision: u64,
}

/// The planner. See the crate docs for the order in which to call it.
pub struct Planner {
    settings: PlannerSettings,
    expander: ExpanderChain,
    pools: pools::PoolBackoffs,
    gangs: gang::GangTracker,
    requests: provreq::RequestBook,
    interruptions: interruption::InterruptionBook,
    /// Target sizes requested but not yet seen in a snapshot.
    requested_targets: BTreeMap<NodeGroupId, TargetRequest>,
    /// Idle-since per node, rebuilt from annotations and kept across passes.
    idle_since: BTreeMap<NodeName, Time>,
    /// Nodes retired by us, as last known (taint + annotation on the node).
    pending_removals: BTreeMap<NodeName, PendingRemoval>,
    /// Instances on their way out (fencing, verifying or terminating) and not yet
    /// seen gone.
    terminating: BTreeMap<model::InstanceId, Time>,
    /// Removals between the decision and the termination (see `removal`).
    removals: BTreeMap<model::InstanceId, removal::Removal>,
    /// When evictions of a node's pods started (bounded by max-pod-eviction-time).
    draining_since: BTreeMap<NodeName, Time>,
    /// Drains whose taint is not yet seen: no eviction has been issued.
    drains_awaiting_taint: BTreeSet<NodeName>,
    /// Nodes whose drain failed, kept out of drains for a while.
    drain_backoffs: drain_backoff::DrainBackoffs,
    /// Pods already reported as unhelpable, with the reasons reported.
    /// (The reasons text is shared by every pod of a class: one allocation, not one per pod.)
    /// Looked up only, never iterated into output, so hashed (50,000 entries at scale).
    reported_unhelpable: hash::FxHashMap<PodKey, std::sync::Arc<str>>,
    last_scale_up: Option<Time>,
    last_scale_down: Option<Time>,
    last_scale_down_failure: Option<Time>,
    next_action_id: u64,
    actions: VecDeque<actions::Action>,
    events: VecDeque<(Time, PlannerEvent)>,
    /// Last revision seen, to refuse acting twice on one snapshot.
    last_revision: Option<u64>,
    /// Groups as of the last snapshot (to resolve targets in `handle_launch_failure`).
    last_targets: BTreeMap<NodeGroupId, u32>,
    wake_at: BTreeSet<Time>,
    /// Actions handed out and not yet reported.
    in_flight: BTreeMap<ActionId, Action>,
    /// Group specs and live instance counts as of the last snapshot.
    last_specs: BTreeMap<NodeGroupId, model::NodeGroupSpec>,
    last_instance_counts: BTreeMap<NodeGroupId, u32>,
    /// Since when each node has been under-utilised, with the node's creation time (a
    /// node that reuses the name of an old one starts afresh). Not persisted: a
    /// restart waits the unneeded time again.
    unneeded_since: BTreeMap<NodeName, (Time, Time)>,
    /// Pods a scale-up bought nodes for, with the group and when (until the nodes
    /// arrive or the provision time passes).
    nominated: BTreeMap<PodKey, (NodeGroupId, Time)>,
    /// Launch failures reported before the first snapshot named their group.
    early_failures: Vec<LaunchFailure>,
    /// Instances whose launch timed out and whose pool was blamed for it: once per
    /// instance, however often its termination has to be tried again (each blame
    /// would extend the backoff and rewrite the group's tags). Forgotten when the
    /// instance is gone.
    timed_out: BTreeSet<InstanceId>,
    /// The node name each live instance was last seen backing, and when: an instance
    /// whose node vanished is not a launch that failed, and the pods bound to that
    /// name are the evidence of its removal.
    known_nodes: BTreeMap<InstanceId, (NodeName, Time)>,
    /// Scratch: warm spares of this pass.
    spares: BTreeSet<usize>,
    /// Under-utilised nodes checked since the rotation began: a pass checks at most
    /// `scale_down_non_empty_candidates_count` of them and the next one continues
    /// with the others (see `scaledown::Planner::candidates`).
    checked_for_scale_down: BTreeSet<NodeName>,
}

impl Planner {
    /// A planner with validated settings.
    pub fn new(settings: PlannerSettings) -> Result<Self, SettingsError> {
        let expander = ExpanderChain::parse(
            &settings.expander,
            settings.expander_priorities.as_ref(),
            settings.seed,
        )?;
        validate(&settings)?;
        Ok(Self {
            pools: pools::PoolBackoffs::new(&settings),
            gangs: gang::GangTracker::default(),
            requests: provreq::RequestBook::default(),
            interruptions: interruption::InterruptionBook::default(),
            settings,
            expander,
            requested_targets: BTreeMap::new(),
            idle_since: BTreeMap::new(),
            pending_removals: BTreeMap::new(),
            removals: BTreeMap::new(),
            drains_awaiting_taint: BTreeSet::new(),
            drain_backoffs: drain_backoff::DrainBackoffs::default(),
            terminating: BTreeMap::new(),
            draining_since: BTreeMap::new(),
            reported_unhelpable: hash::FxHashMap::default(),
            last_scale_up: None,
            last_scale_down: None,
            last_scale_down_failure: None,
            next_action_id: 1,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            last_revision: None,
            last_targets: BTreeMap::new(),
            wake_at: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            last_specs: BTreeMap::new(),
            last_instance_counts: BTreeMap::new(),
            unneeded_since: BTreeMap::new(),
            spares: BTreeSet::new(),
            checked_for_scale_down: BTreeSet::new(),
            early_failures: Vec::new(),
            timed_out: BTreeSet::new(),
            known_nodes: BTreeMap::new(),
            nominated: BTreeMap::new(),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &PlannerSettings {
        &self.settings
    }

    /// Seeds pool backoffs persisted by an earlier process. Call before the first snapshot.
    pub fn restore_backoffs(&mut self, records: impl IntoIterator<Item = BackoffRecord>) {
        for record in records {
            self.pools.restore(record);
        }
    }

    /// Pool backoffs in force at `now` (for status reporting and persistence).
    pub fn backoffs(&self, now: Time) -> Vec<BackoffRecord> {
        self.pools.active(now)
    }

    /// One planning pass over a snapshot.
    pub fn handle_snapshot(&mut self, now: Time, snapshot: &ClusterSnapshot) {
        if !snapshot.synced {
            self.emit(now, PlannerEvent::SnapshotNotSynced);
            return;
        }
        if self.last_revision.is_some_and(|r| snapshot.revision <= r) {
            // The same (or an older) view again: deciding twice on it could double act.
            return;
        }
        self.last_revision = Some(snapshot.revision);
        self.last_targets = snapshot
            .groups
            .iter()
            .map(|g| (g.spec.id.clone(), g.target))
            .collect();
        self.last_specs = snapshot
            .groups
            .iter()
            .map(|g| (g.spec.id.clone(), g.spec.clone()))
            .collect();
        self.last_instance_counts = snapshot
            .groups
            .iter()
            .map(|g| {
                (
                    g.spec.id.clone(),
                    g.instances
                        .iter()
                        .filter(|i| i.state != model::InstanceState::Terminating)
                        .count() as u32,
                )
            })
            .collect();
        self.wake_at = self.wake_at.split_off(&Time(now.0 + 1));
        self.expire_backoffs(now);
        self.reconcile_requests(now, snapshot);
        for failure in std::mem::take(&mut self.early_failures) {
            self.on_launch_failure(now, failure);
        }
        self.handle_launch_timeouts(now, snapshot);
        // Interrupted instances: their nodes fenced, their pods moved to where they
        // will run (see `interruption`).
        let interrupted = self.prepare_interruptions(now, snapshot);
        let snapshot = interrupted.as_ref().unwrap_or(snapshot);
        // ProvisioningRequests become pods the rest of the pass handles (see `provreq`).
        let prepared = self.prepare_requests(now, snapshot);
        let snapshot = prepared.as_ref().unwrap_or(snapshot);
        let view = scaleup::ClusterView::new(self, now, snapshot);
        self.check_gangs(now, snapshot);
        let scaled_up = self.scale_up(now, snapshot, &view);
        self.scale_down(now, snapshot, &view, scaled_up);
        self.finish_requests(now, snapshot);
        self.advance_removals(now);
        // Timers that are already due were served by this pass.
        self.wake_at = self.wake_at.split_off(&Time(now.0 + 1));
    }

    /// Reports the outcome of an action taken from `poll_action`.
    pub fn handle_outcome(&mut self, now: Time, id: ActionId, outcome: Outcome) {
        self.on_outcome(now, id, outcome);
    }

    /// Reports launches that failed (classified scaling activities, simulator errors).
    pub fn handle_launch_failure(&mut self, now: Time, failure: LaunchFailure) {
        self.on_launch_failure(now, failure);
    }

    /// Called at or after the time returned by `poll_timeout`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.wake_at = self.wake_at.split_off(&Time(now.0 + 1));
        self.expire_backoffs(now);
        self.advance_removals(now);
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front()?;
        self.in_flight.insert(action.id(), action.clone());
        Some(action)
    }

    /// The next explanation.
    pub fn poll_event(&mut self) -> Option<(Time, PlannerEvent)> {
        self.events.pop_front()
    }

    /// When the planner next wants a snapshot even if nothing changes.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.wake_at.iter().next().copied()
    }

    fn emit(&mut self, now: Time, event: PlannerEvent) {
        self.events.push_back((now, event));
    }

    fn next_id(&mut self) -> ActionId {
        let id = ActionId(self.next_action_id);
        self.next_action_id += 1;
        id
    }

    fn wake(&mut self, at: Time) {
        self.wake_at.insert(at);
    }
}

fn validate(s: &PlannerSettings) -> Result<(), SettingsError> {
    let bad = |field, message: String| Err(SettingsError { field, message });
    for (field, v) in [
        (
            "scale-down-utilization-threshold",
            s.scale_down_utilization_threshold,
        ),
        (
            "scale-down-gpu-utilization-threshold",
            s.scale_down_gpu_utilization_threshold,
        ),
        ("max-scale-in-fraction", s.max_scale_in_fraction),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return bad(field, format!("must be between 0 and 1, got {v}"));
        }
    }
    parse_min_max("cores-total", &s.cores_total)?;
    parse_min_max("memory-total", &s.memory_total)?;
    if s.scan_interval.is_zero() {
        return bad("scan-interval", "must be greater than zero".into());
    }
    if s.spot_interruption_backoff > s.max_spot_interruption_backoff {
        return bad(
            "spot-interruption-backoff",
            "must not exceed max-spot-interruption-backoff".into(),
        );
    }
    if s.initial_node_group_backoff_duration > s.max_node_group_backoff_duration {
        return bad(
            "initial-node-group-backoff-duration",
            "must not exceed max-node-group-backoff-duration".into(),
        );
    }
    Ok(())
}

/// Parses CA's `min:max` syntax.
pub(crate) fn parse_min_max(field: &'static str, text: &str) -> Result<(u64, u64), SettingsError> {
    let err = || SettingsError {
        field,
        message: format!("expected min:max with whole numbers, got {text:?}"),
    };
    let (min, max) = text.split_once(':').ok_or_else(err)?;
    let (min, max): (u64, u64) = (
        min.trim().parse().map_err(|_| err())?,
        max.trim().parse().map_err(|_| err())?,
    );
    if min > max {
        return Err(SettingsError {
            field,
            message: format!("min {min} is greater than max {max}"),
        });
    }
    Ok((min, max))
}
