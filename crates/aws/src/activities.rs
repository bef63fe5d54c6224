//! Failed launches, read from DescribeScalingActivities: the classifier of AWS's
//! messages into [`LaunchFailureKind`], and the marker that makes reading resumable.
//!
//! The marker is a Unix time in milliseconds persisted on the ASG (tag
//! [`TAG_ACTIVITY_MARKER`]): every activity that started at or before it has been
//! looked at and was finished. It only advances over finished activities, so an
//! activity still in progress is read again until it ends (not lost), and nothing
//! at or before the marker is reported again after a restart (not replayed).

use model::{LaunchFailureKind, Zone};
use std::collections::{BTreeMap, BTreeSet};

/// ASG tag holding the activity marker (Unix milliseconds).
pub const TAG_ACTIVITY_MARKER: &str = "batch-autoscaler.io/activity-marker";

/// Without a marker (first run on a group), failures this recent are still reported.
pub const FIRST_LOOK_BACK_MS: u64 = 10 * 60 * 1000;

/// One scaling activity, as much as the adapter needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityView {
    pub id: String,
    /// Unix milliseconds.
    pub start_ms: u64,
    pub status: String,
    /// `StatusMessage`, else `Description`.
    pub message: String,
    /// The zone from `Details` (`{"Availability Zone": ...}`), if any.
    pub zone: Option<Zone>,
}

impl ActivityView {
    /// Failed or Cancelled.
    pub fn failed(&self) -> bool {
        matches!(self.status.as_str(), "Failed" | "Cancelled")
    }

    /// Nothing more will happen to it.
    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "Successful" | "Failed" | "Cancelled")
    }
}

/// Classifies the message of a failed or cancelled launch activity. The texts are
/// AWS's (see the tests); the order matters: spot before quota before capacity.
pub fn classify(message: &str) -> LaunchFailureKind {
    let m = message.to_ascii_lowercase();
    let has = |needle: &str| m.contains(needle);
    if has("max spot instance count exceeded")
        || has("maxspotinstancecountexceeded")
        || has("spot capacity")
        || has("insufficientspotcapacity")
        || has("spotmaxpricetoolow")
        || has("spot request")
        || (has("spot") && has("limit"))
    {
        LaunchFailureKind::SpotLimit
    } else if has("volumelimitexceeded")
        || has("volume limit exceeded")
        || has("maximum number of volumes")
        || has("storage limit")
    {
        LaunchFailureKind::VolumeLimit
    } else if has("instancelimitexceeded")
        || has("vcpulimitexceeded")
        || has("you have requested more instances")
        || has("vcpu limit")
        || has("vcpu capacity")
        || has("instance limit")
        || has("quota")
    {
        LaunchFailureKind::Quota
    } else if has("insufficientinstancecapacity")
        || has("insufficient capacity")
        || has("do not have sufficient")
        || (has("insufficient") && has("capacity"))
    {
        LaunchFailureKind::InsufficientCapacity
    } else if has("does not exist")
        || has("not found")
        || has("invalid")
        || has("not supported")
        || has("unsupported")
        || has("not authorized")
        || has("unauthorized")
        || has("is not valid")
        || has("malformed")
        || has("you must specify")
        || has("no default subnet")
    {
        LaunchFailureKind::InvalidConfiguration
    } else {
        LaunchFailureKind::Other
    }
}

/// The zone named in an activity's `Details` JSON (`"Availability Zone"`).
pub fn zone_from_details(details: &str) -> Option<Zone> {
    let value: serde_json::Value = serde_json::from_str(details).ok()?;
    value
        .get("Availability Zone")
        .and_then(|z| z.as_str())
        .filter(|z| !z.is_empty())
        .map(Zone::new)
}

/// What one read of a group's activities found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityScan {
    /// Failed/Cancelled activities after the marker not yet reported, oldest first.
    pub failed: Vec<ActivityView>,
    /// The marker to persist (unchanged when nothing finished after it).
    pub marker_ms: u64,
}

