//! Planner scenarios on a virtual clock: each test drives the planner through a few
//! explicit passes and checks what it decided.

mod common;

use common::*;
use model::*;
use planner::{Action, NoScaleUpReason, Planner, PlannerEvent, PlannerSettings, TerminateReason};
use std::time::Duration;

#[test]
fn scales_up_once_for_pending_pods_and_not_again_while_nodes_boot() {
    let mut w = World::new(vec![group(
        "cpu",
        "us-west-2",
        "us-west-2a",
        16,
        64,
        0,
        100,
    )]);
    for i in 0..40 {
        w.pods.push(job_pod(&format!("p{i}"), 3000, 4));
    }
    let mut p = Planner::new(settings()).unwrap();
    let first = w.step(&mut p, 10);
    // 16 vCPU nodes fit five 3-cpu pods each after reserve: 8 nodes.
    assert_eq!(World::scale_ups(&first), vec![("cpu".to_owned(), 0, 8)]);
    // The cloud view lags: the next snapshot does not show the new target yet.
    let launched = w.group_mut("cpu").clone();
    w.group_mut("cpu").target = 0;
    w.group_mut("cpu").instances.clear();
    let stale = w.step(&mut p, 10);
    assert!(
        World::scale_ups(&stale).is_empty(),
        "a stale snapshot caused a second scale-up: {stale:?}"
    );
    *w.group_mut("cpu") = launched.clone();
    // Nodes still booting: the next passes must not buy more.
    for _ in 0..5 {
        let again = w.step(&mut p, 10);
        assert!(
            World::scale_ups(&again).is_empty(),
            "scaled up twice: {again:?}"
        );
    }
    // Half the nodes registered, pods bound to them; the rest still boot.
    w.group_mut("cpu").instances.truncate(4);
    w.register_all();
    w.group_mut("cpu").instances = launched.instances.clone();
    w.schedule();
    let later = w.step(&mut p, 10);
    assert!(
        World::scale_ups(&later).is_empty(),
        "scaled up twice: {later:?}"
    );
}

/// Found end to end (issue 5): a node that has just registered still carries the node
/// lifecycle controller's not-ready taint for a few seconds; pending pods it will
/// take must not buy another node.
#[test]
fn a_just_registered_node_with_its_startup_taint_is_capacity_not_a_reason_to_buy() {
    let mut w = World::new(vec![group(
        "cpu",
        "us-west-2",
        "us-west-2a",
        16,
        64,
        0,
        100,
    )]);
    for i in 0..10 {
        w.pods.push(job_pod(&format!("p{i}"), 3000, 4));
    }
    let mut p = Planner::new(settings()).unwrap();
    assert_eq!(
        World::scale_ups(&w.step(&mut p, 10)),
        vec![("cpu".to_owned(), 0, 2)]
    );
    w.register_all();
    for (i, node) in w.nodes.iter_mut().enumerate() {
        node.taints.push(Taint::new(
            "node.kubernetes.io/not-ready",
            "",
            TaintEffect::NoSchedule,
        ));
        node.ready = i == 0; // one already Ready (the taint lags), one not yet
    }
    let again = w.step(&mut p, 10);
    assert!(
        World::scale_ups(&again).is_empty(),
        "bought again for pods the new nodes will take: {again:?}"
    );
}

#[test]
fn never_acts_on_an_unsynced_snapshot() {
    let mut w = World::new(vec![group(
        "cpu",
        "us-west-2",
        "us-west-2a",
        16,
        64,
        0,
        100,
    )]);
    w.pods.push(job_pod("p", 1000, 1));
    w.synced = false;
    let mut p = Planner::new(settings()).unwrap();
    assert!(w.step(&mut p, 10).is_empty());
    assert!(w.events.contains(&PlannerEvent::SnapshotNotSynced));
}

