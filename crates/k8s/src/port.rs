//! The Kubernetes adapter as the driver's `Cluster` port.

use crate::actuator::{Actuator, EvictionResult, K8sError};
use crate::cache::ClusterCache;
use crate::convert::format_annotation_time;
use crate::events::EventPoster;
use crate::status::StatusWriter;
use driver::{Cluster, ClusterView, Evicted, PortError, PortErrorKind, StatusReport};
use model::{InstanceId, NodeGroupState, NodeName, PodKey, PodUid, Time};
use planner::{PlannerEvent, RemovalEvidence};

/// The cluster, as the driver sees it.
pub struct KubeCluster {
    pub cache: ClusterCache,
    pub actuator: Actuator,
    pub events: EventPoster,
    pub status: StatusWriter,
}

fn port_error(e: K8sError) -> PortError {
    let kind = match &e {
        K8sError::NotFound { .. } => PortErrorKind::Gone,
        K8sError::Forbidden(_) => PortErrorKind::Forbidden,
        K8sError::Conflict { .. } | K8sError::Api(_) => PortErrorKind::Retryable,
        K8sError::Invalid(_) => PortErrorKind::Fatal,
    };
    PortError::new(kind, e.metric_label(), e.to_string())
}

impl Cluster for KubeCluster {
    fn view(&self, groups: &[NodeGroupState]) -> ClusterView {
        let parts = self.cache.parts(groups);
        let mut skipped: Vec<String> = parts.skipped.iter().map(|e| e.to_string()).collect();
        skipped.extend(parts.warnings);
        ClusterView {
            synced: parts.synced,
            nodes: parts.nodes,
            pods: parts.pods,
            daemonsets: parts.daemonsets,
            expander_priorities: parts.expander_priorities,
            provisioning_requests: parts.provisioning_requests,
            skipped,
        }
    }

    async fn retire(&mut self, node: &NodeName, reason: &str, now: Time) -> Result<(), PortError> {
        self.actuator
            .retire(node, reason, now)
            .await
            .map_err(port_error)
    }

    async fn unretire(&mut self, node: &NodeName) -> Result<(), PortError> {
        self.actuator.unretire(node).await.map_err(port_error)
    }

    async fn mark_idle(&mut self, node: &NodeName, since: Option<Time>) -> Result<(), PortError> {
        self.actuator
            .mark_idle(node, since)
            .await
            .map_err(port_error)
    }

    async fn evict(
        &mut self,
        pod: &PodKey,
        uid: Option<&PodUid>,
        grace_period: Option<std::time::Duration>,
    ) -> Result<Evicted, PortError> {
        match self
            .actuator
            .evict(pod, uid, grace_period)
            .await
            .map_err(port_error)?
        {
            EvictionResult::Evicted => Ok(Evicted::Evicted),
            EvictionResult::Gone => Ok(Evicted::Gone),
            EvictionResult::Refused(m) => Ok(Evicted::Refused(m)),
        }
    }

    async fn removal_evidence(
        &mut self,
        instance: &InstanceId,
        node: Option<&NodeName>,
    ) -> Result<RemovalEvidence, PortError> {
        self.actuator
            .removal_evidence(instance, node)
            .await
            .map_err(port_error)
    }

    async fn publish(
        &mut self,
        now: Time,
        events: &[(Time, PlannerEvent)],
    ) -> Result<(), PortError> {
        match self.events.publish(now, events).await {
            Ok(0) => Ok(()),
            Ok(n) => Err(PortError::retryable(
                "events",
                format!("{n} Events could not be posted"),
            )),
            Err(e) => Err(PortError::retryable("events", e.to_string())),
        }
    }

    async fn update_provisioning_request(
        &mut self,
        request: &PodKey,
        conditions: &[model::RequestCondition],
    ) -> Result<(), PortError> {
        self.actuator
            .update_provisioning_request(request, conditions)
            .await
            .map_err(port_error)
    }

    async fn write_status(&mut self, status: &StatusReport) -> Result<(), PortError> {
        let text = status.to_text();
        let updated = format_annotation_time(status_time(status));
        self.status
            .write(&text, &updated)
            .await
            .map_err(|e| PortError::retryable("status", e.to_string()))
    }
}

fn status_time(status: &StatusReport) -> Time {
    status.last_loop
}
