//! The engine: a virtual clock that jumps from event to event, simulated EC2 node
//! groups, a simulated cluster (DaemonSets, Job / bare / service pods with the owners
//! the scenario gives them) with a scheduler, and the real planner fed a snapshot
//! every scan interval. A pod lost to an eviction or a node removal counts as killed
//! by the planner's own rule ([`planner::disposition`]).
//!
//! The engine owns the simulated world and the record of what happened in it; it
//! turns nothing into text (that is `report`'s job) and never reads the clock except
//! to pace progress lines on stderr.
//!
//! Simplifications worth knowing (also in ARCHITECTURE.md):
//! - A pod starts the instant it is bound and runs for exactly its duration.
//! - The scheduler does not preempt: priority only orders the pending queue.
//! - Instances launch into the group's one zone; termination is instantaneous.
//! - Gangs are bound all together or not at all, as a gang-aware scheduler
//!   (coscheduling, Volcano, Kueue) would do; the default kube-scheduler does not.
//! - The simulated ASG retries launching every 60 s while desired > live instances,
//!   and each failed attempt reaches the planner 5 s later (as a scaling activity).
//! - The planner gets a snapshot every `scan-interval` and when its `poll_timeout`
//!   falls due; a timeout that is not later than the last pass is treated as served.
//! - Spot interruptions (see [`crate::spot`] for when and which): EC2 warns, and takes
//!   the instance back [`spot::WARNING_LEAD`] later — billing stops, the node and its
//!   pods go (counted as killed by interruption, not by scale-in). With
//!   `interruption-handling` on, the planner hears of the warning and has a pass
//!   [`spot::NOTICE_REACTION`] later. A group replaces a member it lost to EC2 at
//!   once (desired capacity unchanged), a Capacity Rebalancing group already at the
//!   warning; an instance the planner detached is not replaced. DetachInstances
//!   needs an InService instance and refuses to take desired capacity below min.

use crate::scenario::{GroupDef, Scenario, WorkloadDef, WorkloadKind, JOB_NAME_LABEL};
use crate::spot;
use model::well_known::{LABEL_HOSTNAME, TAINT_RETIRING};
use model::{
    ClusterSnapshot, GangId, GangMembership, InstanceId, InstanceState, InstanceView,
    InterruptionKind, InterruptionNotice, Labels, LaunchFailure, LaunchFailureKind, NodeGroupId,
    NodeGroupState, NodeName, NodeView, Owner, PodKey, PodPhase, PodView, Resources, RetireMark,
    Taint, TaintEffect, Time,
};
use planner::placement::{NodeOrigin, PlacementSim, SimNode};
use planner::{Action, Outcome, Planner, PlannerEvent, PodDisposition, TargetReason};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// How long after a failed launch the planner hears of it (a scaling activity's lag).
pub const FAILURE_REPORT_DELAY: Duration = Duration::from_secs(5);
/// How often the simulated ASG retries while desired capacity exceeds its instances.
pub const ASG_RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// Timeline sampling period.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(60);
/// At most this many notable planner events are kept in the record.
pub const MAX_RECORDED_EVENTS: usize = 5000;

const NAMESPACE: &str = "default";

/// Options that do not change the outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Print a progress line on stderr every simulated hour once a run has taken
    /// more than a second of wall time.
    pub progress: bool,
}

/// A run that could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    pub message: String,
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SimError {}

/// Why the run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Every job and bare pod finished and every group is back at its minimum.
    WorkloadDone,
    /// The horizon was reached.
    Horizon,
}

/// One pod as the workload defines it; survives kills (its replacements share it).
#[derive(Debug, Clone)]
pub struct LogicalPod {
    pub job: usize,
    pub duration: Option<Duration>,
    pub first_start: Option<Time>,
    pub completed_at: Option<Time>,
    pub kills: u32,
    /// Incarnations killed when EC2 took their instance back.
    pub killed_by_interruption: u32,
    pub incarnations: u32,
    index: u32,
    /// When an interruption last killed it, until its replacement runs.
    lost_at: Option<Time>,
}

/// One arrival of a workload (a Job, a set of bare pods or a Deployment).
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub name: String,
    pub workload: usize,
    pub kind: WorkloadKind,
    pub arrival: Time,
    pub pods: Vec<usize>,
    pub gang: bool,
    /// When every pod of a gang was first running at once.
    pub gang_all_running_at: Option<Time>,
    /// Most pods of the gang running at once before they all were (0 when the gang
    /// was only ever started whole).
    pub gang_max_partial_running: u32,
    pub killed: u32,
    /// Its pods killed when EC2 took their instance back.
    pub killed_by_interruption: u32,
    /// Queued jobs: when the queue admitted it (its request was provisioned).
    pub admitted_at: Option<Time>,
    /// Queued jobs: ProvisioningRequests created for it (1 + Kueue's retries).
    pub provisioning_requests: u32,
    /// Queued jobs: the request whose booking its pods consume.
    pub admitted_by: Option<String>,
    /// Queued jobs: Kueue gave up after its retries (the workload is deactivated).
    pub deactivated: bool,
}

/// A job waiting in the simulated Kueue.
#[derive(Debug, Clone)]
struct QueuedJob {
    job: usize,
    class: model::ProvisioningClass,
    /// Its request now, if one exists.
    request: Option<PodKey>,
    /// When the next request is created (after a failed one, Kueue's backoff).
    retry_at: Option<Time>,
}

/// Kueue's defaults for a failed ProvisioningRequest: retried after 60 s × 2^(n-1), at
/// most 3 times, then the workload is deactivated.
const KUEUE_RETRY_BASE: Duration = Duration::from_secs(60);
const KUEUE_RETRY_LIMIT: u32 = 3;

/// An instance launched by a group, with its billing interval.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    /// The group that launched it (and bills it, detached or not).
    pub group: usize,
    pub id: InstanceId,
    pub launched_at: Time,
    pub terminated_at: Option<Time>,
    /// When EC2 warned that it takes the instance back.
    pub interrupted_at: Option<Time>,
    /// When the planner detached it from its group.
    pub detached_at: Option<Time>,
}

/// A spot interruption warning EC2 gave.
#[derive(Debug, Clone)]
pub struct InterruptionRecord {
    pub at: Time,
    /// When EC2 takes the instance back ([`spot::WARNING_LEAD`] after `at`).
    pub deadline: Time,
    pub group: usize,
    pub instance: InstanceId,
    /// Its node at the warning (none while it boots).
    pub node: Option<NodeName>,
    /// Whether the planner was told (`interruption-handling`).
    pub notified: bool,
    /// Whether the instance was still there at the deadline (not removed before).
    pub reclaimed: bool,
    /// Running workload pods killed at the deadline.
    pub pods_killed: u32,
}

/// A failed launch attempt.
#[derive(Debug, Clone)]
pub struct FailureRecord {
    pub at: Time,
    pub group: usize,
    pub count: u32,
    pub message: String,
}

/// A timeline sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Time,
    pub pending: u32,
    pub running: u32,
    /// Live instances (booting or ready) per group, in scenario order; an instance
    /// detached from its group counts there until EC2 takes it back.
    pub nodes: Vec<u32>,
}

/// A planner event worth keeping in the report.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub at: Time,
    pub reason: &'static str,
    pub message: String,
}

/// Everything a run produced, for `report` to summarise.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub end: Time,
    pub stop: StopReason,
    pub logical_pods: Vec<LogicalPod>,
    pub jobs: Vec<JobRecord>,
    pub instances: Vec<InstanceRecord>,
    pub failures: Vec<FailureRecord>,
    pub samples: Vec<Sample>,
    pub peak_nodes: u32,
    pub peak_nodes_per_group: Vec<u32>,
    /// Running must-finish pods (by [`planner::disposition`]) evicted or lost with their node.
    pub killed_by_scale_in: u32,
    /// Running evictable or expendable service pods evicted or lost with their node.
    pub service_pods_recreated: u32,
    /// Running evictable or expendable job and bare pods (`safe_to_evict: true`, an owner
    /// on `evictable-owner-kinds`) evicted or lost with their node; they start over.
    pub evictable_batch_pods_recreated: u32,
    /// Spot interruption warnings, in order.
    pub interruptions: Vec<InterruptionRecord>,
    /// Running workload pods (any owner, any disposition: EC2 does not ask) lost when
    /// EC2 took their instance back; not in the three counts above.
    pub killed_by_interruption: u32,
    /// Σ over job and bare pods killed by an interruption of the time they had run, in hours.
    pub work_lost_pod_hours: f64,
    /// The same, each pod weighted by its dominant share of its node's allocatable.
    pub work_lost_node_hours: f64,
    /// For each pod killed by an interruption whose replacement ran: its death to
    /// the replacement running.
    pub restart_delays: Vec<Duration>,
    pub detach_calls: u32,
    /// Things worth a warning in the report (an explicit interruption that found
    /// fewer instances than it names).
    pub notes: Vec<String>,
    pub scale_up_calls: u32,
    pub scale_down_calls: u32,
    pub give_back_calls: u32,
    pub retire_calls: u32,
    pub unretire_calls: u32,
    pub evictions: u32,
    /// Instances the simulated ASG removed itself because desired capacity fell below
    /// its live instances (the planner is expected never to cause this).
    pub asg_scale_in_terminations: u32,
    pub event_counts: BTreeMap<&'static str, u64>,
    pub events: Vec<EventRecord>,
    pub events_dropped: u64,
    /// Broken expectations (e.g. a target above the group's max).
    pub violations: Vec<String>,
    pub planner_passes: u64,
    /// Passes after which the planner's `poll_timeout` was already due (not later than
    /// the pass itself); the engine does not wake for those.
    pub stale_timeouts: u64,
    /// Actions whose outcome was not `Done` (target gone, refused), with the outcome.
    pub actions_not_done: Vec<String>,
    /// Where the billed node-hours went: work, and idle time by cause.
    pub node_time: NodeTime,
}