#[test]
fn pods_too_big_for_every_group_are_reported_once_with_reasons() {
    let mut w = World::new(vec![group("small", "us-west-2", "us-west-2a", 2, 8, 0, 10)]);
    w.pods.push(job_pod("huge", 64_000, 1));
    let mut p = Planner::new(settings()).unwrap();
    for _ in 0..3 {
        assert!(w.step(&mut p, 10).is_empty());
    }
    let reports: Vec<_> = w
        .events
        .iter()
        .filter(|e| matches!(e, PlannerEvent::NotTriggerScaleUp { .. }))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let PlannerEvent::NotTriggerScaleUp { reasons, .. } = reports[0] else {
        unreachable!()
    };
    assert!(matches!(
        reasons.get(&NodeGroupId::new("small")),
        Some(NoScaleUpReason::ExceedsNodeShape { .. })
    ));
}

#[test]
fn respects_group_max_and_reports_the_rest() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 3)]);
    for i in 0..10 {
        w.pods.push(job_pod(&format!("p{i}"), 3000, 1));
    }
    let mut p = Planner::new(settings()).unwrap();
    let a = w.step(&mut p, 10);
    assert_eq!(World::scale_ups(&a), vec![("cpu".to_owned(), 0, 3)]);
    let at_max = w.events.iter().filter(|e| matches!(e, PlannerEvent::NotTriggerScaleUp { reasons, .. } if reasons.values().any(|r| matches!(r, NoScaleUpReason::GroupAtMax { .. })))).count();
    assert_eq!(at_max, 7);
}

#[test]
fn expendable_pods_do_not_trigger_but_placeholders_do() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 10)]);
    let mut expendable = job_pod("expendable", 1000, 1);
    expendable.priority = -100;
    w.pods.push(expendable);
    let mut p = Planner::new(settings()).unwrap();
    assert!(World::scale_ups(&w.step(&mut p, 10)).is_empty());
    let mut placeholder = pod("placeholder", 1000, 1, Owner::replica_set("overprovision"));
    placeholder.priority = -1;
    w.pods.push(placeholder);
    assert_eq!(World::scale_ups(&w.step(&mut p, 10)).len(), 1);
}

#[test]
fn capacity_failure_backs_off_the_pool_gives_back_and_overflows_to_the_next_region() {
    let mut w = World::new(vec![
        group("primary", "us-west-2", "us-west-2a", 8, 32, 0, 50),
        group("secondary", "us-east-1", "us-east-1a", 8, 32, 0, 50),
    ]);
    for i in 0..8 {
        w.pods.push(job_pod(&format!("p{i}"), 3000, 4));
    }
    let mut p = Planner::new(settings()).unwrap();
    let a = w.step(&mut p, 10);
    assert_eq!(
        World::scale_ups(&a),
        vec![("primary".to_owned(), 0, 4)],
        "primary region first"
    );
    // AWS could not launch any of them.
    w.group_mut("primary").instances.clear();
    p.handle_launch_failure(
        w.now,
        LaunchFailure {
            group: NodeGroupId::new("primary"),
            zone: Some(Zone::new("us-west-2a")),
            kind: LaunchFailureKind::InsufficientCapacity,
            count: 4,
            message: "We currently do not have sufficient capacity (InsufficientInstanceCapacity)"
                .into(),
            at: w.now,
        },
    );
    let b = w.step(&mut p, 10);
    assert!(b.iter().any(|a| matches!(a, Action::SetTargetSize { group, to: 0, .. } if group.as_str() == "primary")), "gives back: {b:?}");
    assert_eq!(World::scale_ups(&b), vec![("secondary".to_owned(), 0, 4)]);
    assert!(w
        .events
        .iter()
        .any(|e| matches!(e, PlannerEvent::PoolBackedOff { .. })));
    // The backoff lasts until it expires, not until the next pass.
    assert_eq!(p.backoffs(w.now + Duration::from_secs(60)).len(), 1);
    assert!(p.backoffs(w.now + Duration::from_secs(301)).is_empty());
}

