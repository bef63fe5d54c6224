//! ProvisioningRequests (Kueue's way of asking for capacity) and the gang markers of
//! the batch ecosystem, on the planner alone.

mod common;

use common::*;
use model::*;
use planner::provreq::reason;
use planner::{Action, Planner, PlannerEvent, PlannerSettings, TerminateReason};
use std::time::Duration;

const NS: &str = "batch";

fn request(
    w: &World,
    name: &str,
    class: &str,
    count: usize,
    cpu_millis: i64,
) -> ProvisioningRequestView {
    let pods = (0..count)
        .map(|i| {
            PodView::new(
                PodKey::new(NS, format!("0-{i}")),
                Resources::cpu_mem(cpu_millis, 4 << 30),
                Owner::Bare,
                Time::ZERO,
            )
        })
        .collect();
    ProvisioningRequestView {
        key: PodKey::new(NS, name),
        class: ProvisioningClass::parse(class),
        pods,
        created: w.now,
        no_retry: false,
        conditions: vec![],
        problem: None,
    }
}

fn consumer(name: &str, request: &str, cpu_millis: i64) -> PodView {
    let mut p = job_pod(name, cpu_millis, 4);
    p.consumes_request = Some(request.to_owned());
    p
}

fn condition<'a>(w: &'a World, name: &str, kind: ConditionType) -> Option<&'a RequestCondition> {
    w.requests
        .iter()
        .find(|r| r.key.name == name)?
        .condition(kind)
}

fn is(w: &World, name: &str, kind: ConditionType) -> bool {
    condition(w, name, kind).is_some_and(|c| c.status)
}

fn removals(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::RetireNode { .. }
                    | Action::VerifyRemoval { .. }
                    | Action::TerminateInstance { .. }
            )
        })
        .count()
}

fn quick_scale_down() -> PlannerSettings {
    PlannerSettings {
        scale_down_unneeded_time: Duration::from_secs(60).into(),
        ..settings()
    }
}

fn big() -> NodeGroupState {
    group("big", "us-west-2", "us-west-2a", 16, 64, 0, 10)
}

#[test]
fn an_atomic_request_is_provisioned_once_its_nodes_registered_and_its_pods_buy_nothing_more() {
    let mut w = World::new(vec![big()]);
    w.settings = quick_scale_down();
    // 8 pods of 3.5 vCPU: four per 16-vCPU node, two nodes.
    w.requests.push(request(
        &w,
        "train",
        model::provreq::CLASS_BEST_EFFORT_ATOMIC,
        8,
        3500,
    ));
    let mut p = Planner::new(w.settings.clone()).unwrap();
    let acts = w.step(&mut p, 10);
    assert_eq!(
        World::scale_ups(&acts),
        vec![("big".to_owned(), 0, 2)],
        "{acts:?}"
    );
    assert!(is(&w, "train", ConditionType::Accepted));
    assert!(
        !is(&w, "train", ConditionType::Provisioned),
        "provisioned when the nodes were only asked for"
    );
    assert!(w.events.iter().any(|e| matches!(e, PlannerEvent::ProvisioningRequestScaleUp { group, .. } if group.as_str() == "big")));
    // While the nodes boot: nothing more is bought, still not provisioned.
    let acts = w.step(&mut p, 30);
    assert!(World::scale_ups(&acts).is_empty(), "{acts:?}");
    assert!(!is(&w, "train", ConditionType::Provisioned));
    // Registered: provisioned.
    w.register_all();
    w.step(&mut p, 10);
    let c = condition(&w, "train", ConditionType::Provisioned).expect("Provisioned condition");
    assert!(
        c.status && c.reason == reason::CAPACITY_IS_PROVISIONED,
        "{c:?}"
    );
    // The queue admits the workload: its pods consume the booking and buy nothing.
    for i in 0..8 {
        w.pods.push(consumer(&format!("train-{i}"), "train", 3500));
    }
    // The booked nodes are empty for minutes: never retired or removed meanwhile.
    for _ in 0..8 {
        let acts = w.step(&mut p, 60);
        assert!(
            World::scale_ups(&acts).is_empty(),
            "a consumer of the booking triggered a scale-up: {acts:?}"
        );
        assert_eq!(
            removals(&acts),
            0,
            "a booked node was scaled down: {acts:?}"
        );
    }
    // The pods land: the booking is consumed.
    w.schedule();
    assert!(
        w.pods.iter().all(|p| p.node.is_some()),
        "the booked room holds every consumer"
    );
    w.step(&mut p, 10);
    let c = condition(&w, "train", ConditionType::BookingExpired).expect("BookingExpired");
    assert!(c.status && c.reason == reason::BOOKING_CONSUMED, "{c:?}");
}

