//! Interruption notices (spot warnings, rebalance recommendations, state changes,
//! scheduled events) on the planner alone: what is fenced, detached and bought, and
//! that nothing is bought twice or taken from a running pod.

mod common;

use common::*;
use model::*;
use planner::{Action, InterruptionResponse, Planner, PlannerEvent, PlannerSettings};
use std::time::Duration;

fn spot(name: &str, vcpus: u32, max: u32) -> NodeGroupState {
    let mut g = group(
        name,
        "us-west-2",
        "us-west-2a",
        vcpus,
        vcpus as u64 * 4,
        0,
        max,
    );
    g.spec.purchase = PurchaseOption::Spot;
    g
}

fn quick_scale_down() -> PlannerSettings {
    PlannerSettings {
        scale_down_unneeded_time: Duration::from_secs(60).into(),
        ..settings()
    }
}

/// A world with one node of `g` running a Job pod of 3 vCPU, the planner having seen it.
fn running_one_job(g: NodeGroupState) -> (World, Planner) {
    let mut w = World::new(vec![g]);
    w.settings = quick_scale_down();
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("work-0", 3000, 4));
    w.step(&mut planner, 1);
    w.register_all();
    w.schedule();
    assert!(w.pods[0].node.is_some(), "the pod runs");
    w.step(&mut planner, 10);
    (w, planner)
}

fn notice(w: &World, kind: InterruptionKind) -> InterruptionNotice {
    let instance = w.nodes[0].instance.clone().expect("instance");
    let mut n = InterruptionNotice::new(instance, kind, w.now);
    if kind == InterruptionKind::SpotInterruption {
        n.detail = "terminate".into();
        n.deadline = Some(w.now + Duration::from_secs(120));
    }
    n
}

fn detaches(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::DetachInstance { .. }))
        .count()
}

fn fences(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::RetireNode { .. }))
        .count()
}

fn responses(w: &World) -> Vec<InterruptionResponse> {
    w.events
        .iter()
        .filter_map(|e| match e {
            PlannerEvent::InstanceInterrupted { response, .. } => Some(response.clone()),
            _ => None,
        })
        .collect()
}

/// EC2 takes the instance back: its node and pods go; the Job makes a new pod.
fn reclaim(w: &mut World, instance: &InstanceId, replacement: &str) {
    let gone: Vec<NodeName> = w
        .nodes
        .iter()
        .filter(|n| n.instance.as_ref() == Some(instance))
        .map(|n| n.name.clone())
        .collect();
    w.nodes.retain(|n| n.instance.as_ref() != Some(instance));
    for g in &mut w.groups {
        g.instances.retain(|i| &i.id != instance);
    }
    w.pods
        .retain(|p| !p.node.as_ref().is_some_and(|n| gone.contains(n)));
    w.pods.push(job_pod(replacement, 3000, 4));
}

