//! Prometheus metrics of the control loop, in one registry served at `/metrics`.
//! Every metric is named `batch_autoscaler_*`. Gauges that describe the current view
//! (nodes by state, backoffs) are rebuilt on each pass so label sets that disappeared
//! do not linger.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `group` × `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GroupReason {
    pub group: String,
    pub reason: String,
}

/// `group` × `state`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GroupState {
    pub group: String,
    pub state: String,
}

/// `pool` × `kind`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct PoolKind {
    pub pool: String,
    pub kind: String,
}

/// One label, `result`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// One label, `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// One label, `phase`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

/// One label, `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// The loop's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    /// Seconds one pass took.
    pub loop_duration: Histogram,
    /// Seconds each phase of a pass took (`cloud_refresh`, `cluster_view`, `plan`,
    /// `actuate`, `explain`, `status`): where a slow pass spends its time.
    pub loop_phase_duration: Family<PhaseLabel, Histogram>,
    /// Pods the scheduler marked unschedulable and that are still unbound.
    pub pending_unschedulable_pods: Gauge,
    /// Nodes per group (`unmanaged` for nodes of no group) and state (`ready`,
    /// `unready`, `cordoned`, `retired`, `launching` for instances not yet nodes).
    pub nodes: Family<GroupState, Gauge>,
    /// Nodes asked for, per group and reason.
    pub scale_ups: Family<GroupReason, Counter>,
    /// Nodes removed or given back, per group and reason.
    pub scale_downs: Family<GroupReason, Counter>,
    /// Pool backoffs in force (1 per pool), with the failure kind.
    pub pool_backoffs: Family<PoolKind, Gauge>,
    /// Evictions by result (`evicted`, `gone`, `refused`, `error`).
    pub evictions: Family<ResultLabel, Counter>,
    /// Failed adapter calls by the adapter's error label.
    pub api_errors: Family<KindLabel, Counter>,
    /// Distinct objects the cluster adapter could not convert and left out.
    pub skipped_objects: Counter,
    /// Planner explanations by reason.
    pub planner_events: Family<ReasonLabel, Counter>,
    /// Slack messages by result (`sent`, `failed`, `duplicate`, `dropped`).
    pub notifications: Family<ResultLabel, Counter>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Interruption notices acted on, per capacity pool and kind (`spot-interruption`,
    /// `rebalance-recommendation`, `state-change`, `scheduled-change`).
    pub interruptions: Family<PoolKind, Counter>,
    /// Messages read from the interruption queue by result (`notice`, `unknown`,
    /// `malformed`).
    pub interruption_messages: Family<ResultLabel, Counter>,
    /// 1 while the interruption queue can be read (0 when it cannot; absent without
    /// `--interruption-queue`).
    pub interruption_queue_up: Gauge,
    /// The pool backoffs last published, so that a stale one is removed without
    /// clearing the family (a scrape between a clear and the new values would see none).
    published_backoffs: std::sync::Mutex<std::collections::BTreeSet<PoolKind>>,
}