#[test]
fn check_capacity_answers_from_the_nodes_there_are_and_books_what_it_found() {
    let mut w = World::new(vec![big()]);
    w.group_mut("big").target = 1;
    let mut p = Planner::new(w.settings.clone()).unwrap();
    w.step(&mut p, 1);
    // One registered node: room for four 3.5-vCPU pods.
    w.groups[0].instances.push(InstanceView {
        id: InstanceId::new("i-a"),
        zone: Zone::new("us-west-2a"),
        state: InstanceState::InService,
        launched_at: w.now,
    });
    w.register_all();
    w.requests.push(request(
        &w,
        "fits",
        model::provreq::CLASS_CHECK_CAPACITY,
        4,
        3500,
    ));
    let acts = w.step(&mut p, 10);
    assert!(
        World::scale_ups(&acts).is_empty(),
        "check-capacity never buys: {acts:?}"
    );
    let c = condition(&w, "fits", ConditionType::Provisioned).expect("Provisioned");
    assert!(c.status && c.reason == reason::CAPACITY_IS_FOUND, "{c:?}");
    // The room is booked: an ordinary pod that needs it gets a node of its own.
    w.pods.push(job_pod("other", 3500, 4));
    let acts = w.step(&mut p, 10);
    assert_eq!(
        World::scale_ups(&acts),
        vec![("big".to_owned(), 1, 2)],
        "the booking was not respected: {acts:?}"
    );
    // A second request finds no room left: not provisioned, and no scale-up.
    w.requests.push(request(
        &w,
        "full",
        model::provreq::CLASS_CHECK_CAPACITY,
        4,
        3500,
    ));
    let acts = w.step(&mut p, 10);
    assert!(World::scale_ups(&acts).is_empty(), "{acts:?}");
    let c = condition(&w, "full", ConditionType::Provisioned).expect("Provisioned=False");
    assert!(
        !c.status && c.reason == reason::CAPACITY_IS_NOT_FOUND,
        "{c:?}"
    );
    assert!(!is(&w, "full", ConditionType::Failed));
    // With noRetry it fails for good instead.
    let mut once = request(&w, "once", model::provreq::CLASS_CHECK_CAPACITY, 4, 3500);
    once.no_retry = true;
    w.requests.push(once);
    w.step(&mut p, 10);
    let c = condition(&w, "once", ConditionType::Failed).expect("Failed");
    assert!(
        c.status && c.reason == reason::CAPACITY_IS_NOT_FOUND,
        "{c:?}"
    );
}

#[test]
fn an_atomic_request_no_group_can_hold_fails_with_the_reason_per_group() {
    let mut w = World::new(vec![group("small", "us-west-2", "us-west-2a", 4, 16, 0, 2)]);
    // 8 pods of 3.5 vCPU: one per node, eight nodes; the group stops at two.
    w.requests.push(request(
        &w,
        "huge",
        model::provreq::CLASS_BEST_EFFORT_ATOMIC,
        8,
        3500,
    ));
    let mut p = Planner::new(w.settings.clone()).unwrap();
    let acts = w.step(&mut p, 10);
    assert!(
        World::scale_ups(&acts).is_empty(),
        "part of an atomic request was bought: {acts:?}"
    );
    let c = condition(&w, "huge", ConditionType::Failed).expect("Failed");
    assert!(
        c.status && c.reason == reason::NOT_PROVISIONABLE && c.message.contains("small"),
        "{c:?}"
    );
    // Failed is final: later passes send nothing (no retry storm).
    for _ in 0..5 {
        let acts = w.step(&mut p, 60);
        assert!(
            acts.iter().all(|a| !matches!(
                a,
                Action::UpdateProvisioningRequest { .. } | Action::SetTargetSize { .. }
            )),
            "{acts:?}"
        );
    }
}