#[test]
fn a_spot_warning_fences_the_node_detaches_the_instance_and_buys_for_its_pods_before_they_die() {
    let (mut w, mut planner) = running_one_job(spot("spot-a", 4, 5));
    let warned = notice(&w, InterruptionKind::SpotInterruption);
    let doomed = warned.instance.clone();
    planner.handle_interruption(w.now, warned.clone());
    assert_eq!(
        planner.poll_timeout(),
        Some(w.now),
        "a notice asks for a pass now"
    );
    let actions = w.step(&mut planner, 1);
    assert_eq!(fences(&actions), 1, "{actions:?}");
    assert_eq!(detaches(&actions), 1, "{actions:?}");
    // Detached first (1 -> 0), then one node bought for the pod (0 -> 1).
    assert_eq!(
        World::scale_ups(&actions),
        vec![("spot-a".to_owned(), 0, 1)]
    );
    let order: Vec<usize> = actions
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            matches!(
                a,
                Action::DetachInstance { .. } | Action::SetTargetSize { .. }
            )
        })
        .map(|(i, _)| i)
        .collect();
    assert!(
        matches!(actions[order[0]], Action::DetachInstance { .. }),
        "the detach goes before the scale-up that counts on it"
    );
    assert_eq!(
        responses(&w),
        vec![InterruptionResponse::Replace { detach: true }]
    );
    let pods = w.events.iter().find_map(|e| match e {
        PlannerEvent::InstanceInterrupted { pods, .. } => Some(pods.clone()),
        _ => None,
    });
    assert_eq!(pods, Some(vec![PodKey::new("batch", "work-0")]));
    assert!(
        w.pods[0].node.is_some() && w.pods[0].phase == PodPhase::Running,
        "nothing is done to the running pod"
    );

    // The replacement boots and registers while the pod still runs on the doomed node:
    // it is held for the pod (not removed as empty, nothing more bought).
    w.register_all();
    for _ in 0..5 {
        let actions = w.step(&mut planner, 60);
        assert!(World::scale_ups(&actions).is_empty(), "{actions:?}");
        assert!(
            !actions.iter().any(|a| matches!(
                a,
                Action::VerifyRemoval { .. } | Action::TerminateInstance { .. }
            )),
            "{actions:?}"
        );
        assert_eq!(detaches(&actions), 0, "detached once");
    }
    // A second notice for the same instance changes nothing.
    planner.handle_interruption(w.now, warned);
    let actions = w.step(&mut planner, 1);
    assert!(
        World::scale_ups(&actions).is_empty() && detaches(&actions) == 0 && fences(&actions) == 0,
        "{actions:?}"
    );

    // EC2 takes the instance; the Job's new pod lands on the replacement, bought once.
    reclaim(&mut w, &doomed, "work-0-retry");
    let actions = w.step(&mut planner, 1);
    assert!(
        World::scale_ups(&actions).is_empty(),
        "the replacement is there already: {actions:?}"
    );
    w.schedule();
    let retry = w
        .pods
        .iter()
        .find(|p| p.key.name == "work-0-retry")
        .unwrap();
    assert!(retry.node.is_some(), "the new pod runs on the replacement");
    assert_eq!(w.groups[0].target, 1);
}

#[test]
fn a_group_with_capacity_rebalancing_is_only_fenced_it_replaces_the_instance_itself() {
    let mut g = spot("spot-a", 4, 5);
    g.spec.capacity_rebalance = true;
    let (mut w, mut planner) = running_one_job(g);
    planner.handle_interruption(w.now, notice(&w, InterruptionKind::SpotInterruption));
    let actions = w.step(&mut planner, 1);
    assert_eq!(fences(&actions), 1, "{actions:?}");
    assert_eq!(detaches(&actions), 0, "{actions:?}");
    assert!(
        World::scale_ups(&actions).is_empty(),
        "no second replacement: {actions:?}"
    );
    assert!(matches!(
        responses(&w).as_slice(),
        [InterruptionResponse::Fence { .. }]
    ));
    // Nor is the fenced node taken back for pending work.
    w.pods.push(job_pod("newcomer", 500, 1));
    let actions = w.step(&mut planner, 10);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::UnretireNode { .. })),
        "{actions:?}"
    );
}

