//! Pool backoffs persisted as ASG tags, so a restarted autoscaler keeps avoiding a
//! pool that just failed (the seed forgot on the next loop).
//!
//! Key: `batch-autoscaler.io/backoff/<zone>/<instance-type>/<on-demand|spot>` on every
//! owned ASG of the pool's region that launches into that pool (the region is the
//! ASG's). Value: `until=<ms> duration=<ms> last=<ms> kind=<kind> msg=<text>`, within
//! AWS's 256-character limit and its tag character set.

use model::{InstanceTypeName, LaunchFailureKind, PoolKey, PurchaseOption, Region, Time, Zone};
use planner::BackoffRecord;

pub const TAG_BACKOFF_PREFIX: &str = "batch-autoscaler.io/backoff/";
const MAX_TAG_VALUE: usize = 256;

/// The tag key of a pool's backoff.
pub fn tag_key(pool: &PoolKey) -> String {
    format!(
        "{TAG_BACKOFF_PREFIX}{}/{}/{}",
        pool.zone,
        pool.instance_type,
        purchase_str(pool.purchase)
    )
}

fn purchase_str(purchase: PurchaseOption) -> &'static str {
    match purchase {
        PurchaseOption::OnDemand => "on-demand",
        PurchaseOption::Spot => "spot",
    }
}

fn kind_from_str(text: &str) -> Option<LaunchFailureKind> {
    use LaunchFailureKind::*;
    [
        InsufficientCapacity,
        Quota,
        SpotLimit,
        VolumeLimit,
        InvalidConfiguration,
        LaunchTimeout,
        Other,
    ]
    .into_iter()
    .find(|k| k.as_str() == text)
}

/// The tag value of a record (the message is shortened and reduced to the characters
/// AWS allows in tag values).
pub fn tag_value(record: &BackoffRecord) -> String {
    let head = format!(
        "until={} duration={} last={} kind={} msg=",
        record.until.as_millis(),
        record.duration_ms,
        record.last_failure.as_millis(),
        record.kind.as_str()
    );
    let room = MAX_TAG_VALUE.saturating_sub(head.len());
    let message: String = record
        .message
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c) {
                c
            } else {
                ' '
            }
        })
        .take(room)
        .collect();
    format!("{head}{}", message.trim_end())
}

/// Reads a record back from a tag of an ASG in `region`; `None` if it is not one of
/// ours or is malformed (a hand-edited tag must not stop the adapter).
pub fn parse_tag(region: &Region, key: &str, value: &str) -> Option<BackoffRecord> {
    let rest = key.strip_prefix(TAG_BACKOFF_PREFIX)?;
    let mut parts = rest.splitn(3, '/');
    let (zone, instance_type, purchase) = (parts.next()?, parts.next()?, parts.next()?);
    let purchase = match purchase {
        "on-demand" => PurchaseOption::OnDemand,
        "spot" => PurchaseOption::Spot,
        _ => return None,
    };
    if zone.is_empty() || instance_type.is_empty() {
        return None;
    }
    let (fields, message) = value.split_once(" msg=").unwrap_or((value, ""));
    let mut until = None;
    let mut duration = None;
    let mut last = None;
    let mut kind = None;
    for field in fields.split_whitespace() {
        let (name, v) = field.split_once('=')?;
        match name {
            "until" => until = v.parse().ok(),
            "duration" => duration = v.parse().ok(),
            "last" => last = v.parse().ok(),
            "kind" => kind = kind_from_str(v),
            _ => {}
        }
    }
    Some(BackoffRecord {
        pool: PoolKey {
            region: region.clone(),
            zone: Zone::new(zone),
            instance_type: InstanceTypeName::new(instance_type),
            purchase,
        },
        kind: kind?,
        until: Time::from_millis(until?),
        duration_ms: duration?,
        last_failure: Time::from_millis(last?),
        message: message.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(message: &str) -> BackoffRecord {
        BackoffRecord {
            pool: PoolKey {
                region: Region::new("us-west-2"),
                zone: Zone::new("us-west-2a"),
                instance_type: InstanceTypeName::new("m5.large"),
                purchase: PurchaseOption::Spot,
            },
            kind: LaunchFailureKind::InsufficientCapacity,
            until: Time::from_millis(1_700_000_300_000),
            duration_ms: 300_000,
            last_failure: Time::from_millis(1_700_000_000_000),
            message: message.into(),
        }
    }

    #[test]
    fn round_trips_through_a_tag() {
        let r = record("Insufficient capacity. Launching EC2 instance failed.");
        let key = tag_key(&r.pool);
        assert_eq!(key, "batch-autoscaler.io/backoff/us-west-2a/m5.large/spot");
        let value = tag_value(&r);
        assert!(value.len() <= 256);
        assert_eq!(parse_tag(&Region::new("us-west-2"), &key, &value), Some(r));
    }

    #[test]
    fn long_or_odd_messages_fit_and_malformed_tags_are_ignored() {
        let r = record(&"(InsufficientInstanceCapacity) ".repeat(20));
        let value = tag_value(&r);
        assert!(value.len() <= 256, "{}", value.len());
        assert!(!value.contains('('));
        let back = parse_tag(&Region::new("us-west-2"), &tag_key(&r.pool), &value).unwrap();
        assert_eq!(back.until, r.until);
        let region = Region::new("r");
        for (key, value) in [
            (
                "batch-autoscaler.io/backoff/z/t/reserved",
                "until=1 duration=1 last=1 kind=quota msg=",
            ),
            (
                "batch-autoscaler.io/backoff/z/t/spot",
                "until=x duration=1 last=1 kind=quota msg=",
            ),
            (
                "batch-autoscaler.io/backoff/z/t/spot",
                "until=1 duration=1 last=1 kind=nope msg=",
            ),
            ("batch-autoscaler.io/backoff/z/t/spot", "garbage"),
            (
                "batch-autoscaler.io/backoff//t/spot",
                "until=1 duration=1 last=1 kind=quota msg=",
            ),
            ("Name", "x"),
        ] {
            assert_eq!(parse_tag(&region, key, value), None, "{key}={value}");
        }
    }
}
