//! The driver against fake ports: what it calls, in which mode, and when.

mod common;

use common::*;
use driver::{
    Driver, DriverConfig, Evicted, Leadership, LoopOutcome, ManualClock, PassReport, PortError,
    TokioClock,
};
use model::*;
use planner::{Action, Outcome};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};

type TestDriver = Driver<FakeCloud, FakeCluster, FakeNotifier>;

fn driver(world: &World, notifier: FakeNotifier, dry_run: bool, clock: &ManualClock) -> TestDriver {
    let config = DriverConfig::new(dry_run, Duration::from_secs(10));
    Driver::new(
        config,
        settings(),
        world.ports(notifier),
        Arc::new(clock.clone()),
    )
    .unwrap()
}

/// Advances the clock by `secs` and runs one pass; returns its report.
async fn step(
    driver: &mut TestDriver,
    world: &World,
    clock: &ManualClock,
    secs: u64,
) -> PassReport {
    clock.advance(Duration::from_secs(secs));
    world.lock().now = clock_now(clock);
    match driver.run_once(clock_now(clock)).await {
        LoopOutcome::Pass(report) => report,
        other => panic!("expected a pass, got {other:?}"),
    }
}

fn clock_now(clock: &ManualClock) -> Time {
    driver::Clock::now(clock)
}

fn scale_ups(report: &PassReport) -> Vec<(String, u32)> {
    report
        .actions
        .iter()
        .filter_map(|r| match &r.action {
            Action::SetTargetSize { group, to, .. } => Some((group.to_string(), *to)),
            _ => None,
        })
        .collect()
}

fn cpu_world(n_pods: usize) -> World {
    let world = World::new(vec![group("cpu", 16, 64, 100)]);
    for i in 0..n_pods {
        world
            .lock()
            .pods
            .push(job_pod(&format!("p{i}"), "cpu", 3000, 4));
    }
    world
}

