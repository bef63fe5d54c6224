//! The docs a user reads are generated from, or checked against, the code:
//! - the README's configuration reference is generated from `batch-autoscaler run --help`
//!   (the CLI definitions) and the planner settings' doc comments
//!   (crates/planner/src/settings.rs, the struct the planner flags are generated from);
//! - the README's metrics list is generated from the driver's metrics registry;
//! - every annotation, label, taint and ASG tag the code reads or writes is in the README;
//! - docs/migration.md maps every seed flag and every common Cluster Autoscaler flag,
//!   and every flag of ours it names exists;
//! - the chart has a value for every planner setting.
//!
//! `UPDATE_GENERATED=1 cargo test -p shipping --test docs` rewrites the generated
//! blocks in README.md.

use serde_yaml::Value;
use shipping::{binary, read, repo, run_ok};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

#[derive(Debug)]
struct Flag {
    /// As clap shows it: `--cluster-name <CLUSTER_NAME>`, `-v...`.
    shown: String,
    /// `--cluster-name` (None for short-only flags).
    long: Option<String>,
    help: String,
    env: Option<String>,
    aliases: Vec<String>,
    possible: Option<String>,
    planner: bool,
}

fn help(sub: &str) -> String {
    // A clean environment: clap would show the values of set variables.
    run_ok(Command::new(binary()).args([sub, "--help"]).env_clear())
}

/// Parses clap's `--help` layout: flag lines indented by 2-6 spaces, their help on
/// the following lines indented by 10, `[env: …]`, `[alias: …]` and
/// `[possible values: …]` at the end of the help.
fn parse_help(text: &str) -> Vec<Flag> {
    let mut flags: Vec<Flag> = Vec::new();
    let mut planner = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            planner = trimmed == "Planner settings:";
            continue;
        }
        if indent < 10 && trimmed.starts_with('-') {
            let long = trimmed
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .map(str::to_owned);
            flags.push(Flag {
                shown: trimmed.to_owned(),
                long,
                help: String::new(),
                env: None,
                aliases: vec![],
                possible: None,
                planner,
            });
        } else if let Some(flag) = flags.last_mut() {
            if !flag.help.is_empty() {
                flag.help.push(' ');
            }
            flag.help.push_str(trimmed);
        }
    }
    for flag in &mut flags {
        while flag.help.ends_with(']') {
            let Some(start) = flag.help.rfind(" [") else {
                break;
            };
            let inner = flag.help[start + 2..flag.help.len() - 1].to_owned();
            if let Some(env) = inner.strip_prefix("env: ") {
                flag.env = Some(env.split('=').next().unwrap_or(env).to_owned());
            } else if let Some(a) = inner
                .strip_prefix("alias: ")
                .or_else(|| inner.strip_prefix("aliases: "))
            {
                flag.aliases = a.split(", ").map(str::to_owned).collect();
            } else if let Some(p) = inner.strip_prefix("possible values: ") {
                flag.possible = Some(p.to_owned());
            } else {
                break;
            }
            flag.help.truncate(start);
        }
    }
    flags.retain(|f| f.long.as_deref() != Some("--help"));
    flags
}