/// Billed node-hours split by what each instance was doing. A node's idle part is
/// the share of its allocatable no workload pod requested (by the dominant resource),
/// so `working + idle` is the node-hours billed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeTime {
    /// Requested by running workload pods.
    pub working: f64,
    /// Launched, not yet a node.
    pub booting: f64,
    /// Empty, within the time its group keeps an empty node
    /// (`scale-down-unneeded-time`, or the break-even under `auto`).
    pub waiting_out_unneeded_time: f64,
    /// Empty past that time: a warm spare (`type-idle-threshold`), a pause after a
    /// scale-up, room a pending pod could use, a group at its min size.
    pub warm_spare_or_held: f64,
    /// The unused room of a retired node waiting for its last pods.
    pub held_by_straggler: f64,
    /// The unused room of a node running work (bin-packing, pods finishing at
    /// different times).
    pub unused_beside_work: f64,
    /// Fenced for removal, detached, or terminating.
    pub removing: f64,
}

/// Runs a scenario to its end.
pub fn run(scenario: &Scenario, options: &SimOptions) -> Result<RunRecord, SimError> {
    let planner = Planner::new(scenario.settings.clone()).map_err(|e| SimError {
        message: format!("settings.{}: {}", e.field, e.message),
    })?;
    let mut engine = Engine::new(scenario, planner, options);
    engine.run();
    Ok(engine.record)
}

// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct PodMeta {
    /// Stable identity while the pod lives (its index in the vectors changes).
    uid: u64,
    /// The logical pod; `None` for DaemonSet pods.
    logical: Option<usize>,
    finish_at: Option<Time>,
}

#[derive(Debug, Clone)]
struct Booting {
    group: usize,
    instance: InstanceId,
    ready_at: Time,
    record: usize,
}

#[derive(Debug, Clone, Default)]
struct GroupSim {
    window_launched: Vec<u32>,
    next_retry: Option<Time>,
    next_seq: u32,
    /// Instances launched so far (the ordinal of a rate-based interruption draw).
    launched: u32,
}

/// How a running pod was lost.
enum Loss {
    /// Evicted, or its node was removed (by the planner or the ASG).
    ScaleIn,
    /// EC2 took its instance back; the node had this allocatable.
    Interruption { allocatable: Resources },
}

struct Engine<'s> {
    scenario: &'s Scenario,
    planner: Planner,
    now: Time,
    horizon: Time,
    cluster: ClusterSnapshot,
    pod_meta: Vec<PodMeta>,
    /// uid → index into `cluster.pods` / `pod_meta`.
    pod_slot: BTreeMap<u64, usize>,
    /// (finish time, uid) of running batch pods: the next completion is the first.
    finishes: BTreeSet<(Time, u64)>,
    next_uid: u64,
    /// Shared labels and taints of each node (parallel to `cluster.nodes`), so the
    /// scheduler does not copy them on every pass.
    node_arcs: Vec<(Arc<Labels>, Arc<Vec<Taint>>)>,
    groups: Vec<GroupSim>,
    booting: Vec<Booting>,
    /// Instance id → index into `record.instances`, for live instances.
    live_instances: BTreeMap<InstanceId, usize>,
    pending_failures: Vec<(Time, LaunchFailure)>,
    arrivals: Vec<(Time, usize, usize)>,
    next_arrival: usize,
    /// Jobs queued behind a ProvisioningRequest, not yet admitted.
    queued: Vec<QueuedJob>,
    /// The scenario's explicit interruptions, (time, group, entry), in time order.
    explicit_interruptions: Vec<(Time, usize, usize)>,
    next_explicit: usize,
    /// Rate-based warnings drawn at launch, not yet due.
    drawn_warnings: BTreeSet<(Time, InstanceId)>,
    /// Warned instances EC2 takes back: (deadline, instance, index into `record.interruptions`).
    reclaims: BTreeSet<(Time, InstanceId, usize)>,
    /// Live instances under a warning: not warned twice, and not counted by a
    /// Capacity Rebalancing group (it has launched their replacement).
    warned: BTreeSet<InstanceId>,
    /// Live instances detached from their group → that group.
    detached: BTreeMap<InstanceId, usize>,
    next_scan: Time,
    /// When the planner last had a pass: a timeout at or before it was served by it.
    last_pass: Option<Time>,
    next_sample: Time,
    next_instance: u64,
    dirty: bool,
    has_services: bool,
    has_gangs: bool,
    progress_hour: u64,
    wall_start: Option<std::time::Instant>,
    record: RunRecord,
}

pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl<'s> Engine<'s> {
    fn new(scenario: &'s Scenario, planner: Planner, options: &SimOptions) -> Self {
        let mut arrivals = Vec::new();
        for (wi, w) in scenario.workloads.iter().enumerate() {
            for (n, at) in w.arrivals.iter().enumerate() {
                arrivals.push((*at, wi, n));
            }
        }
        arrivals.sort();
        let mut explicit_interruptions: Vec<(Time, usize, usize)> = scenario
            .groups
            .iter()
            .enumerate()
            .flat_map(|(gi, g)| {
                g.interruptions
                    .iter()
                    .enumerate()
                    .map(move |(e, i)| (i.at, gi, e))
            })
            .collect();
        explicit_interruptions.sort();
        let cluster = ClusterSnapshot {
            synced: true,
            revision: 0,
            groups: scenario
                .groups
                .iter()
                .map(|g| NodeGroupState {
                    spec: g.spec.clone(),
                    target: 0,
                    instances: Vec::new(),
                })
                .collect(),
            nodes: Vec::new(),
            pods: Vec::new(),
            daemonsets: scenario.daemonsets.clone(),
            expander_priorities: None,
            provisioning_requests: Vec::new(),
        };
        let n_groups = scenario.groups.len();
        Self {
            scenario,
            planner,
            now: Time::ZERO,
            horizon: Time::ZERO + scenario.horizon,
            cluster,
            pod_meta: Vec::new(),
            pod_slot: BTreeMap::new(),
            finishes: BTreeSet::new(),
            next_uid: 0,
            node_arcs: Vec::new(),
            groups: scenario
                .groups
                .iter()
                .map(|g| GroupSim {
                    window_launched: vec![0; g.capacity_errors.len()],
                    ..GroupSim::default()
                })
                .collect(),
            booting: Vec::new(),
            live_instances: BTreeMap::new(),
            pending_failures: Vec::new(),
            arrivals,
            next_arrival: 0,
            queued: Vec::new(),
            explicit_interruptions,
            next_explicit: 0,
            drawn_warnings: BTreeSet::new(),
            reclaims: BTreeSet::new(),
            warned: BTreeSet::new(),
            detached: BTreeMap::new(),
            next_scan: Time::ZERO,
            last_pass: None,
            next_sample: Time::ZERO,
            next_instance: 1,
            dirty: false,
            has_services: scenario
                .workloads
                .iter()
                .any(|w| w.kind == WorkloadKind::Service),
            has_gangs: scenario.workloads.iter().any(|w| w.gang),
            progress_hour: 0,
            wall_start: options.progress.then(std::time::Instant::now),
            record: RunRecord {
                end: Time::ZERO,
                stop: StopReason::Horizon,
                logical_pods: Vec::new(),
                jobs: Vec::new(),
                instances: Vec::new(),
                failures: Vec::new(),
                samples: Vec::new(),
                peak_nodes: 0,
                peak_nodes_per_group: vec![0; n_groups],
                killed_by_scale_in: 0,
                service_pods_recreated: 0,
                evictable_batch_pods_recreated: 0,
                interruptions: Vec::new(),
                killed_by_interruption: 0,
                work_lost_pod_hours: 0.0,
                work_lost_node_hours: 0.0,
                restart_delays: Vec::new(),
                detach_calls: 0,
                notes: Vec::new(),
                scale_up_calls: 0,
                scale_down_calls: 0,
                give_back_calls: 0,
                retire_calls: 0,
                unretire_calls: 0,
                evictions: 0,
                asg_scale_in_terminations: 0,
                event_counts: BTreeMap::new(),
                events: Vec::new(),
                events_dropped: 0,
                violations: Vec::new(),
                planner_passes: 0,
                stale_timeouts: 0,
                actions_not_done: Vec::new(),
                node_time: NodeTime::default(),
            },
        }
    }

    fn run(&mut self) {
        self.start_initial_nodes();
        loop {
            self.step();
            if self.workload_done_and_settled() {
                self.record.stop = StopReason::WorkloadDone;
                break;
            }
            if self.now >= self.horizon {
                self.record.stop = StopReason::Horizon;
                break;
            }
            let next = self.next_event_time();
            if next > self.horizon {
                self.account_node_time(self.horizon);
                self.now = self.horizon;
                self.record.stop = StopReason::Horizon;
                break;
            }
            self.account_node_time(next);
            self.now = next;
        }
        self.finish();
    }

    /// Adds the state from now until `until` to [`NodeTime`].
    fn account_node_time(&mut self, until: Time) {
        let hours = until.saturating_since(self.now).as_secs_f64() / 3600.0;
        if hours <= 0.0 || self.live_instances.is_empty() {
            return;
        }
        let nodes = &self.cluster.nodes;
        let index: BTreeMap<&NodeName, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (&n.name, i))
            .collect();
        let mut used = vec![Resources::zero(); nodes.len()];
        let mut busy = vec![false; nodes.len()];
        for pod in &self.cluster.pods {
            if !pod.occupies_node() || pod.is_node_infrastructure() {
                continue;
            }
            if let Some(&ni) = pod.node.as_ref().and_then(|n| index.get(n)) {
                used[ni].add(&pod.requests);
                busy[ni] = true;
            }
        }
        let by_instance: BTreeMap<&InstanceId, usize> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.instance.as_ref().map(|id| (id, i)))
            .collect();
        let settings = &self.scenario.settings;
        let t = &mut self.record.node_time;
        for (id, &rec) in &self.live_instances {
            let Some(&ni) = by_instance.get(id) else {
                if self.booting.iter().any(|b| &b.instance == id) {
                    t.booting += hours;
                } else {
                    t.removing += hours;
                }
                continue;
            };
            let node = &nodes[ni];
            let share = used[ni].dominant_share(&node.allocatable).min(1.0);
            t.working += share * hours;
            let idle = (1.0 - share) * hours;
            let retired = planner::scaledown::is_retired(node);
            if busy[ni] {
                if retired {
                    t.held_by_straggler += idle;
                } else {
                    t.unused_beside_work += idle;
                }
            } else if retired || self.detached.contains_key(id) {
                t.removing += idle;
            } else {
                let group = &self.scenario.groups[self.record.instances[rec].group];
                let keep = planner::keep::empty_keep_time(settings, Some(group.boot_delay));
                let idle_for = node
                    .idle_since
                    .map_or(Duration::ZERO, |s| self.now.saturating_since(s));
                if idle_for < keep {
                    t.waiting_out_unneeded_time += idle;
                } else {
                    t.warm_spare_or_held += idle;
                }
            }
        }
    }

    // ---- the clock ----

    fn next_event_time(&self) -> Time {
        let after = Time(self.now.0 + 1);
        let mut next = self.horizon;
        let mut consider = |t: Time| {
            let t = t.max(after);
            if t < next {
                next = t;
            }
        };
        if let Some((t, _, _)) = self.arrivals.get(self.next_arrival) {
            consider(*t);
        }
        for q in &self.queued {
            if let Some(t) = q.retry_at {
                consider(t);
            }
        }
        if let Some((t, _)) = self.finishes.first() {
            consider(*t);
        }
        if let Some(t) = self.next_interruption_time() {
            consider(t);
        }
        for b in &self.booting {
            consider(b.ready_at);
        }
        for (t, _) in &self.pending_failures {
            consider(*t);
        }
        for (gi, g) in self.groups.iter().enumerate() {
            if let Some(t) = g.next_retry {
                consider(t);
            }
            for w in &self.scenario.groups[gi].capacity_errors {
                for edge in [w.from, w.to] {
                    if edge > self.now {
                        consider(edge);
                    }
                }
            }
        }
        consider(self.next_scan);
        if let Some(t) = self.live_timeout() {
            consider(t);
        }
        consider(self.next_sample);
        next
    }

    /// Everything due at `self.now`.
    fn step(&mut self) {
        self.process_arrivals();
        self.process_queue();
        self.process_completions();
        self.process_boots();
        self.process_interruptions();
        self.deliver_failures();
        self.process_group_timers();
        if self.dirty {
            self.schedule();
        }
        let timeout_due = self.live_timeout().is_some_and(|t| t <= self.now);
        if self.now >= self.next_scan || timeout_due {
            if timeout_due {
                self.planner.handle_timeout(self.now);
            }
            self.planner_pass();
            self.next_scan = self.now + self.scenario.settings.scan_interval;
            // Kueue reacts to the conditions the pass wrote.
            self.process_queue();
        }
        if self.dirty {
            self.schedule();
        }
        if self.has_gangs {
            self.update_gangs();
        }
        let live = self.live_per_group();
        let total: u32 = live.iter().sum();
        self.record.peak_nodes = self.record.peak_nodes.max(total);
        for (peak, n) in self.record.peak_nodes_per_group.iter_mut().zip(&live) {
            *peak = (*peak).max(*n);
        }
        if self.now >= self.next_sample {
            self.sample();
            self.next_sample = self.now + SAMPLE_INTERVAL;
            // Keep samples on whole minutes even if an event fell between them.
            self.next_sample =
                Time(self.next_sample.0 - self.next_sample.0 % SAMPLE_INTERVAL.as_millis() as u64);
        }
        self.progress();
    }

    /// The planner's timeout, unless a pass at or after it already served it. The
    /// planner may re-arm a timer that is already due (e.g. an idle node held back by
    /// a scale-down pause); honouring it literally would spin the clock.
    fn live_timeout(&self) -> Option<Time> {
        let t = self.planner.poll_timeout()?;
        if self.last_pass.is_some_and(|last| t <= last) {
            return None;
        }
        Some(t)
    }

    fn workload_done_and_settled(&self) -> bool {
        if self.has_services || self.next_arrival < self.arrivals.len() || !self.queued.is_empty() {
            return false;
        }
        let batch_left = self.pod_meta.iter().any(|m| m.logical.is_some());
        // A warned instance bills until EC2 takes it: wait for that.
        if batch_left
            || !self.pending_failures.is_empty()
            || !self.booting.is_empty()
            || !self.reclaims.is_empty()
        {
            return false;
        }
        self.cluster
            .groups
            .iter()
            .all(|g| g.target == g.spec.min_size && g.instances.len() as u32 == g.target)
    }

    fn progress(&mut self) {
        let Some(start) = self.wall_start else { return };
        let hour = self.now.0 / 3_600_000;
        if hour > self.progress_hour {
            self.progress_hour = hour;
            if start.elapsed() > Duration::from_secs(1) {
                let (pending, running) = self.pod_counts();
                let nodes: u32 = self.live_per_group().iter().sum();
                eprintln!(
                    "[{}] simulated {hour}h of {}: {pending} pending, {running} running, {nodes} nodes ({:.1}s)",
                    self.scenario.name,
                    model::format_duration(self.scenario.horizon),
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }

    fn finish(&mut self) {
        let end = self.now;
        for rec in &mut self.record.instances {
            if rec.terminated_at.is_none() {
                rec.terminated_at = Some(end);
            }
        }
        if self.record.samples.last().is_none_or(|s| s.at < end) {
            self.sample();
        }
        self.record.end = end;
    }

    fn sample(&mut self) {
        let (pending, running) = self.pod_counts();
        let nodes = self.live_per_group();
        self.record.samples.push(Sample {
            at: self.now,
            pending,
            running,
            nodes,
        });
    }

    fn pod_counts(&self) -> (u32, u32) {
        let mut pending = 0;
        let mut running = 0;
        for (p, m) in self.cluster.pods.iter().zip(&self.pod_meta) {
            if m.logical.is_none() {
                continue;
            }
            if p.node.is_none() {
                pending += 1;
            } else {
                running += 1;
            }
        }
        (pending, running)
    }

    // ---- workload ----

    fn process_arrivals(&mut self) {
        while let Some(&(at, wi, n)) = self.arrivals.get(self.next_arrival) {
            if at > self.now {
                break;
            }
            self.next_arrival += 1;
            let w = &self.scenario.workloads[wi];
            let job = self.record.jobs.len();
            let name = w.instance_name(n);
            let mut pods = Vec::new();
            for index in 0..w.pods {
                let duration = w.duration.map(|d| {
                    if w.duration_spread > 0.0 {
                        let draw = splitmix64(
                            self.scenario.seed
                                ^ splitmix64(
                                    (wi as u64) << 40 | (n as u64) << 20 | u64::from(index),
                                ),
                        );
                        let unit = (draw >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
                        let factor = 1.0 - w.duration_spread + 2.0 * w.duration_spread * unit;
                        Duration::from_millis(
                            ((d.as_millis() as f64) * factor).round().max(1.0) as u64
                        )
                    } else {
                        d
                    }
                });
                pods.push(self.record.logical_pods.len());
                self.record.logical_pods.push(LogicalPod {
                    job,
                    duration,
                    first_start: None,
                    completed_at: None,
                    kills: 0,
                    killed_by_interruption: 0,
                    incarnations: 0,
                    index,
                    lost_at: None,
                });
            }
            self.record.jobs.push(JobRecord {
                name,
                workload: wi,
                kind: w.kind,
                arrival: at,
                pods: pods.clone(),
                gang: w.gang,
                gang_all_running_at: None,
                gang_max_partial_running: 0,
                killed: 0,
                killed_by_interruption: 0,
                admitted_at: None,
                provisioning_requests: 0,
                admitted_by: None,
                deactivated: false,
            });
            match &w.queue {
                // Kueue holds the job (suspended, no pods) and asks for capacity.
                Some(class) => self.queued.push(QueuedJob {
                    job,
                    class: class.clone(),
                    request: None,
                    retry_at: Some(at),
                }),
                None => {
                    for lp in pods {
                        self.create_pod(lp);
                    }
                }
            }
        }
    }

    /// Creates a pending pod for a logical pod (its first incarnation or a replacement).
    fn create_pod(&mut self, logical: usize) {
        let lp = &mut self.record.logical_pods[logical];
        let incarnation = lp.incarnations;
        lp.incarnations += 1;
        let job = &self.record.jobs[lp.job];
        let w: &WorkloadDef = &self.scenario.workloads[job.workload];
        let name = if incarnation == 0 {
            format!("{}-{}", job.name, lp.index)
        } else {
            format!("{}-{}-r{}", job.name, lp.index, incarnation)
        };
        let mut pod = PodView::new(
            PodKey::new(NAMESPACE, name),
            w.requests.clone(),
            w.pod_owner(&job.name),
            self.now,
        );
        pod.labels.insert(JOB_NAME_LABEL, job.name.as_str());
        pod.labels.insert("app", w.name.as_str());
        pod.node_selector = w.node_selector.clone();
        pod.tolerations = w.tolerations.clone();
        pod.priority = w.priority;
        pod.safe_to_evict = w.safe_to_evict;
        pod.expected_duration = w.expected_duration;
        pod.active_deadline = w.active_deadline;
        if w.gang {
            pod.gang = Some(GangMembership::new(GangId::new(job.name.clone()), w.pods));
        }
        if w.anti_affinity_per_node {
            pod.anti_affinity
                .push(WorkloadDef::anti_affinity_term(&job.name));
        }
        pod.consumes_request = job.admitted_by.clone();
        self.push_pod(pod, Some(logical));
        self.dirty = true;
    }

    /// Plays Kueue's part for queued jobs: a ProvisioningRequest per job, the pods once
    /// it is Provisioned, a new request after Kueue's backoff when it Failed.
    fn process_queue(&mut self) {
        if self.queued.is_empty() && self.cluster.provisioning_requests.is_empty() {
            return;
        }
        let now = self.now;
        let mut still = Vec::new();
        for mut q in std::mem::take(&mut self.queued) {
            if q.request.is_none() && q.retry_at.is_some_and(|t| t <= now) {
                let job = &mut self.record.jobs[q.job];
                job.provisioning_requests += 1;
                let key = PodKey::new(
                    NAMESPACE,
                    format!("{}-{}", job.name, job.provisioning_requests),
                );
                let logical = job.pods.clone();
                let pods = logical.iter().map(|&lp| self.pod_template(lp)).collect();
                self.cluster
                    .provisioning_requests
                    .push(model::ProvisioningRequestView {
                        key: key.clone(),
                        class: q.class.clone(),
                        pods,
                        created: now,
                        no_retry: false,
                        conditions: Vec::new(),
                        problem: None,
                    });
                q.request = Some(key);
                q.retry_at = None;
            }
            let Some(key) = q.request.clone() else {
                still.push(q);
                continue;
            };
            let Some(r) = self
                .cluster
                .provisioning_requests
                .iter()
                .find(|r| r.key == key)
            else {
                still.push(q);
                continue;
            };
            if r.is(model::ConditionType::Provisioned) {
                let job = &mut self.record.jobs[q.job];
                job.admitted_at = Some(now);
                job.admitted_by = Some(key.name.clone());
                for lp in job.pods.clone() {
                    self.create_pod(lp);
                }
            } else if r.is(model::ConditionType::Failed) {
                self.cluster.provisioning_requests.retain(|r| r.key != key);
                let job = &mut self.record.jobs[q.job];
                let retries = job.provisioning_requests - 1;
                if retries < KUEUE_RETRY_LIMIT {
                    q.request = None;
                    q.retry_at = Some(now + KUEUE_RETRY_BASE * 2u32.pow(retries));
                    still.push(q);
                } else {
                    job.deactivated = true;
                }
            } else {
                still.push(q);
            }
        }
        self.queued = still;
        // Requests whose booking is over are deleted (Kueue deletes them with the job).
        self.cluster
            .provisioning_requests
            .retain(|r| !r.is(model::ConditionType::BookingExpired));
    }

    /// A logical pod's pod as a PodTemplate describes it (for a ProvisioningRequest).
    fn pod_template(&self, logical: usize) -> PodView {
        let lp = &self.record.logical_pods[logical];
        let job = &self.record.jobs[lp.job];
        let w: &WorkloadDef = &self.scenario.workloads[job.workload];
        let mut pod = PodView::new(
            PodKey::new(NAMESPACE, format!("{}-{}", job.name, lp.index)),
            w.requests.clone(),
            w.pod_owner(&job.name),
            self.now,
        );
        pod.node_selector = w.node_selector.clone();
        pod.tolerations = w.tolerations.clone();
        pod.priority = w.priority;
        pod
    }

    fn push_pod(&mut self, pod: PodView, logical: Option<usize>) {
        let uid = self.next_uid;
        self.next_uid += 1;
        self.pod_slot.insert(uid, self.cluster.pods.len());
        self.cluster.pods.push(pod);
        self.pod_meta.push(PodMeta {
            uid,
            logical,
            finish_at: None,
        });
    }

    fn process_completions(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        for &(t, uid) in &self.finishes {
            if t > now {
                break;
            }
            due.push(self.pod_slot[&uid]);
        }
        if due.is_empty() {
            return;
        }
        let removed = self.remove_pod_indices(due);
        for (_, meta) in removed {
            if let Some(lp) = meta.logical {
                self.record.logical_pods[lp].completed_at = meta.finish_at;
            }
        }
        self.dirty = true;
    }

    /// Removes the pods for which `remove` holds; returns them.
    fn remove_pods(
        &mut self,
        mut remove: impl FnMut(&PodView, &PodMeta) -> bool,
    ) -> Vec<(PodView, PodMeta)> {
        let indices = (0..self.cluster.pods.len())
            .filter(|&i| remove(&self.cluster.pods[i], &self.pod_meta[i]))
            .collect();
        self.remove_pod_indices(indices)
    }

    /// Removes the pods at `indices` (swap-remove: O(1) each, the order of the
    /// remaining pods changes, deterministically); returns them in index order.
    fn remove_pod_indices(&mut self, mut indices: Vec<usize>) -> Vec<(PodView, PodMeta)> {
        indices.sort_unstable();
        indices.dedup();
        let mut removed = Vec::with_capacity(indices.len());
        for &i in indices.iter().rev() {
            let pod = self.cluster.pods.swap_remove(i);
            let meta = self.pod_meta.swap_remove(i);
            if let Some(moved) = self.pod_meta.get(i) {
                self.pod_slot.insert(moved.uid, i);
            }
            self.pod_slot.remove(&meta.uid);
            if let Some(t) = meta.finish_at {
                self.finishes.remove(&(t, meta.uid));
            }
            removed.push((pod, meta));
        }
        removed.reverse();
        removed
    }

    // ---- the scheduler ----

    /// Binds pending pods to ready nodes with the planner's placement predicates,
    /// highest priority first, scoring nodes least-allocated (kube-scheduler's default
    /// spreads pods); gangs all at once or not at all. Pods left over are marked
    /// unschedulable, as the scheduler's PodScheduled=False condition would.
    fn schedule(&mut self) {
        self.dirty = false;
        let mut pending: Vec<usize> = (0..self.cluster.pods.len())
            .filter(|&i| self.cluster.pods[i].is_unbound_pending())
            .collect();
        if pending.is_empty() {
            return;
        }
        {
            let pods = &self.cluster.pods;
            pending.sort_by(|&a, &b| {
                let (pa, pb) = (&pods[a], &pods[b]);
                pb.priority
                    .cmp(&pa.priority)
                    .then(pa.created.cmp(&pb.created))
                    .then(pa.key.cmp(&pb.key))
            });
        }
        let job_of =
            |i: usize, meta: &[PodMeta], lps: &[LogicalPod]| meta[i].logical.map(|l| lps[l].job);
        let mut bindings: Vec<(usize, usize)> = Vec::new();
        {
            let pods = &self.cluster.pods;
            let mut sim = PlacementSim::new(pods);
            let mut node_index: BTreeMap<&NodeName, usize> = BTreeMap::new();
            for (node, (labels, taints)) in self.cluster.nodes.iter().zip(&self.node_arcs) {
                let idx = sim.add_node(SimNode {
                    name: node.name.clone(),
                    origin: NodeOrigin::Existing,
                    group: node.group.clone(),
                    labels: Arc::clone(labels),
                    taints: Arc::clone(taints),
                    allocatable: node.allocatable.clone(),
                    used: Resources::zero(),
                    ready: node.ready,
                    cordoned: node.cordoned,
                    residents: Vec::new(),
                });
                node_index.insert(&node.name, idx);
            }
            for (i, p) in pods.iter().enumerate() {
                if p.occupies_node() {
                    if let Some(&n) = p.node.as_ref().and_then(|n| node_index.get(n)) {
                        sim.place(i, n);
                    }
                }
            }
            let n_nodes = sim.nodes().len();
            let mut failed_jobs: BTreeSet<usize> = BTreeSet::new();
            let mut gangs_tried: BTreeSet<usize> = BTreeSet::new();
            for &p in &pending {
                let job = job_of(p, &self.pod_meta, &self.record.logical_pods);
                if job.is_some_and(|j| failed_jobs.contains(&j)) {
                    continue;
                }
                if pods[p].gang.is_some() {
                    let Some(job) = job else { continue };
                    if !gangs_tried.insert(job) {
                        continue;
                    }
                    let members: Vec<usize> = pending
                        .iter()
                        .copied()
                        .filter(|&q| {
                            pods[q].gang.is_some()
                                && job_of(q, &self.pod_meta, &self.record.logical_pods) == Some(job)
                        })
                        .collect();
                    let mut placed = Vec::new();
                    for &q in &members {
                        match best_node(&sim, q, n_nodes) {
                            Some(n) => {
                                sim.place(q, n);
                                placed.push((q, n));
                            }
                            None => break,
                        }
                    }
                    if placed.len() == members.len() {
                        bindings.extend(placed);
                    } else {
                        for (q, n) in placed {
                            sim.unplace(q, n);
                        }
                        failed_jobs.insert(job);
                    }
                    continue;
                }
                match best_node(&sim, p, n_nodes) {
                    Some(n) => {
                        sim.place(p, n);
                        bindings.push((p, n));
                    }
                    None => {
                        if let Some(j) = job {
                            failed_jobs.insert(j);
                        }
                    }
                }
            }
            // Resolve node indices to names before the simulation's borrow ends.
            let names: Vec<NodeName> = sim.nodes().iter().map(|n| n.name.clone()).collect();
            let bound: BTreeSet<usize> = bindings.iter().map(|(p, _)| *p).collect();
            let now = self.now;
            let pods = &mut self.cluster.pods;
            for (p, n) in &bindings {
                let pod = &mut pods[*p];
                pod.node = Some(names[*n].clone());
                pod.phase = PodPhase::Running;
                pod.started = Some(now);
                pod.unschedulable = false;
                let meta = &mut self.pod_meta[*p];
                if let Some(lp) = meta.logical {
                    let lp = &mut self.record.logical_pods[lp];
                    lp.first_start.get_or_insert(now);
                    if let Some(lost) = lp.lost_at.take() {
                        self.record.restart_delays.push(now - lost);
                    }
                    meta.finish_at = lp.duration.map(|d| now + d);
                    if let Some(t) = meta.finish_at {
                        self.finishes.insert((t, meta.uid));
                    }
                }
            }
            for &p in &pending {
                if !bound.contains(&p) {
                    pods[p].unschedulable = true;
                }
            }
        }
    }

    fn update_gangs(&mut self) {
        let mut running: BTreeMap<usize, u32> = BTreeMap::new();
        for (p, m) in self.cluster.pods.iter().zip(&self.pod_meta) {
            if let (Some(lp), Some(_)) = (m.logical, &p.node) {
                let job = self.record.logical_pods[lp].job;
                if self.record.jobs[job].gang {
                    *running.entry(job).or_default() += 1;
                }
            }
        }
        for (job, n) in running {
            let rec = &mut self.record.jobs[job];
            if rec.gang_all_running_at.is_some() {
                continue;
            }
            if n as usize >= rec.pods.len() {
                rec.gang_all_running_at = Some(self.now);
            } else {
                rec.gang_max_partial_running = rec.gang_max_partial_running.max(n);
            }
        }
    }

    // ---- simulated EC2 ----

    fn start_initial_nodes(&mut self) {
        for gi in 0..self.scenario.groups.len() {
            let initial = self.scenario.groups[gi].initial;
            self.cluster.groups[gi].target = initial;
            for _ in 0..initial {
                let rec = self.launch_instance(gi);
                // Initial nodes exist before the simulation starts: ready at once.
                if let Some(pos) = self.booting.iter().position(|b| b.record == rec) {
                    self.booting[pos].ready_at = self.now;
                }
            }
        }
        self.process_boots();
    }

    fn launch_instance(&mut self, gi: usize) -> usize {
        let def = &self.scenario.groups[gi];
        let id = InstanceId::new(format!("i-{:017x}", self.next_instance));
        self.next_instance += 1;
        let rec = self.record.instances.len();
        self.record.instances.push(InstanceRecord {
            group: gi,
            id: id.clone(),
            launched_at: self.now,
            terminated_at: None,
            interrupted_at: None,
            detached_at: None,
        });
        self.live_instances.insert(id.clone(), rec);
        let ordinal = self.groups[gi].launched;
        self.groups[gi].launched += 1;
        if let Some(after) = spot::time_to_warning(
            self.scenario.seed,
            gi,
            ordinal,
            def.interruption_rate_per_hour,
        ) {
            let at = self.now + after;
            if at < self.horizon {
                self.drawn_warnings.insert((at, id.clone()));
            }
        }
        self.cluster.groups[gi].instances.push(InstanceView {
            id: id.clone(),
            zone: def.zone.clone(),
            state: InstanceState::Pending,
            launched_at: self.now,
        });
        self.booting.push(Booting {
            group: gi,
            instance: id,
            ready_at: self.now + def.boot_delay,
            record: rec,
        });
        rec
    }

    /// Brings a group's instances in line with its desired capacity, within its
    /// capacity-error windows.
    fn reconcile_group(&mut self, gi: usize) {
        let def: &GroupDef = &self.scenario.groups[gi];
        let target = self.cluster.groups[gi].target;
        let live = self.asg_counted(gi);
        if target > live {
            let want = target - live;
            let mut allowed = want;
            for (wi, w) in def.capacity_errors.iter().enumerate() {
                if w.from <= self.now && self.now < w.to {
                    allowed = allowed.min(
                        w.available
                            .saturating_sub(self.groups[gi].window_launched[wi]),
                    );
                }
            }
            for (wi, w) in def.capacity_errors.iter().enumerate() {
                if w.from <= self.now && self.now < w.to {
                    self.groups[gi].window_launched[wi] += allowed;
                }
            }
            for _ in 0..allowed {
                self.launch_instance(gi);
            }
            let failed = want - allowed;
            if failed > 0 {
                let def = &self.scenario.groups[gi];
                let it = &def.spec.shape.instance_type;
                let message = format!(
                    "Launching a new EC2 instance. Status Reason: We currently do not have sufficient {it} capacity in the \
                     Availability Zone you requested ({zone}). Our system will be working on provisioning additional capacity. \
                     You can currently get {it} capacity by not specifying an Availability Zone in your request or choosing \
                     other Availability Zones. Launching EC2 instance failed. (InsufficientInstanceCapacity; {failed} of {want} instances)",
                    zone = def.zone
                );
                self.record.failures.push(FailureRecord {
                    at: self.now,
                    group: gi,
                    count: failed,
                    message: message.clone(),
                });
                self.pending_failures.push((
                    self.now + FAILURE_REPORT_DELAY,
                    LaunchFailure {
                        group: def.spec.id.clone(),
                        zone: Some(def.zone.clone()),
                        kind: LaunchFailureKind::InsufficientCapacity,
                        count: failed,
                        message,
                        at: self.now,
                    },
                ));
                self.groups[gi].next_retry = Some(self.now + ASG_RETRY_INTERVAL);
            } else {
                self.groups[gi].next_retry = None;
            }
        } else {
            self.groups[gi].next_retry = None;
            if target < live {
                self.asg_scale_in(gi, (live - target) as usize);
            }
        }
    }

    /// The ASG's own scale-in when desired capacity drops below its instances: it
    /// takes booting instances first (newest first), then the least busy nodes.
    /// The planner should only ever lower desired capacity for undelivered nodes, so
    /// this terminating a node with pods would be a finding.
    fn asg_scale_in(&mut self, gi: usize, mut excess: usize) {
        let booting: Vec<InstanceId> = self
            .booting
            .iter()
            .rev()
            .filter(|b| b.group == gi)
            .map(|b| b.instance.clone())
            .collect();
        for id in booting.into_iter().take(excess) {
            self.terminate_instance(&id);
            self.record.asg_scale_in_terminations += 1;
            excess -= 1;
        }
        if excess == 0 {
            return;
        }
        let group_id = &self.scenario.groups[gi].spec.id;
        let mut candidates: Vec<(usize, std::cmp::Reverse<Time>, InstanceId)> = self
            .cluster
            .nodes
            .iter()
            .filter(|n| n.group.as_ref() == Some(group_id))
            // Not counted against desired capacity, so not scaled in either.
            .filter(|n| n.instance.as_ref().is_none_or(|i| !self.rebalancing(gi, i)))
            .filter_map(|n| {
                let busy = self
                    .cluster
                    .pods
                    .iter()
                    .filter(|p| p.node.as_ref() == Some(&n.name) && !p.is_node_infrastructure())
                    .count();
                n.instance
                    .clone()
                    .map(|i| (busy, std::cmp::Reverse(n.created), i))
            })
            .collect();
        candidates.sort();
        for (busy, _, id) in candidates.into_iter().take(excess) {
            if busy > 0 {
                self.record.violations.push(format!(
                    "{}: desired capacity fell below the group's instances; the ASG terminated {id} running {busy} pods",
                    self.now.as_secs_f64()
                ));
            }
            self.terminate_instance(&id);
            self.record.asg_scale_in_terminations += 1;
        }
    }

    /// Terminates one instance, its node and the node's pods; returns false if it is
    /// not (or no longer) there.
    fn terminate_instance(&mut self, id: &InstanceId) -> bool {
        self.end_instance(id, false)
    }

    /// Ends one instance, its node and the node's pods: terminated (by the planner or
    /// the ASG), or `interrupted` (EC2 took it back: its pods count as killed by
    /// interruption). Returns false if it is not (or no longer) there.
    fn end_instance(&mut self, id: &InstanceId, interrupted: bool) -> bool {
        let Some(rec) = self.live_instances.remove(id) else {
            return false;
        };
        let gi = self.record.instances[rec].group;
        self.record.instances[rec].terminated_at = Some(self.now);
        self.cluster.groups[gi].instances.retain(|i| &i.id != id);
        self.detached.remove(id);
        self.warned.remove(id);
        self.booting.retain(|b| &b.instance != id);
        let node = self
            .cluster
            .nodes
            .iter()
            .position(|n| n.instance.as_ref() == Some(id));
        if let Some(ni) = node {
            let node = self.cluster.nodes.remove(ni);
            self.node_arcs.remove(ni);
            let loss = if interrupted {
                Loss::Interruption {
                    allocatable: node.allocatable.clone(),
                }
            } else {
                Loss::ScaleIn
            };
            let removed = self.remove_pods(|p, _| p.node.as_ref() == Some(&node.name));
            for (pod, meta) in removed {
                self.pod_lost(&pod, &meta, &loss);
            }
            self.dirty = true;
        }
        true
    }

    /// Live instances per group, in scenario order: its members (booting or ready) and
    /// the instances it launched that were detached and still run (and bill).
    fn live_per_group(&self) -> Vec<u32> {
        let mut live: Vec<u32> = self
            .cluster
            .groups
            .iter()
            .map(|g| g.instances.len() as u32)
            .collect();
        for &gi in self.detached.values() {
            live[gi] += 1;
        }
        live
    }

    /// The members the simulated ASG holds against its desired capacity: a Capacity
    /// Rebalancing group no longer counts a warned instance (it launched the
    /// replacement at the warning and lets EC2 take the old one).
    fn asg_counted(&self, gi: usize) -> u32 {
        self.cluster.groups[gi]
            .instances
            .iter()
            .filter(|i| !self.rebalancing(gi, &i.id))
            .count() as u32
    }

    /// Whether Capacity Rebalancing group `gi` has replaced `instance` already: it is
    /// warned, and EC2 takes it soon.
    fn rebalancing(&self, gi: usize, instance: &InstanceId) -> bool {
        self.cluster.groups[gi].spec.capacity_rebalance && self.warned.contains(instance)
    }

    // ---- spot interruptions ----

    /// The next explicit interruption, drawn warning or reclaim.
    fn next_interruption_time(&self) -> Option<Time> {
        let explicit = self
            .explicit_interruptions
            .get(self.next_explicit)
            .map(|(t, _, _)| *t);
        let drawn = self.drawn_warnings.first().map(|(t, _)| *t);
        let reclaim = self.reclaims.first().map(|(t, _, _)| *t);
        [explicit, drawn, reclaim].into_iter().flatten().min()
    }

    /// Everything about spot interruptions due now: EC2 takes back instances whose
    /// warning has run out, then gives the warnings that are due.
    fn process_interruptions(&mut self) {
        self.process_reclaims();
        self.process_explicit_interruptions();
        self.process_drawn_warnings();
    }

    fn process_explicit_interruptions(&mut self) {
        while let Some(&(at, gi, entry)) = self.explicit_interruptions.get(self.next_explicit) {
            if at > self.now {
                break;
            }
            self.next_explicit += 1;
            let count = self.scenario.groups[gi].interruptions[entry].count;
            let members: Vec<&InstanceView> = self.cluster.groups[gi]
                .instances
                .iter()
                .filter(|i| !self.warned.contains(&i.id))
                .collect();
            let keys: Vec<(bool, u64)> = members
                .iter()
                .map(|i| {
                    (
                        i.state == InstanceState::InService,
                        self.live_instances[&i.id] as u64,
                    )
                })
                .collect();
            let chosen: Vec<InstanceId> = spot::pick(self.scenario.seed, gi, entry, &keys, count)
                .into_iter()
                .map(|k| members[k].id.clone())
                .collect();
            if (chosen.len() as u32) < count {
                self.record.notes.push(format!(
                    "node_groups[{gi}] ({}).interruptions[{entry}]: at {} only {} of {count} instances were there to interrupt",
                    self.scenario.groups[gi].spec.id,
                    model::format_duration(at.saturating_since(Time::ZERO)),
                    chosen.len()
                ));
            }
            for id in chosen {
                self.warn(gi, id);
            }
        }
    }

    fn process_drawn_warnings(&mut self) {
        while self
            .drawn_warnings
            .first()
            .is_some_and(|(t, _)| *t <= self.now)
        {
            let Some((_, id)) = self.drawn_warnings.pop_first() else {
                break;
            };
            let Some(&rec) = self.live_instances.get(&id) else {
                continue;
            };
            if !self.warned.contains(&id) {
                self.warn(self.record.instances[rec].group, id);
            }
        }
    }

    /// EC2's spot interruption warning for a live instance launched by group `gi`: it
    /// goes in [`spot::WARNING_LEAD`]. A Capacity Rebalancing group launches its
    /// replacement now; the planner, if it handles interruptions, hears of it and has
    /// a pass within [`spot::NOTICE_REACTION`], as the driver would.
    fn warn(&mut self, gi: usize, id: InstanceId) {
        let now = self.now;
        let deadline = now + spot::WARNING_LEAD;
        let notified = self.scenario.settings.interruption_handling;
        let node = self
            .cluster
            .nodes
            .iter()
            .find(|n| n.instance.as_ref() == Some(&id))
            .map(|n| n.name.clone());
        let rec = self.live_instances[&id];
        self.record.instances[rec].interrupted_at = Some(now);
        let index = self.record.interruptions.len();
        self.record.interruptions.push(InterruptionRecord {
            at: now,
            deadline,
            group: gi,
            instance: id.clone(),
            node,
            notified,
            reclaimed: false,
            pods_killed: 0,
        });
        self.warned.insert(id.clone());
        self.reclaims.insert((deadline, id.clone(), index));
        if self.scenario.groups[gi].spec.capacity_rebalance {
            self.reconcile_group(gi);
        }
        if notified {
            let notice = InterruptionNotice {
                instance: id,
                kind: InterruptionKind::SpotInterruption,
                detail: "terminate".into(),
                at: now,
                deadline: Some(deadline),
                region: Some(self.scenario.groups[gi].spec.region.clone()),
            };
            self.planner.handle_interruption(now, notice);
            self.drain_planner();
            self.next_scan = self.next_scan.min(now + spot::NOTICE_REACTION);
        }
    }

    fn process_reclaims(&mut self) {
        while self
            .reclaims
            .first()
            .is_some_and(|(t, _, _)| *t <= self.now)
        {
            let Some((_, id, index)) = self.reclaims.pop_first() else {
                break;
            };
            self.reclaim(&id, index);
        }
    }

    /// EC2 takes a warned instance back: billing stops, its node and pods go. If it
    /// is still a member of its group, the group replaces it (its desired capacity is
    /// unchanged); a detached instance is not replaced, and a Capacity Rebalancing
    /// group has replaced it already.
    fn reclaim(&mut self, id: &InstanceId, index: usize) {
        let Some(&rec) = self.live_instances.get(id) else {
            return;
        };
        let gi = self.record.instances[rec].group;
        let member = self.cluster.groups[gi]
            .instances
            .iter()
            .any(|i| &i.id == id);
        let killed_before = self.record.killed_by_interruption;
        self.end_instance(id, true);
        let r = &mut self.record.interruptions[index];
        r.reclaimed = true;
        r.pods_killed = self.record.killed_by_interruption - killed_before;
        if member {
            self.reconcile_group(gi);
        }
    }

    /// DetachInstances with ShouldDecrementDesiredCapacity: the instance leaves its
    /// group and desired capacity drops by one; it runs (and bills) on, its node with
    /// no group, until EC2 takes it back. As AWS, only an InService member can be
    /// detached, and not below the group's minimum.
    fn detach_instance(&mut self, group: &NodeGroupId, instance: &InstanceId) -> Outcome {
        let Some(gi) = self.group_index(group) else {
            return Outcome::Failed {
                message: format!("no node group {group}"),
            };
        };
        let Some(pos) = self.cluster.groups[gi]
            .instances
            .iter()
            .position(|i| &i.id == instance)
        else {
            if self.live_instances.contains_key(instance) {
                return Outcome::Failed {
                    message: format!("ValidationError: {instance} is not a member of {group}"),
                };
            }
            return Outcome::Gone;
        };
        let g = &mut self.cluster.groups[gi];
        if g.instances[pos].state != InstanceState::InService {
            return Outcome::Failed {
                message: format!("ValidationError: the instance {instance} is not in InService"),
            };
        }
        if g.target <= g.spec.min_size {
            return Outcome::Failed {
                message: format!(
                    "ValidationError: detaching {instance} would take the desired capacity of {group} below its minimum size {}",
                    g.spec.min_size
                ),
            };
        }
        g.instances.remove(pos);
        g.target -= 1;
        if let Some(node) = self
            .cluster
            .nodes
            .iter_mut()
            .find(|n| n.instance.as_ref() == Some(instance))
        {
            node.group = None;
        }
        self.detached.insert(instance.clone(), gi);
        let rec = self.live_instances[instance];
        self.record.instances[rec].detached_at = Some(self.now);
        self.record.detach_calls += 1;
        Outcome::Done
    }

    /// A pod was evicted or went with its node before finishing: count it and recreate
    /// it, as its controller would (bare pods and pods of controllers that do not
    /// recreate are recreated too, so the workload still completes and the kill is
    /// visible in the report).
    ///
    /// Whether the loss is a kill is the planner's own rule, [`planner::disposition`]
    /// under the scenario's settings, exactly as for a pod of a real cluster: losing a
    /// running must-finish pod (a Job's, an Argo Workflow's, a bare pod, any owner not
    /// on `evictable-owner-kinds`, whatever its priority) is a kill; an evictable or
    /// expendable pod is recreated with nothing lost.
    ///
    /// Losing a running pod to an interruption is counted apart, whatever the pod:
    /// EC2 does not ask (see [`Self::interrupted`]).
    fn pod_lost(&mut self, pod: &PodView, meta: &PodMeta, loss: &Loss) {
        let Some(lp) = meta.logical else { return };
        let job = self.record.logical_pods[lp].job;
        if let (Some(_), Loss::Interruption { allocatable }) = (&pod.node, loss) {
            self.interrupted(pod, lp, allocatable);
        } else if pod.node.is_some() {
            match planner::disposition(pod, &self.scenario.settings) {
                PodDisposition::MustFinish => {
                    self.record.killed_by_scale_in += 1;
                    self.record.logical_pods[lp].kills += 1;
                    self.record.jobs[job].killed += 1;
                }
                PodDisposition::Evictable | PodDisposition::Expendable => {
                    match self.record.jobs[job].kind {
                        WorkloadKind::Service => self.record.service_pods_recreated += 1,
                        WorkloadKind::Job | WorkloadKind::Bare => {
                            self.record.evictable_batch_pods_recreated += 1
                        }
                    }
                }
                // Workload pods are never node infrastructure (the scenario refuses
                // DaemonSet and Node owners).
                PodDisposition::Ignored => {}
            }
        }
        self.create_pod(lp);
    }

    /// A running pod of logical pod `lp` died with its interrupted node: counted, its
    /// run time is work lost (batch pods: they start over), and the time until its
    /// replacement runs is measured.
    fn interrupted(&mut self, pod: &PodView, lp: usize, allocatable: &Resources) {
        let job = self.record.logical_pods[lp].job;
        self.record.killed_by_interruption += 1;
        self.record.logical_pods[lp].killed_by_interruption += 1;
        self.record.logical_pods[lp].lost_at = Some(self.now);
        self.record.jobs[job].killed_by_interruption += 1;
        if self.record.jobs[job].kind != WorkloadKind::Service {
            let hours = self
                .now
                .saturating_since(pod.started.unwrap_or(self.now))
                .as_secs_f64()
                / 3600.0;
            self.record.work_lost_pod_hours += hours;
            self.record.work_lost_node_hours +=
                hours * pod.requests.dominant_share(allocatable).min(1.0);
        }
    }

    fn process_boots(&mut self) {
        let now = self.now;
        let mut ready: Vec<Booting> = Vec::new();
        self.booting.retain(|b| {
            if b.ready_at <= now {
                ready.push(b.clone());
                false
            } else {
                true
            }
        });
        for b in ready {
            self.register_node(b);
        }
    }

    fn register_node(&mut self, b: Booting) {
        let gi = b.group;
        let def = &self.scenario.groups[gi];
        let gs = &mut self.groups[gi];
        gs.next_seq += 1;
        let name = NodeName::new(format!("{}-{:04}", def.spec.id, gs.next_seq));
        if let Some(inst) = self.cluster.groups[gi]
            .instances
            .iter_mut()
            .find(|i| i.id == b.instance)
        {
            inst.state = InstanceState::InService;
        }
        let mut node = NodeView::new(name.clone(), def.spec.shape.allocatable.clone(), self.now);
        node.labels = def.spec.template_labels(&def.zone);
        node.labels
            .insert(LABEL_HOSTNAME.to_owned(), name.0.clone());
        node.instance = Some(b.instance.clone());
        node.group = Some(def.spec.id.clone());
        node.taints = def.spec.taints.clone();
        // DaemonSet pods land on every eligible node as it registers.
        for ds in &self.scenario.daemonsets {
            let mut pod = PodView::new(
                PodKey::new("kube-system", format!("{}-{}", ds.name, name)),
                ds.requests.clone(),
                Owner::DaemonSet(ds.name.clone()),
                self.now,
            );
            pod.node_selector = ds.node_selector.clone();
            pod.required_affinity = ds.required_affinity.clone();
            pod.tolerations = ds.tolerations.clone();
            if planner::predicates::check_labels_and_taints(&pod, &node.labels, &node.taints)
                .is_err()
            {
                continue;
            }
            pod.node = Some(name.clone());
            pod.phase = PodPhase::Running;
            pod.started = Some(self.now);
            self.push_pod(pod, None);
        }
        self.node_arcs
            .push((Arc::new(node.labels.clone()), Arc::new(node.taints.clone())));
        self.cluster.nodes.push(node);
        self.dirty = true;
    }

    fn process_group_timers(&mut self) {
        for gi in 0..self.groups.len() {
            let retry_due = self.groups[gi].next_retry.is_some_and(|t| t <= self.now);
            let edge = self.scenario.groups[gi]
                .capacity_errors
                .iter()
                .any(|w| w.from == self.now || w.to == self.now);
            let short = self.cluster.groups[gi].target > self.asg_counted(gi);
            if retry_due || (edge && short) {
                self.reconcile_group(gi);
            }
        }
    }

    fn deliver_failures(&mut self) {
        let now = self.now;
        if !self.pending_failures.iter().any(|(t, _)| *t <= now) {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_failures)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.pending_failures = later;
        for (_, failure) in due {
            self.planner.handle_launch_failure(now, failure);
        }
        self.drain_planner();
    }

    // ---- the planner ----

    fn planner_pass(&mut self) {
        self.cluster.revision += 1;
        self.cluster.synced = true;
        self.record.planner_passes += 1;
        self.last_pass = Some(self.now);
        self.planner.handle_snapshot(self.now, &self.cluster);
        self.drain_planner();
        if self.planner.poll_timeout().is_some_and(|t| t <= self.now) {
            self.record.stale_timeouts += 1;
        }
    }

    fn drain_planner(&mut self) {
        while let Some(action) = self.planner.poll_action() {
            let id = action.id();
            let text = action.to_string();
            let outcome = self.apply(action);
            if !matches!(outcome, Outcome::Done | Outcome::Evidence(_)) {
                self.record.actions_not_done.push(format!(
                    "t={}s: {text}: {outcome:?}",
                    self.now.as_secs_f64()
                ));
            }
            self.planner.handle_outcome(self.now, id, outcome);
        }
        while let Some((at, event)) = self.planner.poll_event() {
            let reason = event.reason();
            *self.record.event_counts.entry(reason).or_default() += 1;
            let notable = !matches!(
                event,
                PlannerEvent::WaitingForCapacity { .. }
                    | PlannerEvent::NotTriggerScaleUp { .. }
                    | PlannerEvent::ScaleDownCandidate { .. }
                    | PlannerEvent::ScaleDownCancelled { .. }
            );
            if notable {
                if self.record.events.len() < MAX_RECORDED_EVENTS {
                    self.record.events.push(EventRecord {
                        at,
                        reason,
                        message: event.to_string(),
                    });
                } else {
                    self.record.events_dropped += 1;
                }
            }
        }
    }

    fn group_index(&self, id: &NodeGroupId) -> Option<usize> {
        self.scenario.groups.iter().position(|g| &g.spec.id == id)
    }

    fn node_index(&self, name: &NodeName) -> Option<usize> {
        self.cluster.nodes.iter().position(|n| &n.name == name)
    }

    fn apply(&mut self, action: Action) -> Outcome {
        match action {
            Action::DetachInstance {
                group, instance, ..
            } => self.detach_instance(&group, &instance),
            Action::UpdateProvisioningRequest {
                request,
                conditions,
                ..
            } => {
                let Some(r) = self
                    .cluster
                    .provisioning_requests
                    .iter_mut()
                    .find(|r| r.key == request)
                else {
                    return Outcome::Gone;
                };
                for c in conditions {
                    r.conditions.retain(|have| have.kind != c.kind);
                    r.conditions.push(c);
                }
                Outcome::Done
            }
            Action::SetTargetSize {
                group, to, reason, ..
            } => {
                let Some(gi) = self.group_index(&group) else {
                    return Outcome::Failed {
                        message: format!("no node group {group}"),
                    };
                };
                let current = self.cluster.groups[gi].target;
                let max = self.scenario.groups[gi].spec.max_size;
                let mut to = to;
                if to > max {
                    self.record.violations.push(format!(
                        "t={}s: target {to} above max {max} requested for {group}",
                        self.now.as_secs_f64()
                    ));
                    to = max;
                }
                match reason {
                    TargetReason::ScaleUp { .. } if to > current => self.record.scale_up_calls += 1,
                    TargetReason::GiveBack { .. } => self.record.give_back_calls += 1,
                    _ => {}
                }
                self.cluster.groups[gi].target = to;
                self.reconcile_group(gi);
                Outcome::Done
            }
            Action::TerminateInstance {
                group, instance, ..
            } => {
                let Some(gi) = self.group_index(&group) else {
                    return Outcome::Failed {
                        message: format!("no node group {group}"),
                    };
                };
                if self
                    .record
                    .instances
                    .iter()
                    .any(|r| r.id == instance && r.group != gi)
                    || self.detached.contains_key(&instance)
                {
                    return Outcome::Failed {
                        message: format!("{instance} is not in {group}"),
                    };
                }
                if !self.terminate_instance(&instance) {
                    return Outcome::Gone;
                }
                self.record.scale_down_calls += 1;
                let g = &mut self.cluster.groups[gi];
                g.target = g.target.saturating_sub(1);
                if g.target < g.spec.min_size {
                    self.record.violations.push(format!(
                        "t={}s: terminating {instance} took {group} below its min {}",
                        self.now.as_secs_f64(),
                        g.spec.min_size
                    ));
                }
                self.reconcile_group(gi);
                Outcome::Done
            }
            Action::RetireNode { node, reason, .. } => {
                let Some(ni) = self.node_index(&node) else {
                    return Outcome::Gone;
                };
                self.record.retire_calls += 1;
                let n = &mut self.cluster.nodes[ni];
                if !n.taints.iter().any(|t| t.key == TAINT_RETIRING) {
                    n.taints
                        .push(Taint::new(TAINT_RETIRING, "", TaintEffect::NoSchedule));
                }
                n.retired = Some(RetireMark {
                    since: self.now,
                    reason,
                });
                self.node_arcs[ni].1 = Arc::new(n.taints.clone());
                Outcome::Done
            }
            Action::UnretireNode { node, .. } => {
                let Some(ni) = self.node_index(&node) else {
                    return Outcome::Gone;
                };
                self.record.unretire_calls += 1;
                let n = &mut self.cluster.nodes[ni];
                n.taints.retain(|t| t.key != TAINT_RETIRING);
                n.retired = None;
                self.node_arcs[ni].1 = Arc::new(n.taints.clone());
                self.dirty = true;
                Outcome::Done
            }
            Action::VerifyRemoval { instance, .. } => {
                // The simulated cluster has no lag: its current state is the fresh read.
                let node = self
                    .cluster
                    .nodes
                    .iter()
                    .find(|n| n.instance.as_ref() == Some(&instance))
                    .cloned();
                let pods = match &node {
                    Some(n) => self
                        .cluster
                        .pods
                        .iter()
                        .filter(|p| p.node.as_ref() == Some(&n.name))
                        .cloned()
                        .collect(),
                    None => Vec::new(),
                };
                Outcome::Evidence(planner::RemovalEvidence { node, pods })
            }
            Action::EvictPod { pod, .. } => {
                if !self.cluster.pods.iter().any(|p| p.key == pod) {
                    return Outcome::Gone;
                }
                self.record.evictions += 1;
                let removed = self.remove_pods(|p, _| p.key == pod);
                for (p, m) in removed {
                    self.pod_lost(&p, &m, &Loss::ScaleIn);
                }
                self.dirty = true;
                Outcome::Done
            }
            Action::MarkIdle { node, since, .. } => {
                let Some(ni) = self.node_index(&node) else {
                    return Outcome::Gone;
                };
                self.cluster.nodes[ni].idle_since = since;
                Outcome::Done
            }
            Action::PersistBackoff { .. } => Outcome::Done,
        }
    }
}

/// The node that takes pod `pod` with the most room left afterwards (kube-scheduler's
/// LeastAllocated score over cpu and memory); ties go to the earlier node.
fn best_node(sim: &PlacementSim<'_>, pod: usize, n_nodes: usize) -> Option<usize> {
    let request = &sim.pods()[pod].requests;
    let mut best: Option<(f64, usize)> = None;
    for n in 0..n_nodes {
        if sim.can_place(pod, n).is_err() {
            continue;
        }
        let node = sim.node(n);
        let room = |alloc: i64, used: i64, req: i64| {
            if alloc <= 0 {
                0.0
            } else {
                (alloc - used - req) as f64 / alloc as f64
            }
        };
        let score = (room(
            node.allocatable.cpu_millis,
            node.used.cpu_millis,
            request.cpu_millis,
        ) + room(
            node.allocatable.memory_bytes,
            node.used.memory_bytes,
            request.memory_bytes,
        )) / 2.0;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, n));
        }
    }
    best.map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    //! Which lost pods count as killed: the planner's `disposition`, pod by pod, under
    //! the scenario's settings (not the workload's kind); and DetachInstances as the
    //! simulated ASG carries it out.

    use super::*;
    use planner::ActionId;

    /// One pod of every sort on four fixed nodes, all started at once.
    const EVERY_OWNER: &str = "
name: lost-pods
horizon: 2h
node_groups:
  - {name: fixed, region: us-west-2, zone: us-west-2a, instance_type: m5.4xlarge, min: 4, max: 4}
workload:
  - {name: job, pods: 1, requests: {cpu: 1, memory: 1Gi}, duration: 1h}
  - {name: scavenger, pods: 1, priority: -100, requests: {cpu: 1, memory: 1Gi}, duration: 1h}
  - {name: wf, pods: 1, owner: {apiVersion: argoproj.io/v1alpha1, kind: Workflow}, requests: {cpu: 1, memory: 1Gi}, duration: 1h}
  - {name: torch, pods: 1, owner: {apiVersion: kubeflow.org/v1, kind: PyTorchJob}, requests: {cpu: 1, memory: 1Gi}, duration: 1h}
  - {name: exec, pods: 1, owner: {apiVersion: v1, kind: Pod}, requests: {cpu: 1, memory: 1Gi}, duration: 1h}
  - {name: lone, kind: bare, pods: 1, requests: {cpu: 1, memory: 1Gi}, duration: 1h}
  - {name: checkpointed, pods: 1, safe_to_evict: true, requests: {cpu: 1, memory: 1Gi}, duration: 1h}
  - {name: web, kind: service, pods: 1, requests: {cpu: 1, memory: 1Gi}}
  - {name: filler, kind: service, pods: 1, priority: -100, requests: {cpu: 1, memory: 1Gi}}
  - {name: sts, kind: service, pods: 1, owner: {apiVersion: apps/v1, kind: StatefulSet}, requests: {cpu: 1, memory: 1Gi}}
  - {name: pinned-web, kind: service, pods: 1, safe_to_evict: false, requests: {cpu: 1, memory: 1Gi}}
";

    /// Workloads whose pods must finish under the default settings.
    const MUST_FINISH: [&str; 7] = [
        "job",
        "scavenger",
        "wf",
        "torch",
        "exec",
        "lone",
        "pinned-web",
    ];

    fn scenario(settings: &str) -> Scenario {
        Scenario::from_yaml(&format!("{EVERY_OWNER}settings: {settings}\n")).unwrap()
    }

    /// An engine at time zero with every workload pod running.
    fn running(scenario: &Scenario) -> Engine<'_> {
        let planner = Planner::new(scenario.settings.clone()).unwrap();
        let mut engine = Engine::new(scenario, planner, &SimOptions::default());
        engine.start_initial_nodes();
        engine.process_arrivals();
        engine.schedule();
        let workload_pods = engine
            .pod_meta
            .iter()
            .filter(|m| m.logical.is_some())
            .count();
        assert_eq!(workload_pods, scenario.workloads.len());
        assert!(
            engine.cluster.pods.iter().all(|p| p.node.is_some()),
            "every pod runs"
        );
        engine
    }

    fn evict(engine: &mut Engine<'_>, pod: &str) {
        let key = PodKey::new(NAMESPACE, pod);
        let node = engine
            .cluster
            .pods
            .iter()
            .find(|p| p.key == key)
            .and_then(|p| p.node.clone())
            .unwrap();
        let outcome = engine.apply(Action::EvictPod {
            id: ActionId(1),
            pod: key,
            uid: None,
            node,
            grace_period: None,
        });
        assert_eq!(outcome, Outcome::Done);
    }

    #[test]
    fn evicting_a_pod_kills_it_only_if_its_owner_makes_it_must_finish() {
        let scenario = scenario("{}");
        let mut engine = running(&scenario);
        for w in &scenario.workloads {
            let before = (
                engine.record.killed_by_scale_in,
                engine.record.service_pods_recreated,
                engine.record.evictable_batch_pods_recreated,
            );
            evict(&mut engine, &format!("{}-0", w.name));
            let after = (
                engine.record.killed_by_scale_in,
                engine.record.service_pods_recreated,
                engine.record.evictable_batch_pods_recreated,
            );
            let expected = match w.name.as_str() {
                // Job, Workflow, PyTorchJob, Spark executor (owned by a Pod), bare, and
                // safe-to-evict: false; priority -100 does not make a Job pod evictable.
                name if MUST_FINISH.contains(&name) => (before.0 + 1, before.1, before.2),
                // ReplicaSet, StatefulSet, and an expendable (priority -100) ReplicaSet pod.
                "web" | "filler" | "sts" => (before.0, before.1 + 1, before.2),
                // safe-to-evict: "true" makes a Job pod evictable.
                "checkpointed" => (before.0, before.1, before.2 + 1),
                other => panic!("unexpected workload {other}"),
            };
            assert_eq!(after, expected, "evicting the pod of {}", w.name);
        }
        assert_eq!(engine.record.killed_by_scale_in, MUST_FINISH.len() as u32);
        assert_eq!(engine.record.evictions, scenario.workloads.len() as u32);
        // Every lost pod is recreated, pending again.
        assert!(engine
            .record
            .logical_pods
            .iter()
            .all(|lp| lp.incarnations == 2));
        let killed_jobs: Vec<&str> = engine
            .record
            .jobs
            .iter()
            .filter(|j| j.killed > 0)
            .map(|j| j.name.as_str())
            .collect();
        assert_eq!(killed_jobs, MUST_FINISH);
    }

    #[test]
    fn terminating_nodes_kills_by_the_scenarios_evictable_owner_kinds() {
        // The list replaces the default: Workflow pods become evictable, ReplicaSet and
        // StatefulSet pods must finish.
        let scenario = scenario("{evictable-owner-kinds: argoproj.io/Workflow}");
        let mut engine = running(&scenario);
        let instances: Vec<InstanceId> = engine.live_instances.keys().cloned().collect();
        for id in &instances {
            assert!(engine.terminate_instance(id));
        }
        let killed: BTreeSet<&str> = engine
            .record
            .jobs
            .iter()
            .filter(|j| j.killed > 0)
            .map(|j| j.name.as_str())
            .collect();
        let survivors: BTreeSet<&str> = ["wf", "checkpointed"].into();
        let expected: BTreeSet<&str> = scenario
            .workloads
            .iter()
            .map(|w| w.name.as_str())
            .filter(|n| !survivors.contains(n))
            .collect();
        assert_eq!(killed, expected);
        assert_eq!(engine.record.killed_by_scale_in, expected.len() as u32);
        assert_eq!(
            engine.record.evictable_batch_pods_recreated, 2,
            "wf and checkpointed"
        );
        assert_eq!(engine.record.service_pods_recreated, 0);
    }

    /// Three spot nodes in a group of min 2, a pod on each.
    const DETACHABLE: &str = "