#[tokio::test]
async fn a_scale_up_pass_sets_the_planners_target() {
    let world = cpu_world(40);
    let clock = ManualClock::new(T0);
    let notifier = FakeNotifier::default();
    let mut driver = driver(&world, notifier.clone(), false, &clock);
    let report = step(&mut driver, &world, &clock, 0).await;

    // 16 vCPU nodes fit five 3-cpu pods each after the kubelet reserve: 8 nodes.
    assert_eq!(scale_ups(&report), vec![("cpu".to_owned(), 8)]);
    assert_eq!(
        world.calls_named("set_target_size"),
        vec!["set_target_size cpu 8"]
    );
    assert!(
        report.actions.iter().all(|r| r.outcome == Outcome::Done),
        "{report:?}"
    );
    // Backoffs are restored before the first snapshot; reads come before any action.
    let calls = world.calls();
    assert_eq!(
        &calls[..4],
        ["load_backoffs", "refresh", "launch_failures", "view"]
    );
    // Explanations are published, the status is written, Slack hears of the scale-up.
    assert_eq!(world.calls_named("publish").len(), 1);
    assert_eq!(world.calls_named("write_status").len(), 1);
    let status = world.lock().statuses[0].clone();
    assert_eq!(status.health, driver::ClusterHealth::Healthy);
    assert_eq!(status.pending_unschedulable_pods, 40);
    assert_eq!(status.last_scale_up, Some(T0));
    settle().await;
    assert_eq!(
        notifier.sent(),
        vec!["batch-autoscaler: scale-up of cpu 0 -> 8 for 40 pods"]
    );
    let metrics = driver.metrics().encode();
    assert!(
        metrics.contains(
            r#"batch_autoscaler_scale_up_nodes_total{group="cpu",reason="pending-pods"} 8"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("batch_autoscaler_pending_unschedulable_pods 40"),
        "{metrics}"
    );
    assert!(
        metrics.contains("batch_autoscaler_skipped_objects_total 1"),
        "{metrics}"
    );

    // Nodes boot: the next pass sees them and buys nothing more.
    world.register_and_schedule();
    let report = step(&mut driver, &world, &clock, 10).await;
    assert!(scale_ups(&report).is_empty(), "{report:?}");
    let metrics = driver.metrics().encode();
    assert!(
        metrics.contains(r#"batch_autoscaler_nodes{group="cpu",state="ready"} 8"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("batch_autoscaler_skipped_objects_total 1"),
        "a skipped object is counted once: {metrics}"
    );
}

#[tokio::test]
async fn dry_run_plans_and_logs_but_makes_no_mutating_call_and_sends_nothing() {
    let world = cpu_world(40);
    // An idle node of the group (for idle marks and scale-down) and a failed launch
    // (for a pool backoff to persist).
    {
        let mut s = world.lock();
        let mut node = NodeView::new(
            NodeName::new("idle-1"),
            s.groups[0].spec.shape.allocatable.clone(),
            Time::ZERO,
        );
        node.instance = Some(InstanceId::new("i-idle"));
        node.group = Some(NodeGroupId::new("cpu"));
        node.labels.insert("pool", "other");
        s.nodes.push(node);
        s.groups[0].target = 1;
        s.groups[0].instances.push(InstanceView {
            id: InstanceId::new("i-idle"),
            zone: Zone::new("us-west-2a"),
            state: InstanceState::InService,
            launched_at: Time::ZERO,
        });
        s.launch_failures.push(LaunchFailure {
            group: NodeGroupId::new("cpu"),
            zone: Some(Zone::new("us-west-2a")),
            kind: LaunchFailureKind::InsufficientCapacity,
            count: 0,
            message: "InsufficientInstanceCapacity".into(),
            at: T0,
        });
    }
    let clock = ManualClock::new(T0);
    let notifier = FakeNotifier::default();
    let mut driver = driver(&world, notifier.clone(), true, &clock);
    let mut kinds = std::collections::BTreeSet::new();
    let mut n_events = 0;
    for _ in 0..20 {
        let report = step(&mut driver, &world, &clock, 30).await;
        for record in &report.actions {
            match (&record.action, &record.outcome) {
                // Reading is harmless: a dry-run reads the evidence for real, with the
                // fence it did not write put on the node.
                (Action::VerifyRemoval { .. }, Outcome::Evidence(evidence)) => {
                    let node = evidence.node.as_ref().expect("the idle node");
                    assert!(
                        node.taints
                            .iter()
                            .any(|t| t.key == model::well_known::TAINT_RETIRING),
                        "the fence is assumed"
                    );
                }
                (action, outcome) => {
                    assert_eq!(*outcome, Outcome::Done, "dry-run reports {action} as done")
                }
            }
            kinds.insert(
                format!("{:?}", record.action)
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
        n_events += report.events.len();
    }
    settle().await;
    assert_eq!(
        world.mutating_calls(),
        Vec::<String>::new(),
        "dry-run made a mutating call"
    );
    assert_eq!(
        notifier.sent(),
        Vec::<String>::new(),
        "dry-run sent a notification"
    );
    // It still planned for real: the scale-up, the backoff and the idle node's fate.
    for kind in [
        "SetTargetSize",
        "PersistBackoff",
        "MarkIdle",
        "RetireNode",
        "VerifyRemoval",
        "TerminateInstance",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} planned in dry-run: {kinds:?}"
        );
    }
    assert!(n_events > 0);
    let status = driver.status().expect("status built");
    assert!(status.dry_run);
    // Reads did happen, every pass.
    assert_eq!(world.calls_named("refresh").len(), 20);
    assert_eq!(world.calls_named("view").len(), 20);
}

#[tokio::test]
async fn a_refused_eviction_is_reported_as_retry_and_reissued_on_the_next_pass() {
    // Two under-used service nodes: the planner merges them, evicting one's pods.
    let world = World::new(vec![group("cpu", 8, 32, 10)]);
    world.lock().pods.push(service_pod("api-1", "cpu", 6000, 1));
    world.lock().pods.push(service_pod("api-2", "cpu", 6000, 1));
    let clock = ManualClock::new(T0);
    let mut driver = driver(&world, FakeNotifier::default(), false, &clock);
    step(&mut driver, &world, &clock, 0).await;
    // One node per pod.
    world.register_and_schedule();
    {
        let mut s = world.lock();
        let nodes: Vec<NodeName> = s.nodes.iter().map(|n| n.name.clone()).collect();
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        for (pod, node) in s.pods.iter_mut().zip(&nodes) {
            pod.node = Some(node.clone());
            pod.requests.cpu_millis = 500;
        }
        s.eviction_answers.push_back(Evicted::Refused(
            "Cannot evict pod as it would violate the pod's disruption budget".into(),
        ));
    }
    let mut refused: Option<(PodKey, u64)> = None;
    for pass in 0..30u64 {
        let report = step(&mut driver, &world, &clock, 60).await;
        for record in &report.actions {
            if let Action::EvictPod { pod, .. } = &record.action {
                match &refused {
                    None => {
                        assert!(
                            matches!(&record.outcome, Outcome::Retry { message } if message.contains("disruption budget")),
                            "{record:?}"
                        );
                        refused = Some((pod.clone(), pass));
                    }
                    Some((first, at)) => {
                        assert_eq!(pod, first, "the refused pod is evicted again");
                        assert_eq!(pass, at + 1, "re-issued on the very next pass");
                        assert_eq!(record.outcome, Outcome::Done);
                        let evictions = world.calls_named("evict");
                        assert_eq!(
                            evictions,
                            vec![format!("evict {pod}"), format!("evict {pod}")]
                        );
                        let metrics = driver.metrics().encode();
                        assert!(
                            metrics.contains(
                                r#"batch_autoscaler_evictions_total{result="refused"} 1"#
                            ),
                            "{metrics}"
                        );
                        assert!(
                            metrics.contains(
                                r#"batch_autoscaler_evictions_total{result="evicted"} 1"#
                            ),
                            "{metrics}"
                        );
                        return;
                    }
                }
            }
        }
    }
    panic!("no eviction retried; calls: {:?}", world.calls());
}

#[tokio::test]
async fn losing_leadership_mid_pass_stops_actions_at_once() {
    // Two groups, each needed by its own pods: the pass plans two scale-ups.
    let world = World::new(vec![group("a", 16, 64, 10), group("b", 16, 64, 10)]);
    world.lock().pods.push(job_pod("pa", "a", 3000, 4));
    world.lock().pods.push(job_pod("pb", "b", 3000, 4));
    let (leader_tx, leader_rx) = watch::channel(Leadership::from(true));
    world.lock().lose_leadership_on_action = Some(leader_tx.clone());
    let clock = ManualClock::new(T0);
    let notifier = FakeNotifier::default();
    let mut driver = driver(&world, notifier.clone(), false, &clock);
    driver.set_leader(leader_rx);

    let report = step(&mut driver, &world, &clock, 0).await;
    assert!(report.leadership_lost);
    assert_eq!(
        report.actions.len(),
        1,
        "only the action under way when the lease went is done: {report:?}"
    );
    assert!(report.abandoned >= 1, "{report:?}");
    assert_eq!(world.calls_named("set_target_size").len(), 1);
    // Nothing published, no status written, no Slack once the lease is gone.
    assert!(world.calls_named("publish").is_empty());
    assert!(world.calls_named("write_status").is_empty());
    settle().await;
    assert!(notifier.sent().is_empty());

    // A follower does nothing at all, not even reads.
    let before = world.calls().len();
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        driver.run_once(clock_now(&clock)).await,
        LoopOutcome::NotLeader
    );
    assert_eq!(world.calls().len(), before);

    // Leading again: a fresh planner, backoffs reloaded, decisions taken anew.
    leader_tx.send_replace(true.into());
    let report = step(&mut driver, &world, &clock, 10).await;
    assert_eq!(world.calls_named("load_backoffs").len(), 2);
    assert!(!report.leadership_lost);
    assert_eq!(
        scale_ups(&report).len(),
        1,
        "the group not yet scaled is scaled now: {report:?}"
    );
}

#[tokio::test]
async fn a_cloud_refresh_error_backs_off_boundedly_and_the_loop_keeps_going() {
    let world = cpu_world(5);
    for _ in 0..10 {
        world
            .lock()
            .refresh_errors
            .push_back(PortError::retryable("throttling", "Rate exceeded"));
    }
    let clock = ManualClock::new(T0);
    let mut driver = driver(&world, FakeNotifier::default(), false, &clock);
    let mut waits = Vec::new();
    for _ in 0..10 {
        match driver.run_once(clock_now(&clock)).await {
            LoopOutcome::CloudUnavailable { retry_in, error } => {
                assert_eq!(error.label, "throttling");
                waits.push(retry_in.as_secs());
                clock.advance(retry_in);
            }
            other => panic!("expected the cloud to be unavailable, got {other:?}"),
        }
    }
    assert_eq!(
        waits,
        [1, 2, 4, 8, 16, 32, 64, 120, 120, 120],
        "bounded by max-error-backoff"
    );
    assert!(
        world.calls_named("set_target_size").is_empty(),
        "no planning without the cloud"
    );
    let status = world.lock().statuses.last().cloned().unwrap();
    assert!(
        matches!(
            status.health,
            driver::ClusterHealth::CloudUnavailable { .. }
        ),
        "{status:?}"
    );
    let metrics = driver.metrics().encode();
    assert!(
        metrics.contains(r#"batch_autoscaler_api_errors_total{kind="throttling"} 10"#),
        "{metrics}"
    );
    // The cloud is back: planning resumes and the backoff starts over.
    let report = step(&mut driver, &world, &clock, 0).await;
    assert_eq!(scale_ups(&report), vec![("cpu".to_owned(), 1)]);
    world
        .lock()
        .refresh_errors
        .push_back(PortError::retryable("throttling", "Rate exceeded"));
    match driver.run_once(clock_now(&clock)).await {
        LoopOutcome::CloudUnavailable { retry_in, .. } => {
            assert_eq!(retry_in, Duration::from_secs(1))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn slack_messages_are_deduplicated_and_rate_limited_and_a_failing_webhook_only_logs() {
    // Pods too big for the only group: failures to scale up, one reason each.
    let world = World::new(vec![group("cpu", 4, 16, 10)]);
    world.lock().pods.push(job_pod("big-1", "cpu", 64_000, 4));
    world.lock().pods.push(job_pod("small-1", "cpu", 1000, 1));
    let clock = ManualClock::new(T0);
    let notifier = FakeNotifier::default();
    let mut driver = driver(&world, notifier.clone(), false, &clock);

    // Pass 1: a scale-up and a failure to scale up; one message now, one queued.
    step(&mut driver, &world, &clock, 0).await;
    settle().await;
    let sent = notifier.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].contains("scale-up of cpu"), "{sent:?}");
    // 5 s later another big pod fails for the same reason: a duplicate; still queued.
    world.lock().pods.push(job_pod("big-2", "cpu", 64_000, 4));
    step(&mut driver, &world, &clock, 5).await;
    settle().await;
    assert_eq!(
        notifier.sent().len(),
        1,
        "rate limit: at most one message per 10 s"
    );
    // 10 s after the first message, the queued one goes out.
    step(&mut driver, &world, &clock, 5).await;
    settle().await;
    let sent = notifier.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[1].starts_with("batch-autoscaler: failed to scale up for batch/big-1:"),
        "{sent:?}"
    );
    assert!(
        !sent.iter().any(|m| m.contains("big-2")),
        "same reason within 30 min is a duplicate: {sent:?}"
    );

    // A failing webhook: logged and counted, the loop goes on.
    let world = cpu_world(5);
    let failing = FakeNotifier {
        fail: true,
        ..FakeNotifier::default()
    };
    let mut driver = self::driver(&world, failing.clone(), false, &clock);
    let report = step(&mut driver, &world, &clock, 0).await;
    settle().await;
    assert_eq!(failing.sent().len(), 1);
    assert_eq!(scale_ups(&report).len(), 1);
    let metrics = driver.metrics().encode();
    assert!(
        metrics.contains(r#"batch_autoscaler_notifications_total{result="failed"} 1"#),
        "{metrics}"
    );
    step(&mut driver, &world, &clock, 10).await;
}

#[tokio::test]
async fn the_run_future_is_send_with_send_adapters() {
    fn assert_send<T: Send>(_: &T) {}
    let world = cpu_world(1);
    let clock = ManualClock::new(T0);
    let driver = driver(&world, FakeNotifier::default(), false, &clock);
    let (_tx, leader) = watch::channel(Leadership::from(true));
    let run = driver.run(Arc::new(Notify::new()), leader, std::future::pending());
    assert_send(&run);
}

/// A driver on tokio's clock with a 500 ms batch window and 200 ms idle time.
fn batching_driver(world: &World) -> TestDriver {
    let mut config = DriverConfig::new(false, Duration::from_secs(60));
    config.batch_window = Duration::from_millis(500);
    config.batch_idle = Duration::from_millis(200);
    Driver::new(
        config,
        settings(),
        world.ports(FakeNotifier::default()),
        Arc::new(TokioClock::new(T0)),
    )
    .unwrap()
}

/// The loop under tokio's paused clock: every wait is virtual, the test never sleeps.
#[tokio::test(start_paused = true)]
async fn an_unschedulable_trigger_leads_to_a_pass_within_the_batch_window() {
    let world = World::new(vec![group("cpu", 16, 64, 100)]);
    let driver = batching_driver(&world);
    let triggers = Arc::new(Notify::new());
    let (_leader_tx, leader) = watch::channel(Leadership::from(true));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let refreshes = || world.calls_named("refresh").len();

    let script = async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(refreshes(), 1, "a pass at start");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(refreshes(), 1, "nothing happens without a reason");

        // Two pods turning unschedulable 100 ms apart: one pass, once no third came
        // for the idle time (200 ms after the second), well before the window.
        world.lock().pods.push(job_pod("p1", "cpu", 3000, 4));
        let start = tokio::time::Instant::now();
        triggers.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
        world.lock().pods.push(job_pod("p2", "cpu", 3000, 4));
        triggers.notify_one();
        while refreshes() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited <= Duration::from_millis(320),
            "pass after {waited:?}"
        );
        assert_eq!(
            world.calls_named("set_target_size"),
            vec!["set_target_size cpu 1"],
            "both pods served by one pass"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            refreshes(),
            2,
            "the burst made one pass, not one per trigger"
        );

        // Without triggers, the scan interval drives the next pass.
        let last = tokio::time::Instant::now() - Duration::from_secs(5);
        while refreshes() < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let gap = last.elapsed();
        assert!(
            gap >= Duration::from_secs(60) && gap <= Duration::from_millis(60_600),
            "scan after {gap:?}"
        );
        stop_tx.send(()).unwrap();
    };
    let shutdown = async {
        let _ = stop_rx.await;
    };
    tokio::join!(driver.run(triggers.clone(), leader, shutdown), script);
}

/// Pods that keep turning unschedulable never postpone a pass beyond the window:
/// a steady stream (one every 100 ms, idle time 200 ms) is served every 500 ms.
#[tokio::test(start_paused = true)]
async fn a_stream_of_triggers_is_served_at_least_once_per_batch_window() {
    let world = World::new(vec![group("cpu", 16, 64, 100)]);
    let driver = batching_driver(&world);
    let triggers = Arc::new(Notify::new());
    let (_leader_tx, leader) = watch::channel(Leadership::from(true));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let refreshes = || world.calls_named("refresh").len();
    let script = async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(refreshes(), 1, "a pass at start");
        let start = tokio::time::Instant::now();
        let mut pass_times = Vec::new();
        let mut seen = refreshes();
        for i in 0..30 {
            world
                .lock()
                .pods
                .push(job_pod(&format!("p{i}"), "cpu", 100, 1));
            triggers.notify_one();
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if refreshes() > seen {
                    seen = refreshes();
                    pass_times.push(start.elapsed());
                }
            }
        }
        // 3 s of triggers: a pass 500 ms after the first trigger of each batch.
        assert!(
            (5..=6).contains(&pass_times.len()),
            "passes at {pass_times:?}"
        );
        for pair in pass_times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap <= Duration::from_millis(620),
                "passes {gap:?} apart: {pass_times:?}"
            );
        }
        stop_tx.send(()).unwrap();
    };
    let shutdown = async {
        let _ = stop_rx.await;
    };
    tokio::join!(driver.run(triggers.clone(), leader, shutdown), script);
}

