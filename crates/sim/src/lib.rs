//! The simulator: simulated EC2 (boot delays, capacity errors, per-second billing) and
//! a simulated cluster (DaemonSets, Job/bare/service pods, a scheduler using the
//! planner's own placement predicates), run on a virtual clock against the real
//! [`planner::Planner`].
//!
//! It never reads the clock except to pace progress output on stderr, never does I/O
//! (callers read scenario files and write reports), and draws random numbers only from
//! the scenario's seed: the same scenario and seed give a byte-identical report.

pub mod scenario;

pub use scenario::{Scenario, ScenarioError, ScenarioErrorKind};
