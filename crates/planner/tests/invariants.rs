//! Property tests of the planner's invariants over random clusters and random event
//! orders. The world's `apply` asserts on every action: never above a group's max,
//! never a desired capacity below the running instances, never terminate a node with
//! a pod on it, never evict a pod that must finish. The world races the planner:
//! between the actions of one pass, pods are bound (by a scheduler that has not seen
//! a fresh fence yet) and pods finish; and the cloud may throttle detaches,
//! terminations and target changes for a while (issue 20).

mod common;

use common::*;
use model::*;
use planner::{Planner, PlannerSettings};
use proptest::prelude::*;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Step {
    Pass(u64),
    /// A pass during which the world moves on between actions (seeded choices).
    RacingPass(u64, u64),
    RegisterAll,
    Schedule,
    FinishSome(usize),
    NewPods(u8),
    /// An interruption notice of some kind for some node's instance.
    Interrupt(usize, u8),
    /// EC2 takes an instance back: its node and the pods on it are gone (not the
    /// planner's doing, so no safety assertion applies to it).
    Reclaim(usize),
    /// From now on these cloud calls are throttled (bit 0 DetachInstance, 1
    /// TerminateInstance, 2 SetTargetSize; 0 ends it): they fail and change nothing.
    Throttle(u8),
    /// From now on these cloud calls are refused for good (same bits as `Throttle`).
    Refuse(u8),
    /// Describes lag one snapshot behind (true) or not (false).
    DescribeLag(bool),
    /// A node's providerID is gone (not set yet by a slow cloud controller, or a
    /// kubelet registered without one): the node no longer names its instance, which
    /// still runs it.
    ProviderLess(usize),
    /// A Node object is deleted while its kubelet and pods run on (it registers again
    /// on the next `RegisterAll`).
    DeleteNode(usize),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..400).prop_map(Step::Pass),
        2 => ((1u64..400), any::<u64>()).prop_map(|(secs, seed)| Step::RacingPass(secs, seed)),
        2 => Just(Step::RegisterAll),
        2 => Just(Step::Schedule),
        2 => (0usize..1000).prop_map(Step::FinishSome),
        1 => (1u8..10).prop_map(Step::NewPods),
        1 => ((0usize..1000), (0u8..4)).prop_map(|(n, k)| Step::Interrupt(n, k)),
        1 => (0usize..1000).prop_map(Step::Reclaim),
        1 => (0u8..8).prop_map(Step::Throttle),
        1 => (0u8..8).prop_map(Step::Refuse),
        1 => any::<bool>().prop_map(Step::DescribeLag),
        1 => (0usize..1000).prop_map(Step::ProviderLess),
        1 => (0usize..1000).prop_map(Step::DeleteNode),
    ]
}

fn world_strategy() -> impl Strategy<Value = World> {
    let groups = prop::collection::vec((1u32..5, 0u32..3, 1u32..12, any::<bool>()), 1..4);
    let pods = prop::collection::vec(
        (
            100i64..12_000,
            0i64..40,
            0u8..9,
            any::<bool>(),
            prop::sample::select(vec![0, 0, 5, -20, -100]),
        ),
        0..40,
    );
    (groups, pods).prop_map(|(groups, pods)| {
        let sizes = [2u32, 4, 8, 16];
        let gs = groups
            .iter()
            .enumerate()
            .map(|(i, (size, min, max, gpu))| {
                let vcpus = sizes[*size as usize % 4];
                let mut g = group(
                    &format!("g{i}"),
                    if i == 2 { "us-east-1" } else { "us-west-2" },
                    "z",
                    vcpus,
                    u64::from(vcpus) * 4,
                    u32::from(*gpu),
                    (*max).max(*min),
                );
                g.spec.min_size = *min;
                // Two zones: a pool backed off in one leaves the group open in the other.
                g.spec.zones.push(Zone::new("z2"));
                g
            })
            .collect();
        let mut w = World::new(gs);
        for (i, (cpu, mem, kind, gpu, priority)) in pods.into_iter().enumerate() {
            let owner = match kind {
                0 => Owner::Job("job".into()),
                1 => Owner::Bare,
                2 | 6 | 7 => Owner::replica_set("web"),
                3 => Owner::controller("argoproj.io", "Workflow", "wf"),
                4 => Owner::controller("kubeflow.org", "PyTorchJob", "train"),
                5 => Owner::of_controller("v1", "Pod", "spark-driver"),
                _ => Owner::Job("other".into()),
            };
            let mut p = pod(&format!("p{i}"), cpu, mem.max(1) / 4 + 1, owner);
            p.priority = priority;
            match kind {
                6 => p.do_not_disrupt = true,
                7 => p.safe_to_evict = Some(SafeToEvict::False),
                _ => {}
            }
            if gpu && i % 3 == 0 {
                p.requests.add_extended("nvidia.com/gpu", 1);
            }
            w.pods.push(p);
        }
        w
    })
}

