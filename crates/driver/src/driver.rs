//! The control loop: one pass ([`Driver::run_once`]) and the loop that decides when
//! to make one ([`Driver::run`]).
//!
//! A pass calls the planner in its documented order: launch failures, the snapshot,
//! then actions (each carried out and reported back), then explanations. The driver
//! acts only while it leads; losing the lease mid-pass stops it before the next
//! action, and the planner that took those decisions is thrown away (its memory of
//! requested targets and drains no longer matches what another leader may have done):
//! a fresh one, with backoffs reloaded, is built when leadership comes back.

use crate::clock::Clock;
use crate::http::{Health, HttpState};
use crate::leadership::Leadership;
use crate::metrics::{GroupReason, GroupState, Metrics, PoolKind, ResultLabel};
use crate::notify::{messages_for, Outbox};
use crate::ports::{Cloud, Cluster, Evicted, Notifier, PortError, PortErrorKind};
use crate::status::{ClusterHealth, StatusReport};
use model::{ClusterSnapshot, InstanceState, NodeGroupState, Time};
use planner::{
    Action, Outcome, Planner, PlannerEvent, PlannerSettings, SettingsError, TargetReason,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// The longest wait after a pod turned unschedulable, to serve a burst in one pass.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_secs(1);
/// A pass starts once no pod turned unschedulable for this long (within the window):
/// a lone pod is served quickly, a burst that keeps coming is gathered up to the window.
pub const DEFAULT_BATCH_IDLE: Duration = Duration::from_millis(200);
/// The longest wait between attempts while the cloud cannot be read.
pub const DEFAULT_MAX_ERROR_BACKOFF: Duration = Duration::from_secs(120);
/// The first wait after the cloud could not be read; doubles up to the maximum.
pub const INITIAL_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// How the loop runs. No `Default`: dry-run and the scan interval are chosen on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// Watch and plan for real, log every action, mutate nothing, notify no one.
    pub dry_run: bool,
    /// Longest wait after an unschedulable-pod trigger before the pass
    /// ([`DEFAULT_BATCH_WINDOW`]).
    pub batch_window: Duration,
    /// The pass starts earlier, once no further trigger came for this long
    /// ([`DEFAULT_BATCH_IDLE`]).
    pub batch_idle: Duration,
    /// A pass at least this often (the planner's `scan-interval`).
    pub scan_interval: Duration,
    /// Cap of the exponential backoff while the cloud cannot be read
    /// ([`DEFAULT_MAX_ERROR_BACKOFF`]).
    pub max_error_backoff: Duration,
}

impl DriverConfig {
    /// A configuration with the default batch window and error backoff.
    pub fn new(dry_run: bool, scan_interval: Duration) -> Self {
        Self {
            dry_run,
            batch_window: DEFAULT_BATCH_WINDOW,
            batch_idle: DEFAULT_BATCH_IDLE,
            scan_interval,
            max_error_backoff: DEFAULT_MAX_ERROR_BACKOFF,
        }
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let bad = |field, message: &str| {
            Err(SettingsError {
                field,
                message: message.to_owned(),
            })
        };
        if self.scan_interval.is_zero() {
            return bad("scan-interval", "must be greater than zero");
        }
        if self.max_error_backoff.is_zero() {
            return bad("max-error-backoff", "must be greater than zero");
        }
        Ok(())
    }
}

/// The adapters a driver works through.
pub struct Ports<C, K, N> {
    pub cloud: C,
    pub cluster: K,
    pub notifier: N,
}

/// One action of a pass and what was reported to the planner about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRecord {
    pub action: Action,
    /// `Done` in dry-run.
    pub outcome: Outcome,
}

/// What a planning pass did.
#[derive(Debug, Clone, PartialEq)]
pub struct PassReport {
    pub revision: u64,
    /// Whether the cluster view was synced (if not, the planner decided nothing).
    pub synced: bool,
    /// Actions in the planner's order, carried out (or, in dry-run, logged).
    pub actions: Vec<ActionRecord>,
    /// Leadership was lost during the pass: the actions after that point were not
    /// carried out, and nothing was published or written.
    pub leadership_lost: bool,
    /// Actions the planner asked for that were left undone because leadership was lost.
    pub abandoned: usize,
    /// The planner's explanations of this pass.
    pub events: Vec<(Time, PlannerEvent)>,
}

