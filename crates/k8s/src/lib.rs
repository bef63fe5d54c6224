//! The Kubernetes adapter: turns the cluster into the planner's snapshot and carries
//! out the planner's Kubernetes-side actions (retire, un-retire, evict, annotate),
//! posts Events, keeps the status ConfigMap and takes part in leader election.
//!
//! It owns Kubernetes types; nothing outside this crate (and the binary) sees them.

pub mod actuator;
pub mod cache;
pub mod convert;
pub mod events;
pub mod leader;
pub mod port;
pub mod provreq;
pub mod status;
pub mod views;