#[tokio::test(start_paused = true)]
async fn the_loop_keeps_running_through_cloud_errors_with_bounded_waits() {
    let world = cpu_world(1);
    for _ in 0..1000 {
        world
            .lock()
            .refresh_errors
            .push_back(PortError::retryable("throttling", "Rate exceeded"));
    }
    let clock = TokioClock::new(T0);
    let mut config = DriverConfig::new(false, Duration::from_secs(10));
    config.max_error_backoff = Duration::from_secs(60);
    let driver = Driver::new(
        config,
        settings(),
        world.ports(FakeNotifier::default()),
        Arc::new(clock),
    )
    .unwrap();
    let health = driver.http_state().health;
    let (_leader_tx, leader) = watch::channel(Leadership::from(true));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let script = async {
        // Attempts at 0, 1, 3, 7, 15, 31, 63 s, then every 60 s (123 … 543): waits
        // double up to the cap and stay there; the scan interval does not shorten them.
        tokio::time::sleep(Duration::from_secs(600)).await;
        let attempts = world.calls_named("refresh").len();
        assert_eq!(attempts, 15, "{attempts} attempts in 10 minutes");
        assert!(health.live(), "the loop still makes progress");
        world.lock().refresh_errors.clear();
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(
            world.calls_named("set_target_size").len(),
            1,
            "planning resumes once the cloud answers"
        );
        stop_tx.send(()).unwrap();
    };
    let shutdown = async {
        let _ = stop_rx.await;
    };
    tokio::join!(
        driver.run(Arc::new(Notify::new()), leader, shutdown),
        script
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_makes_no_call_until_it_leads() {
    let world = cpu_world(3);
    let clock = TokioClock::new(T0);
    let driver = Driver::new(
        DriverConfig::new(false, Duration::from_secs(10)),
        settings(),
        world.ports(FakeNotifier::default()),
        Arc::new(clock),
    )
    .unwrap();
    let health = driver.http_state().health;
    let (leader_tx, leader) = watch::channel(Leadership::from(false));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let triggers = Arc::new(Notify::new());
    let script = async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        triggers.notify_one();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            world.calls().is_empty(),
            "a follower called {:?}",
            world.calls()
        );
        assert!(health.live(), "a follower stays live");
        assert!(!health.ready(), "leadership not known yet");
        leader_tx.send_replace(false.into());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(health.ready(), "a known follower is ready");
        leader_tx.send_replace(true.into());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            world.calls_named("set_target_size"),
            vec!["set_target_size cpu 1"],
            "acts at once on becoming leader"
        );
        // A lease renewal re-sends the verdict: no extra pass.
        leader_tx.send_replace(true.into());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(world.calls_named("refresh").len(), 1);
        assert_eq!(world.calls_named("load_backoffs").len(), 1);
        stop_tx.send(()).unwrap();
    };
    let shutdown = async {
        let _ = stop_rx.await;
    };
    tokio::join!(driver.run(triggers.clone(), leader, shutdown), script);
}

