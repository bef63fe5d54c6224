//! Replay of a simulator scenario (`examples/*.yaml`, parsed by the `sim` crate) on the
//! real stack: the control plane, KWOK, moto, the cloud bridge and an autoscaler
//! process (ours, or any command), with every duration divided by a speed-up.
//!
//! What is played, scaled by `1/speedup`:
//! * each node group becomes an ASG in moto (its zone, instance type, min, max,
//!   initial desired capacity, template labels and taints as Cluster Autoscaler's
//!   tags, owned through both CA's tags and the seed's), its `boot_delay` becomes the
//!   bridge's per-group boot delay, and each capacity window becomes a moto
//!   `launch-capacity` tag set at `from` and removed at `to`;
//! * each DaemonSet becomes a DaemonSet (requests, node selector, tolerations);
//! * each arrival of a workload becomes, at its time, an Indexed Job (`job`: every
//!   index gets its own run time, drawn like the simulator's `duration_spread`, and
//!   KWOK completes it after that long: `batch-autoscaler.io/sim-durations`), bare
//!   pods (`bare`) or a Deployment (`service`); priorities become PriorityClasses,
//!   gangs the gang annotations, `expected_duration` its annotation; a batch
//!   workload of another controller (`owner:` an Argo Workflow, a PyTorchJob, a
//!   driver Pod…) becomes bare pods owned by an object of that kind (`owners`);
//! * the scenario's `settings:` (every field, defaults included) are written to the
//!   autoscaler's config file with every duration divided by the speed-up.
//!
//! The run stops as the simulator's does: every batch pod completed and every group
//! back at its minimum (`workload-done`), or at the horizon. The report has the keys
//! of `batch-autoscaler simulate --report`, in scenario time (wall time × speed-up):
//! node-hours from the instances' lifetimes as the bridge saw them in moto (first
//! seen → gone, to within one bridge poll), time to start from each pod's first
//! Running as the watch saw it minus its job's creation, pods killed from each pod's
//! history. Not played (an error naming the field): ProvisioningRequest queues
//! (Kueue), spot interruptions, built-in owner kinds other than a Job, a ReplicaSet
//! or a Pod, `active_deadline`.
//!
//! Not scaled, because they are constants of the binaries rather than settings: the
//! driver's unschedulable-pod batching window (1 s), the planner's trust in its own
//! target requests, KWOK's node heartbeats, the bridge's poll (100 ms) and every API
//! round trip. At a speed-up of N each costs N times as much in scenario time.

use crate::kube_util::{self, Recorder};
use crate::moto::{GroupOptions, ACCESS_KEY, SECRET_KEY, TAG_BOOT_DELAY, TAG_LAUNCH_CAPACITY};
use crate::process;
use crate::scenario::Scenario;
use crate::world::AUTOSCALER_NAMESPACE;
use crate::{BridgeConfig, CloudBridge};
use anyhow::{bail, Context};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, PostParams};
use model::{Resources, Time};
use serde_json::{json, Value};
use sim::scenario::{GroupDef, WorkloadDef, WorkloadKind};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

mod owners;

/// Label on every workload object and pod of a replay: the workload's name.
pub const LABEL_WORKLOAD: &str = "replay.batch-autoscaler.io/workload";
/// Label: the job (one arrival of a workload: `etl`, `report-2`).
pub const LABEL_JOB: &str = "replay.batch-autoscaler.io/job";
/// Label of bare pods: their index in the job.
pub const LABEL_INDEX: &str = "replay.batch-autoscaler.io/index";
/// Indexed Job pods carry their completion index in this label.
pub const LABEL_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// KWOK: one run time per completion index (`testenv/kwok/stages.yaml`).
pub const ANNOTATION_SIM_DURATIONS: &str = "batch-autoscaler.io/sim-durations";
pub const ANNOTATION_SIM_DURATION: &str = "batch-autoscaler.io/sim-duration";
pub const ANNOTATION_SIM_START_DELAY: &str = "batch-autoscaler.io/sim-start-delay";
pub const ANNOTATION_SIM_TERMINATION_DELAY: &str = "batch-autoscaler.io/sim-termination-delay";
/// The seed's ownership tags (the aws adapter discovers a group by either these or
/// Cluster Autoscaler's): `KubernetesCluster=<cluster>`, `Role=worker`.
pub const TAG_SEED_CLUSTER: &str = "KubernetesCluster";
pub const TAG_SEED_ROLE: &str = "Role";
/// `testenv/start-control-plane.sh` reads this: the scheduler's longest pod backoff.
pub const SCHEDULER_BACKOFF_VAR: &str = "KUBE_SCHEDULER_POD_MAX_BACKOFF_SECONDS";
/// A replay's control plane retries unschedulable pods at least every second
/// (Kubernetes' default backoff doubles to 10 s, which a speed-up would multiply).
pub const SCHEDULER_MAX_BACKOFF_SECONDS: &str = "1";
/// `testenv/start-control-plane.sh` reads this: the controller-manager's and the
/// scheduler's client QPS.
pub const CONTROL_PLANE_QPS_VAR: &str = "KUBE_CONTROL_PLANE_QPS";
/// A replay's control plane talks to the apiserver at up to 1000 requests/s (the
/// defaults, 20 and 50, make the Job controller take 10 s for 200 pods: 300 s of
/// scenario time at 30×).
pub const CONTROL_PLANE_QPS: &str = "1000";

/// Sets the control-plane environment of a replay; call before the world starts.
pub fn configure_control_plane() {
    std::env::set_var(SCHEDULER_BACKOFF_VAR, SCHEDULER_MAX_BACKOFF_SECONDS);
    std::env::set_var(CONTROL_PLANE_QPS_VAR, CONTROL_PLANE_QPS);
}

/// How often the bridge reads moto during a replay.
pub const BRIDGE_POLL: Duration = Duration::from_millis(100);