/// `field_name` → doc comment of `PlannerSettings`, as one line.
fn planner_docs() -> BTreeMap<String, String> {
    let src = read("crates/planner/src/settings.rs");
    let start = src
        .find("pub struct PlannerSettings")
        .expect("PlannerSettings");
    let body = &src[start
        ..src[start..]
            .find("\n}")
            .map(|e| start + e)
            .expect("end of struct")];
    let mut docs = BTreeMap::new();
    let mut doc: Vec<&str> = Vec::new();
    for line in body.lines().skip(1) {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim());
        } else if let Some(field) = t.strip_prefix("pub ") {
            let name = field.split(':').next().expect("field").replace('_', "-");
            docs.insert(name, doc.join(" "));
            doc.clear();
        } else if !t.starts_with("#[") {
            doc.clear();
        }
    }
    docs
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn config_reference() -> String {
    let flags = parse_help(&help("run"));
    let docs = planner_docs();
    let mut out = String::new();
    out.push_str(
        "#### Cluster, AWS and process flags\n\n| flag | environment | meaning |\n|---|---|---|\n",
    );
    for f in flags.iter().filter(|f| !f.planner) {
        let mut meaning = f.help.clone();
        if let Some(p) = &f.possible {
            meaning.push_str(&format!(" (`{}`)", p.replace(", ", "`, `")));
        }
        let env = f
            .env
            .as_ref()
            .map(|e| format!("`{e}`"))
            .unwrap_or_else(|| "–".into());
        out.push_str(&format!("| `{}` | {env} | {} |\n", f.shown, cell(&meaning)));
    }
    out.push_str("\n#### Planner settings\n\nAlso the keys of a scenario's `settings:` block and of the chart's `settings:` value.\n\n");
    out.push_str("| flag | environment | default | meaning |\n|---|---|---|---|\n");
    for f in flags.iter().filter(|f| f.planner) {
        let long = f.long.as_deref().expect("planner flags are long");
        let key = long.trim_start_matches("--");
        let default = f
            .help
            .split_once("(default ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(d, _)| d)
            .unwrap_or_else(|| panic!("{long}: no default in its help"));
        let default = if default == "null" || default.is_empty() {
            "–".to_owned()
        } else {
            format!("`{default}`")
        };
        let meaning = docs
            .get(key)
            .unwrap_or_else(|| panic!("{key}: no doc comment in PlannerSettings"));
        let aliases = if f.aliases.is_empty() {
            String::new()
        } else {
            format!(" (seed: `{}`)", f.aliases.join("`, `"))
        };
        let env = f
            .env
            .as_ref()
            .map(|e| format!("`{e}`"))
            .unwrap_or_else(|| "–".into());
        out.push_str(&format!(
            "| `{long}`{aliases} | {env} | {default} | {} |\n",
            cell(meaning)
        ));
    }
    out
}

/// Name → (type, help) of every metric the driver registers, from its exposition.
fn exposed_metrics() -> BTreeMap<String, (String, String)> {
    let text = driver::Metrics::new().encode();
    let mut metrics: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            metrics.entry(name.to_owned()).or_default().1 = help.trim_end_matches('.').to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            metrics.entry(name.to_owned()).or_default().0 = kind.to_owned();
        }
    }
    metrics
}

/// Registered name → (type, help, label names), from crates/driver/src/metrics.rs:
/// the `registry.register(name, help, metrics.field)` calls, the fields' types and the
/// label structs of each `Family`.
fn registered_metrics() -> BTreeMap<String, (String, String, Vec<String>)> {
    let src = read("crates/driver/src/metrics.rs");
    let mut structs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut field_types: BTreeMap<String, String> = BTreeMap::new();
    for line in src.lines() {
        let t = line.trim();
        if let Some(rest) = t
            .strip_prefix("pub struct ")
            .and_then(|r| r.strip_suffix(" {"))
        {
            current = Some(rest.to_owned());
            structs.insert(rest.to_owned(), vec![]);
        } else if t == "}" {
            current = None;
        } else if let (Some(c), Some(field)) = (&current, t.strip_prefix("pub ")) {
            let (name, ty) = field.split_once(": ").expect("field: type");
            structs.get_mut(c).expect("struct").push(name.to_owned());
            field_types.insert(name.to_owned(), ty.trim_end_matches(',').to_owned());
        }
    }
    let mut metrics = BTreeMap::new();
    for chunk in src.split("registry.register(").skip(1) {
        let call = &chunk[..chunk
            .find(".clone()")
            .expect("register(..., metrics.x.clone())")];
        let name = call.split('"').nth(1).expect("metric name");
        let help = call.split('"').nth(3).expect("metric help");
        let field = call.rsplit("metrics.").next().expect("metrics.field");
        let ty = &field_types[field];
        let kind = ["Counter", "Gauge", "Histogram"]
            .into_iter()
            .find(|k| ty.contains(k))
            .unwrap_or_else(|| panic!("{field}: {ty}"));
        let labels = ty
            .strip_prefix("Family<")
            .and_then(|r| r.split_once(','))
            .map(|(s, _)| structs[s].clone())
            .unwrap_or_default();
        metrics.insert(
            format!("batch_autoscaler_{name}"),
            (kind.to_lowercase(), help.to_owned(), labels),
        );
    }
    metrics
}