#[test]
fn a_partial_atomic_launch_is_rolled_back_through_the_fence_and_the_request_fails() {
    let mut w = World::new(vec![big()]);
    w.requests.push(request(
        &w,
        "train",
        model::provreq::CLASS_BEST_EFFORT_ATOMIC,
        8,
        3500,
    ));
    let mut p = Planner::new(w.settings.clone()).unwrap();
    assert_eq!(
        World::scale_ups(&w.step(&mut p, 10)),
        vec![("big".to_owned(), 0, 2)]
    );
    // Only one of the two nodes ever comes.
    w.group_mut("big").instances.truncate(1);
    w.register_all();
    let mut acts = Vec::new();
    for _ in 0..15 {
        acts.extend(w.step(&mut p, 60));
    }
    let c = condition(&w, "train", ConditionType::Failed).expect("Failed after the gang window");
    assert!(c.status && c.reason == reason::SCALE_UP_FAILED, "{c:?}");
    assert!(!is(&w, "train", ConditionType::Provisioned));
    // The node that came was fenced, verified, then terminated: nothing left billing.
    let order: Vec<&str> = acts
        .iter()
        .filter_map(|a| match a {
            Action::RetireNode { .. } => Some("fence"),
            Action::VerifyRemoval {
                reason: TerminateReason::GangRollback,
                ..
            } => Some("verify"),
            Action::TerminateInstance {
                reason: TerminateReason::GangRollback,
                ..
            } => Some("terminate"),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec!["fence", "verify", "terminate"], "{acts:?}");
    assert!(
        w.groups[0].instances.is_empty() && w.groups[0].target == 0,
        "left billing: {:?}",
        w.groups[0]
    );
}

#[test]
fn an_unconsumed_booking_expires_and_its_nodes_are_then_scaled_down() {
    let mut w = World::new(vec![big()]);
    w.settings = quick_scale_down();
    w.requests.push(request(
        &w,
        "train",
        model::provreq::CLASS_BEST_EFFORT_ATOMIC,
        4,
        3500,
    ));
    let mut p = Planner::new(w.settings.clone()).unwrap();
    w.step(&mut p, 10);
    w.register_all();
    w.step(&mut p, 10);
    assert!(is(&w, "train", ConditionType::Provisioned));
    let mut before = Vec::new();
    for _ in 0..9 {
        before.extend(w.step(&mut p, 60));
    }
    assert_eq!(
        removals(&before),
        0,
        "a booked node was scaled down during the booking: {before:?}"
    );
    assert!(!is(&w, "train", ConditionType::BookingExpired));
    w.step(&mut p, 60);
    let c =
        condition(&w, "train", ConditionType::BookingExpired).expect("BookingExpired after 10m");
    assert!(
        c.status && c.reason == reason::BOOKING_TIME_EXPIRED,
        "{c:?}"
    );
    let mut after = Vec::new();
    for _ in 0..5 {
        after.extend(w.step(&mut p, 60));
    }
    assert_eq!(
        World::terminations(&after).len(),
        1,
        "the idle node went once the booking ended: {after:?}"
    );
}

#[test]
fn bad_requests_get_a_condition_that_says_why_and_nothing_else() {
    let mut w = World::new(vec![big()]);
    let mut missing = request(
        &w,
        "missing",
        model::provreq::CLASS_BEST_EFFORT_ATOMIC,
        0,
        1000,
    );
    missing.problem = Some(RequestProblem::MissingPodTemplate { name: "tpl".into() });
    let mut zero = request(
        &w,
        "zero",
        model::provreq::CLASS_BEST_EFFORT_ATOMIC,
        0,
        1000,
    );
    zero.problem = Some(RequestProblem::Invalid {
        message: "podSets[0].count: must be at least 1, got 0".into(),
    });
    let unknown = request(&w, "unknown", "magic.autoscaling.x-k8s.io", 2, 1000);
    let foreign = request(&w, "foreign", "queued-provisioning.gke.io", 2, 1000);
    w.requests.extend([missing, zero, unknown, foreign]);
    let mut p = Planner::new(w.settings.clone()).unwrap();
    let acts = w.step(&mut p, 1);
    assert!(World::scale_ups(&acts).is_empty(), "{acts:?}");
    let c = condition(&w, "zero", ConditionType::Failed).expect("zero fails");
    assert!(
        c.reason == reason::INVALID && c.message.contains("podSets[0].count"),
        "{c:?}"
    );
    let c = condition(&w, "unknown", ConditionType::Failed).expect("unknown class fails");
    assert!(
        c.reason == reason::UNSUPPORTED_CLASS && c.message.contains("magic.autoscaling.x-k8s.io"),
        "{c:?}"
    );
    // Another provisioner's class: left alone, said once.
    assert!(w
        .requests
        .iter()
        .find(|r| r.key.name == "foreign")
        .unwrap()
        .conditions
        .is_empty());
    // A missing template may still arrive: failed only after the grace.
    assert!(condition(&w, "missing", ConditionType::Failed).is_none());
    w.step(&mut p, 40);
    let c = condition(&w, "missing", ConditionType::Failed)
        .expect("missing template fails after the grace");
    assert!(
        c.reason == reason::POD_TEMPLATE_NOT_FOUND && c.message.contains("tpl"),
        "{c:?}"
    );
    // And then nothing more, however long.
    for _ in 0..5 {
        let acts = w.step(&mut p, 60);
        assert!(
            acts.iter()
                .all(|a| !matches!(a, Action::UpdateProvisioningRequest { .. })),
            "{acts:?}"
        );
    }
    let ignored = w
        .events
        .iter()
        .filter(|e| matches!(e, PlannerEvent::ProvisioningRequestIgnored { .. }))
        .count();
    assert_eq!(ignored, 1);
}

#[test]
fn an_incomplete_gang_buys_nothing_until_its_marker_count_is_there() {
    for source in [
        GangSource::Annotation,
        GangSource::KueuePodGroup,
        GangSource::Coscheduling,
        GangSource::Volcano,
        GangSource::WorkloadApi,
    ] {
        incomplete_gang_of(source);
    }
}

fn incomplete_gang_of(source: GangSource) {
    let mut w = World::new(vec![big()]);
    let member = |i: usize| {
        let mut p = job_pod(&format!("w-{i}"), 9000, 8);
        p.gang = Some(GangMembership {
            gang: GangId::new("batch/ring"),
            size: 4,
            source,
        });
        p
    };
    w.pods.extend((0..2).map(member));
    let mut p = Planner::new(w.settings.clone()).unwrap();
    for _ in 0..3 {
        let acts = w.step(&mut p, 10);
        assert!(
            World::scale_ups(&acts).is_empty(),
            "{source:?}: bought for half a gang: {acts:?}"
        );
    }
    let told: Vec<_> = w
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                PlannerEvent::GangIncomplete {
                    present: 2,
                    size: 4,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(told.len(), 1, "{source:?}: said once: {:?}", w.events);
    w.pods.extend((2..4).map(member));
    let acts = w.step(&mut p, 10);
    assert_eq!(
        World::scale_ups(&acts),
        vec![("big".to_owned(), 0, 4)],
        "{source:?}: {acts:?}"
    );
}

#[test]
fn a_failed_atomic_launch_fails_the_request_and_buys_nothing_elsewhere_for_it() {
    // The preferred group (primary region) cannot deliver; the other one could.
    let mut w = World::new(vec![
        big(),
        group("other", "us-east-1", "us-east-1a", 16, 64, 0, 10),
    ]);
    w.requests.push(request(
        &w,
        "train",
        model::provreq::CLASS_BEST_EFFORT_ATOMIC,
        8,
        3500,
    ));
    let mut p = Planner::new(w.settings.clone()).unwrap();
    assert_eq!(
        World::scale_ups(&w.step(&mut p, 10)),
        vec![("big".to_owned(), 0, 2)]
    );
    w.group_mut("big").instances.clear();
    p.handle_launch_failure(
        w.now,
        LaunchFailure {
            group: NodeGroupId::new("big"),
            zone: None,
            kind: LaunchFailureKind::InsufficientCapacity,
            count: 2,
            message: "ICE".into(),
            at: w.now,
        },
    );
    let mut acts = Vec::new();
    for _ in 0..5 {
        acts.extend(w.step(&mut p, 10));
    }
    let c = condition(&w, "train", ConditionType::Failed).expect("Failed after the launch failed");
    assert!(c.status && c.reason == reason::SCALE_UP_FAILED, "{c:?}");
    // The queue retries with a new request; this one buys nothing more anywhere.
    assert!(
        World::scale_ups(&acts).is_empty(),
        "bought for a request that failed: {acts:?}"
    );
    assert_eq!(w.groups[0].target, 0, "undelivered capacity given back");
}

#[test]
fn explain_says_why_a_request_is_not_provisioned_per_group() {
    let mut w = World::new(vec![group("small", "us-west-2", "us-west-2a", 4, 16, 0, 2)]);
    w.requests.push(request(
        &w,
        "huge",
        model::provreq::CLASS_BEST_EFFORT_ATOMIC,
        8,
        3500,
    ));
    let snapshot = w.snapshot();
    let answer = planner::explain_request(
        w.settings.clone(),
        w.now,
        &snapshot,
        &PodKey::new(NS, "huge"),
    )
    .unwrap();
    assert!(
        answer.found && answer.pods == 8 && answer.scale_up.is_none(),
        "{answer:?}"
    );
    let failed = answer
        .would_set
        .iter()
        .find(|(kind, ..)| *kind == ConditionType::Failed)
        .expect("would fail");
    assert_eq!(failed.2, reason::NOT_PROVISIONABLE);
    assert!(
        failed.3.contains("small:"),
        "the reason per group: {}",
        failed.3
    );
    // One that fits a group: the scale-up it would make.
    let mut w = World::new(vec![big()]);
    w.requests.push(request(
        &w,
        "train",
        model::provreq::CLASS_BEST_EFFORT_ATOMIC,
        8,
        3500,
    ));
    let snapshot = w.snapshot();
    let answer = planner::explain_request(
        w.settings.clone(),
        w.now,
        &snapshot,
        &PodKey::new(NS, "train"),
    )
    .unwrap();
    assert_eq!(
        answer.scale_up,
        Some((NodeGroupId::new("big"), 0, 2)),
        "{answer}"
    );
    assert!(
        !planner::explain_request(
            w.settings.clone(),
            w.now,
            &snapshot,
            &PodKey::new(NS, "nope")
        )
        .unwrap()
        .found
    );
}