#[test]
fn a_rebalance_recommendation_buys_ahead_only_for_must_finish_work_and_never_detaches() {
    // A Job's pod: must finish, so its capacity is provisioned ahead; the instance
    // stays in its group (it may never be interrupted).
    let (mut w, mut planner) = running_one_job(spot("spot-a", 4, 5));
    planner.handle_interruption(w.now, notice(&w, InterruptionKind::RebalanceRecommendation));
    let actions = w.step(&mut planner, 1);
    assert_eq!(fences(&actions), 1, "{actions:?}");
    assert_eq!(detaches(&actions), 0, "{actions:?}");
    assert_eq!(
        World::scale_ups(&actions),
        vec![("spot-a".to_owned(), 1, 2)]
    );

    // A ReplicaSet's pod can move when it comes to that: nothing is done.
    let mut w = World::new(vec![spot("spot-a", 4, 5)]);
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods
        .push(pod("web-0", 3000, 4, Owner::replica_set("web")));
    w.step(&mut planner, 1);
    w.register_all();
    w.schedule();
    w.step(&mut planner, 10);
    planner.handle_interruption(w.now, notice(&w, InterruptionKind::RebalanceRecommendation));
    let actions = w.step(&mut planner, 1);
    assert!(
        fences(&actions) == 0 && detaches(&actions) == 0 && World::scale_ups(&actions).is_empty(),
        "{actions:?}"
    );
    assert!(
        matches!(
            responses(&w).as_slice(),
            [InterruptionResponse::Nothing { .. }]
        ),
        "{:?}",
        w.events
    );
}

#[test]
fn a_rebalance_recommendation_for_a_node_already_on_its_way_out_changes_nothing() {
    let (mut w, mut planner) = running_one_job(spot("spot-a", 4, 5));
    w.nodes[0].taints.push(Taint::new(
        model::well_known::TAINT_RETIRING,
        "",
        TaintEffect::NoSchedule,
    ));
    w.nodes[0].retired = Some(RetireMark {
        since: w.now,
        reason: "test".into(),
    });
    planner.handle_interruption(w.now, notice(&w, InterruptionKind::RebalanceRecommendation));
    let actions = w.step(&mut planner, 1);
    assert!(
        World::scale_ups(&actions).is_empty() && detaches(&actions) == 0,
        "{actions:?}"
    );
    assert!(matches!(
        responses(&w).as_slice(),
        [InterruptionResponse::Nothing { .. }]
    ));
}

#[test]
fn repeated_interruptions_back_off_the_pool_and_new_work_goes_to_a_steadier_one() {
    // The spot pool is the expander's first choice (cheaper) until it is interrupted twice.
    let cheap = spot("spot-a", 4, 10);
    let mut steady = group("od", "us-west-2", "us-west-2a", 4, 16, 0, 10);
    steady.spec.price_per_hour = Some(10.0);
    let mut w = World::new(vec![cheap, steady]);
    w.settings = PlannerSettings {
        expander: "price".into(),
        ..quick_scale_down()
    };
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("a", 3000, 4));
    w.pods.push(job_pod("b", 3000, 4));
    let actions = w.step(&mut planner, 1);
    assert_eq!(
        World::scale_ups(&actions),
        vec![("spot-a".to_owned(), 0, 2)]
    );
    w.register_all();
    w.schedule();
    w.step(&mut planner, 10);
    for ni in 0..2 {
        let instance = w.nodes[ni].instance.clone().unwrap();
        planner.handle_interruption(
            w.now,
            InterruptionNotice::new(instance, InterruptionKind::SpotInterruption, w.now),
        );
    }
    let actions = w.step(&mut planner, 1);
    let backoff = actions.iter().find_map(|a| match a {
        Action::PersistBackoff { record, .. } => Some(record.clone()),
        _ => None,
    });
    let backoff = backoff.expect("the pool is backed off (and the backoff persisted)");
    assert_eq!(backoff.kind, LaunchFailureKind::SpotInterruptions);
    assert_eq!(backoff.pool.instance_type.as_str(), "spot-a-type");
    assert_eq!(backoff.until, w.now + Duration::from_secs(30 * 60));
    // The replacements are bought in the steadier pool.
    assert_eq!(
        World::scale_ups(&actions),
        vec![("od".to_owned(), 0, 2)],
        "{actions:?}"
    );
    let summary = planner.interruptions(w.now);
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0].total, summary[0].recent), (2, 2));
    // The window passes: the count starts over.
    assert_eq!(
        planner.interruptions(w.now + Duration::from_secs(3601))[0].recent,
        0
    );
}

