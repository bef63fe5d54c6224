use super::*;
use serde_json::json;

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).expect("pod json")
}

#[test]
fn effective_request_counts_init_containers_sidecars_and_overhead() {
    let p = pod(json!({
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}}}
            ],
            "initContainers": [
                {"name": "big-init", "resources": {"requests": {"cpu": "4", "memory": "512Mi"}}},
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}
            ],
            "overhead": {"cpu": "250m", "memory": "120Mi"}
        }
    }));
    let v = pod_view(&p).unwrap();
    // max(init 4 cpu, containers 1.5 + sidecar 0.1) + overhead 0.25
    assert_eq!(v.requests.cpu_millis, 4250);
    assert_eq!(v.requests.memory_bytes, (2048 + 64 + 120) << 20);
    assert_eq!(v.requests.gpus(), 1);
    assert_eq!(v.requests.pods, 1);
    assert_eq!(v.owner, Owner::Bare);
}

#[test]
fn every_gang_marker_makes_a_gang() {
    let with = |meta: serde_json::Value, spec_extra: serde_json::Value| {
        let mut spec = json!({"containers": [{"name": "c"}]});
        for (k, v) in spec_extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let mut m = json!({"name": "p", "namespace": "ml"});
        for (k, v) in meta.as_object().unwrap() {
            m[k] = v.clone();
        }
        pod_view(&pod(json!({"metadata": m, "spec": spec})))
            .unwrap()
            .gang
    };
    let g = |name: &str, size: u32, source: GangSource| {
        Some(GangMembership {
            gang: GangId::new(format!("ml/{name}")),
            size,
            source,
        })
    };
    assert_eq!(
        with(
            json!({"labels": {"kueue.x-k8s.io/pod-group-name": "grp"}, "annotations": {"kueue.x-k8s.io/pod-group-total-count": "6"}}),
            json!({})
        ),
        g("grp", 6, GangSource::KueuePodGroup)
    );
    assert_eq!(
        with(
            json!({"labels": {"scheduling.x-k8s.io/pod-group": "pg"}}),
            json!({})
        ),
        g("pg", 0, GangSource::Coscheduling)
    );
    assert_eq!(
        with(
            json!({"annotations": {"scheduling.k8s.io/group-name": "vg"}}),
            json!({})
        ),
        g("vg", 0, GangSource::Volcano)
    );
    assert_eq!(
        with(
            json!({}),
            json!({"schedulingGroup": {"podGroupName": "wg"}})
        ),
        g("wg", 0, GangSource::WorkloadApi)
    );
    assert_eq!(
        with(
            json!({"annotations": {"batch-autoscaler.io/gang-name": "ours", "batch-autoscaler.io/gang-size": "3"}}),
            json!({})
        ),
        g("ours", 3, GangSource::Annotation)
    );
    assert_eq!(
        with(
            json!({"annotations": {"autoscaling.x-k8s.io/consume-provisioning-request": "r"}}),
            json!({})
        ),
        None
    );
    let v = pod_view(&pod(json!({"metadata": {"name": "p", "namespace": "ml", "annotations": {"cluster-autoscaler.kubernetes.io/consume-provisioning-request": "old"}}, "spec": {"containers": [{"name": "c"}]}}))).unwrap();
    assert_eq!(v.consumes_request.as_deref(), Some("old"));
}

#[test]
fn pod_fields_owner_gang_and_annotations() {
    let p = pod(json!({
        "metadata": {
            "name": "train-0", "namespace": "ml",
            "creationTimestamp": "2026-11-23T10:00:00Z",
            "labels": {"openai/do-not-drain": "true"},
            "annotations": {"batch-autoscaler.io/gang": "true", "batch-autoscaler.io/gang-size": "8",
                            "cluster-autoscaler.kubernetes.io/safe-to-evict": "on-completion",
                            "batch-autoscaler.io/expected-duration": "45m"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "u", "controller": true}]
        },
        "spec": {
            "containers": [{"name": "c"}],
            "priority": 5,
            "activeDeadlineSeconds": 3600,
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}, {"operator": "Exists"}],
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-west-2a"]}]}
                ]}},
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "train"}}, "topologyKey": "kubernetes.io/hostname"}
                ]}
            }
        },
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}
    }));
    let v = pod_view(&p).unwrap();
    assert_eq!(v.owner, Owner::Job("train".into()));
    assert!(v.unschedulable);
    assert!(v.do_not_disrupt);
    assert_eq!(v.safe_to_evict, Some(SafeToEvict::OnCompletion));
    assert_eq!(
        v.gang,
        Some(GangMembership::new(GangId::new("ml/train"), 8))
    );
    assert_eq!(v.priority, 5);
    assert_eq!(v.expected_duration, Some(Duration::from_secs(45 * 60)));
    assert_eq!(v.active_deadline, Some(Duration::from_secs(3600)));
    assert_eq!(v.tolerations.len(), 2);
    assert_eq!(v.anti_affinity.len(), 1);
    assert_eq!(
        v.required_affinity.unwrap().terms[0].match_expressions[0].operator,
        Operator::In
    );
    assert_eq!(v.created, Time::from_secs(1_795_428_000));
}

