//! Scenario files: the YAML a user writes to describe node groups, DaemonSets and a
//! workload, parsed strictly (unknown fields are errors naming the field and line) and
//! then validated into a [`Scenario`] whose errors name the field path
//! (`node_groups[1] (gpu): min 5 is greater than max 3`).
//!
//! This module owns the file format and its meaning. It never touches the engine's
//! state and does no I/O: callers hand it the text.
//!
//! Format (see `examples/` for complete files):
//! ```yaml
//! name: example
//! seed: 7                    # overrides settings.seed; the CLI's --seed overrides both
//! horizon: 12h
//! regions: [us-west-2, us-east-1]   # optional preference order; default: order of first appearance
//! settings: {expander: least-waste, scale-down-unneeded-time: 10m}  # a PlannerSettings
//! node_groups:
//!   - name: cpu-usw2a
//!     region: us-west-2
//!     zone: us-west-2a
//!     instance_type: m5.4xlarge   # or instance_types: [m5.4xlarge, m5a.4xlarge] (first is simulated)
//!     min: 0
//!     max: 100
//!     initial: 0                  # default: min
//!     spot: false
//!     labels: {pool: cpu}
//!     taints: ["dedicated=gpu:NoSchedule"]
//!     boot_delay: 90s             # default 90s
//!     price_per_hour: 0.768       # default: catalog on-demand price (spot: x0.35)
//!     capacity_errors: [{from: 10m, to: 40m, available: 0}]
//!     interruptions: [{at: 30m, count: 2}]   # spot only: 2 running instances get a warning at 30m
//!     interruption_rate_per_hour: 0.5        # spot only: each instance, from its launch, seeded
//!     capacity_rebalance: false   # the ASG launches a replacement at a spot warning itself
//!     shape: {cpu: 16, memory: 64Gi, gpus: 0, arch: amd64}   # for types not in the catalog
//!     max_pods: 110
//! daemonsets:
//!   - {name: node-exporter, requests: {cpu: 100m, memory: 128Mi}}
//! workload:
//!   - name: etl
//!     at: 0s
//!     pods: 200
//!     requests: {cpu: "2", memory: 4Gi}
//!     duration: 20m               # required for job and bare; services run to the horizon
//!     duration_spread: 0.2        # optional: each pod runs duration x [0.8, 1.2), seeded
//!     kind: job                   # job | bare | service
//!     owner: {apiVersion: argoproj.io/v1alpha1, kind: Workflow}   # the pods' controller
//!                                 # default: batch/v1 Job (job), apps/v1 ReplicaSet (service); bare: none
//!     node_selector: {pool: cpu}
//!     tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
//!     gang: false
//!     priority: 0                 # the PriorityClass value: orders the pending queue; below
//!                                 # settings.expendable-pods-priority-cutoff (-10) a pending pod
//!                                 # triggers no scale-up and an evictable pod is expendable
//!     repeat: {every: 1h, times: 5}   # `times` arrivals in all, the first at `at`
//!     expected_duration: 20m      # the batch-autoscaler.io/expected-duration annotation
//!     active_deadline: 1h         # activeDeadlineSeconds
//!     safe_to_evict: false        # true | false | on-completion
//!     anti_affinity_per_node: false   # one pod of the job per node
//!     queue: provisioning-request # queued as Kueue queues it: the simulator creates a
//!                                 # ProvisioningRequest, creates the pods once it is
//!                                 # Provisioned, retries on Failed with Kueue's backoff
//!     provisioning_class: best-effort-atomic-scale-up   # or check-capacity
//! ```
//!
//! `kind` is the pods' lifecycle (run for `duration`, or until the horizon); `owner` is
//! who created them, and with `safe_to_evict` and `priority` decides, exactly as for a
//! real pod ([`planner::disposition`] under the scenario's `settings`), whether the
//! planner may evict them and whether losing one counts as killed.

use model::well_known::LABEL_HOSTNAME;
use model::{
    parse_duration, DaemonSetView, InstanceTypeName, LabelSelector, Labels, NodeGroupId,
    NodeGroupSpec, NodeShape, Owner, OwnerKind, PodAntiAffinityTerm, PurchaseOption, Region,
    Resources, SafeToEvict, Taint, TaintEffect, Time, Toleration, TolerationOperator, Zone,
};
use planner::PlannerSettings;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// Spot instances without a `price_per_hour` are billed at this fraction of the
/// on-demand price (a typical spot discount; real spot prices vary by pool and hour).
pub const SPOT_PRICE_FRACTION: f64 = 0.35;

/// Boot delay of a group that does not declare one: launch to Ready node.
pub const DEFAULT_BOOT_DELAY: Duration = Duration::from_secs(90);

/// Horizon of a scenario that does not declare one.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// What kind of problem a scenario has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioErrorKind {
    /// Not valid YAML, or not the scenario's shape (unknown field, wrong type).
    Syntax,
    /// Well-formed, but a value is not acceptable (min > max, bad quantity, ...).
    Invalid,
}

/// A scenario that cannot be run. `path` names the field (`workload[0] (etl).requests.cpu`);
/// for syntax errors it is empty and the message carries serde_yaml's path and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub kind: ScenarioErrorKind,
    pub path: String,
    pub message: String,
}

