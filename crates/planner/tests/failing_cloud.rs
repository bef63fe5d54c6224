//! Issue 20: the planner when the cloud fails it or the cluster misleads it. Throttled
//! or refused calls must never make it lose count of what it asked for, blame a pool
//! again and again for the same instance, or ask for a desired capacity below the
//! running instances (the world asserts that on every SetTargetSize); a node it cannot
//! match to an instance must never get that instance terminated under its pods, nor
//! hold up the launch timeouts of instances it cannot be. Each test failed on the code
//! before the fix.

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

/// A node no instance is known to back (no providerID), with `labels`, created
/// `age_secs` ago.
fn provider_less_node(w: &mut World, name: &str, labels: &[(&str, &str)], age_secs: u64) {
    let mut node = NodeView::new(
        NodeName::new(name),
        Resources::cpu_mem(4000, 16 << 30),
        Time::from_secs(w.now.0 / 1000 - age_secs),
    );
    for (k, v) in labels {
        node.labels.insert(*k, *v);
    }
    w.nodes.push(node);
}

/// Issue 20, path 2. An instance whose node never got a providerID is that node as far
/// as anyone can tell: while such a node (same zone and instance type, registered after
/// the launch) runs a pod, the instance is not timed out and terminated under it.
#[test]
fn an_instance_whose_node_has_no_provider_id_is_not_timed_out_while_that_node_runs_pods() {
    let (mut w, mut planner) = busy_node_and_a_stuck_instance();
    // i-stuck launched at t=0; its node registered at t=60 s, without a providerID.
    let age = w.now.0 / 1000 - 60;
    provider_less_node(
        &mut w,
        "ip-10-0-0-9",
        &[
            (well_known::LABEL_ZONE, "us-west-2a"),
            (well_known::LABEL_INSTANCE_TYPE, "cpu-type"),
        ],
        age,
    );
    let mut pod = job_pod("on-it", 1000, 1);
    pod.node = Some(NodeName::new("ip-10-0-0-9"));
    pod.phase = PodPhase::Running;
    pod.unschedulable = false;
    w.pods.push(pod);
    let mut all = Vec::new();
    for _ in 0..6 {
        all.extend(w.step(&mut planner, 60));
    }
    assert!(World::terminations(&all).is_empty(), "{all:?}");
    assert!(
        !all.iter()
            .any(|a| matches!(a, Action::VerifyRemoval { .. })),
        "{all:?}"
    );
}

/// Issue 20, path 3. Nodes without a providerID that cannot be the stuck instance (a
/// Fargate node, a node of another zone, one of another instance type) do not hold up
/// its launch timeout: it is removed and its pool backed off.
#[test]
fn provider_less_nodes_that_cannot_be_the_instance_do_not_hold_up_its_launch_timeout() {
    let (mut w, mut planner) = busy_node_and_a_stuck_instance();
    provider_less_node(
        &mut w,
        "fargate-ip-10-0-0-7",
        &[
            ("eks.amazonaws.com/compute-type", "fargate"),
            (well_known::LABEL_ZONE, "us-west-2a"),
        ],
        10,
    );
    provider_less_node(
        &mut w,
        "ip-10-0-1-7",
        &[(well_known::LABEL_ZONE, "us-west-2b")],
        10,
    );
    provider_less_node(
        &mut w,
        "ip-10-0-0-8",
        &[(well_known::LABEL_INSTANCE_TYPE, "gpu-type")],
        10,
    );
    let mut all = Vec::new();
    for _ in 0..3 {
        all.extend(w.step(&mut planner, 30));
    }
    assert_eq!(
        World::terminations(&all),
        vec!["i-stuck".to_owned()],
        "{all:?}"
    );
}

/// Group `cpu` with one node running one Job pod (`work`), the planner having seen it.
fn one_node_running_a_job() -> (World, Planner) {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 10)]);
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("work", 3000, 4));
    w.step(&mut planner, 1);
    w.register_all();
    w.schedule();
    w.step(&mut planner, 10);
    (w, planner)
}

/// Thirty passes a minute apart; every action of them.
fn half_an_hour(w: &mut World, planner: &mut Planner) -> Vec<Action> {
    (0..30).flat_map(|_| w.step(planner, 60)).collect()
}

