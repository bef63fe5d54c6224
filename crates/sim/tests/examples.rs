//! Every shipped example, run on the simulator with the real planner, with the
//! assertions issue 2 asks for: nothing killed by scale-in, every batch pod completed,
//! overflow within 60 s of a capacity failure, gangs never started partially, the GPU
//! group from zero and back to zero, pods of custom owners and low priority never
//! evicted, interruption handling killing fewer pods than none, and byte-identical
//! reports across runs.

use sim::{Report, Scenario, SimOptions};

fn example(name: &str) -> Scenario {
    let path = format!("{}/../../examples/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Scenario::from_yaml(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn run(name: &str) -> Report {
    sim::simulate(&example(name), &SimOptions::default()).expect("the example runs")
}

const EXAMPLES: [&str; 11] = [
    "recurring-bursts",
    "straggler-tail",
    "gpu-gangs-and-cpu",
    "cpu-burst",
    "gpu-from-zero",
    "region-overflow",
    "gang-training",
    "mixed-short-long",
    "custom-owners",
    "queued-training",
    "spot-interruptions",
];

#[test]
fn every_file_in_examples_is_run() {
    let dir = format!("{}/../../examples", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|name| name.strip_suffix(".yaml").map(str::to_owned))
        .collect();
    files.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    assert_eq!(files, listed, "add new examples to EXAMPLES");
}

fn assert_healthy(name: &str, report: &Report) {
    assert_eq!(
        report.pods.killed_by_scale_in, 0,
        "{name}: pods killed by scale-in"
    );
    let batch_pods: u32 = report
        .jobs
        .iter()
        .filter(|j| j.kind != "service")
        .map(|j| j.pods)
        .sum();
    assert_eq!(
        report.pods.completed, batch_pods,
        "{name}: every job and bare pod completes"
    );
    for job in report.jobs.iter().filter(|j| j.kind != "service") {
        assert!(
            job.finished_at_seconds.is_some(),
            "{name}: job {} did not finish",
            job.name
        );
    }
    assert!(
        report.violations.is_empty(),
        "{name}: {:?}",
        report.violations
    );
    assert_eq!(
        report.asg_scale_in_terminations, 0,
        "{name}: the ASG never picks its own victims"
    );
    assert!(
        report.node_hours >= report.lower_bound_node_hours,
        "{name}: the lower bound is a lower bound"
    );
}

#[test]
fn every_example_completes_its_jobs_and_kills_nothing() {
    for name in EXAMPLES {
        let report = run(name);
        assert_healthy(name, &report);
    }
}

#[test]
fn region_overflow_launches_in_the_second_region_within_a_minute() {
    let report = run("region-overflow");
    assert_healthy("region-overflow", &report);
    assert!(
        !report.launch_failures.is_empty(),
        "the capacity window must cause failures"
    );
    let overflow = &report.overflow[0];
    assert_eq!(overflow.failed_region, "us-west-2");
    assert_eq!(
        overflow.next_launch_region.as_deref(),
        Some("us-east-1"),
        "{overflow:?}"
    );
    let delay = overflow.delay_seconds.expect("a launch after the failure");
    assert!(delay <= 60.0, "overflow took {delay}s");
    // The batch after the window returns to the primary region.
    let primary = report
        .groups
        .iter()
        .find(|g| g.region == "us-west-2")
        .unwrap();
    let nightly = report.jobs.iter().find(|j| j.name == "nightly").unwrap();
    assert!(report
        .timeline
        .iter()
        .any(|s| s.t > nightly.arrival_seconds && s.nodes[&primary.name] > 0));
}

#[test]
fn gangs_start_whole_after_a_rollback() {
    let report = run("gang-training");
    assert_healthy("gang-training", &report);
    for job in report.jobs.iter().filter(|j| j.gang) {
        assert_eq!(
            job.gang_max_partial_running,
            Some(0),
            "gang {} started partially",
            job.name
        );
        assert!(
            job.gang_started_at_seconds.is_some(),
            "gang {} never started",
            job.name
        );
    }
    assert!(
        report
            .planner_events
            .get("GangRolledBack")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{:?}",
        report.planner_events
    );
    let second = report
        .groups
        .iter()
        .find(|g| g.name == "gpu-usw2b")
        .unwrap();
    assert!(
        second.peak >= 8,
        "the whole gang is served by the second pool: {second:?}"
    );
}

#[test]
fn queued_jobs_start_only_once_admitted_and_a_failed_request_is_retried_elsewhere() {
    let report = run("queued-training");
    assert_healthy("queued-training", &report);
    let job = |name: &str| {
        report
            .jobs
            .iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("job {name}"))
    };
    let train = job("train-llm");
    let admitted = train.admitted_at_seconds.expect("train-llm admitted");
    // The first request failed in the pool without capacity; Kueue's retry was served.
    assert_eq!(train.provisioning_requests, Some(2), "{train:?}");
    assert!(
        admitted >= train.arrival_seconds + 60.0,
        "admitted only after Kueue's 60 s backoff: {train:?}"
    );
    // Time to start counts from the arrival, queueing included, and no pod started
    // before the job was admitted.
    let start = train.arrival_seconds + train.time_to_start_seconds.expect("started");
    assert!(start >= admitted, "{train:?}");
    assert!(
        report
            .planner_events
            .get("ProvisioningFailed")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{:?}",
        report.planner_events
    );
    assert_eq!(
        report
            .groups
            .iter()
            .find(|g| g.name == "gpu-usw2a")
            .unwrap()
            .peak,
        0,
        "nothing bills in the pool without capacity"
    );
    let second = report
        .groups
        .iter()
        .find(|g| g.name == "gpu-usw2b")
        .unwrap();
    assert!(
        second.peak >= 4,
        "the retry is served by the second pool: {second:?}"
    );
    // check-capacity on the CPU nodes that were there: admitted at once, nothing bought.
    let nightly = job("nightly-report");
    assert_eq!(nightly.provisioning_requests, Some(1), "{nightly:?}");
    assert!(
        nightly.admitted_at_seconds.expect("nightly admitted") - nightly.arrival_seconds <= 30.0,
        "{nightly:?}"
    );
    let cpu = report
        .groups
        .iter()
        .find(|g| g.name == "cpu-usw2a")
        .unwrap();
    assert_eq!(cpu.peak, 2, "check-capacity never buys: {cpu:?}");
    assert!(
        report
            .planner_events
            .get("Provisioned")
            .copied()
            .unwrap_or(0)
            >= 2,
        "{:?}",
        report.planner_events
    );
}

