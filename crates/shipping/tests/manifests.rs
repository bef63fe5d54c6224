//! The Helm chart, the manifests rendered from it and the RBAC they grant.

use serde_yaml::Value;
use shipping::{documents, find, helm, helm_template, read, repo, run_ok, skip_or_fail};
use std::collections::BTreeSet;
use std::process::Command;

const RENDERED: &str = "deploy/manifests/batch-autoscaler.yaml";
const FULL_VALUES: &str = "deploy/helm/batch-autoscaler/ci/full-values.yaml";

fn rendered() -> Vec<Value> {
    documents(&read(RENDERED))
}

/// deploy/manifests/batch-autoscaler.yaml is exactly what scripts/render-manifests.sh
/// renders now.
#[test]
fn rendered_manifests_are_in_sync_with_the_chart() {
    let Some(helm) = helm() else {
        return skip_or_fail(
            "rendered_manifests_are_in_sync_with_the_chart",
            "helm not installed (scripts/check-shipping.sh ensure-helm)",
        );
    };
    let fresh = run_ok(
        Command::new(repo().join("scripts/render-manifests.sh"))
            .arg("--stdout")
            .env("HELM", &helm),
    );
    assert!(
        fresh == read(RENDERED),
        "{RENDERED} is out of date: run scripts/render-manifests.sh"
    );
}

fn sorted(v: &Value) -> Vec<String> {
    let mut items: Vec<String> = v
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    items.sort();
    items
}

fn assert_no_wildcards(what: &str, docs: &[Value]) -> usize {
    let mut checked = 0;
    for kind in ["ClusterRole", "Role"] {
        for role in find(docs, kind, None) {
            for rule in role["rules"].as_sequence().expect("rules") {
                for field in [
                    "apiGroups",
                    "resources",
                    "verbs",
                    "resourceNames",
                    "nonResourceURLs",
                ] {
                    for item in sorted(&rule[field]) {
                        assert!(
                            !item.contains('*'),
                            "{what}: {kind} {} grants a wildcard in {field}: {rule:?}",
                            role["metadata"]["name"].as_str().unwrap_or("?")
                        );
                    }
                }
                assert!(
                    !sorted(&rule["verbs"]).is_empty(),
                    "{what}: a rule without verbs"
                );
                checked += 1;
            }
            assert!(
                role["aggregationRule"].is_null(),
                "{what}: aggregated roles can grow without review"
            );
        }
    }
    checked
}

/// No wildcard verb, resource or group anywhere: the committed manifests, and the chart
/// rendered with every option set.
#[test]
fn rbac_has_no_wildcards() {
    assert!(assert_no_wildcards(RENDERED, &rendered()) >= 5);
    match helm() {
        Some(helm) => {
            let full = documents(&helm_template(
                &helm,
                "rel",
                "batch-system",
                &["-f", FULL_VALUES],
            ));
            assert!(assert_no_wildcards(FULL_VALUES, &full) >= 5);
        }
        None => skip_or_fail("rbac_has_no_wildcards (full values)", "helm not installed"),
    }
}

fn args(deployment: &Value) -> Vec<String> {
    sorted(&deployment["spec"]["template"]["spec"]["containers"][0]["args"])
}

/// The Deployment the issue asks for: 2 replicas with leader election, probes on
/// /healthz and /readyz, a locked-down securityContext, never evicted by an
/// autoscaler, POD_NAME from the downward API, a PDB and a metrics Service.
#[test]
fn deployment_is_hardened_and_highly_available() {
    let docs = rendered();
    let deployment = find(&docs, "Deployment", Some("batch-autoscaler"))[0];
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    let args = args(deployment);
    assert!(args.contains(&"--leader-elect=true".to_owned()), "{args:?}");
    assert!(args.contains(&"--address=:8085".to_owned()), "{args:?}");
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(8085));
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"].as_str(),
        Some("false")
    );
    assert_eq!(
        annotations["karpenter.sh/do-not-disrupt"].as_str(),
        Some("true")
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sorted(&sc["capabilities"]["drop"]), vec!["ALL"]);
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert!(spec["securityContext"]["runAsUser"]
        .as_u64()
        .is_some_and(|u| u > 0));
    assert!(
        container["resources"]["requests"]["cpu"].is_string()
            && container["resources"]["requests"]["memory"].is_string()
    );
    let env = container["env"].as_sequence().expect("env");
    let pod_name = env
        .iter()
        .find(|e| e["name"].as_str() == Some("POD_NAME"))
        .expect("POD_NAME");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name")
    );
    assert_eq!(
        spec["serviceAccountName"].as_str(),
        Some("batch-autoscaler")
    );
    let pdb = find(&docs, "PodDisruptionBudget", None)[0];
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let service = find(&docs, "Service", None)[0];
    assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(8085));
    assert!(
        find(&docs, "ServiceMonitor", None).is_empty(),
        "the ServiceMonitor is optional and off by default"
    );
    assert!(
        find(&docs, "Secret", None).is_empty(),
        "no Secret by default"
    );
}