/// The planner settings that are durations (the config file's keys). Each is divided
/// by the speed-up; a key missing from the settings' serialisation is an error, so a
/// renamed setting cannot silently stay unscaled.
pub const DURATION_SETTINGS: &[&str] = &[
    "scan-interval",
    "max-node-provision-time",
    "initial-node-group-backoff-duration",
    "max-node-group-backoff-duration",
    "node-group-backoff-reset-timeout",
    "gang-provision-timeout",
    "provisioning-request-booking-time",
    "scale-down-unneeded-time",
    "scale-down-billing-minimum",
    "assumed-boot-time",
    "retire-hold-limit",
    "scale-down-underutilized-time",
    "scale-down-unready-time",
    "scale-down-delay-after-add",
    "scale-down-delay-after-delete",
    "scale-down-delay-after-failure",
    "scale-down-confirm-delay",
    "fence-settle-time",
    "type-idle-threshold",
    "max-pod-eviction-time",
    "spot-interruption-window",
    "spot-interruption-backoff",
    "max-spot-interruption-backoff",
];

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Every duration is divided by this (≥ 1).
    pub speedup: f64,
    /// Run this shell command instead of our autoscaler (see [`autoscaler_env`]).
    pub autoscaler_command: Option<String>,
}

/// `d / speedup`, at millisecond resolution.
pub fn scale(d: Duration, speedup: f64) -> Duration {
    Duration::from_millis((d.as_secs_f64() * 1000.0 / speedup).round() as u64)
}

/// A duration as Go-style milliseconds (`1500ms`): exact, and every parser here reads it.
pub fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The owner of `w`'s pods when it is not the default of its kind (a Job, a
/// ReplicaSet, none): such pods are created bare with a reference to it.
fn foreign_owner(w: &WorkloadDef) -> Option<&sim::scenario::WorkloadOwner> {
    w.owner
        .as_ref()
        .filter(|o| Some(*o) != sim::scenario::WorkloadOwner::default_for(w.kind).as_ref())
}

/// What the replay cannot play yet, as errors naming the field.
pub fn check_supported(scenario: &sim::Scenario, regions: &[String]) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for (i, g) in scenario.groups.iter().enumerate() {
        let path = format!("node_groups[{i}] ({})", g.spec.id);
        if !regions.iter().any(|r| r == g.spec.region.as_str()) {
            problems.push(format!(
                "{path}.region: {} is not one of the replay's regions {regions:?}",
                g.spec.region
            ));
        }
        if !g.interruptions.is_empty() || g.interruption_rate_per_hour > 0.0 {
            problems.push(format!(
                "{path}.interruptions: spot interruptions are not replayed yet"
            ));
        }
        if g.instance_types.len() > 1 {
            problems.push(format!(
                "{path}.instance_types: only one instance type per group is replayed"
            ));
        }
    }
    for (i, w) in scenario.workloads.iter().enumerate() {
        let path = format!("workload[{i}] ({})", w.name);
        if w.queue.is_some() {
            problems.push(format!(
                "{path}.queue: ProvisioningRequest queues (Kueue) are not replayed yet"
            ));
        }
        if w.active_deadline.is_some() {
            problems.push(format!("{path}.active_deadline: not replayed yet"));
        }
        if let Some(owner) = foreign_owner(w) {
            if w.kind == WorkloadKind::Service {
                problems.push(format!(
                    "{path}.owner: only the default owner of a service workload is replayed"
                ));
            } else if let Some(why) = owners::check(owner) {
                problems.push(format!("{path}.owner: {why}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "scenario {} cannot be replayed: {}",
            scenario.name,
            problems.join("; ")
        )
    }
}

/// The scenario's settings (defaults included) with every duration divided by the
/// speed-up, as the autoscaler's YAML config (unset optional settings left out).
pub fn scaled_settings(
    settings: &planner::PlannerSettings,
    speedup: f64,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let Value::Object(mut map) = serde_json::to_value(settings).context("settings as JSON")? else {
        bail!("settings did not serialise to a map");
    };
    map.retain(|_, v| !v.is_null());
    for key in DURATION_SETTINGS {
        let text = map
            .get(*key)
            .and_then(Value::as_str)
            .with_context(|| format!("settings.{key}: not in the settings' serialisation"))?;
        // `auto` (the scale-down timers' default) is computed by the planner from
        // durations that are scaled: the observed boot time and the `auto` constants.
        if text == "auto" {
            continue;
        }
        let d = model::parse_duration(text).map_err(|e| anyhow::anyhow!("settings.{key}: {e}"))?;
        map.insert((*key).to_owned(), json!(millis(scale(d, speedup))));
    }
    Ok(map)
}

/// Per-pod run times of one job: `duration × (1 ± spread)`, uniform, drawn from the
/// scenario's seed and the job's name (the simulator draws from the same
/// distribution with its own stream, so individual pods differ, not the law).
pub fn durations(seed: u64, job: &str, w: &WorkloadDef) -> Vec<Duration> {
    let Some(base) = w.duration else {
        return Vec::new();
    };
    let mut state = seed
        ^ job.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..w.pods)
        .map(|_| {
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
            let factor = 1.0 + w.duration_spread * (2.0 * u - 1.0);
            Duration::from_secs_f64((base.as_secs_f64() * factor).max(0.0))
        })
        .collect()
}

fn requests_json(r: &Resources) -> (Value, Value) {
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if r.cpu_millis > 0 {
        requests.insert("cpu".into(), json!(format!("{}m", r.cpu_millis)));
    }
    if r.memory_bytes > 0 {
        requests.insert("memory".into(), json!(r.memory_bytes.to_string()));
    }
    if r.ephemeral_storage_bytes > 0 {
        requests.insert(
            "ephemeral-storage".into(),
            json!(r.ephemeral_storage_bytes.to_string()),
        );
    }
    for (name, amount) in &r.extended {
        requests.insert(name.clone(), json!(amount.to_string()));
        limits.insert(name.clone(), json!(amount.to_string()));
    }
    (Value::Object(requests), Value::Object(limits))
}

fn tolerations_json(tolerations: &[model::Toleration]) -> Value {
    Value::Array(
        tolerations
            .iter()
            .map(|t| {
                let mut v = serde_json::Map::new();
                if !t.key.is_empty() {
                    v.insert("key".into(), json!(t.key));
                }
                let op = match t.operator {
                    model::TolerationOperator::Equal => "Equal",
                    model::TolerationOperator::Exists => "Exists",
                };
                v.insert("operator".into(), json!(op));
                if !t.value.is_empty() {
                    v.insert("value".into(), json!(t.value));
                }
                if let Some(e) = t.effect {
                    v.insert("effect".into(), json!(e.as_str()));
                }
                Value::Object(v)
            })
            .collect(),
    )
}

fn labels_json(labels: &model::Labels) -> Value {
    let map: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    json!(map)
}

/// A Kubernetes object name for `text` (lowercase, `-` for anything else).
fn dns_name(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').chars().take(50).collect()
}

fn priority_class_name(priority: i32) -> String {
    if priority < 0 {
        format!("replay-m{}", -(priority as i64))
    } else {
        format!("replay-p{priority}")
    }
}

/// The pod template (JSON) of one job of workload `w`.
fn pod_template(
    w: &WorkloadDef,
    job: &str,
    speedup: f64,
    restart_policy: &str,
    annotations: BTreeMap<String, String>,
) -> Value {
    let (requests, limits) = requests_json(&w.requests);
    let mut annotations = annotations;
    annotations.insert(ANNOTATION_SIM_START_DELAY.into(), "0s".into());
    annotations.insert(
        ANNOTATION_SIM_TERMINATION_DELAY.into(),
        millis(scale(Duration::from_secs(1), speedup)),
    );
    if w.gang {
        annotations.insert(model::well_known::ANNOTATION_GANG.into(), "true".into());
        annotations.insert(
            model::well_known::ANNOTATION_GANG_SIZE.into(),
            w.pods.to_string(),
        );
    }
    if let Some(d) = w.expected_duration {
        annotations.insert(
            model::well_known::ANNOTATION_EXPECTED_DURATION.into(),
            millis(scale(d, speedup)),
        );
    }
    if let Some(s) = w.safe_to_evict {
        let text = match s {
            model::SafeToEvict::True => "true",
            model::SafeToEvict::False => "false",
            model::SafeToEvict::OnCompletion => "on-completion",
        };
        annotations.insert(
            model::well_known::ANNOTATION_SAFE_TO_EVICT.into(),
            text.into(),
        );
    }
    let mut spec = json!({
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": requests, "limits": limits}}],
        "nodeSelector": labels_json(&w.node_selector),
        "tolerations": tolerations_json(&w.tolerations),
    });
    if w.priority != 0 {
        spec["priorityClassName"] = json!(priority_class_name(w.priority));
    }
    if w.anti_affinity_per_node {
        spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {LABEL_JOB: job}},
             "topologyKey": model::well_known::LABEL_HOSTNAME}
        ]}});
    }
    json!({
        "metadata": {"labels": {LABEL_WORKLOAD: dns_name(&w.name), LABEL_JOB: job},
                     "annotations": annotations},
        "spec": spec,
    })
}

