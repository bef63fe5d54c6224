//! Configuration of `batch-autoscaler run`: command-line flags, environment variables
//! and an optional YAML config file, in that order of precedence (flags win).
//!
//! Two kinds of settings:
//! - the adapter and process settings below (`RunFlags`), spelled like the seed's and
//!   Cluster Autoscaler's flags;
//! - every planner setting (`PlannerSettings`): their flags are generated from the
//!   struct's own field names, so a new planner setting is a new flag without another
//!   list to keep in sync. The seed's names are aliases (`--sleep`, `--idle-threshold`,
//!   `--instance-init-time`).
//!
//! Each flag can also be set from `BATCH_AUTOSCALER_<FLAG_IN_UPPER_SNAKE>`; the seed's
//! own environment variables (`SLACK_HOOK`, `AWS_ACCESS_KEY_ID`, …) work too. A bad
//! value exits with code 2 and a message naming the flag or config key.

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use planner::PlannerSettings;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Flags that are not planner settings. All optional so that file values can fill gaps.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RunFlags {
    /// Name of the cluster: the `KubernetesCluster` tag value (seed) and the
    /// `<cluster>` of `k8s.io/cluster-autoscaler/<cluster>` (CA).
    #[arg(long, env = "BATCH_AUTOSCALER_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Comma-separated AWS regions in order of preference (the first is primary).
    #[arg(long, env = "BATCH_AUTOSCALER_AWS_REGIONS", value_delimiter = ',')]
    #[serde(default)]
    pub aws_regions: Vec<String>,
    /// Path to a kubeconfig; in-cluster service account when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Slack incoming webhook for scaling notifications.
    #[arg(long, env = "SLACK_HOOK", hide_env_values = true)]
    pub slack_hook: Option<String>,
    /// Plan and log every action, change nothing in Kubernetes or AWS.
    #[arg(long, env = "BATCH_AUTOSCALER_DRY_RUN")]
    #[serde(default)]
    pub dry_run: bool,
    /// More log output; repeat for more (-v, -vv, -vvv).
    #[arg(short = 'v', action = ArgAction::Count)]
    #[serde(default)]
    pub verbose: u8,
    /// `text` (default) or `json`.
    #[arg(long, env = "BATCH_AUTOSCALER_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// AWS access key (seed); the default credential chain when absent.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key: Option<String>,
    /// AWS secret key (seed).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_key: Option<String>,
    /// Accepted for the seed's sake: the default credential chain is used anyway.
    #[arg(long)]
    #[serde(default)]
    pub use_aws_iam_role: bool,
    /// Endpoint override for AWS (tests).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Static node groups, CA's syntax `<min>:<max>:<asg-name>`; repeatable.
    #[arg(long)]
    #[serde(default)]
    pub nodes: Vec<String>,
    /// CA's auto-discovery, `asg:tag=<key>[=<value>],…`; repeatable.
    #[arg(long)]
    #[serde(default)]
    pub node_group_auto_discovery: Vec<String>,
    /// Pods per node assumed for scale-from-zero templates.
    #[arg(long, env = "BATCH_AUTOSCALER_MAX_PODS")]
    pub max_pods: Option<u32>,
    /// Leader election (on by default).
    #[arg(long, env = "BATCH_AUTOSCALER_LEADER_ELECT")]
    pub leader_elect: Option<bool>,
    /// Lease duration (CA: 15s).
    #[arg(long)]
    pub leader_elect_lease_duration: Option<String>,
    /// How long the leader keeps trying to renew (CA: 10s).
    #[arg(long)]
    pub leader_elect_renew_deadline: Option<String>,
    /// How often the lease holder renews and the others try to acquire it (CA: 2s).
    #[arg(long)]
    pub leader_elect_retry_period: Option<String>,
    /// Lease name (default `batch-autoscaler`); shards take distinct names.
    #[arg(long)]
    pub leader_elect_resource_name: Option<String>,
    /// Namespace of the lease (default: `--namespace`).
    #[arg(long)]
    pub leader_elect_resource_namespace: Option<String>,
    /// Namespace of the status ConfigMap and the lease (default `kube-system`).
    #[arg(long, env = "BATCH_AUTOSCALER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the status ConfigMap (default `batch-autoscaler-status`).
    #[arg(long)]
    pub status_config_map_name: Option<String>,
    /// Where `/metrics`, `/healthz`, `/readyz` listen (CA: `:8085`).
    #[arg(long, env = "BATCH_AUTOSCALER_ADDRESS")]
    pub address: Option<String>,
    /// The longest wait to gather pods that turned unschedulable before planning
    /// (default 1s).
    #[arg(long)]
    pub batch_window: Option<String>,
    /// Plan sooner, once no pod turned unschedulable for this long (default 200ms).
    #[arg(long)]
    pub batch_idle: Option<String>,
    /// Serve ProvisioningRequests (`autoscaling.x-k8s.io/v1`, as Kueue's admission check
    /// creates them) with CA's classes `check-capacity` and `best-effort-atomic-scale-up`
    /// (CA's flag; off by default as in CA, on in the chart).
    #[arg(long, env = "BATCH_AUTOSCALER_ENABLE_PROVISIONING_REQUESTS")]
    pub enable_provisioning_requests: Option<bool>,
    /// SQS queues that EventBridge feeds with EC2 spot interruption warnings, rebalance
    /// recommendations, instance state changes and AWS Health scheduled events; one per
    /// region, comma-separated: `NAME`, a queue URL, or `REGION=NAME|URL`. A bare name
    /// is in the primary region; a URL's region is read from its host. Without it,
    /// interruptions are not handled (pods on a reclaimed node die and are replaced
    /// once they show up pending).
    #[arg(
        long,
        env = "BATCH_AUTOSCALER_INTERRUPTION_QUEUE",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub interruption_queue: Vec<String>,
    /// Seed flag, accepted and ignored: overprovisioning is done with placeholder pods.
    #[arg(long)]
    pub over_provision: Option<u32>,
    /// Seed flag, accepted and ignored: see `scale-down-utilization-threshold`.
    #[arg(long)]
    pub drain_utilization: Option<f64>,
}

