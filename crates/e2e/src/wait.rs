//! Waiting on conditions: poll with a short interval until the condition holds or a
//! deadline passes. Never a fixed sleep in place of a condition.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(250);

/// The result of one look at a condition.
pub enum Check<T> {
    /// It holds: the value to return.
    Done(T),
    /// Not yet: what was seen (shown if the deadline passes).
    Waiting(String),
    /// It can no longer hold (a Job failed): stop waiting, with this error.
    Failed(String),
}

/// Polls `look` every [`POLL`] until it returns [`Check::Done`] or `timeout` passes.
/// Errors of a look are kept (the last one is reported) and polling goes on: the
/// apiserver may be restarting, moto may be throttling.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut look: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Check<T>>>,
{
    let started = Instant::now();
    loop {
        let last = match look().await {
            Ok(Check::Done(value)) => return Ok(value),
            Ok(Check::Waiting(seen)) => seen,
            Ok(Check::Failed(why)) => anyhow::bail!("while waiting for {what}: {why}"),
            Err(e) => format!("error: {e:#}"),
        };
        if started.elapsed() >= timeout {
            anyhow::bail!(
                "timed out after {:.0?} waiting for {what}; last seen: {last}",
                started.elapsed()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A deadline shared by several waits.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(d: Duration) -> Self {
        Self(Instant::now() + d)
    }
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}