fn metrics_reference() -> String {
    let registered = registered_metrics();
    // Cross-check with the live registry: families without samples are not exposed yet,
    // every other metric must be, with the same type and help.
    for (name, (kind, help)) in exposed_metrics() {
        let (k, h, _) = registered
            .get(&name)
            .unwrap_or_else(|| panic!("{name} is exposed but not found in metrics.rs"));
        assert_eq!(
            (k, h.trim_end_matches('.')),
            (&kind, help.as_str()),
            "{name}"
        );
    }
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for (name, (kind, help, labels)) in &registered {
        let shown = match kind.as_str() {
            "counter" => format!("`{name}_total`"),
            "histogram" => format!("`{name}_bucket`, `_sum`, `_count`"),
            _ => format!("`{name}`"),
        };
        let l = labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| {shown} | {kind} | {} | {} |\n",
            if l.is_empty() { "–".into() } else { l },
            cell(help)
        ));
    }
    out
}

/// Checks (or with UPDATE_GENERATED=1 rewrites) the README block between markers.
fn check_generated(block: &str, generated: &str) {
    let begin = format!("<!-- BEGIN GENERATED {block}: `UPDATE_GENERATED=1 cargo test -p shipping --test docs` rewrites it -->\n");
    let end = format!("<!-- END GENERATED {block} -->");
    let path = repo().join("README.md");
    let readme = read("README.md");
    let start = readme
        .find(&begin)
        .unwrap_or_else(|| panic!("README.md has no line {begin:?}"))
        + begin.len();
    let stop = readme[start..]
        .find(&end)
        .map(|e| start + e)
        .unwrap_or_else(|| panic!("README.md has no line {end:?}"));
    if readme[start..stop] == *generated {
        return;
    }
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        let updated = format!("{}{}{}", &readme[..start], generated, &readme[stop..]);
        std::fs::write(&path, updated).expect("write README.md");
        eprintln!("README.md: {block} rewritten");
    } else {
        panic!("README.md's {block} is out of date: run `UPDATE_GENERATED=1 cargo test -p shipping --test docs`\n--- generated ---\n{generated}");
    }
}

#[test]
fn readme_configuration_reference_matches_the_cli() {
    let reference = config_reference();
    assert!(
        reference.contains("`--cluster-name <CLUSTER_NAME>`")
            && reference.contains("`--scan-interval` (seed: `--sleep`)"),
        "{reference}"
    );
    check_generated("configuration reference", &reference);
}

#[test]
fn readme_metrics_list_matches_the_registry() {
    let reference = metrics_reference();
    assert!(reference.contains("batch_autoscaler_leader"), "{reference}");
    check_generated("metrics", &reference);
}

/// The chart's `settings:` has exactly the planner flags.
#[test]
fn chart_values_have_every_planner_setting() {
    let flags = parse_help(&help("run"));
    let planner: BTreeSet<String> = flags
        .iter()
        .filter(|f| f.planner)
        .map(|f| f.long.clone().unwrap().trim_start_matches("--").to_owned())
        .collect();
    assert!(planner.len() > 20);
    let values: Value = serde_yaml::from_str(&read("deploy/helm/batch-autoscaler/values.yaml"))
        .expect("values.yaml");
    let keys: BTreeSet<String> = values["settings"]
        .as_mapping()
        .expect("settings")
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        keys, planner,
        "deploy/helm/batch-autoscaler/values.yaml `settings:` vs the planner flags"
    );
    // values.schema.json rejects unknown keys (a typo fails `helm install`, not the pod):
    // it must know exactly the same ones.
    let schema: serde_json::Value =
        serde_json::from_str(&read("deploy/helm/batch-autoscaler/values.schema.json"))
            .expect("schema");
    let schema_settings: BTreeSet<String> = schema["properties"]["settings"]["properties"]
        .as_object()
        .expect("settings")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        schema_settings, planner,
        "values.schema.json `settings` vs the planner flags"
    );
    let mut top: BTreeSet<String> = values
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    top.insert("global".into());
    let schema_top: BTreeSet<String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        schema_top, top,
        "values.schema.json top-level properties vs values.yaml"
    );
}

