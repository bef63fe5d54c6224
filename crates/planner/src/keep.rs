//! How long an idle node is worth keeping: the ski-rental rule.
//!
//! Keeping an empty node costs its price for every second it waits; removing it and
//! buying again when work returns costs the new instance's boot time (billed, and at
//! least the 60 s EC2 bills at minimum, `scale-down-billing-minimum`). Without knowledge of the future, keeping the
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
//! give no sample, and `assumed-boot-time` applies until a new node of the group boots.)

use crate::scaleup::ClusterView;
use crate::settings::{AutoDuration, PlannerSettings};
use model::ClusterSnapshot;
use std::time::Duration;

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
pub fn empty_keep_time(settings: &PlannerSettings, observed_boot: Option<Duration>) -> Duration {
    match settings.scale_down_unneeded_time {
        AutoDuration::Fixed(d) => d,
        AutoDuration::Auto => observed_boot
            .unwrap_or(settings.assumed_boot_time)
            .max(settings.scale_down_billing_minimum),
    }
}

/// How long an under-utilised node must stay so before it is retired or drained.
pub(crate) fn underutilized_time(settings: &PlannerSettings) -> Duration {
    match settings.scale_down_unneeded_time {
        AutoDuration::Fixed(d) => d,
        AutoDuration::Auto => settings.scale_down_underutilized_time,
    }
}

/// Completion-aware retirement: under `auto`, a node a pod is known to hold for
/// longer than `retire-hold-limit` is not retired (its room is better filled than
/// fenced). `hold` is the longest known remaining run time of its must-finish pods.
pub(crate) fn retiring_pays_off(settings: &PlannerSettings, hold: Option<Duration>) -> bool {
    match settings.scale_down_unneeded_time {
        AutoDuration::Fixed(_) => true,
        AutoDuration::Auto => hold.is_none_or(|h| h <= settings.retire_hold_limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_node_is_kept_for_a_boot_time_but_never_less_than_the_billing_minimum() {
        let auto = PlannerSettings::default();
        assert_eq!(
            empty_keep_time(&auto, Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
        assert_eq!(
            empty_keep_time(&auto, Some(Duration::from_secs(20))),
            auto.scale_down_billing_minimum
        );
        assert_eq!(empty_keep_time(&auto, None), auto.assumed_boot_time);
        assert_eq!(
            underutilized_time(&auto),
            auto.scale_down_underutilized_time
        );
        assert!(retiring_pays_off(&auto, None));
        assert!(retiring_pays_off(&auto, Some(auto.retire_hold_limit)));
        assert!(!retiring_pays_off(
            &auto,
            Some(auto.retire_hold_limit + Duration::from_secs(1))
        ));
        let fixed = PlannerSettings {
            scale_down_unneeded_time: Duration::from_secs(600).into(),
            ..auto
        };
        assert_eq!(
            empty_keep_time(&fixed, Some(Duration::from_secs(90))),
            Duration::from_secs(600)
        );
        assert_eq!(underutilized_time(&fixed), Duration::from_secs(600));
        assert!(retiring_pays_off(
            &fixed,
            Some(Duration::from_secs(100_000))
        ));
    }
}