impl ScenarioError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ScenarioErrorKind::Invalid,
            path: path.into(),
            message: message.into(),
        }
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ScenarioErrorKind {
        self.kind
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ScenarioError {}

// ---------------------------------------------------------------------------------
// The file as written.
// ---------------------------------------------------------------------------------

/// A scalar written as a string or a number (`cpu: 2`, `cpu: "2"`, `duration: 90`),
/// kept as text so validation can name the field when it does not parse.
#[derive(Debug, Clone, PartialEq)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    horizon: Option<Text>,
    #[serde(default)]
    regions: Option<Vec<String>>,
    #[serde(default)]
    settings: Option<PlannerSettings>,
    node_groups: Vec<RawGroup>,
    #[serde(default)]
    daemonsets: Vec<RawDaemonSet>,
    #[serde(default)]
    workload: Vec<RawWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    region: String,
    zone: String,
    #[serde(default)]
    instance_type: Option<String>,
    #[serde(default)]
    instance_types: Option<Vec<String>>,
    #[serde(default)]
    min: u32,
    max: u32,
    #[serde(default)]
    initial: Option<u32>,
    #[serde(default)]
    spot: bool,
    #[serde(default)]
    labels: BTreeMap<String, Text>,
    #[serde(default)]
    taints: Vec<String>,
    #[serde(default)]
    boot_delay: Option<Text>,
    #[serde(default)]
    price_per_hour: Option<f64>,
    #[serde(default)]
    capacity_errors: Vec<RawCapacityError>,
    #[serde(default)]
    shape: Option<RawShape>,
    #[serde(default)]
    max_pods: Option<u32>,
    #[serde(default)]
    interruptions: Vec<RawInterruption>,
    #[serde(default)]
    interruption_rate_per_hour: Option<f64>,
    #[serde(default)]
    capacity_rebalance: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterruption {
    at: Text,
    count: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapacityError {
    from: Text,
    to: Text,
    #[serde(default)]
    available: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShape {
    cpu: Text,
    memory: Text,
    #[serde(default)]
    gpus: u32,
    #[serde(default)]
    arch: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemonSet {
    name: String,
    #[serde(default)]
    requests: BTreeMap<String, Text>,
    #[serde(default)]
    node_selector: BTreeMap<String, Text>,
    #[serde(default)]
    tolerations: Vec<RawToleration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToleration {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    operator: Option<String>,
    #[serde(default)]
    value: Option<Text>,
    #[serde(default)]
    effect: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepeat {
    every: Text,
    times: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Job,
    Bare,
    Service,
}

/// A controller reference as a pod's `ownerReferences` entry spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    #[serde(default, rename = "apiVersion")]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: String,
    #[serde(default)]
    at: Option<Text>,
    pods: u32,
    #[serde(default)]
    requests: BTreeMap<String, Text>,
    #[serde(default)]
    duration: Option<Text>,
    #[serde(default)]
    duration_spread: Option<f64>,
    #[serde(default)]
    kind: Option<RawKind>,
    #[serde(default)]
    owner: Option<RawOwner>,
    #[serde(default)]
    node_selector: BTreeMap<String, Text>,
    #[serde(default)]
    tolerations: Vec<RawToleration>,
    #[serde(default)]
    gang: bool,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    repeat: Option<RawRepeat>,
    #[serde(default)]
    expected_duration: Option<Text>,
    #[serde(default)]
    active_deadline: Option<Text>,
    #[serde(default)]
    safe_to_evict: Option<Text>,
    #[serde(default)]
    anti_affinity_per_node: bool,
    #[serde(default)]
    queue: Option<Text>,
    #[serde(default)]
    provisioning_class: Option<Text>,
}

// ---------------------------------------------------------------------------------
// The validated scenario.
// ---------------------------------------------------------------------------------

/// Where a group's price comes from (reported, so a user sees what was assumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    /// `price_per_hour` in the scenario.
    Scenario,
    /// The catalog's us-east-1 on-demand price.
    CatalogOnDemand,
    /// The catalog's on-demand price × [`SPOT_PRICE_FRACTION`].
    CatalogSpotEstimate,
}

impl PriceSource {
    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scenario => "scenario",
            Self::CatalogOnDemand => "catalog-on-demand",
            Self::CatalogSpotEstimate => "catalog-on-demand-x0.35",
        }
    }
}

/// A window in which a group can launch at most `available` more instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityWindow {
    pub from: Time,
    pub to: Time,
    pub available: u32,
}

/// Spot interruption warnings at a set time: `count` of the group's running
/// instances, chosen with the scenario's seed, get one at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptionAt {
    pub at: Time,
    pub count: u32,
}

/// A node group of the scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDef {
    /// What the planner sees (the spec of the simulated ASG).
    pub spec: NodeGroupSpec,
    /// The one zone the group launches into.
    pub zone: Zone,
    /// Every instance type listed; the first is the one simulated.
    pub instance_types: Vec<InstanceTypeName>,
    pub initial: u32,
    pub boot_delay: Duration,
    pub price_per_hour: f64,
    pub price_source: PriceSource,
    pub capacity_errors: Vec<CapacityWindow>,
    /// Explicit spot interruptions, in time order (spot groups only).
    pub interruptions: Vec<InterruptionAt>,
    /// Spot interruption warnings per instance-hour: each instance of the group gets
    /// one after an exponentially distributed time from its launch (a Poisson process
    /// per running instance), drawn from the seed. 0 = none (spot groups only).
    pub interruption_rate_per_hour: f64,
}

/// How a workload's pods live (who owns them is [`WorkloadDef::owner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// Batch pods: they run for `duration` and complete; owned by a `batch/v1` Job
    /// unless the workload names another owner. A lost pod is recreated and starts over.
    Job,
    /// Bare pods: no owner, nothing recreates them (the simulator does, to keep
    /// counting honest, and counts the kill unless they are marked safe to evict).
    Bare,
    /// Long-running pods that run until the horizon; owned by an `apps/v1` ReplicaSet
    /// (a Deployment's) unless the workload names another owner.
    Service,
}

impl WorkloadKind {
    /// The scenario's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Job => "job",
            Self::Bare => "bare",
            Self::Service => "service",
        }
    }
}

/// The controller of a workload's pods, as their owner reference names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadOwner {
    /// `batch/v1`, `argoproj.io/v1alpha1`; `v1` for the core group.
    pub api_version: String,
    pub kind: String,
}

impl WorkloadOwner {
    /// The default owner of a workload of `kind`: a `batch/v1` Job for batch pods, an
    /// `apps/v1` ReplicaSet for services, none for bare pods.
    pub fn default_for(kind: WorkloadKind) -> Option<Self> {
        let owner = |api_version: &str, kind: &str| Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        };
        match kind {
            WorkloadKind::Job => Some(owner("batch/v1", "Job")),
            WorkloadKind::Service => Some(owner("apps/v1", "ReplicaSet")),
            WorkloadKind::Bare => None,
        }
    }

    /// The owner of a pod whose controller of this kind is called `name`.
    pub fn owner(&self, name: &str) -> Owner {
        Owner::of_controller(&self.api_version, &self.kind, name)
    }

    /// The group-qualified kind (`argoproj.io/Workflow`, `Pod` for the core group).
    pub fn owner_kind(&self) -> OwnerKind {
        OwnerKind::of_reference(&self.api_version, &self.kind)
    }
}

