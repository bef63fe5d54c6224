//! No object in the cluster can make a converter panic (a panic would take a watch
//! down): pods and nodes built from arbitrary annotations, labels, quantities,
//! durations, owner references, taints and provider ids are either converted or
//! refused with an error.

use k8s::convert::{node_view, pod_view};
use k8s_openapi::api::core::v1::{Node, Pod};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Annotations the converters read, plus noise.
const ANNOTATION_KEYS: &[&str] = &[
    "batch-autoscaler.io/expected-duration",
    "batch-autoscaler.io/gang",
    "batch-autoscaler.io/gang-name",
    "batch-autoscaler.io/gang-size",
    "batch-autoscaler.io/idle-since",
    "batch-autoscaler.io/retired-at",
    "cluster-autoscaler.kubernetes.io/safe-to-evict",
    "cluster-autoscaler.kubernetes.io/scale-down-disabled",
    "karpenter.sh/do-not-disrupt",
    "kubernetes.io/config.mirror",
    "x",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("1e20".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        Just("99999999999999999999d".to_owned()),
        Just("true".to_owned()),
        "[0-9]{1,25}(\\.[0-9]{0,12})?(e[0-9]{1,3})?(ms|s|m|h|d|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m|n|u)?",
        "\\PC{0,24}",
    ]
}

fn map_of(keys: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop::sample::select(keys), text()), 0..6).prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect()
    })
}

fn quantities() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(
        (
            prop::sample::select(
                &[
                    "cpu",
                    "memory",
                    "nvidia.com/gpu",
                    "pods",
                    "ephemeral-storage",
                    "x/y",
                ][..],
            ),
            text(),
        ),
        0..4,
    )
    .prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect()
    })
}

fn owner() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["batch/v1", "apps/v1", "v1", "argoproj.io/v1alpha1", "", "a/b/c", "/", "kubeflow.org/v1"][..]),
        prop::sample::select(&["Job", "DaemonSet", "ReplicaSet", "Node", "Workflow", "Pod", "", "PyTorchJob"][..]),
        "\\PC{0,12}",
        any::<Option<bool>>(),
    )
        .prop_map(|(api_version, kind, name, controller)| json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": controller}))
}

fn pod() -> impl Strategy<Value = Value> {
    (
        map_of(ANNOTATION_KEYS),
        map_of(&["scheduling.x-k8s.io/pod-group", "openai/do-not-drain", "app"]),
        prop::collection::vec(owner(), 0..3),
        quantities(),
        quantities(),
        any::<Option<i64>>(),
        any::<Option<i64>>(),
        any::<Option<i32>>(),
        prop::option::of(text()),
    )
        .prop_map(|(annotations, labels, owners, requests, limits, deadline, grace, priority, node)| {
            json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "uid", "annotations": annotations, "labels": labels, "ownerReferences": owners},
                "spec": {
                    "containers": [{"name": "c", "resources": {"requests": requests, "limits": limits}}],
                    "initContainers": [{"name": "i", "resources": {"requests": limits}}],
                    "overhead": requests,
                    "activeDeadlineSeconds": deadline,
                    "terminationGracePeriodSeconds": grace,
                    "priority": priority,
                    "nodeName": node,
                },
                "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}
            })
        })
}

fn node() -> impl Strategy<Value = Value> {
    (
        map_of(ANNOTATION_KEYS),
        quantities(),
        prop::option::of(prop_oneof![
            Just("aws:///us-west-2a/i-1".to_owned()),
            "aws://\\PC{0,10}/\\PC{0,10}",
            text()
        ]),
        prop::collection::vec(
            (
                text(),
                text(),
                prop::sample::select(
                    &["NoSchedule", "NoExecute", "PreferNoSchedule", "", "Bad"][..],
                ),
            ),
            0..3,
        ),
    )
        .prop_map(|(annotations, allocatable, provider_id, taints)| {
            let taints: Vec<Value> = taints
                .into_iter()
                .map(|(k, v, e)| json!({"key": k, "value": v, "effect": e}))
                .collect();
            json!({
                "metadata": {"name": "n", "annotations": annotations},
                "spec": {"providerID": provider_id, "taints": taints},
                "status": {"allocatable": allocatable, "capacity": allocatable}
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn pod_conversion_never_panics(value in pod()) {
        if let Ok(pod) = serde_json::from_value::<Pod>(value) {
            let _ = pod_view(&pod);
        }
    }

    #[test]
    fn node_conversion_never_panics(value in node()) {
        if let Ok(node) = serde_json::from_value::<Node>(value) {
            let _ = node_view(&node, |_| None);
        }
    }
}

#[test]
fn a_huge_expected_duration_is_ignored_not_a_panic() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "annotations": {"batch-autoscaler.io/expected-duration": "1e20"}},
        "spec": {"containers": [{"name": "c"}], "activeDeadlineSeconds": i64::MAX, "terminationGracePeriodSeconds": i64::MAX}
    }))
    .unwrap();
    let view = pod_view(&pod).expect("converted");
    assert_eq!(view.expected_duration, None);
    assert_eq!(view.active_deadline, Some(model::time::MAX_DURATION));
}
