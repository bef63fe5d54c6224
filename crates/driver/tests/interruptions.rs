//! The interruption queue task and the driver together, against fake ports and a fake
//! queue: a notice is acted on in the next pass and its message deleted only after;
//! what cannot be read is deleted and counted at once; a queue that cannot be reached
//! leaves the loop and `/readyz` alone.

mod common;

use common::*;
use driver::{
    interruption_feed, run_interruption_queue, Driver, DriverConfig, InterruptionQueue, Leadership,
    LoopOutcome, ManualClock, ParsedMessage, PassReport, PortError, QueueMessage,
};
use model::*;
use planner::Action;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};

type TestDriver = Driver<FakeCloud, FakeCluster, FakeNotifier>;

#[derive(Default)]
struct QueueState {
    waiting: Vec<QueueMessage>,
    deleted: Vec<String>,
    receives: u32,
    unreachable: bool,
}

/// Bodies: `spot <instance>` is a spot warning, `unknown` a well-formed event we do
/// not act on, anything else malformed.
#[derive(Clone, Default)]
struct FakeQueue(Arc<Mutex<QueueState>>);

impl FakeQueue {
    fn push(&self, id: &str, body: &str) {
        self.0.lock().unwrap().waiting.push(QueueMessage {
            id: id.into(),
            receipt: format!("receipt-{id}"),
            body: body.into(),
        });
    }
    fn deleted(&self) -> Vec<String> {
        self.0.lock().unwrap().deleted.clone()
    }
}

impl InterruptionQueue for FakeQueue {
    async fn receive(&self) -> Result<Vec<QueueMessage>, PortError> {
        let (unreachable, messages) = {
            let mut s = self.0.lock().unwrap();
            s.receives += 1;
            (s.unreachable, std::mem::take(&mut s.waiting))
        };
        if unreachable {
            return Err(PortError::retryable("unavailable", "connection refused"));
        }
        if messages.is_empty() {
            // A long poll that found nothing.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(messages)
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        self.0.lock().unwrap().deleted.push(receipt.to_owned());
        Ok(())
    }

    fn parse(&self, body: &str) -> ParsedMessage {
        match body.split_once(' ') {
            Some(("spot", instance)) => {
                let mut n = InterruptionNotice::new(
                    InstanceId::new(instance),
                    InterruptionKind::SpotInterruption,
                    T0,
                );
                n.detail = "terminate".into();
                ParsedMessage::Notices(vec![n])
            }
            _ if body == "unknown" => {
                ParsedMessage::Unknown("EC2 Instance State-change Notification: running".into())
            }
            _ => ParsedMessage::Malformed("detail.instance-id: missing".into()),
        }
    }
}

/// Whether the exposition has exactly this sample line (not a HELP text that starts alike).
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn step(
    driver: &mut TestDriver,
    world: &World,
    clock: &ManualClock,
    secs: u64,
) -> PassReport {
    clock.advance(Duration::from_secs(secs));
    let now = driver::Clock::now(clock);
    world.lock().now = now;
    match driver.run_once(now).await {
        LoopOutcome::Pass(report) => report,
        other => panic!("expected a pass, got {other:?}"),
    }
}

/// A spot group with one node running one Job pod, and a driver that has seen it.
async fn one_spot_node(dry_run: bool) -> (World, TestDriver, ManualClock, InstanceId) {
    let mut g = group("spot", 4, 16, 5);
    g.spec.purchase = PurchaseOption::Spot;
    let world = World::new(vec![g]);
    world.lock().pods.push(job_pod("work", "spot", 3000, 4));
    let clock = ManualClock::new(T0);
    let mut driver = Driver::new(
        DriverConfig::new(false, Duration::from_secs(10)),
        settings(),
        world.ports(FakeNotifier::default()),
        Arc::new(clock.clone()),
    )
    .unwrap();
    step(&mut driver, &world, &clock, 1).await;
    world.register_and_schedule();
    step(&mut driver, &world, &clock, 10).await;
    let instance = world.lock().nodes[0].instance.clone().unwrap();
    if dry_run {
        let config = DriverConfig::new(true, Duration::from_secs(10));
        driver = Driver::new(
            config,
            settings(),
            world.ports(FakeNotifier::default()),
            Arc::new(clock.clone()),
        )
        .unwrap();
        step(&mut driver, &world, &clock, 1).await;
    }
    (world, driver, clock, instance)
}

#[tokio::test]
async fn a_spot_warning_from_the_queue_is_acted_on_and_deleted_only_after_the_pass_that_acted() {
    let (world, mut driver, clock, instance) = one_spot_node(false).await;
    let wake = Arc::new(Notify::new());
    let (sender, feed) = interruption_feed(wake.clone());
    driver.set_interruption_feed(feed);
    let metrics = driver.http_state().metrics;
    let queue = FakeQueue::default();
    queue.push("m1", "not json at all");
    queue.push("m2", "unknown");
    queue.push("m3", &format!("spot {instance}"));
    let (_leader_tx, leader) = watch::channel(Leadership::from(true));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_interruption_queue(
        queue.clone(),
        sender,
        metrics.clone(),
        leader,
        async {
            let _ = stopped.await;
        },
    ));