impl Metrics {
    /// Fresh metrics, registered under the `batch_autoscaler` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("batch_autoscaler");
        // 10 ms to ~80 s: a pass over a large cluster with slow API calls stays in range.
        let loop_duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let loop_phase_duration = Family::<PhaseLabel, Histogram>::new_with_constructor(
            phase_histogram as fn() -> Histogram,
        );
        let metrics = Self {
            loop_duration,
            loop_phase_duration,
            pending_unschedulable_pods: Gauge::default(),
            nodes: Family::default(),
            scale_ups: Family::default(),
            scale_downs: Family::default(),
            pool_backoffs: Family::default(),
            evictions: Family::default(),
            api_errors: Family::default(),
            skipped_objects: Counter::default(),
            planner_events: Family::default(),
            notifications: Family::default(),
            leader: Gauge::default(),
            interruptions: Family::default(),
            interruption_messages: Family::default(),
            interruption_queue_up: Gauge::default(),
            published_backoffs: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "loop_duration_seconds",
            "Duration of one control-loop pass",
            metrics.loop_duration.clone(),
        );
        registry.register(
            "loop_phase_duration_seconds",
            "Duration of each phase of a control-loop pass",
            metrics.loop_phase_duration.clone(),
        );
        registry.register(
            "pending_unschedulable_pods",
            "Unbound pods the scheduler reported Unschedulable",
            metrics.pending_unschedulable_pods.clone(),
        );
        registry.register(
            "nodes",
            "Nodes by node group and state",
            metrics.nodes.clone(),
        );
        registry.register(
            "scale_up_nodes",
            "Nodes requested by scale-ups, by group and reason",
            metrics.scale_ups.clone(),
        );
        registry.register(
            "scale_down_nodes",
            "Nodes removed or given back, by group and reason",
            metrics.scale_downs.clone(),
        );
        registry.register(
            "pool_backoffs",
            "Capacity pools backed off after launch failures",
            metrics.pool_backoffs.clone(),
        );
        registry.register(
            "evictions",
            "Pod evictions by result",
            metrics.evictions.clone(),
        );
        registry.register(
            "api_errors",
            "Failed Kubernetes and AWS calls by kind",
            metrics.api_errors.clone(),
        );
        registry.register(
            "skipped_objects",
            "Distinct Kubernetes objects that could not be converted",
            metrics.skipped_objects.clone(),
        );
        registry.register(
            "planner_events",
            "Planner explanations by reason",
            metrics.planner_events.clone(),
        );
        registry.register(
            "notifications",
            "Slack notifications by result",
            metrics.notifications.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            metrics.leader.clone(),
        );
        registry.register(
            "interruptions",
            "Interruption notices acted on, by capacity pool and kind",
            metrics.interruptions.clone(),
        );
        registry.register(
            "interruption_messages",
            "Messages read from the interruption queue, by result",
            metrics.interruption_messages.clone(),
        );
        registry.register(
            "interruption_queue_up",
            "1 while the interruption queue can be read",
            metrics.interruption_queue_up.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Publishes the pool backoffs in force: each is set to 1 first, then the ones no
    /// longer in force are removed.
    pub fn publish_pool_backoffs(&self, current: impl IntoIterator<Item = PoolKind>) {
        let current: std::collections::BTreeSet<PoolKind> = current.into_iter().collect();
        for label in &current {
            self.pool_backoffs.get_or_create(label).set(1);
        }
        let mut published = self
            .published_backoffs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for stale in published.difference(&current) {
            self.pool_backoffs.remove(stale);
        }
        *published = current;
    }

    /// Records how long `phase` of a pass took.
    pub fn phase(&self, phase: &str, took: std::time::Duration) {
        self.loop_phase_duration
            .get_or_create(&PhaseLabel {
                phase: phase.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one failed adapter call.
    pub fn api_error(&self, label: &str) {
        self.api_errors
            .get_or_create(&KindLabel {
                kind: label.to_owned(),
            })
            .inc();
    }
}

/// 1 ms to ~16 s: phases are shorter than passes.
fn phase_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> PoolKind {
        PoolKind {
            pool: name.to_owned(),
            kind: "capacity".to_owned(),
        }
    }

    #[test]
    fn a_backoff_no_longer_in_force_is_removed_and_the_others_stay() {
        let metrics = Metrics::new();
        metrics.publish_pool_backoffs([pool("a"), pool("b")]);
        let text = metrics.encode();
        assert!(
            text.contains(r#"pool="a""#) && text.contains(r#"pool="b""#),
            "{text}"
        );
        metrics.publish_pool_backoffs([pool("b")]);
        let text = metrics.encode();
        assert!(!text.contains(r#"pool="a""#), "{text}");
        assert!(
            text.contains(r#"batch_autoscaler_pool_backoffs{pool="b",kind="capacity"} 1"#),
            "{text}"
        );
    }
}