#[test]
fn a_notice_for_an_instance_we_do_not_manage_is_ignored_with_a_reason() {
    let (mut w, mut planner) = running_one_job(spot("spot-a", 4, 5));
    planner.handle_interruption(
        w.now,
        InterruptionNotice::new(
            InstanceId::new("i-someone-else"),
            InterruptionKind::SpotInterruption,
            w.now,
        ),
    );
    let actions = w.step(&mut planner, 1);
    assert!(
        fences(&actions) == 0 && detaches(&actions) == 0 && World::scale_ups(&actions).is_empty(),
        "{actions:?}"
    );
    assert!(w.events.iter().any(|e| matches!(e, PlannerEvent::InterruptionIgnored { instance, .. } if instance.as_str() == "i-someone-else")));
    // A node whose instance belongs to no managed group (another autoscaler's) too.
    w.nodes[0].group = None;
    let instance = w.nodes[0].instance.clone().unwrap();
    w.groups[0].instances.clear();
    planner.handle_interruption(
        w.now,
        InterruptionNotice::new(instance, InterruptionKind::SpotInterruption, w.now),
    );
    let actions = w.step(&mut planner, 1);
    assert!(
        fences(&actions) == 0 && detaches(&actions) == 0,
        "{actions:?}"
    );
}

#[test]
fn with_interruption_handling_off_a_notice_changes_nothing() {
    let mut g = spot("spot-a", 4, 5);
    g.target = 0;
    let mut w = World::new(vec![g]);
    w.settings = PlannerSettings {
        interruption_handling: false,
        ..quick_scale_down()
    };
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("work-0", 3000, 4));
    w.step(&mut planner, 1);
    w.register_all();
    w.schedule();
    w.step(&mut planner, 10);
    planner.handle_interruption(w.now, notice(&w, InterruptionKind::SpotInterruption));
    let actions = w.step(&mut planner, 1);
    assert!(
        fences(&actions) == 0 && detaches(&actions) == 0 && World::scale_ups(&actions).is_empty(),
        "{actions:?}"
    );
    assert!(w
        .events
        .iter()
        .any(|e| matches!(e, PlannerEvent::InterruptionIgnored { .. })));
}

#[test]
fn a_state_change_fences_and_leaves_the_replacement_to_the_group() {
    let (mut w, mut planner) = running_one_job(spot("spot-a", 4, 5));
    let mut n = notice(&w, InterruptionKind::StateChange);
    n.detail = "shutting-down".into();
    planner.handle_interruption(w.now, n);
    let actions = w.step(&mut planner, 1);
    assert_eq!(fences(&actions), 1);
    assert!(
        detaches(&actions) == 0 && World::scale_ups(&actions).is_empty(),
        "{actions:?}"
    );
}

#[test]
fn a_scheduled_retirement_takes_no_new_work_and_the_node_goes_once_its_pods_are_done() {
    let (mut w, mut planner) = running_one_job(group("od", "us-west-2", "us-west-2a", 4, 16, 0, 5));
    let mut n = notice(&w, InterruptionKind::ScheduledChange);
    n.detail = "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED".into();
    n.deadline = Some(w.now + Duration::from_secs(7 * 24 * 3600));
    planner.handle_interruption(w.now, n);
    let actions = w.step(&mut planner, 1);
    assert_eq!(fences(&actions), 1);
    assert!(
        World::scale_ups(&actions).is_empty(),
        "nothing bought ahead: {actions:?}"
    );
    // Runs to completion, then the node goes the ordinary, verified way.
    for _ in 0..3 {
        let actions = w.step(&mut planner, 60);
        assert!(
            World::terminations(&actions).is_empty(),
            "not while its pod runs"
        );
    }
    w.finish("work-0");
    let mut terminated = vec![];
    for _ in 0..10 {
        terminated.extend(World::terminations(&w.step(&mut planner, 30)));
    }
    assert_eq!(terminated.len(), 1, "{:?}", w.actions);
}