/// What [`Driver::run_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum LoopOutcome {
    /// This replica does not lead: nothing was read or done.
    NotLeader,
    /// The cloud could not be read: no planning; try again after `retry_in`.
    CloudUnavailable {
        error: PortError,
        retry_in: Duration,
    },
    /// A planning pass ran.
    Pass(PassReport),
}

/// Bounded exponential backoff between attempts to read the cloud.
#[derive(Debug)]
struct ErrorBackoff {
    max: Duration,
    current: Option<Duration>,
}

impl ErrorBackoff {
    fn fail(&mut self) -> Duration {
        let next = match self.current {
            None => INITIAL_ERROR_BACKOFF.min(self.max),
            Some(d) => (d * 2).min(self.max),
        };
        self.current = Some(next);
        next
    }

    fn reset(&mut self) {
        self.current = None;
    }
}

/// Distinct warnings remembered, so each is logged once; bounded so a stream of
/// ever-new texts cannot grow memory without limit.
const MAX_REMEMBERED_WARNINGS: usize = 10_000;

/// The driver: a planner, the ports, metrics and health.
pub struct Driver<C: Cloud, K: Cluster, N: Notifier> {
    config: DriverConfig,
    settings: PlannerSettings,
    planner: Planner,
    /// The planner's decisions may have been overtaken (leadership was lost).
    planner_stale: bool,
    backoffs_restored: bool,
    cloud: C,
    cluster: K,
    outbox: Outbox<N>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    leader: watch::Receiver<Leadership>,
    revision: u64,
    error_backoff: ErrorBackoff,
    warned: BTreeSet<String>,
    last_scale_up: Option<Time>,
    last_scale_down: Option<Time>,
    status: Option<StatusReport>,
    /// Interruption notices from the queue task, if there is one.
    interruptions: Option<crate::interruptions::InterruptionFeed>,
}

impl<C: Cloud, K: Cluster, N: Notifier> Driver<C, K, N> {
    /// A driver with a fresh planner. It leads until told otherwise
    /// ([`Driver::set_leader`] or the receiver given to [`Driver::run`]).
    pub fn new(
        config: DriverConfig,
        settings: PlannerSettings,
        ports: Ports<C, K, N>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SettingsError> {
        config.validate()?;
        let planner = Planner::new(settings.clone())?;
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(clock.clone(), config.scan_interval));
        // Without leader election the replica always leads; the sender is not needed.
        let (_, leader) = watch::channel(Leadership::from(true));
        Ok(Self {
            error_backoff: ErrorBackoff {
                max: config.max_error_backoff,
                current: None,
            },
            config,
            settings,
            planner,
            planner_stale: false,
            backoffs_restored: false,
            cloud: ports.cloud,
            cluster: ports.cluster,
            outbox: Outbox::new(ports.notifier, metrics.clone()),
            clock,
            metrics,
            health,
            leader,
            revision: 0,
            warned: BTreeSet::new(),
            last_scale_up: None,
            last_scale_down: None,
            status: None,
            interruptions: None,
        })
    }

