//! The ports: what the driver needs from the outside world, as traits the adapters
//! implement (`crates/aws` the [`Cloud`], `crates/k8s` the [`Cluster`], the binary the
//! [`Notifier`]). The driver is generic over them, so tests plug in fakes that record
//! every call.
//!
//! Every method that changes something is `async` and returns a [`PortError`] whose
//! [`PortErrorKind`] tells the driver what to report to the planner; reads that cannot
//! fail (the cluster's watch caches) are plain methods.

// The traits use native `async fn`. Whether a driver future is `Send` is decided where
// concrete adapters are plugged in (auto traits leak through the concrete futures), so
// the binary can still spawn `Driver::run` on a multi-threaded runtime; the crate's
// tests check that. The notifier alone must be `Send` by declaration: its messages are
// delivered from a spawned task so a slow webhook never holds up the loop.
#![allow(async_fn_in_trait)]

use crate::status::StatusReport;
use model::{
    DaemonSetView, InstanceId, LaunchFailure, NodeGroupId, NodeGroupState, NodeName, NodeView,
    PodKey, PodUid, PodView, Time,
};
use planner::{BackoffRecord, PlannerEvent, RemovalEvidence};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

/// What an adapter call failed with, classified for the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortErrorKind {
    /// Throttling, timeouts, 5xx, conflicts that persisted: try again on a later pass.
    Retryable,
    /// The object is gone (404, instance already terminated): the action is moot.
    Gone,
    /// Refused for now by policy (a PodDisruptionBudget, a scaling activity in
    /// progress): try again later.
    Refused,
    /// Not allowed (RBAC, IAM): retrying will not help until someone fixes permissions.
    Forbidden,
    /// Anything else that will not get better by retrying (bad request, bad config).
    Fatal,
}

impl PortErrorKind {
    /// A short, stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Gone => "gone",
            Self::Refused => "refused",
            Self::Forbidden => "forbidden",
            Self::Fatal => "fatal",
        }
    }
}

/// An adapter call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{label} ({}): {message}", kind.as_str())]
pub struct PortError {
    pub kind: PortErrorKind,
    /// The label of the API-errors metric (the adapter error's `metric_label()`).
    pub label: &'static str,
    pub message: String,
}

impl PortError {
    /// An error of `kind` with a metric label and a message.
    pub fn new(kind: PortErrorKind, label: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            label,
            message: message.into(),
        }
    }

    /// A transient failure.
    pub fn retryable(label: &'static str, message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Retryable, label, message)
    }

    /// The target no longer exists.
    pub fn gone(label: &'static str, message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Gone, label, message)
    }

    /// Refused for now.
    pub fn refused(label: &'static str, message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Refused, label, message)
    }

    /// Not permitted.
    pub fn forbidden(label: &'static str, message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Forbidden, label, message)
    }

    /// Failed for good.
    pub fn fatal(label: &'static str, message: impl Into<String>) -> Self {
        Self::new(PortErrorKind::Fatal, label, message)
    }
}

/// The cloud's side of the world at one instant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CloudView {
    /// Every managed node group with its target and instances.
    pub groups: Vec<NodeGroupState>,
    /// Problems the adapter worked around (a group without a usable template, …).
    /// Logged once per distinct text.
    pub warnings: Vec<String>,
}

/// The cloud adapter (EC2 Auto Scaling in production).
pub trait Cloud {
    /// Reads the node groups. An error means no planning this pass.
    async fn refresh(&mut self, now: Time) -> Result<CloudView, PortError>;
    /// Launches that failed since the last call (classified scaling activities).
    async fn launch_failures(&mut self, now: Time) -> Result<Vec<LaunchFailure>, PortError>;
    /// Sets a group's desired capacity.
    async fn set_target_size(&mut self, group: &NodeGroupId, target: u32) -> Result<(), PortError>;
    /// Terminates exactly this instance and decrements the group's desired capacity.
    async fn terminate_instance(
        &mut self,
        group: &NodeGroupId,
        instance: &InstanceId,
    ) -> Result<(), PortError>;
    /// Takes an interrupted instance out of its group, decrementing the desired
    /// capacity; the instance runs on until the cloud takes it back.
    async fn detach_instance(
        &mut self,
        group: &NodeGroupId,
        instance: &InstanceId,
    ) -> Result<(), PortError>;
    /// Stores a pool backoff so a restarted process does not forget it.
    async fn persist_backoff(&mut self, record: &BackoffRecord) -> Result<(), PortError>;
    /// The backoffs stored by earlier processes.
    async fn load_backoffs(&mut self) -> Result<Vec<BackoffRecord>, PortError>;
}

