//! The async glue between the sans-IO [`planner::Planner`] and the adapters.
//!
//! The driver owns the control loop: it reads the cloud and the cluster through the
//! ports ([`Cloud`], [`Cluster`]), builds the planner's snapshot, carries the planner's
//! actions out and reports their outcomes, and turns the planner's explanations into
//! logs, metrics, Kubernetes Events ([`Cluster::publish`]), Slack messages
//! ([`Notifier`]) and the status report ([`StatusReport`]). It also serves `/metrics`,
//! `/healthz` and `/readyz` ([`serve_http`]).
//!
//! It never decides anything itself (that is the planner's job), never touches kube or
//! AWS types (the adapters implement the ports), and never reads a clock other than
//! the [`Clock`] it is given. In dry-run it makes no mutating port call at all.

mod clock;
mod driver;
mod http;
mod interruptions;
mod leadership;
mod metrics;
mod notify;
mod ports;
mod status;

pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use driver::{
    ActionRecord, Driver, DriverConfig, LoopOutcome, PassReport, Ports, DEFAULT_BATCH_IDLE,
    DEFAULT_BATCH_WINDOW, DEFAULT_MAX_ERROR_BACKOFF, INITIAL_ERROR_BACKOFF,
};
pub use http::{serve_http, serve_listener, Health, HttpState};
pub use interruptions::{
    interruption_feed, run_interruption_queue, InterruptionFeed, InterruptionQueue,
    InterruptionSender, ParsedMessage, QueueMessage, Received,
};
pub use leadership::Leadership;
pub use metrics::Metrics;
pub use notify::{
    messages_for, Message, SlackGate, Verdict, DEDUP_WINDOW, MIN_INTERVAL, SEND_TIMEOUT,
};
pub use ports::{
    Cloud, CloudView, Cluster, ClusterView, Evicted, NoNotifier, Notifier, PortError, PortErrorKind,
};
pub use status::{ClusterHealth, GroupBackoff, GroupStatus, PoolInterruptionStatus, StatusReport};