/// The environment of a foreign autoscaler (`--autoscaler-command`): where the
/// cluster and the cloud are, and what to manage.
pub fn autoscaler_env(
    s: &Scenario,
    regions: &[String],
    speedup: f64,
    settings_file: &std::path::Path,
) -> Vec<(String, String)> {
    vec![
        (
            "KUBECONFIG".into(),
            s.world.admin_kubeconfig.display().to_string(),
        ),
        ("AWS_ENDPOINT_URL".into(), s.world.moto_url.clone()),
        ("AWS_REGION".into(), regions[0].clone()),
        ("AWS_DEFAULT_REGION".into(), regions[0].clone()),
        ("AWS_REGIONS".into(), regions.join(",")),
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("CLUSTER_NAME".into(), s.cluster.clone()),
        ("REPLAY_SPEEDUP".into(), speedup.to_string()),
        (
            "REPLAY_SETTINGS".into(),
            settings_file.display().to_string(),
        ),
    ]
}

/// One logical pod: a Job index, a bare pod, or a service replica.
#[derive(Debug, Clone)]
struct Logical {
    workload: usize,
    job: String,
    duration: Option<Duration>,
}

/// One arrival: a job to create at `at` (scenario time).
#[derive(Debug, Clone)]
struct Arrival {
    at: Duration,
    workload: usize,
    job: String,
}

/// Scenario seconds between two instants.
fn scenario_secs(from: Instant, to: Instant, speedup: f64) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * speedup
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    let r = (x * scale).round() / scale;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// Nearest-rank percentiles, as the simulator's report computes them.
pub fn percentiles(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return json!({"p50": 0.0, "p95": 0.0, "max": 0.0});
    }
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        values[((p / 100.0 * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1]
    };
    json!({"p50": round(rank(50.0), 3), "p95": round(rank(95.0), 3), "max": round(values[values.len() - 1], 3)})
}