name: detach
horizon: 2h
node_groups:
  - {name: spot, region: us-west-2, zone: us-west-2a, instance_type: m5.xlarge, min: 2, max: 5, initial: 3, spot: true}
workload:
  - {name: j, pods: 3, anti_affinity_per_node: true, requests: {cpu: 1, memory: 1Gi}, duration: 1h}
";

    fn detach(engine: &mut Engine<'_>, instance: &InstanceId) -> Outcome {
        let node = engine
            .cluster
            .nodes
            .iter()
            .find(|n| n.instance.as_ref() == Some(instance))
            .map(|n| n.name.clone());
        let group = NodeGroupId::new("spot");
        engine.apply(Action::DetachInstance {
            id: ActionId(1),
            group,
            instance: instance.clone(),
            node,
        })
    }

    #[test]
    fn a_detached_instance_leaves_its_group_and_runs_on_billed_and_unreplaced() {
        let scenario = Scenario::from_yaml(DETACHABLE).unwrap();
        let planner = Planner::new(scenario.settings.clone()).unwrap();
        let mut engine = Engine::new(&scenario, planner, &SimOptions::default());
        engine.start_initial_nodes();
        engine.process_arrivals();
        engine.schedule();
        let ids: Vec<InstanceId> = engine.live_instances.keys().cloned().collect();
        assert_eq!(detach(&mut engine, &ids[0]), Outcome::Done);
        let group = &engine.cluster.groups[0];
        assert_eq!(
            (group.target, group.instances.len()),
            (2, 2),
            "desired -1, one member fewer"
        );
        let node = engine
            .cluster
            .nodes
            .iter()
            .find(|n| n.instance.as_ref() == Some(&ids[0]))
            .unwrap();
        assert_eq!(node.group, None, "its node stays, with no group");
        assert_eq!(
            engine
                .cluster
                .pods
                .iter()
                .filter(|p| p.node.as_ref() == Some(&node.name))
                .count(),
            1,
            "its pod runs on"
        );
        assert_eq!(
            engine.live_per_group(),
            vec![3],
            "it still runs (and bills)"
        );
        assert_eq!(engine.record.detach_calls, 1);
        assert!(engine.booting.is_empty(), "the group does not replace it");
        // Not a member any more: neither detached again nor terminated through the group.
        assert!(matches!(
            detach(&mut engine, &ids[0]),
            Outcome::Failed { .. }
        ));
        let terminate = Action::TerminateInstance {
            id: ActionId(2),
            group: NodeGroupId::new("spot"),
            instance: ids[0].clone(),
            node: None,
            reason: planner::TerminateReason::Empty,
        };
        assert!(matches!(engine.apply(terminate), Outcome::Failed { .. }));
        // Desired capacity may not go below min (2).
        match detach(&mut engine, &ids[1]) {
            Outcome::Failed { message } => assert!(message.contains("minimum size 2"), "{message}"),
            other => panic!("{other:?}"),
        }
        // EC2 takes it back at its deadline: billing stops there, and nothing replaces it.
        engine.now = Time::ZERO + Duration::from_secs(300);
        assert!(engine.end_instance(&ids[0], true));
        assert_eq!(engine.record.instances[0].terminated_at, Some(engine.now));
        assert_eq!(engine.record.killed_by_interruption, 1);
        assert_eq!(engine.live_per_group(), vec![2]);
        assert!(engine.booting.is_empty());
    }
}
