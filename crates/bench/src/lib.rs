//! The planner at scale: deterministic synthetic snapshots ([`generate`]) and timings of
//! the real planner on them ([`run`]), reached as `batch-autoscaler bench`.
//!
//! What is measured, on one thread:
//! - **scale-up plan**: `Planner::handle_snapshot` of a fresh planner (scale-down off)
//!   on the snapshot with its pending pods unschedulable: the whole pass, from the
//!   per-pass indexes to the last `SetTargetSize`.
//! - **scale-down pass**: `Planner::handle_snapshot` on the same cluster ten minutes
//!   and one revision after a first (untimed) pass, so under-utilised nodes have been
//!   unneeded long enough and the drain simulation runs in full. The pending pods are
//!   still there (they keep nodes they could use) but are not yet marked unschedulable,
//!   so the timed pass is the scale-down work, not a second scale-up.
//! - **CPU time** of each pass as well as wall time: the thread's time on a core
//!   (`/proc/thread-self/schedstat`, to within a scheduler tick), which time spent
//!   preempted by other work on a shared machine does not inflate.
//! - **peak RSS**: the process's high-water mark (`VmHWM`) after both, snapshot held:
//!   everything the process ever held at once, the generator's own temporaries
//!   included. `snapshot_rss_mb` is the resident set right after generation, the part
//!   that is the snapshot rather than the planner.
//!
//! This crate owns measurement only; it never changes what the planner decides and
//! has no async runtime, Kubernetes or AWS dependency. Timings are figures to read,
//! not assertions.

pub mod generate;

pub use generate::{generate, ClusterSize, NOW};

use model::{ClusterSnapshot, Time};
use planner::{Action, Planner, PlannerSettings};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchConfig {
    pub size: ClusterSize,
    pub seed: u64,
    /// Timed repetitions of each pass (at least 1).
    pub runs: usize,
}

/// Median and 95th percentile of a set of timings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// Nearest-rank percentiles of `samples` (not empty).
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Self {
            median: rank(0.5),
            p95: rank(0.95),
            min: ms[0],
            max: ms[ms.len() - 1],
        }
    }
}

/// The figures of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub nodes: usize,
    pub groups: usize,
    pub pending_pods: usize,
    pub running_pods: usize,
    pub generate_ms: f64,
    pub scale_up_plan_ms: Stats,
    pub scale_down_pass_ms: Stats,
    /// The same passes in CPU time of the planning thread, where `/proc` has it.
    pub scale_up_cpu_ms: Option<Stats>,
    pub scale_down_cpu_ms: Option<Stats>,
    /// Actions of one scale-up plan: target changes and the new nodes they ask for.
    pub scale_up_targets: usize,
    pub scale_up_new_nodes: u64,
    /// Actions of one scale-down pass (retire, evict, terminate, idle marks…).
    pub scale_down_actions: usize,
    /// `VmHWM` in MiB, where `/proc` has it.
    pub peak_rss_mb: Option<f64>,
    /// `VmRSS` in MiB right after the snapshot was generated, before any planning.
    pub snapshot_rss_mb: Option<f64>,
    /// FNV-1a of the actions and events of the last scale-up plan and scale-down pass:
    /// equal digests before and after a change to the planner mean the same decisions.
    pub plan_digest: u64,
}