#[test]
fn backoff_survives_a_restart_through_persisted_records() {
    let mut w = World::new(vec![
        group("primary", "us-west-2", "us-west-2a", 8, 32, 0, 50),
        group("secondary", "us-east-1", "us-east-1a", 8, 32, 0, 50),
    ]);
    let mut p = Planner::new(settings()).unwrap();
    p.handle_launch_failure(
        w.now,
        LaunchFailure {
            group: NodeGroupId::new("primary"),
            zone: None,
            kind: LaunchFailureKind::Quota,
            count: 0,
            message: "limit".into(),
            at: w.now,
        },
    );
    let _ = w.step(&mut p, 1);
    let records: Vec<_> = w
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::PersistBackoff { record, .. } => Some(record.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 1);
    let mut restarted = Planner::new(settings()).unwrap();
    restarted.restore_backoffs(records);
    w.pods.push(job_pod("p", 1000, 1));
    let a = w.step(&mut restarted, 10);
    assert_eq!(World::scale_ups(&a), vec![("secondary".to_owned(), 0, 1)]);
}

#[test]
fn empty_node_is_removed_after_the_unneeded_time_with_decide_wait_recheck() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 10)]);
    w.pods.push(job_pod("p", 1000, 1));
    let mut p = Planner::new(settings()).unwrap();
    w.step(&mut p, 10);
    w.register_all();
    w.schedule();
    w.step(&mut p, 10);
    w.finish("p");
    // Idle for less than 10 minutes: nothing.
    for _ in 0..5 {
        assert!(World::terminations(&w.step(&mut p, 60)).is_empty());
    }
    // Past the unneeded time a candidate is decided, and only acted on a later snapshot.
    let mut decided_at = None;
    for _ in 0..10 {
        let acts = w.step(&mut p, 60);
        if decided_at.is_none()
            && w.events
                .iter()
                .any(|e| matches!(e, PlannerEvent::ScaleDownCandidate { .. }))
        {
            decided_at = Some(w.revision);
            assert!(
                World::terminations(&acts).is_empty(),
                "acted in the same pass it decided"
            );
            continue;
        }
        if !World::terminations(&acts).is_empty() {
            assert!(w.revision > decided_at.expect("decided first"));
            assert!(w.nodes.is_empty());
            return;
        }
    }
    panic!("empty node never removed: {:?}", w.events);
}

#[test]
fn decision_is_cancelled_when_a_pod_lands_before_confirmation() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 10)]);
    w.pods.push(job_pod("p", 1000, 1));
    let mut p = Planner::new(PlannerSettings {
        scale_down_confirm_delay: Duration::from_secs(30),
        ..settings()
    })
    .unwrap();
    w.step(&mut p, 10);
    w.register_all();
    w.schedule();
    w.finish("p");
    let mut decided = false;
    for _ in 0..15 {
        w.step(&mut p, 60);
        if w.events
            .iter()
            .any(|e| matches!(e, PlannerEvent::ScaleDownCandidate { .. }))
        {
            decided = true;
            break;
        }
    }
    assert!(decided);
    // A new job pod lands before the decision is confirmed.
    let mut fresh = job_pod("q", 500, 1);
    fresh.unschedulable = false;
    w.pods.push(fresh);
    w.schedule();
    let acts = w.step(&mut p, 60);
    assert!(World::terminations(&acts).is_empty());
    assert!(w
        .events
        .iter()
        .any(|e| matches!(e, PlannerEvent::ScaleDownCancelled { .. })));
}

#[test]
fn node_with_a_running_job_is_retired_not_killed_and_removed_after_it_finishes() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 16, 64, 0, 10)]);
    let mut long = job_pod("long", 1000, 1);
    long.expected_duration = Some(Duration::from_secs(3600));
    w.pods.push(long);
    let mut p = Planner::new(settings()).unwrap();
    w.step(&mut p, 10);
    w.register_all();
    w.schedule();
    let mut retired = false;
    for _ in 0..30 {
        let acts = w.step(&mut p, 60);
        assert!(
            World::terminations(&acts).is_empty(),
            "terminated a node running a job"
        );
        if acts.iter().any(|a| matches!(a, Action::RetireNode { .. })) {
            retired = true;
        }
    }
    assert!(
        retired,
        "under-utilised node with a job was not retired: {:?}",
        w.events
    );
    assert!(w.nodes[0].retired.is_some());
    w.finish("long");
    let mut removed = false;
    for _ in 0..5 {
        let acts = w.step(&mut p, 10);
        if acts.iter().any(|a| {
            matches!(
                a,
                Action::TerminateInstance {
                    reason: TerminateReason::RetiredAndDrained,
                    ..
                }
            )
        }) {
            removed = true;
            break;
        }
    }
    assert!(removed, "{:?}", w.events);
}

