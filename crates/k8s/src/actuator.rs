//! Kubernetes-side actions: retire (our NoSchedule taint plus annotations), un-retire,
//! idle-since annotations, and evictions through the `policy/v1` Eviction subresource.
//! Node updates carry the resourceVersion they were computed from, so a concurrent
//! change yields 409 Conflict and is retried on a fresh read, never overwritten.

use crate::convert::format_annotation_time;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::Eviction;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use model::well_known::*;
use model::{NodeName, PodKey, Time};
use serde_json::json;
use std::time::Duration;

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
    async fn update_node(&self, node: &NodeName, change: impl Fn(&Node) -> Option<serde_json::Value>) -> Result<(), K8sError> {
        let api = self.nodes();
        for _ in 0..CONFLICT_ATTEMPTS {
            let current = match api.get(node.as_str()).await {
                Ok(n) => n,
                Err(e) if status_code(&e) == Some(404) => return Err(K8sError::NotFound { object: format!("node {node}") }),
                Err(e) => return Err(e.into()),
            };
            let Some(mut body) = change(&current) else { return Ok(()) };
            body["metadata"]["resourceVersion"] = json!(current.metadata.resource_version);
            match api.patch(node.as_str(), &PatchParams::default(), &Patch::Merge(&body)).await {
                Ok(_) => return Ok(()),
                Err(e) if status_code(&e) == Some(409) => continue,
                Err(e) if status_code(&e) == Some(404) => return Err(K8sError::NotFound { object: format!("node {node}") }),
                Err(e) if status_code(&e) == Some(403) => return Err(K8sError::Forbidden(e.to_string())),
                Err(e) => return Err(e.into()),
            }
        }
        Err(K8sError::Conflict { object: format!("node {node}"), attempts: CONFLICT_ATTEMPTS })
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
            let current = n.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_IDLE_SINCE)).cloned();
            if current == value {
                return None;
            }
            Some(json!({"metadata": {"annotations": {ANNOTATION_IDLE_SINCE: value}}}))
        })
        .await
    }

    /// Evicts a pod through the Eviction API, so PodDisruptionBudgets are honoured.
    pub async fn evict(&self, pod: &PodKey, grace_period_seconds: Option<i64>) -> Result<EvictionResult, K8sError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let eviction: Eviction = serde_json::from_value(json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            "deleteOptions": grace_period_seconds.map(|g| json!({"gracePeriodSeconds": g})),
        }))
        .map_err(|e| K8sError::Invalid(e.to_string()))?;
        match api.create_subresource::<Eviction, serde_json::Value>("eviction", &pod.name, &PostParams::default(), &eviction).await {
            Ok(_) => Ok(EvictionResult::Evicted),
            Err(e) if status_code(&e) == Some(404) => Ok(EvictionResult::Gone),
            Err(e) if status_code(&e) == Some(429) => Ok(EvictionResult::Refused(e.to_string())),
            Err(e) if status_code(&e) == Some(403) => Err(K8sError::Forbidden(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}

fn taints_json(n: &Node) -> Vec<serde_json::Value> {
    n.spec.as_ref().and_then(|s| s.taints.as_ref()).map(|ts| ts.iter().map(|t| serde_json::to_value(t).unwrap_or_default()).collect()).unwrap_or_default()
}

/// Backoff for refused evictions: 1s doubling to 16s.
pub fn eviction_retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(4))
}