/// The cloud calls of a mask: bit 0 DetachInstance, 1 TerminateInstance, 2 SetTargetSize.
fn cloud_calls(mask: u8) -> Vec<&'static str> {
    ["DetachInstance", "TerminateInstance", "SetTargetSize"]
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, kind)| kind)
        .collect()
}

fn apply(w: &mut World, p: &mut Planner, step: &Step, counter: &mut u32) {
    match step {
        Step::Pass(secs) => {
            w.step(p, *secs);
        }
        Step::RacingPass(secs, seed) => {
            let mut state = *seed;
            let mut next = move || {
                // SplitMix64: deterministic per case, so a failure shrinks and replays.
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            w.step_racing(p, *secs, &mut |w: &mut World| match next() % 4 {
                0 | 1 if !w.nodes.is_empty() && !w.pods.is_empty() => {
                    let pod = (next() % w.pods.len() as u64) as usize;
                    let node = (next() % w.nodes.len() as u64) as usize;
                    w.bind_racing(pod, node);
                }
                2 => {
                    let running: Vec<usize> = w
                        .pods
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.phase == PodPhase::Running)
                        .map(|(i, _)| i)
                        .collect();
                    if !running.is_empty() {
                        let i = running[(next() % running.len() as u64) as usize];
                        w.pods[i].phase = PodPhase::Succeeded;
                    }
                }
                _ => {}
            });
        }
        Step::RegisterAll => w.register_all(),
        Step::Schedule => w.schedule(),
        Step::FinishSome(seed) => {
            let running: Vec<usize> = w
                .pods
                .iter()
                .enumerate()
                .filter(|(_, p)| p.phase == PodPhase::Running)
                .map(|(i, _)| i)
                .collect();
            if !running.is_empty() {
                let i = running[seed % running.len()];
                w.pods[i].phase = PodPhase::Succeeded;
            }
        }
        Step::Interrupt(n, kind) => {
            if let Some(instance) = (!w.nodes.is_empty())
                .then(|| w.nodes[n % w.nodes.len()].instance.clone())
                .flatten()
            {
                let kind = [
                    InterruptionKind::SpotInterruption,
                    InterruptionKind::RebalanceRecommendation,
                    InterruptionKind::StateChange,
                    InterruptionKind::ScheduledChange,
                ][usize::from(*kind) % 4];
                p.handle_interruption(w.now, InterruptionNotice::new(instance, kind, w.now));
            }
        }
        Step::Reclaim(n) => {
            if !w.nodes.is_empty() {
                let node = w.nodes.remove(n % w.nodes.len());
                if let Some(instance) = &node.instance {
                    for g in &mut w.groups {
                        g.instances.retain(|i| &i.id != instance);
                    }
                }
                w.pods.retain(|p| p.node.as_ref() != Some(&node.name));
            }
        }
        Step::Throttle(mask) => w.throttled = cloud_calls(*mask),
        Step::Refuse(mask) => w.refused = cloud_calls(*mask),
        Step::DescribeLag(lag) => w.describe_lag = *lag,
        Step::ProviderLess(n) => {
            if !w.nodes.is_empty() {
                let i = n % w.nodes.len();
                w.nodes[i].instance = None;
            }
        }
        Step::DeleteNode(n) => {
            if !w.nodes.is_empty() {
                w.nodes.remove(n % w.nodes.len());
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
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Never above max, never a pod killed, never a must-finish pod evicted, whatever
    /// happens and whenever it happens.
    #[test]
    fn safety_holds_under_random_event_orders(mut w in world_strategy(), steps in prop::collection::vec(step_strategy(), 1..60)) {
        let settings = PlannerSettings { scale_down_unneeded_time: Duration::from_secs(120).into(), ..settings() };
        w.settings = settings.clone();
        let mut p = Planner::new(settings).unwrap();
        let mut counter = 0;
        for step in &steps {
            apply(&mut w, &mut p, step, &mut counter);
            for g in &w.groups {
                prop_assert!(g.target <= g.spec.max_size);
                // After any action: AWS is never left to pick instances to terminate.
                let live = g.instances.iter().filter(|i| i.state != InstanceState::Terminating).count() as u32;
                prop_assert!(g.target >= live, "desired {} below {} live instances of {}", g.target, live, g.spec.id);
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
