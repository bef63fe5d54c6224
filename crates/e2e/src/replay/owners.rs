//! Owners of a replay's pods other than a Job or a ReplicaSet (a workload's `owner:`):
//! an Argo Workflow, a Kubeflow PyTorchJob, a Ray or Spark custom resource, or a
//! Spark driver Pod. The pods are created bare, each with a controller reference to
//! an owner object made for its job, so the autoscaler sees exactly what it would
//! see under that controller (and the garbage collector leaves the pods be).
//!
//! * A custom kind gets a CustomResourceDefinition of its own (any fields allowed),
//!   unless one of that name exists, and one object per job.
//! * A core `v1` Pod owner is a driver pod per job. It runs on a node of no group
//!   (`replay-owners-<cluster>`, tainted so nothing else lands there), as Spark
//!   drivers do on a separate pool: the scenario's groups bill only the executors,
//!   as the simulator does, and the autoscaler leaves a node it does not own alone.
//! * Other built-in kinds (a StatefulSet, a CronJob) would run controllers of their
//!   own; they are refused (`check`).

use crate::bridge::KWOK_ANNOTATION;
use crate::scenario::Scenario;
use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::Api;
use serde_json::{json, Value};
use sim::scenario::WorkloadOwner;
use std::collections::BTreeSet;
use std::time::Duration;

/// Label on each owner object and driver pod: the job whose pods it owns. Not
/// [`super::LABEL_JOB`], so the report never counts an owner as one of the job's pods.
pub const LABEL_OWNER_OF: &str = "replay.batch-autoscaler.io/owner-of";
/// Taint (and label) of the node driver pods run on.
pub const OWNERS_NODE_TAINT: &str = "replay.batch-autoscaler.io/owners";

/// `(group, version)` of an `apiVersion` (`v1` is the core group, `""`).
fn group_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

fn is_core_pod(owner: &WorkloadOwner) -> bool {
    owner.api_version == "v1" && owner.kind == "Pod"
}

/// A group Kubernetes itself serves: the core group, `apps`, `batch`, `*.k8s.io`.
fn is_builtin_group(group: &str) -> bool {
    !group.contains('.') || group.ends_with(".k8s.io")
}

/// Why an owner cannot be replayed, if it cannot.
pub fn check(owner: &WorkloadOwner) -> Option<String> {
    // The scenario parser has checked the reference as the API server would.
    if is_core_pod(owner) {
        return None;
    }
    if is_builtin_group(group_version(&owner.api_version).0) {
        return Some(format!(
            "{}/{} is a built-in kind with a controller of its own; a custom kind or a core v1 Pod is replayed",
            owner.api_version, owner.kind
        ));
    }
    None
}

/// The plural resource name of a custom kind the replay defines itself.
fn plural(kind: &str) -> String {
    format!("{}s", kind.to_lowercase())
}

fn api_resource(owner: &WorkloadOwner) -> ApiResource {
    let (group, version) = group_version(&owner.api_version);
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, &owner.kind),
        &plural(&owner.kind),
    )
}

/// The CustomResourceDefinition of a custom owner kind: namespaced, any fields.
pub fn crd_yaml(owner: &WorkloadOwner) -> String {
    let (group, version) = group_version(&owner.api_version);
    let plural = plural(&owner.kind);
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata:\n  name: {plural}.{group}\n\
         spec:\n  group: {group}\n  scope: Namespaced\n\
         \x20 names: {{kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {singular}}}\n\
         \x20 versions:\n  - name: {version}\n    served: true\n    storage: true\n\
         \x20   schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n",
        kind = owner.kind,
        singular = owner.kind.to_lowercase(),
    )
}

/// What a replay set up for its owners, to create owner objects and clean up.
pub struct Owners {
    /// The node driver pods run on, if any workload is owned by a Pod.
    node: Option<String>,
}