/// One workload entry of the scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadDef {
    pub name: String,
    /// Every arrival (one per repeat), increasing.
    pub arrivals: Vec<Time>,
    pub pods: u32,
    /// The effective request of each pod (one pod slot included).
    pub requests: Resources,
    /// How long each pod runs once started; `None` for services.
    pub duration: Option<Duration>,
    /// Each pod runs `duration × (1 ± spread)`, drawn from the seed.
    pub duration_spread: f64,
    pub kind: WorkloadKind,
    /// The pods' controller (defaulted from `kind`); `None` for bare pods.
    pub owner: Option<WorkloadOwner>,
    pub node_selector: Labels,
    pub tolerations: Vec<Toleration>,
    pub gang: bool,
    pub priority: i32,
    pub expected_duration: Option<Duration>,
    pub active_deadline: Option<Duration>,
    pub safe_to_evict: Option<SafeToEvict>,
    pub anti_affinity_per_node: bool,
    /// Queued behind a ProvisioningRequest of this class (the simulator plays Kueue):
    /// the pods are created only once the request is provisioned.
    pub queue: Option<model::ProvisioningClass>,
}

impl WorkloadDef {
    /// The name of the `n`th arrival's job (`etl`, or `etl-1`, `etl-2`, ... when repeated).
    pub fn instance_name(&self, n: usize) -> String {
        if self.arrivals.len() == 1 {
            self.name.clone()
        } else {
            format!("{}-{}", self.name, n + 1)
        }
    }

    /// The owner of the pods of job `job_name` (the controller is named after the job).
    pub fn pod_owner(&self, job_name: &str) -> Owner {
        self.owner
            .as_ref()
            .map_or(Owner::Bare, |o| o.owner(job_name))
    }

    /// Anti-affinity term that keeps two pods of job `job_name` off one node.
    pub fn anti_affinity_term(job_name: &str) -> PodAntiAffinityTerm {
        let mut match_labels = Labels::new();
        match_labels.insert(JOB_NAME_LABEL.to_owned(), job_name.to_owned());
        PodAntiAffinityTerm {
            selector: LabelSelector {
                match_labels,
                match_expressions: Vec::new(),
            },
            namespaces: Vec::new(),
            topology_key: LABEL_HOSTNAME.to_owned(),
        }
    }
}

/// The label the simulated Job controller puts on its pods (Kubernetes' own name).
pub const JOB_NAME_LABEL: &str = "job-name";

/// A validated scenario, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub horizon: Duration,
    /// Planner settings; `settings.seed` equals `seed`.
    pub settings: PlannerSettings,
    pub groups: Vec<GroupDef>,
    pub daemonsets: Vec<DaemonSetView>,
    pub workloads: Vec<WorkloadDef>,
    /// Things that were accepted but look doubtful (shown in the report).
    pub warnings: Vec<String>,
}

impl Scenario {
    /// Parses and validates scenario text.
    pub fn from_yaml(text: &str) -> Result<Self, ScenarioError> {
        let raw: RawScenario = serde_yaml::from_str(text).map_err(|e| ScenarioError {
            kind: ScenarioErrorKind::Syntax,
            path: String::new(),
            message: e.to_string(),
        })?;
        validate(raw)
    }

    /// The same scenario with another seed (the CLI's `--seed`).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.settings.seed = seed;
        self
    }
}

// ---------------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------------

fn duration_at(path: &str, text: &Text) -> Result<Duration, ScenarioError> {
    parse_duration(&text.0).map_err(|e| ScenarioError::invalid(path, e.to_string()))
}

fn positive_duration_at(path: &str, text: &Text) -> Result<Duration, ScenarioError> {
    let d = duration_at(path, text)?;
    if d.is_zero() {
        return Err(ScenarioError::invalid(
            path,
            format!("must be greater than zero, got {:?}", text.0),
        ));
    }
    Ok(d)
}

fn time_of(d: Duration) -> Time {
    Time::ZERO + d
}

fn resources_at(path: &str, requests: &BTreeMap<String, Text>) -> Result<Resources, ScenarioError> {
    for (name, text) in requests {
        if let Err((_, e)) = Resources::from_quantities([(name.as_str(), text.0.as_str())]) {
            return Err(ScenarioError::invalid(
                format!("{path}.{name}"),
                e.to_string(),
            ));
        }
        if text.0.trim().starts_with('-') {
            return Err(ScenarioError::invalid(
                format!("{path}.{name}"),
                format!("must not be negative, got {:?}", text.0),
            ));
        }
    }
    Resources::from_quantities(requests.iter().map(|(k, v)| (k.as_str(), v.0.as_str())))
        .map_err(|(name, e)| ScenarioError::invalid(format!("{path}.{name}"), e.to_string()))
}

fn string_map(map: &BTreeMap<String, Text>) -> Labels {
    map.iter()
        .map(|(k, v)| (k.as_str(), v.0.as_str()))
        .collect()
}

fn tolerations_at(path: &str, raw: &[RawToleration]) -> Result<Vec<Toleration>, ScenarioError> {
    raw.iter()
        .enumerate()
        .map(|(i, t)| {
            let here = format!("{path}[{i}]");
            let operator = match t.operator.as_deref() {
                None | Some("Equal") => TolerationOperator::Equal,
                Some("Exists") => TolerationOperator::Exists,
                Some(other) => {
                    return Err(ScenarioError::invalid(
                        format!("{here}.operator"),
                        format!("unknown operator {other:?} (expected Equal or Exists)"),
                    ))
                }
            };
            let effect = match t.effect.as_deref() {
                None | Some("") => None,
                Some(text) => Some(TaintEffect::parse(text).ok_or_else(|| {
                    ScenarioError::invalid(
                        format!("{here}.effect"),
                        format!("unknown effect {text:?} (expected NoSchedule, PreferNoSchedule or NoExecute)"),
                    )
                })?),
            };
            let key = t.key.clone().unwrap_or_default();
            if key.is_empty() && operator == TolerationOperator::Equal {
                return Err(ScenarioError::invalid(format!("{here}.key"), "an empty key requires operator Exists"));
            }
            Ok(Toleration { key, operator, value: t.value.as_ref().map(|v| v.0.clone()).unwrap_or_default(), effect })
        })
        .collect()
}

fn unique_name(seen: &mut BTreeSet<String>, path: &str, name: &str) -> Result<(), ScenarioError> {
    if name.trim().is_empty() {
        return Err(ScenarioError::invalid(
            format!("{path}.name"),
            "must not be empty",
        ));
    }
    if !seen.insert(name.to_owned()) {
        return Err(ScenarioError::invalid(
            format!("{path}.name"),
            format!("duplicate name {name:?}"),
        ));
    }
    Ok(())
}

