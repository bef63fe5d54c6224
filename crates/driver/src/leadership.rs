//! Whether, and until when, this replica may act.

use std::time::Instant;

/// What leader election says about this replica. A leader's verdict carries the
/// moment it runs out: the elector publishes one after each successful renewal, and a
/// replica that cannot renew (cut off from the API server) stops acting when the last
/// one runs out, before another replica can have taken the lease over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    Follower,
    /// Leads until `until` (exclusive); `None`: for good (no election).
    Leader {
        until: Option<Instant>,
    },
}

impl Leadership {
    /// Whether the replica may act at `at`.
    pub fn leads_at(&self, at: Instant) -> bool {
        match self {
            Self::Follower => false,
            Self::Leader { until } => until.is_none_or(|u| at < u),
        }
    }

    /// When a verdict that leads runs out, if it does.
    pub fn expires(&self) -> Option<Instant> {
        match self {
            Self::Leader { until } => *until,
            Self::Follower => None,
        }
    }
}

impl From<bool> for Leadership {
    /// `true`: leads for good; `false`: follows.
    fn from(leads: bool) -> Self {
        if leads {
            Self::Leader { until: None }
        } else {
            Self::Follower
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_leader_verdict_runs_out() {
        let t0 = Instant::now();
        let l = Leadership::Leader {
            until: Some(t0 + Duration::from_secs(10)),
        };
        assert!(l.leads_at(t0));
        assert!(l.leads_at(t0 + Duration::from_millis(9_999)));
        assert!(!l.leads_at(t0 + Duration::from_secs(10)));
        assert!(Leadership::from(true).leads_at(t0 + Duration::from_secs(1_000_000)));
        assert!(!Leadership::Follower.leads_at(t0));
    }
}