/// Picks the failures to report and the new marker. `activities` may come in any
/// order; `marker_ms` is the persisted marker, or `None` on the first read, when
/// failures since `now_ms - FIRST_LOOK_BACK_MS` count. `reported` holds ids already
/// reported by this process (an unfinished earlier activity can hold the marker back
/// over a failure that was already reported).
pub fn scan(
    activities: &[ActivityView],
    marker_ms: Option<u64>,
    now_ms: u64,
    reported: &BTreeSet<String>,
) -> ActivityScan {
    let cutoff = marker_ms.unwrap_or_else(|| now_ms.saturating_sub(FIRST_LOOK_BACK_MS));
    let mut after: Vec<&ActivityView> = activities.iter().filter(|a| a.start_ms > cutoff).collect();
    after.sort_by(|a, b| (a.start_ms, &a.id).cmp(&(b.start_ms, &b.id)));
    let failed = after
        .iter()
        .filter(|a| a.failed() && !reported.contains(&a.id))
        .map(|a| (*a).clone())
        .collect();
    // Advance over whole timestamps whose activities have all finished.
    let mut by_start: BTreeMap<u64, bool> = BTreeMap::new();
    for activity in &after {
        let all_finished = by_start.entry(activity.start_ms).or_insert(true);
        *all_finished &= activity.finished();
    }
    let mut marker = cutoff;
    for (start, all_finished) in by_start {
        if !all_finished {
            break;
        }
        marker = start;
    }
    ActivityScan {
        failed,
        marker_ms: marker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own texts, from scaling activities seen in the wild (domain.md).
    #[test]
    fn classifies_real_aws_messages() {
        let cases = [
            (
                "We currently do not have sufficient p3.16xlarge capacity in the Availability Zone you requested (us-east-1d). Our system will be working on provisioning additional capacity. You can currently get p3.16xlarge capacity by not specifying an Availability Zone in your request or choosing us-east-1a, us-east-1b, us-east-1c, us-east-1f. Launching EC2 instance failed.",
                LaunchFailureKind::InsufficientCapacity,
            ),
            ("Insufficient capacity. Launching EC2 instance failed.", LaunchFailureKind::InsufficientCapacity),
            (
                "Launching a new EC2 instance. Status Reason: We currently do not have sufficient m5.large capacity in the Availability Zone you requested (us-west-2a) (InsufficientInstanceCapacity).",
                LaunchFailureKind::InsufficientCapacity,
            ),
            (
                "You have requested more instances (21) than your current instance limit of 20 allows for the specified instance type. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit. Launching EC2 instance failed.",
                LaunchFailureKind::Quota,
            ),
            (
                "You have requested more vCPU capacity than your current vCPU limit of 32 allows for the instance bucket that the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit. Launching EC2 instance failed.",
                LaunchFailureKind::Quota,
            ),
            ("Max spot instance count exceeded. Launching EC2 instance failed.", LaunchFailureKind::SpotLimit),
            ("There is no Spot capacity available that matches your request. Launching EC2 instance failed.", LaunchFailureKind::SpotLimit),
            ("Client.VolumeLimitExceeded: Volume limit exceeded. Launching EC2 instance failed.", LaunchFailureKind::VolumeLimit),
            ("The image id '[ami-00000000]' does not exist. Launching EC2 instance failed.", LaunchFailureKind::InvalidConfiguration),
            (
                "Your requested instance type (m5.large) is not supported in your requested Availability Zone (us-east-1e). Please retry your request by not specifying an Availability Zone or choosing us-east-1a. Launching EC2 instance failed.",
                LaunchFailureKind::InvalidConfiguration,
            ),
            ("The specified launch template, with template ID lt-0123, does not exist. Launching EC2 instance failed.", LaunchFailureKind::InvalidConfiguration),
            ("Value (x) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name", LaunchFailureKind::InvalidConfiguration),
            ("Something unexpected happened.", LaunchFailureKind::Other),
            ("", LaunchFailureKind::Other),
        ];
        for (message, kind) in cases {
            assert_eq!(classify(message), kind, "{message}");
        }
    }

    fn activity(id: &str, start_ms: u64, status: &str) -> ActivityView {
        ActivityView {
            id: id.into(),
            start_ms,
            status: status.into(),
            message: "Insufficient capacity.".into(),
            zone: None,
        }
    }

    #[test]
    fn marker_neither_replays_nor_loses() {
        let none = BTreeSet::new();
        let now = 100 * 60 * 1000;
        // First read: only recent failures count.
        let old = activity("old", now - FIRST_LOOK_BACK_MS - 1, "Failed");
        let a = activity("a", now - 1000, "Failed");
        let b = activity("b", now - 500, "InProgress");
        let c = activity("c", now - 100, "Failed");
        let first = scan(&[c.clone(), b.clone(), a.clone(), old], None, now, &none);
        assert_eq!(
            first
                .failed
                .iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(
            first.marker_ms, a.start_ms,
            "held back by the unfinished activity"
        );
        // The process remembers what it reported; b then fails.
        let reported: BTreeSet<String> = ["a".to_owned(), "c".to_owned()].into();
        let b_failed = activity("b", b.start_ms, "Failed");
        let second = scan(
            &[c.clone(), b_failed, a.clone()],
            Some(first.marker_ms),
            now,
            &reported,
        );
        assert_eq!(
            second
                .failed
                .iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>(),
            ["b"],
            "not lost"
        );
        assert_eq!(second.marker_ms, c.start_ms);
        // A restart (empty memory) with the persisted marker replays nothing.
        let third = scan(
            &[c, activity("b", b.start_ms, "Failed"), a],
            Some(second.marker_ms),
            now,
            &none,
        );
        assert!(third.failed.is_empty());
        assert_eq!(third.marker_ms, second.marker_ms);
    }

    #[test]
    fn a_group_without_activities_is_fine() {
        let scan = scan(&[], Some(5), 10, &BTreeSet::new());
        assert!(scan.failed.is_empty());
        assert_eq!(scan.marker_ms, 5);
    }

    #[test]
    fn ties_on_start_time_hold_the_marker() {
        let scan = scan(
            &[
                activity("x", 10, "Successful"),
                activity("y", 10, "InProgress"),
            ],
            Some(1),
            20,
            &BTreeSet::new(),
        );
        assert_eq!(scan.marker_ms, 1);
    }

    #[test]
    fn zones_come_from_details() {
        assert_eq!(
            zone_from_details(r#"{"Subnet ID":"subnet-1","Availability Zone":"us-east-1d"}"#),
            Some(Zone::new("us-east-1d"))
        );
        assert_eq!(zone_from_details("{}"), None);
        assert_eq!(zone_from_details("not json"), None);
    }
}