/// One request over a real loopback socket; returns the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn health_readiness_and_metrics_over_a_loopback_socket() {
    let world = cpu_world(10);
    world.lock().synced = false;
    let clock = ManualClock::new(T0);
    let mut driver = driver(&world, FakeNotifier::default(), false, &clock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(driver::serve_listener(listener, driver.http_state()));

    // Just started: live (the start counts as progress), not ready (nothing known yet).
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    // A pass on an unsynced view: leadership known, caches not synced.
    let report = step(&mut driver, &world, &clock, 1).await;
    assert!(!report.synced && report.actions.is_empty(), "{report:?}");
    assert_eq!(get(addr, "/readyz").await.0, 503);
    world.lock().synced = true;
    step(&mut driver, &world, &clock, 1).await;
    assert_eq!(get(addr, "/readyz").await, (200, "ok\n".to_owned()));

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "# TYPE batch_autoscaler_loop_duration_seconds histogram",
        "batch_autoscaler_loop_duration_seconds_count 2",
        r#"batch_autoscaler_loop_phase_duration_seconds_count{phase="cloud_refresh"} 2"#,
        r#"batch_autoscaler_loop_phase_duration_seconds_count{phase="cluster_view"} 2"#,
        r#"batch_autoscaler_loop_phase_duration_seconds_count{phase="plan"} 2"#,
        r#"batch_autoscaler_loop_phase_duration_seconds_count{phase="actuate"} 2"#,
        r#"batch_autoscaler_loop_phase_duration_seconds_count{phase="explain"} 2"#,
        r#"batch_autoscaler_loop_phase_duration_seconds_count{phase="status"} 2"#,
        r#"batch_autoscaler_scale_up_nodes_total{group="cpu",reason="pending-pods"} 2"#,
        r#"batch_autoscaler_planner_events_total{reason="SnapshotNotSynced"} 1"#,
        r#"batch_autoscaler_planner_events_total{reason="TriggeredScaleUp"} 1"#,
        "batch_autoscaler_leader 1",
        "# EOF",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in:\n{body}");
    }
    assert_eq!(get(addr, "/nope").await.0, 404);

    // No pass for more than three scan intervals: not live.
    clock.advance(Duration::from_secs(31));
    assert_eq!(get(addr, "/healthz").await.0, 500);
    step(&mut driver, &world, &clock, 0).await;
    assert_eq!(get(addr, "/healthz").await.0, 200);
    server.abort();
}