#[test]
fn a_pod_on_an_interrupted_node_with_room_elsewhere_buys_nothing() {
    // Two nodes, each with room for the other's pod: the doomed node's pod is booked on
    // the survivor.
    let mut w = World::new(vec![spot("spot-a", 8, 5)]);
    w.settings = quick_scale_down();
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("a", 6000, 4));
    w.pods.push(job_pod("b", 6000, 4));
    w.step(&mut planner, 1);
    w.register_all();
    w.schedule();
    w.finish("b");
    w.pods.retain(|p| p.key.name != "b");
    w.pods.push(job_pod("small", 1000, 1));
    w.schedule();
    w.step(&mut planner, 10);
    let doomed = w
        .nodes
        .iter()
        .position(|n| {
            w.pods
                .iter()
                .any(|p| p.key.name == "small" && p.node.as_ref() == Some(&n.name))
        })
        .unwrap();
    let instance = w.nodes[doomed].instance.clone().unwrap();
    planner.handle_interruption(
        w.now,
        InterruptionNotice::new(instance, InterruptionKind::SpotInterruption, w.now),
    );
    let actions = w.step(&mut planner, 1);
    assert_eq!(detaches(&actions), 1);
    assert!(
        World::scale_ups(&actions).is_empty(),
        "the survivor has room: {actions:?}"
    );
}

#[test]
fn a_warning_for_an_instance_still_launching_is_left_to_its_group() {
    let mut w = World::new(vec![spot("spot-a", 4, 5)]);
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("work-0", 3000, 4));
    let actions = w.step(&mut planner, 1);
    assert_eq!(World::scale_ups(&actions).len(), 1);
    let instance = w.groups[0].instances[0].id.clone();
    assert_eq!(w.groups[0].instances[0].state, InstanceState::Pending);
    planner.handle_interruption(
        w.now,
        InterruptionNotice::new(instance, InterruptionKind::SpotInterruption, w.now),
    );
    let actions = w.step(&mut planner, 1);
    assert_eq!(
        detaches(&actions),
        0,
        "AWS detaches only InService instances: {actions:?}"
    );
    assert!(World::scale_ups(&actions).is_empty(), "{actions:?}");
    assert!(
        matches!(
            responses(&w).as_slice(),
            [InterruptionResponse::Fence { .. }]
        ),
        "{:?}",
        w.events
    );
}

/// Found end to end: the replacement registered (not Ready yet, so with the startup
/// taint) and was marked idle before the booking held it; once EC2 took the old
/// instance, the idle time already spent made it removable before the Job's retry pod
/// (10 s later) arrived, and a second node had to be bought.
#[test]
fn the_replacement_is_not_removed_while_the_killed_pods_retry_is_on_its_way() {
    let (mut w, mut planner) = running_one_job(spot("spot-a", 4, 5));
    let warned = notice(&w, InterruptionKind::SpotInterruption);
    let doomed = warned.instance.clone();
    planner.handle_interruption(w.now, warned);
    w.step(&mut planner, 1);
    // The replacement registers, not Ready yet, with the lifecycle controller's taint.
    w.register_all();
    let fresh = w
        .nodes
        .iter()
        .position(|n| n.instance.as_ref() != Some(&doomed))
        .unwrap();
    w.nodes[fresh].ready = false;
    w.nodes[fresh].taints.push(Taint::new(
        "node.kubernetes.io/not-ready",
        "",
        TaintEffect::NoSchedule,
    ));
    let actions = w.step(&mut planner, 1);
    assert!(World::scale_ups(&actions).is_empty(), "{actions:?}");
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::MarkIdle { since: Some(_), .. })),
        "the booked replacement is not idle: {actions:?}"
    );
    w.nodes[fresh].ready = true;
    w.nodes[fresh].taints.clear();
    let fresh_name = w.nodes[fresh].name.clone();
    for _ in 0..3 {
        let actions = w.step(&mut planner, 60);
        assert!(
            !actions.iter().any(|a| matches!(
                a,
                Action::MarkIdle { since: Some(_), .. } | Action::VerifyRemoval { .. }
            )),
            "{actions:?}"
        );
    }
    // EC2 takes the instance; the Job's retry comes after its backoff.
    reclaim(&mut w, &doomed, "work-0-retry");
    let retry = w.pods.pop().unwrap();
    let actions = w.step(&mut planner, 10);
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::RetireNode { .. }
                | Action::VerifyRemoval { .. }
                | Action::TerminateInstance { .. }
        )),
        "{actions:?}"
    );
    w.pods.push(retry);
    let actions = w.step(&mut planner, 10);
    assert!(
        World::scale_ups(&actions).is_empty(),
        "bought once: {actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::RetireNode { .. } | Action::VerifyRemoval { .. })),
        "{actions:?}"
    );
    w.schedule();
    assert!(w
        .pods
        .iter()
        .any(|p| p.key.name == "work-0-retry" && p.node.as_ref() == Some(&fresh_name)));
}