/// `"..."` string constants of a Rust source whose name starts with one of `prefixes`.
fn string_consts(path: &str, prefixes: &[&str]) -> Vec<String> {
    read(path)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
        .collect()
}

#[test]
fn readme_names_every_annotation_label_taint_and_tag() {
    let readme = read("README.md");
    let mut names = string_consts(
        "crates/model/src/well_known.rs",
        &[
            "ANNOTATION_",
            "TAINT_",
            "LABEL_KUEUE_POD_GROUP",
            "LABEL_COSCHEDULING_POD_GROUP",
            "LABEL_DO_NOT_DRAIN",
            "LABEL_DETACHED",
            "LABEL_ACCELERATOR",
            "LABEL_CAPACITY_TYPE",
        ],
    );
    names.extend(string_consts("crates/aws/src/template.rs", &["TAG_"]));
    names.extend(
        [
            "KubernetesCluster",
            "k8s.io/cluster-autoscaler/enabled",
            "batch-autoscaler.io/purchase-option",
            "batch-autoscaler.io/activity-marker",
            "batch-autoscaler.io/backoff/",
            "cluster-autoscaler-priority-expander",
            "batch-autoscaler-status",
        ]
        .map(str::to_owned),
    );
    assert!(names.len() > 20, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !readme.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "README.md does not mention {missing:?}");
}

/// The README's Kueue objects are the file the end-to-end scenario applies, verbatim.
#[test]
fn readme_kueue_objects_are_the_tested_file() {
    let readme = read("README.md");
    let objects = read("docs/kueue/provisioning.yaml");
    assert!(
        readme.contains(&format!("```yaml\n{objects}```")),
        "README.md's \"Using it with Kueue\" block differs from docs/kueue/provisioning.yaml"
    );
}

/// Every flag of the seed project (its README and its defaults).
const SEED_FLAGS: &[&str] = &[
    "--cluster-name",
    "--aws-regions",
    "--kubeconfig",
    "--pod-namespace",
    "--idle-threshold",
    "--type-idle-threshold",
    "--aws-access-key",
    "--aws-secret-key",
    "--use-aws-iam-role",
    "--instance-init-time",
    "--sleep",
    "--slack-hook",
    "--dry-run",
    "-v",
    "--over-provision",
    "--max-scale-in-fraction",
    "--drain-utilization",
];

