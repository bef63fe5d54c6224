//! deploy/iam-policy.json grants exactly the AWS actions the adapter calls, and the
//! mutating ones only on groups the cluster owns.

use serde_json::Value;
use shipping::read;
use std::collections::BTreeSet;

const MUTATING: [&str; 4] = [
    "autoscaling:SetDesiredCapacity",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
    "autoscaling:DetachInstances",
    "autoscaling:CreateOrUpdateTags",
];

/// The interruption queue's actions: granted on the queue's ARN only.
fn queue_actions() -> Vec<String> {
    aws::InterruptionQueue::called_actions()
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn policy() -> Value {
    serde_json::from_str(&read("deploy/iam-policy.json")).expect("deploy/iam-policy.json is JSON")
}

fn actions(statement: &Value) -> Vec<String> {
    match &statement["Action"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().expect("action").to_owned())
            .collect(),
        other => panic!("Action must be a string or list: {other:?}"),
    }
}

fn statements() -> Vec<Value> {
    let p = policy();
    assert_eq!(p["Version"], "2012-10-17");
    p["Statement"].as_array().expect("Statement list").clone()
}

#[test]
fn the_policy_lists_exactly_the_actions_the_adapter_calls() {
    let granted: BTreeSet<String> = statements().iter().flat_map(actions).collect();
    let mut called: BTreeSet<String> = aws::AwsNodeGroups::called_actions()
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    called.extend(queue_actions());
    let missing: Vec<_> = called.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&called).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "deploy/iam-policy.json: missing {missing:?}, not called {extra:?}"
    );
    for s in statements() {
        assert_eq!(s["Effect"], "Allow");
        assert!(
            s.get("NotAction").is_none() && s.get("NotResource").is_none(),
            "no Not* statements: {s}"
        );
        for a in actions(&s) {
            assert!(!a.contains('*'), "wildcard action {a}");
        }
    }
}

#[test]
fn mutating_actions_are_conditioned_on_ownership_tags() {
    let mut seen = BTreeSet::new();
    for s in statements() {
        let acts = actions(&s);
        if acts.iter().any(|a| a.starts_with("sqs:")) {
            // The interruption queue: its own statement, on one queue's ARN, never "*".
            assert_eq!(
                acts,
                queue_actions(),
                "keep the queue's actions in a statement of their own: {s}"
            );
            let resource = s["Resource"]
                .as_str()
                .unwrap_or_else(|| panic!("the queue statement names one queue: {s}"));
            assert_eq!(
                resource, "arn:aws:sqs:*:ACCOUNT_ID:INTERRUPTION_QUEUE_NAME",
                "{s}"
            );
            continue;
        }
        let mutating: Vec<&String> = acts
            .iter()
            .filter(|a| MUTATING.contains(&a.as_str()))
            .collect();
        if mutating.is_empty() {
            assert!(
                acts.iter().all(|a| a
                    .split(':')
                    .nth(1)
                    .is_some_and(|n| n.starts_with("Describe"))),
                "only Describe* may go unconditioned: {s}"
            );
            continue;
        }
        assert_eq!(
            mutating.len(),
            acts.len(),
            "keep mutating actions in statements of their own: {s}"
        );
        let equals = s["Condition"]["StringEquals"]
            .as_object()
            .unwrap_or_else(|| panic!("mutating statement without a StringEquals condition: {s}"));
        let tags: Vec<&String> = equals
            .keys()
            .filter(|k| k.starts_with("aws:ResourceTag/"))
            .collect();
        assert!(
            !tags.is_empty(),
            "mutating statement not conditioned on a resource tag: {s}"
        );
        for key in tags {
            let tag = key.trim_start_matches("aws:ResourceTag/");
            let ownership = tag == "KubernetesCluster" && equals[key] == "CLUSTER_NAME"
                || tag == "k8s.io/cluster-autoscaler/CLUSTER_NAME" && equals[key] == "owned";
            assert!(ownership, "{key} = {} is not an ownership tag", equals[key]);
            for a in &mutating {
                seen.insert(((*a).clone(), tag.to_owned()));
            }
        }
        if mutating
            .iter()
            .any(|a| a.as_str() == "autoscaling:CreateOrUpdateTags")
        {
            let keys = &s["Condition"]["ForAllValues:StringLike"]["aws:TagKeys"];
            assert_eq!(
                keys,
                &serde_json::json!(["batch-autoscaler.io/*"]),
                "tag writes limited to our own keys: {s}"
            );
        }
    }
    // Every mutating action is allowed through both ownership conventions (CA's tag and
    // the seed's), and only through them.
    for a in MUTATING {
        for tag in [
            "KubernetesCluster",
            "k8s.io/cluster-autoscaler/CLUSTER_NAME",
        ] {
            assert!(
                seen.contains(&(a.to_owned(), tag.to_owned())),
                "{a} is not allowed on groups owned via {tag}"
            );
        }
    }
}

/// The policy the aws crate's README shows is a subset of this one's actions (the
/// README may show the simpler CA-tag-only variant).
#[test]
fn the_aws_readme_names_the_same_actions() {
    let readme = read("crates/aws/README.md");
    for a in aws::AwsNodeGroups::called_actions()
        .iter()
        .chain(aws::InterruptionQueue::called_actions())
    {
        assert!(
            readme.contains(a),
            "crates/aws/README.md does not mention {a}"
        );
    }
}