impl Owners {
    /// Defines every custom owner kind of `owners` and, if a Pod owns pods, the
    /// drivers' node. Before the replay's clock starts.
    pub async fn prepare<'a>(
        s: &Scenario,
        owners: impl IntoIterator<Item = &'a WorkloadOwner>,
    ) -> anyhow::Result<Self> {
        let mut kinds = BTreeSet::new();
        let mut pods = false;
        for o in owners {
            if is_core_pod(o) {
                pods = true;
            } else {
                kinds.insert((o.api_version.clone(), o.kind.clone()));
            }
        }
        for (api_version, kind) in &kinds {
            let owner = WorkloadOwner {
                api_version: api_version.clone(),
                kind: kind.clone(),
            };
            let name = format!("{}.{}", plural(kind), group_version(api_version).0);
            let exists = s
                .world
                .kubectl_admin(
                    &["get", "crd", &name, "--ignore-not-found", "-o", "name"],
                    "",
                )
                .with_context(|| format!("look up CRD {name}"))?;
            if exists.trim().is_empty() {
                s.world
                    .kubectl_admin(&["apply", "-f", "-"], &crd_yaml(&owner))
                    .with_context(|| format!("define owner kind {api_version} {kind}"))?;
            }
            s.world
                .wait_crd_established(&name, Duration::from_secs(60))?;
        }
        let node = if pods {
            let name = format!("replay-owners-{}", s.cluster);
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {OWNERS_NODE_TAINT: "true", model::well_known::LABEL_HOSTNAME: name},
                    "annotations": {KWOK_ANNOTATION.0: KWOK_ANNOTATION.1},
                },
                "spec": {"taints": [{"key": OWNERS_NODE_TAINT, "value": "true", "effect": "NoSchedule"}]},
                "status": {
                    "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                    "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                },
            }))?;
            Api::<Node>::all(s.kube.clone())
                .create(&PostParams::default(), &node)
                .await
                .with_context(|| format!("create the drivers' node {name}"))?;
            Some(name)
        } else {
            None
        };
        Ok(Self { node })
    }

    /// Creates the owner of `job`'s pods in the scenario's namespace and returns the
    /// controller reference its pods carry.
    pub async fn create(
        &self,
        s: &Scenario,
        owner: &WorkloadOwner,
        job: &str,
    ) -> anyhow::Result<Value> {
        let labels = json!({LABEL_OWNER_OF: job});
        let (name, uid) = if is_core_pod(owner) {
            let node = self
                .node
                .as_deref()
                .context("no drivers' node: prepare saw no Pod owner")?;
            let name = format!("{job}-driver");
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": s.namespace, "labels": labels},
                "spec": {
                    "nodeName": node,
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "driver", "image": "registry.k8s.io/pause:3.10"}],
                },
            }))?;
            let created = Api::<Pod>::namespaced(s.kube.clone(), &s.namespace)
                .create(&PostParams::default(), &pod)
                .await?;
            (name, created.metadata.uid)
        } else {
            let ar = api_resource(owner);
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": owner.api_version, "kind": owner.kind,
                "metadata": {"name": job, "namespace": s.namespace, "labels": labels},
                "spec": {},
            }))?;
            let created = Api::<DynamicObject>::namespaced_with(s.kube.clone(), &s.namespace, &ar)
                .create(&PostParams::default(), &object)
                .await?;
            (job.to_owned(), created.metadata.uid)
        };
        let uid = uid.context("the owner object has no uid")?;
        Ok(json!({
            "apiVersion": owner.api_version, "kind": owner.kind, "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": false,
        }))
    }

    /// Removes the drivers' node (the namespace, owners included, goes with the
    /// scenario).
    pub async fn cleanup(&self, s: &Scenario) {
        if let Some(node) = &self.node {
            let _ = Api::<Node>::all(s.kube.clone())
                .delete(node, &DeleteParams::default())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(api_version: &str, kind: &str) -> WorkloadOwner {
        WorkloadOwner {
            api_version: api_version.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn custom_kinds_and_a_driver_pod_are_replayed_and_built_in_controllers_are_not() {
        assert_eq!(check(&owner("argoproj.io/v1alpha1", "Workflow")), None);
        assert_eq!(check(&owner("kubeflow.org/v1", "PyTorchJob")), None);
        assert_eq!(check(&owner("v1", "Pod")), None);
        assert_eq!(
            check(&owner("jobset.x-k8s.io/v1alpha2", "JobSet")),
            None,
            "x-k8s.io is not a built-in group"
        );
        for (api, kind) in [
            ("apps/v1", "StatefulSet"),
            ("batch/v1", "CronJob"),
            ("v1", "ReplicationController"),
        ] {
            let why = check(&owner(api, kind));
            assert!(why.is_some_and(|w| w.contains(kind)), "{api} {kind}");
        }
    }

    #[test]
    fn a_custom_kind_is_defined_under_its_group_and_version() {
        let crd = crd_yaml(&owner("kubeflow.org/v1", "PyTorchJob"));
        let value: serde_yaml::Value = serde_yaml::from_str(&crd).unwrap();
        assert_eq!(value["metadata"]["name"], "pytorchjobs.kubeflow.org");
        assert_eq!(value["spec"]["group"], "kubeflow.org");
        assert_eq!(value["spec"]["names"]["kind"], "PyTorchJob");
        assert_eq!(value["spec"]["versions"][0]["name"], "v1");
        assert_eq!(
            value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                ["x-kubernetes-preserve-unknown-fields"],
            true
        );
    }
}