/// The fluid lower bound of the simulator's report (see `sim::report`), over the
/// replay's own run times.
fn lower_bound(scenario: &sim::Scenario, pods: &[(usize, f64)]) -> (f64, f64) {
    let templates: Vec<planner::TemplateNode> = scenario
        .groups
        .iter()
        .map(|g| planner::node_template(&g.spec, &g.zone, &scenario.daemonsets))
        .collect();
    let best: Vec<Option<(usize, f64)>> = scenario
        .workloads
        .iter()
        .map(|w| {
            let mut probe = model::PodView::new(
                model::PodKey::new("default", "probe"),
                w.requests.clone(),
                model::Owner::Bare,
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
    let (mut hours, mut cost) = (0.0, 0.0);
    for (workload, runtime) in pods {
        if let Some((gi, share)) = best[*workload] {
            let h = share * runtime / 3600.0;
            hours += h;
            cost += h * scenario.groups[gi].price_per_hour;
        }
    }
    (hours, cost)
}

fn group_options(g: &GroupDef, cluster: &str, speedup: f64) -> GroupOptions {
    let mut o = GroupOptions::new(
        g.spec.id.as_str(),
        g.instance_types[0].as_str(),
        g.spec.max_size as i32,
    )
    .zone(g.zone.as_str())
    .desired(g.initial as i32)
    .tag(TAG_BOOT_DELAY, &millis(scale(g.boot_delay, speedup)))
    // Our own (the seed's) ownership tags, besides CA's that every fixture group has.
    .tag(TAG_SEED_CLUSTER, cluster)
    .tag(TAG_SEED_ROLE, "worker");
    o.min = g.spec.min_size as i32;
    for (k, v) in g.spec.labels.iter() {
        o = o.label(k, v);
    }
    for t in &g.spec.taints {
        o = o.taint(&t.key, &format!("{}:{}", t.value, t.effect.as_str()));
    }
    o
}

/// Replays `scenario` in the prepared [`Scenario`] `s` and returns the report.
pub async fn replay(
    s: &Scenario,
    scenario: &sim::Scenario,
    options: &ReplayOptions,
) -> anyhow::Result<Value> {
    let speedup = options.speedup;
    anyhow::ensure!(
        speedup.is_finite() && speedup >= 1.0,
        "--speedup must be a number ≥ 1, got {speedup}"
    );
    // Regions in the scenario's preference order (primary first).
    let mut ranked: Vec<(u32, String)> = scenario
        .groups
        .iter()
        .map(|g| (g.spec.region_rank, g.spec.region.to_string()))
        .collect();
    ranked.sort();
    let mut regions: Vec<String> = Vec::new();
    for (_, r) in ranked {
        if !regions.contains(&r) {
            regions.push(r);
        }
    }
    check_supported(scenario, &s.regions)?;
    let fixtures_of = |region: &str| {
        s.fixtures
            .iter()
            .find(|f| f.region == region)
            .with_context(|| format!("no fixtures for region {region}"))
    };

    // The cluster: PriorityClasses, DaemonSets, groups.
    let priorities: BTreeSet<i32> = scenario
        .workloads
        .iter()
        .map(|w| w.priority)
        .filter(|p| *p != 0)
        .collect();
    for p in priorities {
        let class: PriorityClass = serde_json::from_value(json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": priority_class_name(p)}, "value": p,
            "description": "batch-autoscaler replay"
        }))?;
        match Api::<PriorityClass>::all(s.kube.clone())
            .create(&PostParams::default(), &class)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context(format!("create PriorityClass for priority {p}")),
        }
    }
    for ds in &scenario.daemonsets {
        let name = dns_name(&ds.name);
        let (requests, limits) = requests_json(&ds.requests);
        let object: DaemonSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": s.namespace},
            "spec": {
                "selector": {"matchLabels": {"replay-daemonset": name}},
                "template": {
                    "metadata": {"labels": {"replay-daemonset": name}},
                    "spec": {
                        "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                                        "resources": {"requests": requests, "limits": limits}}],
                        "nodeSelector": labels_json(&ds.node_selector),
                        "tolerations": tolerations_json(&ds.tolerations),
                        "terminationGracePeriodSeconds": 0,
                    }
                }
            }
        }))
        .with_context(|| format!("daemonsets ({}): object", ds.name))?;
        Api::<DaemonSet>::namespaced(s.kube.clone(), &s.namespace)
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("daemonsets ({}): create", ds.name))?;
    }
    for (i, g) in scenario.groups.iter().enumerate() {
        let mut o = group_options(g, &s.cluster, speedup);
        if let Some(w) = g.capacity_errors.iter().position(|w| w.from == Time::ZERO) {
            o = o.tag(
                TAG_LAUNCH_CAPACITY,
                &format!("{}:{w}", g.capacity_errors[w].available),
            );
        }
        fixtures_of(g.spec.region.as_str())?
            .group(&o)
            .await
            .with_context(|| format!("node_groups[{i}] ({}): create the ASG", g.spec.id))?;
    }
    let owners = owners::Owners::prepare(s, scenario.workloads.iter().filter_map(foreign_owner))
        .await
        .context("the owners of pods other than Jobs")?;
    s.note(&format!(
        "replay {}: {} groups, {} daemonsets, {} workloads at speed-up {speedup}",
        scenario.name,
        scenario.groups.len(),
        scenario.daemonsets.len(),
        scenario.workloads.len()
    ));

    let bridge = CloudBridge::start(
        BridgeConfig {
            cluster: s.cluster.clone(),
            regions: regions.clone(),
            moto_url: s.world.moto_url.clone(),
            boot_delay: scale(sim::scenario::DEFAULT_BOOT_DELAY, speedup),
            poll: BRIDGE_POLL,
            log: s.dir.join("bridge.log"),
        },
        s.kube.clone(),
    )
    .await?;
    let recorder = Recorder::start(&s.kube, &s.namespace, &s.cluster);

    // The autoscaler, with the scenario's settings scaled.
    let settings = scaled_settings(&scenario.settings, speedup)?;
    let settings_file = s.dir.join("replay-settings.yaml");
    std::fs::write(
        &settings_file,
        serde_yaml::to_string(&settings).context("settings as YAML")?,
    )?;
    let mut ours = None;
    let mut foreign = None;
    match &options.autoscaler_command {
        None => {
            let mut o = s.options();
            o.regions = regions.clone();
            // Every timing comes from the scaled settings.
            o.flags.clear();
            o = o.flag("config", &settings_file.display().to_string());
            // The driver's batching of new unschedulable pods is a process flag, not a
            // planner setting: scaled too (its defaults, 1 s and 200 ms).
            o = o
                .flag(
                    "batch-window",
                    &millis(scale(Duration::from_secs(1), speedup)),
                )
                .flag(
                    "batch-idle",
                    &millis(scale(Duration::from_millis(200), speedup)),
                );
            ours = Some(s.autoscaler("replay", &o).await?);
        }
        Some(command) => {
            let log = s.dir.join("foreign-autoscaler.log");
            let file = std::fs::File::create(&log)?;
            let mut cmd = tokio::process::Command::new("sh");
            cmd.arg("-c")
                .arg(command)
                .envs(autoscaler_env(s, &regions, speedup, &settings_file))
                .stdin(std::process::Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file);
            // Its own process group: whatever the command starts (a script's
            // children, an `exec`ed autoscaler's) is stopped with it, here or by the
            // reaper if this process dies.
            let group = process::ProcessGroup::spawn(cmd, &s.world.dir, "foreign-autoscaler")
                .with_context(|| format!("--autoscaler-command {command:?}"))?;
            s.note(&format!(
                "started --autoscaler-command as process group {} (log {})",
                group.pgid(),
                log.display()
            ));
            foreign = Some(group);
        }
    }

    // Arrivals and the logical pods.
    let mut arrivals = Vec::new();
    let mut logical: BTreeMap<String, Logical> = BTreeMap::new();
    for (wi, w) in scenario.workloads.iter().enumerate() {
        for (n, at) in w.arrivals.iter().enumerate() {
            let job = dns_name(&w.instance_name(n));
            arrivals.push(Arrival {
                at: *at - Time::ZERO,
                workload: wi,
                job: job.clone(),
            });
            let ds = durations(scenario.seed, &job, w);
            for i in 0..w.pods as usize {
                logical.insert(
                    format!("{job}/{i}"),
                    Logical {
                        workload: wi,
                        job: job.clone(),
                        duration: ds.get(i).copied(),
                    },
                );
            }
        }
    }
    arrivals.sort_by(|a, b| a.at.cmp(&b.at).then(a.job.cmp(&b.job)));
    let has_services = scenario
        .workloads
        .iter()
        .any(|w| w.kind == WorkloadKind::Service);

    // Capacity windows: (time, group index, window index, set or remove).
    let mut edges: Vec<(Duration, usize, usize, bool)> = Vec::new();
    for (gi, g) in scenario.groups.iter().enumerate() {
        for (wi, w) in g.capacity_errors.iter().enumerate() {
            if w.from > Time::ZERO {
                edges.push((w.from - Time::ZERO, gi, wi, true));
            }
            edges.push((w.to - Time::ZERO, gi, wi, false));
        }
    }
    edges.sort_by_key(|e| e.0);

    let t0 = Instant::now();
    let horizon = scale(scenario.horizon, speedup);
    s.note(&format!(
        "replay {}: t0 (horizon {:.1}s wall)",
        scenario.name,
        horizon.as_secs_f64()
    ));
    let mut arrival_at: BTreeMap<String, Instant> = BTreeMap::new();
    let (mut next_arrival, mut next_edge) = (0usize, 0usize);
    let jobs_api: Api<Job> = Api::namespaced(s.kube.clone(), &s.namespace);
    let pods_api: Api<Pod> = Api::namespaced(s.kube.clone(), &s.namespace);
    let deployments: Api<Deployment> = Api::namespaced(s.kube.clone(), &s.namespace);
    let stop_reason;
    loop {
        if let Some(group) = foreign.as_mut() {
            if let Some(status) = group.leader_exited() {
                // Dropping the group on the way out kills what the command left.
                bail!("--autoscaler-command exited ({status}); see foreign-autoscaler.log");
            }
        }
        if let Some(a) = ours.as_mut() {
            if let Some(status) = a.exited() {
                bail!(
                    "the autoscaler exited ({status}):\n{}",
                    process::tail(&a.log, 8_000)
                );
            }
        }
        let now = Instant::now();
        // Capacity windows due.
        while next_edge < edges.len() && t0 + scale(edges[next_edge].0, speedup) <= now {
            let (_, gi, wi, set) = edges[next_edge];
            let g = &scenario.groups[gi];
            let f = fixtures_of(g.spec.region.as_str())?;
            if set {
                f.set_tag(
                    g.spec.id.as_str(),
                    TAG_LAUNCH_CAPACITY,
                    &format!("{}:{wi}", g.capacity_errors[wi].available),
                )
                .await?;
            } else {
                f.delete_tag(g.spec.id.as_str(), TAG_LAUNCH_CAPACITY)
                    .await?;
            }
            s.note(&format!(
                "capacity window {wi} of {} {}",
                g.spec.id,
                if set { "opens" } else { "closes" }
            ));
            next_edge += 1;
        }
        // Arrivals due.
        while next_arrival < arrivals.len() && t0 + scale(arrivals[next_arrival].at, speedup) <= now
        {
            let a = arrivals[next_arrival].clone();
            let w = &scenario.workloads[a.workload];
            arrival_at.insert(a.job.clone(), Instant::now());
            create_job(
                s,
                scenario,
                w,
                &a.job,
                speedup,
                &owners,
                &jobs_api,
                &pods_api,
                &deployments,
            )
            .await
            .with_context(|| format!("workload {} ({}): create", w.name, a.job))?;
            next_arrival += 1;
        }
        let elapsed = now.saturating_duration_since(t0);
        if elapsed >= horizon {
            stop_reason = "horizon";
            break;
        }
        if next_arrival == arrivals.len() && !has_services {
            let done = completed_batch(&recorder.pods());
            let batch_total = logical.len();
            let settled = scenario.groups.iter().all(|g| {
                bridge.current(g.spec.id.as_str()).is_some_and(|c| {
                    c.target == g.spec.min_size && c.instances as u32 == g.spec.min_size
                }) && bridge
                    .lifetimes()
                    .iter()
                    .filter(|l| l.live && l.group == g.spec.id.as_str())
                    .count() as u32
                    == g.spec.min_size
            });
            if done.len() >= batch_total && settled {
                stop_reason = "workload-done";
                break;
            }
        }
        tokio::time::sleep(
            crate::wait::POLL
                .min(scale(Duration::from_secs(1), speedup).max(Duration::from_millis(50))),
        )
        .await;
    }
    let end = Instant::now();
    s.note(&format!(
        "replay {}: stopped ({stop_reason}) after {:.1}s wall",
        scenario.name,
        (end - t0).as_secs_f64()
    ));
    if let Some(mut a) = ours.take() {
        a.terminate(Duration::from_secs(10)).await;
    }
    owners.cleanup(s).await;
    if let Some(group) = foreign.take() {
        group.stop(Duration::from_secs(10)).await;
    }

    build_report(
        s,
        scenario,
        speedup,
        stop_reason,
        t0,
        end,
        &bridge,
        &recorder,
        &logical,
        &arrival_at,
    )
    .await
}