/// Issue 20, path 7: the deletion timestamp is carried (a pod stuck terminating on a
/// dead node must not hold the node for ever).
#[test]
fn a_pod_being_deleted_carries_its_deletion_deadline() {
    let v = pod_view(&pod(json!({
        "metadata": {"name": "p", "namespace": "ml", "deletionTimestamp": "2026-11-23T10:00:30Z",
                     "deletionGracePeriodSeconds": 30},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
        "status": {"phase": "Running"}
    })))
    .unwrap();
    assert_eq!(v.deletion_deadline, Some(Time::from_secs(1_795_428_030)));
    let alive = pod_view(&pod(json!({"metadata": {"name": "p", "namespace": "ml"}, "spec": {"containers": [{"name": "c"}]}}))).unwrap();
    assert_eq!(alive.deletion_deadline, None);
}

#[test]
fn bad_quantity_names_the_pod_and_field() {
    let p = pod(
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "lots"}}}]}}),
    );
    let e = pod_view(&p).unwrap_err();
    assert_eq!(e.name, "ns/p");
    assert_eq!(e.field, "spec.containers[0].resources.requests.cpu");
}

#[test]
fn node_without_provider_id_taint_without_value_and_unknown_resources() {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1", "creationTimestamp": "2026-11-23T10:00:00Z",
                     "annotations": {"batch-autoscaler.io/idle-since": "2026-11-23T10:05:00Z"}},
        "spec": {"taints": [{"key": "spot", "effect": "NoSchedule"}, {"key": "weird", "effect": "Sometimes"}]},
        "status": {"allocatable": {"cpu": "3920m", "memory": "15Gi", "pods": "110", "example.com/fpga": "2"},
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-23T10:01:00Z"}]}
    }))
    .unwrap();
    let (v, warnings) = node_view(&n, |_| Some(NodeGroupId::new("never"))).unwrap();
    assert_eq!(v.instance, None);
    assert_eq!(
        v.group, None,
        "a node without an AWS instance belongs to no group"
    );
    assert_eq!(
        v.taints,
        vec![Taint::new("spot", "", TaintEffect::NoSchedule)]
    );
    assert_eq!(warnings.len(), 1);
    assert_eq!(v.allocatable.extended("example.com/fpga"), 2);
    assert!(v.ready);
    assert_eq!(v.idle_since, Some(Time::from_secs(1_795_428_300)));
}

#[test]
fn aws_node_maps_to_its_group_and_retire_mark() {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": "ip-10-0-0-1", "annotations": {"batch-autoscaler.io/retire-reason": "idle", "batch-autoscaler.io/retired-at": "1795428000"},
                     "labels": {"openai/detached": "true"}},
        "spec": {"providerID": "aws:///us-west-2a/i-0abc", "taints": [{"key": "batch-autoscaler.io/retiring", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "4"}}
    }))
    .unwrap();
    let (v, _) = node_view(&n, |i| {
        (i.as_str() == "i-0abc").then(|| NodeGroupId::new("workers"))
    })
    .unwrap();
    assert_eq!(v.group, Some(NodeGroupId::new("workers")));
    assert_eq!(
        v.retired,
        Some(RetireMark {
            since: Time::from_secs(1_795_428_000),
            reason: "idle".into()
        })
    );
    assert!(v.scale_down_disabled);
    assert!(!v.ready);
}

#[test]
fn provider_ids() {
    assert_eq!(
        parse_provider_id("aws:///us-west-2a/i-0abc"),
        Some((Zone::new("us-west-2a"), InstanceId::new("i-0abc")))
    );
    assert_eq!(
        parse_provider_id("aws://us-west-2a/i-0abc").map(|x| x.1),
        Some(InstanceId::new("i-0abc"))
    );
    for bad in [
        "",
        "gce://p/z/n",
        "aws:///us-west-2a/",
        "aws:///us-west-2a/vm-1",
        "aws:///a/b/c",
    ] {
        assert_eq!(parse_provider_id(bad), None, "{bad}");
    }
}

#[test]
fn daemonset_overhead_and_priorities() {
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "node-exporter", "namespace": "monitoring"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "e", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}}
    }))
    .unwrap();
    let v = daemonset_view(&ds).unwrap();
    assert_eq!(v.requests.cpu_millis, 100);
    assert!(v
        .tolerations
        .iter()
        .any(|t| t.key == "node.kubernetes.io/unschedulable"));
    let p = parse_priorities("10:\n  - .*p2.*\n50:\n  - .*p3.*\n").unwrap();
    assert_eq!(p[&50], vec![".*p3.*".to_owned()]);
    assert!(parse_priorities("ten: [x]").is_err());
}

#[test]
fn a_pod_a_scheduler_has_placed_but_not_bound_carries_its_nominated_node() {
    let v = pod_view(&pod(json!({
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Pending", "nominatedNodeName": "n1"}
    })))
    .unwrap();
    assert_eq!(v.nominated_node, Some(NodeName::new("n1")));
    assert!(v.is_nominated());
    let plain = pod_view(&pod(json!({
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Pending", "nominatedNodeName": ""}
    })))
    .unwrap();
    assert!(!plain.is_nominated());
}
