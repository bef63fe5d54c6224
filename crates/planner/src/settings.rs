//! The planner's settings. Names are the CLI flags' names (kebab-case), so a
//! scenario's `settings:` block, a config file and the command line all spell them
//! the same way. Defaults are Cluster Autoscaler's where CA has the concept, the seed
//! project's otherwise; each field says which.

use model::time::serde_duration;
use model::OwnerKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Every knob the planner reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PlannerSettings {
    /// How often the driver takes a snapshot when nothing else happens (CA: 10s).
    /// The seed's `--sleep` is an alias.
    #[serde(with = "serde_duration", alias = "sleep")]
    pub scan_interval: Duration,
    /// Expander chain such as `priority,least-waste` (CA default `least-waste`).
    pub expander: String,
    /// The priority expander's table (priority → group-name regexes), used when the
    /// cluster has no `cluster-autoscaler-priority-expander` ConfigMap.
    pub expander_priorities: Option<BTreeMap<i32, Vec<String>>>,
    /// Seed of the `random` expander.
    pub seed: u64,
    /// Most new nodes in one scale-up pass (CA: 1000).
    pub max_nodes_per_scaleup: u32,
    /// Most nodes in the cluster; 0 means no limit (CA: 0).
    pub max_nodes_total: u32,
    /// `min:max` cores in the cluster (CA: `0:320000`).
    pub cores_total: String,
    /// `min:max` GiB of memory in the cluster (CA: `0:6400000`).
    pub memory_total: String,
    /// Split scale-ups across groups that differ only by zone (CA: false).
    pub balance_similar_node_groups: bool,
    /// Pods below this priority neither trigger scale-up nor block scale-down (CA: -10).
    pub expendable_pods_priority_cutoff: i32,
    /// Controllers that recreate an evicted pod elsewhere with no work lost, as
    /// `group/Kind` (core group: just `Kind`), comma-separated. Pods of any other
    /// controller are must-finish unless annotated evictable. The list replaces the
    /// default: to extend it, repeat the defaults (`apps/ReplicaSet,apps/StatefulSet,
    /// ReplicationController,…`).
    pub evictable_owner_kinds: OwnerKinds,
    /// Controllers of other API groups that run one pod per node, as DaemonSets do
    /// (`apps.kruise.io/DaemonSet`), as `group/Kind`, comma-separated. Their pods are
    /// node infrastructure like `apps/DaemonSet` and mirror pods (always so): they do
    /// not keep a node busy, do not hold up its removal and are not moved off a node
    /// that is going. Empty by default: an unknown kind's pod must finish.
    pub node_infrastructure_owner_kinds: OwnerKinds,
    /// Only pending pods of this namespace trigger scale-up (seed `--pod-namespace`);
    /// all pods still count as occupying their nodes.
    pub pod_namespace: Option<String>,
    /// How long a launched instance may take to become a Ready node (CA 15m; the
    /// seed's `--instance-init-time` is an alias).
    #[serde(with = "serde_duration", alias = "instance-init-time")]
    pub max_node_provision_time: Duration,
    /// First backoff of a capacity pool after a failed launch (CA: 5m).
    #[serde(with = "serde_duration")]
    pub initial_node_group_backoff_duration: Duration,
    /// Longest backoff; the duration doubles up to this (CA: 30m).
    #[serde(with = "serde_duration")]
    pub max_node_group_backoff_duration: Duration,
    /// A pool that has not failed for this long starts again from the initial backoff (CA: 3h).
    #[serde(with = "serde_duration")]
    pub node_group_backoff_reset_timeout: Duration,
    /// How long a gang may wait for all its nodes before the partial launch is rolled
    /// back and the next pool is tried.
    #[serde(with = "serde_duration")]
    pub gang_provision_timeout: Duration,
    /// How long capacity found or bought for a ProvisioningRequest stays booked for
    /// its pods (CA: 10m).
    #[serde(with = "serde_duration")]
    pub provisioning_request_booking_time: Duration,
    /// Scale-down at all (CA: true).
    pub scale_down_enabled: bool,
    /// How long a node must be unneeded before it is removed (the seed's
    /// `--idle-threshold` is an alias). `auto` (the default; CA's is 10m): an empty
    /// node is kept only while keeping it costs less than buying it again, that is for
    /// its group's observed boot time, at least the 60 s EC2 bills at minimum (the
    /// ski-rental rule); an under-utilised node waits 10m. A duration applies to every
    /// node, as in Cluster Autoscaler.
    #[serde(alias = "idle-threshold")]
    pub scale_down_unneeded_time: AutoDuration,
    /// Under `auto`: an empty node is kept at least this long, the shortest time EC2
    /// bills an instance for (60s; buying again never costs less).
    #[serde(with = "serde_duration")]
    pub scale_down_billing_minimum: Duration,
    /// Under `auto`: the boot time assumed for a group until one of its nodes has
    /// booted under this replica.
    #[serde(with = "serde_duration")]
    pub assumed_boot_time: Duration,
    /// Under `auto`: how long an under-utilised (not empty) node must stay so before it
    /// is retired or drained (Cluster Autoscaler's 10m).
    #[serde(with = "serde_duration")]
    pub scale_down_underutilized_time: Duration,
    /// Under `auto`: a node a running must-finish pod is known to hold for longer than
    /// this (`batch-autoscaler.io/expected-duration`, `activeDeadlineSeconds`) is not
    /// retired, so new work can use its room.
    #[serde(with = "serde_duration")]
    pub retire_hold_limit: Duration,
    /// How long a node may be unready before it is a removal candidate (CA: 20m).
    #[serde(with = "serde_duration")]
    pub scale_down_unready_time: Duration,
    /// Utilisation (max of cpu and memory request ratios) below which a node is
    /// under-utilised (CA: 0.5).
    pub scale_down_utilization_threshold: f64,
    /// The same for GPU nodes, over the GPU ratio (CA: 0.5).
    pub scale_down_gpu_utilization_threshold: f64,
    /// Pause of scale-down after a scale-up. `auto` (the default; CA's is 10m): a
    /// scale-up pauses nothing, and a node a pending pod could use is never removed.
    /// A duration pauses all of scale-down for that long after any scale-up, as in
    /// Cluster Autoscaler.
    pub scale_down_delay_after_add: AutoDuration,
    /// Pause of scale-down after a node removal (CA: 0s).
    #[serde(with = "serde_duration")]
    pub scale_down_delay_after_delete: Duration,
    /// Pause of scale-down after a failed removal (CA: 3m).
    #[serde(with = "serde_duration")]
    pub scale_down_delay_after_failure: Duration,
    /// How long a scale-down decision waits before it is re-validated on a newer
    /// snapshot and carried out.
    #[serde(with = "serde_duration")]
    pub scale_down_confirm_delay: Duration,
    /// How long a node is fenced (tainted) before the pods bound to it are read
    /// afresh and its instance terminated: the time every scheduler needs to see the
    /// taint. A pod found there aborts the removal.
    #[serde(with = "serde_duration")]
    pub fence_settle_time: Duration,
    /// Most nodes being drained or terminated at once (CA: 10).
    pub max_scale_down_parallelism: u32,
    /// Most empty nodes removed in one pass (CA: 10).
    pub max_empty_bulk_delete: u32,
    /// Most nodes retired (tainted, waiting for their batch pods) at once, as a
    /// fraction of the managed nodes (seed `--max-scale-in-fraction`: 0.1; at least 1).
    pub max_scale_in_fraction: f64,
    /// A warm spare: the last idle node of each group is kept until it has been idle
    /// this long (seed `--type-idle-threshold`; 0 disables the spare).
    #[serde(with = "serde_duration")]
    pub type_idle_threshold: Duration,
    /// How long evictions of one node may be refused (PDBs) before giving up (CA: 2m).
    #[serde(with = "serde_duration")]
    pub max_pod_eviction_time: Duration,
    /// How many under-utilised nodes one pass checks for removal (a drain simulation
    /// each); the next pass continues with the others. 0 or less: all, every pass.
    pub scale_down_non_empty_candidates_count: i64,
    /// Accepted for Cluster Autoscaler compatibility.
    pub scale_down_candidates_pool_ratio: f64,
    /// Accepted for Cluster Autoscaler compatibility.
    pub scale_down_candidates_pool_min_count: i64,
    /// Act on interruption notices (spot interruption warnings, rebalance
    /// recommendations, instance state changes, scheduled events): fence the node and
    /// buy replacement capacity for its pods before they die. In production the
    /// notices come from `--interruption-queue`.
    pub interruption_handling: bool,
    /// A spot pool interrupted this many times within `spot-interruption-window` is
    /// avoided for `spot-interruption-backoff`; 0 never avoids a pool for it.
    pub spot_interruption_threshold: u32,
    /// The window interruptions of a pool are counted in.
    #[serde(with = "serde_duration")]
    pub spot_interruption_window: Duration,
    /// How long an often-interrupted pool is avoided; doubles while interruptions go
    /// on (until `node-group-backoff-reset-timeout` passes without one).
    #[serde(with = "serde_duration")]
    pub spot_interruption_backoff: Duration,
    /// The longest an often-interrupted pool is avoided.
    #[serde(with = "serde_duration")]
    pub max_spot_interruption_backoff: Duration,
}

