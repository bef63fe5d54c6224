//! Issue 20: the planner when the cloud fails it: throttled or refused calls must never
//! make it lose count of what it asked for, blame a pool again and again for the same
//! instance, or ask for a desired capacity below the running instances (the world
//! asserts that on every SetTargetSize). Each test failed on the code before the fix.

mod common;

use common::*;
use model::*;
use planner::{Action, Planner};

/// Group `cpu` (4 vCPU, zones a and b) with one node whose 3-vCPU Job pod keeps it
/// busy, and one instance in zone a launched 20 minutes ago that never became a node
/// (past the 15-minute provision time). Zone b's pool stays open once zone a's is
/// backed off for the stuck instance.
fn busy_node_and_a_stuck_instance() -> (World, Planner) {
    let mut cpu = group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 10);
    cpu.spec.zones.push(Zone::new("us-west-2b"));
    let mut w = World::new(vec![cpu]);
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("busy", 3000, 4));
    w.step(&mut planner, 1);
    w.register_all();
    w.schedule();
    assert!(w.pods[0].node.is_some());
    w.step(&mut planner, 10);
    let g = w.group_mut("cpu");
    g.target += 1;
    g.instances.push(InstanceView {
        id: InstanceId::new("i-stuck"),
        zone: Zone::new("us-west-2a"),
        state: InstanceState::Pending,
        launched_at: Time::from_secs(0),
    });
    (w, planner)
}

fn persisted_backoffs(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::PersistBackoff { .. }))
        .count()
}

/// Issue 20, path 5. A launch-timeout removal whose TerminateInstance is throttled pass
/// after pass (at min size AWS refuses the decrement every time) gives back the -1 each
/// attempt took: a scale-up afterwards still counts the instances that run, and asks
/// for no fewer.
#[test]
fn failed_terminations_give_back_the_target_they_took() {
    let (mut w, mut planner) = busy_node_and_a_stuck_instance();
    w.throttled = vec!["TerminateInstance"];
    let mut attempts = 0;
    for _ in 0..6 {
        let actions = w.step(&mut planner, 30);
        attempts += World::terminations(&actions).len();
    }
    assert!(attempts >= 3, "the removal is retried: {attempts}");
    assert_eq!(w.group_mut("cpu").instances.len(), 2);
    // New work that needs a node: bought on top of the two instances that run.
    w.pods.push(job_pod("more", 3000, 4));
    let actions = w.step(&mut planner, 30);
    let ups = World::scale_ups(&actions);
    assert_eq!(ups.len(), 1, "{actions:?}");
    let (_, _, to) = &ups[0];
    assert!(
        *to >= 3,
        "asked for {to} with two instances running and one more needed"
    );
}

/// Issue 20, path 5. The pool of an instance that never became a node is backed off
/// once for it, not again on every pass its termination fails: the backoff is not
/// extended and the group's tags are not rewritten while nothing changes.
#[test]
fn a_stuck_instance_blames_its_pool_once_however_often_its_termination_fails() {
    let (mut w, mut planner) = busy_node_and_a_stuck_instance();
    w.throttled = vec!["TerminateInstance"];
    let first = w.step(&mut planner, 30);
    assert_eq!(persisted_backoffs(&first), 1, "{first:?}");
    let mut later = Vec::new();
    for _ in 0..6 {
        later.extend(w.step(&mut planner, 30));
    }
    assert!(!World::terminations(&later).is_empty(), "still retried");
    assert_eq!(persisted_backoffs(&later), 0, "{later:?}");
    let timed_out = w
        .events
        .iter()
        .filter(|e| matches!(e, planner::PlannerEvent::LaunchTimedOut { .. }))
        .count();
    assert_eq!(timed_out, 1, "one LaunchTimedOut for one instance");
}

/// Issue 20, path 5. Beginning a removal takes one from the remembered target without
/// making the request look new: once the cloud has shown another desired capacity for
/// longer than a request is trusted, the planner believes the cloud (a request renewed
/// on every removal attempt was trusted for ever).
#[test]
fn a_removal_retried_every_pass_does_not_keep_an_old_target_request_trusted() {
    let (mut w, mut planner) = busy_node_and_a_stuck_instance();
    w.throttled = vec!["TerminateInstance"];
    for _ in 0..10 {
        w.step(&mut planner, 30);
    }
    // Someone else raises the desired capacity by one; its instance is on its way.
    let now = w.now;
    let g = w.group_mut("cpu");
    g.target += 1;
    g.instances.push(InstanceView {
        id: InstanceId::new("i-other"),
        zone: Zone::new("us-west-2a"),
        state: InstanceState::Pending,
        launched_at: now,
    });
    // Past the two minutes a request is trusted over the cloud.
    w.step(&mut planner, 150);
    w.step(&mut planner, 30);
    w.pods.push(job_pod("more", 3000, 4));
    let actions = w.step(&mut planner, 30);
    assert!(
        World::scale_ups(&actions).is_empty(),
        "the instance on its way serves the pod: {actions:?}"
    );
}