#[test]
fn a_retired_node_is_taken_back_before_buying_a_new_one() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 16, 64, 0, 10)]);
    w.pods.push(job_pod("long", 1000, 1));
    let mut p = Planner::new(settings()).unwrap();
    w.step(&mut p, 10);
    w.register_all();
    w.schedule();
    for _ in 0..30 {
        w.step(&mut p, 60);
    }
    assert!(w.nodes[0].retired.is_some());
    w.pods.push(job_pod("new", 2000, 2));
    w.schedule(); // cannot land: the node is tainted
    let acts = w.step(&mut p, 10);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::UnretireNode { .. })),
        "{acts:?}"
    );
    assert!(World::scale_ups(&acts).is_empty());
}

#[test]
fn evictable_pods_are_drained_when_they_fit_elsewhere() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 16, 64, 0, 10)]);
    let svc = |n: &str| pod(n, 1000, 1, Owner::replica_set("web"));
    w.pods.push(job_pod("big", 15000, 8));
    w.pods.push(svc("web-1"));
    let mut p = Planner::new(settings()).unwrap();
    w.step(&mut p, 10);
    w.register_all();
    w.schedule();
    assert_eq!(w.nodes.len(), 2);
    w.finish("big");
    let mut evicted = false;
    for _ in 0..30 {
        let acts = w.step(&mut p, 60);
        if acts.iter().any(|a| matches!(a, Action::EvictPod { .. })) {
            evicted = true;
        }
        w.schedule();
    }
    assert!(evicted || w.nodes.len() == 1, "{:?}", w.events);
    assert!(w.nodes.len() <= 1);
}

/// Eight under-utilised nodes with one small ReplicaSet pod each; the pods of the
/// first three (which rank first) are pinned to their node, so those three can never
/// be drained. Runs scale-down passes with `scale_down_non_empty_candidates_count =
/// cap`; returns the most removal candidates any pass named and the nodes left.
fn bounded_scale_down(cap: i64) -> (usize, usize) {
    let mut g = group("cpu", "us-west-2", "us-west-2a", 16, 64, 0, 20);
    g.target = 8;
    g.instances = (1..=8)
        .map(|i| InstanceView {
            id: InstanceId::new(format!("i-{i:04}")),
            zone: Zone::new("us-west-2a"),
            state: InstanceState::InService,
            launched_at: Time::ZERO,
        })
        .collect();
    let mut w = World::new(vec![g]);
    w.next_instance = 8;
    w.register_all();
    for i in 0..8 {
        let mut p = pod(&format!("web-{i}"), 1000, 1, Owner::replica_set("web"));
        let node = w.nodes[i].name.clone();
        if i < 3 {
            p.node_selector
                .insert(well_known::LABEL_HOSTNAME, node.as_str());
        }
        p.node = Some(node);
        p.phase = PodPhase::Running;
        p.unschedulable = false;
        w.pods.push(p);
    }
    let mut p = Planner::new(PlannerSettings {
        scale_down_non_empty_candidates_count: cap,
        ..settings()
    })
    .unwrap();
    let mut most = 0;
    for _ in 0..40 {
        let before = w.events.len();
        w.step(&mut p, 60);
        most = most.max(
            w.events[before..]
                .iter()
                .filter(|e| matches!(e, PlannerEvent::ScaleDownCandidate { .. }))
                .count(),
        );
    }
    (most, w.nodes.len())
}

#[test]
fn scale_down_checks_a_bounded_number_of_nodes_per_pass_and_carries_the_rest_over() {
    let (most, left) = bounded_scale_down(3);
    assert!(most <= 3, "a pass named {most} candidates with a cap of 3");
    // The three pinned nodes rank first and always fail: only the rotation lets the
    // other five be checked at all.
    assert_eq!(left, 3, "the drainable nodes are removed in later passes");
    let (most, left) = bounded_scale_down(0);
    assert!(
        most > 3,
        "without a cap one pass names every drainable node ({most})"
    );
    assert_eq!(left, 3);
}