/// A world with three nodes of `spot-a` (4 vCPU, zones a and b; the three in zone a),
/// each running one Job pod of 1.5 vCPU: once their pool (zone a) is backed off for
/// the interruptions, their pods fit on two new nodes of zone b, so a scale-up planned
/// on the group minus all three asks for fewer instances than run until the detaches
/// have succeeded.
fn three_half_empty_spot_nodes() -> (World, Planner) {
    let mut g = spot("spot-a", 4, 10);
    g.spec.zones.push(Zone::new("us-west-2b"));
    let mut w = World::new(vec![g]);
    w.settings = quick_scale_down();
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    for i in 0..3 {
        w.pods.push(job_pod(&format!("big-{i}"), 3000, 4));
    }
    w.step(&mut planner, 1);
    w.register_all();
    w.schedule();
    // Each big pod is followed on its node by a small one.
    for i in 0..3 {
        let node = w.pods[i].node.clone().expect("scheduled");
        w.finish(&format!("big-{i}"));
        let mut small = job_pod(&format!("small-{i}"), 1500, 2);
        small.node = Some(node);
        small.phase = PodPhase::Running;
        small.started = Some(w.now);
        small.unschedulable = false;
        w.pods.push(small);
    }
    w.pods.retain(|p| p.phase != PodPhase::Succeeded);
    w.step(&mut planner, 10);
    assert_eq!(w.nodes.len(), 3);
    (w, planner)
}

fn warn_all(w: &World, planner: &mut Planner) {
    for n in &w.nodes {
        let mut notice = InterruptionNotice::new(
            n.instance.clone().expect("instance"),
            InterruptionKind::SpotInterruption,
            w.now,
        );
        notice.detail = "terminate".into();
        notice.deadline = Some(w.now + Duration::from_secs(120));
        planner.handle_interruption(w.now, notice);
    }
}

/// Issue 20, path 1. A spot storm (three warnings for one group in one pass) in which
/// every DetachInstance is throttled: the scale-up that counted on the detaches is not
/// sent, so the desired capacity never goes below the running instances (the world
/// asserts it on every SetTargetSize: AWS would pick the victims), on this pass or
/// the next ones; once the detaches go through, the pods' replacements are bought.
#[test]
fn a_spot_storm_whose_detaches_are_throttled_never_sets_desired_below_the_running_instances() {
    let (mut w, mut planner) = three_half_empty_spot_nodes();
    warn_all(&w, &mut planner);
    w.throttled = vec!["DetachInstance"];
    for _ in 0..3 {
        let actions = w.step(&mut planner, 5);
        assert_eq!(detaches(&actions), 3, "{actions:?}");
        assert_eq!(w.group_mut("spot-a").target, 3, "{actions:?}");
        assert_eq!(w.group_mut("spot-a").instances.len(), 3);
    }
    w.throttled.clear();
    let actions = w.step(&mut planner, 5);
    assert_eq!(detaches(&actions), 3, "{actions:?}");
    // Detached (3 -> 0), then two nodes for the three pods.
    assert_eq!(
        World::scale_ups(&actions),
        vec![("spot-a".to_owned(), 0, 2)]
    );
    assert_eq!(w.group_mut("spot-a").target, 2);
}