/// Logical keys (`job/index`) of batch pods that succeeded.
fn completed_batch(pods: &BTreeMap<String, kube_util::PodRecord>) -> BTreeSet<String> {
    pods.iter()
        .filter(|(_, r)| r.finished.as_ref().is_some_and(|(_, p)| p == "Succeeded"))
        .filter_map(|(name, r)| logical_key(name, r))
        .collect()
}

/// The logical pod a pod plays: `job/index` for Job and bare pods; `job/<pod name>`
/// for service replicas (a recreated replica is another key; counted apart).
fn logical_key(name: &str, r: &kube_util::PodRecord) -> Option<String> {
    let job = r.labels.get(LABEL_JOB)?;
    if let Some(i) = r
        .labels
        .get(LABEL_COMPLETION_INDEX)
        .or_else(|| r.labels.get(LABEL_INDEX))
    {
        return Some(format!("{job}/{i}"));
    }
    Some(format!("{job}/{name}"))
}

#[allow(clippy::too_many_arguments)]
async fn create_job(
    s: &Scenario,
    scenario: &sim::Scenario,
    w: &WorkloadDef,
    job: &str,
    speedup: f64,
    owners: &owners::Owners,
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    deployments: &Api<Deployment>,
) -> anyhow::Result<()> {
    let ds = durations(scenario.seed, job, w);
    let labels = json!({LABEL_WORKLOAD: dns_name(&w.name), LABEL_JOB: job});
    let owner = match foreign_owner(w) {
        Some(o) => Some(owners.create(s, o, job).await?),
        None => None,
    };
    match w.kind {
        WorkloadKind::Job if owner.is_none() => {
            let list: Vec<String> = ds.iter().map(|d| millis(scale(*d, speedup))).collect();
            let mut annotations = BTreeMap::new();
            annotations.insert(ANNOTATION_SIM_DURATIONS.to_owned(), list.join(","));
            let template = pod_template(w, job, speedup, "Never", annotations);
            let object: Job = serde_json::from_value(json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": job, "namespace": s.namespace, "labels": labels},
                "spec": {
                    "completionMode": "Indexed",
                    "completions": w.pods, "parallelism": w.pods,
                    // A killed pod is recreated and starts over, as in the simulator.
                    "backoffLimit": 10 * w.pods + 100,
                    "template": template,
                }
            }))?;
            jobs.create(&PostParams::default(), &object).await?;
        }
        // Bare pods, and the pods of a controller the replay does not run (`owner:`).
        WorkloadKind::Bare | WorkloadKind::Job => {
            for (i, d) in ds.iter().enumerate() {
                let mut annotations = BTreeMap::new();
                annotations.insert(
                    ANNOTATION_SIM_DURATION.to_owned(),
                    millis(scale(*d, speedup)),
                );
                let mut pod = pod_template(w, job, speedup, "Never", annotations);
                pod["apiVersion"] = json!("v1");
                pod["kind"] = json!("Pod");
                pod["metadata"]["name"] = json!(format!("{job}-{i}"));
                pod["metadata"]["namespace"] = json!(s.namespace);
                pod["metadata"]["labels"][LABEL_INDEX] = json!(i.to_string());
                if let Some(reference) = &owner {
                    pod["metadata"]["ownerReferences"] = json!([reference]);
                }
                let object: Pod = serde_json::from_value(pod)?;
                pods.create(&PostParams::default(), &object).await?;
            }
        }
        WorkloadKind::Service => {
            let template = pod_template(w, job, speedup, "Always", BTreeMap::new());
            let object: Deployment = serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": job, "namespace": s.namespace, "labels": labels},
                "spec": {"replicas": w.pods, "selector": {"matchLabels": {LABEL_JOB: job}},
                         "template": template}
            }))?;
            deployments.create(&PostParams::default(), &object).await?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn build_report(
    s: &Scenario,
    scenario: &sim::Scenario,
    speedup: f64,
    stop_reason: &str,
    t0: Instant,
    end: Instant,
    bridge: &CloudBridge,
    recorder: &Recorder,
    logical: &BTreeMap<String, Logical>,
    arrival_at: &BTreeMap<String, Instant>,
) -> anyhow::Result<Value> {
    let simulated_seconds = scenario_secs(t0, end, speedup);
    // Instances: lifetimes clamped to [t0, end].
    let lifetimes = bridge.lifetimes();
    let mut groups = Vec::new();
    let (mut node_hours, mut cost, mut launched_total, mut at_end_total) = (0.0, 0.0, 0u32, 0u32);
    let mut intervals_all: Vec<(Instant, Instant)> = Vec::new();
    for g in &scenario.groups {
        let id = g.spec.id.as_str();
        let mut hours = 0.0;
        let mut launched = 0u32;
        let mut at_end = 0u32;
        let mut intervals = Vec::new();
        for l in lifetimes.iter().filter(|l| l.group == id) {
            let start = l.first_seen.max(t0).min(end);
            let stop = if l.live {
                end
            } else {
                (l.last_seen + BRIDGE_POLL / 2).min(end)
            };
            launched += 1;
            if l.live {
                at_end += 1;
            }
            hours += scenario_secs(start, stop, speedup) / 3600.0;
            intervals.push((start, stop));
        }
        let peak = peak_of(&intervals);
        intervals_all.extend(intervals);
        let failed = match s
            .fixtures
            .iter()
            .find(|f| f.region == g.spec.region.as_str())
        {
            Some(f) => f
                .activities(id)
                .await
                .map(|a| a.iter().filter(|(code, _, _)| code == "Failed").count() as u32)
                .unwrap_or(0),
            None => 0,
        };
        node_hours += hours;
        cost += hours * g.price_per_hour;
        launched_total += launched;
        at_end_total += at_end;
        groups.push(json!({
            "name": id,
            "region": g.spec.region.to_string(),
            "zone": g.zone.to_string(),
            "instance_type": g.spec.shape.instance_type.to_string(),
            "spot": g.spec.purchase == model::PurchaseOption::Spot,
            "min": g.spec.min_size,
            "max": g.spec.max_size,
            "price_per_hour": g.price_per_hour,
            "price_source": g.price_source.as_str(),
            "launched": launched,
            "peak": peak,
            "at_end": at_end,
            "node_hours": round(hours, 4),
            "cost_usd": round(hours * g.price_per_hour, 4),
            "failed_launches": failed,
            "interruptions": 0,
        }));
    }

    // Pods.
    let pods = recorder.pods();
    let mut first_running: BTreeMap<String, Instant> = BTreeMap::new();
    let mut completed: BTreeSet<String> = BTreeSet::new();
    let (mut killed, mut service_recreated, mut evictable_recreated) = (0u32, 0u32, 0u32);
    let (mut pending_at_end, mut running_at_end) = (0u32, 0u32);
    let mut service_starts: Vec<f64> = Vec::new();
    let mut service_keys: BTreeMap<String, Vec<(Instant, Option<Instant>)>> = BTreeMap::new();
    for (name, r) in &pods {
        let Some(key) = logical_key(name, r) else {
            continue; // DaemonSet pods
        };
        let Some(job) = r.labels.get(LABEL_JOB) else {
            continue;
        };
        let workload = scenario.workloads.iter().position(|w| {
            dns_name(&w.name) == r.labels.get(LABEL_WORKLOAD).cloned().unwrap_or_default()
        });
        let Some(wi) = workload else { continue };
        let w = &scenario.workloads[wi];
        let succeeded = r.finished.as_ref().is_some_and(|(_, p)| p == "Succeeded");
        let failed = r.finished.as_ref().is_some_and(|(_, p)| p == "Failed");
        let lost = r.running.is_some_and(|t| t <= end)
            && !succeeded
            && (failed || r.deletion.is_some_and(|t| t <= end));
        if lost {
            if w.kind == WorkloadKind::Service {
                service_recreated += 1;
            } else if w.safe_to_evict == Some(model::SafeToEvict::True) {
                evictable_recreated += 1;
            } else {
                killed += 1;
            }
        }
        let alive_at_end = r.gone.is_none_or(|t| t > end) && r.deletion.is_none_or(|t| t > end);
        if alive_at_end && r.finished.as_ref().is_none_or(|(t, _)| *t > end) {
            if r.running.is_some_and(|t| t <= end) {
                running_at_end += 1;
            } else {
                pending_at_end += 1;
            }
        }
        if w.kind == WorkloadKind::Service {
            service_keys
                .entry(job.clone())
                .or_default()
                .push((r.first_seen.unwrap_or(end), r.running));
            continue;
        }
        if succeeded && r.finished.as_ref().is_some_and(|(t, _)| *t <= end) {
            completed.insert(key.clone());
        }
        if let Some(t) = r.running.filter(|t| *t <= end) {
            let e = first_running.entry(key).or_insert(t);
            if t < *e {
                *e = t;
            }
        }
    }
    let mut starts = Vec::new();
    let mut runtimes: Vec<(usize, f64)> = Vec::new();
    let mut never_started = 0u32;
    let mut jobs: BTreeMap<String, JobTally> = BTreeMap::new();
    for (key, lp) in logical {
        let w = &scenario.workloads[lp.workload];
        if w.kind == WorkloadKind::Service {
            continue;
        }
        let job = jobs.entry(lp.job.clone()).or_insert((
            lp.workload,
            arrival_at.get(&lp.job).copied(),
            0,
            0,
            Vec::new(),
        ));
        job.2 += 1;
        if completed.contains(key) {
            job.3 += 1;
        }
        match (first_running.get(key), arrival_at.get(&lp.job)) {
            (Some(t), Some(a)) => {
                starts.push(scenario_secs(*a, *t, speedup));
                job.4.push(scenario_secs(*a, *t, speedup));
            }
            _ => never_started += 1,
        }
        runtimes.push((lp.workload, lp.duration.map_or(0.0, |d| d.as_secs_f64())));
    }
    // Services: the first `pods` replicas of each, by creation.
    for (wi, w) in scenario.workloads.iter().enumerate() {
        if w.kind != WorkloadKind::Service {
            continue;
        }
        for (n, _) in w.arrivals.iter().enumerate() {
            let job = dns_name(&w.instance_name(n));
            let Some(a) = arrival_at.get(&job) else {
                never_started += w.pods;
                continue;
            };
            let mut replicas = service_keys.get(&job).cloned().unwrap_or_default();
            replicas.sort_by_key(|r| r.0);
            for i in 0..w.pods as usize {
                match replicas.get(i).and_then(|r| r.1).filter(|t| *t <= end) {
                    Some(t) => service_starts.push(scenario_secs(*a, t, speedup)),
                    None => never_started += 1,
                }
            }
            runtimes.extend(std::iter::repeat_n(
                (wi, scenario_secs(*a, end, speedup)),
                w.pods as usize,
            ));
        }
    }
    starts.extend(service_starts);
    let total: u32 = scenario
        .workloads
        .iter()
        .map(|w| w.pods * w.arrivals.len() as u32)
        .sum();
    let (lb_hours, lb_cost) = lower_bound(scenario, &runtimes);
    let nodes_on_bridge = recorder.nodes().len();
    Ok(json!({
        "scenario": scenario.name,
        "seed": scenario.seed,
        "simulated_seconds": round(simulated_seconds, 3),
        "stopped_because": stop_reason,
        "pods": {
            "total": total,
            "completed": completed.len(),
            "killed_by_scale_in": killed,
            "never_started": never_started,
            "service_pods_recreated": service_recreated,
            "evictable_batch_pods_recreated": evictable_recreated,
            "killed_by_interruption": 0,
            "pending_at_end": pending_at_end,
            "running_at_end": running_at_end,
        },
        "time_to_start_seconds": percentiles(starts),
        "nodes": {"launched": launched_total, "peak": peak_of(&intervals_all), "at_end": at_end_total},
        "node_hours": round(node_hours, 4),
        "cost_usd": round(cost, 4),
        "lower_bound_node_hours": round(lb_hours, 4),
        "lower_bound_cost_usd": round(lb_cost, 4),
        "groups": groups,
        "jobs": jobs.iter().map(|(name, (wi, arrival, pods, done, starts))| json!({
            "name": name,
            "workload": scenario.workloads[*wi].name,
            "arrival_seconds": arrival.map(|a| round(scenario_secs(t0, a, speedup), 3)),
            "pods": pods,
            "completed": done,
            "time_to_start_seconds": percentiles(starts.clone()),
        })).collect::<Vec<_>>(),
        "replay": {
            "speedup": speedup,
            "wall_seconds": round((end - t0).as_secs_f64(), 3),
            "bridge_poll_ms": BRIDGE_POLL.as_millis() as u64,
            "nodes_registered": nodes_on_bridge,
            "autoscaler_namespace": AUTOSCALER_NAMESPACE,
        },
    }))
}

