//! Reading one interruption-queue message: an EventBridge event (JSON) into the
//! model's [`InterruptionNotice`]s. The field layout is AWS's documented EventBridge
//! schemas (`source`, `detail-type`, `time`, `region`, `detail`):
//!
//! | source / detail-type | becomes |
//! |---|---|
//! | `aws.ec2` / `EC2 Spot Instance Interruption Warning` | `SpotInterruption`, detail = `instance-action`, deadline = `time` + 2 min |
//! | `aws.ec2` / `EC2 Instance Rebalance Recommendation` | `RebalanceRecommendation` |
//! | `aws.ec2` / `EC2 Instance State-change Notification` | `StateChange` for `stopping`, `stopped`, `shutting-down`, `terminated` |
//! | `aws.health` / `AWS Health Event`, service `EC2`, category `scheduledChange` | one `ScheduledChange` per affected instance, detail = `eventTypeCode`, deadline = `startTime` |
//!
//! Anything else that is a well-formed event is [`ParsedMessage::Unknown`] (the rule
//! may route more than we act on: the caller deletes it). A body that is not an
//! event, or a known event missing a field we need, is an [`EventError`] naming the
//! field. Never panics, whatever the body.

use model::{InstanceId, InterruptionKind, InterruptionNotice, Region, Time};
use serde_json::{Map, Value};
use std::time::Duration;

/// How long EC2 gives a spot instance after its interruption warning.
const SPOT_WARNING: Duration = Duration::from_secs(120);

/// What one message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedMessage {
    /// Notices to act on: one, or one per affected instance of an AWS Health event.
    Notices(Vec<InterruptionNotice>),
    /// A well-formed event that is not one we act on (`what` says which, for logs).
    Unknown { what: String },
}

/// Why a body could not be read: the field (`detail.instance-id`, `time`, or `body`
/// for the whole) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct EventError {
    pub field: String,
    pub problem: String,
}

impl EventError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Parses one message body. An SNS notification envelope (EventBridge → SNS → SQS)
/// is opened first.
pub fn parse_interruption_message(body: &str) -> Result<ParsedMessage, EventError> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| EventError::new("body", format!("not JSON: {e}")))?;
    let event = Fields::root(&value)?;
    if event.0.get("Type").and_then(Value::as_str) == Some("Notification")
        && !event.0.contains_key("detail-type")
    {
        let inner = event.string("Message")?;
        let value: Value = serde_json::from_str(inner)
            .map_err(|e| EventError::new("Message", format!("not JSON: {e}")))?;
        return parse_event(Fields::root(&value)?);
    }
    parse_event(event)
}

