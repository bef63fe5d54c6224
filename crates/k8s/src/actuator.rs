//! Kubernetes-side actions: retire (our NoSchedule taint plus annotations), un-retire,
//! idle-since annotations, and evictions through the `policy/v1` Eviction subresource.
//! Node updates carry the resourceVersion they were computed from, so a concurrent
//! change yields 409 Conflict and is retried on a fresh read, never overwritten.

use crate::convert::{format_annotation_time, node_view, parse_provider_id, pod_view};
use crate::provreq::{status_patch, ProvisioningRequest};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::Eviction;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use model::well_known::*;
use model::{InstanceId, NodeName, PodKey, PodUid, Time};
use planner::RemovalEvidence;
use serde_json::json;
use std::time::Duration;

/// `metav1.Time`: RFC 3339 in whole seconds.
fn format_condition_time(t: Time) -> String {
    let secs = (t.as_millis() / 1000) as i64;
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Typed errors of the Kubernetes client layer.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("conflict persisted after {attempts} attempts updating {object}")]
    Conflict { object: String, attempts: u32 },
    #[error("{object} not found")]
    NotFound { object: String },
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("kubernetes API error: {0}")]
    Api(#[from] kube::Error),
    #[error("bad object: {0}")]
    Invalid(String),
}

impl K8sError {
    /// A short label for the API-errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Conflict { .. } => "conflict",
            Self::NotFound { .. } => "not-found",
            Self::Forbidden(_) => "forbidden",
            Self::Api(_) => "api",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// What became of an eviction request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionResult {
    /// Accepted: the pod is terminating.
    Evicted,
    /// The pod no longer exists.
    Gone,
    /// Refused for now (a PodDisruptionBudget answered 429): retry later.
    Refused(String),
}

const CONFLICT_ATTEMPTS: u32 = 5;

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Carries out node and pod actions.
#[derive(Clone)]
pub struct Actuator {
    client: Client,
}