    // What cannot be acted on is deleted at once; the notice waits for its pass, and
    // the loop is woken for it.
    eventually("the unreadable messages to be deleted", || {
        queue.deleted().len() == 2
    })
    .await;
    assert_eq!(queue.deleted(), vec!["receipt-m1", "receipt-m2"]);
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("the loop is woken");

    let report = step(&mut driver, &world, &clock, 1).await;
    let actions: Vec<&Action> = report.actions.iter().map(|r| &r.action).collect();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::RetireNode { .. })),
        "fenced: {actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::DetachInstance { instance: i, .. } if i == &instance)),
        "detached: {actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::SetTargetSize { to: 1, .. })),
        "replacement bought: {actions:?}"
    );
    assert_eq!(
        world.calls_named("detach_instance"),
        vec![format!("detach_instance spot {instance}")]
    );
    eventually("the acted-on message to be deleted", || {
        queue.deleted().len() == 3
    })
    .await;

    let text = metrics.encode();
    for needle in [
        r#"batch_autoscaler_interruption_messages_total{result="malformed"} 1"#,
        r#"batch_autoscaler_interruption_messages_total{result="unknown"} 1"#,
        r#"batch_autoscaler_interruption_messages_total{result="notice"} 1"#,
        r#"batch_autoscaler_interruptions_total{pool="us-west-2/us-west-2a/spot-type/spot",kind="spot-interruption"} 1"#,
        "batch_autoscaler_interruption_queue_up 1",
    ] {
        assert!(has_line(&text, needle), "{needle} missing from\n{text}");
    }
    let status = world.lock().statuses.last().cloned().unwrap();
    assert_eq!(status.interruptions.len(), 1, "{status:?}");
    assert_eq!(
        (
            status.interruptions[0].total,
            status.interruptions[0].recent
        ),
        (1, 1)
    );
    assert!(
        status
            .to_text()
            .contains("interruptions of pool us-west-2/us-west-2a/spot-type/spot: 1"),
        "{}",
        status.to_text()
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn in_dry_run_a_notice_is_planned_but_its_message_is_left_on_the_queue() {
    let (world, mut driver, clock, instance) = one_spot_node(true).await;
    let (sender, feed) = interruption_feed(Arc::new(Notify::new()));
    driver.set_interruption_feed(feed);
    let queue = FakeQueue::default();
    queue.push("m1", &format!("spot {instance}"));
    let (_leader_tx, leader) = watch::channel(Leadership::from(true));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_interruption_queue(
        queue.clone(),
        sender,
        driver.http_state().metrics,
        leader,
        async {
            let _ = stopped.await;
        },
    ));
    eventually("the message to be received", || {
        queue.0.lock().unwrap().receives >= 2
    })
    .await;
    let report = step(&mut driver, &world, &clock, 1).await;
    assert!(
        report
            .actions
            .iter()
            .any(|r| matches!(r.action, Action::DetachInstance { .. })),
        "planned: {report:?}"
    );
    assert!(
        world.calls_named("detach_instance").is_empty(),
        "dry-run makes no call"
    );
    let receives = queue.0.lock().unwrap().receives;
    eventually("more polls", || {
        queue.0.lock().unwrap().receives > receives + 2
    })
    .await;
    assert!(
        queue.deleted().is_empty(),
        "dry-run deletes nothing: {:?}",
        queue.deleted()
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn an_unreachable_queue_means_no_interruption_handling_not_a_stopped_loop() {
    let world = World::new(vec![group("cpu", 4, 16, 5)]);
    world.lock().pods.push(job_pod("work", "cpu", 3000, 4));
    let clock = ManualClock::new(T0);
    let mut driver = Driver::new(
        DriverConfig::new(false, Duration::from_secs(10)),
        settings(),
        world.ports(FakeNotifier::default()),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let (sender, feed) = interruption_feed(Arc::new(Notify::new()));
    driver.set_interruption_feed(feed);
    let state = driver.http_state();
    let queue = FakeQueue::default();
    queue.0.lock().unwrap().unreachable = true;
    let (_leader_tx, leader) = watch::channel(Leadership::from(true));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_interruption_queue(
        queue.clone(),
        sender,
        state.metrics.clone(),
        leader,
        async {
            let _ = stopped.await;
        },
    ));
    eventually("a failed poll", || queue.0.lock().unwrap().receives >= 1).await;
    eventually("the gauge to say so", || {
        has_line(
            &state.metrics.encode(),
            "batch_autoscaler_interruption_queue_up 0",
        )
    })
    .await;
    let report = step(&mut driver, &world, &clock, 1).await;
    assert_eq!(
        report
            .actions
            .iter()
            .filter(|r| matches!(r.action, Action::SetTargetSize { .. }))
            .count(),
        1,
        "the loop plans as ever"
    );
    assert!(state.health.ready(), "/readyz still passes");
    // It recovers by itself once the queue answers.
    queue.0.lock().unwrap().unreachable = false;
    eventually("the queue to be read again", || {
        has_line(
            &state.metrics.encode(),
            "batch_autoscaler_interruption_queue_up 1",
        )
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap();
}
