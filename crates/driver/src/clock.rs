//! Where the driver's `now` comes from. The planner never reads a clock; the driver
//! reads exactly one, through [`Clock`], so tests can set the time.

use model::Time;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current [`Time`].
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Time;
}

/// Wall-clock time: milliseconds since the Unix epoch (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Time(since_epoch.as_millis() as u64)
    }
}

/// A clock that moves only when told (tests). Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: Time) -> Self {
        Self {
            millis: Arc::new(AtomicU64::new(at.0)),
        }
    }

    /// Sets the time.
    pub fn set(&self, at: Time) {
        self.millis.store(at.0, Ordering::SeqCst);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.millis
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        Time(self.millis.load(Ordering::SeqCst))
    }
}

/// Time that follows tokio's clock from an origin: under `tokio::time::pause()` it
/// shows virtual time, so loop-timing tests and the driver agree on what `now` is.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: tokio::time::Instant,
    origin: Time,
}

impl TokioClock {
    /// A clock that shows `origin` now and advances with tokio's clock.
    pub fn new(origin: Time) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            origin,
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Time {
        self.origin + self.start.elapsed()
    }
}