impl Actuator {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Reads the node, lets `change` compute a patch body from it, and applies the
    /// patch with the read's resourceVersion; retries on 409 Conflict.
    async fn update_node(
        &self,
        node: &NodeName,
        change: impl Fn(&Node) -> Option<serde_json::Value>,
    ) -> Result<(), K8sError> {
        let api = self.nodes();
        for _ in 0..CONFLICT_ATTEMPTS {
            let current = match api.get(node.as_str()).await {
                Ok(n) => n,
                Err(e) if status_code(&e) == Some(404) => {
                    return Err(K8sError::NotFound {
                        object: format!("node {node}"),
                    })
                }
                Err(e) => return Err(e.into()),
            };
            let Some(mut body) = change(&current) else {
                return Ok(());
            };
            body["metadata"]["resourceVersion"] = json!(current.metadata.resource_version);
            match api
                .patch(node.as_str(), &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if status_code(&e) == Some(409) => continue,
                Err(e) if status_code(&e) == Some(404) => {
                    return Err(K8sError::NotFound {
                        object: format!("node {node}"),
                    })
                }
                Err(e) if status_code(&e) == Some(403) => {
                    return Err(K8sError::Forbidden(e.to_string()))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(K8sError::Conflict {
            object: format!("node {node}"),
            attempts: CONFLICT_ATTEMPTS,
        })
    }

    /// Sets conditions in a ProvisioningRequest's status subresource, each replacing
    /// the condition of its type. The patch carries the resourceVersion it was
    /// computed from (a concurrent writer's conditions are never overwritten).
    pub async fn update_provisioning_request(
        &self,
        request: &PodKey,
        conditions: &[model::RequestCondition],
    ) -> Result<(), K8sError> {
        let api: Api<ProvisioningRequest> =
            Api::namespaced(self.client.clone(), &request.namespace);
        let object = || format!("provisioningrequest {request}");
        for _ in 0..CONFLICT_ATTEMPTS {
            let current = match api.get_status(&request.name).await {
                Ok(r) => r,
                Err(e) if status_code(&e) == Some(404) => {
                    return Err(K8sError::NotFound { object: object() })
                }
                Err(e) if status_code(&e) == Some(403) => {
                    return Err(K8sError::Forbidden(e.to_string()))
                }
                Err(e) => return Err(e.into()),
            };
            let mut body = status_patch(&current.status, conditions, format_condition_time);
            body["metadata"] = json!({"resourceVersion": current.metadata.resource_version});
            match api
                .patch_status(&request.name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if status_code(&e) == Some(409) => continue,
                Err(e) if status_code(&e) == Some(404) => {
                    return Err(K8sError::NotFound { object: object() })
                }
                Err(e) if status_code(&e) == Some(403) => {
                    return Err(K8sError::Forbidden(e.to_string()))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(K8sError::Conflict {
            object: object(),
            attempts: CONFLICT_ATTEMPTS,
        })
    }

    /// Taints the node `batch-autoscaler.io/retiring:NoSchedule` and records why and when.
    pub async fn retire(&self, node: &NodeName, reason: &str, now: Time) -> Result<(), K8sError> {
        self.update_node(node, |n| {
            let mut taints: Vec<serde_json::Value> = taints_json(n);
            if taints.iter().any(|t| t["key"] == TAINT_RETIRING) {
                return None;
            }
            taints.push(json!({"key": TAINT_RETIRING, "effect": "NoSchedule"}));
            Some(json!({
                "metadata": {"annotations": {ANNOTATION_RETIRE_REASON: reason, ANNOTATION_RETIRED_AT: format_annotation_time(now)}},
                "spec": {"taints": taints}
            }))
        })
        .await
    }

    /// Removes our taint and annotations (CA's taints are left to CA).
    pub async fn unretire(&self, node: &NodeName) -> Result<(), K8sError> {
        self.update_node(node, |n| {
            let taints: Vec<serde_json::Value> = taints_json(n);
            let kept: Vec<_> = taints.iter().filter(|t| t["key"] != TAINT_RETIRING).cloned().collect();
            if kept.len() == taints.len() {
                return None;
            }
            Some(json!({
                "metadata": {"annotations": {ANNOTATION_RETIRE_REASON: null, ANNOTATION_RETIRED_AT: null}},
                "spec": {"taints": kept}
            }))
        })
        .await
    }

    /// Sets (or clears) the idle-since annotation.
    pub async fn mark_idle(&self, node: &NodeName, since: Option<Time>) -> Result<(), K8sError> {
        let value = since.map(format_annotation_time);
        self.update_node(node, |n| {
            let current = n
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_IDLE_SINCE))
                .cloned();
            if current == value {
                return None;
            }
            Some(json!({"metadata": {"annotations": {ANNOTATION_IDLE_SINCE: value}}}))
        })
        .await
    }

    /// Evicts a pod through the Eviction API, so PodDisruptionBudgets are honoured.
    /// `uid` is a precondition: a later pod that took the same name is not evicted
    /// (the API answers 409, reported as gone: the pod meant is gone). `grace_period`
    /// is the pod's own `terminationGracePeriodSeconds` (none: the pod's default).
    pub async fn evict(
        &self,
        pod: &PodKey,
        uid: Option<&PodUid>,
        grace_period: Option<Duration>,
    ) -> Result<EvictionResult, K8sError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let mut delete_options = serde_json::Map::new();
        if let Some(grace) = grace_period {
            delete_options.insert("gracePeriodSeconds".into(), json!(grace.as_secs()));
        }
        if let Some(uid) = uid {
            delete_options.insert("preconditions".into(), json!({"uid": uid.as_str()}));
        }
        let eviction: Eviction = serde_json::from_value(json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            "deleteOptions": if delete_options.is_empty() { serde_json::Value::Null } else { serde_json::Value::Object(delete_options) },
        }))
        .map_err(|e| K8sError::Invalid(e.to_string()))?;
        match api
            .create_subresource::<Eviction, serde_json::Value>(
                "eviction",
                &pod.name,
                &PostParams::default(),
                &eviction,
            )
            .await
        {
            Ok(_) => Ok(EvictionResult::Evicted),
            Err(e) if status_code(&e) == Some(404) || status_code(&e) == Some(409) => {
                Ok(EvictionResult::Gone)
            }
            Err(e) if status_code(&e) == Some(429) => Ok(EvictionResult::Refused(e.to_string())),
            Err(e) if status_code(&e) == Some(403) => Err(K8sError::Forbidden(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads, afresh, the Node backing `instance` and every pod bound to it, and every
    /// pod bound to `node` (the name the removal was decided on) when that is not the
    /// node read: the evidence a removal is decided on. An instance that backs no node
    /// (the Node deleted, its providerID not set yet, or the name reused by a node of
    /// another instance) is no proof that nothing runs there: the pods bound to the
    /// expected name are evidence all the same. Every read is a quorum read (no
    /// resourceVersion: served from etcd, never from a cache), made after the caller
    /// wrote the fence, so they show every pod bound before the fence took effect.
    /// A pod that cannot be understood is an error: the removal does not go ahead on
    /// evidence it cannot read.
    pub async fn removal_evidence(
        &self,
        instance: &InstanceId,
        node: Option<&NodeName>,
    ) -> Result<RemovalEvidence, K8sError> {
        let api = self.nodes();
        let backs = |n: &Node| {
            n.spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .and_then(parse_provider_id)
                .is_some_and(|(_, i)| &i == instance)
        };
        let mut found = match node {
            Some(name) => match api.get_opt(name.as_str()).await? {
                Some(n) if backs(&n) => Some(n),
                _ => None,
            },
            None => None,
        };
        if found.is_none() {
            // Not under the expected name (or none expected): any node of the instance.
            found = api
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|n| backs(n));
        }
        let view = match &found {
            Some(n) => Some(
                node_view(n, |_| None)
                    .map_err(|e| K8sError::Invalid(e.to_string()))?
                    .0,
            ),
            None => None,
        };
        let mut names: Vec<&NodeName> = view.iter().map(|v| &v.name).collect();
        if let Some(expected) = node.filter(|n| !names.contains(n)) {
            names.push(expected);
        }
        let mut pods = Vec::new();
        for name in &names {
            pods.extend(self.pods_bound_to(name).await?);
        }
        // Placed there by a scheduler whose binding is still under way (volume binding,
        // a coscheduling permit wait): as good as bound for this check.
        pods.extend(self.pods_nominated_to(&names).await?);
        Ok(RemovalEvidence { node: view, pods })
    }

    /// Every pod bound to the node named `name` (a quorum read).
    async fn pods_bound_to(&self, name: &NodeName) -> Result<Vec<model::PodView>, K8sError> {
        self.pods_selected(
            &format!("spec.nodeName={name}"),
            &format!("pod on node {name}"),
            |_| true,
        )
        .await
    }

    /// Every pending pod not bound yet whose `status.nominatedNodeName` is one of
    /// `names` (a quorum read of the unbound pending pods: the apiserver cannot select
    /// on the nomination). Only those are converted: a bad pod elsewhere is no reason
    /// to refuse this evidence.
    async fn pods_nominated_to(
        &self,
        names: &[&NodeName],
    ) -> Result<Vec<model::PodView>, K8sError> {
        self.pods_selected("spec.nodeName=,status.phase=Pending", "pending pod", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_deref())
                .is_some_and(|n| names.iter().any(|name| name.as_str() == n))
        })
        .await
    }

    /// The pods a field selector picks and `keep` keeps, converted; one that cannot be
    /// understood fails the read (`what` names them in the error).
    async fn pods_selected(
        &self,
        fields: &str,
        what: &str,
        keep: impl Fn(&Pod) -> bool,
    ) -> Result<Vec<model::PodView>, K8sError> {
        let pods_api: Api<Pod> = Api::all(self.client.clone());
        let pods = pods_api.list(&ListParams::default().fields(fields)).await?;
        pods.items
            .iter()
            .filter(|p| keep(p))
            .map(pod_view)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| K8sError::Invalid(format!("{what}: {e}")))
    }
}

fn taints_json(n: &Node) -> Vec<serde_json::Value> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| serde_json::to_value(t).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Backoff for refused evictions: 1s doubling to 16s.
pub fn eviction_retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(4))
}