#[test]
fn gpu_group_scales_from_zero_and_back_to_zero() {
    let report = run("gpu-from-zero");
    assert_healthy("gpu-from-zero", &report);
    let gpu = |s: &sim::report::SampleReport| s.nodes["gpu-usw2a"];
    assert_eq!(gpu(&report.timeline[0]), 0);
    assert!(report.timeline.iter().any(|s| gpu(s) > 0));
    assert_eq!(gpu(report.timeline.last().unwrap()), 0);
    // The always-on CPU group never went below its minimum of one.
    assert!(report.timeline.iter().all(|s| s.nodes["cpu-usw2a"] >= 1));
}

#[test]
fn mixed_short_long_retires_instead_of_killing() {
    let report = run("mixed-short-long");
    assert_healthy("mixed-short-long", &report);
    assert!(
        report.retire_calls > 0,
        "long Job pods' nodes are retired, not drained"
    );
}

#[test]
fn custom_owners_and_low_priority_job_pods_are_retired_around_never_evicted() {
    let report = run("custom-owners");
    assert_healthy("custom-owners", &report);
    assert_eq!(report.pods.killed_by_scale_in, 0);
    assert_eq!(report.evictions, 0, "every pod of the example must finish");
    assert!(
        report.retire_calls > 0,
        "their under-used nodes are retired"
    );
    let owner = |job: &str| {
        report
            .jobs
            .iter()
            .find(|j| j.name == job)
            .and_then(|j| j.owner.clone())
    };
    assert_eq!(owner("argo-steps").as_deref(), Some("argoproj.io/Workflow"));
    assert_eq!(
        owner("pytorch-workers").as_deref(),
        Some("kubeflow.org/PyTorchJob")
    );
    assert_eq!(owner("spark-executors").as_deref(), Some("Pod"));
    assert_eq!(owner("scavenger").as_deref(), Some("batch/Job"));
    // Below the expendable cutoff the scavengers trigger no scale-up: they start on
    // room the other work brought.
    let scavenger = report.jobs.iter().find(|j| j.name == "scavenger").unwrap();
    assert_eq!(scavenger.completed, scavenger.pods);
}

