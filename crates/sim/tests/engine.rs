//! The engine's own behaviour on small synthetic scenarios, with the real planner.

use sim::{Scenario, SimOptions};

fn run(text: &str) -> sim::Report {
    sim::simulate(&Scenario::from_yaml(text).unwrap(), &SimOptions::default()).unwrap()
}

#[test]
fn a_gang_that_cannot_fit_never_starts_partially() {
    // Two fixed nodes, each able to hold one pod; the gang needs three at once.
    let report = run("
name: gang-too-big
horizon: 30m
node_groups:
  - {name: fixed, region: us-west-2, zone: us-west-2a, instance_type: m5.xlarge, min: 2, max: 2}
workload:
  - {name: g, pods: 3, gang: true, requests: {cpu: 3, memory: 4Gi}, duration: 5m}
");
    assert_eq!(report.stopped_because, "horizon");
    assert_eq!(report.pods.never_started, 3);
    assert_eq!(report.jobs[0].gang_max_partial_running, Some(0));
    assert_eq!(report.nodes.launched, 2);
}

#[test]
fn capacity_window_limits_launches_and_failures_reach_the_planner() {
    let report = run("
name: window
horizon: 3h
node_groups:
  - name: only
    region: us-west-2
    zone: us-west-2a
    instance_type: m5.large
    max: 10
    capacity_errors: [{from: 0s, to: 30m, available: 1}]
workload:
  - {name: j, pods: 4, requests: {cpu: 1500m, memory: 1Gi}, duration: 10m}
");
    assert!(!report.launch_failures.is_empty());
    assert!(report.launch_failures[0]
        .message
        .contains("InsufficientInstanceCapacity"));
    assert_eq!(report.pods.completed, 4);
    assert_eq!(report.pods.killed_by_scale_in, 0);
    assert!(
        report.planner_events.contains_key("PoolBackedOff"),
        "{:?}",
        report.planner_events
    );
}

#[test]
fn services_run_to_the_horizon_and_daemonsets_are_not_workload() {
    let report = run("
name: svc
horizon: 1h
node_groups:
  - {name: g, region: us-west-2, zone: us-west-2a, instance_type: m5.large, min: 1, max: 3}
daemonsets:
  - {name: ds, requests: {cpu: 100m, memory: 64Mi}}
workload:
  - {name: web, kind: service, pods: 2, requests: {cpu: 200m, memory: 256Mi}}
");
    assert_eq!(report.stopped_because, "horizon");
    assert_eq!(report.simulated_seconds, 3600.0);
    assert_eq!(report.pods.total, 2);
    assert_eq!(report.pods.running_at_end, 2);
    assert_eq!(report.time_to_start_seconds.max, 0.0);
    // One m5.large for the hour at the catalog price.
    let price = catalog::on_demand_price_usd_per_hour("m5.large").unwrap();
    assert!((report.node_hours - 1.0).abs() < 1e-9);
    assert!((report.cost_usd - (price * 10_000.0).round() / 10_000.0).abs() < 1e-9);
}

#[test]
fn billing_is_per_second_from_launch_to_termination() {
    let report = run("
name: bill
horizon: 2h
settings: {scale-down-unneeded-time: 10m, scale-down-delay-after-add: 0s}
node_groups:
  - {name: g, region: us-west-2, zone: us-west-2a, instance_type: m5.large, max: 1, price_per_hour: 3.6, boot_delay: 60s}
workload:
  - {name: j, pods: 1, requests: {cpu: 1, memory: 1Gi}, duration: 20m}
");
    assert_eq!(report.nodes.launched, 1);
    let group = &report.groups[0];
    // Launched at 0, ready at 60 s, job 20 min, idle 10 min, then a few scan intervals.
    assert!(
        group.node_hours > (60.0 + 1200.0 + 600.0) / 3600.0,
        "{group:?}"
    );
    assert!(
        group.node_hours < (60.0 + 1200.0 + 600.0 + 120.0) / 3600.0,
        "{group:?}"
    );
    assert!((group.cost_usd - group.node_hours * 3.6).abs() < 1e-3);
}

/// A wave of Job pods brings four nodes; four long Argo Workflow pods spread over them
/// stay behind, one per under-used node, when the wave ends.
const WORKFLOW_LEFT_BEHIND: &str = "
name: workflow-left-behind
horizon: 4h
settings: {scale-down-unneeded-time: 5m, scale-down-delay-after-add: 5m}
node_groups:
  - {name: cpu, region: us-west-2, zone: us-west-2a, instance_type: m5.xlarge, max: 10}
workload:
  - {name: wave, pods: 12, requests: {cpu: 1, memory: 2Gi}, duration: 15m}
  - name: steps
    pods: 4
    owner: {apiVersion: argoproj.io/v1alpha1, kind: Workflow}
    requests: {cpu: 500m, memory: 1Gi}
    duration: 2h
";

#[test]
fn workflow_pods_must_finish_by_default_so_their_nodes_are_retired() {
    let report = run(WORKFLOW_LEFT_BEHIND);
    let steps = report.jobs.iter().find(|j| j.name == "steps").unwrap();
    assert_eq!(steps.owner.as_deref(), Some("argoproj.io/Workflow"));
    assert_eq!(
        report
            .jobs
            .iter()
            .find(|j| j.name == "wave")
            .unwrap()
            .owner
            .as_deref(),
        Some("batch/Job")
    );
    assert_eq!(
        report.evictions, 0,
        "a Workflow is not on the default evictable-owner-kinds"
    );
    assert!(report.retire_calls > 0);
    assert_eq!(report.pods.killed_by_scale_in, 0);
    assert_eq!(report.pods.completed, 16);
}

#[test]
fn evicting_pods_of_an_owner_declared_evictable_kills_nothing() {
    // The same cluster, with Workflows declared evictable: the planner drains the
    // under-used nodes, evicting Workflow pods. The simulator classifies them as the
    // planner does, so those evictions are not kills (a rule keyed on "batch
    // workload" would count every one).
    let text = WORKFLOW_LEFT_BEHIND.replace(
        "settings: {",
        "settings: {evictable-owner-kinds: \"apps/ReplicaSet,argoproj.io/Workflow\", ",
    );
    let report = run(&text);
    assert!(report.evictions > 0, "the under-used nodes are drained");
    assert_eq!(report.pods.killed_by_scale_in, 0);
    assert_eq!(report.pods.evictable_batch_pods_recreated, report.evictions);
    assert_eq!(
        report.pods.completed, 16,
        "evicted pods start over and complete"
    );
    let default = run(WORKFLOW_LEFT_BEHIND);
    assert!(
        report.node_hours < default.node_hours,
        "draining is cheaper than retiring"
    );
}