fn validate(raw: RawScenario) -> Result<Scenario, ScenarioError> {
    if raw.name.trim().is_empty() {
        return Err(ScenarioError::invalid("name", "must not be empty"));
    }
    let horizon = match &raw.horizon {
        Some(text) => positive_duration_at("horizon", text)?,
        None => DEFAULT_HORIZON,
    };
    let mut settings = raw.settings.unwrap_or_default();
    let seed = raw.seed.unwrap_or(settings.seed);
    settings.seed = seed;
    if let Err(e) = planner::Planner::new(settings.clone()) {
        return Err(ScenarioError::invalid(
            format!("settings.{}", e.field),
            e.message,
        ));
    }
    let mut warnings = Vec::new();

    // Region preference: the declared order, else the order of first appearance.
    let mut regions: Vec<String> = Vec::new();
    if let Some(declared) = &raw.regions {
        for (i, r) in declared.iter().enumerate() {
            if regions.contains(r) {
                return Err(ScenarioError::invalid(
                    format!("regions[{i}]"),
                    format!("duplicate region {r:?}"),
                ));
            }
            regions.push(r.clone());
        }
    }
    if raw.node_groups.is_empty() {
        return Err(ScenarioError::invalid(
            "node_groups",
            "at least one node group is required",
        ));
    }
    for (i, g) in raw.node_groups.iter().enumerate() {
        if !regions.contains(&g.region) {
            if raw.regions.is_some() {
                return Err(ScenarioError::invalid(
                    format!("node_groups[{i}] ({}).region", g.name),
                    format!(
                        "region {:?} is not in the top-level regions list {:?}",
                        g.region, regions
                    ),
                ));
            }
            regions.push(g.region.clone());
        }
    }

    let daemonsets = validate_daemonsets(&raw.daemonsets)?;

    let mut names = BTreeSet::new();
    let mut groups = Vec::new();
    for (i, g) in raw.node_groups.iter().enumerate() {
        let path = format!("node_groups[{i}] ({})", g.name);
        unique_name(&mut names, &format!("node_groups[{i}]"), &g.name)?;
        let rank = regions.iter().position(|r| *r == g.region).unwrap_or(0) as u32;
        groups.push(validate_group(&path, g, rank, horizon, &mut warnings)?);
    }

    let mut names = BTreeSet::new();
    let mut job_names = BTreeSet::new();
    let mut workloads = Vec::new();
    for (i, w) in raw.workload.iter().enumerate() {
        let path = format!("workload[{i}] ({})", w.name);
        unique_name(&mut names, &format!("workload[{i}]"), &w.name)?;
        let def = validate_workload(&path, w, horizon)?;
        for n in 0..def.arrivals.len() {
            let job = def.instance_name(n);
            if !job_names.insert(job.clone()) {
                return Err(ScenarioError::invalid(
                    format!("{path}.name"),
                    format!("job name {job:?} (from repeat) collides with another workload"),
                ));
            }
        }
        workloads.push(def);
    }
    if workloads.is_empty() {
        warnings.push("the workload is empty".to_owned());
    }

    Ok(Scenario {
        name: raw.name,
        seed,
        horizon,
        settings,
        groups,
        daemonsets,
        workloads,
        warnings,
    })
}

fn validate_daemonsets(raw: &[RawDaemonSet]) -> Result<Vec<DaemonSetView>, ScenarioError> {
    let mut names = BTreeSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, d)| {
            let path = format!("daemonsets[{i}] ({})", d.name);
            unique_name(&mut names, &format!("daemonsets[{i}]"), &d.name)?;
            let mut requests = resources_at(&format!("{path}.requests"), &d.requests)?;
            requests.pods = requests.pods.max(1);
            Ok(DaemonSetView {
                name: d.name.clone(),
                requests,
                node_selector: string_map(&d.node_selector),
                required_affinity: None,
                tolerations: tolerations_at(&format!("{path}.tolerations"), &d.tolerations)?,
            })
        })
        .collect()
}