/// Per job: (workload, arrival, pods, completed, times to start).
type JobTally = (usize, Option<Instant>, u32, u32, Vec<f64>);

/// Most intervals overlapping at once.
fn peak_of(intervals: &[(Instant, Instant)]) -> u32 {
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for (a, b) in intervals {
        if b > a {
            edges.push((*a, 1));
            edges.push((*b, -1));
        }
    }
    edges.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak as u32
}

/// Where the replay and the simulator differ beyond the fidelity bounds: node-hours
/// within `node_hours_tolerance` (relative), time-to-start p95 within the largest
/// boot delay + 10 s. Empty when they agree.
pub fn fidelity_problems(
    scenario: &sim::Scenario,
    simulated: &Value,
    replayed: &Value,
    node_hours_tolerance: f64,
) -> Vec<String> {
    let mut problems = Vec::new();
    let num = |v: &Value, path: &[&str]| {
        path.iter()
            .try_fold(v, |v, k| v.get(*k))
            .and_then(Value::as_f64)
    };
    match (
        num(simulated, &["node_hours"]),
        num(replayed, &["node_hours"]),
    ) {
        (Some(sim), Some(real)) => {
            let off = if sim > 0.0 {
                (real - sim).abs() / sim
            } else {
                real
            };
            if off > node_hours_tolerance {
                problems.push(format!(
                    "node_hours: replay {real:.3} vs simulator {sim:.3} ({:+.1} %, tolerance {:.0} %)",
                    100.0 * (real - sim) / sim.max(f64::MIN_POSITIVE),
                    100.0 * node_hours_tolerance
                ));
            }
        }
        _ => problems.push("node_hours missing from a report".into()),
    }
    let boot = scenario
        .groups
        .iter()
        .map(|g| g.boot_delay)
        .max()
        .unwrap_or_default();
    let bound = boot.as_secs_f64() + 10.0;
    match (
        num(simulated, &["time_to_start_seconds", "p95"]),
        num(replayed, &["time_to_start_seconds", "p95"]),
    ) {
        (Some(sim), Some(real)) => {
            if (real - sim).abs() > bound {
                problems.push(format!(
                    "time_to_start_seconds.p95: replay {real:.1}s vs simulator {sim:.1}s (bound ±{bound:.0}s)"
                ));
            }
        }
        _ => problems.push("time_to_start_seconds.p95 missing from a report".into()),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_setting_is_scaled_and_nothing_else() {
        let settings = planner::PlannerSettings::default();
        let map = scaled_settings(&settings, 10.0).unwrap();
        assert_eq!(map["scan-interval"], json!("1000ms"));
        // `auto` stays `auto`: its constants are scaled instead.
        assert_eq!(map["scale-down-unneeded-time"], json!("auto"));
        assert_eq!(map["scale-down-billing-minimum"], json!("6000ms"));
        assert_eq!(map["retire-hold-limit"], json!("180000ms"));
        let fixed = planner::PlannerSettings {
            scale_down_unneeded_time: Duration::from_secs(600).into(),
            ..settings.clone()
        };
        let map_fixed = scaled_settings(&fixed, 10.0).unwrap();
        assert_eq!(map_fixed["scale-down-unneeded-time"], json!("60000ms"));
        assert_eq!(map["expander"], json!(settings.expander));
        // Reading the file back gives the scaled settings.
        let yaml = serde_yaml::to_string(&map).unwrap();
        let back: planner::PlannerSettings = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back.scan_interval, Duration::from_secs(1));
        assert_eq!(back.max_node_provision_time, Duration::from_secs(90));
        assert_eq!(back.max_nodes_total, settings.max_nodes_total);
        assert_eq!(back.assumed_boot_time, Duration::from_secs(12));
    }

    #[test]
    fn every_duration_setting_of_the_planner_is_listed() {
        // A setting whose default serialises as a duration (or `auto`) must be scaled.
        let Value::Object(map) = serde_json::to_value(planner::PlannerSettings::default()).unwrap()
        else {
            panic!("a map")
        };
        for (key, value) in map {
            let is_duration = value.as_str().is_some_and(|t| {
                t == "auto"
                    || model::parse_duration(t).is_ok()
                        && t.trim_end_matches(char::is_numeric) != ""
            });
            if is_duration && !DURATION_SETTINGS.contains(&key.as_str()) {
                panic!("settings.{key} ({value}) is not in DURATION_SETTINGS");
            }
        }
    }

    #[test]
    fn run_times_follow_the_spread_and_are_reproducible() {
        let text = "name: t\nnode_groups: [{name: g, region: us-west-2, zone: us-west-2a, instance_type: m5.large, max: 3}]\nworkload: [{name: w, pods: 200, requests: {cpu: '1'}, duration: 100s, duration_spread: 0.5}]\n";
        let scenario = sim::Scenario::from_yaml(text).unwrap();
        let w = &scenario.workloads[0];
        let a = durations(1, "w", w);
        assert_eq!(a, durations(1, "w", w));
        assert_ne!(a, durations(1, "w-2", w));
        assert_eq!(a.len(), 200);
        assert!(a
            .iter()
            .all(|d| *d >= Duration::from_secs(50) && *d < Duration::from_secs(150)));
        let mean = a.iter().map(Duration::as_secs_f64).sum::<f64>() / 200.0;
        assert!((mean - 100.0).abs() < 10.0, "mean {mean}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!(p, json!({"p50": 50.0, "p95": 95.0, "max": 100.0}));
    }

    #[test]
    fn unsupported_features_are_named_by_field() {
        let text = "name: t\nnode_groups: [{name: g, region: eu-west-1, zone: eu-west-1a, instance_type: m5.large, max: 3}]\nworkload: [{name: w, pods: 2, requests: {cpu: '1'}, duration: 1m, queue: provisioning-request}, {name: s, pods: 1, requests: {cpu: '1'}, duration: 1m, owner: {apiVersion: apps/v1, kind: StatefulSet}}, {name: argo, pods: 1, requests: {cpu: '1'}, duration: 1m, owner: {apiVersion: argoproj.io/v1alpha1, kind: Workflow}}]\n";
        let scenario = sim::Scenario::from_yaml(text).unwrap();
        let e = check_supported(&scenario, &["us-west-2".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("node_groups[0] (g).region"), "{e}");
        assert!(e.contains("workload[0] (w).queue"), "{e}");
        assert!(
            e.contains("workload[1] (s).owner: apps/v1/StatefulSet"),
            "{e}"
        );
        assert!(
            !e.contains("workload[2]"),
            "a custom owner is replayed: {e}"
        );
    }
}