impl Default for PlannerSettings {
    fn default() -> Self {
        Self {
            scan_interval: Duration::from_secs(10),
            expander: "least-waste".into(),
            expander_priorities: None,
            seed: 0,
            max_nodes_per_scaleup: 1000,
            max_nodes_total: 0,
            cores_total: "0:320000".into(),
            memory_total: "0:6400000".into(),
            balance_similar_node_groups: false,
            expendable_pods_priority_cutoff: -10,
            evictable_owner_kinds: OwnerKinds::default(),
            node_infrastructure_owner_kinds: OwnerKinds(Vec::new()),
            pod_namespace: None,
            max_node_provision_time: Duration::from_secs(15 * 60),
            initial_node_group_backoff_duration: Duration::from_secs(5 * 60),
            max_node_group_backoff_duration: Duration::from_secs(30 * 60),
            node_group_backoff_reset_timeout: Duration::from_secs(3 * 3600),
            gang_provision_timeout: Duration::from_secs(10 * 60),
            provisioning_request_booking_time: Duration::from_secs(10 * 60),
            scale_down_enabled: true,
            scale_down_unneeded_time: AutoDuration::Auto,
            scale_down_billing_minimum: Duration::from_secs(60),
            assumed_boot_time: Duration::from_secs(120),
            scale_down_underutilized_time: Duration::from_secs(10 * 60),
            retire_hold_limit: Duration::from_secs(30 * 60),
            scale_down_unready_time: Duration::from_secs(20 * 60),
            scale_down_utilization_threshold: 0.5,
            scale_down_gpu_utilization_threshold: 0.5,
            scale_down_delay_after_add: AutoDuration::Auto,
            scale_down_delay_after_delete: Duration::ZERO,
            scale_down_delay_after_failure: Duration::from_secs(3 * 60),
            scale_down_confirm_delay: Duration::from_secs(5),
            fence_settle_time: Duration::from_secs(5),
            max_scale_down_parallelism: 10,
            max_empty_bulk_delete: 10,
            max_scale_in_fraction: 0.1,
            type_idle_threshold: Duration::ZERO,
            max_pod_eviction_time: Duration::from_secs(2 * 60),
            scale_down_non_empty_candidates_count: 30,
            scale_down_candidates_pool_ratio: 0.1,
            scale_down_candidates_pool_min_count: 50,
            interruption_handling: true,
            spot_interruption_threshold: 2,
            spot_interruption_window: Duration::from_secs(3600),
            spot_interruption_backoff: Duration::from_secs(30 * 60),
            max_spot_interruption_backoff: Duration::from_secs(3 * 3600),
        }
    }
}

