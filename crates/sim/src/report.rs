//! The report of a run: a JSON document (deterministic key order, floats rounded to a
//! fixed number of decimals so two runs are byte-identical) and a short human summary.
//!
//! This module only summarises a [`RunRecord`]; it never runs anything.
//!
//! `lower_bound_node_hours` is a fluid lower bound: for every pod, its requests as a
//! share of one node of the cheapest group whose template (instance allocatable minus
//! DaemonSet overhead, labels, taints) could hold it, taking the pod's dominant
//! resource (the largest of its cpu, memory and extended-resource shares), times the
//! time it runs (its duration; a service's time from arrival to the end of the run),
//! summed. It ignores bin-packing losses, boot delays, anti-affinity and gangs, so no
//! real schedule can beat it; `lower_bound_cost_usd` prices the same shares at that
//! group's price.
//!
//! Spot interruptions: `interruptions` counts the warnings EC2 gave (each takes its
//! instance back two minutes later, unless it was gone first), told to the planner or
//! not (`interruption-handling`). `pods.killed_by_interruption` counts the running
//! workload pods that died with an instance EC2 took back, whatever their owner (EC2
//! does not ask); these are not in `killed_by_scale_in`. `work_lost_pod_hours` is the
//! time the job and bare pods among them had run, summed: the work thrown away, since
//! a recreated pod starts over. `work_lost_node_hours` weights each of those pods by its
//! dominant share of its node's allocatable (the largest of its cpu, memory and
//! extended-resource shares), so it compares with `node_hours`: the node time the lost
//! work had used. `time_to_restart_seconds` runs from a killed pod's death to its
//! replacement running, over the replacements that ran before the end.

use crate::engine::{InterruptionRecord, RunRecord, StopReason};
use crate::scenario::{Scenario, WorkloadKind};
use model::{Owner, PodKey, PodView, Time};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The JSON report of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub simulated_seconds: f64,
    /// `workload-done` (every batch pod finished and the groups are back at their
    /// minimum) or `horizon`.
    pub stopped_because: &'static str,
    pub pods: PodCounts,
    pub time_to_start_seconds: Percentiles,
    pub nodes: NodeCounts,
    pub node_hours: f64,
    pub cost_usd: f64,
    pub lower_bound_node_hours: f64,
    pub lower_bound_cost_usd: f64,
    /// The node-hours running workload pods requested (each node's share by its
    /// dominant resource); `node_hours` minus this is `idle_node_hours.total`.
    pub working_node_hours: f64,
    /// The rest of the billed node-hours, by cause: what is left to save.
    pub idle_node_hours: IdleNodeHours,
    /// Spot interruption warnings EC2 gave, told to the planner or not (the module
    /// docs define this and the next three).
    pub interruptions: u32,
    /// Run time of the job and bare pods killed by interruptions, summed, in hours.
    pub work_lost_pod_hours: f64,
    /// The same, each pod weighted by its dominant share of its node's allocatable.
    pub work_lost_node_hours: f64,
    /// Nearest-rank percentiles of a pod killed by an interruption's death to its
    /// replacement running, over the replacements that ran before the end.
    pub time_to_restart_seconds: Percentiles,
    /// The mean of the same: the percentiles of a handful of restarts move in steps of
    /// a boot time, the mean shows how many waited for one.
    pub mean_time_to_restart_seconds: f64,
    /// Interrupted instances the planner detached from their groups.
    pub detach_calls: u32,
    pub scale_up_calls: u32,
    pub scale_down_calls: u32,
    pub give_back_calls: u32,
    pub retire_calls: u32,
    pub unretire_calls: u32,
    pub evictions: u32,
    pub asg_scale_in_terminations: u32,
    pub planner_passes: u64,
    /// Passes after which the planner asked to be woken at or before the pass itself.
    pub planner_stale_timeouts: u64,
    /// Actions the simulator could not carry out as asked (`Gone`: the target was
    /// already gone; `Failed`), with the time and the action.
    pub actions_not_done: Vec<String>,
    pub groups: Vec<GroupReport>,
    pub jobs: Vec<JobReport>,
    /// Every spot interruption warning, in order.
    pub interrupted_instances: Vec<InterruptionReport>,
    pub launch_failures: Vec<LaunchFailureReport>,
    pub overflow: Vec<OverflowReport>,
    /// Planner events by reason.
    pub planner_events: BTreeMap<String, u64>,
    /// Notable planner events (scale-ups, backoffs, retirements, removals...), in order.
    pub events: Vec<EventReport>,
    pub events_dropped: u64,
    pub warnings: Vec<String>,
    /// Broken expectations: a target above max, a node terminated by the ASG itself
    /// with pods on it. Empty in a healthy run.
    pub violations: Vec<String>,
    /// Sampled every minute.
    pub timeline: Vec<SampleReport>,
}