fn validate_group(
    path: &str,
    g: &RawGroup,
    region_rank: u32,
    horizon: Duration,
    warnings: &mut Vec<String>,
) -> Result<GroupDef, ScenarioError> {
    let instance_types: Vec<String> = match (&g.instance_type, &g.instance_types) {
        (Some(t), None) => vec![t.clone()],
        (None, Some(list)) if !list.is_empty() => list.clone(),
        (None, Some(_)) => {
            return Err(ScenarioError::invalid(
                format!("{path}.instance_types"),
                "must not be empty",
            ))
        }
        (None, None) => {
            return Err(ScenarioError::invalid(
                path,
                "one of instance_type or instance_types is required",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ScenarioError::invalid(
                path,
                "give instance_type or instance_types, not both",
            ))
        }
    };
    let type_field = if g.instance_type.is_some() {
        "instance_type"
    } else {
        "instance_types[0]"
    };
    let simulated = instance_types[0].clone();
    if g.min > g.max {
        return Err(ScenarioError::invalid(
            path,
            format!("min {} is greater than max {}", g.min, g.max),
        ));
    }
    let initial = g.initial.unwrap_or(g.min);
    if initial < g.min || initial > g.max {
        return Err(ScenarioError::invalid(
            format!("{path}.initial"),
            format!(
                "initial {initial} is outside min {} .. max {}",
                g.min, g.max
            ),
        ));
    }
    if !g.zone.starts_with(&g.region) {
        return Err(ScenarioError::invalid(
            format!("{path}.zone"),
            format!("zone {:?} is not in region {:?}", g.zone, g.region),
        ));
    }
    let max_pods = g.max_pods.unwrap_or(model::group::DEFAULT_MAX_PODS);
    if max_pods == 0 {
        return Err(ScenarioError::invalid(
            format!("{path}.max_pods"),
            "must be at least 1",
        ));
    }
    let type_name = InstanceTypeName::new(simulated.clone());
    let shape = match (&g.shape, catalog::lookup(&simulated)) {
        (Some(s), _) => {
            let cpu = model::parse_quantity(&s.cpu.0)
                .map_err(|e| ScenarioError::invalid(format!("{path}.shape.cpu"), e.to_string()))?;
            if cpu.milli_value() <= 0 || cpu.milli_value() % 1000 != 0 {
                return Err(ScenarioError::invalid(
                    format!("{path}.shape.cpu"),
                    format!("must be a whole, positive number of vCPUs, got {:?}", s.cpu.0),
                ));
            }
            let memory = model::parse_quantity(&s.memory.0)
                .map_err(|e| ScenarioError::invalid(format!("{path}.shape.memory"), e.to_string()))?;
            if memory.value() <= 0 {
                return Err(ScenarioError::invalid(format!("{path}.shape.memory"), "must be positive"));
            }
            let arch = s.arch.clone().unwrap_or_else(|| "amd64".to_owned());
            if arch != "amd64" && arch != "arm64" {
                return Err(ScenarioError::invalid(format!("{path}.shape.arch"), format!("expected amd64 or arm64, got {arch:?}")));
            }
            let memory_mib = (memory.value() as u64).div_ceil(1 << 20);
            NodeShape::for_instance(type_name, &arch, (cpu.milli_value() / 1000) as u32, memory_mib, s.gpus, max_pods)
        }
        (None, Some(known)) => {
            NodeShape::for_instance(type_name, known.arch.label(), known.vcpus, known.memory_mib, known.gpus, max_pods)
        }
        (None, None) => {
            return Err(ScenarioError::invalid(
                format!("{path}.{type_field}"),
                format!("unknown instance type {simulated:?} (not in the catalog): add shape: {{cpu, memory, gpus}}"),
            ))
        }
    };
    for (j, other) in instance_types.iter().enumerate().skip(1) {
        match catalog::lookup(other) {
            Some(o) => {
                let first = catalog::lookup(&simulated);
                if first.is_some_and(|f| {
                    (f.vcpus, f.memory_mib, f.gpus) != (o.vcpus, o.memory_mib, o.gpus)
                }) {
                    warnings.push(format!(
                        "{path}.instance_types[{j}]: {other} differs in shape from {simulated}; the simulation uses {simulated}"
                    ));
                }
            }
            None => warnings.push(format!(
                "{path}.instance_types[{j}]: {other} is not in the catalog (ignored)"
            )),
        }
    }
    let mut taints = Vec::new();
    for (j, t) in g.taints.iter().enumerate() {
        taints.push(
            Taint::parse(t).map_err(|e| {
                ScenarioError::invalid(format!("{path}.taints[{j}]"), e.to_string())
            })?,
        );
    }
    let boot_delay = match &g.boot_delay {
        Some(t) => duration_at(&format!("{path}.boot_delay"), t)?,
        None => DEFAULT_BOOT_DELAY,
    };
    let on_demand = catalog::on_demand_price_usd_per_hour(&simulated);
    let (price_per_hour, price_source) = match (g.price_per_hour, on_demand, g.spot) {
        (Some(p), _, _) => {
            if !(p.is_finite() && p >= 0.0) {
                return Err(ScenarioError::invalid(
                    format!("{path}.price_per_hour"),
                    format!("must be zero or more, got {p}"),
                ));
            }
            (p, PriceSource::Scenario)
        }
        (None, Some(p), false) => (p, PriceSource::CatalogOnDemand),
        (None, Some(p), true) => (p * SPOT_PRICE_FRACTION, PriceSource::CatalogSpotEstimate),
        (None, None, _) => {
            return Err(ScenarioError::invalid(
                format!("{path}.price_per_hour"),
                format!("required: the catalog has no price for {simulated:?}"),
            ))
        }
    };
    let mut capacity_errors = Vec::new();
    for (j, w) in g.capacity_errors.iter().enumerate() {
        let here = format!("{path}.capacity_errors[{j}]");
        let from = duration_at(&format!("{here}.from"), &w.from)?;
        let to = duration_at(&format!("{here}.to"), &w.to)?;
        if to <= from {
            return Err(ScenarioError::invalid(
                format!("{here}.to"),
                format!("must be after from ({:?} <= {:?})", w.to.0, w.from.0),
            ));
        }
        capacity_errors.push(CapacityWindow {
            from: time_of(from),
            to: time_of(to),
            available: w.available,
        });
    }
    let (interruptions, interruption_rate_per_hour) = interruptions_at(path, g, horizon)?;
    if g.capacity_rebalance && !g.spot {
        warnings.push(format!("{path}.capacity_rebalance: has no effect on an on-demand group (only spot instances are interrupted)"));
    }
    let spec = NodeGroupSpec {
        id: NodeGroupId::new(g.name.clone()),
        region: Region::new(g.region.clone()),
        zones: vec![Zone::new(g.zone.clone())],
        shape,
        min_size: g.min,
        max_size: g.max,
        labels: string_map(&g.labels),
        taints,
        purchase: if g.spot {
            PurchaseOption::Spot
        } else {
            PurchaseOption::OnDemand
        },
        price_per_hour: Some(price_per_hour),
        region_rank,
        capacity_rebalance: g.capacity_rebalance,
    };
    Ok(GroupDef {
        spec,
        zone: Zone::new(g.zone.clone()),
        instance_types: instance_types
            .into_iter()
            .map(InstanceTypeName::new)
            .collect(),
        initial,
        boot_delay,
        price_per_hour,
        price_source,
        capacity_errors,
        interruptions,
        interruption_rate_per_hour,
    })
}

/// A group's `interruptions` and `interruption_rate_per_hour`: only a spot group can
/// have them (EC2 interrupts nothing else), every time within the horizon.
fn interruptions_at(
    path: &str,
    g: &RawGroup,
    horizon: Duration,
) -> Result<(Vec<InterruptionAt>, f64), ScenarioError> {
    let on_demand = |field: &str| {
        ScenarioError::invalid(
            format!("{path}.{field}"),
            "only spot instances are interrupted: set spot: true on the group, or remove the field",
        )
    };
    if !g.spot && !g.interruptions.is_empty() {
        return Err(on_demand("interruptions"));
    }
    let rate = g.interruption_rate_per_hour.unwrap_or(0.0);
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(ScenarioError::invalid(
            format!("{path}.interruption_rate_per_hour"),
            format!("must be zero or more, got {rate}"),
        ));
    }
    if !g.spot && rate > 0.0 {
        return Err(on_demand("interruption_rate_per_hour"));
    }
    let mut interruptions = Vec::new();
    for (j, i) in g.interruptions.iter().enumerate() {
        let here = format!("{path}.interruptions[{j}]");
        let at = duration_at(&format!("{here}.at"), &i.at)?;
        if at >= horizon {
            return Err(ScenarioError::invalid(
                format!("{here}.at"),
                format!(
                    "at or after the horizon ({})",
                    model::format_duration(horizon)
                ),
            ));
        }
        if i.count == 0 {
            return Err(ScenarioError::invalid(
                format!("{here}.count"),
                "must be at least 1",
            ));
        }
        if i.count > g.max {
            return Err(ScenarioError::invalid(
                format!("{here}.count"),
                format!("{} is more than the group's max {}", i.count, g.max),
            ));
        }
        interruptions.push(InterruptionAt {
            at: time_of(at),
            count: i.count,
        });
    }
    // Stable: entries at the same time keep their order (and their seeded choice).
    interruptions.sort_by_key(|i| i.at);
    Ok((interruptions, rate))
}