/// With every option set: the Slack hook and AWS keys come from Secrets (never
/// inline in the pod spec), IRSA annotates the ServiceAccount, the ServiceMonitor and
/// the priority-expander ConfigMap exist, and every planner setting became a flag.
#[test]
fn full_values_render_secrets_by_reference() {
    let Some(helm) = helm() else {
        return skip_or_fail(
            "full_values_render_secrets_by_reference",
            "helm not installed",
        );
    };
    let text = helm_template(&helm, "rel", "batch-system", &["-f", FULL_VALUES]);
    let docs = documents(&text);
    let deployment = find(&docs, "Deployment", None)[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_sequence().expect("env");
    for name in ["SLACK_HOOK", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        let var = env
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(
            var["value"].is_null() && var["valueFrom"]["secretKeyRef"]["name"].is_string(),
            "{name} must come from a Secret: {var:?}"
        );
    }
    let hook = "https://hooks.slack.com/services/T0000/B0000/CHART-TEST-NOT-A-SECRET";
    let deployment_text = serde_yaml::to_string(deployment).expect("yaml");
    assert!(
        !deployment_text.contains(hook) && !deployment_text.contains("CHART-TEST"),
        "the webhook URL leaked into the Deployment"
    );
    assert_eq!(find(&docs, "Secret", None).len(), 1);
    let sa = find(&docs, "ServiceAccount", None)[0];
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str(),
        Some("arn:aws:iam::123456789012:role/prod-batch-autoscaler")
    );
    assert_eq!(find(&docs, "ServiceMonitor", None).len(), 1);
    assert_eq!(
        find(
            &docs,
            "ConfigMap",
            Some("cluster-autoscaler-priority-expander")
        )
        .len(),
        1
    );
    let full: Value = serde_yaml::from_str(&read(FULL_VALUES)).expect("full values");
    let args = args(deployment);
    for (key, value) in full["settings"].as_mapping().expect("settings") {
        let key = key.as_str().expect("key");
        let value = match value {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .expect("scalar")
                .trim()
                .to_owned(),
        };
        assert!(
            args.contains(&format!("--{key}={value}")),
            "--{key}={value} not in {args:?}"
        );
    }
}

/// Leaf paths of a values tree (`a.b.c`); maps that are empty by default count as leaves.
fn leaf_paths(prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            for (k, child) in m {
                let key = k
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| serde_yaml::to_string(k).unwrap().trim().to_owned());
                let path = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_paths(&path, child, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// ci/full-values.yaml sets every option values.yaml has (so lint/template with it
/// covers every template branch) and nothing values.yaml lacks.
#[test]
fn full_values_cover_every_option() {
    let defaults: Value = serde_yaml::from_str(&read("deploy/helm/batch-autoscaler/values.yaml"))
        .expect("values.yaml");
    let full: Value = serde_yaml::from_str(&read(FULL_VALUES)).expect("full values");
    let (mut want, mut have) = (BTreeSet::new(), BTreeSet::new());
    leaf_paths("", &defaults, &mut want);
    // The example maps in full-values have keys of their own (podLabels.x): compare
    // the values.yaml paths only.
    leaf_paths("", &full, &mut have);
    let missing: Vec<&String> = want
        .iter()
        .filter(|p| {
            !have
                .iter()
                .any(|h| h == *p || h.starts_with(&format!("{p}.")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{FULL_VALUES} does not set: {missing:?}"
    );
    let unknown: Vec<&String> = have
        .iter()
        .filter(|h| {
            !want
                .iter()
                .any(|p| *h == p || h.starts_with(&format!("{p}.")))
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "{FULL_VALUES} sets keys values.yaml does not have: {unknown:?}"
    );
}
