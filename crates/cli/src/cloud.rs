//! The AWS adapter as the driver's `Cloud` port.

use aws::{AwsError, AwsNodeGroups};
use driver::{Cloud, CloudView, PortError, PortErrorKind};
use model::{InstanceId, LaunchFailure, NodeGroupId, Time};
use planner::BackoffRecord;

pub struct AwsCloud(pub AwsNodeGroups);

pub fn port_error(e: AwsError) -> PortError {
    let kind = match &e {
        AwsError::Throttled { .. } | AwsError::Unavailable { .. } | AwsError::Other { .. } => {
            PortErrorKind::Retryable
        }
        AwsError::NotFound { .. } => PortErrorKind::Gone,
        AwsError::Unowned { .. } | AwsError::Denied { .. } => PortErrorKind::Forbidden,
        AwsError::Rejected { .. } | AwsError::BelowLiveInstances { .. } => PortErrorKind::Refused,
        AwsError::Config(_) => PortErrorKind::Fatal,
    };
    PortError::new(kind, e.metric_label(), e.to_string())
}

impl Cloud for AwsCloud {
    async fn refresh(&mut self, now: Time) -> Result<CloudView, PortError> {
        let r = self.0.refresh(now).await.map_err(port_error)?;
        Ok(CloudView {
            groups: r.groups,
            warnings: r.warnings,
        })
    }
    async fn launch_failures(&mut self, now: Time) -> Result<Vec<LaunchFailure>, PortError> {
        self.0.launch_failures(now).await.map_err(port_error)
    }
    async fn set_target_size(&mut self, group: &NodeGroupId, target: u32) -> Result<(), PortError> {
        self.0
            .set_target_size(group, target)
            .await
            .map_err(port_error)
    }
    async fn terminate_instance(
        &mut self,
        group: &NodeGroupId,
        instance: &InstanceId,
    ) -> Result<(), PortError> {
        self.0
            .terminate_instance(group, instance)
            .await
            .map_err(port_error)
    }
    async fn detach_instance(
        &mut self,
        group: &NodeGroupId,
        instance: &InstanceId,
    ) -> Result<(), PortError> {
        self.0
            .detach_instance(group, instance)
            .await
            .map_err(port_error)
    }
    async fn persist_backoff(&mut self, record: &BackoffRecord) -> Result<(), PortError> {
        self.0.persist_backoff(record).await.map_err(port_error)
    }
    async fn load_backoffs(&mut self) -> Result<Vec<BackoffRecord>, PortError> {
        self.0.load_backoffs().await.map_err(port_error)
    }
}