fn validate_workload(
    path: &str,
    w: &RawWorkload,
    horizon: Duration,
) -> Result<WorkloadDef, ScenarioError> {
    let kind = match w.kind.unwrap_or(RawKind::Job) {
        RawKind::Job => WorkloadKind::Job,
        RawKind::Bare => WorkloadKind::Bare,
        RawKind::Service => WorkloadKind::Service,
    };
    if w.pods == 0 {
        return Err(ScenarioError::invalid(
            format!("{path}.pods"),
            "must be at least 1",
        ));
    }
    let at = match &w.at {
        Some(t) => duration_at(&format!("{path}.at"), t)?,
        None => Duration::ZERO,
    };
    if at >= horizon {
        return Err(ScenarioError::invalid(
            format!("{path}.at"),
            format!(
                "arrives at or after the horizon ({})",
                model::format_duration(horizon)
            ),
        ));
    }
    let duration = match (&w.duration, kind) {
        (Some(t), WorkloadKind::Job | WorkloadKind::Bare) => {
            Some(positive_duration_at(&format!("{path}.duration"), t)?)
        }
        (None, WorkloadKind::Job | WorkloadKind::Bare) => {
            return Err(ScenarioError::invalid(
                format!("{path}.duration"),
                format!("required for kind {}", kind.as_str()),
            ))
        }
        (Some(_), WorkloadKind::Service) => {
            return Err(ScenarioError::invalid(
                format!("{path}.duration"),
                "services run until the horizon: remove duration",
            ))
        }
        (None, WorkloadKind::Service) => None,
    };
    let duration_spread = w.duration_spread.unwrap_or(0.0);
    if !(0.0..1.0).contains(&duration_spread) {
        return Err(ScenarioError::invalid(
            format!("{path}.duration_spread"),
            format!("must be in [0, 1), got {duration_spread}"),
        ));
    }
    if w.gang && kind == WorkloadKind::Service {
        return Err(ScenarioError::invalid(
            format!("{path}.gang"),
            "gangs are for job and bare workloads",
        ));
    }
    let mut requests = resources_at(&format!("{path}.requests"), &w.requests)?;
    requests.pods = requests.pods.max(1);
    let mut arrivals = vec![time_of(at)];
    if let Some(r) = &w.repeat {
        let every = positive_duration_at(&format!("{path}.repeat.every"), &r.every)?;
        if r.times == 0 {
            return Err(ScenarioError::invalid(
                format!("{path}.repeat.times"),
                "must be at least 1",
            ));
        }
        for n in 1..r.times {
            let t = at + every * n;
            if t >= horizon {
                break;
            }
            arrivals.push(time_of(t));
        }
    }
    let optional_duration =
        |field: &str, t: &Option<Text>| -> Result<Option<Duration>, ScenarioError> {
            t.as_ref()
                .map(|t| positive_duration_at(&format!("{path}.{field}"), t))
                .transpose()
        };
    let owner = owner_at(&format!("{path}.owner"), w.owner.as_ref(), kind)?;
    let safe_to_evict = match w.safe_to_evict.as_ref().map(|t| t.0.as_str()) {
        None => None,
        Some("true") => Some(SafeToEvict::True),
        Some("false") => Some(SafeToEvict::False),
        Some("on-completion") => Some(SafeToEvict::OnCompletion),
        Some(other) => {
            return Err(ScenarioError::invalid(
                format!("{path}.safe_to_evict"),
                format!("expected true, false or on-completion, got {other:?}"),
            ))
        }
    };
    Ok(WorkloadDef {
        name: w.name.clone(),
        arrivals,
        pods: w.pods,
        requests,
        duration,
        duration_spread,
        kind,
        owner,
        node_selector: string_map(&w.node_selector),
        tolerations: tolerations_at(&format!("{path}.tolerations"), &w.tolerations)?,
        gang: w.gang,
        priority: w.priority,
        expected_duration: optional_duration("expected_duration", &w.expected_duration)?,
        active_deadline: optional_duration("active_deadline", &w.active_deadline)?,
        safe_to_evict,
        anti_affinity_per_node: w.anti_affinity_per_node,
        queue: queue_at(path, w, kind)?,
    })
}

/// `queue: provisioning-request` with `provisioning_class:` `best-effort-atomic-scale-up`
/// (the default) or `check-capacity` (the full class names are accepted too).
fn queue_at(
    path: &str,
    w: &RawWorkload,
    kind: WorkloadKind,
) -> Result<Option<model::ProvisioningClass>, ScenarioError> {
    let class = match w.provisioning_class.as_ref().map(|t| t.0.as_str()) {
        None
        | Some("best-effort-atomic-scale-up")
        | Some(model::provreq::CLASS_BEST_EFFORT_ATOMIC) => {
            model::ProvisioningClass::BestEffortAtomic
        }
        Some("check-capacity") | Some(model::provreq::CLASS_CHECK_CAPACITY) => {
            model::ProvisioningClass::CheckCapacity
        }
        Some(other) => {
            return Err(ScenarioError::invalid(
                format!("{path}.provisioning_class"),
                format!("expected best-effort-atomic-scale-up or check-capacity, got {other:?}"),
            ))
        }
    };
    match w.queue.as_ref().map(|t| t.0.as_str()) {
        None => {
            if w.provisioning_class.is_some() {
                return Err(ScenarioError::invalid(
                    format!("{path}.provisioning_class"),
                    "only with queue: provisioning-request",
                ));
            }
            Ok(None)
        }
        Some("provisioning-request") if kind == WorkloadKind::Service => {
            Err(ScenarioError::invalid(
                format!("{path}.queue"),
                "queues are for job and bare workloads",
            ))
        }
        Some("provisioning-request") => Ok(Some(class)),
        Some(other) => Err(ScenarioError::invalid(
            format!("{path}.queue"),
            format!("expected provisioning-request, got {other:?}"),
        )),
    }
}

