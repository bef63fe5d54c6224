//! Spot interruptions on the simulator, with the real planner: EC2 warns, takes the
//! instance back two minutes later and kills its pods; the planner (when it handles
//! interruptions) fences the node, detaches the instance and buys the replacement at
//! the warning; the group replaces a member it lost, a Capacity Rebalancing group at
//! the warning.

use model::Time;
use sim::engine::{self, RunRecord};
use sim::{Report, Scenario, SimOptions};
use std::time::Duration;

/// One Job pod of an hour on a spot group; EC2 interrupts its instance at 30m.
const ONE_POD: &str = "
name: one-pod
horizon: 4h
settings: {scale-down-unneeded-time: 10m}
node_groups:
  - {name: spot, region: us-west-2, zone: us-west-2a, instance_type: m5.xlarge, max: 5, spot: true, boot_delay: 90s, interruptions: [{at: 30m, count: 1}]}
workload:
  - {name: j, pods: 1, requests: {cpu: 3, memory: 4Gi}, duration: 1h}
";

fn at(secs: u64) -> Time {
    Time::ZERO + Duration::from_secs(secs)
}

const WARNING: u64 = 1800;
const DEADLINE: u64 = WARNING + 120;
const BOOT: u64 = 90;

fn scenario(text: &str) -> Scenario {
    Scenario::from_yaml(text).unwrap()
}

fn record(scenario: &Scenario) -> RunRecord {
    engine::run(scenario, &SimOptions::default()).unwrap()
}

fn report(scenario: &Scenario) -> Report {
    sim::simulate(scenario, &SimOptions::default()).unwrap()
}

fn handling_off(text: &str) -> String {
    text.replace("settings: {", "settings: {interruption-handling: false, ")
}

/// The checks every variant of [`ONE_POD`] shares: one warning at 30m, the instance
/// gone (and unbilled) at the deadline, its pod killed there and started over, the Job
/// done an hour after its restart.
fn assert_interrupted_and_restarted(record: &RunRecord) {
    assert_eq!(record.interruptions.len(), 1);
    let warning = &record.interruptions[0];
    assert_eq!((warning.at, warning.deadline), (at(WARNING), at(DEADLINE)));
    assert!(warning.reclaimed);
    assert_eq!(warning.pods_killed, 1);
    let first = &record.instances[0];
    assert_eq!(first.id, warning.instance);
    assert_eq!(first.interrupted_at, Some(at(WARNING)));
    assert_eq!(
        first.terminated_at,
        Some(at(DEADLINE)),
        "billed until EC2 takes it"
    );
    assert_eq!(record.killed_by_interruption, 1);
    assert_eq!(
        record.killed_by_scale_in, 0,
        "an interruption is not a scale-in kill"
    );
    let pod = &record.logical_pods[0];
    assert_eq!(
        (pod.kills, pod.killed_by_interruption, pod.incarnations),
        (0, 1, 2)
    );
    let restart = at(DEADLINE) + record.restart_delays[0];
    assert_eq!(
        pod.completed_at,
        Some(restart + Duration::from_secs(3600)),
        "the work starts over"
    );
    // It had run from its node's boot to the deadline.
    let ran = (DEADLINE - BOOT) as f64 / 3600.0;
    assert!(
        (record.work_lost_pod_hours - ran).abs() < 1e-9,
        "{}",
        record.work_lost_pod_hours
    );
    assert!(record.work_lost_node_hours > 0.0 && record.work_lost_node_hours < ran);
    assert!(record.violations.is_empty(), "{:?}", record.violations);
    assert_eq!(record.asg_scale_in_terminations, 0);
}

#[test]
fn with_handling_the_replacement_is_bought_at_the_warning_and_nothing_twice() {
    let record = record(&scenario(ONE_POD));
    assert_interrupted_and_restarted(&record);
    assert!(record.interruptions[0].notified);
    // Fenced, detached and replaced in the planner's pass at the warning.
    assert_eq!(record.instances[0].detached_at, Some(at(WARNING)));
    assert_eq!(record.detach_calls, 1);
    assert_eq!(
        record.instances.len(),
        2,
        "one replacement, not one from the planner and one from the group"
    );
    let replacement = &record.instances[1];
    assert!(
        replacement.launched_at >= at(WARNING) && replacement.launched_at <= at(WARNING + 1),
        "{replacement:?}"
    );
    assert_eq!(
        record.scale_up_calls, 2,
        "the first node and the replacement"
    );
    // The replacement was ready before the pod died: it runs again at once.
    assert_eq!(record.restart_delays, [Duration::ZERO]);
    assert!(
        record.actions_not_done.is_empty(),
        "{:?}",
        record.actions_not_done
    );
    assert_eq!(record.event_counts.get("SpotInterruption"), Some(&1));
}

#[test]
fn without_handling_the_group_replaces_the_instance_only_once_it_is_gone() {
    let record = record(&scenario(&handling_off(ONE_POD)));
    assert_interrupted_and_restarted(&record);
    assert!(!record.interruptions[0].notified);
    assert_eq!(record.detach_calls, 0);
    assert_eq!(record.instances[0].detached_at, None);
    assert_eq!(record.instances.len(), 2);
    assert_eq!(
        record.instances[1].launched_at,
        at(DEADLINE),
        "the group replaces its lost member"
    );
    assert_eq!(
        record.scale_up_calls, 1,
        "the planner bought only the first node"
    );
    assert_eq!(
        record.restart_delays,
        [Duration::from_secs(BOOT)],
        "the pod waits for the replacement to boot"
    );
    assert!(!record.event_counts.contains_key("SpotInterruption"));
}