/// Issue 20, path 1. After a detach AWS still lists the instance (`Detaching`) in the
/// group for a while, with the desired capacity already lowered: the next pass does not
/// subtract it a second time.
#[test]
fn a_detached_instance_still_listed_as_detaching_is_not_subtracted_twice() {
    let (mut w, mut planner) = three_half_empty_spot_nodes();
    warn_all(&w, &mut planner);
    let listed: Vec<InstanceView> = w.group_mut("spot-a").instances.clone();
    let actions = w.step(&mut planner, 5);
    assert_eq!(detaches(&actions), 3, "{actions:?}");
    assert_eq!(w.group_mut("spot-a").target, 2);
    // AWS lists the three as Detaching; the two new ones launch.
    for mut i in listed {
        i.state = InstanceState::Terminating;
        w.group_mut("spot-a").instances.push(i);
    }
    for _ in 0..3 {
        let actions = w.step(&mut planner, 5);
        assert!(
            World::scale_ups(&actions).is_empty()
                && !actions
                    .iter()
                    .any(|a| matches!(a, Action::SetTargetSize { .. })),
            "nothing more to buy or give back: {actions:?}"
        );
        assert_eq!(w.group_mut("spot-a").target, 2);
    }
}

/// Issue 20, path 6. A spot warning for an instance whose removal has begun (its empty
/// node fenced, the verification still to come) is not detached: the removal's
/// TerminateInstance takes it off the desired capacity already, and a detach on top
/// would count it twice (one node bought too many, then a terminate that fails as not
/// owned and pauses scale-down).
#[test]
fn a_warning_for_an_instance_being_removed_is_left_to_its_removal() {
    let mut g = spot("spot-a", 4, 5);
    g.spec.zones.push(Zone::new("us-west-2b"));
    let mut w = World::new(vec![g]);
    w.settings = PlannerSettings {
        fence_settle_time: Duration::from_secs(60),
        ..quick_scale_down()
    };
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("work-0", 3000, 4));
    w.pods.push(job_pod("work-1", 3000, 4));
    w.step(&mut planner, 1);
    w.register_all();
    w.schedule();
    w.step(&mut planner, 10);
    // work-0 ends; its node empties and its removal begins (fenced, settling).
    w.finish("work-0");
    w.pods.retain(|p| p.phase != PodPhase::Succeeded);
    let mut fenced = None;
    for _ in 0..5 {
        let actions = w.step(&mut planner, 30);
        if let Some(Action::RetireNode { node, .. }) = actions
            .iter()
            .find(|a| matches!(a, Action::RetireNode { .. }))
        {
            fenced = Some(node.clone());
            break;
        }
    }
    let fenced = fenced.expect("the empty node is fenced for removal");
    let instance = w
        .nodes
        .iter()
        .find(|n| n.name == fenced)
        .and_then(|n| n.instance.clone())
        .expect("instance");
    let mut warned =
        InterruptionNotice::new(instance.clone(), InterruptionKind::SpotInterruption, w.now);
    warned.detail = "terminate".into();
    warned.deadline = Some(w.now + Duration::from_secs(120));
    planner.handle_interruption(w.now, warned);
    let mut all = Vec::new();
    for _ in 0..4 {
        all.extend(w.step(&mut planner, 30));
    }
    assert_eq!(detaches(&all), 0, "{all:?}");
    assert_eq!(World::scale_ups(&all), vec![], "nothing to buy: {all:?}");
    assert_eq!(World::terminations(&all), vec![instance.to_string()]);
    assert_eq!(w.group_mut("spot-a").target, 1);
}

