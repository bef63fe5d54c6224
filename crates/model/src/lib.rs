//! The vocabulary every other crate speaks: ids, [`Time`], [`Resources`], the scheduling
//! constraints of pods and nodes, node groups and the [`ClusterSnapshot`] the planner reads.
//!
//! This crate owns plain data and the parsing of Kubernetes' textual formats
//! (quantities, durations, taints). It must never do I/O, read a clock, or depend on
//! kube, AWS or an async runtime: the planner builds on it and must stay sans-IO.

pub mod group;
pub mod ids;
pub mod interruption;
pub mod labels;
pub mod node;
pub mod pod;
pub mod provreq;
pub mod quantity;
pub mod resources;
pub mod scheduling;
pub mod snapshot;
pub mod time;
pub mod well_known;

pub use group::{
    InstanceState, InstanceView, LaunchFailure, LaunchFailureKind, NodeGroupSpec, NodeGroupState,
    NodeShape, PoolKey, PurchaseOption,
};
pub use ids::{
    GangId, InstanceId, InstanceTypeName, NodeGroupId, NodeName, PodKey, PodUid, Region, Zone,
};
pub use interruption::{InterruptionKind, InterruptionNotice};
pub use node::{NodeView, RetireMark};
pub use pod::{
    GangMembership, GangSource, Owner, OwnerKind, OwnerKindParseError, PodPhase, PodView,
    SafeToEvict,
};
pub use provreq::{
    ConditionType, ProvisioningClass, ProvisioningRequestView, RequestCondition, RequestProblem,
};
pub use quantity::{parse_quantity, Quantity, QuantityError};
pub use resources::{ResourceName, Resources};
pub use scheduling::{
    LabelSelector, Labels, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, Operator,
    PodAntiAffinityTerm, SelectorOperator, SelectorRequirement, Taint, TaintEffect,
    TaintParseError, Toleration, TolerationOperator,
};
pub use snapshot::{ClusterSnapshot, DaemonSetView};
pub use time::{format_duration, parse_duration, DurationParseError, Time};
