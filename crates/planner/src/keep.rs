//! How long an idle node is worth keeping: the ski-rental rule.
//!
//! Keeping an empty node costs its price for every second it waits; removing it and
//! buying again when work returns costs the new instance's boot time (billed, and at
//! least the 60 s EC2 bills at minimum). Without knowledge of the future, keeping the
//! node for exactly the re-buy cost and then removing it never spends more than twice
//! what the best choice in hindsight would have (2-competitive). So demand that comes
//! back within a boot time keeps its nodes, and demand with longer gaps does not:
//! keeping across a gap longer than a boot always costs more than buying again, so a
//! recurring workload needs no separate learning to be cheap. What a warm node buys
//! is latency, not money: that is the user's explicit choice (`type-idle-threshold`).
//!
//! Boot times are read from the snapshot: a Ready node's Ready transition minus its
//! instance's launch as the cloud adapter reports it. (On AWS that is when the
//! autoscaler first saw the instance, within a scan interval of its launch, since
//! DescribeAutoScalingGroups gives no launch time; instances first seen after a restart
//! give no sample, and `UNOBSERVED_BOOT` applies until a new node of the group boots.)

use crate::scaleup::ClusterView;
use crate::settings::AutoDuration;
use model::ClusterSnapshot;
use std::time::Duration;

/// EC2 bills per second with a 60 s minimum: re-buying never costs less.
pub(crate) const MIN_BILLED: Duration = Duration::from_secs(60);
/// The boot time assumed for a group with no Ready node to learn from.
pub(crate) const UNOBSERVED_BOOT: Duration = Duration::from_secs(120);
/// A node a running pod is known to hold for longer than this is not retired under
/// `auto` (completion-aware retirement): its room is better filled than fenced.
pub(crate) const LONG_HOLD: Duration = Duration::from_secs(1800);

/// How long an under-utilised (not empty) node waits under `auto`: Cluster
/// Autoscaler's 10 minutes, since removing it evicts or retires running pods.
pub(crate) const AUTO_UNDERUTILIZED_TIME: Duration = Duration::from_secs(600);

/// Per group (by index in the snapshot): the median boot time of its Ready nodes,
/// if any. Samples longer than `max_provision` (a node that was NotReady later and
/// came back) are left out.
pub(crate) fn observed_boot_times(
    snapshot: &ClusterSnapshot,
    view: &ClusterView,
    max_provision: Duration,
) -> Vec<Option<Duration>> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); snapshot.groups.len()];
    for node in snapshot.nodes.iter().filter(|n| n.ready) {
        let (Some(group), Some(instance)) = (&node.group, &node.instance) else {
            continue;
        };
        let Some(&gi) = view.group_index.get(group) else {
            continue;
        };
        let Some(launched) = snapshot.groups[gi]
            .instances
            .iter()
            .find(|i| &i.id == instance)
            .map(|i| i.launched_at)
        else {
            continue;
        };
        if node.ready_changed < launched {
            continue;
        }
        let boot = node.ready_changed.saturating_since(launched);
        if boot <= max_provision {
            samples[gi].push(boot);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort();
            s.get(s.len() / 2).copied()
        })
        .collect()
}

/// How long an empty node of a group with this observed boot time is kept.
pub fn empty_keep_time(setting: AutoDuration, observed_boot: Option<Duration>) -> Duration {
    match setting {
        AutoDuration::Fixed(d) => d,
        AutoDuration::Auto => observed_boot.unwrap_or(UNOBSERVED_BOOT).max(MIN_BILLED),
    }
}

/// How long an under-utilised node must stay so before it is retired or drained.
pub(crate) fn underutilized_time(setting: AutoDuration) -> Duration {
    setting.fixed().unwrap_or(AUTO_UNDERUTILIZED_TIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_node_is_kept_for_a_boot_time_but_never_less_than_the_billing_minimum() {
        let auto = AutoDuration::Auto;
        assert_eq!(
            empty_keep_time(auto, Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
        assert_eq!(
            empty_keep_time(auto, Some(Duration::from_secs(20))),
            MIN_BILLED
        );
        assert_eq!(empty_keep_time(auto, None), UNOBSERVED_BOOT);
        let fixed = AutoDuration::Fixed(Duration::from_secs(600));
        assert_eq!(
            empty_keep_time(fixed, Some(Duration::from_secs(90))),
            Duration::from_secs(600)
        );
        assert_eq!(underutilized_time(fixed), Duration::from_secs(600));
        assert_eq!(underutilized_time(auto), AUTO_UNDERUTILIZED_TIME);
    }
}