    /// What `/metrics`, `/healthz` and `/readyz` read.
    pub fn http_state(&self) -> HttpState {
        HttpState {
            metrics: self.metrics.clone(),
            health: self.health.clone(),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The planner (for explanations and tests).
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// The cloud adapter.
    pub fn cloud(&self) -> &C {
        &self.cloud
    }

    /// The cluster adapter.
    pub fn cluster(&self) -> &K {
        &self.cluster
    }

    /// The last status report built (written only when acting).
    pub fn status(&self) -> Option<&StatusReport> {
        self.status.as_ref()
    }

    /// Takes interruption notices from this feed (see `run_interruption_queue`).
    pub fn set_interruption_feed(&mut self, feed: crate::interruptions::InterruptionFeed) {
        self.interruptions = Some(feed);
    }

    /// Follows leader election: the driver acts only while the value is `true`.
    pub fn set_leader(&mut self, leader: watch::Receiver<Leadership>) {
        self.leader = leader;
    }

    /// Leads now: checked before every pass and before every mutating call.
    fn is_leader(&self) -> bool {
        self.leader.borrow().leads_at(leadership_clock())
    }

    /// Whether mutating calls are allowed right now.
    fn acting(&self) -> bool {
        !self.config.dry_run && self.is_leader()
    }

    /// One pass at `now`: read the cloud and the cluster, plan, act, explain, report.
    pub async fn run_once(&mut self, now: Time) -> LoopOutcome {
        let started = std::time::Instant::now();
        if !self.is_leader() {
            // Whatever this planner remembers may be overtaken by another leader.
            self.planner_stale = true;
            self.metrics.leader.set(0);
            return LoopOutcome::NotLeader;
        }
        self.metrics.leader.set(1);
        self.health.set_leader(true);
        if self.planner_stale {
            self.planner = Planner::new(self.settings.clone())
                .expect("settings were validated when the driver was built");
            self.planner_stale = false;
            self.backoffs_restored = false;
        }
        if !self.backoffs_restored {
            match self.cloud.load_backoffs().await {
                Ok(records) => {
                    tracing::info!(count = records.len(), "restored pool backoffs");
                    self.planner.restore_backoffs(records);
                    self.backoffs_restored = true;
                }
                Err(error) => {
                    return self
                        .cloud_unavailable(now, "loading pool backoffs", error, started)
                        .await
                }
            }
        }
        let phase_started = std::time::Instant::now();
        let cloud_view = match self.cloud.refresh(now).await {
            Ok(view) => view,
            Err(error) => {
                return self
                    .cloud_unavailable(now, "reading node groups", error, started)
                    .await
            }
        };
        self.error_backoff.reset();
        for warning in &cloud_view.warnings {
            if self.first_sight(format!("cloud: {warning}")) {
                tracing::warn!(%warning, "cloud adapter");
            }
        }
        match self.cloud.launch_failures(now).await {
            Ok(failures) => {
                for failure in failures {
                    tracing::info!(group = %failure.group, kind = failure.kind.as_str(), count = failure.count, message = %failure.message, "launch failure");
                    self.planner.handle_launch_failure(now, failure);
                }
            }
            Err(error) => {
                // Not fatal: the failures are read again next pass.
                self.metrics.api_error(error.label);
                tracing::warn!(%error, "could not read launch failures");
            }
        }
        self.metrics.phase("cloud_refresh", phase_started.elapsed());
        let phase_started = std::time::Instant::now();
        let view = self.cluster.view(&cloud_view.groups);
        for skipped in &view.skipped {
            if self.first_sight(format!("skipped: {skipped}")) {
                self.metrics.skipped_objects.inc();
                tracing::warn!(object = %skipped, "skipped an object that could not be converted");
            }
        }
        self.revision += 1;
        let snapshot = ClusterSnapshot {
            synced: view.synced,
            revision: self.revision,
            groups: cloud_view.groups,
            nodes: view.nodes,
            pods: view.pods,
            daemonsets: view.daemonsets,
            expander_priorities: view.expander_priorities,
            provisioning_requests: view.provisioning_requests,
        };
        self.health.set_synced(snapshot.synced);
        let pending = self.observe_view(&snapshot);
        self.metrics.phase("cluster_view", phase_started.elapsed());

        let phase_started = std::time::Instant::now();
        let received = self
            .interruptions
            .as_mut()
            .map(|f| f.drain())
            .unwrap_or_default();
        let mut acks = Vec::with_capacity(received.len());
        for r in received {
            for notice in r.notices {
                self.planner.handle_interruption(now, notice);
            }
            acks.push(r.ack);
        }
        self.planner.handle_snapshot(now, &snapshot);
        self.metrics.phase("plan", phase_started.elapsed());
        let phase_started = std::time::Instant::now();
        let (actions, abandoned, leadership_lost) = self.carry_out(now).await;
        if self.acting() && !leadership_lost {
            // Acted on: the messages can go. (Unsent, they come back and are acted on
            // again by whoever leads then.)
            for ack in acks {
                let _ = ack.send(());
            }
        }
        self.metrics.phase("actuate", phase_started.elapsed());
        let phase_started = std::time::Instant::now();
        let events: Vec<_> = std::iter::from_fn(|| self.planner.poll_event()).collect();
        self.explain(now, &events).await;
        self.metrics.phase("explain", phase_started.elapsed());
        let phase_started = std::time::Instant::now();

        let backoffs = self.planner.backoffs(now);
        self.metrics
            .publish_pool_backoffs(backoffs.iter().map(|b| PoolKind {
                pool: b.pool.to_string(),
                kind: b.kind.as_str().to_owned(),
            }));
        let health = if snapshot.synced {
            ClusterHealth::Healthy
        } else {
            ClusterHealth::Unsynced
        };
        let mut report = StatusReport::build(
            now,
            health,
            self.config.dry_run,
            &snapshot.groups,
            &snapshot.nodes,
            &backoffs,
            pending,
            self.last_scale_up,
            self.last_scale_down,
        );
        report.interruptions = self
            .planner
            .interruptions(now)
            .into_iter()
            .map(|i| crate::status::PoolInterruptionStatus {
                pool: i.pool.to_string(),
                total: i.total,
                recent: i.recent,
                last: i.last,
            })
            .collect();
        self.write_status(report).await;
        self.metrics.phase("status", phase_started.elapsed());
        self.metrics
            .loop_duration
            .observe(started.elapsed().as_secs_f64());
        self.health.progress();
        LoopOutcome::Pass(PassReport {
            revision: snapshot.revision,
            synced: snapshot.synced,
            actions,
            leadership_lost,
            abandoned,
            events,
        })
    }

    async fn cloud_unavailable(
        &mut self,
        now: Time,
        doing: &str,
        error: PortError,
        started: std::time::Instant,
    ) -> LoopOutcome {
        self.metrics.api_error(error.label);
        let retry_in = self.error_backoff.fail();
        tracing::warn!(%error, ?retry_in, "cloud unavailable while {doing}: no planning this pass");
        // Timers that came due still expire (backoff ends), even without a snapshot.
        if self.planner.poll_timeout().is_some_and(|t| t <= now) {
            self.planner.handle_timeout(now);
        }
        let health = ClusterHealth::CloudUnavailable {
            message: error.to_string(),
        };
        let report = match self.status.clone() {
            Some(last) => StatusReport {
                last_loop: now,
                health,
                ..last
            },
            None => StatusReport::build(
                now,
                health,
                self.config.dry_run,
                &[],
                &[],
                &[],
                0,
                self.last_scale_up,
                self.last_scale_down,
            ),
        };
        self.write_status(report).await;
        self.metrics
            .loop_duration
            .observe(started.elapsed().as_secs_f64());
        self.health.progress_expecting(retry_in);
        LoopOutcome::CloudUnavailable { error, retry_in }
    }

    async fn write_status(&mut self, report: StatusReport) {
        if self.acting() {
            if let Err(error) = self.cluster.write_status(&report).await {
                self.metrics.api_error(error.label);
                tracing::warn!(%error, "could not write the status report");
            }
        }
        self.status = Some(report);
    }

    /// Gauges of the view; returns the number of pending unschedulable pods.
    fn observe_view(&self, snapshot: &ClusterSnapshot) -> u32 {
        let pending = snapshot
            .pods
            .iter()
            .filter(|p| p.unschedulable && p.is_unbound_pending())
            .count() as u32;
        self.metrics
            .pending_unschedulable_pods
            .set(i64::from(pending));
        let mut counts: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        for node in &snapshot.nodes {
            let group = node
                .group
                .as_ref()
                .map_or_else(|| "unmanaged".to_owned(), |g| g.to_string());
            let state = if node.retired.is_some() {
                "retired"
            } else if node.cordoned {
                "cordoned"
            } else if node.ready {
                "ready"
            } else {
                "unready"
            };
            *counts.entry((group, state)).or_default() += 1;
        }
        let registered: BTreeSet<_> = snapshot
            .nodes
            .iter()
            .filter_map(|n| n.instance.as_ref())
            .collect();
        for group in &snapshot.groups {
            let launching = launching_instances(group, &registered);
            counts.insert((group.spec.id.to_string(), "launching"), launching);
        }
        self.metrics.nodes.clear();
        for ((group, state), n) in counts {
            self.metrics
                .nodes
                .get_or_create(&GroupState {
                    group,
                    state: state.to_owned(),
                })
                .set(n);
        }
        pending
    }

    /// Drains the planner's actions. Returns what was done, how many were abandoned,
    /// and whether leadership was lost.
    async fn carry_out(&mut self, now: Time) -> (Vec<ActionRecord>, usize, bool) {
        let mut records = Vec::new();
        while let Some(action) = self.planner.poll_action() {
            if !self.is_leader() {
                let abandoned = 1 + std::iter::from_fn(|| self.planner.poll_action()).count();
                self.planner_stale = true;
                self.metrics.leader.set(0);
                tracing::warn!(
                    abandoned,
                    "leadership lost mid-pass: no further actions carried out"
                );
                return (records, abandoned, true);
            }
            let outcome = if self.config.dry_run {
                tracing::info!(action = %action, destructive = action.is_destructive(), "DRY-RUN would {action}");
                match &action {
                    // Reading is harmless: a dry-run reads the evidence for real, as if
                    // the fence it did not write were there, and so says which removals
                    // the evidence would have allowed.
                    Action::VerifyRemoval { .. } => {
                        dry_run_evidence(self.execute(now, &action).await)
                    }
                    _ => Outcome::Done,
                }
            } else {
                tracing::info!(action = %action, "carrying out: {action}");
                self.execute(now, &action).await
            };
            self.planner
                .handle_outcome(now, action.id(), outcome.clone());
            records.push(ActionRecord { action, outcome });
        }
        (records, 0, false)
    }

    /// Carries out one action through the ports and classifies the result.
    async fn execute(&mut self, now: Time, action: &Action) -> Outcome {
        let result = match action {
            Action::SetTargetSize {
                group,
                from,
                to,
                reason,
                ..
            } => self.cloud.set_target_size(group, *to).await.map(|()| {
                match reason {
                    TargetReason::ScaleUp { .. } => {
                        let label = GroupReason {
                            group: group.to_string(),
                            reason: "pending-pods".into(),
                        };
                        self.metrics
                            .scale_ups
                            .get_or_create(&label)
                            .inc_by(u64::from(to.saturating_sub(*from)));
                        self.last_scale_up = Some(now);
                    }
                    TargetReason::GiveBack { .. } => {
                        let label = GroupReason {
                            group: group.to_string(),
                            reason: "give-back".into(),
                        };
                        self.metrics
                            .scale_downs
                            .get_or_create(&label)
                            .inc_by(u64::from(from.saturating_sub(*to)));
                    }
                }
                Outcome::Done
            }),
            Action::TerminateInstance {
                group,
                instance,
                reason,
                ..
            } => self
                .cloud
                .terminate_instance(group, instance)
                .await
                .map(|()| {
                    let label = GroupReason {
                        group: group.to_string(),
                        reason: reason.as_str().into(),
                    };
                    self.metrics.scale_downs.get_or_create(&label).inc();
                    self.last_scale_down = Some(now);
                    Outcome::Done
                }),
            Action::RetireNode { node, reason, .. } => self
                .cluster
                .retire(node, reason, now)
                .await
                .map(|()| Outcome::Done),
            Action::UnretireNode { node, .. } => {
                self.cluster.unretire(node).await.map(|()| Outcome::Done)
            }
            Action::MarkIdle { node, since, .. } => self
                .cluster
                .mark_idle(node, *since)
                .await
                .map(|()| Outcome::Done),
            Action::PersistBackoff { record, .. } => self
                .cloud
                .persist_backoff(record)
                .await
                .map(|()| Outcome::Done),
            Action::DetachInstance {
                group, instance, ..
            } => self
                .cloud
                .detach_instance(group, instance)
                .await
                .map(|()| Outcome::Done),
            Action::VerifyRemoval { instance, node, .. } => self
                .cluster
                .removal_evidence(instance, node.as_ref())
                .await
                .map(Outcome::Evidence),
            Action::UpdateProvisioningRequest {
                request,
                conditions,
                ..
            } => self
                .cluster
                .update_provisioning_request(request, conditions)
                .await
                .map(|()| Outcome::Done),
            Action::EvictPod {
                pod,
                uid,
                grace_period,
                ..
            } => {
                let result = self.cluster.evict(pod, uid.as_ref(), *grace_period).await;
                let label = match &result {
                    Ok(Evicted::Evicted) => "evicted",
                    Ok(Evicted::Gone) => "gone",
                    Ok(Evicted::Refused(_)) => "refused",
                    Err(_) => "error",
                };
                self.metrics
                    .evictions
                    .get_or_create(&ResultLabel {
                        result: label.to_owned(),
                    })
                    .inc();
                result.map(|evicted| match evicted {
                    Evicted::Evicted => Outcome::Done,
                    Evicted::Gone => Outcome::Gone,
                    Evicted::Refused(message) => {
                        tracing::info!(%pod, %message, "eviction refused; retried on a later pass");
                        Outcome::Retry { message }
                    }
                })
            }
        };
        result.unwrap_or_else(|error| {
            self.metrics.api_error(error.label);
            tracing::warn!(action = %action, %error, "action failed");
            outcome_of_error(error)
        })
    }

    /// Explanations into logs, metrics, Kubernetes Events and Slack.
    async fn explain(&mut self, now: Time, events: &[(Time, PlannerEvent)]) {
        for (_, event) in events {
            log_event(event);
            self.metrics
                .planner_events
                .get_or_create(&crate::metrics::ReasonLabel {
                    reason: event.reason().to_owned(),
                })
                .inc();
            if let PlannerEvent::InstanceInterrupted { pool, kind, .. } = event {
                self.metrics
                    .interruptions
                    .get_or_create(&PoolKind {
                        pool: pool.to_string(),
                        kind: kind.as_str().to_owned(),
                    })
                    .inc();
            }
        }
        if !self.acting() {
            return;
        }
        if !events.is_empty() {
            if let Err(error) = self.cluster.publish(now, events).await {
                self.metrics.api_error(error.label);
                tracing::warn!(%error, "could not publish events");
            }
        }
        self.outbox.offer_all(now, messages_for(events));
    }

    fn first_sight(&mut self, text: String) -> bool {
        if self.warned.len() >= MAX_REMEMBERED_WARNINGS {
            self.warned.clear();
        }
        self.warned.insert(text)
    }

    /// Runs the loop until `shutdown` completes.
    ///
    /// A pass runs at start, then on the earliest of: a batch after `triggers` is
    /// notified (the cluster adapter calls `notify_one` when a pod turns
    /// Unschedulable, so a trigger during a pass is not lost; the batch ends when no
    /// trigger came for `batch_idle`, or `batch_window` after its first), the scan interval after
    /// the last pass, the planner's next timeout (future times only), or the error
    /// backoff while the cloud cannot be read (which then overrides the rest). Passes
    /// run only while `*leader.borrow()` is true; a follower only keeps `/healthz` fed.
    pub async fn run(
        mut self,
        triggers: Arc<Notify>,
        mut leader: watch::Receiver<Leadership>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let leading = leader.borrow_and_update().leads_at(leadership_clock());
        if leading {
            self.health.set_leader(true);
        }
        self.metrics.leader.set(i64::from(leading));
        self.leader = leader.clone();
        let mut election_alive = true;
        let mut last_verdict = leading;
        let mut next_scan = Instant::now();
        let mut retry_at: Option<Instant> = None;
        loop {
            let now = self.clock.now();
            let wake = match retry_at {
                Some(at) => at,
                None => match self.planner.poll_timeout().filter(|t| *t > now) {
                    Some(t) => next_scan.min(Instant::now() + (t - now)),
                    None => next_scan,
                },
            };
            let leads = self.is_leader();
            if last_verdict && !leads {
                // The verdict ran out without a renewal (the elector cannot reach the
                // API server): no action from here until the lease is held anew.
                tracing::warn!(
                    "leadership lapsed: the lease was not renewed within the renew deadline"
                );
                self.health.set_leader(false);
                self.metrics.leader.set(0);
                self.planner_stale = true;
                last_verdict = false;
            }
            // Wake when a leading verdict runs out, to stop at once.
            let lapse = if leads {
                self.leader
                    .borrow()
                    .expires()
                    .map(tokio::time::Instant::from_std)
            } else {
                None
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(lapse.unwrap_or_else(tokio::time::Instant::now)), if lapse.is_some() => continue,
                changed = leader.changed(), if election_alive => {
                    match changed {
                        Ok(()) => {
                            let now_leads = leader.borrow_and_update().leads_at(leadership_clock());
                            self.health.set_leader(now_leads);
                            self.metrics.leader.set(i64::from(now_leads));
                            // An elector may re-send its verdict on every renewal:
                            // only a transition matters.
                            if now_leads != last_verdict {
                                tracing::info!(leader = now_leads, "leadership changed");
                                if now_leads {
                                    next_scan = Instant::now();
                                    retry_at = None;
                                } else {
                                    self.planner_stale = true;
                                }
                            }
                            last_verdict = now_leads;
                        }
                        // The elector is gone: the last value stands.
                        Err(_) => election_alive = false,
                    }
                    continue;
                }
                // A pass that is due anyway serves the triggers too.
                () = tokio::time::sleep_until(wake) => {}
                () = triggers.notified(), if leads && retry_at.is_none() => {
                    if gather_batch(&triggers, &self.config, &mut shutdown).await == Batch::Shutdown {
                        break;
                    }
                }
            }
            if !self.is_leader() {
                self.health.progress();
                next_scan = Instant::now() + self.config.scan_interval;
                continue;
            }
            // This pass serves every trigger so far: drop a stored permit.
            take_permit(&triggers).await;
            let now = self.clock.now();
            let Some(outcome) = pass_while_leading(self.run_once(now), &leader).await else {
                // Leadership ran out mid-pass (a call hung on a partitioned network):
                // the pass is abandoned where it stood, no further call is made.
                tracing::warn!("leadership lapsed during a pass: the pass is abandoned");
                self.health.set_leader(false);
                self.metrics.leader.set(0);
                self.planner_stale = true;
                last_verdict = false;
                next_scan = Instant::now() + self.config.scan_interval;
                continue;
            };
            next_scan = Instant::now() + self.config.scan_interval;
            retry_at = match outcome {
                LoopOutcome::CloudUnavailable { retry_in, .. } => Some(Instant::now() + retry_in),
                LoopOutcome::NotLeader | LoopOutcome::Pass(_) => None,
            };
        }
        tracing::info!("control loop stopped");
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Batch {
    Gathered,
    Shutdown,
}

/// Waits, after a first trigger, until no trigger came for `batch_idle` or
/// `batch_window` has passed since the first, whichever is sooner.
async fn gather_batch(
    triggers: &Notify,
    config: &DriverConfig,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Batch {
    let window_ends = tokio::time::Instant::now() + config.batch_window;
    loop {
        let idle_ends = (tokio::time::Instant::now() + config.batch_idle).min(window_ends);
        tokio::select! {
            biased;
            () = &mut *shutdown => return Batch::Shutdown,
            () = tokio::time::sleep_until(idle_ends) => return Batch::Gathered,
            () = triggers.notified() => {}
        }
    }
}

/// Runs `pass` to its end, unless the leadership verdict runs out first (renewals that
/// arrive meanwhile move the deadline): then the pass is dropped mid-call and `None`
/// returned, so no call of a replica that may no longer lead outlives its lease.
async fn pass_while_leading(
    pass: impl Future<Output = LoopOutcome>,
    leader: &watch::Receiver<Leadership>,
) -> Option<LoopOutcome> {
    tokio::pin!(pass);
    loop {
        let verdict = *leader.borrow();
        if !verdict.leads_at(leadership_clock()) {
            return None;
        }
        let Some(expires) = verdict.expires() else {
            return Some(pass.await);
        };
        tokio::select! {
            outcome = &mut pass => return Some(outcome),
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(expires)) => {}
        }
    }
}

/// Consumes a stored `Notify` permit, if any, without waiting.
async fn take_permit(triggers: &Notify) {
    tokio::select! {
        biased;
        () = triggers.notified() => {}
        () = std::future::ready(()) => {}
    }
}

/// Instances of the group that are not yet nodes (and not on their way out).
fn launching_instances(group: &NodeGroupState, registered: &BTreeSet<&model::InstanceId>) -> i64 {
    group
        .instances
        .iter()
        .filter(|i| i.state != InstanceState::Terminating && !registered.contains(&i.id))
        .count() as i64
}

/// What the planner is told about an action whose port call failed.
fn outcome_of_error(error: PortError) -> Outcome {
    let message = error.to_string();
    match error.kind {
        PortErrorKind::Retryable | PortErrorKind::Refused => Outcome::Retry { message },
        PortErrorKind::Gone => Outcome::Gone,
        PortErrorKind::Forbidden | PortErrorKind::Fatal => Outcome::Failed { message },
    }
}

fn log_event(event: &PlannerEvent) {
    let reason = event.reason();
    match event {
        PlannerEvent::WaitingForCapacity { .. } | PlannerEvent::ScaleDownCandidate { .. } => {
            tracing::debug!(reason, "{event}");
        }
        PlannerEvent::PoolBackedOff { .. }
        | PlannerEvent::LaunchTimedOut { .. }
        | PlannerEvent::ActionFailed { .. }
        | PlannerEvent::GangRolledBack { .. }
        | PlannerEvent::InstanceInterrupted { .. }
        | PlannerEvent::Warning { .. } => tracing::warn!(reason, "{event}"),
        _ => tracing::info!(reason, "{event}"),
    }
}

/// The evidence a dry-run reads, with the fence it never wrote put on the node.
fn dry_run_evidence(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Evidence(mut evidence) => {
            if let Some(node) = evidence.node.as_mut() {
                if !node
                    .taints
                    .iter()
                    .any(|t| t.key == model::well_known::TAINT_RETIRING)
                {
                    node.taints.push(model::Taint {
                        key: model::well_known::TAINT_RETIRING.into(),
                        value: String::new(),
                        effect: model::TaintEffect::NoSchedule,
                    });
                }
            }
            Outcome::Evidence(evidence)
        }
        other => other,
    }
}

/// The clock leadership verdicts are read against: tokio's (so tests with paused time
/// see verdicts run out), as a std instant like the verdicts themselves.
fn leadership_clock() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backoff_doubles_to_the_cap_and_resets() {
        let mut backoff = ErrorBackoff {
            max: Duration::from_secs(120),
            current: None,
        };
        let waits: Vec<u64> = (0..10).map(|_| backoff.fail().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
        backoff.reset();
        assert_eq!(backoff.fail(), Duration::from_secs(1));
    }

    #[test]
    fn port_errors_map_to_outcomes() {
        let retry = outcome_of_error(PortError::refused(
            "throttled",
            "scaling activity in progress",
        ));
        assert!(matches!(retry, Outcome::Retry { .. }), "{retry:?}");
        assert_eq!(
            outcome_of_error(PortError::gone("not-found", "gone")),
            Outcome::Gone
        );
        let failed = outcome_of_error(PortError::forbidden("forbidden", "rbac"));
        assert!(matches!(failed, Outcome::Failed { .. }), "{failed:?}");
    }
}