/// Counts of workload pods (DaemonSet pods excluded; a killed and recreated pod counts once).
#[derive(Debug, Clone, Serialize)]
pub struct PodCounts {
    pub total: u32,
    /// Job and bare pods that ran to completion.
    pub completed: u32,
    /// Running pods that must finish (by the planner's own `disposition` under the
    /// scenario's settings: a Job's, an Argo Workflow's, a bare pod, any owner not on
    /// `evictable-owner-kinds`, whatever the priority) lost to a node removal or an eviction.
    pub killed_by_scale_in: u32,
    pub never_started: u32,
    /// Evictable service pods evicted or lost with their node and recreated (allowed).
    pub service_pods_recreated: u32,
    /// Evictable job and bare pods (`safe_to_evict: true`, an owner on
    /// `evictable-owner-kinds`) evicted or lost with their node and recreated (allowed:
    /// the scenario declared them evictable); they start over.
    pub evictable_batch_pods_recreated: u32,
    /// Running pods, whatever their owner, that died when EC2 took their spot instance
    /// back (not counted in the three above); recreated, they start over.
    pub killed_by_interruption: u32,
    pub pending_at_end: u32,
    pub running_at_end: u32,
}

/// Nearest-rank percentiles of time to start (first start − arrival of the pod's
/// job), over the pods that started; a recreated pod keeps its original arrival.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeCounts {
    pub launched: u32,
    pub peak: u32,
    pub at_end: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub name: String,
    pub region: String,
    pub zone: String,
    pub instance_type: String,
    pub spot: bool,
    pub min: u32,
    pub max: u32,
    pub price_per_hour: f64,
    pub price_source: &'static str,
    pub launched: u32,
    pub peak: u32,
    pub at_end: u32,
    pub node_hours: f64,
    pub cost_usd: f64,
    pub failed_launches: u32,
    /// Spot interruption warnings to instances the group launched.
    pub interruptions: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub name: String,
    pub workload: String,
    pub kind: &'static str,
    /// The pods' controller, group-qualified (`batch/Job`, `argoproj.io/Workflow`,
    /// `Pod` for the core group); null for bare pods.
    pub owner: Option<String>,
    pub arrival_seconds: f64,
    pub pods: u32,
    /// First pod start − arrival; null if no pod started.
    pub time_to_start_seconds: Option<f64>,
    /// When the last pod completed; null if not every pod completed (services: always null).
    pub finished_at_seconds: Option<f64>,
    pub completed: u32,
    /// Pods killed by scale-in (evicted or lost with a node the autoscaler removed).
    pub killed: u32,
    /// Pods killed when EC2 took their spot instance back.
    pub killed_by_interruption: u32,
    pub gang: bool,
    /// For gangs: most pods running at once before all were (must be 0).
    pub gang_max_partial_running: Option<u32>,
    pub gang_started_at_seconds: Option<f64>,
    /// Queued jobs (`queue: provisioning-request`): when the simulated Kueue admitted
    /// the job (its ProvisioningRequest was provisioned); null if never. Its time to
    /// start counts from its arrival, queueing included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted_at_seconds: Option<f64>,
    /// Queued jobs: ProvisioningRequests created for it (1 + retries after `Failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_requests: Option<u32>,
}

