//! Simulated EC2 spot interruptions: when the warnings come and which instances get
//! them. Pure functions of the scenario's seed; the engine carries them out.
//!
//! Two sources, both per group of a spot group:
//! - `interruption_rate_per_hour: λ` — a Poisson process per instance: each instance
//!   the group launches is warned after an exponentially distributed time (mean 1/λ
//!   hours) from its launch, unless it is gone first. The draw belongs to the group's
//!   n-th launch, so two runs of one scenario and seed (with interruption handling on
//!   and off, say) give the n-th instance of a group the same lifetime.
//! - `interruptions: [{at, count}]` — at `at`, `count` of the group's instances that
//!   are not already warned, those with a registered node first, in an order drawn
//!   from the seed.

use crate::engine::splitmix64;
use std::time::Duration;

/// EC2 takes a spot instance back two minutes after its interruption warning.
pub const WARNING_LEAD: Duration = Duration::from_secs(120);

/// How soon after a notice the planner has a pass: the driver wakes on a notice
/// from the interruption queue within about a second.
pub const NOTICE_REACTION: Duration = Duration::from_secs(1);

/// Keeps the draws of each use of the seed independent of the others (and of the
/// workload's duration draws).
const TAG_RATE: u64 = 0x7370_6f74_2d72_6174; // "spot-rat"
const TAG_PICK: u64 = 0x7370_6f74_2d70_6963; // "spot-pic"

/// A 64-bit draw from the seed for `(tag, a, b)`.
fn draw(seed: u64, tag: u64, a: u64, b: u64) -> u64 {
    splitmix64(seed ^ splitmix64(tag ^ splitmix64(splitmix64(a) ^ b)))
}

/// A number in [0, 1) drawn from the seed for `(tag, a, b)`.
fn unit(seed: u64, tag: u64, a: u64, b: u64) -> f64 {
    (draw(seed, tag, a, b) >> 11) as f64 / (1u64 << 53) as f64
}

/// How long after its launch the `ordinal`-th instance (0-based) that group `group`
/// launches is warned, at `rate_per_hour` warnings per instance-hour; `None` for a
/// rate of zero (or a time too far off to represent).
pub fn time_to_warning(
    seed: u64,
    group: usize,
    ordinal: u32,
    rate_per_hour: f64,
) -> Option<Duration> {
    if rate_per_hour <= 0.0 {
        return None;
    }
    let u = unit(seed, TAG_RATE, group as u64, u64::from(ordinal));
    // Inverse of the exponential distribution's CDF; 1 - u is in (0, 1].
    let hours = -(1.0 - u).ln() / rate_per_hour;
    Duration::try_from_secs_f64(hours * 3600.0).ok()
}

/// Which instances an explicit interruption (`entry` of group `group`) warns: up to
/// `count` of `candidates`, each `(has a registered node, a stable key)`, those with a
/// node first, then in the order the seed draws. Returns indices into `candidates`.
pub fn pick(
    seed: u64,
    group: usize,
    entry: usize,
    candidates: &[(bool, u64)],
    count: u32,
) -> Vec<usize> {
    let salt = draw(seed, TAG_PICK, group as u64, entry as u64);
    let mut ranked: Vec<(bool, u64, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, &(running, key))| (!running, splitmix64(salt ^ key), i))
        .collect();
    ranked.sort_unstable();
    ranked
        .into_iter()
        .take(count as usize)
        .map(|(_, _, i)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_follow_the_rate_and_the_seed() {
        assert_eq!(time_to_warning(1, 0, 0, 0.0), None);
        let a: Vec<_> = (0..2000)
            .map(|n| time_to_warning(7, 2, n, 0.5).unwrap())
            .collect();
        let b: Vec<_> = (0..2000)
            .map(|n| time_to_warning(7, 2, n, 0.5).unwrap())
            .collect();
        assert_eq!(a, b, "same seed, same draws");
        assert_ne!(
            a[0],
            time_to_warning(8, 2, 0, 0.5).unwrap(),
            "another seed, another draw"
        );
        assert_ne!(
            a[0],
            time_to_warning(7, 3, 0, 0.5).unwrap(),
            "another group, another draw"
        );
        // Mean 1/λ = 2 h, within a few percent over 2000 draws.
        let mean = a.iter().map(Duration::as_secs_f64).sum::<f64>() / a.len() as f64 / 3600.0;
        assert!((mean - 2.0).abs() < 0.2, "mean {mean} h");
    }

    #[test]
    fn picks_registered_instances_first_and_deterministically() {
        let candidates = [(false, 1), (true, 2), (true, 3), (false, 4), (true, 5)];
        let picked = pick(3, 0, 0, &candidates, 2);
        assert_eq!(picked.len(), 2);
        assert!(picked.iter().all(|&i| candidates[i].0), "{picked:?}");
        assert_eq!(picked, pick(3, 0, 0, &candidates, 2));
        let all = pick(3, 0, 0, &candidates, 9);
        assert_eq!(all.len(), 5);
        assert!(
            !candidates[all[3]].0 && !candidates[all[4]].0,
            "booting instances last: {all:?}"
        );
    }
}