/// FNV-1a, folded over text (stable across platforms and releases, unlike `DefaultHasher`).
fn fnv1a(mut hash: u64, text: &str) -> u64 {
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn digest(hash: u64, planner: &mut Planner) -> (u64, Vec<Action>) {
    let mut hash = hash;
    while let Some((at, event)) = planner.poll_event() {
        hash = fnv1a(hash, &format!("{at:?}{event:?}"));
    }
    let actions: Vec<Action> = std::iter::from_fn(|| planner.poll_action()).collect();
    for a in &actions {
        hash = fnv1a(hash, &format!("{a:?}"));
    }
    (hash, actions)
}

impl BenchReport {
    /// One JSON object (`scale_up_plan_ms.{median,p95}`, `scale_down_pass_ms.{median,p95}`,
    /// `peak_rss_mb`, sizes and counts). Numbers only, so it is written by hand.
    pub fn to_json(&self) -> String {
        let stats = |s: &Stats| {
            format!(
                "{{\"median\":{:.3},\"p95\":{:.3},\"min\":{:.3},\"max\":{:.3}}}",
                s.median, s.p95, s.min, s.max
            )
        };
        let mb = |m: Option<f64>| m.map_or_else(|| "null".to_owned(), |m| format!("{m:.1}"));
        let cpu = |s: &Option<Stats>| s.as_ref().map_or_else(|| "null".to_owned(), stats);
        format!(
            concat!(
                "{{\"nodes\":{},\"pending_pods\":{},\"groups\":{},\"running_pods\":{},\"seed\":{},\"runs\":{},",
                "\"generate_ms\":{:.1},\"scale_up_plan_ms\":{},\"scale_down_pass_ms\":{},",
                "\"scale_up_cpu_ms\":{},\"scale_down_cpu_ms\":{},",
                "\"scale_up_targets\":{},\"scale_up_new_nodes\":{},\"scale_down_actions\":{},\"plan_digest\":\"{:016x}\",",
                "\"peak_rss_mb\":{},\"snapshot_rss_mb\":{}}}"
            ),
            self.nodes,
            self.pending_pods,
            self.groups,
            self.running_pods,
            self.config.seed,
            self.config.runs.max(1),
            self.generate_ms,
            stats(&self.scale_up_plan_ms),
            stats(&self.scale_down_pass_ms),
            cpu(&self.scale_up_cpu_ms),
            cpu(&self.scale_down_cpu_ms),
            self.scale_up_targets,
            self.scale_up_new_nodes,
            self.scale_down_actions,
            self.plan_digest,
            mb(self.peak_rss_mb),
            mb(self.snapshot_rss_mb),
        )
    }

    /// The figures as text.
    pub fn summary(&self) -> String {
        let mib =
            |m: Option<f64>| m.map_or_else(|| "unknown".to_owned(), |m| format!("{m:.1} MiB"));
        let cpu = |s: &Option<Stats>| {
            s.as_ref().map_or_else(
                || "unknown".to_owned(),
                |s| format!("median {:.1} ms, p95 {:.1} ms", s.median, s.p95),
            )
        };
        format!(
            concat!(
                "cluster: {} nodes, {} groups, {} running pods, {} pending pods (seed {}, generated in {:.0} ms)\n",
                "scale-up plan:    median {:.1} ms, p95 {:.1} ms over {} run(s) ({} group(s) scaled up, {} new node(s))\n",
                "  CPU time:       {}\n",
                "scale-down pass:  median {:.1} ms, p95 {:.1} ms over {} run(s) ({} action(s))\n",
                "  CPU time:       {}\n",
                "peak RSS:         {} (snapshot alone: {})\n",
                "plan digest:      {:016x}\n"
            ),
            self.nodes,
            self.groups,
            self.running_pods,
            self.pending_pods,
            self.config.seed,
            self.generate_ms,
            self.scale_up_plan_ms.median,
            self.scale_up_plan_ms.p95,
            self.config.runs.max(1),
            self.scale_up_targets,
            self.scale_up_new_nodes,
            cpu(&self.scale_up_cpu_ms),
            self.scale_down_pass_ms.median,
            self.scale_down_pass_ms.p95,
            self.config.runs.max(1),
            self.scale_down_actions,
            cpu(&self.scale_down_cpu_ms),
            mib(self.peak_rss_mb),
            mib(self.snapshot_rss_mb),
            self.plan_digest,
        )
    }
}

fn fresh_planner(settings: &PlannerSettings) -> Planner {
    Planner::new(settings.clone()).expect("default settings are valid")
}

fn drain(planner: &mut Planner) -> Vec<Action> {
    while planner.poll_event().is_some() {}
    std::iter::from_fn(|| planner.poll_action()).collect()
}

/// Generates the snapshot and times the passes.
pub fn run(config: BenchConfig) -> BenchReport {
    let runs = config.runs.max(1);
    let started = Instant::now();
    let mut snapshot = generate(config.size, config.seed);
    let generate_ms = started.elapsed().as_secs_f64() * 1000.0;
    let snapshot_rss_mb = rss_mb("VmRSS:");

    let scale_up_settings = PlannerSettings {
        scale_down_enabled: false,
        ..PlannerSettings::default()
    };
    let mut up_times = Vec::with_capacity(runs);
    let mut up_cpu = Vec::with_capacity(runs);
    let (mut scale_up_targets, mut scale_up_new_nodes) = (0, 0);
    let mut up_digest = 0;
    let mut plan_digest = 0;
    for _ in 0..runs {
        let mut planner = fresh_planner(&scale_up_settings);
        let (t, cpu) = (Instant::now(), thread_cpu());
        planner.handle_snapshot(NOW, &snapshot);
        up_times.push(t.elapsed());
        up_cpu.push(cpu.and_then(|before| Some(thread_cpu()?.saturating_sub(before))));
        let (hash, actions) = digest(0xcbf2_9ce4_8422_2325, &mut planner);
        up_digest = hash;
        scale_up_targets = 0;
        scale_up_new_nodes = 0;
        for a in &actions {
            if let Action::SetTargetSize { from, to, .. } = a {
                scale_up_targets += 1;
                scale_up_new_nodes += u64::from(to.saturating_sub(*from));
            }
        }
    }

    // The scale-down variant: same cluster, pending pods not (yet) unschedulable.
    let unschedulable: Vec<usize> = snapshot
        .pods
        .iter()
        .enumerate()
        .filter(|(_, p)| p.unschedulable)
        .map(|(i, _)| i)
        .collect();
    for &i in &unschedulable {
        snapshot.pods[i].unschedulable = false;
    }
    // Cluster Autoscaler's fixed timers, so that `later` is past every node's unneeded
    // time and the pause after the first pass's scale-up (under `auto`, the empty nodes
    // the pending pods could use would rightly be kept).
    let settings = PlannerSettings {
        scale_down_unneeded_time: Duration::from_secs(600).into(),
        scale_down_delay_after_add: Duration::from_secs(600).into(),
        ..PlannerSettings::default()
    };
    let later = Time(NOW.0 + 600_000 + 1_000);
    let mut down_times = Vec::with_capacity(runs);
    let mut down_cpu = Vec::with_capacity(runs);
    let mut scale_down_actions = 0;
    for _ in 0..runs {
        let mut planner = fresh_planner(&settings);
        planner.handle_snapshot(NOW, &snapshot);
        drain(&mut planner);
        snapshot.revision += 1;
        let (t, cpu) = (Instant::now(), thread_cpu());
        planner.handle_snapshot(later, &snapshot);
        down_times.push(t.elapsed());
        down_cpu.push(cpu.and_then(|before| Some(thread_cpu()?.saturating_sub(before))));
        let (hash, actions) = digest(up_digest, &mut planner);
        plan_digest = hash;
        scale_down_actions = actions.len();
        snapshot.revision -= 1;
    }
    for &i in &unschedulable {
        snapshot.pods[i].unschedulable = true;
    }

    let report = BenchReport {
        config,
        nodes: snapshot.nodes.len(),
        groups: snapshot.groups.len(),
        pending_pods: snapshot
            .pods
            .iter()
            .filter(|p| p.is_unbound_pending())
            .count(),
        running_pods: snapshot.pods.iter().filter(|p| p.occupies_node()).count(),
        generate_ms,
        scale_up_plan_ms: Stats::of(&up_times),
        scale_down_pass_ms: Stats::of(&down_times),
        scale_up_cpu_ms: up_cpu
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|c| Stats::of(&c)),
        scale_down_cpu_ms: down_cpu
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|c| Stats::of(&c)),
        scale_up_targets,
        scale_up_new_nodes,
        scale_down_actions,
        peak_rss_mb: peak_rss_mb(),
        snapshot_rss_mb,
        plan_digest,
    };
    keep_alive(&snapshot);
    report
}

