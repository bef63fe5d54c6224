//! Notices that an instance is about to go (or may): EC2 spot interruption warnings,
//! rebalance recommendations, instance state changes and AWS Health scheduled events,
//! as a cloud adapter reads them (EventBridge events delivered through SQS) or the
//! simulator makes them up.

use crate::ids::{InstanceId, Region};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InterruptionKind {
    /// "EC2 Spot Instance Interruption Warning": EC2 takes the instance back in about
    /// two minutes.
    SpotInterruption,
    /// "EC2 Instance Rebalance Recommendation": the instance is at elevated risk of
    /// interruption; it may run for hours yet.
    RebalanceRecommendation,
    /// "EC2 Instance State-change Notification": stopping, stopped, shutting-down or
    /// terminated. The instance is going now; its group replaces it by itself.
    StateChange,
    /// An AWS Health scheduled instance event (retirement, maintenance stop or reboot):
    /// the instance goes at a known, usually distant, time.
    ScheduledChange,
}

impl InterruptionKind {
    /// A short, stable name for metrics, events and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SpotInterruption => "spot-interruption",
            Self::RebalanceRecommendation => "rebalance-recommendation",
            Self::StateChange => "state-change",
            Self::ScheduledChange => "scheduled-change",
        }
    }
}

impl fmt::Display for InterruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notice about one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptionNotice {
    pub instance: InstanceId,
    pub kind: InterruptionKind,
    /// The EC2 state of a state change (`stopping`, `shutting-down`, …), the event
    /// type code of a scheduled change (`AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED`), the
    /// instance action of a spot warning (`terminate`, `stop`, `hibernate`); may be empty.
    pub detail: String,
    /// When the cloud sent it.
    pub at: Time,
    /// When the instance is expected to go, if the notice says (a spot warning's
    /// `instance-action` time, a scheduled event's start).
    pub deadline: Option<Time>,
    /// The region the notice came from, if known.
    pub region: Option<Region>,
}

impl InterruptionNotice {
    /// A notice with no detail, deadline or region.
    pub fn new(instance: InstanceId, kind: InterruptionKind, at: Time) -> Self {
        Self {
            instance,
            kind,
            detail: String::new(),
            at,
            deadline: None,
            region: None,
        }
    }
}