#[test]
fn scale_down_disabled_and_unmanaged_nodes_are_untouched() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 10)]);
    let mut p = Planner::new(settings()).unwrap();
    w.pods.push(job_pod("p", 1000, 1));
    w.step(&mut p, 10);
    w.register_all();
    w.nodes[0].scale_down_disabled = true;
    let mut foreign = NodeView::new(
        NodeName::new("on-prem"),
        Resources::cpu_mem(4000, 16 << 30),
        w.now,
    );
    foreign.instance = None;
    w.nodes.push(foreign);
    w.pods.clear();
    for _ in 0..40 {
        let acts = w.step(&mut p, 60);
        assert!(World::terminations(&acts).is_empty());
        assert!(!acts.iter().any(|a| matches!(a, Action::RetireNode { .. })));
    }
}

#[test]
fn group_min_size_is_kept() {
    let mut g = group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 10);
    g.spec.min_size = 2;
    let mut w = World::new(vec![g]);
    w.pods
        .extend((0..3).map(|i| job_pod(&format!("p{i}"), 3000, 1)));
    let mut p = Planner::new(settings()).unwrap();
    w.step(&mut p, 10);
    w.register_all();
    w.pods.clear();
    for _ in 0..40 {
        w.step(&mut p, 60);
    }
    assert_eq!(w.nodes.len(), 2);
}

#[test]
fn launch_timeout_terminates_the_instance_and_backs_off() {
    let mut w = World::new(vec![
        group("a", "us-west-2", "us-west-2a", 4, 16, 0, 10),
        group("b", "us-west-2", "us-west-2b", 8, 32, 0, 10),
    ]);
    w.pods.push(job_pod("p", 3000, 1));
    let mut p = Planner::new(settings()).unwrap();
    let first = w.step(&mut p, 10);
    assert_eq!(World::scale_ups(&first), vec![("a".to_owned(), 0, 1)]);
    // Never registers; after 15 minutes it is given up.
    let mut timed_out = false;
    for _ in 0..20 {
        let acts = w.step(&mut p, 60);
        if acts.iter().any(|a| {
            matches!(
                a,
                Action::TerminateInstance {
                    reason: TerminateReason::LaunchTimeout,
                    ..
                }
            )
        }) {
            timed_out = true;
            assert_eq!(
                World::scale_ups(&acts),
                vec![("b".to_owned(), 0, 1)],
                "the pod goes elsewhere"
            );
            break;
        }
    }
    assert!(timed_out);
}

#[test]
fn gpu_capacity_coming_is_not_bought_twice() {
    let mut g = group("gpu", "us-west-2", "us-west-2a", 8, 61, 1, 10);
    g.spec
        .labels
        .insert(well_known::LABEL_ACCELERATOR, "nvidia-tesla-v100");
    let mut w = World::new(vec![g]);
    let mut gpod = job_pod("train", 1000, 4);
    gpod.requests.add_extended("nvidia.com/gpu", 1);
    w.pods.push(gpod);
    let mut p = Planner::new(settings()).unwrap();
    assert_eq!(World::scale_ups(&w.step(&mut p, 10)).len(), 1);
    w.register_all();
    // The device plugin has not advertised the GPU yet.
    w.nodes[0].allocatable.set_extended("nvidia.com/gpu", 0);
    w.schedule();
    for _ in 0..3 {
        assert!(World::scale_ups(&w.step(&mut p, 10)).is_empty());
    }
}

#[test]
fn gang_is_provisioned_in_one_group_or_not_at_all() {
    let mut w = World::new(vec![
        group("small", "us-west-2", "us-west-2a", 16, 64, 0, 2),
        group("big", "us-west-2", "us-west-2b", 16, 64, 0, 10),
    ]);
    for i in 0..8 {
        let mut p = job_pod(&format!("g{i}"), 7000, 8);
        p.gang = Some(GangMembership::new(GangId::new("train"), 8));
        w.pods.push(p);
    }
    let mut p = Planner::new(settings()).unwrap();
    let a = w.step(&mut p, 10);
    // "small" can hold only 4 of the 8 pods: the whole gang goes to "big".
    assert_eq!(World::scale_ups(&a), vec![("big".to_owned(), 0, 4)]);
}