#[test]
fn handling_spot_interruptions_kills_fewer_pods_and_restarts_them_sooner() {
    let handled = run("spot-interruptions");
    assert_healthy("spot-interruptions", &handled);
    let mut scenario = example("spot-interruptions");
    scenario.settings.interruption_handling = false;
    let unhandled = sim::simulate(&scenario, &SimOptions::default()).expect("the example runs");
    assert!(handled.interruptions > 0 && unhandled.interruptions > 0);
    assert!(handled.interrupted_instances.iter().all(|i| i.notified));
    assert!(unhandled.interrupted_instances.iter().all(|i| !i.notified));
    // Without notices the planner keeps buying the cheapest, flaky pool; with them it
    // backs the pool off and new work goes to the steady pool.
    let group = |r: &Report, name: &str| r.groups.iter().find(|g| g.name == name).unwrap().clone();
    assert_eq!(group(&unhandled, "spot-steady").launched, 0);
    assert!(group(&handled, "spot-steady").launched > 0);
    assert!(
        handled
            .planner_events
            .get("PoolBackedOff")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{:?}",
        handled.planner_events
    );
    assert!(
        group(&handled, "spot-flaky").interruptions * 2
            < group(&unhandled, "spot-flaky").interruptions
    );
    // Fewer pods killed and less work thrown away, by far; restarts no slower.
    let (killed, killed_unhandled) = (
        handled.pods.killed_by_interruption,
        unhandled.pods.killed_by_interruption,
    );
    assert!(
        killed > 0 && killed * 3 < killed_unhandled,
        "{killed} vs {killed_unhandled}"
    );
    assert!(handled.work_lost_pod_hours * 3.0 < unhandled.work_lost_pod_hours);
    assert!(handled.work_lost_node_hours * 3.0 < unhandled.work_lost_node_hours);
    assert!(handled.time_to_restart_seconds.p95 <= unhandled.time_to_restart_seconds.p95);
    assert!(
        handled.mean_time_to_restart_seconds < unhandled.mean_time_to_restart_seconds,
        "{} vs {}",
        handled.mean_time_to_restart_seconds,
        unhandled.mean_time_to_restart_seconds
    );
    assert!(
        handled.node_hours < unhandled.node_hours,
        "{} vs {}",
        handled.node_hours,
        unhandled.node_hours
    );
    assert!(handled.detach_calls > 0 && unhandled.detach_calls == 0);
    // Both get the work done, and an interruption is never a scale-in kill.
    assert_eq!(unhandled.pods.completed, unhandled.pods.total);
    assert_eq!(unhandled.pods.killed_by_scale_in, 0);
}

#[test]
fn same_scenario_and_seed_give_identical_reports() {
    for name in EXAMPLES {
        let a = run(name);
        let b = run(name);
        assert_eq!(a.to_json(), b.to_json(), "{name}: reports differ");
        assert_eq!(
            sim::plot::svg(&a),
            sim::plot::svg(&b),
            "{name}: plots differ"
        );
    }
}

#[test]
fn the_seed_changes_drawn_durations() {
    let a = sim::simulate(&example("cpu-burst"), &SimOptions::default()).unwrap();
    let b = sim::simulate(&example("cpu-burst").with_seed(99), &SimOptions::default()).unwrap();
    assert_eq!(b.seed, 99);
    assert_ne!(a.to_json(), b.to_json());
}

#[test]
fn idle_node_hours_by_cause_add_up_to_the_billed_node_hours() {
    for name in EXAMPLES {
        let r = run(name);
        let i = &r.idle_node_hours;
        let causes = i.booting
            + i.waiting_out_unneeded_time
            + i.warm_spare_or_held
            + i.held_by_straggler
            + i.unused_beside_work
            + i.removing;
        assert!((causes - i.total).abs() < 1e-3, "{name}: {i:?}");
        assert!(
            (r.working_node_hours + i.total - r.node_hours).abs() < 1e-3,
            "{name}: {} working + {} idle != {} billed",
            r.working_node_hours,
            i.total,
            r.node_hours
        );
        assert!(
            r.working_node_hours <= r.node_hours && i.booting > 0.0,
            "{name}: {i:?}"
        );
    }
}

#[test]
fn recurring_bursts_keep_their_nodes_across_gaps_shorter_than_a_boot_only() {
    let r = run("recurring-bursts");
    let launched = |g: &str| r.groups.iter().find(|x| x.name == g).expect(g).launched;
    // 21 pods of 2 cores fill 7 nodes of 8 cores, 3 to a node.
    assert_eq!(launched("short-gaps"), 7, "kept across every 90 s gap");
    assert_eq!(
        launched("long-gaps"),
        7 * 8,
        "given back in every 3 min gap and bought again"
    );
}

/// Cluster Autoscaler's timers (10 minutes unneeded, 10 minutes' pause after any
/// scale-up) against the defaults, on every example.
#[test]
fn the_batch_defaults_spend_less_than_cluster_autoscaler_s_timers_and_start_pods_as_fast() {
    for name in EXAMPLES {
        let batch = run(name);
        let mut scenario = example(name);
        scenario.settings.scale_down_unneeded_time = std::time::Duration::from_secs(600).into();
        scenario.settings.scale_down_delay_after_add = std::time::Duration::from_secs(600).into();
        let ca = sim::simulate(&scenario, &SimOptions::default()).expect("runs");
        assert!(
            batch.node_hours < ca.node_hours,
            "{name}: {} vs CA's {}",
            batch.node_hours,
            ca.node_hours
        );
        assert!(
            batch.time_to_start_seconds.p95 <= ca.time_to_start_seconds.p95,
            "{name}: p95 {} vs CA's {}",
            batch.time_to_start_seconds.p95,
            ca.time_to_start_seconds.p95
        );
        assert_eq!(batch.pods.killed_by_scale_in, 0, "{name}");
    }
}
