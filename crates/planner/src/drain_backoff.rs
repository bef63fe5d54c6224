//! Nodes whose drain failed: evictions refused for longer than
//! `max-pod-eviction-time` (a PodDisruptionBudget that allows nothing, a pod stuck
//! terminating behind a finalizer). Without a memory of that, the node would be
//! fenced, drained and un-fenced again on every scale-down pass that finds it
//! under-utilised. Each failure keeps the node out of drains for twice as long as the
//! one before; an empty node is still removed, and a node that is gone is forgotten.

use model::{NodeName, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a node is left alone after its first failed drain.
const INITIAL: Duration = Duration::from_secs(10 * 60);
/// The longest a node is left alone; later failures wait this long.
const MAX: Duration = Duration::from_secs(2 * 3600);

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Time,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DrainBackoffs(BTreeMap<NodeName, Backoff>);

impl DrainBackoffs {
    /// Records a failed drain of `node`; returns until when it is not drained again.
    pub(crate) fn failed(&mut self, node: &NodeName, now: Time) -> Time {
        let failures = self.0.get(node).map_or(0, |b| b.failures) + 1;
        let wait = INITIAL
            .checked_mul(1 << (failures - 1).min(16))
            .unwrap_or(MAX)
            .min(MAX);
        let until = now + wait;
        self.0.insert(node.clone(), Backoff { failures, until });
        until
    }

    /// Whether `node` is backed off at `now`.
    pub(crate) fn holds(&self, node: &NodeName, now: Time) -> bool {
        self.0.get(node).is_some_and(|b| now < b.until)
    }

    /// Forgets nodes that are gone (a new node under a reused name starts afresh).
    pub(crate) fn retain_nodes(&mut self, names: &BTreeSet<&NodeName>) {
        self.0.retain(|n, _| names.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_doubles_the_wait_up_to_the_limit() {
        let mut b = DrainBackoffs::default();
        let n = NodeName::new("n1");
        let t0 = Time::from_secs(1_000);
        assert!(!b.holds(&n, t0));
        let waits: Vec<u64> = (0..6)
            .map(|_| b.failed(&n, t0).saturating_since(t0).as_secs() / 60)
            .collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 120, 120]);
        assert!(b.holds(&n, t0 + Duration::from_secs(119 * 60)));
        assert!(!b.holds(&n, t0 + Duration::from_secs(120 * 60)));
        b.retain_nodes(&BTreeSet::new());
        assert!(!b.holds(&n, t0));
    }
}