#[test]
fn gang_partial_delivery_is_rolled_back_and_served_elsewhere() {
    let mut w = World::new(vec![
        group("first", "us-west-2", "us-west-2a", 16, 64, 0, 10),
        group("second", "us-east-1", "us-east-1a", 16, 64, 0, 10),
    ]);
    for i in 0..8 {
        let mut p = job_pod(&format!("g{i}"), 7000, 8);
        p.gang = Some(GangMembership::new(GangId::new("train"), 8));
        w.pods.push(p);
    }
    let mut p = Planner::new(settings()).unwrap();
    assert_eq!(
        World::scale_ups(&w.step(&mut p, 10)),
        vec![("first".to_owned(), 0, 4)]
    );
    // Only 2 of 4 instances launch; AWS reports the rest.
    w.group_mut("first").instances.truncate(2);
    w.register_all();
    p.handle_launch_failure(
        w.now,
        LaunchFailure {
            group: NodeGroupId::new("first"),
            zone: None,
            kind: LaunchFailureKind::InsufficientCapacity,
            count: 2,
            message: "ICE".into(),
            at: w.now,
        },
    );
    let b = w.step(&mut p, 10);
    // The rollback fences both nodes at once and serves the gang elsewhere at once ...
    let fenced = b
        .iter()
        .filter(
            |a| matches!(a, Action::RetireNode { reason, .. } if reason.contains("gang-rollback")),
        )
        .count();
    assert_eq!(fenced, 2, "{b:?}");
    assert!(w
        .events
        .iter()
        .any(|e| matches!(e, PlannerEvent::GangRolledBack { .. })));
    assert_eq!(World::scale_ups(&b), vec![("second".to_owned(), 0, 4)]);
    // ... and terminates them once the fence has settled and the evidence is clear.
    let c = w.step(&mut p, 10);
    let rolled = c
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::TerminateInstance {
                    reason: TerminateReason::GangRollback,
                    ..
                }
            )
        })
        .count();
    assert_eq!(rolled, 2, "{c:?}");
}

#[test]
fn priority_expander_prefers_the_high_priority_group() {
    let mut w = World::new(vec![
        group("p2-node-group", "us-west-2", "us-west-2a", 8, 32, 0, 10),
        group("p3-node-group", "us-west-2", "us-west-2a", 8, 32, 0, 10),
    ]);
    w.pods.push(job_pod("p", 1000, 1));
    let table = [
        (10, vec![".*p2-node-group.*".to_owned()]),
        (50, vec![".*p3-node-group.*".to_owned()]),
    ]
    .into();
    let mut p = Planner::new(PlannerSettings {
        expander: "priority,least-waste".into(),
        expander_priorities: Some(table),
        ..settings()
    })
    .unwrap();
    assert_eq!(
        World::scale_ups(&w.step(&mut p, 10)),
        vec![("p3-node-group".to_owned(), 0, 1)]
    );
}

#[test]
fn balance_similar_node_groups_splits_across_zones() {
    let mut w = World::new(vec![
        group("a", "us-west-2", "us-west-2a", 4, 16, 0, 10),
        group("b", "us-west-2", "us-west-2b", 4, 16, 0, 10),
    ]);
    for g in &mut w.groups {
        g.spec.shape.instance_type = InstanceTypeName::new("m5.xlarge");
    }
    w.pods
        .extend((0..6).map(|i| job_pod(&format!("p{i}"), 3000, 1)));
    let mut p = Planner::new(PlannerSettings {
        balance_similar_node_groups: true,
        ..settings()
    })
    .unwrap();
    let ups = World::scale_ups(&w.step(&mut p, 10));
    assert_eq!(ups, vec![("a".to_owned(), 0, 3), ("b".to_owned(), 0, 3)]);
}

