//! What the cache keeps of each object: metadata (minus managedFields and kubectl's
//! last-applied copy) and the fields the conversion reads. On a real cluster most of a
//! pod's bytes are env, probes, volumes and container statuses, and most of a node's
//! are its image list; none of it is the planner's business, and the reflector would
//! hold it for every object all the time. Trimming happens in the watch stream, before
//! the store. The tests prove the conversion sees no difference.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Keeps what a container's requests need (resources, and the restart policy that
/// makes an init container a sidecar).
fn trim_container(c: &mut Container) {
    c.env = None;
    c.env_from = None;
    c.volume_mounts = None;
    c.volume_devices = None;
    c.command = None;
    c.args = None;
    c.liveness_probe = None;
    c.readiness_probe = None;
    c.startup_probe = None;
    c.lifecycle = None;
    c.security_context = None;
}

fn trim_pod_spec(spec: &mut PodSpec) {
    spec.volumes = None;
    spec.ephemeral_containers = None;
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        trim_container(c);
    }
}

pub fn trim_pod(pod: &mut Pod) {
    trim_meta(&mut pod.metadata);
    if let Some(spec) = pod.spec.as_mut() {
        trim_pod_spec(spec);
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

pub fn trim_node(node: &mut Node) {
    trim_meta(&mut node.metadata);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
        status.node_info = None;
        status.daemon_endpoints = None;
        status.config = None;
    }
}

pub fn trim_daemonset(ds: &mut DaemonSet) {
    trim_meta(&mut ds.metadata);
    if let Some(spec) = ds.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        trim_pod_spec(spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{daemonset_view, node_view, pod_view};
    use serde_json::json;

    fn container(name: &str, cpu: &str) -> serde_json::Value {
        json!({"name": name, "image": "registry.example/app:1", "command": ["/app"], "args": ["--x"],
            "env": [{"name": "A", "value": "b"}], "envFrom": [{"configMapRef": {"name": "cm"}}],
            "volumeMounts": [{"name": "v", "mountPath": "/v"}],
            "livenessProbe": {"httpGet": {"path": "/", "port": 80}}, "readinessProbe": {"exec": {"command": ["true"]}},
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}}, "securityContext": {"runAsUser": 1000},
            "resources": {"requests": {"cpu": cpu, "memory": "1Gi", "nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}})
    }

    fn rich_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app": "a"},
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false", LAST_APPLIED: "{\"huge\": true}"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": true}],
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {
                "containers": [container("main", "2"), container("side", "500m")],
                "initContainers": [container("init", "4"), {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "250m"}}}],
                "overhead": {"cpu": "100m"},
                "volumes": [{"name": "v", "emptyDir": {}}],
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-west-2a"]}]}]}},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "a"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                "priority": 5, "nodeName": "n1", "activeDeadlineSeconds": 3600},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:01:00Z",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": "main", "image": "x", "imageID": "y", "ready": true, "restartCount": 0}]}
        }))
        .expect("pod")
    }

    #[test]
    fn a_trimmed_pod_converts_exactly_like_the_full_one() {
        let full = rich_pod();
        let mut trimmed = full.clone();
        trim_pod(&mut trimmed);
        assert_eq!(pod_view(&trimmed).expect("trimmed"), pod_view(&full).expect("full"));
        assert!(trimmed.spec.as_ref().is_some_and(|s| s.volumes.is_none() && s.containers[0].env.is_none()));
        assert!(trimmed.metadata.annotations.as_ref().is_some_and(|a| !a.contains_key(LAST_APPLIED) && a.len() == 1));
        let bytes = |p: &Pod| serde_json::to_vec(p).expect("json").len();
        // Small for a fixture (1.6 of 2.9 KB); real pods carry far more env and status.
        assert!(bytes(&trimmed) * 10 < bytes(&full) * 6, "{} of {} bytes kept", bytes(&trimmed), bytes(&full));
    }

    #[test]
    fn a_trimmed_node_converts_exactly_like_the_full_one() {
        let full: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"pool": "gpu"},
                "annotations": {"batch-autoscaler.io/idle-since": "2026-01-01T00:05:00Z"}},
            "spec": {"providerID": "aws:///us-west-2a/i-0123456789abcdef0", "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "8", "memory": "30Gi", "pods": "58", "nvidia.com/gpu": "1"},
                "capacity": {"cpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}],
                "images": [{"names": ["registry.example/app:1"], "sizeBytes": 123}],
                "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "",
                    "kubeProxyVersion": "", "kubeletVersion": "v1.36.3", "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""},
                "volumesInUse": ["kubernetes.io/csi/x"]}
        }))
        .expect("node");
        let mut trimmed = full.clone();
        trim_node(&mut trimmed);
        let view = |n: &Node| node_view(n, |_| None).expect("node view");
        assert_eq!(view(&trimmed), view(&full));
        assert!(trimmed.status.as_ref().is_some_and(|s| s.images.is_none() && s.allocatable.is_some()));
    }

    #[test]
    fn a_trimmed_daemonset_converts_exactly_like_the_full_one() {
        let full: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "ds", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"app": "ds"}}, "template": {"metadata": {"labels": {"app": "ds"}},
                "spec": {"containers": [container("agent", "100m")], "nodeSelector": {"pool": "gpu"},
                    "tolerations": [{"operator": "Exists"}]}}}
        }))
        .expect("daemonset");
        let mut trimmed = full.clone();
        trim_daemonset(&mut trimmed);
        assert_eq!(daemonset_view(&trimmed).expect("trimmed"), daemonset_view(&full).expect("full"));
    }
}