/// Issue 20, path 6. A scale-up the cloud does not show yet (its describe lags) is
/// remembered as a target request; a detach in the next pass lowers that request too.
/// Otherwise the planner counts the detached instance as still coming: the interrupted
/// node's pod waits for a node nobody asked for, and the next request counts from a
/// target one too high.
#[test]
fn a_detach_lowers_a_target_request_the_cloud_does_not_show_yet() {
    let mut g = spot("spot-a", 4, 5);
    g.spec.zones.push(Zone::new("us-west-2b"));
    let (mut w, mut planner) = running_one_job(g);
    // A second Job pod: one more node asked for (1 -> 2)...
    w.pods.push(job_pod("other", 3000, 4));
    let actions = w.step(&mut planner, 1);
    assert_eq!(
        World::scale_ups(&actions),
        vec![("spot-a".to_owned(), 1, 2)],
        "{actions:?} {:?}",
        w.events
    );
    // ...which the next describe does not show yet.
    let g = w.group_mut("spot-a");
    g.target = 1;
    g.instances.truncate(1);
    let warned = notice(&w, InterruptionKind::SpotInterruption);
    planner.handle_interruption(w.now, warned);
    let actions = w.step(&mut planner, 1);
    assert_eq!(detaches(&actions), 1, "{actions:?}");
    // The pending request (2) minus the detached instance, plus one for its pod.
    assert_eq!(
        World::scale_ups(&actions),
        vec![("spot-a".to_owned(), 1, 2)],
        "{actions:?}"
    );
}

/// Issue 20, path 4. A rebalance recommendation is often never followed by an
/// interruption. The node fenced for it (its Job's pod must finish) is not held out of
/// scale-down for ever: once its work has ended it is removed the ordinary, verified
/// way.
#[test]
fn a_node_fenced_for_a_rebalance_recommendation_goes_the_ordinary_way_once_its_work_ends() {
    let (mut w, mut planner) = running_one_job(spot("spot-a", 4, 5));
    let instance = w.nodes[0].instance.clone().expect("instance");
    planner.handle_interruption(w.now, notice(&w, InterruptionKind::RebalanceRecommendation));
    let actions = w.step(&mut planner, 1);
    assert_eq!(fences(&actions), 1, "{actions:?}");
    w.register_all();
    w.step(&mut planner, 30);
    // No interruption comes; the Job's pod ends.
    w.finish("work-0");
    let mut all = Vec::new();
    for _ in 0..10 {
        all.extend(w.step(&mut planner, 30));
    }
    assert!(
        World::terminations(&all).contains(&instance.to_string()),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|a| matches!(a, Action::VerifyRemoval { instance: i, .. } if i == &instance)),
        "verified before it went: {all:?}"
    );
}

/// Issue 20, path 4. A rebalance recommendation expires: the same recommendation sent
/// again hours later is decided afresh (a recommendation kept for ever would swallow
/// it).
#[test]
fn a_rebalance_recommendation_expires() {
    let (mut w, mut planner) = running_one_job(spot("spot-a", 4, 5));
    planner.handle_interruption(w.now, notice(&w, InterruptionKind::RebalanceRecommendation));
    w.step(&mut planner, 1);
    w.register_all();
    for _ in 0..30 {
        w.step(&mut planner, 300);
    }
    let decided = |w: &World| {
        w.events
            .iter()
            .filter(|e| matches!(e, PlannerEvent::InstanceInterrupted { .. }))
            .count()
    };
    assert_eq!(decided(&w), 1);
    planner.handle_interruption(w.now, notice(&w, InterruptionKind::RebalanceRecommendation));
    w.step(&mut planner, 1);
    assert_eq!(decided(&w), 2, "decided afresh: {:?}", w.events);
}
