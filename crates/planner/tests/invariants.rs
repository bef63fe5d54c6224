//! Property tests of the planner's invariants over random clusters and random event
//! orders. The world's `apply` asserts on every action: never above a group's max,
//! never terminate a node with a running batch pod, never evict a batch pod.

mod common;

use common::*;
use model::*;
use planner::{Planner, PlannerSettings};
use proptest::prelude::*;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Step {
    Pass(u64),
    RegisterAll,
    Schedule,
    FinishSome(usize),
    NewPods(u8),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u64..400).prop_map(Step::Pass),
        2 => Just(Step::RegisterAll),
        2 => Just(Step::Schedule),
        2 => (0usize..1000).prop_map(Step::FinishSome),
        1 => (1u8..10).prop_map(Step::NewPods),
    ]
}

fn world_strategy() -> impl Strategy<Value = World> {
    let groups = prop::collection::vec((1u32..5, 0u32..3, 1u32..12, any::<bool>()), 1..4);
    let pods = prop::collection::vec((100i64..12_000, 0i64..40, 0u8..4, any::<bool>()), 0..40);
    (groups, pods).prop_map(|(groups, pods)| {
        let sizes = [2u32, 4, 8, 16];
        let gs = groups
            .iter()
            .enumerate()
            .map(|(i, (size, min, max, gpu))| {
                let vcpus = sizes[*size as usize % 4];
                let mut g = group(&format!("g{i}"), if i == 2 { "us-east-1" } else { "us-west-2" }, "z", vcpus, u64::from(vcpus) * 4, u32::from(*gpu), (*max).max(*min));
                g.spec.min_size = *min;
                g
            })
            .collect();
        let mut w = World::new(gs);
        for (i, (cpu, mem, kind, gpu)) in pods.into_iter().enumerate() {
            let owner = match kind {
                0 => Owner::Job("job".into()),
                1 => Owner::Bare,
                2 => Owner::replica_set("web"),
                _ => Owner::Job("other".into()),
            };
            let mut p = pod(&format!("p{i}"), cpu, mem.max(1) / 4 + 1, owner);
            if gpu && i % 3 == 0 {
                p.requests.add_extended("nvidia.com/gpu", 1);
            }
            w.pods.push(p);
        }
        w
    })
}

fn apply(w: &mut World, p: &mut Planner, step: &Step, counter: &mut u32) {
    match step {
        Step::Pass(secs) => {
            w.step(p, *secs);
        }
        Step::RegisterAll => w.register_all(),
        Step::Schedule => w.schedule(),
        Step::FinishSome(seed) => {
            let running: Vec<usize> = w.pods.iter().enumerate().filter(|(_, p)| p.phase == PodPhase::Running).map(|(i, _)| i).collect();
            if !running.is_empty() {
                let i = running[seed % running.len()];
                w.pods[i].phase = PodPhase::Succeeded;
            }
        }
        Step::NewPods(n) => {
            for _ in 0..*n {
                *counter += 1;
                w.pods.push(job_pod(&format!("new{counter}"), 1500, 2));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Never above max, never a batch pod killed or evicted, whatever happens.
    #[test]
    fn safety_holds_under_random_event_orders(mut w in world_strategy(), steps in prop::collection::vec(step_strategy(), 1..60)) {
        let mut p = Planner::new(PlannerSettings { scale_down_unneeded_time: Duration::from_secs(120), ..settings() }).unwrap();
        let mut counter = 0;
        for step in &steps {
            apply(&mut w, &mut p, step, &mut counter);
            for g in &w.groups {
                prop_assert!(g.target <= g.spec.max_size);
            }
        }
    }

    /// While nodes boot and nothing else changes, pods never trigger a second scale-up.
    #[test]
    fn no_second_scale_up_for_the_same_pods(mut w in world_strategy(), passes in 1usize..6) {
        let mut p = Planner::new(settings()).unwrap();
        w.step(&mut p, 10);
        for _ in 0..passes {
            let acts = w.step(&mut p, 10);
            prop_assert!(World::scale_ups(&acts).is_empty(), "{:?}", acts);
        }
        // Some nodes register (in any order relative to the group's target): the pods
        // are still covered by registered plus upcoming capacity.
        let registered_half: Vec<_> = w.groups.iter().map(|g| g.instances.len() / 2).collect();
        let full: Vec<_> = w.groups.iter().map(|g| g.instances.clone()).collect();
        for (g, half) in w.groups.iter_mut().zip(&registered_half) {
            g.instances.truncate(*half);
        }
        w.register_all();
        for (g, instances) in w.groups.iter_mut().zip(full) {
            g.instances = instances;
        }
        let acts = w.step(&mut p, 10);
        prop_assert!(World::scale_ups(&acts).is_empty(), "{:?}", acts);
    }

    /// An unsynced snapshot never leads to an action.
    #[test]
    fn never_acts_before_the_snapshot_is_synced(mut w in world_strategy(), passes in 1usize..5) {
        w.synced = false;
        let mut p = Planner::new(settings()).unwrap();
        for _ in 0..passes {
            prop_assert!(w.step(&mut p, 30).is_empty());
        }
    }
}