/// One spot interruption warning and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct InterruptionReport {
    pub at_seconds: f64,
    /// When EC2 takes the instance back (two minutes later).
    pub deadline_seconds: f64,
    /// The group that launched it.
    pub group: String,
    pub instance: String,
    /// Its node at the warning; null while it was booting.
    pub node: Option<String>,
    /// Whether the planner was told (`interruption-handling`).
    pub notified: bool,
    /// When the planner detached it from its group; null if it was not.
    pub detached_at_seconds: Option<f64>,
    /// Whether it was still there at the deadline (not removed before).
    pub reclaimed: bool,
    /// Running pods that died with it.
    pub pods_killed: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct LaunchFailureReport {
    pub at_seconds: f64,
    pub group: String,
    pub zone: String,
    pub count: u32,
    pub message: String,
}

/// For each group that failed to launch: where capacity came from next.
#[derive(Debug, Clone, Serialize)]
pub struct OverflowReport {
    pub failed_group: String,
    pub failed_region: String,
    pub first_failure_at_seconds: f64,
    /// The first instance launched after that failure in another group.
    pub next_launch_group: Option<String>,
    pub next_launch_region: Option<String>,
    pub next_launch_at_seconds: Option<f64>,
    pub delay_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventReport {
    pub at_seconds: f64,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleReport {
    pub t: f64,
    pub pending: u32,
    pub running: u32,
    /// Live instances (booting or ready) per group, with those detached from it that
    /// still run until EC2 takes them back.
    pub nodes: BTreeMap<String, u32>,
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    let r = (x * scale).round() / scale;
    if r == 0.0 {
        0.0 // no "-0.0"
    } else {
        r
    }
}

fn secs(t: Time) -> f64 {
    round(t.as_secs_f64(), 3)
}

fn percentiles(mut values: Vec<f64>) -> Percentiles {
    if values.is_empty() {
        return Percentiles {
            p50: 0.0,
            p95: 0.0,
            max: 0.0,
        };
    }
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        values[((p / 100.0 * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1]
    };
    Percentiles {
        p50: round(rank(50.0), 3),
        p95: round(rank(95.0), 3),
        max: round(values[values.len() - 1], 3),
    }
}

impl Report {
    /// Summarises a run of `scenario`.
    pub fn build(scenario: &Scenario, record: &RunRecord) -> Report {
        let end = record.end;
        let hours = |from: Time, to: Time| (to - from).as_secs_f64() / 3600.0;

        let mut groups: Vec<GroupReport> = scenario
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| GroupReport {
                name: g.spec.id.to_string(),
                region: g.spec.region.to_string(),
                zone: g.zone.to_string(),
                instance_type: g.spec.shape.instance_type.to_string(),
                spot: g.spec.purchase == model::PurchaseOption::Spot,
                min: g.spec.min_size,
                max: g.spec.max_size,
                price_per_hour: g.price_per_hour,
                price_source: g.price_source.as_str(),
                launched: 0,
                peak: record.peak_nodes_per_group[gi],
                at_end: 0,
                node_hours: 0.0,
                cost_usd: 0.0,
                failed_launches: 0,
                interruptions: record
                    .interruptions
                    .iter()
                    .filter(|i| i.group == gi)
                    .count() as u32,
            })
            .collect();
        let mut node_hours = 0.0;
        let mut cost = 0.0;
        for inst in &record.instances {
            let h = hours(inst.launched_at, inst.terminated_at.unwrap_or(end));
            let g = &mut groups[inst.group];
            g.launched += 1;
            if inst.terminated_at.is_none_or(|t| t >= end) {
                g.at_end += 1;
            }
            g.node_hours += h;
            g.cost_usd += h * g.price_per_hour;
        }
        for f in &record.failures {
            groups[f.group].failed_launches += f.count;
        }
        for g in &mut groups {
            node_hours += g.node_hours;
            cost += g.cost_usd;
            g.node_hours = round(g.node_hours, 4);
            g.cost_usd = round(g.cost_usd, 4);
        }
        // Nodes alive at the end come from the last sample (terminations at `end` excluded).
        let at_end = record.samples.last().map_or(0, |s| s.nodes.iter().sum());
        for (g, n) in groups.iter_mut().zip(
            record
                .samples
                .last()
                .map(|s| s.nodes.clone())
                .unwrap_or_default(),
        ) {
            g.at_end = n;
        }

        // Pods and jobs.
        let mut counts = PodCounts {
            total: record.logical_pods.len() as u32,
            completed: 0,
            killed_by_scale_in: record.killed_by_scale_in,
            never_started: 0,
            service_pods_recreated: record.service_pods_recreated,
            evictable_batch_pods_recreated: record.evictable_batch_pods_recreated,
            killed_by_interruption: record.killed_by_interruption,
            pending_at_end: record.samples.last().map_or(0, |s| s.pending),
            running_at_end: record.samples.last().map_or(0, |s| s.running),
        };
        let mut starts = Vec::new();
        for lp in &record.logical_pods {
            let job = &record.jobs[lp.job];
            match lp.first_start {
                Some(t) => starts.push((t - job.arrival).as_secs_f64()),
                None => counts.never_started += 1,
            }
            if lp.completed_at.is_some() {
                counts.completed += 1;
            }
        }
        let jobs = record
            .jobs
            .iter()
            .map(|j| {
                let first = j
                    .pods
                    .iter()
                    .filter_map(|&p| record.logical_pods[p].first_start)
                    .min();
                let completed = j
                    .pods
                    .iter()
                    .filter(|&&p| record.logical_pods[p].completed_at.is_some())
                    .count() as u32;
                let finished = if completed as usize == j.pods.len() {
                    j.pods
                        .iter()
                        .filter_map(|&p| record.logical_pods[p].completed_at)
                        .max()
                } else {
                    None
                };
                JobReport {
                    name: j.name.clone(),
                    workload: scenario.workloads[j.workload].name.clone(),
                    kind: j.kind.as_str(),
                    owner: scenario.workloads[j.workload]
                        .owner
                        .as_ref()
                        .map(|o| o.owner_kind().to_string()),
                    arrival_seconds: secs(j.arrival),
                    pods: j.pods.len() as u32,
                    time_to_start_seconds: first.map(|t| round((t - j.arrival).as_secs_f64(), 3)),
                    finished_at_seconds: finished.map(secs),
                    completed,
                    killed: j.killed,
                    killed_by_interruption: j.killed_by_interruption,
                    gang: j.gang,
                    gang_max_partial_running: j.gang.then_some(j.gang_max_partial_running),
                    gang_started_at_seconds: j.gang_all_running_at.map(secs),
                    admitted_at_seconds: j.admitted_at.map(secs),
                    provisioning_requests: (j.provisioning_requests > 0)
                        .then_some(j.provisioning_requests),
                }
            })
            .collect();

        let (lower_bound_node_hours, lower_bound_cost_usd, unplaceable) =
            lower_bound(scenario, record);
        let mut warnings = scenario.warnings.clone();
        warnings.extend(record.notes.iter().cloned());
        for j in record.jobs.iter().filter(|j| j.deactivated) {
            warnings.push(format!("{}: its ProvisioningRequest failed {} times; the workload is deactivated, as Kueue does", j.name, j.provisioning_requests));
        }
        if unplaceable > 0 {
            warnings.push(format!(
                "{unplaceable} pods fit no group's node template (left out of the lower bound)"
            ));
        }

        let launch_failures = record
            .failures
            .iter()
            .map(|f| LaunchFailureReport {
                at_seconds: secs(f.at),
                group: scenario.groups[f.group].spec.id.to_string(),
                zone: scenario.groups[f.group].zone.to_string(),
                count: f.count,
                message: f.message.clone(),
            })
            .collect();

        let mut overflow = Vec::new();
        for (gi, g) in scenario.groups.iter().enumerate() {
            let Some(first) = record.failures.iter().find(|f| f.group == gi) else {
                continue;
            };
            let next = record
                .instances
                .iter()
                .filter(|i| i.group != gi && i.launched_at >= first.at)
                .min_by_key(|i| i.launched_at);
            overflow.push(OverflowReport {
                failed_group: g.spec.id.to_string(),
                failed_region: g.spec.region.to_string(),
                first_failure_at_seconds: secs(first.at),
                next_launch_group: next.map(|i| scenario.groups[i.group].spec.id.to_string()),
                next_launch_region: next.map(|i| scenario.groups[i.group].spec.region.to_string()),
                next_launch_at_seconds: next.map(|i| secs(i.launched_at)),
                delay_seconds: next.map(|i| round((i.launched_at - first.at).as_secs_f64(), 3)),
            });
        }

        let group_names: Vec<String> = scenario
            .groups
            .iter()
            .map(|g| g.spec.id.to_string())
            .collect();
        let timeline = record
            .samples
            .iter()
            .map(|s| SampleReport {
                t: secs(s.at),
                pending: s.pending,
                running: s.running,
                nodes: group_names
                    .iter()
                    .cloned()
                    .zip(s.nodes.iter().copied())
                    .collect(),
            })
            .collect();

        Report {
            scenario: scenario.name.clone(),
            seed: scenario.seed,
            simulated_seconds: secs(end),
            stopped_because: match record.stop {
                StopReason::WorkloadDone => "workload-done",
                StopReason::Horizon => "horizon",
            },
            pods: counts,
            time_to_start_seconds: percentiles(starts),
            nodes: NodeCounts {
                launched: record.instances.len() as u32,
                peak: record.peak_nodes,
                at_end,
            },
            node_hours: round(node_hours, 4),
            cost_usd: round(cost, 4),
            lower_bound_node_hours: round(lower_bound_node_hours, 4),
            lower_bound_cost_usd: round(lower_bound_cost_usd, 4),
            working_node_hours: round(record.node_time.working, 4),
            idle_node_hours: IdleNodeHours::of(&record.node_time),
            interruptions: record.interruptions.len() as u32,
            work_lost_pod_hours: round(record.work_lost_pod_hours, 4),
            work_lost_node_hours: round(record.work_lost_node_hours, 4),
            time_to_restart_seconds: percentiles(
                record
                    .restart_delays
                    .iter()
                    .map(|d| d.as_secs_f64())
                    .collect(),
            ),
            mean_time_to_restart_seconds: if record.restart_delays.is_empty() {
                0.0
            } else {
                record
                    .restart_delays
                    .iter()
                    .map(|d| d.as_secs_f64())
                    .sum::<f64>()
                    / record.restart_delays.len() as f64
            },
            detach_calls: record.detach_calls,
            scale_up_calls: record.scale_up_calls,
            scale_down_calls: record.scale_down_calls,
            give_back_calls: record.give_back_calls,
            retire_calls: record.retire_calls,
            unretire_calls: record.unretire_calls,
            evictions: record.evictions,
            asg_scale_in_terminations: record.asg_scale_in_terminations,
            planner_passes: record.planner_passes,
            planner_stale_timeouts: record.stale_timeouts,
            actions_not_done: record.actions_not_done.clone(),
            groups,
            jobs,
            interrupted_instances: interruption_reports(scenario, record),
            launch_failures,
            overflow,
            planner_events: record
                .event_counts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            events: record
                .events
                .iter()
                .map(|e| EventReport {
                    at_seconds: secs(e.at),
                    reason: e.reason,
                    message: e.message.clone(),
                })
                .collect(),
            events_dropped: record.events_dropped,
            warnings,
            violations: record.violations.clone(),
            timeline,
        }
    }

    /// The report as pretty JSON (ends with a newline).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a report always serialises");
        text.push('\n');
        text
    }

    /// A dozen lines for a person.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let hm =
            |secs: f64| model::format_duration(std::time::Duration::from_secs_f64(secs.max(0.0)));
        let _ = writeln!(
            s,
            "scenario {} (seed {}): {} simulated, stopped: {}",
            self.scenario,
            self.seed,
            hm(self.simulated_seconds),
            self.stopped_because
        );
        let _ = writeln!(
            s,
            "pods: {} total, {} completed, {} never started, {} killed by scale-in",
            self.pods.total,
            self.pods.completed,
            self.pods.never_started,
            self.pods.killed_by_scale_in
        );
        let t = &self.time_to_start_seconds;
        let _ = writeln!(
            s,
            "time to start: p50 {:.0}s, p95 {:.0}s, max {:.0}s",
            t.p50, t.p95, t.max
        );
        let _ = writeln!(
            s,
            "nodes: {} launched, peak {}, {} at the end",
            self.nodes.launched, self.nodes.peak, self.nodes.at_end
        );
        let ratio = if self.lower_bound_node_hours > 0.0 {
            self.node_hours / self.lower_bound_node_hours
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "node-hours: {:.2} (lower bound {:.2}, x{:.2}); cost ${:.2} (lower bound ${:.2})",
            self.node_hours,
            self.lower_bound_node_hours,
            ratio,
            self.cost_usd,
            self.lower_bound_cost_usd
        );
        let idle = &self.idle_node_hours;
        let _ = writeln!(
            s,
            "idle node-hours: {:.2} = booting {:.2} + waiting out unneeded time {:.2} + warm spare or held {:.2} + held by stragglers {:.2} + unused beside work {:.2} + removing {:.2}",
            idle.total,
            idle.booting,
            idle.waiting_out_unneeded_time,
            idle.warm_spare_or_held,
            idle.held_by_straggler,
            idle.unused_beside_work,
            idle.removing
        );
        let _ = writeln!(
            s,
            "planner: {} scale-ups, {} scale-downs, {} give-backs, {} retirements, {} evictions",
            self.scale_up_calls,
            self.scale_down_calls,
            self.give_back_calls,
            self.retire_calls,
            self.evictions
        );
        for g in &self.groups {
            let _ = writeln!(
                s,
                "  {:<20} {:<12} {:<14} launched {:>4}, peak {:>4}, {:>8.2} node-h, ${:>9.2}{}",
                g.name,
                g.region,
                g.instance_type,
                g.launched,
                g.peak,
                g.node_hours,
                g.cost_usd,
                if g.failed_launches > 0 {
                    format!(", {} failed launches", g.failed_launches)
                } else {
                    String::new()
                }
            );
        }
        if self.interruptions > 0 {
            let r = &self.time_to_restart_seconds;
            let _ = writeln!(
                s,
                "spot interruptions: {}, {} pods killed, {:.2} pod-h of work lost ({:.2} node-h), restart mean {:.0}s, p50 {:.0}s, p95 {:.0}s; {} detached",
                self.interruptions, self.pods.killed_by_interruption, self.work_lost_pod_hours, self.work_lost_node_hours, self.mean_time_to_restart_seconds, r.p50, r.p95, self.detach_calls
            );
        }
        for o in &self.overflow {
            match (&o.next_launch_group, o.delay_seconds) {
                (Some(next), Some(delay)) => {
                    let _ = writeln!(
                        s,
                        "overflow: {} failed at {}, next launch in {} after {:.0}s",
                        o.failed_group,
                        hm(o.first_failure_at_seconds),
                        next,
                        delay
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "overflow: {} failed at {}, no other group launched afterwards",
                        o.failed_group,
                        hm(o.first_failure_at_seconds)
                    );
                }
            }
        }
        let gangs: Vec<&JobReport> = self.jobs.iter().filter(|j| j.gang).collect();
        if !gangs.is_empty() {
            let partial = gangs
                .iter()
                .filter(|j| j.gang_max_partial_running.unwrap_or(0) > 0)
                .count();
            let started = gangs
                .iter()
                .filter(|j| j.gang_started_at_seconds.is_some())
                .count();
            let _ = writeln!(
                s,
                "gangs: {} of {} started whole, {} started partially",
                started,
                gangs.len(),
                partial
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        for v in &self.violations {
            let _ = writeln!(s, "VIOLATION: {v}");
        }
        s
    }
}

fn interruption_reports(scenario: &Scenario, record: &RunRecord) -> Vec<InterruptionReport> {
    let detached: BTreeMap<&model::InstanceId, Time> = record
        .instances
        .iter()
        .filter_map(|r| r.detached_at.map(|t| (&r.id, t)))
        .collect();
    record
        .interruptions
        .iter()
        .map(|i: &InterruptionRecord| InterruptionReport {
            at_seconds: secs(i.at),
            deadline_seconds: secs(i.deadline),
            group: scenario.groups[i.group].spec.id.to_string(),
            instance: i.instance.to_string(),
            node: i.node.as_ref().map(ToString::to_string),
            notified: i.notified,
            detached_at_seconds: detached.get(&i.instance).copied().map(secs),
            reclaimed: i.reclaimed,
            pods_killed: i.pods_killed,
        })
        .collect()
}

/// Idle node-hours by cause (see [`crate::engine::NodeTime`] for each cause).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IdleNodeHours {
    pub total: f64,
    pub booting: f64,
    pub waiting_out_unneeded_time: f64,
    pub warm_spare_or_held: f64,
    pub held_by_straggler: f64,
    pub unused_beside_work: f64,
    pub removing: f64,
}

impl IdleNodeHours {
    fn of(t: &crate::engine::NodeTime) -> Self {
        let total = t.booting
            + t.waiting_out_unneeded_time
            + t.warm_spare_or_held
            + t.held_by_straggler
            + t.unused_beside_work
            + t.removing;
        Self {
            total: round(total, 4),
            booting: round(t.booting, 4),
            waiting_out_unneeded_time: round(t.waiting_out_unneeded_time, 4),
            warm_spare_or_held: round(t.warm_spare_or_held, 4),
            held_by_straggler: round(t.held_by_straggler, 4),
            unused_beside_work: round(t.unused_beside_work, 4),
            removing: round(t.removing, 4),
        }
    }
}

/// Returns (node-hours, cost, pods that fit no group).
fn lower_bound(scenario: &Scenario, record: &RunRecord) -> (f64, f64, u32) {
    // One probe pod per workload: every pod of a workload asks for the same.
    let templates: Vec<planner::TemplateNode> = scenario
        .groups
        .iter()
        .map(|g| planner::node_template(&g.spec, &g.zone, &scenario.daemonsets))
        .collect();
    let best: Vec<Option<(usize, f64)>> = scenario
        .workloads
        .iter()
        .map(|w| {
            let mut probe = PodView::new(
                PodKey::new("default", "probe"),
                w.requests.clone(),
                Owner::Bare,
                Time::ZERO,
            );
            probe.node_selector = w.node_selector.clone();
            probe.tolerations = w.tolerations.clone();
            let mut best: Option<(usize, f64)> = None;
            for (gi, t) in templates.iter().enumerate() {
                if planner::predicates::check_labels_and_taints(&probe, &t.labels, &t.taints)
                    .is_err()
                    || probe.requests.fits_in(&t.allocatable).is_err()
                {
                    continue;
                }
                let price = scenario.groups[gi].price_per_hour;
                if best.is_none_or(|(_, p)| price < p) {
                    best = Some((gi, price));
                }
            }
            best.map(|(gi, _)| (gi, w.requests.dominant_share(&templates[gi].allocatable)))
        })
        .collect();
    let (mut node_hours, mut cost, mut unplaceable) = (0.0, 0.0, 0);
    for lp in &record.logical_pods {
        let job = &record.jobs[lp.job];
        let Some((gi, share)) = best[job.workload] else {
            unplaceable += 1;
            continue;
        };
        let runtime = match job.kind {
            WorkloadKind::Service => (record.end - job.arrival).as_secs_f64(),
            WorkloadKind::Job | WorkloadKind::Bare => lp.duration.map_or(0.0, |d| d.as_secs_f64()),
        };
        let h = share * runtime / 3600.0;
        node_hours += h;
        cost += h * scenario.groups[gi].price_per_hour;
    }
    (node_hours, cost, unplaceable)
}