/// Issue 20, path 7. A node that went NotReady with its Job's pod stuck Terminating
/// (deleted, but its kubelet is gone and cannot finish the deletion): a pod well past
/// its deletion deadline on a NotReady node no longer holds the node, which is removed
/// after the unready time like any dead node (verified, then terminated).
#[test]
fn a_dead_node_whose_pod_is_stuck_terminating_is_removed() {
    let (mut w, mut planner) = one_node_running_a_job();
    let instance = w.nodes[0].instance.clone().expect("instance");
    // The node dies; the Job's pod is deleted (its controller gave up on it) and
    // cannot finish terminating.
    w.nodes[0].ready = false;
    w.nodes[0].ready_changed = w.now;
    w.pods[0].deletion_deadline = Some(w.now + std::time::Duration::from_secs(30));
    let all = half_an_hour(&mut w, &mut planner);
    assert_eq!(
        World::terminations(&all),
        vec![instance.to_string()],
        "{all:?}"
    );
}

/// Issue 20, path 7. A pod that is being deleted on a Ready node, or not yet past its
/// deletion deadline, still holds its node: its kubelet may be running it down.
#[test]
fn a_terminating_pod_still_holds_a_ready_node() {
    let (mut w, mut planner) = one_node_running_a_job();
    w.pods[0].deletion_deadline = Some(w.now);
    let all = half_an_hour(&mut w, &mut planner);
    assert!(World::terminations(&all).is_empty(), "{all:?}");
}

/// Issue 20, the third edge. A desired capacity the planner asked for and the cloud
/// contradicts (someone set it back, a scheduled action, a call AWS accepted and then
/// did not apply): right after the call a describe may lag, so the request is trusted
/// for a short grace; after that the fresh describe wins and the pending pod is bought
/// for again, well before the old fixed two minutes of trust ran out.
#[test]
fn a_target_request_the_cloud_contradicts_after_the_grace_is_distrusted() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 10)]);
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("work", 3000, 4));
    let first = w.step(&mut planner, 1);
    assert_eq!(World::scale_ups(&first).len(), 1, "{first:?}");
    // Someone else sets the desired capacity back to 0 before an instance launched.
    let g = w.group_mut("cpu");
    g.target = 0;
    g.instances.clear();
    // A describe right after the call may not show it yet: trusted, nothing bought twice.
    let lagging = w.step(&mut planner, 10);
    assert!(World::scale_ups(&lagging).is_empty(), "{lagging:?}");
    // Past the grace the describe is the truth: the pod is bought for again.
    let mut later = Vec::new();
    for _ in 0..4 {
        later.extend(w.step(&mut planner, 10));
    }
    assert_eq!(
        World::scale_ups(&later),
        vec![("cpu".to_owned(), 0, 1)],
        "{later:?}"
    );
    assert!(
        w.events.iter().any(|e| matches!(e,
            planner::PlannerEvent::Warning { message } if message.contains("desired capacity"))),
        "the distrust is explained: {:?}",
        w.events
    );
}

/// The grace is only for the cloud's lag: a request that the planner's own removals
/// explain (the group's desired capacity still counts an instance whose termination is
/// to come) is not taken for a contradiction, however long the fence settles.
#[test]
fn a_target_request_explained_by_a_removal_to_come_is_kept() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 10)]);
    w.settings.fence_settle_time = std::time::Duration::from_secs(100);
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("a", 3000, 4));
    w.pods.push(job_pod("b", 3000, 4));
    w.step(&mut planner, 1);
    w.register_all();
    w.schedule();
    w.step(&mut planner, 10);
    // One node's pod finishes; the node is removed (fenced, settles 100 s).
    w.finish("b");
    let mut all = Vec::new();
    for _ in 0..40 {
        all.extend(w.step(&mut planner, 30));
    }
    assert_eq!(World::terminations(&all).len(), 1, "{all:?}");
    assert!(World::scale_ups(&all).is_empty(), "nothing bought: {all:?}");
    assert!(
        !w.events.iter().any(|e| matches!(e,
            planner::PlannerEvent::Warning { message } if message.contains("desired capacity"))),
        "{:?}",
        w.events
    );
}