/// A duration the planner may choose (`auto`) or the user fixes (a duration such as
/// `10m`, or plain seconds as the seed wrote them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoDuration {
    /// The planner decides, per node group, from what it observes.
    Auto,
    /// The user's value, with Cluster Autoscaler's meaning.
    Fixed(Duration),
}

impl AutoDuration {
    /// The fixed value, if the user gave one.
    pub fn fixed(self) -> Option<Duration> {
        match self {
            Self::Auto => None,
            Self::Fixed(d) => Some(d),
        }
    }
}

impl From<Duration> for AutoDuration {
    fn from(d: Duration) -> Self {
        Self::Fixed(d)
    }
}

impl std::fmt::Display for AutoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(d) => f.write_str(&model::time::format_duration(*d)),
        }
    }
}

impl Serialize for AutoDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for AutoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            #[serde(with = "serde_duration")]
            Number(Duration),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected `auto` or a duration such as 90s, 10m or 1h30m")
        })? {
            Raw::Text(t) if t.trim() == "auto" => Ok(Self::Auto),
            Raw::Text(t) => model::time::parse_duration(&t)
                .map(Self::Fixed)
                .map_err(|e| serde::de::Error::custom(format!("{e} (or `auto`)"))),
            Raw::Number(d) => Ok(Self::Fixed(d)),
        }
    }
}

