//! The simulator: simulated EC2 (boot delays, capacity errors, spot interruptions,
//! per-second billing) and
//! a simulated cluster (DaemonSets, Job/bare/service pods, a scheduler using the
//! planner's own placement predicates), run on a virtual clock against the real
//! [`planner::Planner`].
//!
//! It never reads the clock except to pace progress output on stderr, never does I/O
//! (callers read scenario files and write reports), and draws random numbers only from
//! the scenario's seed: the same scenario and seed give a byte-identical report.
//!
//! Entry point: [`simulate`] (or [`engine::run`] for the raw record).

pub mod engine;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod spot;

pub use engine::{RunRecord, SimError, SimOptions};
pub use report::Report;
pub use scenario::{Scenario, ScenarioError, ScenarioErrorKind};

/// Runs `scenario` and summarises the run.
pub fn simulate(scenario: &Scenario, options: &SimOptions) -> Result<Report, SimError> {
    let record = engine::run(scenario, options)?;
    Ok(Report::build(scenario, &record))
}