fn parse_event(event: Fields<'_>) -> Result<ParsedMessage, EventError> {
    let source = event.string("source")?;
    let detail_type = event.string("detail-type")?;
    let detail = event.object("detail")?;
    let unknown = |extra: &str| {
        Ok(ParsedMessage::Unknown {
            what: format!("{source} / {detail_type}{extra}"),
        })
    };
    let kind = match (source, detail_type) {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => InterruptionKind::SpotInterruption,
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => {
            InterruptionKind::RebalanceRecommendation
        }
        ("aws.ec2", "EC2 Instance State-change Notification") => InterruptionKind::StateChange,
        ("aws.health", "AWS Health Event") => InterruptionKind::ScheduledChange,
        _ => return unknown(""),
    };
    let region = event
        .optional_string("region")?
        .filter(|r| !r.is_empty())
        .map(Region::new);
    let notice = |instance: InstanceId, detail: String, at: Time, deadline: Option<Time>| {
        InterruptionNotice {
            instance,
            kind,
            detail,
            at,
            deadline,
            region: region.clone(),
        }
    };
    match kind {
        InterruptionKind::SpotInterruption => {
            let instance = detail.instance("instance-id")?;
            let action = detail.string("instance-action")?.to_owned();
            let at = event.time("time")?;
            Ok(ParsedMessage::Notices(vec![notice(
                instance,
                action,
                at,
                Some(at + SPOT_WARNING),
            )]))
        }
        InterruptionKind::RebalanceRecommendation => {
            let instance = detail.instance("instance-id")?;
            Ok(ParsedMessage::Notices(vec![notice(
                instance,
                String::new(),
                event.time("time")?,
                None,
            )]))
        }
        InterruptionKind::StateChange => {
            let instance = detail.instance("instance-id")?;
            let state = detail.string("state")?;
            if !matches!(
                state,
                "stopping" | "stopped" | "shutting-down" | "terminated"
            ) {
                return unknown(&format!(" (state {state})"));
            }
            Ok(ParsedMessage::Notices(vec![notice(
                instance,
                state.to_owned(),
                event.time("time")?,
                None,
            )]))
        }
        InterruptionKind::ScheduledChange => {
            let service = detail.string("service")?;
            let category = detail.string("eventTypeCategory")?;
            if service != "EC2" || category != "scheduledChange" {
                return unknown(&format!(" ({service} {category})"));
            }
            let code = detail.string("eventTypeCode")?.to_owned();
            let at = event.time("time")?;
            // AWS's schema requires it; without one the notice still counts, undated.
            let deadline = match detail.0.get("startTime") {
                None | Some(Value::Null) => None,
                Some(_) => Some(detail.time("startTime")?),
            };
            let entities = detail.array("affectedEntities")?;
            let mut notices = Vec::new();
            for (index, entity) in entities.iter().enumerate() {
                let entity = Fields::of(
                    entity,
                    format!("{}[{index}]", detail.path("affectedEntities")),
                )?;
                let value = entity.string("entityValue")?;
                // Health scheduled changes may name hosts or volumes too: only
                // instances are ours to act on.
                if is_instance_id(value) {
                    notices.push(notice(InstanceId::new(value), code.clone(), at, deadline));
                }
            }
            if notices.is_empty() {
                return unknown(&format!(" ({code} without affected instances)"));
            }
            Ok(ParsedMessage::Notices(notices))
        }
    }
}

/// `i-` and hex digits (8 or 17 today; up to 32 accepted).
fn is_instance_id(text: &str) -> bool {
    text.strip_prefix("i-").is_some_and(|hex| {
        !hex.is_empty() && hex.len() <= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// One JSON object with its path from the root, so errors name `detail.instance-id`.
struct Fields<'a>(&'a Map<String, Value>, String);

impl<'a> Fields<'a> {
    fn root(value: &'a Value) -> Result<Self, EventError> {
        Self::of(value, String::new())
    }

    fn of(value: &'a Value, path: String) -> Result<Self, EventError> {
        match value {
            Value::Object(map) => Ok(Self(map, path)),
            other => Err(EventError::new(
                if path.is_empty() {
                    "body".to_owned()
                } else {
                    path
                },
                format!("not an object but {}", kind_of(other)),
            )),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.1.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.1)
        }
    }

    fn get(&self, key: &str) -> Result<&'a Value, EventError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Err(EventError::new(self.path(key), "missing")),
            Some(value) => Ok(value),
        }
    }

    fn string(&self, key: &str) -> Result<&'a str, EventError> {
        let value = self.get(key)?;
        value.as_str().ok_or_else(|| {
            EventError::new(
                self.path(key),
                format!("not a string but {}", kind_of(value)),
            )
        })
    }

    fn optional_string(&self, key: &str) -> Result<Option<&'a str>, EventError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    fn object(&self, key: &str) -> Result<Fields<'a>, EventError> {
        Fields::of(self.get(key)?, self.path(key))
    }

    fn array(&self, key: &str) -> Result<&'a Vec<Value>, EventError> {
        let value = self.get(key)?;
        value.as_array().ok_or_else(|| {
            EventError::new(self.path(key), format!("not a list but {}", kind_of(value)))
        })
    }

    fn instance(&self, key: &str) -> Result<InstanceId, EventError> {
        let text = self.string(key)?;
        if !is_instance_id(text) {
            return Err(EventError::new(
                self.path(key),
                format!("{text:?} is not an EC2 instance id"),
            ));
        }
        Ok(InstanceId::new(text))
    }

    fn time(&self, key: &str) -> Result<Time, EventError> {
        let text = self.string(key)?;
        parse_time(text).ok_or_else(|| {
            EventError::new(
                self.path(key),
                format!("{text:?} is not an RFC 3339 or HTTP date"),
            )
        })
    }
}