impl PlannerSettings {
    /// A pod that is part of its node rather than work on it: a DaemonSet's or mirror
    /// pod, or one whose controller is on `node-infrastructure-owner-kinds`.
    pub fn is_node_infrastructure(&self, pod: &model::PodView) -> bool {
        pod.is_node_infrastructure()
            || match &pod.owner {
                model::Owner::Controller { kind, .. } => {
                    self.node_infrastructure_owner_kinds.contains(kind)
                }
                _ => false,
            }
    }
}

/// A list of owner kinds (`evictable-owner-kinds`): written as a comma-separated
/// string (`apps/ReplicaSet,argoproj.io/Workflow`) on the command line and in files;
/// a YAML list is accepted too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerKinds(pub Vec<OwnerKind>);

impl OwnerKinds {
    /// Parses a comma-separated list; an empty text is an empty list.
    pub fn parse(text: &str) -> Result<Self, model::OwnerKindParseError> {
        text.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(OwnerKind::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `kind` is on the list.
    pub fn contains(&self, kind: &OwnerKind) -> bool {
        self.0.contains(kind)
    }
}

impl Default for OwnerKinds {
    /// The controllers that put an evicted pod back with nothing lost: ReplicaSet
    /// (Deployments), StatefulSet and ReplicationController.
    fn default() -> Self {
        Self(vec![
            OwnerKind::new("apps", "ReplicaSet"),
            OwnerKind::new("apps", "StatefulSet"),
            OwnerKind::new("", "ReplicationController"),
        ])
    }
}

impl std::fmt::Display for OwnerKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let texts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&texts.join(","))
    }
}

impl Serialize for OwnerKinds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for OwnerKinds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            One(String),
            List(Vec<String>),
        }
        let text = match Text::deserialize(d)? {
            Text::One(s) => s,
            Text::List(items) => items.join(","),
        };
        OwnerKinds::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_durations_read_auto_a_duration_or_plain_seconds_and_name_the_bad_value() {
        let auto: PlannerSettings = serde_yaml::from_str("scale-down-unneeded-time: auto").unwrap();
        assert_eq!(auto.scale_down_unneeded_time, AutoDuration::Auto);
        let fixed: PlannerSettings =
            serde_yaml::from_str("scale-down-unneeded-time: 10m\nscale-down-delay-after-add: 0s")
                .unwrap();
        assert_eq!(
            fixed.scale_down_unneeded_time,
            AutoDuration::Fixed(Duration::from_secs(600))
        );
        assert_eq!(
            fixed.scale_down_delay_after_add,
            AutoDuration::Fixed(Duration::ZERO)
        );
        let seed: PlannerSettings = serde_yaml::from_str("idle-threshold: 3300").unwrap();
        assert_eq!(
            seed.scale_down_unneeded_time,
            AutoDuration::Fixed(Duration::from_secs(3300))
        );
        let err = serde_yaml::from_str::<PlannerSettings>("scale-down-unneeded-time: soon")
            .unwrap_err()
            .to_string();
        // (The field is named by the callers, which read one setting at a time.)
        assert!(err.contains("soon") && err.contains("auto"), "{err}");
        let text = serde_yaml::to_string(&PlannerSettings::default()).unwrap();
        assert!(text.contains("scale-down-unneeded-time: auto"), "{text}");
        let back: PlannerSettings = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, PlannerSettings::default());
    }

    #[test]
    fn owner_kinds_read_as_text_or_list_and_name_the_bad_entry() {
        let from_text: PlannerSettings =
            serde_yaml::from_str("evictable-owner-kinds: apps/ReplicaSet, argoproj.io/Workflow")
                .unwrap();
        let from_list: PlannerSettings =
            serde_yaml::from_str("evictable-owner-kinds: [apps/ReplicaSet, argoproj.io/Workflow]")
                .unwrap();
        assert_eq!(
            from_text.evictable_owner_kinds,
            from_list.evictable_owner_kinds
        );
        assert_eq!(
            from_text.evictable_owner_kinds.to_string(),
            "apps/ReplicaSet,argoproj.io/Workflow"
        );
        let err =
            serde_yaml::from_str::<PlannerSettings>("evictable-owner-kinds: apps/v1/ReplicaSet")
                .unwrap_err()
                .to_string();
        assert!(err.contains("apps/v1/ReplicaSet"), "{err}");
        assert_eq!(
            OwnerKinds::default().to_string(),
            "apps/ReplicaSet,apps/StatefulSet,ReplicationController"
        );
    }
}