#[test]
fn a_capacity_rebalancing_group_launches_at_the_warning_and_the_planner_buys_nothing() {
    let text = ONE_POD.replace(
        "interruptions: [{at: 30m, count: 1}]",
        "interruptions: [{at: 30m, count: 1}], capacity_rebalance: true",
    );
    let record = record(&scenario(&text));
    assert_interrupted_and_restarted(&record);
    assert_eq!(record.instances.len(), 2);
    assert_eq!(
        record.instances[1].launched_at,
        at(WARNING),
        "the group launches the replacement at the warning"
    );
    assert_eq!(
        record.detach_calls, 0,
        "the group replaces it itself: not detached"
    );
    assert_eq!(
        record.scale_up_calls, 1,
        "the planner bought only the first node"
    );
    assert_eq!(record.restart_delays, [Duration::ZERO]);
    let fenced = record
        .events
        .iter()
        .find(|e| e.reason == "SpotInterruption")
        .expect("the planner heard of it");
    assert!(
        fenced.message.contains("Capacity Rebalancing"),
        "{}",
        fenced.message
    );
    assert!(record.retire_calls >= 1, "the node is fenced");
}

#[test]
fn the_report_counts_interruptions_work_lost_and_restarts() {
    let handled = report(&scenario(ONE_POD));
    let unhandled = report(&scenario(&handling_off(ONE_POD)));
    for r in [&handled, &unhandled] {
        assert_eq!(r.interruptions, 1);
        assert_eq!(r.pods.killed_by_interruption, 1);
        assert_eq!(r.pods.killed_by_scale_in, 0);
        assert_eq!(r.pods.completed, 1);
        assert_eq!(r.jobs[0].killed_by_interruption, 1);
        assert_eq!(r.groups[0].interruptions, 1);
        assert_eq!(r.interrupted_instances.len(), 1);
        assert!(r.work_lost_pod_hours > 0.5);
    }
    assert_eq!(handled.time_to_restart_seconds.p95, 0.0);
    assert_eq!(unhandled.time_to_restart_seconds.p95, BOOT as f64);
    let warning = &handled.interrupted_instances[0];
    assert_eq!(
        (warning.at_seconds, warning.deadline_seconds),
        (WARNING as f64, DEADLINE as f64)
    );
    assert_eq!(warning.detached_at_seconds, Some(WARNING as f64));
    assert_eq!(warning.node.as_deref(), Some("spot-0001"));
    assert!(
        handled
            .summary()
            .contains("spot interruptions: 1, 1 pods killed"),
        "{}",
        handled.summary()
    );
    let svg = sim::plot::svg(&handled);
    assert!(
        svg.contains("spot interruption (1)")
            && svg.contains("<title>spot interruption at 30m</title>"),
        "{svg}"
    );
}

#[test]
fn an_explicit_interruption_of_more_instances_than_run_warns_them_all_and_says_so() {
    let text = ONE_POD.replace("count: 1", "count: 3");
    let report = report(&scenario(&text));
    assert_eq!(report.interruptions, 1);
    assert!(
        report.warnings.iter().any(|w| w == "node_groups[0] (spot).interruptions[0]: at 30m only 1 of 3 instances were there to interrupt"),
        "{:?}",
        report.warnings
    );
}

/// A steady spot fleet of four nodes, each interrupted at 2 per instance-hour.
const RATE: &str = "
name: rate
seed: 7
horizon: 6h
node_groups:
  - {name: spot, region: us-west-2, zone: us-west-2a, instance_type: m5.xlarge, min: 4, max: 8, spot: true, interruption_rate_per_hour: 2}
workload:
  - {name: web, kind: service, pods: 4, anti_affinity_per_node: true, requests: {cpu: 1, memory: 1Gi}}
";

#[test]
fn rate_based_interruptions_are_drawn_from_the_seed() {
    let times = |r: &Report| {
        r.interrupted_instances
            .iter()
            .map(|i| (i.at_seconds, i.instance.clone()))
            .collect::<Vec<_>>()
    };
    let a = report(&scenario(RATE));
    let b = report(&scenario(RATE));
    assert_eq!(
        a.to_json(),
        b.to_json(),
        "same scenario and seed, same bytes"
    );
    // About 4 nodes × 6 h × 2 per hour; each interruption replaced, so it goes on.
    assert!((25..=70).contains(&a.interruptions), "{}", a.interruptions);
    let horizon = 6.0 * 3600.0;
    assert!(a
        .interrupted_instances
        .iter()
        .filter(|i| i.deadline_seconds <= horizon)
        .all(|i| i.group == "spot" && i.reclaimed));
    let other = report(&scenario(RATE).with_seed(8));
    assert_ne!(
        times(&a),
        times(&other),
        "another seed, other interruptions"
    );
    // The services are recreated each time and the group always gets back to four.
    assert_eq!(a.pods.running_at_end, 4);
    assert!(a.pods.killed_by_interruption > 0);
    assert_eq!(
        a.work_lost_pod_hours, 0.0,
        "a service's run time is not lost work"
    );
}
