//! ProvisioningRequests (`autoscaling.x-k8s.io/v1`): a queue such as Kueue asks for
//! capacity for pods that do not exist yet, and admits its workload once the
//! autoscaler says the capacity is there. The adapter builds the request's pods in
//! memory (each pod set's PodTemplate × count); the planner decides the conditions.

use crate::ids::PodKey;
use crate::pod::PodView;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::fmt;

/// `check-capacity.autoscaling.x-k8s.io`.
pub const CLASS_CHECK_CAPACITY: &str = "check-capacity.autoscaling.x-k8s.io";
/// `best-effort-atomic-scale-up.autoscaling.x-k8s.io`.
pub const CLASS_BEST_EFFORT_ATOMIC: &str = "best-effort-atomic-scale-up.autoscaling.x-k8s.io";
/// The domain of the classes Cluster Autoscaler (and we) serve: a class of this domain
/// that we do not know is refused with a condition; a class of another domain belongs
/// to another provisioner and is left alone.
pub const CLASS_DOMAIN: &str = "autoscaling.x-k8s.io";

/// How a request wants its capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProvisioningClass {
    /// Only say whether the pods fit on the nodes there are (and book that room).
    CheckCapacity,
    /// Buy nodes for all the pods in one pool, or none.
    BestEffortAtomic,
    /// Any other class name.
    Other(String),
}

impl ProvisioningClass {
    pub fn parse(name: &str) -> Self {
        match name {
            CLASS_CHECK_CAPACITY => Self::CheckCapacity,
            CLASS_BEST_EFFORT_ATOMIC => Self::BestEffortAtomic,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::CheckCapacity => CLASS_CHECK_CAPACITY,
            Self::BestEffortAtomic => CLASS_BEST_EFFORT_ATOMIC,
            Self::Other(name) => name,
        }
    }

    /// A class of our domain (so ours to answer, if only with a refusal).
    pub fn is_ours(&self) -> bool {
        match self {
            Self::Other(name) => {
                name.ends_with(&format!(".{CLASS_DOMAIN}")) || name == CLASS_DOMAIN
            }
            _ => true,
        }
    }
}

/// The condition types of a request's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConditionType {
    Accepted,
    Provisioned,
    Failed,
    BookingExpired,
    CapacityRevoked,
}

impl ConditionType {
    pub const ALL: [Self; 5] = [
        Self::Accepted,
        Self::Provisioned,
        Self::Failed,
        Self::BookingExpired,
        Self::CapacityRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Provisioned => "Provisioned",
            Self::Failed => "Failed",
            Self::BookingExpired => "BookingExpired",
            Self::CapacityRevoked => "CapacityRevoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One status condition (`metav1.Condition`, minus the generation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCondition {
    pub kind: ConditionType,
    pub status: bool,
    pub reason: String,
    pub message: String,
    /// `lastTransitionTime`: when `status` last changed.
    pub since: Time,
}

impl RequestCondition {
    /// Same type, status and reason (the message and time may differ).
    pub fn same_verdict(&self, other: &Self) -> bool {
        self.kind == other.kind && self.status == other.status && self.reason == other.reason
    }
}

/// Something wrong with the request itself: it can never be served as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestProblem {
    /// A pod set names a PodTemplate that does not exist (yet: a queue creates the
    /// template first, and the two watches may deliver them in either order).
    MissingPodTemplate { name: String },
    /// Any other defect, described for the user (a count of 0, an unparseable template).
    Invalid { message: String },
}

impl fmt::Display for RequestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingPodTemplate { name } => write!(f, "PodTemplate {name} does not exist"),
            Self::Invalid { message } => f.write_str(message),
        }
    }
}

/// A ProvisioningRequest as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisioningRequestView {
    pub key: PodKey,
    pub class: ProvisioningClass,
    /// Every pod the request stands for (template × count per pod set), named
    /// `<request>-<set>-<index>`. Empty when `problem` is set.
    pub pods: Vec<PodView>,
    pub created: Time,
    /// `parameters.noRetry: "true"`: a check that finds no capacity fails for good.
    pub no_retry: bool,
    pub conditions: Vec<RequestCondition>,
    pub problem: Option<RequestProblem>,
}

impl ProvisioningRequestView {
    /// The condition of a type, if the status has it.
    pub fn condition(&self, kind: ConditionType) -> Option<&RequestCondition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// The condition of a type is present and true.
    pub fn is(&self, kind: ConditionType) -> bool {
        self.condition(kind).is_some_and(|c| c.status)
    }

    /// How many pods the request stands for.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}