/// Issue 12: a leader cut off from the API server (its elector can no longer renew,
/// so no new verdict arrives) stops acting when its last verdict runs out, and acts
/// again only once it holds the lease anew.
#[tokio::test(start_paused = true)]
async fn a_leader_whose_lease_is_not_renewed_stops_acting_when_its_verdict_runs_out() {
    let world = cpu_world(3);
    let clock = TokioClock::new(T0);
    let driver = Driver::new(
        DriverConfig::new(false, Duration::from_secs(10)),
        settings(),
        world.ports(FakeNotifier::default()),
        Arc::new(clock),
    )
    .unwrap();
    let health = driver.http_state().health;
    let until = |secs| Leadership::Leader {
        until: Some(tokio::time::Instant::now().into_std() + Duration::from_secs(secs)),
    };
    let (leader_tx, leader) = watch::channel(until(25));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let script = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(world.calls_named("refresh").len(), 1, "leads at first");
        // No renewal from here on (the elector is cut off): passes at 10s and 20s run,
        // none after the verdict runs out at 25s, however long it stays out.
        tokio::time::sleep(Duration::from_secs(24)).await;
        let before = world.calls().len();
        assert_eq!(world.calls_named("refresh").len(), 3);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(
            world.calls().len(),
            before,
            "acted after its leadership ran out: {:?}",
            &world.calls()[before..]
        );
        assert!(
            health.ready(),
            "a follower is ready (it serves no decisions)"
        );
        // Renewed again (the lease is held anew): acts again.
        leader_tx.send_replace(until(60));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            world.calls_named("refresh").len(),
            4,
            "acts at once on holding the lease again"
        );
        stop_tx.send(()).unwrap();
    };
    let shutdown = async {
        let _ = stop_rx.await;
    };
    tokio::join!(
        driver.run(Arc::new(Notify::new()), leader, shutdown),
        script
    );
}