/// A configuration problem, naming the flag or key.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn config_error(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// Planner setting names (kebab-case) with their default values, from the struct.
fn planner_keys() -> Vec<(String, Value)> {
    let defaults = serde_yaml::to_value(PlannerSettings::default()).expect("settings serialise");
    let Value::Mapping(map) = defaults else {
        unreachable!("a struct serialises to a mapping")
    };
    map.into_iter()
        .filter_map(|(k, v)| k.as_str().map(|k| (k.to_owned(), v)))
        .collect()
}

/// Seed aliases of planner flags.
fn alias_of(key: &str) -> Option<&'static str> {
    match key {
        "scan-interval" => Some("sleep"),
        "scale-down-unneeded-time" => Some("idle-threshold"),
        "max-node-provision-time" => Some("instance-init-time"),
        _ => None,
    }
}

fn env_name(key: &str) -> String {
    format!("BATCH_AUTOSCALER_{}", key.to_uppercase().replace('-', "_"))
}

/// The parsed `run` arguments: fixed flags plus planner flags that were given.
#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    pub config: Option<PathBuf>,
    pub flags: RunFlags,
    /// Planner settings given on the command line or in the environment.
    pub planner_values: BTreeMap<String, String>,
}

impl FromArgMatches for RunArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = RunFlags::from_arg_matches(matches)?;
        let mut planner_values = BTreeMap::new();
        for (key, _) in planner_keys() {
            if key == "expander-priorities" {
                continue;
            }
            if let Some(v) = matches.get_one::<String>(&key) {
                planner_values.insert(key, v.clone());
            }
        }
        Ok(Self {
            config: matches.get_one::<PathBuf>("config").cloned(),
            flags,
            planner_values,
        })
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for RunArgs {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = RunFlags::augment_args(cmd).arg(
            Arg::new("config")
                .long("config")
                .env("BATCH_AUTOSCALER_CONFIG")
                .value_parser(clap::value_parser!(PathBuf))
                .help("YAML config file: any flag name as a key (flags and environment win)"),
        );
        for (key, default) in planner_keys() {
            if key == "expander-priorities" {
                continue; // a map: config file or the cluster's ConfigMap only
            }
            let shown = match &default {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            };
            let mut arg = Arg::new(key.clone())
                .long(key.clone())
                .env(env_name(&key))
                .value_name("VALUE")
                .allow_hyphen_values(true)
                .help(format!(
                    "Planner setting (default {shown}); see the README's configuration table"
                ))
                .help_heading("Planner settings");
            if let Some(alias) = alias_of(&key) {
                arg = arg.visible_alias(alias);
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The arguments of `explain`: the pod, and every `run` flag (it connects as `run` does).
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The pod (or, with `--provisioning-request`, the request), as NAMESPACE/NAME (or
    /// NAME in `default`).
    pub pod: String,
    /// Explain the ProvisioningRequest of that name instead of a pod.
    #[arg(long)]
    pub provisioning_request: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Everything `run` needs, merged and validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub flags: RunFlags,
    pub settings: PlannerSettings,
}

/// A flag value as YAML would read it (`true`, `0.5`, `10m`, `0:320000`).
fn scalar(text: &str) -> Value {
    match serde_yaml::from_str::<Value>(text) {
        Ok(v @ (Value::Bool(_) | Value::Number(_))) => v,
        _ => Value::String(text.to_owned()),
    }
}

/// Merges flags/env over the config file and validates everything.
pub fn resolve(args: RunArgs, file_text: Option<&str>) -> Result<RunConfig, ConfigError> {
    let planner_names: BTreeMap<String, Value> = planner_keys().into_iter().collect();
    let mut planner_map = Mapping::new();
    let mut flags_map = Mapping::new();
    if let Some(text) = file_text {
        let file: Mapping =
            serde_yaml::from_str(text).map_err(|e| config_error("config", e.to_string()))?;
        for (k, v) in file {
            let Some(key) = k.as_str() else {
                return Err(config_error(
                    "config",
                    format!("keys must be strings, got {k:?}"),
                ));
            };
            let canonical = planner_names
                .keys()
                .find(|name| name.as_str() == key || alias_of(name) == Some(key))
                .cloned();
            match canonical {
                Some(name) => {
                    planner_map.insert(Value::String(name), v);
                }
                None => {
                    flags_map.insert(Value::String(key.to_owned()), v);
                }
            }
        }
    }
    // Fixed flags: file values under the command line's.
    let file_flags: RunFlags = serde_yaml::from_value(Value::Mapping(flags_map))
        .map_err(|e| config_error("config", e.to_string()))?;
    let flags = overlay(file_flags, args.flags);
    for (key, text) in &args.planner_values {
        planner_map.insert(Value::String(key.clone()), scalar(text));
    }
    // Check each setting on its own first, so the error names it.
    for (k, v) in &planner_map {
        let mut one = Mapping::new();
        one.insert(k.clone(), v.clone());
        if let Err(e) = serde_yaml::from_value::<PlannerSettings>(Value::Mapping(one)) {
            let name = k.as_str().unwrap_or("?");
            let message = e.to_string();
            return Err(config_error(
                name,
                message.trim_start_matches(&format!("{name}: ")).to_owned(),
            ));
        }
    }
    let settings: PlannerSettings = serde_yaml::from_value(Value::Mapping(planner_map))
        .map_err(|e| config_error("config", e.to_string()))?;
    planner::Planner::new(settings.clone()).map_err(|e| config_error(e.field, e.message))?;
    if flags.cluster_name.as_deref().unwrap_or("").is_empty() && flags.nodes.is_empty() {
        return Err(config_error(
            "cluster-name",
            "required (the autoscaler never manages ASGs it cannot prove it owns)",
        ));
    }
    if let Some(format) = &flags.log_format {
        if format != "text" && format != "json" {
            return Err(config_error(
                "log-format",
                format!("expected text or json, got {format:?}"),
            ));
        }
    }
    for (field, value) in [
        (
            "leader-elect-lease-duration",
            &flags.leader_elect_lease_duration,
        ),
        (
            "leader-elect-renew-deadline",
            &flags.leader_elect_renew_deadline,
        ),
        (
            "leader-elect-retry-period",
            &flags.leader_elect_retry_period,
        ),
        ("batch-window", &flags.batch_window),
        ("batch-idle", &flags.batch_idle),
    ] {
        if let Some(v) = value {
            model::parse_duration(v).map_err(|e| config_error(field, e.to_string()))?;
        }
    }
    interruption_queues(
        &flags.interruption_queue,
        flags.aws_regions.first().map(String::as_str),
    )?;
    Ok(RunConfig { flags, settings })
}

/// One interruption queue: where it is and what it is called (a name or a URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub region: String,
    pub queue: String,
}

/// Reads `--interruption-queue` entries (`NAME`, `URL`, `REGION=NAME|URL`); `primary`
/// is the region of a bare name. At most one queue per region.
pub fn interruption_queues(
    entries: &[String],
    primary: Option<&str>,
) -> Result<Vec<QueueSpec>, ConfigError> {
    let field = "interruption-queue";
    let mut out: Vec<QueueSpec> = Vec::new();
    for raw in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let is_url = |t: &str| t.starts_with("https://") || t.starts_with("http://");
        let (region, queue) = match raw.split_once('=') {
            Some((region, queue)) if !is_url(raw) => {
                (Some(region.trim().to_owned()), queue.trim().to_owned())
            }
            _ => (None, raw.to_owned()),
        };
        if queue.is_empty() || region.as_deref() == Some("") {
            return Err(config_error(
                field,
                format!("{raw:?}: expected NAME, URL or REGION=NAME|URL"),
            ));
        }
        if !is_url(&queue)
            && !queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(config_error(field, format!("{raw:?}: a queue name has letters, digits, '-' and '_' only (or give its https:// URL)")));
        }
        // sqs.<region>.amazonaws.com/<account>/<name>
        let from_url = is_url(&queue)
            .then(|| {
                queue
                    .split("://")
                    .nth(1)
                    .and_then(|rest| rest.split('/').next())
                    .and_then(|host| host.strip_prefix("sqs."))
                    .and_then(|h| h.split('.').next())
            })
            .flatten()
            .map(str::to_owned);
        let region = region
            .or(from_url)
            .or_else(|| primary.map(str::to_owned))
            .ok_or_else(|| {
                config_error(
                    field,
                    format!("{raw:?}: no region: give REGION={queue} or set --aws-regions"),
                )
            })?;
        if out.iter().any(|q| q.region == region) {
            return Err(config_error(
                field,
                format!("two queues for region {region}: one per region"),
            ));
        }
        out.push(QueueSpec { region, queue });
    }
    Ok(out)
}

