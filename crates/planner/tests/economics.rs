//! Batch-aware scale-down (issue 14) under the default `auto` timers: an empty node
//! is kept for its group's boot time (the ski-rental break-even), a scale-up pauses
//! nothing, a node a pending pod could use is kept, and a node a pod is known to hold
//! for long is left open rather than retired. Cluster Autoscaler's fixed timers are
//! still honoured when set.

mod common;

use common::*;
use model::*;
use planner::{Action, Planner, PlannerSettings};
use std::time::Duration;

const BOOT: u64 = 120;

fn batch_world(groups: Vec<NodeGroupState>) -> (World, Planner) {
    let settings = PlannerSettings::default();
    let mut world = World::new(groups);
    world.settings = settings.clone();
    (world, Planner::new(settings).unwrap())
}

/// One wave: a pod arrives, the planner buys a node if none is there, the node boots
/// for `BOOT` seconds, the pod runs ten minutes and finishes.
fn wave(world: &mut World, planner: &mut Planner, name: &str) {
    world.pods.push(job_pod(name, 3000, 4));
    world.step(planner, 10);
    if world.nodes.is_empty() {
        world.step(planner, BOOT);
        world.register_all();
    }
    world.schedule();
    assert!(world.pods.last().unwrap().node.is_some(), "{name} runs");
    for _ in 0..60 {
        world.step(planner, 10);
    }
    world.finish(name);
}

/// Steps through a gap of `gap` seconds, 10 s at a time; returns the instances
/// terminated and when (seconds into the gap).
fn gap(world: &mut World, planner: &mut Planner, gap: u64) -> Vec<(u64, String)> {
    let mut gone = Vec::new();
    let mut t = 0;
    while t < gap {
        t += 10;
        for i in World::terminations(&world.step(planner, 10)) {
            gone.push((t, i));
        }
    }
    gone
}

fn launches(world: &World) -> u32 {
    world.next_instance
}

#[test]
fn recurring_work_with_gaps_shorter_than_a_boot_keeps_its_nodes() {
    let (mut world, mut planner) =
        batch_world(vec![group("ci", "us-west-2", "us-west-2a", 4, 16, 0, 5)]);
    for n in 0..4 {
        wave(&mut world, &mut planner, &format!("wave-{n}"));
        let gone = gap(&mut world, &mut planner, 90);
        assert!(
            gone.is_empty(),
            "a 90 s gap with a {BOOT} s boot keeps the node: {gone:?}"
        );
    }
    assert_eq!(launches(&world), 1, "one node served every wave");
}

#[test]
fn recurring_work_with_gaps_longer_than_a_boot_gives_its_nodes_back() {
    let (mut world, mut planner) =
        batch_world(vec![group("ci", "us-west-2", "us-west-2a", 4, 16, 0, 5)]);
    for n in 0..3 {
        wave(&mut world, &mut planner, &format!("wave-{n}"));
        let gone = gap(&mut world, &mut planner, 240);
        assert_eq!(
            gone.len(),
            1,
            "a 240 s gap with a {BOOT} s boot gives the node back: {gone:?}"
        );
        let (at, _) = &gone[0];
        // Not before the break-even (the boot time), and not much after it (the
        // decision is confirmed and the node fenced first).
        assert!(
            (BOOT..=BOOT + 40).contains(at),
            "removed {at} s into the gap"
        );
    }
    assert_eq!(launches(&world), 3, "each wave bought its node again");
}

#[test]
fn an_empty_node_is_kept_for_at_least_the_billing_minimum_when_it_booted_fast() {
    let (mut world, mut planner) =
        batch_world(vec![group("ci", "us-west-2", "us-west-2a", 4, 16, 0, 5)]);
    world.pods.push(job_pod("only", 3000, 4));
    world.step(&mut planner, 10);
    world.step(&mut planner, 20); // a 20 s boot
    world.register_all();
    world.schedule();
    world.step(&mut planner, 10);
    world.finish("only");
    let gone = gap(&mut world, &mut planner, 300);
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(
        gone[0].0 >= 60,
        "kept 60 s at least (EC2's minimum bill), removed after {} s",
        gone[0].0
    );
}

#[test]
fn a_scale_up_of_one_group_does_not_pause_scale_down_of_another_unless_ca_s_delay_is_set() {
    for (delay, removed) in [(None, true), (Some(Duration::from_secs(600)), false)] {
        let mut groups = vec![
            group("cpu", "us-west-2", "us-west-2a", 4, 16, 0, 5),
            group("gpu", "us-west-2", "us-west-2a", 8, 32, 0, 20),
        ];
        groups[1].spec.labels.insert("pool", "gpu");
        let (mut world, _) = batch_world(groups);
        if let Some(d) = delay {
            world.settings.scale_down_delay_after_add = d.into();
        }
        let mut planner = Planner::new(world.settings.clone()).unwrap();
        wave(&mut world, &mut planner, "cpu-work");
        // From now on the other group scales up on every pass.
        let mut gone = Vec::new();
        for n in 0..30 {
            let mut p = job_pod(&format!("gpu-{n}"), 6000, 4);
            p.node_selector.insert("pool", "gpu");
            world.pods.push(p);
            let actions = world.step(&mut planner, 10);
            assert!(
                !World::scale_ups(&actions).is_empty() || n > 0,
                "the other group scales up"
            );
            gone.extend(World::terminations(&actions));
        }
        assert_eq!(
            !gone.is_empty(),
            removed,
            "delay {delay:?}: removed {gone:?}"
        );
    }
}

#[test]
fn an_empty_node_a_pending_pod_could_use_is_not_removed() {
    let (mut world, mut planner) =
        batch_world(vec![group("ci", "us-west-2", "us-west-2a", 4, 16, 0, 5)]);
    wave(&mut world, &mut planner, "first");
    // A pod the scheduler has not bound yet (not yet marked unschedulable either).
    let mut next = job_pod("next", 3000, 4);
    next.unschedulable = false;
    world.pods.push(next);
    let gone = gap(&mut world, &mut planner, 600);
    assert!(
        gone.is_empty(),
        "the node the pending pod will land on stays: {gone:?}"
    );
}

fn retirements(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::RetireNode { .. }))
        .count()
}

#[test]
fn a_node_a_pod_is_known_to_hold_for_long_is_left_open_not_retired() {
    for (hold, fixed, retired) in [
        (Duration::from_secs(3 * 3600), false, false),
        (Duration::from_secs(20 * 60), false, true),
        (Duration::from_secs(3 * 3600), true, true),
    ] {
        let (mut world, _) = batch_world(vec![group("ci", "us-west-2", "us-west-2a", 8, 32, 0, 5)]);
        if fixed {
            world.settings.scale_down_unneeded_time = Duration::from_secs(600).into();
        }
        let mut planner = Planner::new(world.settings.clone()).unwrap();
        let mut long = job_pod("long", 1000, 1);
        long.expected_duration = Some(hold + Duration::from_secs(30 * 60));
        world.pods.push(long);
        world.step(&mut planner, 10);
        world.step(&mut planner, BOOT);
        world.register_all();
        world.schedule();
        // Under-utilised (1 of 8 cores) for half an hour.
        let mut n = 0;
        for _ in 0..180 {
            n += retirements(&world.step(&mut planner, 10));
        }
        assert_eq!(
            n > 0,
            retired,
            "hold {hold:?}, fixed timers {fixed}: retired {n}"
        );
    }
}