/// The owner a workload declares (or the default of its kind), checked the way the API
/// server would check an owner reference, and never one the simulator cannot model.
fn owner_at(
    path: &str,
    raw: Option<&RawOwner>,
    kind: WorkloadKind,
) -> Result<Option<WorkloadOwner>, ScenarioError> {
    let Some(raw) = raw else {
        return Ok(WorkloadOwner::default_for(kind));
    };
    if kind == WorkloadKind::Bare {
        return Err(ScenarioError::invalid(
            path,
            "bare pods have no owner: remove owner, or use kind job or service",
        ));
    }
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    let api_version = raw.api_version.as_deref().unwrap_or("").trim();
    if api_version.is_empty() {
        return Err(ScenarioError::invalid(
            format!("{path}.apiVersion"),
            "must not be empty (e.g. argoproj.io/v1alpha1; v1 for the core group)",
        ));
    }
    let well_formed = match api_version.split_once('/') {
        Some((group, version)) => word(group) && word(version),
        None => word(api_version),
    };
    if !well_formed {
        return Err(ScenarioError::invalid(
            format!("{path}.apiVersion"),
            format!("expected group/version (argoproj.io/v1alpha1) or v1 for the core group, got {api_version:?}"),
        ));
    }
    let kind_name = raw.kind.as_deref().unwrap_or("").trim();
    if kind_name.is_empty() {
        return Err(ScenarioError::invalid(
            format!("{path}.kind"),
            "must not be empty (e.g. Workflow, PyTorchJob, Pod)",
        ));
    }
    if !kind_name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !kind_name.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(ScenarioError::invalid(
            format!("{path}.kind"),
            format!("expected a kind such as Workflow (letters and digits), got {kind_name:?}"),
        ));
    }
    let owner = WorkloadOwner {
        api_version: api_version.to_owned(),
        kind: kind_name.to_owned(),
    };
    match owner.owner("") {
        Owner::DaemonSet(_) => Err(ScenarioError::invalid(
            format!("{path}.kind"),
            "DaemonSet pods are declared under daemonsets, not as workload",
        )),
        Owner::Mirror => Err(ScenarioError::invalid(
            format!("{path}.kind"),
            "a Node owns only static (mirror) pods, which are not workload",
        )),
        _ => Ok(Some(owner)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
name: t
horizon: 2h
node_groups:
  - {name: cpu, region: us-west-2, zone: us-west-2a, instance_type: m5.large, max: 3}
workload:
  - {name: etl, pods: 2, requests: {cpu: 1, memory: 1Gi}, duration: 10m}
";

    fn err(text: &str) -> String {
        Scenario::from_yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_scenario_parses_with_defaults() {
        let s = Scenario::from_yaml(MINIMAL).unwrap();
        assert_eq!(s.horizon, Duration::from_secs(7200));
        assert_eq!(s.groups[0].boot_delay, DEFAULT_BOOT_DELAY);
        assert_eq!(s.groups[0].price_source, PriceSource::CatalogOnDemand);
        assert_eq!(s.workloads[0].requests.cpu_millis, 1000);
        assert_eq!(s.workloads[0].requests.pods, 1);
        assert_eq!(s.workloads[0].kind, WorkloadKind::Job);
    }

    #[test]
    fn unknown_fields_name_the_field_and_line() {
        let e = err(&MINIMAL.replace("duration: 10m", "duration: 10m, colour: red"));
        assert!(e.contains("colour") && e.contains("line"), "{e}");
        let e = err(&format!(
            "{MINIMAL}settings: {{scan-interval: 10s, bogus: 1}}\n"
        ));
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_path() {
        assert_eq!(
            err(&MINIMAL.replace("cpu: 1,", "cpu: 2x,")),
            "workload[0] (etl).requests.cpu: invalid quantity \"2x\": unknown suffix (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent) (expected e.g. 500m, 2, 1.5, 16Gi, 100M, 1e3)"
        );
        assert_eq!(
            err(&MINIMAL.replace("max: 3", "min: 5, max: 3")),
            "node_groups[0] (cpu): min 5 is greater than max 3"
        );
        assert!(err(&MINIMAL.replace("m5.large", "zz.huge"))
            .starts_with("node_groups[0] (cpu).instance_type: unknown instance type"));
        assert!(err(&MINIMAL.replace("10m}", "-5m}"))
            .starts_with("workload[0] (etl).duration: invalid duration"));
        assert!(err(&MINIMAL.replace("10m}", "0s}"))
            .starts_with("workload[0] (etl).duration: must be greater than zero"));
        assert!(err(&MINIMAL.replace("max: 3", "max: 3, taints: [oops]"))
            .starts_with("node_groups[0] (cpu).taints[0]: invalid taint"));
        let dup = MINIMAL.replace(
            "workload:\n",
            "workload:\n  - {name: etl, pods: 1, duration: 1m}\n",
        );
        assert!(err(&dup).contains("duplicate name \"etl\""));
        assert!(err(&format!("{MINIMAL}settings: {{scan-interval: 0s}}\n"))
            .starts_with("settings.scan-interval"));
    }

    #[test]
    fn shapes_make_unknown_types_usable_and_repeats_expand() {
        let text = MINIMAL
            .replace("instance_type: m5.large", "instance_type: x1.custom, shape: {cpu: 8, memory: 32Gi, gpus: 1}, price_per_hour: 1")
            .replace("duration: 10m}", "duration: 10m, repeat: {every: 30m, times: 10}}");
        let s = Scenario::from_yaml(&text).unwrap();
        assert_eq!(s.groups[0].spec.shape.capacity.gpus(), 1);
        // 0, 30m, 60m, 90m fit the 2h horizon.
        assert_eq!(s.workloads[0].arrivals.len(), 4);
        assert_eq!(s.workloads[0].instance_name(1), "etl-2");
    }

    #[test]
    fn owners_default_by_kind_and_are_built_like_an_owner_reference() {
        let text = format!(
            "{MINIMAL}  - {{name: wf, pods: 1, duration: 5m, owner: {{apiVersion: argoproj.io/v1alpha1, kind: Workflow}}}}
  - {{name: exec, pods: 1, duration: 5m, owner: {{apiVersion: v1, kind: Pod}}}}
  - {{name: torch, pods: 1, duration: 5m, owner: {{apiVersion: kubeflow.org/v1, kind: PyTorchJob}}}}
  - {{name: sts, kind: service, pods: 1, owner: {{apiVersion: apps/v1, kind: StatefulSet}}}}
  - {{name: web, kind: service, pods: 1}}
  - {{name: lone, kind: bare, pods: 1, duration: 5m}}
  - {{name: scavenger, pods: 1, duration: 5m, priority: -100}}
"
        );
        let s = Scenario::from_yaml(&text).unwrap();
        let owner = |name: &str| {
            s.workloads
                .iter()
                .find(|w| w.name == name)
                .unwrap()
                .pod_owner("x")
        };
        assert_eq!(owner("etl"), Owner::Job("x".into()));
        assert_eq!(
            owner("wf"),
            Owner::controller("argoproj.io", "Workflow", "x")
        );
        assert_eq!(owner("exec"), Owner::controller("", "Pod", "x"));
        assert_eq!(
            owner("torch"),
            Owner::controller("kubeflow.org", "PyTorchJob", "x")
        );
        assert_eq!(owner("sts"), Owner::controller("apps", "StatefulSet", "x"));
        assert_eq!(owner("web"), Owner::replica_set("x"));
        assert_eq!(owner("lone"), Owner::Bare);
        // An explicit batch/v1 Job is the default's same owner.
        let explicit = MINIMAL.replace(
            "duration: 10m}",
            "duration: 10m, owner: {apiVersion: batch/v1, kind: Job}}",
        );
        assert_eq!(
            Scenario::from_yaml(&explicit).unwrap().workloads[0].pod_owner("x"),
            Owner::Job("x".into())
        );
        let priority = |name: &str| {
            s.workloads
                .iter()
                .find(|w| w.name == name)
                .unwrap()
                .priority
        };
        assert_eq!((priority("etl"), priority("scavenger")), (0, -100));
    }

    #[test]
    fn bad_owners_name_the_field() {
        let with_owner = |owner: &str| {
            err(&MINIMAL.replace(
                "duration: 10m}",
                &format!("duration: 10m, owner: {owner}}}"),
            ))
        };
        assert_eq!(
            with_owner("{apiVersion: argoproj.io/v1alpha1, kind: \"\"}"),
            "workload[0] (etl).owner.kind: must not be empty (e.g. Workflow, PyTorchJob, Pod)"
        );
        assert_eq!(
            with_owner("{apiVersion: argoproj.io/v1alpha1}"),
            "workload[0] (etl).owner.kind: must not be empty (e.g. Workflow, PyTorchJob, Pod)"
        );
        assert!(with_owner("{kind: Workflow}")
            .starts_with("workload[0] (etl).owner.apiVersion: must not be empty"));
        assert!(with_owner("{apiVersion: a/b/c, kind: Workflow}")
            .starts_with("workload[0] (etl).owner.apiVersion: expected group/version"));
        assert!(with_owner("{apiVersion: /v1, kind: Workflow}")
            .starts_with("workload[0] (etl).owner.apiVersion: expected group/version"));
        assert!(with_owner("{apiVersion: v1, kind: \"Work flow\"}")
            .starts_with("workload[0] (etl).owner.kind: expected a kind"));
        assert!(
            with_owner("{apiVersion: apps/v1, kind: DaemonSet}").starts_with(
                "workload[0] (etl).owner.kind: DaemonSet pods are declared under daemonsets"
            )
        );
        assert!(with_owner("{apiVersion: v1, kind: Node}")
            .starts_with("workload[0] (etl).owner.kind: a Node owns only static"));
        let bare = err(&MINIMAL.replace(
            "duration: 10m}",
            "duration: 10m, kind: bare, owner: {apiVersion: v1, kind: Pod}}",
        ));
        assert!(
            bare.starts_with("workload[0] (etl).owner: bare pods have no owner"),
            "{bare}"
        );
        // Unknown fields of an owner are syntax errors naming the field, as everywhere.
        let e = with_owner("{apiVersion: v1, kind: Pod, controller: true}");
        assert!(e.contains("controller") && e.contains("line"), "{e}");
    }

    #[test]
    fn spot_price_defaults_to_a_fraction_of_on_demand() {
        let s = Scenario::from_yaml(&MINIMAL.replace("max: 3", "max: 3, spot: true")).unwrap();
        let on_demand = catalog::on_demand_price_usd_per_hour("m5.large").unwrap();
        assert!((s.groups[0].price_per_hour - on_demand * SPOT_PRICE_FRACTION).abs() < 1e-12);
    }

    #[test]
    fn interruptions_parse_on_spot_groups() {
        let text = MINIMAL.replace(
            "max: 3}",
            "max: 3, spot: true, capacity_rebalance: true, interruption_rate_per_hour: 0.5, interruptions: [{at: 1h, count: 1}, {at: 30m, count: 2}]}",
        );
        let s = Scenario::from_yaml(&text).unwrap();
        let g = &s.groups[0];
        assert!(g.spec.capacity_rebalance);
        assert_eq!(g.interruption_rate_per_hour, 0.5);
        let at: Vec<(Time, u32)> = g.interruptions.iter().map(|i| (i.at, i.count)).collect();
        assert_eq!(
            at,
            [
                (Time::ZERO + Duration::from_secs(1800), 2),
                (Time::ZERO + Duration::from_secs(3600), 1)
            ],
            "in time order"
        );
        // Capacity Rebalancing on an on-demand group is accepted (AWS accepts it) but does nothing.
        let on_demand =
            Scenario::from_yaml(&MINIMAL.replace("max: 3}", "max: 3, capacity_rebalance: true}"))
                .unwrap();
        assert!(
            on_demand
                .warnings
                .iter()
                .any(|w| w.starts_with("node_groups[0] (cpu).capacity_rebalance: has no effect")),
            "{:?}",
            on_demand.warnings
        );
    }

    #[test]
    fn bad_interruptions_name_the_field() {
        let spot = |fields: &str| {
            err(&MINIMAL.replace("max: 3}", &format!("max: 3, spot: true, {fields}}}")))
        };
        assert_eq!(
            spot("interruptions: [{at: 10m, count: 0}]"),
            "node_groups[0] (cpu).interruptions[0].count: must be at least 1"
        );
        assert_eq!(
            spot("interruptions: [{at: 10m, count: 1}, {at: 3h, count: 1}]"),
            "node_groups[0] (cpu).interruptions[1].at: at or after the horizon (2h)"
        );
        assert!(spot("interruptions: [{at: soon, count: 1}]")
            .starts_with("node_groups[0] (cpu).interruptions[0].at: invalid duration"));
        assert_eq!(
            spot("interruptions: [{at: 10m, count: 4}]"),
            "node_groups[0] (cpu).interruptions[0].count: 4 is more than the group's max 3"
        );
        assert_eq!(
            spot("interruption_rate_per_hour: -1"),
            "node_groups[0] (cpu).interruption_rate_per_hour: must be zero or more, got -1"
        );
        // EC2 interrupts only spot instances.
        assert_eq!(
            err(&MINIMAL.replace("max: 3}", "max: 3, interruptions: [{at: 10m, count: 1}]}")),
            "node_groups[0] (cpu).interruptions: only spot instances are interrupted: set spot: true on the group, or remove the field"
        );
        assert!(err(&MINIMAL.replace("max: 3}", "max: 3, interruption_rate_per_hour: 1}"))
            .starts_with("node_groups[0] (cpu).interruption_rate_per_hour: only spot instances are interrupted"));
        // Unknown fields of an entry are syntax errors naming the field, as everywhere.
        let e = spot("interruptions: [{at: 10m, count: 1, every: 5m}]");
        assert!(e.contains("every") && e.contains("line"), "{e}");
    }
}