/// Field-wise: the command line's value where it has one, the file's otherwise.
fn overlay(file: RunFlags, cli: RunFlags) -> RunFlags {
    let file = serde_json::to_value(file).expect("serialise");
    let cli = serde_json::to_value(cli).expect("serialise");
    let (serde_json::Value::Object(mut merged), serde_json::Value::Object(cli)) = (file, cli)
    else {
        unreachable!()
    };
    for (k, v) in cli {
        let unset = match &v {
            serde_json::Value::Null => true,
            // A plain switch that is off was not given; `leader-elect: false` was.
            serde_json::Value::Bool(b) => !b && k != "leader-elect",
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Number(n) => n.as_u64() == Some(0) && k == "verbose",
            _ => false,
        };
        if !unset {
            merged.insert(k, v);
        }
    }
    serde_json::from_value(serde_json::Value::Object(merged)).expect("round trip")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parse").run
    }

    #[test]
    fn seed_flags_and_aliases_work() {
        let args = parse(&[
            "--cluster-name",
            "prod",
            "--aws-regions",
            "us-west-2,us-east-1",
            "--sleep",
            "60",
            "--idle-threshold",
            "3300",
            "--instance-init-time",
            "1500",
            "--dry-run",
            "-vvv",
        ]);
        let cfg = resolve(args, None).unwrap();
        assert_eq!(cfg.flags.aws_regions, vec!["us-west-2", "us-east-1"]);
        assert_eq!(cfg.settings.scan_interval, Duration::from_secs(60));
        assert_eq!(
            cfg.settings.scale_down_unneeded_time,
            Duration::from_secs(3300).into()
        );
        assert_eq!(
            cfg.settings.max_node_provision_time,
            Duration::from_secs(1500)
        );
        assert!(cfg.flags.dry_run);
        assert_eq!(cfg.flags.verbose, 3);
    }

    #[test]
    fn ca_flags_and_file_with_flags_winning() {
        let file = "cluster-name: from-file\nexpander: priority,least-waste\nscale-down-unneeded-time: 5m\nnodes: ['1:10:asg-a']\nexpander-priorities: {10: ['.*']}\nidle-threshold: 20m\n";
        let args = parse(&[
            "--expander",
            "most-pods",
            "--balance-similar-node-groups",
            "true",
            "--nodes",
            "0:5:asg-b",
        ]);
        let cfg = resolve(args, Some(file)).unwrap();
        assert_eq!(cfg.flags.cluster_name.as_deref(), Some("from-file"));
        assert_eq!(cfg.settings.expander, "most-pods", "flag wins over file");
        assert!(cfg.settings.balance_similar_node_groups);
        assert_eq!(cfg.flags.nodes, vec!["0:5:asg-b"]);
        assert_eq!(
            cfg.settings.scale_down_unneeded_time,
            Duration::from_secs(20 * 60).into(),
            "the alias in the file maps to the setting"
        );
        assert!(cfg.settings.expander_priorities.is_some());
    }

    #[test]
    fn an_explicit_false_switch_wins_over_the_file() {
        let cfg = resolve(
            parse(&["--cluster-name", "c", "--leader-elect", "false"]),
            Some("leader-elect: true\n"),
        )
        .unwrap();
        assert_eq!(cfg.flags.leader_elect, Some(false));
        let cfg = resolve(
            parse(&["--cluster-name", "c"]),
            Some("leader-elect: false\n"),
        )
        .unwrap();
        assert_eq!(cfg.flags.leader_elect, Some(false));
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
            (
                vec![
                    "--cluster-name",
                    "c",
                    "--scale-down-utilization-threshold",
                    "lots",
                ],
                None,
                "scale-down-utilization-threshold",
            ),
            (
                vec!["--cluster-name", "c", "--scale-down-unneeded-time", "-5m"],
                None,
                "scale-down-unneeded-time",
            ),
            (
                vec!["--cluster-name", "c", "--expander", "cheapest"],
                None,
                "expander",
            ),
            (
                vec!["--cluster-name", "c", "--log-format", "xml"],
                None,
                "log-format",
            ),
            (
                vec!["--cluster-name", "c"],
                Some("scale-down-unneded-time: 5m\n"),
                "config",
            ),
            (vec![], None, "cluster-name"),
            (
                vec!["--cluster-name", "c", "--batch-window", "soon"],
                None,
                "batch-window",
            ),
            (
                vec!["--cluster-name", "c", "--batch-idle", "5 parsecs"],
                None,
                "batch-idle",
            ),
        ];
        for (args, file, field) in cases {
            let err = resolve(parse(&args), file).unwrap_err();
            assert_eq!(err.field, field, "{args:?}: {err}");
            if field == "config" {
                assert!(err.message.contains("scale-down-unneded-time"), "{err}");
            }
        }
    }

    #[test]
    fn interruption_queues_by_name_url_or_region() {
        let entries: Vec<String> = [
            "spot-events",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/eu-events",
            "us-east-1=east-events",
        ]
        .map(str::to_owned)
        .to_vec();
        let queues = interruption_queues(&entries, Some("us-west-2")).unwrap();
        let pairs: Vec<(&str, &str)> = queues
            .iter()
            .map(|q| (q.region.as_str(), q.queue.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("us-west-2", "spot-events"),
                (
                    "eu-west-1",
                    "https://sqs.eu-west-1.amazonaws.com/123456789012/eu-events"
                ),
                ("us-east-1", "east-events")
            ]
        );
        // A URL elsewhere (a test endpoint) takes the region given, or the primary one.
        let local = interruption_queues(
            &["us-west-2=http://127.0.0.1:5000/123456789012/q".to_owned()],
            None,
        )
        .unwrap();
        assert_eq!(local[0].region, "us-west-2");
        for (entries, primary, needle) in [
            (vec!["a", "b"], Some("us-west-2"), "one per region"),
            (vec!["spot events"], Some("us-west-2"), "letters, digits"),
            (vec!["q"], None, "no region"),
            (vec!["=q"], None, "expected NAME"),
        ] {
            let entries: Vec<String> = entries.into_iter().map(str::to_owned).collect();
            let err = interruption_queues(&entries, primary).unwrap_err();
            assert_eq!(err.field, "interruption-queue");
            assert!(err.message.contains(needle), "{err}");
        }
        let err = resolve(
            parse(&[
                "--cluster-name",
                "c",
                "--interruption-queue",
                "a,b",
                "--aws-regions",
                "us-west-2",
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(err.field, "interruption-queue", "{err}");
    }

    #[test]
    fn every_planner_setting_has_a_flag() {
        let cmd = <Cli as clap::CommandFactory>::command();
        for (key, _) in planner_keys() {
            if key == "expander-priorities" {
                continue;
            }
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_long() == Some(key.as_str())),
                "no flag for {key}"
            );
        }
    }
}