/// Issue 20, path 7, second half. A node whose evictable pod can never be evicted (a
/// PodDisruptionBudget that allows nothing, a pod stuck terminating behind a finalizer)
/// is not fenced, drained and un-fenced again every few minutes for ever: each failed
/// drain backs the node off for longer, and the Event says until when.
#[test]
fn a_node_that_cannot_be_drained_is_not_refenced_in_a_loop() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 8, 32, 0, 40)]);
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    // Two nodes' worth of web pods; shrunk, both fit one node: one node is drained.
    for name in ["web-0", "web-1"] {
        w.pods.push(pod(name, 6000, 1, Owner::replica_set("web")));
    }
    w.step(&mut planner, 10);
    w.register_all();
    w.schedule();
    for p in &mut w.pods {
        p.requests.cpu_millis = 1000;
    }
    w.throttled = vec!["EvictPod"];
    let mut all = Vec::new();
    let mut drains = Vec::new();
    for _ in 0..180 {
        let actions = w.step(&mut planner, 60);
        if actions.iter().any(
            |a| matches!(a, Action::RetireNode { reason, .. } if reason.starts_with("draining")),
        ) {
            drains.push(w.now);
        }
        all.extend(actions);
    }
    assert!(drains.len() >= 3, "the drain is tried again: {drains:?}");
    let gaps: Vec<_> = drains
        .windows(2)
        .map(|d| d[1].saturating_since(d[0]))
        .collect();
    assert!(
        gaps.windows(2).all(|g| g[1] > g[0]),
        "each failed drain waits longer before the next: {gaps:?}"
    );
    assert!(
        w.events.iter().any(|e| matches!(e,
            planner::PlannerEvent::ScaleDownCancelled { why, .. } if why.contains("not drained again before"))),
        "{:?}",
        w.events
    );
    assert!(World::terminations(&all).is_empty(), "{all:?}");
}

/// Issue 20, dry-run. A termination the cloud accepted and never carried out (a
/// dry-run sends nothing; a call can also be dropped) does not keep the instance "on
/// its way out" for ever: after a while it counts as capacity again, the empty node is
/// chosen again, and a day-long dry-run keeps reporting the removals it would make.
#[test]
fn a_termination_that_never_happens_is_forgotten_and_planned_again() {
    let (mut w, mut planner) = one_node_running_a_job();
    w.finish("work");
    w.lost = vec!["TerminateInstance"];
    let all = half_an_hour(&mut w, &mut planner)
        .into_iter()
        .chain(half_an_hour(&mut w, &mut planner))
        .collect::<Vec<_>>();
    let terminations = World::terminations(&all);
    assert!(
        terminations.len() >= 2,
        "the removal is reported again: {terminations:?}"
    );
    assert!(
        w.events.iter().any(|e| matches!(e,
            planner::PlannerEvent::Warning { message } if message.contains("counts as capacity again"))),
        "{:?}",
        w.events
    );
}

/// Issue 20, the random world's first find. A Node object deleted while its kubelet
/// and its Job pod run on: the instance is not a failed launch (its pool is not
/// blamed), and the pods still bound to the name it had are the evidence of its
/// removal, so it is never terminated under them. The old code timed it out at once
/// (launched long ago) and read no pods for it.
#[test]
fn an_instance_whose_node_object_was_deleted_is_not_terminated_under_its_pods() {
    let (mut w, mut planner) = one_node_running_a_job();
    let instance = w.nodes[0].instance.clone().expect("instance");
    w.now = w.now + std::time::Duration::from_secs(3600);
    w.step(&mut planner, 10);
    w.nodes.clear();
    let all = half_an_hour(&mut w, &mut planner);
    assert!(World::terminations(&all).is_empty(), "{all:?}");
    assert_eq!(persisted_backoffs(&all), 0, "no pool blamed: {all:?}");
    // Once the pod is gone (done, or deleted by the pod garbage collector), the
    // instance that no node backs is removed.
    w.finish("work");
    let all = half_an_hour(&mut w, &mut planner);
    assert_eq!(
        World::terminations(&all),
        vec![instance.to_string()],
        "{all:?}"
    );
}

/// The same, for a node the planner never saw with its providerID: pods bound to a
/// name no Node object has hold up every removal of an instance without a node until
/// they are gone.
#[test]
fn pods_bound_to_a_name_without_a_node_hold_up_the_removal_of_nodeless_instances() {
    let mut w = World::new(vec![group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 10)]);
    let mut planner = Planner::new(w.settings.clone()).unwrap();
    w.pods.push(job_pod("work", 3000, 4));
    w.step(&mut planner, 1);
    w.register_all();
    w.nodes[0].instance = None;
    w.schedule();
    assert!(w.pods[0].node.is_some());
    w.step(&mut planner, 10);
    w.nodes.clear();
    w.now = w.now + std::time::Duration::from_secs(3600);
    let all = half_an_hour(&mut w, &mut planner);
    assert!(World::terminations(&all).is_empty(), "{all:?}");
}