/// Cluster Autoscaler's commonly set flags (its AWS guide, its FAQ's parameter table).
const CA_FLAGS: &[&str] = &[
    "--cloud-provider",
    "--cluster-name",
    "--nodes",
    "--node-group-auto-discovery",
    "--aws-use-static-instance-list",
    "--scan-interval",
    "--expander",
    "--balance-similar-node-groups",
    "--balancing-ignore-label",
    "--max-nodes-total",
    "--cores-total",
    "--memory-total",
    "--max-nodes-per-scaleup",
    "--max-node-provision-time",
    "--new-pod-scale-up-delay",
    "--scale-down-enabled",
    "--scale-down-delay-after-add",
    "--scale-down-delay-after-delete",
    "--scale-down-delay-after-failure",
    "--scale-down-unneeded-time",
    "--scale-down-unready-time",
    "--scale-down-utilization-threshold",
    "--scale-down-gpu-utilization-threshold",
    "--scale-down-non-empty-candidates-count",
    "--scale-down-candidates-pool-ratio",
    "--scale-down-candidates-pool-min-count",
    "--max-empty-bulk-delete",
    "--max-scale-down-parallelism",
    "--max-graceful-termination-sec",
    "--max-pod-eviction-time",
    "--expendable-pods-priority-cutoff",
    "--skip-nodes-with-local-storage",
    "--skip-nodes-with-system-pods",
    "--initial-node-group-backoff-duration",
    "--max-node-group-backoff-duration",
    "--node-group-backoff-reset-timeout",
    "--ok-total-unready-count",
    "--max-total-unready-percentage",
    "--leader-elect",
    "--leader-elect-lease-duration",
    "--leader-elect-renew-deadline",
    "--leader-elect-retry-period",
    "--leader-elect-resource-name",
    "--leader-elect-resource-namespace",
    "--namespace",
    "--address",
    "--kubeconfig",
    "--write-status-configmap",
    "--status-config-map-name",
    "--v",
    "--logtostderr",
    "--stderrthreshold",
    "--emit-per-nodegroup-metrics",
    "--daemonset-eviction-for-empty-nodes",
    "--cordon-node-before-terminating",
    "--enable-provisioning-requests",
];

/// CA's and the seed's annotations, labels and taints users already put on objects.
const MIGRATED_NAMES: &[&str] = &[
    "cluster-autoscaler.kubernetes.io/safe-to-evict",
    "cluster-autoscaler.kubernetes.io/scale-down-disabled",
    "cluster-autoscaler.kubernetes.io/enable-ds-eviction",
    "cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes",
    "karpenter.sh/do-not-disrupt",
    "openai/do-not-drain",
    "openai/detached",
    "ToBeDeletedByClusterAutoscaler",
    "DeletionCandidateOfClusterAutoscaler",
    "k8s.io/cluster-autoscaler/node-template/label/",
    "k8s.io/cluster-autoscaler/node-template/taint/",
    "k8s.io/cluster-autoscaler/node-template/resources/",
    "k8s.io/cluster-autoscaler/node-template/autoscaling-options/",
    "kube/",
    "KubernetesCluster",
    "cluster-autoscaler-priority-expander",
    "cluster-autoscaler-status",
];

/// Rows of the markdown tables of docs/migration.md: first cell → second cell.
fn migration_rows() -> BTreeMap<String, Vec<String>> {
    let text = read("docs/migration.md");
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        if cells.len() < 2 {
            continue;
        }
        let first = cells[0].trim_start_matches("| ");
        for name in first.split('`').skip(1).step_by(2) {
            rows.entry(name.split([' ', '=']).next().unwrap().to_owned())
                .or_default()
                .push(cells[1].to_owned());
        }
    }
    rows
}

#[test]
fn migration_guide_maps_every_seed_and_ca_flag_to_ours() {
    let rows = migration_rows();
    let mut accepted: BTreeSet<String> = BTreeSet::new();
    for sub in ["run", "explain"] {
        for f in parse_help(&help(sub)) {
            accepted.extend(f.long.clone());
            accepted.extend(f.aliases.iter().cloned());
            if f.shown.starts_with("-v") {
                accepted.insert("-v".into());
            }
        }
    }
    let missing: Vec<&&str> = SEED_FLAGS
        .iter()
        .chain(CA_FLAGS)
        .chain(MIGRATED_NAMES)
        .filter(|f| !rows.contains_key(**f))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/migration.md has no row for {missing:?}"
    );
    for flag in SEED_FLAGS {
        assert!(
            accepted.contains(*flag),
            "the seed's {flag} is not accepted by batch-autoscaler run"
        );
    }
    // Every flag of ours the guide points to exists.
    for (theirs, ours) in &rows {
        for cell in ours {
            for name in cell
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|n| n.starts_with('-') && !n.starts_with("--set"))
            {
                let flag = name.split([' ', '=']).next().unwrap();
                assert!(accepted.contains(flag), "docs/migration.md maps {theirs} to {flag}, which `batch-autoscaler run` does not accept");
            }
        }
    }
}