#[test]
fn bad_settings_name_the_field() {
    for (settings, field) in [
        (
            PlannerSettings {
                expander: "cheapest".into(),
                ..settings()
            },
            "expander",
        ),
        (
            PlannerSettings {
                scale_down_utilization_threshold: 1.5,
                ..settings()
            },
            "scale-down-utilization-threshold",
        ),
        (
            PlannerSettings {
                cores_total: "10".into(),
                ..settings()
            },
            "cores-total",
        ),
    ] {
        assert_eq!(Planner::new(settings).err().expect("rejected").field, field);
    }
    let yaml = "expander: least-waste\nscale-down-unneeded-tme: 5m\n";
    let err = serde_yaml::from_str::<PlannerSettings>(yaml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("scale-down-unneeded-tme"), "{err}");
    let aliases: PlannerSettings =
        serde_yaml::from_str("idle-threshold: 3300\nsleep: 60\ninstance-init-time: 1500\n")
            .unwrap();
    assert_eq!(
        aliases.scale_down_unneeded_time,
        Duration::from_secs(3300).into()
    );
    assert_eq!(aliases.scan_interval, Duration::from_secs(60));
    assert_eq!(aliases.max_node_provision_time, Duration::from_secs(1500));
}

#[test]
fn two_underused_service_nodes_merge_into_one() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 8, 32, 0, 10)]);
    let svc = |n: &str| pod(n, 6000, 1, Owner::replica_set("api"));
    w.pods.push(svc("api-1"));
    w.pods.push(svc("api-2"));
    let mut p = Planner::new(settings()).unwrap();
    w.step(&mut p, 10);
    w.register_all();
    w.schedule();
    assert_eq!(w.nodes.len(), 2);
    // The api shrinks: each pod now requests little.
    for pod in &mut w.pods {
        pod.requests.cpu_millis = 500;
    }
    for _ in 0..30 {
        let acts = w.step(&mut p, 60);
        // Evicted replicas come back as pending pods, as a ReplicaSet would recreate them.
        for a in &acts {
            if let Action::EvictPod { pod, .. } = a {
                let mut again = pod_for(pod);
                again.key.name.push_str("-new");
                w.pods.push(again);
            }
        }
        w.schedule();
    }
    assert_eq!(w.nodes.len(), 1, "{:?}", w.events);
    let terminations = w
        .actions
        .iter()
        .filter(|a| matches!(a, Action::TerminateInstance { .. }))
        .count();
    assert_eq!(
        terminations, 1,
        "one termination, not two for the same instance"
    );
}

fn pod_for(key: &PodKey) -> PodView {
    let mut p = pod(&key.name, 500, 1, Owner::replica_set("api"));
    p.unschedulable = false;
    p
}

#[test]
fn explain_tells_per_group_why_and_matches_the_planner() {
    let mut small = group("small", "us-west-2", "us-west-2a", 2, 8, 0, 10);
    small
        .spec
        .taints
        .push(Taint::new("dedicated", "gpu", TaintEffect::NoSchedule));
    let mut w = World::new(vec![
        small,
        group("big", "us-west-2", "us-west-2a", 16, 64, 0, 10),
    ]);
    w.pods.push(job_pod("fits-big", 8000, 8));
    w.pods.push(job_pod("too-big", 64_000, 8));
    let snap = w.snapshot();
    let e = planner::explain(settings(), w.now, &snap, &PodKey::new("batch", "fits-big")).unwrap();
    assert_eq!(
        e,
        planner::PodExplanation::TriggersScaleUp {
            group: NodeGroupId::new("big"),
            from: 0,
            to: 1
        }
    );
    let e = planner::explain(settings(), w.now, &snap, &PodKey::new("batch", "too-big")).unwrap();
    let planner::PodExplanation::NoScaleUp { reasons } = e else {
        panic!("{e:?}")
    };
    assert!(matches!(
        reasons[&NodeGroupId::new("small")],
        NoScaleUpReason::TaintNotTolerated { .. }
    ));
    assert!(matches!(
        reasons[&NodeGroupId::new("big")],
        NoScaleUpReason::ExceedsNodeShape { .. }
    ));
    assert_eq!(
        planner::explain(settings(), w.now, &snap, &PodKey::new("batch", "nope")).unwrap(),
        planner::PodExplanation::NotFound
    );
}