/// RFC 3339 (`2023-04-05T12:00:00Z`, offsets allowed: EventBridge's `time`) or an
/// HTTP date (`Wed, 05 Apr 2023 12:00:00 GMT`: AWS Health's `startTime`), as Unix
/// milliseconds. `None` before 1970 or unreadable.
fn parse_time(text: &str) -> Option<Time> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let text = text.trim();
    let parsed = DateTime::from_str(text, Format::DateTimeWithOffset)
        .or_else(|_| DateTime::from_str(text, Format::HttpDate))
        .ok()?;
    let millis = u64::try_from(parsed.to_millis().ok()?).ok()?;
    Some(Time::from_millis(millis))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented sample events (with the placeholders filled in).
    const SPOT: &str = include_str!("../tests/fixtures/spot-interruption-warning.json");
    const REBALANCE: &str = include_str!("../tests/fixtures/rebalance-recommendation.json");
    const STATE_CHANGE: &str = include_str!("../tests/fixtures/state-change-pending.json");
    const HEALTH: &str = include_str!("../tests/fixtures/health-scheduled-change.json");
    const HEALTH_ISSUE: &str = include_str!("../tests/fixtures/health-issue.json");

    /// Unix seconds (from `date -u -d 2016-06-05T06:27:57Z +%s` and so on) as a `Time`.
    fn unix(secs: u64) -> Time {
        Time::from_secs(secs)
    }

    fn notices(body: &str) -> Vec<InterruptionNotice> {
        match parse_interruption_message(body) {
            Ok(ParsedMessage::Notices(notices)) => notices,
            other => panic!("expected notices, got {other:?}"),
        }
    }

    fn unknown(body: &str) -> String {
        match parse_interruption_message(body) {
            Ok(ParsedMessage::Unknown { what }) => what,
            other => panic!("expected unknown, got {other:?}"),
        }
    }

    fn error(body: &str) -> String {
        parse_interruption_message(body).unwrap_err().to_string()
    }

    #[test]
    fn spot_interruption_warning() {
        let n = notices(SPOT);
        assert_eq!(n.len(), 1);
        let n = &n[0];
        assert_eq!(n.instance.as_str(), "i-1234567890abcdef0");
        assert_eq!(n.kind, InterruptionKind::SpotInterruption);
        assert_eq!(n.detail, "terminate");
        assert_eq!(n.at, unix(1_680_696_000));
        assert_eq!(
            n.deadline,
            Some(unix(1_680_696_120)),
            "two minutes after the warning"
        );
        assert_eq!(n.region, Some(Region::new("us-east-2")));
        for action in ["stop", "hibernate"] {
            let body = SPOT.replace("\"terminate\"", &format!("\"{action}\""));
            assert_eq!(notices(&body)[0].detail, action);
        }
    }

    #[test]
    fn rebalance_recommendation() {
        let n = notices(REBALANCE);
        assert_eq!(n.len(), 1);
        assert_eq!(
            (n[0].instance.as_str(), n[0].kind),
            (
                "i-1234567890abcdef0",
                InterruptionKind::RebalanceRecommendation
            )
        );
        assert_eq!(
            (n[0].detail.as_str(), n[0].at, n[0].deadline),
            ("", unix(1_680_696_000), None)
        );
        assert_eq!(n[0].region, Some(Region::new("us-east-2")));
    }

    #[test]
    fn state_changes_that_mean_the_instance_is_going() {
        assert_eq!(
            unknown(STATE_CHANGE),
            "aws.ec2 / EC2 Instance State-change Notification (state pending)"
        );
        assert!(unknown(&STATE_CHANGE.replace("\"pending\"", "\"running\"")).contains("running"));
        for state in ["stopping", "stopped", "shutting-down", "terminated"] {
            let n = notices(&STATE_CHANGE.replace("\"pending\"", &format!("\"{state}\"")));
            assert_eq!(n.len(), 1);
            assert_eq!(
                (n[0].instance.as_str(), n[0].kind, n[0].detail.as_str()),
                ("i-abcd1111", InterruptionKind::StateChange, state)
            );
            assert_eq!((n[0].at, n[0].deadline), (unix(1_636_666_194), None));
            assert_eq!(n[0].region, Some(Region::new("us-east-1")));
        }
    }

    /// The Health sample with these affected entities.
    fn health_with(entities: &[&str]) -> Value {
        let mut h: Value = serde_json::from_str(HEALTH).unwrap();
        h["detail"]["affectedEntities"] = entities
            .iter()
            .map(|e| serde_json::json!({ "entityValue": e }))
            .collect();
        h
    }

    #[test]
    fn health_scheduled_change_gives_one_notice_per_instance() {
        let n = notices(HEALTH);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].instance.as_str(), "i-abcd1111");
        assert_eq!(n[0].kind, InterruptionKind::ScheduledChange);
        assert_eq!(n[0].detail, "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED");
        assert_eq!(n[0].at, unix(1_465_108_077));
        assert_eq!(
            n[0].deadline,
            Some(unix(1_465_139_409)),
            "Sat, 05 Jun 2016 15:10:09 GMT"
        );
        assert_eq!(n[0].region, Some(Region::new("us-west-2")));

        let n = notices(
            &health_with(&["i-abcd1111", "vol-0123456789abcdef0", "i-0abcd2222"]).to_string(),
        );
        let instances: Vec<&str> = n.iter().map(|n| n.instance.as_str()).collect();
        assert_eq!(
            instances,
            ["i-abcd1111", "i-0abcd2222"],
            "the volume is not an instance"
        );
        assert!(n.iter().all(|n| n.deadline == Some(unix(1_465_139_409))
            && n.detail == "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED"));

        // RFC 3339 start times too.
        let start = |text: &str| {
            notices(&HEALTH.replace("Sat, 05 Jun 2016 15:10:09 GMT", text))[0].deadline
        };
        assert_eq!(start("2016-06-05T15:10:09Z"), Some(unix(1_465_139_409)));
        assert_eq!(
            start("2016-06-05T17:10:09+02:00"),
            Some(unix(1_465_139_409))
        );
        assert_eq!(
            start("2016-06-05T15:10:09.250Z"),
            Some(Time::from_millis(1_465_139_409_250))
        );
        assert_eq!(
            start("Wed, 05 Apr 2023 12:00:00 GMT"),
            Some(unix(1_680_696_000))
        );
    }

    #[test]
    fn other_health_events_are_not_acted_on() {
        assert_eq!(
            unknown(HEALTH_ISSUE),
            "aws.health / AWS Health Event (EC2 issue)"
        );
        assert!(
            unknown(&HEALTH.replace("\"service\": \"EC2\"", "\"service\": \"RDS\""))
                .contains("RDS scheduledChange")
        );
        assert!(unknown(&health_with(&["vol-1", "h-2"]).to_string())
            .contains("without affected instances"));
        assert!(unknown(&health_with(&[]).to_string()).contains("without affected instances"));
    }

    #[test]
    fn other_events_are_unknown() {
        let event = r#"{"version": "0", "id": "1", "detail-type": "Object Created", "source": "aws.s3", "account": "1",
            "time": "2023-04-05T12:00:00Z", "region": "us-east-1", "resources": [], "detail": {"bucket": {"name": "b"}}}"#;
        assert_eq!(unknown(event), "aws.s3 / Object Created");
        assert_eq!(
            unknown(&SPOT.replace("aws.ec2", "custom.ec2")),
            "custom.ec2 / EC2 Spot Instance Interruption Warning"
        );
    }

    #[test]
    fn sns_envelopes_are_opened() {
        let envelope = serde_json::json!({ "Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-2:1:t", "Message": SPOT });
        assert_eq!(
            notices(&envelope.to_string())[0].kind,
            InterruptionKind::SpotInterruption
        );
        assert_eq!(
            error(r#"{"Type": "Notification", "Message": "{"}"#)
                .split(':')
                .next(),
            Some("Message")
        );
    }

    #[test]
    fn errors_name_the_field() {
        let spot: Value = serde_json::from_str(SPOT).unwrap();
        let without = |path: &[&str]| {
            let mut v = spot.clone();
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut v;
            for p in parents {
                at = at.get_mut(*p).unwrap();
            }
            at.as_object_mut().unwrap().remove(*last);
            v.to_string()
        };
        let with = |path: &[&str], value: Value| {
            let mut v = spot.clone();
            let mut at = &mut v;
            for p in path {
                at = at.get_mut(*p).unwrap();
            }
            *at = value;
            v.to_string()
        };
        assert_eq!(
            error(&without(&["detail", "instance-id"])),
            "detail.instance-id: missing"
        );
        assert_eq!(
            error(&without(&["detail", "instance-action"])),
            "detail.instance-action: missing"
        );
        assert_eq!(error(&without(&["time"])), "time: missing");
        assert_eq!(error(&without(&["source"])), "source: missing");
        assert_eq!(error(&without(&["detail-type"])), "detail-type: missing");
        assert_eq!(error(&without(&["detail"])), "detail: missing");
        assert_eq!(
            error(&with(&["detail", "instance-id"], Value::from(7))),
            "detail.instance-id: not a string but a number"
        );
        assert_eq!(
            error(&with(&["detail", "instance-id"], Value::from("node-1"))),
            "detail.instance-id: \"node-1\" is not an EC2 instance id"
        );
        assert_eq!(
            error(&with(&["detail"], Value::from("x"))),
            "detail: not an object but a string"
        );
        assert_eq!(
            error(&with(&["time"], Value::from("yesterday"))),
            "time: \"yesterday\" is not an RFC 3339 or HTTP date"
        );
        assert_eq!(
            error(&with(&["time"], Value::from("1969-12-31T23:59:59Z"))),
            "time: \"1969-12-31T23:59:59Z\" is not an RFC 3339 or HTTP date"
        );
        assert_eq!(
            error(&with(&["region"], Value::from(1))),
            "region: not a string but a number"
        );
        assert!(error("not json").starts_with("body: not JSON"));
        assert_eq!(error("[1, 2]"), "body: not an object but a list");
        assert_eq!(error("{}"), "source: missing");

        let health: Value = serde_json::from_str(HEALTH).unwrap();
        let mut h = health_with(&["i-abcd1111", "i-abcd2222"]);
        h["detail"]["affectedEntities"][1] = Value::from("i-abcd2222");
        assert_eq!(
            error(&h.to_string()),
            "detail.affectedEntities[1]: not an object but a string"
        );
        let mut h = health.clone();
        h["detail"]["affectedEntities"][0]
            .as_object_mut()
            .unwrap()
            .remove("entityValue");
        assert_eq!(
            error(&h.to_string()),
            "detail.affectedEntities[0].entityValue: missing"
        );
        let mut h = health.clone();
        h["detail"].as_object_mut().unwrap().remove("eventTypeCode");
        assert_eq!(error(&h.to_string()), "detail.eventTypeCode: missing");
        let mut h = health.clone();
        h["detail"]["startTime"] = Value::from("soon");
        assert_eq!(
            error(&h.to_string()),
            "detail.startTime: \"soon\" is not an RFC 3339 or HTTP date"
        );
        let mut h = health.clone();
        h["detail"].as_object_mut().unwrap().remove("startTime");
        assert_eq!(
            notices(&h.to_string())[0].deadline,
            None,
            "an undated scheduled change still counts"
        );
        let mut h = health;
        h["detail"]["affectedEntities"] = Value::from("i-abcd1111");
        assert_eq!(
            error(&h.to_string()),
            "detail.affectedEntities: not a list but a string"
        );
    }

    mod never_panics {
        use super::super::parse_interruption_message;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn on_any_string(body in ".{0,300}") {
                let _ = parse_interruption_message(&body);
            }

            #[test]
            fn on_events_with_any_fields(
                source in prop::sample::select(vec!["aws.ec2", "aws.health", "x"]),
                detail_type in prop::sample::select(vec![
                    "EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation",
                    "EC2 Instance State-change Notification", "AWS Health Event", "y",
                ]),
                time in ".{0,40}",
                start in ".{0,40}",
                id in "(i-[0-9a-f]{0,20})|.{0,10}",
                state in ".{0,12}",
            ) {
                let body = serde_json::json!({
                    "source": source, "detail-type": detail_type, "time": time, "region": "r",
                    "detail": {
                        "instance-id": id, "instance-action": "terminate", "state": state,
                        "service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "C",
                        "startTime": start, "affectedEntities": [{ "entityValue": id }],
                    },
                });
                let _ = parse_interruption_message(&body.to_string());
            }
        }
    }
}