/// Issue 12: a pass that hangs on a call (a partitioned network) does not outlive the
/// leadership verdict: it is abandoned when the verdict runs out, and nothing else is
/// called until a new verdict comes.
#[tokio::test(start_paused = true)]
async fn a_pass_hanging_past_the_end_of_leadership_is_abandoned() {
    let world = cpu_world(3);
    world.lock().hanging_refreshes = 1;
    let clock = TokioClock::new(T0);
    let driver = Driver::new(
        DriverConfig::new(false, Duration::from_secs(10)),
        settings(),
        world.ports(FakeNotifier::default()),
        Arc::new(clock),
    )
    .unwrap();
    let metrics = driver.http_state().metrics;
    let until = |secs| Leadership::Leader {
        until: Some(tokio::time::Instant::now().into_std() + Duration::from_secs(secs)),
    };
    let (leader_tx, leader) = watch::channel(until(5));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let script = async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            world.calls(),
            vec!["load_backoffs".to_owned(), "refresh".to_owned()],
            "nothing after the hung call once the verdict ran out"
        );
        assert!(
            metrics.encode().contains("batch_autoscaler_leader 0"),
            "reports itself no longer leading"
        );
        leader_tx.send_replace(until(60));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            world.calls_named("set_target_size"),
            vec!["set_target_size cpu 1"],
            "acts again once it leads anew"
        );
        stop_tx.send(()).unwrap();
    };
    let shutdown = async {
        let _ = stop_rx.await;
    };
    tokio::join!(
        driver.run(Arc::new(Notify::new()), leader, shutdown),
        script
    );
}