/// The cluster's side of the world, from the adapter's watch caches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterView {
    /// Every watch has synced (and none is relisting): only then may the planner act.
    pub synced: bool,
    pub nodes: Vec<NodeView>,
    pub pods: Vec<PodView>,
    pub daemonsets: Vec<DaemonSetView>,
    /// The priority expander's ConfigMap, when present.
    pub expander_priorities: Option<BTreeMap<i32, Vec<String>>>,
    /// ProvisioningRequests (empty unless the feature is on).
    pub provisioning_requests: Vec<model::ProvisioningRequestView>,
    /// Objects that could not be converted and were left out, one line each
    /// (`kind namespace/name: why`). Warned once per distinct line and counted.
    pub skipped: Vec<String>,
}

/// What became of an eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evicted {
    /// Accepted: the pod is terminating.
    Evicted,
    /// The pod no longer exists.
    Gone,
    /// Refused for now (a PodDisruptionBudget answered 429): retried on a later pass.
    Refused(String),
}

/// The Kubernetes adapter.
pub trait Cluster {
    /// The current view of the cluster. `groups` lets the adapter tell which nodes
    /// belong to which group (by instance id).
    fn view(&self, groups: &[NodeGroupState]) -> ClusterView;
    /// Taints the node NoSchedule with the autoscaler's taint and annotates it.
    async fn retire(&mut self, node: &NodeName, reason: &str, now: Time) -> Result<(), PortError>;
    /// Removes the retirement taint and annotations.
    async fn unretire(&mut self, node: &NodeName) -> Result<(), PortError>;
    /// Persists (or clears, with `None`) the node's idle-since annotation.
    async fn mark_idle(&mut self, node: &NodeName, since: Option<Time>) -> Result<(), PortError>;
    /// Evicts a pod through the Eviction API: only the pod with `uid` (when given),
    /// with `grace_period` to stop (the pod's own; the adapter's default when `None`).
    async fn evict(
        &mut self,
        pod: &PodKey,
        uid: Option<&PodUid>,
        grace_period: Option<std::time::Duration>,
    ) -> Result<Evicted, PortError>;
    /// Reads, fresh from the API server (not from the watch caches), the Node backing
    /// `instance` (`node` is the name the planner expects) and every pod bound to it,
    /// the pods read after the node: the evidence a removal is verified on.
    async fn removal_evidence(
        &mut self,
        instance: &InstanceId,
        node: Option<&NodeName>,
    ) -> Result<RemovalEvidence, PortError>;
    /// Posts Kubernetes Events for the planner's explanations (the adapter chooses
    /// which and rate-limits them).
    async fn publish(
        &mut self,
        now: Time,
        events: &[(Time, PlannerEvent)],
    ) -> Result<(), PortError>;
    /// Writes the status ConfigMap.
    async fn write_status(&mut self, status: &StatusReport) -> Result<(), PortError>;
    /// Sets conditions in a ProvisioningRequest's status, each replacing the condition
    /// of its type.
    async fn update_provisioning_request(
        &mut self,
        request: &PodKey,
        conditions: &[model::RequestCondition],
    ) -> Result<(), PortError>;
}

/// Where human notifications go (Slack's incoming webhook in production).
///
/// Implementations may write `async fn notify(&self, text: &str) -> Result<(), PortError>`;
/// the future must be `Send` because delivery happens on a spawned task.
pub trait Notifier: Send + Sync + 'static {
    /// Sends one message.
    fn notify(&self, text: &str) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// A notifier that drops every message (no `--slack-hook`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotifier;

impl Notifier for NoNotifier {
    async fn notify(&self, _text: &str) -> Result<(), PortError> {
        Ok(())
    }
}

impl fmt::Display for Evicted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Evicted => f.write_str("evicted"),
            Self::Gone => f.write_str("gone"),
            Self::Refused(message) => write!(f, "refused: {message}"),
        }
    }
}
