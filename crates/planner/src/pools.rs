//! Capacity pools and their backoff. A pool (region × zone × instance type × purchase
//! option) that failed to launch is avoided until its backoff expires — not merely
//! until the next loop, the seed's mistake. Backoff doubles on repeated failures up to
//! a maximum and starts over after a quiet period.

use crate::actions::BackoffRecord;
use crate::settings::PlannerSettings;
use model::{LaunchFailureKind, PoolKey, Time};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct PoolBackoffs {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    entries: BTreeMap<PoolKey, BackoffRecord>,
}

impl PoolBackoffs {
    pub(crate) fn new(settings: &PlannerSettings) -> Self {
        Self {
            initial: settings.initial_node_group_backoff_duration,
            max: settings.max_node_group_backoff_duration,
            reset_after: settings.node_group_backoff_reset_timeout,
            entries: BTreeMap::new(),
        }
    }

    /// Records a failure; returns the new backoff.
    pub(crate) fn record_failure(
        &mut self,
        now: Time,
        pool: PoolKey,
        kind: LaunchFailureKind,
        message: &str,
    ) -> BackoffRecord {
        let previous = self.entries.get(&pool);
        let duration = match previous {
            // A failure while still backed off (several activities of one launch) does
            // not double again.
            Some(p) if now < p.until => Duration::from_millis(p.duration_ms),
            Some(p) if now.saturating_since(p.last_failure) < self.reset_after => {
                (Duration::from_millis(p.duration_ms) * 2).min(self.max)
            }
            _ => self.initial,
        };
        // A broken launch template will not heal by itself: back off as long as allowed.
        let duration = if kind == LaunchFailureKind::InvalidConfiguration {
            self.max
        } else {
            duration
        };
        self.put(now, pool, kind, duration, message)
    }

    /// Records a backoff of `duration` from `now`.
    fn put(
        &mut self,
        now: Time,
        pool: PoolKey,
        kind: LaunchFailureKind,
        duration: Duration,
        message: &str,
    ) -> BackoffRecord {
        let record = BackoffRecord {
            pool: pool.clone(),
            kind,
            until: now + duration,
            duration_ms: duration.as_millis() as u64,
            last_failure: now,
            message: message.to_owned(),
        };
        self.entries.insert(pool, record.clone());
        record
    }

    /// Records that `pool` was interrupted often enough to be avoided: `initial`
    /// first, doubling (up to `max`) while interruptions go on within the reset period.
    /// A longer backoff already in force (a capacity error) is kept.
    pub(crate) fn record_interruptions(
        &mut self,
        now: Time,
        pool: PoolKey,
        initial: Duration,
        max: Duration,
        message: &str,
    ) -> BackoffRecord {
        let previous = self.entries.get(&pool);
        let duration = match previous {
            Some(p)
                if p.kind == LaunchFailureKind::SpotInterruptions
                    && now.saturating_since(p.last_failure) < self.reset_after =>
            {
                (Duration::from_millis(p.duration_ms) * 2).clamp(initial, max)
            }
            _ => initial,
        };
        if let Some(p) = previous
            .filter(|p| p.kind != LaunchFailureKind::SpotInterruptions && p.until > now + duration)
        {
            return p.clone();
        }
        self.put(
            now,
            pool,
            LaunchFailureKind::SpotInterruptions,
            duration,
            message,
        )
    }

    /// The backoff in force for `pool` at `now`.
    pub(crate) fn backed_off(&self, pool: &PoolKey, now: Time) -> Option<&BackoffRecord> {
        self.entries.get(pool).filter(|r| now < r.until)
    }

    /// Pools whose backoff ended at or before `now` and were not yet reported; the
    /// record stays (for doubling) until the reset period passes.
    pub(crate) fn take_expired(&mut self, now: Time) -> Vec<PoolKey> {
        let mut expired = Vec::new();
        let reset_after = self.reset_after;
        self.entries.retain(|pool, r| {
            if now.saturating_since(r.last_failure) >= reset_after && now >= r.until {
                return false;
            }
            if now >= r.until && !r.message.ends_with(EXPIRED_MARK) {
                expired.push(pool.clone());
                r.message.push_str(EXPIRED_MARK);
            }
            true
        });
        expired
    }

    pub(crate) fn restore(&mut self, record: BackoffRecord) {
        self.entries.insert(record.pool.clone(), record);
    }

    pub(crate) fn active(&self, now: Time) -> Vec<BackoffRecord> {
        self.entries
            .values()
            .filter(|r| now < r.until)
            .cloned()
            .collect()
    }

    /// Earliest end of a backoff still in force.
    pub(crate) fn next_expiry(&self, now: Time) -> Option<Time> {
        self.entries
            .values()
            .map(|r| r.until)
            .filter(|&u| u > now)
            .min()
    }
}

/// Marks a record whose expiry was already reported (kept in the message so the
/// record type stays the persisted one).
const EXPIRED_MARK: &str = " (expired)";

#[cfg(test)]
mod tests {
    use super::*;
    use model::{InstanceTypeName, PurchaseOption, Region, Zone};

    fn pool() -> PoolKey {
        PoolKey {
            region: Region::new("r"),
            zone: Zone::new("z"),
            instance_type: InstanceTypeName::new("m5.large"),
            purchase: PurchaseOption::OnDemand,
        }
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let settings = PlannerSettings::default();
        let mut b = PoolBackoffs::new(&settings);
        let t0 = Time::from_secs(1000);
        let r = b.record_failure(t0, pool(), LaunchFailureKind::InsufficientCapacity, "x");
        assert_eq!(r.until, t0 + Duration::from_secs(300));
        assert!(b
            .backed_off(&pool(), t0 + Duration::from_secs(299))
            .is_some());
        assert!(
            b.backed_off(&pool(), t0 + Duration::from_secs(300))
                .is_none(),
            "lasts until it expires, not longer"
        );
        // A repeat failure while backed off keeps the duration.
        let r = b.record_failure(
            t0 + Duration::from_secs(10),
            pool(),
            LaunchFailureKind::InsufficientCapacity,
            "x",
        );
        assert_eq!(r.duration_ms, 300_000);
        let mut t = t0 + Duration::from_secs(400);
        let mut durations = vec![];
        for _ in 0..4 {
            let r = b.record_failure(t, pool(), LaunchFailureKind::InsufficientCapacity, "x");
            durations.push(r.duration_ms / 60_000);
            t = r.until;
        }
        assert_eq!(durations, vec![10, 20, 30, 30]);
        let later = t + Duration::from_secs(4 * 3600);
        assert_eq!(b.take_expired(later), Vec::<PoolKey>::new());
        let r = b.record_failure(later, pool(), LaunchFailureKind::InsufficientCapacity, "x");
        assert_eq!(r.duration_ms, 300_000, "reset after the quiet period");
    }

    #[test]
    fn expiry_is_reported_once() {
        let mut b = PoolBackoffs::new(&PlannerSettings::default());
        b.record_failure(Time::ZERO, pool(), LaunchFailureKind::Quota, "x");
        assert!(b.take_expired(Time::from_secs(10)).is_empty());
        assert_eq!(b.take_expired(Time::from_secs(301)), vec![pool()]);
        assert!(b.take_expired(Time::from_secs(302)).is_empty());
    }
}