/// The snapshot is held until the RSS has been read (it is what the figure is about).
fn keep_alive(snapshot: &ClusterSnapshot) {
    std::hint::black_box(snapshot);
}

/// The process's peak resident set (`VmHWM` of `/proc/self/status`), in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    rss_mb("VmHWM:")
}

/// A `kB` line of `/proc/self/status`, in MiB.
fn rss_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Time the calling thread has spent on a core so far (the first field of
/// `/proc/thread-self/schedstat`, in nanoseconds), where `/proc` has it. The kernel
/// brings the running thread's figure up to date at scheduler ticks and switches; the
/// yield first makes it current whenever other work is runnable (the case it is for).
/// Otherwise it may lag by up to a tick (a few ms): a figure for passes of tens of ms
/// and more, where wall time and CPU time part ways on a busy machine.
fn thread_cpu() -> Option<Duration> {
    std::thread::yield_now();
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        let s = Stats::of(&samples);
        assert_eq!((s.median, s.p95, s.min, s.max), (10.0, 19.0, 1.0, 20.0));
        let one = Stats::of(&[Duration::from_millis(3)]);
        assert_eq!((one.median, one.p95), (3.0, 3.0));
    }

    #[test]
    fn a_small_run_plans_something() {
        let report = run(BenchConfig {
            size: ClusterSize {
                nodes: 100,
                pending_pods: 1_000,
                groups: 10,
            },
            seed: 1,
            runs: 1,
        });
        assert_eq!(report.nodes, 100);
        assert_eq!(report.pending_pods, 1_000);
        assert!(report.scale_up_targets > 0, "{report:?}");
        assert!(report.scale_down_actions > 0, "{report:?}");
    }
}
